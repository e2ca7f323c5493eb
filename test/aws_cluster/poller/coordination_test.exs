defmodule AWSCluster.Poller.CoordinationTest do
  # The rules a follower applies to what it receives, on the real struct and pg
  # notices; the cluster behaviour is in test/aws_cluster/coordination_test.exs.
  use ExUnit.Case, async: true

  alias AWSCluster.Poller.Coordination

  @key {:app, 1}

  defp other, do: spawn(fn -> Process.sleep(:infinity) end)

  defp following(poller) do
    %Coordination{
      key: @key,
      monitor: make_ref(),
      scope_monitor: make_ref(),
      members: [self(), poller],
      poller: poller
    }
  end

  defp answer(from, seq, sent),
    do: {Coordination, @key, %{from: from, seq: seq, sent: sent, result: {:ok, [], []}}}

  test "only the poller's newest answer within 2 intervals counts" do
    poller = other()
    c = following(poller)
    now = 1_000_000

    assert {:ok, c, %{seq: 1}} = Coordination.accept(c, answer(poller, 1, now - 100), now, 4_000)

    assert {:ignore, c, :out_of_order} =
             Coordination.accept(c, answer(poller, 1, now), now, 4_000)

    assert {:ignore, c, :stale} =
             Coordination.accept(c, answer(poller, 2, now - 4_001), now, 4_000)

    assert {:ignore, c, :not_poller} = Coordination.accept(c, answer(other(), 3, now), now, 4_000)
    assert {:ok, c, %{seq: 5}} = Coordination.accept(c, answer(poller, 5, now), now, 4_000)
    assert c.ignored == 3

    assert :not_ours =
             Coordination.accept(c, {Coordination, {:other, 1}, %{from: poller}}, now, 1)

    assert :not_ours = Coordination.accept(nil, answer(poller, 6, now), now, 4_000)
    # Another shape under the group's key: ignored as invalid, never a crash.
    assert {:ignore, _, :invalid} =
             Coordination.accept(c, {Coordination, @key, %{result: :x, from: "p"}}, now, 1)
  end

  test "a poller ignores answers, even in its own name" do
    c = %{following(other()) | poller: self()}
    assert {:ignore, _, :not_poller} = Coordination.accept(c, answer(self(), 1, 0), 0, 4_000)
  end

  test "an answer's result decodes, and a damaged one is an error, not a crash" do
    result = {:ok, [%{node: "a@127.0.1.5", instance: %{id: "i-1"}}], ["i-2"]}
    encoded = {:encoded, :erlang.term_to_binary(result, [:compressed])}
    assert Coordination.result(%{result: encoded}) == result
    assert Coordination.result(%{result: {:backoff, 4_000}}) == {:backoff, 4_000}
    assert Coordination.result(%{result: {:encoded, "not a term"}}) == :error
    assert Coordination.result(%{result: {:backoff, -1}}) == :error
    assert Coordination.result(%{result: {:ok, [], []}}) == :error
  end

  test "pg notices elect the lowest member and say when the poller changed" do
    low = other()
    c = %{following(self()) | members: [self()]}
    ref = c.monitor

    {c, changed} = Coordination.membership(c, {ref, :join, @key, [low]})
    assert c.poller == Enum.min([self(), low])
    assert changed == (c.poller != self())

    {c, changed} = Coordination.membership(c, {ref, :leave, @key, [low]})
    assert c.poller == self()
    assert changed == low < self()
    assert Coordination.poller?(c)
    assert :ignore = Coordination.membership(c, {make_ref(), :join, @key, [low]})
    assert :ignore = Coordination.membership(c, {ref, :join, {:other, 2}, [low]})
  end
end
