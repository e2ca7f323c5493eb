# Cluster-level figures: 16 real nodes (separate OS processes, AWSCluster.Test.Fleet)
# discovering each other with the EC2 strategy on moto.
#
#   MIX_ENV=test mix run bench/cluster.exs [--runs 5] [--window 120] [--intervals 10000,2000]
#                                          [--modes coordinated,uncoordinated]
#
# (MIX_ENV=demo works the same and keeps the nodes' code apart from _build/test, which a
# concurrent `mix test` may recompile under them.)
#
# Every figure is taken for each interval in each mode, side by side in one run:
# `coordinated` (the EC2 default: one elected poller shares its answers) and
# `uncoordinated` (`coordinate: false`: every node polls), which is the baseline.
#
# Expected duration with the defaults: about 20 minutes on 2 cores (per interval and
# mode: 5 fresh clusters of ~20-30 s each, a 2-minute counting window, one prune).
#
# P2: time from the last node's start to a full mesh. Per run a fresh cluster: 16 VMs
#     boot, 15 instances exist and those 15 nodes start the strategy and mesh; then the
#     16th instance is launched and its node starts the strategy (t0 = the call that
#     starts its topology; BEAM boot is excluded, it is not the library's). Full mesh = the
#     16th is connected to the other 15 (already meshed), sampled every 10 ms on the node.
#     Beside it, the time until every other node's own discovery lists the newcomer,
#     which is what polling_interval governs (the mesh itself does not wait for it: the
#     newcomer polls at start and dials everyone). p50 and p95 by nearest rank (p95 of 5
#     runs is their maximum). The baseline is the other interval in the same run.
# P3: DescribeInstances calls per minute from the 16-node cluster over the window,
#     counted in moto's request log (moto's recorder; requests whose User-Agent is the
#     aws-cluster/<version> User-Agent), against the naive expectation nodes × 60 s / interval.
#     Target: coordinated ≤ 1 call per interval (no boots happen in the window).
# Prune: on the last cluster after its window, one instance is terminated and its node
#     stopped; the time until every other node's membership has dropped it (prune_after 3).

defmodule Bench.Cluster do
  alias AWSCluster.Test.{Fleet, Moto, Wait}

  @nodes 16
  @host_base 101

  def run(argv) do
    opts = parse(argv)
    dir = Path.join(System.tmp_dir!(), "aws_cluster_bench_cluster_#{System.pid()}")
    File.mkdir_p!(dir)
    Fleet.record_requests_to(Path.join(dir, "moto_requests.jsonl"))
    Moto.start!()
    started = now()

    IO.puts(
      "cluster bench: #{@nodes} nodes, EC2 strategy on moto, intervals #{inspect(opts.intervals)} ms, " <>
        "modes #{inspect(opts.modes)}, #{opts.runs} runs each, #{opts.window} s window"
    )

    results =
      for interval <- opts.intervals, mode <- opts.modes do
        runs =
          for i <- 1..opts.runs do
            cluster = boot_cluster(interval, mode, i, dir)
            result = measure_last(cluster)

            IO.puts(
              "  interval #{interval} ms, #{mode}, run #{i}: mesh #{ms(result.mesh)}, " <>
                "known by all #{ms(result.known)} (16 VMs booted in #{ms(cluster.boot)})"
            )

            if i < opts.runs, do: halt(result.members)
            result
          end

        # P3 and the prune on the last run's cluster, still meshed.
        members = List.last(runs).members
        p3 = window(members, interval, opts.window)
        prune = prune(members)

        IO.puts(
          "  interval #{interval} ms, #{mode}: #{p3.calls} calls in the window, prune #{ms(prune)}"
        )

        halt(members)
        %{interval: interval, mode: mode, runs: runs, p3: p3, prune: prune}
      end

    report(results, opts)
    IO.puts("\ntotal #{Float.round((now() - started) / 60_000, 1)} min")
    File.rm_rf!(dir)
  end

  # A fresh cluster: instances, 16 VMs, the strategy on the first 15 (meshed).
  defp boot_cluster(interval, mode, i, dir) do
    Moto.fresh!()
    run = "#{System.pid()}r#{i}i#{interval}#{String.first(to_string(mode))}"
    tag = "bench#{run}"
    specs = Fleet.plan(@nodes, prefix: "b", run: run, host_base: @host_base)
    # The last node's instance is launched only when it starts (measure_last/1): until
    # then nobody may discover it and dial its already running VM.
    {first_specs, [last_spec]} = Enum.split(specs, @nodes - 1)
    first_specs = Fleet.launch!(first_specs, %{"cluster" => tag})
    specs = first_specs ++ [last_spec]
    cookie = :"bench_#{run}"
    config = [coordinate: mode == :coordinated]

    topology =
      &Fleet.topology(:ec2, &1, tags: %{"cluster" => tag}, interval: interval, config: config)

    t = now()

    members =
      specs
      |> Task.async_stream(&Fleet.start_node(&1, cookie: cookie, log_dir: dir),
        timeout: 120_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, m} -> m end)

    boot = now() - t
    {first, [last]} = Enum.split(members, @nodes - 1)

    first =
      first
      |> Task.async_stream(&start_topology(&1, topology.(&1)), timeout: 60_000)
      |> Enum.map(fn {:ok, m} -> m end)

    Wait.until(fn -> Fleet.mesh?(first, Fleet.snapshots(first)) end, 60_000) ||
      raise "the first #{@nodes - 1} nodes did not mesh (logs in #{dir})"

    %{first: first, last: last, topology: topology.(last), boot: boot, tag: tag}
  end

  defp start_topology(member, topology) do
    {:ok, sup} = :peer.call(member.pid, Fleet, :local_start, [topology], 30_000)
    %{member | sup: sup}
  end

  defp measure_last(%{first: first, last: last, topology: topology, tag: tag}) do
    others = Enum.map(first, & &1.node)
    [_] = Fleet.launch!([last], %{"cluster" => tag})
    t0 = now()
    last = start_topology(last, topology)

    mesh =
      Wait.until(
        fn ->
          s = Fleet.snapshot(last)
          is_map(s) and Enum.all?(others, &(&1 in s.connected)) and now() - t0
        end,
        60_000,
        10
      ) || raise "no full mesh after the last node started"

    known =
      Wait.until(
        fn ->
          snaps = Fleet.snapshots(first)

          Enum.all?(first, &match?(%{members: m} when is_list(m), snaps[&1.node])) and
            Enum.all?(first, &(last.node in snaps[&1.node].members)) and now() - t0
        end,
        120_000,
        20
      ) || raise "the other nodes' discovery never listed the last node"

    all = first ++ [last]
    Fleet.mesh?(all, Fleet.snapshots(all)) || raise "mesh check failed"
    %{mesh: mesh, known: known, members: all}
  end

  # Counts the cluster's DescribeInstances calls in moto's log over `seconds`.
  defp window(all, interval, seconds) do
    polls_before = polls(all)
    Fleet.restart_recording!()
    t = now()
    Process.sleep(seconds * 1000)
    calls = Fleet.recorded_calls()
    elapsed = now() - t
    snaps = Fleet.snapshots(all)
    polls_after = polls(all)
    healthy = Enum.count(all, &match?(%{health: :healthy}, snaps[&1.node]))
    count = Map.get(calls, "sdk:DescribeInstances", 0)

    %{
      calls: count,
      other_sdk: Map.drop(calls, ["sdk:DescribeInstances"]) |> Enum.filter(&sdk?/1),
      per_min: count / (elapsed / 60_000),
      expected: @nodes * 60_000 / interval,
      rounds: polls_after - polls_before,
      healthy: healthy,
      elapsed: elapsed
    }
  end

  # Terminates one instance (a follower's when coordinated: the 15th node) and stops its
  # node; the time until every other member has pruned it.
  defp prune(members) do
    victim = Enum.at(members, -2)
    others = members -- [victim]
    t = now()
    Moto.terminate!([victim.instance_id])
    Fleet.stop(victim)

    Wait.until(
      fn ->
        snaps = Fleet.snapshots(others)

        Enum.all?(others, fn m ->
          match?(%{members: ms} when is_list(ms), snaps[m.node]) and
            victim.node not in snaps[m.node].members
        end) and now() - t
      end,
      300_000,
      20
    ) || raise "the terminated instance was not pruned everywhere"
  end

  defp sdk?({"sdk:" <> _, _}), do: true
  defp sdk?(_), do: false

  defp polls(members) do
    members
    |> Fleet.snapshots()
    |> Map.values()
    |> Enum.map(fn
      %{polls: p} -> p
      _ -> 0
    end)
    |> Enum.sum()
  end

  defp halt(members) do
    members
    |> Task.async_stream(&Fleet.halt/1, timeout: 30_000)
    |> Stream.run()
  end

  # ── report ────────────────────────────────────────────────────────────────────────

  defp report(results, opts) do
    IO.puts(
      "\nP2  time from the last node's start to a full mesh of #{@nodes} (#{opts.runs} runs each)"
    )

    columns = ["interval", "mode", "mesh p50", "mesh p95", "known-by-all p50", "known p95"]
    IO.puts("    " <> row(columns ++ ["mesh runs (ms)"]))

    for r <- results do
      meshes = Enum.map(r.runs, & &1.mesh)
      knowns = Enum.map(r.runs, & &1.known)

      IO.puts(
        "    " <>
          row([
            "#{r.interval} ms",
            "#{r.mode}",
            ms(pct(meshes, 50)),
            ms(pct(meshes, 95)),
            ms(pct(knowns, 50)),
            ms(pct(knowns, 95)),
            inspect(meshes)
          ])
      )
    end

    IO.puts(
      "\nP3  DescribeInstances per minute, #{@nodes} nodes, #{opts.window} s window (moto's request log)"
    )

    for %{interval: interval, mode: mode, p3: p} <- results do
      IO.puts(
        "    interval #{interval} ms, #{mode}: #{p.calls} calls in #{Float.round(p.elapsed / 1000, 1)} s = " <>
          "#{Float.round(p.per_min, 1)}/min; naive #{Float.round(p.expected, 1)}/min " <>
          "(#{@nodes} × 60 s / interval), ratio #{ratio(p.per_min, p.expected)}; " <>
          "own rounds the nodes counted: #{p.rounds}; healthy nodes at the end: #{p.healthy}/#{@nodes}" <>
          if(p.other_sdk == [], do: "", else: "; other SDK calls: #{inspect(p.other_sdk)}")
      )
    end

    IO.puts("\nPrune  termination to every other node dropping it (prune_after 3)")

    for r <- results, do: IO.puts("    interval #{r.interval} ms, #{r.mode}: #{ms(r.prune)}")

    IO.puts("\nCoordinated / uncoordinated, per interval (the baseline is the same run's)")

    for interval <- opts.intervals,
        c = Enum.find(results, &(&1.interval == interval and &1.mode == :coordinated)),
        u = Enum.find(results, &(&1.interval == interval and &1.mode == :uncoordinated)) do
      p50 = fn r, key -> pct(Enum.map(r.runs, &Map.fetch!(&1, key)), 50) end

      IO.puts(
        "    #{interval} ms: calls/min #{ratio(c.p3.per_min, u.p3.per_min)}, " <>
          "mesh p50 #{ratio(p50.(c, :mesh), p50.(u, :mesh))}, " <>
          "known-by-all p50 #{ratio(p50.(c, :known), p50.(u, :known))}, " <>
          "prune #{ratio(c.prune, u.prune)}"
      )
    end
  end

  defp row(cells),
    do: cells |> Enum.map_join("  ", &String.pad_trailing(&1, 16)) |> String.trim_trailing()

  defp pct(values, p) do
    sorted = Enum.sort(values)
    Enum.at(sorted, max(ceil(p / 100 * length(sorted)) - 1, 0))
  end

  defp ratio(a, b) when b > 0, do: :erlang.float_to_binary(a / b, decimals: 2)
  defp ratio(_, _), do: "n/a"
  defp ms(v), do: "#{v} ms"
  defp now, do: System.monotonic_time(:millisecond)

  defp parse(argv) do
    {parsed, _, _} =
      OptionParser.parse(argv,
        strict: [runs: :integer, window: :integer, intervals: :string, modes: :string]
      )

    %{
      runs: Keyword.get(parsed, :runs, 5),
      window: Keyword.get(parsed, :window, 120),
      intervals:
        parsed
        |> Keyword.get(:intervals, "10000,2000")
        |> String.split(",")
        |> Enum.map(&String.to_integer(String.trim(&1))),
      modes:
        parsed
        |> Keyword.get(:modes, "coordinated,uncoordinated")
        |> String.split(",")
        |> Enum.map(&String.to_existing_atom(String.trim(&1)))
    }
  end
end

Bench.Cluster.run(System.argv())
