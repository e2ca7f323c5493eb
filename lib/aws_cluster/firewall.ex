defmodule AWSCluster.Firewall do
  alias AWSCluster.{Config, Error, Loop, Telemetry}

  @registry AWSCluster.Firewall.Registry
  @port {:integer, 1..65_535}

  @schema [
    enabled: [type: :boolean, default: false, doc: "Keep the table at all."],
    table: [
      type:
        {:custom, "an nftables table name (a letter, then up to 63 letters, digits or _)",
         &__MODULE__.identifier/1},
      default: "aws_cluster",
      doc: "The `inet` table this topology owns."
    ],
    interface: [
      type: {:or, [:non_empty_string, {:literal, nil}]},
      default: nil,
      doc: "Protect the ports only for traffic arriving on this interface (`\"ethwe\"`)."
    ],
    epmd_port: [type: @port, default: 4369, doc: "The EPMD port."],
    dist_ports: [
      type: {:or, [{:tuple, [@port, @port]}, {:literal, nil}]},
      default: nil,
      doc:
        "The distribution port range `{min, max}`; default the kernel's " <>
          "`inet_dist_listen_min`/`inet_dist_listen_max`, which must then be set."
    ],
    udp_ports: [
      type: {:list, @port},
      default: [],
      doc: "UDP ports to protect the same way (a Gossip port whose senders are members)."
    ],
    dry_run: [type: :boolean, default: false, doc: "Log the ruleset, apply nothing."],
    keep_on_exit: [type: :boolean, default: false, doc: "Leave the table when stopping."],
    nft: [type: :non_empty_string, default: "nft", doc: "The `nft` command."]
  ]

  @moduledoc """
  Host firewall rules that follow discovery: only current members reach EPMD and the
  distribution ports (talk slide 6, "augment security groups with on-host rules").

  Opt in per polling topology with `firewall: [enabled: true, ...]`. The loop then keeps
  one nftables table of its own (default `inet aws_cluster`) and touches no other:

      table inet aws_cluster {
        set peers_v4 { type ipv4_addr; elements = { 127.0.1.11, 127.0.2.11 } }
        set peers_v6 { type ipv6_addr; }
        chain input {
          type filter hook input priority filter; policy accept;
          iif "lo" accept
          ct state established,related accept
          iifname "ethwe" tcp dport { 4369, 9100-9155 } ip saddr @peers_v4 accept
          iifname "ethwe" tcp dport { 4369, 9100-9155 } ip6 saddr @peers_v6 accept
          iifname "ethwe" tcp dport { 4369, 9100-9155 } drop
        }
      }

  Only the protected ports are dropped, and only for addresses outside the set; every
  other packet passes this table untouched (`policy accept`).

  The rules it keeps:

    * **It follows discovery.** The set is this node's own addresses plus every member
      the loop knows. A peer enters the set when an answer first lists it, before the
      connect round that dials it; it leaves only when the membership rules prune it
      (`AWSCluster.Membership`). A discovery error changes nothing.
    * **Atomic.** Every change replaces the whole table in one `nft -f` transaction, so
      the kernel holds the old ruleset or the new one, never a mix, and a table someone
      edited by hand is put back on the next change.
    * **Never locks the cluster out.** Established links stay up after a prune (the rule
      `ct state established,related accept`), loopback and the node's own addresses are
      always allowed, and a failed `nft` run is logged and reported
      (`[:aws_cluster, :firewall, :error]`) while the kernel keeps the last ruleset.
    * **Refuses what cannot work**, at start: a distribution port range that is not
      pinned (no rule can follow a random port), an unknown `interface`, no `nft`, or no
      CAP_NET_ADMIN. `dry_run: true` needs neither `nft` nor the capability: it logs the
      ruleset instead of applying it.
    * On a clean stop the table is deleted, unless `keep_on_exit: true`. A loop that
      crashes leaves its last ruleset (which still admits every member), and its
      restart starts from that set until its first answer.

  One table belongs to one topology; a second topology asking for the same table fails
  to start. Why the `nft` command and not netlink from the NIF: the rules are few and
  change rarely (once per membership change), the `nft` text is what an operator reads
  and can check with `nft -c -f`, and a netlink crate would add build time and C
  libraries (libnftnl, libmnl) for no gain a user could see.

  Options (under `firewall:`):

  #{Config.docs(@schema)}
  """

  @enforce_keys [:config, :topology]
  defstruct config: nil, topology: nil, own: [], allowed: nil, ruleset: nil

  @type t :: %__MODULE__{
          config: map(),
          topology: atom(),
          own: [:inet.ip_address()],
          allowed: MapSet.t() | nil,
          ruleset: String.t() | nil
        }

  @doc "The `firewall:` options, as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc false
  @spec identifier(term()) :: :ok | :error
  def identifier(name) when is_binary(name) do
    if name =~ ~r/\A[A-Za-z][A-Za-z0-9_]{0,63}\z/, do: :ok, else: :error
  end

  def identifier(_), do: :error

  @doc """
  Validates the `firewall:` options: `{:ok, nil}` when disabled, else the options with
  `:dist_ports` filled in from the kernel. Errors are `:invalid_config` naming the key
  (`firewall.dist_ports`, `firewall.interface`, ...).
  """
  @spec validate(keyword()) :: {:ok, map() | nil} | {:error, Error.t()}
  def validate(opts) do
    case Config.validate(opts, @schema) do
      {:ok, %{enabled: false}} -> {:ok, nil}
      {:ok, config} -> with {:ok, config} <- pin_ports(config), do: check_interface(config)
      {:error, e} -> {:error, in_firewall(e)}
    end
  end

  defp pin_ports(%{dist_ports: {min, max}} = config) when min <= max, do: {:ok, config}

  defp pin_ports(%{dist_ports: {_, _}}),
    do: {:error, key_error(:dist_ports, "the range {min, max} has min above max")}

  defp pin_ports(config) do
    case {:application.get_env(:kernel, :inet_dist_listen_min),
          :application.get_env(:kernel, :inet_dist_listen_max)} do
      {{:ok, min}, {:ok, max}} when is_integer(min) and is_integer(max) and min <= max ->
        {:ok, %{config | dist_ports: {min, max}}}

      _ ->
        {:error,
         key_error(
           :dist_ports,
           "the distribution port range is not pinned, so no rule could follow the port " <>
             "this node listens on: start the VM with -kernel inet_dist_listen_min N " <>
             "inet_dist_listen_max M, or give firewall: [dist_ports: {N, M}]"
         )}
    end
  end

  defp check_interface(%{interface: nil} = config), do: {:ok, config}

  # The name goes into the ruleset's text: only what a Linux interface name can be.
  defp check_interface(%{interface: name} = config) do
    names = interface_names()

    cond do
      not (name =~ ~r/\A[A-Za-z0-9_.@:-]{1,15}\z/) ->
        {:error, key_error(:interface, "#{inspect(name)} is not an interface name")}

      name in names ->
        {:ok, config}

      true ->
        {:error,
         key_error(
           :interface,
           "no interface #{inspect(name)} here (have: #{Enum.join(names, ", ")})"
         )}
    end
  end

  defp interface_names do
    case :inet.getifaddrs() do
      {:ok, ifs} -> for {name, _} <- ifs, do: List.to_string(name)
      _ -> []
    end
  end

  @doc """
  Claims the table for `topology` and applies the first ruleset (the node's own
  addresses only). Fails with `:firewall_unavailable` when `nft` is missing, CAP_NET_ADMIN
  is lacking, the table is another topology's, or the first `nft` run fails.
  """
  @spec start(map(), atom()) :: {:ok, t()} | {:error, Error.t()}
  def start(config, topology) do
    fw = %__MODULE__{config: config, topology: topology, own: own_addresses(config)}

    with :ok <- check_host(config),
         :ok <- claim(config.table, topology),
         {:ok, fw} <- apply_set(fw, MapSet.new(fw.own ++ kept(config))) do
      {:ok, fw}
    end
  end

  # A restart after a crash keeps what the table admitted, until the first answer.
  defp kept(%{dry_run: true}), do: []

  defp kept(config) do
    case listed(config) do
      {:ok, addresses} -> Enum.flat_map(addresses, &parse/1)
      {:error, _} -> []
    end
  end

  defp check_host(%{dry_run: true}), do: :ok

  defp check_host(config) do
    cond do
      executable(config) == nil ->
        {:error,
         unavailable(
           "the nft command #{inspect(config.nft)} is missing (Debian: apt-get install nftables)",
           :nft
         )}

      not net_admin?() ->
        {:error,
         unavailable(
           "this process lacks CAP_NET_ADMIN, which nftables needs (run as root, or grant " <>
             "the capability, or use dry_run: true)",
           :cap_net_admin
         )}

      true ->
        :ok
    end
  end

  # nft lives in /usr/sbin, which a non-root PATH often lacks.
  defp executable(config) do
    System.find_executable(config.nft) ||
      Enum.find([Path.join("/usr/sbin", config.nft)], &File.exists?/1)
  end

  # CapEff in /proc/self/status is a hex mask; CAP_NET_ADMIN is bit 12.
  defp net_admin? do
    with {:ok, status} <- File.read("/proc/self/status"),
         [_, hex] <- Regex.run(~r/^CapEff:\s*([0-9a-f]+)$/m, status) do
      Bitwise.band(String.to_integer(hex, 16), Bitwise.bsl(1, 12)) != 0
    else
      _ -> false
    end
  end

  defp claim(table, topology) do
    case Registry.register(@registry, table, topology) do
      {:ok, _} ->
        :ok

      {:error, {:already_registered, pid}} when pid == self() ->
        :ok

      {:error, {:already_registered, pid}} ->
        owner =
          Registry.lookup(@registry, table)
          |> Enum.find_value(&(elem(&1, 0) == pid && elem(&1, 1)))

        {:error,
         unavailable(
           "the nftables table #{table} is already kept by topology #{inspect(owner)}; " <>
             "enable the firewall on one topology, or give this one its own table",
           :table
         )}
    end
  end

  @doc """
  Follows one membership: `addresses` are the members' addresses (tuples or strings,
  or a node whose host is an IP; what does not parse is left out). Applies a new ruleset only when the set changed.
  On an `nft` failure the error is logged and emitted, and `fw` keeps the last applied
  set, so the next call tries again.
  """
  @spec follow(t(), [term()]) :: t()
  def follow(%__MODULE__{} = fw, addresses) do
    allowed = MapSet.new(fw.own ++ Enum.flat_map(addresses, &parse/1))

    if allowed == fw.allowed do
      fw
    else
      case apply_set(fw, allowed) do
        {:ok, fw} -> fw
        {:error, _} -> fw
      end
    end
  end

  @doc "Deletes the table (unless `keep_on_exit` or `dry_run`) and releases it."
  @spec stop(t()) :: :ok
  def stop(%__MODULE__{config: config}) do
    if not config.dry_run and not config.keep_on_exit do
      _ = nft(config, ["delete", "table", "inet", config.table])
    end

    Registry.unregister(@registry, config.table)
    :ok
  end

  @doc """
  The addresses the kernel's table holds now (both sets), read with `nft list set`:
  what `mix aws_cluster.doctor` compares with discovery. `:not_found` when there is no
  such table.
  """
  @spec listed(map()) :: {:ok, [String.t()]} | {:error, Error.t()}
  def listed(config) do
    Enum.reduce_while(["peers_v4", "peers_v6"], {:ok, []}, fn set, {:ok, acc} ->
      case nft_output(config, ["list", "set", "inet", config.table, set]) do
        {:ok, text} ->
          {:cont, {:ok, acc ++ set_elements(text)}}

        {:error, %Error{reason: :firewall_failed} = e} = error ->
          if e.message =~ "No such file or directory",
            do:
              {:halt,
               {:error,
                %{e | reason: :not_found, message: "no table inet #{config.table}: " <> e.message}}},
            else: {:halt, error}

        error ->
          {:halt, error}
      end
    end)
  end

  defp set_elements(text) do
    case Regex.run(~r/elements = \{([^}]*)\}/s, text) do
      [_, list] ->
        list |> String.split([",", " ", "\n", "\t"], trim: true) |> Enum.flat_map(&valid_ip/1)

      nil ->
        []
    end
  end

  defp valid_ip(text), do: text |> parse() |> Enum.map(&ip_text/1)

  @doc "The addresses in the set now (own ones included), as strings, sorted."
  @spec allowed(t()) :: [String.t()]
  def allowed(%__MODULE__{allowed: allowed}),
    do: allowed |> Enum.map(&ip_text/1) |> Enum.sort()

  @doc """
  The ruleset for `config` admitting `addresses` (IP tuples): the table alone, as
  `nft list table` prints it.
  """
  @spec render(map(), Enumerable.t()) :: String.t()
  def render(config, addresses) do
    {v4, v6} = addresses |> Enum.sort() |> Enum.split_with(&(tuple_size(&1) == 4))
    on = if config.interface, do: ~s(iifname "#{config.interface}" ), else: ""
    {min, max} = config.dist_ports
    dist = if min == max, do: "#{min}", else: "#{min}-#{max}"
    tcp = "tcp dport { #{config.epmd_port}, #{dist} }"

    udp =
      case config.udp_ports do
        [] -> []
        ports -> ["udp dport { #{ports |> Enum.uniq() |> Enum.sort() |> Enum.join(", ")} }"]
      end

    guarded =
      for match <- [tcp | udp] do
        """
            #{on}#{match} ip saddr @peers_v4 accept
            #{on}#{match} ip6 saddr @peers_v6 accept
            #{on}#{match} drop
        """
      end

    """
    table inet #{config.table} {
      set peers_v4 { type ipv4_addr;#{elements(v4)} }
      set peers_v6 { type ipv6_addr;#{elements(v6)} }
      chain input {
        type filter hook input priority filter; policy accept;
        iif "lo" accept
        ct state established,related accept
    #{Enum.join(guarded)}  }
    }
    """
  end

  defp elements([]), do: ""
  defp elements(ips), do: " elements = { #{Enum.map_join(ips, ", ", &ip_text/1)} }"

  # The batch that replaces the table in one transaction: `add` makes the `delete` safe
  # when the table does not exist yet.
  defp batch(config, ruleset) do
    "add table inet #{config.table}\ndelete table inet #{config.table}\n" <> ruleset
  end

  defp apply_set(%{config: config} = fw, allowed) do
    ruleset = render(config, allowed)
    started = System.monotonic_time()

    result =
      if config.dry_run do
        Loop.log(:info, fw.topology, "firewall dry run, would apply:\n" <> batch(config, ruleset))
        :ok
      else
        apply_batch(config, batch(config, ruleset))
      end

    meta = %{topology: fw.topology, table: config.table}

    case result do
      :ok ->
        Telemetry.execute(
          [:aws_cluster, :firewall, :applied],
          %{addresses: MapSet.size(allowed), duration: System.monotonic_time() - started},
          meta
        )

        {:ok, %{fw | allowed: allowed, ruleset: ruleset}}

      {:error, error} ->
        Loop.log(
          :error,
          fw.topology,
          "firewall not updated, the last ruleset stays: " <> error.message
        )

        Telemetry.execute(
          [:aws_cluster, :firewall, :error],
          %{count: 1},
          Map.put(meta, :error, error)
        )

        {:error, error}
    end
  end

  # In a fresh directory only this process can write to (it is root's, in a shared tmp).
  defp apply_batch(config, text) do
    random = Base.url_encode64(:crypto.strong_rand_bytes(12), padding: false)
    dir = Path.join(System.tmp_dir!(), "aws_cluster_nft_" <> random)

    try do
      with :ok <- File.mkdir(dir),
           :ok <- File.chmod(dir, 0o700),
           path = Path.join(dir, "batch.nft"),
           :ok <- File.write(path, text, [:exclusive]) do
        nft(config, ["-f", path])
      else
        {:error, why} ->
          {:error,
           Error.new(
             :firewall_failed,
             "cannot write the nft batch in #{dir}: #{:file.format_error(why)}"
           )}
      end
    after
      File.rm_rf(dir)
    end
  end

  @doc false
  @spec nft(map(), [String.t()]) :: :ok | {:error, Error.t()}
  def nft(config, args) do
    with {:ok, _} <- nft_output(config, args), do: :ok
  end

  defp nft_output(config, args) do
    case System.cmd(executable(config) || config.nft, args, stderr_to_stdout: true) do
      {out, 0} ->
        {:ok, out}

      {out, code} ->
        {:error,
         Error.new(
           :firewall_failed,
           "nft #{Enum.join(args, " ")} exited #{code}: #{String.trim(out)}",
           %{
             status: code
           }
         )}
    end
  rescue
    e in ErlangError ->
      {:error, unavailable("cannot run nft: #{Exception.message(e)}", :nft)}
  end

  # The node's own address (its name's host, when that is an IP) and the interface's.
  defp own_addresses(config) do
    from_name = parse(node())

    from_interface =
      with name when is_binary(name) <- config.interface,
           {:ok, ifs} <- :inet.getifaddrs(),
           {_, opts} <- List.keyfind(ifs, String.to_charlist(name), 0) do
        for {:addr, ip} <- opts, do: ip
      else
        _ -> []
      end

    Enum.uniq(from_name ++ from_interface)
  end

  defp parse(ip) when is_tuple(ip) and tuple_size(ip) in [4, 8], do: [ip]

  defp parse(ip) when is_binary(ip) do
    case :inet.parse_strict_address(String.to_charlist(ip)) do
      {:ok, ip} -> [ip]
      _ -> []
    end
  end

  defp parse(node) when is_atom(node) do
    case String.split(Atom.to_string(node), "@") do
      [_, host] -> parse(host)
      _ -> []
    end
  end

  defp parse(_), do: []

  defp ip_text(ip), do: ip |> :inet.ntoa() |> List.to_string()

  defp in_firewall(%Error{details: %{key: key}} = e) do
    %{e | message: "firewall: " <> e.message, details: %{e.details | key: {:firewall, key}}}
  end

  defp in_firewall(e), do: %{e | message: "firewall: " <> e.message}

  defp key_error(key, text), do: in_firewall(Config.error(key, text))

  defp unavailable(text, what),
    do: Error.new(:firewall_unavailable, "firewall: " <> text, %{missing: what})
end
