defmodule AWSCluster.Membership.PruneGuardTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Membership.PruneGuard

  @config [prune_guard: 30, prune_guard_min: 2]

  defp known(names), do: Map.new(names, &{&1, %{peer: %{node: &1}, misses: 0}})
  defp missed(names), do: Enum.map(names, &{&1, :missed, "missing"})

  test "holds fresh misses over the share and keeps those peers known" do
    before = known([:a, :b, :c, :d, :e, :f, :g, :h, :i, :j])
    after_ = Map.take(before, [:a, :b, :c, :d, :e, :f])

    assert {members, [], held, %{held: 4, known: 10, percent: 30}} =
             PruneGuard.apply(@config, before, after_, missed([:g, :h, :i, :j]), MapSet.new())

    assert map_size(members) == 10
    assert members[:h].misses == 1
    assert held == MapSet.new([:g, :h, :i, :j])
  end

  test "exactly the share, fewer than the minimum, or the guard off: nothing is held" do
    before = known([:a, :b, :c, :d, :e, :f, :g, :h, :i, :j])
    after_ = Map.take(before, [:a, :b, :c, :d, :e, :f, :g])
    prunes = missed([:h, :i, :j])
    none = MapSet.new()

    assert {^after_, ^prunes, held, nil} = PruneGuard.apply(@config, before, after_, prunes, none)

    assert held == none

    assert {_, ^prunes, _, nil} =
             PruneGuard.apply([prune_guard: 10, prune_guard_min: 4], before, after_, prunes, none)

    assert {_, ^prunes, _, nil} =
             PruneGuard.apply(
               [prune_guard: false, prune_guard_min: 2],
               before,
               after_,
               prunes,
               none
             )
  end

  test "misses held last time are confirmed; terminating reports never count" do
    before = known([:a, :b, :c, :d])
    after_ = Map.take(before, [:a])
    prunes = missed([:b, :c]) ++ [{:d, :gone, "reported terminating"}]

    assert {^after_, ^prunes, held, nil} =
             PruneGuard.apply(@config, before, after_, prunes, MapSet.new([:b, :c]))

    assert held == MapSet.new()
  end
end
