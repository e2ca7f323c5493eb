defmodule AWSCluster.Strategy.Naming do
  @moduledoc """
  Turns an instance into the node name `basename@address`, for the AWS strategies.

  Node names become atoms, and atoms are never collected, so every part taken from an
  AWS answer (a tag, an address) is checked before an atom is made: the basename is
  1-64 letters, digits, `_` or `-`; the address is an IP address, or for `:private_dns`
  and `{:tag, key}` a DNS name. An instance that fails is skipped, not guessed at.

  A valid name can still be chosen by whoever may tag instances, so the number of
  distinct names in one answer is checked against `:max_peers`, and the names are
  returned as strings: only `AWSCluster.Membership` turns them into atoms, within the
  topology's lifetime name budget.
  """

  alias AWSCluster.{Config, Distribution, Error}

  @addresses [:private_ip, :public_ip, :private_dns, :ipv6]

  @schema [
    address: [
      type:
        {:or,
         [
           {:in, @addresses},
           {:tuple, [{:literal, :interface}, :non_neg_integer]},
           {:tuple, [{:literal, :subnet}, :non_empty_string]},
           {:tuple, [{:literal, :tag}, :non_empty_string]}
         ]},
      default: :private_ip,
      doc:
        "Which address names the node: `{:interface, device_index}` is the first private " <>
          "IP of that ENI (a second ENI for cluster traffic), `{:subnet, id}` the first " <>
          "private IP of the ENI in that subnet, `{:tag, key}` the tag's value."
    ],
    node_basename: [
      type:
        {:or,
         [
           {:custom, "a basename of 1-64 letters, digits, _ or -",
            &AWSCluster.Distribution.basename?/1},
           {:tuple, [{:literal, :tag}, :non_empty_string]},
           {:fun, 1}
         ]},
      required: true,
      doc:
        "The part before `@`: a string, `{:tag, key}`, or a function of the instance map " <>
          "returning a string."
    ]
  ]

  @doc "The naming options as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc "The naming options of a validated config: how instances become peers."
  @spec question(map()) :: map()
  def question(config), do: Map.take(config, Keyword.keys(@schema))

  @doc """
  The peer for `instance` under `config` (`:address`, `:node_basename`), or
  `{:skip, why}` when the instance lacks that address or yields an invalid name.
  """
  @spec peer(map(), map()) :: {:ok, AWSCluster.Strategy.peer()} | {:skip, String.t()}
  def peer(instance, config) do
    with {:ok, name, address} <- name(instance, config) do
      {:ok, to_peer(name, address, instance)}
    end
  end

  @doc """
  The peers of `instances`, skipping those that cannot be named, first name wins.

  More distinct names than `config.max_peers` is a `:too_many_peers` error. No name
  becomes an atom here: atoms are never collected, so a flood of tagged instances must
  not grow the atom table (see `AWSCluster.Membership.NameBudget`).
  """
  @spec peers([map()], map()) :: {:ok, [AWSCluster.Strategy.peer()]} | {:error, Error.t()}
  def peers(instances, %{max_peers: max_peers} = config) when is_integer(max_peers) do
    named =
      instances
      |> Enum.flat_map(fn instance ->
        case name(instance, config) do
          {:ok, name, address} -> [{name, address, instance}]
          {:skip, _why} -> []
        end
      end)
      |> Enum.uniq_by(&elem(&1, 0))

    count = length(named)

    if count > max_peers do
      {:error,
       Error.new(
         :too_many_peers,
         "discovery found #{count} peers, more than max_peers (#{max_peers}); " <>
           "raise max_peers or narrow the filters",
         %{count: count, max_peers: max_peers}
       )}
    else
      {:ok, Enum.map(named, fn {name, address, instance} -> to_peer(name, address, instance) end)}
    end
  end

  # The node name as a string: nothing here may create an atom. An atom holds at most
  # 255 characters, and a 64-byte basename with a 253-byte host name is longer.
  defp name(instance, config) do
    with {:ok, address} <- address(instance, config.address),
         {:ok, basename} <- basename(instance, config.node_basename) do
      name = basename <> "@" <> address

      if byte_size(name) <= 255,
        do: {:ok, name, address},
        else: {:skip, "the node name would be over 255 bytes"}
    end
  end

  defp to_peer(name, address, instance), do: %{node: name, address: address, instance: instance}

  defp address(instance, kind) do
    raw =
      case kind do
        :ipv6 -> first(Map.get(instance, :ipv6))
        {:interface, index} -> interface_ip(instance, &(&1[:device_index] == index))
        {:subnet, id} -> interface_ip(instance, &(&1[:subnet_id] == id))
        {:tag, key} -> instance |> Map.get(:tags, %{}) |> Map.get(key)
        field -> Map.get(instance, field)
      end

    cond do
      not is_binary(raw) or raw == "" -> {:skip, "no #{inspect(kind)} address"}
      ip?(raw) -> {:ok, raw}
      kind in [:private_dns] or match?({:tag, _}, kind) -> hostname(raw)
      true -> {:skip, "#{inspect(kind)} is not an IP address"}
    end
  end

  defp interface_ip(instance, match) do
    instance
    |> Map.get(:network_interfaces, [])
    |> Enum.find(match)
    |> case do
      nil -> nil
      eni -> first(eni[:private_ips])
    end
  end

  defp first([x | _]), do: x
  defp first(_), do: nil

  defp ip?(text), do: match?({:ok, _}, :inet.parse_strict_address(String.to_charlist(text)))

  defp hostname(text) do
    if text =~
         ~r/\A(?=.{1,253}\z)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\z/,
       do: {:ok, text},
       else: {:skip, "not a host name"}
  end

  defp basename(_instance, name) when is_binary(name), do: {:ok, name}

  defp basename(instance, {:tag, key}),
    do: checked(instance |> Map.get(:tags, %{}) |> Map.get(key))

  defp basename(instance, fun) when is_function(fun, 1) do
    checked(fun.(instance))
  rescue
    _ -> {:skip, "node_basename function raised"}
  end

  defp checked(name) do
    if Distribution.basename?(name),
      do: {:ok, name},
      else: {:skip, "invalid basename #{inspect(name)}"}
  end
end
