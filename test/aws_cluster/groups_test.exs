defmodule AWSCluster.GroupsTest do
  # Meta-clustering on real nodes: 9 BEAM nodes on moto in 3 groups by tag, with OTP's
  # default kernel settings (connect_all true), then the two modes facing a stray send.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Groups.Rule
  alias AWSCluster.Test.{Cluster, Fleet, Moto, TelemetryProbe, Wait}

  @moduletag timeout: 300_000

  @interval 1_000
  @letters ~w(a b c)

  setup_all do: %{log_dir: Fleet.log_dir!("groups_test")}
  setup do: %{run: Fleet.run_id()}

  # Nodes `indexes` of the address plan; node i is in group (i - 1) div per, named
  # g<group><i>, so a group's lowest names are its first members.
  defp boot(ctx, host_base, indexes, per, opts) do
    tag = "groups#{ctx.run}"

    specs =
      for i <- indexes do
        group = Enum.at(@letters, div(i - 1, per))

        Map.put(
          Fleet.spec(i, prefix: "g#{group}", run: ctx.run, host_base: host_base),
          :group,
          group
        )
      end

    specs = Fleet.launch_groups!(specs, %{"cluster" => tag})

    tagged = for s <- specs, s.index in Keyword.get(opts, :gateway_tag, []), do: s.instance_id
    if tagged != [], do: Moto.tag!(tagged, %{"gateway" => "yes"})

    config = [group: {:tag, "group"}] ++ Keyword.get(opts, :config, [])

    members =
      specs
      |> Fleet.boot_all(fn spec ->
        topology =
          Fleet.topology(:ec2, spec,
            tags: %{"cluster" => tag},
            interval: @interval,
            config: config
          )

        hidden = if spec.index in Keyword.get(opts, :hidden, []), do: ["-hidden"], else: []

        {topology,
         [
           # This VM's own: mix aws_cluster.peers runs here and dials them hidden.
           cookie: Node.get_cookie(),
           net_ticktime: 4,
           log_dir: ctx.log_dir,
           connect_all: Keyword.get(opts, :connect_all, true),
           args: Keyword.get(opts, :args, []) ++ hidden
         ]}
      end)
      |> Enum.sort_by(& &1.node)

    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)
    members
  end

  # Boots each spec with the topology and group `fun` gives it, OTP's default kernel
  # settings, this VM's cookie; all are halted when the test ends.
  defp boot_each(ctx, specs, fun) do
    opts = [cookie: Node.get_cookie(), log_dir: ctx.log_dir, connect_all: true]

    members =
      specs
      |> Enum.map(fn spec ->
        {topology, group} = fun.(spec)
        Map.merge(spec, %{topology: topology, group: group})
      end)
      |> Fleet.boot_all(&{&1.topology, opts})

    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)
    members
  end

  defp formed(members, k, timeout \\ 60_000) do
    Wait.until(
      fn ->
        snaps = Fleet.snapshots(members)
        Fleet.groups_formed?(members, snaps, k) and snaps
      end,
      timeout,
      100
    )
  end

  defp call(member, m, f, a), do: :peer.call(member.pid, m, f, a, 15_000)

  defp in_group(members, group), do: Enum.filter(members, &(&1.group == group))

  test "9 nodes in 3 groups: visible meshes per group, hidden gateway links, separate pg and global, cross-group calls; a killed gateway is replaced",
       ctx do
    started = System.monotonic_time(:millisecond)
    members = boot(ctx, 61, 1..9, 3, [])
    assert snaps = formed(members, 2), "not formed: #{inspect(Fleet.snapshots(members))}"

    IO.puts(
      "groups: 9 nodes in 3 groups formed #{System.monotonic_time(:millisecond) - started} ms from the first boot"
    )

    [a1, a2, a3] = in_group(members, "a")
    [b1, _b2, b3] = in_group(members, "b")
    [c1, c2, c3] = in_group(members, "c")

    # What the node reports: its group, the gateways, and node_info's group. A view
    # is written after each round, so it may trail the links by one round.
    assert view =
             Wait.until(fn ->
               view = Fleet.snapshot(a1).groups
               view.gateways["c"] == [c1.node, c2.node] and view
             end)

    assert view.group == "a" and view.gateway? and view.mode == :compat
    assert view.gateways["a"] == [a1.node, a2.node]

    assert view.links ==
             Enum.sort([b1.node, Enum.at(in_group(members, "b"), 1).node, c1.node, c2.node])

    refute snaps[a3.node].groups.gateway?
    assert {:ok, %{group: "c"}} = call(a3, AWSCluster, :node_info, [c3.node])
    assert call(a3, AWSCluster.Groups, :my_group, []) == "a"
    assert %{"b" => %{members: bs}} = call(a3, AWSCluster.Groups, :groups, [])
    assert bs == Enum.map(in_group(members, "b"), & &1.node)

    # pg and global stay inside the group, even across a gateway's hidden links.
    for m <- members, do: {:ok, _} = call(m, :pg, :start, [:groups_test])
    pid = call(a1, :erlang, :spawn, [:timer, :sleep, [:infinity]])
    :ok = call(a1, :pg, :join, [:groups_test, :chat, pid])
    :yes = call(a1, :global, :register_name, [:groups_test_name, pid])

    assert Wait.until(
             fn -> call(a3, :pg, :get_members, [:groups_test, :chat]) == [pid] end,
             10_000
           )

    assert Wait.until(
             fn -> call(a2, :global, :whereis_name, [:groups_test_name]) == pid end,
             10_000
           )

    # A join reaches a neighbour in milliseconds: a second is far more than it takes.
    Process.sleep(1_000)

    for m <- [b1, b3, c1, c3] do
      assert call(m, :pg, :get_members, [:groups_test, :chat]) == [], "#{m.node} sees a's pg"
      assert call(m, :global, :whereis_name, [:groups_test_name]) == :undefined
    end

    # Two hops from a non-gateway of a (through a1 or a2), one from a gateway.
    assert {:ok, node} = call(a3, AWSCluster.Groups, :call, [:c, :erlang, :node, []])
    assert node in [c1.node, c2.node]
    assert {:ok, node} = call(a1, AWSCluster.Groups, :call, ["b", :erlang, :node, []])
    assert node in Enum.map(in_group(members, "b"), & &1.node)
    assert {:ok, n} = call(a3, AWSCluster.Groups, :call, [:a, :erlang, :node, []])
    assert n == a3.node

    assert {:error, %{reason: :call_failed, details: %{group: "c", hop: :remote}}} =
             call(a3, AWSCluster.Groups, :call, [:c, :erlang, :error, [:boom]])

    assert {:error, %{reason: :not_found, details: %{group: "zz"}}} =
             call(a3, AWSCluster.Groups, :call, [:zz, :erlang, :node, []])

    # Rendezvous routing agrees across groups.
    assert call(a3, AWSCluster.Groups, :route, [:c, "user-42"]) ==
             call(b3, AWSCluster.Groups, :route, [:c, "user-42"])

    # kill -9 a gateway of c: c3 takes over, in c's view and in every other gateway's.
    :ok = call(c3, TelemetryProbe, :local_collect, [])
    killed_at = System.monotonic_time(:millisecond)
    Fleet.kill!(c1)
    alive = members -- [c1]
    want = Fleet.group_links(alive, 2)

    assert Wait.until(fn -> Fleet.snapshot(c3).groups.gateway? end, 20_000)
    took = System.monotonic_time(:millisecond) - killed_at

    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(alive)
               Enum.all?(alive, &(snaps[&1.node].hidden == want[&1.node].hidden))
             end,
             20_000
           ),
           "gateways not replaced: #{inspect(Fleet.snapshots(alive))}"

    IO.puts(
      "groups: c3 became a gateway #{took} ms after kill -9 of c1 (interval #{@interval} ms)"
    )

    assert [{_, %{gateways: 2}, %{group: "c", gateway?: true, gateways: gateways}} | _] =
             call(c3, TelemetryProbe, :local_events, [])
             |> Enum.filter(&match?({[:aws_cluster, :groups, :gateways], _, _}, &1))

    assert gateways == [c2.node, c3.node]

    assert {:ok, node} = call(a3, AWSCluster.Groups, :call, [:c, :erlang, :node, []])
    assert node in [c2.node, c3.node]

    # Outside c, nobody lost a visible peer (c1's links to them were hidden).
    final = Fleet.snapshots(alive)

    for m <- alive,
        m.group != "c",
        do: assert(final[m.node].downs == [], "#{m.node}: #{inspect(final[m.node].downs)}")

    # Where users look: the doctor inside a node, mix aws_cluster.peers from outside.
    tags = %{"cluster" => "groups#{ctx.run}"}
    [{:ec2, spec}] = Fleet.topology(:ec2, a1, tags: tags, config: [group: {:tag, "group"}])
    checks = call(a1, AWSCluster.Doctor, :run, [[ec2: spec], [imds: false, connect: false]])
    by_name = Map.new(checks, &{&1.name, &1})

    assert %{status: :pass, message: "3 groups: a (3), b (3), c (3)" <> _} =
             by_name["groups [ec2]"]

    assert %{status: :pass, message: ":compat; this VM runs connect_all true" <> _} =
             by_name["group mode [ec2]"]

    assert by_name["gateway [ec2]"].message =~
             "this node is a gateway of group a; hidden links to #{b1.node}"

    Application.put_env(:aws_cluster, :topologies, ec2: spec)
    on_exit(fn -> Application.delete_env(:aws_cluster, :topologies) end)
    {0, out, _} = AWSCluster.Test.MixTask.run("aws_cluster.peers", ["--topology", "ec2"])
    rows = out |> String.split("\n") |> Map.new(&{Enum.at(String.split(&1), 3), String.split(&1)})
    assert ["c", "yes", "(4", "links)"] = Enum.take(rows[Atom.to_string(c3.node)], -4)
    assert ["a", "no"] = Enum.take(rows[Atom.to_string(a3.node)], -2)
    assert out =~ "gateway: #{a1.node} (group a) links to #{b1.node}"
    assert out =~ "gateway: #{c3.node} (group c) links to"
    assert Node.list(:hidden) == []
  end

  test "compat mode: a stray send merges two groups; it is reported and nothing is disconnected",
       ctx do
    compat = boot(ctx, 64, 1..4, 2, config: [gateways: {:lowest, 1}])
    assert formed(compat, 1)
    [_a1, a2, _b1, b2] = compat

    :ok = call(a2, TelemetryProbe, :local_collect, [])
    assert call(a2, :erpc, :call, [b2.node, :erlang, :node, []]) == b2.node

    assert Wait.until(
             fn -> File.read!(a2.log) =~ "group a's mesh merged with group b" end,
             10_000
           ),
           "no merge reported in #{a2.log}"

    assert [{[:aws_cluster, :groups, :crossed], %{count: 1}, meta}] =
             call(a2, TelemetryProbe, :local_events, [])
             |> Enum.filter(&match?({[:aws_cluster, :groups, :crossed], _, _}, &1))

    assert %{group: "a", other_group: "b", node: node, mode: :compat} = meta
    assert node == b2.node

    # global completes the merged mesh (connect_all true); no one cut a link to undo it.
    assert Wait.until(fn -> length(Fleet.snapshot(a2).connected) == 3 end, 10_000)
    snaps = Fleet.snapshots(compat)
    for m <- compat, do: assert(snaps[m.node].downs == [], "#{m.node}: #{inspect(snaps[m.node])}")
  end

  test "gateway nodes started with -hidden (OTP's supported hidden links) carry calls between groups",
       ctx do
    # a1 and b1 run -hidden and are the tagged gateways: every link they have is hidden.
    members =
      boot(ctx, 70, 1..4, 2,
        config: [gateways: {:tag, "gateway", "yes"}],
        gateway_tag: [1, 3],
        hidden: [1, 3]
      )

    [a1, a2, b1, b2] = members
    {a1_node, b1_node} = {a1.node, b1.node}

    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(members)

               snaps[a1.node].hidden == Enum.sort([a2.node, b1.node]) and
                 snaps[b1.node].hidden == Enum.sort([a1.node, b2.node]) and
                 match?(%{groups: %{gateways: %{"a" => [^a1_node]}}}, snaps[a2.node]) and
                 match?(%{groups: %{gateways: %{"b" => [^b1_node]}}}, snaps[b2.node]) and
                 match?(%{groups: %{gateway?: true}}, snaps[a1.node]) and
                 match?(%{groups: %{gateway?: true}}, snaps[b1.node]) and
                 snaps[a2.node].connected == [] and snaps
             end,
             30_000
           ),
           "not formed: #{inspect(Fleet.snapshots(members))}"

    assert {:ok, node} = call(a2, AWSCluster.Groups, :call, [:b, :erlang, :node, []])

    assert node in [b1.node, b2.node]
    assert {:ok, node} = call(b2, AWSCluster.Groups, :call, [:a, :erlang, :node, []])
    assert node in [a1.node, a2.node]
  end

  test "strict mode: the same send fails, the meshes stay apart, and calls go through the gateways",
       ctx do
    # Gateways by tag: a1 and b1.
    strict =
      boot(ctx, 66, 1..4, 2,
        config: [gateways: {:tag, "gateway", "yes"}, group_mode: :strict],
        gateway_tag: [1, 3],
        connect_all: false,
        args: ["-kernel", "dist_auto_connect", "never"]
      )

    assert formed(strict, 1)
    [a1, a2, b1, b2] = strict

    assert catch_error(call(a2, :erpc, :call, [b2.node, :erlang, :node, []])) ==
             {:erpc, :noconnection}

    # Routed through the gateways, the same call works.
    assert call(a2, AWSCluster.Groups, :call, [:b, :erlang, :node, [], :infinity]) ==
             {:ok, b1.node}

    Process.sleep(2_000)
    snaps = Fleet.snapshots(strict)
    assert snaps[a2.node].connected == [a1.node]
    assert snaps[b2.node].connected == [b1.node]

    # A link someone makes across groups on purpose is reported and cut by the next
    # round: safe here, global guards no overlap under connect_all false.
    :ok = call(a2, TelemetryProbe, :local_collect, [])
    assert call(a2, :net_kernel, :connect_node, [b2.node]) == true

    assert Wait.until(fn -> Fleet.snapshot(a2).connected == [a1.node] end, 10_000),
           "the crossing link stayed: #{inspect(Fleet.snapshot(a2))}"

    assert [{_, _, %{mode: :strict, other_group: "b"}}] =
             call(a2, TelemetryProbe, :local_events, [])
             |> Enum.filter(&match?({[:aws_cluster, :groups, :crossed], _, _}, &1))

    assert File.read!(a2.log) =~ "the next connect round cuts it"
  end

  test "{:shard, 3} splits 12 discovered instances the same way in another VM", ctx do
    tag = "shard#{ctx.run}"
    specs = Fleet.plan(12, prefix: "s", run: ctx.run, host_base: 68)
    Fleet.launch!(specs, %{"cluster" => tag})
    rule = {:shard, 3}
    config = [group: rule]
    [{:ec2, spec}] = Fleet.topology(:ec2, hd(specs), tags: %{"cluster" => tag}, config: config)

    {:ok, result} = AWSCluster.Probe.discover(:ec2, spec)
    assert length(result.peers) == 12
    here = Map.new(result.peers, &{&1.instance.id, Rule.group(rule, &1)})

    # A restart is another VM: it must place every instance where this one does.
    {pid, _node} = Cluster.start_peer("shard#{ctx.run}", "127.0.0.1")
    on_exit(fn -> Cluster.stop(pid) end)
    {:ok, again} = :peer.call(pid, AWSCluster.Probe, :discover, [:ec2, spec], 30_000)

    there =
      Map.new(again.peers, fn peer ->
        {peer.instance.id, :peer.call(pid, Rule, :group, [rule, peer])}
      end)

    assert here == there
    sizes = here |> Map.values() |> Enum.frequencies()
    assert Enum.all?(Map.keys(sizes), &(&1 in ["shard-0", "shard-1", "shard-2"]))
    # All 12 in one shard has odds of 3 in 3^12: a hash that ignored the id would.
    assert map_size(sizes) > 1
    IO.puts("groups: {:shard, 3} over 12 moto instances: #{inspect(Enum.sort(sizes))}")
  end

  test "gossip topologies group by announced metadata, with gateways and calls between groups",
       ctx do
    port = AWSCluster.Test.Ports.udp()
    specs = for i <- 1..4, do: Fleet.spec(i, prefix: "q", run: ctx.run, host_base: 72)
    seeds = Enum.map(specs, & &1.ip)

    members =
      boot_each(ctx, specs, fn spec ->
        group = if spec.index <= 2, do: "a", else: "b"

        topology =
          Fleet.topology(:gossip, spec,
            port: port,
            seeds: seeds,
            secret: Base.encode64(:binary.copy("k", 32)),
            interval: 500,
            metadata: %{"group" => group},
            config: [group: {:metadata, "group"}, gateways: {:lowest, 1}]
          )

        {topology, group}
      end)

    [q1, q2, q3, q4] = members
    nodes = Enum.map(members, & &1.node)

    # The links form before every announce is heard (a peer that hears a node dials it),
    # and node_info/1 and a view's groups know only the peers heard: wait for all four.
    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(members)

               Fleet.groups_formed?(members, snaps, 1) and
                 Enum.all?(members, &(snaps[&1.node].members == Enum.sort(nodes -- [&1.node]))) and
                 snaps
             end,
             30_000
           ),
           "not formed: #{inspect(Fleet.snapshots(members))}"

    assert call(q2, AWSCluster.Groups, :my_group, []) == "a"
    assert {:ok, node} = call(q2, AWSCluster.Groups, :call, [:b, :erlang, :node, []])
    assert node in [q3.node, q4.node]
    assert {:ok, %{group: "b"}} = call(q1, AWSCluster, :node_info, [q4.node])
  end

  test "regions: discovery spans two regions and group: :region keeps one mesh per region, joined by gateways",
       ctx do
    tag = "regions#{ctx.run}"
    west = "us-west-2"
    %{} = Moto.seed!("setup_vpc", %{region: west})
    specs = for i <- 1..4, do: Fleet.spec(i, prefix: "r", run: ctx.run, host_base: 74)
    {east_specs, west_specs} = Enum.split(specs, 2)
    Fleet.launch!(east_specs, %{"cluster" => tag})

    instances =
      for s <- west_specs, do: %{ip: s.ip, tags: %{"cluster" => tag, "node" => s.basename}}

    [_, _] = Moto.seed!("run_instances", %{region: west, instances: instances})

    members =
      boot_each(ctx, specs, fn spec ->
        topology =
          Fleet.topology(:ec2, spec,
            tags: %{"cluster" => tag},
            interval: @interval,
            config: [regions: [west], group: :region, gateways: {:lowest, 1}]
          )

        {topology, if(spec in east_specs, do: Moto.region(), else: west)}
      end)

    [e1, e2, w1, w2] = members
    assert formed(members, 1), "not formed: #{inspect(Fleet.snapshots(members))}"

    # One hidden link crosses the "WAN": e1 <-> w1.
    snaps = Fleet.snapshots(members)
    assert snaps[e1.node].hidden == [w1.node]
    assert snaps[e2.node].connected == [e1.node]
    assert {:ok, %{group: "us-west-2"}} = call(e2, AWSCluster, :node_info, [w2.node])
    assert {:ok, node} = call(e2, AWSCluster.Groups, :call, [west, :erlang, :node, []])
    assert node == w1.node
  end

  test "group: :auto_scaling_group places each instance of two AutoScaling groups by its group",
       ctx do
    specs = for i <- 1..4, do: Fleet.spec(i, prefix: "s", run: ctx.run, host_base: 76)
    [a1, a2, b1, b2] = Fleet.launch!(specs, %{"cluster" => "asg#{ctx.run}"})
    asg_a = Moto.create_asg!("web-a-#{ctx.run}", [a1.instance_id, a2.instance_id])
    asg_b = Moto.create_asg!("web-b-#{ctx.run}", [b1.instance_id, b2.instance_id])

    [{:asg, spec}] =
      Fleet.topology(:autoscaling, a1, group: asg_a, config: [group: :auto_scaling_group])

    spec = put_in(spec, [:config, :groups], [asg_a, asg_b])
    {:ok, result} = AWSCluster.Probe.discover(:asg, spec)

    placed = Map.new(result.peers, &{&1.instance.id, Rule.group(:auto_scaling_group, &1)})

    assert placed == %{
             a1.instance_id => asg_a,
             a2.instance_id => asg_a,
             b1.instance_id => asg_b,
             b2.instance_id => asg_b
           }
  end
end
