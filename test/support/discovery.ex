defmodule AWSCluster.Test.Discovery do
  @moduledoc """
  A strategy whose every discovery round is answered by the test process, so poller
  tests decide each answer and count rounds exactly.

  Each round sends `{:discover, task_pid, ref}` to `:test_pid` and waits for
  `{:answer, ref, result}`. `result` is returned as is, except `{:raise, text}` (raises),
  `{:exit, reason}` (exits) and `:hang` (never answers).
  """
  use AWSCluster.Strategy

  import ExUnit.Assertions

  @impl true
  def schema do
    [
      test_pid: [type: {:custom, "a pid", &is_pid/1}, required: true, doc: "Who answers."],
      init_error: [
        type: :any,
        doc: "An error init/2 returns, or a function asked at every init (nil: no error)."
      ]
    ]
  end

  @impl true
  def init(config, state) do
    error =
      if is_function(config.init_error, 0), do: config.init_error.(), else: config.init_error

    if error do
      send(config.test_pid, {:discovery_init_failed, self(), error})
      {:error, error}
    else
      send(config.test_pid, {:discovery_init, self(), state})
      {:ok, config.test_pid}
    end
  end

  @impl true
  def discover(test_pid) do
    ref = make_ref()
    send(test_pid, {:discover, self(), ref})

    receive do
      {:answer, ^ref, {:raise, text}} -> raise text
      {:answer, ^ref, {:exit, reason}} -> exit(reason)
      {:answer, ^ref, :hang} -> Process.sleep(:infinity)
      {:answer, ^ref, result} -> result
    end
  end

  @doc "Waits for the next round's request and answers it with `result`."
  def answer(result, timeout \\ 5_000) do
    assert_receive {:discover, pid, ref}, timeout
    send(pid, {:answer, ref, result})
    :ok
  end

  @doc "Waits for the next round's request without answering; returns `{pid, ref}`."
  def await_request(timeout \\ 5_000) do
    assert_receive {:discover, pid, ref}, timeout
    {pid, ref}
  end

  @doc "A peer as a strategy reports it."
  def peer(name, az \\ "us-east-1a", tags \\ %{}) do
    %{
      node: :"#{name}@127.0.0.1",
      address: "127.0.0.1",
      instance: %{id: "i-#{name}", availability_zone: az, tags: tags}
    }
  end
end
