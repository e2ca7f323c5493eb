defmodule AWSCluster.Membership do
  @moduledoc """
  The membership rules of a polling topology, as pure functions over a struct the
  poller keeps:

    * **Last good set.** Only a complete answer changes the members; an error changes
      nothing (the poller never calls `answer/4` for one).
    * **Miss counts.** A member missing from an answer gets one miss; seen again, its
      count goes back to 0.
    * **Prune.** A member is pruned after `:prune_after` consecutive misses, or at once
      when the answer reports it gone (terminating). `prune_after: false` never prunes.
      A prune means "stop dialing it and forget it"; whether the link is also cut is
      the poller's decision (`AWSCluster.Connector.prune/3`), never this module's.
    * **Prune guard.** An answer that would prune too much at once is held for one more
      answer (`AWSCluster.Membership.PruneGuard`).
    * **Name budget.** A peer whose node name is still a string becomes an atom here,
      and only within the topology's lifetime budget (`AWSCluster.Membership.NameBudget`).
      A refused name is left out of the answer; the members stay as they were.
  """

  alias AWSCluster.Membership.{NameBudget, PruneGuard}

  @enforce_keys [:config, :budget]
  defstruct config: nil, budget: nil, members: %{}, held: MapSet.new()

  @typedoc "A member: its last discovery map and its consecutive misses."
  @type member :: %{peer: map(), misses: non_neg_integer()}

  @type t :: %__MODULE__{
          config: map(),
          budget: NameBudget.t(),
          members: %{node() => member()},
          held: MapSet.t()
        }

  @typedoc """
  What one answer changed: nodes that joined, prunes (`{node, :missed | :gone, why}`),
  what the prune guard held (`nil` when nothing) and how many names the budget refused.
  """
  @type outcome :: %{
          joined: [node()],
          pruned: [PruneGuard.prune()],
          holding: PruneGuard.held() | nil,
          refused: non_neg_integer()
        }

  @doc """
  An empty membership of `topology`, its name budget as it was when the topology last
  stopped in this VM (`AWSCluster.Membership.NameBudget.for_topology/3`). `config` holds `:prune_after`, `:prune_guard`, `:prune_guard_min`,
  `:max_peers`, `:name_budget` and `:name_budget_per_day` (the poller's options).
  """
  @spec new(map(), integer(), atom()) :: t()
  def new(config, now, topology) do
    %__MODULE__{config: config, budget: NameBudget.for_topology(config, now, topology)}
  end

  @doc """
  Applies one complete answer: `peers` (node names as atoms or strings) and `gone`
  (instance ids or nodes the source reports as terminating). `now` is monotonic ms.
  """
  @spec answer(t(), [map()], [term()], integer()) :: {t(), outcome()}
  def answer(%__MODULE__{} = m, peers, gone, now) do
    {peers, budget, refused} = name_all(peers, m.budget, now)
    seen = peers |> Enum.reject(&(&1.node == node())) |> Map.new(&{&1.node, &1})
    gone = MapSet.new(gone)
    prunes? = m.config.prune_after != false

    {members, pruned} =
      Enum.reduce(m.members, {%{}, []}, fn {node, member}, {kept, pruned} ->
        cond do
          Map.has_key?(seen, node) ->
            {kept, pruned}

          prunes? and gone?(node, member.peer, gone) ->
            {kept, [{node, :gone, "reported terminating"} | pruned]}

          prunes? and member.misses + 1 >= m.config.prune_after ->
            why = "missing from #{member.misses + 1} consecutive answers"
            {kept, [{node, :missed, why} | pruned]}

          true ->
            {Map.put(kept, node, %{member | misses: member.misses + 1}), pruned}
        end
      end)

    {members, pruned} =
      Enum.reduce(seen, {members, pruned}, fn {node, peer}, {kept, pruned} ->
        cond do
          not (prunes? and gone?(node, peer, gone)) ->
            {Map.put(kept, node, %{peer: peer, misses: 0}), pruned}

          Map.has_key?(m.members, node) ->
            {kept, [{node, :gone, "reported terminating"} | pruned]}

          true ->
            {kept, pruned}
        end
      end)

    {members, pruned, held, holding} =
      PruneGuard.apply(m.config, m.members, members, pruned, m.held)

    joined = for {node, _} <- members, not Map.has_key?(m.members, node), do: node

    {%{m | members: members, held: held, budget: budget},
     %{
       joined: Enum.sort(joined),
       pruned: Enum.reverse(pruned),
       holding: holding,
       refused: refused
     }}
  end

  @doc "The member nodes."
  @spec nodes(t()) :: [node()]
  def nodes(%__MODULE__{members: members}), do: Map.keys(members)

  @doc "Each member's consecutive misses."
  @spec misses(t()) :: %{node() => non_neg_integer()}
  def misses(%__MODULE__{members: members}), do: Map.new(members, fn {n, m} -> {n, m.misses} end)

  @doc "New names the budget can still pay for at `now`."
  @spec names_left(t(), integer()) :: non_neg_integer()
  def names_left(%__MODULE__{budget: budget}, now), do: NameBudget.left(budget, now)

  defp name_all(peers, budget, now) do
    {named, budget, refused} =
      Enum.reduce(peers, {[], budget, 0}, fn
        %{node: node} = peer, {acc, budget, refused} when is_atom(node) ->
          {[peer | acc], budget, refused}

        %{node: name} = peer, {acc, budget, refused} ->
          case NameBudget.to_atom(budget, name, now) do
            {:ok, atom, budget} -> {[%{peer | node: atom} | acc], budget, refused}
            {:refused, budget} -> {acc, budget, refused + 1}
          end
      end)

    {Enum.reverse(named), budget, refused}
  end

  defp gone?(node, peer, gone) do
    MapSet.member?(gone, node) or MapSet.member?(gone, Map.get(peer.instance, :id))
  end
end
