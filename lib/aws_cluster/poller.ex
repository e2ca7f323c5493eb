defmodule AWSCluster.Poller do
  use GenServer

  alias AWSCluster.{Config, Error, Loop, Membership, Peers, Redacted}
  alias AWSCluster.Loop.Round
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
        "Complete answers a peer must be missing from before it is pruned; " <>
          "`false` never prunes."
    ],
    prune_disconnect: [
      type: {:in, [:when_safe, :always, :never]},
      default: :when_safe,
      doc:
        "Whether a prune also cuts the peer's link. `:when_safe` only cuts hidden links, " <>
          "or all of them when this VM runs with `connect_all false` or " <>
          "`prevent_overlapping_partitions false`; otherwise the peer is only forgotten and " <>
          "its link ends when the node does (see \"Pruning\" above). `:always` cuts every " <>
          "pruned link: on OTP 25+ with default kernel settings that makes `global` expel " <>
          "this node from the mesh. `:never` only forgets."
    ],
    prune_guard: [
      type: {:or, [{:integer, 1..100}, {:literal, false}]},
      default: 30,
      doc:
        "A complete answer that would prune more than this percent of the known peers at " <>
          "once is held until the next complete answer confirms it " <>
          "(`AWSCluster.Membership.PruneGuard`); `false` turns the guard off."
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
    ],
    name_budget: [
      type: {:or, [:pos_integer, {:literal, nil}]},
      default: nil,
      doc:
        "New node names (atoms) this topology may mint over its life before refill; " <>
          "`nil` is twice `:max_peers` (`AWSCluster.Membership.NameBudget`)."
    ],
    name_budget_per_day: [
      type: {:or, [:non_neg_integer, {:literal, nil}]},
      default: nil,
      doc: "Names the budget regains a day, continuously; `nil` is `:max_peers`."
    ],
    block_startup: [
      type: {:or, [{:integer, 1..600_000}, {:literal, false}]},
      default: false,
      doc:
        "Milliseconds `start_link` may wait for the first discovery round and its " <>
          "connects, so what starts next (Mnesia, Horde) sees a formed cluster; " <>
          "`false` returns at once."
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
      at once is held for one more complete answer (`AWSCluster.Membership.PruneGuard`).
    * Connects and disconnects run through the state's MFAs in a separate process, via
      `AWSCluster.Connector`, concurrently and bounded by `:connect_timeout`.
    * Discovery runs in its own monitored process, killed after `:discovery_timeout`,
      and its reply is tagged, so a slow or late answer cannot confuse the loop and
      `status/1` always answers.
    * Logs once when discovery starts failing and once when it recovers, not every poll.

  Telemetry (see `AWSCluster.Telemetry`): `[:aws_cluster, :discovery, :start]`,
  `[:aws_cluster, :discovery, :stop]` (measurements `duration`, `peers`),
  `[:aws_cluster, :discovery, :exception]` (metadata `reason`, the error's reason atom)
  for every failed round, and `[:aws_cluster, :discovery, :names_refused]` when the name
  budget refuses new names.

  Options common to every strategy:

  #{Config.docs(@schema)}
  """

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
          members: %{node() => non_neg_integer()},
          held: [node()],
          names_left: non_neg_integer(),
          connect_failures: %{node() => term()}
        }

  @doc "The options every polling strategy accepts, as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc """
  Validates `arg` (libcluster's `[state]` or a keyword list, see `AWSCluster.Strategy.State`)
  against the poller's and `strategy`'s schemas, then starts the loop. Invalid options
  return `{:error, %AWSCluster.Error{reason: :invalid_config}}` without starting anything.
  With `block_startup: ms`, returns once the first round's connects are done, or after
  `ms`.
  """
  @spec start_link(module(), term()) :: GenServer.on_start()
  def start_link(strategy, arg) do
    with {:ok, state} <- State.new(arg),
         {:ok, config} <- validate(strategy, state),
         {:ok, pid} <- GenServer.start_link(__MODULE__, {strategy, state, config}) do
      if config.block_startup, do: await_first_round(pid, config.block_startup)
      {:ok, pid}
    end
  end

  defp await_first_round(pid, ms) do
    GenServer.call(pid, {:await_first_round, ms}, ms + 5_000)
  catch
    :exit, _ -> :ok
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
  The loop's current view: health, counters, the next delay, each member's misses, the
  prunes the guard holds, the new names the budget still allows and the nodes whose last
  connect failed (with why).

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
    # Links, not monitors, tie the discovery and connect processes to this loop's life;
    # their exits arrive as messages.
    Process.flag(:trap_exit, true)
    Logger.metadata(aws_cluster_topology: state.topology)
    Peers.ensure_started()
    Peers.register(state.topology, self())

    # What runs keeps its values: the state's MFAs are the user's, arguments and all.
    # The options' secrets are only needed to build the strategy state (init/2, retried
    # below), so they stay sealed in a closure, which no report or stacktrace prints.
    s = %{
      strategy: strategy,
      strategy_state: nil,
      state: %{state | config: Config.redact(state.config)},
      config: Config.redact(config),
      sealed_config: fn -> config end,
      membership: Membership.new(config, now()),
      health: :starting,
      last_error: nil,
      failures: 0,
      throttles: 0,
      polls: 0,
      next_delay: nil,
      discovery: nil,
      round: nil,
      round_pending: false,
      to_prune: [],
      connect_failures: %{},
      refusing: false,
      waiters: [],
      rounds_done: 0
    }

    case start_strategy(s) do
      {:ok, s} -> {:ok, s, {:continue, :poll}}
      {:stop, error} -> {:stop, error}
      {:retry, s} -> {:ok, s}
    end
  end

  # Only an invalid config stops the start; any other fault is retried with backoff, so
  # a host app boots while IMDS or an interface is not there yet.
  defp start_strategy(s) do
    case s.strategy.init(s.sealed_config.(), s.state) do
      {:ok, strategy_state} ->
        {:ok, %{s | strategy_state: Config.redact(strategy_state), sealed_config: nil}}

      {:error, %Error{reason: :invalid_config} = error} ->
        Loop.log(:error, s.state.topology, "could not start: #{error.message}")
        {:stop, error}

      {:error, %Error{} = error} ->
        if s.health != :failing do
          Loop.log(
            :warning,
            s.state.topology,
            "cannot start discovery yet, retrying: #{error.message}"
          )
        end

        s = %{s | health: :failing, last_error: error, failures: s.failures + 1}
        s = release_waiters(s)
        # From an eighth of the interval up to one: once the fault clears, the next
        # try comes within an interval and the cluster forms in the round after it.
        interval = s.config.polling_interval
        delay = Loop.backoff(max(1, div(interval, 8)), s.failures - 1, interval)
        Process.send_after(self(), :init_strategy, delay)
        {:retry, %{s | next_delay: delay}}
    end
  end

  @impl true
  def handle_continue(:poll, s), do: {:noreply, start_discovery(s)}

  # What is printed (crash reports, :sys.get_status/1) is redacted; what runs is not,
  # so a user's connect MFA keeps its arguments.
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
      members: Membership.misses(s.membership),
      held: Enum.sort(s.membership.held),
      names_left: Membership.names_left(s.membership, now()),
      connect_failures: s.connect_failures
    }

    {:reply, reply, s}
  end

  def handle_call({:await_first_round, ms}, from, s) do
    if s.rounds_done > 0 do
      {:reply, :ok, s}
    else
      Process.send_after(self(), :release_waiters, ms)
      {:noreply, %{s | waiters: [from | s.waiters]}}
    end
  end

  # An unknown call is answered, not crashed on: a crash would print the state in the
  # FunctionClauseError's arguments, where format_status/2 does not reach.
  def handle_call(request, _from, s) do
    {:reply, {:error, Error.new(:invalid_argument, "unknown call #{inspect(request)}")}, s}
  end

  @impl true
  def handle_info(:poll, s), do: {:noreply, start_discovery(s)}

  def handle_info(:init_strategy, s) do
    case start_strategy(s) do
      {:ok, s} -> {:noreply, start_discovery(s)}
      {:stop, error} -> {:stop, error, s}
      {:retry, s} -> {:noreply, s}
    end
  end

  def handle_info(:release_waiters, s), do: {:noreply, release_waiters(s)}

  def handle_info({:discovered, ref, result}, %{discovery: %{ref: ref}} = s) do
    d = s.discovery
    Process.demonitor(d.monitor, [:flush])
    Process.cancel_timer(d.timer)
    {:noreply, finish(%{s | discovery: nil}, d, result)}
  end

  def handle_info({:discovery_timeout, ref}, %{discovery: %{ref: ref}} = s) do
    d = s.discovery
    Process.demonitor(d.monitor, [:flush])
    Process.unlink(d.pid)
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

  def handle_info({Round, ref, result}, %{round: %{ref: ref}} = s) do
    failures = Round.report(s.state.topology, s.connect_failures, result)
    s = %{s | round: nil, connect_failures: failures, rounds_done: s.rounds_done + 1}
    s = release_waiters(s)
    {:noreply, if(s.round_pending, do: start_round(s), else: s)}
  end

  def handle_info({:EXIT, pid, reason}, %{round: %{pid: pid}} = s) when reason != :normal do
    Loop.log(:error, s.state.topology, "connect round crashed: #{inspect(reason)}")
    s = %{s | round: nil}
    {:noreply, if(s.round_pending, do: start_round(s), else: s)}
  end

  # Normal exits of linked helpers, replies of rounds we gave up on, and stray async-NIF
  # replies land here.
  def handle_info(_other, s), do: {:noreply, s}

  defp release_waiters(%{waiters: []} = s), do: s

  defp release_waiters(s) do
    for from <- s.waiters, do: GenServer.reply(from, :ok)
    %{s | waiters: []}
  end

  defp start_discovery(%{discovery: nil, strategy_state: strategy_state} = s)
       when strategy_state != nil do
    parent = self()
    ref = make_ref()
    strategy = s.strategy

    AWSCluster.Telemetry.execute(
      [:aws_cluster, :discovery, :start],
      %{system_time: System.system_time()},
      meta(s)
    )

    {pid, monitor} =
      Process.spawn(
        fn -> send(parent, {:discovered, ref, discover(strategy, strategy_state)}) end,
        [:link, :monitor]
      )

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

        s |> succeed(peers, gone) |> schedule(Loop.jitter(s.config.polling_interval))

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
      not Enum.all?(peers, &peer?/1) ->
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
        {:ok, peers, gone}
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

  # A node name is an atom, or a string the membership turns into one within its budget.
  defp peer?(%{node: n, instance: i}) when is_map(i), do: is_atom(n) or is_binary(n)
  defp peer?(_), do: false

  defp succeed(s, peers, gone) do
    topology = s.state.topology
    known = map_size(s.membership.members)
    {membership, outcome} = Membership.answer(s.membership, peers, gone, now())
    size = map_size(membership.members)

    if holding = outcome.holding do
      Loop.log(
        :warning,
        topology,
        "holding the prune of #{holding.held} of #{holding.known} peers (over " <>
          "#{holding.percent}% at once) until the next complete answer confirms it"
      )

      AWSCluster.Telemetry.execute([:aws_cluster, :discovery, :prune_held], holding, meta(s))
    end

    s = refused(s, outcome.refused)
    for node <- outcome.joined, do: Loop.log(:info, topology, "new peer #{node}")

    for {node, _kind, why} <- outcome.pruned,
        do: Loop.log(:info, topology, "pruning #{node}: #{why}")

    case s.health do
      :starting ->
        Loop.log(:info, topology, "discovery is up: #{size} peers")

      :healthy ->
        :ok

      :failing ->
        Loop.log(
          :info,
          topology,
          "discovery recovered after #{s.failures} failed polls: #{size} peers (#{known} before)"
        )
    end

    Peers.replace(
      topology,
      Enum.map(membership.members, fn {node, m} -> info(topology, node, m.peer) end)
    )

    %{
      s
      | membership: membership,
        health: :healthy,
        last_error: nil,
        failures: 0,
        throttles: 0,
        to_prune: s.to_prune ++ Enum.map(outcome.pruned, &elem(&1, 0))
    }
    |> start_round()
  end

  defp refused(s, 0), do: %{s | refusing: false}

  defp refused(s, count) do
    unless s.refusing do
      Loop.log(
        :error,
        s.state.topology,
        "refusing #{count} new node names: the name budget (name_budget) is spent; " <>
          "known peers are kept. Names are atoms, which are never freed: who can tag " <>
          "instances here?"
      )
    end

    AWSCluster.Telemetry.execute(
      [:aws_cluster, :discovery, :names_refused],
      %{count: count},
      meta(s)
    )

    %{s | refusing: true}
  end

  defp fail(s, error) do
    if s.health != :failing do
      Loop.log(
        :warning,
        s.state.topology,
        "discovery failing (#{error.reason}): #{error.message}; " <>
          "keeping #{map_size(s.membership.members)} known peers"
      )
    end

    throttles = if error.reason == :throttled, do: s.throttles + 1, else: s.throttles
    s = %{s | health: :failing, last_error: error, failures: s.failures + 1, throttles: throttles}
    c = s.config

    delay =
      if error.reason == :throttled,
        do: Loop.backoff(c.polling_interval, throttles, c.max_backoff),
        else: Loop.jitter(c.polling_interval)

    # Reconnecting the last good set heals links that dropped while AWS is unreachable.
    s |> release_waiters() |> start_round() |> schedule(delay)
  end

  defp schedule(s, delay) do
    Process.send_after(self(), :poll, delay)
    %{s | next_delay: delay}
  end

  # One round at a time; a request during a round runs after it.
  defp start_round(%{round: nil} = s) do
    opts = [
      timeout: s.config.connect_timeout,
      max_concurrency: s.config.max_concurrency,
      prune_mode: s.config.prune_disconnect
    ]

    round = Round.start(s.state, Membership.nodes(s.membership), s.to_prune, opts)
    %{s | round: round, round_pending: false, to_prune: []}
  end

  defp start_round(s), do: %{s | round_pending: true}

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
  defp now, do: System.monotonic_time(:millisecond)
end
