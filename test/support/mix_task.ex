defmodule AWSCluster.Test.MixTask do
  @moduledoc "Runs a Mix task in the test VM the way a shell would see it."

  import ExUnit.Assertions
  import ExUnit.CaptureIO

  @doc """
  Runs `task` with `args` (plus `--no-compile`) and returns `{exit_status, stdout, stderr}`:
  0 when the task returns, the code of `exit({:shutdown, code})` otherwise.
  """
  @spec run(String.t(), [String.t()]) :: {non_neg_integer(), String.t(), String.t()}
  def run(task, args) do
    parent = self()

    stderr =
      capture_io(:stderr, fn ->
        stdout =
          capture_io(fn ->
            status =
              try do
                Mix.Task.rerun(task, ["--no-compile" | args])
                0
              catch
                :exit, {:shutdown, code} -> code
              end

            send(parent, {:status, status})
          end)

        send(parent, {:stdout, stdout})
      end)

    assert_received {:status, status}
    assert_received {:stdout, stdout}
    {status, stdout, stderr}
  end
end
