defmodule AWSCluster.IMDSTest do
  # One test uses the shared moto.
  use ExUnit.Case, async: false

  alias AWSCluster.{AWS, Error, IMDS, Native}
  alias AWSCluster.Test.{FakeIMDS, Moto}

  @fast [connect_timeout: 300, timeout: 500, attempts: 2]

  defp start_imds(opts \\ []) do
    defaults = [
      instance_id: "i-0123456789abcdef0",
      region: "us-east-1",
      availability_zone: "us-east-1c",
      auto_scaling_group: "web"
    ]

    start_supervised!({FakeIMDS, Keyword.merge(defaults, opts)})
  end

  defp fetch(imds, opts \\ []),
    do: IMDS.fetch([endpoint: FakeIMDS.endpoint(imds)] ++ @fast ++ opts)

  test "IMDSv2: a session token first, then every value with it" do
    imds = start_imds()

    assert {:ok, md} = fetch(imds)

    assert md == %{
             instance_id: "i-0123456789abcdef0",
             region: "us-east-1",
             availability_zone: "us-east-1c",
             auto_scaling_group: "web"
           }

    assert [{"PUT", "/latest/api/token", false} | gets] = FakeIMDS.requests(imds)
    assert length(gets) == 4
    assert Enum.all?(gets, fn {method, _path, token?} -> method == "GET" and token? end)
  end

  test "falls back to IMDSv1 when the token call is not offered" do
    imds = start_imds(mode: :v1_only)
    assert {:ok, %{region: "us-east-1", instance_id: "i-0123456789abcdef0"}} = fetch(imds)
    gets = for {"GET", _, token?} <- FakeIMDS.requests(imds), do: token?
    assert gets != [] and Enum.all?(gets, &(&1 == false))
  end

  test "falls back to IMDSv1 when the token call never answers (hop limit)" do
    imds = start_imds(mode: :token_hang)
    assert {:ok, %{availability_zone: "us-east-1c"}} = fetch(imds, keys: [:availability_zone])
  end

  test "IMDS down is an error naming every config key, not a crash" do
    imds = start_imds(mode: :down)
    assert {:error, %Error{reason: :unreachable} = e} = fetch(imds)

    assert e.message =~
             "set instance_id:, region:, availability_zone: and groups: in the topology config"

    assert e.message =~ "connection refused after 2 attempts"
    assert e.details.config_keys == "instance_id,region,availability_zone,groups"
  end

  test "an IMDS that never answers times out, naming the missing keys" do
    imds = start_imds(mode: :hang)
    assert {:error, %Error{reason: :timeout} = e} = fetch(imds, keys: [:region])
    assert e.message =~ "set region: in the topology config"
  end

  test "given values are not asked for" do
    imds = start_imds()

    assert {:ok, md} =
             fetch(imds,
               instance_id: "i-given",
               region: "eu-west-1",
               availability_zone: "eu-west-1a",
               auto_scaling_group: "given"
             )

    assert md == %{
             instance_id: "i-given",
             region: "eu-west-1",
             availability_zone: "eu-west-1a",
             auto_scaling_group: "given"
           }

    assert FakeIMDS.requests(imds) == []

    assert {:ok, %{region: "eu-west-1", instance_id: "i-0123456789abcdef0"}} =
             fetch(imds, region: "eu-west-1", keys: [:region, :instance_id])

    paths = for {_, path, _} <- FakeIMDS.requests(imds), do: path
    assert "/latest/meta-data/instance-id" in paths
    refute "/latest/meta-data/placement/region" in paths
  end

  test "only the requested keys are read" do
    imds = start_imds()

    assert {:ok, %{region: "us-east-1", instance_id: nil, auto_scaling_group: nil}} =
             fetch(imds, keys: [:region])

    assert length(FakeIMDS.requests(imds)) == 2
  end

  test "without instance tags in metadata, the own group is an error naming groups:" do
    imds = start_imds(auto_scaling_group: nil)
    assert {:error, %Error{reason: :not_found} = e} = fetch(imds, keys: [:auto_scaling_group])
    assert e.message =~ "set groups: in the topology config"
    assert e.details.config_keys == "groups"
    assert {:ok, %{region: "us-east-1"}} = fetch(imds, keys: [:region])
  end

  test "without instance tags in metadata, the own group is read from EC2 with a client" do
    Moto.start!()
    Moto.fresh!()
    [member, loner] = Moto.run_instances!([%{ip: "127.0.2.70"}, %{ip: "127.0.2.71"}])
    Moto.create_asg!("from-ec2", [member])
    {:ok, client} = AWS.client(Moto.client_opts())

    imds = start_imds(instance_id: member, auto_scaling_group: nil)
    assert {:ok, %{auto_scaling_group: "from-ec2"}} = fetch(imds, aws_client: client)

    FakeIMDS.set(imds, instance_id: loner)
    assert {:error, %Error{reason: :not_found} = e} = fetch(imds, aws_client: client)
    assert e.message =~ "in no AutoScaling group"
    assert e.message =~ "groups:"
  end

  test "options are validated" do
    for {opts, key} <- [
          {[keys: [:bogus]], :keys},
          {[keys: []], :keys},
          {[timeout: 0], :timeout},
          {[attempts: 11], :attempts},
          {[endpoint: "https://127.0.0.1"], :endpoint},
          {[region: ""], :region},
          {[aws_client: :nope], :aws_client},
          {[regoin: "x"], :regoin}
        ] do
      assert {:error, %Error{reason: :invalid_argument, details: %{key: ^key}}} =
               IMDS.fetch(opts),
             inspect(opts)
    end
  end

  test "bad arguments straight to the NIF are errors" do
    ref = make_ref()
    assert {:error, {:invalid_argument, _, _}} = Native.imds_fetch(ref, :nope)

    assert {:error, {:invalid_argument, _, %{key: "keys"}}} =
             Native.imds_fetch(ref, %{keys: ["bogus"]})

    assert {:error, {:invalid_argument, _, %{key: "attempts"}}} =
             Native.imds_fetch(ref, %{attempts: 0})

    assert {:error, {:invalid_argument, _, %{key: "endpoint"}}} =
             Native.imds_fetch(ref, %{endpoint: 1})

    assert {:error, {:invalid_argument, _, %{key: "timeout_ms"}}} =
             Native.imds_fetch(ref, %{timeout_ms: 0})

    refute_received {:aws_cluster, ^ref, _}
  end
end
