defmodule AWSCluster.Test.Cluster do
  @moduledoc """
  Real BEAM peer nodes for tests (OTP `:peer`), on 127.0.x.y or inside a network
  namespace. Every peer gets this VM's code path, so it runs the code under test.
  """

  @doc """
  Makes the test VM a distributed node `aws_cluster_test_<os pid>@127.0.0.1` (starting
  epmd if needed); the OS pid keeps concurrent test runs on one machine apart.
  """
  def start_test_node! do
    unless Node.alive?() do
      basename = "aws_cluster_test_#{System.pid()}"
      {:ok, _} = AWSCluster.Distribution.start(basename: basename, ip: {127, 0, 0, 1})
    end

    node()
  end

  @doc "Code path arguments so a peer loads the same modules as this VM."
  def code_path_args do
    Enum.flat_map(:code.get_path(), fn dir -> [~c"-pa", dir] end)
  end

  @doc """
  Starts a distributed peer `basename@ip`, controlled over a loopback TCP socket.
  Returns `{peer_pid, node}`; stop it with `stop/1`.
  """
  def start_peer(basename, ip, extra_args \\ []) do
    {:ok, pid, node} =
      :peer.start_link(%{
        name: String.to_atom(basename),
        host: String.to_charlist(ip),
        longnames: true,
        args:
          code_path_args() ++ [~c"-setcookie", Atom.to_charlist(Node.get_cookie())] ++ extra_args,
        wait_boot: 30_000,
        # :peer.call/4 needs a control connection besides distribution (a TCP socket on
        # 127.0.0.1 here); it also leaves the peer unconnected to this node until asked,
        # so clustering tests see only the connections the code under test makes.
        connection: {{127, 0, 0, 1}, 0}
      })

    {:ok, _} = :peer.call(pid, :application, :ensure_all_started, [:elixir])
    {pid, node}
  end

  @doc """
  Starts a peer without distribution, controlled over stdio. `exec` may wrap `erl`
  (for example `ip netns exec NS`), given as `{executable, args_before_erl}`.
  """
  def start_hidden_peer(opts \\ []) do
    erl = System.find_executable("erl")

    exec =
      case Keyword.get(opts, :wrap) do
        nil ->
          String.to_charlist(erl)

        {wrapper, args} ->
          {String.to_charlist(System.find_executable(wrapper)),
           Enum.map(args ++ [erl], &String.to_charlist/1)}
      end

    {:ok, pid, _} =
      :peer.start_link(%{
        connection: :standard_io,
        exec: exec,
        args: code_path_args(),
        wait_boot: 30_000
      })

    {:ok, _} = :peer.call(pid, :application, :ensure_all_started, [:elixir])
    pid
  end

  @doc "Stops a peer, ignoring one that is already gone."
  def stop(pid) do
    :peer.stop(pid)
  catch
    :exit, _ -> :ok
  end
end
