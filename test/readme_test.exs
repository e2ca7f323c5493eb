defmodule AWSCluster.ReadmeTest do
  # Every config example in README.md is evaluated as the config/runtime.exs it claims
  # to be (Config.Reader, env :prod) and each topology is validated by its strategy's own
  # validation. The EC2 example is started against moto both ways (libcluster's [state]
  # and the README's AWSCluster.Supervisor child), and the EC2-seeded gossip example is
  # started on loopback and its announce opened with the configured secret.
  use ExUnit.Case, async: false

  alias AWSCluster.Gossip.Codec
  alias AWSCluster.Strategy.{EC2, Gossip, State}
  alias AWSCluster.Test.{Moto, Wait}

  @moduletag timeout: 120_000
  @readme Path.expand("../README.md", __DIR__)

  setup_all do
    # What the examples read with System.fetch_env!/1.
    System.put_env("CLUSTER_SECRET", Base.encode64(:crypto.strong_rand_bytes(32)))
    System.put_env("DATABASE_URL", "postgres://chat:pw@127.0.0.1:5432/chat")
    # Any PEM bundle: validation reads it.
    System.put_env("RDS_CA_FILE", "/etc/ssl/certs/ca-certificates.crt")

    on_exit(fn ->
      Enum.each(~w(CLUSTER_SECRET DATABASE_URL RDS_CA_FILE), &System.delete_env/1)
    end)

    :ok
  end

  # [{marker, code}] for every ```elixir block, marker being the HTML comment on the
  # line before it (nil if none).
  defp blocks do
    lines = @readme |> File.read!() |> String.split("\n")

    lines
    |> Enum.with_index()
    |> Enum.filter(fn {line, _} -> line == "```elixir" end)
    |> Enum.map(fn {_, i} ->
      marker =
        case Regex.run(~r/^<!-- ([a-z-]+) -->$/, Enum.at(lines, i - 1, "")) do
          [_, m] -> m
          nil -> nil
        end

      code =
        lines
        |> Enum.drop(i + 1)
        |> Enum.take_while(&(&1 != "```"))
        |> Enum.join("\n")

      {marker, code}
    end)
  end

  defp config_examples, do: for({"config-example", code} <- blocks(), do: code)

  defp eval_config(code) do
    Config.Reader.eval!("config/runtime.exs", code, env: :prod, target: :host)
  end

  defp topologies(code) do
    config = eval_config(code)
    libcluster = get_in(config, [:libcluster, :topologies])
    own = get_in(config, [:aws_cluster, :topologies])
    assert libcluster == own, "the two ways must run the same topologies"
    libcluster
  end

  # The firewall example pins the distribution ports in vm.args, as the README says.
  defp validate(name, spec) do
    if get_in(spec, [:config, :firewall]) do
      Application.put_env(:kernel, :inet_dist_listen_min, 9100)
      Application.put_env(:kernel, :inet_dist_listen_max, 9155)
    end

    validate_spec(name, spec)
  after
    Application.delete_env(:kernel, :inet_dist_listen_min)
    Application.delete_env(:kernel, :inet_dist_listen_max)
  end

  defp validate_spec(name, spec) do
    strategy = Keyword.fetch!(spec, :strategy)
    {:ok, state} = State.new(topology: name, config: Keyword.get(spec, :config, []))

    case strategy do
      Gossip -> Gossip.validate(state)
      _ -> AWSCluster.Poller.validate(strategy, state)
    end
  end

  test "every elixir block that configures topologies is a marked, tested example" do
    all = blocks()
    assert length(config_examples()) == 9

    for {marker, code} <- all, code =~ "topologies" or code =~ ~r/^config :/m do
      assert marker in ["config-example", "app-example"],
             "README block configures topologies but is not exercised:\n#{code}"
    end
  end

  test "each config example is valid runtime.exs and every topology passes validation" do
    strategies =
      for code <- config_examples(), {name, spec} <- topologies(code) do
        assert {:ok, _config} = validate(name, spec), "#{name}: #{inspect(validate(name, spec))}"
        spec[:strategy]
      end

    assert Enum.sort(Enum.uniq(strategies)) ==
             Enum.sort([
               EC2,
               AWSCluster.Strategy.AutoScaling,
               AWSCluster.Strategy.ECS,
               AWSCluster.Strategy.Registry,
               Gossip
             ])

    # The validation is real: a typo in an example would fail it.
    [ec2 | _] = config_examples()
    [{name, spec}] = topologies(ec2)
    typo = put_in(spec, [:config, :node_basenme], "chat")
    assert {:error, %AWSCluster.Error{reason: :invalid_config}} = validate(name, typo)
  end

  test "the firewall ruleset shown is the one AWSCluster.Firewall writes" do
    [_, shown] =
      Regex.run(~r/\n```\n(table inet aws_cluster \{.*?\n\}\n)```/s, File.read!(@readme))

    {:ok, config} = AWSCluster.Firewall.validate(enabled: true, dist_ports: {9100, 9155})
    addresses = [{10, 0, 1, 11}, {10, 0, 2, 11}, {10, 0, 3, 11}]
    assert AWSCluster.Firewall.render(%{config | interface: "ethwe"}, addresses) == shown
  end

  test "the application examples build the children the README says" do
    config = eval_config(hd(config_examples()))
    Application.put_env(:aws_cluster, :topologies, config[:aws_cluster][:topologies])
    on_exit(fn -> Application.delete_env(:aws_cluster, :topologies) end)

    [supervisor_child, distribution_first] = for {"app-example", code} <- blocks(), do: code

    {children, _} = Code.eval_string(supervisor_child)
    assert [{AWSCluster.Supervisor, opts}, ChatWeb.Endpoint] = children
    assert opts[:topologies] == config[:aws_cluster][:topologies]

    {children, _} = Code.eval_string(distribution_first)
    assert [{AWSCluster.Distribution, dist}, {AWSCluster.Supervisor, _}, _] = children
    # The options are accepted up to the interface lookup; this host has no ethwe.
    assert {:error, %AWSCluster.Error{reason: :no_such_interface}} =
             AWSCluster.Distribution.start(dist)
  end

  describe "started for real" do
    setup do
      Moto.start!()
      Moto.fresh!()
      :ok
    end

    defp on_moto(config) do
      Keyword.merge(config,
        region: Moto.region(),
        endpoint: Moto.endpoint(),
        access_key_id: "testing",
        secret_access_key: "testing",
        max_attempts: 1,
        operation_timeout: 5_000,
        polling_interval: 200
      )
    end

    test "the EC2 example finds the instances tagged app=chat, started both ways" do
      Moto.run_instances!([
        %{ip: "127.0.1.80", tags: %{"app" => "chat"}},
        %{ip: "127.0.2.80", tags: %{"app" => "other"}}
      ])

      [{:chat, spec}] = topologies(hd(config_examples()))
      spec = Keyword.update!(spec, :config, &on_moto/1)

      # As libcluster starts a strategy: start_link([%Cluster.Strategy.State{}]).
      libcluster_state = %{
        topology: :chat,
        connect: {:net_kernel, :connect_node, []},
        disconnect: {:erlang, :disconnect_node, []},
        list_nodes: {:erlang, :nodes, [:connected]},
        config: spec[:config],
        meta: nil
      }

      {:ok, pid} = spec[:strategy].start_link([libcluster_state])

      assert Wait.until(fn ->
               Map.keys(AWSCluster.Poller.status(pid).members) == [:"chat@127.0.1.80"]
             end)

      GenServer.stop(pid)

      # As the README's application does, without libcluster.
      Application.put_env(:aws_cluster, :topologies, chat: spec)
      on_exit(fn -> Application.delete_env(:aws_cluster, :topologies) end)
      [app | _] = for {"app-example", code} <- blocks(), do: code
      {[supervisor_child, _endpoint], _} = Code.eval_string(app)
      sup = start_supervised!(supervisor_child)
      [{_, poller, _, _}] = Supervisor.which_children(sup)

      assert Wait.until(fn ->
               Map.keys(AWSCluster.Poller.status(poller).members) == [:"chat@127.0.1.80"]
             end)
    end

    test "the registry example connects over verify-full TLS and writes this node's row" do
      pg = AWSCluster.Test.Postgres.start!(tls: true)
      on_exit(fn -> AWSCluster.Test.Postgres.stop(pg) end)
      # The other tests read these too: give them back the setup_all values after.
      saved = for var <- ~w(DATABASE_URL RDS_CA_FILE), do: {var, System.fetch_env!(var)}
      on_exit(fn -> System.put_env(saved) end)
      System.put_env("DATABASE_URL", AWSCluster.Test.Postgres.url(pg))
      System.put_env("RDS_CA_FILE", pg.ca)

      example = Enum.find(config_examples(), &(&1 =~ "Strategy.Registry"))
      [{:chat, spec}] = topologies(example)
      pid = start_supervised!({spec[:strategy], topology: :chat, config: spec[:config]})
      assert Wait.until(fn -> AWSCluster.Poller.status(pid).health == :healthy end)

      assert AWSCluster.Test.Postgres.query!(pg, "SELECT cluster, node FROM aws_cluster_nodes") ==
               [["chat", Atom.to_string(node())]]
    end

    test "the ECS example finds its own cluster's tasks of its own family through task metadata" do
      Moto.ecs_cluster!("chat-prod")
      [me, peer] = Moto.ecs_run_tasks!("chat-prod", "chat", [%{az: "a"}, %{az: "b"}])
      Moto.ecs_run_tasks!("chat-prod", "worker", [%{az: "c"}])

      meta =
        start_supervised!(
          {AWSCluster.Test.FakeTaskMetadata,
           cluster: "chat-prod",
           task_arn: me["arn"],
           family: "chat",
           az: "us-east-1a",
           ip: me["ip"]}
        )

      example = Enum.find(config_examples(), &(&1 =~ "Strategy.ECS"))
      [{:chat, spec}] = topologies(example)

      config =
        spec[:config]
        |> on_moto()
        |> Keyword.delete(:region)
        |> Keyword.put(:metadata_uri, AWSCluster.Test.FakeTaskMetadata.uri(meta))

      pid = start_supervised!({spec[:strategy], topology: :chat, config: config})
      expected = Enum.sort([:"chat@#{me["ip"]}", :"chat@#{peer["ip"]}"]) -- [node()]

      assert Wait.until(fn ->
               Enum.sort(Map.keys(AWSCluster.Poller.status(pid).members)) == expected
             end)
    end

    test "the EC2-seeded gossip example announces to the instances EC2 found, sealed with the secret" do
      Moto.run_instances!([%{ip: "127.0.1.81", tags: %{"app" => "chat"}}])
      example = Enum.find(config_examples(), &(&1 =~ "seed_topologies"))
      [instances: ec2, chat: gossip] = topologies(example)

      # Where the instance "is": a socket on its address and the gossip port.
      {:ok, probe} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}])
      {:ok, port} = :inet.port(probe)
      :gen_udp.close(probe)
      {:ok, instance} = :gen_udp.open(port, [:binary, ip: {127, 0, 1, 81}, active: true])
      on_exit(fn -> :gen_udp.close(instance) end)

      ec2 = Keyword.update!(ec2, :config, &on_moto/1)

      gossip =
        Keyword.update!(
          gossip,
          :config,
          &(&1 ++ [port: port, if_addr: "127.0.0.1", announce_interval: 200])
        )

      start_supervised!({AWSCluster.Supervisor, topologies: [instances: ec2, chat: gossip]})

      assert_receive {:udp, ^instance, {127, 0, 0, 1}, ^port, packet}, 20_000

      {:ok, ring} = Codec.keyring([System.fetch_env!("CLUSTER_SECRET")], "chat")
      guard = Codec.replay_guard(4, 30_000)
      assert {:ok, %{kind: :announce, name: name}} = Codec.open(ring, guard, packet)
      assert name == Atom.to_string(node())
    end
  end
end
