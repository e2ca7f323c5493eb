defmodule AWSCluster.AWS do
  @moduledoc """
  EC2 and AutoScaling queries, the only module that calls the AWS NIFs.

  A client is built once per topology and reused; it holds one connection pool
  and credential cache. Every call runs on the NIF's tokio runtime and answers with a
  message (see `AWSCluster.Async`), so no scheduler waits on AWS.

      {:ok, client} = AWSCluster.AWS.client(region: "us-east-1")
      {:ok, instances} =
        AWSCluster.AWS.describe_instances(client, %{"tag:app" => "chat"}, states: ["running"])

  ## Client options

    * `:region` - required, e.g. `"us-east-1"`.
    * `:endpoint` - `http(s)://host[:port]` of moto, LocalStack or a VPC endpoint.
      Default: the regional AWS endpoints.
    * `:access_key_id`, `:secret_access_key`, `:session_token` - static credentials.
      Default: aws-config's chain (env, profile, web identity, ECS task role, instance role).
    * `:max_attempts` - attempts per request (throttling, 5xx and transport failures are retried
      with full-jitter backoff), 1..20. Default 3.
    * `:operation_timeout` - ms one call may take, all pages and retries included.
      Default 10_000.
    * `:attempt_timeout` - ms one attempt may take. Default: `:operation_timeout`.
    * `:connect_timeout` - ms to open a connection. Default 3_100.

  ## Errors

  `{:error, %AWSCluster.Error{reason: reason}}` where `reason` is `:throttled` (back off),
  `:unauthorized` (`details.action` names the IAM action to allow), `:unreachable`
  (no response: refused, reset, DNS), `:timeout`, `:bad_response` (any 5xx including
  503, unparseable or cut-off bodies, unknown AWS codes), `:not_found`,
  `:invalid_argument` or `:internal`. `details` carries `:code` (AWS error code),
  `:operation`, `:action`, `:status` and `:endpoint` when known.
  """

  alias AWSCluster.{Async, Error, Native}

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

  @client_keys [
    :region,
    :endpoint,
    :access_key_id,
    :secret_access_key,
    :session_token,
    :max_attempts,
    :operation_timeout,
    :attempt_timeout,
    :connect_timeout
  ]

  # Building the client reads TLS roots and profile files; generous but bounded.
  @build_timeout 15_000
  # The NIF enforces operation_timeout itself; this margin only covers message delivery.
  @reply_margin 1_000

  @doc "The option keys `client/1` accepts."
  @spec client_keys() :: [atom()]
  def client_keys, do: @client_keys

  @doc """
  Builds a client from the options above. Unknown keys and wrong types are rejected
  with `reason: :invalid_argument` and the key in `details.key`.
  """
  @spec client(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def client(opts) when is_list(opts) do
    with :ok <- known_keys(opts, @client_keys),
         {:ok, region} <- required_binary(opts, :region),
         {:ok, native} <- native_opts(opts, region),
         {:ok, resource} <- build(native) do
      {:ok,
       %__MODULE__{
         resource: resource,
         region: region,
         endpoint: native.endpoint,
         operation_timeout: native.operation_timeout_ms
       }}
    end
  end

  def client(other),
    do:
      {:error,
       invalid(
         :opts,
         "client options must be a keyword list, got #{inspect(AWSCluster.Config.redact(other))}"
       )}

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
    with :ok <- known_keys(opts, [:states, :instance_ids, :page_size, :timeout]),
         :ok <- call_timeout(opts),
         {:ok, filters} <- normalize_filters(filters),
         {:ok, states} <- string_list(opts, :states),
         {:ok, ids} <- string_list(opts, :instance_ids),
         {:ok, page_size} <- page_size(opts),
         filters = add_states(filters, states),
         {:ok, %{instances: instances}} <-
           Async.call(
             &Native.aws_describe_instances(client.resource, &1, filters, ids || [], page_size),
             timeout(client, opts)
           ) do
      {:ok, instances}
    end
  end

  @doc """
  The named AutoScaling groups with their instances (lifecycle state, health, AZ);
  all groups when `names` is empty. Names that match no group are left out, as AWS does.
  Option `:timeout` as in `describe_instances/3`.
  """
  @spec describe_auto_scaling_groups(t(), [String.t()], keyword()) ::
          {:ok, [group()]} | {:error, Error.t()}
  def describe_auto_scaling_groups(%__MODULE__{} = client, names, opts \\ []) do
    with :ok <- known_keys(opts, [:timeout]),
         :ok <- call_timeout(opts),
         :ok <- strings(names, :names),
         {:ok, %{groups: groups}} <-
           Async.call(
             &Native.aws_describe_auto_scaling_groups(client.resource, &1, names),
             timeout(client, opts)
           ) do
      {:ok, groups}
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

  defp build(native) do
    case Async.call(&Native.aws_client_new(&1, native), @build_timeout) do
      # The NIF names the key as a string; callers match on the atom, as for the
      # checks made here.
      {:error, %Error{details: %{key: key}} = e} when is_binary(key) ->
        {:error, %{e | details: %{e.details | key: String.to_existing_atom(key)}}}

      other ->
        other
    end
  end

  defp timeout(client, opts) do
    Keyword.get(opts, :timeout) || client.operation_timeout + @reply_margin
  end

  defp call_timeout(opts) do
    case Keyword.get(opts, :timeout) do
      nil ->
        :ok

      ms when is_integer(ms) and ms > 0 ->
        :ok

      other ->
        {:error,
         invalid(:timeout, "timeout must be a positive integer (ms), got #{inspect(other)}")}
    end
  end

  defp native_opts(opts, region) do
    with {:ok, endpoint} <- optional_binary(opts, :endpoint),
         {:ok, key_id} <- optional_binary(opts, :access_key_id),
         {:ok, secret} <- optional_binary(opts, :secret_access_key),
         {:ok, token} <- optional_binary(opts, :session_token),
         {:ok, attempts} <- integer(opts, :max_attempts, 3, 1..20),
         {:ok, op} <- integer(opts, :operation_timeout, 10_000, 1..3_600_000),
         {:ok, attempt} <- integer(opts, :attempt_timeout, nil, 1..3_600_000),
         {:ok, connect} <- integer(opts, :connect_timeout, 3_100, 1..3_600_000) do
      {:ok,
       %{
         region: region,
         endpoint: endpoint,
         access_key_id: key_id,
         secret_access_key: secret,
         session_token: token,
         max_attempts: attempts,
         operation_timeout_ms: op,
         attempt_timeout_ms: attempt,
         connect_timeout_ms: connect
       }}
    end
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

  defp page_size(opts) do
    case Keyword.get(opts, :page_size) do
      nil ->
        {:ok, nil}

      n when is_integer(n) and n in 5..1000 ->
        {:ok, n}

      other ->
        {:error,
         invalid(:page_size, "page_size must be an integer in 5..1000, got #{inspect(other)}")}
    end
  end

  defp string_list(opts, key) do
    case Keyword.get(opts, key) do
      nil -> {:ok, nil}
      list -> with :ok <- strings(list, key), do: {:ok, list}
    end
  end

  defp strings(list, key) when is_list(list) do
    if Enum.all?(list, &(is_binary(&1) and &1 != "")),
      do: :ok,
      else:
        {:error, invalid(key, "#{key} must be a list of non-empty strings, got #{inspect(list)}")}
  end

  defp strings(other, key),
    do: {:error, invalid(key, "#{key} must be a list of strings, got #{inspect(other)}")}

  defp known_keys(opts, allowed) do
    if Keyword.keyword?(opts) do
      case Enum.find(Keyword.keys(opts), &(&1 not in allowed)) do
        nil ->
          :ok

        key ->
          {:error, invalid(key, "unknown option #{inspect(key)}; known: #{inspect(allowed)}")}
      end
    else
      {:error,
       invalid(
         :opts,
         "options must be a keyword list, got #{inspect(AWSCluster.Config.redact(opts))}"
       )}
    end
  end

  defp required_binary(opts, key) do
    case Keyword.get(opts, key) do
      value when is_binary(value) and value != "" -> {:ok, value}
      nil -> {:error, invalid(key, "#{key} is required")}
      other -> {:error, invalid(key, "#{key} must be a non-empty string, got #{inspect(other)}")}
    end
  end

  defp optional_binary(opts, key) do
    case Keyword.get(opts, key) do
      nil -> {:ok, nil}
      value when is_binary(value) and value != "" -> {:ok, value}
      # Never echo a credential back into an error message.
      _ -> {:error, invalid(key, "#{key} must be a non-empty string")}
    end
  end

  defp integer(opts, key, default, range) do
    case Keyword.get(opts, key, default) do
      nil -> {:ok, nil}
      n when is_integer(n) -> if n in range, do: {:ok, n}, else: int_error(key, n, range)
      other -> int_error(key, other, range)
    end
  end

  defp int_error(key, value, range) do
    {:error,
     invalid(
       key,
       "#{key} must be an integer in #{range.first}..#{range.last}, got #{inspect(value)}"
     )}
  end

  defp invalid(key, message), do: Error.new(:invalid_argument, message, %{key: key})
end
