defmodule AWSCluster.Membership.NameBudget do
  @moduledoc """
  How many new node-name atoms a topology may still mint.

  Atoms are never collected. `:max_peers` bounds one answer, but not a lifetime: whoever
  may tag instances (with `{:tag, _}` naming), or holds the gossip key, could present a
  fresh set of valid names every poll and fill the atom table in hours. So every name
  that is not an atom yet costs one token from a bucket of `capacity` tokens, refilled
  at `per_day` tokens a day (continuously). A name that already is an atom costs
  nothing: it adds nothing to the table. With no token left, the name is refused and
  the caller keeps what it knows.

  Pure functions; the caller keeps the struct and passes the clock (monotonic ms).
  """

  @enforce_keys [:capacity, :per_day, :tokens, :at]
  defstruct [:capacity, :per_day, :tokens, :at, minted: 0, refused: 0]

  @type t :: %__MODULE__{
          capacity: pos_integer(),
          per_day: non_neg_integer(),
          tokens: float(),
          at: integer(),
          minted: non_neg_integer(),
          refused: non_neg_integer()
        }

  @day_ms 86_400_000

  @schema [
    name_budget: [
      type: {:or, [:pos_integer, {:literal, nil}]},
      default: nil,
      doc:
        "New node names (atoms) this topology may mint over its life before refill; " <>
          "`nil` is twice `:max_peers` (`AWSCluster.Membership.NameBudget`)."
    ],
    name_budget_per_day: [
      type: {:or, [:non_neg_integer, {:literal, nil}]},
      default: nil,
      doc: "Names the budget regains a day, continuously; `nil` is `:max_peers`."
    ]
  ]

  @doc "The budget's options, common to every strategy, as an `AWSCluster.Config` schema."
  @spec schema() :: AWSCluster.Config.schema()
  def schema, do: @schema

  @doc """
  The budget of `topology` under a validated config (`:name_budget`,
  `:name_budget_per_day`, `:max_peers`): full, or with what it had left when it last
  stopped in this VM (`save/2`).
  """
  @spec for_topology(map(), integer(), atom()) :: t()
  def for_topology(config, now, topology) do
    fresh = new(config[:name_budget], config[:name_budget_per_day], config.max_peers, now)
    restore(topology, fresh)
  end

  @doc """
  A full bucket. `capacity` defaults to twice `max_peers` and `per_day` to `max_peers`,
  so a fleet can replace itself twice at once and once a day after that.
  """
  @spec new(pos_integer() | nil, non_neg_integer() | nil, pos_integer(), integer()) :: t()
  def new(capacity, per_day, max_peers, now) do
    capacity = capacity || 2 * max_peers
    %__MODULE__{capacity: capacity, per_day: per_day || max_peers, tokens: capacity / 1, at: now}
  end

  @doc """
  Keeps `budget` for `topology` past this process: the atoms it paid for outlive a
  restart, so a crash loop must not hand out a fresh budget each time.
  """
  @spec save(atom(), t()) :: :ok
  def save(topology, %__MODULE__{} = budget),
    do: :persistent_term.put({__MODULE__, topology}, budget)

  @doc """
  `fresh` (a new bucket for the current options), with the tokens `topology` had left
  when it last stopped, if it ran before in this VM.
  """
  @spec restore(atom(), t()) :: t()
  def restore(topology, %__MODULE__{} = fresh) do
    case :persistent_term.get({__MODULE__, topology}, nil) do
      %__MODULE__{} = saved ->
        %{fresh | tokens: min(saved.tokens, fresh.capacity / 1), at: saved.at}

      nil ->
        fresh
    end
  end

  @doc """
  The atom for `name`: `{:ok, atom, budget}` when it already exists or a token pays for
  it, `{:refused, budget}` when the budget is spent or the name is longer than an atom
  can be (255 bytes). Nothing else may make the atom.
  """
  @spec to_atom(t(), String.t(), integer()) :: {:ok, atom(), t()} | {:refused, t()}
  def to_atom(%__MODULE__{} = b, name, _now) when byte_size(name) > 255,
    do: {:refused, %{b | refused: b.refused + 1}}

  def to_atom(%__MODULE__{} = b, name, now) when is_binary(name) do
    {:ok, String.to_existing_atom(name), b}
  rescue
    ArgumentError ->
      b = refill(b, now)

      if b.tokens >= 1 do
        {:ok, String.to_atom(name), %{b | tokens: b.tokens - 1, minted: b.minted + 1}}
      else
        {:refused, %{b | refused: b.refused + 1}}
      end
  end

  @doc "Whole tokens left at `now`."
  @spec left(t(), integer()) :: non_neg_integer()
  def left(%__MODULE__{} = b, now), do: trunc(refill(b, now).tokens)

  defp refill(b, now) do
    earned = max(0, now - b.at) * b.per_day / @day_ms
    %{b | tokens: min(b.capacity / 1, b.tokens + earned), at: now}
  end
end
