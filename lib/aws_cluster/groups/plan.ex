defmodule AWSCluster.Groups.Plan do
  @moduledoc """
  A grouped topology's discovery answer, seen through its `group:` rule: each member's
  group, this node's group, the gateway tags. The poller builds one per answer, dials
  only this node's group, and hands the plan to the connect round
  (`AWSCluster.Groups.Gateways.arrange/2`); the round's result makes the
  `t:AWSCluster.Groups.view/0`.
  """

  alias AWSCluster.Groups.{Gateways, Rule}

  @type t :: %{
          group: String.t() | nil,
          members: %{String.t() => [node()]},
          of: %{node() => String.t()},
          tagged: MapSet.t(node()),
          rule: Gateways.rule(),
          mode: :compat | :strict
        }

  @doc """
  The plan for `members` (the membership's `node => %{peer: peer}`, which never holds
  this node), or `nil` when `config` sets no `group:`. This node's group is
  `self_group:` when given, else the rule applied to its own peer in `answer` (the
  answer's peers), else `previous` (its group in the last plan): an answer that
  misses this node's own instance once does not take it out of its group.
  """
  @spec new(map(), %{node() => %{peer: map()}}, [map()], String.t() | nil) :: t() | nil
  def new(config, members, answer, previous \\ nil)
  def new(%{group: nil}, _members, _answer, _previous), do: nil

  def new(config, members, answer, previous) do
    of =
      for {node, m} <- members,
          group = Rule.group(config.group, m.peer),
          group != nil,
          into: %{},
          do: {node, group}

    me = Atom.to_string(node())
    mine = Enum.find(answer, &(&1.node == node() or &1.node == me))
    own = config.self_group || (mine && Rule.group(config.group, mine)) || previous
    of = if own, do: Map.put(of, node(), own), else: of

    tagged =
      for {node, m} <- members,
          Gateways.tagged?(config.gateways, m.peer.instance),
          into: MapSet.new(),
          do: node

    %{
      group: own,
      members:
        of
        |> Enum.group_by(&elem(&1, 1), &elem(&1, 0))
        |> Map.new(fn {g, n} -> {g, Enum.sort(n)} end),
      of: of,
      tagged: tagged,
      rule: config.gateways,
      mode: config.group_mode
    }
  end

  @doc "Which of `nodes` to dial visibly: all of them without a plan, else this node's group's."
  @spec dial(t() | nil, [node()]) :: [node()]
  def dial(nil, nodes), do: nodes
  def dial(%{group: nil}, _nodes), do: []
  def dial(plan, nodes), do: Enum.filter(nodes, &(Map.get(plan.of, &1) == plan.group))

  @doc "The group of `node` in the plan (`nil` without one)."
  @spec group_of(t() | nil, node()) :: String.t() | nil
  def group_of(nil, _node), do: nil
  def group_of(plan, node), do: Map.get(plan.of, node)

  @doc "The view a round's `result` (or none yet) gives, for `AWSCluster.Groups`."
  @spec view(t(), Gateways.result() | nil) :: AWSCluster.Groups.view()
  def view(plan, result) do
    result = result || %{gateway?: false, gateways: %{}, links: []}

    %{
      group: plan.group,
      mode: plan.mode,
      members: plan.members,
      gateways: result.gateways,
      gateway?: result.gateway?,
      links: result.links
    }
  end
end
