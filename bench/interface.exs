# Interface lookups through the NIF: throughput, and whether they disturb schedulers.
#
#   MIX_ENV=test mix run bench/interface.exs
#
# Baseline in the same run: :inet.getifaddrs/0 (the port-based BIF path OTP ships).
# long_schedule events >= 1 ms are counted with :erlang.system_monitor while 100k
# lookups run on every scheduler at once.

defmodule Bench.Interface do
  @lookups 100_000

  def run do
    {:ok, _} = AWSCluster.Interface.address("lo")
    workers = System.schedulers_online()

    ours = measure(workers, fn -> {:ok, _} = AWSCluster.Interface.address("lo") end)
    base = measure(workers, fn -> {:ok, _} = :inet.getifaddrs() end)

    IO.puts("interface lookups: #{@lookups} per run, #{workers} concurrent workers")
    report("AWSCluster.Interface.address/1", ours)
    report(":inet.getifaddrs/0 (baseline)", base)
    IO.puts("ratio ours/baseline lookups per second: #{Float.round(ours.rate / base.rate, 2)}")
  end

  defp measure(workers, fun) do
    parent = self()
    monitor = spawn(fn -> collect(parent, 0) end)
    :erlang.system_monitor(monitor, [{:long_schedule, 1}])
    per_worker = div(@lookups, workers)

    {micros, _} =
      :timer.tc(fn ->
        1..workers
        |> Enum.map(fn _ -> Task.async(fn -> Enum.each(1..per_worker, fn _ -> fun.() end) end) end)
        |> Enum.each(&Task.await(&1, :infinity))
      end)

    :erlang.system_monitor(:undefined)
    send(monitor, {:done, self()})

    events =
      receive do
        {:long_schedule_count, n} -> n
      end

    %{rate: per_worker * workers / (micros / 1_000_000), events: events, micros: micros}
  end

  defp collect(parent, n) do
    receive do
      {:monitor, _pid, :long_schedule, _info} -> collect(parent, n + 1)
      {:done, from} -> send(from, {:long_schedule_count, n})
    end
  end

  defp report(label, %{rate: rate, events: events, micros: micros}) do
    IO.puts(
      "  #{String.pad_trailing(label, 34)} #{round(rate)} lookups/s, " <>
        "#{Float.round(micros / 1000, 1)} ms total, #{events} long_schedule events >= 1 ms"
    )
  end
end

Bench.Interface.run()
