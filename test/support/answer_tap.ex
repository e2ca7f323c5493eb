defmodule AWSCluster.Test.AnswerTap do
  @moduledoc """
  Keeps a copy of the first shared answer (`AWSCluster.Poller.Coordination`) that a
  `AWSCluster.Test.Fleet` node's poller receives, seen through tracing, so a test can
  deliver that real answer again later: a late answer from whoever polled then.

  Runs on the fleet node (`:peer.call/4` the functions below); the tap lives until the
  node stops.
  """

  @answer AWSCluster.Poller.Coordination

  @doc false
  # Peer-side: taps the poller of the topology under `sup`.
  def local_start(sup) do
    poller = AWSCluster.Test.StrategyPeer.poller(sup)
    tap = spawn(fn -> loop(poller, nil) end)
    1 = :erlang.trace(poller, true, [:receive, {:tracer, tap}])
    {:ok, tap}
  end

  @doc false
  # Peer-side: the kept answer, or nil.
  def local_kept(tap) do
    send(tap, {:kept, self()})

    receive do
      {:kept, answer} -> answer
    after
      5_000 -> nil
    end
  end

  @doc false
  # Peer-side: sends the kept answer to the poller again.
  def local_replay(tap), do: send(tap, :replay)

  defp loop(poller, kept) do
    receive do
      {:trace, ^poller, :receive, {@answer, _key, _answer} = message} when kept == nil ->
        :erlang.trace(poller, false, [:receive])
        loop(poller, message)

      {:trace, _, _, _} ->
        loop(poller, kept)

      {:kept, from} ->
        send(from, {:kept, kept})
        loop(poller, kept)

      :replay ->
        send(poller, kept)
        loop(poller, kept)
    end
  end
end
