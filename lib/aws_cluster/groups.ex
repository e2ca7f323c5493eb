defmodule AWSCluster.Groups do
  @moduledoc """
  Meta-clustering: many small clusters joined by gateways instead of one huge mesh.

  Distribution is a full mesh: `n` nodes keep `n(n-1)/2` links, each ticking, and
  `global` syncs over all of them on every connect. With `group:` on a topology
  (`AWSCluster.Groups.Rule`), discovery connects visibly only to the peers of this
  node's own group, so each group is a full mesh of its own with its own `pg` and
  `global`. In every group a few gateways (`AWSCluster.Groups.Gateways`) keep
  **hidden** links to the other groups' gateways (`AWSCluster.Groups.Link`): hidden
  links never join `pg` or `global` and are never transitive.

  This module routes between the groups: `call/6` runs a function on a member of a
  group in at most two hops (this node's gateway, then a gateway of that group), and
  `route/3` picks a stable member of a group for a key (rendezvous hashing), to shard
  state by group.

  The mode (`AWSCluster.Groups.Mode`) is checked before the topology starts.

  Every function takes an optional topology; without it, the one grouped topology
  running on this node is used.
  """

  alias AWSCluster.{Error, Peers}
  alias AWSCluster.Groups.Server

  # Failures of one gateway's hop that another gateway of the group may not have, and
  # after which the function has not run: a timeout is not retried (it may have).
  @retried [:no_gateway, :unreachable]

  # How often `call/6` tries again when no hop could take the call (see its doc).
  @recheck 50

  @typedoc """
  A grouped topology's view, as its poller last wrote it: this node's group, the mode,
  every group's discovered members, the gateways it knows (its own group's, and when it
  is a gateway those it links to), whether it is one, and its hidden links.
  """
  @type view :: %{
          group: String.t() | nil,
          mode: :compat | :strict,
          members: %{String.t() => [node()]},
          gateways: %{String.t() => [node()]},
          gateway?: boolean(),
          links: [node()]
        }

  @typedoc "A group, as a string or an atom (`:c` is `\"c\"`)."
  @type group :: String.t() | atom()

  @doc """
  The grouped `topology`'s view on this node (see `t:view/0`); `:not_found` when no
  such topology runs here, `:invalid_argument` when `nil` is given and several do.
  """
  @spec view(atom() | nil) :: {:ok, view()} | {:error, Error.t()}
  def view(topology \\ nil) do
    with {:ok, _topology, view} <- lookup(topology), do: {:ok, view}
  end

  @doc "This node's group in `topology`, or `nil` when it has none yet."
  @spec my_group(atom() | nil) :: String.t() | nil
  def my_group(topology \\ nil) do
    case lookup(topology) do
      {:ok, _topology, view} -> view.group
      {:error, _} -> nil
    end
  end

  @doc """
  Every group of `topology` with its discovered members and the gateways this node
  knows of (its own group's always; another group's when this node links to it).
  """
  @spec groups(atom() | nil) :: %{String.t() => %{members: [node()], gateways: [node()]}}
  def groups(topology \\ nil) do
    case lookup(topology) do
      {:ok, _topology, view} ->
        Map.new(view.members, fn {group, members} ->
          {group, %{members: members, gateways: Map.get(view.gateways, group, [])}}
        end)

      {:error, _} ->
        %{}
    end
  end

  @doc """
  Runs `apply(m, f, a)` on a member of `group` and returns `{:ok, value}`.

    * In this node's own group, it runs here.
    * From a gateway, on a gateway of `group` over the hidden link.
    * From any other node, through a gateway of this node's group: two hops.

  Nothing is ever dialled: a hop without a link fails (see `AWSCluster.Groups.Server`).
  `timeout` bounds each hop. A relay that one gateway of this node's group could not
  pass on (no link, or none to `group`) is tried at the next; a timeout is not retried,
  as the function may have run, so it runs at most once.

  Views trail the links: a peer that heard a node may link to it before that node hears
  the peer, and a view's gateways change only when a connect round ends (just after a
  start, or while the next gateway takes over). When no hop could take the call (this
  node's view knows no gateway, or every gateway tried had no link on), the function
  has not run, so the call rereads the view and tries again every 50 ms; each retry's
  hops get only the time left. So a group with no gateway up fails with `:no_gateway`
  after `timeout`, not at once, and with `:infinity` the call waits until one is up.

  The value comes back as a message. A pid or reference of the other group in it is
  fine to hold, but a message or monitor to it would connect that node visibly under
  OTP defaults and merge the meshes: reply through `call/6` instead.

  Errors name the group and the hop (`details.hop`: `:local`, `:gateway` or
  `:remote`): `:not_found` (no grouped topology, unknown group, this node has no
  group), `:no_gateway` (no gateway up, no link to the group), `:unreachable`,
  `:timeout` and `:call_failed` (it raised, threw or exited; the term is in details).
  """
  @spec call(group(), module(), atom(), [term()], timeout(), atom() | nil) ::
          {:ok, term()} | {:error, Error.t()}
  def call(group, m, f, a, timeout \\ 5_000, topology \\ nil) do
    deadline = if timeout == :infinity, do: :infinity, else: now() + timeout
    attempt(to_string(group), m, f, a, timeout, topology, deadline)
  end

  defp attempt(group, m, f, a, timeout, topology_arg, deadline) do
    timeout = if deadline == :infinity, do: timeout, else: max(left(deadline), 1)

    with {:ok, topology, view} <- lookup(topology_arg),
         :ok <- placed(view, group),
         :ok <- known(view, group) do
      hop =
        cond do
          group == view.group -> local(group, m, f, a)
          view.gateway? -> direct_or_relay(topology, view, group, m, f, a, timeout)
          true -> relay(topology, view, group, m, f, a, timeout, [])
        end

      case {hop, left(deadline)} do
        {{:none, error}, left} when left <= 0 ->
          error

        {{:none, _error}, left} ->
          Process.sleep(min(@recheck, left))
          attempt(group, m, f, a, timeout, topology_arg, deadline)

        {result, _left} ->
          result
      end
    end
  end

  defp now, do: System.monotonic_time(:millisecond)

  # Milliseconds until `deadline`; an atom (:infinity) compares above any number.
  defp left(:infinity), do: :infinity
  defp left(deadline), do: deadline - now()

  @doc """
  The member of `group` that owns `key`: the highest `:erlang.phash2({key, node})`
  among the group's discovered members (rendezvous hashing). Every node with the same
  members picks the same one, and a change of members moves only the keys of the
  members that came or went.
  """
  @spec route(group(), term(), atom() | nil) :: {:ok, node()} | {:error, Error.t()}
  def route(group, key, topology \\ nil) do
    group = to_string(group)

    with {:ok, _topology, view} <- lookup(topology),
         :ok <- known(view, group) do
      {:ok, Enum.max_by(Map.fetch!(view.members, group), &:erlang.phash2({key, &1}))}
    end
  end

  @doc false
  # The hop from a gateway of this node's group to one of `group`: on this node, when
  # it is a gateway (or it is the relayed end of a call).
  @spec direct(atom(), String.t(), module(), atom(), [term()], timeout()) ::
          {:ok, term()} | {:error, Error.t()}
  def direct(topology, group, m, f, a, timeout) do
    with {:ok, _topology, view} <- lookup(topology) do
      linked = MapSet.new(Node.list(:connected))

      # Any linked member will do; the view's gateways may be a round behind the links.
      case Enum.filter(Map.get(view.members, group, []), &MapSet.member?(linked, &1)) do
        [] ->
          error(:no_gateway, group, :remote, "this node has no link to group #{group}")

        targets ->
          target = Enum.at(targets, rem(:erlang.phash2(make_ref()), length(targets)))
          outcome(Server.request(target, {:apply, m, f, a}, timeout), group, :remote, target)
      end
    end
  end

  # A gateway without a link to the group yet (it just took over) asks the others; with
  # none to ask, nothing ran ({:none, error}).
  defp direct_or_relay(topology, view, group, m, f, a, timeout) do
    case direct(topology, group, m, f, a, timeout) do
      {:error, %Error{reason: :no_gateway}} = e ->
        if other_gateways(view, [node()]) == [],
          do: {:none, e},
          else: relay(topology, view, group, m, f, a, timeout, [node()])

      result ->
        result
    end
  end

  # Through the first of this node's gateways that gets the call there: a gateway that
  # just took over may not have linked yet, and a member that is no gateway answers
  # :no_gateway at once. Gateways are reached over any link (one started with -hidden
  # has only hidden ones). With none linked, or none that could pass it on, nothing ran
  # ({:none, error}).
  defp relay(topology, view, group, m, f, a, timeout, except) do
    request = {:relay, topology, group, m, f, a, timeout}

    case other_gateways(view, except) do
      [] ->
        {:none, error(:no_gateway, group, :gateway, "no gateway of group #{view.group} is up")}

      gateways ->
        Enum.reduce_while(gateways, nil, fn gateway, _ ->
          case Server.request(gateway, request, relay_timeout(timeout)) do
            {:relayed, {:error, %Error{reason: r}} = e} when r in @retried -> {:cont, {:none, e}}
            {:relayed, result} -> {:halt, result}
            :unreachable -> {:cont, {:none, outcome(:unreachable, group, :gateway, gateway)}}
            other -> {:halt, outcome(other, group, :gateway, gateway)}
          end
        end)
    end
  end

  # The view's gateways first, then the group's other linked members: the view is
  # written after each round and may not know a gateway that has just linked.
  defp other_gateways(view, except) do
    linked = Node.list(:connected)
    known = Map.get(view.gateways, view.group, [])
    rest = Map.get(view.members, view.group, []) -- known
    Enum.filter(known ++ rest, &(&1 in linked and &1 not in [node() | except]))
  end

  # The relay's own hop to the other group fits inside the caller's wait.
  defp relay_timeout(:infinity), do: :infinity
  defp relay_timeout(timeout), do: timeout * 2

  defp local(group, m, f, a), do: outcome(Server.run({:apply, m, f, a}), group, :local, node())

  defp outcome({:ok, value}, _group, _hop, _node), do: {:ok, value}

  defp outcome({:raised, kind, reason}, group, hop, node) do
    Error.new(:call_failed, "the call in group #{group} (#{hop} hop, #{node}) failed: #{kind}", %{
      group: group,
      hop: hop,
      node: node,
      kind: kind,
      reason: reason
    })
    |> then(&{:error, &1})
  end

  defp outcome(why, group, hop, node) when why in [:unreachable, :timeout] do
    text = if why == :timeout, do: "did not answer in time", else: "has no link from here"
    error(why, group, hop, "#{node} (#{hop} hop to group #{group}) #{text}", node)
  end

  defp outcome(other, group, hop, node),
    do: outcome({:raised, :error, {:bad_reply, other}}, group, hop, node)

  defp error(reason, group, hop, message, node \\ nil) do
    {:error, Error.new(reason, message, %{group: group, hop: hop, node: node})}
  end

  defp placed(%{group: nil}, group),
    do: error(:not_found, group, :local, "this node has no group yet (see self_group:)")

  defp placed(_view, _group), do: :ok

  defp known(view, group) do
    if Map.has_key?(view.members, group),
      do: :ok,
      else: error(:not_found, group, :local, "no group #{group} is known")
  end

  defp lookup(nil) do
    case Peers.views() do
      [{topology, view}] ->
        {:ok, topology, view}

      [] ->
        {:error, Error.new(:not_found, "no topology with group: runs on this node")}

      many ->
        names = many |> Enum.map(&elem(&1, 0)) |> Enum.sort()

        {:error,
         Error.new(
           :invalid_argument,
           "several grouped topologies run here (#{inspect(names)}); name one",
           %{topologies: names}
         )}
    end
  end

  defp lookup(topology) do
    case List.keyfind(Peers.views(), topology, 0) do
      {_, view} -> {:ok, topology, view}
      nil -> {:error, Error.new(:not_found, "topology #{inspect(topology)} runs no groups here")}
    end
  end
end
