defmodule AWSCluster.ConnectorTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Connector
  alias AWSCluster.Strategy.State
  alias AWSCluster.Test.Nodes

  defmodule Flaky do
    def connect(:raise@h), do: raise("no route")
    def connect(:false@h), do: false
    def connect(:ignored@h), do: :ignored
    def connect(:throw@h), do: throw(:up)
    def connect(_), do: true
  end

  defp state(table, extra \\ []) do
    {:ok, state} =
      State.new(
        [topology: :connector, config: []] ++ Keyword.merge(Nodes.mfas(self(), table), extra)
      )

    state
  end

  test "connects only nodes that are neither listed nor this node" do
    table = Nodes.table()
    :ets.insert(table, {:listed@h})
    result = Connector.connect(state(table), [:listed@h, node(), :new@h, :new@h])
    assert result == %{ok: [:new@h], failed: []}
    assert_received {:connect, :new@h}
    refute_received {:connect, _}
  end

  test "disconnects only listed nodes" do
    table = Nodes.table()
    :ets.insert(table, {:listed@h})
    result = Connector.disconnect(state(table), [:listed@h, :other@h])
    assert result == %{ok: [:listed@h], failed: []}
    assert_received {:disconnect, :listed@h}
    refute_received {:disconnect, :other@h}
  end

  test "every kind of failed connect is reported, none crashes the caller" do
    table = Nodes.table()
    st = state(table, connect: {Flaky, :connect, []})
    nodes = [:raise@h, :false@h, :ignored@h, :throw@h, :ok@h]
    %{ok: ok, failed: failed} = Connector.connect(st, nodes)
    assert ok == [:ok@h]
    failed = Map.new(failed)
    assert failed[:false@h] == false
    assert failed[:ignored@h] == :ignored
    assert {:exit, "no route"} = failed[:raise@h]
    assert {:exit, {:throw, :up}} = failed[:throw@h]
  end

  test "a hanging connect times out while the others complete" do
    table = Nodes.table()
    Nodes.hang(table, :hang@h)
    result = Connector.connect(state(table), [:hang@h, :a@h, :b@h], timeout: 200)
    assert Enum.sort(result.ok) == [:a@h, :b@h]
    assert result.failed == [{:hang@h, :timeout}]
    assert_received {:connect_hang, :hang@h, pid}
    refute Process.alive?(pid)
  end

  test "a list_nodes MFA that raises counts as listing nothing" do
    table = Nodes.table()
    st = state(table, list_nodes: {String, :to_integer, ["x"]})
    assert %{ok: [:a@h]} = Connector.connect(st, [:a@h])
  end
end
