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

  @doc """
  `child` with its start arguments wrapped. A supervisor prints a child's start call
  in its reports ("Start Call" when the child fails to start), and those arguments
  are the options, secrets included; wrapped, only their redacted form can be printed.
  A child already sealed is returned as is.
  """
  @spec seal_child(Supervisor.child_spec()) :: Supervisor.child_spec()
  def seal_child(%{start: {__MODULE__, :start_child, _}} = child), do: child

  def seal_child(%{start: {m, f, a}} = child),
    do: %{child | start: {__MODULE__, :start_child, [m, f, new(a)]}}

  @doc false
  @spec start_child(module(), atom(), t()) :: term()
  def start_child(m, f, %__MODULE__{} = args), do: apply(m, f, unwrap(args))

  defimpl Inspect do
    import Inspect.Algebra

    def inspect(%{term: term}, opts) do
      concat(["#AWSCluster.Redacted<", to_doc(AWSCluster.Config.redact(term), opts), ">"])
    end
  end
end
