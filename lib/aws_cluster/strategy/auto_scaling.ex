defmodule AWSCluster.Strategy.AutoScaling do
  @schema [
            groups: [
              type: {:list, :non_empty_string},
              doc:
                "AutoScaling group names. Default: this instance's own group, found through " <>
                  "IMDS (instance id) and its `aws:autoscaling:groupName` tag."
            ],
            instance_id: [
              type: :non_empty_string,
              doc: "This instance's id, to find its own group without asking IMDS for it."
            ]
          ] ++
            AWSCluster.Strategy.Naming.schema() ++
            AWSCluster.Strategy.Client.schema() ++ AWSCluster.Poller.Coordination.schema(true)

  @moduledoc """
  Finds peers among the instances of AutoScaling groups: only `InService` and `Healthy`
  instances are peers; their addresses come from one DescribeInstances by instance id.
  Instances the group reports as `Terminating` (or `Terminated`) are pruned at once;
  instances that are merely absent (Standby, Pending, unhealthy, or `InService` but not
  running in EC2's answer) are pruned after `:prune_after` polls. An id that no longer
  exists at all does not fail the round: instances are asked for by an `instance-id`
  filter, which leaves it out, not by `InstanceIds`, which fails the whole call.

      config :libcluster,
        topologies: [
          app: [
            strategy: #{inspect(__MODULE__)},
            config: [node_basename: "chat"]   # own group via IMDS
          ]
        ]

  A configured group missing from the answer is an error, not an empty group: a typo or
  a transient inconsistency must not disconnect the cluster.

  IAM: `autoscaling:DescribeAutoScalingGroups`, `ec2:DescribeInstances`.

  ## Options

  #{AWSCluster.Config.docs(@schema)}

  and the poller's options (`AWSCluster.Poller`).
  """

  use AWSCluster.Strategy

  alias AWSCluster.{AWS, Error, IMDS}
  alias AWSCluster.Strategy.{Client, Naming}

  @impl true
  def schema, do: @schema

  @impl true
  def validate(%{groups: []}),
    do: {:error, AWSCluster.Config.error(:groups, "expected at least one group name, got []")}

  def validate(config) do
    with :ok <- AWSCluster.NIF.require_service(:autoscaling),
         do: AWSCluster.Groups.Options.for_source(config, :auto_scaling)
  end

  @impl true
  def init(config, _state) do
    with {:ok, client, config} <- Client.build(config),
         {:ok, groups} <- groups(config, client) do
      {:ok, %{client: client, groups: groups, config: config}}
    end
  end

  @impl true
  def discover(%{client: client, groups: names, config: config}) do
    with {:ok, groups} <- AWS.describe_auto_scaling_groups(client, names),
         :ok <- all_found(names, groups),
         members = Enum.flat_map(groups, & &1.instances),
         ids = for(i <- members, in_service?(i), do: i.id) |> Enum.uniq(),
         {:ok, instances} <- AWS.running_instances(client, ids),
         {:ok, peers} <- Naming.peers(instances, config) do
      # An InService id EC2 does not show running is only absent from the answer: a
      # miss, under prune_after and the prune guard, since a short answer looks the same.
      {:ok, peers, for(i <- members, terminating?(i), do: i.id)}
    end
  end

  # The groups as resolved at start: a node of another group asks another question.
  @impl true
  def question(%{groups: groups, config: config}),
    do: {Enum.sort(groups), config.region, Naming.question(config)}

  defp in_service?(i), do: i.lifecycle_state == "InService" and i.health_status == "Healthy"

  defp terminating?(i) do
    state = i.lifecycle_state || ""
    String.starts_with?(state, "Terminat")
  end

  defp all_found(names, groups) do
    found = MapSet.new(groups, & &1.name)

    case Enum.reject(names, &MapSet.member?(found, &1)) do
      [] ->
        :ok

      missing ->
        {:error,
         Error.new(
           :not_found,
           "AutoScaling group(s) #{Enum.join(missing, ", ")} not found",
           %{groups: missing}
         )}
    end
  end

  defp groups(%{groups: groups}, _client) when is_list(groups), do: {:ok, groups}

  defp groups(config, client) do
    opts =
      [keys: [:auto_scaling_group], aws_client: client] ++
        if(config.instance_id, do: [instance_id: config.instance_id], else: []) ++
        Client.imds_opts(config)

    with {:ok, %{auto_scaling_group: group}} <- IMDS.fetch(opts), do: {:ok, [group]}
  end
end
