defmodule AWSCluster.Telemetry do
  @moduledoc """
  Telemetry events, emitted only when the host application has `:telemetry` loaded
  (aws_cluster does not depend on it).

  Events (each documented where it is emitted, listed here in one place):

    * `[:aws_cluster, :discovery, :start]` - measurements `%{system_time: integer}`,
      metadata `%{topology: atom, strategy: module}`.
    * `[:aws_cluster, :discovery, :stop]` - measurements `%{duration: native_time, peers: integer}`,
      metadata `%{topology: atom, strategy: module}`.
    * `[:aws_cluster, :discovery, :exception]` - measurements `%{duration: native_time}`,
      metadata `%{topology: atom, strategy: module, reason: atom}`.
    * `[:aws_cluster, :node, :connect]` and `[:aws_cluster, :node, :disconnect]` -
      measurements `%{count: 1}`, metadata `%{topology: atom, node: node}`.
    * `[:aws_cluster, :gossip, :rejected]` - measurements `%{count: 1}`,
      metadata `%{topology: atom, reason: atom}`.
  """

  @doc """
  Emits `event` through `:telemetry.execute/3` when `:telemetry` is loaded; otherwise does
  nothing. The module can be replaced (tests) with `config :aws_cluster, :telemetry_module`.
  """
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    module = Application.get_env(:aws_cluster, :telemetry_module, :telemetry)

    if Code.ensure_loaded?(module) and function_exported?(module, :execute, 3) do
      module.execute(event, measurements, metadata)
    end

    :ok
  end
end
