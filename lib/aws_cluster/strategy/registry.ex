defmodule AWSCluster.Strategy.Registry do
  @schema [
            backend: [
              type: {:in, [:postgres, :dynamodb]},
              default: :postgres,
              doc:
                "Where the table lives: `:postgres` (`url:`) or `:dynamodb` (the AWS " <>
                  "options below; the table must exist, README)."
            ],
            url: [
              type: :non_empty_string,
              doc:
                "PostgreSQL URL (`postgres://user:password@host:5432/db`) or key=value " <>
                  "string. A secret: never logged. `:postgres` needs this or `hostname:`."
            ],
            hostname: [
              type: :non_empty_string,
              doc:
                "Instead of `url:`, the connection as an Ecto repo's config names it: " <>
                  "`hostname:`, `port:`, `username:`, `password:`, `database:`."
            ],
            port: [type: {:integer, 1..65_535}, default: 5_432, doc: "With `hostname:`."],
            username: [type: :non_empty_string, doc: "With `hostname:`."],
            password: [type: :non_empty_string, doc: "With `hostname:`. A secret: never logged."],
            database: [type: :non_empty_string, doc: "With `hostname:`."],
            ssl: [
              type: {:in, [:disable, :prefer, :require, :verify_full]},
              doc:
                "TLS, in libpq's terms: `:require` encrypts, `:verify_full` also checks the " <>
                  "certificate against `ssl_ca_file` and the host name (RDS: use this). " <>
                  "Default: the URL's `sslmode`, else `:prefer`."
            ],
            ssl_ca_file: [
              type: :non_empty_string,
              doc:
                "The CA bundle (PEM) `:verify_full` trusts, e.g. RDS's global bundle. " <>
                  "Default: the URL's `sslrootcert`, else the system's roots."
            ],
            table: [
              type: :non_empty_string,
              default: "aws_cluster_nodes",
              doc:
                "The table. PostgreSQL: 1-63 of `a-z 0-9 _`, created if missing. DynamoDB: " <>
                  "3-255 of `A-Z a-z 0-9 _ . -`, keyed by `cluster` and `node` (strings)."
            ],
            cluster: [
              type: :non_empty_string,
              doc:
                "Which cluster's rows this topology writes and reads. Default: the topology name."
            ],
            secret: [
              type: :non_empty_string,
              required: true,
              doc:
                "Shared secret (32+ bytes) keying each row's HMAC: a row that does not verify " <>
                  "is never dialled."
            ],
            heartbeat_interval: [
              type: :pos_integer,
              default: 5_000,
              doc: "ms between writes of this node's row."
            ],
            ttl: [
              type: :pos_integer,
              doc:
                "A row written longer ago than this is not live (PostgreSQL: by the " <>
                  "database's clock; DynamoDB: by the reader's). Default: 3 heartbeat intervals."
            ],
            availability_zone: [type: :non_empty_string, doc: "This node's AZ, for its row."],
            instance_id: [type: :non_empty_string, doc: "This node's instance, for its row."],
            group: [type: :non_empty_string, doc: "This node's group, for its row."],
            query_timeout: [
              type: :pos_integer,
              default: 5_000,
              doc: "ms per PostgreSQL call (DynamoDB calls use `operation_timeout`)."
            ]
          ] ++
            AWSCluster.Strategy.Client.schema() ++ AWSCluster.Poller.Coordination.schema(true)

  @moduledoc """
  Cluster membership kept in a database table, on PostgreSQL or DynamoDB (`backend:`):
  every node writes its own row every `heartbeat_interval` and reads the live rows as
  its discovery answer. On PostgreSQL the table is plain SQL, so dashboards, deploy
  scripts and people can see the cluster (`SELECT node, availability_zone, last_seen
  FROM aws_cluster_nodes`), and no AWS API or IAM permission is involved. On DynamoDB
  it takes the AWS options of the other strategies and `dynamodb:UpdateItem`, `Query`
  and `DeleteItem` on the table (README).

      config :libcluster,
        topologies: [
          chat: [
            strategy: #{inspect(__MODULE__)},
            config: [
              url: System.fetch_env!("DATABASE_URL"),
              secret: System.fetch_env!("CLUSTER_SECRET")
            ]
          ]
        ]

  Each row carries an HMAC over its fields and the time it was written, keyed by
  `secret`; a row that does not verify, was signed longer than `ttl` ago, or whose node
  name is not `basename@<its address>`, is never dialled and makes no atom
  (`AWSCluster.Registry`). On PostgreSQL `last_seen` is the server's `now()`
  and a row is live while `last_seen > now() - ttl` on the server; on DynamoDB readers
  judge each row's signed time on their own clock. A graceful stop deletes the row; a
  killed node's row ages out after `ttl` and is then pruned by the poller's rules
  (`prune_after` complete answers without it). A stale row or a database outage never
  disconnects a peer whose link is up: an error keeps the last good set.

  This node's name must be `name@<IP address>` (`AWSCluster.Distribution`). Reads are
  coordinated like AWS polls (`coordinate: true`): one node reads for the connected
  ones; every node still writes its own row.

  ## Options

  #{AWSCluster.Config.docs(@schema)}

  and the poller's options (`AWSCluster.Poller`).
  """

  use AWSCluster.Strategy

  require Logger

  alias AWSCluster.{Error, Registry}
  alias AWSCluster.Registry.Heartbeat

  @version Mix.Project.config()[:version]

  @impl true
  def schema, do: @schema

  @impl true
  def validate(config) do
    ttl = ttl(config)

    cond do
      ttl <= config.heartbeat_interval ->
        {:error,
         AWSCluster.Config.error(
           :ttl,
           "ttl (#{ttl} ms) must be longer than heartbeat_interval " <>
             "(#{config.heartbeat_interval} ms), or every row ages out between writes"
         )}

      config.backend == :postgres and config.url == nil and config.hostname == nil ->
        {:error, AWSCluster.Config.error(:url, "backend: :postgres needs url: or hostname:")}

      config.backend == :postgres and config.url != nil and config.hostname != nil ->
        {:error,
         AWSCluster.Config.error(:url, "give url: or hostname: (and its options), not both")}

      byte_size(config.secret) < 32 ->
        {:error,
         AWSCluster.Config.error(
           :secret,
           "the secret is #{byte_size(config.secret)} bytes; at least 32 are required " <>
             "(generate one with `:crypto.strong_rand_bytes(32) |> Base.encode64()`)"
         )}

      # init/2 checks the name too (the NIF), but only after the poller has started:
      # here a bad one fails start_link itself, as every other bad option does.
      config.backend == :dynamodb and not (config.table =~ ~r/\A[A-Za-z0-9_.-]{3,255}\z/) ->
        {:error,
         AWSCluster.Config.error(:table, "a DynamoDB table name is 3-255 of A-Z a-z 0-9 _ . -")}

      config.backend == :dynamodb ->
        AWSCluster.NIF.require_service(:dynamodb)

      # Parsing the url and reading the CA file connect nothing, so they run here too,
      # for the same reason; init/2 parses again, which costs microseconds.
      true ->
        with :ok <- AWSCluster.NIF.require_service(:postgres),
             {:ok, _registry} <- config |> registry("options check") |> invalid_config(),
             do: :ok
    end
  end

  @impl true
  def init(config, state) do
    cluster = config.cluster || Atom.to_string(state.topology)

    # A diagnostic round (AWSCluster.Probe) writes nothing, not even the table.
    with {:ok, registry} <- config |> registry(cluster) |> invalid_config(),
         :ok <- Registry.open(registry, create: not state.probe),
         {:ok, heartbeat} <- heartbeat(registry, config, cluster, state) do
      {:ok,
       %{
         registry: registry,
         heartbeat: heartbeat,
         ttl: ttl(config),
         limit: config.max_peers + 1,
         topology: state.topology,
         question: {config.backend, config.table, cluster}
       }}
    end
  end

  @impl true
  def discover(s) do
    with {:ok, %{rows: rows} = reading} <- Registry.read(s.registry, s.ttl, s.limit) do
      log_rejected(s.topology, reading)
      {:ok, Enum.map(rows, &peer/1)}
    end
  end

  @impl true
  def question(s), do: s.question

  # A graceful stop deletes this node's row before the VM goes on shutting down.
  @impl true
  def stop(%{heartbeat: nil}), do: :ok
  def stop(%{heartbeat: {pid, row}} = s), do: Heartbeat.stop(pid, s.registry, row)

  # A diagnostic round (AWSCluster.Probe) only reads: it is not a member.
  defp heartbeat(_registry, _config, _cluster, %{probe: true}), do: {:ok, nil}

  defp heartbeat(registry, config, cluster, state) do
    with {:ok, row} <- own_row(config, cluster),
         {:ok, pid} <-
           Heartbeat.start_link(registry, row, config.heartbeat_interval, state.topology),
         do: {:ok, {pid, row}}
  end

  defp peer(row) do
    %{
      node: row.node,
      address: row.address,
      instance: %{
        id: row.node,
        instance_id: row.instance_id,
        availability_zone: row.availability_zone,
        group: row.group,
        boot_id: row.boot_id,
        version: row.version,
        tags: %{}
      }
    }
  end

  # Refused rows are someone writing to the table without the secret, or a node with
  # another secret: worth a warning each round they are there.
  defp log_rejected(_topology, %{rejected: []}), do: :ok

  defp log_rejected(topology, %{rejected: [first | _], refused: refused}) do
    Logger.warning(
      "[aws_cluster:#{topology}] registry: #{refused} row(s) refused and not dialled " <>
        "(first: #{inspect(first.node)}: #{first.why}); a writer without the secret, or " <>
        "a node with another secret"
    )
  end

  defp own_row(config, cluster) do
    name = Atom.to_string(node())

    with [_base, host] <- String.split(name, "@", parts: 2),
         {:ok, _ip} <- :inet.parse_strict_address(String.to_charlist(host)) do
      {:ok,
       %{
         cluster: cluster,
         node: name,
         address: host,
         availability_zone: config.availability_zone,
         instance_id: config.instance_id,
         group: config.group,
         boot_id: boot_id(),
         version: @version
       }}
    else
      _ ->
        {:error,
         Error.new(
           :no_address,
           "registry: this node is #{name}; it must be distributed as name@<IP address> " <>
             "to write a row the others can dial (start it with --name, or use " <>
             "AWSCluster.Distribution)",
           %{node: node()}
         )}
    end
  end

  # One per VM start: a row left by an earlier life of this node is told apart.
  defp boot_id do
    case :persistent_term.get({__MODULE__, :boot_id}, nil) do
      nil ->
        id = Base.encode16(:crypto.strong_rand_bytes(8), case: :lower)
        :persistent_term.put({__MODULE__, :boot_id}, id)
        id

      id ->
        id
    end
  end

  defp ttl(config), do: config.ttl || 3 * config.heartbeat_interval

  # Checks the options and parses the url, connecting nothing: what the NIF refuses
  # fails the start (invalid_config/1).
  defp registry(%{backend: :dynamodb} = config, cluster) do
    with {:ok, client, _config} <- AWSCluster.Strategy.Client.build(config) do
      Registry.new_dynamodb(client,
        table: config.table,
        cluster: cluster,
        secret: config.secret,
        ttl: ttl(config)
      )
    end
  end

  defp registry(config, cluster) do
    [
      url: config.url || conninfo(config),
      ssl: config.ssl,
      ssl_ca_file: config.ssl_ca_file,
      table: config.table,
      cluster: cluster,
      secret: config.secret,
      connect_timeout: config.query_timeout,
      operation_timeout: config.query_timeout
    ]
    |> Enum.reject(fn {_key, value} -> value == nil end)
    |> Registry.new()
  end

  # libpq's key=value form, every value quoted, so any password goes through as it is.
  defp conninfo(config) do
    [
      host: config.hostname,
      port: config.port,
      user: config.username,
      password: config.password,
      dbname: config.database
    ]
    |> Enum.reject(fn {_key, value} -> value == nil end)
    |> Enum.map_join(" ", fn {key, value} -> "#{key}='#{quote_value(value)}'" end)
  end

  defp quote_value(value),
    do: value |> to_string() |> String.replace("\\", "\\\\") |> String.replace("'", "\\'")

  @option_keys %{
    "url" => :url,
    "table" => :table,
    "secret" => :secret,
    "cluster" => :cluster,
    "ssl" => :ssl,
    "ssl_ca_file" => :ssl_ca_file
  }

  # What the NIF refuses in the options is bad config: it fails the start, naming the key.
  defp invalid_config({:error, %Error{reason: :invalid_argument, details: %{key: key}} = e})
       when is_map_key(@option_keys, key),
       do: {:error, AWSCluster.Config.error(@option_keys[key], e.message)}

  defp invalid_config(other), do: other
end
