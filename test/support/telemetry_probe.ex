defmodule AWSCluster.Test.TelemetryProbe do
  @moduledoc """
  Stands in for `:telemetry` (`config :aws_cluster, :telemetry_module`): forwards every
  event to the process registered as `#{inspect(__MODULE__)}`, if any.

  On a peer node, where the test's process cannot receive, `local_collect/0` installs
  the probe with a process that keeps the events, and `local_events/0` returns them.
  """

  def execute(event, measurements, metadata) do
    case Process.whereis(__MODULE__) do
      nil -> :ok
      pid -> send(pid, {:telemetry, event, measurements, metadata})
    end

    :ok
  end

  @doc false
  def local_collect do
    Application.put_env(:aws_cluster, :telemetry_module, __MODULE__)
    pid = spawn(fn -> keep([]) end)
    true = Process.register(pid, __MODULE__)
    :ok
  end

  @doc false
  def local_events do
    send(__MODULE__, {:events, self()})

    receive do
      {:events, events} -> Enum.reverse(events)
    after
      5_000 -> :timeout
    end
  end

  defp keep(events) do
    receive do
      {:telemetry, event, measurements, metadata} ->
        keep([{event, measurements, metadata} | events])

      {:events, from} ->
        send(from, {:events, events}) && keep(events)
    end
  end
end
