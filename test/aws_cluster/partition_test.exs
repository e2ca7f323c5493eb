defmodule AWSCluster.PartitionTest do
  # Crashes and network cuts in a cluster of 8 real nodes: separate OS processes that
  # find each other with the EC2 strategy on moto (AWSCluster.Test.Fleet). Waits are
  # bounded poll loops; "within one polling interval" is counted in the cut node's own
  # discovery rounds, not in wall-clock time.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Test.{Firewall, Fleet, Wait}

  @moduletag timeout: 300_000

  @nodes 8
  @interval 1_000
  @prune_after 3
  # A silent link is declared down after 4-5 s instead of 60-75 s.
  @net_ticktime 4

  @cut_skip (case Firewall.available() do
               :ok ->
                 nil

               {:error, why} ->
                 IO.puts("AWSCluster.PartitionTest: skipping the network cut test: #{why}")
                 why
             end)

  # MotoCase starts moto and resets it before every test.
  setup_all do: %{log_dir: Fleet.log_dir!("partition_test")}
  setup do: %{run: Fleet.run_id()}

  # Boots `@nodes` nodes with instances tagged for this test; every node is halted when
  # the test ends, whatever happened.
  defp boot(ctx, prefix, host_base) do
    specs = Fleet.plan(@nodes, prefix: prefix, run: ctx.run, host_base: host_base)
    tag = "#{prefix}#{ctx.run}"
    specs = Fleet.launch!(specs, %{"cluster" => tag})
    cookie = :"partition_#{ctx.run}"

    members =
      Fleet.boot_all(specs, fn spec ->
        topology =
          Fleet.topology(:ec2, spec,
            tags: %{"cluster" => tag},
            interval: @interval,
            prune_after: @prune_after
          )

        {topology, [cookie: cookie, net_ticktime: @net_ticktime, log_dir: ctx.log_dir]}
      end)

    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)

    assert Wait.until(fn -> Fleet.mesh?(members, Fleet.snapshots(members)) end, 60_000),
           "no full mesh of #{@nodes}: #{inspect(Fleet.snapshots(members))}"

    members
  end

  defp nodes(members), do: Enum.map(members, & &1.node)

  test "kill -9 of one node in 8: the other 7 stay meshed, lose only it, and keep it as a member",
       ctx do
    members = boot(ctx, "kill", 231)
    victim = Enum.at(members, 4)
    survivors = members -- [victim]
    answers = Map.new(Fleet.snapshots(survivors), fn {node, s} -> {node, s.answers} end)

    Fleet.kill!(victim)

    # At least prune_after complete answers each after the crash (their own or the
    # poller's): an instance that is still running must not be pruned, and its failing
    # connects must not disturb anyone.
    snaps =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(survivors)

          done? =
            Enum.all?(survivors, fn m ->
              s = snaps[m.node]

              is_map(s) and victim.node not in s.connected and
                s.answers >= answers[m.node] + @prune_after + 1
            end)

          done? && snaps
        end,
        60_000
      )

    assert snaps, "survivors did not poll on: #{inspect(Fleet.snapshots(survivors))}"
    refute Fleet.os_alive?(victim.os_pid)
    assert Fleet.mesh?(survivors, snaps)

    for m <- survivors do
      s = snaps[m.node]
      assert s.downs == [victim.node], "#{m.node} saw #{inspect(s.downs)} go down"
      assert s.health == :healthy
      # Its instance still runs, so discovery keeps listing it: no prune, just redials.
      assert victim.node in s.members
    end
  end

  if @cut_skip, do: @tag(skip: @cut_skip)

  test "a node cut off by the firewall is dropped, and rejoins by itself within one polling interval of the heal",
       ctx do
    Firewall.sweep_stale()
    members = boot(ctx, "cut", 236)
    target = Enum.at(members, 3)
    others = members -- [target]

    table = Firewall.cut!(target.ip)
    on_exit(fn -> Firewall.heal(table) end)

    # Ticks stop crossing the cut: both sides declare the links down.
    cut =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(members)

          apart? =
            match?(%{connected: []}, snaps[target.node]) and
              Enum.all?(others, &match?(%{connected: c} when is_list(c), snaps[&1.node])) and
              Enum.all?(others, &(target.node not in snaps[&1.node].connected))

          apart? && snaps
        end,
        60_000
      )

    assert cut, "the cut did not separate #{target.node}: #{inspect(Fleet.snapshots(members))}"
    assert Fleet.mesh?(others, cut)

    # Two more complete rounds of the cut node: it still reaches AWS, its connects fail,
    # and the rest of the cluster is untouched.
    polls = cut[target.node].polls

    during =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(members)
          match?(%{polls: p} when p >= polls + 2, snaps[target.node]) && snaps
        end,
        30_000
      )

    assert during, "the cut node stopped polling"
    assert during[target.node].connected == []
    assert during[target.node].health == :healthy
    # Connected to no member, it polls for itself; the other 7 keep one poller of theirs.
    assert during[target.node].role == :poller
    assert during[target.node].answer_from == target.node
    assert [_one] = others |> Enum.map(&during[&1.node].poller) |> Enum.uniq()
    assert Fleet.mesh?(others, during)

    # Heal, then watch the cut node alone (one round trip per sample) until it is
    # connected to all 7 again.
    before = Fleet.snapshot(target).polls
    Firewall.heal(table)

    healed =
      Wait.until(
        fn ->
          s = Fleet.snapshot(target)
          is_map(s) and Enum.all?(nodes(others), &(&1 in s.connected)) and s
        end,
        30_000,
        20
      )

    assert healed, "no rejoin after the heal: #{inspect(Fleet.snapshot(target))}"
    # The round in flight when the cut healed, plus one: within one polling interval.
    assert healed.polls - before <= 2,
           "rejoined only after #{healed.polls - before} rounds of #{target.node}"

    # Healed, it follows the cluster's poller again and stops polling for itself: over 3
    # more answers from the poller, at most the round in flight at the heal is its own.
    followed =
      Wait.until(
        fn ->
          s = Fleet.snapshot(target)
          is_map(s) and s.role == :follower and s.answer_from != target.node and s
        end,
        30_000
      )

    assert followed, "still polling for itself: #{inspect(Fleet.snapshot(target))}"

    later =
      Wait.until(
        fn ->
          s = Fleet.snapshot(target)
          is_map(s) and s.answers >= followed.answers + 3 and s
        end,
        30_000
      )

    assert later, "no answers from the poller: #{inspect(Fleet.snapshot(target))}"
    assert later.polls - followed.polls <= 1, "#{later.polls - followed.polls} own polls"

    final = Fleet.snapshots(members)
    assert Fleet.mesh?(members, final)
    assert [poller] = members |> Enum.map(&final[&1.node].poller) |> Enum.uniq()
    assert poller == members |> Enum.map(& &1.node) |> Enum.min()

    for m <- others do
      assert Enum.uniq(final[m.node].downs) == [target.node],
             "#{m.node} saw #{inspect(final[m.node].downs)} go down"
    end

    assert Enum.sort(Enum.uniq(final[target.node].downs)) == Enum.sort(nodes(others))
    refute table in Firewall.tables()
  end
end
