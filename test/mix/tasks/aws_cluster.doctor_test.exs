defmodule Mix.Tasks.AwsCluster.DoctorTest do
  # Real parts: moto_server (with its IAM enforcement for denials), a fake IMDS in v2,
  # token-hang and down modes, real peer nodes on 127.0.x.y, the real epmd.
  use AWSCluster.Test.MotoCase, async: false

  alias AWSCluster.Test.{Cluster, FakeIMDS, FakeTaskMetadata, MixTask, Moto, MotoIAM}

  @moduletag timeout: 300_000

  setup do
    on_exit(fn -> Application.delete_env(:aws_cluster, :topologies) end)
    %{tag: "d#{System.unique_integer([:positive])}"}
  end

  # Output as the user sees it: stdout and stderr together.
  defp run_task(args) do
    {status, stdout, stderr} = MixTask.run("aws_cluster.doctor", args)
    {status, stdout <> stderr}
  end

  # The line of check `name`: {status, message}, plus the fix line if any.
  defp line(out, name) do
    lines = String.split(out, "\n")
    index = Enum.find_index(lines, &(&1 =~ ~r/^(PASS|WARN|FAIL)  #{Regex.escape(name)}\s/))
    assert index, "no check #{inspect(name)} in:\n#{out}"
    [status | _] = String.split(Enum.at(lines, index))
    fix = Enum.at(lines, index + 1, "")
    fix = if String.starts_with?(fix, "      fix: "), do: fix, else: nil
    {status, Enum.at(lines, index), fix}
  end

  defp basename, do: node() |> Atom.to_string() |> String.split("@") |> hd()

  defp config(tag, extra) do
    [
      tags: %{"cluster" => tag},
      node_basename: {:tag, "node"},
      address: {:tag, "addr"},
      region: Moto.region(),
      endpoint: Moto.endpoint(),
      access_key_id: "testing",
      secret_access_key: "testing",
      max_attempts: 1,
      operation_timeout: 5_000
    ]
    |> Keyword.merge(extra)
  end

  defp instance(tag, ip, node_base, addr \\ nil),
    do: %{ip: ip, tags: %{"cluster" => tag, "node" => node_base, "addr" => addr || ip}}

  test "a healthy host: every check passes except the peer nobody runs on", %{tag: tag} do
    # This test VM is one of the instances: its tag addr=127.0.0.1 makes discovery name
    # it exactly node().
    [own, _a, _b, _c] =
      Moto.run_instances!([
        instance(tag, "127.0.1.40", basename(), "127.0.0.1"),
        instance(tag, "127.0.1.41", "#{tag}a"),
        instance(tag, "127.0.2.41", "#{tag}b"),
        instance(tag, "127.0.3.41", "#{tag}c")
      ])

    {pa, node_a} = Cluster.start_peer("#{tag}a", "127.0.1.41")
    {pb, node_b} = Cluster.start_peer("#{tag}b", "127.0.2.41")
    on_exit(fn -> Enum.each([pa, pb], &Cluster.stop/1) end)

    imds = start_supervised!({FakeIMDS, instance_id: own, availability_zone: "us-east-1a"})

    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: config(tag, [])]
    )

    {1, out} = run_task(["--imds-endpoint", FakeIMDS.endpoint(imds), "--interface", "lo"])

    assert out =~ "aws_cluster doctor on #{node()}"
    assert {"PASS", text, nil} = line(out, "imds")
    assert text =~ "IMDSv2 at #{FakeIMDS.endpoint(imds)}: instance #{own} in us-east-1a"
    assert {"PASS", text, nil} = line(out, "region [diag]")
    assert text =~ "us-east-1 (from the topology config)"
    assert {"PASS", text, nil} = line(out, "credentials [diag]")
    assert text =~ "accepted by AWS (static keys in the topology config)"
    assert {"PASS", _, nil} = line(out, "iam ec2:DescribeInstances [diag]")
    assert {"PASS", text, nil} = line(out, "discovery [diag]")
    assert text =~ "4 peers in 3 AZs"
    assert {"PASS", text, nil} = line(out, "node name")
    assert text =~ "host is lo's address"
    assert {"PASS", text, nil} = line(out, "node name [diag]")
    assert text =~ "discovery names this instance #{node()}"
    assert {"WARN", _, fix} = line(out, "distribution ports")
    assert fix =~ "inet_dist_listen_min"

    {cookie_status, _, _} = line(out, "cookie")
    assert cookie_status in ["PASS", "WARN"]
    refute out =~ Atom.to_string(Node.get_cookie())

    assert {"PASS", text, nil} = line(out, "peer #{node_a}")
    assert text =~ ~r/epmd 4369 open, #{tag}a registered on port \d+, port open, connection made/
    assert {"PASS", _, nil} = line(out, "peer #{node_b}")
    assert {"FAIL", text, fix} = line(out, "peer #{tag}c@127.0.3.41")
    assert text =~ "no node #{tag}c is registered"
    assert fix =~ "not running"
    # The doctor leaves no connection behind.
    refute node_a in Node.list([:visible, :hidden])
    assert out =~ ~r/\d+ passed, \d+ warnings, 1 failed/
  end

  test "IMDS: a token that never comes (hop limit 1) warns with the fix; IMDS down fails when needed",
       %{tag: tag} do
    imds = start_supervised!({FakeIMDS, mode: :token_hang})

    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: config(tag, [])]
    )

    {_, out} = run_task(["--imds-endpoint", FakeIMDS.endpoint(imds), "--no-connect"])
    assert {"WARN", text, fix} = line(out, "imds")
    assert text =~ "answered only without a session token (IMDSv1)"
    assert fix =~ "hop limit to 2"
    assert fix =~ "--http-put-response-hop-limit 2"

    # Down, and the region must come from it: both fail, naming the key to set.
    FakeIMDS.set(imds, mode: :down)

    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: Keyword.delete(config(tag, []), :region)]
    )

    {1, out} = run_task(["--imds-endpoint", FakeIMDS.endpoint(imds), "--no-connect"])
    assert {"FAIL", _, fix} = line(out, "imds")
    assert fix =~ "set region: in the topology config"
    assert {"FAIL", _, fix} = line(out, "region [diag]")
    assert fix =~ "set region:"

    # Down but not needed (every value configured): a warning only.
    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: config(tag, [])]
    )

    {_, out} = run_task(["--imds-endpoint", FakeIMDS.endpoint(imds), "--no-connect"])
    assert {"WARN", text, nil} = line(out, "imds")
    assert text =~ "not needed"
  end

  test "IAM: each missing action is named, bad credentials are told apart", %{tag: tag} do
    [a] = Moto.run_instances!([instance(tag, "127.0.1.42", "#{tag}a")])
    Moto.create_asg!("#{tag}-asg", [a])
    {key, secret} = MotoIAM.user!("#{tag}-ec2", ["ec2:DescribeInstances"])
    MotoIAM.enforce!()
    on_exit(&MotoIAM.relax!/0)

    asg_config =
      config(tag, access_key_id: key, secret_access_key: secret, groups: ["#{tag}-asg"])
      |> Keyword.delete(:tags)

    Application.put_env(:aws_cluster, :topologies,
      asg: [strategy: AWSCluster.Strategy.AutoScaling, config: asg_config],
      wrong: [strategy: AWSCluster.Strategy.EC2, config: config(tag, [])]
    )

    {1, out} = run_task(["--no-imds", "--no-connect"])

    assert {"PASS", _, nil} = line(out, "credentials [asg]")
    assert {"PASS", _, nil} = line(out, "iam ec2:DescribeInstances [asg]")
    assert {"FAIL", text, fix} = line(out, "iam autoscaling:DescribeAutoScalingGroups [asg]")
    assert text =~ "denied"
    assert fix =~ "allow autoscaling:DescribeAutoScalingGroups"
    assert {"FAIL", _, _} = line(out, "discovery [asg]")

    # moto's IAM does not know the `testing` keys.
    assert {"FAIL", text, fix} = line(out, "credentials [wrong]")
    assert text =~ "AWS rejected or found no credentials (static keys in the topology config)"
    assert fix =~ "role"
    refute out =~ "iam ec2:DescribeInstances [wrong]"
    refute out =~ secret
  end

  test "closed ports and a failed handshake look like what they are", %{tag: tag} do
    Moto.run_instances!([
      instance(tag, "127.0.1.43", "#{tag}a"),
      instance(tag, "127.0.2.43", "#{tag}ghost")
    ])

    {pa, node_a} = Cluster.start_peer("#{tag}a", "127.0.1.43")
    on_exit(fn -> Cluster.stop(pa) end)

    # A name registered in epmd whose port nobody listens on: what a node behind a
    # security group without the distribution range looks like from outside.
    closed = Moto.free_port()
    epmd = register_in_epmd!("#{tag}ghost", closed)
    on_exit(fn -> :gen_tcp.close(epmd) end)

    Application.put_env(:aws_cluster, :topologies,
      diag: [strategy: AWSCluster.Strategy.EC2, config: config(tag, [])]
    )

    {1, out} = run_task(["--no-imds", "--node-address", "127.0.0.9"])

    assert {"PASS", _, nil} = line(out, "peer #{node_a}")
    assert {"FAIL", text, fix} = line(out, "peer #{tag}ghost@127.0.2.43")
    assert text =~ "registered, but its distribution port refused the connection (closed)"
    assert fix =~ "security groups"
    assert {"FAIL", text, fix} = line(out, "node name")
    assert text =~ "host 127.0.0.1 is not the address asked for (127.0.0.9)"
    assert fix =~ "AWSCluster.Distribution"

    # EPMD itself closed (another port than the one epmd listens on).
    {1, out} = run_task(["--no-imds", "--epmd-port", "#{Moto.free_port()}"])
    assert {"FAIL", text, fix} = line(out, "peer #{node_a}")
    assert text =~ ~r/epmd port \d+ refused the connection \(closed\)/
    assert fix =~ "allow TCP"

    # Another cookie: the ports are open, the handshake is refused.
    true = :peer.call(pa, :erlang, :set_cookie, [:"not-#{tag}"])
    {1, out} = run_task(["--no-imds"])
    assert {"FAIL", text, fix} = line(out, "peer #{node_a}")
    assert text =~ "port open, but the distribution handshake failed"
    assert fix =~ "cookies differ"
  end

  # A plain `mix` VM, as most people first run it: no distribution, so the name and
  # cookie are not checked, and the exit status follows the failures.
  test "as a user runs it: exit status 0 without failures, 1 with", %{tag: tag} do
    Moto.run_instances!([instance(tag, "127.0.1.44", "#{tag}a")])

    env = [
      {"AWS_ACCESS_KEY_ID", "testing"},
      {"AWS_SECRET_ACCESS_KEY", "testing"},
      {"AWS_EC2_METADATA_DISABLED", "true"},
      {"MIX_ENV", "test"}
    ]

    args = [
      "aws_cluster.doctor",
      "--no-compile",
      "--no-imds",
      "--strategy",
      "ec2",
      "--tags",
      "cluster=nothing-#{tag}",
      "--basename",
      "x",
      "--region",
      Moto.region(),
      "--endpoint",
      Moto.endpoint()
    ]

    {out, 0} = System.cmd("mix", args, env: env, stderr_to_stdout: true)
    assert out =~ "aws_cluster doctor on a VM without distribution"
    assert {"PASS", text, nil} = line(out, "credentials [cli]")
    assert text =~ "environment: AWS_ACCESS_KEY_ID"
    assert {"WARN", _, _} = line(out, "discovery [cli]")
    assert {"WARN", _, fix} = line(out, "node name")
    assert fix =~ "elixir --name"

    # The instance exists, nothing runs there: a failed peer check.
    args = List.replace_at(args, 6, "cluster=#{tag}")
    {out, 1} = System.cmd("mix", args, env: env, stderr_to_stdout: true)
    assert {"FAIL", _, _} = line(out, "peer x@127.0.1.44")
  end

  test "ECS: identity from task metadata, each ecs: action probed and a denial named; metadata down names the options",
       %{tag: tag} do
    cluster = "#{tag}-ecs"
    Moto.ecs_cluster!(cluster)
    [me, _other] = Moto.ecs_run_tasks!(cluster, "app", [%{az: "a"}, %{az: "b"}])

    meta =
      start_supervised!(
        {FakeTaskMetadata,
         cluster: cluster, task_arn: me["arn"], family: "app", az: "us-east-1a", ip: me["ip"]}
      )

    ecs_config = fn extra ->
      [
        node_basename: "app",
        metadata_uri: FakeTaskMetadata.uri(meta),
        endpoint: Moto.endpoint(),
        max_attempts: 1,
        operation_timeout: 5_000
      ] ++ extra
    end

    Application.put_env(:aws_cluster, :topologies,
      ecs: [
        strategy: AWSCluster.Strategy.ECS,
        config: ecs_config.(access_key_id: "testing", secret_access_key: "testing")
      ]
    )

    {_, out} = run_task(["--no-imds", "--no-connect"])
    assert {"PASS", text, nil} = line(out, "ecs task [ecs]")

    assert text =~
             "cluster #{cluster}, family app, region us-east-1 (from task metadata v4 at " <>
               FakeTaskMetadata.uri(meta)

    assert {"PASS", _, nil} = line(out, "iam ecs:ListTasks [ecs]")
    assert {"PASS", _, nil} = line(out, "iam ecs:DescribeTasks [ecs]")
    assert {"PASS", text, nil} = line(out, "discovery [ecs]")
    assert text =~ "2 peers in 2 AZs (AWSCluster.Strategy.ECS)"

    # Credentials allowed to list but not to describe: the missing action is named.
    {key, secret} = MotoIAM.user!("#{tag}-ecs", ["ecs:ListTasks"])
    MotoIAM.enforce!()
    on_exit(&MotoIAM.relax!/0)

    Application.put_env(:aws_cluster, :topologies,
      ecs: [
        strategy: AWSCluster.Strategy.ECS,
        config: ecs_config.(access_key_id: key, secret_access_key: secret)
      ]
    )

    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"PASS", _, nil} = line(out, "credentials [ecs]")
    assert {"PASS", _, nil} = line(out, "iam ecs:ListTasks [ecs]")
    assert {"FAIL", text, fix} = line(out, "iam ecs:DescribeTasks [ecs]")
    assert text =~ "denied"
    assert fix =~ "allow ecs:DescribeTasks"
    refute out =~ secret
    MotoIAM.relax!()

    FakeTaskMetadata.set(meta, mode: :down)
    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"FAIL", text, fix} = line(out, "ecs task [ecs]")
    assert text =~ "cluster:"
    assert fix =~ "set cluster:, region: and family:"
    refute out =~ "discovery [ecs]"
  end

  test "registry: the table, TLS, the privileges and a read; a user without DELETE and a wrong password are named",
       %{tag: tag} do
    pg = AWSCluster.Test.Postgres.start!()
    on_exit(fn -> AWSCluster.Test.Postgres.stop(pg) end)

    registry = fn url ->
      [
        strategy: AWSCluster.Strategy.Registry,
        config: [url: url, secret: String.duplicate("k", 32), cluster: tag]
      ]
    end

    # Before any node ran: the doctor writes nothing, not even the table.
    Application.put_env(:aws_cluster, :topologies,
      reg: registry.(AWSCluster.Test.Postgres.url(pg))
    )

    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"FAIL", text, fix} = line(out, "registry [reg]")
    assert text =~ "not_found" and text =~ "does not exist"
    assert fix =~ "CREATE TABLE"
    no_table = "SELECT to_regclass('aws_cluster_nodes') IS NULL"
    assert AWSCluster.Test.Postgres.query!(pg, no_table) == [["t"]]

    # A member's row, written by a topology of this VM (it is distributed).
    start_supervised!(
      {AWSCluster.Supervisor, topologies: [member: registry.(AWSCluster.Test.Postgres.url(pg))]}
    )

    me = Atom.to_string(node())
    rows = fn -> AWSCluster.Test.Postgres.query!(pg, "SELECT node FROM aws_cluster_nodes") end
    assert AWSCluster.Test.Wait.until(fn -> rows.() == [[me]] end)

    Application.put_env(:aws_cluster, :topologies,
      reg: registry.(AWSCluster.Test.Postgres.url(pg))
    )

    {_, out} = run_task(["--no-imds", "--no-connect"])
    assert {"PASS", text, nil} = line(out, "registry [reg]")

    assert text =~
             ~r/PostgreSQL 15\.\d+.* at 127\.0\.0\.1:#{pg.port}; table aws_cluster_nodes: 1 live rows/

    assert {"WARN", _, fix} = line(out, "registry [reg] tls")
    assert fix =~ "ssl: :verify_full"
    assert {"PASS", _, nil} = line(out, "registry [reg] privileges")
    assert {"PASS", text, nil} = line(out, "discovery [reg]")
    assert text =~ "1 peers"
    # The doctor only read: no row of its own.
    assert rows.() == [[me]]

    AWSCluster.Test.Postgres.query!(
      pg,
      "CREATE USER limited PASSWORD 'limited-pw'; " <>
        "GRANT SELECT, INSERT, UPDATE ON aws_cluster_nodes TO limited"
    )

    limited = AWSCluster.Test.Postgres.url(pg, user: "limited", password: "limited-pw")
    Application.put_env(:aws_cluster, :topologies, reg: registry.(limited))
    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"FAIL", text, fix} = line(out, "registry [reg] privileges")
    assert text =~ "lacks DELETE"
    assert fix =~ "GRANT"

    wrong = AWSCluster.Test.Postgres.url(pg, password: "wrong-pw-#{tag}")
    Application.put_env(:aws_cluster, :topologies, reg: registry.(wrong))
    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"FAIL", text, fix} = line(out, "registry [reg]")
    assert text =~ "unauthorized"
    assert fix =~ "password in url:"
    refute out =~ "wrong-pw-#{tag}"
    refute out =~ pg.password
  end

  test "registry on DynamoDB: the table is read, writes are probed writing nothing, a denied Query or UpdateItem is named",
       %{tag: tag} do
    table = "#{tag}-nodes"
    Moto.seed!("dynamodb_table", %{name: table})

    registry = fn extra ->
      [
        strategy: AWSCluster.Strategy.Registry,
        config:
          [
            backend: :dynamodb,
            table: table,
            secret: String.duplicate("k", 32),
            region: Moto.region(),
            endpoint: Moto.endpoint(),
            max_attempts: 1
          ] ++ extra
      ]
    end

    Application.put_env(:aws_cluster, :topologies,
      dyn: registry.(access_key_id: "testing", secret_access_key: "testing")
    )

    {_, out} = run_task(["--no-imds", "--no-connect"])
    assert {"PASS", text, nil} = line(out, "registry [dyn]")
    assert text =~ "DynamoDB table #{table} in us-east-1: 0 live rows"
    assert {"PASS", text, nil} = line(out, "registry [dyn] writes")
    assert text =~ "nothing was written"
    assert Moto.seed!("dynamodb_items", %{name: table}) == []

    {key, secret} = MotoIAM.user!("#{tag}-dynr", ["dynamodb:Query", "dynamodb:DeleteItem"])
    {query_less, query_less_secret} = MotoIAM.user!("#{tag}-dyn", ["dynamodb:UpdateItem"])
    MotoIAM.enforce!()
    on_exit(&MotoIAM.relax!/0)

    Application.put_env(:aws_cluster, :topologies,
      dyn: registry.(access_key_id: key, secret_access_key: secret)
    )

    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"PASS", _, nil} = line(out, "registry [dyn]")
    assert {"FAIL", text, fix} = line(out, "registry [dyn] writes")
    assert text =~ "denied: dynamodb:UpdateItem;"
    assert fix =~ "allow dynamodb:UpdateItem on the table"

    Application.put_env(:aws_cluster, :topologies,
      dyn: registry.(access_key_id: query_less, secret_access_key: query_less_secret)
    )

    {1, out} = run_task(["--no-imds", "--no-connect"])
    assert {"FAIL", text, fix} = line(out, "registry [dyn]")
    assert text =~ "unauthorized"
    assert fix =~ "dynamodb:Query"
    refute out =~ query_less_secret
  end

  # ALIVE2_REQ (erl_dist_protocol): registers `name` at `port` for as long as the
  # socket stays open.
  defp register_in_epmd!(name, port) do
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, 4369, [:binary, active: false])
    body = <<120, port::16, 77, 0, 6::16, 5::16, byte_size(name)::16, name::binary, 0::16>>
    :ok = :gen_tcp.send(socket, <<byte_size(body)::16, body::binary>>)
    {:ok, <<reply, 0, _::binary>>} = :gen_tcp.recv(socket, 0, 5_000)
    assert reply in [118, 121]
    socket
  end
end
