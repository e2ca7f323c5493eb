defmodule AWSCluster.DistributionTest do
  use ExUnit.Case, async: true

  alias AWSCluster.{Distribution, Error}
  alias AWSCluster.Test.Cluster

  setup do
    peer = Cluster.start_hidden_peer()
    on_exit(fn -> Cluster.stop(peer) end)
    {:ok, peer: peer}
  end

  defp start(peer, opts), do: :peer.call(peer, Distribution, :start, [opts])

  test "names the node basename@ip and binds the listener to that address only", %{peer: peer} do
    cookie = Node.get_cookie()
    {:ok, node} = start(peer, basename: "dist_a", ip: "127.0.0.5", cookie: cookie)

    assert node == :"dist_a@127.0.0.5"
    assert :peer.call(peer, Node, :self, []) == node
    assert Node.ping(node) == :pong

    {:ok, port} = dist_port(~c"dist_a")
    assert {:ok, sock} = :gen_tcp.connect({127, 0, 0, 5}, port, [], 2_000)
    :gen_tcp.close(sock)
    assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 1}, port, [], 2_000)
    assert {:error, :econnrefused} = :gen_tcp.connect({127, 0, 0, 6}, port, [], 2_000)
  end

  test "names the node after an interface", %{peer: peer} do
    assert {:ok, :"dist_b@127.0.0.1"} =
             start(peer, basename: "dist_b", interface: "lo", cookie: Node.get_cookie())
  end

  test "again with the same name is a no-op, another name is an error", %{peer: peer} do
    {:ok, node} = start(peer, basename: "dist_c", ip: {127, 0, 0, 7})
    assert start(peer, basename: "dist_c", ip: {127, 0, 0, 7}) == {:ok, node}

    assert {:error, %Error{reason: :already_started, message: msg}} =
             start(peer, basename: "dist_d", ip: {127, 0, 0, 7})

    assert msg =~ "dist_c@127.0.0.7"
  end

  test "as a supervisor child it starts distribution and returns :ignore", %{peer: peer} do
    children = [{Distribution, basename: "dist_e", ip: "127.0.0.8"}]

    {:ok, _sup} = :peer.call(peer, Supervisor, :start_link, [children, [strategy: :one_for_one]])

    assert :peer.call(peer, Node, :self, []) == :"dist_e@127.0.0.8"
  end

  test "bad options name the key at fault", %{peer: peer} do
    cases = [
      {[ip: "127.0.0.9"], :basename},
      {[basename: "has space", ip: "127.0.0.9"], :basename},
      {[basename: "x"], :interface},
      {[basename: "x", ip: "not-an-ip"], :ip},
      {[basename: "x", ip: {300, 0, 0, 1}], :ip},
      {[basename: "x", ip: "127.0.0.9", family: :ipx], :family},
      {[basename: "x", ip: "127.0.0.9", colour: :red], :colour}
    ]

    for {opts, key} <- cases do
      assert {:error, %Error{reason: :invalid_config, details: %{key: ^key}, message: msg}} =
               start(peer, opts)

      assert msg =~ inspect(key)
    end

    assert {:error, %Error{reason: :no_such_interface}} =
             start(peer, basename: "x", interface: "nosuch0")

    refute :peer.call(peer, Node, :alive?, [])
  end

  defp dist_port(name) do
    case :erl_epmd.port_please(name, {127, 0, 0, 1}) do
      {:port, port, _version} -> {:ok, port}
      other -> {:error, other}
    end
  end
end
