defmodule AWSCluster.Redacted do
  @moduledoc """
  Wraps a term that may hold secrets so that inspecting it — in a crash report, a
  supervisor's "Start Call", `:sys.get_state/1` — shows it through
  `AWSCluster.Config.redact/1`: every secret-bearing value replaced, the rest intact.
  """

  @enforce_keys [:term]
  defstruct [:term]

  @type t :: %__MODULE__{term: term()}

  @doc "Wraps `term`."
  @spec new(term()) :: t()
  def new(term), do: %__MODULE__{term: term}

  @doc "The wrapped term, secrets included."
  @spec unwrap(t()) :: term()
  def unwrap(%__MODULE__{term: term}), do: term

  defimpl Inspect do
    import Inspect.Algebra

    def inspect(%{term: term}, opts) do
      concat(["#AWSCluster.Redacted<", to_doc(AWSCluster.Config.redact(term), opts), ">"])
    end
  end
end
