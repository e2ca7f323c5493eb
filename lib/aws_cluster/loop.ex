defmodule AWSCluster.Loop do
  @moduledoc """
  What the two discovery loops (`AWSCluster.Poller` and `AWSCluster.Strategy.Gossip`)
  share besides their connect round (`AWSCluster.Loop.Round`): timer jitter, backoff
  and the topology-prefixed log line.
  """

  require Logger

  @jitter 0.1

  @doc """
  `ms` ±10%, at least 1: a fleet started together must not poll or announce in lockstep
  (DescribeInstances throttles per account and region).
  """
  @spec jitter(pos_integer()) :: pos_integer()
  def jitter(ms) do
    spread = ms * @jitter
    max(1, round(ms - spread + :rand.uniform() * 2 * spread))
  end

  @doc "`base` doubled per consecutive failure, jittered, at most `max`."
  @spec backoff(pos_integer(), non_neg_integer(), pos_integer()) :: pos_integer()
  def backoff(base, failures, max) do
    min(max, jitter(min(base * Integer.pow(2, min(failures, 30)), max)))
  end

  @doc """
  The delay before retry number `failures + 1` of a start that met a transient fault:
  from an eighth of `interval` up to one, so once the fault clears the next try comes
  within an interval and the cluster forms in the round after it.
  """
  @spec retry_delay(pos_integer(), non_neg_integer()) :: pos_integer()
  def retry_delay(interval, failures), do: backoff(max(1, div(interval, 8)), failures, interval)

  @doc """
  The reply to a call a loop does not know. Answered rather than crashed on: a crash
  would print the state in the `FunctionClauseError`'s arguments, where
  `format_status/2` does not reach.
  """
  @spec unknown_call(term()) :: {:error, AWSCluster.Error.t()}
  def unknown_call(request),
    do: {:error, AWSCluster.Error.new(:invalid_argument, "unknown call #{inspect(request)}")}

  @doc "Logs `text` at `level` as `[aws_cluster:<topology>] text`, built only when logged."
  @spec log(Logger.level(), atom(), String.t() | (() -> String.t())) :: :ok
  def log(level, topology, text) do
    Logger.log(level, fn ->
      "[aws_cluster:#{topology}] #{if is_function(text), do: text.(), else: text}"
    end)
  end
end
