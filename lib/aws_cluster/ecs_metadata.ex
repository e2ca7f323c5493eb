defmodule AWSCluster.ECSMetadata do
  @moduledoc """
  Reads this ECS task's identity from task metadata v4, once, when a topology starts:
  the endpoint in `ECS_CONTAINER_METADATA_URI_V4`, which the ECS agent sets in every
  container (EC2 and Fargate). No API call and no IAM are needed.

      {:ok, %{cluster: cluster, family: family, region: region}} = AWSCluster.ECSMetadata.fetch()

  The region comes from the task ARN. Each request has timeouts and is retried a bounded
  number of times. A failure, or a missing variable outside ECS, is an
  `%AWSCluster.Error{}` whose message names the topology options that replace what
  could not be read; it never raises.
  """

  alias AWSCluster.{Async, Config, Error, Native}

  @env "ECS_CONTAINER_METADATA_URI_V4"

  @schema [
    uri: [
      type: {:custom, "an http:// URL", &AWSCluster.IMDS.http?/1},
      doc: "The endpoint. Default: `$#{@env}`."
    ],
    timeout: [type: {:integer, 1..60_000}, default: 2_000, doc: "ms per request."],
    attempts: [type: {:integer, 1..10}, default: 3, doc: "Tries per request."]
  ]

  @typedoc "What the endpoint says about this task."
  @type t :: %{
          cluster: String.t() | nil,
          task_arn: String.t() | nil,
          family: String.t() | nil,
          availability_zone: String.t() | nil,
          launch_type: String.t() | nil,
          region: String.t() | nil,
          addresses: [String.t()]
        }

  @doc """
  This task's cluster, ARN, family, zone, launch type, region and this container's
  IPv4 addresses. Options:

  #{Config.docs(@schema)}
  """
  @spec fetch(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def fetch(opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @schema),
         {:ok, uri} <- uri(o.uri) do
      Async.call(
        &Native.ecs_metadata_fetch(&1, uri, o.timeout, o.attempts),
        # Two GETs; each attempt has its timeout, a connect second and at most 800 ms of
        # backoff before the next (ecs_metadata.rs).
        2 * o.attempts * (o.timeout + 1_800) + 2_000
      )
    end
  end

  defp uri(nil) do
    case System.get_env(@env) do
      uri when uri in [nil, ""] ->
        {:error,
         Error.new(
           :not_found,
           "#{@env} is not set, so this is not an ECS task (or its agent is too old for " <>
             "metadata v4); set cluster:, region: and one of family:, service_name:, " <>
             "started_by: or tags: in the topology config",
           %{config_keys: [:cluster, :region, :family]}
         )}

      uri ->
        {:ok, uri}
    end
  end

  defp uri(uri), do: {:ok, uri}
end
