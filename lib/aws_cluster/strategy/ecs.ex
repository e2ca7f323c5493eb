defmodule AWSCluster.Strategy.ECS do
  @schema [
            cluster: [
              type: :non_empty_string,
              doc: "ECS cluster name or ARN. Default: this task's, from task metadata v4."
            ],
            family: [
              type: :non_empty_string,
              doc:
                "Only tasks of this task definition family. Default, when none of " <>
                  "`:family`, `:service_name`, `:started_by` and `:tags` is given: this task's."
            ],
            service_name: [type: :non_empty_string, doc: "Only tasks of this ECS service."],
            started_by: [
              type: :non_empty_string,
              doc: "Only tasks started with this `startedBy`."
            ],
            tags: [
              type: {:map, :non_empty_string, {:or, [:string, {:list, :string}]}},
              default: %{},
              doc:
                "Task tags every peer must carry, checked on DescribeTasks' answer; a list " <>
                  "value matches any of its values. Needs tags propagated to tasks."
            ],
            launch_type: [
              type: {:in, ["EC2", "FARGATE", "EXTERNAL"]},
              doc: "Only tasks of this launch type."
            ],
            address: [
              type: {:in, [:awsvpc, :host]},
              default: :awsvpc,
              doc:
                "`:awsvpc`: the task's own ENI address. `:host` (bridge or host networking): " <>
                  "the private IP of the EC2 instance the task runs on, through " <>
                  "DescribeContainerInstances and DescribeInstances."
            ],
            metadata_uri: [
              type: {:custom, "an http:// URL", &AWSCluster.IMDS.http?/1},
              doc: "Task metadata v4 endpoint. Default: `$ECS_CONTAINER_METADATA_URI_V4`."
            ]
          ] ++
            Keyword.delete(AWSCluster.Strategy.Naming.schema(), :address) ++
            AWSCluster.Strategy.Client.schema() ++ AWSCluster.Poller.Coordination.schema(true)

  @moduledoc """
  Finds peers among the tasks of an ECS cluster: awsvpc tasks by their own ENI address
  (Fargate, or EC2 with `networkMode: awsvpc`), bridge and host-mode tasks by their
  instance's address (`address: :host`).

      config :libcluster,
        topologies: [
          app: [
            strategy: #{inspect(__MODULE__)},
            # cluster, family and region from task metadata v4
            config: [node_basename: "chat"]
          ]
        ]

  Each round reads every ListTasks page (`desiredStatus=RUNNING`) and describes the
  tasks 100 at a time with their tags. Only tasks whose `lastStatus` is `RUNNING` are
  peers. STOPPING, DEPROVISIONING and STOPPED tasks, which AWS keeps listing for a
  while, are reported gone and pruned at once; any other state (PROVISIONING, PENDING,
  ACTIVATING) is neither. An API error keeps the last good set, as in every strategy.

  A task is named `node_basename@address`; `node_basename: {:tag, key}` reads a task
  tag. `AWSCluster.node_info/1` carries the task's zone and tags, `instance_id` (the
  EC2 instance with `address: :host`, else `nil`) and `task` (`arn`, `family`, `group`,
  `cluster_arn`, `launch_type`). `group:` can split by `:availability_zone`,
  `{:tag, key}`, or a function such as `&(&1.instance.task.group)` (the service).

  Values this task does not configure (`:cluster`, `:region`, the default `:family`)
  are read once at start from task metadata v4 (`AWSCluster.ECSMetadata`). When that
  fails, the topology starts failing with an error naming those options, and retries.

  IAM: `ecs:ListTasks` and `ecs:DescribeTasks`, which can be scoped to one cluster
  (README); with `address: :host` also `ecs:DescribeContainerInstances` and
  `ec2:DescribeInstances`.

  ## Options

  #{AWSCluster.Config.docs(@schema)}

  and the poller's options (`AWSCluster.Poller`).
  """

  use AWSCluster.Strategy

  alias AWSCluster.{AWS, ECSMetadata, Error}
  alias AWSCluster.Strategy.{Client, Naming}

  @narrowing [:family, :service_name, :started_by]

  @impl true
  def schema, do: @schema

  @impl true
  def validate(config) do
    case Enum.filter(@narrowing, &config[&1]) do
      [_, second | _] = given ->
        {:error,
         AWSCluster.Config.error(
           second,
           "give only one of :family, :service_name and :started_by (ECS takes one), got " <>
             Enum.map_join(given, " and ", &inspect/1)
         )}

      _ when config.address == :host and config.launch_type == "FARGATE" ->
        {:error,
         AWSCluster.Config.error(
           :address,
           "address: :host needs tasks on EC2 container instances; launch_type: \"FARGATE\" " <>
             "has none (Fargate tasks are awsvpc: leave address: out)"
         )}

      _ ->
        with :ok <- AWSCluster.NIF.require_service(:ecs),
             do: AWSCluster.Groups.Options.for_source(config, :ecs)
    end
  end

  @impl true
  def init(config, _state) do
    with {:ok, config} <- identity(config),
         {:ok, client, config} <- Client.build(config) do
      {:ok, %{client: client, config: config}}
    end
  end

  @impl true
  def discover(%{client: client, config: config}) do
    narrowing = for key <- [:launch_type | @narrowing], config[key], do: {key, config[key]}

    with {:ok, tasks} <- AWS.ecs_tasks(client, config.cluster, narrowing),
         tasks = Enum.filter(tasks, &tagged?(&1, config.tags)),
         running = Enum.filter(tasks, &(&1.state == :running)),
         {:ok, hosts} <- hosts(client, config, running),
         {:ok, peers} <-
           Naming.peers(
             Enum.map(running, &instance(&1, config.address, hosts)),
             Map.put(config, :address, :private_ip)
           ) do
      {:ok, peers, for(t <- tasks, t.state == :gone, do: t.arn)}
    end
  end

  @impl true
  def question(%{config: config}) do
    {config.cluster, Map.take(config, [:launch_type, :tags, :address | @narrowing]),
     config.region, Naming.question(config)}
  end

  # What a task is as a peer: an instance map the naming, groups and node_info read.
  defp instance(task, mode, hosts) do
    host = Map.get(hosts, task.container_instance_arn, %{})

    %{
      id: task.arn,
      instance_id: host[:id],
      private_ip: if(mode == :awsvpc, do: task.address, else: host[:private_ip]),
      availability_zone: task.availability_zone || host[:availability_zone],
      tags: task.tags,
      # Only RUNNING tasks are peers; the word EC2 instances use, for the peers table.
      state: "running",
      task: Map.take(task, [:arn, :family, :group, :cluster_arn, :launch_type])
    }
  end

  defp tagged?(task, wanted) do
    Enum.all?(wanted, fn {key, values} -> Map.get(task.tags, key) in List.wrap(values) end)
  end

  # address: :host - container instance -> EC2 instance -> its private IP.
  defp hosts(_client, %{address: :awsvpc}, _tasks), do: {:ok, %{}}

  defp hosts(client, config, tasks) do
    arns = tasks |> Enum.map(& &1.container_instance_arn) |> Enum.reject(&is_nil/1) |> Enum.uniq()

    with {:ok, container_instances} <- AWS.container_instances(client, config.cluster, arns),
         ids = for(c <- container_instances, c.ec2_instance_id, do: c.ec2_instance_id),
         {:ok, instances} <- AWS.running_instances(client, ids) do
      by_id = Map.new(instances, &{&1.id, &1})

      {:ok, Map.new(container_instances, &{&1.arn, Map.get(by_id, &1.ec2_instance_id, %{})})}
    end
  end

  @doc """
  Fills what a validated `config` leaves out (`:cluster`, `:region`, the default
  `:family`) from task metadata v4, which is read only when something is missing.
  """
  @spec identity(map()) :: {:ok, map()} | {:error, Error.t()}
  def identity(config) do
    narrowed? = Enum.any?(@narrowing, &config[&1]) or config.tags != %{}

    if config.cluster && config.region && narrowed? do
      {:ok, config}
    else
      opts = if config.metadata_uri, do: [uri: config.metadata_uri], else: []

      with {:ok, meta} <- ECSMetadata.fetch(opts) do
        filled = %{
          config
          | cluster: config.cluster || meta.cluster,
            region: config.region || meta.region,
            family: if(narrowed?, do: config.family, else: meta.family)
        }

        missing = for key <- [:cluster, :region], filled[key] == nil, do: key
        missing = if narrowed? or filled.family, do: missing, else: missing ++ [:family]

        case missing do
          [] ->
            {:ok, filled}

          keys ->
            {:error,
             Error.new(
               :not_found,
               "task metadata v4 has no #{Enum.join(keys, ", ")}; set " <>
                 Enum.map_join(keys, ", ", &"#{&1}:") <> " in the topology config",
               %{config_keys: keys}
             )}
        end
      end
    end
  end
end
