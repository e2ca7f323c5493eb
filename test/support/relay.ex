defmodule AWSCluster.Test.Relay do
  @moduledoc """
  Carries TCP connections across network namespaces through a Unix socket, whose path
  every namespace shares: a node inside a test namespace reaches moto (which listens on
  the root namespace's 127.0.0.1) as `http://127.0.0.1:<port>` of its own namespace.

  Run `start/2` once in the root namespace (Unix socket to moto) and once inside the
  node (its loopback port to the Unix socket). Each side is one acceptor process and one
  process per connection; both end with the VM or `stop/1`.
  """

  @typedoc "`{:local, path}` or `{ip_tuple, port}`; port 0 picks a free one."
  @type endpoint :: {:local, Path.t()} | {:inet.ip4_address(), :inet.port_number()}

  @doc "Listens on `from` and relays each connection to `to`; returns `{pid, bound}`."
  @spec start(endpoint(), endpoint()) :: {pid(), endpoint()}
  def start(from, to) do
    parent = self()

    pid =
      spawn(fn ->
        {:ok, listen} = listen(from)

        bound =
          case from do
            {:local, _} -> from
            {ip, _} -> {ip, elem(:inet.port(listen), 1)}
          end

        send(parent, {__MODULE__, self(), bound})
        accept(listen, to)
      end)

    receive do
      {__MODULE__, ^pid, bound} -> {pid, bound}
    after
      5_000 -> raise "relay on #{inspect(from)} did not start"
    end
  end

  @doc "Stops a relay's acceptor (open connections end when their sockets close)."
  @spec stop(pid()) :: :ok
  def stop(pid) do
    Process.exit(pid, :kill)
    :ok
  end

  defp listen({:local, path}) do
    File.rm(path)
    :gen_tcp.listen(0, [:binary, active: false, ifaddr: {:local, String.to_charlist(path)}])
  end

  defp listen({ip, port}), do: :gen_tcp.listen(port, [:binary, active: false, ip: ip])

  defp accept(listen, to) do
    {:ok, client} = :gen_tcp.accept(listen)
    pid = spawn(fn -> pump(client, to) end)
    :ok = :gen_tcp.controlling_process(client, pid)
    send(pid, :go)
    accept(listen, to)
  end

  defp pump(client, to) do
    receive do
      :go -> :ok
    end

    case connect(to) do
      {:ok, server} ->
        :ok = :inet.setopts(client, active: true)
        :ok = :inet.setopts(server, active: true)
        loop(client, server)

      {:error, _} ->
        :gen_tcp.close(client)
    end
  end

  defp connect({:local, path}),
    do: :gen_tcp.connect({:local, String.to_charlist(path)}, 0, [:binary, active: false], 5_000)

  defp connect({ip, port}), do: :gen_tcp.connect(ip, port, [:binary, active: false], 5_000)

  defp loop(a, b) do
    receive do
      {:tcp, ^a, data} ->
        :gen_tcp.send(b, data)
        loop(a, b)

      {:tcp, ^b, data} ->
        :gen_tcp.send(a, data)
        loop(a, b)

      {:tcp_closed, _} ->
        :gen_tcp.close(a)
        :gen_tcp.close(b)
    end
  end
end
