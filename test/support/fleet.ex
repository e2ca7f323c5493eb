defmodule AWSCluster.Test.Fleet do
  @moduledoc """
  A fleet of real BEAM nodes, each its own OS process, each running one aws_cluster
  topology against moto. Used by `script/demo`, `bench/cluster.exs` and the partition
  tests.

  Nodes are OTP `:peer` nodes controlled over their stdin/stdout (`connection:
  :standard_io`), so the controlling VM never joins the cluster it watches, and a node
  halts as soon as its controller goes away (its stdin closes), whatever the reason.
  Every node is started with:

    * `-connect_all false` (unless `connect_all: true`), so `global` does not complete
      the mesh transitively: every link is the strategy's own work;
    * its distribution listener bound to its own address and its outgoing distribution
      connections bound to it too (`inet_dist_use_interface`, `inet_dist_connect_options`),
      so all its cluster traffic carries that address and a firewall rule on the address
      cuts the node off;
    * its log in a file (`:log_dir`), never on the controller's terminal.

  Address plan (see `AWSCluster.Test.Moto`): node `i` (1-based) lives in AZ a, b, c in
  turn, at `127.0.<1|2|3>.<host_base + (i - 1) div 3>`. Pick a `host_base` per user so
  concurrent runs on one machine use different addresses.
  """

  alias AWSCluster.Test.{Cluster, Moto}

  @azs ["a", "b", "c"]
  @downs __MODULE__.Downs

  @typedoc "A planned node: where it lives and what it is called."
  @type spec :: %{
          index: pos_integer(),
          basename: String.t(),
          ip: String.t(),
          az: String.t(),
          node: node()
        }

  @typedoc "A running node."
  @type member :: %{
          index: pos_integer(),
          basename: String.t(),
          ip: String.t(),
          az: String.t(),
          node: node(),
          pid: pid(),
          os_pid: String.t(),
          sup: pid() | nil,
          log: Path.t(),
          instance_id: String.t() | nil
        }

  @typedoc "What a node reports about itself (`snapshot/1`)."
  @type snapshot ::
          %{
            connected: [node()],
            members: [node()],
            polls: non_neg_integer(),
            answers: non_neg_integer(),
            role: :poller | :follower | :off | :gossip | :none,
            poller: node() | nil,
            answer_from: node() | nil,
            health: atom(),
            downs: [node()]
          }
          | :down

  # ── planning and seeding ─────────────────────────────────────────────────────────

  @doc """
  An empty directory for the nodes' logs of a test module, named after `name`: only the
  last run's logs are kept, for a failure's post-mortem.
  """
  @spec log_dir!(String.t()) :: Path.t()
  def log_dir!(name) do
    dir = Path.join(System.tmp_dir!(), "aws_cluster_#{name}_logs")
    File.rm_rf!(dir)
    File.mkdir_p!(dir)
    dir
  end

  @doc "A string unique to this call, for basenames (epmd keys names per host)."
  @spec run_id() :: String.t()
  def run_id, do: "#{System.pid()}x#{System.unique_integer([:positive])}"

  @doc """
  The spec of node `index`. Options: `:prefix` (basename prefix, default `"node"`),
  `:run` (a string making basenames unique on this host's epmd), `:host_base` (default 11).
  """
  @spec spec(pos_integer(), keyword()) :: spec()
  def spec(index, opts) do
    host = Keyword.get(opts, :host_base, 11) + div(index - 1, 3)

    if host > 254 or index < 1,
      do: raise(ArgumentError, "node #{index} does not fit the address plan")

    letter = Enum.at(@azs, rem(index - 1, 3))
    ip = "127.0.#{rem(index - 1, 3) + 1}.#{host}"
    basename = "#{Keyword.get(opts, :prefix, "node")}#{index}-#{Keyword.fetch!(opts, :run)}"

    %{
      index: index,
      basename: basename,
      ip: ip,
      az: Moto.region() <> letter,
      node: :"#{basename}@#{ip}"
    }
  end

  @doc "Specs of nodes `1..count` (see `spec/2`)."
  @spec plan(pos_integer(), keyword()) :: [spec()]
  def plan(count, opts), do: for(i <- 1..count, do: spec(i, opts))

  @doc """
  Launches one moto instance per spec, tagged `tags` plus `"node" => basename` (epmd keys
  names per host, so nodes sharing this host need distinct basenames: the strategies take
  them from that tag). Returns the specs with `:instance_id`.
  """
  @spec launch!([spec()], map()) :: [map()]
  def launch!(specs, tags) do
    ids =
      Moto.run_instances!(
        for s <- specs, do: %{ip: s.ip, tags: Map.put(tags, "node", s.basename)}
      )

    Enum.zip_with(specs, ids, &Map.put(&1, :instance_id, &2))
  end

  @doc """
  Runs one awsvpc task of `family` in ECS `cluster` per spec, in the spec's AZ and tagged
  `"node" => basename`. moto gives each task's ENI the next free `127.0.x.100+` of its
  subnet, so the specs come back with that `:ip` and `:node`, and the task ARN as
  `:instance_id`.
  """
  @spec launch_tasks!([spec()], String.t(), String.t()) :: [map()]
  def launch_tasks!(specs, cluster, family) do
    tasks =
      Moto.ecs_run_tasks!(
        cluster,
        family,
        for(s <- specs, do: %{az: String.last(s.az), tags: %{"node" => s.basename}})
      )

    Enum.zip_with(specs, tasks, fn s, %{"arn" => arn, "ip" => ip} ->
      %{s | ip: ip, node: :"#{s.basename}@#{ip}"} |> Map.put(:instance_id, arn)
    end)
  end

  # ── topologies ───────────────────────────────────────────────────────────────────

  @doc """
  A `topologies` list for `AWSCluster.Supervisor`, for the node of `spec`.

  `strategy` is `:ec2` (option `:tags`), `:autoscaling` (option `:group`), `:ecs`
  (options `:cluster` and `:family`) or `:gossip`
  (options `:secret`, `:port`, `:seeds`, a list of IPs: each node binds its own
  address and announces to the seeds by unicast, as in a VPC without multicast, and
  `:metadata`, more announced entries).
  Common options: `:interval` (polling or announce interval), `:prune_after`,
  `:connect_timeout`, `:endpoint` (default moto's) and `:config` (more options, last).
  """
  @spec topology(:ec2 | :autoscaling | :ecs | :gossip, map(), keyword()) :: keyword()
  def topology(:gossip, spec, opts) do
    port = Keyword.fetch!(opts, :port)

    config = [
      secret: Keyword.fetch!(opts, :secret),
      if_addr: spec.ip,
      port: port,
      seeds: for(ip <- Keyword.fetch!(opts, :seeds), ip != spec.ip, do: "#{ip}:#{port}"),
      announce_interval: Keyword.get(opts, :interval, 1_000),
      connect_timeout: Keyword.get(opts, :connect_timeout, 1_000),
      metadata: Map.merge(%{"az" => spec.az}, Keyword.get(opts, :metadata, %{}))
    ]

    config = Keyword.merge(config, Keyword.get(opts, :config, []))
    [gossip: [strategy: AWSCluster.Strategy.Gossip, config: config]]
  end

  def topology(strategy, _spec, opts) do
    common = [
      node_basename: {:tag, "node"},
      region: Moto.region(),
      endpoint: Keyword.get_lazy(opts, :endpoint, &Moto.endpoint/0),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      operation_timeout: 5_000,
      polling_interval: Keyword.get(opts, :interval, 1_000),
      prune_after: Keyword.get(opts, :prune_after, 3),
      connect_timeout: Keyword.get(opts, :connect_timeout, 1_000)
    ]

    common = Keyword.merge(common, Keyword.get(opts, :config, []))

    case strategy do
      :ec2 ->
        [ec2: [strategy: AWSCluster.Strategy.EC2, config: [tags: opts[:tags]] ++ common]]

      :ecs ->
        ecs = [cluster: Keyword.fetch!(opts, :cluster), family: Keyword.fetch!(opts, :family)]
        [ecs: [strategy: AWSCluster.Strategy.ECS, config: ecs ++ common]]

      :autoscaling ->
        [
          asg: [
            strategy: AWSCluster.Strategy.AutoScaling,
            config: [groups: [Keyword.fetch!(opts, :group)]] ++ common
          ]
        ]
    end
  end

  # ── nodes ────────────────────────────────────────────────────────────────────────

  @doc """
  Boots the node of `spec` and starts `topologies` in it. Options: `:cookie` (atom,
  required), `:net_ticktime` (seconds, default 60), `:log_dir` (default the system tmp
  dir), `:netns` (run the node inside that network namespace), `:connect_all` (default
  `false`; `true` runs OTP's default) and `:args` (more `erl` arguments, strings). Returns the member, or raises when the node does not boot.
  """
  @spec boot(map(), keyword(), keyword()) :: member()
  def boot(spec, topologies, opts) do
    member = start_node(spec, opts)

    case :peer.call(member.pid, __MODULE__, :local_start, [topologies], 30_000) do
      {:ok, sup} ->
        Map.put(member, :sup, sup)

      other ->
        stop(member)
        raise "#{spec.node}: topology did not start: #{inspect(other)}"
    end
  end

  @doc """
  Boots every spec, 4 at a time, each with the topologies and `boot/3` options that
  `fun.(spec)` returns as `{topologies, opts}`. A spec's `:group` stays on its member.
  Returns the members in the order of `specs`.
  """
  @spec boot_all([map()], (map() -> {keyword(), keyword()})) :: [member()]
  def boot_all(specs, fun) do
    specs
    |> Task.async_stream(
      fn spec ->
        {topologies, opts} = fun.(spec)
        spec |> boot(topologies, opts) |> Map.merge(Map.take(spec, [:group]))
      end,
      timeout: 120_000,
      max_concurrency: 4
    )
    |> Enum.map(fn {:ok, member} -> member end)
  end

  @doc "Boots the node of `spec` without a topology (see `boot/3` for the options)."
  @spec start_node(map(), keyword()) :: member()
  def start_node(spec, opts) do
    ip = ip_term(spec.ip)
    cookie = Keyword.fetch!(opts, :cookie)
    ticktime = Keyword.get(opts, :net_ticktime, 60)

    log = Path.join(Keyword.get(opts, :log_dir, System.tmp_dir!()), "#{spec.basename}.log")

    args =
      Cluster.code_path_args() ++
        Enum.map(
          [
            "+Bd",
            # From the first line on, the log goes to a file, not over the control channel.
            "-kernel",
            "logger",
            ~s([{handler,default,logger_std_h,\#{config=>\#{file=>"#{log}"}}}]),
            "-setcookie",
            Atom.to_string(cookie),
            "-kernel",
            "net_ticktime",
            Integer.to_string(ticktime),
            "-kernel",
            "inet_dist_use_interface",
            ip,
            "-kernel",
            "inet_dist_connect_options",
            "[{ip,#{ip}}]"
          ],
          &String.to_charlist/1
        )

    connect_all = if opts[:connect_all], do: [], else: ["-connect_all", "false"]
    args = args ++ Enum.map(connect_all ++ Keyword.get(opts, :args, []), &String.to_charlist/1)

    peer =
      %{
        name: String.to_atom(spec.basename),
        host: String.to_charlist(spec.ip),
        longnames: true,
        connection: :standard_io,
        args: args,
        wait_boot: 60_000,
        shutdown: :halt
      }
      |> in_namespace(opts[:netns])

    {:ok, pid, node} = :peer.start(peer)

    os_pid = :peer.call(pid, :os, :getpid, []) |> List.to_string()
    :ok = :peer.call(pid, __MODULE__, :local_setup, [log], 30_000)

    spec
    |> Map.take([:index, :basename, :ip, :az, :instance_id])
    |> Map.merge(%{node: node, pid: pid, os_pid: os_pid, sup: nil, log: log})
  end

  defp in_namespace(peer, nil), do: peer

  defp in_namespace(peer, ns) do
    ip = String.to_charlist(System.find_executable("ip"))
    erl = String.to_charlist(System.find_executable("erl"))
    Map.put(peer, :exec, {ip, [~c"netns", ~c"exec", String.to_charlist(ns), erl]})
  end

  @doc "What `member` reports now; `:down` when it does not answer."
  @spec snapshot(member(), timeout()) :: snapshot()
  def snapshot(member, timeout \\ 5_000) do
    :peer.call(member.pid, __MODULE__, :local_snapshot, [member.sup], timeout)
  catch
    _, _ -> :down
  end

  @doc "Snapshots of all `members`, taken concurrently, keyed by node."
  @spec snapshots([member()]) :: %{node() => snapshot()}
  def snapshots(members) do
    members
    |> Task.async_stream(&{&1.node, snapshot(&1)}, timeout: 10_000, max_concurrency: 16)
    |> Map.new(fn {:ok, pair} -> pair end)
  end

  @doc "Whether every member is connected to every other member."
  @spec mesh?([member()], %{node() => snapshot()}) :: boolean()
  def mesh?(members, snapshots) do
    nodes = Enum.map(members, & &1.node)

    Enum.all?(members, fn m ->
      case snapshots[m.node] do
        %{connected: connected} -> Enum.all?(nodes -- [m.node], &(&1 in connected))
        _ -> false
      end
    end)
  end

  @doc """
  Stops a node as an instance shutdown would: `init:stop/0` (applications and strategies
  shut down in order), then, if the OS process is still there after 10 s, a halt.
  """
  @spec stop(member()) :: :ok
  def stop(member) do
    # The file handler's process dies in the VM's last moments while others still log,
    # and logger then prints "removed_failing_handler" to the terminal. A handler at
    # level none is never called: the shutdown's own lines are not worth that.
    try do
      :peer.call(member.pid, :logger, :update_handler_config, [:fleet_file, :level, :none])
    catch
      _, _ -> :ok
    end

    try do
      :peer.cast(member.pid, :init, :stop, [])
    catch
      _, _ -> :ok
    end

    AWSCluster.Test.Wait.until(fn -> not os_alive?(member.os_pid) end, 10_000, 50)

    try do
      :peer.stop(member.pid)
    catch
      :exit, _ -> :ok
    end

    :ok
  end

  @doc "Halts a node at once (for cleanup); one already gone is fine."
  @spec halt(member()) :: :ok
  def halt(member) do
    :peer.stop(member.pid)
  catch
    :exit, _ -> :ok
  end

  @doc "Whether the OS process `os_pid` exists."
  @spec os_alive?(String.t()) :: boolean()
  def os_alive?(os_pid), do: File.exists?("/proc/#{os_pid}")

  @doc "Kills a node's OS process with SIGKILL."
  @spec kill!(member()) :: :ok
  def kill!(member) do
    {_, 0} = System.cmd("kill", ["-9", member.os_pid])
    :ok
  end

  # ── groups ─────────────────────────────────────────────────────────────────────

  @doc """
  Launches the instances of `specs`, which carry `:group`: each tagged `tags` plus
  `"group" => group` (see `launch!/2`). Returns the specs with `:instance_id`, in order.
  """
  @spec launch_groups!([map()], map()) :: [map()]
  def launch_groups!(specs, tags) do
    specs
    |> Enum.group_by(& &1.group)
    |> Enum.flat_map(fn {group, specs} ->
      specs |> launch!(Map.put(tags, "group", group)) |> Enum.map(&Map.put(&1, :group, group))
    end)
    |> Enum.sort_by(& &1.index)
  end

  @doc """
  The links a grouped fleet should settle on, per node: `members` carry `:group`; each
  group is a visible full mesh, its `k` lowest names are its gateways, and each gateway
  is hidden-linked to exactly the other groups' gateways.
  """
  @spec group_links([map()], pos_integer()) :: %{
          node() => %{connected: [node()], hidden: [node()]}
        }
  def group_links(members, k) do
    by_group = Enum.group_by(members, & &1.group, & &1.node)
    gateways = Map.new(by_group, fn {g, nodes} -> {g, nodes |> Enum.sort() |> Enum.take(k)} end)

    Map.new(members, fn m ->
      others = by_group |> Map.delete(m.group) |> Map.keys()

      hidden =
        if m.node in gateways[m.group],
          do: others |> Enum.flat_map(&gateways[&1]) |> Enum.sort(),
          else: []

      {m.node,
       %{
         connected: Enum.sort(by_group[m.group] -- [m.node]),
         hidden: hidden,
         gateway?: m.node in gateways[m.group]
       }}
    end)
  end

  @doc """
  Whether every member's links are what `group_links/2` says and, unless `views?` is
  `false` (an ungrouped baseline), its own view agrees: its group and its role.
  """
  @spec groups_formed?([map()], %{node() => snapshot()}, pos_integer(), boolean()) :: boolean()
  def groups_formed?(members, snapshots, k, views? \\ true) do
    want = group_links(members, k)

    Enum.all?(members, fn m ->
      case snapshots[m.node] do
        %{connected: c, hidden: h} = snap ->
          w = want[m.node]

          c == w.connected and h == w.hidden and
            (not views? or view_agrees?(snap[:groups], m.group, w.gateway?))

        _ ->
          false
      end
    end)
  end

  defp view_agrees?(%{group: group, gateway?: gateway?}, group, gateway?), do: true
  defp view_agrees?(_view, _group, _gateway?), do: false

  @doc """
  What distribution costs `member` now: its links (visible and hidden), the memory of
  their controllers (ports) and their send counters (packets and bytes since each
  link came up), and the VM's total memory.
  """
  @spec dist_stats(member()) :: map()
  def dist_stats(member), do: :peer.call(member.pid, __MODULE__, :local_dist_stats, [], 10_000)

  @doc false
  def local_dist_stats do
    ctrls = for {_node, ctrl} <- :erlang.system_info(:dist_ctrl), is_port(ctrl), do: ctrl

    stats =
      for port <- ctrls, {:ok, stat} <- [:inet.getstat(port, [:send_cnt, :send_oct])], do: stat

    %{
      links: length(Node.list(:connected)),
      hidden: length(Node.list(:hidden)),
      ctrl_memory:
        Enum.sum(for port <- ctrls, {:memory, m} <- [:erlang.port_info(port, :memory)], do: m),
      send_cnt: Enum.sum(for s <- stats, do: s[:send_cnt]),
      send_oct: Enum.sum(for s <- stats, do: s[:send_oct]),
      memory: :erlang.memory(:total)
    }
  end

  # ── moto's request log ───────────────────────────────────────────────────────────

  @doc """
  Makes moto keep its request log in `path` (moto's recorder). Call before moto starts:
  moto reads the path from its environment.
  """
  @spec record_requests_to(Path.t()) :: :ok
  def record_requests_to(path) do
    System.put_env("MOTO_RECORDER_FILEPATH", path)
  end

  @doc "Empties moto's request log and (re)starts recording."
  @spec restart_recording!() :: :ok
  def restart_recording! do
    {200, _} = Moto.http(Moto.port(), "POST", "/moto-api/recorder/reset-recording")
    {200, _} = Moto.http(Moto.port(), "POST", "/moto-api/recorder/start-recording")
    :ok
  end

  @doc """
  Requests in moto's log since `restart_recording!/0`, by caller and action:
  `%{"sdk:DescribeInstances" => 42, "other:RunInstances" => 1}`. `sdk` is the Rust
  SDK (the nodes), `other` the seeder.
  """
  @spec recorded_calls() :: %{String.t() => non_neg_integer()}
  def recorded_calls, do: Moto.seed!("recorded_calls", %{})

  # ── peer side ────────────────────────────────────────────────────────────────────

  @doc false
  # Peer-side: starts aws_cluster. Elixir's Logger replaces the default handler (which
  # writes to the file) with its console backend; the console would be the controller's
  # terminal, so the log goes back to the file.
  def local_setup(log) do
    {:ok, _} = Application.ensure_all_started(:aws_cluster)

    if match?({:error, _}, :logger.get_handler_config(:default)) do
      :ok =
        :logger.add_handler(:fleet_file, :logger_std_h, %{
          config: %{file: String.to_charlist(log)},
          formatter: {:logger_formatter, %{single_line: true}}
        })

      _ = Logger.remove_backend(:console)
    end

    :ok
  end

  @doc false
  # Peer-side: starts the topologies inside the aws_cluster application's tree, so a node
  # stopping (init:stop) shuts them down in order as a host application's tree would (a
  # gossip node says leave), and records every nodedown from now on.
  def local_start(topologies) do
    {:ok, downs} = Agent.start(fn -> [] end, name: @downs)

    # The watcher is linked to the agent and lives as long as it.
    spawn(fn ->
      :ok = :net_kernel.monitor_nodes(true)
      Process.link(downs)
      watch_downs()
    end)

    Supervisor.start_child(AWSCluster.ApplicationSupervisor, %{
      id: :fleet_topologies,
      start: {AWSCluster.Supervisor, :start_link, [[topologies: topologies]]},
      type: :supervisor
    })
  end

  defp watch_downs do
    receive do
      {:nodedown, node} -> Agent.update(@downs, &[node | &1])
      _ -> :ok
    end

    watch_downs()
  end

  @doc false
  # Peer-side: connections, discovered members and poll count in one round trip.
  def local_snapshot(nil) do
    %{
      connected: Enum.sort(Node.list()),
      members: [],
      polls: 0,
      answers: 0,
      role: :none,
      poller: nil,
      answer_from: nil,
      health: :none,
      downs: []
    }
  end

  def local_snapshot(sup) do
    # AWSCluster.Supervisor's child ids are {strategy, topology}.
    [{{strategy, _topology}, pid, _, _}] = Supervisor.which_children(sup)

    view =
      if strategy == AWSCluster.Strategy.Gossip do
        stats = AWSCluster.Strategy.Gossip.stats(pid)
        members = pid |> AWSCluster.Strategy.Gossip.peers() |> Map.keys()

        %{
          members: members,
          polls: stats.accepted,
          answers: stats.accepted,
          role: :gossip,
          poller: nil,
          answer_from: nil,
          health: :gossip,
          groups:
            case AWSCluster.Groups.view() do
              {:ok, view} -> view
              {:error, _} -> nil
            end
        }
      else
        status = AWSCluster.Poller.status(pid)
        c = status.coordination

        %{
          members: Map.keys(status.members),
          polls: status.polls,
          answers: status.answers,
          role: c.role,
          poller: c.poller,
          answer_from: c.answer_from,
          health: status.health,
          groups: status.groups
        }
      end

    Map.merge(view, %{
      connected: Enum.sort(Node.list()),
      hidden: Enum.sort(Node.list(:hidden)),
      members: Enum.sort(view.members),
      downs: Agent.get(@downs, &Enum.reverse/1)
    })
  end

  defp ip_term(ip), do: "{" <> String.replace(ip, ".", ",") <> "}"
end
