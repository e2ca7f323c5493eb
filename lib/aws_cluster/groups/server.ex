defmodule AWSCluster.Groups.Server do
  @moduledoc """
  One process per node, started by the application, that carries `AWSCluster.Groups`
  calls between groups and watches for meshes that merged.

  **Calls.** A call crosses groups by messages sent with `:noconnect` to this process
  on the target node, never by `erpc` or `rpc`. A send to a node without a link
  auto-connects *visibly* under OTP defaults, and one such link merges two groups'
  meshes (`global` completes it within about a second). A gateway link that was just
  cut, or a gateway that was replaced, would make a plain `erpc` do exactly that. With
  `:noconnect` such a call fails as `:unreachable` instead. Each call runs in its own
  process on the target; the reply goes to an alias, so a reply after the caller's
  timeout is dropped.

  **Merged meshes** (`:compat` mode). When a node that discovery placed in another
  group comes up as a *visible* peer, a stray message merged the meshes. That is
  logged once per topology and group and reported as
  `[:aws_cluster, :groups, :crossed]`, until no visible node of that group is left.
  Nothing is disconnected: under OTP defaults a disconnect of a live visible peer gets
  this node expelled by `global` (see `AWSCluster.Connector`).
  """

  use GenServer

  alias AWSCluster.{Loop, Peers}

  @doc false
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc """
  Runs `{m, f, a}` on `node` through its server (see the moduledoc): `{:ok, value}`,
  `{:raised, kind, reason}` when it raised, threw or exited there, `{:relayed, result}`
  for a relayed call, `:unreachable` when there is no link, or `:timeout`.
  `request` is `{:apply, m, f, a}` or `{:relay, topology, group, m, f, a, timeout}`.
  """
  @spec request(node(), tuple(), timeout()) :: term()
  def request(node, request, timeout) do
    reply_to = :erlang.alias([:reply])

    case :erlang.send({__MODULE__, node}, {__MODULE__, reply_to, request}, [:noconnect]) do
      :noconnect ->
        :erlang.unalias(reply_to)
        :unreachable

      _ ->
        receive do
          {^reply_to, result} -> result
        after
          timeout ->
            :erlang.unalias(reply_to)

            receive do
              {^reply_to, result} -> result
            after
              0 -> :timeout
            end
        end
    end
  end

  @impl true
  def init(:ok) do
    :ok = :net_kernel.monitor_nodes(true)
    {:ok, %{reported: MapSet.new()}}
  end

  @impl true
  def handle_info({__MODULE__, reply_to, request}, s) do
    spawn(fn -> :erlang.send(reply_to, {reply_to, run(request)}, [:noconnect]) end)
    {:noreply, s}
  end

  def handle_info({:nodeup, node}, s), do: {:noreply, crossed(s, node)}

  def handle_info({:nodedown, _node}, s) do
    visible = Node.list(:visible)

    reported =
      MapSet.filter(s.reported, fn {topology, group} ->
        Enum.any?(visible, &(&1 in group_members(topology, group)))
      end)

    {:noreply, %{s | reported: reported}}
  end

  def handle_info(_other, s), do: {:noreply, s}

  @doc false
  # What a request does on this node: `{:ok, value}` or `{:raised, kind, reason}`.
  @spec run(tuple()) :: term()
  def run({:apply, m, f, a}) do
    {:ok, apply(m, f, a)}
  catch
    kind, reason -> {:raised, kind, reason}
  end

  def run({:relay, topology, group, m, f, a, timeout}),
    do: {:relayed, AWSCluster.Groups.direct(topology, group, m, f, a, timeout)}

  def run(_unknown), do: {:raised, :error, :unknown_request}

  defp crossed(s, node) do
    Enum.reduce(Peers.views(), s, fn {topology, view}, s ->
      members = Map.get(view, :members, %{})
      own = Map.get(view, :group)

      case Enum.find(members, fn {g, nodes} -> g != own and node in nodes end) do
        {group, _} when own != nil -> report(s, topology, view, group, node)
        _ -> s
      end
    end)
  end

  defp report(s, topology, view, group, node) do
    if MapSet.member?(s.reported, {topology, group}) do
      s
    else
      advice =
        if view.mode == :strict,
          do: "the next connect round cuts it",
          else: "nothing is disconnected; run group_mode: :strict to make such sends fail instead"

      Loop.log(
        :warning,
        topology,
        "group #{view.group}'s mesh merged with group #{group}: #{node} came up as a visible " <>
          "peer (a message to a node of another group connected it); " <> advice
      )

      AWSCluster.Telemetry.execute([:aws_cluster, :groups, :crossed], %{count: 1}, %{
        topology: topology,
        group: view.group,
        other_group: group,
        node: node,
        mode: view.mode
      })

      %{s | reported: MapSet.put(s.reported, {topology, group})}
    end
  end

  defp group_members(topology, group) do
    case AWSCluster.Groups.view(topology) do
      {:ok, view} -> Map.get(view.members, group, [])
      {:error, _} -> []
    end
  end
end
