defmodule AWSCluster.Poller.Report do
  @moduledoc """
  What the poller tells people about an answer: log lines (once per state change, not
  per poll) and telemetry events (`AWSCluster.Telemetry`).
  """

  alias AWSCluster.{Error, Loop, Membership, Telemetry}
  alias AWSCluster.Poller.Coordination

  @typedoc "The topology and strategy, the metadata of every event."
  @type meta :: %{topology: atom(), strategy: module()}

  @typedoc """
  Who polls (`AWSCluster.Poller.Coordination`): this node's `role` (`:off` when the
  topology does not coordinate, `:stepped_down` while a poller that kept failing polls
  only for itself), the `poller`'s node, the `nodes` sharing its answers,
  where the last applied answer came from and how old it is (ms), and how many answers
  were ignored.
  """
  @type coordination :: %{
          role: :off | :stepped_down | :poller | :follower,
          poller: node() | nil,
          nodes: [node()],
          answer_from: node() | nil,
          answer_age: non_neg_integer() | nil,
          ignored: non_neg_integer()
        }

  @doc """
  Reports one complete answer's `outcome`. `before` holds the loop's `health`,
  `failures`, the `known` member count and whether names were already being refused;
  returns whether names are being refused now.
  """
  @spec answer(meta(), Membership.outcome(), non_neg_integer(), map()) :: boolean()
  def answer(meta, outcome, size, before) do
    topology = meta.topology

    if holding = outcome.holding do
      Loop.log(
        :warning,
        topology,
        "holding the prune of #{holding.held} of #{holding.known} peers (over " <>
          "#{holding.percent}% at once) until the next complete answer confirms it"
      )

      Telemetry.execute([:aws_cluster, :discovery, :prune_held], holding, meta)
    end

    for node <- outcome.joined, do: Loop.log(:info, topology, "new peer #{node}")

    for {node, _kind, why} <- outcome.pruned,
        do: Loop.log(:info, topology, "pruning #{node}: #{why}")

    case before.health do
      :starting ->
        Loop.log(:info, topology, "discovery is up: #{size} peers")

      :healthy ->
        :ok

      :failing ->
        Loop.log(
          :info,
          topology,
          "discovery recovered after #{before.failures} failed polls: #{size} peers " <>
            "(#{before.known} before)"
        )
    end

    refused(meta, outcome.refused, before.refusing)
  end

  defp refused(_meta, 0, _refusing), do: false

  defp refused(meta, count, refusing) do
    unless refusing do
      Loop.log(
        :error,
        meta.topology,
        "refusing #{count} new node names: the name budget (name_budget) is spent; " <>
          "known peers are kept. Names are atoms, which are never freed: who can tag " <>
          "instances here?"
      )
    end

    Telemetry.execute([:aws_cluster, :discovery, :names_refused], %{count: count}, meta)
    true
  end

  @doc "What `AWSCluster.Poller.status/1` answers, from the loop's state `s` at `now`."
  @spec status(map(), integer()) :: AWSCluster.Poller.status()
  def status(s, now) do
    %{
      topology: s.state.topology,
      health: s.health,
      last_error: s.last_error,
      failures: s.failures,
      throttles: s.throttles,
      polls: s.polls,
      answers: s.answers,
      coordination: coordination(s, now),
      connecting: s.round != nil or s.round_pending,
      next_delay: s.next_delay,
      members: Membership.misses(s.membership),
      held: Enum.sort(s.membership.held),
      names_left: Membership.names_left(s.membership, now),
      connect_failures: s.connect_failures,
      groups: s.plan && AWSCluster.Groups.Plan.view(s.plan, s.groups)
    }
  end

  @doc "The `coordination` part of `status/1`."
  @spec coordination(map(), integer()) :: coordination()
  def coordination(s, now) do
    c = s.coordination

    role =
      cond do
        s.stepped_down -> :stepped_down
        c == nil -> :off
        true -> Coordination.role(c)
      end

    %{
      role: role,
      poller: c && Coordination.poller_node(c),
      nodes: if(c, do: Coordination.nodes(c), else: [node()]),
      answer_from: s.answer_from,
      answer_age: s.answer_at && now - s.answer_at,
      ignored: if(c, do: c.ignored, else: 0)
    }
  end

  @doc """
  Reports that this node sees a new poller (`previous` is nil when the loop just joined
  its group): a log line and `[:aws_cluster, :poller, :elected]`.
  """
  @spec elected(meta(), Coordination.t(), node() | nil, :poller | :follower) :: :ok
  def elected(meta, c, previous, role) do
    poller = Coordination.poller_node(c)
    count = length(c.members)

    Loop.log(:info, meta.topology, fn ->
      case role do
        :poller -> "this node polls for the #{count} nodes of the topology"
        :follower -> "#{poller} polls for the #{count} nodes of the topology; following it"
      end
    end)

    Telemetry.execute(
      [:aws_cluster, :poller, :elected],
      %{members: count},
      Map.merge(meta, %{poller: poller, previous: previous, role: role})
    )
  end

  @doc "Reports an answer applied from the poller on `from`: `[:aws_cluster, :poller, :answer]`."
  @spec received(meta(), node(), non_neg_integer()) :: :ok
  def received(meta, from, peers) do
    Telemetry.execute(
      [:aws_cluster, :poller, :answer],
      %{peers: peers},
      Map.put(meta, :from, from)
    )
  end

  @doc """
  Reports a shared answer this node ignored (`AWSCluster.Poller.Coordination`): a debug
  line and `[:aws_cluster, :poller, :ignored]`.
  """
  @spec ignored(meta(), term(), Coordination.ignored()) :: :ok
  def ignored(meta, {_, _, answer}, reason) do
    from =
      case answer do
        %{from: pid} when is_pid(pid) -> node(pid)
        _ -> nil
      end

    Loop.log(:debug, meta.topology, "ignored an answer from #{from || "?"}: #{reason}")

    Telemetry.execute(
      [:aws_cluster, :poller, :ignored],
      %{count: 1},
      Map.merge(meta, %{from: from, reason: reason})
    )
  end

  @doc "Reports a failed round; the log line only when the loop was not failing already."
  @spec failed(meta(), Error.t(), atom(), non_neg_integer()) :: :ok
  def failed(meta, error, health, known) do
    if health != :failing do
      Loop.log(
        :warning,
        meta.topology,
        "discovery failing (#{error.reason}): #{error.message}; keeping #{known} known peers"
      )
    end

    :ok
  end
end
