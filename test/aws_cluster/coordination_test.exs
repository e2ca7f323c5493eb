defmodule AWSCluster.CoordinationTest do
  # One poller per topology (AWSCluster.Poller.Coordination) in clusters of 8 real
  # nodes on moto. Every node reaches moto through its own FaultProxy, so each proxy's
  # log is one node's AWS calls: who polls, and when, is read from the calls AWS got,
  # not from the code under test.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Test.{AnswerTap, FaultProxy, Fleet, Moto, StrategyPeer, Wait}

  @moduletag timeout: 300_000

  @nodes 8
  @interval 2_000
  @prune_after 2
  @net_ticktime 4

  # MotoCase starts moto and resets it before every test.
  setup_all do: %{log_dir: Fleet.log_dir!("coordination_test")}
  setup do: %{run: Fleet.run_id()}

  # Boots the nodes of `indexes` (in the address plan) with their own proxies; all are halted
  # when the test ends.
  defp boot(ctx, prefix, host_base, indexes, config \\ []) do
    specs =
      for i <- indexes, do: Fleet.spec(i, prefix: prefix, run: ctx.run, host_base: host_base)

    tag = "#{prefix}#{ctx.run}"
    specs = Fleet.launch!(specs, %{"cluster" => tag})

    # Proxies are the test's (they end with it); nodes boot 4 at a time.
    members =
      specs
      |> Enum.map(fn spec ->
        proxy = start_supervised!({FaultProxy, upstream: Moto.port()}, id: {:proxy, spec.node})
        {spec, proxy}
      end)
      |> Task.async_stream(fn {spec, proxy} -> boot_one(ctx, spec, proxy, tag, config) end,
        timeout: 120_000,
        max_concurrency: 4
      )
      |> Enum.map(fn {:ok, member} -> member end)

    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)
    members
  end

  defp boot_one(ctx, spec, proxy, tag, config) do
    topology =
      Fleet.topology(:ec2, spec,
        tags: %{"cluster" => tag},
        interval: @interval,
        prune_after: @prune_after,
        endpoint: FaultProxy.endpoint(proxy),
        config: config
      )

    spec
    |> Fleet.boot(topology,
      cookie: :"coordination_#{ctx.run}",
      net_ticktime: @net_ticktime,
      log_dir: ctx.log_dir
    )
    |> Map.put(:proxy, proxy)
  end

  # Waits for a full mesh in which every node follows the same poller, the lowest
  # node, and has applied an answer of it.
  defp settled(members) do
    lowest = members |> Enum.map(& &1.node) |> Enum.min()

    Wait.until(
      fn ->
        snaps = Fleet.snapshots(members)

        Fleet.mesh?(members, snaps) and
          Enum.all?(members, fn m ->
            s = snaps[m.node]
            s.poller == lowest and s.answer_from == lowest
          end) and snaps
      end,
      60_000
    )
  end

  # The member's DescribeInstances calls (arrival times, monotonic ms), since `since`.
  defp describes(member, since \\ :all) do
    for {at, "DescribeInstances"} <- FaultProxy.timed_requests(member.proxy),
        since == :all or at >= since,
        do: at
  end

  defp now, do: System.monotonic_time(:millisecond)

  test "8 nodes make one DescribeInstances call per interval, from the poller only; a boot adds one; a throttled poller holds everyone back; a failing one steps aside",
       ctx do
    members = boot(ctx, "coord", 201, 1..@nodes, max_backoff: 6_000)
    assert snaps = settled(members), "no settled cluster: #{inspect(Fleet.snapshots(members))}"
    [poller | followers] = Enum.sort_by(members, & &1.node)
    assert snaps[poller.node].role == :poller
    for f <- followers, do: assert(snaps[f.node].role == :follower)

    # Five of the poller's own polls: only its proxy hears from any node.
    start = now()
    polls = snaps[poller.node].polls

    assert Wait.until(fn -> Fleet.snapshot(poller).polls >= polls + 5 end, 30_000)
    window = now() - start
    calls = describes(poller, start)
    assert length(calls) in 4..6, "#{length(calls)} calls in #{window} ms"
    for f <- followers, do: assert(describes(f, start) == [], "#{f.node} polled")

    per_minute = length(calls) * 60_000 / window
    # Uncoordinated, each of the 8 would make 60 s / interval calls a minute.
    IO.puts(
      "coordination: #{length(calls)} DescribeInstances in #{window} ms from 1 of 8 nodes " <>
        "(#{Float.round(per_minute, 1)}/min; uncoordinated: #{div(@nodes * 60_000, @interval)}/min)"
    )

    # A 9th node: its boot poll, then it follows.
    [newcomer] = boot(ctx, "coord", 201, [@nodes + 1])
    all = members ++ [newcomer]
    assert settled(all)
    newcomer_polls = Fleet.snapshot(newcomer).polls
    polls = Fleet.snapshot(poller).polls
    assert Wait.until(fn -> Fleet.snapshot(poller).polls >= polls + 3 end, 30_000)
    assert length(describes(newcomer)) == 1
    assert Fleet.snapshot(newcomer).polls == newcomer_polls

    # Throttled: the poller backs off and the followers wait with it instead of polling
    # for themselves after 1.5 intervals.
    FaultProxy.set_mode(poller.proxy, :throttle)
    throttled_at = now()

    assert Wait.until(fn -> length(describes(poller, throttled_at)) >= 3 end, 60_000),
           "the poller stopped retrying"

    backed_off = now() - throttled_at
    assert backed_off > 3 * @interval, "retried #{backed_off} ms: no backoff"
    for f <- followers ++ [newcomer], do: assert(describes(f, throttled_at) == [])
    FaultProxy.set_mode(poller.proxy, :pass)

    assert Wait.until(fn -> Fleet.snapshot(poller).health == :healthy end, 30_000)

    # A poller failing for its own reasons (its endpoint refuses) steps aside after 2
    # failed polls: the next node polls for everyone, and the first takes its place
    # back once its own discovery works again.
    [second | _] = followers
    FaultProxy.set_mode(poller.proxy, :refuse)

    stepped =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(all)

          snaps[poller.node].role == :stepped_down and
            Enum.all?(all -- [poller], &(snaps[&1.node].answer_from == second.node)) and snaps
        end,
        30_000
      )

    assert stepped, "no step-down: #{inspect(Fleet.snapshots(all))}"
    refuse_started = now()
    polls = Fleet.snapshot(second).polls
    assert Wait.until(fn -> Fleet.snapshot(second).polls >= polls + 2 end, 30_000)
    for m <- all -- [poller, second], do: assert(describes(m, refuse_started) == [])
    FaultProxy.set_mode(poller.proxy, :pass)

    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(all)
               Enum.all?(all -- [poller], &(snaps[&1.node].answer_from == poller.node))
             end,
             30_000
           ),
           "the first node did not take over again: #{inspect(Fleet.snapshots(all))}"

    final = Fleet.snapshots(all)
    assert Fleet.mesh?(all, final)
    for m <- all, do: assert(final[m.node].downs == [])
  end

  test "takeovers: a late answer from the old poller is ignored, kill -9 of the poller hands over within 1.5 intervals, prunes take as many answers as without",
       ctx do
    members = boot(ctx, "take", 206, 1..@nodes)
    assert settled(members), "no settled cluster: #{inspect(Fleet.snapshots(members))}"
    [first, second, third | rest] = Enum.sort_by(members, & &1.node)
    watcher = List.last(rest)

    # Keep a real answer of the first poller, as the watcher received it.
    {:ok, tap} = :peer.call(watcher.pid, AnswerTap, :local_start, [watcher.sup])

    assert Wait.until(fn -> :peer.call(watcher.pid, AnswerTap, :local_kept, [tap]) end, 10_000)

    # A clean stop of the first poller's topology: the second takes over.
    :ok =
      :peer.call(first.pid, Supervisor, :terminate_child, [
        AWSCluster.ApplicationSupervisor,
        :fleet_topologies
      ])

    assert Wait.until(fn -> Fleet.snapshot(watcher).answer_from == second.node end, 10_000)
    %{answers: answers} = Fleet.snapshot(watcher)
    ignored = ignored(watcher)

    # The kept answer, now late: within 2 intervals of its discovery, but from a poller
    # that is no longer the one.
    :peer.call(watcher.pid, AnswerTap, :local_replay, [tap])

    assert Wait.until(fn -> ignored(watcher) == ignored + 1 end, 5_000),
           "the late answer was used"

    assert Fleet.snapshot(watcher).answers in [answers, answers + 1]

    # kill -9 of the second poller: the third polls within 1.5 intervals, nobody else
    # does, and no peer is dropped.
    survivors = (members -- [first, second]) |> Enum.sort_by(& &1.node)
    last_answer = List.last(describes(second))
    killed_at = now()
    Fleet.kill!(second)

    assert Wait.until(fn -> describes(third, killed_at) != [] end, 3 * @interval),
           "nobody took over"

    [took_over | _] = describes(third, killed_at)

    assert took_over - last_answer <= 3 * @interval / 2,
           "#{took_over - last_answer} ms between the last answer and the takeover's poll"

    for m <- survivors -- [third], do: assert(describes(m, killed_at) == [])

    snaps =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(survivors)
          Enum.all?(survivors, &(snaps[&1.node].answer_from == third.node)) and snaps
        end,
        10_000
      )

    assert snaps,
           "the survivors do not follow #{third.node}: #{inspect(Fleet.snapshots(survivors))}"

    assert Fleet.mesh?(survivors, snaps)

    for m <- survivors do
      assert first.node in snaps[m.node].connected
      assert second.node in snaps[m.node].members, "#{m.node} dropped the killed node"
      assert first.node in snaps[m.node].members
      assert snaps[m.node].downs == [second.node]
    end

    # Terminating an instance prunes it on every node after prune_after complete
    # answers, as without coordination (a round in flight at the termination may
    # still list it).
    victim = List.last(survivors)
    observers = survivors -- [victim]
    before = Map.new(Fleet.snapshots(observers), &{elem(&1, 0), elem(&1, 1).answers})
    Moto.terminate!([victim.instance_id])
    Fleet.stop(victim)

    pruned =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(observers)
          Enum.all?(observers, &(victim.node not in snaps[&1.node].members)) and snaps
        end,
        30_000
      )

    assert pruned, "not pruned everywhere: #{inspect(Fleet.snapshots(observers))}"

    for m <- observers do
      taken = pruned[m.node].answers - before[m.node]
      assert taken in @prune_after..(@prune_after + 1), "#{m.node}: pruned after #{taken} answers"
      assert pruned[m.node].answer_from == third.node
    end
  end

  defp ignored(member) do
    :peer.call(member.pid, StrategyPeer, :status, [member.sup]).coordination.ignored
  end
end
