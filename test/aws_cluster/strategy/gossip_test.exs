defmodule AWSCluster.Strategy.GossipTest do
  # Real UDP sockets and real BEAM nodes: a live receiver in this VM fed hostile datagrams,
  # peers on 127.0.9.x forming a mesh over unicast, and nodes in network namespaces (made
  # and removed here) forming one over IPv4 and IPv6 multicast.
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.Error
  alias AWSCluster.Gossip.Codec
  alias AWSCluster.Strategy.Gossip
  alias AWSCluster.Test.{Cluster, Netns, Nodes, Ports, StrategyPeer, TelemetryProbe, Wait}

  @moduletag timeout: 900_000

  defp secret, do: Base.encode64(:crypto.strong_rand_bytes(32))

  defp uniq, do: System.unique_integer([:positive])

  defp existing_atom?(name) do
    _ = String.to_existing_atom(name)
    true
  rescue
    ArgumentError -> false
  end

  # Gossip rounds are slower than the shared default bound, so 30 s here.
  defp wait_for(fun, timeout \\ 30_000, every \\ 100), do: Wait.until(fun, timeout, every)

  describe "options" do
    # Errors found in init (interface, port, key ring) stop the linked process.
    setup do
      Process.flag(:trap_exit, true)
      :ok
    end

    defp start(config, topology \\ :"opts#{uniq()}") do
      Gossip.start_link(topology: topology, config: config)
    end

    defp base, do: [secret: secret(), seeds: ["127.0.0.1:#{Ports.udp()}"], port: Ports.udp()]

    test "a missing secret is an error naming :secret" do
      assert {:error, %Error{reason: :invalid_config, details: %{key: :secret}} = e} =
               start(seeds: ["127.0.0.1"])

      assert e.message =~ "shared secret of at least 32 bytes"
    end

    test "a short secret is an error that does not echo it, unless insecure" do
      assert {:error, %Error{details: %{key: :secret}, message: m}} =
               start(Keyword.put(base(), :secret, "hunter2-hunter2"))

      assert m =~ "15 bytes"
      refute m =~ "hunter2"

      assert {:error, %Error{details: %{key: :secrets}, message: m}} =
               start(base() |> Keyword.delete(:secret) |> Keyword.put(:secrets, [secret(), "x"]))

      assert m =~ "secret #1"

      log =
        capture_log(fn ->
          assert {:ok, pid} = start(Keyword.merge(base(), secret: "short", insecure: true))
          GenServer.stop(pid)
        end)

      assert log =~ "insecure: true"
    end

    test "insecure without any secret starts, with a warning" do
      log =
        capture_log(fn ->
          assert {:ok, pid} =
                   start(base() |> Keyword.delete(:secret) |> Keyword.put(:insecure, true))

          GenServer.stop(pid)
        end)

      assert log =~ "forge"
    end

    test "every bad option is named" do
      cases = [
        {[secret: secret()], :multicast_addr},
        {Keyword.put(base(), :bogus, 1), :bogus},
        {Keyword.put(base(), :port, 70_000), :port},
        {Keyword.put(base(), :seeds, ["127.0.0.1", "::1"]), :seeds},
        {Keyword.put(base(), :seeds, ["not a seed!"]), :seeds},
        {Keyword.put(base(), :multicast_addr, "10.0.0.1"), :multicast_addr},
        {Keyword.put(base(), :multicast_if, "lo"), :multicast_if},
        {Keyword.put(base(), :secrets, [secret()]), :secret},
        {Keyword.put(base(), :metadata, %{"AZ" => "upper"}), :metadata},
        {Keyword.put(base(), :metadata, %{"az" => String.duplicate("z", 65)}), :metadata},
        {Keyword.put(base(), :label, "bad\nlabel"), :label},
        {Keyword.put(base(), :announce_interval, 0), :announce_interval}
      ]

      for {config, key} <- cases do
        assert {:error, %Error{reason: :invalid_config, details: %{key: ^key}} = e} =
                 start(config),
               "expected an error naming #{inspect(key)} for #{inspect(config)}"

        assert e.message =~ inspect(key)
      end
    end

    test "a port still taken, or a missing interface, starts failing and opens once fixed" do
      {:ok, blocker} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}])
      {:ok, port} = :inet.port(blocker)
      config = Keyword.merge(base(), port: port, if_addr: "127.0.0.1", announce_interval: 200)

      log =
        capture_log(fn ->
          assert {:ok, pid} = start(config)

          assert %{health: :failing, last_error: %Error{reason: :unavailable} = e} =
                   Gossip.stats(pid)

          assert e.details.key == :port
          :gen_udp.close(blocker)
          # Retries back off from 25 ms up to the 200 ms interval.
          assert Wait.until(fn -> Gossip.stats(pid).health == :healthy end, 5_000)
          GenServer.stop(pid)
        end)

      assert length(String.split(log, "gossip cannot listen yet")) == 2

      mcast = Keyword.merge(base(), multicast_addr: "239.255.77.9", multicast_if: "nosuch0")

      capture_log(fn ->
        assert {:ok, pid} = start(mcast)
        assert %{health: :failing, last_error: e} = Gossip.stats(pid)
        assert e.reason == :unavailable and e.details.key == :multicast_if
        assert e.message =~ "nosuch0"
        GenServer.stop(pid)
      end)
    end

    test "a seed name that does not resolve yet starts failing and resolves on a retry" do
      # Lookups from the hosts table only, so the test sends no DNS query anywhere.
      lookup = :inet_db.res_option(:lookup)
      :inet_db.set_lookup([:file])
      host = "seed#{uniq()}.aws-cluster.invalid"
      port = Ports.udp()

      config = [
        secret: secret(),
        seeds: ["#{host}:#{port}"],
        port: Ports.udp(),
        announce_interval: 200
      ]

      try do
        capture_log(fn ->
          assert {:ok, pid} = start(config)
          assert %{health: :failing, last_error: e} = Gossip.stats(pid)
          assert e.reason == :unavailable and e.details.key == :seeds and e.message =~ host

          :inet_db.add_host({127, 0, 0, 1}, [String.to_charlist(host)])
          assert Wait.until(fn -> Gossip.stats(pid).health == :healthy end, 5_000)
          GenServer.stop(pid)
        end)
      after
        :inet_db.del_host({127, 0, 0, 1})
        :inet_db.set_lookup(lookup)
      end
    end

    test "rotate/2 checks the new secrets" do
      {:ok, pid} = start(base())
      assert {:error, %Error{details: %{key: :secrets}}} = Gossip.rotate(pid, ["short"])
      assert {:error, %Error{details: %{key: :secrets}}} = Gossip.rotate(pid, [])
      [old] = Gossip.stats(pid).key_ids
      new = secret()
      capture_log(fn -> assert :ok = Gossip.rotate(pid, [new, "x" <> new]) end)
      assert [first, second] = Gossip.stats(pid).key_ids
      assert old not in [first, second]
      GenServer.stop(pid)
    end
  end

  describe "a live receiver" do
    setup do
      topology = :"live#{uniq()}"
      secret = secret()
      label = Atom.to_string(topology)
      port = Ports.udp()
      {:ok, sink} = :gen_udp.open(0, [:binary, active: false, ip: {127, 0, 0, 1}])
      {:ok, sink_port} = :inet.port(sink)
      {:ok, sender} = :gen_udp.open(0, [:binary, active: false, ip: {127, 0, 0, 1}])
      table = Nodes.table()

      # A separate process counts the events: 100,000 messages in the test process's
      # mailbox would make every gen_udp.send (a selective receive) scan them all.
      collector = spawn_link(fn -> collect_telemetry(%{}) end)
      Process.register(collector, TelemetryProbe)
      previous = Application.get_env(:aws_cluster, :telemetry_module)
      Application.put_env(:aws_cluster, :telemetry_module, TelemetryProbe)

      on_exit(fn ->
        if previous,
          do: Application.put_env(:aws_cluster, :telemetry_module, previous),
          else: Application.delete_env(:aws_cluster, :telemetry_module)

        # The link alone ends the collector asynchronously, so the next test's setup
        # could find its name still registered.
        ref = Process.monitor(collector)
        Process.exit(collector, :kill)
        assert_receive {:DOWN, ^ref, :process, _, _}, 5_000
      end)

      start = fn extra ->
        config =
          Keyword.merge(
            [
              secret: secret,
              port: port,
              if_addr: "127.0.0.1",
              seeds: ["127.0.0.1:#{sink_port}"],
              announce_interval: 100,
              stats_log_interval: 1_000
            ],
            extra
          )

        start_supervised!(
          {Gossip, [topology: topology, config: config] ++ Nodes.mfas(self(), table)}
        )
      end

      {:ok, ring} = Codec.keyring([secret], label)

      %{
        topology: topology,
        secret: secret,
        label: label,
        ring: ring,
        port: port,
        sink: sink,
        sender: sender,
        start: start,
        table: table
      }
    end

    defp announce(ring, name, seq, overrides \\ %{}) do
      message =
        Map.merge(
          %{kind: :announce, name: name, boot_id: 77, seq: seq, meta: %{"az" => "test-1a"}},
          overrides
        )

      {:ok, packet} = Codec.seal(ring, message)
      packet
    end

    defp handled(pid) do
      s = Gossip.stats(pid)
      s.accepted + s.own + s.rejected_total
    end

    # Sends in batches and waits until the receiver has counted each batch, so the
    # kernel's socket buffer never overflows and every datagram is accounted for.
    defp deliver(ctx, pid, packets) do
      packets
      |> Enum.chunk_every(200)
      |> Enum.each(fn chunk ->
        target = handled(pid) + length(chunk)
        for p <- chunk, do: :ok = :gen_udp.send(ctx.sender, {127, 0, 0, 1}, ctx.port, p)

        assert wait_for(fn -> handled(pid) >= target end, 20_000, 5),
               "receiver counted #{handled(pid)} of #{target} datagrams"
      end)
    end

    # What `open` must say about bytes that are not a genuine packet: the checks in order.
    defp classify(packet, tag, key_id) do
      case packet do
        p when byte_size(p) < 68 -> :too_short
        p when byte_size(p) > 1400 -> :too_large
        <<v, _::binary>> when v != 1 -> :bad_version
        <<1, t::binary-4, _::binary>> when t != tag -> :wrong_label
        <<1, _::binary-4, k::binary-4, _::binary>> when k != key_id -> :unknown_key
        _ -> :auth_failed
      end
    end

    defp delta(before, after_) do
      Map.new(after_, fn {k, v} -> {k, v - Map.get(before, k, 0)} end)
      |> Map.reject(fn {_, v} -> v == 0 end)
    end

    defp expect_case(ctx, pid, packets, expected) do
      before = Gossip.stats(pid)
      deliver(ctx, pid, packets)
      after_ = Gossip.stats(pid)
      assert delta(before.rejected, after_.rejected) == expected
      after_.accepted - before.accepted
    end

    defp send_from(ctx, socket, packet),
      do: :ok = :gen_udp.send(socket, {127, 0, 0, 1}, ctx.port, packet)

    defp host_socket(ip) do
      {:ok, socket} = :gen_udp.open(0, [:binary, active: false, ip: ip])
      socket
    end

    test "a packet is bound to its source host, and a leave is final for that boot", ctx do
      pid = ctx.start.(peer_timeout: 3_600_000)
      {host7, host8} = {host_socket({127, 0, 0, 7}), host_socket({127, 0, 0, 8})}
      name = "victim#{uniq()}@127.0.0.7"
      node = String.to_atom(name)
      # One announce per target, each with its own seq: we get seq 2; 1 and 3 went to
      # other targets, where an attacker captured them.
      [a1, a2, a3] = for seq <- 1..3, do: announce(ctx.ring, name, seq)
      rejected = fn reason -> Map.get(Gossip.stats(pid).rejected, reason, 0) end
      address = fn -> get_in(Gossip.peers(pid), [node, :address]) || "" end

      capture_log(fn ->
        send_from(ctx, host7, a2)
        assert wait_for(fn -> address.() =~ "127.0.0.7:" end, 5_000, 10)

        # Replayed from another host: its seq is unseen, but the name's host is not the
        # source. The peer's address does not move.
        send_from(ctx, host8, a1)
        assert wait_for(fn -> rejected.(:source_mismatch) == 1 end, 5_000, 10)
        assert address.() =~ "127.0.0.7:"

        {:ok, leave} = Codec.seal(ctx.ring, %{kind: :leave, name: name, boot_id: 77, seq: 10})
        send_from(ctx, host7, leave)
        assert wait_for(fn -> not Map.has_key?(Gossip.peers(pid), node) end, 5_000, 10)

        # A captured pre-leave announce from the right host: unseen, in the window, and
        # still refused after the leave.
        send_from(ctx, host7, a3)
        assert wait_for(fn -> rejected.(:after_leave) == 1 end, 5_000, 10)
        refute Map.has_key?(Gossip.peers(pid), node)

        # The node restarts: a new boot id is welcome.
        send_from(ctx, host7, announce(ctx.ring, name, 0, %{boot_id: 78}))
        assert wait_for(fn -> Map.has_key?(Gossip.peers(pid), node) end, 5_000, 10)
      end)

      for sock <- [host7, host8], do: :gen_udp.close(sock)
    end

    test "name churn mints at most name_budget atoms over a lifetime; the rest are refused",
         ctx do
      pid = ctx.start.(max_peers: 4, name_budget: 6, name_budget_per_day: 0, peer_timeout: 150)
      prefix = "churn#{uniq()}x"
      names = for i <- 1..32, do: "#{prefix}#{i}@127.0.0.1"

      # One round of the whole path (heard, dialed, forgotten) with a name that is an atom
      # already, which costs no token: code loaded on first use adds atoms of its own.
      warm = Atom.to_string(:"warm@127.0.0.1")

      capture_log(fn ->
        deliver(ctx, pid, [announce(ctx.ring, warm, 1_000)])
        assert wait_for(fn -> Gossip.stats(pid).peers == 0 end, 5_000, 20)
      end)

      assert Gossip.stats(pid).names_left == 6
      atoms = :erlang.system_info(:atom_count)

      capture_log(fn ->
        # Eight waves of four fresh names; each wave is forgotten (silent for 150 ms),
        # which frees its max_peers slots for the next.
        for {wave, w} <- names |> Enum.chunk_every(4) |> Enum.with_index() do
          deliver(
            ctx,
            pid,
            for({n, i} <- Enum.with_index(wave), do: announce(ctx.ring, n, w * 4 + i))
          )

          assert wait_for(fn -> Gossip.stats(pid).peers == 0 end, 5_000, 20)
        end
      end)

      grown = :erlang.system_info(:atom_count) - atoms
      minted = Enum.count(names, &existing_atom?/1)
      stats = Gossip.stats(pid)
      assert minted == 6
      assert grown <= 8, "the atom table grew by #{grown}"
      # The replay guard also bounds the senders it tracks (2 * max_peers + 16): past
      # that, names are dropped before the budget is even asked.
      assert stats.rejected[:name_budget] > 0
      assert stats.rejected[:name_budget] + Map.get(stats.rejected, :too_many_senders, 0) == 26
      assert stats.names_left == 0
    end

    test "libcluster's Gossip datagrams are dropped, never acted on; the default ports differ",
         ctx do
      pid = ctx.start.([])
      key = :crypto.hash(:sha256, ctx.secret)
      plain = "heartbeat::" <> :erlang.term_to_binary(%{node: :"lc#{uniq()}@127.0.0.1"})
      pad = 16 - rem(byte_size(plain), 16)
      iv = :crypto.strong_rand_bytes(16)
      padded = plain <> :binary.copy(<<pad>>, pad)
      sealed = iv <> :crypto.crypto_one_time(:aes_256_cbc, key, iv, padded, true)

      capture_log(fn ->
        before = Gossip.stats(pid)
        deliver(ctx, pid, [plain, sealed, plain, sealed])
        stats = Gossip.stats(pid)
        assert stats.rejected_total - before.rejected_total == 4
        assert stats.accepted == before.accepted and stats.peers == 0
      end)

      assert Process.alive?(pid)
      assert AWSCluster.Gossip.Config.default_port() != 45_892

      case System.get_env("LIBCLUSTER_PATH") do
        path when path not in [nil, ""] ->
          source = File.read!(Path.join(path, "lib/strategy/gossip.ex"))
          assert source =~ "@default_port 45892"

        _ ->
          IO.puts("not comparing with libcluster's source: LIBCLUSTER_PATH is not set")
      end
    end

    test "survives hostile datagrams, counting each case under its own reason", ctx do
      pid = ctx.start.(peer_timeout: 3_600_000)
      atoms_before = :erlang.system_info(:atom_count)
      good = announce(ctx.ring, "ghost@127.0.0.1", 1)
      <<1, tag::binary-4, key_id::binary-4, _::binary>> = good
      len = byte_size(good)
      counts = fn packets -> Enum.frequencies_by(packets, &classify(&1, tag, key_id)) end

      {_, log} =
        with_log(fn ->
          # libcluster's killer packet
          assert expect_case(ctx, pid, ["heartbeat::garbage"], %{too_short: 1}) == 0

          random = for n <- 0..2000, do: :crypto.strong_rand_bytes(n)
          assert expect_case(ctx, pid, random, counts.(random)) == 0

          truncated = for n <- 0..(len - 1), do: binary_part(good, 0, n)
          expected = %{too_short: 68, auth_failed: len - 68}
          assert counts.(truncated) == expected
          assert expect_case(ctx, pid, truncated, expected) == 0

          flips =
            for bit <- 0..(len * 8 - 1) do
              <<pre::bitstring-size(bit), b::1, post::bitstring>> = good
              <<pre::bitstring, 1 - b::1, post::bitstring>>
            end

          expected = %{
            bad_version: 8,
            wrong_label: 32,
            unknown_key: 32,
            auth_failed: len * 8 - 72
          }

          assert counts.(flips) == expected
          assert expect_case(ctx, pid, flips, expected) == 0

          {:ok, wrong_key} = Codec.keyring([secret()], ctx.label)
          packets = for i <- 1..10, do: announce(wrong_key, "ghost@127.0.0.1", 100 + i)
          assert expect_case(ctx, pid, packets, %{unknown_key: 10}) == 0

          {:ok, wrong_label} = Codec.keyring([ctx.secret], "another-cluster")
          packets = for i <- 1..10, do: announce(wrong_label, "ghost@127.0.0.1", 200 + i)
          assert expect_case(ctx, pid, packets, %{wrong_label: 10}) == 0

          # The genuine packet once, then played back, then re-sealed with a fresh nonce.
          assert expect_case(ctx, pid, [good], %{}) == 1
          replays = List.duplicate(good, 5) ++ [announce(ctx.ring, "ghost@127.0.0.1", 1)]
          assert expect_case(ctx, pid, replays, %{replayed: 6}) == 0

          now = System.os_time(:millisecond)

          stale =
            for i <- 1..5,
                do: announce(ctx.ring, "ghost@127.0.0.1", 300 + i, %{timestamp: now - 600_000})

          future =
            for i <- 1..5,
                do: announce(ctx.ring, "ghost@127.0.0.1", 400 + i, %{timestamp: now + 600_000})

          assert expect_case(ctx, pid, stale, %{stale: 5}) == 0
          assert expect_case(ctx, pid, future, %{future: 5}) == 0

          oversized =
            for n <- [1401, 1500, 4_096, 9_000, 65_000],
                do: good <> :crypto.strong_rand_bytes(n - len)

          assert expect_case(ctx, pid, oversized, %{too_large: 5}) == 0

          # Well-formed payloads under the genuine header, sealed with a key the attacker
          # made up: the names must never become atoms.
          {:ok, forger} = Codec.keyring([secret()], ctx.label)
          run = uniq()
          names = for i <- 1..100_000, do: "forged#{run}n#{i}@127.0.0.1"

          forged =
            for name <- names do
              <<1, t::binary-4, _k::binary-4, rest::binary>> = announce(forger, name, 1)
              <<1, t::binary, key_id::binary, rest::binary>>
            end

          assert expect_case(ctx, pid, forged, %{auth_failed: 100_000}) == 0

          for name <- names do
            assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
          end
        end)

      assert Process.whereis(Gossip.name(ctx.topology)) == pid
      assert Process.alive?(pid)
      # Code loaded meanwhile adds some atoms; packet data would have added 100,000 (each
      # name was checked above). The genuine ghost@127.0.0.1 is the one that may be one.
      assert :erlang.system_info(:atom_count) - atoms_before < 1_000
      assert Map.keys(Gossip.peers(pid)) == [:"ghost@127.0.0.1"]

      stats = Gossip.stats(pid)

      assert Map.keys(stats.rejected) |> Enum.sort() ==
               Enum.sort([
                 :too_short,
                 :too_large,
                 :bad_version,
                 :wrong_label,
                 :unknown_key,
                 :auth_failed,
                 :replayed,
                 :stale,
                 :future
               ])

      # One telemetry event per reject, by reason.
      send(TelemetryProbe, {:get, self()})
      assert_receive {:telemetry_counts, counts}, 5_000
      assert Map.get(counts, ctx.topology) == stats.rejected

      # Summaries, not a line per packet: at most one per stats_log_interval (1 s) plus
      # the first.
      lines = Regex.scan(~r/dropped \d+ gossip packets/, log) |> length()
      assert lines >= 1
      assert lines < 200
    end

    defp collect_telemetry(acc) do
      receive do
        {:telemetry, [:aws_cluster, :gossip, :rejected], %{count: 1},
         %{topology: topology, reason: reason}} ->
          acc
          |> Map.update(topology, %{reason => 1}, &Map.update(&1, reason, 1, fn n -> n + 1 end))
          |> collect_telemetry()

        {:get, from} ->
          send(from, {:telemetry_counts, acc})
          collect_telemetry(acc)

        _other ->
          collect_telemetry(acc)
      end
    end

    test "connects to authenticated peers, at most max_peers of them", ctx do
      pid = ctx.start.(max_peers: 3)
      run = uniq()
      names = for i <- 1..5, do: "cap#{run}n#{i}@127.0.0.1"
      packets = for name <- names, do: announce(ctx.ring, name, 1)
      before = Gossip.stats(pid)
      deliver(ctx, pid, packets)
      stats = Gossip.stats(pid)
      assert stats.accepted - before.accepted == 3
      assert delta(before.rejected, stats.rejected) == %{too_many_peers: 2}

      [a, b, c, d, e] = names

      assert Enum.sort(Map.keys(Gossip.peers(pid))) ==
               Enum.sort(Enum.map([a, b, c], &String.to_atom/1))

      for name <- [a, b, c] do
        node = String.to_existing_atom(name)
        assert_receive {:connect, ^node}, 5_000
      end

      for name <- [d, e], do: assert_raise(ArgumentError, fn -> String.to_existing_atom(name) end)

      peer = Gossip.peers(pid)[String.to_existing_atom(a)]
      assert peer.meta == %{"az" => "test-1a"}
      assert peer.boot_id == 77

      assert {:ok, %{availability_zone: "test-1a", topology: topology}} =
               AWSCluster.node_info(String.to_existing_atom(a))

      assert topology == ctx.topology
    end

    test "a leave packet stops the redialing", ctx do
      # A list_nodes that never reports anyone: every tick re-dials every known peer.
      table = Nodes.table()

      pid =
        start_supervised!(
          {Gossip,
           topology: ctx.topology,
           config: [
             secret: ctx.secret,
             port: ctx.port,
             if_addr: "127.0.0.1",
             seeds: ["127.0.0.1:#{Ports.udp()}"],
             announce_interval: 100
           ],
           connect: {Nodes, :connect, [self()]},
           list_nodes: {Nodes, :list_nodes, [table]}}
        )

      name = "leaver#{uniq()}@127.0.0.1"
      deliver(ctx, pid, [announce(ctx.ring, name, 1)])
      node = String.to_existing_atom(name)
      assert_receive {:connect, ^node}, 5_000
      assert_receive {:connect, ^node}, 5_000

      deliver(ctx, pid, [announce(ctx.ring, name, 2, %{kind: :leave})])
      assert Gossip.stats(pid).leaves == 1
      assert Gossip.peers(pid) == %{}
      # A round already running may still finish; after that none may start, though
      # ticks (every 100 ms) keep coming.
      assert wait_for(fn -> :sys.get_state(pid).round == nil end)
      flush_connects(node)
      refute_receive {:connect, ^node}, 1_000

      # It may come back: a later announce is a peer again.
      deliver(ctx, pid, [announce(ctx.ring, name, 3)])
      assert_receive {:connect, ^node}, 5_000
    end

    defp flush_connects(node) do
      receive do
        {:connect, ^node} -> flush_connects(node)
      after
        0 -> :ok
      end
    end
  end

  ## Peers

  # A distributed node controlled over stdio (this VM never joins its cluster), with
  # `-connect_all false` so global cannot complete a mesh: every link is gossip's work.
  defp start_node(basename, ip, cookie) do
    ip_term = "{" <> String.replace(ip, ".", ",") <> "}"

    args =
      Cluster.code_path_args() ++
        Enum.map(
          [
            "-setcookie",
            Atom.to_string(cookie),
            "-connect_all",
            "false",
            "-kernel",
            "inet_dist_use_interface",
            ip_term
          ],
          &String.to_charlist/1
        )

    {:ok, pid, node} =
      :peer.start_link(%{
        name: String.to_atom(basename),
        host: String.to_charlist(ip),
        longnames: true,
        connection: :standard_io,
        args: args,
        wait_boot: 60_000,
        shutdown: 5_000
      })

    %{pid: pid, node: node, ip: ip}
  end

  defp unicast_topology(secret, m, all, port, extra \\ []) do
    config =
      [
        secret: secret,
        if_addr: m.ip,
        port: port,
        seeds: for(o <- all, o.ip != m.ip, do: "#{o.ip}:#{port}"),
        announce_interval: 300,
        connect_timeout: 2_000
      ] ++ extra

    [gossip: [strategy: Gossip, config: config]]
  end

  defp start_topology(m, topologies) do
    {:ok, sup} = :peer.call(m.pid, StrategyPeer, :start_detached, [topologies], 30_000)
    # The rotation test's expected unknown_key summaries would only be noise here.
    :ok = :peer.call(m.pid, Logger, :configure, [[level: :error]])
    Map.put(m, :sup, sup)
  end

  defp connected(m), do: :peer.call(m.pid, Node, :list, [], 10_000)

  defp mesh?(members) do
    Enum.all?(members, fn m ->
      others = for o <- members, o.node != m.node, do: o.node
      Enum.all?(others, &(&1 in connected(m)))
    end)
  end

  # A link needs only one side to hear the other; every node must hear every node too.
  defp heard_all?(members) do
    Enum.all?(members, fn m ->
      Enum.sort(Map.keys(peers(m))) == Enum.sort(for o <- members, o.node != m.node, do: o.node)
    end)
  end

  defp stats(m), do: :peer.call(m.pid, Gossip, :stats, [:gossip], 10_000)
  defp peers(m), do: :peer.call(m.pid, Gossip, :peers, [:gossip], 10_000)

  defp boot_loopback(count, tag, third_octet) do
    cookie = :"gossip#{uniq()}"
    run = uniq()

    # Sequentially in the test process: a peer is linked to its starter and would stop
    # with a short-lived task.
    for i <- 1..count do
      start_node("#{tag}#{i}x#{run}", "127.0.9.#{third_octet + i}", cookie)
    end
  end

  describe "formation" do
    test "4 peers on loopback reach a full mesh over unicast seeds, and leave gracefully" do
      members = boot_loopback(4, "gu", 10)
      port = Ports.udp()
      s = secret()
      members = Enum.map(members, &start_topology(&1, unicast_topology(s, &1, members, port)))

      assert wait_for(fn -> mesh?(members) end), "no full mesh over unicast"
      assert wait_for(fn -> heard_all?(members) end), "some node missed an announce"
      for m <- members, do: assert(stats(m).rejected_total == 0)

      [leaver | rest] = Enum.reverse(members)
      :ok = :peer.call(leaver.pid, Supervisor, :stop, [leaver.sup])

      assert wait_for(fn ->
               Enum.all?(rest, fn m ->
                 stats(m).leaves >= 1 and not Map.has_key?(peers(m), leaver.node)
               end)
             end),
             "the others did not hear the leave"
    end

    test "rotation [k1] -> [k2, k1] -> [k2], one node at a time, never splits the mesh" do
      members = boot_loopback(4, "gr", 20)
      port = Ports.udp()
      k1 = secret()
      k2 = secret()
      members = Enum.map(members, &start_topology(&1, unicast_topology(k1, &1, members, port)))
      assert wait_for(fn -> mesh?(members) end), "no full mesh with [k1]"
      for m <- members, do: :peer.call(m.pid, StrategyPeer, :reset_downs, [])

      heard_all_since? = fn m, t ->
        p = peers(m)
        Enum.all?(members, fn o -> o.node == m.node or (p[o.node] && p[o.node].heard_at > t) end)
      end

      for ring <- [[k2, k1], [k2]], m <- members do
        t = System.os_time(:millisecond)
        :ok = :peer.call(m.pid, Gossip, :rotate, [:gossip, ring])
        # The moved node opens everything the others seal at this step, and the
        # connections stay up.
        assert wait_for(fn -> heard_all_since?.(m, t) end),
               "#{m.node} lost gossip after #{length(ring)}-key rotate"

        assert mesh?(members)
      end

      # All on [k2] now: every node hears every other, nothing is rejected any more.
      t = System.os_time(:millisecond)
      assert wait_for(fn -> Enum.all?(members, &heard_all_since?.(&1, t)) end)
      before = Map.new(members, &{&1.node, stats(&1).rejected_total})
      t = System.os_time(:millisecond)
      assert wait_for(fn -> Enum.all?(members, &heard_all_since?.(&1, t)) end)
      for m <- members, do: assert(stats(m).rejected_total == before[m.node])

      # While the first step rolled, the nodes still on [k1] could not open k2 packets:
      # the rotation really changed keys.
      assert Enum.any?(members, &(Map.get(stats(&1).rejected, :unknown_key, 0) > 0))

      for m <- members do
        assert :peer.call(m.pid, StrategyPeer, :downs, []) == [], "#{m.node} saw a nodedown"
        assert hd(stats(m).key_ids) == hd(stats(hd(members)).key_ids)
        assert length(stats(m).key_ids) == 1
      end

      assert mesh?(members)
    end

    @tag :netns
    test "a node whose ethwe appears after the app started: it boots, then gossips once ethwe is up" do
      case Netns.available() do
        {:skip, reason} -> IO.puts("skipping the late-ethwe gossip test: #{reason}")
        :ok -> run_late_interface()
      end
    end

    @tag :netns
    test "4 nodes in network namespaces reach a full mesh over IPv4 multicast" do
      netns_mesh(:inet)
    end

    @tag :netns
    test "4 nodes in network namespaces reach a full mesh over IPv6 multicast" do
      netns_mesh(:inet6)
    end
  end

  ## Network namespaces: a hub namespace holds a bridge; each node namespace holds a veth
  ## end named ethwe plugged into it. Addresses are private and exist only in there.

  defp netns_mesh(family) do
    case Netns.available() do
      {:skip, reason} -> IO.puts("skipping gossip #{family} multicast test: #{reason}")
      :ok -> run_netns_mesh(family)
    end
  end

  defp run_netns_mesh(family) do
    hub = Netns.create!("gh")
    on_exit(fn -> Netns.cleanup([hub]) end)
    Netns.ip!(["-n", hub, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
    Netns.ip!(["-n", hub, "link", "set", "br0", "up"])
    subnet = rem(uniq(), 200) + 20

    spaces =
      for i <- 1..4 do
        ns = Netns.create!("g#{i}")
        on_exit(fn -> Netns.cleanup([ns]) end)

        Netns.veth_between!(hub, "p#{i}", ns, "ethwe")

        Netns.ip!(["-n", hub, "link", "set", "p#{i}", "master", "br0", "up"])
        Netns.ip!(["-n", ns, "addr", "add", "10.251.#{subnet}.#{10 + i}/24", "dev", "ethwe"])

        Netns.ip!([
          "-n",
          ns,
          "addr",
          "add",
          "fd77:#{subnet}::#{10 + i}/64",
          "dev",
          "ethwe",
          "nodad"
        ])

        Netns.ip!(["-n", ns, "link", "set", "ethwe", "up"])
        ns
      end

    cookie = :"gossipmc#{uniq()}"
    run = uniq()
    s = secret()

    group =
      case family do
        :inet -> "239.255.77.#{rem(run, 250) + 1}"
        :inet6 -> "ff12::4157:#{rem(run, 65_000) + 1}"
      end

    members =
      for {ns, i} <- Enum.with_index(spaces, 1),
          do: start_in_namespace(ns, "gm#{i}x#{run}", cookie)

    config = [
      secret: s,
      multicast_addr: group,
      multicast_if: "ethwe",
      port: 45_990,
      announce_interval: 300,
      connect_timeout: 2_000,
      metadata: %{"az" => "netns-#{family}"}
    ]

    members = Enum.map(members, &start_topology(&1, gossip: [strategy: Gossip, config: config]))

    assert wait_for(fn -> mesh?(members) end, 60_000), "no full mesh over #{family} multicast"

    assert wait_for(fn -> heard_all?(members) end), "some node missed an announce"

    for m <- members do
      assert stats(m).own > 0, "multicast_loop should bring our own packets back"
      assert stats(m).rejected_total == 0
    end
  end

  # One namespace without ethwe; the node names itself on the namespace's own loopback,
  # starts a gossip topology over ethwe multicast (failing: no ethwe), then ethwe comes.
  defp run_late_interface do
    hub = Netns.create!("lh")
    ns = Netns.create!("l1")
    on_exit(fn -> Netns.cleanup([hub, ns]) end)
    run = uniq()
    pid = start_ns_peer(ns, [])
    opts = [basename: "late#{run}", ip: "127.0.0.1", cookie: :"late#{run}"]
    {:ok, _node} = :peer.call(pid, AWSCluster.Distribution, :start, [opts], 30_000)

    config = [
      secret: secret(),
      multicast_addr: "239.255.78.#{rem(run, 250) + 1}",
      multicast_if: "ethwe",
      port: 45_991,
      announce_interval: 300
    ]

    m = start_topology(%{pid: pid, ns: ns}, gossip: [strategy: Gossip, config: config])
    assert %{health: :failing, last_error: e} = stats(m)
    assert e.reason == :unavailable and e.message =~ "ethwe"

    Netns.veth_between!(hub, "p1", ns, "ethwe")

    Netns.ip!(["-n", hub, "link", "set", "p1", "up"])
    Netns.ip!(["-n", ns, "addr", "add", "10.252.#{rem(run, 200) + 20}.11/24", "dev", "ethwe"])
    Netns.ip!(["-n", ns, "link", "set", "ethwe", "up"])
    up = System.monotonic_time(:millisecond)

    # Retries back off to at most one announce interval: it listens, and its own
    # multicast announces loop back to it.
    assert wait_for(fn -> stats(m).health == :healthy and stats(m).own > 0 end, 10_000, 20)

    IO.puts(
      "late ethwe: gossiping #{System.monotonic_time(:millisecond) - up} ms after ethwe came up"
    )

    Cluster.stop(pid)
  end

  # A node inside `ns`, without distribution at first: it is started over stdio through
  # `ip netns exec`, then names itself after its ethwe address from the inside.
  defp start_in_namespace(ns, basename, cookie) do
    pid = start_ns_peer(ns, [~c"-connect_all", ~c"false"])

    {:ok, node} =
      :peer.call(
        pid,
        AWSCluster.Distribution,
        :start,
        [[basename: basename, interface: "ethwe", cookie: cookie]],
        30_000
      )

    %{pid: pid, node: node, ns: ns}
  end

  # A peer VM inside `ns` (through `ip netns exec`), without distribution, aws_cluster up.
  defp start_ns_peer(ns, args) do
    erl = System.find_executable("erl")

    {:ok, pid, _nonode} =
      :peer.start_link(%{
        connection: :standard_io,
        exec:
          {String.to_charlist(System.find_executable("ip")),
           [~c"netns", ~c"exec", String.to_charlist(ns), String.to_charlist(erl)]},
        args: Cluster.code_path_args() ++ args,
        wait_boot: 60_000
      })

    {:ok, _} = :peer.call(pid, Application, :ensure_all_started, [:aws_cluster], 30_000)
    pid
  end
end
