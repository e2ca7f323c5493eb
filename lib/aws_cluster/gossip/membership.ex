defmodule AWSCluster.Gossip.Membership do
  @moduledoc """
  Who a gossip topology has heard, as pure functions over a struct the strategy keeps.
  Every packet here has already been authenticated and checked for replay by
  `AWSCluster.Gossip.Codec`; these rules cover what a *valid* packet may still do:

    * **Bound to its source.** A captured unicast announce replayed from another host
      within the timestamp window would otherwise move the peer's address, redirecting
      our announces, or bring the peer back after its leave. So when a name's host is
      an IP address of the packet's family, it must be the source address (unless
      `:allow_nat`). When it cannot be compared (a DNS name, or a node named by its
      IPv4 address gossiping over IPv6), the peer's address only moves on a newer
      packet: the same boot id with a higher seq, or a new boot id. Rejected as
      `:source_mismatch`.
    * **Leave is final for that boot.** After a leave, only a packet with another boot
      id, or the same boot id and a higher seq than the leave, is accepted: the replay
      window accepts an unseen lower seq, and that could be a pre-leave announce.
      Rejected as `:after_leave`. A tombstone lasts `:timestamp_window` (after that
      any old packet is stale anyway), and at most `:max_peers` are kept.
    * **Bounded atoms.** At most `:max_peers` peers (`:too_many_peers`), and new node
      names only within the lifetime budget (`:name_budget`,
      `AWSCluster.Membership.NameBudget`).
    * **Forget, never disconnect.** A peer silent for `:peer_timeout` is forgotten: no
      longer dialed. Its link, if up, is left alone (see `AWSCluster.Poller`, "Pruning").

  `now` is monotonic milliseconds.
  """

  alias AWSCluster.Membership.NameBudget

  @enforce_keys [:config, :budget]
  defstruct config: nil, budget: nil, peers: %{}, tombstones: %{}

  @typedoc "A peer heard from, keyed by its name (a string) in `peers`."
  @type peer :: %{
          node: node(),
          address: {:inet.ip_address(), :inet.port_number()},
          boot_id: non_neg_integer(),
          seq: non_neg_integer(),
          meta: map(),
          last_seen: integer()
        }

  @type t :: %__MODULE__{
          config: map(),
          budget: NameBudget.t(),
          peers: %{String.t() => peer()},
          tombstones: %{String.t() => {non_neg_integer(), non_neg_integer(), integer()}}
        }

  @typedoc "Why a valid packet was not acted on."
  @type reason :: :source_mismatch | :after_leave | :too_many_peers | :name_budget

  @doc """
  An empty membership of `topology`, its name budget as it was when the topology last
  stopped in this VM (`AWSCluster.Membership.NameBudget.for_topology/3`). `config` holds `:allow_nat`, `:max_peers`, `:peer_timeout`,
  `:timestamp_window`, `:name_budget` and `:name_budget_per_day`.
  """
  @spec new(map(), integer(), atom()) :: t()
  def new(config, now, topology) do
    %__MODULE__{config: config, budget: NameBudget.for_topology(config, now, topology)}
  end

  @doc """
  An announce `m` (the opened message) from `from`: `{:new, node, t}` for a peer not
  known before, `{:changed, t}` when its address or metadata moved, `{:same, t}`, or
  `{:rejected, reason, t}`.
  """
  @spec heard(t(), map(), {:inet.ip_address(), :inet.port_number()}, integer()) ::
          {:new, node(), t()} | {:changed, t()} | {:same, t()} | {:rejected, reason(), t()}
  def heard(%__MODULE__{} = s, m, from, now) do
    s = expire(s, now)

    with :ok <- check_source(s, m.name, from),
         :ok <- check_tombstone(s, m) do
      s = %{s | tombstones: Map.delete(s.tombstones, m.name)}
      known(s, m, from, now)
    else
      {:rejected, reason} -> {:rejected, reason, s}
    end
  end

  defp known(s, m, from, now) do
    case Map.fetch(s.peers, m.name) do
      {:ok, p} when p.address != from and p.boot_id == m.boot_id and m.seq <= p.seq ->
        {:rejected, :source_mismatch, s}

      {:ok, p} ->
        seq = if p.boot_id == m.boot_id, do: max(p.seq, m.seq), else: m.seq
        p2 = %{p | address: from, boot_id: m.boot_id, seq: seq, meta: m.meta, last_seen: now}
        s = %{s | peers: Map.put(s.peers, m.name, p2)}
        if p.address != from or p.meta != m.meta, do: {:changed, s}, else: {:same, s}

      :error when map_size(s.peers) >= s.config.max_peers ->
        {:rejected, :too_many_peers, s}

      :error ->
        case NameBudget.to_atom(s.budget, m.name, now) do
          {:ok, node, budget} ->
            p = %{
              node: node,
              address: from,
              boot_id: m.boot_id,
              seq: m.seq,
              meta: m.meta,
              last_seen: now
            }

            {:new, node, %{s | peers: Map.put(s.peers, m.name, p), budget: budget}}

          {:refused, budget} ->
            {:rejected, :name_budget, %{s | budget: budget}}
        end
    end
  end

  @doc """
  A leave `m` from `from`: `{:left, node, t}` when a known peer left (it is forgotten and
  tombstoned), `{:ignored, t}` for an unknown one (tombstoned) or a leave of another boot
  than the one heard, or `{:rejected, reason, t}`.
  """
  @spec left(t(), map(), {:inet.ip_address(), :inet.port_number()}, integer()) ::
          {:left, node(), t()} | {:ignored, t()} | {:rejected, reason(), t()}
  def left(%__MODULE__{} = s, m, from, now) do
    s = expire(s, now)

    with :ok <- check_source(s, m.name, from) do
      case Map.fetch(s.peers, m.name) do
        # A late leave of an earlier boot says nothing about the boot we hear now.
        {:ok, %{boot_id: boot}} when boot != m.boot_id ->
          {:ignored, s}

        {:ok, p} ->
          {:left, p.node, tombstone(%{s | peers: Map.delete(s.peers, m.name)}, m, now)}

        :error ->
          {:ignored, tombstone(s, m, now)}
      end
    else
      {:rejected, reason} -> {:rejected, reason, s}
    end
  end

  @doc "Forgets peers silent for `:peer_timeout`; returns their nodes."
  @spec forget_silent(t(), integer()) :: {[node()], t()}
  def forget_silent(%__MODULE__{} = s, now) do
    cutoff = now - s.config.peer_timeout
    {keep, drop} = Enum.split_with(s.peers, fn {_, p} -> p.last_seen >= cutoff end)
    {Enum.map(drop, fn {_, p} -> p.node end), %{s | peers: Map.new(keep)}}
  end

  @doc "The nodes heard from."
  @spec nodes(t()) :: [node()]
  def nodes(%__MODULE__{peers: peers}), do: Enum.map(peers, fn {_, p} -> p.node end)

  # The host of base@host must be the source address when the two can be compared.
  defp check_source(%{config: %{allow_nat: true}}, _name, _from), do: :ok

  defp check_source(_s, name, {ip, _port}) do
    [_, host] = String.split(name, "@", parts: 2)
    source = mapped(ip)

    case :inet.parse_strict_address(String.to_charlist(host)) do
      {:ok, ^source} -> :ok
      {:ok, other} when tuple_size(other) == tuple_size(source) -> {:rejected, :source_mismatch}
      _other_family_or_dns_name -> :ok
    end
  end

  # An IPv4 sender seen on an IPv6 socket (::ffff:a.b.c.d).
  defp mapped({0, 0, 0, 0, 0, 0xFFFF, ab, cd}),
    do: {div(ab, 256), rem(ab, 256), div(cd, 256), rem(cd, 256)}

  defp mapped(ip), do: ip

  defp check_tombstone(s, m) do
    case Map.fetch(s.tombstones, m.name) do
      {:ok, {boot_id, seq, _until}} when boot_id == m.boot_id and m.seq <= seq ->
        {:rejected, :after_leave}

      _ ->
        :ok
    end
  end

  defp tombstone(s, m, now) do
    tombs = Map.put(s.tombstones, m.name, {m.boot_id, m.seq, now + s.config.timestamp_window})

    tombs =
      if map_size(tombs) > s.config.max_peers do
        {oldest, _} = Enum.min_by(tombs, fn {_, {_, _, until}} -> until end)
        Map.delete(tombs, oldest)
      else
        tombs
      end

    %{s | tombstones: tombs}
  end

  defp expire(%{tombstones: tombs} = s, _now) when map_size(tombs) == 0, do: s

  defp expire(s, now) do
    %{s | tombstones: :maps.filter(fn _, {_, _, until} -> until > now end, s.tombstones)}
  end
end
