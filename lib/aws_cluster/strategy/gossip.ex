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

  Every packet is sealed (ChaCha20-Poly1305, a key derived from the secret and bound to
  the cluster label, at most 1,400 bytes; `AWSCluster.Gossip.Codec`). A receiver drops,
  counts and never acts on anything malformed, foreign, forged, stale, from the future
  or replayed; a datagram can never crash it. A valid packet is still bound to its
  source host, a leave is final for that boot, and names become atoms only within
  `:max_peers` and `:name_budget` (`AWSCluster.Gossip.Membership`).

  On shutdown a sealed leave packet tells the others to stop redialing this node; it
  does not disconnect anybody, and neither does forgetting a silent peer (on OTP 25 a
  disconnect of a live peer gets the disconnecting node expelled by `global`).

  A fault a later try may fix (the `:multicast_if` interface not there yet, as with
  Weave's `ethwe` before Weave starts; the address or port not available yet) does not
  fail the start: the strategy runs in `:failing` health (`stats/1`), logs once, and
  opens the socket when it can. Only invalid options fail the start.

  ## Options

  #{AWSCluster.Config.docs(AWSCluster.Gossip.Config.schema())}

  ## Counters, logs and telemetry

  `stats/1` returns accepted and rejected packets by reason (`t:AWSCluster.Gossip.Codec.reason/0`
  plus `:too_many_peers`), own looped-back packets, send errors and the key ids in use.
  Rejects are summarized in the log at most once per `:stats_log_interval`. Each reject
  also emits `[:aws_cluster, :gossip, :rejected]` with measurements `%{count: 1}` and
  metadata `%{topology: atom, reason: atom}`. Connects emit `AWSCluster.Connector`'s events.

  ## Rotating the secret without a split

  See `AWSCluster.Gossip.Rotation`: `secrets: [old, new]`, then `[new, old]`, then
  `[new]`, by deploy or with `rotate/2`.
  """

  alias AWSCluster.Error
  alias AWSCluster.Gossip.{Config, Server}
  alias AWSCluster.Loop.Round
  alias AWSCluster.Strategy.State

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
         {:ok, config} <- validate(state),
         {:ok, pid} <-
           GenServer.start_link(Server, {state, config}, name: name(state.topology)) do
      if config.block_startup, do: Round.await_first(pid, config.block_startup)
      {:ok, pid}
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
    with {:error, e} <- Config.validate(state.config, state.topology),
         do: {:error, AWSCluster.Config.in_topology(e, state.topology)}
  end

  @doc """
  Packet counters: `accepted` (`announces` + `leaves`), `own` (our packets looped back),
  `rejected` by reason, `rejected_total`, `send_errors`, plus `peers` (count), `key_ids`,
  `health` (`:healthy`, or `:failing` while the socket cannot be opened), `last_error`
  and `names_left` (new names the budget still allows).
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
  the rotation runbook above. The secrets travel sealed in a closure, so an exit of this
  call (`:noproc`, `:timeout`) or a crash report cannot print them.
  """
  @spec rotate(server(), binary() | [binary()], timeout()) :: :ok | {:error, Error.t()}
  def rotate(server, secrets, timeout \\ 5_000),
    do: GenServer.call(via(server), {:rotate, fn -> secrets end}, timeout)

  defp via(pid) when is_pid(pid), do: pid
  defp via(topology) when is_atom(topology), do: name(topology)
end
