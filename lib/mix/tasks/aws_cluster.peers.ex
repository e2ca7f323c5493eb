defmodule Mix.Tasks.AwsCluster.Peers do
  @shortdoc "Runs one discovery round and prints the peers it finds"
  @moduledoc """
  Runs one discovery round of a topology — through the strategy's own code, exactly as
  a running node would — and prints what it found:

      $ mix aws_cluster.peers --topology app
      topology app (AWSCluster.Strategy.EC2): 3 peers in 2 AZs
      INSTANCE             AZ          ADDRESS    NODE             STATE    CONNECTED  POLLING  ANSWER_FROM      AGE
      i-0a1b2c3d4e5f60718  us-east-1a  10.0.1.17  chat@10.0.1.17   running  yes        polls    chat@10.0.1.17   3.2s
      i-0b2c3d4e5f6071829  us-east-1b  10.0.2.41  chat@10.0.2.41   running  yes        follows  chat@10.0.1.17   3.1s
      ...
      polling: chat@10.0.1.17 polls for the 3 connected nodes asked

  The topology comes from app config (`config :libcluster, topologies: [...]` or
  `config :aws_cluster, topologies: [...]`; all aws_cluster polling topologies unless
  `--topology NAME` picks some), or from flags when `--strategy` is given:

      mix aws_cluster.peers --strategy ec2 --tags app=chat --basename chat --region eu-west-1
      mix aws_cluster.peers --strategy autoscaling --group chat-asg --basename chat
      mix aws_cluster.peers --strategy ecs --cluster web --family chat --basename chat --region eu-west-1

  Flags (with `--topology` they override that topology's config):

    * `--strategy ec2|autoscaling|ecs` - build the topology from flags.
    * `--tags key=value` (repeatable), `--filter name=value` (repeatable, any
      DescribeInstances filter), `--group NAME` (repeatable, AutoScaling),
      `--cluster NAME`, `--family NAME`, `--service-name NAME` (ECS).
    * `--region`, `--endpoint URL` (moto, LocalStack, VPC endpoint),
      `--imds-endpoint URL`, `--operation-timeout MS`.
    * `--address private_ip|public_ip|private_dns|ipv6|interface:N|subnet:ID|tag:KEY`,
      or for ECS `awsvpc|host`.
    * `--basename NAME` or `--basename tag:KEY`; default: this VM's basename when it is
      distributed.
    * `--no-connect` - do not try to connect.

  For ECS, INSTANCE is the task ARN; in a task, the cluster and family default to its
  own (task metadata v4).

  For a registry topology (`AWSCluster.Strategy.Registry`) the peers are the table's
  live rows that verify; the task only reads, it writes no row of its own.

  CONNECTED says whether this VM is connected to the peer (`self` for this node).
  With `group:` (`AWSCluster.Groups`), GROUP and GATEWAY are what a connected peer says
  of itself (GROUP is the topology's rule applied to the others): `yes (n links)` for a gateway,
  with a closing line per gateway naming the gateways it links to.
  POLLING, ANSWER_FROM and AGE are what a connected peer says about coordinated
  polling (`AWSCluster.Poller.Coordination`): whether it `polls`, `follows` or has
  `stepped-down` (a poller that kept failing polls only for itself), where
  its last applied answer came from, and how long ago; a closing line names the poller,
  or every poller seen when the peers disagree. When
  the VM is distributed
  (`elixir --name diag@10.0.1.5 --cookie "$COOKIE" -S mix aws_cluster.peers`), peers
  not yet connected are tried first with a hidden connection, which does not make this
  VM a member of the cluster; those connections are closed again at the end. In a VM
  without distribution the column shows `-`.

  Credentials come from aws-config's default chain (environment, profile, instance or
  task role). On failure the task prints the error and exits with status 1; an
  AccessDenied/UnauthorizedOperation names the IAM action the credentials lack.
  """

  use Mix.Task

  alias AWSCluster.{Connector, Error, Probe}
  alias AWSCluster.Strategy.State

  @connect_timeout 5_000

  @impl true
  def run(args) do
    {opts, rest, invalid} =
      OptionParser.parse(args,
        strict: Mix.AWSCluster.switches() ++ [connect: :boolean, compile: :boolean]
      )

    cond do
      invalid != [] ->
        Mix.AWSCluster.fail("unknown or invalid option #{elem(hd(invalid), 0)}")

      rest != [] ->
        Mix.AWSCluster.fail("unexpected argument #{hd(rest)}")

      true ->
        :ok
    end

    Mix.AWSCluster.start(args)

    topologies =
      case Mix.AWSCluster.topologies(opts) do
        {:ok, topologies} -> topologies
        {:error, text} -> Mix.AWSCluster.fail(text)
      end

    results = Enum.map(topologies, fn {name, spec} -> probe(name, spec, opts) end)

    if Enum.any?(results, &(&1 == :error)), do: exit({:shutdown, 1})
    :ok
  end

  defp probe(name, spec, opts) do
    case Probe.discover(name, spec) do
      {:ok, result} ->
        {connected, polling, views} = connect(result, Keyword.get(opts, :connect, true))
        Mix.shell().info(render(result, connected, polling, views))
        :ok

      {:error, %Error{reason: :not_supported} = e} ->
        Mix.shell().info("topology #{name}: skipped: #{e.message}")
        :ok

      {:error, %Error{} = e} ->
        Mix.shell().error(
          "topology #{name}: discovery failed (#{e.reason}): #{e.message}#{hint(e)}"
        )

        :error
    end
  end

  defp hint(%Error{reason: :invalid_config, details: %{key: :node_basename, topology: :cli}}),
    do: "; give --basename NAME"

  # An endpoint can refuse with a bare 403 whose body carries no AWS error code (moto's
  # AutoScaling does; so can a proxy or a VPC endpoint policy): still name the action.
  defp hint(%Error{reason: reason, details: %{status: 403, action: action}})
       when reason != :unauthorized,
       do:
         "; HTTP 403 means the request was refused: the credentials may lack IAM permission #{action}"

  defp hint(_), do: ""

  # Returns the set of connected peers (nil when this VM cannot connect at all), what
  # each connected peer says about its polling and, for a grouped topology, its group view.
  defp connect(result, try?) do
    if Node.alive?() do
      nodes = Enum.map(result.peers, & &1.node)
      before = MapSet.new(Node.list([:visible, :hidden]))

      if try? do
        state = %State{
          topology: result.topology,
          connect: {:net_kernel, :hidden_connect_node, []},
          list_nodes: {Node, :list, [[:visible, :hidden]]}
        }

        Connector.connect(state, nodes, timeout: @connect_timeout)
      end

      connected = MapSet.new(Node.list([:visible, :hidden]))
      linked = Enum.filter(nodes, &MapSet.member?(connected, &1))
      polling = polling(result.topology, linked)
      views = if result.config[:group], do: views(result.topology, linked), else: %{}

      # Leave the VM as it was: only links this task opened are closed.
      for node <- MapSet.difference(connected, before), node in nodes, do: Node.disconnect(node)

      {connected, polling, views}
    else
      {nil, %{}, %{}}
    end
  end

  # Only over the links made above: a call to an unlinked node would auto-connect it.
  defp views(topology, nodes) do
    results = :erpc.multicall(nodes, AWSCluster.Groups, :view, [topology], @connect_timeout)
    for {node, {:ok, {:ok, view}}} <- Enum.zip(nodes, results), into: %{}, do: {node, view}
  end

  # A peer that runs no coordinated loop of the topology, or an older aws_cluster,
  # answers nothing.
  defp polling(topology, nodes) do
    results =
      :erpc.multicall(nodes, AWSCluster.Poller, :coordination, [topology], @connect_timeout)

    for {node, {:ok, [view | _]}} <- Enum.zip(nodes, results), into: %{}, do: {node, view}
  end

  @doc false
  @spec render(Probe.result(), MapSet.t() | nil, %{node() => map()}, %{node() => map()}) ::
          String.t()
  def render(result, connected, polling, views \\ %{}) do
    rule = result.config[:group]

    peers = Enum.sort_by(result.peers, &{az(&1), to_string(&1.node)})
    azs = peers |> Enum.map(&az/1) |> Enum.uniq() |> length()

    header =
      "topology #{result.topology} (#{inspect(result.strategy)}): " <>
        "#{length(peers)} #{plural(length(peers), "peer")} in #{azs} #{plural(azs, "AZ")}"

    rows =
      for peer <- peers do
        instance = peer.instance

        [
          Map.get(instance, :id) || "-",
          az(peer) || "-",
          Map.get(peer, :address) || "-",
          to_string(peer.node),
          Map.get(instance, :state) || "-",
          connected_text(connected, peer.node)
        ] ++ polling_cells(polling[peer.node]) ++ group_cells(rule, peer, views[peer.node])
      end

    table =
      table(
        [
          "INSTANCE",
          "AZ",
          "ADDRESS",
          "NODE",
          "STATE",
          "CONNECTED",
          "POLLING",
          "ANSWER_FROM",
          "AGE"
        ] ++ if(rule, do: ["GROUP", "GATEWAY"], else: []),
        rows
      )

    gone =
      case result.gone do
        [] -> []
        gone -> ["terminating (pruned at once): " <> Enum.map_join(gone, ", ", &to_string/1)]
      end

    note =
      if connected == nil and peers != [],
        do: [
          "CONNECTED is - because this VM is not distributed; run it as " <>
            "`elixir --name diag@<this host's address> --cookie \"$COOKIE\" -S mix aws_cluster.peers`"
        ],
        else: []

    Enum.join([header | table] ++ gone ++ pollers(polling) ++ gateways(views) ++ note, "\n")
  end

  defp group_cells(nil, _peer, _view), do: []

  # The group and role as the peer itself reports them (it may keep a group the rule
  # no longer gives, see AWSCluster.Groups.Plan); else the group by the rule.
  defp group_cells(rule, peer, view) do
    case view do
      %{group: group, gateway?: true, links: links} ->
        [group || "-", "yes (#{length(links)} links)"]

      %{group: group, gateway?: false} ->
        [group || "-", "no"]

      nil ->
        [AWSCluster.Groups.Rule.group(rule, peer) || "-", "-"]
    end
  end

  defp gateways(views) when map_size(views) == 0, do: []

  defp gateways(views) do
    for {node, %{gateway?: true} = view} <- Enum.sort(views) do
      "gateway: #{node} (group #{view.group}) links to #{Enum.join(view.links, ", ")}"
    end
  end

  defp polling_cells(nil), do: ["-", "-", "-"]

  defp polling_cells(view) do
    age = if view.answer_age, do: "#{Float.round(view.answer_age / 1000, 1)}s", else: "-"
    role = %{poller: "polls", follower: "follows", stepped_down: "stepped-down"}[view.role] || "-"
    [role, to_string(view.answer_from || "-"), age]
  end

  # Nodes that disagree on who polls are a partition, or views still converging.
  defp pollers(polling) when map_size(polling) == 0, do: []

  defp pollers(polling) do
    # A stepped-down node follows nobody: it names no poller.
    named = for {_node, %{poller: p}} <- polling, p != nil, uniq: true, do: p

    case named do
      [] ->
        []

      [poller] ->
        ["polling: #{poller} polls for the #{map_size(polling)} connected nodes asked"]

      pollers ->
        [
          "polling: #{length(pollers)} pollers seen (#{Enum.map_join(pollers, ", ", &to_string/1)}): " <>
            "a partition, or a heal in progress"
        ]
    end
  end

  defp az(peer), do: Map.get(peer.instance, :availability_zone)

  defp connected_text(_set, node) when node == node(), do: "self"
  defp connected_text(nil, _node), do: "-"
  defp connected_text(set, node), do: if(MapSet.member?(set, node), do: "yes", else: "no")

  defp plural(1, word), do: word
  defp plural(_, word), do: word <> "s"

  defp table(header, rows) do
    widths =
      Enum.reduce([header | rows], List.duplicate(0, length(header)), fn row, acc ->
        Enum.zip_with(row, acc, &max(String.length(&1), &2))
      end)

    for row <- [header | rows] do
      row
      |> Enum.zip(widths)
      |> Enum.map_join("  ", fn {cell, w} -> String.pad_trailing(cell, w) end)
      |> String.trim_trailing()
    end
  end
end
