defmodule AWSCluster.Groups.Gateways do
  @moduledoc """
  Who the gateways of each group are, and the hidden links a gateway keeps to the
  others (the `gateways:` option).

    * `{:lowest, k}` (default `{:lowest, 2}`) - the `k` lowest node names among the
      group's members that are up. Every node computes the same answer from what it
      sees, so no election is needed: this node's group is what its links show alive;
      another group is walked in name order, and the first `k` members a hidden link
      reaches are its gateways, as they are in that group's own view. When a
      gateway goes down, its group's members and the gateways linked to it run a connect
      round at once (`nodedown`), and the next member takes over.
    * `{:tag, key, value}` - the members whose instance carries that tag and are up
      (this node's group), or answer a hidden link (another group's).

  `arrange/2` runs in the connect round, after the visible connects, so a member just
  connected counts as up. A node that is no gateway keeps no hidden link to another
  group; a gateway keeps exactly its links to the other groups' gateways. Hidden links
  to nodes discovery did not place in another group (a remote shell, `mix
  aws_cluster.peers`) are never touched.
  """

  alias AWSCluster.Groups.Link

  @type rule :: {:lowest, pos_integer()} | {:tag, String.t(), String.t()}

  @typedoc """
  What the round needs: this node's group, every group's members (sorted), the nodes
  tagged as gateways (for `{:tag, ...}`), the rule and the mode.
  """
  @type plan :: %{
          group: String.t() | nil,
          members: %{String.t() => [node()]},
          tagged: MapSet.t(node()),
          rule: rule(),
          mode: :compat | :strict
        }

  @typedoc """
  What a round found: whether this node is a gateway, the gateways of its own group and
  of each group it links to, its hidden links to other groups, and the visible links
  that cross groups (cut in `:strict` mode).
  """
  @type result :: %{
          group: String.t() | nil,
          gateway?: boolean(),
          gateways: %{String.t() => [node()]},
          links: [node()],
          crossed: [node()]
        }

  @description "{:lowest, k} with k >= 1, or {:tag, key, value} with strings"

  @doc "The rule's description, completing \"expected ...\" in a config error."
  @spec description() :: String.t()
  def description, do: @description

  @doc "Checks a `gateways:` value, for `AWSCluster.Config`'s `{:custom, ...}` type."
  @spec conform(term()) :: :ok | :error
  def conform({:lowest, k}) when is_integer(k) and k >= 1, do: :ok
  def conform({:tag, key, value}) when is_binary(key) and key != "" and is_binary(value), do: :ok
  def conform(_), do: :error

  @doc "Whether `instance` carries the gateway tag of `rule` (always `false` for `{:lowest, k}`)."
  @spec tagged?(rule(), map()) :: boolean()
  def tagged?({:tag, key, value}, instance),
    do: Map.get(AWSCluster.Groups.Rule.tags(instance), key) == value

  def tagged?(_rule, _instance), do: false

  @doc """
  The gateways among `members` (sorted) when `up` are the members that are up: the
  first `k` of them, or the tagged ones.
  """
  @spec choose(plan(), [node()], [node()]) :: [node()]
  def choose(%{rule: {:lowest, k}}, _members, up), do: Enum.take(up, k)

  def choose(%{rule: {:tag, _, _}, tagged: tagged}, _members, up),
    do: Enum.filter(up, &(&1 in tagged))

  @doc "Whether `node` is a gateway in a round's `result`, of any group: its `nodedown` calls for a round."
  @spec gateway?(result(), node()) :: boolean()
  def gateway?(result, node), do: Enum.any?(Map.values(result.gateways), &(node in &1))

  @doc "The result of a round that made no gateway links (this node has no group)."
  @spec none() :: result()
  def none, do: %{group: nil, gateway?: false, gateways: %{}, links: [], crossed: []}

  @doc """
  Makes and cuts hidden links as `plan` says (see the moduledoc). `opts`: `:timeout`
  for one link attempt (default 5000 ms).
  """
  @spec arrange(plan(), keyword()) :: result()
  def arrange(%{group: nil}, _opts), do: none()

  def arrange(plan, opts) do
    own = Map.get(plan.members, plan.group, [])
    visible = MapSet.new(Node.list(:visible))
    # Connected, not visible: a gateway node started with -hidden links hidden to all.
    up = MapSet.new(Node.list(:connected))
    own_gateways = choose(plan, own, Enum.filter(own, &(&1 == node() or &1 in up)))
    gateway? = node() in own_gateways
    others = Map.delete(plan.members, plan.group)
    outsiders = others |> Map.values() |> List.flatten() |> MapSet.new()

    remote =
      if gateway?,
        do: Map.new(others, fn {group, nodes} -> {group, link(plan, nodes, opts)} end),
        else: %{}

    keep = remote |> Map.values() |> List.flatten() |> MapSet.new()

    for n <- Node.list(:hidden), n in outsiders and n not in keep, do: Link.disconnect(n)

    crossed = Enum.filter(visible, &(&1 in outsiders))
    # Safe only where global guards no overlap (see AWSCluster.Groups.Mode).
    if plan.mode == :strict, do: Enum.each(crossed, &:erlang.disconnect_node/1)

    %{
      group: plan.group,
      gateway?: gateway?,
      gateways: Map.put(remote, plan.group, own_gateways),
      links: Enum.sort(MapSet.to_list(keep)),
      crossed: Enum.sort(crossed)
    }
  end

  # The group's gateways as its own members see them: the first k that answer.
  defp link(%{rule: {:lowest, k}}, nodes, opts), do: first_reachable(nodes, k, [], opts)

  defp link(%{rule: {:tag, _, _}, tagged: tagged} = _plan, nodes, opts) do
    candidates = Enum.filter(nodes, &(&1 in tagged))
    first_reachable(candidates, length(candidates), [], opts)
  end

  defp first_reachable(candidates, need, acc, _opts) when need <= 0 or candidates == [],
    do: Enum.sort(acc)

  defp first_reachable(candidates, need, acc, opts) do
    {batch, rest} = Enum.split(candidates, need)
    connected = MapSet.new(Node.list(:connected))

    up =
      batch
      |> Task.async_stream(&(&1 in connected or Link.connect(&1) == true),
        timeout: Keyword.get(opts, :timeout, 5_000),
        on_timeout: :kill_task,
        max_concurrency: max(need, 1)
      )
      |> Enum.zip(batch)
      |> Enum.flat_map(fn
        {{:ok, true}, node} -> [node]
        _ -> []
      end)

    first_reachable(rest, need - length(up), acc ++ up, opts)
  end
end
