defmodule AWSCluster.InterfaceTest do
  use ExUnit.Case, async: true

  alias AWSCluster.{Error, Interface}
  alias AWSCluster.Test.{Cluster, Netns}

  doctest AWSCluster.Interface

  test "lists lo with its address, netmask and flags" do
    {:ok, entries} = Interface.addresses()
    lo = Enum.find(entries, &(&1.name == "lo" and &1.family == :inet))

    assert lo.address == {127, 0, 0, 1}
    assert lo.netmask == {255, 0, 0, 0}
    assert :loopback in lo.flags
    assert :up in lo.flags
  end

  test "agrees with :inet.getifaddrs about every IPv4 address" do
    {:ok, ours} = Interface.addresses()
    {:ok, theirs} = :inet.getifaddrs()

    expected =
      for {name, opts} <- theirs, {:addr, {_, _, _, _} = ip} <- opts, into: MapSet.new() do
        {to_string(name), ip}
      end

    got = for %{family: :inet} = e <- ours, into: MapSet.new(), do: {e.name, e.address}
    assert got == expected
  end

  test "lo's IPv4 address" do
    assert Interface.address("lo") == {:ok, {127, 0, 0, 1}}
    assert Interface.address("lo", family: :inet) == {:ok, {127, 0, 0, 1}}
  end

  test "a made-up name is :no_such_interface and lists the real interfaces" do
    {:error, %Error{reason: :no_such_interface, message: message, details: details}} =
      Interface.address("nosuch0")

    assert message =~ "nosuch0"
    assert message =~ "lo"
    assert details.interface == "nosuch0"
    {:ok, names} = Interface.names()
    assert "lo" in names
  end

  test "bad arguments are errors, not crashes" do
    assert {:error, %Error{reason: :invalid_argument}} = Interface.address(:lo)
    assert {:error, %Error{reason: :invalid_argument}} = Interface.address("lo", family: :ipx)
    assert_raise ArgumentError, fn -> AWSCluster.Native.interface_address(:lo, "inet") end
    assert_raise ArgumentError, fn -> AWSCluster.Native.interface_address("lo", 4) end

    assert {:error, {:invalid_argument, _, _}} = AWSCluster.Native.interface_address("lo", "ipx")

    assert Interface.address("lo") == {:ok, {127, 0, 0, 1}}
  end

  describe "ethwe inside a network namespace" do
    @describetag :netns

    setup do
      case Netns.available() do
        :ok ->
          ns = Netns.create!("ethwe")
          on_exit(fn -> Netns.delete(ns) end)
          {:ok, ns: ns}

        {:skip, why} ->
          IO.puts("\nskipping ethwe namespace test: #{why}")
          {:ok, skip: why}
      end
    end

    test "finds exactly the address given to ethwe, then :no_address once removed", ctx do
      if ctx[:skip] do
        :ok
      else
        ns = ctx.ns
        outside = Netns.veth_into!(ns, "ethwe")
        Netns.ip!(["-n", ns, "addr", "add", "127.77.0.2/24", "dev", "ethwe"])
        Netns.ip!(["-n", ns, "link", "set", "ethwe", "up"])

        peer = Cluster.start_hidden_peer(wrap: {"ip", ["netns", "exec", ns]})

        try do
          assert {:ok, {127, 77, 0, 2}} = :peer.call(peer, Interface, :address, ["ethwe"])

          assert {:error, %Error{reason: :no_such_interface}} =
                   :peer.call(peer, Interface, :address, [outside])

          Netns.ip!(["-n", ns, "addr", "del", "127.77.0.2/24", "dev", "ethwe"])

          assert {:error, %Error{reason: :no_address, message: msg}} =
                   :peer.call(peer, Interface, :address, ["ethwe"])

          assert msg =~ "ethwe"
        after
          Cluster.stop(peer)
        end
      end
    end
  end
end
