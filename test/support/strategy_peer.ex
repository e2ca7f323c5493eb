defmodule AWSCluster.Test.StrategyPeer do
  @moduledoc """
  Runs topologies inside `:peer` nodes and watches their connections.

  `:peer.call/4` runs in a temporary process; anything it links to dies with it, so
  `start_detached/1` unlinks the supervisor it starts. Functions here are called on the
  peer through `:peer.call`, so they must live in compiled modules (the peer shares
  this VM's code path, not its test modules).
  """

  require Logger

  @watch __MODULE__.Watch

  @doc """
  Peer-side: starts `AWSCluster.Supervisor` with `topologies`, unlinked, plus a
  watcher recording every nodedown. Returns the supervisor pid.
  """
  def start_detached(topologies) do
    {:ok, _} = Application.ensure_all_started(:aws_cluster)
    # Peers print to the test run's output; state changes (warnings) are enough there.
    Logger.configure(level: :warning)
    start_watch()

    case AWSCluster.Supervisor.start_link(topologies: topologies) do
      {:ok, pid} ->
        Process.unlink(pid)
        {:ok, pid}

      other ->
        other
    end
  rescue
    # :peer.call re-raises remote exceptions with erlang:raise/3, which turns some
    # remote stacktraces into a bare `badarg`; return the text instead.
    e -> {:raised, Exception.format(:error, e, __STACKTRACE__)}
  catch
    kind, reason -> {:raised, Exception.format(kind, reason, __STACKTRACE__)}
  end

  @doc "Peer-side: the poller pid of the only topology of supervisor `sup`."
  def poller(sup) do
    [{_id, pid, _, _}] = Supervisor.which_children(sup)
    pid
  end

  @doc "Peer-side: the poller's status (see `AWSCluster.Poller.status/1`)."
  def status(sup), do: AWSCluster.Poller.status(poller(sup))

  @doc "Peer-side: nodes that went down since the watcher started (or was last reset)."
  def downs, do: Agent.get(@watch, &Enum.reverse(&1.downs))

  @doc "Peer-side: forgets recorded nodedowns."
  def reset_downs, do: Agent.update(@watch, &%{&1 | downs: []})

  defp start_watch do
    if Process.whereis(@watch) == nil do
      {:ok, pid} = Agent.start(fn -> %{downs: []} end, name: @watch)

      # A plain process receives the nodedown messages and stores them in the agent.
      spawn(fn ->
        :ok = :net_kernel.monitor_nodes(true)
        Process.link(pid)
        watch_loop()
      end)
    end

    :ok
  end

  defp watch_loop do
    receive do
      {:nodedown, node} -> Agent.update(@watch, &%{&1 | downs: [node | &1.downs]})
      _ -> :ok
    end

    watch_loop()
  end
end
