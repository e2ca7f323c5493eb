defmodule AWSCluster.Strategy.EC2 do
  @schema [
            tags: [
              type: {:map, :non_empty_string, {:or, [:string, {:list, :string}]}},
              default: %{},
              doc:
                "Tag filters: `%{\"app\" => \"chat\"}`; a list value matches any of its values."
            ],
            filters: [
              type:
                {:or,
                 [
                   {:map, :non_empty_string, {:or, [:string, {:list, :string}]}},
                   {:list, {:tuple, [:non_empty_string, {:or, [:string, {:list, :string}]}]}}
                 ]},
              default: [],
              doc:
                "Any other DescribeInstances filters, e.g. `%{\"instance-type\" => \"m6i.large\"}`."
            ],
            vpc_id: [
              type: {:or, [:non_empty_string, {:list, :non_empty_string}]},
              doc: "Shortcut for the `vpc-id` filter."
            ],
            subnet_id: [
              type: {:or, [:non_empty_string, {:list, :non_empty_string}]},
              doc: "Shortcut for the `subnet-id` filter."
            ],
            availability_zone: [
              type: {:or, [:non_empty_string, {:list, :non_empty_string}]},
              doc: "Shortcut for the `availability-zone` filter."
            ],
            security_group: [
              type: {:or, [:non_empty_string, {:list, :non_empty_string}]},
              doc:
                "Security group ids (`sg-...`, filter `instance.group-id`) or names " <>
                  "(`instance.group-name`), not both."
            ],
            regions: [
              type: {:list, :non_empty_string},
              default: [],
              doc:
                "More regions to find peers in, besides `region:` (multi-site). Every region " <>
                  "must answer for a round to count. With `group: :region` each region is a " <>
                  "group, so only its gateways' hidden links cross regions " <>
                  "(`AWSCluster.Groups`). An `endpoint:` serves every region (moto, " <>
                  "LocalStack); a per-region VPC endpoint is not supported yet."
            ],
            page_size: [
              type: {:integer, 5..1000},
              doc:
                "DescribeInstances MaxResults per page; default AWS's own. Every page is " <>
                  "read before an answer counts."
            ]
          ] ++
            AWSCluster.Strategy.Naming.schema() ++
            AWSCluster.Strategy.Client.schema() ++ AWSCluster.Poller.Coordination.schema(true)

  @moduledoc """
  Finds peers with EC2 DescribeInstances: a tag map plus any filters. Only running
  instances are asked for (`instance-state-name=running` is always applied by AWS), and
  every page is read before an answer counts.

      config :libcluster,
        topologies: [
          app: [
            strategy: #{inspect(__MODULE__)},
            config: [tags: %{"app" => "chat"}, node_basename: "chat"]
          ]
        ]

  Each instance becomes `node_basename@address`. An instance without the chosen address,
  or whose name would be invalid, is skipped. Terminated instances simply stop being
  listed and are pruned after `:prune_after` polls (see `AWSCluster.Poller`).

  Each instance carries the region it was found in (`:region`), which `group: :region`
  reads.

  IAM: `ec2:DescribeInstances`, in every region asked.

  ## Options

  #{AWSCluster.Config.docs(@schema)}

  and the poller's options (`AWSCluster.Poller`).
  """

  use AWSCluster.Strategy

  alias AWSCluster.{AWS, Config, Error}
  alias AWSCluster.Strategy.{Client, Naming}

  @shortcuts [
    vpc_id: "vpc-id",
    subnet_id: "subnet-id",
    availability_zone: "availability-zone"
  ]

  @impl true
  def schema, do: @schema

  @impl true
  def validate(config) do
    with {:ok, _filters} <- filters(config),
         do: AWSCluster.Groups.Options.for_source(config, :ec2)
  end

  @impl true
  def init(config, _state) do
    with {:ok, filters} <- filters(config),
         {:ok, client, built} <- Client.build(config),
         {:ok, others} <- other_clients(config, built.region) do
      {:ok, %{clients: [{built.region, client} | others], filters: filters, config: built}}
    end
  end

  # The other regions' clients are built from the config that still holds the keys.
  defp other_clients(config, home) do
    Enum.reduce_while(Enum.uniq(config.regions) -- [home], {:ok, []}, fn region, {:ok, acc} ->
      case Client.build(%{config | region: region}) do
        {:ok, client, _} -> {:cont, {:ok, acc ++ [{region, client}]}}
        {:error, _} = error -> {:halt, error}
      end
    end)
  end

  @impl true
  def discover(%{clients: clients, filters: filters, config: config}) do
    opts =
      [states: ["running"]] ++ if(config[:page_size], do: [page_size: config.page_size], else: [])

    # Side by side, each call bounded by operation_timeout; every region must answer.
    clients
    |> Task.async_stream(
      fn {region, client} -> {region, AWS.describe_instances(client, filters, opts)} end,
      timeout: :infinity
    )
    |> Enum.reduce_while({:ok, []}, fn
      {:ok, {region, {:ok, instances}}}, {:ok, acc} ->
        {:cont, {:ok, acc ++ Enum.map(instances, &Map.put(&1, :region, region))}}

      {:ok, {region, {:error, %Error{} = e}}}, _acc ->
        {:halt, {:error, in_region(e, region, length(clients))}}
    end)
    |> case do
      {:ok, instances} -> Naming.peers(instances, config)
      error -> error
    end
  end

  defp in_region(e, _region, 1), do: e

  defp in_region(e, region, _),
    do: %{e | message: "#{region}: " <> e.message, details: Map.put(e.details, :region, region)}

  @impl true
  def question(%{clients: [_], filters: filters, config: config}),
    do: {filters, config.region, Naming.question(config)}

  def question(%{clients: clients, filters: filters, config: config}),
    do: {filters, clients |> Enum.map(&elem(&1, 0)) |> Enum.sort(), Naming.question(config)}

  @doc """
  The DescribeInstances filters a validated config stands for, without the state filter
  (which is always `running`).
  """
  @spec filters(map()) :: {:ok, [{String.t(), [String.t()]}]} | {:error, Error.t()}
  def filters(config) do
    tags = for {key, values} <- config.tags, do: {"tag:" <> key, List.wrap(values)}
    given = for {name, values} <- config.filters, do: {name, List.wrap(values)}
    shortcuts = for {key, name} <- @shortcuts, config[key], do: {name, List.wrap(config[key])}

    with {:ok, groups} <- security_groups(config.security_group) do
      all = tags ++ given ++ shortcuts ++ groups

      cond do
        Enum.any?(given, fn {name, _} -> name == "instance-state-name" end) ->
          {:error,
           Config.error(:filters, "instance-state-name cannot be set: it is always running")}

        Enum.any?(all, fn {_name, values} -> values == [] end) ->
          {:error, Config.error(:filters, "every filter needs at least one value")}

        all == [] ->
          {:error,
           Config.error(
             :tags,
             "give at least one of :tags, :filters, :vpc_id, :subnet_id, " <>
               ":availability_zone or :security_group, or every running instance would be a peer"
           )}

        true ->
          {:ok, all}
      end
    end
  end

  defp security_groups(nil), do: {:ok, []}

  defp security_groups(groups) do
    {ids, names} = groups |> List.wrap() |> Enum.split_with(&String.starts_with?(&1, "sg-"))

    case {ids, names} do
      {ids, []} ->
        {:ok, [{"instance.group-id", ids}]}

      {[], names} ->
        {:ok, [{"instance.group-name", names}]}

      _ ->
        {:error,
         Config.error(
           :security_group,
           "give either group ids (sg-...) or group names, not both (filters are ANDed)"
         )}
    end
  end
end
