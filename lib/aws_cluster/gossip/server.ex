defmodule AWSCluster.Gossip.Server do
  @moduledoc false
  # The process behind AWSCluster.Strategy.Gossip (its docs say what it promises): the
  # socket, the announce timer, the receive path and the connect rounds.

  use GenServer

  alias AWSCluster.{Error, Loop, Peers, Telemetry}
  alias AWSCluster.Gossip.{Announce, Codec, Config, Membership, Receiver, Stats, Transport}
  alias AWSCluster.Groups.{Gateways, Plan}
  alias AWSCluster.Loop.Round
  alias AWSCluster.Membership.NameBudget

  @impl true
  def init({state, c}) do
    Process.flag(:trap_exit, true)
    Logger.metadata(aws_cluster_topology: state.topology)

    with {:ok, ring} <- Config.keyring(c.secrets, c),
         :ok <- Config.check_metadata(ring, c) do
      if c.insecure do
        Loop.log(
          :warning,
          state.topology,
          "gossip runs with insecure: true; anyone who can reach UDP port #{c.port} may be " <>
            "able to forge announces. Configure a secret of at least 32 bytes."
        )
      end

      Peers.ensure_started()
      Peers.register(state.topology, self())

      # The key ring holds the keys from here on: keep no secret in the state, so no
      # crash report, stacktrace or :sys.get_status/1 can print one. The MFAs run as
      # given.
      c = Map.drop(c, [:secret, :secrets])

      s = %{
        state: %{state | config: AWSCluster.Config.redact(state.config)},
        config: c,
        ring: ring,
        guard: Codec.replay_guard(2 * c.max_peers + 16, c.timestamp_window),
        socket: nil,
        health: :starting,
        last_error: nil,
        open_failures: 0,
        boot_id: :binary.decode_unsigned(:crypto.strong_rand_bytes(8)),
        seq: 0,
        own: own_name(),
        warned_offline: false,
        members: Membership.new(c, mono(), state.topology),
        stats: Stats.new(),
        pending: MapSet.new(),
        round: nil,
        failures: %{},
        log_timer: nil,
        last_log: nil,
        # block_startup: the first round is an announce interval and its connects.
        waiters: [],
        first_due: false,
        # group: (AWSCluster.Groups): the plan of the peers heard from, the last round's links.
        plan: nil,
        groups: nil
      }

      Process.send_after(self(), :first_round_due, c.announce_interval)
      # A gateway that goes down is replaced by the next round: run one at once.
      if c.group, do: _ = :net_kernel.monitor_nodes(true, node_type: :all)

      case open_socket(s) do
        {:ok, s} -> {:ok, s, {:continue, :tick}}
        {:stop, e} -> {:stop, e}
      end
    else
      {:error, %Error{} = e} ->
        Loop.log(:error, state.topology, "gossip could not start: #{e.message}")
        {:stop, e}
    end
  end

  # Only invalid options stop the start; a seed name that does not resolve yet, a
  # missing interface or a taken address is retried while the strategy runs failing.
  defp open_socket(s) do
    case listen(s.config) do
      {:ok, c, socket} ->
        s = %{s | config: c}
        tries = if s.open_failures > 0, do: " after #{s.open_failures + 1} tries", else: ""
        text = "#{Announce.describe(s.config)}; #{Announce.ring_text(s.ring)}"
        Loop.log(:info, s.state.topology, "gossip started#{tries}: #{text}")

        {:ok, %{s | socket: socket, health: :healthy, last_error: nil, open_failures: 0}}

      {:error, %Error{reason: :invalid_config} = e} ->
        Loop.log(:error, s.state.topology, "gossip could not start: #{e.message}")
        {:stop, e}

      {:error, %Error{} = e} ->
        if s.health != :failing,
          do:
            Loop.log(
              :warning,
              s.state.topology,
              "gossip cannot listen yet, retrying: #{e.message}"
            )

        delay = Loop.retry_delay(s.config.announce_interval, s.open_failures)
        Process.send_after(self(), :open_socket, delay)
        {:ok, %{s | health: :failing, last_error: e, open_failures: s.open_failures + 1}}
    end
  end

  defp listen(c) do
    with {:ok, c} <- Config.resolve_seeds(c),
         {:ok, socket} <- Transport.open(c),
         do: {:ok, c, socket}
  end

  @impl true
  def handle_continue(:tick, s), do: {:noreply, tick(s)}

  @impl true
  def format_status(_reason, [_pdict, s]), do: AWSCluster.Config.redact(s)

  @impl true
  def handle_call(:stats, _from, s) do
    reply =
      s.stats
      |> Stats.to_map()
      |> Map.merge(%{
        topology: s.state.topology,
        peers: map_size(s.members.peers),
        key_ids: Codec.key_ids(s.ring),
        health: s.health,
        last_error: s.last_error,
        names_left: NameBudget.left(s.members.budget, mono())
      })

    {:reply, reply, s}
  end

  def handle_call(:peers, _from, s) do
    {:reply, Announce.peers(s.members, mono(), System.os_time(:millisecond)), s}
  end

  def handle_call({:await_first_round, ms}, from, s) do
    Process.send_after(self(), :release_waiters, ms)
    {:noreply, release_when_done(%{s | waiters: [from | s.waiters]})}
  end

  def handle_call({:rotate, sealed}, _from, s) when is_function(sealed, 0) do
    with {:ok, secrets} <- Config.check_secrets(sealed.(), s.config.insecure),
         {:ok, ring} <- Config.keyring(secrets, s.config) do
      Loop.log(:info, s.state.topology, "gossip key ring replaced: #{Announce.ring_text(ring)}")
      {:reply, :ok, %{s | ring: ring}}
    else
      {:error, e} -> {:reply, {:error, e}, s}
    end
  end

  def handle_call(request, _from, s), do: {:reply, Loop.unknown_call(request), s}

  @impl true
  def handle_info({:udp, socket, ip, port, packet}, %{socket: socket} = s) do
    {:noreply, receive_packet(s, {ip, port}, packet)}
  end

  def handle_info({:udp_passive, socket}, %{socket: socket} = s) do
    _ = Transport.rearm(socket)
    {:noreply, s}
  end

  def handle_info(:open_socket, s) do
    case open_socket(s) do
      {:ok, s} -> {:noreply, s}
      {:stop, e} -> {:stop, e, s}
    end
  end

  def handle_info(:tick, s), do: {:noreply, tick(s)}

  def handle_info(:first_round_due, s), do: {:noreply, release_when_done(%{s | first_due: true})}

  def handle_info(:release_waiters, s), do: {:noreply, %{s | waiters: Round.release(s.waiters)}}

  def handle_info(:log_stats, s), do: {:noreply, log_stats(%{s | log_timer: nil})}

  def handle_info({Round, ref, result}, %{round: %{ref: ref}} = s) do
    failures = Round.report(s.state.topology, s.failures, result)
    s = %{s | groups: Plan.after_round(meta(s), s.plan, s.groups, result.groups)}
    s = round_done(%{s | round: nil, failures: Map.take(failures, Membership.nodes(s.members))})
    {:noreply, if(MapSet.size(s.pending) > 0, do: start_round(s), else: s)}
  end

  def handle_info({:nodedown, node, _info}, %{groups: %{} = groups} = s) do
    if Gateways.gateway?(groups, node),
      do: {:noreply, request_connect(s, Membership.nodes(s.members))},
      else: {:noreply, s}
  end

  def handle_info({:EXIT, pid, reason}, %{round: %{pid: pid}} = s) when reason != :normal do
    Loop.log(:error, s.state.topology, "connect round crashed: #{inspect(reason)}")
    s = round_done(%{s | round: nil})
    {:noreply, if(MapSet.size(s.pending) > 0, do: start_round(s), else: s)}
  end

  def handle_info({:EXIT, socket, reason}, %{socket: socket} = s) when socket != nil,
    do: {:stop, {:socket_closed, reason}, s}

  # Exits of other linked processes (trap_exit is on so terminate/2 runs on shutdown).
  def handle_info(_other, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, %{socket: nil} = s), do: end_round(s)

  def terminate(_reason, s) do
    end_round(s)

    if s.own do
      {_s, sent} = broadcast(s, :leave)
      Loop.log(:info, s.state.topology, "gossip stopping; sent leave to #{sent} targets")
    end

    :gen_udp.close(s.socket)
    :ok
  end

  # A GenServer.stop/1 (:normal) does not end linked helpers: the round is ended here.
  # The name budget outlives the process (AWSCluster.Membership.NameBudget.save/2).
  defp end_round(s) do
    NameBudget.save(s.state.topology, s.members.budget)
    if s.round, do: Process.exit(s.round.pid, :kill)
    :ok
  end

  ## Receiving

  defp receive_packet(s, from, packet) do
    {members, stats, outcome} =
      Receiver.handle(s, from, packet, mono(), System.os_time(:millisecond))

    s = %{s | members: members, stats: stats}

    case outcome do
      :quiet ->
        s

      :changed ->
        publish(s)

      {:new, node} ->
        Loop.log(:info, s.state.topology, "new peer #{node} at #{Announce.address_text(from)}")
        s |> publish() |> request_connect([node])

      {:left, node} ->
        Loop.log(:info, s.state.topology, "peer #{node} is leaving; not redialing it")
        publish(%{s | pending: MapSet.delete(s.pending, node)})

      {:rejected, reason} ->
        rejected(s, reason)
    end
  end

  defp rejected(s, reason) do
    Telemetry.execute([:aws_cluster, :gossip, :rejected], %{count: 1}, %{
      topology: s.state.topology,
      reason: reason
    })

    schedule_log(s)
  end

  # At most one summary per stats_log_interval: the first reject after a quiet period is
  # reported at once, the rest of a burst together at the end of the interval.
  defp schedule_log(%{log_timer: nil} = s) do
    delay =
      case s.last_log do
        nil -> 0
        last -> max(0, last + s.config.stats_log_interval - mono())
      end

    %{s | log_timer: Process.send_after(self(), :log_stats, delay)}
  end

  defp schedule_log(s), do: s

  defp log_stats(s) do
    {summary, stats} = Stats.take_summary(s.stats)
    if summary, do: Loop.log(:warning, s.state.topology, summary)

    %{s | stats: stats, last_log: mono()}
  end

  ## Announcing

  defp tick(s) do
    Process.send_after(self(), :tick, Loop.jitter(s.config.announce_interval))
    s = %{s | own: own_name()}

    s =
      cond do
        s.socket == nil -> s
        s.own -> s |> broadcast(:announce) |> elem(0)
        true -> warn_offline(s)
      end

    s = forget_silent(s)
    request_connect(s, Membership.nodes(s.members))
  end

  defp warn_offline(%{warned_offline: true} = s), do: s

  defp warn_offline(s) do
    Loop.log(
      :warning,
      s.state.topology,
      "distribution is not started (node() is #{node()}); listening only until it is"
    )

    %{s | warned_offline: true}
  end

  defp broadcast(s, kind) do
    message = %{kind: kind, name: s.own, boot_id: s.boot_id, meta: s.config.metadata}
    targets = Announce.targets(s.config, s.members)
    {seq, sent, failed} = Transport.broadcast(s.socket, s.ring, targets, message, s.seq)
    {%{s | seq: seq, stats: Stats.send_errors(s.stats, failed)}, sent}
  end

  defp forget_silent(s) do
    case Membership.forget_silent(s.members, mono()) do
      {[], members} ->
        %{s | members: members}

      {dropped, members} ->
        for node <- dropped,
            do: Loop.log(:info, s.state.topology, "forgetting #{node}: silent for a while")

        publish(%{s | members: members})
    end
  end

  ## Connecting

  defp request_connect(s, []), do: s

  defp request_connect(s, nodes) do
    s = %{s | pending: MapSet.union(s.pending, MapSet.new(nodes))}
    if s.round == nil, do: start_round(s), else: s
  end

  # One round at a time (AWSCluster.Loop.Round); requests made meanwhile run next.
  defp start_round(s) do
    s = replan(s)
    opts = [timeout: s.config.connect_timeout, max_concurrency: s.config.max_concurrency]
    opts = if s.plan, do: [{:groups, s.plan} | opts], else: opts
    round = Round.start(s.state, Plan.dial(s.plan, MapSet.to_list(s.pending)), [], opts)
    %{s | round: round, pending: MapSet.new()}
  end

  # With group:, the peers heard from through the rule (AWSCluster.Groups.Plan), before
  # every round, so a grouped topology never dials without a plan.
  defp replan(%{config: %{group: nil}} = s), do: s

  defp replan(s) do
    {members, mine} = Announce.group_peers(s.members, s.config.metadata)
    plan = Plan.new(s.config, members, [mine], s.plan)
    Plan.explain(s.state.topology, s.plan, plan)
    Peers.put_view(s.state.topology, Plan.view(plan, s.groups))
    %{s | plan: plan}
  end

  defp meta(s), do: %{topology: s.state.topology, strategy: AWSCluster.Strategy.Gossip}

  ## Helpers

  # block_startup: the first round is done once an announce interval has passed and a
  # connect round has ended since (or none was needed).
  defp release_when_done(%{first_due: true, round: nil} = s),
    do: %{s | waiters: Round.release(s.waiters)}

  defp release_when_done(s), do: s

  defp round_done(%{first_due: true} = s), do: %{s | waiters: Round.release(s.waiters)}
  defp round_done(s), do: s

  defp publish(s) do
    s = replan(s)

    rows =
      for row <- Announce.rows(s.state.topology, s.members),
          do: Map.put(row, :group, Plan.group_of(s.plan, row.node))

    Peers.replace(s.state.topology, rows)
    s
  end

  defp own_name do
    if Node.alive?(), do: Atom.to_string(node())
  end

  defp mono, do: System.monotonic_time(:millisecond)
end
