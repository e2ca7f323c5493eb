defmodule AWSCluster.MembershipTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Membership

  @config %{
    prune_after: 2,
    prune_guard: false,
    prune_guard_min: 2,
    max_peers: 10,
    name_budget: nil,
    name_budget_per_day: nil
  }

  defp peer(name, id \\ nil),
    do: %{node: :"#{name}@127.0.0.1", instance: %{id: id || "i-#{name}"}}

  defp new(extra \\ %{}),
    do: Membership.new(Map.merge(@config, extra), 0, :"t#{System.unique_integer([:positive])}")

  defp answer(m, peers, gone \\ []), do: Membership.answer(m, peers, gone, 0)

  test "a new peer joins with no misses; this node is never a member" do
    me = %{node: node(), instance: %{id: "i-me"}}
    {m, out} = answer(new(), [peer(:a), me])
    assert out.joined == [:"a@127.0.0.1"]
    assert Membership.misses(m) == %{:"a@127.0.0.1" => 0}
    assert out.pruned == [] and out.holding == nil and out.refused == 0
  end

  test "misses count per answer, reset when seen, and prune at prune_after" do
    {m, _} = answer(new(), [peer(:a), peer(:b)])
    {m, out} = answer(m, [peer(:a)])
    assert Membership.misses(m)[:"b@127.0.0.1"] == 1 and out.pruned == []
    {m, _} = answer(m, [peer(:a), peer(:b)])
    assert Membership.misses(m)[:"b@127.0.0.1"] == 0
    {m, _} = answer(m, [peer(:a)])
    {m, out} = answer(m, [peer(:a)])
    assert [{:"b@127.0.0.1", :missed, "missing from 2 consecutive answers"}] = out.pruned
    assert Membership.nodes(m) == [:"a@127.0.0.1"]
  end

  test "gone by instance id or node prunes a member at once, seen or not, and ignores strangers" do
    {m, _} = answer(new(%{prune_after: 9}), [peer(:a), peer(:b), peer(:c)])
    {m, out} = answer(m, [peer(:a), peer(:b)], ["i-b", :"c@127.0.0.1", "i-stranger"])
    assert Enum.sort(for {n, :gone, _} <- out.pruned, do: n) == [:"b@127.0.0.1", :"c@127.0.0.1"]
    assert Membership.nodes(m) == [:"a@127.0.0.1"]
    # A reported-gone peer that was never a member does not join.
    {m, out} = answer(m, [peer(:a), peer(:d)], ["i-d"])
    assert out.joined == [] and out.pruned == []
    assert Membership.nodes(m) == [:"a@127.0.0.1"]
  end

  test "prune_after: false keeps everyone, gone or missing" do
    {m, _} = answer(new(%{prune_after: false}), [peer(:a), peer(:b)])
    m = Enum.reduce(1..5, m, fn _, m -> m |> answer([peer(:a)], ["i-b"]) |> elem(0) end)
    assert Membership.misses(m)[:"b@127.0.0.1"] == 5
  end

  test "the prune guard holds a large shrink for one answer" do
    peers = for n <- ~w(a b c d e)a, do: peer(n)
    {m, _} = answer(new(%{prune_after: 1, prune_guard: 30}), peers)
    {m, out} = answer(m, [peer(:a)])
    assert out.holding == %{held: 4, known: 5, percent: 30} and out.pruned == []
    assert length(Membership.nodes(m)) == 5
    {m, out} = answer(m, [peer(:a)])
    assert length(out.pruned) == 4 and out.holding == nil
    assert Membership.nodes(m) == [:"a@127.0.0.1"]
  end

  test "string names become atoms within the budget; refused ones are left out" do
    prefix = "mship#{System.unique_integer([:positive])}x"
    names = for i <- 1..4, do: "#{prefix}#{i}@127.0.0.1"
    peers = Enum.map(names, &%{node: &1, instance: %{id: &1}})
    {m, out} = answer(new(%{name_budget: 2, name_budget_per_day: 0}), peers)
    assert out.refused == 2
    assert length(out.joined) == 2
    assert Membership.names_left(m, 0) == 0
    # The two known names are atoms now and cost nothing on the next answer.
    {_m, out} = answer(m, Enum.take(peers, 2))
    assert out.refused == 0 and out.pruned == []
  end
end
