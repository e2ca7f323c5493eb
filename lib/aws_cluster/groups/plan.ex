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
          moved: [node()],
          tagged: MapSet.t(node()),
          rule: Gateways.rule(),
          mode: :compat | :strict
        }

  @doc """
  The plan for `members` (the membership's `node => %{peer: peer}`, which never holds
  this node), or `nil` when `config` sets no `group:`.

  This node's group is the rule applied to its own peer in `answer` (the answer's
  peers, which may hold it), else `self_group:`, else its group in `previous` (the last
  plan): an answer that misses its own instance once does not take it out of its group.

  In `:compat` mode a member keeps the group it had in `previous` while it stays a
  member, even when the rule now says otherwise or nothing (a tag was edited or
  removed): dialling its new group while its links to the old one stay up would merge
  the two meshes, and those links cannot be cut safely. Such members are listed in
  `moved`. This holds only for nodes that knew the old group: one that starts later
  places the member by the rule, so in `:compat` a regroup means replacing the
  instance. `:strict` mode regroups at once and cuts the old links.
  """
  @spec new(map(), %{node() => %{peer: map()}}, [map()], t() | nil) :: t() | nil
  def new(config, members, answer, previous \\ nil)
  def new(%{group: nil}, _members, _answer, _previous), do: nil

  def new(config, members, answer, previous) do
    me = Atom.to_string(node())
    mine = Enum.find(answer, &(&1.node == node() or &1.node == me))

    found =
      for {node, m} <- members,
          group = Rule.group(config.group, m.peer),
          group != nil,
          into: %{},
          do: {node, group}

    own = (mine && Rule.group(config.group, mine)) || config.self_group
    found = if own, do: Map.put(found, node(), own), else: found
    # This node counts only when it placed itself: an answer that missed its own
    # instance moves nothing (its group is kept below).
    nodes = if own, do: [node() | Map.keys(members)], else: Map.keys(members)
    {of, moved} = keep_groups(found, nodes, previous, config.group_mode)
    of = if previous && previous.group, do: Map.put_new(of, node(), previous.group), else: of

    tagged =
      for {node, peer} <- [{node(), mine} | Enum.map(members, fn {n, m} -> {n, m.peer} end)],
          peer != nil and Gateways.tagged?(config.gateways, peer.instance),
          into: MapSet.new(),
          do: node

    %{
      group: Map.get(of, node()),
      members:
        of
        |> Enum.group_by(&elem(&1, 1), &elem(&1, 0))
        |> Map.new(fn {g, n} -> {g, Enum.sort(n)} end),
      of: of,
      moved: Enum.sort(moved),
      tagged: tagged,
      rule: config.gateways,
      mode: config.group_mode
    }
  end

  defp keep_groups(found, _nodes, nil, _mode), do: {found, []}
  defp keep_groups(found, _nodes, _previous, :strict), do: {found, []}

  # A member the rule now places elsewhere, or nowhere (a tag removed), keeps its group.
  defp keep_groups(found, nodes, previous, :compat) do
    Enum.reduce(nodes, {found, []}, fn node, {of, moved} ->
      case {Map.fetch(previous.of, node), Map.get(found, node)} do
        {:error, _} -> {of, moved}
        {{:ok, old}, old} -> {of, moved}
        {{:ok, old}, _new} -> {Map.put(of, node, old), [node | moved]}
      end
    end)
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
    # A round that ran on an older plan of another group says nothing of this one.
    result = if result && result.group == plan.group, do: result, else: Gateways.none()

    %{
      group: plan.group,
      mode: plan.mode,
      members: plan.members,
      gateways: result.gateways,
      gateway?: result.gateway?,
      links: result.links
    }
  end

  @doc """
  What a connect round's gateway `result` means for a loop whose plan is `plan` and
  whose last result is `before` (`nil` before the first); returns the result to keep.
  It writes the `AWSCluster.Groups` view, and logs and emits
  `[:aws_cluster, :groups, :gateways]` when this node's group's gateways or its own role
  changed. A round that ran on an older plan of another group (a node just placed, a
  strict regroup) says nothing of this one: `before` is kept. `meta` holds the topology.
  """
  @spec after_round(map(), t() | nil, Gateways.result() | nil, Gateways.result() | nil) ::
          Gateways.result() | nil
  def after_round(_meta, plan, before, result)
      when plan == nil or result == nil or result.group != plan.group,
      do: before

  def after_round(meta, plan, before, result) do
    own = Map.get(result.gateways, plan.group, [])
    previous = before && Map.get(before.gateways, plan.group, [])

    if own != previous or result.gateway? != (before && before.gateway?) do
      AWSCluster.Loop.log(:info, meta.topology, fn ->
        role = if result.gateway?, do: "this node is one", else: "this node is none"
        "gateways of group #{plan.group}: #{Enum.join(own, ", ")} (#{role})"
      end)

      AWSCluster.Telemetry.execute(
        [:aws_cluster, :groups, :gateways],
        %{gateways: length(own), links: length(result.links)},
        Map.merge(meta, %{
          group: plan.group,
          gateways: own,
          previous: previous || [],
          gateway?: result.gateway?
        })
      )
    end

    AWSCluster.Peers.put_view(meta.topology, view(plan, result))
    result
  end

  @doc """
  Logs, once when it starts, what a new plan (`plan`, after `before`) changes for the
  operator: this node has no group (it dials nobody), or a member the rule moved keeps
  its group (`moved`).
  """
  @spec explain(atom(), t() | nil, t() | nil) :: :ok
  def explain(_topology, _before, nil), do: :ok

  def explain(topology, before, plan) do
    if plan.group == nil and (before == nil or before.group != nil) do
      AWSCluster.Loop.log(
        :warning,
        topology,
        "the group: rule gives this node no group (its own instance or metadata lacks what " <>
          "the rule reads); it connects to nobody until it has one: set self_group:"
      )
    end

    for node <- plan.moved -- ((before && before.moved) || []) do
      AWSCluster.Loop.log(
        :warning,
        topology,
        "the group: rule now puts #{node} in another group; this node keeps it in " <>
          "#{group_of(plan, node)} (group_mode :compat cannot cut its links safely). " <>
          "Nodes that start later place it by the rule, so regroup by replacing the instance"
      )
    end

    :ok
  end
end
