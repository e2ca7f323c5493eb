defmodule AWSCluster.IMDS do
  @moduledoc """
  Reads this instance's id, region, availability zone and AutoScaling group from the
  EC2 instance metadata service, once, when a topology starts.

  IMDSv2 (session token) is tried first, then IMDSv1; each request has a connect and
  a read timeout and is retried a bounded number of times. A failure is an
  `%AWSCluster.Error{}` whose message names the topology config keys that replace the
  missing values (`region:`, `instance_id:`, `availability_zone:`, `groups:`) and whose
  `details.config_keys` lists them; it never raises.

  Any value given in the options is used as is and not asked from IMDS, so outside
  EC2 (or with IMDS off) a fully configured topology never touches it.

  ## The node's own AutoScaling group

  IMDS exposes the instance's `aws:autoscaling:groupName` tag only when "instance tags
  in metadata" is enabled. When it is not, and an `:aws_client` is given, the group is
  read from the same tag with DescribeInstances (`AWSCluster.AWS.auto_scaling_group_of/3`).
  Since that client needs the region, a caller without config does two steps:

      {:ok, %{region: region} = md} = AWSCluster.IMDS.fetch(keys: [:instance_id, :region])
      {:ok, client} = AWSCluster.AWS.client(region: region)
      {:ok, %{auto_scaling_group: group}} =
        AWSCluster.IMDS.fetch(keys: [:auto_scaling_group], instance_id: md.instance_id, aws_client: client)
  """

  alias AWSCluster.{AWS, Async, Config, Error, Native}

  @keys [:instance_id, :region, :availability_zone, :auto_scaling_group]
  @config_keys %{
    instance_id: "instance_id:",
    region: "region:",
    availability_zone: "availability_zone:",
    auto_scaling_group: "groups:"
  }

  @schema [
            keys: [
              type: {:custom, "a non-empty list of #{inspect(@keys)}", &__MODULE__.keys?/1},
              default: @keys,
              doc: "The values needed."
            ]
          ] ++
            for(
              key <- @keys,
              do:
                {key,
                 [
                   type: :non_empty_string,
                   doc: "A known value (what `#{@config_keys[key]}` configures); not asked."
                 ]}
            ) ++
            [
              endpoint: [
                type: {:custom, "an http://host[:port] string", &__MODULE__.http?/1},
                doc: "Default `\"http://169.254.169.254\"`."
              ],
              connect_timeout: [
                type: {:integer, 1..60_000},
                default: 1_000,
                doc: "ms per connect."
              ],
              timeout: [type: {:integer, 1..60_000}, default: 2_000, doc: "ms per request."],
              attempts: [type: {:integer, 1..10}, default: 3, doc: "Tries per request."],
              aws_client: [
                type: {:custom, "an AWSCluster.AWS client", &__MODULE__.client?/1},
                doc: "Finds the AutoScaling group when IMDS does not expose instance tags."
              ]
            ]

  @type key :: :instance_id | :region | :availability_zone | :auto_scaling_group
  @type metadata :: %{
          instance_id: String.t() | nil,
          region: String.t() | nil,
          availability_zone: String.t() | nil,
          auto_scaling_group: String.t() | nil
        }

  @doc """
  Returns the requested values; those not requested are `nil`.

  Options:

  #{AWSCluster.Config.docs(@schema)}
  """
  @spec fetch(keyword()) :: {:ok, metadata()} | {:error, Error.t()}
  def fetch(opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @schema),
         wanted = o.keys,
         given = Map.take(o, @keys),
         {:ok, found} <- read(ask(wanted, given), o) do
      merged = Map.merge(given, found, fn _k, given, found -> given || found end)
      result = Map.new(@keys, &{&1, if(&1 in wanted, do: merged[&1])})
      own_group(result, wanted, merged, o)
    end
  end

  @doc """
  Asks IMDS for the instance id, region and availability zone and says which protocol
  answered: `version: 2` when a session token was obtained, `1` when IMDS only answered
  without one (the token call was refused or timed out, as behind a container's hop
  limit of 1). For diagnostics (`mix aws_cluster.doctor`). Options as for `fetch/1`,
  except the known values.
  """
  @spec probe(keyword()) ::
          {:ok,
           %{
             version: 1 | 2,
             instance_id: String.t(),
             region: String.t(),
             availability_zone: String.t()
           }}
          | {:error, Error.t()}
  def probe(opts \\ []) do
    with {:ok, o} <- Config.arguments(opts, @schema),
         do: read([:instance_id, :region, :availability_zone], o)
  end

  # The group needs the instance id when IMDS has no tags, so it is read alongside.
  defp ask(wanted, given) do
    missing = Enum.filter(wanted, &is_nil(given[&1]))

    if :auto_scaling_group in missing and is_nil(given.instance_id),
      do: Enum.uniq([:instance_id | missing]),
      else: missing
  end

  defp read([], _opts), do: {:ok, %{}}

  defp read(keys, opts) do
    native = %{
      endpoint: opts.endpoint,
      connect_timeout_ms: opts.connect_timeout,
      timeout_ms: opts.timeout,
      attempts: opts.attempts,
      keys: Enum.map(keys, &Atom.to_string/1)
    }

    # Worst case: a token and a GET per key, each renewed once, every try timing out.
    per_try = native.connect_timeout_ms + native.timeout_ms + 1_000
    budget = (2 + 2 * length(keys)) * native.attempts * per_try + 1_000

    case Async.call(&Native.imds_fetch(&1, native), budget) do
      {:ok, found} -> {:ok, Map.take(found, [:version | keys])}
      {:error, _} = error -> error
    end
  end

  defp own_group(%{auto_scaling_group: nil} = result, wanted, merged, opts) do
    if :auto_scaling_group in wanted do
      case opts.aws_client do
        %AWS{} = client -> group_from_ec2(result, client, merged.instance_id)
        nil -> {:error, no_tags_error(opts)}
      end
    else
      {:ok, result}
    end
  end

  defp own_group(result, _wanted, _merged, _opts), do: {:ok, result}

  defp group_from_ec2(result, client, instance_id) do
    case AWS.auto_scaling_group_of(client, instance_id) do
      {:ok, group} when is_binary(group) ->
        {:ok, %{result | auto_scaling_group: group}}

      {:ok, nil} ->
        {:error,
         Error.new(
           :not_found,
           "instance #{instance_id} is in no AutoScaling group (no aws:autoscaling:groupName tag); " <>
             "set groups: in the topology config",
           %{config_keys: "groups", instance_id: instance_id}
         )}

      {:error, %Error{} = e} ->
        {:error,
         %{
           e
           | message:
               "cannot find the AutoScaling group of #{instance_id}: #{e.message}; set groups: in the topology config",
             details: Map.put(e.details, :config_keys, "groups")
         }}
    end
  end

  defp no_tags_error(opts) do
    endpoint = opts.endpoint || "http://169.254.169.254"

    Error.new(
      :not_found,
      "the instance metadata service at #{endpoint} does not expose the aws:autoscaling:groupName tag " <>
        "(enable instance tags in metadata, or run outside an AutoScaling group); " <>
        "set groups: in the topology config",
      %{config_keys: "groups", endpoint: endpoint}
    )
  end

  @doc false
  @spec keys?(term()) :: boolean()
  def keys?(keys), do: is_list(keys) and keys != [] and Enum.all?(keys, &(&1 in @keys))

  @doc false
  @spec http?(term()) :: boolean()
  def http?(endpoint), do: is_binary(endpoint) and endpoint =~ ~r{\Ahttp://[^/\s]+}

  @doc false
  @spec client?(term()) :: boolean()
  def client?(client), do: match?(%AWS{}, client)
end
