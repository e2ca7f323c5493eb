defmodule AWSCluster.Async do
  @moduledoc """
  The Elixir half of the NIF reply protocol.

  An async NIF takes a reference, returns `:ok` at once and later sends
  `{:aws_cluster, ref, {:ok, value} | {:error, {reason, message, details}}}` from the
  shared tokio runtime. `call/2` waits for that message with a timeout, so no scheduler
  is ever blocked by network work.
  """

  alias AWSCluster.Error

  @doc """
  Calls `start.(ref)` (which must invoke an async NIF) and waits up to `timeout` ms
  for its reply. A late reply after a timeout is dropped when it arrives in a process
  that no longer waits for it, so callers should be long-lived processes that ignore
  unknown `{:aws_cluster, _, _}` messages, or short-lived tasks.
  """
  @spec call((reference() -> :ok | {:error, term()}), timeout()) ::
          {:ok, term()} | {:error, Error.t()}
  def call(start, timeout) when is_function(start, 1) do
    ref = make_ref()

    case start.(ref) do
      :ok ->
        receive do
          {:aws_cluster, ^ref, reply} -> Error.wrap(reply)
        after
          timeout ->
            {:error,
             Error.new(:timeout, "no reply from the native runtime within #{timeout} ms", %{
               timeout: timeout
             })}
        end

      other ->
        Error.wrap(other)
    end
  end
end
