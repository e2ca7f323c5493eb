defmodule AWSCluster.PollerTest do
  # Strategy logic without network: the test answers every discovery round
  # (AWSCluster.Test.Discovery) and observes connects through injected MFAs.
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog
  import AWSCluster.Test.Discovery, only: [answer: 1, await_request: 0, peer: 1, peer: 2, peer: 3]

  alias AWSCluster.{Error, Poller}
  alias AWSCluster.Test.{Discovery, Nodes, Wait}

  @a :"a@127.0.0.1"
  @b :"b@127.0.0.1"
  @c :"c@127.0.0.1"

  defp start(config \\ []) do
    table = Nodes.table()
    topology = :"poller_#{System.unique_integer([:positive])}"

    config =
      Keyword.merge(
        [
          test_pid: self(),
          polling_interval: 10,
          connect_timeout: 1_000,
          discovery_timeout: 5_000
        ],
        config
      )

    arg = [topology: topology, config: config] ++ Nodes.mfas(self(), table)
    pid = start_supervised!({Discovery, arg})
    %{pid: pid, table: table, topology: topology}
  end

  defp members(pid), do: Poller.status(pid).members

  # Connects and disconnects run in their own process after each round. Once `step/2`
  # has returned no new round can start until the test answers, so when none runs or
  # waits, a refute below covers everything the rounds so far did.
  defp settle(pid), do: assert(Wait.until(fn -> not Poller.status(pid).connecting end, 5_000))

  # Answers the pending round with `result` and waits for the next request, which
  # proves the round was fully handled. Returns the next request.
  defp step(req, result) do
    reply(req, result)
    await_request()
  end

  defp reply({pid, ref}, result), do: send(pid, {:answer, ref, result})

  defp error(reason), do: {:error, Error.new(reason, "injected #{reason}")}

  test "connects every discovered peer through the connect MFA, once" do
    %{pid: pid} = start()
    req = step(await_request(), {:ok, [peer(:a), peer(:b), peer(:c)]})
    for n <- [@a, @b, @c], do: assert_receive({:connect, ^n}, 5_000)
    assert Map.keys(members(pid)) |> Enum.sort() == [@a, @b, @c]
    # Listed by list_nodes now: not connected again.
    _ = step(req, {:ok, [peer(:a), peer(:b), peer(:c)]})
    settle(pid)
    refute_received {:connect, _}
  end

  test "a libcluster-shaped state (a struct-like map without list_nodes) uses its connect MFA" do
    state = %{
      __struct__: Cluster.Strategy.State,
      topology: :libcluster_shape,
      connect: {Nodes, :connect, [self()]},
      disconnect: {:erlang, :disconnect_node, []},
      meta: nil,
      config: [test_pid: self(), polling_interval: 10]
    }

    start_supervised!({Discovery, [state]})
    assert_receive {:discovery_init, _, normalized}, 5_000
    assert normalized.connect == {Nodes, :connect, [self()]}
    assert normalized.list_nodes == {:erlang, :nodes, [:connected]}
    answer({:ok, [peer(:a)]})
    assert_receive {:connect, @a}, 5_000
  end

  test "prunes after exactly prune_after complete answers without the peer; errors do not count" do
    %{pid: pid} = start(prune_after: 3, prune_disconnect: :always)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    assert_receive {:connect, @b}, 5_000

    req = step(req, {:ok, [peer(:a)]})
    assert members(pid)[@b] == 1

    req = step(req, error(:unreachable))
    assert members(pid)[@b] == 1

    req = step(req, {:ok, [peer(:a)]})
    assert members(pid)[@b] == 2
    settle(pid)
    refute_received {:disconnect, @b}

    _ = step(req, {:ok, [peer(:a)]})
    assert_receive {:disconnect, @b}, 5_000
    assert Map.keys(members(pid)) == [@a]
    settle(pid)
    refute_received {:disconnect, @a}
  end

  describe "the prune guard" do
    @five [:a, :b, :c, :d, :e]

    defp five(config) do
      %{pid: pid} = start(Keyword.merge([prune_after: 1, prune_disconnect: :always], config))
      req = step(await_request(), {:ok, Enum.map(@five, &peer/1)})
      for n <- @five, do: assert_receive({:connect, _}, 5_000) && n
      {pid, req}
    end

    test "holds a prune of over 30% for one complete answer, then prunes what is still missing" do
      {pid, req} = five([])
      log = capture_log(fn -> send(self(), {:req, step(req, {:ok, [peer(:a), peer(:b)]})}) end)
      assert_received {:req, req}
      assert log =~ "holding the prune of 3 of 5 peers (over 30% at once)"
      assert Poller.status(pid).held == [@c, :"d@127.0.0.1", :"e@127.0.0.1"]
      assert map_size(members(pid)) == 5
      settle(pid)
      refute_received {:disconnect, _}

      # The next complete answer confirms c and d; e came back.
      _ = step(req, {:ok, [peer(:a), peer(:b), peer(:e)]})
      assert Map.keys(members(pid)) |> Enum.sort() == [@a, @b, :"e@127.0.0.1"]
      assert Poller.status(pid).held == []
      assert_receive {:disconnect, @c}, 5_000
      assert_receive {:disconnect, :"d@127.0.0.1"}, 5_000
      settle(pid)
      refute_received {:disconnect, _}
    end

    test "a shrink under the share, a single peer, terminating reports and prune_guard: false go at once" do
      {pid, req} = five([])
      # 1 of 5 (20%): under the share.
      req = step(req, {:ok, Enum.map([:a, :b, :c, :d], &peer/1)})
      assert_receive {:disconnect, :"e@127.0.0.1"}, 5_000
      # 3 of 4, reported terminating: not a guess from a short answer.
      _ = step(req, {:ok, [peer(:a)], ["i-b", "i-c", "i-d"]})
      for n <- [@b, @c, :"d@127.0.0.1"], do: assert_receive({:disconnect, ^n}, 5_000)
      assert Map.keys(members(pid)) == [@a]

      {pid, req} = five(prune_guard: false)
      _ = step(req, {:ok, [peer(:a)]})
      assert Map.keys(members(pid)) == [@a]
      assert Poller.status(pid).held == []
    end
  end

  test "a peer seen again starts counting misses from zero" do
    %{pid: pid} = start(prune_after: 2)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    req = step(req, {:ok, [peer(:a)]})
    assert members(pid)[@b] == 1
    req = step(req, {:ok, [peer(:a), peer(:b)]})
    assert members(pid)[@b] == 0
    _ = step(req, {:ok, [peer(:a)]})
    assert members(pid)[@b] == 1
    settle(pid)
    refute_received {:disconnect, _}
  end

  test "prune_after: false never prunes" do
    %{pid: pid} = start(prune_after: false)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    assert_receive {:connect, @b}, 5_000
    req = Enum.reduce(1..6, req, fn _, req -> step(req, {:ok, [peer(:a)]}) end)
    assert members(pid)[@b] == 6
    _ = step(req, {:ok, [peer(:a)], ["i-b"]})
    assert members(pid)[@b] == 7
    settle(pid)
    refute_received {:disconnect, _}
  end

  test "a peer reported terminating is pruned at once, by instance id or by node" do
    %{pid: pid} = start(prune_after: 5, prune_disconnect: :always)
    req = step(await_request(), {:ok, [peer(:a), peer(:b), peer(:c)]})
    assert_receive {:connect, @b}, 5_000
    assert_receive {:connect, @c}, 5_000

    req = step(req, {:ok, [peer(:a), peer(:b)], ["i-b"]})
    assert_receive {:disconnect, @b}, 5_000
    _ = step(req, {:ok, [peer(:a)], [@c]})
    assert_receive {:disconnect, @c}, 5_000
    assert Map.keys(members(pid)) == [@a]
  end

  test "the last good set is kept on every kind of error" do
    %{pid: pid} = start(prune_after: 1, discovery_timeout: 300)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    assert_receive {:connect, @b}, 5_000

    failures = [
      error(:throttled),
      error(:unreachable),
      error(:timeout),
      error(:bad_response),
      error(:unauthorized),
      error(:not_found),
      error(:internal),
      {:raise, "boom"},
      {:exit, :kaboom},
      :hang,
      {:ok, [%{no_node: true}]},
      {:ok, [peer(:a)], :not_a_list},
      :nonsense
    ]

    Enum.reduce(failures, req, fn failure, req ->
      req = step(req, failure)
      status = Poller.status(pid)
      assert status.health == :failing, "after #{inspect(failure)}"
      assert %Error{} = status.last_error
      assert Map.keys(status.members) |> Enum.sort() == [@a, @b], "after #{inspect(failure)}"
      req
    end)

    settle(pid)
    refute_received {:disconnect, _}
    assert Poller.status(pid).failures == length(failures)
  end

  test "throttling backs off exponentially up to max_backoff; other errors do not" do
    %{pid: pid} = start(polling_interval: 10, max_backoff: 50)
    req = step(await_request(), {:ok, [peer(:a)]})

    {delays, req} =
      Enum.map_reduce(1..4, req, fn _, req ->
        req = step(req, error(:throttled))
        status = Poller.status(pid)
        {{status.throttles, status.next_delay}, req}
      end)

    assert [{1, d1}, {2, d2}, {3, d3}, {4, d4}] = delays
    assert d1 in 18..22
    assert d2 in 36..44
    assert d3 in 45..50
    assert d4 in 45..50

    req = step(req, error(:unreachable))
    status = Poller.status(pid)
    # Not throttled: the normal interval, but the throttle count is kept.
    assert status.throttles == 4 and status.next_delay in 9..11

    req = step(req, {:ok, [peer(:a)]})
    status = Poller.status(pid)
    assert status.throttles == 0 and status.next_delay in 9..11

    _ = step(req, error(:bad_response))
    assert Poller.status(pid).next_delay in 9..11
  end

  test "the interval is jittered by at most 10%" do
    %{pid: pid} = start(polling_interval: 300)

    delays =
      Enum.map_reduce(1..5, await_request(), fn _, req ->
        req = step(req, {:ok, []})
        {Poller.status(pid).next_delay, req}
      end)
      |> elem(0)

    assert Enum.all?(delays, &(&1 in 270..330))
  end

  test "one hanging connect does not stall the others and is killed after connect_timeout" do
    table = Nodes.table()
    Nodes.hang(table, @b)

    start_supervised!(
      {Discovery,
       [
         topology: :hang,
         config: [test_pid: self(), polling_interval: 10_000, connect_timeout: 300]
       ] ++ Nodes.mfas(self(), table)}
    )

    answer({:ok, [peer(:a), peer(:b), peer(:c)]})
    assert_receive {:connect_hang, @b, hung}, 5_000
    ref = Process.monitor(hung)
    assert_receive {:connect, @a}, 5_000
    assert_receive {:connect, @c}, 5_000
    assert_receive {:DOWN, ^ref, :process, ^hung, :killed}, 5_000
  end

  test "the loop answers while discovery hangs, and a late answer is ignored" do
    %{pid: pid} = start(discovery_timeout: 200)
    {task, ref} = await_request()
    assert Poller.status(pid).health == :starting
    # The hung round is killed and counted as a timeout.
    _ = await_request()
    status = Poller.status(pid)
    assert status.health == :failing
    assert status.last_error.reason == :timeout
    refute Process.alive?(task)
    send(pid, {:discovered, ref, {:ok, [peer(:a)]}})
    assert Poller.status(pid).members == %{}
  end

  test "logs once when discovery fails and once when it recovers" do
    log =
      capture_log(fn ->
        %{topology: topology} = start()
        req = step(await_request(), {:ok, [peer(:a)]})
        req = Enum.reduce(1..4, req, fn _, req -> step(req, error(:unreachable)) end)
        req = step(req, {:ok, [peer(:a)]})
        _ = step(req, {:ok, [peer(:a)]})
        send(self(), {:topology, topology})
      end)

    assert_received {:topology, topology}
    prefix = "[aws_cluster:#{topology}]"
    assert count(log, "#{prefix} discovery failing (unreachable)") == 1
    assert count(log, "#{prefix} discovery recovered after 4 failed polls") == 1
    assert count(log, "#{prefix} discovery is up: 1 peers") == 1
    assert count(log, "#{prefix} new peer #{@a}") == 1
  end

  defp count(text, part), do: length(String.split(text, part)) - 1

  test "every common option has a bad-value case that fails start naming the key" do
    bad = [
      polling_interval: 0,
      polling_interval: "10",
      prune_after: 0,
      prune_after: true,
      connect_timeout: -1,
      max_concurrency: :many,
      discovery_timeout: 1.5,
      max_backoff: 0,
      max_peers: nil,
      no_such_option: 1
    ]

    for {key, value} <- bad do
      config = [test_pid: self()] ++ [{key, value}]

      assert {:error, %Error{reason: :invalid_config} = e} =
               Discovery.start_link(topology: :bad, config: config)

      assert e.details.key == key
      assert e.message =~ "topology :bad: "
      assert e.message =~ inspect(key)
    end

    for {key, value} <- [topology: "x", connect: {:m, :f}, disconnect: "x", list_nodes: :x] do
      arg = Keyword.put([topology: :bad, config: [test_pid: self()]], key, value)
      assert {:error, %Error{details: %{key: ^key}}} = Discovery.start_link(arg)
    end

    refute_received {:discovery_init, _, _}
  end

  test "an init that fails on invalid options does not start, and says why" do
    Process.flag(:trap_exit, true)
    error = Error.new(:invalid_config, "invalid option :filters: no such filter")

    assert {:error, ^error} =
             Discovery.start_link(
               topology: :bad_init,
               config: [test_pid: self(), init_error: error]
             )
  end

  test "an init that fails on a transient fault starts failing, logs once, retries, then forms" do
    fault = :counters.new(1, [])
    :counters.put(fault, 1, 1)
    error = Error.new(:unreachable, "IMDS: connection refused; set region:")
    init_error = fn -> if :counters.get(fault, 1) == 1, do: error end

    log =
      capture_log(fn ->
        %{pid: pid} = start(init_error: init_error, polling_interval: 20, max_backoff: 40)

        for _ <- 1..3, do: assert_receive({:discovery_init_failed, ^pid, ^error}, 5_000)
        status = Poller.status(pid)
        assert status.health == :failing and status.last_error == error
        assert status.failures >= 3
        refute_received {:discover, _, _}

        :counters.put(fault, 1, 0)
        assert_receive {:discovery_init, ^pid, _state}, 5_000
        answer({:ok, [peer(:a)]})
        assert_receive {:connect, @a}, 5_000
        send(self(), {:status, Poller.status(pid)})
      end)

    assert_received {:status, %{health: :healthy, last_error: nil}}
    assert length(String.split(log, "cannot start discovery yet")) == 2
  end

  test "stopping a topology ends its connect round: nothing connects after the stop" do
    %{pid: pid, table: table, topology: topology} = start(connect_timeout: 60_000)
    Nodes.hang(table, @a)
    answer({:ok, [peer(:a)]})
    assert_receive {:connect_hang, @a, attempt}, 5_000
    ref = Process.monitor(attempt)
    stop_supervised!({Discovery, topology})
    refute Process.alive?(pid)
    assert_receive {:DOWN, ^ref, :process, ^attempt, _}, 5_000

    # A plain GenServer.stop/1 exits :normal, which links alone would not pass on.
    table = Nodes.table()
    Nodes.hang(table, @b)
    arg = [topology: :stop_normal, config: [test_pid: self(), polling_interval: 10]]
    {:ok, pid} = Discovery.start_link(arg ++ Nodes.mfas(self(), table))
    answer({:ok, [peer(:b)]})
    assert_receive {:connect_hang, @b, attempt}, 5_000
    ref = Process.monitor(attempt)
    GenServer.stop(pid)
    assert_receive {:DOWN, ^ref, :process, ^attempt, _}, 5_000
  end

  test "an option the AWS client refuses (invalid_argument) fails the start like a bad option" do
    Process.flag(:trap_exit, true)
    error = Error.new(:invalid_argument, "region must look like us-east-1", %{key: :region})

    assert {:error, %Error{reason: :invalid_config, details: %{key: :region}}} =
             Discovery.start_link(
               topology: :bad_arg,
               config: [test_pid: self(), init_error: error]
             )
  end

  test "the connect MFA runs with its arguments as given, secrets included" do
    opts = [cookie: :"real-cookie", secret: "real-secret"]
    arg_extra = [connect: {Nodes, :connect_with, [self(), opts]}]
    table = Nodes.table()
    topology = :"poller_mfa_#{System.unique_integer([:positive])}"
    config = [test_pid: self(), polling_interval: 10]
    mfas = Keyword.merge(Nodes.mfas(self(), table), arg_extra)
    pid = start_supervised!({Discovery, [topology: topology, config: config] ++ mfas})
    answer({:ok, [peer(:a)]})
    assert_receive {:connect_with, ^opts, @a}, 5_000
    # What is printed is redacted.
    refute inspect(:sys.get_status(pid)) =~ "real-secret"
  end

  test "a failing connect is logged at warning once per state change, not every round" do
    %{table: table} = start()
    Nodes.fail(table, @b)

    log =
      capture_log(fn ->
        req = step(await_request(), {:ok, [peer(:a), peer(:b)]})

        req =
          Enum.reduce(1..4, req, fn _, req ->
            assert_receive {:connect_failed, @b}, 5_000
            step(req, {:ok, [peer(:a), peer(:b)]})
          end)

        assert_receive {:connect_failed, @b}, 5_000
        Nodes.heal(table, @b)
        _ = step(req, {:ok, [peer(:a), peer(:b)]})
        assert_receive {:connect, @b}, 5_000
        Process.sleep(50)
      end)

    assert length(String.split(log, "[warning] [aws_cluster:")) == 2, log
    assert log =~ "cannot connect to b@127.0.0.1: refused or unreachable"
    assert log =~ "connected to b@127.0.0.1 after failing"
  end

  test "by default a prune forgets the peer and leaves its link up (OTP 25's overlap guard)" do
    assert AWSCluster.Connector.overlap_guarded?()
    %{pid: pid, table: table} = start(prune_after: 1)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    for n <- [@a, @b], do: assert_receive({:connect, ^n}, 5_000)
    req = step(req, {:ok, [peer(:a)]})
    assert Map.keys(members(pid)) == [@a]
    settle(pid)
    refute_received {:disconnect, _}

    # When b's link drops by itself, b is not dialed again: it is no longer a member.
    :ets.delete(table, @b)
    _ = step(req, {:ok, [peer(:a)]})
    settle(pid)
    refute_received {:connect, @b}
  end

  test "node_info/1 and nodes_by_az/0 describe the current peers" do
    %{topology: topology} = start(prune_after: 1)
    n1 = :"info_one_#{topology}@127.0.0.1"
    n2 = :"info_two_#{topology}@127.0.0.1"
    p1 = %{peer(:x, "eu-west-1a", %{"role" => "web"}) | node: n1}
    p2 = %{peer(:y, "eu-west-1b") | node: n2}

    req = step(await_request(), {:ok, [p1, p2]})

    assert {:ok, info} = AWSCluster.node_info(n1)
    assert info.instance_id == "i-x"
    assert info.availability_zone == "eu-west-1a"
    assert info.address == "127.0.0.1"
    assert info.tags == %{"role" => "web"}
    assert info.topology == topology

    by_az = AWSCluster.nodes_by_az()
    assert n1 in by_az["eu-west-1a"]
    assert n2 in by_az["eu-west-1b"]

    _ = step(req, {:ok, [p1]})
    assert {:error, %Error{reason: :not_found}} = AWSCluster.node_info(n2)

    stop_supervised!({Discovery, topology})
    # The registry drops a dead poller's rows.
    assert Wait.until(fn -> AWSCluster.node_info(n1) |> elem(0) == :error end, 5_000)
  end

  test "an answer with more than max_peers peers is refused; the last good set is kept" do
    %{pid: pid} = start(max_peers: 2, prune_after: 1)
    req = step(await_request(), {:ok, [peer(:a), peer(:b)]})
    for n <- [@a, @b], do: assert_receive({:connect, ^n}, 5_000)

    _ = step(req, {:ok, [peer(:a), peer(:b), peer(:c)]})
    status = Poller.status(pid)
    assert status.health == :failing
    assert %Error{reason: :too_many_peers, details: %{count: 3, max_peers: 2}} = status.last_error
    assert Map.keys(status.members) |> Enum.sort() == [@a, @b]
    settle(pid)
    refute_received {:connect, @c}
    refute_received {:disconnect, _}
  end
end
