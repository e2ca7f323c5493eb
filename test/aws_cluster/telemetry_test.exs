defmodule AWSCluster.TelemetryTest do
  # Every documented event, emitted by the real code paths: the EC2 strategy against
  # moto (through the fault proxy) connecting this VM to a real peer node, and the
  # gossip strategy receiving real UDP datagrams. `:telemetry` itself cannot be
  # installed here; AWSCluster.Test.TelemetryProbe stands in for it through
  # `config :aws_cluster, :telemetry_module`, which AWSCluster.Telemetry honours.
  use ExUnit.Case, async: false

  alias AWSCluster.Test.{Cluster, FaultProxy, Moto, Ports, TelemetryProbe}

  @moduletag timeout: 120_000

  setup do
    Application.put_env(:aws_cluster, :telemetry_module, TelemetryProbe)
    Process.register(self(), TelemetryProbe)
    on_exit(fn -> Application.delete_env(:aws_cluster, :telemetry_module) end)
    %{tag: "t#{System.unique_integer([:positive])}"}
  end

  test "without a telemetry module nothing is sent and execute/3 still returns :ok" do
    Application.put_env(:aws_cluster, :telemetry_module, :no_such_telemetry_module)
    assert AWSCluster.Telemetry.execute([:aws_cluster, :x], %{}, %{}) == :ok
    refute_received {:telemetry, _, _, _}

    Application.put_env(:aws_cluster, :telemetry_module, TelemetryProbe)
    assert AWSCluster.Telemetry.execute([:aws_cluster, :x], %{n: 1}, %{m: 2}) == :ok
    assert_received {:telemetry, [:aws_cluster, :x], %{n: 1}, %{m: 2}}
  end

  test "discovery start/stop/exception and node connect/disconnect from EC2 on moto", %{tag: tag} do
    Moto.start!()
    Moto.fresh!()
    [id] = Moto.run_instances!([%{ip: "127.0.1.50", tags: %{"cluster" => tag, "n" => "#{tag}a"}}])
    {peer, peer_node} = Cluster.start_peer("#{tag}a", "127.0.1.50")
    on_exit(fn -> Cluster.stop(peer) end)

    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})

    config = [
      tags: %{"cluster" => tag},
      node_basename: {:tag, "n"},
      region: Moto.region(),
      endpoint: FaultProxy.endpoint(proxy),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      operation_timeout: 5_000,
      polling_interval: 200,
      prune_after: 1,
      # Two nodes, no third to expel anyone: the disconnect event is observable.
      prune_disconnect: :always
    ]

    start_supervised!(
      {AWSCluster.Supervisor,
       topologies: [tele: [strategy: AWSCluster.Strategy.EC2, config: config]]}
    )

    meta = %{topology: :tele, strategy: AWSCluster.Strategy.EC2}

    assert_receive {:telemetry, [:aws_cluster, :discovery, :start], %{system_time: t}, ^meta},
                   10_000

    assert is_integer(t)

    assert_receive {:telemetry, [:aws_cluster, :discovery, :stop], %{duration: d, peers: 1},
                    ^meta},
                   10_000

    assert is_integer(d) and d > 0

    assert_receive {:telemetry, [:aws_cluster, :node, :connect], %{count: 1},
                    %{topology: :tele, node: ^peer_node}},
                   10_000

    assert peer_node in Node.list()

    # A 500 from the endpoint: an exception event with the error's reason.
    FaultProxy.set_mode(proxy, {:status, 500})

    assert_receive {:telemetry, [:aws_cluster, :discovery, :exception], %{duration: d},
                    %{topology: :tele, strategy: AWSCluster.Strategy.EC2, reason: :bad_response}},
                   10_000

    assert is_integer(d) and d > 0
    # An error never disconnects.
    refute_received {:telemetry, [:aws_cluster, :node, :disconnect], _, _}
    assert peer_node in Node.list()

    # The instance terminates: the next complete answer lacks it, prune_after is 1.
    FaultProxy.set_mode(proxy, :pass)
    Moto.terminate!([id])

    assert_receive {:telemetry, [:aws_cluster, :discovery, :stop], %{peers: 0}, ^meta}, 10_000

    assert_receive {:telemetry, [:aws_cluster, :node, :disconnect], %{count: 1},
                    %{topology: :tele, node: ^peer_node}},
                   10_000
  end

  test "gossip rejected: one event per dropped datagram, with its reason" do
    port = Ports.udp()

    start_supervised!(
      {AWSCluster.Strategy.Gossip,
       [
         topology: :tele_gossip,
         config: [
           secret: String.duplicate("k", 32),
           port: port,
           if_addr: "127.0.0.1",
           seeds: ["127.0.0.1:#{Ports.udp()}"],
           announce_interval: 60_000
         ]
       ]}
    )

    {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}])
    on_exit(fn -> :gen_udp.close(socket) end)

    # libcluster's killer packet, then a datagram of the right size but sealed by nobody.
    :ok = :gen_udp.send(socket, {127, 0, 0, 1}, port, "heartbeat::garbage")
    :ok = :gen_udp.send(socket, {127, 0, 0, 1}, port, :crypto.strong_rand_bytes(300))

    reasons =
      for _ <- 1..2 do
        assert_receive {:telemetry, [:aws_cluster, :gossip, :rejected], %{count: 1},
                        %{topology: :tele_gossip, reason: reason}},
                       10_000

        reason
      end

    assert Enum.all?(reasons, &is_atom/1)
    stats = AWSCluster.Strategy.Gossip.stats(:tele_gossip)
    assert stats.rejected_total == 2
    for r <- reasons, do: assert(stats.rejected[r] >= 1)
  end
end
