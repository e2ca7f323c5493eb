defmodule AWSCluster.Poller.Coordination do
  @moduledoc """
  One poller per topology among the connected nodes that run it (`coordinate: true`,
  the default of the EC2 and AutoScaling strategies).

  DescribeInstances has one token bucket per account and region (100 tokens, refilled
  at 20 a second) shared with every other tool in the account. Uncoordinated, 100 nodes
  at a 10 s interval spend half the refill, 300 nodes 150% of it. Coordinated, a
  topology costs one discovery round per interval whatever its size, plus one per node
  boot (a round is one DescribeInstances per page for EC2; for AutoScaling one
  DescribeAutoScalingGroups plus DescribeInstances).

  ## Who polls

  Every node's loop joins a `:pg` group named after the topology, the interval and the
  strategy's question (`c:AWSCluster.Strategy.question/1`: filters or groups, region and
  naming, as resolved at start), so only nodes asking AWS the same question share
  answers. How a node reaches AWS (endpoint, credentials, timeouts, retries) is not part
  of it: nodes may use per-AZ VPC endpoints or their own roles and still share.

  The member with the lowest node name polls. It sends each complete answer to the
  others, encoded once (compressed external term format): 1,000 instances with tags are
  a few hundred KB as a term, so encoding per send would cost the poller that much work
  per follower and interval. Followers apply it exactly like one of their own
  (`AWSCluster.Poller`).

  ## Why the lowest node name, not a `:global` lock

    * Every node computes the same poller from the same view, with no messages beyond
      `pg`'s own, and the view changes only at `nodeup`/`nodedown` (and joins/leaves).
    * A partition needs no lock to time out: each side's `pg` view loses the other side,
      so each side elects its own poller; when the sides heal, the views merge and the
      higher of the two steps down.
    * `pg` spans the visible mesh only, like the membership it coordinates: hidden links
      (meta-clustering gateways, `mix aws_cluster.peers`) never merge two clusters'
      pollers. A `:global` lock would also have to be re-taken and probed every round.

  ## What a follower accepts

  An answer counts only when it comes from the process this node sees as the poller,
  is newer than the last one accepted from it, and was sent at most 2 intervals ago by
  the sender's clock (a clock skew beyond that makes followers poll for themselves:
  safe, only dearer). Anything else is ignored, with a reason
  (`[:aws_cluster, :poller, :ignored]`).

  ## When a node polls for itself anyway

    * Connected to no member: it is alone in its group, so it polls. That is how a
      cluster bootstraps: every node polls once at start.
    * A follower that received no answer for 1.5 intervals (±10%) polls for itself
      until one comes again: the poller died, is partitioned away, or is stuck. Each
      side of a partition elects its own poller once `nodedown` arrives; when the sides
      heal, one remains.
    * Throttling on the poller backs off the whole topology: its backoff delay goes to
      the followers, which wait that long plus half an interval before polling for
      themselves; a node taking over waits it out too.
    * A poller whose discovery fails twice in a row for any reason but throttling (its
      role, its endpoint) steps aside: it leaves the group, so the next node polls for
      the others, and polls only for itself until its own discovery succeeds; then it
      rejoins. When AWS fails for everyone, every node ends up polling for itself (the
      uncoordinated cost, as failed calls) until it recovers.
    * The `pg` scope restarted: the loop joins the new one a second later.

  ## Known limits

    * The group is the connected mesh as `pg` sees it. In a partial mesh (a-b and b-c
      linked, a-c not) c follows b, b follows a, and c gets no answers: it polls for
      itself until the link forms, which the strategies' own connects make happen.
    * Followers wait the poller's backoff (its `:max_backoff`), not their own.
  """

  @scope :aws_cluster_coordination
  @message __MODULE__

  @enforce_keys [:key, :monitor, :scope_monitor]
  defstruct key: nil,
            monitor: nil,
            scope_monitor: nil,
            members: [],
            poller: nil,
            last: nil,
            ignored: 0

  @type t :: %__MODULE__{
          key: {atom(), non_neg_integer()},
          monitor: reference(),
          scope_monitor: reference(),
          members: [pid()],
          poller: pid(),
          last: %{from: pid(), seq: pos_integer()} | nil,
          ignored: non_neg_integer()
        }

  @typedoc """
  What a poller sends: a complete answer (`{:ok, peers, gone}`, encoded) or, when
  throttled, the delay before its next try (`{:backoff, ms}`), stamped with the system
  time (ms) at which it was sent.
  """
  @type answer :: %{
          from: pid(),
          seq: pos_integer(),
          sent: integer(),
          result: {:encoded, binary()} | {:backoff, pos_integer()}
        }

  @typedoc "Why an answer was ignored (`:invalid`: a shape this version does not know)."
  @type ignored :: :not_poller | :stale | :out_of_order | :invalid

  @typedoc "This loop's part."
  @type role :: :poller | :follower

  @doc "The `:coordinate` option, with the strategy's default."
  @spec schema(boolean()) :: AWSCluster.Config.schema()
  def schema(default) do
    [
      coordinate: [
        type: :boolean,
        default: default,
        doc:
          "One node polls for all the connected nodes running this topology and shares " <>
            "its answers (`AWSCluster.Poller.Coordination`); a node polls for itself " <>
            "while connected to none, or when no answer came for 1.5 intervals."
      ]
    ]
  end

  @doc "A child spec for the `:pg` scope of the groups; `AWSCluster.Application` starts it."
  @spec child_spec(term()) :: Supervisor.child_spec()
  def child_spec(_), do: %{id: @scope, start: {:pg, :start_link, [@scope]}}

  @doc """
  Joins the calling loop to `topology`'s group, for `strategy` with the state its
  `init/2` returned, polling every `interval` ms. Returns `nil` when the strategy has no
  `question/1`, this OTP has no `:pg.monitor/2` (before 25.1) or the scope is not
  running: the node then polls for itself.
  """
  @spec join(atom(), module(), term(), pos_integer()) :: t() | nil
  def join(topology, strategy, strategy_state, interval) do
    scope = Process.whereis(@scope)

    if function_exported?(strategy, :question, 1) and function_exported?(:pg, :monitor, 2) and
         scope do
      question = strategy.question(strategy_state)
      key = {topology, :erlang.phash2({strategy, interval, question})}
      # A restarted scope forgets its groups and monitors: the loop must join again.
      scope_monitor = Process.monitor(scope)
      :ok = :pg.join(@scope, key, self())
      {ref, pids} = :pg.monitor(@scope, key)
      elect(%__MODULE__{key: key, monitor: ref, scope_monitor: scope_monitor}, pids)
    end
  end

  @doc """
  Applies a `:pg` join or leave notice; `:ignore` when `message` is not one of this
  group's. Returns the new state and whether the poller changed.
  """
  @spec membership(t(), term()) :: {t(), boolean()} | :ignore
  def membership(%__MODULE__{monitor: ref, key: key} = c, {ref, event, key, pids})
      when event in [:join, :leave] do
    members =
      case event do
        :join -> Enum.uniq(c.members ++ pids)
        :leave -> c.members -- pids
      end

    new = elect(c, members)
    {new, new.poller != c.poller}
  end

  def membership(_c, _message), do: :ignore

  @doc """
  The result inside an accepted answer: `{:ok, peers, gone}`, `{:backoff, ms}`, or
  `:error` when the encoding does not decode (`AWSCluster.Poller.Answer.normalize/3`
  checks the shape).
  """
  @spec result(answer()) :: term()
  def result(%{result: {:encoded, binary}}) when is_binary(binary) do
    :erlang.binary_to_term(binary)
  rescue
    ArgumentError -> :error
  end

  def result(%{result: {:backoff, ms}}) when is_integer(ms) and ms > 0, do: {:backoff, ms}
  def result(_answer), do: :error

  @doc "Whether this loop is the poller."
  @spec poller?(t() | nil) :: boolean()
  def poller?(nil), do: true
  def poller?(%__MODULE__{poller: poller}), do: poller == self()

  @doc "This loop's role."
  @spec role(t()) :: role()
  def role(%__MODULE__{} = c), do: if(poller?(c), do: :poller, else: :follower)

  @doc "Leaves the group: the others elect another poller."
  @spec leave(t()) :: :ok
  def leave(%__MODULE__{} = c) do
    Process.demonitor(c.scope_monitor, [:flush])
    :pg.demonitor(@scope, c.monitor)
    _ = :pg.leave(@scope, c.key, self())
    :ok
  end

  @doc "The poller's node."
  @spec poller_node(t()) :: node()
  def poller_node(%__MODULE__{poller: poller}), do: node(poller)

  @doc "The nodes in the group, this one included, sorted."
  @spec nodes(t()) :: [node()]
  def nodes(%__MODULE__{members: members}), do: members |> Enum.map(&node/1) |> Enum.sort()

  @doc "Sends `result` to every other member. Only the poller sends."
  @spec broadcast(t(), {:ok, [map()], [term()]} | {:backoff, pos_integer()}) :: t()
  def broadcast(%__MODULE__{members: [_self]} = c, _result), do: c

  def broadcast(%__MODULE__{} = c, result) do
    # Increasing for the node's whole life, so also across a step-down and rejoin.
    seq = System.unique_integer([:monotonic, :positive])

    result =
      case result do
        {:ok, _, _} -> {:encoded, :erlang.term_to_binary(result, [:compressed])}
        {:backoff, _} -> result
      end

    answer = %{from: self(), seq: seq, sent: System.system_time(:millisecond), result: result}

    # :noconnect: a member's node is connected, or pg would have dropped it; an answer
    # must never open a link (with default kernel settings one would merge meshes).
    for pid <- c.members,
        pid != self(),
        do: :erlang.send(pid, {@message, c.key, answer}, [:noconnect])

    c
  end

  @doc """
  Checks a received message against the rules above, at system time `now` (ms) with
  answers valid for `max_age` ms: `{:ok, c, answer}`, `{:ignore, c, reason}`, or
  `:not_ours` when it is no answer of this group.
  """
  @spec accept(t() | nil, term(), integer(), pos_integer()) ::
          {:ok, t(), answer()} | {:ignore, t(), ignored()} | :not_ours
  def accept(%__MODULE__{key: key} = c, {@message, key, answer}, now, max_age)
      when is_map_key(answer, :result) do
    case answer do
      %{from: from, seq: seq, sent: sent} when is_pid(from) and is_integer(sent) ->
        check(c, from, seq, now - sent, max_age, answer)

      _ ->
        ignore(c, :invalid)
    end
  end

  def accept(_c, _message, _now, _max_age), do: :not_ours

  defp check(c, from, seq, age, max_age, answer) do
    cond do
      from != c.poller or from == self() ->
        ignore(c, :not_poller)

      age > max_age ->
        ignore(c, :stale)

      c.last != nil and c.last.from == from and seq <= c.last.seq ->
        ignore(c, :out_of_order)

      true ->
        {:ok, %{c | last: %{from: from, seq: seq}}, answer}
    end
  end

  @doc "The coordinated loops of `topology` on this node."
  @spec local_loops(atom()) :: [pid()]
  def local_loops(topology) do
    if Process.whereis(@scope) do
      for {^topology, _} = key <- :pg.which_groups(@scope),
          pid <- :pg.get_local_members(@scope, key),
          do: pid
    else
      []
    end
  end

  @doc "Counts an ignored answer: `{:ignore, c, reason}`."
  @spec ignore(t(), ignored()) :: {:ignore, t(), ignored()}
  def ignore(%__MODULE__{} = c, reason), do: {:ignore, %{c | ignored: c.ignored + 1}, reason}

  # The lowest {node, pid}: one answer from every node's same view.
  defp elect(c, members) do
    members = Enum.uniq([self() | members])
    %{c | members: members, poller: Enum.min_by(members, &{node(&1), &1})}
  end
end
