defmodule AWSCluster.Loop.RoundTest do
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias AWSCluster.Loop.Round

  @none %{ok: [], failed: []}

  defp result(ok, failed, linked \\ []),
    do: %{connect: %{ok: ok, failed: failed}, prune: @none, linked: linked}

  defp report(failures, result) do
    {failures, log} = with_log(fn -> Round.report(:t, failures, result) end)
    {failures, log}
  end

  test "a failure warns once; the same failure again is quiet; a new reason warns again" do
    {f, log} = report(%{}, result([], [{:a@h, false}]))
    assert log =~ "cannot connect to a@h" and f == %{a@h: false}
    {f, log} = report(f, result([], [{:a@h, false}]))
    refute log =~ "cannot connect"
    {f, log} = report(f, result([], [{:a@h, :timeout}]))
    assert log =~ "no answer within connect_timeout" and f == %{a@h: :timeout}
    {f, log} = report(f, result([:a@h], []))
    assert log =~ "connected to a@h after failing" and f == %{}
  end

  test "a round that tries only some nodes keeps the others' failures until they are linked" do
    {f, _} = report(%{}, result([], [{:a@h, false}, {:b@h, false}]))
    # Gossip dials a newcomer on its own: a and b were not tried.
    {f, log} = report(f, result([:c@h], []))
    assert f == %{a@h: false, b@h: false}
    refute log =~ "cannot connect"
    # b got linked from its side.
    {f, _} = report(f, result([], [], [:b@h]))
    assert f == %{a@h: false}
  end

  test "await_first/2 returns :ok even when the loop is gone" do
    pid = spawn(fn -> :ok end)
    ref = Process.monitor(pid)
    assert_receive {:DOWN, ^ref, _, _, _}
    capture_log(fn -> assert Round.await_first(pid, 10) == :ok end)
  end
end
