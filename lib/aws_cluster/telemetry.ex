defmodule AWSCluster.Telemetry do
  @moduledoc """
  Telemetry events, emitted only when the host application has `:telemetry` loaded
  (aws_cluster does not depend on it; add `{:telemetry, "~> 1.0"}` to your deps to
  receive them). Times are in `:native` units: convert with
  `System.convert_time_unit(duration, :native, :millisecond)`.

  ## Discovery (EC2, AutoScaling: one span per poll, from `AWSCluster.Poller`)

    * `[:aws_cluster, :discovery, :start]` - a round begins.
      Measurements: `%{system_time: integer}` (`System.system_time/0`).
      Metadata: `%{topology: atom, strategy: module}`.
    * `[:aws_cluster, :discovery, :stop]` - a round returned a complete answer.
      Measurements: `%{duration: integer, peers: non_neg_integer}` - `peers` counts the
      peers found, this node excluded.
      Metadata: `%{topology: atom, strategy: module}`.
    * `[:aws_cluster, :discovery, :exception]` - a round failed (AWS error, throttling,
      timeout, IMDS, a crash inside the strategy); the last good peer set is kept.
      Measurements: `%{duration: integer}`.
      Metadata: `%{topology: atom, strategy: module, reason: atom}` - `reason` is the
      `AWSCluster.Error` reason (`:throttled`, `:unauthorized`, `:unreachable`,
      `:timeout`, `:bad_response`, ...).

    * `[:aws_cluster, :discovery, :names_refused]` - the name budget refused new node
      names (`AWSCluster.Membership.NameBudget`); the known peers are kept.
      Measurements: `%{count: pos_integer}`. Metadata: `%{topology: atom, strategy: module}`.

    * `[:aws_cluster, :discovery, :prune_held]` - a complete answer would have pruned
      over `:prune_guard` percent of the known peers at once; those prunes wait for the
      next complete answer (`AWSCluster.Membership.PruneGuard`).
      Measurements: `%{held: pos_integer, known: pos_integer, percent: pos_integer}`.
      Metadata: `%{topology: atom, strategy: module}`.

  ## Coordinated polling (from `AWSCluster.Poller`, see `AWSCluster.Poller.Coordination`)

    * `[:aws_cluster, :poller, :elected]` - this node sees a new poller for the
      topology (also once when the loop joins its group).
      Measurements: `%{members: pos_integer}` - the nodes sharing the answers.
      Metadata: `%{topology: atom, strategy: module, poller: node, previous: node | nil,
      role: :poller | :follower}`.
    * `[:aws_cluster, :poller, :answer]` - a follower applied the poller's answer.
      Measurements: `%{peers: non_neg_integer}`.
      Metadata: `%{topology: atom, strategy: module, from: node}`.
    * `[:aws_cluster, :poller, :ignored]` - a shared answer was not used.
      Measurements: `%{count: 1}`.
      Metadata: `%{topology: atom, strategy: module, from: node | nil, reason: atom}` -
      `:not_poller` (late, from an old poller), `:stale` (started over 2 intervals
      ago), `:out_of_order` or `:invalid`.

  ## Connections (every strategy, from `AWSCluster.Connector`)

    * `[:aws_cluster, :node, :connect]` - the topology's connect MFA succeeded for a
      node not connected before (a poller round, or a gossip announce).
    * `[:aws_cluster, :node, :disconnect]` - the disconnect MFA succeeded for a pruned
      peer (polling strategies only, and only where safe or opted in: see
      `AWSCluster.Connector`; gossip never disconnects).

    * `[:aws_cluster, :node, :connect_error]`, `[:aws_cluster, :node, :disconnect_error]` -
      an attempt failed; metadata also has `reason` (`false`, `:ignored`, `:timeout`,
      `{:exit, term}`). The log says so at warning once per node and state change.

    All: measurements `%{count: 1}`, metadata `%{topology: atom, node: node}`. Under
    libcluster, its own `[:libcluster, :connect_node | :disconnect_node, :ok | :error]`
    events fire too (connects go through `Cluster.Strategy.connect_nodes/4`).

  ## Firewall (from `AWSCluster.Firewall`)

    * `[:aws_cluster, :firewall, :applied]` - a new ruleset is in the kernel (or was
      logged, with `dry_run`). Measurements: `%{addresses: n, duration: native}`.
      Metadata: `%{topology: atom, table: String.t()}`.
    * `[:aws_cluster, :firewall, :error]` - an `nft` run failed; the last ruleset stays.
      Measurements: `%{count: 1}`. Metadata: `%{topology: atom, table: String.t(),
      error: AWSCluster.Error.t()}` (reason `:firewall_failed` or `:firewall_unavailable`).

  ## Groups (from `AWSCluster.Groups`)

    * `[:aws_cluster, :groups, :gateways]` - after a connect round, this node's group
      has other gateways than before, or this node became or stopped being one.
      Measurements: `%{gateways: n, links: n}` (its hidden links to other groups).
      Metadata: `%{topology: atom, strategy: module, group: String.t(), gateways:
      [node], previous: [node], gateway?: boolean}`.
    * `[:aws_cluster, :groups, :crossed]` - a node that discovery placed in another
      group came up as a visible peer: a stray message merged two meshes (`:compat`
      mode). Once per topology and group until no node of that group is visible.
      Measurements: `%{count: 1}`. Metadata: `%{topology: atom, group: String.t(),
      other_group: String.t(), node: node, mode: :compat | :strict}`.

  ## Gossip (from `AWSCluster.Strategy.Gossip`)

    * `[:aws_cluster, :gossip, :rejected]` - one datagram was dropped.
      Measurements: `%{count: 1}`.
      Metadata: `%{topology: atom, reason: atom}` - a `t:AWSCluster.Gossip.Codec.reason/0`
      (`:too_short`, `:bad_version`, `:unknown_key`, `:auth_failed`, `:stale`,
      `:replayed` ...), or one of `AWSCluster.Gossip.Membership`'s (`:source_mismatch`,
      `:after_leave`, `:too_many_peers`, `:name_budget`).

  Example handler:

      :telemetry.attach_many("aws-cluster-log", [
        [:aws_cluster, :discovery, :exception],
        [:aws_cluster, :gossip, :rejected]
      ], fn event, _measurements, meta, _ -> IO.inspect({event, meta}) end, nil)
  """

  @doc """
  Emits `event` through `:telemetry.execute/3` when `:telemetry` is loaded; otherwise does
  nothing. The module can be replaced (tests) with `config :aws_cluster, :telemetry_module`.
  """
  @spec execute([atom()], map(), map()) :: :ok
  def execute(event, measurements, metadata) do
    module = Application.get_env(:aws_cluster, :telemetry_module, :telemetry)

    if available?(module), do: module.execute(event, measurements, metadata)
    :ok
  end

  # Code.ensure_loaded?/1 of a module that is not there searches the whole code path
  # (3.4 ms a call on the test box), and gossip emits an event per dropped datagram, so
  # a flood of junk would cost that per packet: a miss is remembered. A module loaded
  # after the first miss (hot upgrade) is not picked up until the VM restarts.
  defp available?(module) do
    cond do
      function_exported?(module, :execute, 3) -> true
      :persistent_term.get({__MODULE__, :missing, module}, false) -> false
      Code.ensure_loaded?(module) and function_exported?(module, :execute, 3) -> true
      true -> :persistent_term.put({__MODULE__, :missing, module}, true) && false
    end
  end
end
