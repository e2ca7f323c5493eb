defmodule AWSCluster.AWS do
  @ms {:integer, 1..3_600_000}

  @client_schema [
    region: [type: :non_empty_string, required: true, doc: "e.g. `\"us-east-1\"`."],
    endpoint: [
      type: {:custom, "an http:// or https:// URL", &__MODULE__.url?/1},
      doc:
        "`http(s)://host[:port]` of moto, LocalStack or a VPC endpoint. Default: the " <>
          "regional AWS endpoints."
    ],
    access_key_id: [
      type: :non_empty_string,
      doc: "Static credentials. Default: aws-config's chain (env, profile, web identity, roles)."
    ],
    secret_access_key: [type: :non_empty_string, doc: "Static credentials."],
    session_token: [type: :non_empty_string, doc: "Static credentials."],
    max_attempts: [
      type: {:integer, 1..20},
      default: 3,
      doc: "Attempts per request (throttling, 5xx and transport failures, full-jitter backoff)."
    ],
    operation_timeout: [
      type: @ms,
      default: 10_000,
      doc: "ms one call may take, all pages and retries included."
    ],
    attempt_timeout: [type: @ms, doc: "ms one attempt may take. Default: `:operation_timeout`."],
    connect_timeout: [type: @ms, default: 3_100, doc: "ms to open a connection."]
  ]

  @describe_schema [
    states: [type: {:list, :non_empty_string}, doc: "Instance states to keep, server-side."],
    instance_ids: [type: {:list, :non_empty_string}, doc: "Only these instances."],
    page_size: [type: {:integer, 5..1000}, doc: "MaxResults per request."],
    timeout: [type: :pos_integer, doc: "ms to wait for the reply."]
  ]

  @call_schema [timeout: [type: :pos_integer, doc: "ms to wait for the reply."]]

  @task_schema [
    family: [type: :non_empty_string, doc: "Only tasks of this task definition family."],
    service_name: [type: :non_empty_string, doc: "Only tasks of this service."],
    started_by: [type: :non_empty_string, doc: "Only tasks started with this `startedBy`."],
    launch_type: [type: {:in, ["EC2", "FARGATE", "EXTERNAL"]}, doc: "Only this launch type."],
    timeout: [type: :pos_integer, doc: "ms to wait for the reply."]
  ]

  @moduledoc """
  EC2, AutoScaling and ECS queries, the only module that calls the AWS NIFs.

  A client is built once per topology and reused; it holds one connection pool
  and credential cache. Every call runs on the NIF's tokio runtime and answers with a
  message (see `AWSCluster.Async`), so no scheduler waits on AWS.

      {:ok, client} = AWSCluster.AWS.client(region: "us-east-1")
      {:ok, instances} =
        AWSCluster.AWS.describe_instances(client, %{"tag:app" => "chat"}, states: ["running"])

  ## Client options

  #{AWSCluster.Config.docs(@client_schema)}

  ## Errors

  `{:error, %AWSCluster.Error{reason: reason}}` where `reason` is `:throttled` (back off),
  `:unauthorized` (`details.action` names the IAM action to allow), `:unreachable`
  (no response: refused, reset, DNS), `:timeout`, `:bad_response` (any 5xx including
  503, unparseable or cut-off bodies, unknown AWS codes), `:not_found`,
  `:invalid_argument` or `:internal`. `details` carries `:code` (AWS error code),
  `:operation`, `:action`, `:status` and `:endpoint` when known.
  """

  alias AWSCluster.{Async, Config, Error, Native}

  @enforce_keys [:resource, :region, :operation_timeout]
  defstruct [:resource, :region, :endpoint, :operation_timeout]

  @typedoc "A client; holds no secrets, so it is safe to inspect and log."
  @type t :: %__MODULE__{
          resource: reference(),
          region: String.t(),
          endpoint: String.t() | nil,
          operation_timeout: pos_integer()
        }

  @typedoc "Filter name (`\"tag:app\"`, `\"vpc-id\"` ...) to one value or any of several."
  @type filters ::
          %{optional(String.t()) => String.t() | [String.t()]}
          | [{String.t(), String.t() | [String.t()]}]

  @type network_interface :: %{
          id: String.t() | nil,
          device_index: non_neg_integer() | nil,
          subnet_id: String.t() | nil,
          private_ips: [String.t()],
          ipv6: [String.t()]
        }

  @type instance :: %{
          id: String.t(),
          state: String.t() | nil,
          private_ip: String.t() | nil,
          public_ip: String.t() | nil,
          private_dns: String.t() | nil,
          ipv6: [String.t()],
          availability_zone: String.t() | nil,
          subnet_id: String.t() | nil,
          vpc_id: String.t() | nil,
          tags: %{String.t() => String.t()},
          launch_time: integer() | nil,
          network_interfaces: [network_interface()]
        }

  @type group_instance :: %{
          id: String.t(),
          lifecycle_state: String.t() | nil,
          health_status: String.t() | nil,
          availability_zone: String.t() | nil
        }

  @type group :: %{
          name: String.t(),
          desired_capacity: integer() | nil,
          instances: [group_instance()]
        }

  @typedoc """
  An ECS task. `state` is `:running` (a peer), `:gone` (STOPPING, DEPROVISIONING,
  STOPPED) or `:starting` (anything else). `address` is the task ENI's private IPv4
  (awsvpc), `nil` for bridge and host networking.
  """
  @type task :: %{
          arn: String.t(),
          cluster_arn: String.t() | nil,
          family: String.t() | nil,
          group: String.t() | nil,
          last_status: String.t(),
          state: :running | :gone | :starting,
          availability_zone: String.t() | nil,
          launch_type: String.t() | nil,
          container_instance_arn: String.t() | nil,
          address: String.t() | nil,
          tags: %{String.t() => String.t()}
        }

  @type container_instance :: %{
          arn: String.t(),
          ec2_instance_id: String.t() | nil,
          status: String.t() | nil
        }

  # Building the client reads TLS roots and profile files; generous but bounded.
  @build_timeout 15_000
  # The NIF enforces operation_timeout itself; this margin only covers message delivery.
  @reply_margin 1_000

  @doc "The options `client/1` accepts, as an `AWSCluster.Config` schema."
  @spec client_schema() :: AWSCluster.Config.schema()
  def client_schema, do: @client_schema

  @doc false
  @spec url?(term()) :: boolean()
  def url?(v), do: is_binary(v) and v =~ ~r{\Ahttps?://[^/\s]+}

  @doc """
  Builds a client from the options above. Unknown keys and wrong types are rejected
  with `reason: :invalid_argument` and the key in `details.key`.
  """
  @spec client(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def client(opts) do
    with {:ok, o} <- Config.arguments(opts, @client_schema),
         {:ok, resource} <- build(native_opts(o)) do
      {:ok,
       %__MODULE__{
         resource: resource,
         region: o.region,
         endpoint: o.endpoint,
         operation_timeout: o.operation_timeout
       }}
    end
  end

  @doc """
  Every instance matching `filters`, across all pages.

  Options:

    * `:states` - instance states to keep, server-side (`["running"]`); default any.
    * `:instance_ids` - only these instances.
    * `:page_size` - MaxResults per request, 5..1000 (not with `:instance_ids`).
      Default: AWS's (everything in as few pages as it likes).
    * `:timeout` - ms to wait for the reply. Default: the client's
      `:operation_timeout` plus a second.
  """
  @spec describe_instances(t(), filters(), keyword()) :: {:ok, [instance()]} | {:error, Error.t()}
  def describe_instances(%__MODULE__{} = client, filters, opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @describe_schema),
         {:ok, filters} <- normalize_filters(filters),
         filters = add_states(filters, o.states),
         {:ok, %{instances: instances}} <-
           Async.call(
             &Native.aws_describe_instances(
               client.resource,
               &1,
               filters,
               o.instance_ids || [],
               o.page_size
             ),
             timeout(client, o)
           ) do
      {:ok, instances}
    end
  end

  # EC2 takes at most 200 values in one filter.
  @ids_per_call 200

  @doc """
  The running instances among `ids`, by an `instance-id` filter of at most 200 ids a
  request. The requests run side by side (4 at a time), each bounded by the client's
  `:operation_timeout`, so a round takes about one call however many ids there are.
  """
  @spec running_instances(t(), [String.t()]) :: {:ok, [instance()]} | {:error, Error.t()}
  def running_instances(_client, []), do: {:ok, []}

  def running_instances(%__MODULE__{} = client, ids) do
    ids
    |> Enum.chunk_every(@ids_per_call)
    |> Task.async_stream(
      &describe_instances(client, [{"instance-id", &1}], states: ["running"]),
      max_concurrency: 4,
      timeout: :infinity
    )
    |> Enum.reduce_while({:ok, []}, fn
      {:ok, {:ok, instances}}, {:ok, acc} -> {:cont, {:ok, acc ++ instances}}
      {:ok, {:error, _} = error}, _acc -> {:halt, error}
    end)
  end

  @doc """
  The named AutoScaling groups with their instances (lifecycle state, health, AZ);
  all groups when `names` is empty. Names that match no group are left out, as AWS does.
  Option `:timeout` as in `describe_instances/3`.
  """
  @spec describe_auto_scaling_groups(t(), [String.t()], keyword()) ::
          {:ok, [group()]} | {:error, Error.t()}
  def describe_auto_scaling_groups(%__MODULE__{} = client, names, opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @call_schema),
         {:ok, names} <-
           Config.arguments([names: names], names: [type: {:list, :non_empty_string}]),
         {:ok, %{groups: groups}} <-
           Async.call(
             &Native.aws_describe_auto_scaling_groups(client.resource, &1, names.names),
             timeout(client, o)
           ) do
      {:ok, groups}
    end
  end

  @doc """
  Every task of ECS `cluster` (name or ARN) whose desired status is RUNNING, described
  with its tags: ListTasks is read to its last page and DescribeTasks asked 100 ARNs at a
  time, all within the client's `:operation_timeout`. Recently stopped tasks may still be
  listed; their `state` says so.

  Options:

  #{Config.docs(@task_schema)}

  At most one of `:family`, `:service_name` and `:started_by`.
  IAM: `ecs:ListTasks`, `ecs:DescribeTasks`.
  """
  @spec ecs_tasks(t(), String.t(), keyword()) :: {:ok, [task()]} | {:error, Error.t()}
  def ecs_tasks(%__MODULE__{} = client, cluster, opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @task_schema),
         {:ok, %{cluster: cluster}} <-
           Config.arguments([cluster: cluster], cluster: [type: :non_empty_string]),
         query =
           Map.put(
             Map.take(o, [:family, :service_name, :started_by, :launch_type]),
             :cluster,
             cluster
           ),
         {:ok, %{tasks: tasks}} <-
           Async.call(
             &Native.aws_describe_ecs_tasks(client.resource, &1, query),
             timeout(client, o)
           ) do
      {:ok, tasks}
    else
      error -> atom_key(error)
    end
  end

  @doc """
  The container instances `arns` of ECS `cluster`, with the EC2 instance each one is;
  ARNs ECS does not know are left out. Option `:timeout` as in `describe_instances/3`.
  IAM: `ecs:DescribeContainerInstances`.
  """
  @spec container_instances(t(), String.t(), [String.t()], keyword()) ::
          {:ok, [container_instance()]} | {:error, Error.t()}
  def container_instances(client, cluster, arns, opts \\ [])
  def container_instances(%__MODULE__{}, _cluster, [], _opts), do: {:ok, []}

  def container_instances(%__MODULE__{} = client, cluster, arns, opts) do
    with {:ok, o} <- Config.arguments(opts, @call_schema),
         {:ok, %{arns: arns, cluster: cluster}} <-
           Config.arguments([arns: arns, cluster: cluster],
             arns: [type: {:list, :non_empty_string}],
             cluster: [type: :non_empty_string]
           ),
         {:ok, %{container_instances: found}} <-
           Async.call(
             &Native.aws_describe_container_instances(client.resource, &1, cluster, arns),
             timeout(client, o)
           ) do
      {:ok, found}
    else
      error -> atom_key(error)
    end
  end

  @doc """
  The AutoScaling group `instance_id` belongs to, read from its
  `aws:autoscaling:groupName` tag with DescribeInstances (so only
  `ec2:DescribeInstances` is needed), or `nil` when it is in none.
  """
  @spec auto_scaling_group_of(t(), String.t(), keyword()) ::
          {:ok, String.t() | nil} | {:error, Error.t()}
  def auto_scaling_group_of(%__MODULE__{} = client, instance_id, opts \\ []) do
    case describe_instances(client, [], Keyword.put(opts, :instance_ids, [instance_id])) do
      {:ok, [%{tags: tags} | _]} ->
        {:ok, Map.get(tags, "aws:autoscaling:groupName")}

      {:ok, []} ->
        {:error,
         Error.new(:not_found, "instance #{instance_id} does not exist", %{
           instance_id: instance_id
         })}

      {:error, _} = error ->
        error
    end
  end

  defp build(native),
    do: atom_key(Async.call(&Native.aws_client_new(&1, native), @build_timeout))

  # The NIF names the key as a string; callers match on the atom, as for the checks
  # made here.
  defp atom_key({:error, %Error{details: %{key: key}} = e}) when is_binary(key),
    do: {:error, %{e | details: %{e.details | key: String.to_existing_atom(key)}}}

  defp atom_key(other), do: other

  defp timeout(client, o), do: o.timeout || client.operation_timeout + @reply_margin

  defp native_opts(o) do
    %{
      region: o.region,
      endpoint: o.endpoint,
      access_key_id: o.access_key_id,
      secret_access_key: o.secret_access_key,
      session_token: o.session_token,
      max_attempts: o.max_attempts,
      operation_timeout_ms: o.operation_timeout,
      attempt_timeout_ms: o.attempt_timeout,
      connect_timeout_ms: o.connect_timeout
    }
  end

  defp normalize_filters(filters) when is_map(filters),
    do: normalize_filters(Map.to_list(filters))

  defp normalize_filters(filters) when is_list(filters) do
    Enum.reduce_while(filters, {:ok, []}, fn
      {name, value}, {:ok, acc} when is_binary(name) and name != "" and is_binary(value) ->
        {:cont, {:ok, [{name, [value]} | acc]}}

      {name, [_ | _] = values}, {:ok, acc} when is_binary(name) and name != "" ->
        if Enum.all?(values, &is_binary/1),
          do: {:cont, {:ok, [{name, values} | acc]}},
          else:
            {:halt,
             {:error, invalid(:filters, "values of filter #{inspect(name)} must be strings")}}

      other, _ ->
        {:halt,
         {:error,
          invalid(
            :filters,
            "each filter must be {name, value | [value, ...]} with string names, got #{inspect(other)}"
          )}}
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      error -> error
    end
  end

  defp normalize_filters(other),
    do:
      {:error,
       invalid(
         :filters,
         "filters must be a map or a list of {name, values}, got #{inspect(other)}"
       )}

  defp add_states(filters, nil), do: filters
  defp add_states(filters, states), do: filters ++ [{"instance-state-name", states}]

  defp invalid(key, message), do: Error.new(:invalid_argument, message, %{key: key})
end
