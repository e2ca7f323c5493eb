defmodule AWSCluster.Strategy.State do
  @moduledoc """
  The one shape every aws_cluster strategy works with, whoever started it.

  libcluster starts a strategy with `start_link([%Cluster.Strategy.State{}])`; older
  libcluster releases have no `list_nodes` field, and aws_cluster cannot depend on
  libcluster, so that struct is read as a plain map. `AWSCluster.Supervisor` and direct
  callers pass a map or keyword list with the same keys. Missing MFAs get libcluster's
  defaults, so a standalone topology connects through distribution like libcluster does.

  `probe: true` marks a state the diagnostics (`AWSCluster.Probe`) use for one round
  outside any poller: a strategy must not act as a member then (the registry writes no
  row of its own).

  Each MFA is applied with the node appended: `apply(m, f, a ++ [node])`. A connect
  returns `true`, `false` or `:ignored` (distribution not started), like
  `:net_kernel.connect_node/1`.
  """

  alias AWSCluster.{Config, Error}

  @default_connect {:net_kernel, :connect_node, []}
  @default_disconnect {:erlang, :disconnect_node, []}
  @default_list_nodes {:erlang, :nodes, [:connected]}

  defstruct topology: nil,
            connect: @default_connect,
            disconnect: @default_disconnect,
            list_nodes: @default_list_nodes,
            config: [],
            meta: nil,
            libcluster: false,
            probe: false

  @type t :: %__MODULE__{
          topology: atom(),
          connect: mfa_tuple(),
          disconnect: mfa_tuple(),
          list_nodes: mfa_tuple(),
          config: keyword(),
          meta: term(),
          libcluster: boolean(),
          probe: boolean()
        }
  @type mfa_tuple :: {module(), atom(), [term()]}

  @schema [
    topology: [type: :atom, required: true],
    connect: [type: :mfa, default: @default_connect],
    disconnect: [type: :mfa, default: @default_disconnect],
    list_nodes: [type: :mfa, default: @default_list_nodes],
    config: [type: :keyword, default: []],
    meta: [type: :any]
  ]

  @doc """
  Normalizes a strategy's start argument: `[state]` (libcluster), a state map or struct,
  or a keyword list with `:topology`, `:config` and optional `:connect`, `:disconnect`,
  `:list_nodes`, `:meta`. A `nil` MFA (libcluster leaves `list_nodes` unset in old
  releases) takes the default. A `%Cluster.Strategy.State{}` sets `libcluster: true`:
  connects and disconnects then go through libcluster's `Cluster.Strategy` helpers.
  """
  @spec new(term()) :: {:ok, t()} | {:error, Error.t()}
  def new([state]) when is_map(state), do: new(state)

  def new(state) when is_map(state) do
    libcluster? =
      case state do
        %__MODULE__{libcluster: libcluster?} -> libcluster?
        %{__struct__: Cluster.Strategy.State} -> Code.ensure_loaded?(Cluster.Strategy)
        _ -> false
      end

    with {:ok, state} <-
           state
           |> Map.take(Keyword.keys(@schema))
           |> Enum.reject(fn {_key, value} -> is_nil(value) end)
           |> new() do
      {:ok, %{state | libcluster: libcluster?}}
    end
  end

  def new(opts) when is_list(opts) do
    opts = Enum.reject(opts, &match?({_key, nil}, &1))

    with {:ok, map} <- Config.validate(opts, @schema) do
      {:ok, struct(__MODULE__, map)}
    end
  end

  def new(other) do
    {:error,
     Error.new(
       :invalid_config,
       "a strategy takes [state], a state map or a keyword list, got #{inspect(Config.redact(other))}",
       %{key: nil}
     )}
  end

  @doc "The default MFAs, as libcluster's supervisor fills them in."
  @spec defaults() :: %{connect: mfa_tuple(), disconnect: mfa_tuple(), list_nodes: mfa_tuple()}
  def defaults do
    %{connect: @default_connect, disconnect: @default_disconnect, list_nodes: @default_list_nodes}
  end
end
