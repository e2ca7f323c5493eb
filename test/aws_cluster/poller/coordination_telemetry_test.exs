defmodule AWSCluster.Poller.CoordinationTelemetryTest do
  # This VM and one real peer node run the same EC2 topology on moto; the peer's name
  # sorts first, so it polls and this VM follows, then takes over when it stops.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.{Cluster, Moto, StrategyPeer, TelemetryProbe}

  setup do
    Application.put_env(:aws_cluster, :telemetry_module, TelemetryProbe)
    Process.register(self(), TelemetryProbe)
    on_exit(fn -> Application.delete_env(:aws_cluster, :telemetry_module) end)
  end

  test "elected, answer and a takeover, with the poller and the answer's source" do
    # "a0" sorts before this VM's "aws_cluster_test_..." name.
    basename = "a0t#{System.unique_integer([:positive])}"
    assert basename < Atom.to_string(node())

    [id] =
      Moto.run_instances!([
        %{ip: "127.0.1.51", tags: %{"cluster" => basename, "node" => basename}}
      ])

    {peer, peer_node} = Cluster.start_peer(basename, "127.0.1.51", [~c"-connect_all", ~c"false"])
    on_exit(fn -> Cluster.stop(peer) end)

    config = Moto.ec2_config(basename, node_basename: {:tag, "node"}, polling_interval: 500)

    topologies = [tele: [strategy: EC2, config: config]]
    {:ok, peer_sup} = :peer.call(peer, StrategyPeer, :start_detached, [topologies])
    start_supervised!({AWSCluster.Supervisor, topologies: topologies})
    me = node()

    # Alone at first, then the peer's follower once connected.
    assert_receive {:telemetry, [:aws_cluster, :poller, :elected], %{members: 1},
                    %{topology: :tele, strategy: EC2, poller: ^me, previous: nil, role: :poller}},
                   10_000

    assert_receive {:telemetry, [:aws_cluster, :poller, :elected], %{members: 2},
                    %{poller: ^peer_node, previous: ^me, role: :follower}},
                   10_000

    assert_receive {:telemetry, [:aws_cluster, :poller, :answer], %{peers: 1},
                    %{topology: :tele, from: ^peer_node}},
                   10_000

    # The peer's answer feeds this node's peer table as its own would.
    assert {:ok, %{instance_id: ^id, availability_zone: "us-east-1a"}} =
             AWSCluster.node_info(peer_node)

    assert peer_node in Map.get(AWSCluster.nodes_by_az(), "us-east-1a", [])

    :ok = :peer.call(peer, Supervisor, :stop, [peer_sup])

    assert_receive {:telemetry, [:aws_cluster, :poller, :elected], %{members: 1},
                    %{poller: ^me, previous: ^peer_node, role: :poller}},
                   10_000

    # The pg scope dies and its supervisor restarts it: the loop joins the new one.
    scope = Process.whereis(:aws_cluster_coordination)
    Process.exit(scope, :kill)

    assert_receive {:telemetry, [:aws_cluster, :poller, :elected], %{members: 1},
                    %{poller: ^me, previous: nil, role: :poller}},
                   10_000

    assert [{:tele, _} = key] =
             Enum.filter(:pg.which_groups(:aws_cluster_coordination), &match?({:tele, _}, &1))

    assert [_loop] = :pg.get_local_members(:aws_cluster_coordination, key)
  end
end
