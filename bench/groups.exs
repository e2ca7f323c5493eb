# Meta-clustering figures: 24 real nodes (separate OS processes, AWSCluster.Test.Fleet)
# on moto with the EC2 strategy, as ONE group (the baseline: no group:, a full mesh)
# and as 4 groups of 6 (group: {:tag, "group"}, gateways: {:lowest, 2}), side by side in
# one run, both with OTP's default kernel settings.
#
#   MIX_ENV=test mix run bench/groups.exs [--runs 2] [--window 15]
#
# Per layout and run, a fresh fleet: 24 VMs boot, then all 24 start the topology at
# once (t0; BEAM boot is not the library's). It reports:
#   formed   time from t0 until every node's links are the layout's final ones (the full
#            mesh, or each group's mesh plus exactly the gateway links), sampled every 50 ms;
#            the links only, in both layouts (a node's own view may trail them by a round)
#   links    distribution links in total: sum of Node.list(:connected) / 2, and how many
#            of them are hidden
#   ctrl mem the memory of the distribution controllers (ports), summed over the 24 VMs
#   vm mem   :erlang.memory(:total) summed over the 24 VMs
#   packets  distribution packets sent per second by the whole fleet over a quiet window
#            of --window seconds after forming (ticks and global's traffic; net_ticktime
#            12 s here, so a link ticks every 3 s each way); a link that came back up in
#            the window restarts its counter, so the run reports any link count change
# Expected duration: about 3 minutes on 2 cores.

defmodule Bench.Groups do
  alias AWSCluster.Test.{Fleet, Moto, Wait}

  @nodes 24
  @groups 4
  @k 2
  @host_base 181
  @ticktime 12

  def run(argv) do
    {opts, _, _} = OptionParser.parse(argv, strict: [runs: :integer, window: :integer])
    runs = Keyword.get(opts, :runs, 2)
    window = Keyword.get(opts, :window, 15)
    dir = Path.join(System.tmp_dir!(), "aws_cluster_bench_groups_#{System.pid()}")
    File.mkdir_p!(dir)
    Moto.start!()
    Code.require_file("support.exs", __DIR__)

    IO.puts(
      "groups bench: #{@nodes} nodes, EC2 on moto, 1 group vs #{@groups} groups x " <>
        "#{div(@nodes, @groups)} (gateways {:lowest, #{@k}}), #{runs} runs each, " <>
        "#{window} s window; NIF #{Bench.Support.profile()}; load #{Bench.Support.load()}"
    )

    results =
      for layout <- [:one, :grouped] do
        {layout, for(i <- 1..runs, do: measure(layout, i, window, dir))}
      end

    report(results)
    File.rm_rf!(dir)
  end

  defp measure(layout, i, window, dir) do
    Moto.fresh!()
    run = "#{System.pid()}#{layout}#{i}"
    tag = "bench#{run}"
    per = div(@nodes, @groups)

    specs =
      for spec <- Fleet.plan(@nodes, prefix: "g", run: run, host_base: @host_base) do
        group = if layout == :one, do: "all", else: "g#{div(spec.index - 1, per)}"
        Map.put(spec, :group, group)
      end

    specs = Fleet.launch_groups!(specs, %{"cluster" => tag})

    config = if layout == :one, do: [], else: [group: {:tag, "group"}, gateways: {:lowest, @k}]
    cookie = :"bench_#{run}"

    members =
      specs
      |> Task.async_stream(
        fn spec ->
          spec
          |> Fleet.start_node(
            cookie: cookie,
            log_dir: dir,
            connect_all: true,
            net_ticktime: @ticktime
          )
          |> Map.put(:group, spec.group)
        end,
        timeout: 120_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, m} -> m end)

    t0 = now()

    members =
      members
      |> Task.async_stream(
        fn m ->
          topology =
            Fleet.topology(:ec2, m, tags: %{"cluster" => tag}, interval: 2_000, config: config)

          {:ok, sup} = :peer.call(m.pid, Fleet, :local_start, [topology], 30_000)
          %{m | sup: sup}
        end,
        timeout: 60_000,
        max_concurrency: @nodes
      )
      |> Enum.map(fn {:ok, m} -> m end)

    k = if layout == :one, do: @nodes, else: @k

    formed =
      Wait.until(
        fn ->
          Fleet.groups_formed?(members, Fleet.snapshots(members), k, false) and
            now() - t0
        end,
        120_000,
        50
      ) ||
        raise "#{layout} run #{i} did not form (logs in #{dir})"

    before = stats(members)
    t = now()
    Process.sleep(window * 1000)
    after_ = stats(members)
    packets = (after_.send_cnt - before.send_cnt) / ((now() - t) / 1000)

    # A link that dropped and came back in the window restarted its packet counter.
    if after_.links != before.links,
      do: IO.puts("  #{layout} run #{i}: link count changed in the window; packets/s undercount")

    result = %{
      formed: formed,
      links: div(after_.links, 2),
      hidden: div(after_.hidden, 2),
      ctrl_memory: after_.ctrl_memory,
      memory: after_.memory,
      packets: packets
    }

    IO.puts("  #{layout} run #{i}: #{inspect(result)}")
    members |> Task.async_stream(&Fleet.halt/1, timeout: 30_000) |> Stream.run()
    result
  end

  defp stats(members) do
    members
    |> Task.async_stream(&Fleet.dist_stats/1, timeout: 30_000, max_concurrency: @nodes)
    |> Enum.map(fn {:ok, s} -> s end)
    |> Enum.reduce(fn s, acc -> Map.merge(acc, s, fn _k, a, b -> a + b end) end)
  end

  defp report(results) do
    [{:one, one}, {:grouped, grouped}] = results

    IO.puts(
      "\n    medians             1 group (baseline)   4 groups x 6, k=2   ratio grouped/baseline"
    )

    for {label, key, fmt} <- [
          {"links", :links, &whole/1},
          {"  of them hidden", :hidden, &whole/1},
          {"ctrl mem (KiB)", :ctrl_memory, &Float.to_string(Float.round(&1 / 1024, 1))},
          {"vm mem (MiB)", :memory, &Bench.Support.mb/1},
          {"packets/s", :packets, &Float.to_string(Float.round(&1 * 1.0, 1))},
          {"formed (ms)", :formed, &whole/1}
        ] do
      a = median(Enum.map(one, & &1[key]))
      b = median(Enum.map(grouped, & &1[key]))
      ratio = if a == 0, do: "-", else: Float.to_string(Float.round(b / a, 3))

      IO.puts(
        "    " <>
          Enum.map_join([label, fmt.(a), fmt.(b), ratio], "", &String.pad_trailing(&1, 21))
      )
    end
  end

  defp whole(n), do: Integer.to_string(round(n))

  defp median(values) do
    sorted = Enum.sort(values)
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  defp now, do: System.monotonic_time(:millisecond)
end

Bench.Groups.run(System.argv())
