defmodule AWSCluster.Strategy.Client do
  @moduledoc """
  The AWS client options the AWS strategies share, and building the client once at
  start. A missing `:region` is read from IMDS; the error then says to set `region:`.
  """

  alias AWSCluster.{AWS, Config, Error, IMDS}

  # AWS.client/1's own options (one schema, one set of checks), minus the timeouts that
  # a topology does not tune; region is not required here: it may come from IMDS.
  @schema (AWS.client_schema()
           |> Keyword.drop([:attempt_timeout, :connect_timeout])
           |> Keyword.update!(:region, fn spec ->
             spec
             |> Keyword.delete(:required)
             |> Keyword.put(
               :doc,
               "AWS region; read from instance metadata (IMDS) when not given."
             )
           end)) ++
            [
              imds_endpoint: [
                type: {:custom, "an http:// URL", &AWSCluster.IMDS.http?/1},
                doc: "Instance metadata endpoint override."
              ]
            ]

  @client_keys Enum.filter(Keyword.keys(AWS.client_schema()), &Keyword.has_key?(@schema, &1))

  @doc "The client options as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

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
