defmodule AWSCluster.Strategy.ConfigTest do
  # Every option of the AWS strategies has a bad value that fails start, naming the key,
  # before any AWS or IMDS call is made (so no moto is needed).
  use ExUnit.Case, async: true

  alias AWSCluster.Error
  alias AWSCluster.Strategy.{AutoScaling, EC2, ECS}

  @common [
    address: :private_ipv4,
    address: {:interface, -1},
    address: {:subnet, ""},
    address: {:tag, :name},
    address: {:other, 1},
    node_basename: "a@b",
    node_basename: "",
    node_basename: {:tag, ""},
    node_basename: &Map.get/2,
    node_basename: :chat,
    region: "",
    region: :us_east_1,
    endpoint: "127.0.0.1:5000",
    endpoint: "ftp://127.0.0.1",
    access_key_id: 1,
    secret_access_key: "",
    session_token: 5,
    max_attempts: 0,
    max_attempts: 21,
    operation_timeout: 0,
    imds_endpoint: "https://127.0.0.1",
    polling_interval: -1,
    prune_after: :never,
    connect_timeout: 0,
    max_concurrency: 0,
    discovery_timeout: "60s",
    max_backoff: 0,
    max_peers: 0,
    unknown_option: true
  ]

  @ec2 [
    tags: [app: "chat"],
    tags: %{"app" => 1},
    tags: %{"" => "x"},
    filters: %{"vpc-id" => :x},
    filters: [{"vpc-id"}],
    filters: %{"instance-state-name" => "stopped"},
    filters: %{"vpc-id" => []},
    vpc_id: 1,
    subnet_id: [""],
    availability_zone: :a,
    security_group: ["sg-1", "web"],
    security_group: 7
  ]

  @asg [groups: "web", groups: [], groups: [""], instance_id: 1]

  @ecs [
    cluster: "",
    family: :app,
    service_name: "",
    started_by: 1,
    tags: %{"role" => 1},
    launch_type: "LAMBDA",
    launch_type: :fargate,
    address: :bridge,
    metadata_uri: "https://127.0.0.1/v4",
    group: {:metadata, "g"},
    group: :auto_scaling_group
  ]

  defp check(strategy, base, bad) do
    for {key, value} <- bad do
      config = Keyword.merge(base, [{key, value}])

      assert {:error, %Error{reason: :invalid_config} = e} =
               strategy.start_link(topology: :cfg, config: config),
             "#{key}: #{inspect(value)} was accepted"

      assert e.details.key == key, "#{key}: #{inspect(value)} gave #{e.message}"
      assert e.message =~ "topology :cfg: "
      assert e.message =~ inspect(key)
      refute e.message =~ "\"testing-secret\""
    end
  end

  test "EC2: every option has a bad-value case naming the key" do
    base = [tags: %{"app" => "chat"}, node_basename: "chat", secret_access_key: "testing-secret"]
    check(EC2, base, @common ++ @ec2)
  end

  test "EC2: some filter is required, and node_basename is" do
    assert {:error, %Error{details: %{key: :tags}} = e} =
             EC2.start_link(topology: :cfg, config: [node_basename: "chat"])

    assert e.message =~ "give at least one of :tags"

    assert {:error, %Error{details: %{key: :node_basename}}} =
             EC2.start_link(topology: :cfg, config: [tags: %{"app" => "chat"}])
  end

  test "AutoScaling: every option has a bad-value case naming the key" do
    base = [groups: ["web"], node_basename: "chat", secret_access_key: "testing-secret"]
    check(AutoScaling, base, @common ++ @asg)
  end

  test "ECS: every option has a bad-value case naming the key" do
    base = [cluster: "c", region: "us-east-1", node_basename: "chat"]
    check(ECS, base ++ [secret_access_key: "testing-secret"], @common ++ @ecs)

    assert {:error, %Error{details: %{key: :service_name}} = e} =
             ECS.start_link(topology: :cfg, config: base ++ [family: "a", service_name: "s"])

    assert e.message =~ "give only one of :family, :service_name and :started_by"

    assert {:error, %Error{details: %{key: :address}} = e} =
             ECS.start_link(
               topology: :cfg,
               config: base ++ [address: :host, launch_type: "FARGATE"]
             )

    assert e.message =~ "Fargate tasks are awsvpc"
  end

  test "EC2 filters from tags, filters and shortcuts" do
    {:ok, config} =
      AWSCluster.Config.validate(
        [
          tags: %{"app" => "chat", "env" => ["prod", "stage"]},
          filters: [{"instance-type", "m6i.large"}],
          vpc_id: "vpc-1",
          subnet_id: ["subnet-1", "subnet-2"],
          availability_zone: "us-east-1a",
          security_group: "sg-9",
          node_basename: "x"
        ],
        EC2.schema()
      )

    assert {:ok, filters} = EC2.filters(config)

    assert Enum.sort(filters) == [
             {"availability-zone", ["us-east-1a"]},
             {"instance-type", ["m6i.large"]},
             {"instance.group-id", ["sg-9"]},
             {"subnet-id", ["subnet-1", "subnet-2"]},
             {"tag:app", ["chat"]},
             {"tag:env", ["prod", "stage"]},
             {"vpc-id", ["vpc-1"]}
           ]

    {:ok, config} =
      AWSCluster.Config.validate(
        [security_group: ["web", "db"], node_basename: "x"],
        EC2.schema()
      )

    assert {:ok, [{"instance.group-name", ["web", "db"]}]} = EC2.filters(config)
  end
end
