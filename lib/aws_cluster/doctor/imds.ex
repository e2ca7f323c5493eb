defmodule AWSCluster.Doctor.IMDS do
  @moduledoc false
  # The doctor's imds check: does the metadata service answer, with an IMDSv2 token,
  # and does any topology need it.

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{Doctor, Error, IMDS}
  alias AWSCluster.Strategy.{AutoScaling, EC2}

  @hop_limit "in a container (Docker or ECS bridge mode, Weave) the token answer is " <>
               "dropped after one network hop: set the instance's metadata hop limit to 2 " <>
               "(aws ec2 modify-instance-metadata-options --instance-id <id> " <>
               "--http-put-response-hop-limit 2, or MetadataOptions.HttpPutResponseHopLimit " <>
               "in the launch template)"

  @doc "The IMDS check, and the metadata when IMDS answered (`nil` otherwise)."
  @spec checks(keyword(), keyword()) :: {[Doctor.check()], map() | nil}
  def checks(topologies, opts) do
    if Keyword.get(opts, :imds, true) == false do
      {[check("imds", :warn, "not checked (--no-imds)")], nil}
    else
      endpoint = opts[:imds_endpoint] || "http://169.254.169.254"
      needed = imds_needed(topologies)
      probe_opts = [endpoint: endpoint, attempts: 1, connect_timeout: 1_000, timeout: 1_000]

      case IMDS.probe(probe_opts) do
        {:ok, %{version: 2} = md} ->
          {[check("imds", :pass, "IMDSv2 at #{endpoint}: #{describe_md(md)}")], md}

        {:ok, md} ->
          warn =
            check(
              "imds",
              :warn,
              "IMDS at #{endpoint} answered only without a session token (IMDSv1): " <>
                describe_md(md),
              "the IMDSv2 token call was refused or got no answer; " <>
                @hop_limit <> ". IMDSv1 stops working once http-tokens is set to required"
            )

          {[warn], md}

        {:error, %Error{} = e} ->
          {[imds_failure(e, endpoint, needed)], nil}
      end
    end
  end

  defp describe_md(md),
    do: "instance #{md.instance_id} in #{md.availability_zone} (#{md.region})"

  defp imds_failure(e, endpoint, needed) do
    {status, fix} =
      cond do
        e.message =~ "IMDSv2 tokens" ->
          {:fail, "IMDS wants a token that never arrived; " <> @hop_limit}

        e.message =~ "disabled" ->
          {:fail,
           "metadata is turned off for this instance: enable it " <>
             "(--http-endpoint enabled) or set #{Enum.join(needed, ", ")} in the topology config"}

        needed == [] ->
          {:warn, nil}

        true ->
          {:fail,
           "set #{Enum.join(needed, ", ")} in the topology config, or run on EC2 with " <>
             "metadata enabled (" <> @hop_limit <> ")"}
      end

    message =
      if status == :warn,
        do:
          "IMDS at #{endpoint} does not answer (#{e.reason}); not needed: the config gives every value",
        else: "IMDS at #{endpoint} does not answer (#{e.reason}): #{e.message}"

    check("imds", status, message, fix)
  end

  # The config keys that would replace what topologies read from IMDS.
  defp imds_needed(topologies) do
    Enum.flat_map(topologies, fn {_name, spec} ->
      config = Doctor.spec_config(spec)

      case Doctor.spec_strategy(spec) do
        s when s in [EC2, AutoScaling] ->
          if(config[:region], do: [], else: ["region:"]) ++
            if s == AutoScaling and config[:groups] == nil, do: ["groups:"], else: []

        _ ->
          []
      end
    end)
    |> Enum.uniq()
  end
end
