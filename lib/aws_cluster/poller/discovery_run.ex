defmodule AWSCluster.Poller.DiscoveryRun do
  @moduledoc """
  One discovery round of the poller, in its own process: linked, so it dies with the
  topology, and monitored, so an exit before answering is an error, not a hang. It sends
  `{:discovered, ref, result}`; after `timeout` ms the poller gets
  `{:discovery_timeout, ref}` and kills it. The tag makes a late answer harmless.
  """

  alias AWSCluster.Error
  alias AWSCluster.Poller.Answer

  @enforce_keys [:ref, :pid, :monitor, :timer, :started]
  defstruct [:ref, :pid, :monitor, :timer, :started]

  @type t :: %__MODULE__{
          ref: reference(),
          pid: pid(),
          monitor: reference(),
          timer: reference(),
          started: integer()
        }

  @doc "Starts `strategy.discover(strategy_state)` for the calling poller."
  @spec start(module(), term(), pos_integer()) :: t()
  def start(strategy, strategy_state, timeout) do
    parent = self()
    ref = make_ref()

    {pid, monitor} =
      Process.spawn(
        fn -> send(parent, {:discovered, ref, Answer.discover(strategy, strategy_state)}) end,
        [:link, :monitor]
      )

    timer = Process.send_after(parent, {:discovery_timeout, ref}, timeout)

    %__MODULE__{
      ref: ref,
      pid: pid,
      monitor: monitor,
      timer: timer,
      started: System.monotonic_time()
    }
  end

  @doc "The round answered: forget its monitor and timer."
  @spec answered(t()) :: :ok
  def answered(%__MODULE__{} = d) do
    Process.demonitor(d.monitor, [:flush])
    Process.cancel_timer(d.timer)
    :ok
  end

  @doc "The round ran out of time: kill it; returns the `:timeout` error."
  @spec kill(t(), pos_integer()) :: Error.t()
  def kill(%__MODULE__{} = d, timeout) do
    Process.demonitor(d.monitor, [:flush])
    Process.unlink(d.pid)
    Process.exit(d.pid, :kill)
    Error.new(:timeout, "discovery gave no answer within #{timeout} ms", %{timeout: timeout})
  end

  @doc "The round's process exited with `reason` before answering; returns the error."
  @spec exited(t(), module(), term()) :: Error.t()
  def exited(%__MODULE__{} = d, strategy, reason) do
    Process.cancel_timer(d.timer)

    Error.new(
      :internal,
      "#{inspect(strategy)}'s discovery process exited before answering " <>
        "(exit reason in details.exit)",
      %{exit: reason}
    )
  end
end
