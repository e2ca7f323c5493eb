defmodule AWSCluster.AWSTest do
  # moto's state is shared by the whole run.
  use ExUnit.Case, async: false

  alias AWSCluster.{AWS, Error, Native}
  alias AWSCluster.Test.{FaultProxy, Moto}

  @moduletag timeout: 300_000

  setup_all do
    Moto.start!()
    {:ok, client} = AWS.client(Moto.client_opts())
    %{client: client}
  end

  setup do
    %{vpc: Moto.fresh!()}
  end

  defp by_id(instances), do: Map.new(instances, &{&1.id, &1})

  describe "describe_instances/3" do
    test "filters select instances and every field is mapped", %{client: client, vpc: vpc} do
      [web, api, other] =
        Moto.run_instances!([
          %{ip: "127.0.1.10", tags: %{"app" => "chat", "role" => "web"}},
          %{ip: "127.0.2.10", second_ip: "127.0.3.10", tags: %{"app" => "chat"}},
          %{ip: "127.0.3.11", tags: %{"app" => "other"}}
        ])

      assert {:ok, found} =
               AWS.describe_instances(client, %{"tag:app" => "chat"}, states: ["running"])

      assert found |> Enum.map(& &1.id) |> Enum.sort() == Enum.sort([web, api])

      found = by_id(found)
      w = found[web]
      assert w.state == "running"
      assert w.private_ip == "127.0.1.10"
      assert w.private_dns == "ip-127-0-1-10.ec2.internal"
      assert w.availability_zone == "us-east-1a"
      assert w.subnet_id == vpc["subnets"]["a"]
      assert w.vpc_id == vpc["vpc_id"]
      assert w.tags == %{"app" => "chat", "role" => "web"}
      assert is_integer(w.launch_time) and w.launch_time > 1_600_000_000
      assert is_list(w.ipv6)

      assert [%{device_index: 0, subnet_id: subnet_a, private_ips: ["127.0.1.10"]}] =
               w.network_interfaces

      assert subnet_a == vpc["subnets"]["a"]

      a = found[api]
      assert a.availability_zone == "us-east-1b"

      assert [%{device_index: 0, private_ips: ["127.0.2.10"]}, %{device_index: 1} = second] =
               Enum.sort_by(a.network_interfaces, & &1.device_index)

      assert second.subnet_id == vpc["subnets"]["c"]
      assert second.private_ips == ["127.0.3.10"]

      # Several values are ORed, several filters ANDed.
      assert {:ok, all} = AWS.describe_instances(client, [{"tag:app", ["chat", "other"]}])
      assert length(all) == 3

      assert {:ok, [%{id: ^api}]} =
               AWS.describe_instances(client, %{
                 "tag:app" => "chat",
                 "availability-zone" => "us-east-1b"
               })

      assert {:ok, [%{id: ^web}]} = AWS.describe_instances(client, %{"tag-key" => "role"})
      assert {:ok, [%{id: ^other}]} = AWS.describe_instances(client, %{}, instance_ids: [other])
      assert {:ok, []} = AWS.describe_instances(client, %{"tag:app" => "nobody"})
    end

    test "stopped and terminated instances are excluded when asking for running ones",
         %{client: client} do
      [running, stopped, terminated] =
        Moto.run_instances!(
          for ip <- ["127.0.1.20", "127.0.2.20", "127.0.3.20"],
              do: %{ip: ip, tags: %{"app" => "churn"}}
        )

      Moto.stop_instances!([stopped])
      Moto.terminate!([terminated])

      assert {:ok, [%{id: ^running, state: "running"}]} =
               AWS.describe_instances(client, %{"tag:app" => "churn"}, states: ["running"])

      assert {:ok, all} = AWS.describe_instances(client, %{"tag:app" => "churn"})
      states = Map.new(all, &{&1.id, &1.state})
      assert states[running] == "running"
      assert states[stopped] in ["stopping", "stopped"]
      assert states[terminated] in ["shutting-down", "terminated"]
    end

    test "a result spanning many pages is read completely" do
      # 13 reservations (moto pages by reservation: page_size 5 means 3 pages); two
      # stopped bulk instances and one other-tagged one must not be counted.
      ids = Moto.bulk_instances!(1_202, %{"app" => "bulk"}, per_reservation: 100)
      stopped = Enum.take_random(ids, 2)
      Moto.stop_instances!(stopped)
      Moto.run_instances!([%{ip: "127.0.1.30", tags: %{"app" => "not-bulk"}}])

      proxy = start_supervised!({FaultProxy, upstream: Moto.port()})
      {:ok, counted} = AWS.client(Moto.client_opts(endpoint: FaultProxy.endpoint(proxy)))

      assert {:ok, found} =
               AWS.describe_instances(counted, %{"tag:app" => "bulk"},
                 states: ["running"],
                 page_size: 5
               )

      assert length(found) == 1_200
      assert found |> Enum.map(& &1.id) |> MapSet.new() == MapSet.new(ids -- stopped)
      assert Enum.all?(found, &String.starts_with?(&1.private_ip, "127.0."))

      pages = FaultProxy.requests(proxy) |> Enum.count(&(&1 == "DescribeInstances"))
      assert pages >= 2, "expected several DescribeInstances pages, the proxy saw #{pages}"
    end
  end

  describe "describe_auto_scaling_groups/3" do
    test "reports lifecycle state, health and AZ of each instance", %{client: client} do
      [a, b, c] =
        Moto.run_instances!(for ip <- ["127.0.1.40", "127.0.2.40", "127.0.3.40"], do: %{ip: ip})

      [outside] = Moto.run_instances!([%{ip: "127.0.1.41"}])
      Moto.create_asg!("web", [a, b, c])
      Moto.set_health!(a, "Unhealthy")
      Moto.standby!("web", [b])

      assert {:ok, [group]} = AWS.describe_auto_scaling_groups(client, ["web", "no-such-group"])
      assert group.name == "web"
      members = by_id(group.instances)
      assert Map.keys(members) |> Enum.sort() == Enum.sort([a, b, c])
      assert %{lifecycle_state: "InService", health_status: "Unhealthy"} = members[a]
      assert %{lifecycle_state: "Standby", health_status: "Healthy"} = members[b]
      assert %{lifecycle_state: "InService", health_status: "Healthy"} = members[c]

      assert Enum.all?(
               Map.values(members),
               &String.starts_with?(&1.availability_zone, "us-east-1")
             )

      assert {:ok, groups} = AWS.describe_auto_scaling_groups(client, [])
      assert Enum.map(groups, & &1.name) == ["web"]

      assert {:ok, "web"} = AWS.auto_scaling_group_of(client, c)
      assert {:ok, nil} = AWS.auto_scaling_group_of(client, outside)
    end
  end

  describe "faults between the SDK and moto" do
    setup do
      proxy = start_supervised!({FaultProxy, upstream: Moto.port()})

      {:ok, client} =
        AWS.client(
          Moto.client_opts(endpoint: FaultProxy.endpoint(proxy), operation_timeout: 1_500)
        )

      Moto.run_instances!([%{ip: "127.0.1.50", tags: %{"app" => "fault"}}])
      %{proxy: proxy, faulty: client}
    end

    defp describe(client), do: AWS.describe_instances(client, %{"tag:app" => "fault"})

    for {mode, reason} <- [
          {:refuse, :unreachable},
          {:drop, :unreachable},
          {{:delay, 4_000}, :timeout},
          {{:status, 500}, :bad_response},
          {{:status, 503}, :bad_response},
          {:throttle, :throttled},
          {:truncate, :bad_response},
          {{:slow_body, 4_000}, :timeout}
        ] do
      test "#{inspect(mode)} gives #{reason} and the next call works", %{
        proxy: proxy,
        faulty: client
      } do
        FaultProxy.set_mode(proxy, unquote(Macro.escape(mode)))
        assert {:error, %Error{reason: unquote(reason)} = e} = describe(client)
        refute e.message =~ "no reply from the native runtime"
        refute e.message =~ "Error {"
        assert e.details.operation == "DescribeInstances"

        with {:status, status} <- unquote(Macro.escape(mode)),
             do: assert(e.details.status == status)

        FaultProxy.set_mode(proxy, :pass)
        assert {:ok, [%{private_ip: "127.0.1.50"}]} = describe(client)
      end
    end

    test "throttling keeps the AWS code and message", %{proxy: proxy, faulty: client} do
      FaultProxy.set_mode(proxy, :throttle)
      assert {:error, %Error{reason: :throttled} = e} = describe(client)

      assert e.message ==
               "DescribeInstances failed: RequestLimitExceeded: Request limit exceeded."

      assert e.details.code == "RequestLimitExceeded"
      assert e.details.action == "ec2:DescribeInstances"

      assert {:error, %Error{reason: :throttled} = e} =
               AWS.describe_auto_scaling_groups(client, [])

      assert e.details.code == "Throttling"
      assert e.details.operation == "DescribeAutoScalingGroups"
    end

    test "max_attempts bounds the retries of a failing request", %{proxy: proxy} do
      {:ok, client} =
        AWS.client(Moto.client_opts(endpoint: FaultProxy.endpoint(proxy), max_attempts: 3))

      FaultProxy.set_mode(proxy, {:status, 500})
      FaultProxy.clear_requests(proxy)
      assert {:error, %Error{reason: :bad_response}} = describe(client)
      assert FaultProxy.requests(proxy) == List.duplicate("DescribeInstances", 3)
    end

    test "moto killed and restarted", %{client: client} do
      Moto.kill!()
      assert {:error, %Error{reason: :unreachable}} = describe(client)
      Moto.restart!()
      Moto.setup_vpc!()
      Moto.run_instances!([%{ip: "127.0.1.51", tags: %{"app" => "fault"}}])
      assert {:ok, [%{private_ip: "127.0.1.51"}]} = describe(client)
    end
  end

  describe "argument checking" do
    test "client options are validated with the key named" do
      for {opts, key} <- [
            {[], :region},
            {[region: 1], :region},
            {[region: "us-east-1", regoin: "x"], :regoin},
            {[region: "us-east-1", max_attempts: 0], :max_attempts},
            {[region: "us-east-1", operation_timeout: :soon], :operation_timeout},
            {[region: "us-east-1", endpoint: 5], :endpoint},
            {[region: "us-east-1", access_key_id: ""], :access_key_id}
          ] do
        assert {:error, %Error{reason: :invalid_argument, details: %{key: ^key}}} =
                 AWS.client(opts),
               inspect(opts)
      end

      # Checked in Rust, reported with the same atom keys.
      assert {:error, %Error{reason: :invalid_argument, details: %{key: :endpoint}}} =
               AWS.client(region: "us-east-1", endpoint: "ftp://127.0.0.1")

      assert {:error, %Error{details: %{key: :access_key_id}}} =
               AWS.client(region: "us-east-1", access_key_id: "a")

      assert {:error, %Error{details: %{key: :region}}} = AWS.client(region: "Not A Region")
      assert {:error, %Error{reason: :invalid_argument}} = AWS.client(:nope)
    end

    test "query arguments are validated", %{client: client} do
      assert {:error, %Error{details: %{key: :filters}}} =
               AWS.describe_instances(client, "tag:app")

      assert {:error, %Error{details: %{key: :filters}}} =
               AWS.describe_instances(client, [{"tag:app", [1]}])

      assert {:error, %Error{details: %{key: :filters}}} =
               AWS.describe_instances(client, [{:app, "x"}])

      assert {:error, %Error{details: %{key: :page_size}}} =
               AWS.describe_instances(client, %{}, page_size: 2)

      assert {:error, %Error{details: %{key: :states}}} =
               AWS.describe_instances(client, %{}, states: "running")

      assert {:error, %Error{details: %{key: :bogus}}} =
               AWS.describe_instances(client, %{}, bogus: 1)

      assert {:error, %Error{details: %{key: :timeout}}} =
               AWS.describe_instances(client, %{}, timeout: 0)

      assert {:error, %Error{reason: :invalid_argument}} =
               AWS.describe_instances(client, %{}, instance_ids: ["i-1"], page_size: 10)

      assert {:error, %Error{details: %{key: :names}}} =
               AWS.describe_auto_scaling_groups(client, "web")
    end

    test "bad arguments straight to the NIFs are errors, and the VM carries on", %{client: client} do
      ref = make_ref()
      assert {:error, {:invalid_argument, _, _}} = Native.aws_client_new(ref, :not_a_map)

      assert {:error, {:invalid_argument, _, %{key: "region"}}} =
               Native.aws_client_new(ref, %{region: 5})

      assert {:error, {:invalid_argument, _, _}} = Native.aws_client_new(ref, %{})

      assert {:error, {:invalid_argument, _, _}} =
               Native.aws_client_new(ref, %{region: "us-east-1", max_attempts: -1})

      assert {:error, {:invalid_argument, msg, _}} =
               Native.aws_describe_instances(client.resource, ref, [], [], 1)

      assert msg =~ "page_size"

      assert {:error, {:invalid_argument, _, _}} =
               Native.aws_describe_instances(client.resource, ref, [{"", ["x"]}], [], nil)

      assert_raise ArgumentError, fn ->
        Native.aws_describe_instances(:not_a_client, ref, [], [], nil)
      end

      assert_raise ArgumentError, fn ->
        Native.aws_describe_instances(client.resource, ref, [{"a", [1]}], [], nil)
      end

      assert_raise ArgumentError, fn ->
        Native.aws_describe_instances(client.resource, ref, :x, [], nil)
      end

      assert_raise ArgumentError, fn ->
        Native.aws_describe_auto_scaling_groups(client.resource, ref, [:web])
      end

      assert_raise ArgumentError, fn ->
        Native.aws_describe_auto_scaling_groups(make_ref(), ref, [])
      end

      refute_received {:aws_cluster, ^ref, _}

      Moto.run_instances!([%{ip: "127.0.1.60", tags: %{"app" => "alive"}}])
      assert {:ok, [_]} = AWS.describe_instances(client, %{"tag:app" => "alive"})
    end
  end
end
