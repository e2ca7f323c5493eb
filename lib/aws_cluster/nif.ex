defmodule AWSCluster.NIF do
  @moduledoc """
  What this build of the NIF holds. Each service beyond EC2 is a cargo feature, chosen
  at build time (`config :aws_cluster, nif_services: [...]` or
  `AWS_CLUSTER_NIF_SERVICES`, README), so an app that uses only EC2 compiles only EC2.
  """

  alias AWSCluster.{Error, Native}

  @services %{
    "ec2" => :ec2,
    "autoscaling" => :autoscaling,
    "ecs" => :ecs,
    "postgres" => :postgres,
    "dynamodb" => :dynamodb
  }

  @doc """
  The services this build of the NIF can call: `:ec2` always, `:autoscaling`, `:ecs`
  `:postgres` and `:dynamodb` (the registry) unless the build left them out (`AWS_CLUSTER_NIF_SERVICES` or
  `config :aws_cluster, nif_services:`, README).
  """
  @spec services() ::
          {:ok, [:ec2 | :autoscaling | :ecs | :postgres | :dynamodb]} | {:error, Error.t()}
  def services do
    {:ok, for(name <- Native.nif_services(), service = @services[name], do: service)}
  rescue
    e in Error -> {:error, e}
  end

  @doc """
  `:ok` when this build of the NIF calls `service`; otherwise a `:not_supported` error
  saying how to build it in. A NIF that did not load at all passes here: its first call
  returns the load error.
  """
  @spec require_service(:autoscaling | :ecs | :postgres | :dynamodb) :: :ok | {:error, Error.t()}
  def require_service(service) do
    case services() do
      {:ok, services} ->
        if service in services, do: :ok, else: {:error, missing_service(service, services)}

      {:error, _} ->
        :ok
    end
  end

  defp missing_service(service, services) do
    Error.new(
      :not_supported,
      "this aws_cluster NIF was built without #{service} (it has " <>
        "#{Enum.join(services, ", ")}): add :#{service} to `config :aws_cluster, " <>
        "nif_services: [...]` in config/config.exs, or to AWS_CLUSTER_NIF_SERVICES, and " <>
        "rebuild (mix deps.compile aws_cluster --force)",
      %{service: service, services: services}
    )
  end
end
