defmodule AWSCluster.Strategy.EC2PagesTest do
  # Answers that are cut off, end early or answer the wrong question, between the client
  # and moto (FaultProxy's page modes), and the prune guard on a real scale-in. 15 tagged
  # instances at 5 per page give 3 pages; connects go through injected MFAs.
  use AWSCluster.Test.MotoCase, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.{AWS, Error, Poller}
  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.{FaultProxy, Moto, Nodes, Wait}

  @moduletag timeout: 180_000

  setup do
    tag = "pages#{System.unique_integer([:positive])}"
    ips = for i <- 1..15, do: "127.0.#{rem(i, 3) + 1}.#{100 + i}"
    ids = Moto.run_instances!(for ip <- ips, do: %{ip: ip, tags: %{"cluster" => tag}})
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
    nodes = for ip <- ips, do: :"app@#{ip}"
    %{tag: tag, ids: ids, proxy: proxy, nodes: nodes}
  end

  test "a page cut mid-XML without Content-Length, or answering another action, is bad_response naming the page",
       %{tag: tag, proxy: proxy} do
    {:ok, client} = AWS.client(Moto.client_opts(endpoint: FaultProxy.endpoint(proxy)))
    describe = fn -> AWS.describe_instances(client, %{"tag:cluster" => tag}, page_size: 5) end
    assert {:ok, all} = describe.()
    assert length(all) == 15

    for {which, damage, page, text} <- [
          {:first, :cut, 1, "the document ends inside"},
          {:middle, :cut, 2, "the document ends inside"},
          {:last, :cut, 3, "the document ends inside"},
          {:middle, :wrong_root, 2,
           "expected <DescribeInstancesResponse>, got <DescribeVolumesResponse>"}
        ] do
      FaultProxy.set_mode(proxy, {:page, which, damage})

      assert {:error, %Error{reason: :bad_response, message: message}} = describe.(),
             "#{which} #{damage}"

      assert message =~ "page #{page}: #{text}", message
    end

    # What no parser can see: whole XML without its next token ends the listing early.
    FaultProxy.set_mode(proxy, {:page, :first, :drop_next_token})
    assert {:ok, short} = describe.()
    assert length(short) == 5
  end

  test "no damaged answer prunes a peer: errors keep the set, a short answer is held and then refuted",
       %{tag: tag, proxy: proxy, nodes: nodes} do
    pid = start_ec2(tag, proxy)
    assert Wait.until(fn -> map_size(Poller.status(pid).members) == 15 end, 20_000)

    log =
      capture_log(fn ->
        for mode <- [
              {:page, :first, :cut},
              {:page, :middle, :cut},
              {:page, :last, :cut},
              {:page, :middle, :wrong_root},
              {:page, :first, :drop_next_token}
            ] do
          polls = Poller.status(pid).polls
          FaultProxy.set_mode(proxy, {:once, mode})
          # The damaged poll and one clean poll after it.
          assert Wait.until(fn -> Poller.status(pid).polls >= polls + 2 end, 20_000)
        end
      end)

    assert log =~ "discovery failing (bad_response)"
    assert log =~ "holding the prune of 10 of 15 peers (over 30% at once)"
    status = Poller.status(pid)
    assert Enum.sort(Map.keys(status.members)) == Enum.sort(nodes)
    assert status.held == []
    refute_received {:disconnect, _}
  end

  test "a genuine scale-in of half the instances is pruned one complete answer later, no sooner",
       %{tag: tag, proxy: proxy, ids: ids, nodes: nodes} do
    pid = start_ec2(tag, proxy)
    assert Wait.until(fn -> map_size(Poller.status(pid).members) == 15 end, 20_000)

    {gone_ids, _} = Enum.split(ids, 8)
    gone = Enum.take(nodes, 8)
    t0 = System.monotonic_time(:millisecond)
    Moto.terminate!(gone_ids)

    held = Wait.until(fn -> Poller.status(pid).held != [] and Poller.status(pid) end, 20_000)
    t_held = System.monotonic_time(:millisecond)
    assert held.held == Enum.sort(gone)
    assert map_size(held.members) == 15
    refute_received {:disconnect, _}

    for node <- gone, do: assert_receive({:disconnect, ^node}, 20_000)
    t_pruned = System.monotonic_time(:millisecond)
    status = Poller.status(pid)
    assert status.polls == held.polls + 1
    assert Enum.sort(Map.keys(status.members)) == Enum.sort(nodes -- gone)

    IO.puts(
      "\nscale-in of 8 of 15: held #{t_held - t0} ms after termination, pruned " <>
        "#{t_pruned - t0} ms after it (one poll later, polling_interval 500 ms)"
    )
  end

  defp start_ec2(tag, proxy) do
    config = [
      tags: %{"cluster" => tag},
      node_basename: "app",
      page_size: 5,
      region: Moto.region(),
      endpoint: FaultProxy.endpoint(proxy),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      polling_interval: 500,
      prune_after: 1,
      # The injected disconnect MFA is how this test sees a prune happen.
      prune_disconnect: :always
    ]

    topology = :"pages_#{System.unique_integer([:positive])}"

    start_supervised!(
      {EC2, [topology: topology, config: config] ++ Nodes.mfas(self(), Nodes.table())}
    )
  end
end
