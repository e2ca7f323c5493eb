defmodule AWSCluster.SupervisorTest do
  use ExUnit.Case, async: true

  import AWSCluster.Test.Discovery, only: [answer: 1, peer: 1]

  alias AWSCluster.Error
  alias AWSCluster.Test.{Discovery, Nodes}

  defp topology(name, extra_config \\ []) do
    table = Nodes.table()

    {name,
     [strategy: Discovery, config: [test_pid: self(), polling_interval: 50] ++ extra_config] ++
       Nodes.mfas(self(), table)}
  end

  test "runs each topology with libcluster's [state] and the given MFAs" do
    sup = start_supervised!({AWSCluster.Supervisor, topologies: [topology(:one), topology(:two)]})

    assert_receive {:discovery_init, _, %{topology: t1, connect: {Nodes, :connect, _}}}, 5_000
    assert_receive {:discovery_init, _, %{topology: t2}}, 5_000
    assert Enum.sort([t1, t2]) == [:one, :two]

    answer({:ok, [peer(:a)]})
    answer({:ok, [peer(:b)]})
    assert_receive {:connect, :"a@127.0.0.1"}, 5_000
    assert_receive {:connect, :"b@127.0.0.1"}, 5_000

    ids = for {id, _, _, _} <- Supervisor.which_children(sup), do: id
    assert Enum.sort(ids) == [{Discovery, :one}, {Discovery, :two}]
  end

  test "MFAs default to libcluster's" do
    start_supervised!(
      {AWSCluster.Supervisor,
       topologies: [plain: [strategy: Discovery, config: [test_pid: self()]]]}
    )

    assert_receive {:discovery_init, _, state}, 5_000
    assert state.connect == {:net_kernel, :connect_node, []}
    assert state.disconnect == {:erlang, :disconnect_node, []}
    assert state.list_nodes == {:erlang, :nodes, [:connected]}
  end

  test "a bad topology fails start naming the topology and the key, starting nothing" do
    cases = [
      {[t: [strategy: Discovery, config: [test_pid: self(), polling_interval: 0]]],
       :polling_interval},
      {[t: [strategy: Discovery, config: [test_pid: self(), bogus: 1]]], :bogus},
      {[t: [strategy: Discovery, config: [test_pid: self()], connect: :nope]], :connect},
      {[t: [strategy: Discovery, config: [test_pid: self()], list_nodes: {1, 2, 3}]],
       :list_nodes},
      {[t: [strategy: NoSuchStrategy]], :strategy},
      {[t: [config: []]], :strategy},
      {[t: [strategy: Discovery, config: %{}]], :config},
      {[t: [strategy: Discovery, config: [test_pid: self()], nonsense: 1]], :nonsense}
    ]

    for {topologies, key} <- cases do
      assert {:error, %Error{reason: :invalid_config} = e} =
               AWSCluster.Supervisor.start_link(topologies: topologies)

      assert e.details.key == key, inspect(e)
      assert e.message =~ "topology :t"
      assert e.message =~ inspect(key)
    end

    assert {:error, %Error{details: %{key: :topologies}}} = AWSCluster.Supervisor.start_link([])
    refute_received {:discovery_init, _, _}
  end
end
