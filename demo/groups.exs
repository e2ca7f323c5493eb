# script/demo --groups N: meta-clustering on moto. N groups of 3 real nodes, tagged
# group=g1..gN, each a mesh of its own; two gateways per group linked over hidden
# links; a call from a plain member into another group; a gateway killed and replaced.
# Loaded by demo/driver.exs, which owns the run directory, moto and the cleanup.

defmodule Demo.Groups do
  alias AWSCluster.Test.{Fleet, Moto, Wait}

  @per_group 3
  @k 2

  def main(opts, run, run_dir, started) do
    Process.put(:demo_started, started)
    Process.put(:demo_run_dir, run_dir)
    groups = opts.groups
    n = groups * @per_group

    specs =
      for spec <- Fleet.plan(n, prefix: "demo", run: run, host_base: 51) do
        Map.put(spec, :group, "g#{div(spec.index - 1, @per_group) + 1}")
      end

    specs = Fleet.launch_groups!(specs, %{"app" => "demo"})

    say("moto: #{n} instances tagged app=demo, group=g1..g#{groups} (#{@per_group} each)")

    say(
      "booting #{n} nodes; topology: EC2 by tag, group: {:tag, \"group\"}, gateways: {:lowest, #{@k}}"
    )

    cookie = :"demo_#{Base.encode16(:crypto.strong_rand_bytes(8), case: :lower)}"
    config = [group: {:tag, "group"}, gateways: {:lowest, @k}]
    boot_started = now()

    members =
      specs
      |> Task.async_stream(
        fn spec ->
          topology =
            Fleet.topology(:ec2, spec,
              tags: %{"app" => "demo"},
              interval: opts.interval,
              config: config
            )

          member =
            spec
            |> Fleet.boot(topology, cookie: cookie, log_dir: run_dir, connect_all: true)
            |> Map.put(:group, spec.group)

          Demo.record_pid(run_dir, "node", member.os_pid)
          member
        end,
        timeout: 90_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, m} -> m end)

    snaps = await(members, "groups formed")
    formed = now() - boot_started
    say("formed #{secs(formed)} after boot started:")
    show(members, snaps)

    links = links(snaps)
    full = div(n * (n - 1), 2)

    say(
      "distribution links: #{links.total} (#{links.hidden} hidden) instead of #{full} for one mesh of #{n}"
    )

    # A plain member of g1 calls into the last group: through its own gateway, 2 hops.
    [_, _, plain | _] = Enum.filter(members, &(&1.group == "g1"))
    target = "g#{groups}"
    call(plain, target)

    # kill -9 the lowest gateway of g2 (--groups is at least 2).
    victim = members |> Enum.filter(&(&1.group == "g2")) |> Enum.min_by(& &1.node)
    say("kill -9 #{victim.node}, a gateway of g2")
    killed = now()
    Fleet.kill!(victim)
    alive = members -- [victim]
    snaps = await(alive, "a new gateway for g2")

    say(
      "g2's gateways are #{Enum.map_join(gateways(snaps, alive, "g2"), ", ", &short/1)}, #{secs(now() - killed)} after the kill"
    )

    call(plain, "g2")

    downs = for m <- alive, m.group != "g2", d <- snaps[m.node].downs, do: {m.node, d}

    say(
      "visible nodedowns outside g2: #{length(downs)} (the dead gateway's links to them were hidden)"
    )

    alive |> Task.async_stream(&Fleet.stop/1, timeout: 30_000) |> Stream.run()
    Moto.kill!()

    IO.puts("\n== summary")

    for {k, v} <- [
          {"groups",
           "#{groups} x #{@per_group} nodes, gateways {:lowest, #{@k}}, group_mode :compat"},
          {"formed", "#{secs(formed)} from boot start"},
          {"links",
           "#{links.total} (#{links.visible} visible in the groups, #{links.hidden} hidden between gateways); one mesh: #{full}"},
          {"takeover",
           "g2 had 2 gateways again after the kill; no visible nodedown outside g2: #{downs == []}"},
          {"total", secs(now() - started)}
        ],
        do: IO.puts("  " <> String.pad_trailing(k, 10) <> v)
  end

  defp await(members, what) do
    Wait.until(
      fn ->
        snaps = Fleet.snapshots(members)
        Fleet.groups_formed?(members, snaps, @k) and snaps
      end,
      60_000 + length(members) * 2_000,
      100
    ) || Demo.fail("no #{what} in time; node logs are in #{Process.get(:demo_run_dir)}")
  end

  defp show(members, snaps) do
    for {group, ms} <- Enum.group_by(members, & &1.group) |> Enum.sort() do
      gws = gateways(snaps, ms, group)

      say(
        "  #{group}: #{Enum.map_join(ms, ", ", & &1.basename)}; gateways #{Enum.map_join(gws, ", ", &short/1)}"
      )

      for gw <- gws do
        say("    #{short(gw)} hidden links -> #{Enum.map_join(snaps[gw].hidden, ", ", &short/1)}")
      end
    end
  end

  defp gateways(snaps, members, group) do
    for m <- members, m.group == group, snaps[m.node].groups.gateway?, do: m.node
  end

  defp links(snaps) do
    visible = snaps |> Map.values() |> Enum.map(&length(&1.connected)) |> Enum.sum()
    hidden = snaps |> Map.values() |> Enum.map(&length(&1.hidden)) |> Enum.sum()
    %{visible: div(visible, 2), hidden: div(hidden, 2), total: div(visible + hidden, 2)}
  end

  defp call(from, group) do
    t = now()

    case :peer.call(from.pid, AWSCluster.Groups, :call, [group, :erlang, :node, []], 15_000) do
      {:ok, node} ->
        say(
          "#{from.basename} (g1, no gateway) -> AWSCluster.Groups.call(#{inspect(group)}, :erlang, :node, []) = #{short(node)} in #{now() - t} ms"
        )

      {:error, e} ->
        Demo.fail("the call to #{group} failed: #{e.message}")
    end
  end

  defp short(node), do: node |> Atom.to_string() |> String.split("@") |> hd()
  # Seconds since the demo started, as the other demo's event lines show them.
  defp say(text) do
    elapsed = (now() - Process.get(:demo_started)) / 1000
    IO.puts("[#{:io_lib.format("~6.2fs", [elapsed])}] " <> text)
  end

  defp secs(ms), do: "#{Float.round(ms / 1000, 1)} s"
  defp now, do: System.monotonic_time(:millisecond)
end
