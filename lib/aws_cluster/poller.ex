defmodule AWSCluster.Poller do
  use GenServer

  alias AWSCluster.{Config, Error, Firewall, Loop, Membership, Peers, Redacted}
  alias AWSCluster.Groups.{Gateways, Plan}
  alias AWSCluster.Loop.Round
  alias AWSCluster.Membership.NameBudget
  alias AWSCluster.Poller.{Answer, Coordination, DiscoveryRun, Options, Report}
  alias AWSCluster.Strategy.State

  @moduledoc """
  The one discovery loop every polling strategy shares (`AWSCluster.Strategy`).

  Its promises (DESIGN §3):

    * Polls every `:polling_interval` ms with ±10% jitter (start to start after a
      complete answer), so a fleet does not hit the account-wide API rate limit in
      lockstep.
    * With `coordinate: true` (the EC2 and AutoScaling default) only one of the
      connected nodes running the topology polls, and the others apply its answers
      (see "Coordinated polling" below).
    * A `:throttled` error doubles the delay per consecutive throttle (with the same
      jitter) up to `:max_backoff`; other errors retry at the normal interval, so the
      cluster catches up within one interval after the fault clears.
    * Any error keeps the last good set. Nothing is ever disconnected because discovery
      failed.
    * Only invalid options fail a start. Any other fault at start (IMDS down, no
      credentials yet) starts the loop in `:failing` health: it logs once, retries with
      backoff (an eighth of the interval up to one), and forms the cluster once the
      fault clears.
    * The membership rules are `AWSCluster.Membership`'s: a peer is pruned only after
      `:prune_after` consecutive complete answers without it, or at once when the
      strategy reports it as terminating; an answer that would prune over
      `:prune_guard` percent at once waits one more answer; new node names are minted
      only within `:name_budget`.
    * Connects run through the state's MFAs (libcluster's `Cluster.Strategy` helpers
      under libcluster) in a round process linked to the loop, concurrently and bounded
      by `:connect_timeout`; a failed connect is logged at warning once per node and
      state change (`AWSCluster.Loop.Round`).
    * Discovery runs in its own linked process, killed after `:discovery_timeout`, and
      its reply is tagged, so a late answer cannot confuse the loop and `status/1`
      always answers. Stopping the topology ends both.
    * Logs once when discovery starts failing and once when it recovers, not every poll.
    * With `firewall: [enabled: true]` the loop keeps the host's nftables rules in step
      with its members, before each connect round (`AWSCluster.Firewall`).

  ## Coordinated polling

  With `coordinate: true` one node polls for the connected nodes running the topology
  and the others apply its answers exactly like their own (last good set, miss counts,
  prune guard, name budget, `AWSCluster.node_info/1`, connect round). Who polls, what a
  follower accepts, when a node polls for itself anyway, and why:
  `AWSCluster.Poller.Coordination`. `status/1`'s `coordination` says who polls and where
  the last answer came from; `mix aws_cluster.peers` shows it for every connected peer.

  ## Pruning

  A prune means: stop dialing the peer and forget it. By default it does **not** cut
  the link (`:prune_disconnect`): on OTP 25 and later that gets the pruner expelled from
  the mesh by `global` (see `AWSCluster.Connector`, "Why a prune does not disconnect by
  default"). A peer that really went away drops out by itself, through `nodedown`.

  Telemetry (see `AWSCluster.Telemetry`): `[:aws_cluster, :discovery, :start]`,
  `[:aws_cluster, :discovery, :stop]` (measurements `duration`, `peers`),
  `[:aws_cluster, :discovery, :exception]` (metadata `reason`, the error's reason atom)
  for every failed round, and `[:aws_cluster, :discovery, :names_refused]` when the name
  budget refuses new names. Coordination adds `[:aws_cluster, :poller, :elected]`,
  `[:aws_cluster, :poller, :answer]` and `[:aws_cluster, :poller, :ignored]`.

  Options common to every strategy:

  #{Config.docs(AWSCluster.Poller.Options.schema())}
  """

  # Failed polls in a row after which a poller steps aside; the retry of a join after
  # the pg scope restarted.
  @step_down_after 2
  @rejoin_after 1_000

  @typedoc "What `status/1` reports."
  @type status :: %{
          topology: atom(),
          health: :starting | :healthy | :failing,
          last_error: Error.t() | nil,
          failures: non_neg_integer(),
          throttles: non_neg_integer(),
          polls: non_neg_integer(),
          answers: non_neg_integer(),
          coordination: Report.coordination(),
          connecting: boolean(),
          next_delay: non_neg_integer() | nil,
          members: %{node() => non_neg_integer()},
          held: [node()],
          names_left: non_neg_integer(),
          connect_failures: %{node() => term()},
          groups: AWSCluster.Groups.view() | nil
        }

  @doc "The options every polling strategy accepts, as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  defdelegate schema, to: Options

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
      if config.block_startup, do: Round.await_first(pid, config.block_startup)
      {:ok, pid}
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
  The loop's current view: health, counters, the next delay, each member's misses, the
  prunes the guard holds, the new names the budget still allows and the nodes whose last
  connect failed (with why).

  `polls` counts this node's own finished discovery rounds, `answers` the complete
  answers applied (its own and the poller's); `coordination` is
  `t:AWSCluster.Poller.Report.coordination/0`. Connects and disconnects run after a round
  in a separate process; `connecting` is `true` while such a round runs or waits.
  """
  @spec status(GenServer.server()) :: status()
  def status(server), do: GenServer.call(server, :status)

  @doc """
  Asks for a discovery round now, for a source that knows the answer changed (the
  registry's NOTIFY). Asked while a round is in flight, one more runs as soon as it
  ends with an answer (the news may be newer than its read), however often it was
  asked; a failing round keeps its backoff. A follower waits for its poller's answer
  instead.
  """
  @spec poll_now(pid()) :: :ok
  def poll_now(poller) do
    send(poller, :poll_now)
    :ok
  end

  @doc """
  What each coordinated loop of `topology` on this node says about who polls: the
  `coordination` part of `status/1`. `mix aws_cluster.peers` asks every peer this over
  distribution.
  """
  @spec coordination(atom()) :: [Report.coordination()]
  def coordination(topology) do
    # A loop that stops meanwhile has nothing to say.
    Enum.flat_map(Coordination.local_loops(topology), fn pid ->
      try do
        [GenServer.call(pid, :coordination)]
      catch
        :exit, _ -> []
      end
    end)
  end

  @doc """
  Validates `state.config` against the poller's and `strategy`'s schemas; the error
  message starts with the topology.
  """
  @spec validate(module(), State.t()) :: {:ok, map()} | {:error, Error.t()}
  defdelegate validate(strategy, state), to: Options

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
      membership: Membership.new(config, now(), state.topology),
      health: :starting,
      last_error: nil,
      failures: 0,
      throttles: 0,
      polls: 0,
      next_delay: nil,
      discovery: nil,
      poll_again: false,
      round: nil,
      round_pending: false,
      to_prune: [],
      connect_failures: %{},
      refusing: false,
      waiters: [],
      rounds_done: 0,
      coordination: nil,
      poll_timer: nil,
      follow_until: nil,
      answers: 0,
      answer_from: nil,
      answer_at: nil,
      backoff_until: nil,
      stepped_down: false,
      firewall: nil,
      plan: nil,
      groups: nil
    }

    # A gateway that goes down is replaced by the next round: run one at once.
    if config.group, do: _ = :net_kernel.monitor_nodes(true, node_type: :all)

    with {:ok, s} <- start_firewall(s) do
      case start_strategy(s) do
        {:ok, s} ->
          {:ok, s, {:continue, :poll}}

        {:stop, error} ->
          # terminate/2 does not run after a failed init.
          if s.firewall, do: Firewall.stop(s.firewall)
          {:stop, error}

        {:retry, s} ->
          {:ok, s}
      end
    else
      {:error, error} ->
        Loop.log(:error, state.topology, "could not start: #{error.message}")
        {:stop, error}
    end
  end

  # Only an invalid config stops the start; any other fault is retried with backoff, so
  # a host app boots while IMDS or an interface is not there yet.
  defp start_strategy(s) do
    case s.strategy.init(s.sealed_config.(), s.state) do
      {:ok, strategy_state} ->
        {:ok, join(%{s | strategy_state: strategy_state, sealed_config: nil})}

      # An option the AWS client or the NIF refused is as invalid as one the schema did.
      {:error, %Error{reason: reason} = error} when reason in [:invalid_config, :invalid_argument] ->
        Loop.log(:error, s.state.topology, "could not start: #{error.message}")
        {:stop, %{error | reason: :invalid_config}}

      {:error, %Error{} = error} ->
        if s.health != :failing do
          Loop.log(
            :warning,
            s.state.topology,
            "cannot start discovery yet, retrying: #{error.message}"
          )
        end

        s = release_waiters(%{s | health: :failing, last_error: error, failures: s.failures + 1})
        delay = Loop.retry_delay(s.config.polling_interval, s.failures - 1)
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
  def handle_call(:status, _from, s), do: {:reply, Report.status(s, now()), s}
  def handle_call(:coordination, _from, s), do: {:reply, Report.coordination(s, now()), s}

  def handle_call({:await_first_round, ms}, from, s) do
    if s.rounds_done > 0 do
      {:reply, :ok, s}
    else
      Process.send_after(self(), :release_waiters, ms)
      {:noreply, %{s | waiters: [from | s.waiters]}}
    end
  end

  def handle_call(request, _from, s), do: {:reply, Loop.unknown_call(request), s}

  # Its own message, not the timer's :poll, which schedule/2 may drop from the mailbox.
  # Asked while a round runs, it may be about news that round started too early to
  # see: one more runs next.
  @impl true
  def handle_info(:poll_now, %{discovery: d} = s) when d != nil,
    do: {:noreply, %{s | poll_again: true}}

  def handle_info(:poll_now, s), do: handle_info(:poll, s)

  def handle_info(:poll, s) do
    if following?(s),
      do: {:noreply, schedule(s, s.follow_until - now())},
      else: {:noreply, start_discovery(s)}
  end

  def handle_info(:init_strategy, s) do
    case start_strategy(s) do
      {:ok, s} -> {:noreply, start_discovery(s)}
      {:stop, error} -> {:stop, error, s}
      {:retry, s} -> {:noreply, s}
    end
  end

  def handle_info(:release_waiters, s), do: {:noreply, release_waiters(s)}

  def handle_info({:discovered, ref, result}, %{discovery: %{ref: ref} = d} = s) do
    DiscoveryRun.answered(d)
    {:noreply, finish(%{s | discovery: nil}, d, result)}
  end

  def handle_info({:discovery_timeout, ref}, %{discovery: %{ref: ref} = d} = s) do
    error = DiscoveryRun.kill(d, s.config.discovery_timeout)
    {:noreply, finish(%{s | discovery: nil}, d, {:error, error})}
  end

  def handle_info({:DOWN, mon, :process, _pid, reason}, %{discovery: %{monitor: mon} = d} = s) do
    error = DiscoveryRun.exited(d, s.strategy, reason)
    {:noreply, finish(%{s | discovery: nil}, d, {:error, error})}
  end

  def handle_info({Round, ref, result}, %{round: %{ref: ref}} = s) do
    failures =
      s.state.topology
      |> Round.report(s.connect_failures, result)
      |> Map.take(Membership.nodes(s.membership))

    s = %{s | round: nil, connect_failures: failures, rounds_done: s.rounds_done + 1}
    s = %{s | groups: Plan.after_round(meta(s), s.plan, s.groups, result.groups)}
    s = release_waiters(s)
    {:noreply, if(s.round_pending, do: start_round(s), else: s)}
  end

  def handle_info({:EXIT, pid, reason}, %{round: %{pid: pid}} = s) when reason != :normal do
    Loop.log(:error, s.state.topology, "connect round crashed: #{inspect(reason)}")
    s = release_waiters(%{s | round: nil, rounds_done: s.rounds_done + 1})
    {:noreply, if(s.round_pending, do: start_round(s), else: s)}
  end

  def handle_info({ref, event, _key, _pids} = notice, %{coordination: %{monitor: ref}} = s)
      when event in [:join, :leave] do
    case Coordination.membership(s.coordination, notice) do
      {c, true} -> {:noreply, elected(%{s | coordination: c}, s.coordination)}
      {c, false} -> {:noreply, %{s | coordination: c}}
      :ignore -> {:noreply, s}
    end
  end

  def handle_info({Coordination, _key, _answer} = message, s),
    do: {:noreply, received(s, message)}

  # The pg scope restarted (its supervisor's work): join its new incarnation.
  def handle_info({:DOWN, mon, :process, _, _}, %{coordination: %{scope_monitor: mon}} = s) do
    Process.send_after(self(), :rejoin, @rejoin_after)
    {:noreply, %{s | coordination: nil, follow_until: nil}}
  end

  def handle_info(:rejoin, %{coordination: nil, stepped_down: false} = s) do
    case join(s) do
      %{coordination: nil} = s ->
        Process.send_after(self(), :rejoin, @rejoin_after)
        {:noreply, s}

      s ->
        {:noreply, s}
    end
  end

  def handle_info({:nodedown, node, _info}, %{groups: %{} = groups} = s),
    do: {:noreply, if(Gateways.gateway?(groups, node), do: start_round(s), else: s)}

  # Normal exits of linked helpers, replies of rounds we gave up on, and stray async-NIF
  # replies land here (nodeups and other nodedowns too).
  def handle_info(_other, s), do: {:noreply, s}

  # Links end the helpers when the loop exits with any reason but :normal; a
  # GenServer.stop/1 is :normal, so they are ended here too.
  @impl true
  def terminate(reason, s) do
    NameBudget.save(s.state.topology, s.membership.budget)
    if s.round, do: Process.exit(s.round.pid, :kill)
    if s.discovery, do: Process.exit(s.discovery.pid, :kill)

    if s.strategy_state != nil and function_exported?(s.strategy, :stop, 1),
      do: s.strategy.stop(s.strategy_state)

    # A crash keeps the table, which still admits every member, for the restart to take.
    if s.firewall && clean_stop?(reason), do: Firewall.stop(s.firewall)
    :ok
  end

  defp clean_stop?(reason), do: reason in [:normal, :shutdown] or match?({:shutdown, _}, reason)

  defp release_waiters(s), do: %{s | waiters: Round.release(s.waiters)}

  defp start_discovery(%{discovery: nil, strategy_state: strategy_state} = s)
       when strategy_state != nil do
    AWSCluster.Telemetry.execute(
      [:aws_cluster, :discovery, :start],
      %{system_time: System.system_time()},
      meta(s)
    )

    %{s | discovery: DiscoveryRun.start(s.strategy, strategy_state, s.config.discovery_timeout)}
  end

  defp start_discovery(s), do: s

  defp finish(s, d, result) do
    duration = System.monotonic_time() - d.started
    s = %{s | polls: s.polls + 1}

    case Answer.normalize(result, s.strategy, s.config.max_peers) do
      {:ok, peers, gone} ->
        AWSCluster.Telemetry.execute(
          [:aws_cluster, :discovery, :stop],
          %{duration: duration, peers: length(peers)},
          meta(s)
        )

        # Start to start, so followers hear from the poller once per interval.
        elapsed = System.convert_time_unit(duration, :native, :millisecond)
        interval = s.config.polling_interval
        delay = max(Loop.jitter(interval) - elapsed, div(interval, 10))

        if overtaken?(s, d) do
          schedule(s, delay)
        else
          s
          |> succeed(peers, gone, node())
          |> share({:ok, peers, gone})
          |> rejoin()
          |> schedule(delay)
        end

      {:error, error} ->
        AWSCluster.Telemetry.execute(
          [:aws_cluster, :discovery, :exception],
          %{duration: duration},
          Map.put(meta(s), :reason, error.reason)
        )

        fail(s, error)
    end
  end

  # A follower's own answer that the poller's overtook while it ran is not counted: two
  # answers of one moment would count as two misses.
  defp overtaken?(s, d) do
    started = System.convert_time_unit(d.started, :native, :millisecond)
    s.answer_from not in [nil, node()] and s.answer_at >= started
  end

  defp succeed(s, peers, gone, from) do
    topology = s.state.topology
    {membership, outcome} = Membership.answer(s.membership, peers, gone, now())

    before = %{
      health: s.health,
      failures: s.failures,
      known: map_size(s.membership.members),
      refusing: s.refusing
    }

    refusing = Report.answer(meta(s), outcome, map_size(membership.members), before)
    plan = Plan.new(s.config, membership.members, peers, s.plan)
    if plan, do: Peers.put_view(topology, Plan.view(plan, s.groups))

    rows =
      Enum.map(membership.members, fn {node, m} ->
        topology |> Answer.info(node, m.peer) |> Map.put(:group, Plan.group_of(plan, node))
      end)

    Peers.replace(topology, rows)
    Plan.explain(topology, s.plan, plan)

    %{
      s
      | membership: membership,
        plan: plan,
        health: :healthy,
        last_error: nil,
        failures: 0,
        throttles: 0,
        refusing: refusing,
        answers: s.answers + 1,
        answer_from: from,
        answer_at: now(),
        to_prune: s.to_prune ++ Enum.map(outcome.pruned, &elem(&1, 0))
    }
    |> follow_firewall()
    |> start_round()
  end

  defp fail(s, error) do
    Report.failed(meta(s), error, s.health, map_size(s.membership.members))
    throttles = if error.reason == :throttled, do: s.throttles + 1, else: s.throttles
    s = %{s | health: :failing, last_error: error, failures: s.failures + 1, throttles: throttles}
    c = s.config

    delay =
      if error.reason == :throttled,
        do: Loop.backoff(c.polling_interval, throttles, c.max_backoff),
        else: Loop.jitter(c.polling_interval)

    # Throttling is the account's, not this node's: the followers wait with the poller.
    # Any other fault may be this node's own (its role, its endpoint): it steps aside.
    s =
      if error.reason == :throttled,
        do: share(s, {:backoff, delay}),
        else: step_down(s, error)

    # Reconnecting the last good set heals links that dropped while AWS is unreachable.
    s |> release_waiters() |> start_round() |> schedule(delay)
  end

  defp start_firewall(%{config: %{firewall: nil}} = s), do: {:ok, s}

  defp start_firewall(s) do
    with {:ok, fw} <- Firewall.start(s.config.firewall, s.state.topology),
         do: {:ok, %{s | firewall: fw}}
  end

  # Before the round that dials them: a new member may dial this node first.
  defp follow_firewall(%{firewall: nil} = s), do: s

  defp follow_firewall(s) do
    # A node named by DNS name or public IP still reaches this one from its private IPs.
    addresses =
      for {node, m} <- s.membership.members,
          address <- [Map.get(m.peer, :address), node, Map.get(m.peer.instance, :private_ip)],
          do: address

    %{s | firewall: Firewall.follow(s.firewall, addresses)}
  end

  defp schedule(s, delay) do
    # A timer that already fired has its :poll in the mailbox: drop it with the timer.
    if s.poll_timer && Process.cancel_timer(s.poll_timer) == false do
      receive do
        :poll -> :ok
      after
        0 -> :ok
      end
    end

    delay = if s.poll_again and s.health == :healthy, do: 0, else: delay

    %{
      s
      | next_delay: delay,
        poll_again: false,
        poll_timer: Process.send_after(self(), :poll, delay)
    }
  end

  # ── coordination (AWSCluster.Poller.Coordination) ──────────────────────────────────

  defp join(s) do
    if s.config[:coordinate] do
      topology = s.state.topology

      case Coordination.join(topology, s.strategy, s.strategy_state, s.config.polling_interval) do
        nil -> s
        c -> elected(%{s | coordination: c, stepped_down: false}, nil)
      end
    else
      s
    end
  end

  defp step_down(%{coordination: c} = s, error) when c != nil do
    if Coordination.poller?(c) and s.failures >= @step_down_after do
      Loop.log(
        :warning,
        s.state.topology,
        "stepping down as poller after #{s.failures} failed polls (#{error.reason}); " <>
          "polling for itself until discovery succeeds"
      )

      Coordination.leave(c)
      %{s | coordination: nil, stepped_down: true, follow_until: nil}
    else
      s
    end
  end

  defp step_down(s, _error), do: s

  defp rejoin(%{stepped_down: true} = s), do: join(s)
  defp rejoin(s), do: s

  # The poller changed in this node's view (`previous` is the old view, nil at join).
  defp elected(s, previous) do
    c = s.coordination
    role = Coordination.role(c)
    Report.elected(meta(s), c, previous && Coordination.poller_node(previous), role)
    interval = s.config.polling_interval

    cond do
      role == :follower ->
        follow_poller(s)

      # Before the first answer the start's own poll is on its way.
      s.answer_at == nil ->
        %{s | follow_until: nil}

      # Taking over: the next poll is due one interval after the last answer, or when
      # the old poller's backoff ends.
      true ->
        now = now()
        # (Monotonic times are negative: no `|| 0` here.)
        due = Enum.max([s.answer_at + Loop.jitter(interval) | List.wrap(s.backoff_until)])
        schedule(%{s | follow_until: nil}, max(0, due - now))
    end
  end

  # A follower polls for itself only when nothing came from the poller by then.
  defp follow(s, delay), do: schedule(%{s | follow_until: now() + delay}, delay)
  defp follow_poller(s), do: follow(s, Loop.jitter(div(3 * s.config.polling_interval, 2)))

  defp following?(s) do
    s.follow_until != nil and not Coordination.poller?(s.coordination) and
      now() < s.follow_until
  end

  defp share(%{coordination: c} = s, result) when c != nil do
    if Coordination.poller?(c),
      do: %{s | coordination: Coordination.broadcast(c, result)},
      else: s
  end

  defp share(s, _result), do: s

  defp received(s, message) do
    interval = s.config.polling_interval
    # Ages are on the senders' clocks: system time, not this loop's monotonic now().
    system_now = System.system_time(:millisecond)

    case Coordination.accept(s.coordination, message, system_now, 2 * interval) do
      :not_ours ->
        s

      {:ignore, c, reason} ->
        Report.ignored(meta(s), message, reason)
        %{s | coordination: c}

      {:ok, c, answer} ->
        s = %{s | coordination: c}

        case Coordination.result(answer) do
          {:backoff, delay} ->
            s = %{s | backoff_until: now() + delay}
            follow(s, delay + Loop.jitter(div(interval, 2)))

          result ->
            apply_received(s, message, node(answer.from), result)
        end
    end
  end

  # Distribution is trusted (the cookie), but a poller of another version could still
  # send a shape this one does not know: such an answer changes nothing.
  defp apply_received(s, message, from, result) do
    case Answer.normalize(result, s.strategy, s.config.max_peers) do
      {:ok, peers, gone} ->
        Report.received(meta(s), from, length(peers))

        %{s | backoff_until: nil}
        |> succeed(peers, gone, from)
        |> follow_poller()

      {:error, _} ->
        {:ignore, c, reason} = Coordination.ignore(s.coordination, :invalid)
        Report.ignored(meta(s), message, reason)
        %{s | coordination: c}
    end
  end

  # One round at a time; a request during a round runs after it.
  defp start_round(%{round: nil} = s) do
    opts = [
      timeout: s.config.connect_timeout,
      max_concurrency: s.config.max_concurrency,
      prune_mode: s.config.prune_disconnect
    ]

    opts = if s.plan, do: [{:groups, s.plan} | opts], else: opts
    dial = Plan.dial(s.plan, Membership.nodes(s.membership))
    round = Round.start(s.state, dial, s.to_prune, opts)
    %{s | round: round, round_pending: false, to_prune: []}
  end

  defp start_round(s), do: %{s | round_pending: true}

  defp meta(s), do: %{topology: s.state.topology, strategy: s.strategy}
  defp now, do: System.monotonic_time(:millisecond)
end
