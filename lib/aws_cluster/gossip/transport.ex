defmodule AWSCluster.Gossip.Transport do
  @moduledoc false
  # The UDP socket of AWSCluster.Strategy.Gossip: unicast, IPv4 multicast through
  # gen_udp's options, IPv6 multicast through raw socket options (inet's own options are
  # IPv4-only on OTP 25; the numbers are Linux's, where aws_cluster runs).

  alias AWSCluster.{Config, Error, Interface}
  alias AWSCluster.Gossip.Codec

  # Messages delivered before the socket goes passive again: a flood waits in the
  # kernel's buffer (and is dropped there) instead of growing the mailbox.
  @active 64
  # Bigger than any valid packet, so an oversized one is seen as oversized, not cut.
  @buffer 4_096
  # gen_udp's socket receive buffer was 16 KB here, about 20 small datagrams: a burst
  # (a fleet announcing at once, or junk) overflowed it. The kernel caps this at rmem_max.
  @recbuf 1_048_576

  @ipproto_ipv6 41
  @ipv6_multicast_if 17
  @ipv6_multicast_hops 18
  @ipv6_multicast_loop 19
  @ipv6_add_membership 20

  @doc """
  Opens the socket described by a validated config. What a later try may fix is an
  error with reason `:unavailable` (a missing interface, an address not yet on the host,
  a port still held); `details.key` names the option involved.
  """
  @spec open(map()) :: {:ok, :gen_udp.socket()} | {:error, Error.t()}
  def open(c) do
    with {:ok, mcast} <- multicast_opts(c) do
      # Several nodes of one host may listen to one group and port; a unicast port stays
      # exclusive so a second receiver on it is an error, not a silent split of traffic.
      reuse = c.multicast_addr != nil

      opts =
        [c.family, :binary, active: @active, reuseaddr: reuse, ip: c.if_addr, buffer: @buffer] ++
          [recbuf: @recbuf] ++
          v6only(c.family) ++ mcast

      case :gen_udp.open(c.port, opts) do
        {:ok, socket} ->
          {:ok, socket}

        {:error, why} ->
          {:error,
           Error.new(
             if(why in [:eaddrinuse, :eaddrnotavail, :enodev],
               do: :unavailable,
               else: :invalid_config
             ),
             "cannot open UDP port #{c.port} on #{:inet.ntoa(c.if_addr)}: #{:inet.format_error(why)}",
             %{key: :port, posix: why}
           )}
      end
    end
  end

  @doc "Re-enables delivery after `{:udp_passive, socket}`."
  @spec rearm(:gen_udp.socket()) :: :ok | {:error, term()}
  def rearm(socket), do: :inet.setopts(socket, active: @active)

  @doc """
  Seals `message` (without `:seq`) once per target, numbering the seals from `seq`, and
  sends each. Returns the next seq, how many were sent and how many the kernel refused.
  One seal per target, each with its own seq: a receiver that gets the same announce
  over two paths (multicast and a seed) sees two fresh packets, not a replay.
  """
  @spec broadcast(
          :gen_udp.socket(),
          Codec.keyring(),
          [{:inet.ip_address(), :inet.port_number()}],
          map(),
          non_neg_integer()
        ) :: {non_neg_integer(), non_neg_integer(), non_neg_integer()}
  def broadcast(socket, ring, targets, message, seq) do
    # The metadata was checked by sealing a probe at start; a seal that still fails
    # counts as a datagram not sent.
    Enum.reduce(targets, {seq, 0, 0}, fn {ip, port}, {seq, sent, failed} ->
      with {:ok, packet} <- Codec.seal(ring, Map.put(message, :seq, seq)),
           :ok <- :gen_udp.send(socket, ip, port, packet) do
        {seq + 1, sent + 1, failed}
      else
        {:error, _} -> {seq + 1, sent, failed + 1}
      end
    end)
  end

  defp v6only(:inet6), do: [ipv6_v6only: true]
  defp v6only(:inet), do: []

  defp multicast_opts(%{multicast_addr: nil}), do: {:ok, []}

  defp multicast_opts(%{family: :inet} = c) do
    with {:ok, if_ip} <- v4_interface(c.multicast_if) do
      {:ok,
       [
         add_membership: {c.multicast_addr, if_ip},
         multicast_if: if_ip,
         multicast_ttl: c.multicast_ttl,
         multicast_loop: c.multicast_loop
       ]}
    end
  end

  defp multicast_opts(%{family: :inet6} = c) do
    with {:ok, index} <- v6_interface(c.multicast_if) do
      group = for n <- Tuple.to_list(c.multicast_addr), into: <<>>, do: <<n::16>>
      loop = if c.multicast_loop, do: 1, else: 0

      {:ok,
       [
         {:raw, @ipproto_ipv6, @ipv6_add_membership, <<group::binary, index::native-32>>},
         {:raw, @ipproto_ipv6, @ipv6_multicast_if, <<index::native-32>>},
         {:raw, @ipproto_ipv6, @ipv6_multicast_hops, <<c.multicast_ttl::native-32>>},
         {:raw, @ipproto_ipv6, @ipv6_multicast_loop, <<loop::native-32>>}
       ]}
    end
  end

  defp v4_interface(nil), do: {:ok, {0, 0, 0, 0}}
  defp v4_interface(ip) when is_tuple(ip), do: {:ok, ip}

  defp v4_interface(name) when is_binary(name) do
    case Interface.address(name, family: :inet) do
      {:ok, ip} -> {:ok, ip}
      {:error, e} -> {:error, if_error(e)}
    end
  end

  defp v6_interface(nil), do: {:ok, 0}

  defp v6_interface(name) when is_binary(name) do
    case :net.if_name2index(String.to_charlist(name)) do
      {:ok, index} ->
        {:ok, index}

      {:error, _} ->
        {:error, unavailable("no interface named #{inspect(name)} on this host")}
    end
  end

  defp v6_interface(ip) when is_tuple(ip) do
    with {:ok, entries} <- Interface.addresses(),
         %{name: name} <- Enum.find(entries, &(&1.address == ip)) do
      v6_interface(name)
    else
      {:error, e} ->
        {:error, if_error(e)}

      nil ->
        {:error, unavailable("no interface has the address #{:inet.ntoa(ip)}")}
    end
  end

  defp if_error(%Error{reason: reason} = e) when reason in [:no_such_interface, :no_address],
    do: unavailable(e.message)

  defp if_error(%Error{} = e), do: Config.error(:multicast_if, e.message)

  # Weave creates ethwe after the app may start, and an ENI may attach late.
  defp unavailable(text) do
    Error.new(:unavailable, "option :multicast_if: #{text}", %{key: :multicast_if})
  end
end
