defmodule AWSCluster.Registry do
  @moduledoc """
  The membership table of `AWSCluster.Strategy.Registry`, on PostgreSQL (`new/1`) or
  DynamoDB (`new_dynamodb/2`): one row per node, written by that node and read by all.

  Each row carries an HMAC-SHA256 over its fields and `stamp_ms`, the time it was
  written, with a key derived from the topology's secret and cluster name. `read/3`
  returns only rows whose MAC verifies, whose signed time is within the `ttl` (so a
  copied old row cannot be kept alive by whoever can write the table) and whose node
  name is `basename@address` for the row's own IP address, all checked in the NIF before
  any of it reaches Elixir. On PostgreSQL `last_seen` is the server's `now()`, liveness
  is judged by the server, and a writer's `stamp_ms` is its estimate of the server's
  clock (measured on each connect and write), so the database's clock is the only one
  that matters.

  The PostgreSQL table (created when missing):

      CREATE TABLE aws_cluster_nodes (
        cluster text NOT NULL, node text NOT NULL, address text NOT NULL,
        availability_zone text, instance_id text, grp text, boot_id text NOT NULL,
        version text NOT NULL, stamp_ms bigint NOT NULL, mac text NOT NULL,
        beats bigint NOT NULL DEFAULT 1, first_seen timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (cluster, node))
  """

  alias AWSCluster.{Async, Config, Error, Native}

  defstruct [:resource, :cluster, :operation_timeout]

  @typedoc "One topology's registry connection."
  @type t :: %__MODULE__{
          resource: reference(),
          cluster: String.t(),
          operation_timeout: pos_integer()
        }

  @typedoc "A node's row."
  @type row :: %{
          cluster: String.t(),
          node: String.t(),
          address: String.t(),
          availability_zone: String.t() | nil,
          instance_id: String.t() | nil,
          group: String.t() | nil,
          boot_id: String.t(),
          version: String.t()
        }

  @typedoc "A row read but refused: its node name (cut to 64 bytes) and why."
  @type rejected :: %{node: String.t(), why: String.t()}

  @schema [
    url: [type: :non_empty_string, required: true, doc: "PostgreSQL URL or key=value string."],
    ssl: [
      type: {:in, [nil, :disable, :prefer, :require, :verify_full]},
      doc: "libpq's sslmode. Default: the URL's `sslmode`, else `:prefer`."
    ],
    ssl_ca_file: [
      type: :non_empty_string,
      doc:
        "CA bundle (PEM) for `:verify_full`. Default: the URL's `sslrootcert`, else the system's roots."
    ],
    table: [type: :non_empty_string, default: "aws_cluster_nodes", doc: "Table name."],
    cluster: [type: :non_empty_string, required: true, doc: "Which cluster's rows."],
    secret: [type: :non_empty_string, required: true, doc: "Row HMAC secret, 32+ bytes."],
    connect_timeout: [type: :pos_integer, default: 5_000, doc: "ms to connect."],
    operation_timeout: [type: :pos_integer, default: 5_000, doc: "ms per query."]
  ]

  @doc """
  Checks the options and makes the registry; nothing is connected until the first call.
  A bad option is `:invalid_argument` with the key in `details.key`; no error text
  holds the URL or the secret. Options:

  #{Config.docs(@schema)}
  """
  @spec new(keyword()) :: {:ok, t()} | {:error, Error.t()}
  def new(opts) do
    with {:ok, o} <- Config.arguments(opts, @schema),
         {:ok, resource} <-
           Error.wrap(
             Native.registry_new(%{
               url: o.url,
               ssl: o.ssl && o.ssl |> Atom.to_string() |> String.replace("_", "-"),
               ssl_ca_file: o.ssl_ca_file,
               table: o.table,
               cluster: o.cluster,
               secret: o.secret,
               connect_timeout_ms: o.connect_timeout,
               operation_timeout_ms: o.operation_timeout
             })
           ) do
      {:ok,
       %__MODULE__{resource: resource, cluster: o.cluster, operation_timeout: o.operation_timeout}}
    end
  end

  @dynamodb_schema [
    table: [type: :non_empty_string, default: "aws_cluster_nodes", doc: "Table name."],
    cluster: [type: :non_empty_string, required: true, doc: "Which cluster's rows."],
    secret: [type: :non_empty_string, required: true, doc: "Row HMAC secret, 32+ bytes."],
    ttl: [type: :pos_integer, required: true, doc: "ms a written row stays live."]
  ]

  @doc """
  The registry in a DynamoDB table keyed by `cluster` (partition) and `node` (sort),
  both strings, called with `client` (`AWSCluster.AWS.client/1`). The table is not
  created here (README). Each write sets `expires_at` (epoch seconds) for the table's
  TTL and the signed `stamp_ms`, which readers check against `ttl` on their own clock:
  DynamoDB returns expired items until its TTL sweep deletes them, which can take days.
  Options:

  #{Config.docs(@dynamodb_schema)}
  """
  @spec new_dynamodb(AWSCluster.AWS.t(), keyword()) :: {:ok, t()} | {:error, Error.t()}
  def new_dynamodb(%AWSCluster.AWS{} = client, opts) do
    with {:ok, o} <- Config.arguments(opts, @dynamodb_schema),
         {:ok, resource} <-
           Error.wrap(
             Native.registry_new_dynamodb(client.resource, %{
               table: o.table,
               cluster: o.cluster,
               secret: o.secret,
               ttl_ms: o.ttl
             })
           ) do
      {:ok,
       %__MODULE__{
         resource: resource,
         cluster: o.cluster,
         operation_timeout: client.operation_timeout
       }}
    end
  end

  @doc """
  Connects and checks the table exists (PostgreSQL; with `create: true`, the default,
  creates it if missing, else a missing table is `:not_found`); reads once (DynamoDB).
  """
  @spec open(t(), keyword()) :: :ok | {:error, Error.t()}
  def open(%__MODULE__{} = r, opts \\ []) do
    create = Keyword.get(opts, :create, true)

    with {:ok, true} <- Async.call(&Native.registry_open(r.resource, &1, create), wait(r)),
         do: :ok
  end

  @doc """
  Writes this node's row (`cluster` is the registry's), stamped and signed with the
  time (PostgreSQL: the server's `last_seen` too); with
  `announce: true` also NOTIFYs the listeners (`listen/2`), so a join is seen at once.
  """
  @spec heartbeat(t(), map(), keyword()) :: :ok | {:error, Error.t()}
  def heartbeat(%__MODULE__{} = r, row, opts \\ []) do
    row = Map.put(row, :cluster, r.cluster)
    announce = Keyword.get(opts, :announce, false)

    with {:ok, true} <-
           Async.call(&Native.registry_heartbeat(r.resource, &1, row, announce), wait(r)),
         do: :ok
  end

  @doc """
  Sends `pid` `{:aws_cluster_registry, :changed}` whenever a node announces a join to
  this cluster (LISTEN/NOTIFY on a connection of its own, made again when it drops),
  until the registry is garbage-collected. A hint only: the table stays the truth.
  """
  @spec listen(t(), pid()) :: :ok | {:error, Error.t()}
  def listen(%__MODULE__{} = r, pid), do: Error.wrap(Native.registry_listen(r.resource, pid))

  @doc """
  The live rows (within `ttl` ms) that verified, at most `limit`; the first 16 refused
  (`rejected`) and how many were (`refused`). Refused rows do not count towards `limit`;
  over 10,000 of them fail the read (`:bad_response`), as its answer would be incomplete.
  """
  @spec read(t(), pos_integer(), pos_integer()) ::
          {:ok, %{rows: [row()], rejected: [rejected()], refused: non_neg_integer()}}
          | {:error, Error.t()}
  def read(%__MODULE__{} = r, ttl, limit) do
    Async.call(&Native.registry_read(r.resource, &1, r.cluster, ttl, limit), wait(r))
  end

  @typedoc "What `check/2` reports."
  @type check :: %{
          server_version: String.t(),
          ssl_in_use: boolean(),
          privileges: %{
            select: boolean(),
            insert: boolean(),
            update: boolean(),
            delete: boolean()
          },
          live_rows: non_neg_integer(),
          host: String.t()
        }

  @doc """
  Reports, for `mix aws_cluster.doctor`, the server version, whether the connection is
  encrypted, the privileges on the table and the live rows (within `ttl` ms). It writes
  nothing. PostgreSQL: the user's table privileges; a missing table is `:not_found`.
  DynamoDB: `select` is `Query` (one read of the live rows), `insert` and `update` are
  `UpdateItem` and `delete` is `DeleteItem`, each asked under a condition that never
  holds, which DynamoDB checks only after the permission.
  """
  @spec check(t(), pos_integer()) :: {:ok, check()} | {:error, Error.t()}
  def check(%__MODULE__{} = r, ttl),
    do: Async.call(&Native.registry_check(r.resource, &1, ttl), wait(r))

  @doc """
  Deletes `node`'s row of boot `boot_id` (none there is fine): `{:ok, true}`. Waits at
  most `timeout` ms (default: as long as a first call may take); past that it is a
  `:timeout` error, and the delete may still land.
  """
  @spec delete(t(), String.t(), String.t(), pos_integer() | nil) ::
          {:ok, true} | {:error, Error.t()}
  def delete(%__MODULE__{} = r, node, boot_id, timeout \\ nil) do
    Async.call(
      &Native.registry_delete(r.resource, &1, r.cluster, node, boot_id),
      timeout || wait(r)
    )
  end

  # A first call may connect first (connect timeout) and then query.
  defp wait(r), do: 2 * r.operation_timeout + 1_000
end
