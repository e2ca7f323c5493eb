defmodule AWSCluster.Strategy.ECSTest do
  # Real parts: moto_server (launched with test/support/moto_launch.py so task ENIs take
  # 127.0.x.y addresses from their subnets) and real BEAM peer nodes at those addresses,
  # each running the ECS strategy. Only the task metadata endpoint is a fake: moto has none.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.ECS
  alias AWSCluster.Test.{Cluster, FakeTaskMetadata, FaultProxy, Moto, Nodes, StrategyPeer, Wait}

  @moduletag timeout: 600_000
  @interval 300
  @prune_after 2

  setup do
    run = "e#{System.unique_integer([:positive])}"
    cluster = "#{run}-cluster"
    Moto.ecs_cluster!(cluster)
    %{run: run, cluster: cluster}
  end

  defp config(cluster, endpoint, extra) do
    Keyword.merge(
      [
        cluster: cluster,
        family: "app",
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
  end

  defp specs(run, azs, first \\ 1) do
    for {az, i} <- Enum.with_index(azs, first),
        do: %{az: az, tags: %{"node_basename" => "#{run}n#{i}", "role" => "web"}}
  end

  # `-connect_all false`: only the strategy may connect the peers, not global.
  defp start_node(name, ip, config) do
    {pid, node} = Cluster.start_peer(name, ip, [~c"-connect_all", ~c"false"])
    topologies = [ecs: [strategy: ECS, config: config]]
    {:ok, sup} = :peer.call(pid, StrategyPeer, :start_detached, [topologies])
    %{pid: pid, node: node, sup: sup, ip: ip}
  end

  defp start_tasks(run, tasks, config) do
    for {task, i} <- Enum.with_index(tasks, 1) do
      task
      |> Map.merge(start_node("#{run}n#{i}", task["ip"], config))
      |> Map.put(:arn, task["arn"])
    end
  end

  defp connected(peer), do: :peer.call(peer.pid, Node, :list, [])
  defp status(peer), do: :peer.call(peer.pid, StrategyPeer, :status, [peer.sup])
  defp downs(peer), do: :peer.call(peer.pid, StrategyPeer, :downs, [])

  defp mesh?(peers) do
    nodes = Enum.map(peers, & &1.node)
    Enum.all?(peers, fn p -> Enum.all?(nodes -- [p.node], &(&1 in connected(p))) end)
  end

  defp wait_until(fun), do: Wait.until(fun, 30_000)

  # Brackets each peer's prune by its `answers` counter: `{last, first}`, the counter at
  # the last sample that still had `node` (`before` if none did) and at the first that
  # did not. The prune happened at an answer in `last+1..first`; under load a sample can
  # lag several answers behind, so only the bracket is exact. A peer missing from the map
  # still had `node` after 30 s.
  defp answers_when_pruned(peers, node, before) do
    Enum.reduce_while(1..1_500, {before, %{}}, fn _, {last, seen} ->
      {last, seen} =
        for p <- peers, not Map.has_key?(seen, p.node), reduce: {last, seen} do
          {last, seen} ->
            s = status(p)

            if Map.has_key?(s.members, node),
              do: {Map.put(last, p.node, s.answers), seen},
              else: {last, Map.put(seen, p.node, {last[p.node], s.answers})}
        end

      if map_size(seen) == length(peers),
        do: {:halt, {last, seen}},
        else: {:cont, {last, Process.sleep(20) && seen}}
    end)
    |> elem(1)
  end

  test "6 awsvpc tasks in 3 AZs mesh as real nodes at their ENI addresses; a stopped task is pruned on every node",
       %{run: run, cluster: cluster} do
    tasks = Moto.ecs_run_tasks!(cluster, "app", specs(run, ~w(a a b b c c)))
    ips = Enum.map(tasks, & &1["ip"])

    assert ips == ~w(127.0.1.100 127.0.1.101 127.0.2.100 127.0.2.101 127.0.3.100 127.0.3.101)

    # Never peers: another family in this cluster, and the same family in another cluster.
    [other_family] = Moto.ecs_run_tasks!(cluster, "worker", specs(run, ["a"], 7))
    Moto.ecs_cluster!("#{run}-other")
    [other_cluster] = Moto.ecs_run_tasks!("#{run}-other", "app", specs(run, ["b"], 8))

    peers = start_tasks(run, tasks, config(cluster, Moto.endpoint(), []))

    assert wait_until(fn -> mesh?(peers) end),
           "no full mesh: #{inspect(Enum.map(peers, &connected/1))}"

    [observer | _] = peers
    members = status(observer).members |> Map.keys() |> Enum.sort()
    assert members == Enum.sort(Enum.map(peers, & &1.node) -- [observer.node])

    for outsider <- [other_family, other_cluster] do
      refute Enum.any?(members, &String.ends_with?(Atom.to_string(&1), "@" <> outsider["ip"]))
    end

    by_az = :peer.call(observer.pid, AWSCluster, :nodes_by_az, [])
    assert Enum.sort(Map.keys(by_az)) == ["us-east-1a", "us-east-1b", "us-east-1c"]
    third = Enum.at(peers, 2)
    assert {:ok, info} = :peer.call(observer.pid, AWSCluster, :node_info, [third.node])
    assert info.availability_zone == "us-east-1b"
    assert info.address == "127.0.2.100"
    assert info.instance_id == nil
    assert info.tags["role"] == "web"

    assert %{arn: arn, family: "app", group: "family:app", launch_type: "FARGATE"} = info.task
    assert arn == third.arn
    assert info.task.cluster_arn =~ ~r/:cluster\/#{cluster}\z/

    # StopTask sets desiredStatus STOPPED, so ListTasks(desiredStatus=RUNNING) drops the
    # task at once (in moto as in AWS) and it is pruned as missing, after prune_after
    # answers. A round whose ListTasks ran just before the StopTask and its DescribeTasks
    # just after sees it STOPPED: reported gone, it is pruned at the first answer (the
    # Rust tests on canned pages and the Membership tests cover that path on purpose).
    # Either way never before a complete answer: a nodedown alone prunes nothing.
    victim = List.last(peers)
    survivors = peers -- [victim]
    for p <- survivors, do: :peer.call(p.pid, StrategyPeer, :reset_downs, [])
    answers = Map.new(survivors, &{&1.node, status(&1).answers})
    # As ECS does on StopTask: the task's node stops too.
    Moto.ecs_stop!(cluster, [victim.arn])
    Cluster.stop(victim.pid)
    pruned = answers_when_pruned(survivors, victim.node, answers)

    for p <- survivors do
      assert {last, first} = pruned[p.node], "#{victim.node} never pruned on #{p.node}"
      # At least one answer after the stop; at most prune_after without it, and up to
      # two more may have been in flight at the stop.
      assert first - answers[p.node] >= 1,
             "pruned on #{p.node} before any answer after the stop"

      assert last - answers[p.node] <= @prune_after + 1,
             "still kept on #{p.node} #{last - answers[p.node]} answers after the stop"

      assert {:error, _} = :peer.call(p.pid, AWSCluster, :node_info, [victim.node])
    end

    assert mesh?(survivors)
    for p <- survivors, do: assert(downs(p) -- [victim.node] == [])
  end

  test "host mode: tasks on 2 container instances take their EC2 instances' addresses",
       %{run: run, cluster: cluster} do
    ids =
      Moto.run_instances!([
        %{ip: "127.0.1.41", tags: %{"Name" => "#{run}-host1"}},
        %{ip: "127.0.2.41", tags: %{"Name" => "#{run}-host2"}}
      ])

    arns = Enum.map(ids, &Moto.ecs_container_instance!(cluster, &1))

    specs =
      for {arn, i} <- Enum.with_index(arns, 1),
          do: %{container_instance: arn, tags: %{"node_basename" => "#{run}h#{i}"}}

    tasks = Moto.ecs_run_tasks!(cluster, "app", specs, network_mode: "host")
    assert Enum.all?(tasks, &(&1["ip"] == nil))

    table = Nodes.table()
    config = config(cluster, Moto.endpoint(), address: :host, polling_interval: 10_000)

    pid =
      start_supervised!({ECS, [topology: :hosts, config: config] ++ Nodes.mfas(self(), table)})

    expected = [:"#{run}h1@127.0.1.41", :"#{run}h2@127.0.2.41"]
    for node <- expected, do: assert_receive({:connect, ^node}, 10_000)
    assert Poller.status(pid).members |> Map.keys() |> Enum.sort() == expected

    for {node, id, task} <- Enum.zip([expected, ids, tasks]) do
      assert {:ok, info} = AWSCluster.node_info(node)
      assert info.instance_id == id
      assert info.task.arn == task["arn"]
      assert info.availability_zone in ["us-east-1a", "us-east-1b"]
    end
  end

  @faults [
    {:throttle, :throttled},
    {{:status, 500}, :bad_response},
    {{:status, 403}, :unauthorized},
    {:refuse, :unreachable}
  ]

  test "ECS API faults keep the last good set, say why, and recover", %{
    run: run,
    cluster: cluster
  } do
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
    tasks = Moto.ecs_run_tasks!(cluster, "app", specs(run, ~w(a b c)))
    table = Nodes.table()
    config = config(cluster, FaultProxy.endpoint(proxy), max_backoff: 1_000)

    pid =
      start_supervised!({ECS, [topology: :faults, config: config] ++ Nodes.mfas(self(), table)})

    expected = Enum.sort(for {t, i} <- Enum.with_index(tasks, 1), do: :"#{run}n#{i}@#{t["ip"]}")
    assert wait_until(fn -> Enum.sort(Map.keys(Poller.status(pid).members)) == expected end)

    for {mode, reason} <- @faults do
      FaultProxy.set_mode(proxy, mode)
      failures = Poller.status(pid).failures

      # More failed rounds than prune_after: errors are not misses.
      assert wait_until(fn -> Poller.status(pid).failures >= failures + 3 end),
             "#{inspect(mode)} never failed"

      status = Poller.status(pid)
      assert status.health == :failing
      assert status.last_error.reason == reason, inspect(status.last_error)
      assert status.last_error.message =~ "ListTasks"
      # What to grant, by its IAM name.
      if reason == :unauthorized, do: assert(status.last_error.message =~ "ecs:ListTasks")
      assert Enum.sort(Map.keys(status.members)) == expected

      FaultProxy.set_mode(proxy, :pass)
      assert wait_until(fn -> Poller.status(pid).health == :healthy end)
      assert Enum.sort(Map.keys(Poller.status(pid).members)) == expected
    end

    refute_received {:disconnect, _}
  end

  test "identity from task metadata v4: down at start names the options to set; fills cluster, family and region once up",
       %{run: run, cluster: cluster} do
    [me, peer] = Moto.ecs_run_tasks!(cluster, "app", specs(run, ~w(a b)))
    # A task of another family: the default family is this task's, not every task's.
    Moto.ecs_run_tasks!(cluster, "worker", specs(run, ["c"], 3))

    meta =
      start_supervised!(
        {FakeTaskMetadata,
         cluster: cluster, task_arn: me["arn"], family: "app", az: "us-east-1a", ip: me["ip"]}
      )

    FakeTaskMetadata.set(meta, mode: :down)

    config =
      config(cluster, Moto.endpoint(), metadata_uri: FakeTaskMetadata.uri(meta))
      |> Keyword.drop([:cluster, :family, :region])

    table = Nodes.table()
    pid = start_supervised!({ECS, [topology: :meta, config: config] ++ Nodes.mfas(self(), table)})

    assert wait_until(fn -> Poller.status(pid).failures >= 2 end)
    status = Poller.status(pid)
    assert status.health == :failing and status.polls == 0
    assert status.last_error.message =~ "cluster:"
    assert status.last_error.message =~ "family:"
    assert status.last_error.message =~ "region:"

    FakeTaskMetadata.set(meta, mode: :up)
    mine = :"#{run}n1@#{me["ip"]}"
    theirs = :"#{run}n2@#{peer["ip"]}"
    # This VM is neither task's node, so both are its peers; the worker task is not (the
    # family came from the metadata).
    assert wait_until(fn ->
             Enum.sort(Map.keys(Poller.status(pid).members)) == Enum.sort([mine, theirs])
           end)

    assert_receive {:connect, ^theirs}, 10_000
    assert "/v4/task-1/task" in FakeTaskMetadata.requests(meta)
  end
end
