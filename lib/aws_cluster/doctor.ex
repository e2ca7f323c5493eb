defmodule AWSCluster.Doctor do
  @moduledoc """
  Checks, on one host, what stops clusters from forming in practice, and says how to fix
  each problem. `mix aws_cluster.doctor` prints the result; inside a running release:

      bin/my_app rpc 'AWSCluster.Doctor.run() |> AWSCluster.Doctor.format() |> IO.puts()'

  Checks, each `:pass`, `:warn` or `:fail`:

    * **imds** - the instance metadata service answers, with an IMDSv2 token. An answer
      only without a token is what a container sees behind a hop limit of 1.
    * **region**, **credentials**, **iam** - per AWS topology: where the region comes
      from; whether AWS accepts the credentials; each IAM action the strategy needs,
      probed with the real call (DescribeInstances, DescribeAutoScalingGroups).
    * **discovery** - one round of each topology through the strategy's own code.
    * **node name** - distribution is up, and the node's host is the chosen interface's
      or address's, and is the name discovery gives this instance.
    * **distribution ports** - the listen port is inside a pinned range.
    * **cookie** - set, not `:nocookie`, not per-host. The cookie itself is never shown.
    * **peer** - for each discovered peer: TCP to EPMD (4369), the peer's name
      registered there, TCP to its distribution port, and a hidden connection.
      Closed or silent ports are what mis-set security groups look like.

  Options of `run/2`:

    * `:imds_endpoint` - IMDS to ask (default `http://169.254.169.254`); `:imds` -
      `false` skips the IMDS check.
    * `:interface` or `:address` - what the node's host must be.
    * `:epmd_port` - default `ERL_EPMD_PORT` or 4369.
    * `:port_timeout` - ms per TCP probe, default 2_000.
    * `:connect` - try a hidden connection to each peer (default `true`).
    * `:max_peers` - peers probed at most, default 64.
  """

  alias AWSCluster.Doctor.{IMDS, Peers, ThisNode, Topology}
  alias AWSCluster.Probe

  @type status :: :pass | :warn | :fail
  @type check :: %{name: String.t(), status: status(), message: String.t(), fix: String.t() | nil}

  @doc """
  Runs every check for `topologies` (default: the configured ones, see
  `AWSCluster.Probe.configured/0`) and returns them in order.
  """
  @spec run(keyword(), keyword()) :: [check()]
  def run(topologies \\ Probe.configured(), opts \\ []) do
    {imds_checks, imds} = IMDS.checks(topologies, opts)
    {topology_checks, results} = Topology.checks(topologies, imds)
    peers = results |> Enum.flat_map(& &1.peers) |> Enum.uniq_by(& &1.node)

    imds_checks ++
      topology_checks ++
      ThisNode.checks(results, imds, opts) ++ Peers.checks(peers, opts)
  end

  @doc "Whether any check failed."
  @spec failed?([check()]) :: boolean()
  def failed?(checks), do: Enum.any?(checks, &(&1.status == :fail))

  @doc "Renders checks as `PASS  name  message` lines, each problem followed by its fix."
  @spec format([check()]) :: String.t()
  def format(checks) do
    width = checks |> Enum.map(&String.length(&1.name)) |> Enum.max(fn -> 0 end)

    lines =
      Enum.flat_map(checks, fn c ->
        line = "#{label(c.status)}  #{String.pad_trailing(c.name, width)}  #{c.message}"
        if c.fix, do: [line, "      fix: " <> c.fix], else: [line]
      end)

    counts = Enum.frequencies_by(checks, & &1.status)

    summary =
      "#{Map.get(counts, :pass, 0)} passed, #{Map.get(counts, :warn, 0)} warnings, " <>
        "#{Map.get(counts, :fail, 0)} failed"

    Enum.join(lines ++ ["", summary], "\n")
  end

  defp label(:pass), do: "PASS"
  defp label(:warn), do: "WARN"
  defp label(:fail), do: "FAIL"

  @doc false
  # The check groups (AWSCluster.Doctor.*) build their results with this.
  @spec check(String.t(), status(), String.t(), String.t() | nil) :: check()
  def check(name, status, message, fix \\ nil),
    do: %{name: name, status: status, message: message, fix: fix}

  @doc false
  @spec spec_strategy(term()) :: module() | nil
  def spec_strategy(spec), do: if(Keyword.keyword?(spec), do: spec[:strategy])

  @doc false
  @spec spec_config(term()) :: keyword()
  def spec_config(spec) do
    config = if Keyword.keyword?(spec), do: Keyword.get(spec, :config, []), else: []
    if Keyword.keyword?(config), do: config, else: []
  end

  @doc false
  @spec iam_policy() :: String.t()
  def iam_policy, do: "the README's IAM policy"
end
