defmodule AWSCluster.Groups.Rule do
  @moduledoc """
  Which group a discovered peer belongs to (the `group:` option).

  A rule is one of:

    * a string - every peer of the topology is in that group (with `self_group:`, a
      fleet split by discovery filters instead);
    * `{:tag, key}` - the value of the instance's tag `key`;
    * `:availability_zone` - the instance's zone;
    * `:region` - the region the instance was found in (EC2's `regions:`), so only
      gateways link the sites;
    * `:auto_scaling_group` - the instance's `aws:autoscaling:groupName` tag;
    * `{:shard, k}` - one of `k` groups, `"shard-0"` to `"shard-<k-1>"`, by a stable hash
      of the instance id;
    * `{:metadata, key}` - for gossip topologies, the value of `key` in the metadata a
      node announces (`AWSCluster.Strategy.Gossip`'s `metadata:`);
    * a one-arity function of the peer map (`%{node:, instance:, address:}`) returning a
      string, or `nil` for "no group".

  A peer's group is a function of that peer alone, never of the rest of the answer. Two
  nodes that momentarily see different answers (a scale-out reaches one group's poller
  before another's) still agree on every peer they both see. A rule that balanced the
  shards over the whole answer would move peers between groups on such a disagreement,
  and one visible dial across groups merges two meshes for good under OTP defaults (see
  `AWSCluster.Groups.Mode`). So `{:shard, k}` balances only in expectation:
  `n` instances fall binomially around `n/k` per shard.
  """

  @type t ::
          String.t()
          | {:tag, String.t()}
          | :availability_zone
          | :region
          | :auto_scaling_group
          | {:shard, pos_integer()}
          | {:metadata, String.t()}
          | (map() -> String.t() | nil)

  @description "a group name (string), {:tag, key}, :availability_zone, :region, " <>
                 ":auto_scaling_group, {:shard, k} with k >= 1, {:metadata, key}, or a " <>
                 "one-arity function of the peer map"

  @doc "The rule's description, completing \"expected ...\" in a config error."
  @spec description() :: String.t()
  def description, do: @description

  @doc "Checks a `group:` value, for `AWSCluster.Config`'s `{:custom, ...}` type."
  @spec conform(term()) :: :ok | :error
  def conform(name) when is_binary(name) and name != "", do: :ok
  def conform({:tag, key}) when is_binary(key) and key != "", do: :ok
  def conform(:availability_zone), do: :ok
  def conform(:region), do: :ok
  def conform(:auto_scaling_group), do: :ok
  def conform({:shard, k}) when is_integer(k) and k >= 1, do: :ok
  def conform({:metadata, key}) when is_binary(key) and key != "", do: :ok
  def conform(fun) when is_function(fun, 1), do: :ok
  def conform(_), do: :error

  @doc """
  The group of `peer` under `rule`, or `nil` when the peer has none (an untagged
  instance, a function returning `nil`). A function that raises or returns a non-string
  gives `nil` too: one odd peer must not stop the topology.
  """
  @spec group(t(), map()) :: String.t() | nil
  def group(name, _peer) when is_binary(name), do: name
  def group({:tag, key}, peer), do: non_empty(Map.get(tags(peer.instance), key))
  def group(:availability_zone, peer), do: non_empty(Map.get(peer.instance, :availability_zone))
  def group(:region, peer), do: non_empty(Map.get(peer.instance, :region))

  def group(:auto_scaling_group, peer),
    do: non_empty(Map.get(tags(peer.instance), "aws:autoscaling:groupName"))

  def group({:shard, k}, peer) do
    case Map.get(peer.instance, :id) do
      id when is_binary(id) -> "shard-#{shard(id, k)}"
      _ -> nil
    end
  end

  def group({:metadata, key}, peer) do
    case Map.get(peer.instance, :metadata) do
      %{} = metadata -> non_empty(Map.get(metadata, key))
      _ -> nil
    end
  end

  def group(fun, peer) when is_function(fun, 1) do
    non_empty(fun.(peer))
  rescue
    _ -> nil
  catch
    _, _ -> nil
  end

  @doc """
  The shard (`0..k-1`) of an instance id: `:erlang.phash2/2`, which is the same on
  every node, OTP release and restart.
  """
  @spec shard(String.t(), pos_integer()) :: non_neg_integer()
  def shard(id, k), do: :erlang.phash2(id, k)

  @doc "An instance's tags; none when the instance carries no map of them."
  @spec tags(map()) :: map()
  def tags(instance) do
    case Map.get(instance, :tags) do
      tags when is_map(tags) -> tags
      _ -> %{}
    end
  end

  defp non_empty(value) when is_binary(value) and value != "", do: value
  defp non_empty(_), do: nil
end
