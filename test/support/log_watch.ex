defmodule AWSCluster.Test.LogWatch do
  @moduledoc """
  Waits until log events holding given texts have been emitted, from any process.

  Reports from other processes (crash reports, periodic summaries, supervisor reports)
  are logged asynchronously; a test that captures the log waits for the lines it
  expects instead of sleeping and hoping.

  It watches as a handler of the `Logger` event manager, next to the one
  `ExUnit.CaptureLog` adds: it sees each message as translated and printed, and once it
  has seen one, the capture has it too by the time `capture_log/2` returns (which
  flushes that manager).
  """

  @behaviour :gen_event

  import ExUnit.Assertions

  @doc """
  Runs `fun`, then waits until every text of `texts` has appeared in some log event
  emitted since `fun` started (up to `timeout` ms in all, then fails the test naming
  the texts never seen). Returns `fun`'s result.
  """
  @spec after_logged([String.t()], (() -> result), pos_integer()) :: result when result: term()
  def after_logged(texts, fun, timeout \\ 20_000) do
    id = make_ref()
    :ok = :gen_event.add_handler(Logger, {__MODULE__, id}, %{pid: self(), id: id, texts: texts})

    try do
      result = fun.()
      await(id, MapSet.new(texts), System.monotonic_time(:millisecond) + timeout)
      result
    after
      :gen_event.delete_handler(Logger, {__MODULE__, id}, :done)
      flush(id)
    end
  end

  defp await(id, missing, deadline) do
    if MapSet.size(missing) == 0 do
      :ok
    else
      wait = max(deadline - System.monotonic_time(:millisecond), 0)

      receive do
        {^id, :logged, text} -> await(id, MapSet.delete(missing, text), deadline)
      after
        wait -> flunk("never logged: #{inspect(MapSet.to_list(missing))}")
      end
    end
  end

  defp flush(id) do
    receive do
      {^id, :logged, _} -> flush(id)
    after
      0 -> :ok
    end
  end

  @impl true
  def init(state), do: {:ok, state}

  @impl true
  def handle_event({_level, _gl, {Logger, message, _ts, _meta}}, state) do
    text = text(message)
    for t <- state.texts, String.contains?(text, t), do: send(state.pid, {state.id, :logged, t})
    {:ok, state}
  end

  def handle_event(_other, state), do: {:ok, state}

  @impl true
  def handle_call(_request, state), do: {:ok, :ok, state}

  defp text(message) do
    IO.chardata_to_string(message)
  rescue
    _ -> inspect(message, limit: :infinity)
  end
end
