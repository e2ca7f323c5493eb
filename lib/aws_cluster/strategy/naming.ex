defmodule AWSCluster.Strategy.Naming do
  @moduledoc """
  Turns an instance into the node name `basename@address`, for the AWS strategies.

  Node names become atoms, and atoms are never collected, so every part taken from an
  AWS answer (a tag, an address) is checked before an atom is made: the basename is
  1-64 letters, digits, `_` or `-`; the address is an IP address, or for `:private_dns`
  and `{:tag, key}` a DNS name. An instance that fails is skipped, not guessed at.
  """

  alias AWSCluster.Config

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
           {:custom, "a basename of 1-64 letters, digits, _ or -", &__MODULE__.basename?/1},
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

  @doc "Whether `value` is a valid basename (the part of a node name before `@`)."
  @spec basename?(term()) :: boolean()
  def basename?(value), do: is_binary(value) and value =~ ~r/\A[A-Za-z0-9_-]{1,64}\z/

  @doc """
  The peer for `instance` under `config` (`:address`, `:node_basename`), or
  `{:skip, why}` when the instance lacks that address or yields an invalid name.
  """
  @spec peer(map(), map()) :: {:ok, AWSCluster.Strategy.peer()} | {:skip, String.t()}
  def peer(instance, config) do
    with {:ok, address} <- address(instance, config.address),
         {:ok, basename} <- basename(instance, config.node_basename) do
      {:ok, %{node: :"#{basename}@#{address}", address: address, instance: instance}}
    end
  end

  @doc "The peers of `instances`, skipping those that cannot be named, first name wins."
  @spec peers([map()], map()) :: [AWSCluster.Strategy.peer()]
  def peers(instances, config) do
    instances
    |> Enum.flat_map(fn instance ->
      case peer(instance, config) do
        {:ok, peer} -> [peer]
        {:skip, _why} -> []
      end
    end)
    |> Enum.uniq_by(& &1.node)
  end

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
    if basename?(name), do: {:ok, name}, else: {:skip, "invalid basename #{inspect(name)}"}
  end
end
