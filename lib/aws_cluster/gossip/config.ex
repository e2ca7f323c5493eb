defmodule AWSCluster.Gossip.Config do
  @moduledoc false
  # Options of AWSCluster.Strategy.Gossip: the schema its docs are generated from, and the
  # checks across options (secret, transports, address families) done before anything
  # starts, so a bad config fails the boot with a message naming the key.

  alias AWSCluster.{Config, Error}
  alias AWSCluster.Gossip.{Address, Codec}

  # Not libcluster's 45892: its Gossip receiver decrypts without a rescue and crashes on
  # any datagram it cannot open, so the two must not share a port during a migration.
  @default_port 45_910

  @schema [
            secret: [
              type: :non_empty_string,
              doc:
                "The shared secret, at least 32 bytes (e.g. `:crypto.strong_rand_bytes(32) |> " <>
                  "Base.encode64()`). Shorthand for `secrets: [secret]`."
            ],
            secrets: [
              type: {:list, :non_empty_string},
              doc:
                "Secrets for key rotation: the first seals, all open (see the rotation runbook). " <>
                  "At most 8."
            ],
            insecure: [
              type: :boolean,
              default: false,
              doc:
                "Allow a missing or short secret (then a fixed, public key is used when none is " <>
                  "given). Logs a warning at start. Never in production."
            ],
            label: [
              type: :non_empty_string,
              doc:
                "Cluster label bound into every packet; clusters sharing a network and a secret " <>
                  "still ignore each other. Printable ASCII, at most 128 bytes. Default: the topology name."
            ],
            port: [type: {:integer, 1..65_535}, default: @default_port, doc: "UDP port."],
            if_addr: [
              type: :ip_address,
              doc:
                "Address the socket binds to. Default: the wildcard of the family in use. Binding " <>
                  "a unicast address stops multicast from being received."
            ],
            multicast_addr: [
              type:
                {:custom, "a multicast IP address (tuple or string)", &Address.parse_multicast/1},
              doc:
                "Multicast group to announce to and listen on (IPv4 e.g. `\"239.255.77.1\"` or " <>
                  "IPv6 e.g. `\"ff15::4157\"`). Unset means no multicast."
            ],
            multicast_if: [
              type: {:or, [:ip_address, :non_empty_string]},
              doc:
                "Interface for multicast: an interface name such as `\"ethwe\"` or one of its " <>
                  "addresses. Default: the kernel's choice."
            ],
            multicast_ttl: [
              type: {:integer, 0..255},
              default: 1,
              doc: "Multicast TTL / hop limit; 1 stays on the local link."
            ],
            multicast_loop: [
              type: :boolean,
              default: true,
              doc: "Deliver multicast to this host too (several nodes per host)."
            ],
            seeds: [
              type: {:list, {:custom, "an address", &Address.parse_seed/1}},
              default: [],
              doc:
                "Unicast targets: `\"10.0.1.5\"`, `\"10.0.1.5:45910\"`, `\"[fd00::5]:45910\"`, " <>
                  "`\"host:port\"` (resolved when the socket opens, retried while it does not resolve) or `{ip_tuple, port}`. Peers heard from are " <>
                  "added while they keep announcing."
            ],
            seed_topologies: [
              type: {:list, :atom},
              default: [],
              doc:
                "Also announce to the addresses that these other topologies (for example an EC2 " <>
                  "one) discovered, on `:port`."
            ],
            announce_interval: [
              type: :pos_integer,
              default: 5_000,
              doc: "Milliseconds between announces (±10% jitter)."
            ],
            timestamp_window: [
              type: :pos_integer,
              default: 30_000,
              doc:
                "Packets whose timestamp is further than this many ms from the local clock are " <>
                  "dropped; keep clocks in sync (NTP / Amazon Time Sync)."
            ],
            allow_nat: [
              type: :boolean,
              default: false,
              doc:
                "Accept packets whose node name's host is not the packet's source address (peers " <>
                  "behind NAT, or named by DNS names). Off, a packet captured and replayed from " <>
                  "another host is dropped (`:source_mismatch`)."
            ],
            max_peers: [
              type: :pos_integer,
              default: 1_024,
              doc: "Most distinct peers tracked; node names become atoms, so this bounds them."
            ]
          ] ++
            AWSCluster.Membership.NameBudget.schema() ++
            [
              peer_timeout: [
                type: :pos_integer,
                doc:
                  "A peer not heard from for this many ms is forgotten (not disconnected). " <>
                    "Default: 6 announce intervals."
              ]
            ] ++
            AWSCluster.Loop.Round.schema() ++
            AWSCluster.Groups.Options.schema() ++
            [
              metadata: [
                type: {:map, :string, :string},
                default: %{},
                doc:
                  "Up to 4 entries sent with each announce, keys of `a-z 0-9 _`, values of at most " <>
                    "64 printable ASCII bytes. `\"az\"` and `\"instance_id\"` show up in " <>
                    "`AWSCluster.node_info/1`."
              ],
              stats_log_interval: [
                type: :pos_integer,
                default: 60_000,
                doc: "Rejected packets are summarized in the log at most once per this many ms."
              ]
            ]

  # Anyone can read this; it only exists so `insecure: true` works without a secret.
  @insecure_secret "aws_cluster insecure gossip key - anyone can forge packets"

  @doc false
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc false
  @spec default_port() :: pos_integer()
  def default_port, do: @default_port

  @doc """
  Validates `opts` for `topology`. Returns the config map with `:secrets` (a list),
  `:label`, `:family`, `:if_addr` and `:peer_timeout`. Seed host names are kept as
  `{:host, name, port}` for `resolve_seeds/1`: validation asks no DNS.
  """
  @spec validate(keyword(), atom()) :: {:ok, map()} | {:error, Error.t()}
  def validate(opts, topology) do
    with {:ok, c} <- Config.validate(opts, @schema),
         {:ok, c} <- secrets(c),
         {:ok, c} <- label(c, topology),
         :ok <- transports(c),
         {:ok, c} <- family(c),
         :ok <- multicast_if(c),
         :ok <- AWSCluster.Groups.Options.validate(c),
         :ok <- AWSCluster.Groups.Options.for_source(c, :gossip) do
      {:ok, Map.put(c, :peer_timeout, c.peer_timeout || 6 * c.announce_interval)}
    end
  end

  @doc """
  Checks the secrets given to `AWSCluster.Strategy.Gossip.rotate/2`: one string or a
  non-empty list of them, each long enough unless `insecure`.
  """
  @spec check_secrets(term(), boolean()) :: {:ok, [binary()]} | {:error, Error.t()}
  def check_secrets(secret, insecure) when is_binary(secret),
    do: check_secrets([secret], insecure)

  def check_secrets(secrets, insecure) do
    if is_list(secrets) and secrets != [] and Enum.all?(secrets, &(is_binary(&1) and &1 != "")) do
      with {:ok, c} <- check_lengths(%{secrets: secrets, insecure: insecure}, :secrets),
           do: {:ok, c.secrets}
    else
      {:error, Config.error(:secrets, "expected a non-empty list of non-empty strings")}
    end
  end

  defp secrets(%{secret: s, secrets: l}) when s != nil and l != nil,
    do: {:error, Config.error(:secret, "give either :secret or :secrets, not both")}

  defp secrets(%{secret: nil, secrets: nil, insecure: false}) do
    {:error,
     Config.error(
       :secret,
       "a shared secret of at least 32 bytes is required (or :secrets for rotation); " <>
         "generate one with `:crypto.strong_rand_bytes(32) |> Base.encode64()`, or set " <>
         "insecure: true for a throwaway setup"
     )}
  end

  defp secrets(%{secret: nil, secrets: nil} = c), do: {:ok, %{c | secrets: [@insecure_secret]}}
  defp secrets(%{secrets: []}), do: {:error, Config.error(:secrets, "must not be empty")}
  defp secrets(%{secret: nil} = c), do: check_lengths(c, :secrets)
  defp secrets(%{secret: s} = c), do: check_lengths(%{c | secrets: [s]}, :secret)

  defp check_lengths(c, key) do
    min = AWSCluster.Gossip.Codec.min_secret_bytes()

    case Enum.find_index(c.secrets, &(byte_size(&1) < min)) do
      nil ->
        {:ok, c}

      _index when c.insecure ->
        {:ok, c}

      index ->
        which = if key == :secret, do: "the secret", else: "secret ##{index}"

        {:error,
         Config.error(
           key,
           "#{which} is #{byte_size(Enum.at(c.secrets, index))} bytes; at least #{min} are " <>
             "required (generate one with `:crypto.strong_rand_bytes(32) |> Base.encode64()`), " <>
             "or set insecure: true"
         )}
    end
  end

  defp label(c, topology) do
    label = c.label || Atom.to_string(topology)

    if byte_size(label) <= 128 and String.printable?(label) and label =~ ~r/\A[\x20-\x7e]+\z/ do
      {:ok, %{c | label: label}}
    else
      {:error, Config.error(:label, "must be 1-128 printable ASCII bytes, got #{inspect(label)}")}
    end
  end

  defp transports(%{multicast_addr: nil, seeds: [], seed_topologies: []}) do
    {:error,
     Config.error(
       :multicast_addr,
       "no transport: set :multicast_addr (a multicast group) and/or :seeds (unicast " <>
         "targets) or :seed_topologies"
     )}
  end

  defp transports(%{multicast_addr: nil, multicast_if: i}) when i != nil,
    do: {:error, Config.error(:multicast_if, "is set but :multicast_addr is not")}

  defp transports(_c), do: :ok

  defp family(c) do
    families =
      [{:multicast_addr, c.multicast_addr}, {:if_addr, c.if_addr}] ++
        Enum.map(c.seeds, &{:seeds, &1})

    given = for {key, value} <- families, ip = ip_of(value), ip != nil, do: {key, family_of(ip)}

    case Enum.uniq_by(given, &elem(&1, 1)) do
      [] ->
        {:ok, finish_family(c, :inet)}

      [{_key, family}] ->
        {:ok, finish_family(c, family)}

      [{k1, f1}, {k2, f2} | _] ->
        {:error,
         Config.error(
           k2,
           "is #{f2} but #{inspect(k1)} is #{f1}; one socket speaks one family, so " <>
             "use one family for :multicast_addr, :if_addr and :seeds"
         )}
    end
  end

  defp finish_family(c, family) do
    wildcard = if family == :inet6, do: {0, 0, 0, 0, 0, 0, 0, 0}, else: {0, 0, 0, 0}
    %{c | if_addr: c.if_addr || wildcard} |> Map.put(:family, family)
  end

  defp ip_of({:host, _host, _port}), do: nil
  defp ip_of({ip, _port}) when is_tuple(ip), do: ip
  defp ip_of(ip) when is_tuple(ip), do: ip
  defp ip_of(nil), do: nil

  defp family_of(ip) when tuple_size(ip) == 4, do: :inet
  defp family_of(ip) when tuple_size(ip) == 8, do: :inet6

  @doc """
  The config with every seed as `{ip, port}`: host names resolved in the config's family,
  ports defaulted. A name that does not resolve is `:unavailable` (DNS may not be up
  yet when the app starts), naming the seed.
  """
  @spec resolve_seeds(map()) :: {:ok, map()} | {:error, Error.t()}
  def resolve_seeds(c) do
    Enum.reduce_while(c.seeds, {:ok, []}, fn seed, {:ok, acc} ->
      case resolve(seed, c) do
        {:ok, target} -> {:cont, {:ok, [target | acc]}}
        {:error, _} = error -> {:halt, error}
      end
    end)
    |> case do
      {:ok, seeds} -> {:ok, %{c | seeds: Enum.uniq(Enum.reverse(seeds))}}
      error -> error
    end
  end

  defp resolve({:host, host, port}, c) do
    case :inet.getaddr(String.to_charlist(host), c.family) do
      {:ok, ip} ->
        {:ok, {ip, port || c.port}}

      {:error, why} ->
        {:error,
         Error.new(
           :unavailable,
           "option :seeds: cannot resolve #{inspect(host)} (#{c.family}): #{why}",
           %{key: :seeds, seed: host}
         )}
    end
  end

  defp resolve({ip, port}, c), do: {:ok, {ip, port || c.port}}

  defp multicast_if(%{multicast_if: ip} = c) when is_tuple(ip) do
    if family_of(ip) == c.family,
      do: :ok,
      else:
        {:error, Config.error(:multicast_if, "is #{family_of(ip)} but the group is #{c.family}")}
  end

  defp multicast_if(_c), do: :ok

  @doc false
  # The key ring for `secrets`, its errors named after the option at fault.
  @spec keyring([binary()], map()) :: {:ok, Codec.keyring()} | {:error, Error.t()}
  def keyring(secrets, c) do
    case Codec.keyring(secrets, c.label, insecure: c.insecure) do
      {:ok, ring} -> {:ok, ring}
      {:error, e} -> {:error, Config.error(config_key(e), e.message)}
    end
  end

  defp config_key(%Error{details: %{key: "label"}}), do: :label
  defp config_key(_), do: :secrets

  @doc false
  # Whether `:metadata` fits in a packet, checked by sealing a probe announce.
  @spec check_metadata(Codec.keyring(), map()) :: :ok | {:error, Error.t()}
  def check_metadata(ring, c) do
    probe = %{kind: :announce, name: "probe@localhost", boot_id: 0, seq: 0, meta: c.metadata}

    case Codec.seal(ring, probe) do
      {:ok, _} -> :ok
      {:error, e} -> {:error, Config.error(:metadata, e.message)}
    end
  end
end
