defmodule AWSCluster.Strategy.AutoScalingTest do
  # moto's AutoScaling groups, a fake IMDS for the node's own group, and injected
  # connect MFAs (the node set is what is asserted; the EC2 test covers real peers).
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.AutoScaling
  alias AWSCluster.Test.{FakeIMDS, FaultProxy, Moto, Nodes, Wait}

  @moduletag timeout: 300_000

  setup do
    group = "asg#{System.unique_integer([:positive])}"
    ips = ["127.0.1.31", "127.0.1.32", "127.0.2.31", "127.0.2.32", "127.0.3.31"]
    ids = Moto.run_instances!(for ip <- ips, do: %{ip: ip, tags: %{"role" => "app"}})
    Moto.create_asg!(group, ids)
    %{group: group, ids: ids, nodes: Enum.map(ips, &:"asg@#{&1}")}
  end

  defp config(extra) do
    Keyword.merge(
      [
        node_basename: "asg",
        region: Moto.region(),
        endpoint: Moto.endpoint(),
        access_key_id: "testing",
        secret_access_key: "testing",
        max_attempts: 1,
        polling_interval: 200
      ],
      extra
    )
  end

  defp start(topology, extra) do
    table = Nodes.table()
    arg = [topology: topology, config: config(extra)] ++ Nodes.mfas(self(), table)
    %{pid: start_supervised!({AutoScaling, arg}), table: table}
  end

  # Waits (bounded) until a poll has completed and its connects are done with exactly
  # `nodes` connected; each poll connects everything its answer holds.
  defp connected?(%{pid: pid, table: table}, nodes) do
    Wait.until(fn ->
      s = Poller.status(pid)
      s.polls > 0 and not s.connecting and Enum.sort(Nodes.list_nodes(table)) == Enum.sort(nodes)
    end)
  end

  test "only InService and Healthy instances of the named group are peers",
       %{group: group, ids: [_, i2, i3, i4, _], nodes: [n1, _, _, n4, n5]} do
    Moto.set_health!(i2, "Unhealthy")
    Moto.standby!(group, [i3])

    %{pid: pid} = started = start(:asg_named, groups: [group])
    assert connected?(started, [n1, n4, n5])
    assert Poller.status(pid).members |> Map.keys() |> Enum.sort() == Enum.sort([n1, n4, n5])
    assert {:ok, %{instance_id: ^i4, availability_zone: "us-east-1b"}} = AWSCluster.node_info(n4)
  end

  test "the node's own group is found through IMDS", %{group: group, ids: [i1 | _], nodes: nodes} do
    imds = start_supervised!({FakeIMDS, instance_id: i1, auto_scaling_group: group})
    started = start(:asg_own, imds_endpoint: FakeIMDS.endpoint(imds))
    assert connected?(started, nodes)
    assert Enum.any?(FakeIMDS.requests(imds), fn {_, path, _} -> path =~ "autoscaling" end)
  end

  test "without tags in IMDS the group is read from the instance's aws:autoscaling:groupName tag",
       %{group: group, ids: [i1 | _] = ids, nodes: nodes} do
    # moto may or may not tag attached instances; tag them as AWS does.
    Moto.tag!(ids, %{"aws:autoscaling:groupName" => group})
    imds = start_supervised!({FakeIMDS, instance_id: i1, auto_scaling_group: nil})
    started = start(:asg_tag, imds_endpoint: FakeIMDS.endpoint(imds))
    assert connected?(started, nodes)
  end

  test "IMDS down: the start succeeds failing, names what to configure, and forms when IMDS is back",
       %{group: group, ids: [i1 | _], nodes: nodes} do
    imds = start_supervised!({FakeIMDS, instance_id: i1, auto_scaling_group: group})
    FakeIMDS.set(imds, mode: :down)
    %{pid: pid} = started = start(:asg_down, imds_endpoint: FakeIMDS.endpoint(imds))

    assert Wait.until(fn -> Poller.status(pid).failures >= 2 end)
    status = Poller.status(pid)
    assert status.health == :failing and status.polls == 0
    assert status.last_error.reason == :unreachable
    assert status.last_error.message =~ "instance metadata service"
    assert status.last_error.message =~ "groups: in the topology config"

    # Back up: the next init retry comes within one interval (200 ms), and the round
    # after it connects; well within two intervals of polls.
    FakeIMDS.set(imds, mode: :v2)
    assert connected?(started, nodes)
    assert Poller.status(pid).polls <= 2
  end

  test "an instance id EC2 no longer knows does not fail the round (InvalidInstanceID.NotFound)",
       %{group: group, nodes: nodes} do
    # What AWS answers to InstanceIds naming an id that is gone, on every such request.
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
    FaultProxy.set_mode(proxy, :unknown_instance_id)
    extra = [groups: [group], endpoint: FaultProxy.endpoint(proxy)]
    %{pid: pid} = started = start(:asg_notfound, extra)
    assert connected?(started, nodes)
    assert Poller.status(pid).health == :healthy
    assert "DescribeInstances" in FaultProxy.requests(proxy)
  end

  test "an InService id EC2 does not show running is a miss (prune_after, prune guard), not a failure",
       %{group: group, ids: ids, nodes: nodes} do
    %{pid: pid} = started = start(:asg_stopped, groups: [group], prune_after: 2)
    assert connected?(started, nodes)
    victim = List.last(nodes)
    # moto keeps a stopped instance InService in its group (it has no health checks).
    Moto.stop_instances!([List.last(ids)])
    assert Wait.until(fn -> Poller.status(pid).members[victim] == 1 end)
    assert Poller.status(pid).health == :healthy
    assert Wait.until(fn -> not Map.has_key?(Poller.status(pid).members, victim) end)
  end

  test "a configured group that does not exist is an error, not an empty answer",
       %{group: group} do
    %{pid: pid} = start(:asg_missing, groups: [group, "no-such-group"])
    assert Wait.until(fn -> Poller.status(pid).health == :failing end)
    assert Wait.until(fn -> not Poller.status(pid).connecting end)
    status = Poller.status(pid)
    assert status.last_error.reason == :not_found
    assert status.last_error.message =~ "no-such-group"
    assert status.members == %{}
    refute_received {:connect, _}
  end
end
