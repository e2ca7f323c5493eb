defmodule AWSCluster.Strategy do
  @moduledoc """
  The behaviour of a polling discovery strategy.

  A strategy only answers "which peers exist right now?"; `AWSCluster.Poller` owns the
  loop (interval, backoff, last good set, pruning, connects). A strategy module:

    * `schema/0` - its own options as an `AWSCluster.Config` schema. The poller's common
      options (`AWSCluster.Poller.schema/0`) are added, and the whole list is validated
      before anything starts.
    * `validate/1` (optional) - checks across options the schema cannot express, before
      anything starts; return `{:error, AWSCluster.Config.error(key, text)}`.
    * `init/2` - turns the validated options (a map) into the strategy state, once, inside
      the poller process: build the AWS client, read IMDS... The poller keeps that state as returned and runs `discover/1` with it; only what
      is printed of it (crash reports, `:sys.get_status/1`) is redacted. So build
      anything needing a secret here, and keep no secret the rounds do not need. Only
      invalid options (`:invalid_config`) fail the start; any other error is retried.
    * `discover/1` - one round. It runs in its own process, so it may block; the poller
      kills it after `:discovery_timeout`. `{:ok, peers}` must be a complete answer (every
      page read): peers missing from it count towards pruning. `{:ok, peers, gone}`
      also names peers the source reports as going away (instance ids or nodes); they
      are pruned at once.
    * `stop/1` (optional) - undoes what `init/2` started, when the topology stops
      cleanly or crashes (the registry deletes this node's row). It runs in the poller's
      `terminate/2`, so it must be quick and bounded.
    * `question/1` (optional, needed for `coordinate: true`) - what decides the answer,
      from the state `init/2` returned (filters, groups, region, naming): nodes whose
      question is equal share one poller (`AWSCluster.Poller.Coordination`). Leave out
      how AWS is reached (client, credentials) and anything per node.

  `use AWSCluster.Strategy` adds `start_link/1` and `child_spec/1`, which accept
  libcluster's `[%Cluster.Strategy.State{}]` as well as a keyword list, so the module can
  be listed in libcluster's `topologies` or in `AWSCluster.Supervisor`'s.
  """

  alias AWSCluster.{Config, Error}
  alias AWSCluster.Strategy.State

  @typedoc """
  One discovered peer: its node name, the instance it runs on (the map from
  `AWSCluster.AWS`, or any map), and the address used in the node name. A name taken
  from an outside source should stay a string: the poller makes the atom, within the
  topology's name budget (`AWSCluster.Membership.NameBudget`).
  """
  @type peer :: %{
          required(:node) => node() | String.t(),
          required(:instance) => map(),
          optional(:address) => String.t()
        }

  @typedoc "A peer reported as terminating: its instance id or its node."
  @type gone :: String.t() | node()

  @callback schema() :: Config.schema()
  @callback validate(config :: map()) :: :ok | {:error, Error.t()}
  @callback init(config :: map(), State.t()) :: {:ok, term()} | {:error, Error.t()}
  @callback discover(strategy_state :: term()) ::
              {:ok, [peer()]} | {:ok, [peer()], [gone()]} | {:error, Error.t()}
  @callback question(strategy_state :: term()) :: term()
  @callback stop(strategy_state :: term()) :: :ok

  @optional_callbacks validate: 1, question: 1, stop: 1

  @doc """
  Whether `module` declares `@behaviour AWSCluster.Strategy` (loading it if needed), so
  its options can be validated before it starts and it can be probed by diagnostics.
  """
  @spec implemented_by?(module()) :: boolean()
  def implemented_by?(module) when is_atom(module) do
    Code.ensure_loaded?(module) and __MODULE__ in behaviours(module)
  end

  defp behaviours(module) do
    module.module_info(:attributes) |> Keyword.get_values(:behaviour) |> List.flatten()
  end

  defmacro __using__(_opts) do
    quote do
      @behaviour AWSCluster.Strategy

      @doc """
      Starts the strategy's poller. Takes libcluster's `[state]` or a keyword list with
      `:topology`, `:config` and optional `:connect`, `:disconnect`, `:list_nodes` MFAs.
      Invalid options return `{:error, %AWSCluster.Error{reason: :invalid_config}}`.
      """
      @spec start_link(term()) :: GenServer.on_start()
      def start_link(arg), do: AWSCluster.Poller.start_link(__MODULE__, arg)

      @doc "A child spec whose id includes the topology, so one module can serve several."
      @spec child_spec(term()) :: Supervisor.child_spec()
      def child_spec(arg), do: AWSCluster.Poller.child_spec(__MODULE__, arg)

      defoverridable start_link: 1, child_spec: 1
    end
  end
end
