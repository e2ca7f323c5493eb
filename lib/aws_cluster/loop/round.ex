defmodule AWSCluster.Loop.Round do
  @moduledoc """
  One connect round of a discovery loop, and what its results mean for the log.

  A round may take up to `:connect_timeout` per node, and the loop must keep answering,
  so it runs in its own process. That process is **linked** to the loop: when a
  topology stops, its round dies with it and can connect nothing afterwards. It sends
  `{#{inspect(__MODULE__)}, ref, result}` to the loop when done.

  Failed connects are logged at warning **once per node and state change**: the first
  failure, a change of reason, and (at info) the recovery. A node that keeps failing the
  same way is not logged again, so a dead peer does not fill the log each poll.
  """

  alias AWSCluster.{Connector, Loop}
  alias AWSCluster.Groups.Gateways
  alias AWSCluster.Strategy.State

  @schema [
    connect_timeout: [
      type: :pos_integer,
      default: 5_000,
      doc: "Milliseconds one connect attempt may take."
    ],
    max_concurrency: [type: :pos_integer, default: 16, doc: "Connect attempts running at once."],
    block_startup: [
      type: {:or, [{:integer, 1..600_000}, {:literal, false}]},
      default: false,
      doc:
        "Milliseconds `start_link` may wait for the first round (a discovery and its " <>
          "connects; for gossip, an announce interval and its connects), so what starts " <>
          "next (Mnesia, Horde) sees a formed cluster; `false` returns at once."
    ]
  ]

  @doc "The connect round's options, common to every strategy, as an `AWSCluster.Config` schema."
  @spec schema() :: AWSCluster.Config.schema()
  def schema, do: @schema

  @doc """
  Waits (at most `ms`) until the loop `pid` answers `{:await_first_round, ms}`, which it
  does once its first round is done: `block_startup`. Always returns `:ok`.
  """
  @spec await_first(pid(), pos_integer()) :: :ok
  def await_first(pid, ms) do
    GenServer.call(pid, {:await_first_round, ms}, ms + 5_000)
  catch
    :exit, _ -> :ok
  end

  @doc "Answers the callers waiting in `await_first/2`; returns the empty list."
  @spec release([GenServer.from()]) :: []
  def release(waiters) do
    for from <- waiters, do: GenServer.reply(from, :ok)
    []
  end

  @typedoc "A running round."
  @type t :: %{ref: reference(), pid: pid()}

  @typedoc """
  What a round did: connects, prunes that cut a link, the nodes linked after, and for a
  grouped topology the gateway links (`AWSCluster.Groups.Gateways.arrange/2`, else `nil`).
  """
  @type result :: %{
          connect: Connector.result(),
          prune: Connector.result(),
          linked: [node()],
          groups: Gateways.result() | nil
        }

  @typedoc "The nodes whose last connect failed, and why."
  @type failures :: %{node() => Connector.failure()}

  @doc """
  Starts a round that first handles `prune` (under `prune_mode`, see
  `AWSCluster.Connector.prune/4`) then connects `connect`. Options: `:timeout`,
  `:max_concurrency`, `:prune_mode` (default `:when_safe`) and `:groups`, a
  `t:AWSCluster.Groups.Gateways.plan/0` whose gateway links follow the connects.
  """
  @spec start(State.t(), [node()], [node()], keyword()) :: t()
  def start(%State{} = state, connect, prune, opts) do
    parent = self()
    ref = make_ref()
    {mode, opts} = Keyword.pop(opts, :prune_mode, :when_safe)
    {plan, opts} = Keyword.pop(opts, :groups)

    pid =
      spawn_link(fn ->
        Logger.metadata(aws_cluster_topology: state.topology)
        pruned = Connector.prune(state, prune, mode, opts)
        result = Connector.connect(state, connect, opts)
        groups = plan && Gateways.arrange(plan, opts)
        linked = Connector.list_nodes(state)
        result = %{connect: result, prune: pruned, linked: linked, groups: groups}
        send(parent, {__MODULE__, ref, result})
      end)

    %{ref: ref, pid: pid}
  end

  @doc """
  Logs what `result` changed against `failures` (the nodes whose last attempt failed),
  and returns the failures to compare the next round with: this round's, plus earlier
  ones of nodes it did not try that are still not linked. A round may try only some
  nodes (gossip dials a newcomer on its own), so one round does not forget the rest.
  """
  @spec report(atom(), failures(), result()) :: failures()
  def report(topology, failures, %{connect: connect, prune: prune, linked: linked}) do
    for node <- prune.ok, do: Loop.log(:info, topology, "disconnected pruned #{node}")

    for {node, why} <- prune.failed,
        do: Loop.log(:warning, topology, "could not disconnect #{node}: #{inspect(why)}")

    for node <- connect.ok do
      if Map.has_key?(failures, node),
        do: Loop.log(:info, topology, "connected to #{node} after failing"),
        else: Loop.log(:debug, topology, "connected to #{node}")
    end

    now = Map.new(connect.failed)

    for {node, why} <- now, Map.get(failures, node) != why do
      Loop.log(:warning, topology, "cannot connect to #{node}: #{describe(why)}")
    end

    failures |> Map.drop(connect.ok ++ linked) |> Map.merge(now)
  end

  defp describe(false), do: "refused or unreachable (cookie, port, firewall, or down)"
  defp describe(:ignored), do: "distribution is not started on this node"
  defp describe(:timeout), do: "no answer within connect_timeout"
  defp describe(other), do: inspect(other)
end
