# The driver behind script/demo: an embedded AWS (moto), real nodes, churn, a summary.
#
#   script/demo [--nodes N] [--strategy ec2|autoscaling|ecs|registry|gossip] [--interval MS]
#
# Run through script/demo, which compiles MIX_ENV=demo (lib + the test harness), gives
# this VM a run directory (DEMO_RUN_DIR) for logs and pids, and cleans up after it.
# Nodes are separate OS processes (AWSCluster.Test.Fleet); moto and its boto3 seeder are
# AWSCluster.Test.Moto. Everything listens on, and talks to, 127.x addresses only.

defmodule Demo do
  alias AWSCluster.Test.{Fleet, Moto, Ports}

  @usage """
  usage: script/demo [--nodes N] [--strategy ec2|autoscaling|ecs|registry|gossip] [--interval MS]
         script/demo --groups N [--interval MS]

    --nodes N        nodes to boot, 2..30 (default 6), spread over 3 AZs
    --strategy S     ec2 (default), autoscaling, ecs (awsvpc tasks, one ENI each), registry
                     (a PostgreSQL table, started for the demo) or gossip (unicast to
                     seeds, no AWS calls)
    --interval MS    polling (or gossip announce) interval, 100..30000 (default 1000)
    --groups N       meta-clustering instead: N groups (2..6) of 3 nodes joined by
                     gateways, a call across groups, a gateway killed and replaced
  """

  @prune_after 3
  @ecs_cluster "demo"
  @ecs_family "app"

  def main(argv) do
    # Script/demo's cleanup stops this VM with SIGTERM; its notice would only be noise.
    :logger.set_primary_config(:level, :warning)
    opts = parse(argv)
    run_dir = System.get_env("DEMO_RUN_DIR") || mkdtemp()
    tty? = System.get_env("DEMO_TTY") == "1"
    run = Integer.to_string(rem(String.to_integer(System.pid()), 100_000))
    started = now()

    view = Demo.View.new(opts, tty?, started)
    view = Demo.View.event(view, "starting moto (the embedded AWS) on 127.0.0.1")

    Fleet.record_requests_to(Path.join(run_dir, "moto_requests.jsonl"))
    Moto.start!()
    record_pid(run_dir, "run", run)
    record_pid(run_dir, "moto", moto_os_pid())
    Moto.fresh!()
    Fleet.restart_recording!()

    if opts.groups do
      Code.require_file("groups.exs", __DIR__)
      # Loaded just above, after this file was compiled: a direct call would warn.
      apply(Demo.Groups, :main, [opts, run, run_dir, started])
      System.halt(0)
    end

    if opts.strategy == :ecs, do: Moto.ecs_cluster!(@ecs_cluster)
    if opts.strategy == :registry, do: start_postgres(run_dir)
    specs = launch(opts.strategy, Fleet.plan(opts.nodes, prefix: "demo", run: run, host_base: 51))
    cookie = :"demo_#{Base.encode16(:crypto.strong_rand_bytes(8), case: :lower)}"
    ctx = opts |> context(specs, run) |> Map.put(:cookie, cookie)

    view =
      Demo.View.event(
        view,
        "moto at #{Moto.endpoint()}: VPC 127.0.0.0/16, subnets in us-east-1a/b/c, " <>
          "#{length(specs)} #{fleet_text(opts.strategy)}" <> ctx.setup_note
      )

    view = Demo.View.event(view, "booting #{length(specs)} nodes (one OS process each)")
    boot_started = now()
    view = Demo.View.watch(view, specs)

    {members, view} = boot_all(specs, ctx, run_dir, view)
    all_up = now()

    {view, _} =
      await(
        view,
        members,
        phase_timeout(opts),
        fn snaps -> Fleet.mesh?(members, snaps) end,
        "full mesh"
      )

    meshed = now()

    view =
      Demo.View.event(
        view,
        "mesh complete: #{length(members)} nodes, each connected to the other " <>
          "#{length(members) - 1}, #{secs(meshed - boot_started)} after boot started"
      )

    # Churn 1: the last node's instance is terminated through the API and the node stops.
    victim = List.last(members)
    survivors = members -- [victim]

    view = Demo.View.event(view, churn_text(opts.strategy, victim))

    # Its last word on how many rounds it ran, for the summary.
    victim_snap = Fleet.snapshot(victim)
    terminated = now()
    terminate(opts.strategy, victim, ctx)
    Fleet.stop(victim)
    view = Demo.View.stopped(view, victim, victim_snap)

    # Pruning takes prune_after polls; leave room for slow intervals.
    prune_timeout = max(phase_timeout(opts), opts.interval * (@prune_after + 2) + 10_000)

    {view, _} =
      await(
        view,
        survivors,
        prune_timeout,
        &pruned?(&1, survivors, victim),
        "#{victim.node} pruned"
      )

    pruned = now()

    view =
      Demo.View.event(
        view,
        "#{victim.basename} pruned by every survivor #{secs(pruned - terminated)} after " <>
          "termination (#{prune_rule(opts)})"
      )

    # Churn 2: a replacement instance and node.
    join_started = now()

    [spec] =
      launch(opts.strategy, [Fleet.spec(opts.nodes + 1, prefix: "demo", run: run, host_base: 51)])

    attach(opts.strategy, [spec], ctx)

    view =
      Demo.View.event(
        view,
        if(opts.strategy == :registry,
          do: "booting #{spec.basename} at #{spec.ip}",
          else: "launched #{spec.instance_id} at #{spec.ip}; booting #{spec.basename}"
        )
      )

    view = Demo.View.watch(view, [spec])
    {[newcomer], view} = boot_all([spec], ctx, run_dir, view)
    newcomer_up = now()
    all = survivors ++ [newcomer]

    {view, final} =
      await(view, all, phase_timeout(opts), &Fleet.mesh?(all, &1), "#{newcomer.basename} joined")

    joined = now()

    view =
      Demo.View.event(
        view,
        "#{newcomer.basename} joined: mesh of #{length(all)} again, " <>
          "#{secs(joined - newcomer_up)} after its node was up"
      )

    polls =
      (all ++ [victim])
      |> Enum.map(fn m -> Map.get(final, m.node) || Demo.View.last(view, m.node) end)
      |> Enum.map(fn
        %{polls: p} -> p
        _ -> 0
      end)
      |> Enum.sum()

    pollers = for m <- all, %{poller: p} when p != nil <- [final[m.node]], uniq: true, do: p
    calls = Fleet.recorded_calls()
    # Before the nodes stop, which deletes their rows.
    table = table_text()
    all |> Task.async_stream(&Fleet.stop/1, timeout: 30_000) |> Stream.run()
    stop_postgres()
    Moto.kill!()
    Demo.View.finish(view)

    summary(%{
      opts: opts,
      nodes: members,
      newcomer: newcomer,
      victim: victim,
      boot: all_up - boot_started,
      mesh: meshed - boot_started,
      mesh_after_up: meshed - all_up,
      prune: pruned - terminated,
      join_total: joined - join_started,
      join: joined - newcomer_up,
      calls: calls,
      polls: polls,
      pollers: pollers,
      total: now() - started,
      cluster_time: now() - boot_started,
      run_dir: run_dir,
      table: table
    })
  end

  # ── steps ─────────────────────────────────────────────────────────────────────────

  defp context(%{strategy: :ec2} = opts, _specs, _run),
    do: %{
      opts: opts,
      topology:
        &Fleet.topology(:ec2, &1,
          interval: opts.interval,
          prune_after: @prune_after,
          tags: %{"app" => "demo"}
        ),
      setup_note: ""
    }

  defp context(%{strategy: :ecs} = opts, _specs, _run),
    do: %{
      opts: opts,
      topology:
        &Fleet.topology(:ecs, &1,
          interval: opts.interval,
          prune_after: @prune_after,
          cluster: @ecs_cluster,
          family: @ecs_family
        ),
      setup_note: ", each with its own ENI (awsvpc, Fargate)"
    }

  defp context(%{strategy: :registry} = opts, _specs, _run) do
    pg = Process.get(:demo_postgres)
    secret = Base.encode64(:crypto.strong_rand_bytes(32))

    %{
      opts: opts,
      topology: fn spec ->
        [
          demo: [
            strategy: AWSCluster.Strategy.Registry,
            config: [
              url: AWSCluster.Test.Postgres.url(pg),
              secret: secret,
              cluster: "demo",
              heartbeat_interval: opts.interval,
              polling_interval: opts.interval,
              prune_after: @prune_after,
              availability_zone: spec.az,
              connect_timeout: 1_000
            ]
          ]
        ]
      end,
      setup_note:
        "; the nodes find each other in table aws_cluster_nodes of a PostgreSQL on " <>
          "127.0.0.1:#{pg.port}, not through AWS"
    }
  end

  defp context(%{strategy: :autoscaling} = opts, specs, run) do
    group = "demo-asg-#{run}"
    Moto.create_asg!(group, Enum.map(specs, & &1.instance_id))

    %{
      opts: opts,
      group: group,
      topology:
        &Fleet.topology(:autoscaling, &1,
          interval: opts.interval,
          prune_after: @prune_after,
          group: group
        ),
      setup_note: ", all in AutoScaling group #{group}"
    }
  end

  defp context(%{strategy: :gossip} = opts, specs, _run) do
    port = Ports.udp()
    # The replacement's address is a seed too: a real fleet lists stable seeds, here every
    # planned address is one.
    seeds = Enum.map(specs, & &1.ip) ++ [Fleet.spec(opts.nodes + 1, run: "x", host_base: 51).ip]
    secret = Base.encode64(:crypto.strong_rand_bytes(32))

    %{
      opts: opts,
      topology:
        &Fleet.topology(:gossip, &1,
          interval: opts.interval,
          port: port,
          seeds: seeds,
          secret: secret
        ),
      setup_note: "; gossip on UDP #{port}, unicast to the instances' addresses"
    }
  end

  defp terminate(:autoscaling, victim, ctx) do
    # Scale-in through the group; a plain EC2 termination would make moto, like AWS,
    # launch a replacement to keep the desired capacity.
    Moto.seed!("asg_terminate", %{ids: [victim.instance_id], name: ctx.group})
  end

  defp terminate(:ecs, victim, _ctx), do: Moto.ecs_stop!(@ecs_cluster, [victim.instance_id])
  # Its node's graceful stop deletes its row.
  defp terminate(:registry, _victim, _ctx), do: :ok
  defp terminate(_strategy, victim, _ctx), do: Moto.terminate!([victim.instance_id])

  # Instances tagged app=demo, or with --strategy ecs awsvpc tasks, whose addresses moto
  # picks (the next free 127.0.x.100+ of each AZ's subnet).
  defp launch(:ecs, specs), do: Fleet.launch_tasks!(specs, @ecs_cluster, @ecs_family)
  defp launch(:registry, specs), do: Enum.map(specs, &Map.put(&1, :instance_id, "-"))

  defp launch(_strategy, specs), do: Fleet.launch!(specs, %{"app" => "demo"})

  defp fleet_text(:ecs), do: "tasks of family #{@ecs_family} in ECS cluster #{@ecs_cluster}"
  defp churn_text(:ecs, v), do: "StopTask #{v.instance_id} (#{v.node}) and stopping its node"
  defp churn_text(:registry, v), do: "stopping #{v.node} gracefully (it deletes its row)"
  defp churn_text(_, v), do: "terminating #{v.instance_id} (#{v.node}) and stopping its node"

  defp fleet_text(:registry), do: "nodes planned (no instances needed)"

  # The registry's database, stopped when the demo ends; cleanup knows its pid.
  defp start_postgres(run_dir) do
    pg = AWSCluster.Test.Postgres.start!()
    [pid | _] = String.split(File.read!(Path.join([pg.dir, "data", "postmaster.pid"])), "\n")
    record_pid(run_dir, "postgres", pid)
    Process.put(:demo_postgres, pg)
  end

  defp stop_postgres do
    if pg = Process.get(:demo_postgres), do: AWSCluster.Test.Postgres.stop(pg)
  end

  defp table_text do
    case Process.get(:demo_postgres) do
      nil ->
        nil

      pg ->
        [[rows, beats]] =
          AWSCluster.Test.Postgres.query!(
            pg,
            "SELECT count(*), coalesce(sum(beats), 0) FROM aws_cluster_nodes"
          )

        "table aws_cluster_nodes at the end: #{rows} rows; #{beats} heartbeats written by them"
    end
  end

  defp fleet_text(_strategy), do: "instances tagged app=demo"

  defp attach(:autoscaling, specs, ctx),
    do: Moto.attach!(ctx.group, Enum.map(specs, & &1.instance_id))

  defp attach(_strategy, _specs, _ctx), do: :ok

  defp boot_all(specs, ctx, run_dir, view) do
    members =
      specs
      |> Task.async_stream(
        fn spec ->
          member = Fleet.boot(spec, ctx.topology.(spec), cookie: ctx.cookie, log_dir: run_dir)
          record_pid(run_dir, "node", member.os_pid)
          member
        end,
        timeout: 90_000,
        max_concurrency: 8
      )
      |> Enum.map(fn {:ok, m} -> m end)

    {members, Enum.reduce(members, view, &Demo.View.up(&2, &1))}
  end

  # Samples every node until `done?` holds for the snapshots, redrawing as it goes.
  defp await(view, members, timeout, done?, what) do
    deadline = now() + timeout

    Enum.reduce_while(Stream.cycle([:tick]), view, fn _, view ->
      snaps = Fleet.snapshots(members)
      view = Demo.View.update(view, snaps)

      cond do
        done?.(snaps) ->
          {:halt, {view, snaps}}

        now() > deadline ->
          Demo.View.finish(view)

          fail(
            "no #{what} within #{div(timeout, 1000)} s; node logs are in " <>
              (System.get_env("DEMO_RUN_DIR") || "the run directory")
          )

        true ->
          Process.sleep(100)
          {:cont, view}
      end
    end)
  end

  # Many nodes on one small machine make moto (and every node) slower.
  defp phase_timeout(opts), do: 60_000 + opts.nodes * 2_000

  defp pruned?(snaps, survivors, victim) do
    Enum.all?(survivors, fn m ->
      case snaps[m.node] do
        %{members: members, connected: connected} ->
          victim.node not in members and victim.node not in connected

        _ ->
          false
      end
    end)
  end

  # ── summary ───────────────────────────────────────────────────────────────────────

  defp summary(r) do
    azs = r.nodes |> Enum.frequencies_by(& &1.az) |> Enum.sort()
    az_text = Enum.map_join(azs, ", ", fn {az, n} -> "#{az} ×#{n}" end)
    {sdk, other} = Enum.split_with(r.calls, fn {k, _} -> String.starts_with?(k, "sdk:") end)

    node_calls =
      case sdk do
        [] -> "none"
        _ -> Enum.map_join(Enum.sort(sdk), ", ", fn {"sdk:" <> a, n} -> "#{a} #{n}" end)
      end

    seed_calls = Enum.map_join(Enum.sort(other), ", ", fn {"other:" <> a, n} -> "#{a} #{n}" end)
    total = sdk |> Enum.map(&elem(&1, 1)) |> Enum.sum()
    minutes = r.cluster_time / 60_000

    rows = [
      {"nodes",
       "#{length(r.nodes)} booted, 1 terminated, 1 replacement joined (#{length(r.nodes)} at the end)"},
      {"AZs", "#{length(azs)}: #{az_text}"},
      {"strategy",
       "#{r.opts.strategy}, interval #{r.opts.interval} ms ±10%" <> prune_note(r.opts)},
      {"boot",
       "#{secs(r.boot)} for all #{length(r.nodes)} nodes to be up (BEAM start + topology)"},
      {"time to mesh",
       "#{secs(r.mesh)} from boot start (#{secs(r.mesh_after_up)} after the last node was up)"},
      {"prune",
       "#{secs(r.prune)} from termination of #{r.victim.basename} to every survivor dropping it"},
      {"join",
       "#{secs(r.join)} from #{r.newcomer.basename} up to full mesh (#{secs(r.join_total)} including instance launch and boot)"},
      {"AWS calls",
       "by the nodes (moto request log): #{node_calls}; #{total} over #{secs(r.cluster_time)} of cluster life (#{Float.round(total / minutes, 1)}/min)"},
      {"", "discovery rounds the nodes reported: #{r.polls}" <> rounds_note(r.opts)},
      {"", uncoordinated(r)},
      {"", "by the demo itself (seeding): #{seed_calls}"},
      {"database", r.table || "-"},
      {"total", "#{secs(r.total)}"}
    ]

    IO.puts("\n== summary")
    for {k, v} <- rows, do: IO.puts("  " <> String.pad_trailing(k, 14) <> v)
  end

  # What every node polling for itself would cost, against this run's figure.
  defp uncoordinated(%{opts: %{strategy: :gossip}}), do: "gossip makes no AWS calls at all"

  defp uncoordinated(r) do
    per_round = if r.opts.strategy in [:autoscaling, :ecs], do: 2, else: 1
    calls = if r.opts.strategy == :registry, do: "reads", else: "calls"
    n = length(r.nodes)
    naive = Float.round(n * 60_000 / r.opts.interval * per_round, 1)

    who =
      case r.pollers do
        [poller] -> "coordinated: one poller, #{poller}, plus one poll per boot"
        pollers -> "pollers seen at the end: #{inspect(pollers)}"
      end

    "uncoordinated, #{n} nodes would make #{naive}/min (#{n} × 60 s / #{r.opts.interval} ms" <>
      " × #{per_round} #{calls} a round); #{who}"
  end

  defp prune_rule(%{strategy: :gossip}), do: "gossip: it said leave on shutdown"

  defp prune_rule(%{strategy: :registry}),
    do:
      "registry: its row was deleted on its graceful stop, then #{@prune_after} answers without it"

  defp prune_rule(_), do: "#{@prune_after} complete answers without it"
  defp prune_note(%{strategy: :gossip}), do: ", peers forgotten on leave or silence"
  defp prune_note(_), do: ", prune after #{@prune_after} complete answers"

  defp rounds_note(%{strategy: :autoscaling}),
    do: " (each: DescribeAutoScalingGroups + DescribeInstances)"

  defp rounds_note(%{strategy: :ecs}), do: " (each: ListTasks + DescribeTasks)"
  defp rounds_note(%{strategy: :registry}), do: " (each: one SELECT of the live rows)"
  defp rounds_note(%{strategy: :gossip}), do: " (gossip: announces accepted, no AWS calls)"

  defp rounds_note(_),
    do: " (one DescribeInstances each; the log also has rounds in flight at the end)"

  # ── helpers ───────────────────────────────────────────────────────────────────────

  defp parse(argv) do
    {parsed, rest, invalid} =
      OptionParser.parse(argv,
        strict: [
          nodes: :integer,
          strategy: :string,
          interval: :integer,
          groups: :integer,
          help: :boolean
        ]
      )

    cond do
      parsed[:help] ->
        IO.puts(@usage) && System.halt(0)

      rest != [] or invalid != [] ->
        usage_error("unexpected arguments: #{inspect(rest ++ Enum.map(invalid, &elem(&1, 0)))}")

      true ->
        :ok
    end

    nodes = Keyword.get(parsed, :nodes, 6)
    interval = Keyword.get(parsed, :interval, 1_000)

    strategy =
      case Keyword.get(parsed, :strategy, "ec2") do
        "ec2" ->
          :ec2

        "autoscaling" ->
          :autoscaling

        "ecs" ->
          :ecs

        "registry" ->
          :registry

        "gossip" ->
          :gossip

        other ->
          usage_error(
            "--strategy must be ec2, autoscaling, ecs, registry or gossip, got #{inspect(other)}"
          )
      end

    nodes in 2..30 || usage_error("--nodes must be 2..30, got #{nodes}")
    interval in 100..30_000 || usage_error("--interval must be 100..30000 ms, got #{interval}")
    groups = parsed[:groups]
    groups == nil or groups in 2..6 || usage_error("--groups must be 2..6, got #{groups}")

    if groups && (parsed[:nodes] || parsed[:strategy]),
      do: usage_error("--groups sets its own nodes (3 a group) and strategy (ec2)")

    %{nodes: nodes, strategy: strategy, interval: interval, groups: groups}
  end

  defp usage_error(message) do
    IO.puts(:stderr, "script/demo: #{message}\n\n#{@usage}")
    System.halt(2)
  end

  @doc false
  def fail(message) do
    IO.puts(:stderr, "\nscript/demo failed: #{message}")
    System.halt(1)
  end

  @doc false
  def record_pid(run_dir, kind, os_pid),
    do: File.write!(Path.join(run_dir, "pids"), "#{kind} #{os_pid}\n", [:append])

  # The shell wrapper's pid (moto runs as its child); script/demo's cleanup uses it if
  # this VM dies before closing the wrapper's stdin.
  defp moto_os_pid do
    %{moto: port} = :sys.get_state(Moto)
    {:os_pid, pid} = Port.info(port, :os_pid)
    pid
  end

  defp mkdtemp do
    dir = Path.join(System.tmp_dir!(), "aws_cluster_demo_#{System.pid()}")
    File.mkdir_p!(dir)
    dir
  end

  def now, do: System.monotonic_time(:millisecond)
  def secs(ms), do: :erlang.float_to_binary(ms / 1000, decimals: 2) <> " s"
end

defmodule Demo.View do
  @moduledoc false
  # The live view: a table redrawn in place on a terminal, or one line per change
  # when stdout is not a terminal (logs, CI).

  defstruct [:opts, :tty?, :started, rows: %{}, order: [], events: [], last: %{}, frame: nil]

  def new(opts, tty?, started) do
    view = %__MODULE__{opts: opts, tty?: tty?, started: started}

    if tty?, do: IO.write("\e[2J\e[H")

    header =
      if opts.groups,
        do:
          "aws_cluster demo: #{opts.groups} groups of 3 nodes, strategy ec2, interval #{opts.interval} ms",
        else:
          "aws_cluster demo: #{opts.nodes} nodes, strategy #{opts.strategy}, interval #{opts.interval} ms"

    unless tty?, do: IO.puts(header)
    view
  end

  def watch(view, specs) do
    rows = Enum.reduce(specs, view.rows, &Map.put(&2, &1.node, %{spec: &1, state: :booting}))
    render(%{view | rows: rows, order: view.order ++ Enum.map(specs, & &1.node)})
  end

  def up(view, member) do
    view = put_in(view.rows[member.node].state, :up)
    line(view, "#{member.node} (#{member.az}) up, os pid #{member.os_pid}")
  end

  def stopped(view, member, snap) do
    view = put_in(view.rows[member.node].state, :stopped)
    view = %{view | last: Map.put(view.last, member.node, snap)}
    render(view)
  end

  def last(view, node), do: view.last[node]

  def event(view, text) do
    view = %{view | events: view.events ++ [{Demo.now() - view.started, text}]}

    if view.tty?,
      do: render(view),
      else: IO.puts("[#{stamp(Demo.now() - view.started)}] == #{text}") && view
  end

  def update(view, snaps) do
    Enum.reduce(snaps, view, fn {node, snap}, view ->
      previous = view.last[node]
      view = %{view | last: Map.put(view.last, node, snap)}

      if not view.tty? and peers_text(view, snap) != peers_text(view, previous) do
        row = view.rows[node]
        line(view, "#{row.spec.basename} (#{row.spec.az}) #{peers_text(view, snap)}")
      else
        view
      end
    end)
    |> render()
  end

  def finish(view) do
    if view.tty?, do: IO.write("\n")
    view
  end

  defp line(view, text) do
    if view.tty?,
      do: render(view),
      else: IO.puts("[#{stamp(Demo.now() - view.started)}] #{text}") && view
  end

  defp render(%{tty?: false} = view), do: view

  defp render(view) do
    o = view.opts

    # A wrapped line would shift every redraw after it, so nothing may be wider than this.
    cols =
      case {Integer.parse(System.get_env("DEMO_COLS", "")), :io.columns()} do
        {{n, ""}, _} -> max(n, 80)
        {_, {:ok, n}} -> max(n, 80)
        _ -> 120
      end

    head = [
      "aws_cluster demo · strategy #{o.strategy} · #{o.nodes} nodes · interval #{o.interval} ms · #{stamp(Demo.now() - view.started)}",
      "",
      "  #   node                          AZ          state     peers (connected, (known but not connected))"
    ]

    rows =
      for node <- view.order do
        row = view.rows[node]
        s = row.spec

        state =
          case row.state do
            :stopped ->
              "\e[31mstopped\e[0m "

            :booting ->
              "\e[33mbooting\e[0m "

            :up ->
              if(view.last[node] == :down, do: "\e[31mdown\e[0m    ", else: "\e[32mup\e[0m      ")
          end

        peers = if row.state == :up, do: peers_text(view, view.last[node]), else: ""
        peers = fit(peers, view.last[node], cols - 60)

        "  " <>
          String.pad_leading("#{s.index}", 2) <>
          "  " <>
          String.pad_trailing(Atom.to_string(node), 30) <>
          String.pad_trailing(s.az, 12) <> state <> "  " <> peers
      end

    events =
      for {t, text} <- Enum.take(view.events, -8),
          do: String.slice("  [#{stamp(t)}] #{text}", 0, cols - 1)

    head = Enum.map(head, &String.slice(&1, 0, cols - 1))
    frame = Enum.join(head ++ rows ++ [""] ++ events, "\e[K\n") <> "\e[K\n"

    if frame != view.frame, do: IO.write("\e[H" <> frame <> "\e[J")
    %{view | frame: frame}
  end

  # Many peers: counts instead of indices.
  defp fit(text, snap, width) do
    case snap do
      %{connected: c, members: m} when byte_size(text) > width ->
        "#{length(c)} connected" <>
          if(m -- c == [], do: "", else: ", #{length(m -- c)} known but not connected")

      _ ->
        text
    end
  end

  # "2 3 5 (6)": indices of connected peers; in parentheses, peers discovery still keeps
  # but that are not connected (a stopped node until it is pruned).
  defp peers_text(_view, nil), do: "-"
  defp peers_text(_view, :down), do: "not answering"

  defp peers_text(view, %{connected: connected, members: members}) do
    index = fn node -> (view.rows[node] && view.rows[node].spec.index) || node end
    up = connected |> Enum.map(index) |> Enum.sort()
    known = (members -- connected) |> Enum.map(index) |> Enum.sort()
    text = if up == [], do: "none", else: Enum.join(up, " ")
    if known == [], do: "peers #{text}", else: "peers #{text} (#{Enum.join(known, " ")})"
  end

  defp stamp(ms),
    do: String.pad_leading(:erlang.float_to_binary(ms / 1000, decimals: 2), 6) <> "s"
end

Demo.main(System.argv())
