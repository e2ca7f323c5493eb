defmodule AWSCluster do
  @moduledoc """
  Forms and keeps an Erlang distribution cluster for BEAM apps on AWS.

  Peers are found through EC2 tags or filters, AutoScaling groups, or authenticated
  UDP gossip; each node is named after the interface that carries cluster traffic.
  See `AWSCluster.Distribution` for naming a node, `AWSCluster.Interface` for
  interface lookups and the README for topologies.
  """

  @typedoc "What discovery knows about a peer."
  @type node_info :: %{
          optional(:task) => %{
            arn: String.t(),
            family: String.t() | nil,
            group: String.t() | nil,
            cluster_arn: String.t() | nil,
            launch_type: String.t() | nil
          },
          node: node(),
          topology: atom(),
          instance_id: String.t() | nil,
          availability_zone: String.t() | nil,
          address: String.t() | nil,
          tags: %{optional(String.t()) => String.t()},
          group: String.t() | nil
        }

  @doc """
  What discovery knows about `node`: its instance id, availability zone, the address in
  its name, its tags, for an ECS task its `task` (`AWSCluster.Strategy.ECS`), its group (for a topology with `group:`, see `AWSCluster.Groups`)
  and the topology that found it.

  Known means in some topology's current peer set (discovered and not yet pruned),
  whether or not a connection is up at this moment.
  """
  @spec node_info(node()) :: {:ok, node_info()} | {:error, AWSCluster.Error.t()}
  def node_info(node) when is_atom(node) do
    case AWSCluster.Peers.lookup(node) do
      nil ->
        {:error,
         AWSCluster.Error.new(:not_found, "no topology knows #{inspect(node)}", %{node: node})}

      info ->
        {:ok, info}
    end
  end

  @doc """
  The known peers grouped by availability zone (`nil` when the zone is unknown), for
  AZ-aware placement with Horde, Phoenix.PubSub and the like. This node is not included.
  """
  @spec nodes_by_az() :: %{optional(String.t() | nil) => [node()]}
  def nodes_by_az do
    AWSCluster.Peers.all()
    |> Enum.uniq_by(& &1.node)
    |> Enum.group_by(& &1.availability_zone, & &1.node)
    |> Map.new(fn {az, nodes} -> {az, Enum.sort(nodes)} end)
  end
end
