defmodule AWSCluster.Membership.NameBudgetTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Membership.NameBudget

  defp fresh, do: "nb#{System.unique_integer([:positive])}x@127.0.0.1"

  test "defaults are twice max_peers, refilled by max_peers a day" do
    b = NameBudget.new(nil, nil, 50, 0)
    assert b.capacity == 100 and b.per_day == 50 and NameBudget.left(b, 0) == 100
  end

  test "an existing atom costs nothing; a new name costs a token; none left is refused" do
    b = NameBudget.new(1, 0, 10, 0)
    assert {:ok, :ok, b} = NameBudget.to_atom(b, "ok", 0)
    assert NameBudget.left(b, 0) == 1
    name = fresh()
    assert {:ok, atom, b} = NameBudget.to_atom(b, name, 0)
    assert Atom.to_string(atom) == name and b.minted == 1
    refused = fresh()
    assert {:refused, b} = NameBudget.to_atom(b, refused, 0)
    assert b.refused == 1
    assert_raise ArgumentError, fn -> String.to_existing_atom(refused) end
  end

  test "a topology's budget outlives its process; a new config caps what it restores" do
    topology = :"nb_topology#{System.unique_integer([:positive])}"
    config = %{name_budget: 3, name_budget_per_day: 0, max_peers: 10}
    b = NameBudget.for_topology(config, 0, topology)
    assert NameBudget.left(b, 0) == 3
    {:ok, _, b} = NameBudget.to_atom(b, fresh(), 0)
    :ok = NameBudget.save(topology, b)
    assert NameBudget.left(NameBudget.for_topology(config, 1, topology), 1) == 2
    smaller = %{config | name_budget: 1}
    assert NameBudget.left(NameBudget.for_topology(smaller, 1, topology), 1) == 1
  end

  test "tokens refill continuously, never above capacity" do
    day = 86_400_000
    b = NameBudget.new(2, 24, 10, 0)
    {:ok, _, b} = NameBudget.to_atom(b, fresh(), 0)
    {:ok, _, b} = NameBudget.to_atom(b, fresh(), 0)
    assert NameBudget.left(b, 0) == 0
    # 24 a day is one an hour.
    assert NameBudget.left(b, div(day, 24) - 1) == 0
    assert NameBudget.left(b, div(day, 24)) == 1
    assert NameBudget.left(b, 10 * day) == 2
  end
end
