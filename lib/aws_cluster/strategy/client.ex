defmodule AWSCluster.Strategy.Client do
  @moduledoc """
  The AWS client options the AWS strategies share, and building the client once at
  start. A missing `:region` is read from IMDS; the error then says to set `region:`.
  """

  alias AWSCluster.{AWS, Config, Error, IMDS}

  @schema [
    region: [
      type: :non_empty_string,
      doc: "AWS region; read from instance metadata (IMDS) when not given."
    ],
    endpoint: [
      type: {:custom, "an http:// or https:// URL", &__MODULE__.url?/1},
      doc: "AWS endpoint override (moto, LocalStack, VPC endpoints)."
    ],
    access_key_id: [
      type: :non_empty_string,
      doc: "Static credentials; default is aws-config's chain (env, profile, roles)."
    ],
    secret_access_key: [type: :non_empty_string, doc: "Static credentials."],
    session_token: [type: :non_empty_string, doc: "Static credentials."],
    max_attempts: [type: {:integer, 1..20}, default: 3, doc: "Attempts per AWS request."],
    operation_timeout: [
      type: {:integer, 1..3_600_000},
      default: 10_000,
      doc: "Milliseconds one AWS call may take, all pages and retries included."
    ],
    imds_endpoint: [
      type: {:custom, "an http:// URL", &__MODULE__.http_url?/1},
      doc: "Instance metadata endpoint override."
    ]
  ]

  # The options above that AWS.client/1 takes (it owns that list). Not every key of a
  # topology's config: the poller's `:connect_timeout` is for node connects, not AWS.
  @client_keys Enum.filter(AWS.client_keys(), &Keyword.has_key?(@schema, &1))

  @doc "The client options as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc false
  @spec url?(term()) :: boolean()
  def url?(v), do: is_binary(v) and v =~ ~r{\Ahttps?://[^/\s]+}

  @doc false
  @spec http_url?(term()) :: boolean()
  def http_url?(v), do: is_binary(v) and v =~ ~r{\Ahttp://[^/\s]+}

  @doc """
  Builds the client from a validated config, reading the region from IMDS when absent.
  Returns the client and the config with `:region` filled in and the static
  credentials left out: the client holds them, and the strategy state keeps none.
  """
  @spec build(map()) :: {:ok, AWS.t(), map()} | {:error, Error.t()}
  def build(config) do
    with {:ok, region} <- region(config),
         config = %{config | region: region},
         opts = for(key <- @client_keys, config[key] != nil, do: {key, config[key]}),
         {:ok, client} <- AWS.client(opts) do
      {:ok, client, Map.drop(config, [:access_key_id, :secret_access_key, :session_token])}
    end
  end

  @doc "IMDS options from the config (`:imds_endpoint`)."
  @spec imds_opts(map()) :: keyword()
  def imds_opts(config) do
    if config.imds_endpoint, do: [endpoint: config.imds_endpoint], else: []
  end

  defp region(%{region: region}) when is_binary(region), do: {:ok, region}

  defp region(config) do
    with {:ok, %{region: region}} <- IMDS.fetch([keys: [:region]] ++ imds_opts(config)),
         do: {:ok, region}
  end
end
