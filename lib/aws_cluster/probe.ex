defmodule AWSCluster.Probe do
  @moduledoc """
  One discovery round outside the poller, for diagnostics (`mix aws_cluster.peers`,
  `mix aws_cluster.doctor`).

  It goes through the strategy's own code — `AWSCluster.Poller.validate/2`, then the
  strategy's `init/2` and `discover/1` — so what it prints is exactly what a running
  topology would see, not what a second implementation thinks it would.

  Topologies come from application config in the shape libcluster uses, read from
  `config :libcluster, topologies: [...]` and `config :aws_cluster, topologies: [...]`
  (the second is what an app passes to `AWSCluster.Supervisor`).
  """

  alias AWSCluster.{Error, Poller}
  alias AWSCluster.Strategy.State

  @typedoc "The outcome of one round."
  @type result :: %{
          topology: atom(),
          strategy: module(),
          config: map(),
          peers: [AWSCluster.Strategy.peer()],
          gone: [AWSCluster.Strategy.gone()]
        }

  @doc """
  Every topology configured under `:libcluster` and `:aws_cluster` (`topologies:`), in
  that order; a name present under both is taken from `:libcluster`.
  """
  @spec configured() :: keyword()
  def configured do
    libcluster = keyword(Application.get_env(:libcluster, :topologies))
    own = keyword(Application.get_env(:aws_cluster, :topologies))
    libcluster ++ Enum.reject(own, fn {name, _} -> Keyword.has_key?(libcluster, name) end)
  end

  defp keyword(list) when is_list(list) do
    if Keyword.keyword?(list), do: list, else: []
  end

  defp keyword(_), do: []

  @doc "Whether `module` is an aws_cluster polling strategy (`AWSCluster.Strategy`)."
  @spec polling_strategy?(module()) :: boolean()
  def polling_strategy?(module) do
    AWSCluster.Strategy.implemented_by?(module) and function_exported?(module, :discover, 1)
  end

  @doc """
  Validates the topology's config with the strategy's schema. Returns the strategy, the
  normalized state and the validated config. `group_mode: :strict` is not checked
  against this VM's kernel settings: they are the node's to have.
  """
  @spec validate(atom(), keyword()) ::
          {:ok, module(), State.t(), map()} | {:error, Error.t()}
  def validate(topology, spec) do
    strategy = if Keyword.keyword?(spec), do: spec[:strategy]

    cond do
      not is_atom(strategy) or strategy == nil ->
        {:error,
         Error.new(:invalid_config, "topology #{inspect(topology)} has no :strategy", %{
           topology: topology
         })}

      not polling_strategy?(strategy) ->
        {:error,
         Error.new(
           :not_supported,
           "topology #{inspect(topology)} uses #{inspect(strategy)}, which is not an " <>
             "aws_cluster polling strategy (EC2, AutoScaling, ECS or Registry); nothing to query",
           %{topology: topology, strategy: strategy}
         )}

      true ->
        config = Keyword.get(spec, :config, [])
        # A :strict node's kernel settings are its own, not this diagnostic VM's: the
        # doctor reports them (AWSCluster.Doctor.Groups).
        strict? = Keyword.keyword?(config) and config[:group_mode] == :strict
        config = if strict?, do: Keyword.put(config, :group_mode, :compat), else: config

        with {:ok, state} <- State.new(topology: topology, config: config),
             {:ok, config} <- Poller.validate(strategy, state) do
          config = if strict?, do: %{config | group_mode: :strict}, else: config
          {:ok, strategy, state, config}
        end
    end
  end

  @doc """
  Runs one round of the topology: validate, `init/2`, `discover/1`. The round is
  bounded by the topology's `:discovery_timeout`.
  """
  @spec discover(atom(), keyword()) :: {:ok, result()} | {:error, Error.t()}
  def discover(topology, spec) do
    with {:ok, strategy, state, config} <- validate(topology, spec),
         {:ok, strategy_state} <- init(strategy, config, %{state | probe: true}) do
      result = round(topology, strategy, config, strategy_state)
      if function_exported?(strategy, :stop, 1), do: strategy.stop(strategy_state)
      result
    end
  end

  @doc """
  One `discover/1` of a strategy already initialized (with `probe: true`), bounded by
  the topology's `:discovery_timeout`: for a caller that checked more on the same state.
  """
  @spec round(atom(), module(), map(), term()) :: {:ok, result()} | {:error, Error.t()}
  def round(topology, strategy, config, strategy_state) do
    with {:ok, peers, gone} <- run(strategy, strategy_state, config.discovery_timeout) do
      {:ok, %{topology: topology, strategy: strategy, config: config, peers: peers, gone: gone}}
    end
  end

  defp init(strategy, config, state) do
    case strategy.init(config, state) do
      {:ok, strategy_state} -> {:ok, strategy_state}
      {:error, %Error{}} = error -> error
    end
  end

  # The strategy's discover/1 may block (AWS calls); a task keeps the caller's mailbox
  # clean of the async NIF replies and bounds the wait.
  defp run(strategy, strategy_state, timeout) do
    task = Task.async(fn -> Poller.Answer.discover(strategy, strategy_state) end)

    case Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill) do
      {:ok, {:ok, peers}} -> {:ok, named(peers), []}
      {:ok, {:ok, peers, gone}} -> {:ok, named(peers), gone}
      {:ok, {:error, %Error{}} = error} -> error
      {:ok, other} -> {:error, bad_answer(strategy, other)}
      {:exit, reason} -> {:error, exited(strategy, reason)}
      nil -> {:error, Error.new(:timeout, "discovery gave no answer within #{timeout} ms")}
    end
  end

  # A one-shot diagnostic of at most max_peers names: it may make their atoms (it dials
  # them), unlike the loop, which answers to the name budget.
  defp named(peers) do
    for %{node: node} = peer <- peers,
        do: if(is_binary(node), do: %{peer | node: String.to_atom(node)}, else: peer)
  end

  defp bad_answer(strategy, other) do
    Error.new(
      :bad_response,
      "#{inspect(strategy)}.discover/1 returned neither {:ok, peers}, {:ok, peers, gone} " <>
        "nor {:error, %AWSCluster.Error{}} (the value is in details.returned)",
      %{returned: other}
    )
  end

  defp exited(strategy, reason) do
    Error.new(
      :internal,
      "#{inspect(strategy)}'s discovery exited before answering (exit reason in details.exit)",
      %{exit: reason}
    )
  end
end
