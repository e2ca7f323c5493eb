defmodule AWSCluster.Strategy.Gossip do
  @moduledoc """
  Discovery by authenticated UDP gossip: every node announces itself over IPv4/IPv6
  multicast and/or unicast to seeds, and connects to the nodes it hears.

      config :libcluster,
        topologies: [
          app: [
            strategy: AWSCluster.Strategy.Gossip,
            config: [
              secret: System.fetch_env!("CLUSTER_SECRET"),
              multicast_addr: "239.255.77.1",
              multicast_if: "ethwe"
            ]
          ]
        ]

  Plain VPCs carry no multicast; there, list `seeds:` (a few stable addresses, or every
  node) or take targets from another topology with `seed_topologies:`. Weave, VPN
  overlays and Transit Gateway multicast domains carry multicast.

  ## Why it is safe to listen

  Every packet is sealed with ChaCha20-Poly1305 under a key derived (HKDF-SHA256) from the
  shared secret and bound to the cluster label; it carries a random nonce, the sender's
  boot id, a per-boot sequence number and a timestamp, and is at most 1,400 bytes (the
  layout is documented in `native/aws_cluster_core/src/gossip/mod.rs`). A receiver drops,
  counts and never acts on anything that is malformed, foreign, forged, stale, from the
  future or replayed; a datagram can never crash it. Node names become atoms only after
  authentication and validation (`base@host`, at most 255 bytes) and at most `:max_peers`
  distinct peers are tracked.

  On shutdown a sealed leave packet tells the others to stop redialing this node; it
  does not disconnect anybody.

  ## Options

  #{AWSCluster.Config.docs(AWSCluster.Gossip.Config.schema())}

  ## Counters, logs and telemetry

  `stats/1` returns accepted and rejected packets by reason (`t:AWSCluster.Gossip.Codec.reason/0`
  plus `:too_many_peers`), own looped-back packets, send errors and the key ids in use.
  Rejects are summarized in the log at most once per `:stats_log_interval`. Each reject
  also emits `[:aws_cluster, :gossip, :rejected]` with measurements `%{count: 1}` and
  metadata `%{topology: atom, reason: atom}`. Connects emit `AWSCluster.Connector`'s events.

  ## Rotating the secret without a split

  The key ring's first secret seals, every secret opens; the log line at start and
  `stats/1` show the key ids (derived, safe to show), never the secrets.

  The rejection-free way, three rolling deploys (or three `rotate/2` calls per node):

    1. `secrets: [old, new]` everywhere. Nodes still seal with `old`; all can now open `new`.
    2. `secrets: [new, old]` everywhere. Nodes seal with `new`, which every node opens.
    3. `secrets: [new]` everywhere, once step 2 is done on every node.

  Between steps, check on a few nodes that `stats(topology).key_ids` shows the expected
  first key and that `rejected[:unknown_key]` does not grow.

  The two-deploy shortcut `[old] -> [new, old] -> [new]` also keeps the mesh whole: while
  the first deploy rolls, nodes still on `[old]` cannot open the moved nodes' packets (they
  count them as `:unknown_key`), but moved nodes still hear and dial everyone, existing
  connections are untouched, and a node that restarts in between still joins. Never jump
  from `[old]` to `[new]`: such a node and the rest cannot hear each other.

  Hot rotation without a restart, on every node:

      :erpc.multicall([node() | Node.list()], AWSCluster.Strategy.Gossip, :rotate,
        [:app, [new, old]])
  """

  use GenServer
  require Logger

  alias AWSCluster.{Connector, Error, Peers, Telemetry}
  alias AWSCluster.Gossip.{Codec, Config, Stats, Transport}
  alias AWSCluster.Strategy.State

  @jitter 0.1

  @typedoc "A running gossip strategy: its pid, or its topology name."
  @type server :: pid() | atom()

  @doc """
  Starts the strategy. Takes libcluster's `[state]`, a state map, or a keyword list with
  `:topology`, `:config` and optional `:connect`, `:disconnect`, `:list_nodes` MFAs
  (defaults: `{:net_kernel, :connect_node, []}`, `{:erlang, :disconnect_node, []}`,
  `{:erlang, :nodes, [:connected]}`). Registers as `name/1` of the topology.
  Invalid options return `{:error, %AWSCluster.Error{reason: :invalid_config}}`.
  """
  @spec start_link(term()) :: GenServer.on_start()
  def start_link(arg) do
    with {:ok, state} <- State.new(arg),
         {:ok, config} <- validate(state) do
      GenServer.start_link(__MODULE__, {state, config}, name: name(state.topology))
    end
  end

  @doc """
  A child spec whose id includes the topology, with its start arguments (the secrets)
  sealed from supervisor reports, the same as every polling strategy's.
  """
  @spec child_spec(term()) :: Supervisor.child_spec()
  def child_spec(arg), do: AWSCluster.Poller.child_spec(__MODULE__, arg)

  @doc "The name the strategy of `topology` registers under."
  @spec name(atom()) :: atom()
  def name(topology) when is_atom(topology), do: Module.concat(__MODULE__, topology)

  @doc """
  Validates a state's `config` without starting anything; the message starts with the
  topology.
  """
  @spec validate(State.t()) :: {:ok, map()} | {:error, Error.t()}
  def validate(%State{} = state) do
    case Config.validate(state.config, state.topology) do
      {:ok, config} ->
        {:ok, config}

      {:error, e} ->
        {:error,
         %{
           e
           | message: "topology #{inspect(state.topology)}: #{e.message}",
             details: Map.put(e.details, :topology, state.topology)
         }}
    end
  end

  @doc """
  Packet counters: `accepted` (`announces` + `leaves`), `own` (our packets looped back),
  `rejected` by reason, `rejected_total`, `send_errors`, plus `peers` (count) and `key_ids`.
  """
  @spec stats(server()) :: map()
  def stats(server), do: GenServer.call(via(server), :stats)

  @doc """
  The peers heard from: node => `%{address: "ip:port", boot_id:, meta:, heard_at:}` with
  `heard_at` the local wall clock (unix ms) of the last accepted announce.
  """
  @spec peers(server()) :: %{node() => map()}
  def peers(server), do: GenServer.call(via(server), :peers)

  @doc """
  Replaces the key ring: `secrets` is one secret or a list, first seals, all open. See
  the rotation runbook above.
  """
  @spec rotate(server(), binary() | [binary()]) :: :ok | {:error, Error.t()}
  def rotate(server, secrets), do: GenServer.call(via(server), {:rotate, secrets})

  defp via(pid) when is_pid(pid), do: pid
  defp via(topology) when is_atom(topology), do: name(topology)

  @impl true
  def init({state, c}) do
    Process.flag(:trap_exit, true)
    Logger.metadata(aws_cluster_topology: state.topology)

    with {:ok, ring} <- keyring(c.secrets, c),
         :ok <- check_metadata(ring, c),
         {:ok, socket} <- Transport.open(c) do
      if c.insecure do
        log(
          :warning,
          state.topology,
          "gossip runs with insecure: true; anyone who can reach UDP port #{c.port} may be " <>
            "able to forge announces. Configure a secret of at least 32 bytes."
        )
      end

      Peers.ensure_started()
      Peers.register(state.topology, self())

      # The key ring holds the keys from here on: keep no secret in the state, so no
      # crash report, stacktrace or :sys.get_status/1 can print one.
      s = %{
        state: AWSCluster.Config.redact(state),
        config: AWSCluster.Config.redact(c),
        ring: ring,
        guard: Codec.replay_guard(2 * c.max_peers + 16, c.timestamp_window),
        socket: socket,
        boot_id: :binary.decode_unsigned(:crypto.strong_rand_bytes(8)),
        seq: 0,
        own: own_name(),
        warned_offline: false,
        peers: %{},
        stats: Stats.new(),
        pending: MapSet.new(),
        round: nil,
        log_timer: nil,
        last_log: nil
      }

      log(:info, state.topology, "gossip started: #{describe(c)}; #{ring_text(ring)}")
      {:ok, s, {:continue, :tick}}
    else
      {:error, %Error{} = e} ->
        log(:error, state.topology, "gossip could not start: #{e.message}")
        {:stop, e}
    end
  end

  @impl true
  def handle_continue(:tick, s), do: {:noreply, tick(s)}

  @impl true
  def handle_call(:stats, _from, s) do
    reply =
      s.stats
      |> Stats.to_map()
      |> Map.merge(%{
        topology: s.state.topology,
        peers: map_size(s.peers),
        key_ids: Codec.key_ids(s.ring)
      })

    {:reply, reply, s}
  end

  def handle_call(:peers, _from, s) do
    now_mono = mono()
    now = System.os_time(:millisecond)

    reply =
      Map.new(s.peers, fn {_name, p} ->
        {p.node,
         %{
           address: address_text(p.address),
           boot_id: p.boot_id,
           meta: p.meta,
           heard_at: now - (now_mono - p.last_seen)
         }}
      end)

    {:reply, reply, s}
  end

  def handle_call({:rotate, secrets}, _from, s) do
    with {:ok, secrets} <- Config.check_secrets(secrets, s.config.insecure),
         {:ok, ring} <- keyring(secrets, s.config) do
      log(:info, s.state.topology, "gossip key ring replaced: #{ring_text(ring)}")
      {:reply, :ok, %{s | ring: ring}}
    else
      {:error, e} -> {:reply, {:error, e}, s}
    end
  end

  @impl true
  def handle_info({:udp, socket, ip, port, packet}, %{socket: socket} = s) do
    {:noreply, receive_packet(s, {ip, port}, packet)}
  end

  def handle_info({:udp_passive, socket}, %{socket: socket} = s) do
    _ = Transport.rearm(socket)
    {:noreply, s}
  end

  def handle_info(:tick, s), do: {:noreply, tick(s)}

  def handle_info(:log_stats, s), do: {:noreply, log_stats(%{s | log_timer: nil})}

  def handle_info({:DOWN, ref, :process, _pid, _reason}, %{round: ref} = s) do
    s = %{s | round: nil}
    {:noreply, if(MapSet.size(s.pending) > 0, do: start_round(s), else: s)}
  end

  def handle_info({:EXIT, socket, reason}, %{socket: socket} = s),
    do: {:stop, {:socket_closed, reason}, s}

  # Exits of other linked processes (trap_exit is on so terminate/2 runs on shutdown).
  def handle_info(_other, s), do: {:noreply, s}

  @impl true
  def terminate(_reason, s) do
    if s.own do
      {_s, sent} = broadcast(s, :leave)
      log(:info, s.state.topology, "gossip stopping; sent leave to #{sent} targets")
    end

    :gen_udp.close(s.socket)
    :ok
  end

  ## Receiving

  defp receive_packet(s, from, packet) do
    case Codec.open(s.ring, s.guard, packet, System.os_time(:millisecond)) do
      {:ok, %{name: name}} when name == s.own -> %{s | stats: Stats.accepted(s.stats, :own)}
      {:ok, %{kind: :announce} = m} -> heard(s, m, from)
      {:ok, %{kind: :leave} = m} -> left(s, m)
      {:error, reason} -> reject(s, reason)
    end
  end

  defp heard(s, m, from) do
    case Map.fetch(s.peers, m.name) do
      {:ok, p} ->
        p2 = %{p | address: from, boot_id: m.boot_id, meta: m.meta, last_seen: mono()}
        s = %{s | peers: Map.put(s.peers, m.name, p2), stats: Stats.accepted(s.stats, :announce)}
        if p.address != from or p.meta != m.meta, do: publish(s), else: s

      :error when map_size(s.peers) >= s.config.max_peers ->
        reject(s, :too_many_peers)

      :error ->
        # Authenticated by the key ring and validated as base@host by the codec: only
        # now may the name become an atom, and at most max_peers of them are tracked.
        node = String.to_atom(m.name)
        p = %{node: node, address: from, boot_id: m.boot_id, meta: m.meta, last_seen: mono()}
        log(:info, s.state.topology, "new peer #{node} at #{address_text(from)}")

        %{s | peers: Map.put(s.peers, m.name, p), stats: Stats.accepted(s.stats, :announce)}
        |> publish()
        |> request_connect([node])
    end
  end

  defp left(s, m) do
    s = %{s | stats: Stats.accepted(s.stats, :leave)}

    case Map.pop(s.peers, m.name) do
      {nil, _} ->
        s

      {p, peers} ->
        log(:info, s.state.topology, "peer #{p.node} is leaving; not redialing it")
        publish(%{s | peers: peers, pending: MapSet.delete(s.pending, p.node)})
    end
  end

  defp reject(s, reason) do
    Telemetry.execute([:aws_cluster, :gossip, :rejected], %{count: 1}, %{
      topology: s.state.topology,
      reason: reason
    })

    schedule_log(%{s | stats: Stats.rejected(s.stats, reason)})
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
    {unlogged, stats} = Stats.take_unlogged(s.stats)

    if map_size(unlogged) > 0 do
      total = unlogged |> Map.values() |> Enum.sum()

      detail =
        unlogged |> Enum.sort() |> Enum.map_join(", ", fn {reason, n} -> "#{reason}: #{n}" end)

      log(:warning, s.state.topology, "dropped #{total} gossip packets (#{detail})")
    end

    %{s | stats: stats, last_log: mono()}
  end

  ## Announcing

  defp tick(s) do
    Process.send_after(self(), :tick, jitter(s.config.announce_interval))
    s = %{s | own: own_name()}

    s =
      if s.own do
        {s, _sent} = broadcast(s, :announce)
        s
      else
        warn_offline(s)
      end

    s |> forget_silent() |> request_connect(Enum.map(s.peers, fn {_, p} -> p.node end))
  end

  defp warn_offline(%{warned_offline: true} = s), do: s

  defp warn_offline(s) do
    log(
      :warning,
      s.state.topology,
      "distribution is not started (node() is #{node()}); listening only until it is"
    )

    %{s | warned_offline: true}
  end

  # One seal per target, each with its own seq: a receiver that gets the same announce
  # over two paths (multicast and a seed) sees two fresh packets, not a replay.
  defp broadcast(s, kind) do
    Enum.reduce(targets(s), {s, 0}, fn target, {s, sent} ->
      message = %{
        kind: kind,
        name: s.own,
        boot_id: s.boot_id,
        seq: s.seq,
        meta: s.config.metadata
      }

      s = %{s | seq: s.seq + 1}

      with {:ok, packet} <- Codec.seal(s.ring, message),
           :ok <- Transport.send(s.socket, target, packet) do
        {s, sent + 1}
      else
        {:error, %Error{} = e} ->
          log(:error, s.state.topology, "cannot seal an announce: #{e.message}")
          {s, sent}

        {:error, _posix} ->
          {%{s | stats: Stats.send_error(s.stats)}, sent}
      end
    end)
  end

  defp targets(s) do
    c = s.config
    group = if c.multicast_addr, do: [{c.multicast_addr, c.port}], else: []
    unicast? = c.seeds != [] or c.seed_topologies != []
    learned = if unicast?, do: Enum.map(s.peers, fn {_, p} -> p.address end), else: []
    Enum.uniq(group ++ c.seeds ++ topology_seeds(c) ++ learned)
  end

  defp topology_seeds(%{seed_topologies: []}), do: []

  defp topology_seeds(c) do
    for %{topology: t, address: address} <- Peers.all(),
        t in c.seed_topologies,
        {:ok, ip} <- [Config.parse_ip(address)],
        tuple_size(ip) == tuple_size(c.if_addr),
        do: {ip, c.port}
  end

  defp forget_silent(s) do
    cutoff = mono() - s.config.peer_timeout
    {keep, drop} = Enum.split_with(s.peers, fn {_, p} -> p.last_seen >= cutoff end)

    if drop == [] do
      s
    else
      for {_, p} <- drop,
          do: log(:info, s.state.topology, "forgetting #{p.node}: silent for a while")

      publish(%{s | peers: Map.new(keep)})
    end
  end

  ## Connecting

  defp request_connect(s, []), do: s

  defp request_connect(s, nodes) do
    s = %{s | pending: MapSet.union(s.pending, MapSet.new(nodes))}
    if s.round == nil, do: start_round(s), else: s
  end

  # Connects run outside this process (each may take up to connect_timeout) so packets
  # keep being read; one round at a time, requests made meanwhile run next.
  defp start_round(s) do
    state = s.state
    nodes = MapSet.to_list(s.pending)
    opts = [timeout: s.config.connect_timeout, max_concurrency: s.config.max_concurrency]

    {_pid, ref} =
      spawn_monitor(fn ->
        Logger.metadata(aws_cluster_topology: state.topology)
        %{ok: ok, failed: failed} = Connector.connect(state, nodes, opts)
        for node <- ok, do: log(:info, state.topology, "connected to #{node}")

        for {node, why} <- failed,
            do: log(:debug, state.topology, "could not connect to #{node}: #{inspect(why)}")
      end)

    %{s | round: ref, pending: MapSet.new()}
  end

  ## Helpers

  defp keyring(secrets, c) do
    case Codec.keyring(secrets, c.label, insecure: c.insecure) do
      {:ok, ring} -> {:ok, ring}
      {:error, e} -> {:error, AWSCluster.Config.error(config_key(e), e.message)}
    end
  end

  defp config_key(%Error{details: %{key: "label"}}), do: :label
  defp config_key(_), do: :secrets

  defp check_metadata(ring, c) do
    probe = %{kind: :announce, name: "probe@localhost", boot_id: 0, seq: 0, meta: c.metadata}

    case Codec.seal(ring, probe) do
      {:ok, _} -> :ok
      {:error, e} -> {:error, AWSCluster.Config.error(:metadata, e.message)}
    end
  end

  defp publish(s) do
    topology = s.state.topology

    infos =
      Enum.map(s.peers, fn {_, p} ->
        %{
          node: p.node,
          topology: topology,
          instance_id: p.meta["instance_id"],
          availability_zone: p.meta["az"],
          address: p.address |> elem(0) |> :inet.ntoa() |> to_string(),
          tags: %{}
        }
      end)

    Peers.replace(topology, infos)
    s
  end

  defp own_name do
    if Node.alive?(), do: Atom.to_string(node())
  end

  defp describe(c) do
    mcast =
      if c.multicast_addr,
        do: ["multicast #{:inet.ntoa(c.multicast_addr)} via #{c.multicast_if || "default"}"],
        else: []

    seeds = if c.seeds != [], do: ["#{length(c.seeds)} seeds"], else: []
    tops = if c.seed_topologies != [], do: ["seeds from #{inspect(c.seed_topologies)}"], else: []
    "udp #{:inet.ntoa(c.if_addr)}:#{c.port}, " <> Enum.join(mcast ++ seeds ++ tops, ", ")
  end

  defp ring_text(ring) do
    [first | _] = ids = Codec.key_ids(ring)
    "seals with key #{first}, opens #{Enum.join(ids, ", ")}"
  end

  defp address_text({ip, port}) when tuple_size(ip) == 8, do: "[#{:inet.ntoa(ip)}]:#{port}"
  defp address_text({ip, port}), do: "#{:inet.ntoa(ip)}:#{port}"

  defp jitter(ms) do
    spread = ms * @jitter
    max(1, round(ms - spread + :rand.uniform() * 2 * spread))
  end

  defp mono, do: System.monotonic_time(:millisecond)

  defp log(level, topology, text) do
    Logger.log(level, fn -> "[aws_cluster:#{topology}] #{text}" end)
  end
end
