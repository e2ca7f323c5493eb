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
  with measurements `%{count: 1}` and metadata `%{topology: atom, node: node}`.
  """

  alias AWSCluster.Strategy.State

  @default_timeout 5_000
  @default_max_concurrency 16

  @typedoc "Why a node was not (dis)connected: the MFA's answer, `:timeout` or `{:exit, term}`."
  @type failure :: false | :ignored | :timeout | {:exit, term()} | term()
  @type result :: %{ok: [node()], failed: [{node(), failure()}]}
  @type option :: {:timeout, pos_integer()} | {:max_concurrency, pos_integer()}

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
    |> Task.async_stream(fn node -> attempt(m, f, a, node) end,
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
        %{acc | failed: [{node, failure} | acc.failed]}

      {:exit, {node, :timeout}}, acc ->
        %{acc | failed: [{node, :timeout} | acc.failed]}

      {:exit, {node, reason}}, acc ->
        %{acc | failed: [{node, {:exit, reason}} | acc.failed]}
    end)
  end

  # The MFA runs inside a task linked to the caller, so anything it raises is turned into
  # a failure here instead of taking the poller down with it.
  defp attempt(m, f, a, node) do
    case apply(m, f, a ++ [node]) do
      true -> {node, :ok}
      other -> {node, other}
    end
  rescue
    e -> {node, {:exit, Exception.message(e)}}
  catch
    kind, reason -> {node, {:exit, {kind, reason}}}
  end

  defp emit(state, action, node) do
    AWSCluster.Telemetry.execute([:aws_cluster, :node, action], %{count: 1}, %{
      topology: state.topology,
      node: node
    })
  end
end
