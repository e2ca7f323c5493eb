defmodule AWSCluster.Strategy.EC2NameBudgetTest do
  # Whoever may write instance tags names the nodes (`node_basename: {:tag, _}`). Real
  # parts: moto, the EC2 strategy, the atom table of this VM.
  use AWSCluster.Test.MotoCase, async: false

  import ExUnit.CaptureLog, only: [with_log: 1]

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.{Moto, Nodes, Wait}

  @moduletag timeout: 120_000

  test "tag churn mints at most name_budget new names over a lifetime; known peers are kept" do
    run = "budget#{System.unique_integer([:positive])}x"
    tag = run
    spec = fn name, ip -> %{ip: ip, tags: %{"cluster" => tag, "node_basename" => name}} end

    [_, _, churner] =
      Moto.run_instances!([
        spec.("#{run}a", "127.0.1.51"),
        spec.("#{run}b", "127.0.2.51"),
        spec.("#{run}c0", "127.0.3.51")
      ])

    config =
      Moto.ec2_config(tag,
        polling_interval: 100,
        prune_after: 1,
        max_peers: 3,
        name_budget: 4,
        name_budget_per_day: 0
      )

    table = Nodes.table()

    topology = :"budget#{System.unique_integer([:positive])}"
    arg = [topology: topology, config: config] ++ Nodes.mfas(self(), table)
    pid = start_supervised!({EC2, arg})

    assert Wait.until(fn -> map_size(Poller.status(pid).members) == 3 end)
    # The three names were new atoms: three of four tokens spent.
    assert Poller.status(pid).names_left == 1
    stable = [:"#{run}a@127.0.1.51", :"#{run}b@127.0.2.51"]

    rename = fn i ->
      Moto.tag!([churner], %{"node_basename" => "#{run}c#{i}"})
      polls = Poller.status(pid).polls
      assert Wait.until(fn -> Poller.status(pid).polls >= polls + 2 end)
    end

    # Ten renames of one instance, each seen by at least two polls. The atom table is
    # counted from the third on: the first two run code (a mint, a first refusal and its
    # error log) whose first use adds atoms of its own.
    {atoms, log} =
      with_log(fn ->
        rename.(1)
        rename.(2)
        atoms = :erlang.system_info(:atom_count)
        for i <- 3..10, do: rename.(i)
        atoms
      end)

    grown = :erlang.system_info(:atom_count) - atoms
    status = Poller.status(pid)

    # One token was left: c1 got it, c2..c10 were refused, and none of them is an atom.
    assert is_atom(String.to_existing_atom("#{run}c1@127.0.3.51"))

    for i <- 2..10,
        do:
          assert_raise(ArgumentError, fn -> String.to_existing_atom("#{run}c#{i}@127.0.3.51") end)

    assert grown <= 3, "the atom table grew by #{grown}"
    assert status.names_left == 0
    assert status.health == :healthy
    assert Enum.all?(stable, &Map.has_key?(status.members, &1))
    assert length(String.split(log, "refusing")) == 2, log

    # A restart does not refill the budget: the atoms it paid for are still there.
    stop_supervised!({EC2, topology})
    pid = start_supervised!({EC2, arg})
    assert Wait.until(fn -> Poller.status(pid).polls > 0 end)
    assert Poller.status(pid).names_left == 0
  end
end
