defmodule AWSCluster.Doctor.Topology do
  @moduledoc false
  # The doctor's per-topology checks, through the strategies' own code (AWSCluster.Probe).

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{Doctor, Error, Probe}
  alias AWSCluster.Doctor.IAM
  alias AWSCluster.Strategy.{AutoScaling, Client, EC2, ECS, State}

  @doc """
  Per topology: its config, region, credentials, IAM actions and one discovery round
  (AWS strategies) or its secret and port (gossip). Returns the checks and the
  discovery results.
  """
  @spec checks(keyword(), map() | nil) :: {[Doctor.check()], [AWSCluster.Probe.result()]}
  def checks(topologies, imds) do
    {checks, results} =
      topologies
      |> Enum.map(fn {name, spec} -> topology(name, spec, imds) end)
      |> Enum.unzip()

    {List.flatten(checks), Enum.reject(results, &is_nil/1)}
  end

  defp topology(name, spec, imds) do
    strategy = Doctor.spec_strategy(spec)

    cond do
      strategy in [EC2, AutoScaling, ECS] ->
        {spec, firewall} = Doctor.Firewall.split(spec)
        {checks, result} = aws_topology(name, spec, imds)
        {checks ++ Doctor.Firewall.checks(name, firewall, result), result}

      strategy == AWSCluster.Strategy.Gossip ->
        {gossip_topology(name, spec), nil}

      strategy == AWSCluster.Strategy.Registry ->
        registry_topology(name, spec)

      true ->
        {[
           check(
             "topology #{name}",
             :warn,
             "#{inspect(strategy)} is not an aws_cluster strategy; not checked"
           )
         ], nil}
    end
  end

  defp aws_topology(name, spec, imds) do
    case Probe.validate(name, spec) do
      {:error, e} ->
        {[check("config [#{name}]", :fail, e.message, "fix the topology's options")], nil}

      {:ok, strategy, _state, config} ->
        {region_check, config} =
          if strategy == ECS, do: ecs_identity(name, config), else: region(name, config, imds)

        if config.region do
          case Client.build(config) do
            {:ok, client, _config} ->
              iam = IAM.checks(name, strategy, client, config)
              {discovery_check, result} = discovery(name, spec, config)
              groups = Doctor.Groups.checks(name, config, result)
              {[region_check | iam] ++ [discovery_check | groups], result}

            {:error, e} ->
              {[region_check, check("aws client [#{name}]", :fail, e.message)], nil}
          end
        else
          {[region_check], nil}
        end
    end
  end

  defp region(name, config, imds) do
    cond do
      config.region ->
        {check("region [#{name}]", :pass, "#{config.region} (from the topology config)"), config}

      imds ->
        {check("region [#{name}]", :pass, "#{imds.region} (from IMDS)"),
         %{config | region: imds.region}}

      true ->
        {check(
           "region [#{name}]",
           :fail,
           "no region: none in the config and IMDS did not answer",
           "set region: in the topology config"
         ), config}
    end
  end

  # ECS reads its cluster, region and family from task metadata v4 (not IMDS) unless the
  # config gives them.
  defp ecs_identity(name, config) do
    case ECS.identity(config) do
      {:ok, filled} ->
        source =
          if filled == config,
            do: "from the topology config",
            else: "from task metadata v4 at #{metadata_uri(config)}"

        family = if filled.family, do: ", family #{filled.family}", else: ""

        {check(
           "ecs task [#{name}]",
           :pass,
           "cluster #{filled.cluster}#{family}, region #{filled.region} (#{source})"
         ), filled}

      {:error, e} ->
        {check(
           "ecs task [#{name}]",
           :fail,
           "#{e.reason}: #{e.message}",
           "run inside an ECS task (ECS_CONTAINER_METADATA_URI_V4 is set there), or set " <>
             "cluster:, region: and family: in the topology config"
         ), %{config | region: nil}}
    end
  end

  defp metadata_uri(config),
    do: config.metadata_uri || System.get_env("ECS_CONTAINER_METADATA_URI_V4")

  defp discovery(name, spec, config) do
    filled = Map.take(config, [:region, :cluster, :family])
    known = for {key, value} <- filled, value != nil, do: {key, value}
    spec = Keyword.update(spec, :config, [], &Keyword.merge(&1, known))

    discovery_check(name, Probe.discover(name, spec))
  end

  defp discovery_check(name, probed) do
    case probed do
      {:ok, result} ->
        azs = result.peers |> Enum.map(&az/1) |> Enum.uniq() |> length()
        status = if result.peers == [], do: :warn, else: :pass

        fix =
          if result.peers == [],
            do:
              "no instance matched: check the tags/filters or groups, and that instances are running"

        {check(
           "discovery [#{name}]",
           status,
           "#{length(result.peers)} peers in #{azs} AZs (#{inspect(result.strategy)})",
           fix
         ), result}

      {:error, e} ->
        {check("discovery [#{name}]", :fail, "#{e.reason}: #{e.message}", discovery_fix(e)), nil}
    end
  end

  defp discovery_fix(%Error{details: %{action: action}} = e) do
    if IAM.denied?(e), do: "allow #{action} (see #{Doctor.iam_policy()})", else: nil
  end

  defp discovery_fix(_), do: nil

  defp az(peer), do: Map.get(peer.instance, :availability_zone)

  # The table: reachable, TLS, privileges, live rows; then one read as discovery.
  defp registry_topology(name, spec) do
    label = "registry [#{name}]"

    case registry_round(name, spec, label) do
      {:ok, checks, probed} ->
        {discovery_check, result} = discovery_check(name, probed)
        {checks ++ [discovery_check], result}

      {:error, %Error{reason: :invalid_config} = e} ->
        {[check("config [#{name}]", :fail, e.message, "fix the topology's options")], nil}

      {:error, %Error{} = e} ->
        {[check(label, :fail, "#{e.reason}: #{e.message}", registry_fix(e, spec))], nil}
    end
  end

  # One connection for the checks and the discovery round.
  defp registry_round(name, spec, label) do
    with {:ok, strategy, state, config} <- Probe.validate(name, spec),
         {:ok, s} <- strategy.init(config, %{state | probe: true}) do
      outcome =
        with {:ok, checks} <- backend_checks(label, config, s),
             do: {:ok, checks, Probe.round(name, strategy, config, s)}

      strategy.stop(s)
      outcome
    end
  end

  # The write probes run under a condition that never holds: nothing is written.
  defp backend_checks(label, %{backend: :dynamodb} = config, s) do
    with {:ok, c} <- AWSCluster.Registry.check(s.registry, s.ttl) do
      denied =
        for {action, false} <- [
              {"dynamodb:UpdateItem", c.privileges.update},
              {"dynamodb:DeleteItem", c.privileges.delete}
            ],
            do: action

      {:ok,
       [
         check(
           label,
           :pass,
           "DynamoDB table #{config.table} in #{config.region}: #{c.live_rows} live rows; " <>
             "dynamodb:Query allowed"
         ),
         if(denied == [],
           do:
             check(
               "#{label} writes",
               :pass,
               "dynamodb:UpdateItem and dynamodb:DeleteItem allowed (asked under a " <>
                 "condition that never holds: nothing was written)"
             ),
           else:
             check(
               "#{label} writes",
               :fail,
               "denied: #{Enum.join(denied, ", ")}; this node could not keep its row",
               "allow #{Enum.join(denied, " and ")} on the table (README's DynamoDB policy)"
             )
         )
       ]}
    end
  end

  defp backend_checks(label, config, s) do
    with {:ok, c} <- AWSCluster.Registry.check(s.registry, s.ttl),
         do: {:ok, registry_checks(label, config, c)}
  end

  defp registry_checks(label, config, c) do
    missing =
      for {p, false} <- Enum.sort(c.privileges), do: p |> Atom.to_string() |> String.upcase()

    table =
      "table #{config.table}: #{c.live_rows} live rows of cluster #{config.cluster || "(topology name)"}"

    [
      check(label, :pass, "PostgreSQL #{c.server_version} at #{c.host}; #{table}"),
      if(c.ssl_in_use,
        do:
          check(
            "#{label} tls",
            :pass,
            "encrypted (ssl: #{config.ssl || "from the url, or prefer"})"
          ),
        else:
          check(
            "#{label} tls",
            :warn,
            "the connection is not encrypted",
            "set ssl: :verify_full and ssl_ca_file: (RDS: its CA bundle)"
          )
      ),
      if(missing == [],
        do:
          check("#{label} privileges", :pass, "SELECT, INSERT, UPDATE, DELETE on #{config.table}"),
        else:
          check(
            "#{label} privileges",
            :fail,
            "the user lacks #{Enum.join(missing, ", ")} on #{config.table}",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON #{config.table} TO <the url's user>"
          )
      )
    ]
  end

  defp registry_fix(%Error{reason: :unauthorized} = e, spec) do
    if Doctor.spec_config(spec)[:backend] == :dynamodb,
      do:
        "allow #{e.details[:action] || "dynamodb:Query"} on the table (README's DynamoDB policy)",
      else: "check the user and password in url: (and the user's grants, README)"
  end

  defp registry_fix(%Error{reason: reason}, _spec) when reason in [:unreachable, :timeout],
    do:
      "make the database reachable from this host (its security group must allow this " <>
        "host on the port), or fix the url's host and port"

  defp registry_fix(%Error{reason: :not_found}, _spec),
    do:
      "start one node (it creates the table; its user needs CREATE once), or run the " <>
        "README's CREATE TABLE"

  defp registry_fix(_error, _spec), do: nil

  defp gossip_topology(name, spec) do
    gossip = AWSCluster.Strategy.Gossip

    with {:ok, state} <- State.new(topology: name, config: Doctor.spec_config(spec)),
         {:ok, config} <- gossip.validate(state) do
      secret =
        if config[:insecure] do
          check(
            "gossip secret [#{name}]",
            :warn,
            "insecure: true: anyone who reaches UDP #{config.port} can forge announces",
            "set secret: (32+ random bytes, the same on every node) and drop insecure: true"
          )
        else
          n = length(config.secrets)

          check(
            "gossip secret [#{name}]",
            :pass,
            "set (#{n} #{if n == 1, do: "key", else: "keys"}; never shown)"
          )
        end

      [
        secret,
        check(
          "gossip port [#{name}]",
          :pass,
          "UDP #{config.port}: must be open between the nodes' security groups; no IAM action needed"
        )
      ]
    else
      {:error, e} -> [check("config [#{name}]", :fail, e.message, "fix the topology's options")]
    end
  end
end
