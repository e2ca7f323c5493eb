defmodule AWSCluster.Membership.PruneGuard do
  @moduledoc """
  Holds a prune that would drop too much of the cluster at once.

  An answer can be complete by every check a parser can make and still be short: a page
  whose XML is whole but whose next token is missing ends the listing early, and every
  peer on the pages after it looks gone. So when one complete answer would prune more
  than `:prune_guard` percent of the known peers (and at least `:prune_guard_min` of
  them), those prunes are held: the peers stay known for one more poll. If the next
  complete answer still lacks them, they are pruned then; any that reappear are kept. A
  genuine scale-in therefore goes through one interval later, and a broken answer cannot
  empty the mesh.

  Only prunes for missing from answers are held; a peer the source reports as
  terminating is pruned at once.

  Pure functions, used by `AWSCluster.Membership`.
  """

  @typedoc "A peer the poller knows: its discovery map and consecutive misses."
  @type member :: %{peer: map(), misses: non_neg_integer()}

  @typedoc "A prune the poller would make: the node, why (`:missed` or `:gone`), a text."
  @type prune :: {node(), :missed | :gone, String.t()}

  @typedoc "What was held this round, for the log line and the telemetry event."
  @type held :: %{held: pos_integer(), known: pos_integer(), percent: pos_integer()}

  @doc """
  Applies the guard to one complete answer's prunes.

  `before` are the members before the answer, `members` those kept after it, `prunes` the
  prunes it would make and `held` the nodes held by the previous answer. Returns the
  members and prunes to use, the nodes held now, and what was held (`nil` when nothing).
  """
  @spec apply(
          keyword() | map(),
          %{node() => member()},
          %{node() => member()},
          [prune()],
          MapSet.t()
        ) ::
          {%{node() => member()}, [prune()], MapSet.t(), held() | nil}
  def apply(config, before, members, prunes, held) do
    percent = config[:prune_guard]

    # Peers held by the last answer and missing again are confirmed: they go now.
    fresh = for {node, :missed, _} <- prunes, not MapSet.member?(held, node), do: node
    known = map_size(before)

    if percent != false and length(fresh) >= config[:prune_guard_min] and
         length(fresh) * 100 > percent * known do
      keep = Map.new(fresh, fn node -> {node, Map.update!(before[node], :misses, &(&1 + 1))} end)
      fresh_set = MapSet.new(fresh)
      prunes = Enum.reject(prunes, fn {node, _, _} -> MapSet.member?(fresh_set, node) end)

      {Map.merge(members, keep), prunes, fresh_set,
       %{held: length(fresh), known: known, percent: percent}}
    else
      {members, prunes, MapSet.new(), nil}
    end
  end
end
