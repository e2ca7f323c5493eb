defmodule AWSCluster.Strategy.RegistryTest do
  # Real parts: a PostgreSQL 15 started by the test (initdb, pg_ctl, a free loopback port,
  # password auth), real BEAM nodes as OS processes (AWSCluster.Test.Fleet), psql for
  # what an operator would type.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.Poller
  alias AWSCluster.Strategy.Registry
  alias AWSCluster.Test.{Fleet, Nodes, Postgres, RegistryRows, Wait}

  @moduletag timeout: 300_000
  @secret Base.encode64(:binary.copy("s", 32))
  @beat 300
  @ttl 1_200

  setup_all do
    case Postgres.available() do
      :ok ->
        pg = Postgres.start!()
        on_exit(fn -> Postgres.stop(pg) end)
        %{pg: pg, log_dir: Fleet.log_dir!("registry")}

      {:error, why} ->
        IO.puts("skipping the registry tests: #{why}")
        %{pg: nil}
    end
  end

  setup ctx do
    if ctx.pg == nil,
      do: {:skip, "no PostgreSQL"},
      else: %{run: "r#{System.unique_integer([:positive])}"}
  end

  defp config(ctx, extra \\ []) do
    Keyword.merge(
      [
        url: Postgres.url(ctx.pg),
        secret: @secret,
        cluster: ctx.run,
        heartbeat_interval: @beat,
        ttl: @ttl,
        polling_interval: @beat,
        prune_after: 2,
        connect_timeout: 1_000
      ],
      extra
    )
  end

  defp rows(ctx) do
    Postgres.query!(
      ctx.pg,
      "SELECT node, availability_zone, beats FROM aws_cluster_nodes " <>
        "WHERE cluster = '#{ctx.run}' ORDER BY node"
    )
  end

  defp boot(ctx, specs, extra \\ []) do
    cookie = Node.get_cookie()

    Fleet.boot_all(specs, fn spec ->
      topology = [
        reg: [strategy: Registry, config: config(ctx, [availability_zone: spec.az] ++ extra)]
      ]

      {topology, cookie: cookie, log_dir: ctx.log_dir}
    end)
  end

  test "4 nodes mesh through the table; SELECT shows them; a graceful stop leaves at once, a kill -9 after the TTL",
       ctx do
    specs = Fleet.plan(4, prefix: "reg", run: ctx.run, host_base: 95)
    members = boot(ctx, specs)
    on_exit(fn -> Enum.each(members, &Fleet.halt/1) end)

    assert Wait.until(fn -> Fleet.mesh?(members, Fleet.snapshots(members)) end, 30_000),
           "no mesh: #{inspect(Fleet.snapshots(members))}"

    # What an operator sees.
    assert for([node, az, _beats] <- rows(ctx), do: {node, az}) ==
             Enum.sort(for s <- specs, do: {Atom.to_string(s.node), s.az})

    # Heartbeats keep coming, one write per node and interval; reads are coordinated,
    # one node reading for all (polls counts each node's own reads).
    beats = fn ->
      rows(ctx) |> Enum.map(fn [_, _, b] -> String.to_integer(b) end) |> Enum.sum()
    end

    reads = fn ->
      Fleet.snapshots(members) |> Map.values() |> Enum.map(& &1.polls) |> Enum.sum()
    end

    {beats0, reads0, t0} = {beats.(), reads.(), System.monotonic_time(:millisecond)}
    Process.sleep(3_000)
    {beats1, reads1, t1} = {beats.(), reads.(), System.monotonic_time(:millisecond)}
    per_min = fn n -> Float.round(n * 60_000 / (t1 - t0), 1) end
    assert beats1 - beats0 >= 4
    assert (reads1 - reads0) * 2 < beats1 - beats0, "reads not coordinated"

    IO.puts(
      "registry: 4 nodes, heartbeat and polling every #{@beat} ms: " <>
        "#{per_min.(beats1 - beats0)} writes/min, #{per_min.(reads1 - reads0)} reads/min"
    )

    # Graceful stop: its row is deleted as it goes.
    [a, b, c, d] = members
    Fleet.stop(d)
    refute Enum.any?(rows(ctx), fn [node | _] -> node == Atom.to_string(d.node) end)

    # kill -9: its row stays until the TTL, then the survivors prune it.
    Fleet.kill!(c)
    assert Enum.any?(rows(ctx), fn [node | _] -> node == Atom.to_string(c.node) end)
    survivors = [a, b]

    assert Wait.until(
             fn ->
               snaps = Fleet.snapshots(survivors)

               Enum.all?(
                 survivors,
                 &(c.node not in snaps[&1.node].members and d.node not in snaps[&1.node].members)
               )
             end,
             30_000
           )

    assert Fleet.mesh?(survivors, Fleet.snapshots(survivors))
  end

  test "rows without the right MAC, replayed, overlong or hostile are never dialled and make no atom, however many sort first",
       ctx do
    name = fn tag -> "#{ctx.run}#{tag}" end
    good = "#{name.("good")}@127.0.1.97"
    forged = "#{name.("forged")}@127.0.1.98"
    overlong = "#{String.duplicate("x", 300)}@127.0.1.99"
    hostile = "#{name.("evil")}@evil.example"
    wrong_host = "#{name.("moved")}@127.0.2.99"
    replayed = "#{name.("replayed")}@127.0.1.95"
    # A minute's ttl keeps the hand-written rows live through the test.
    ttl = 60_000
    now = System.os_time(:millisecond)

    # last_seen is now(): a writer to the table can always make a row look fresh.
    insert = fn node, address, stamp, mac ->
      Postgres.query!(
        ctx.pg,
        "INSERT INTO aws_cluster_nodes (cluster, node, address, boot_id, version, stamp_ms, mac) " <>
          "VALUES ('#{ctx.run}', '#{node}', '#{address}', 'b', '0.1.0', #{stamp}, '#{mac}')"
      )
    end

    table = Nodes.table()

    # max_peers 3 reads at most 4 verified rows: the 600 forged rows that sort before the
    # good one (more than a page) must not crowd it out.
    pid =
      start_supervised!(
        {Registry,
         [topology: :macs, config: config(ctx, max_peers: 3, ttl: ttl)] ++
           Nodes.mfas(self(), table)}
      )

    # The table exists once this node's row is in.
    assert Wait.until(fn -> rows(ctx) != [] end, 10_000)

    # A row signed here with the secret (HKDF + HMAC as documented): it verifies.
    insert.(good, "127.0.1.97", now, mac(ctx.run, good, "127.0.1.97", now))
    # Forged: a MAC made without the secret.
    insert.(forged, "127.0.1.98", now, String.duplicate("ab", 32))
    # Signed with the secret but not a name to dial: too long, not an IP, not its address.
    insert.(overlong, "127.0.1.99", now, mac(ctx.run, overlong, "127.0.1.99", now))
    insert.(hostile, "evil.example", now, mac(ctx.run, hostile, "evil.example", now))
    insert.(wrong_host, "127.0.1.96", now, mac(ctx.run, wrong_host, "127.0.1.96", now))
    # Signed with the secret 10 s before the TTL: a copy of an old row, replayed.
    old = now - ttl - 10_000
    insert.(replayed, "127.0.1.95", old, mac(ctx.run, replayed, "127.0.1.95", old))

    Postgres.query!(
      ctx.pg,
      "INSERT INTO aws_cluster_nodes (cluster, node, address, boot_id, version, stamp_ms, mac) " <>
        "SELECT '#{ctx.run}', '#{ctx.run}a' || lpad(i::text, 4, '0') || '@127.0.1.94', " <>
        "'127.0.1.94', 'b', '0.1.0', #{now}, repeat('ab', 32) FROM generate_series(1, 600) i"
    )

    log =
      capture_log(fn ->
        assert_receive {:connect, node}, 10_000
        assert Atom.to_string(node) == good
        # Two more rounds: nothing else is dialled.
        polls = Poller.status(pid).polls
        assert Wait.until(fn -> Poller.status(pid).polls >= polls + 2 end, 10_000)
      end)

    refute_received {:connect, _}
    assert Map.keys(Poller.status(pid).members) == [String.to_existing_atom(good)]

    for bad <- [forged, overlong, hostile, wrong_host, replayed, "#{ctx.run}a0001@127.0.1.94"] do
      assert_raise ArgumentError, fn -> String.to_existing_atom(bad) end
    end

    assert log =~ "605 row(s) refused and not dialled"
  end

  test "PostgreSQL restarted mid-run: the set is kept, reads and heartbeats resume", ctx do
    [spec] = Fleet.plan(1, prefix: "regpg", run: ctx.run, host_base: 94)
    [peer] = boot(ctx, [spec])
    on_exit(fn -> Fleet.halt(peer) end)
    table = Nodes.table()

    pid =
      start_supervised!(
        {Registry, [topology: :restart, config: config(ctx)] ++ Nodes.mfas(self(), table)}
      )

    assert_receive {:connect, node}, 10_000
    assert node == peer.node

    Postgres.halt!(ctx.pg)
    assert Wait.until(fn -> Poller.status(pid).failures >= 3 end, 20_000)
    status = Poller.status(pid)
    assert status.health == :failing
    assert status.last_error.reason in [:unreachable, :timeout]
    # Well past prune_after failed rounds: errors are not misses.
    assert Map.keys(status.members) == [peer.node]

    Postgres.resume!(ctx.pg)
    assert Wait.until(fn -> Poller.status(pid).health == :healthy end, 20_000)
    assert Map.keys(Poller.status(pid).members) == [peer.node]
    [[_, _, b1] | _] = rows(ctx)

    assert Wait.until(
             fn ->
               [[_, _, b2] | _] = rows(ctx)
               String.to_integer(b2) > String.to_integer(b1)
             end,
             10_000
           )

    refute_received {:disconnect, _}
  end

  test "NOTIFY brings a join long before the next poll (10 s interval)", ctx do
    table = Nodes.table()
    config = config(ctx, polling_interval: 10_000)

    pid =
      start_supervised!(
        {Registry, [topology: :notify, config: config] ++ Nodes.mfas(self(), table)}
      )

    # Its first round (an empty table but for itself) is done: the next is 10 s away.
    assert Wait.until(fn -> Poller.status(pid).polls >= 1 end, 10_000)
    polls = Poller.status(pid).polls

    [spec] = Fleet.plan(1, prefix: "regnotify", run: ctx.run, host_base: 93)
    started = System.monotonic_time(:millisecond)
    [peer] = boot(ctx, [spec])
    on_exit(fn -> Fleet.halt(peer) end)
    booted = System.monotonic_time(:millisecond) - started

    # Without the hint it would come at the 10 s poll; 5 s leaves no doubt which it was.
    assert_receive {:connect, node}, 5_000
    assert node == peer.node
    joined = System.monotonic_time(:millisecond) - started
    assert (Poller.status(pid).polls - polls) in 1..2

    IO.puts(
      "registry: a join seen #{joined} ms after the node's boot began (the boot took " <>
        "#{booted} ms; polling_interval 10 s)"
    )
  end

  test "bad credentials: the topology starts failing with an error naming url:, and no secret is logged",
       ctx do
    password = "not-the-password-#{ctx.run}"
    table = Nodes.table()

    log =
      capture_log(fn ->
        pid =
          start_supervised!(
            {Registry,
             [
               topology: :creds,
               config: config(ctx, url: Postgres.url(ctx.pg, password: password))
             ] ++
               Nodes.mfas(self(), table)}
          )

        assert Wait.until(fn -> Poller.status(pid).failures >= 2 end, 10_000)
        status = Poller.status(pid)
        assert status.last_error.reason == :unauthorized
        assert status.last_error.message =~ "url:"
        refute status.last_error.message =~ password
      end)

    refute log =~ password
    refute log =~ @secret
    refute log =~ ctx.pg.password
  end

  test "TLS: verify_full with the server's CA works, without it fails saying so; require encrypts",
       ctx do
    tls = Postgres.start!(tls: true)
    on_exit(fn -> Postgres.stop(tls) end)
    plain_pg = ctx.pg
    ctx = %{ctx | pg: tls}
    table = Nodes.table()

    start = fn topology, extra ->
      start_supervised!(
        {Registry, [topology: topology, config: config(ctx, extra)] ++ Nodes.mfas(self(), table)},
        id: topology
      )
    end

    verified = start.(:verified, ssl: :verify_full, ssl_ca_file: tls.ca)
    assert Wait.until(fn -> Poller.status(verified).health == :healthy end, 10_000)

    # The server sees an encrypted connection from aws_cluster.
    assert [["t" | _] | _] =
             Postgres.query!(
               tls,
               "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) " <>
                 "WHERE a.application_name = 'aws_cluster'"
             )

    # The system's roots do not know this CA.
    untrusted = start.(:untrusted, ssl: :verify_full)
    assert Wait.until(fn -> Poller.status(untrusted).failures >= 1 end, 10_000)
    error = Poller.status(untrusted).last_error
    assert error.message =~ "ssl_ca_file"
    assert error.message =~ "certificate"

    # In the URL, as RDS users write it.
    url = Postgres.url(tls) <> "?sslmode=verify-full&sslrootcert=#{tls.ca}"
    from_url = start.(:from_url, url: url)
    assert Wait.until(fn -> Poller.status(from_url).health == :healthy end, 10_000)

    required = start.(:required, ssl: :require)
    assert Wait.until(fn -> Poller.status(required).health == :healthy end, 10_000)

    # A key=value string as libpq reads it, spaces around = and a quoted value.
    key_value = fn pg, tls_part ->
      "host=127.0.0.1 port=#{pg.port} user=#{Postgres.user()} password='#{pg.password}' " <>
        "dbname=#{Postgres.user()} #{tls_part}"
    end

    spaced = key_value.(tls, "sslmode = verify-full sslrootcert = '#{tls.ca}'")
    from_key_value = start.(:from_key_value, url: spaced)
    assert Wait.until(fn -> Poller.status(from_key_value).health == :healthy end, 10_000)

    # Read, not dropped to prefer: require refuses the server without TLS.
    plain = start.(:plain, url: key_value.(plain_pg, "sslmode = require"))
    assert Wait.until(fn -> Poller.status(plain).failures >= 1 end, 10_000)
    assert Poller.status(plain).last_error.reason == :unreachable
  end

  test "hostname:, port:, username:, password:, database: as an Ecto repo names them, any password quoted",
       ctx do
    # Spaces, a quote and a backslash: each would break an unquoted key=value string.
    password = "a b'c\\d #{ctx.run}"
    sql_password = String.replace(password, "'", "''")

    # Its own table, which it creates: the other tests' table stays the test user's.
    user = "odd_#{ctx.run}"
    table_name = "kw_#{ctx.run}"

    Postgres.query!(
      ctx.pg,
      "CREATE USER #{user} PASSWORD '#{sql_password}'; " <>
        "GRANT USAGE, CREATE ON SCHEMA public TO #{user}"
    )

    config =
      ctx
      |> config(
        hostname: "127.0.0.1",
        port: ctx.pg.port,
        username: user,
        password: password,
        database: Postgres.user(),
        table: table_name
      )
      |> Keyword.delete(:url)

    table = Nodes.table()

    log =
      capture_log(fn ->
        pid =
          start_supervised!(
            {Registry, [topology: :keywords, config: config] ++ Nodes.mfas(self(), table)}
          )

        assert Wait.until(fn -> Poller.status(pid).health == :healthy end, 10_000),
               inspect(Poller.status(pid).last_error)
      end)

    mine = [[Atom.to_string(node())]]
    assert Wait.until(fn -> Postgres.query!(ctx.pg, "SELECT node FROM #{table_name}") == mine end)
    refute log =~ password
  end

  test "bad config fails the start, naming the key", ctx do
    for {extra, key} <- [
          {[table: "nodes; DROP TABLE x"], :table},
          {[secret: "short"], :secret},
          {[ttl: @beat], :ttl},
          {[url: "postgres://u:pw@/db?sslmode=bogus"], :url},
          {[url: "postgres://u:pw@/db?connect_timeout=soon"], :url},
          {[ssl: :verify_full, ssl_ca_file: "/nonexistent/ca.pem"], :ssl_ca_file},
          {[backend: :mysql], :backend},
          {[hostname: "127.0.0.1"], :url}
        ] do
      assert {:error, %AWSCluster.Error{reason: :invalid_config} = e} =
               Registry.start_link(topology: :cfg, config: config(ctx, extra)),
             inspect(extra)

      assert e.details.key == key, "#{inspect(extra)}: #{e.message}"
      refute e.message =~ "pw@"
    end
  end

  defp mac(cluster, node, address, stamp),
    do: RegistryRows.mac(@secret, cluster, node, address, stamp)
end
