defmodule AWSCluster.Doctor.ThisNode do
  @moduledoc false
  # The doctor's checks of the VM it runs in: its node name, distribution port range
  # and cookie (never shown).

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{Doctor, Error, Interface}
  alias AWSCluster.Doctor.Peers

  @doc "Node name, distribution ports and cookie checks of this VM."
  @spec checks([AWSCluster.Probe.result()], map() | nil, keyword()) :: [Doctor.check()]
  def checks(results, imds, opts),
    do: name_checks(results, imds, opts) ++ ports_check() ++ cookie_check()

  defp name_checks(results, imds, opts) do
    if Node.alive?() do
      [host_check(opts) | own_name_check(results, imds)]
    else
      [
        check(
          "node name",
          :warn,
          "this VM runs without distribution, so its name and cookie cannot be checked",
          "run the doctor as the node runs: elixir --name <basename>@<address> --cookie " <>
            "\"$RELEASE_COOKIE\" -S mix aws_cluster.doctor, or inside the release: " <>
            "bin/my_app rpc 'AWSCluster.Doctor.run() |> AWSCluster.Doctor.format() |> IO.puts()'"
        )
      ]
    end
  end

  defp node_host, do: node() |> Atom.to_string() |> String.split("@") |> List.last()

  defp host_check(opts) do
    host = node_host()

    expected =
      cond do
        iface = opts[:interface] ->
          case Interface.address(iface) do
            {:ok, ip} -> {:ok, to_string(:inet.ntoa(ip)), "#{iface}'s address"}
            {:error, e} -> {:error, e.message}
          end

        address = opts[:address] ->
          {:ok, address, "the address asked for"}

        true ->
          local_addresses(host)
      end

    fix =
      "name the node after the cluster interface: RELEASE_DISTRIBUTION=none and " <>
        "{AWSCluster.Distribution, basename: ..., interface: ...} as the first child, or " <>
        "RELEASE_NODE=<basename>@<address>"

    case expected do
      {:ok, ^host, what} ->
        check("node name", :pass, "#{node()}: host is #{what}")

      {:ok, other, what} ->
        check("node name", :fail, "#{node()}: host #{host} is not #{what} (#{other})", fix)

      {:error, text} ->
        check("node name", :fail, "#{node()}: #{text}", fix)
    end
  end

  defp local_addresses(host) do
    with {:ok, ip} <- :inet.parse_strict_address(String.to_charlist(host)),
         {:ok, entries} <- Interface.addresses(),
         %{name: name} <- Enum.find(entries, &(&1.address == ip)) do
      {:ok, host, "#{name}'s address"}
    else
      {:error, %Error{} = e} ->
        {:error, e.message}

      {:error, _} ->
        {:error,
         "host #{host} is a name, not an address; peers dial the address discovery " <>
           "reports, so the name must match it"}

      nil ->
        {:error, "host #{host} is not an address of any interface of this host"}
    end
  end

  # Discovery names this instance too: the node must carry exactly that name, or peers
  # dial a name nobody answers to.
  defp own_name_check(_results, nil), do: []

  defp own_name_check(results, imds) do
    own = for r <- results, p <- r.peers, Map.get(p.instance, :id) == imds.instance_id, do: {r, p}

    case own do
      [] ->
        []

      [{r, peer} | _] when peer.node == node() ->
        [check("node name [#{r.topology}]", :pass, "discovery names this instance #{node()}")]

      [{r, peer} | _] ->
        [
          check(
            "node name [#{r.topology}]",
            :fail,
            "discovery names this instance (#{imds.instance_id}) #{peer.node}, but this node is #{node()}: " <>
              "peers will dial a name nobody answers to",
            "make node_basename/address match how the node names itself (or the reverse)"
          )
        ]
    end
  end

  defp ports_check do
    min = Application.get_env(:kernel, :inet_dist_listen_min)
    max = Application.get_env(:kernel, :inet_dist_listen_max) || min

    port =
      if Node.alive?() do
        [base, _] = node() |> Atom.to_string() |> String.split("@")

        case Peers.epmd_port_please({127, 0, 0, 1}, Peers.epmd_port([]), base, 2_000) do
          {:ok, port} -> port
          _ -> nil
        end
      end

    fix =
      "pin the range in rel/vm.args.eex: -kernel inet_dist_listen_min 9100 " <>
        "inet_dist_listen_max 9155, and open it and 4369 between the nodes' security groups"

    cond do
      is_integer(min) and is_integer(max) and is_integer(port) and port in min..max ->
        [
          check(
            "distribution ports",
            :pass,
            "listening on #{port}, inside the pinned range #{min}-#{max}"
          )
        ]

      is_integer(min) and is_integer(max) and is_integer(port) ->
        [
          check(
            "distribution ports",
            :fail,
            "listening on #{port}, outside the pinned range #{min}-#{max}",
            fix
          )
        ]

      is_integer(min) and is_integer(max) ->
        [check("distribution ports", :pass, "pinned to #{min}-#{max}")]

      true ->
        where = if port, do: "listening on #{port}, a port", else: "the listen port is"

        [
          check(
            "distribution ports",
            :warn,
            "#{where} chosen at random at boot: security groups would have to allow every port",
            fix
          )
        ]
    end
  end

  defp cookie_check do
    cookie = if Node.alive?(), do: Node.get_cookie(), else: :nocookie

    cond do
      not Node.alive?() ->
        []

      cookie == :nocookie ->
        [
          check(
            "cookie",
            :fail,
            "no cookie is set (:nocookie)",
            "set RELEASE_COOKIE (or --cookie) to the same secret value on every node"
          )
        ]

      home_cookie() == Atom.to_string(cookie) ->
        [
          check(
            "cookie",
            :warn,
            "set, from ~/.erlang.cookie, which is random per host unless copied",
            "set RELEASE_COOKIE to one secret value on every node (or ship the release's own)"
          )
        ]

      byte_size(Atom.to_string(cookie)) < 16 ->
        [
          check(
            "cookie",
            :warn,
            "set, but shorter than 16 characters (value not shown)",
            "use a long random cookie: anyone who guesses it can run code on every node"
          )
        ]

      true ->
        [check("cookie", :pass, "set (value not shown)")]
    end
  end

  defp home_cookie do
    case File.read(Path.join(System.user_home() || "/nonexistent", ".erlang.cookie")) do
      {:ok, text} -> String.trim(text)
      _ -> nil
    end
  end
end
