defmodule AWSCluster.Test.Wait do
  @moduledoc """
  Bounded waiting for tests.

  Tests run concurrently on a small, loaded machine, so a fixed sleep or a short receive
  timeout turns a slow scheduler into a failure. Waiting "until X, or give up after a
  bound" fails only when X never happens.
  """

  @doc """
  Calls `fun` every `every` ms until it returns a truthy value, and returns that value;
  returns `false` once `timeout` ms have passed without one. `fun` runs at least once.
  """
  @spec until((() -> term()), non_neg_integer(), pos_integer()) :: term()
  def until(fun, timeout \\ 20_000, every \\ 50) do
    poll(fun, System.monotonic_time(:millisecond) + timeout, every)
  end

  defp poll(fun, deadline, every) do
    cond do
      result = fun.() ->
        result

      System.monotonic_time(:millisecond) >= deadline ->
        false

      true ->
        Process.sleep(every)
        poll(fun, deadline, every)
    end
  end
end
