defmodule Mix.Tasks.AwsCluster.PeersTest do
  # Real parts: moto_server seeded with instances at 127.0.x.y, real peer nodes on two
  # of those addresses, moto's own IAM enforcement for the AccessDenied cases.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Test.{Cluster, MixTask, Moto, MotoIAM, StrategyPeer, Wait}

  @moduletag timeout: 300_000

  setup do
    tag = "p#{System.unique_integer([:positive])}"
    on_exit(fn -> Application.delete_env(:aws_cluster, :topologies) end)
    %{tag: tag}
  end

  # {exit status, stdout, stderr}
  defp run_task(args), do: MixTask.run("aws_cluster.peers", args)

  defp seed(tag) do
    specs = [
      %{ip: "127.0.1.31", tags: %{"cluster" => tag, "node" => "#{tag}a"}},
      %{ip: "127.0.2.31", tags: %{"cluster" => tag, "node" => "#{tag}b"}},
      # No BEAM node runs here: discovered, not connectable.
      %{ip: "127.0.3.31", tags: %{"cluster" => tag, "node" => "#{tag}c"}}
    ]

    Moto.run_instances!(specs)
  end

  defp ec2_config(tag, extra \\ []) do
    [
      tags: %{"cluster" => tag},
      node_basename: {:tag, "node"},
      region: Moto.region(),
      endpoint: Moto.endpoint(),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      operation_timeout: 5_000
    ] ++ extra
  end

  defp row(stdout, id) do
    stdout |> String.split("\n") |> Enum.find(&String.starts_with?(&1, id)) |> String.split()
  end

  test "a configured topology: every instance with its AZ, address, node, state, connection and who polls",
       %{tag: tag} do
    [id_a, id_b, id_c] = seed(tag)
    {pa, node_a} = Cluster.start_peer("#{tag}a", "127.0.1.31")
    {pb, node_b} = Cluster.start_peer("#{tag}b", "127.0.2.31")
    on_exit(fn -> Enum.each([pa, pb], &Cluster.stop/1) end)

    # Both peers run the topology: a, the lower name, polls and b follows it.
    topology = [
      diag: [strategy: AWSCluster.Strategy.EC2, config: ec2_config(tag, polling_interval: 1_000)]
    ]

    {:ok, sup_a} = :peer.call(pa, StrategyPeer, :start_detached, [topology])
    {:ok, sup_b} = :peer.call(pb, StrategyPeer, :start_detached, [topology])

    assert Wait.until(fn ->
             :peer.call(pb, StrategyPeer, :status, [sup_b]).coordination.answer_from == node_a
           end)

    assert :peer.call(pa, StrategyPeer, :status, [sup_a]).coordination.role == :poller

    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: ec2_config(tag)]
    )

    refute node_a in Node.list([:visible, :hidden])
    {0, out, ""} = run_task(["--topology", "diag"])

    assert out =~ "topology diag (AWSCluster.Strategy.EC2): 3 peers in 3 AZs"
    assert out =~ ~r/INSTANCE\s+AZ\s+ADDRESS\s+NODE\s+STATE\s+CONNECTED/

    assert out =~ ~r/CONNECTED\s+POLLING\s+ANSWER_FROM\s+AGE/

    a = "#{node_a}"
    b = "#{node_b}"

    assert [^id_a, "us-east-1a", "127.0.1.31", ^a, "running", "yes", "polls", ^a, age] =
             row(out, id_a)

    assert age =~ ~r/^\d+\.\ds$/

    assert [^id_b, "us-east-1b", "127.0.2.31", ^b, "running", "yes", "follows", ^a, _] =
             row(out, id_b)

    assert row(out, id_c) ==
             [
               id_c,
               "us-east-1c",
               "127.0.3.31",
               "#{tag}c@127.0.3.31",
               "running",
               "no",
               "-",
               "-",
               "-"
             ]

    assert out =~ "polling: #{node_a} polls for the 2 connected nodes asked"

    # The task closes the links it opened.
    refute node_a in Node.list([:visible, :hidden])

    {0, out, ""} = run_task(["--topology", "diag", "--no-connect"])
    assert Enum.at(row(out, id_a), 5) == "no"
  end

  test "a poller that stepped aside shows as stepped-down and names no poller" do
    peer = fn n ->
      %{node: n, address: "127.0.1.9", instance: %{id: "i-#{n}", state: "running"}}
    end

    result = %{topology: :app, strategy: AWSCluster.Strategy.EC2, config: %{}, gone: []}
    result = Map.put(result, :peers, [peer.(:"a@127.0.1.9"), peer.(:"b@127.0.1.9")])

    view = fn role, poller ->
      %{role: role, poller: poller, nodes: [], answer_from: poller, answer_age: 1_500, ignored: 0}
    end

    polling = %{
      "a@127.0.1.9": view.(:stepped_down, nil),
      "b@127.0.1.9": view.(:poller, :"b@127.0.1.9")
    }

    connected = MapSet.new([:"a@127.0.1.9", :"b@127.0.1.9"])
    out = Mix.Tasks.AwsCluster.Peers.render(result, connected, polling)
    assert Enum.slice(row(out, "i-a@127.0.1.9"), 6..8) == ["stepped-down", "-", "1.5s"]
    assert Enum.slice(row(out, "i-b@127.0.1.9"), 6..8) == ["polls", "b@127.0.1.9", "1.5s"]
    assert out =~ "polling: b@127.0.1.9 polls for the 2 connected nodes asked"
  end

  # System.put_env does not reach the NIF (the VM keeps its own copy of the
  # environment), so the SDK's default chain is exercised the way users run the task:
  # a separate `mix` process with the credentials in its environment.
  test "flags, as a user runs it: ec2 with tags, address and basename; credentials from the environment",
       %{tag: tag} do
    [id_a, _, _] = seed(tag)
    Moto.run_instances!([%{ip: "127.0.1.32", tags: %{"cluster" => "other"}}])

    args = [
      "--strategy",
      "ec2",
      "--tags",
      "cluster=#{tag}",
      "--basename",
      "chat",
      "--region",
      Moto.region(),
      "--endpoint",
      Moto.endpoint()
    ]

    env = user_env()
    {out, 0} = mix(["aws_cluster.peers" | args], env)
    assert out =~ "topology cli (AWSCluster.Strategy.EC2): 3 peers in 3 AZs"

    assert row(out, id_a) ==
             [id_a, "us-east-1a", "127.0.1.31", "chat@127.0.1.31", "running", "-", "-", "-", "-"]

    refute out =~ "127.0.1.32"
    # Not distributed, so it cannot say; it says how to make it say.
    assert out =~ "CONNECTED is - because this VM is not distributed"

    # --address picks another field; an instance without one is skipped, not guessed.
    {out, 0} = mix(["aws_cluster.peers" | args] ++ ["--address", "tag:missing"], env)
    assert out =~ "0 peers in 0 AZs"

    # No credentials anywhere: a non-zero exit status and the SDK's reason.
    no_creds =
      Enum.reject(env, fn {k, _} -> k in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] end)

    {out, 1} = mix(["aws_cluster.peers" | args], no_creds)
    assert out =~ "topology cli: discovery failed"
    assert out =~ "credential"
  end

  # A user's shell with credentials in the environment.
  defp user_env do
    [
      {"AWS_ACCESS_KEY_ID", "testing"},
      {"AWS_SECRET_ACCESS_KEY", "testing"},
      # Never let the chain reach for a real instance metadata service.
      {"AWS_EC2_METADATA_DISABLED", "true"},
      {"MIX_ENV", "test"}
    ]
  end

  defp mix(args, env) do
    System.cmd("mix", args ++ ["--no-compile", "--operation-timeout", "5000"],
      env: env,
      cd: File.cwd!(),
      stderr_to_stdout: true
    )
  end

  test "flags: autoscaling keeps InService + Healthy instances of the group", %{tag: tag} do
    [id_a, id_b, id_c] = seed(tag)
    Moto.create_asg!("#{tag}-asg", [id_a, id_b, id_c])
    Moto.set_health!(id_c, "Unhealthy")

    Application.put_env(:aws_cluster, :topologies,
      asg: [
        strategy: AWSCluster.Strategy.AutoScaling,
        config: Keyword.drop(ec2_config(tag), [:tags]) ++ [groups: ["#{tag}-asg"]]
      ]
    )

    {0, out, _} = run_task(["--no-connect"])
    assert out =~ "topology asg (AWSCluster.Strategy.AutoScaling): 2 peers in 2 AZs"

    assert row(out, id_a) |> Enum.take(4) == [
             id_a,
             "us-east-1a",
             "127.0.1.31",
             "#{tag}a@127.0.1.31"
           ]

    refute out =~ id_c
  end

  test "flags: ecs lists the cluster's running tasks of the family by their ENI address, in a separate VM",
       %{tag: tag} do
    cluster = "#{tag}-ecs"
    Moto.ecs_cluster!(cluster)
    [a, b] = Moto.ecs_run_tasks!(cluster, "app", [%{az: "a"}, %{az: "b"}])
    [stopped] = Moto.ecs_run_tasks!(cluster, "app", [%{az: "c"}])
    [worker] = Moto.ecs_run_tasks!(cluster, "worker", [%{az: "c"}])
    Moto.ecs_stop!(cluster, [stopped["arn"]])

    args = [
      "--strategy",
      "ecs",
      "--cluster",
      cluster,
      "--family",
      "app",
      "--basename",
      "chat",
      "--region",
      Moto.region(),
      "--endpoint",
      Moto.endpoint()
    ]

    env = user_env()
    {out, 0} = mix(["aws_cluster.peers" | args], env)
    assert out =~ "topology cli (AWSCluster.Strategy.ECS): 2 peers in 2 AZs"

    assert row(out, a["arn"]) ==
             [a["arn"], "us-east-1a", a["ip"], "chat@#{a["ip"]}", "running", "-", "-", "-", "-"]

    assert [_, "us-east-1b" | _] = row(out, b["arn"])
    refute out =~ stopped["ip"]
    refute out =~ worker["ip"]

    # ECS's own address kinds; an EC2 one is refused naming the key.
    {out, 1} = mix(["aws_cluster.peers" | args] ++ ["--address", "private_ip"], env)
    assert out =~ ":address"
  end

  test "a registry topology: the table's live nodes, without writing a row of its own", %{
    tag: tag
  } do
    pg = AWSCluster.Test.Postgres.start!()
    on_exit(fn -> AWSCluster.Test.Postgres.stop(pg) end)

    topology = [
      strategy: AWSCluster.Strategy.Registry,
      config: [
        url: AWSCluster.Test.Postgres.url(pg),
        secret: String.duplicate("k", 32),
        cluster: tag,
        availability_zone: "us-east-1b"
      ]
    ]

    # This VM is a member: its topology writes its row.
    start_supervised!({AWSCluster.Supervisor, topologies: [member: topology]})
    rows = fn -> AWSCluster.Test.Postgres.query!(pg, "SELECT node FROM aws_cluster_nodes") end
    me = Atom.to_string(node())
    assert AWSCluster.Test.Wait.until(fn -> rows.() == [[me]] end)

    Application.put_env(:aws_cluster, :topologies, reg: topology)
    {0, out, _} = run_task(["--topology", "reg", "--no-connect"])
    assert out =~ "topology reg (AWSCluster.Strategy.Registry): 1 peer in 1 AZ"
    assert [^me, "us-east-1b", "127.0.0.1", ^me | _] = row(out, me)
    assert rows.() == [[me]]
  end

  test "AccessDenied exits 1 and names the missing IAM action", %{tag: tag} do
    [id_a, id_b, _] = seed(tag)
    Moto.create_asg!("#{tag}-asg", [id_a, id_b])
    {ec2_key, ec2_secret} = MotoIAM.user!("#{tag}-ec2", ["ec2:DescribeInstances"])
    {none_key, none_secret} = MotoIAM.user!("#{tag}-none", [])
    MotoIAM.enforce!()
    on_exit(&MotoIAM.relax!/0)

    creds = fn key, secret -> [access_key_id: key, secret_access_key: secret] end

    Application.put_env(:aws_cluster, :topologies,
      ec2_ok: [
        strategy: AWSCluster.Strategy.EC2,
        config: ec2_config(tag, []) |> Keyword.merge(creds.(ec2_key, ec2_secret))
      ],
      ec2_denied: [
        strategy: AWSCluster.Strategy.EC2,
        config: ec2_config(tag) |> Keyword.merge(creds.(none_key, none_secret))
      ],
      asg_denied: [
        strategy: AWSCluster.Strategy.AutoScaling,
        config:
          Keyword.drop(ec2_config(tag), [:tags])
          |> Keyword.merge(creds.(ec2_key, ec2_secret))
          |> Keyword.put(:groups, ["#{tag}-asg"])
      ]
    )

    {0, out, ""} = run_task(["--topology", "ec2_ok", "--no-connect"])
    assert out =~ "3 peers in 3 AZs"

    {1, _out, err} = run_task(["--topology", "ec2_denied"])
    assert err =~ "topology ec2_denied: discovery failed (unauthorized)"
    assert err =~ "ec2:DescribeInstances"

    {1, _out, err} = run_task(["--topology", "asg_denied"])
    # moto wraps AutoScaling's AccessDenied in an `Errors` element real AWS does not
    # send; the error reader finds the code and AWS's own message in either shape.
    assert err =~ "topology asg_denied: discovery failed (unauthorized)"
    assert err =~ "AccessDenied: User: arn:aws:iam::"
    assert err =~ "the caller needs IAM permission autoscaling:DescribeAutoScalingGroups"
    refute err =~ ec2_secret
  end

  test "bad flags and unknown topologies exit 1 with a message" do
    {1, _, err} = run_task(["--strategy", "gossipy"])
    assert err =~ "--strategy must be ec2, autoscaling or ecs"

    {1, _, err} = run_task(["--strategy", "ec2", "--tags", "novalue", "--basename", "x"])
    assert err =~ "--tags takes key=value"

    {1, _, err} = run_task(["--strategy", "ec2", "--address", "elastic", "--basename", "x"])
    assert err =~ "--address must be"

    {1, _, err} = run_task(["--bogus"])
    assert err =~ "--bogus"

    {1, _, err} = run_task([])
    assert err =~ "no topologies configured"

    Application.put_env(:aws_cluster, :topologies,
      app: [strategy: AWSCluster.Strategy.EC2, config: [node_basename: "x"]]
    )

    {1, _, err} = run_task(["--topology", "nope"])
    assert err =~ "no topology named nope; configured: app"

    # The strategy's own validation speaks.
    {1, _, err} = run_task(["--topology", "app", "--region", "us-east-1"])
    assert err =~ "topology app: discovery failed (invalid_config)"
    assert err =~ ":tags"
  end
end
