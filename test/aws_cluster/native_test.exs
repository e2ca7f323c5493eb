defmodule AWSCluster.NativeTest do
  use ExUnit.Case, async: true

  alias AWSCluster.{Async, Error, Native}

  test "async calls reply with the caller's reference" do
    assert Async.call(&Native.runtime_probe(&1, 5, false), 5_000) == {:ok, 5}
    assert Native.runtime_workers() == 2
  end

  test "a panic inside a runtime task still sends an error reply" do
    assert {:error, %Error{reason: :internal, message: msg}} =
             Async.call(&Native.runtime_probe(&1, 0, true), 5_000)

    assert msg =~ "panicked"
    assert Async.call(&Native.runtime_probe(&1, 0, false), 5_000) == {:ok, 0}
  end

  test "a reply later than the timeout is a :timeout error, not a hang" do
    assert {:error, %Error{reason: :timeout}} =
             Async.call(&Native.runtime_probe(&1, 500, false), 50)
  end

  test "bad arguments raise ArgumentError and the VM goes on" do
    assert_raise ArgumentError, fn -> Native.runtime_probe(make_ref(), -1, false) end
    assert_raise ArgumentError, fn -> Native.runtime_probe(make_ref(), 1, :maybe) end
    assert Async.call(&Native.runtime_probe(&1, 1, false), 5_000) == {:ok, 1}
  end

  test "a library that cannot be loaded gives one clear error naming path and fix" do
    script = """
    System.put_env("AWS_CLUSTER_NIF_PATH", "/nonexistent/libaws_cluster_nif.so")
    :code.purge(AWSCluster.Native)
    :code.delete(AWSCluster.Native)
    {:module, _} = Code.ensure_loaded(AWSCluster.Native)
    try do
      AWSCluster.Interface.address("lo")
    rescue
      e in AWSCluster.Error -> IO.puts("\#{e.reason}|\#{e.message}")
    end
    """

    {out, 0} = System.cmd("elixir", pa_args() ++ ["-e", script], stderr_to_stdout: true)

    assert out =~ "nif_not_loaded|"
    assert out =~ "/nonexistent/libaws_cluster_nif.so"
    assert out =~ "mix compile"
    assert out =~ "AWS_CLUSTER_NIF_PATH"
  end

  test "a nif_path configured after the module loaded (as in a release) is tried by the stubs" do
    out =
      with_late_nif_path("""
      IO.inspect(AWSCluster.Interface.address("lo"))
      IO.inspect(AWSCluster.Native.runtime_workers())
      """)

    assert out =~ "{:ok, {127, 0, 0, 1}}"
  end

  test "many first calls at once after a late nif_path: every one gets the NIF's answer" do
    # 64 processes released together race to load the library in the stubs.
    out =
      with_late_nif_path("""
      parent = self()

      pids =
        for _ <- 1..64 do
          spawn(fn ->
            receive do
              :go ->
                result =
                  try do
                    AWSCluster.Interface.address("lo")
                  rescue
                    e -> {:raised, Exception.message(e)}
                  end

                send(parent, {:result, result})
            end
          end)
        end

      for pid <- pids, do: send(pid, :go)
      results = for _ <- pids, do: receive(do: ({:result, r} -> r))
      IO.inspect(Enum.frequencies(results), label: "results")
      """)

    assert out =~ "results: %{{:ok, {127, 0, 0, 1}} => 64}", out
  end

  # Runs `body` in a fresh VM where AWSCluster.Native loaded without its library (as a
  # release loads modules before its config) and nif_path was configured afterwards.
  defp with_late_nif_path(body) do
    real = Path.join([Mix.Project.app_path(), "priv", "native", "libaws_cluster_nif.so"])

    script = """
    System.put_env("AWS_CLUSTER_NIF_PATH", "/nonexistent/libaws_cluster_nif.so")
    {:module, _} = Code.ensure_loaded(AWSCluster.Native)
    System.delete_env("AWS_CLUSTER_NIF_PATH")
    Application.put_env(:aws_cluster, :nif_path, #{inspect(real)})
    """

    {out, 0} = System.cmd("elixir", pa_args() ++ ["-e", script <> body], stderr_to_stdout: true)
    out
  end

  defp pa_args do
    Path.wildcard(Path.join(Mix.Project.build_path(), "lib/*/ebin"))
    |> Enum.flat_map(&["-pa", &1])
  end
end
