defmodule AWSCluster.Connector do
  @moduledoc """
  Connects to and disconnects from nodes through a strategy state's MFAs, concurrently
  and with a bound on each attempt.

  A connect to an address that silently drops packets can hang for the whole TCP
  connect timeout. Running attempts side by side, each in its own process killed after
  `:timeout`, means one dead IP costs at most one timeout per round and never delays the
  other peers.

  Only nodes that need it are touched: `connect/3` skips this node and nodes the
  `list_nodes` MFA already reports; `disconnect/3` only touches reported nodes.

  Each success emits `[:aws_cluster, :node, :connect]` or `[:aws_cluster, :node, :disconnect]`
  with measurements `%{count: 1}` and metadata `%{topology: atom, node: node}`; each
  failure `[:aws_cluster, :node, :connect_error]` or `:disconnect_error`, with the
  failure as `reason` (libcluster's `:connect_node, :error` events, for every topology). When the
  state came from libcluster, each attempt goes through `Cluster.Strategy.connect_nodes/4`
  or `disconnect_nodes/4`, so libcluster's own telemetry and log lines appear as well
  (libcluster logs a failed connect at warning every time; aws_cluster's own line comes
  once per node and change, see `AWSCluster.Loop.Round`).

  ## Why a prune does not disconnect by default

  Since OTP 25, `global` keeps the mesh free of overlapping partitions
  (`prevent_overlapping_partitions`, on by default). When one node disconnects a peer
  that is still alive and still linked to the others, `global` on those others sees a
  partial partition and disconnects *the node that cut the link*: measured here, within
  about 30 ms every pruner lost its links to the whole mesh, and every process monitor,
  `pg` group and `global` name across those links fired or moved. So `prune/4` only
  forgets a node unless cutting its link is safe: the link is hidden, or this VM runs
  with `connect_all false` or `prevent_overlapping_partitions false`. A peer that really
  went away drops out by itself, through `nodedown` or `net_ticktime`.
  """

  alias AWSCluster.Strategy.State

  @default_timeout 5_000
  @default_max_concurrency 16

  @typedoc "Why a node was not (dis)connected: the MFA's answer, `:timeout` or `{:exit, term}`."
  @type failure :: false | :ignored | :timeout | {:exit, term()} | term()
  @type result :: %{ok: [node()], failed: [{node(), failure()}]}
  @type option :: {:timeout, pos_integer()} | {:max_concurrency, pos_integer()}

  @typedoc "When a prune also cuts the link (the poller's `:prune_disconnect` option)."
  @type prune_mode :: :when_safe | :always | :never

  @doc """
  Connects to every node of `nodes` not yet connected. Options: `:timeout` per attempt
  (default #{@default_timeout} ms) and `:max_concurrency` (default #{@default_max_concurrency}).
  """
  @spec connect(State.t(), [node()], [option()]) :: result()
  def connect(%State{} = state, nodes, opts \\ []) do
    connected = MapSet.new(list_nodes(state))

    nodes
    |> Enum.uniq()
    |> Enum.reject(&(&1 == node() or MapSet.member?(connected, &1)))
    |> run(state, :connect, opts)
  end

  @doc "Disconnects every node of `nodes` that is connected. Options as for `connect/3`."
  @spec disconnect(State.t(), [node()], [option()]) :: result()
  def disconnect(%State{} = state, nodes, opts \\ []) do
    connected = MapSet.new(list_nodes(state))

    nodes
    |> Enum.uniq()
    |> Enum.filter(&(&1 != node() and MapSet.member?(connected, &1)))
    |> run(state, :disconnect, opts)
  end

  @doc """
  Handles pruned `nodes` under `mode`: `:never` leaves every link up, `:always`
  disconnects them all, `:when_safe` (the default) only those whose disconnect cannot
  make `global` expel this node (see "Why a prune does not disconnect by default").
  """
  @spec prune(State.t(), [node()], prune_mode(), [option()]) :: result()
  def prune(state, nodes, mode, opts \\ [])
  def prune(_state, _nodes, :never, _opts), do: %{ok: [], failed: []}
  def prune(state, nodes, :always, opts), do: disconnect(state, nodes, opts)

  def prune(state, nodes, :when_safe, opts) do
    if overlap_guarded?() do
      hidden = MapSet.new(:erlang.nodes(:hidden))
      disconnect(state, Enum.filter(nodes, &MapSet.member?(hidden, &1)), opts)
    else
      disconnect(state, nodes, opts)
    end
  end

  @doc """
  Whether `global` on this VM guards against overlapping partitions, so a disconnect of
  a live, visible peer gets this node expelled: `connect_all` is not `false` and
  `prevent_overlapping_partitions` is not `false` (both kernel settings, OTP 25 defaults).
  """
  @spec overlap_guarded?() :: boolean()
  def overlap_guarded? do
    AWSCluster.Groups.Mode.kernel().connect_all and
      Application.get_env(:kernel, :prevent_overlapping_partitions) != false
  end

  @doc """
  The nodes the state's `list_nodes` MFA reports. An MFA that raises or returns a
  non-list counts as reporting none, so connects are retried rather than skipped.
  """
  @spec list_nodes(State.t()) :: [node()]
  def list_nodes(%State{list_nodes: {m, f, a}}) do
    case apply(m, f, a) do
      nodes when is_list(nodes) -> nodes
      _ -> []
    end
  rescue
    _ -> []
  catch
    _, _ -> []
  end

  defp run([], _state, _action, _opts), do: %{ok: [], failed: []}

  defp run(nodes, state, action, opts) do
    {m, f, a} = Map.fetch!(state, action)
    timeout = Keyword.get(opts, :timeout, @default_timeout)

    nodes
    |> Task.async_stream(fn node -> attempt(state, action, {m, f, a}, node) end,
      max_concurrency: Keyword.get(opts, :max_concurrency, @default_max_concurrency),
      timeout: timeout,
      on_timeout: :kill_task,
      ordered: false,
      zip_input_on_exit: true
    )
    |> Enum.reduce(%{ok: [], failed: []}, fn
      {:ok, {node, :ok}}, acc ->
        emit(state, action, node)
        %{acc | ok: [node | acc.ok]}

      {:ok, {node, failure}}, acc ->
        failed(state, action, node, failure, acc)

      {:exit, {node, :timeout}}, acc ->
        failed(state, action, node, :timeout, acc)

      {:exit, {node, reason}}, acc ->
        failed(state, action, node, {:exit, reason}, acc)
    end)
  end

  # The MFA runs inside a task linked to the caller, so anything it raises is turned into
  # a failure here instead of taking the poller down with it.
  defp attempt(state, action, mfa, node) do
    {node, call(state, action, mfa, node)}
  rescue
    e -> {node, {:exit, Exception.message(e)}}
  catch
    kind, reason -> {node, {:exit, {kind, reason}}}
  end

  # libcluster's helpers get one node at a time, so attempts still run side by side and
  # bounded; the module is named at run time because aws_cluster does not depend on it.
  # They also log each failure themselves, at warning, every round: libcluster's way.
  defp call(%State{libcluster: true} = state, action, mfa, node) do
    args = [state.topology, mfa, state.list_nodes, [node]]

    case apply(Cluster.Strategy, :"#{action}_nodes", args) do
      :ok -> :ok
      {:error, [{_node, reason} | _]} -> reason
      other -> other
    end
  end

  defp call(_state, _action, {m, f, a}, node) do
    case apply(m, f, a ++ [node]) do
      true -> :ok
      other -> other
    end
  end

  defp failed(state, action, node, failure, acc) do
    AWSCluster.Telemetry.execute([:aws_cluster, :node, :"#{action}_error"], %{count: 1}, %{
      topology: state.topology,
      node: node,
      reason: failure
    })

    %{acc | failed: [{node, failure} | acc.failed]}
  end

  defp emit(state, action, node) do
    AWSCluster.Telemetry.execute([:aws_cluster, :node, action], %{count: 1}, %{
      topology: state.topology,
      node: node
    })
  end
end
