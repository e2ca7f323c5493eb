defmodule AWSCluster.Poller do
  use GenServer
  require Logger

  alias AWSCluster.{Config, Connector, Error, Peers, Redacted}
  alias AWSCluster.Poller.PruneGuard
  alias AWSCluster.Strategy.State

  @schema [
    polling_interval: [
      type: :pos_integer,
      default: 10_000,
      doc: "Milliseconds between polls (±10% jitter)."
    ],
    prune_after: [
      type: {:or, [:pos_integer, {:literal, false}]},
      default: 3,
      doc:
        "Complete answers a peer must be missing from before it is disconnected; " <>
          "`false` never prunes."
    ],
    prune_guard: [
      type: {:or, [{:integer, 1..100}, {:literal, false}]},
      default: 30,
      doc:
        "A complete answer that would prune more than this percent of the known peers at " <>
          "once is held until the next complete answer confirms it " <>
          "(`AWSCluster.Poller.PruneGuard`); `false` turns the guard off."
    ],
    prune_guard_min: [
      type: :pos_integer,
      default: 2,
      doc: "The guard never holds fewer prunes than this in one answer."
    ],
    connect_timeout: [
      type: :pos_integer,
      default: 5_000,
      doc: "Milliseconds one connect attempt may take."
    ],
    max_concurrency: [type: :pos_integer, default: 16, doc: "Connect attempts running at once."],
    discovery_timeout: [
      type: :pos_integer,
      default: 60_000,
      doc: "Milliseconds one discovery round may take before it is killed."
    ],
    max_backoff: [
      type: :pos_integer,
      default: 300_000,
      doc: "Upper bound in ms for the delay after repeated throttling."
    ],
    max_peers: [
      type: :pos_integer,
      default: 5_000,
      doc: "Answers with more peers are rejected (node names are atoms)."
    ]
  ]

  @moduledoc """
  The one discovery loop every polling strategy shares (`AWSCluster.Strategy`).

  Its promises (DESIGN §3):

    * Polls every `:polling_interval` ms with ±10% jitter, so a fleet does not hit the
      account-wide API rate limit in lockstep.
    * A `:throttled` error doubles the delay per consecutive throttle (with the same
      jitter) up to `:max_backoff`; other errors retry at the normal interval, so the
      cluster catches up within one interval after the fault clears.
    * Any error keeps the last good set. Nothing is ever disconnected because discovery
      failed.
    * A peer is pruned only after `:prune_after` consecutive complete answers without it,
      or at once when the strategy reports it as terminating. `prune_after: false` never
      prunes. An answer that would prune over `:prune_guard` percent of the known peers
      at once is held for one more complete answer (`AWSCluster.Poller.PruneGuard`).
    * Connects and disconnects run through the state's MFAs in a separate process, via
      `AWSCluster.Connector`, concurrently and bounded by `:connect_timeout`.
    * Discovery runs in its own monitored process, killed after `:discovery_timeout`,
      and its reply is tagged, so a slow or late answer cannot confuse the loop and
      `status/1` always answers.
    * Logs once when discovery starts failing and once when it recovers, not every poll.

  Telemetry (see `AWSCluster.Telemetry`): `[:aws_cluster, :discovery, :start]`,
  `[:aws_cluster, :discovery, :stop]` (measurements `duration`, `peers`) and
  `[:aws_cluster, :discovery, :exception]` (metadata `reason`, the error's reason atom)
  for every failed round.

  Options common to every strategy:

  #{Config.docs(@schema)}
  """

  @jitter 0.1

  @typedoc "What `status/1` reports."
  @type status :: %{
          topology: atom(),
          health: :starting | :healthy | :failing,
          last_error: Error.t() | nil,
          failures: non_neg_integer(),
          throttles: non_neg_integer(),
          polls: non_neg_integer(),
          connecting: boolean(),
          next_delay: non_neg_integer() | nil,
          members: %{node() => non_neg_integer()}
        }

  @doc "The options every polling strategy accepts, as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc """
  Validates `arg` (libcluster's `[state]` or a keyword list, see `AWSCluster.Strategy.State`)
  against the poller's and `strategy`'s schemas, then starts the loop. Invalid options
  return `{:error, %AWSCluster.Error{reason: :invalid_config}}` without starting anything.
  """
  @spec start_link(module(), term()) :: GenServer.on_start()
  def start_link(strategy, arg) do
    with {:ok, state} <- State.new(arg),
         {:ok, config} <- validate(strategy, state) do
      GenServer.start_link(__MODULE__, {strategy, state, config})
    end
  end

  @doc "A child spec for `strategy`; the id holds the topology so topologies can share a module."
  @spec child_spec(module(), term()) :: Supervisor.child_spec()
  def child_spec(strategy, arg) do
    topology =
      case State.new(arg) do
        {:ok, state} -> state.topology
        {:error, _} -> nil
      end

    # The options hold AWS keys; see AWSCluster.Redacted.seal_child/1.
    Redacted.seal_child(%{
      id: {strategy, topology},
      start: {strategy, :start_link, [arg]},
      type: :worker
    })
  end

  @doc """
  The loop's current view: health, counters, the next delay and each member's misses.

  `polls` counts finished discovery rounds. Connects and disconnects run after a round
  in a separate process; `connecting` is `true` while such a round runs or waits.
  """
  @spec status(GenServer.server()) :: status()
  def status(server), do: GenServer.call(server, :status)

  @doc """
  Validates `state.config` against the poller's and `strategy`'s schemas; the error
  message starts with the topology.
  """
  @spec validate(module(), State.t()) :: {:ok, map()} | {:error, Error.t()}
  def validate(strategy, state) do
    with {:ok, config} <- Config.validate(state.config, @schema ++ strategy.schema()),
         :ok <- strategy_validate(strategy, config) do
      {:ok, config}
    else
      {:error, error} ->
        {:error,
         %{error | message: "topology #{inspect(state.topology)}: #{error.message}"}
         |> Map.update!(:details, &Map.put(&1, :topology, state.topology))}
    end
  end

  defp strategy_validate(strategy, config) do
    if function_exported?(strategy, :validate, 1), do: strategy.validate(config), else: :ok
  end

  @impl true
  def init({strategy, state, config}) do
    Logger.metadata(aws_cluster_topology: state.topology)

    case strategy.init(config, state) do
      {:ok, strategy_state} ->
        Peers.ensure_started()
        Peers.register(state.topology, self())

        # Secrets (static AWS keys) are only needed by init/2 to build the client; keep
        # none past this point, so no crash report, stacktrace or status can show one.
        s = %{
          strategy: strategy,
          strategy_state: Config.redact(strategy_state),
          state: Config.redact(state),
          config: Config.redact(config),
          members: %{},
          health: :starting,
          last_error: nil,
          failures: 0,
          throttles: 0,
          polls: 0,
          next_delay: nil,
          discovery: nil,
          round: nil,
          round_pending: false,
          held: MapSet.new(),
          to_disconnect: []
        }

        {:ok, s, {:continue, :poll}}

      {:error, %Error{} = error} ->
        log(:error, state.topology, "could not start: #{error.message}")
        {:stop, error}
    end
  end

  @impl true
  def handle_continue(:poll, s), do: {:noreply, start_discovery(s)}

  # The state holds no secrets (see init/1); this keeps it so if that ever changes.
  @impl true
  def format_status(_reason, [_pdict, s]), do: Config.redact(s)

  @impl true
  def handle_call(:status, _from, s) do
    reply = %{
      topology: s.state.topology,
      health: s.health,
      last_error: s.last_error,
      failures: s.failures,
      throttles: s.throttles,
      polls: s.polls,
      connecting: s.round != nil or s.round_pending,
      next_delay: s.next_delay,
      members: Map.new(s.members, fn {node, m} -> {node, m.misses} end),
      held: Enum.sort(s.held)
    }

    {:reply, reply, s}
  end

  @impl true
  def handle_info(:poll, s), do: {:noreply, start_discovery(s)}

  def handle_info({:discovered, ref, result}, %{discovery: %{ref: ref}} = s) do
    d = s.discovery
    Process.demonitor(d.monitor, [:flush])
    Process.cancel_timer(d.timer)
    {:noreply, finish(%{s | discovery: nil}, d, result)}
  end

  def handle_info({:discovery_timeout, ref}, %{discovery: %{ref: ref}} = s) do
    d = s.discovery
    Process.demonitor(d.monitor, [:flush])
    Process.exit(d.pid, :kill)
    timeout = s.config.discovery_timeout

    error =
      Error.new(:timeout, "discovery gave no answer within #{timeout} ms", %{timeout: timeout})

    {:noreply, finish(%{s | discovery: nil}, d, {:error, error})}
  end

  def handle_info({:DOWN, mon, :process, _pid, reason}, %{discovery: %{monitor: mon}} = s) do
    d = s.discovery
    Process.cancel_timer(d.timer)

    error =
      Error.new(
        :internal,
        "#{inspect(s.strategy)}'s discovery process exited before answering " <>
          "(exit reason in details.exit)",
        %{exit: reason}
      )

    {:noreply, finish(%{s | discovery: nil}, d, {:error, error})}
  end

  def handle_info({:DOWN, mon, :process, _pid, _reason}, %{round: mon} = s) do
    s = %{s | round: nil}
    {:noreply, if(s.round_pending, do: start_round(s), else: s)}
  end

  # Replies of rounds we gave up on, and stray async-NIF replies, land here.
  def handle_info(_other, s), do: {:noreply, s}

  defp start_discovery(%{discovery: nil} = s) do
    parent = self()
    ref = make_ref()
    %{strategy: strategy, strategy_state: strategy_state} = s

    AWSCluster.Telemetry.execute(
      [:aws_cluster, :discovery, :start],
      %{system_time: System.system_time()},
      meta(s)
    )

    {pid, monitor} =
      spawn_monitor(fn ->
        send(parent, {:discovered, ref, discover(strategy, strategy_state)})
      end)

    timer = Process.send_after(self(), {:discovery_timeout, ref}, s.config.discovery_timeout)

    d = %{ref: ref, pid: pid, monitor: monitor, timer: timer, started: System.monotonic_time()}
    %{s | discovery: d}
  end

  defp start_discovery(s), do: s

  @doc false
  # `strategy.discover/1` with a raise, throw or exit turned into an error result: the
  # poller's discovery process would otherwise leave a crash report per poll, and a
  # diagnostic task (AWSCluster.Probe) would die. The raw term stays in `details`.
  @spec discover(module(), term()) :: term()
  def discover(strategy, strategy_state) do
    strategy.discover(strategy_state)
  rescue
    e ->
      {:error,
       Error.new(:internal, "#{inspect(strategy)}.discover/1 raised: " <> Exception.message(e), %{
         exception: e.__struct__
       })}
  catch
    kind, reason ->
      what = if kind == :throw, do: "threw a value", else: "exited"

      {:error,
       Error.new(
         :internal,
         "#{inspect(strategy)}.discover/1 #{what} (the term is in details.#{kind})",
         %{kind => reason}
       )}
  end

  defp finish(s, d, result) do
    duration = System.monotonic_time() - d.started
    s = %{s | polls: s.polls + 1}

    case normalize(result, s) do
      {:ok, peers, gone} ->
        AWSCluster.Telemetry.execute(
          [:aws_cluster, :discovery, :stop],
          %{duration: duration, peers: length(peers)},
          meta(s)
        )

        s |> succeed(peers, gone) |> schedule(jitter(s.config.polling_interval))

      {:error, error} ->
        AWSCluster.Telemetry.execute(
          [:aws_cluster, :discovery, :exception],
          %{duration: duration},
          Map.put(meta(s), :reason, error.reason)
        )

        fail(s, error)
    end
  end

  defp normalize({:ok, peers}, s), do: normalize({:ok, peers, []}, s)

  defp normalize({:ok, peers, gone}, s) when is_list(peers) and is_list(gone) do
    cond do
      not Enum.all?(peers, &match?(%{node: n, instance: i} when is_atom(n) and is_map(i), &1)) ->
        {:error,
         Error.new(:bad_response, "#{inspect(s.strategy)}.discover/1 returned a malformed peer")}

      length(peers) > s.config.max_peers ->
        {:error,
         Error.new(
           :too_many_peers,
           "discovery found #{length(peers)} peers, more than max_peers (#{s.config.max_peers})",
           %{count: length(peers), max_peers: s.config.max_peers}
         )}

      true ->
        {:ok, Enum.reject(peers, &(&1.node == node())), gone}
    end
  end

  defp normalize({:error, %Error{}} = error, _s), do: error

  defp normalize(other, s) do
    {:error,
     Error.new(
       :bad_response,
       "#{inspect(s.strategy)}.discover/1 returned neither {:ok, peers}, " <>
         "{:ok, peers, gone} nor {:error, %AWSCluster.Error{}} (the value is in details.returned)",
       %{returned: other}
     )}
  end

  defp succeed(s, peers, gone) do
    seen = Map.new(peers, &{&1.node, &1})
    gone = MapSet.new(gone)
    prune_after = s.config.prune_after

    {members, pruned} =
      s.members
      |> Enum.reject(fn {node, _} -> Map.has_key?(seen, node) end)
      |> Enum.reduce({%{}, []}, fn {node, m}, {kept, pruned} ->
        misses = m.misses + 1

        cond do
          prune_after != false and gone?(node, m.peer, gone) ->
            {kept, [{node, :gone, "reported terminating"} | pruned]}

          prune_after != false and misses >= prune_after ->
            {kept, [{node, :missed, "missing from #{misses} consecutive answers"} | pruned]}

          true ->
            {Map.put(kept, node, %{m | misses: misses}), pruned}
        end
      end)

    {members, pruned} =
      Enum.reduce(seen, {members, pruned}, fn {node, peer}, {kept, pruned} ->
        if prune_after != false and gone?(node, peer, gone) do
          reason = "reported terminating"

          if Map.has_key?(s.members, node),
            do: {kept, [{node, :gone, reason} | pruned]},
            else: {kept, pruned}
        else
          {Map.put(kept, node, %{peer: peer, misses: 0}), pruned}
        end
      end)

    topology = s.state.topology

    {members, pruned, held, holding} =
      PruneGuard.apply(s.config, s.members, members, pruned, s.held)

    if holding do
      log(
        :warning,
        topology,
        "holding the prune of #{holding.held} of #{holding.known} peers (over " <>
          "#{holding.percent}% at once) until the next complete answer confirms it"
      )

      AWSCluster.Telemetry.execute([:aws_cluster, :discovery, :prune_held], holding, meta(s))
    end

    for {node, _} <- members,
        not Map.has_key?(s.members, node),
        do: log(:info, topology, "new peer #{node}")

    for {node, _kind, why} <- pruned, do: log(:info, topology, "pruning #{node}: #{why}")

    case s.health do
      :starting ->
        log(:info, topology, "discovery is up: #{map_size(members)} peers")

      :failing ->
        log(
          :info,
          topology,
          "discovery recovered after #{s.failures} failed polls: #{map_size(members)} peers"
        )

      :healthy ->
        :ok
    end

    Peers.replace(topology, Enum.map(members, fn {node, m} -> info(topology, node, m.peer) end))

    %{
      s
      | members: members,
        health: :healthy,
        last_error: nil,
        failures: 0,
        throttles: 0,
        held: held,
        to_disconnect: s.to_disconnect ++ Enum.map(pruned, &elem(&1, 0))
    }
    |> start_round()
  end

  defp gone?(node, peer, gone) do
    MapSet.member?(gone, node) or MapSet.member?(gone, Map.get(peer.instance, :id))
  end

  defp fail(s, error) do
    if s.health != :failing do
      log(
        :warning,
        s.state.topology,
        "discovery failing (#{error.reason}): #{error.message}; " <>
          "keeping #{map_size(s.members)} known peers"
      )
    end

    throttles = if error.reason == :throttled, do: s.throttles + 1, else: s.throttles
    s = %{s | health: :failing, last_error: error, failures: s.failures + 1, throttles: throttles}

    delay =
      if error.reason == :throttled,
        do: backoff(s.config, throttles),
        else: jitter(s.config.polling_interval)

    # Reconnecting the last good set heals links that dropped while AWS is unreachable.
    s |> start_round() |> schedule(delay)
  end

  defp backoff(config, throttles) do
    base = config.polling_interval * Integer.pow(2, min(throttles, 30))
    min(config.max_backoff, jitter(min(base, config.max_backoff)))
  end

  defp jitter(ms) do
    spread = ms * @jitter
    max(1, round(ms - spread + :rand.uniform() * 2 * spread))
  end

  defp schedule(s, delay) do
    Process.send_after(self(), :poll, delay)
    %{s | next_delay: delay}
  end

  # Connects run outside the loop: a round may take up to connect_timeout, and the loop
  # must keep answering. One round at a time; a request during a round runs after it.
  defp start_round(%{round: nil} = s) do
    state = s.state
    nodes = Map.keys(s.members)
    drop = s.to_disconnect

    opts = [timeout: s.config.connect_timeout, max_concurrency: s.config.max_concurrency]

    {_pid, monitor} =
      spawn_monitor(fn ->
        Logger.metadata(aws_cluster_topology: state.topology)
        report(state.topology, :disconnect, Connector.disconnect(state, drop, opts))
        report(state.topology, :connect, Connector.connect(state, nodes, opts))
      end)

    %{s | round: monitor, round_pending: false, to_disconnect: []}
  end

  defp start_round(s), do: %{s | round_pending: true}

  defp report(topology, action, %{ok: ok, failed: failed}) do
    for node <- ok, do: log(:debug, topology, "#{action}ed #{node}")

    for {node, why} <- failed,
        do: log(:debug, topology, "could not #{action} #{node}: #{inspect(why)}")
  end

  defp info(topology, node, peer) do
    instance = peer.instance

    %{
      node: node,
      topology: topology,
      instance_id: Map.get(instance, :id),
      availability_zone: Map.get(instance, :availability_zone),
      address: Map.get(peer, :address),
      tags: Map.get(instance, :tags) || %{}
    }
  end

  defp meta(s), do: %{topology: s.state.topology, strategy: s.strategy}

  defp log(level, topology, text) do
    Logger.log(level, fn -> "[aws_cluster:#{topology}] #{text}" end)
  end
end
