defmodule AWSCluster.Strategy.EC2Test do
  # Real parts only: moto_server seeded with instances at 127.0.x.y, and real BEAM peer
  # nodes named <basename>@<that ip>, each running the EC2 strategy against moto.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.{Cluster, FaultProxy, Moto, Nodes, StrategyPeer, Wait}

  @moduletag timeout: 600_000
  @interval 300
  @prune_after 3

  # Unique per test: epmd keys names per machine, and moto tags scope discovery.
  setup do
    %{tag: "c#{System.unique_integer([:positive])}"}
  end

  defp spec(tag, i, ip),
    do: %{ip: ip, tags: %{"cluster" => tag, "node_basename" => "#{tag}n#{i}"}}

  defp topology(tag, endpoint, extra) do
    config =
      Keyword.merge(
        [
          tags: %{"cluster" => tag},
          node_basename: {:tag, "node_basename"},
          region: Moto.region(),
          endpoint: endpoint,
          access_key_id: "testing",
          secret_access_key: "testing",
          max_attempts: 1,
          operation_timeout: 2_000,
          polling_interval: @interval,
          prune_after: @prune_after,
          connect_timeout: 1_000
        ],
        extra
      )

    [ec2: [strategy: EC2, config: config]]
  end

  # `-connect_all false`: peers must not learn of each other through the test node
  # (global's transitive connects); only the strategy may connect them.
  defp start_node(tag, i, ip, endpoint, extra \\ []) do
    {pid, node} = Cluster.start_peer("#{tag}n#{i}", ip, [~c"-connect_all", ~c"false"])
    {:ok, sup} = :peer.call(pid, StrategyPeer, :start_detached, [topology(tag, endpoint, extra)])
    %{pid: pid, node: node, sup: sup, ip: ip}
  end

  defp start_bare(tag, i, ip) do
    {pid, node} = Cluster.start_peer("#{tag}n#{i}", ip, [~c"-connect_all", ~c"false"])
    %{pid: pid, node: node, ip: ip}
  end

  defp run_strategy(peer, tag, endpoint, extra \\ []) do
    {:ok, sup} =
      :peer.call(peer.pid, StrategyPeer, :start_detached, [topology(tag, endpoint, extra)])

    Map.put(peer, :sup, sup)
  end

  defp connected(peer), do: :peer.call(peer.pid, Node, :list, [])
  defp status(peer), do: :peer.call(peer.pid, StrategyPeer, :status, [peer.sup])
  defp poller(peer), do: :peer.call(peer.pid, StrategyPeer, :poller, [peer.sup])
  defp downs(peer), do: :peer.call(peer.pid, StrategyPeer, :downs, [])

  defp mesh?(peers) do
    nodes = Enum.map(peers, & &1.node)

    Enum.all?(peers, fn peer ->
      connected = connected(peer)
      Enum.all?(nodes -- [peer.node], &(&1 in connected))
    end)
  end

  defp wait_until(fun), do: Wait.until(fun, 30_000)

  # Samples every peer's poller until `done?.(peer, status)` holds for each; returns each
  # node's `polls` counter at the first sample where it held (a node missing from the
  # map never got there within 30 s).
  defp polls_when(peers, done?) do
    Enum.reduce_while(1..1_500, %{}, fn _, seen ->
      seen =
        for p <- peers, not Map.has_key?(seen, p.node), reduce: seen do
          seen ->
            s = status(p)
            if done?.(p, s), do: Map.put(seen, p.node, s.polls), else: seen
        end

      if map_size(seen) == length(peers) do
        {:halt, seen}
      else
        Process.sleep(20)
        {:cont, seen}
      end
    end)
  end

  defp polls(peers), do: Map.new(peers, &{&1.node, status(&1).polls})

  # "Within one polling interval of the fault clearing", counted in each node's own
  # rounds: the round in flight when it cleared may still fail, the next must succeed.
  defp assert_current_within_two_polls(peers, cleared, at, what) do
    for p <- peers do
      assert Map.has_key?(at, p.node), "#{p.node} not current 30 s after #{what}"
      rounds = at[p.node] - cleared[p.node]
      assert rounds <= 2, "#{p.node} current only #{rounds} polls after #{what}"
    end
  end

  # Healthy, and every other node of `peers` in its known set.
  defp current?(peers) do
    nodes = Enum.map(peers, & &1.node)

    fn p, s ->
      s.health == :healthy and Enum.all?(nodes -- [p.node], &Map.has_key?(s.members, &1))
    end
  end

  @ips ["127.0.1.11", "127.0.1.12", "127.0.2.11", "127.0.2.12", "127.0.3.11", "127.0.3.12"]

  test "6 nodes in 3 AZs reach a full mesh; a terminated one is pruned after prune_after polls, a new one joins",
       %{tag: tag} do
    endpoint = Moto.endpoint()
    ids = Moto.run_instances!(for {ip, i} <- Enum.with_index(@ips, 1), do: spec(tag, i, ip))

    # Not connected to each other before the strategy runs: the mesh below is its work.
    bare = for {ip, i} <- Enum.with_index(@ips, 1), do: start_bare(tag, i, ip)
    for p <- bare, do: assert(connected(p) -- [node()] == [])

    peers = Enum.map(bare, &run_strategy(&1, tag, endpoint))

    assert wait_until(fn -> mesh?(peers) end),
           "no full mesh: #{inspect(Enum.map(peers, &connected/1))}"

    # What discovery knows, for AZ-aware users.
    [observer | _] = peers
    by_az = :peer.call(observer.pid, AWSCluster, :nodes_by_az, [])
    assert Map.keys(by_az) |> Enum.sort() == ["us-east-1a", "us-east-1b", "us-east-1c"]
    assert length(by_az["us-east-1a"]) == 1 and length(by_az["us-east-1b"]) == 2
    [_, n2 | _] = Enum.map(peers, & &1.node)
    assert {:ok, info} = :peer.call(observer.pid, AWSCluster, :node_info, [n2])
    assert info.instance_id == Enum.at(ids, 1)
    assert info.address == "127.0.1.12"
    assert info.availability_zone == "us-east-1a"
    assert info.tags["cluster"] == tag

    # Churn 1: terminate the 6th instance and stop its node.
    victim = List.last(peers)
    survivors = peers -- [victim]
    for p <- survivors, do: :peer.call(p.pid, StrategyPeer, :reset_downs, [])
    answers_at_terminate = status(observer).answers
    Moto.terminate!([List.last(ids)])
    Cluster.stop(victim.pid)

    # Sample the observer until the victim leaves its peer set.
    {seen, pruned_at} =
      Enum.reduce_while(1..600, {[], nil}, fn _, {seen, nil} ->
        s = status(observer)

        case Map.fetch(s.members, victim.node) do
          {:ok, misses} ->
            Process.sleep(25)
            {:cont, {[misses | seen], nil}}

          :error ->
            {:halt, {seen, s.answers}}
        end
      end)

    assert pruned_at, "never pruned"
    # Kept after complete answers without it ...
    assert Enum.any?(seen, &(&1 in 1..(@prune_after - 1)))
    assert Enum.all?(seen, &(&1 < @prune_after))
    # ... and pruned only once prune_after answers had been counted.
    assert pruned_at - answers_at_terminate >= @prune_after
    assert {:error, _} = :peer.call(observer.pid, AWSCluster, :node_info, [victim.node])

    # The survivors lost only the victim.
    assert mesh?(survivors)
    for p <- survivors, do: assert(downs(p) -- [victim.node] == [])

    # Churn 2: a new instance and node join.
    [_] = Moto.run_instances!([spec(tag, 7, "127.0.3.13")])
    newcomer = start_node(tag, 7, "127.0.3.13", endpoint)
    peers = survivors ++ [newcomer]
    assert wait_until(fn -> mesh?(peers) end)
    for p <- survivors, do: assert(downs(p) -- [victim.node] == [])
  end

  @faults [
    {:refuse, :unreachable},
    {{:delay, 3_000}, :timeout},
    {{:status, 500}, :bad_response},
    {{:status, 503}, :bad_response},
    {:throttle, :throttled},
    {:truncate, :bad_response},
    {:drop, :unreachable}
  ]

  test "AWS faults never disconnect a healthy peer or crash a strategy; the mesh catches up after",
       %{tag: tag} do
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
    endpoint = FaultProxy.endpoint(proxy)
    ips = Enum.take(@ips, 4)
    specs = for {ip, i} <- Enum.with_index(ips, 1), do: spec(tag, i, ip)
    Moto.run_instances!(specs)

    # operation_timeout < the delay fault; backoff capped so recovery is quick. Every
    # node polls for itself: each must meet every fault (coordination_test.exs covers
    # a shared poller's faults).
    extra = [operation_timeout: 1_000, max_backoff: 1_500, coordinate: false]
    peers = for {ip, i} <- Enum.with_index(ips, 1), do: start_node(tag, i, ip, endpoint, extra)
    assert wait_until(fn -> mesh?(peers) end)
    pollers = Enum.map(peers, &poller/1)

    failing = fn min_failures ->
      Enum.all?(peers, fn p ->
        s = status(p)
        s.health == :failing and s.failures >= min_failures
      end)
    end

    reasons =
      for {mode, _expected} <- @faults do
        FaultProxy.set_mode(proxy, mode)
        # Failing for more than prune_after polls: errors must not count as misses.
        assert wait_until(fn -> failing.(@prune_after + 1) end), "#{inspect(mode)} never failed"
        reason = status(hd(peers)).last_error.reason
        FaultProxy.set_mode(proxy, :pass)
        cleared = polls(peers)
        at = polls_when(peers, current?(peers))
        assert_current_within_two_polls(peers, cleared, at, "#{inspect(mode)} cleared")
        assert mesh?(peers), "mesh broken by #{inspect(mode)}"
        for p <- peers, do: assert(downs(p) == [], "#{inspect(mode)}: #{inspect(downs(p))}")
        {mode, reason}
      end

    assert reasons == Enum.map(@faults, fn {mode, expected} -> {mode, expected} end)

    # moto killed: refused behind the proxy. It restarts empty, so the proxy answers 503
    # until the instances exist again; a node launched meanwhile joins after the fault.
    Moto.kill!()
    assert wait_until(fn -> failing.(@prune_after + 1) end)
    FaultProxy.set_mode(proxy, {:status, 503})
    Moto.restart!()
    Moto.fresh!()
    new_spec = spec(tag, 5, "127.0.3.14")
    Moto.run_instances!(specs ++ [new_spec])
    newcomer = start_node(tag, 5, "127.0.3.14", endpoint, extra)
    assert status(newcomer).health in [:starting, :failing]
    FaultProxy.set_mode(proxy, :pass)
    all = peers ++ [newcomer]
    cleared = polls(all)

    # Everyone, the newcomer included, knows all 5 within two of its own polls; the
    # connect round that follows each of those polls makes the mesh.
    at = polls_when(all, current?(all))
    assert_current_within_two_polls(all, cleared, at, "the 503s cleared")
    assert wait_until(fn -> mesh?(all) end)
    for p <- peers, do: assert(downs(p) == [])
    assert Enum.map(peers, &poller/1) == pollers
  end

  test "shortcut filters and a second ENI's address, with injected connects (no peers)", %{
    tag: tag
  } do
    [_a, b, _c] =
      Moto.run_instances!([
        %{ip: "127.0.1.21", tags: %{"cluster" => tag}},
        %{ip: "127.0.2.21", second_ip: "127.0.3.21", tags: %{"cluster" => tag}},
        %{ip: "127.0.3.22", tags: %{"cluster" => tag}}
      ])

    table = Nodes.table()

    config = [
      tags: %{"cluster" => tag},
      availability_zone: "us-east-1b",
      address: {:interface, 1},
      node_basename: "app",
      region: Moto.region(),
      endpoint: Moto.endpoint(),
      access_key_id: "testing",
      secret_access_key: "testing",
      polling_interval: 10_000
    ]

    pid =
      start_supervised!(
        {EC2, [topology: :shortcuts, config: config] ++ Nodes.mfas(self(), table)}
      )

    assert_receive {:connect, :"app@127.0.3.21"}, 10_000
    # The round's connects are done (the next poll is 10 s away): no other node was dialled.
    assert Wait.until(fn -> not Poller.status(pid).connecting end, 10_000)
    refute_received {:connect, _}
    assert %{members: %{:"app@127.0.3.21" => 0}} = Poller.status(pid)
    assert {:ok, %{instance_id: ^b}} = AWSCluster.node_info(:"app@127.0.3.21")
  end

  test "more named instances than max_peers: refused before any name becomes an atom, the last good set kept",
       %{tag: tag} do
    # Names made up here and never written as atoms by this test: a refused name that
    # exists as an atom afterwards was made by the strategy.
    run = "cap#{System.unique_integer([:positive])}x"

    named = fn prefix, ips ->
      for {ip, i} <- Enum.with_index(ips, 1), do: {"#{run}#{prefix}#{i}", ip}
    end

    spec = fn {name, ip} -> %{ip: ip, tags: %{"cluster" => tag, "node_basename" => name}} end

    good = named.("ok", ["127.0.1.41", "127.0.1.42"])
    Moto.run_instances!(Enum.map(good, spec))

    config = [
      tags: %{"cluster" => tag},
      node_basename: {:tag, "node_basename"},
      region: Moto.region(),
      endpoint: Moto.endpoint(),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      polling_interval: 200,
      max_peers: 2
    ]

    table = Nodes.table()
    pid = start_supervised!({EC2, [topology: :cap, config: config] ++ Nodes.mfas(self(), table)})
    good_nodes = for {name, ip} <- good, do: String.to_atom("#{name}@#{ip}")
    for n <- good_nodes, do: assert_receive({:connect, ^n}, 10_000)

    # One more: refused, which also loads every module the refusal path uses, so the
    # atom count below moves only with what the strategy does with the names.
    warm = named.("warm", ["127.0.2.31"])
    Moto.run_instances!(Enum.map(warm, spec))
    assert refused_with(pid, 3)

    # Whoever may tag instances names 20 more.
    refused = named.("no", for(i <- 1..20, do: "127.0.2.#{40 + i}"))
    atoms = :erlang.system_info(:atom_count)
    Moto.run_instances!(Enum.map(refused, spec))
    # Launched one by one, so early rounds may see only some of them.
    status = refused_with(pid, 23)
    assert status.last_error.details == %{count: 23, max_peers: 2}

    # Refused again on later rounds, which count neither as answers nor as misses.
    polls = status.polls
    assert Wait.until(fn -> Poller.status(pid).polls >= polls + 3 end)
    status = Poller.status(pid)
    assert status.health == :failing and status.last_error.reason == :too_many_peers
    assert status.members == Map.new(good_nodes, &{&1, 0})

    assert :erlang.system_info(:atom_count) - atoms < length(refused)

    for {name, ip} <- refused ++ warm do
      assert_raise ArgumentError, fn -> String.to_existing_atom("#{name}@#{ip}") end
    end

    assert Wait.until(fn -> not Poller.status(pid).connecting end, 10_000)
    refute_received {:disconnect, _}
  end

  # The first status refusing an answer of `count` names, or false after 20 s.
  defp refused_with(pid, count) do
    Wait.until(fn ->
      s = Poller.status(pid)
      match?(%{last_error: %{reason: :too_many_peers, details: %{count: ^count}}}, s) && s
    end)
  end

  test "no region and IMDS down: the start succeeds failing, says to set region:, and forms when IMDS is back",
       %{tag: tag} do
    Moto.run_instances!([spec(tag, 1, "127.0.1.61"), spec(tag, 2, "127.0.2.61")])
    imds = start_supervised!({AWSCluster.Test.FakeIMDS, region: Moto.region()})
    AWSCluster.Test.FakeIMDS.set(imds, mode: :down)

    config =
      topology(tag, Moto.endpoint(), imds_endpoint: AWSCluster.Test.FakeIMDS.endpoint(imds))
      |> get_in([:ec2, :config])
      |> Keyword.delete(:region)

    table = Nodes.table()
    arg = [topology: :no_region, config: config] ++ Nodes.mfas(self(), table)
    pid = start_supervised!({EC2, arg})

    assert Wait.until(fn -> Poller.status(pid).failures >= 2 end)
    status = Poller.status(pid)
    assert status.health == :failing and status.polls == 0
    assert status.last_error.message =~ "region:"

    AWSCluster.Test.FakeIMDS.set(imds, mode: :v2)
    for i <- 1..2, do: assert_receive({:connect, _}, 5_000) && i
    assert Enum.sort(Nodes.list_nodes(table)) == [:"#{tag}n1@127.0.1.61", :"#{tag}n2@127.0.2.61"]
    assert Poller.status(pid).polls <= 2
  end
end
