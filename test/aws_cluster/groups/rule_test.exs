defmodule AWSCluster.Groups.RuleTest do
  use ExUnit.Case, async: true

  alias AWSCluster.{Error, Poller}
  alias AWSCluster.Groups.{Gateways, Link, Mode, Plan, Rule}
  alias AWSCluster.Strategy.{EC2, State}

  defp peer(node, instance), do: %{node: node, instance: instance, address: nil}

  defp instance(id, opts \\ []) do
    %{
      id: id,
      availability_zone: Keyword.get(opts, :az, "eu-west-1a"),
      tags: Keyword.get(opts, :tags, %{})
    }
  end

  describe "group/2" do
    test "each rule reads what it names, and gives no group when it is missing" do
      p =
        peer(
          :"a@127.0.0.1",
          instance("i-1", tags: %{"G" => "red", "aws:autoscaling:groupName" => "web"})
        )

      bare = peer(:"b@127.0.0.1", %{id: "i-2"})

      assert Rule.group("static", p) == "static"
      assert Rule.group({:tag, "G"}, p) == "red"
      assert Rule.group({:tag, "G"}, bare) == nil
      assert Rule.group(:availability_zone, p) == "eu-west-1a"
      assert Rule.group(:availability_zone, bare) == nil
      assert Rule.group(:auto_scaling_group, p) == "web"
      assert Rule.group(:auto_scaling_group, bare) == nil
      assert Rule.group({:shard, 4}, p) == "shard-#{:erlang.phash2("i-1", 4)}"
      assert Rule.group(fn peer -> peer.instance.id <> "!" end, p) == "i-1!"
    end

    test "a function that raises or returns a non-string gives no group" do
      p = peer(:"a@127.0.0.1", instance("i-1"))
      assert Rule.group(fn _ -> raise "boom" end, p) == nil
      assert Rule.group(fn _ -> :atom end, p) == nil
      assert Rule.group(fn _ -> "" end, p) == nil
    end

    test "{:shard, k} spreads instance ids evenly over many ids" do
      counts = Enum.frequencies(for i <- 1..30_000, do: Rule.shard("i-#{i}", 3))
      assert map_size(counts) == 3
      for {_shard, n} <- counts, do: assert(abs(n - 10_000) < 500, inspect(counts))
    end
  end

  describe "configuration" do
    defp start(config) do
      base = [
        region: "eu-west-1",
        access_key_id: "k",
        secret_access_key: "s",
        tags: %{"a" => "b"},
        node_basename: "app"
      ]

      EC2.start_link(topology: :groups_config, config: Keyword.merge(base, config))
    end

    test "an unknown group rule, k < 1 and a bad gateway rule name the key" do
      for {config, key} <- [
            {[group: :by_magic], :group},
            {[group: {:shard, 0}], :group},
            {[group: {:tag, ""}], :group},
            {[group: "a", gateways: {:lowest, 0}], :gateways},
            {[group: "a", gateways: {:tag, "gw"}], :gateways},
            {[group: "a", group_mode: :loose], :group_mode}
          ] do
        assert {:error, %Error{reason: :invalid_config, details: %{key: ^key}} = e} =
                 start(config)

        assert e.message =~ inspect(key)
      end
    end

    test "a rule the strategy's peers can never match is refused at start, naming the key" do
      assert {:error, %Error{details: %{key: :group}} = e} = start(group: {:metadata, "g"})
      assert e.message =~ "never matches a ec2 peer"

      secret = Base.encode64(:binary.copy("s", 32))

      for {config, key} <- [
            {[group: {:tag, "g"}], :group},
            {[group: :region], :group},
            {[group: {:metadata, "g"}, gateways: {:tag, "gw", "yes"}], :gateways}
          ] do
        assert {:error, %Error{details: %{key: ^key}}} =
                 AWSCluster.Gossip.Config.validate(
                   [secret: secret, seeds: ["127.0.0.1:45892"]] ++ config,
                   :t
                 )
      end

      assert {:ok, _} =
               AWSCluster.Gossip.Config.validate(
                 [secret: secret, seeds: ["127.0.0.1:45892"], group: {:metadata, "g"}],
                 :t
               )
    end

    test "strict mode on a VM with default kernel settings names the kernel parameters" do
      assert Mode.kernel() == %{connect_all: true, dist_auto_connect: :always}

      assert {:error, %Error{reason: :invalid_config, details: %{key: :group_mode}} = e} =
               start(group: {:tag, "g"}, group_mode: :strict)

      assert e.message =~ "-kernel connect_all false -kernel dist_auto_connect never"
      assert e.message =~ "connect_all true, dist_auto_connect always"
    end

    test "without group: nothing changes, and the gateway rule defaults to {:lowest, 2}" do
      {:ok, state} =
        State.new(topology: :t, config: [region: "r", tags: %{"a" => "b"}, node_basename: "app"])

      assert {:ok, config} = Poller.validate(EC2, state)
      assert %{group: nil, self_group: nil, gateways: {:lowest, 2}, group_mode: :compat} = config
      assert Plan.new(config, %{}, []) == nil
    end
  end

  test "route/3 picks one member per key, and a leaving member moves only its own keys" do
    topology = :"route_#{System.unique_integer([:positive])}"
    members = for i <- 1..5, do: :"n#{i}@127.0.0.1"

    view = fn nodes ->
      %{
        group: "a",
        mode: :compat,
        members: %{"a" => nodes, "b" => [:"x@127.0.0.2"]},
        gateways: %{},
        gateway?: false,
        links: []
      }
    end

    AWSCluster.Peers.put_view(topology, view.(members))
    keys = for k <- 1..1_000, do: "user-#{k}"
    before = Map.new(keys, &{&1, elem(AWSCluster.Groups.route(:a, &1, topology), 1)})
    counts = Enum.frequencies(Map.values(before))
    assert map_size(counts) == 5
    assert Enum.all?(Map.values(counts), &(&1 > 120)), inspect(counts)

    gone = hd(members)
    AWSCluster.Peers.put_view(topology, view.(tl(members)))
    after_ = Map.new(keys, &{&1, elem(AWSCluster.Groups.route("a", &1, topology), 1)})
    moved = Enum.filter(keys, &(before[&1] != after_[&1]))
    assert moved != []
    assert Enum.all?(moved, &(before[&1] == gone))

    assert {:error, %Error{reason: :not_found, details: %{group: "zz"}}} =
             AWSCluster.Groups.route(:zz, "k", topology)
  end

  # If this fails, OTP removed what gateway links rely on (erlang/otp#6932): gateways
  # must then run on nodes started with -hidden (see AWSCluster.Groups.Link).
  test "this OTP can make hidden links" do
    assert function_exported?(:net_kernel, :hidden_connect_node, 1),
           "OTP #{System.otp_release()} has no :net_kernel.hidden_connect_node/1"

    assert Link.available?()
  end

  describe "plans" do
    setup do
      other = :"x@127.0.0.9"
      untagged = :"y@127.0.0.9"
      mate = :"z@127.0.0.9"

      members = %{
        other => %{peer: peer(other, instance("i-2", tags: %{"g" => "b", "gw" => "yes"}))},
        untagged => %{peer: peer(untagged, instance("i-3"))},
        mate => %{peer: peer(mate, instance("i-4", tags: %{"g" => "a"}))}
      }

      # Names in an answer may still be strings.
      mine = peer(Atom.to_string(node()), instance("i-1", tags: %{"g" => "a", "gw" => "yes"}))
      answer = [mine | Enum.map(members, &elem(&1, 1).peer)]
      config = %{group: {:tag, "g"}, self_group: nil, gateways: {:lowest, 2}, group_mode: :compat}
      %{other: other, mate: mate, members: members, answer: answer, config: config}
    end

    test "a plan dials only this node's group", ctx do
      plan = Plan.new(ctx.config, ctx.members, ctx.answer)
      assert plan.group == "a"
      assert plan.members == %{"a" => Enum.sort([node(), ctx.mate]), "b" => [ctx.other]}
      assert Plan.dial(plan, Map.keys(ctx.members)) == [ctx.mate]
      assert Plan.group_of(plan, ctx.other) == "b"
    end

    test "self_group places this node only when the rule cannot, and the last group holds when the answer misses it",
         ctx do
      config = %{ctx.config | self_group: "b"}
      assert Plan.new(config, ctx.members, ctx.answer).group == "a"

      plan = Plan.new(config, ctx.members, tl(ctx.answer))
      assert plan.group == "b"
      assert Plan.dial(plan, Map.keys(ctx.members)) == [ctx.other]

      previous = Plan.new(ctx.config, ctx.members, ctx.answer)
      missed = Plan.new(ctx.config, ctx.members, tl(ctx.answer), previous)
      assert missed.group == "a"
      # Missing from one answer is not a move.
      assert missed.moved == []
      unplaced = Plan.new(ctx.config, ctx.members, tl(ctx.answer))
      assert unplaced.group == nil
      assert Plan.dial(unplaced, Map.keys(ctx.members)) == []
      assert Plan.dial(nil, [ctx.mate]) == [ctx.mate]
    end

    test "the gateway tag counts on this node's own instance too", ctx do
      plan = Plan.new(%{ctx.config | gateways: {:tag, "gw", "yes"}}, ctx.members, ctx.answer)
      assert MapSet.equal?(plan.tagged, MapSet.new([node(), ctx.other]))
      assert Gateways.choose(plan, [node()], [node()]) == [node()]
    end

    test "in compat mode a member keeps its group when its tag changes; strict regroups it",
         ctx do
      previous = Plan.new(ctx.config, ctx.members, ctx.answer)
      retagged = put_in(ctx.members, [ctx.other, :peer, :instance, :tags, "g"], "a")

      plan = Plan.new(ctx.config, retagged, ctx.answer, previous)
      assert Plan.group_of(plan, ctx.other) == "b"
      assert plan.moved == [ctx.other]
      assert Plan.dial(plan, Map.keys(retagged)) == [ctx.mate]

      # A tag removed: the member keeps its group too.
      untagged = put_in(ctx.members, [ctx.other, :peer, :instance, :tags], %{})
      plan = Plan.new(ctx.config, untagged, ctx.answer, previous)
      assert Plan.group_of(plan, ctx.other) == "b"

      strict = %{ctx.config | group_mode: :strict}
      plan = Plan.new(strict, retagged, ctx.answer, Plan.new(strict, ctx.members, ctx.answer))
      assert Plan.group_of(plan, ctx.other) == "a"
      assert Enum.sort(Plan.dial(plan, Map.keys(retagged))) == Enum.sort([ctx.other, ctx.mate])
    end
  end

  test "the doctor's group mode check: strict outside the node warns, inside a node on other settings fails" do
    topology = :"doctor_#{System.unique_integer([:positive])}"
    config = %{group: {:tag, "g"}, group_mode: :strict, gateways: {:lowest, 2}}
    result = %{peers: [peer(:"a@127.0.0.1", instance("i-1", tags: %{"g" => "a"}))]}

    [mode, groups] = AWSCluster.Doctor.Groups.checks(topology, config, result)
    assert %{status: :warn, fix: "run the check inside the node" <> _} = mode
    assert mode.message =~ "-kernel connect_all false -kernel dist_auto_connect never"
    assert %{status: :pass, message: "1 groups: a (1); gateways {:lowest, 2}"} = groups

    view = %{group: nil, mode: :strict, members: %{}, gateways: %{}, gateway?: false, links: []}
    AWSCluster.Peers.put_view(topology, view)
    [mode, _groups, gateway] = AWSCluster.Doctor.Groups.checks(topology, config, result)
    assert mode.status == :fail
    assert %{status: :fail, fix: "set self_group:"} = gateway

    tagged = %{config | group_mode: :compat, gateways: {:tag, "gw", "yes"}}
    [_mode, groups, _] = AWSCluster.Doctor.Groups.checks(topology, tagged, result)
    assert groups.status == :warn and groups.message =~ "no member carries the gateway tag in a"
  end
end
