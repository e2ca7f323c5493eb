defmodule AWSCluster.Poller.Options do
  @moduledoc """
  The options every polling strategy accepts (documented in `AWSCluster.Poller`), and
  their validation together with a strategy's own, before anything starts.
  """

  alias AWSCluster.{Config, Error}
  alias AWSCluster.Strategy.State

  @schema [
            polling_interval: [
              type: :pos_integer,
              default: 10_000,
              doc: "Milliseconds between polls (±10% jitter)."
            ],
            prune_after: [
              type: {:or, [:pos_integer, {:literal, false}]},
              default: 3,
              doc:
                "Complete answers a peer must be missing from before it is pruned; " <>
                  "`false` never prunes."
            ],
            prune_disconnect: [
              type: {:in, [:when_safe, :always, :never]},
              default: :when_safe,
              doc:
                "Whether a prune also cuts the peer's link. `:when_safe` only cuts hidden links, " <>
                  "or all of them when this VM runs with `connect_all false` or " <>
                  "`prevent_overlapping_partitions false`; otherwise the peer is only forgotten and " <>
                  "its link ends when the node does (see \"Pruning\" above). `:always` cuts every " <>
                  "pruned link: on OTP 25+ with default kernel settings that makes `global` expel " <>
                  "this node from the mesh. `:never` only forgets."
            ],
            prune_guard: [
              type: {:or, [{:integer, 1..100}, {:literal, false}]},
              default: 30,
              doc:
                "A complete answer that would prune more than this percent of the known peers at " <>
                  "once is held until the next complete answer confirms it " <>
                  "(`AWSCluster.Membership.PruneGuard`); `false` turns the guard off."
            ],
            prune_guard_min: [
              type: :pos_integer,
              default: 2,
              doc: "The guard never holds fewer prunes than this in one answer."
            ]
          ] ++
            AWSCluster.Loop.Round.schema() ++
            [
              discovery_timeout: [
                type: :pos_integer,
                default: 60_000,
                doc: "Milliseconds one discovery round may take before it is killed."
              ],
              max_backoff: [
                type: :pos_integer,
                default: 300_000,
                doc: "Upper bound in ms for the delay after repeated throttling."
              ],
              max_peers: [
                type: :pos_integer,
                default: 5_000,
                doc: "Answers with more peers are rejected (node names are atoms)."
              ]
            ] ++
            AWSCluster.Membership.NameBudget.schema() ++
            [
              firewall: [
                type: :keyword,
                default: [],
                doc:
                  "Host firewall rules that follow this topology's members " <>
                    "(`AWSCluster.Firewall`), e.g. `[enabled: true, interface: \"ethwe\"]`."
              ]
            ] ++
            AWSCluster.Groups.Options.schema()

  @doc "The common options as an `AWSCluster.Config` schema."
  @spec schema() :: Config.schema()
  def schema, do: @schema

  @doc """
  Validates `state.config` against the poller's and `strategy`'s schemas; the error
  message starts with the topology.
  """
  @spec validate(module(), State.t()) :: {:ok, map()} | {:error, Error.t()}
  def validate(strategy, state) do
    with {:ok, config} <- Config.validate(state.config, @schema ++ strategy.schema()),
         :ok <- strategy_validate(strategy, config),
         :ok <- AWSCluster.Groups.Options.validate(config),
         {:ok, firewall} <- AWSCluster.Firewall.validate(config.firewall) do
      {:ok, %{config | firewall: firewall}}
    else
      {:error, error} -> {:error, Config.in_topology(error, state.topology)}
    end
  end

  defp strategy_validate(strategy, config) do
    if function_exported?(strategy, :validate, 1), do: strategy.validate(config), else: :ok
  end
end
