# The registry's cost on PostgreSQL: 8 real nodes (separate OS processes,
# AWSCluster.Test.Fleet) writing and reading one table of a PostgreSQL 15 started for
# the run (initdb on a free loopback port, AWSCluster.Test.Postgres).
#
#   MIX_ENV=test mix run bench/registry.exs [--window 60] [--nodes 8]
#
# Both modes run side by side at the defaults (heartbeat_interval 5 s, polling_interval
# 10 s): `coordinated` (the default: one node reads for the connected ones) and
# `uncoordinated` (`coordinate: false`: every node reads), which is the baseline.
#
# Over the window (after the mesh formed) it counts:
#   * writes: the table's `beats` column, summed over the cluster's rows;
#   * reads: the nodes' own discovery rounds (`polls`);
#   * every call: the transactions the server committed in the database
#     (`pg_stat_database.xact_commit`; each aws_cluster statement is one), less the
#     counting queries' own;
# against the formula nodes × 60 s / heartbeat_interval writes and, coordinated,
# 60 s / polling_interval reads (uncoordinated: nodes times that).
#
# Expected duration with the defaults: about 3 minutes on 2 cores.

defmodule Bench.Registry do
  alias AWSCluster.Test.{Fleet, Postgres, Wait}

  @secret Base.encode64(:binary.copy("b", 32))
  @heartbeat 5_000
  @polling 10_000

  def run(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [window: :integer, nodes: :integer])
    window = Keyword.get(opts, :window, 60)
    nodes = Keyword.get(opts, :nodes, 8)
    :ok = Postgres.available()
    pg = Postgres.start!()
    dir = Fleet.log_dir!("bench_registry")

    IO.puts(
      "registry bench: #{nodes} nodes on PostgreSQL, heartbeat #{@heartbeat} ms, " <>
        "polling #{@polling} ms, #{window} s window per mode"
    )

    try do
      results =
        for mode <- [:coordinated, :uncoordinated], do: measure(pg, mode, nodes, window, dir)

      report(results, nodes)
    after
      Postgres.stop(pg)
    end
  end

  defp measure(pg, mode, nodes, window, dir) do
    run = "#{System.pid()}#{String.first(to_string(mode))}"
    specs = Fleet.plan(nodes, prefix: "breg", run: run, host_base: 201)

    config = [
      url: Postgres.url(pg),
      secret: @secret,
      cluster: run,
      heartbeat_interval: @heartbeat,
      polling_interval: @polling,
      coordinate: mode == :coordinated
    ]

    cookie = Node.get_cookie()

    members =
      Fleet.boot_all(specs, fn _spec ->
        {[reg: [strategy: AWSCluster.Strategy.Registry, config: config]],
         cookie: cookie, log_dir: dir}
      end)

    try do
      Wait.until(fn -> Fleet.mesh?(members, Fleet.snapshots(members)) end, 60_000) ||
        raise "no mesh (logs in #{dir})"

      before = counts(pg, run, members)
      Process.sleep(window * 1_000)
      later = counts(pg, run, members)
      minutes = (later.at - before.at) / 60_000
      per_min = fn key -> Float.round((later[key] - before[key]) / minutes, 1) end

      # Each counts/3 runs two queries, both committed: the later one's are in the delta.
      calls = (later.commits - before.commits - 2) / minutes

      result = %{
        mode: mode,
        writes: per_min.(:beats),
        reads: per_min.(:polls),
        calls: Float.round(calls, 1)
      }

      IO.puts(
        "  #{mode}: #{result.writes} writes/min, #{result.reads} reads/min, " <>
          "#{result.calls} DB calls/min in all"
      )

      result
    after
      Enum.each(members, &Fleet.halt/1)
    end
  end

  defp counts(pg, run, members) do
    [[commits]] =
      Postgres.query!(
        pg,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
      )

    [[beats]] =
      Postgres.query!(
        pg,
        "SELECT coalesce(sum(beats), 0) FROM aws_cluster_nodes WHERE cluster = '#{run}'"
      )

    polls = Fleet.snapshots(members) |> Map.values() |> Enum.map(& &1.polls) |> Enum.sum()

    %{
      commits: String.to_integer(commits),
      beats: String.to_integer(beats),
      polls: polls,
      at: System.monotonic_time(:millisecond)
    }
  end

  defp report(results, nodes) do
    writes = nodes * 60_000 / @heartbeat
    reads = 60_000 / @polling
    [coordinated, uncoordinated] = results

    IO.puts("""

    formula: #{writes} writes/min; reads #{reads}/min coordinated, #{nodes * reads}/min uncoordinated
    coordinated reads / uncoordinated reads (the baseline): #{ratio(coordinated.reads, uncoordinated.reads)}
    coordinated calls / uncoordinated calls: #{ratio(coordinated.calls, uncoordinated.calls)}
    """)
  end

  defp ratio(_a, b) when b == 0, do: "n/a"
  defp ratio(a, b), do: Float.round(a / b, 2)
end

Bench.Registry.run(System.argv())
