defmodule AWSCluster.Supervisor do
  @moduledoc """
  Runs clustering topologies without libcluster, from the same `topologies` shape:

      topologies = [
        app: [
          strategy: AWSCluster.Strategy.EC2,
          config: [tags: %{"app" => "chat"}, node_basename: "chat"]
        ]
      ]

      children = [{AWSCluster.Supervisor, topologies: topologies}]

  Each topology takes `:strategy` (required), `:config`, and optionally the `:connect`,
  `:disconnect` and `:list_nodes` MFAs, which default to libcluster's
  (`{:net_kernel, :connect_node, []}`, `{:erlang, :disconnect_node, []}`,
  `{:erlang, :nodes, [:connected]}`). Each strategy is started with `start_link([state])`,
  as libcluster does, so libcluster's own strategies run here too when libcluster is
  loaded.

  Options: `:topologies` (required) and `:name`.
  """

  use Supervisor

  alias AWSCluster.{Config, Error, Redacted}
  alias AWSCluster.Strategy.State

  @topology_schema [
    strategy: [type: :module, required: true, doc: "The strategy module."],
    config: [type: :keyword, default: [], doc: "The strategy's options."],
    connect: [type: :mfa, doc: "Called with the node appended to connect."],
    disconnect: [type: :mfa, doc: "Called with the node appended to disconnect."],
    list_nodes: [type: :mfa, doc: "Returns the connected nodes."]
  ]

  @doc """
  Validates every topology (including each aws_cluster strategy's own options), then
  starts one child per topology. A bad topology returns
  `{:error, %AWSCluster.Error{reason: :invalid_config}}` and starts nothing.
  """
  @spec start_link(keyword()) :: Supervisor.on_start() | {:error, Error.t()}
  def start_link(opts) do
    with {:ok, %{topologies: topologies, name: name}} <-
           Config.validate(opts, topologies: [type: :keyword, required: true], name: [type: :any]),
         {:ok, children} <- children(topologies) do
      sup_opts = if name, do: [name: name], else: []
      Supervisor.start_link(__MODULE__, children, sup_opts)
    end
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    Redacted.seal_child(%{
      id: Keyword.get(opts, :name, __MODULE__),
      start: {__MODULE__, :start_link, [opts]},
      type: :supervisor
    })
  end

  @impl true
  def init(children), do: Supervisor.init(children, strategy: :one_for_one)

  defp children(topologies) do
    Enum.reduce_while(topologies, {:ok, []}, fn {topology, spec}, {:ok, acc} ->
      case child(topology, spec) do
        {:ok, child} -> {:cont, {:ok, [child | acc]}}
        {:error, %Error{} = e} -> {:halt, {:error, in_topology(e, topology)}}
      end
    end)
    |> case do
      {:ok, children} -> {:ok, Enum.reverse(children)}
      error -> error
    end
  end

  defp child(topology, spec) do
    with {:ok, spec} <- Config.validate(spec, @topology_schema),
         {:ok, state} <- State.new(topology: topology, config: spec.config),
         state = apply_mfas(state, spec),
         :ok <- precheck(spec.strategy, state) do
      arg = [libcluster_state(state)]
      child = Supervisor.child_spec({spec.strategy, arg}, id: {spec.strategy, topology})
      # Sealed here too: libcluster's own strategies build their specs unsealed.
      {:ok, Redacted.seal_child(child)}
    end
  end

  defp apply_mfas(state, spec) do
    Enum.reduce([:connect, :disconnect, :list_nodes], state, fn key, state ->
      if spec[key], do: Map.put(state, key, spec[key]), else: state
    end)
  end

  # aws_cluster strategies can check their options here, so the error comes back from
  # start_link instead of as a supervisor's failed_to_start_child.
  defp precheck(strategy, state) do
    if AWSCluster.Strategy.implemented_by?(strategy) and function_exported?(strategy, :schema, 0) do
      with {:ok, _config} <- AWSCluster.Poller.validate(strategy, state), do: :ok
    else
      :ok
    end
  end

  # libcluster's strategies pattern-match on their struct; ours read any map.
  defp libcluster_state(%State{} = state) do
    fields = Map.from_struct(state)

    if Code.ensure_loaded?(Cluster.Strategy.State),
      do: struct(Cluster.Strategy.State, fields),
      else: fields
  end

  defp in_topology(%Error{} = e, topology) do
    if String.starts_with?(e.message, "topology "),
      do: e,
      else: %{
        e
        | message: "topology #{inspect(topology)}: #{e.message}",
          details: Map.put(e.details, :topology, topology)
      }
  end
end
