defmodule AWSCluster.Strategy.RegistryDynamoDBTest do
  # The registry on DynamoDB: moto_server's DynamoDB (a real table with its key schema
  # and TTL setting), real BEAM nodes as OS processes, the fault proxy for AWS faults.
  use AWSCluster.Test.MotoCase, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.Registry
  alias AWSCluster.Test.{FaultProxy, Fleet, Moto, Nodes, RegistryRows, Wait}

  @moduletag timeout: 300_000
  @secret Base.encode64(:binary.copy("d", 32))
  @beat 300
  @ttl 1_200

  setup_all do
    %{log_dir: Fleet.log_dir!("registry_dynamodb")}
  end

  setup do
    run = "d#{System.unique_integer([:positive])}"
    table = "#{run}-nodes"
    Moto.seed!("dynamodb_table", %{name: table})
    %{run: run, table: table}
  end

  defp config(ctx, extra \\ []) do
    Keyword.merge(
      [
        backend: :dynamodb,
        table: ctx.table,
        secret: @secret,
        cluster: ctx.run,
        heartbeat_interval: @beat,
        ttl: @ttl,
        polling_interval: @beat,
        prune_after: 2,
        connect_timeout: 1_000,
        region: Moto.region(),
        endpoint: Moto.endpoint(),
        access_key_id: "testing",
        secret_access_key: "testing",
        max_attempts: 1,
        operation_timeout: 2_000
      ],
      extra
    )
  end

  defp items(ctx), do: Moto.seed!("dynamodb_items", %{name: ctx.table})
  defp nodes_in_table(ctx), do: ctx |> items() |> Enum.map(& &1["node"]) |> Enum.sort()

  test "4 nodes mesh through the table; a Scan shows them; a graceful stop leaves at once, a kill -9 after the TTL",
       ctx do
    specs = Fleet.plan(4, prefix: "dyn", run: ctx.run, host_base: 92)
    cookie = Node.get_cookie()

    members =
      Fleet.boot_all(specs, fn spec ->
        config = config(ctx, availability_zone: spec.az)
        {[reg: [strategy: Registry, config: config]], cookie: cookie, log_dir: ctx.log_dir}
      end)

    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)

    assert Wait.until(fn -> Fleet.mesh?(members, Fleet.snapshots(members)) end, 30_000),
           "no mesh: #{inspect(Fleet.snapshots(members))}"

    assert nodes_in_table(ctx) == Enum.sort(for s <- specs, do: Atom.to_string(s.node))
    item = Enum.find(items(ctx), &(&1["node"] == Atom.to_string(hd(specs).node)))
    assert item["availability_zone"] == hd(specs).az
    # The table's TTL attribute, in epoch seconds, a TTL ahead.
    assert_in_delta String.to_integer(item["expires_at"]), System.os_time(:second), 5

    [a, b, c, d] = members
    Fleet.stop(d)
    refute Atom.to_string(d.node) in nodes_in_table(ctx)

    # Killed: its item stays (DynamoDB's TTL sweep is days away) but it is expired, and
    # readers filter that themselves.
    Fleet.kill!(c)
    survivors = [a, b]

    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(survivors)

               Enum.all?(survivors, fn m ->
                 c.node not in snaps[m.node].members and d.node not in snaps[m.node].members
               end)
             end,
             30_000
           )

    assert Atom.to_string(c.node) in nodes_in_table(ctx)
    assert Fleet.mesh?(survivors, Fleet.snapshots(survivors))
  end

  test "an item without the right MAC is never dialled; one signed with the secret is", ctx do
    # A minute's ttl keeps the hand-written items live through the test.
    ttl = 60_000
    now = System.os_time(:millisecond)
    # Signed with the secret 10 s before the TTL: a copy of an old item, replayed.
    old = now - ttl - 10_000
    good = "#{ctx.run}good@127.0.1.91"
    forged = "#{ctx.run}forged@127.0.1.92"
    replayed = "#{ctx.run}replayed@127.0.1.90"

    put = fn node, address, stamp, mac ->
      item = %{
        "cluster" => ctx.run,
        "node" => node,
        "address" => address,
        "boot_id" => "b",
        "version" => "0.1.0",
        "mac" => mac,
        "stamp_ms" => "##{stamp}"
      }

      Moto.seed!("dynamodb_put", %{name: ctx.table, item: item})
    end

    put.(good, "127.0.1.91", now, RegistryRows.mac(@secret, ctx.run, good, "127.0.1.91", now))
    put.(forged, "127.0.1.92", now, String.duplicate("00", 32))

    put.(
      replayed,
      "127.0.1.90",
      old,
      RegistryRows.mac(@secret, ctx.run, replayed, "127.0.1.90", old)
    )

    table = Nodes.table()

    log =
      capture_log(fn ->
        pid =
          start_supervised!(
            {Registry,
             [topology: :macs, config: config(ctx, ttl: ttl)] ++ Nodes.mfas(self(), table)}
          )

        assert_receive {:connect, node}, 10_000
        assert Atom.to_string(node) == good
        polls = Poller.status(pid).polls
        assert Wait.until(fn -> Poller.status(pid).polls >= polls + 2 end, 10_000)
        assert Map.keys(Poller.status(pid).members) == [node]
      end)

    refute_received {:connect, _}
    assert_raise ArgumentError, fn -> String.to_existing_atom(forged) end
    assert_raise ArgumentError, fn -> String.to_existing_atom(replayed) end
    assert log =~ "row(s) refused and not dialled"
  end

  test "a topology started again in the same VM (same boot id) writes over the row its last life left",
       ctx do
    table = Nodes.table()
    me = Atom.to_string(node())
    mine = fn -> Enum.find(items(ctx), &(&1["node"] == me)) end
    child = {Registry, [topology: :again, config: config(ctx)] ++ Nodes.mfas(self(), table)}

    start_supervised!(child, id: :again)

    assert Wait.until(
             fn -> mine.() != nil and String.to_integer(mine.()["beats"]) >= 2 end,
             10_000
           )

    left = mine.()
    # A graceful stop deletes the row; put it back, as a delete lost at a crash would leave it.
    stop_supervised!(:again)
    assert mine.() == nil
    Moto.seed!("dynamodb_put", %{name: ctx.table, item: Map.new(left, &typed/1)})

    start_supervised!(child, id: :again)

    assert Wait.until(
             fn -> String.to_integer(mine.()["beats"]) > String.to_integer(left["beats"]) end,
             10_000
           ),
           "the restarted topology's writes were refused: #{inspect(mine.())}"

    assert String.to_integer(mine.()["seq"]) > String.to_integer(left["seq"])
  end

  test "throttling and a refused endpoint keep the set, name dynamodb:Query, and recover", ctx do
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
    now = System.os_time(:millisecond)
    peer = "#{ctx.run}peer@127.0.1.93"

    Moto.seed!("dynamodb_put", %{
      name: ctx.table,
      item: %{
        "cluster" => ctx.run,
        "node" => peer,
        "address" => "127.0.1.93",
        "boot_id" => "b",
        "version" => "0.1.0",
        "mac" => RegistryRows.mac(@secret, ctx.run, peer, "127.0.1.93", now),
        "stamp_ms" => "##{now}"
      }
    })

    table = Nodes.table()
    # The peer's hand-written item stays live through every fault for 10 minutes.
    config = config(ctx, endpoint: FaultProxy.endpoint(proxy), max_backoff: 1_000, ttl: 600_000)

    pid =
      start_supervised!(
        {Registry, [topology: :faults, config: config] ++ Nodes.mfas(self(), table)}
      )

    assert_receive {:connect, _}, 10_000

    for {mode, reason} <- [{:throttle, :throttled}, {:refuse, :unreachable}] do
      FaultProxy.set_mode(proxy, mode)
      failures = Poller.status(pid).failures
      assert Wait.until(fn -> Poller.status(pid).failures >= failures + 3 end, 20_000)
      status = Poller.status(pid)
      assert status.last_error.reason == reason, inspect(status.last_error)
      assert Map.keys(status.members) == [String.to_existing_atom(peer)]
      FaultProxy.set_mode(proxy, :pass)
      assert Wait.until(fn -> Poller.status(pid).health == :healthy end, 20_000)
    end

    refute_received {:disconnect, _}
  end

  test "without NOTIFY a join is learned at the observer's next read", ctx do
    table = Nodes.table()
    interval = 2_000
    config = config(ctx, polling_interval: interval)

    pid =
      start_supervised!(
        {Registry, [topology: :observer, config: config] ++ Nodes.mfas(self(), table)}
      )

    assert Wait.until(fn -> Poller.status(pid).polls >= 1 end, 10_000)

    [spec] = Fleet.plan(1, prefix: "dynjoin", run: ctx.run, host_base: 91)
    started = System.monotonic_time(:millisecond)

    [peer] =
      Fleet.boot_all([spec], fn _spec ->
        {[reg: [strategy: Registry, config: config(ctx)]],
         cookie: Node.get_cookie(), log_dir: ctx.log_dir}
      end)

    on_exit(fn -> Fleet.halt(peer) end)
    booted = System.monotonic_time(:millisecond) - started
    assert_receive {:connect, node}, 3 * interval
    assert node == peer.node
    learned = System.monotonic_time(:millisecond) - started

    IO.puts(
      "registry (dynamodb, no NOTIFY): a join learned #{learned} ms after the boot began " <>
        "(boot #{booted} ms, polling_interval #{interval} ms)"
    )
  end

  # dynamodb_items gives every attribute as text; dynamodb_put reads "#..." as a number.
  @numbers ~w(beats seq expires_at stamp_ms)
  defp typed({key, value}) when key in @numbers, do: {key, "#" <> value}
  defp typed(pair), do: pair

  test "bad config names the key", ctx do
    for {extra, key} <- [{[table: "x"], :table}, {[secret: "short"], :secret}] do
      assert {:error, %AWSCluster.Error{reason: :invalid_config} = e} =
               Registry.start_link(topology: :cfg, config: config(ctx, extra))

      assert e.details.key == key
    end
  end
end
