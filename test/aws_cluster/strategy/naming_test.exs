defmodule AWSCluster.Strategy.NamingTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Strategy.Naming

  @instance %{
    id: "i-1",
    private_ip: "127.0.1.10",
    public_ip: "127.0.9.9",
    private_dns: "ip-127-0-1-10.ec2.internal",
    ipv6: ["fd00::10"],
    availability_zone: "us-east-1a",
    tags: %{"name" => "web-1", "addr" => "127.0.1.77", "bad" => "no spaces!"},
    network_interfaces: [
      %{device_index: 0, subnet_id: "subnet-a", private_ips: ["127.0.1.10"]},
      %{device_index: 1, subnet_id: "subnet-c", private_ips: ["127.0.3.10", "127.0.3.11"]}
    ]
  }

  defp name(address, basename \\ "app"),
    do: Naming.peer(@instance, %{address: address, node_basename: basename})

  test "every address kind" do
    assert {:ok, %{node: "app@127.0.1.10", address: "127.0.1.10"}} = name(:private_ip)
    assert {:ok, %{node: "app@127.0.9.9"}} = name(:public_ip)
    assert {:ok, %{node: "app@ip-127-0-1-10.ec2.internal"}} = name(:private_dns)
    assert {:ok, %{node: "app@fd00::10"}} = name(:ipv6)
    assert {:ok, %{node: "app@127.0.3.10"}} = name({:interface, 1})
    assert {:ok, %{node: "app@127.0.1.10"}} = name({:interface, 0})
    assert {:ok, %{node: "app@127.0.3.10"}} = name({:subnet, "subnet-c"})
    assert {:ok, %{node: "app@127.0.1.77"}} = name({:tag, "addr"})
  end

  test "a missing or invalid address skips the instance" do
    assert {:skip, _} = name({:interface, 2})
    assert {:skip, _} = name({:subnet, "subnet-x"})
    assert {:skip, _} = name({:tag, "missing"})
    assert {:skip, _} = name({:tag, "bad"})

    assert {:skip, _} =
             Naming.peer(%{@instance | public_ip: nil}, %{address: :public_ip, node_basename: "a"})

    assert {:skip, _} =
             Naming.peer(%{@instance | private_ip: "ip-1"}, %{
               address: :private_ip,
               node_basename: "a"
             })
  end

  test "basename from a string, a tag or a function, validated before any atom is made" do
    assert {:ok, %{node: "web-1@127.0.1.10"}} = name(:private_ip, {:tag, "name"})
    assert {:ok, %{node: "i-1@127.0.1.10"}} = name(:private_ip, & &1.id)
    assert {:skip, _} = name(:private_ip, {:tag, "bad"})
    assert {:skip, _} = name(:private_ip, {:tag, "missing"})
    assert {:skip, _} = name(:private_ip, fn _ -> "a@b" end)
    assert {:skip, _} = name(:private_ip, fn _ -> raise "boom" end)
    assert {:skip, _} = name(:private_ip, fn _ -> :atom end)
  end

  test "peers/2 skips unnamable instances and keeps the first of duplicate names" do
    other = %{@instance | id: "i-2"}
    nameless = %{@instance | id: "i-3", private_ip: nil}

    config = %{address: :private_ip, node_basename: "a", max_peers: 1}

    assert {:ok, [%{node: "a@127.0.1.10", instance: %{id: "i-1"}}]} =
             Naming.peers([@instance, other, nameless], config)
  end

  test "a name longer than an atom can be (255 bytes) is skipped, not crashed on" do
    label = String.duplicate("a", 63)
    host = Enum.join([label, label, label, String.duplicate("b", 61)], ".")
    instance = Map.put(@instance, :tags, %{"addr" => host, "name" => String.duplicate("n", 64)})

    assert {:skip, "the node name would be over 255 bytes"} =
             Naming.peer(instance, %{address: {:tag, "addr"}, node_basename: {:tag, "name"}})
  end

  test "peers/2 refuses more distinct names than max_peers before making any atom" do
    # Names nobody else makes: any of them existing as an atom afterwards is a leak.
    prefix = "refused#{System.unique_integer([:positive])}x"

    instances = for i <- 1..5, do: %{@instance | id: "i-#{i}", tags: %{"name" => "#{prefix}#{i}"}}

    config = %{address: :private_ip, node_basename: {:tag, "name"}, max_peers: 4}

    assert {:error, %AWSCluster.Error{reason: :too_many_peers} = e} =
             Naming.peers(instances, config)

    assert e.details == %{count: 5, max_peers: 4}
    assert e.message =~ "max_peers (4)"

    for i <- 1..5 do
      assert_raise ArgumentError, fn -> String.to_existing_atom("#{prefix}#{i}@127.0.1.10") end
    end

    # Exactly max_peers is fine; duplicates and unnamable instances do not count.
    assert {:ok, peers} = Naming.peers(Enum.take(instances, 4) ++ [hd(instances)], config)

    assert length(peers) == 4
  end
end
