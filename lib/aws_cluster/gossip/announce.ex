defmodule AWSCluster.Gossip.Announce do
  @moduledoc """
  Where a gossip topology announces to, and how it describes itself and its peers:
  pure functions over its config and `AWSCluster.Gossip.Membership`.
  """

  alias AWSCluster.Gossip.{Address, Codec, Membership}
  alias AWSCluster.Peers

  @doc """
  The targets of one announce: the multicast group, the seeds, the addresses other
  topologies found (`:seed_topologies`) and, with unicast, every peer heard from.
  """
  @spec targets(map(), Membership.t()) :: [{:inet.ip_address(), :inet.port_number()}]
  def targets(c, members) do
    group = if c.multicast_addr, do: [{c.multicast_addr, c.port}], else: []
    unicast? = c.seeds != [] or c.seed_topologies != []
    learned = if unicast?, do: Enum.map(members.peers, fn {_, p} -> p.address end), else: []
    Enum.uniq(group ++ c.seeds ++ topology_seeds(c) ++ learned)
  end

  defp topology_seeds(%{seed_topologies: []}), do: []

  defp topology_seeds(c) do
    for %{topology: t, address: address} <- Peers.all(),
        t in c.seed_topologies,
        {:ok, ip} <- [Address.parse_ip(address)],
        tuple_size(ip) == tuple_size(c.if_addr),
        do: {ip, c.port}
  end

  @doc """
  The peers heard from, as `AWSCluster.Groups.Plan.new/4` takes them (`node => %{peer:
  peer}`), and this node's own peer from `metadata`: the announced metadata is the
  instance's `metadata`, its `"az"` and `"instance_id"` the zone and the id.
  """
  @spec group_peers(Membership.t(), map()) :: {%{node() => %{peer: map()}}, map()}
  def group_peers(members, metadata) do
    peers =
      Map.new(members.peers, fn {_, p} ->
        {p.node, %{peer: %{node: p.node, instance: instance(p.meta), address: nil}}}
      end)

    {peers, %{node: node(), instance: instance(metadata), address: nil}}
  end

  defp instance(meta),
    do: %{id: meta["instance_id"], availability_zone: meta["az"], tags: %{}, metadata: meta}

  @doc "The `AWSCluster.node_info/1` rows of the peers heard from."
  @spec rows(atom(), Membership.t()) :: [map()]
  def rows(topology, members) do
    Enum.map(members.peers, fn {_, p} ->
      %{
        node: p.node,
        topology: topology,
        instance_id: p.meta["instance_id"],
        availability_zone: p.meta["az"],
        address: p.address |> elem(0) |> :inet.ntoa() |> to_string(),
        tags: %{}
      }
    end)
  end

  @doc """
  The peers heard from: node => `%{address: "ip:port", boot_id:, meta:, heard_at:}`,
  `heard_at` on the wall clock `now` (unix ms) given the monotonic `now_mono`.
  """
  @spec peers(Membership.t(), integer(), integer()) :: %{node() => map()}
  def peers(members, now_mono, now) do
    Map.new(members.peers, fn {_name, p} ->
      {p.node,
       %{
         address: address_text(p.address),
         boot_id: p.boot_id,
         meta: p.meta,
         heard_at: now - (now_mono - p.last_seen)
       }}
    end)
  end

  @doc "The transport in one line, for the start log."
  @spec describe(map()) :: String.t()
  def describe(c) do
    mcast =
      if c.multicast_addr,
        do: ["multicast #{:inet.ntoa(c.multicast_addr)} via #{c.multicast_if || "default"}"],
        else: []

    seeds = if c.seeds != [], do: ["#{length(c.seeds)} seeds"], else: []
    tops = if c.seed_topologies != [], do: ["seeds from #{inspect(c.seed_topologies)}"], else: []
    "udp #{:inet.ntoa(c.if_addr)}:#{c.port}, " <> Enum.join(mcast ++ seeds ++ tops, ", ")
  end

  @doc "The key ids in use (derived, safe to show), for logs."
  @spec ring_text(Codec.keyring()) :: String.t()
  def ring_text(ring) do
    [first | _] = ids = Codec.key_ids(ring)
    "seals with key #{first}, opens #{Enum.join(ids, ", ")}"
  end

  @doc "`ip:port`, or `[ip]:port` for IPv6."
  @spec address_text({:inet.ip_address(), :inet.port_number()}) :: String.t()
  def address_text({ip, port}) when tuple_size(ip) == 8, do: "[#{:inet.ntoa(ip)}]:#{port}"
  def address_text({ip, port}), do: "#{:inet.ntoa(ip)}:#{port}"
end
