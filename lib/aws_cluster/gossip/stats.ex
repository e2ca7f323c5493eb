defmodule AWSCluster.Gossip.Stats do
  @moduledoc false
  # Packet counters of one gossip receiver: totals since start, plus the rejects not yet
  # reported in the log (the log summarizes at a bounded rate, never per packet).

  defstruct announces: 0, leaves: 0, own: 0, rejected: %{}, unlogged: %{}, send_errors: 0

  @type t :: %__MODULE__{
          announces: non_neg_integer(),
          leaves: non_neg_integer(),
          own: non_neg_integer(),
          rejected: %{optional(atom()) => pos_integer()},
          unlogged: %{optional(atom()) => pos_integer()},
          send_errors: non_neg_integer()
        }

  @doc "Empty counters."
  @spec new() :: t()
  def new, do: %__MODULE__{}

  @doc "Counts an accepted packet (`:own` is one of our own, looped back)."
  @spec accepted(t(), :announce | :leave | :own) :: t()
  def accepted(s, :announce), do: %{s | announces: s.announces + 1}
  def accepted(s, :leave), do: %{s | leaves: s.leaves + 1}
  def accepted(s, :own), do: %{s | own: s.own + 1}

  @doc "Counts a dropped packet under `reason`."
  @spec rejected(t(), atom()) :: t()
  def rejected(s, reason) do
    %{s | rejected: bump(s.rejected, reason), unlogged: bump(s.unlogged, reason)}
  end

  @doc "Counts `count` datagrams the kernel refused to send."
  @spec send_errors(t(), non_neg_integer()) :: t()
  def send_errors(s, count), do: %{s | send_errors: s.send_errors + count}

  @doc """
  The log line for the rejects since the last call (`nil` when none), and the counters
  with them cleared.
  """
  @spec take_summary(t()) :: {String.t() | nil, t()}
  def take_summary(%{unlogged: unlogged} = s) when map_size(unlogged) == 0, do: {nil, s}

  def take_summary(s) do
    total = s.unlogged |> Map.values() |> Enum.sum()
    detail = s.unlogged |> Enum.sort() |> Enum.map_join(", ", fn {r, n} -> "#{r}: #{n}" end)
    {"dropped #{total} gossip packets (#{detail})", %{s | unlogged: %{}}}
  end

  @doc "The counters as `AWSCluster.Strategy.Gossip.stats/1` reports them."
  @spec to_map(t()) :: map()
  def to_map(s) do
    %{
      accepted: s.announces + s.leaves,
      announces: s.announces,
      leaves: s.leaves,
      own: s.own,
      rejected: s.rejected,
      rejected_total: s.rejected |> Map.values() |> Enum.sum(),
      send_errors: s.send_errors
    }
  end

  defp bump(map, key), do: Map.update(map, key, 1, &(&1 + 1))
end
