defmodule Mix.Tasks.AwsCluster.Doctor do
  @shortdoc "Checks what stops a cluster from forming on this host, with fixes"
  @moduledoc """
  Checks, on this host, what stops clusters from forming in practice, and prints each
  check as PASS, WARN or FAIL with the fix (see `AWSCluster.Doctor` for the list):
  instance metadata (IMDSv2 token, the container hop limit), region and credentials,
  the IAM actions each topology needs (probed with the real calls), one discovery
  round, the node's name against its interface or address, the distribution port
  range, the cookie (never printed), and for every discovered peer TCP to EPMD 4369 and
  to its distribution port.

      $ elixir --name chat@10.0.1.17 --cookie "$RELEASE_COOKIE" -S mix aws_cluster.doctor --interface ens6

  Exits with status 1 when a check fails.

  Topologies come from app config or flags exactly as for `mix aws_cluster.peers`
  (`--topology`, `--strategy`, `--tags`, `--group`, `--region`, `--endpoint`,
  `--imds-endpoint`, `--address`, `--basename` ...). Further flags:

    * `--interface NAME` or `--node-address IP` - what this node's host must be.
    * `--no-imds` - skip the IMDS check (not on EC2).
    * `--epmd-port N` - default `ERL_EPMD_PORT` or 4369.
    * `--port-timeout MS` - per TCP probe, default 2000.
    * `--no-connect` - do not try hidden connections to the peers.

  Without distribution (a plain `mix` VM) the node name and cookie cannot be checked;
  the output says how to run it so they can be.
  """

  use Mix.Task

  alias AWSCluster.Doctor

  @switches [
    interface: :string,
    node_address: :string,
    imds: :boolean,
    epmd_port: :integer,
    port_timeout: :integer,
    connect: :boolean,
    compile: :boolean
  ]

  @impl true
  def run(args) do
    {opts, rest, invalid} =
      OptionParser.parse(args, strict: Mix.AWSCluster.switches() ++ @switches)

    cond do
      invalid != [] -> Mix.AWSCluster.fail("unknown or invalid option #{elem(hd(invalid), 0)}")
      rest != [] -> Mix.AWSCluster.fail("unexpected argument #{hd(rest)}")
      true -> :ok
    end

    Mix.AWSCluster.start(args)

    {topologies, notes} =
      case Mix.AWSCluster.topologies(opts) do
        {:ok, topologies} ->
          {topologies, []}

        {:error, "no topologies configured" <> _ = text} ->
          {[], [%{name: "topologies", status: :warn, message: text, fix: nil}]}

        {:error, text} ->
          Mix.AWSCluster.fail(text)
      end

    doctor_opts =
      [
        imds_endpoint: opts[:imds_endpoint],
        imds: Keyword.get(opts, :imds, true),
        interface: opts[:interface],
        address: opts[:node_address],
        epmd_port: opts[:epmd_port],
        port_timeout: opts[:port_timeout],
        connect: Keyword.get(opts, :connect, true)
      ]
      |> Enum.reject(fn {_k, v} -> v == nil end)

    where = if Node.alive?(), do: "#{node()}", else: "a VM without distribution"
    Mix.shell().info("aws_cluster doctor on #{where}\n")

    checks = notes ++ Doctor.run(topologies, doctor_opts)
    Mix.shell().info(Doctor.format(checks))

    if Doctor.failed?(checks), do: exit({:shutdown, 1})
    :ok
  end
end
