defmodule AWSCluster.Strategy.EC2PruneTest do
  # A prune of a live peer under OTP 25's default kernel settings. Unlike the other
  # cluster tests, these nodes run WITHOUT `-connect_all false`: `global` and its
  # prevent_overlapping_partitions guard are on, as in a user's release. Real parts:
  # moto instances at 127.0.x.y and real peer nodes named after them.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.{Cluster, Moto, StrategyPeer, Wait}

  @moduletag timeout: 300_000
  @ips ["127.0.1.41", "127.0.2.41", "127.0.3.41", "127.0.1.42"]

  defp topology(tag) do
    config = Moto.ec2_config(tag, polling_interval: 500, prune_after: 2, connect_timeout: 1_000)

    [ec2: [strategy: EC2, config: config]]
  end

  defp call(peer, m, f, a), do: :peer.call(peer.pid, m, f, a)
  defp connected(peer), do: call(peer, Node, :list, [])
  defp downs(peer), do: call(peer, StrategyPeer, :downs, [])
  defp members(peer), do: call(peer, StrategyPeer, :status, [peer.sup]).members

  defp mesh?(peers) do
    Enum.all?(peers, fn p -> Enum.all?(peers -- [p], &(&1.node in connected(p))) end)
  end

  test "pruning a live peer cuts no link: the others never see a nodedown; a dead one drops out" do
    tag = "prune#{System.unique_integer([:positive])}"

    ids =
      Moto.run_instances!(
        for {ip, i} <- Enum.with_index(@ips, 1),
            do: %{ip: ip, tags: %{"cluster" => tag, "node_basename" => "#{tag}n#{i}"}}
      )

    peers =
      for {ip, i} <- Enum.with_index(@ips, 1) do
        {pid, node} = Cluster.start_peer("#{tag}n#{i}", ip)
        assert :peer.call(pid, :init, :get_argument, [:connect_all]) == :error
        {:ok, sup} = :peer.call(pid, StrategyPeer, :start_detached, [topology(tag)])
        %{pid: pid, node: node, sup: sup}
      end

    on_exit(fn -> for p <- peers, do: Cluster.stop(p.pid) end)
    assert Wait.until(fn -> mesh?(peers) end, 30_000), "no mesh"

    [n1, n2, n3, n4] = peers
    rest = [n1, n2, n3]
    for p <- peers, do: call(p, StrategyPeer, :reset_downs, [])

    # Node 4 keeps running; only its instance's tag changes. The others prune it.
    Moto.tag!([List.last(ids)], %{"cluster" => "elsewhere"})

    assert Wait.until(fn -> Enum.all?(rest, &(not Map.has_key?(members(&1), n4.node))) end),
           "node 4 never pruned"

    # OTP's overlap guard acts within ~30 ms of a disconnect; give it far more.
    Process.sleep(3_000)

    for p <- rest do
      assert downs(p) == [], "#{p.node} saw nodedowns: #{inspect(downs(p))}"
    end

    assert mesh?(rest)
    # Nothing cut the live node's links either: it is simply no longer dialed.
    assert Enum.all?(rest, &(n4.node in connected(&1)))

    # A real termination: the instance goes and its node dies. It drops out by nodedown.
    Moto.terminate!([List.last(ids)])
    Cluster.stop(n4.pid)

    assert Wait.until(fn -> Enum.all?(rest, &(n4.node not in connected(&1))) end, 30_000)

    for p <- rest, do: assert(downs(p) == [n4.node])
    assert mesh?(rest)
  end
end
