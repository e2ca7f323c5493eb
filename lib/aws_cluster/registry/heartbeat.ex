defmodule AWSCluster.Registry.Heartbeat do
  @moduledoc """
  Writes this node's row every `interval` ms, whoever reads the table for the topology
  (the poller may be another node's), and deletes it when it stops: a graceful stop
  leaves the table at once, a killed node's row ages out after the TTL.

  Started by `AWSCluster.Strategy.Registry.init/2`, linked to the topology's poller, and
  stopped by its `terminate/2` (`stop/3`), so the delete is done before an application
  shutdown kills what is left. A failed write is logged when the outcome changes and
  tried again at the next beat; it never stops the process. A join another node
  announces (PostgreSQL's NOTIFY, at most two a second however many come) makes the
  poller read at once; without the listener, the poller's interval still finds it.
  """

  use GenServer

  require Logger

  alias AWSCluster.Registry

  # A stop must not hang a shutdown on an unreachable database.
  @delete_timeout 2_000

  @doc """
  Starts the heartbeat of `row`, linked to the caller, which is the topology's poller:
  a join another node announces makes it poll at once (`AWSCluster.Poller.poll_now/1`).
  """
  @spec start_link(Registry.t(), map(), pos_integer(), atom()) :: GenServer.on_start()
  def start_link(registry, row, interval, topology),
    do: GenServer.start_link(__MODULE__, {registry, row, interval, topology, self()})

  @doc """
  Stops the heartbeat `pid` and deletes `row` from `registry`, waiting for the delete at
  most 2 s. The process is killed, not asked: a write in flight would hold it for up to
  the query timeout. On PostgreSQL the delete queues behind that write on the same
  connection, so the write cannot bring the row back.
  """
  @spec stop(pid(), Registry.t(), map()) :: :ok
  def stop(pid, registry, row) do
    Process.unlink(pid)
    Process.exit(pid, :kill)
    _ = Registry.delete(registry, row.node, row.boot_id, @delete_timeout)
    :ok
  end

  @doc "The last write's outcome: `:ok`, `{:error, %AWSCluster.Error{}}` or `nil` (none yet)."
  @spec last(pid()) :: :ok | {:error, AWSCluster.Error.t()} | nil
  def last(pid), do: GenServer.call(pid, :last)

  @impl true
  def init({registry, row, interval, topology, poller}) do
    Process.flag(:trap_exit, true)

    with {:error, e} <- Registry.listen(registry, self()) do
      Logger.warning(
        "[aws_cluster:#{topology}] registry: cannot listen for joins (#{e.reason}: " <>
          "#{e.message}); new nodes are found at the next poll"
      )
    end

    send(self(), :beat)

    {:ok,
     %{
       registry: registry,
       row: row,
       interval: interval,
       topology: topology,
       poller: poller,
       last: nil,
       announced: false
     }}
  end

  @impl true
  def handle_call(:last, _from, s), do: {:reply, s.last, s}

  @impl true
  def handle_info(:beat, s) do
    # Until the first write of this boot gets through, each one announces the join.
    result = Registry.heartbeat(s.registry, s.row, announce: not s.announced)
    log_change(s, result)
    Process.send_after(self(), :beat, s.interval)
    {:noreply, %{s | last: result, announced: s.announced or result == :ok}}
  end

  def handle_info({:aws_cluster_registry, :changed}, s) do
    AWSCluster.Poller.poll_now(s.poller)
    {:noreply, s}
  end

  def handle_info({:EXIT, _pid, reason}, s), do: {:stop, reason, s}

  # A late reply to a write that timed out.
  def handle_info({:aws_cluster, _ref, _reply}, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    _ = Registry.delete(s.registry, s.row.node, s.row.boot_id, @delete_timeout)
    :ok
  end

  defp log_change(%{last: last}, result) when last == result, do: :ok

  defp log_change(s, :ok),
    do: Logger.info("[aws_cluster:#{s.topology}] registry: writing this node's row")

  defp log_change(s, {:error, e}),
    do:
      Logger.warning(
        "[aws_cluster:#{s.topology}] registry heartbeat failing (#{e.reason}): #{e.message}; " <>
          "this node's row ages out after the TTL unless a write gets through"
      )
end
