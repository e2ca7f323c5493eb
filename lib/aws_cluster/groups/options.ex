defmodule AWSCluster.Groups.Options do
  @moduledoc """
  The meta-clustering options every polling strategy accepts (`AWSCluster.Groups`),
  and their check against the VM's kernel settings before anything starts.
  """

  alias AWSCluster.{Config, Error}
  alias AWSCluster.Groups.{Gateways, Link, Mode, Rule}

  @schema [
    group: [
      type: {:custom, Rule.description(), &Rule.conform/1},
      doc:
        "Splits the topology into groups (`AWSCluster.Groups.Rule`): visible links stay " <>
          "inside this node's group, gateways link the groups. Unset: one group, as without it."
    ],
    self_group: [
      type: :non_empty_string,
      doc:
        "This node's group, when the rule cannot find it (its own instance is not in the " <>
          "answer, or the rule gives it no group)."
    ],
    gateways: [
      type: {:custom, Gateways.description(), &Gateways.conform/1},
      default: {:lowest, 2},
      doc: "Which members of each group link to the other groups (`AWSCluster.Groups.Gateways`)."
    ],
    group_mode: [
      type: {:in, [:compat, :strict]},
      default: :compat,
      doc:
        "`:compat` runs on OTP's default kernel settings; `:strict` needs " <>
          "`-kernel connect_all false -kernel dist_auto_connect never` (`AWSCluster.Groups.Mode`)."
    ]
  ]

  @doc "The options as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc """
  Checks validated options that set `group:`: the mode against this VM's kernel, and
  that this OTP can make hidden links (`AWSCluster.Groups.Link`).
  """
  @spec validate(map()) :: :ok | {:error, Error.t()}
  def validate(%{group: nil}), do: :ok

  def validate(config) do
    with :ok <- Mode.check(config.group_mode) do
      if Link.available?(),
        do: :ok,
        else:
          {:error,
           Config.error(
             :group,
             "this OTP has no :net_kernel.hidden_connect_node/1; start gateway nodes with -hidden"
           )}
    end
  end

  @doc """
  Refuses a `group:` or `gateways:` rule that `source`'s peers can never satisfy, so a
  typo'd choice is an error at start and not a node that silently dials nobody:
  gossip peers carry announced metadata and no tags or region; EC2 and AutoScaling
  instances carry no metadata, and only EC2 sets the region.
  """
  @spec for_source(map(), :gossip | :ec2 | :auto_scaling | :ecs) :: :ok | {:error, Error.t()}
  def for_source(%{group: nil}, _source), do: :ok

  def for_source(config, source) do
    cond do
      unsupported?(config.group, source) ->
        {:error,
         Config.error(
           :group,
           "#{inspect(config.group)} never matches a #{source} peer (#{reads(source)})"
         )}

      source == :gossip and match?({:tag, _, _}, config.gateways) ->
        {:error,
         Config.error(
           :gateways,
           "gossip peers carry no tags: use {:lowest, k} (#{reads(source)})"
         )}

      true ->
        :ok
    end
  end

  defp unsupported?(rule, :gossip),
    do: match?({:tag, _}, rule) or rule in [:region, :auto_scaling_group]

  defp unsupported?(rule, :ec2), do: match?({:metadata, _}, rule)
  defp unsupported?(rule, :auto_scaling), do: match?({:metadata, _}, rule) or rule == :region

  defp unsupported?(rule, :ecs),
    do: match?({:metadata, _}, rule) or rule in [:region, :auto_scaling_group]

  defp reads(:gossip),
    do:
      "gossip peers carry their announced metadata: use {:metadata, key}, :availability_zone or {:shard, k}"

  defp reads(:ecs),
    do:
      "ECS tasks carry tags, zone and task fields: use {:tag, key}, :availability_zone or a function"

  defp reads(_aws),
    do: "instances carry tags, zone and id, not gossip metadata; :region needs EC2's regions:"
end
