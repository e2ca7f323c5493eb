defmodule AWSCluster.Doctor.IAM do
  @moduledoc false
  # The doctor's credentials and IAM checks: one real, harmless call per action.

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{AWS, Doctor, Error}
  alias AWSCluster.Strategy.{AutoScaling, EC2, ECS}

  @probe "aws-cluster-doctor-probe"
  @credential_codes ~w(AuthFailure InvalidClientTokenId SignatureDoesNotMatch ExpiredToken
                       ExpiredTokenException RequestExpired InvalidAccessKeyId
                       MissingAuthenticationToken UnrecognizedClientException IncompleteSignature)

  # One real call per IAM action, cheap and harmless: a filter on an instance id that
  # cannot exist, a group name or task family nobody uses. A denial names the action;
  # anything else that got an AWS answer proves the action is allowed.
  @doc "The credentials check and one check per IAM action `strategy` needs."
  @spec checks(String.t() | atom(), module(), AWS.t(), map()) :: [Doctor.check()]
  def checks(name, strategy, client, config) do
    results = for action <- actions(strategy, config), do: {action, call(action, client, config)}

    creds = credentials_check(name, results, config)

    iam =
      for {action, result} <- results, creds.status != :fail or result == :ok do
        case result do
          :ok ->
            check("iam #{action} [#{name}]", :pass, "allowed")

          {:skip, why} ->
            check("iam #{action} [#{name}]", :warn, "not checked: #{why}")

          {:error, %Error{} = e} ->
            if denied?(e) do
              check(
                "iam #{action} [#{name}]",
                :fail,
                "denied: #{e.message}",
                "allow #{action} for this instance's role (see #{Doctor.iam_policy()})"
              )
            else
              check(
                "iam #{action} [#{name}]",
                :fail,
                "not checked, the call failed (#{e.reason}): #{e.message}",
                reach_fix(client)
              )
            end
        end
      end

    [creds | iam]
  end

  defp actions(EC2, _config), do: ["ec2:DescribeInstances"]

  defp actions(AutoScaling, _config),
    do: ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"]

  defp actions(ECS, %{address: :host}),
    do: actions(ECS, %{}) ++ ["ecs:DescribeContainerInstances", "ec2:DescribeInstances"]

  defp actions(ECS, _config), do: ["ecs:ListTasks", "ecs:DescribeTasks"]

  defp call("ec2:DescribeInstances", client, _config) do
    case AWS.describe_instances(client, %{"instance-id" => "i-00000000000000000"}) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  defp call("autoscaling:DescribeAutoScalingGroups", client, _config) do
    case AWS.describe_auto_scaling_groups(client, [@probe]) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  defp call("ecs:ListTasks", client, config) do
    case AWS.ecs_tasks(client, config.cluster, family: @probe) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  # DescribeTasks needs a task to describe: the topology's own, of which the task
  # running the doctor is one.
  defp call("ecs:DescribeTasks", client, config) do
    narrowing =
      for key <- [:family, :service_name, :started_by], config[key], do: {key, config[key]}

    case AWS.ecs_tasks(client, config.cluster, narrowing) do
      {:ok, []} -> {:skip, "ListTasks found no task of the topology to describe"}
      {:ok, _} -> :ok
      {:error, %Error{details: %{operation: "ListTasks"}}} -> {:skip, "ListTasks failed first"}
      error -> error
    end
  end

  defp call("ecs:DescribeContainerInstances", client, config) do
    case AWS.container_instances(client, config.cluster, [@probe]) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  @doc "Whether `error` is AWS refusing an action (not the credentials themselves)."
  @spec denied?(Error.t()) :: boolean()
  def denied?(%Error{reason: :unauthorized} = e), do: not credentials_error?(e)
  def denied?(%Error{details: %{status: 403}} = e), do: not credentials_error?(e)
  def denied?(_), do: false

  defp credentials_error?(%Error{details: details, message: message}) do
    Map.get(details, :code) in @credential_codes or message =~ ~r/credential/i
  end

  defp credentials_check(name, results, config) do
    source = credentials_source(config)
    errors = for {_action, {:error, e}} <- results, do: e

    cond do
      Enum.any?(errors, &credentials_error?/1) ->
        e = Enum.find(errors, &credentials_error?/1)

        check(
          "credentials [#{name}]",
          :fail,
          "AWS rejected or found no credentials (#{source}): #{e.message}",
          "give the instance (or the ECS task) a role with #{Doctor.iam_policy()}, or fix the " <>
            "AWS_* environment or profile; static keys in the config are for tests"
        )

      Enum.any?(results, &match?({_, :ok}, &1)) or Enum.any?(errors, &denied?/1) ->
        check("credentials [#{name}]", :pass, "accepted by AWS (#{source})")

      true ->
        e = hd(errors)

        check(
          "credentials [#{name}]",
          :fail,
          "could not reach AWS to check them (#{e.reason}): #{e.message}",
          reach_fix(nil)
        )
    end
  end

  defp reach_fix(_client) do
    "make the AWS API reachable from this host (NAT gateway or VPC endpoints for ec2, " <>
      "autoscaling and ecs, outbound HTTPS in the security group), or set endpoint:"
  end

  defp credentials_source(config) do
    cond do
      config[:access_key_id] -> "static keys in the topology config"
      System.get_env("AWS_ACCESS_KEY_ID") -> "environment: AWS_ACCESS_KEY_ID"
      System.get_env("AWS_WEB_IDENTITY_TOKEN_FILE") -> "web identity token (EKS)"
      System.get_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") -> "ECS task role"
      System.get_env("AWS_CONTAINER_CREDENTIALS_FULL_URI") -> "container credentials endpoint"
      profile = System.get_env("AWS_PROFILE") -> "profile #{profile}"
      true -> "default chain: ~/.aws files or the instance role"
    end
  end
end
