defmodule AWSCluster.Test.TelemetryProbe do
  @moduledoc """
  Stands in for `:telemetry` (`config :aws_cluster, :telemetry_module`): forwards every
  event to the process registered as `#{inspect(__MODULE__)}`, if any.
  """

  def execute(event, measurements, metadata) do
    case Process.whereis(__MODULE__) do
      nil -> :ok
      pid -> send(pid, {:telemetry, event, measurements, metadata})
    end

    :ok
  end
end
