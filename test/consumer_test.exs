defmodule AWSCluster.ConsumerTest do
  # aws_cluster as users meet it: a dependency of an app (test/fixtures/consumer) built
  # from an empty _build, that app's release, the real libcluster, and the prebuilt NIF
  # path on a host without cargo. Every step is a real `mix` or release command in its own
  # OS process; the cargo build is the one this suite's own compile made (same profile,
  # same target dir), so it costs seconds.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Test.{FileServer, Moto, Ports, Wait}

  @moduletag timeout: 900_000

  @repo Path.expand("..", __DIR__)
  @fixture Path.join(__DIR__, "fixtures/consumer")
  @lib "libaws_cluster_nif.so"
  @vendor for v <- ~w(LIBCLUSTER_PATH TELEMETRY_PATH JASON_PATH), do: {v, System.get_env(v)}
  @libcluster_missing Enum.any?(@vendor, fn {_, v} -> v in [nil, ""] end)

  setup_all do
    root =
      Path.join(System.tmp_dir!(), "aws_cluster_consumer_#{System.unique_integer([:positive])}")

    app = copy_fixture(root, "consumer")
    on_exit(fn -> File.rm_rf!(root) end)
    # The one compile every test below builds on.
    {out, status} = mix(app, ["compile"])
    %{root: root, app: app, compile: {status, out}}
  end

  # Every test builds on the one compile: if it failed, each says so with its output.
  setup %{compile: {status, out}} do
    assert status == 0, out
    on_exit(fn -> stop_nodes() end)
    :ok
  end

  test "one mix compile from an empty _build installs the NIF, and mix run meshes with real nodes",
       ctx do
    installed = installed(ctx.app)
    assert {:ok, %File.Stat{type: :regular}} = File.lstat(installed)

    # The consumer's dev build got the dev profile, although Mix compiled the dependency
    # with Mix.env() == :prod.
    manifest = Path.join(ctx.app, "_build/dev/lib/aws_cluster/.mix/compile.aws_cluster_nif")
    assert {:cargo, "dev", _stat} = manifest |> File.read!() |> :erlang.binary_to_term()

    # The next compile has nothing to do and says nothing about cargo.
    {again, 0} = mix(ctx.app, ["compile"])
    refute again =~ "aws_cluster: building"
    refute again =~ "Compiling"

    run = System.unique_integer([:positive])
    [s1, s2, s3] = specs(run, 61)
    tag = "consumer-#{run}"
    launch!([s1, s2, s3], tag)
    env = [{"CONSUMER_APP_TAG", tag}, {"CONSUMER_AWS_ENDPOINT", Moto.endpoint()}]

    # Two nodes run the topology from config/runtime.exs; the third is `mix run -e` that
    # starts the same topology itself under AWSCluster.Supervisor.
    for s <- [s1, s2], do: start_node(ctx.app, s, [{"CONSUMER_STRATEGY", "ec2"} | env])

    script = """
    {:ok, {127, 0, 0, 1}} = AWSCluster.Interface.address("lo")

    config = [
      tags: %{"app" => System.fetch_env!("CONSUMER_APP_TAG")},
      node_basename: {:tag, "node"},
      region: "us-east-1",
      endpoint: System.fetch_env!("CONSUMER_AWS_ENDPOINT"),
      access_key_id: "testing",
      secret_access_key: "testing",
      polling_interval: 500
    ]

    {:ok, _} =
      AWSCluster.Supervisor.start_link(
        topologies: [app: [strategy: AWSCluster.Strategy.EC2, config: config]]
      )

    peers = #{inspect([s1.node, s2.node])}
    sees? = fn n, others -> Enum.all?(others, &(&1 in :erpc.call(n, Node, :list, []))) end
    mesh? = fn -> sees?.(node(), peers) and Enum.all?(peers, &sees?.(&1, [node() | peers -- [&1]])) end
    deadline = System.monotonic_time(:millisecond) + 60_000

    wait = fn wait ->
      cond do
        mesh?.() -> :ok
        System.monotonic_time(:millisecond) > deadline -> :timeout
        true -> Process.sleep(100) && wait.(wait)
      end
    end

    IO.puts("MESH \#{wait.(wait)} \#{inspect(Enum.sort(Node.list()))}")
    """

    {out, status} = node_cmd(ctx.app, s3, env, ["-S", "mix", "run", "--no-compile", "-e", script])
    assert status == 0, out
    assert out =~ "MESH ok #{inspect(Enum.sort([s1.node, s2.node]))}", out
  end

  test "MIX_ENV=prod mix release boots and loads the NIF from the release's own directory",
       ctx do
    # The release gets the dev cargo profile here so it reuses this suite's build; a
    # user's `MIX_ENV=prod mix release` gets the release profile.
    {out, status} =
      mix(ctx.app, ["release", "--overwrite"], [
        {"MIX_ENV", "prod"},
        {"AWS_CLUSTER_NIF_PROFILE", "dev"}
      ])

    assert status == 0, out

    # Moved away from _build, which is then removed: only the release's own files remain.
    rel = Path.join(ctx.root, "release_elsewhere")
    File.rename!(Path.join(ctx.app, "_build/prod/rel/consumer"), rel)
    File.rm_rf!(Path.join(ctx.app, "_build/prod"))

    eval = ~S"""
    IO.puts("nif=" <> AWSCluster.Native.path())
    IO.inspect(AWSCluster.Interface.address("lo"), label: "lo")
    """

    {out, status} =
      System.cmd(Path.join(rel, "bin/consumer"), ["eval", eval],
        env: child_env([]),
        stderr_to_stdout: true
      )

    assert status == 0, out
    [vsn] = Path.wildcard(Path.join(rel, "lib/aws_cluster-*")) |> Enum.map(&Path.basename/1)
    assert out =~ "nif=#{rel}/lib/#{vsn}/priv/native/libaws_cluster_nif\n", out
    assert out =~ "lo: {:ok, {127, 0, 0, 1}}", out
  end

  if @libcluster_missing do
    IO.puts(
      "skipping the real-libcluster consumer test: LIBCLUSTER_PATH, TELEMETRY_PATH and " <>
        "JASON_PATH are not all set (script/test sets them from ../shared/vendor)"
    )

    @tag skip: "LIBCLUSTER_PATH, TELEMETRY_PATH and JASON_PATH are not set"
  end

  test "EC2 and Gossip strategies under libcluster's Cluster.Supervisor, -connect_all false",
       ctx do
    run = System.unique_integer([:positive])

    # EC2 on moto. The third instance carries another tag: nodes 1 and 2 never find it,
    # so node 3 makes its own links, in its first round, before its app goes on.
    [s1, s2, s3] = specs = specs(run, 71)
    tag = "libcluster-#{run}"
    launch!([s1, s2], tag)
    launch!([s3], tag <> "-late")

    ec2 = [
      {"CONSUMER_SUPERVISOR", "libcluster"},
      {"CONSUMER_STRATEGY", "ec2"},
      {"CONSUMER_APP_TAG", tag},
      {"CONSUMER_AWS_ENDPOINT", Moto.endpoint()}
    ]

    nodes = for s <- specs, do: start_node(ctx.app, s, ec2)
    assert_libcluster_mesh(nodes, AWSCluster.Strategy.EC2)

    # libcluster's promises: connects went through Cluster.Strategy.connect_nodes/4, so
    # its own telemetry fired next to ours: three links, each made by one side.
    count = fn n, event -> :erpc.call(n.node, Consumer.Events, :count, [event]) end
    libcluster = Enum.map(nodes, &count.(&1, [:libcluster, :connect_node, :ok]))
    ours = Enum.map(nodes, &count.(&1, [:aws_cluster, :node, :connect]))
    assert Enum.sum(libcluster) >= 3 and List.last(libcluster) >= 2, inspect(libcluster)
    assert Enum.sum(ours) >= 3 and List.last(ours) >= 2, inspect(ours)

    # ... and with block_startup the app's next child on node 3 started with the cluster
    # formed: node 3's own first round had connected both.
    seen = :erpc.call(s3.node, :persistent_term, :get, [Consumer.FirstSight])
    assert s1.node in seen and s2.node in seen, "the next child saw #{inspect(seen)}"
    stop_nodes()

    # Gossip by unicast to seeds, each node on its own address.
    specs = specs(run + 1, 81)
    port = Ports.udp()

    gossip = fn s ->
      [
        {"CONSUMER_SUPERVISOR", "libcluster"},
        {"CONSUMER_STRATEGY", "gossip"},
        {"CONSUMER_GOSSIP_SECRET", "consumer-test-secret-#{run}-0123456789abcdef"},
        {"CONSUMER_GOSSIP_PORT", Integer.to_string(port)},
        {"CONSUMER_SEEDS", Enum.map_join(specs, ",", & &1.ip)},
        {"CONSUMER_IP", s.ip}
      ]
    end

    nodes = for s <- specs, do: start_node(ctx.app, s, gossip.(s))
    assert_libcluster_mesh(nodes, AWSCluster.Strategy.Gossip)

    # block_startup under gossip: the last node's next child saw the other two.
    [g1, g2, g3] = nodes
    seen = :erpc.call(g3.node, :persistent_term, :get, [Consumer.FirstSight])
    assert g1.node in seen and g2.node in seen, "the next child saw #{inspect(seen)}"
  end

  test "prebuilt NIF: installed without cargo from a verified artifact; a tampered one fails",
       ctx do
    built = installed(ctx.app)

    # The package as hex would ship it, with the checksum the package task records.
    pkg = Path.join(ctx.root, "aws_cluster_pkg")

    for f <- Mix.Project.config()[:package][:files] do
      File.mkdir_p!(Path.dirname(Path.join(pkg, f)))
      File.cp_r!(Path.join(@repo, f), Path.join(pkg, f))
    end

    artifacts = Path.join(ctx.root, "artifacts")

    ExUnit.CaptureIO.capture_io(fn ->
      Mix.Tasks.AwsCluster.Nif.Package.run([
        "--lib",
        built,
        "--out",
        artifacts,
        "--checksums",
        Path.join(pkg, "native/checksums.txt")
      ])
    end)

    [artifact] = Path.wildcard(Path.join(artifacts, "*.so.tar.gz"))
    name = Path.basename(artifact)
    [expected, ^name] = String.split(File.read!(artifact <> ".sha256"))
    assert File.read!(Path.join(pkg, "native/checksums.txt")) =~ "#{expected}  #{name}\n"

    {base_url, requests} = FileServer.serve(artifacts)
    app = copy_fixture(ctx.root, "consumer_prebuilt")

    # No cargo on PATH, and an empty cargo target dir: nothing can be built.
    path = String.split(System.get_env("PATH", ""), ":")
    no_cargo = Enum.reject(path, &File.exists?(Path.join(&1, "cargo")))
    mix_dir = Path.dirname(System.find_executable("mix"))
    assert mix_dir in no_cargo, "cargo and mix share #{mix_dir}: cannot hide cargo from mix"
    no_cargo = Enum.join(no_cargo, ":")

    env = [
      {"AWS_CLUSTER_PATH", pkg},
      {"AWS_CLUSTER_NIF_BASE_URL", base_url},
      {"PATH", no_cargo},
      {"AWS_CLUSTER_TARGET_DIR", Path.join(ctx.root, "empty_target")},
      # The artifact server is on loopback: no proxy of this machine's may sit between.
      {"HTTP_PROXY", nil},
      {"http_proxy", nil}
      | for({v, _} <- @vendor, do: {v, nil})
    ]

    {out, status} = mix(app, ["compile"], env)
    assert status == 0, out
    assert out =~ "fetching its prebuilt NIF #{base_url}/#{name}"
    assert :counters.get(requests, 1) == 1
    refute File.exists?(Path.join(ctx.root, "empty_target"))

    {out, status} =
      mix(
        app,
        ["run", "--no-compile", "-e", ~s|IO.inspect(AWSCluster.Interface.address("lo"))|],
        env
      )

    assert status == 0, out
    assert out =~ "{:ok, {127, 0, 0, 1}}"

    # Tampered: another library behind the same name. Removing the installed copy makes
    # the compiler fetch again, as a fresh machine would.
    installed = installed(app)
    File.rm!(installed)
    File.write!(artifact, :zlib.gzip("not the artifact"))
    actual = :crypto.hash(:sha256, File.read!(artifact)) |> Base.encode16(case: :lower)
    {out, status} = mix(app, ["compile"], env)
    assert status != 0
    assert out =~ "#{base_url}/#{name}"
    assert out =~ "sha256 #{actual}"
    assert out =~ expected
    refute File.exists?(installed)

    # Missing: the URL is named with the HTTP status.
    File.rm!(artifact)
    {out, status} = mix(app, ["compile"], env)
    assert status != 0
    assert out =~ "#{base_url}/#{name} failed: HTTP 404", out
  end

  test "nif_services: [:ec2] in the app's config builds an EC2-only NIF; the strategies it leaves out fail their start saying how to add them",
       ctx do
    app = copy_fixture(ctx.root, "consumer_ec2_only")
    # The EC2-only build leaves the shared target dir's NIF built without the other
    # services; build the default one again, so the other tests' "nothing to do"
    # compiles stay true whatever order the tests run in.
    on_exit(fn -> {_, 0} = mix(ctx.app, ["compile"]) end)
    config = Path.join(app, "config/config.exs")

    File.write!(
      config,
      File.read!(@fixture <> "/config/config.exs") <>
        "config :aws_cluster, nif_services: [:ec2, :lambda]\n"
    )

    # A service that does not exist fails the build, naming it, before cargo runs.
    {out, status} = mix(app, ["compile"])
    assert status != 0
    assert out =~ ~s(unknown AWS service "lambda" in nif_services)
    refute out =~ "Compiling aws_cluster_core"

    File.write!(
      config,
      File.read!(@fixture <> "/config/config.exs") <>
        "config :aws_cluster, nif_services: [:ec2]\n"
    )

    {out, status} = mix(app, ["compile"])
    assert status == 0, out

    tag = "ec2only-#{System.unique_integer([:positive])}"
    [id] = Moto.run_instances!([%{ip: "127.0.1.66", tags: %{"app" => tag}}])

    script = """
    IO.puts("SERVICES \#{inspect(AWSCluster.NIF.services())}")
    base = [region: "us-east-1", node_basename: "x"]
    {:error, e} = AWSCluster.Strategy.ECS.start_link(topology: :t, config: base ++ [cluster: "c", family: "f"])
    IO.puts("ECS \#{e.reason} \#{e.message}")
    {:error, e} = AWSCluster.Strategy.AutoScaling.start_link(topology: :t, config: base ++ [groups: ["g"]])
    IO.puts("ASG \#{e.reason}")
    client_opts = [region: "us-east-1", endpoint: "#{Moto.endpoint()}", access_key_id: "testing", secret_access_key: "testing"]
    {:ok, client} = AWSCluster.AWS.client(client_opts)
    {:ok, found} = AWSCluster.AWS.describe_instances(client, %{"tag:app" => "#{tag}"})
    IO.puts("EC2 \#{inspect(Enum.map(found, & &1.id))}")
    """

    {out, status} = mix(app, ["run", "--no-compile", "-e", script])
    assert status == 0, out
    assert out =~ "SERVICES {:ok, [:ec2]}"

    assert out =~
             "ECS not_supported topology :t: this aws_cluster NIF was built without ecs (it has ec2)"

    assert out =~ "nif_services"
    assert out =~ "ASG not_supported"
    assert out =~ "EC2 #{inspect([id])}"
  end

  # ── helpers ───────────────────────────────────────────────────────────────────────

  defp copy_fixture(root, name) do
    app = Path.join(root, name)
    File.rm_rf!(app)
    File.mkdir_p!(root)
    File.cp_r!(@fixture, app)
    # A developer may have built the fixture in place; the test starts from nothing.
    Enum.each(~w(_build deps), &File.rm_rf!(Path.join(app, &1)))
    app
  end

  defp installed(app), do: Path.join(app, "_build/dev/lib/aws_cluster/priv/native/" <> @lib)

  defp mix(dir, args, extra \\ []) do
    System.cmd(System.find_executable("mix"), args,
      cd: dir,
      env: child_env(extra),
      stderr_to_stdout: true
    )
  end

  # What the child commands see: the consumer's own dev env, this checkout as the
  # aws_cluster dependency, and none of this suite's NIF overrides.
  defp child_env(extra) do
    base =
      [
        {"MIX_ENV", "dev"},
        {"AWS_CLUSTER_PATH", @repo},
        {"HEX_OFFLINE", "1"},
        {"AWS_CLUSTER_NIF_PATH", nil},
        {"AWS_CLUSTER_NIF_FEATURES", nil},
        {"AWS_CLUSTER_NIF_PROFILE", nil},
        {"AWS_CLUSTER_NIF_BASE_URL", nil},
        {"AWS_CLUSTER_FORCE_BUILD", nil}
      ] ++ @vendor

    base |> Map.new() |> Map.merge(Map.new(extra)) |> Enum.to_list()
  end

  defp specs(run, host) do
    for {i, ip} <- [{1, "127.0.1.#{host}"}, {2, "127.0.2.#{host}"}, {3, "127.0.3.#{host}"}] do
      basename = "consumer#{i}-#{run}"
      %{basename: basename, ip: ip, node: :"#{basename}@#{ip}"}
    end
  end

  defp launch!(specs, tag) do
    Moto.run_instances!(
      for s <- specs, do: %{ip: s.ip, tags: %{"app" => tag, "node" => s.basename}}
    )
  end

  # A node of the consumer app: `elixir --name ... -S mix run` in its own OS process,
  # bounded by `timeout` so it cannot outlive a crashed suite by long.
  defp node_args(spec) do
    ip = "{" <> String.replace(spec.ip, ".", ",") <> "}"

    [
      "--name",
      Atom.to_string(spec.node),
      "--cookie",
      Atom.to_string(Node.get_cookie()),
      "--erl",
      "-connect_all false -kernel inet_dist_use_interface #{ip}"
    ]
  end

  defp node_cmd(app, spec, env, args) do
    System.cmd("timeout", ["120", "elixir" | node_args(spec)] ++ args,
      cd: app,
      env: child_env(env),
      stderr_to_stdout: true
    )
  end

  defp start_node(app, spec, env) do
    args =
      ["300", "elixir" | node_args(spec)] ++ ["-S", "mix", "run", "--no-compile", "--no-halt"]

    port =
      Port.open({:spawn_executable, System.find_executable("timeout")}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        args: args,
        cd: app,
        env: for({k, v} <- child_env(env), do: {String.to_charlist(k), port_value(v)})
      ])

    # Remembered outside the test process: on_exit runs in another one.
    {:os_pid, os_pid} = Port.info(port, :os_pid)

    :persistent_term.put({__MODULE__, :nodes}, [
      os_pid | :persistent_term.get({__MODULE__, :nodes}, [])
    ])

    # Up means the app has started: peers may connect to a node as soon as its
    # distribution listens, before `mix run` has started anything.
    up? =
      Wait.until(
        fn ->
          :net_kernel.hidden_connect_node(spec.node) and
            List.keymember?(
              :erpc.call(spec.node, Application, :started_applications, []),
              :consumer,
              0
            )
        end,
        60_000,
        200
      )

    assert up?, "#{spec.node} did not boot: #{drain(port)}"
    spec
  end

  # Port.open unsets a variable given `false`.
  defp port_value(nil), do: false
  defp port_value(v), do: String.to_charlist(v)

  defp drain(port) do
    receive do
      {^port, {:data, data}} -> data <> drain(port)
    after
      0 -> ""
    end
  end

  # `timeout` passes SIGTERM on to the VM, which then stops its applications in order.
  defp stop_nodes do
    pids = :persistent_term.get({__MODULE__, :nodes}, [])
    :persistent_term.put({__MODULE__, :nodes}, [])
    Enum.each(pids, &System.cmd("kill", ["-TERM", Integer.to_string(&1)], stderr_to_stdout: true))

    Wait.until(fn -> Enum.all?(pids, &(not File.exists?("/proc/#{&1}"))) end, 15_000, 100) ||
      Enum.each(
        pids,
        &System.cmd("kill", ["-KILL", Integer.to_string(&1)], stderr_to_stdout: true)
      )

    :ok
  end

  defp assert_libcluster_mesh(specs, strategy) do
    nodes = Enum.map(specs, & &1.node)

    meshed =
      Wait.until(
        fn ->
          Enum.all?(nodes, fn n ->
            connected = :erpc.call(n, Node, :list, [], 5_000)
            Enum.all?(nodes -- [n], &(&1 in connected))
          end)
        end,
        60_000,
        200
      )

    assert meshed, "no full mesh of #{inspect(nodes)} under libcluster with #{inspect(strategy)}"

    for n <- nodes do
      apps = :erpc.call(n, Application, :started_applications, [])
      assert List.keymember?(apps, :libcluster, 0)
      # libcluster's own child spec: {topology, pid, :worker, [strategy]}.
      children = :erpc.call(n, Supervisor, :which_children, [Consumer.ClusterSupervisor])
      assert [{:app, pid, :worker, [^strategy]}] = children
      assert is_pid(pid)
    end
  end
end
