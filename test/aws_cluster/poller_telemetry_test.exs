defmodule AWSCluster.PollerTelemetryTest do
  # Not async: the telemetry module is application env.
  use ExUnit.Case, async: false

  import AWSCluster.Test.Discovery, only: [await_request: 0, peer: 1]

  alias AWSCluster.Error
  alias AWSCluster.Test.{Discovery, Nodes, TelemetryProbe}

  setup do
    Application.put_env(:aws_cluster, :telemetry_module, TelemetryProbe)
    Process.register(self(), TelemetryProbe)
    on_exit(fn -> Application.delete_env(:aws_cluster, :telemetry_module) end)
  end

  defp reply({pid, ref}, result), do: send(pid, {:answer, ref, result})

  test "discovery start/stop/exception and node connect/disconnect events" do
    table = Nodes.table()

    config = [
      test_pid: self(),
      polling_interval: 10,
      prune_after: 1,
      prune_disconnect: :always,
      prune_guard: false
    ]

    start_supervised!({Discovery, [topology: :tele, config: config] ++ Nodes.mfas(self(), table)})

    meta = %{topology: :tele, strategy: Discovery}
    req = await_request()

    assert_receive {:telemetry, [:aws_cluster, :discovery, :start], %{system_time: _}, ^meta},
                   5_000

    reply(req, {:ok, [peer(:a), peer(:b)]})

    assert_receive {:telemetry, [:aws_cluster, :discovery, :stop], %{duration: d, peers: 2},
                    ^meta},
                   5_000

    assert is_integer(d) and d >= 0

    for n <- [:"a@127.0.0.1", :"b@127.0.0.1"] do
      assert_receive {:telemetry, [:aws_cluster, :node, :connect], %{count: 1},
                      %{topology: :tele, node: ^n}},
                     5_000
    end

    # A refused connect is an event too.
    AWSCluster.Test.Nodes.fail(table, :"c@127.0.0.1")
    reply(await_request(), {:ok, [peer(:a), peer(:b), peer(:c)]})

    assert_receive {:telemetry, [:aws_cluster, :node, :connect_error], %{count: 1},
                    %{topology: :tele, node: :"c@127.0.0.1", reason: false}},
                   5_000

    reply(await_request(), {:error, Error.new(:throttled, "slow down")})

    assert_receive {:telemetry, [:aws_cluster, :discovery, :exception], %{duration: _},
                    %{topology: :tele, strategy: Discovery, reason: :throttled}},
                   5_000

    reply(await_request(), {:ok, [peer(:a)]})

    assert_receive {:telemetry, [:aws_cluster, :node, :disconnect], %{count: 1},
                    %{topology: :tele, node: :"b@127.0.0.1"}},
                   5_000
  end
end
