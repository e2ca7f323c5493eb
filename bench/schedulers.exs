# P1, schedulers: scheduler `long_schedule` events (>= 1 ms, :erlang.system_monitor) while
# 1,000 DescribeInstances calls are in flight against a slowed moto.
#
#   AWS_CLUSTER_NIF_FEATURES=bench MIX_ENV=test mix run bench/schedulers.exs
#   AWS_CLUSTER_NIF_FEATURES=bench AWS_CLUSTER_NIF_PROFILE=release MIX_ENV=test mix run bench/schedulers.exs
#
# The `bench` feature compiles the blocking baseline NIF into the library; a normal build
# leaves it out, so run `mix compile` again without the variable afterwards.
#
# (a cold release build of the AWS SDK takes 20+ min on a 2-core machine; the default is
# the dev profile, which the output names). Needs the venv of `bash script/setup`.
# BENCH_CALLS (default 1000) and BENCH_DELAY_MS (default 100) change the load.
#
# Our path: AWSCluster.AWS.describe_instances/3 (async NIF, reply by message). A last
# line times the async NIF call alone (p50/p99/max), against a closed loopback port.
# Baseline, same run, same client, same query: AWSCluster.Native.aws_describe_instances_blocking/4,
# the same SDK call waited for on the calling (normal) scheduler thread - what a naive
# NIF would do. Calling Native directly is deliberate: it exists only for this baseline.
# Control, same run: the same request written by hand over :gen_tcp from pure Erlang
# code, no NIF at all: its events are this VM's noise floor on this shared machine.
# long_schedule counts wall time, so an OS preemption of a scheduler thread looks like
# one; each row therefore also prints the kernel's count of involuntary context switches
# of the scheduler threads during the load.
#
# moto serves 1,000 simultaneous connections slowly; when its accept queue overflows for
# longer than the proxy's connect timeout, the proxy closes the call's connection and the
# call fails as unreachable. Failures are printed per row with a sample message.
#
# The fault proxy (mode {:delay, ms}) runs in a separate BEAM (a :peer over stdio), so
# that the blocking baseline cannot starve the proxy it waits on, and so that every
# event counted here comes from this VM's callers only. moto is its own OS process.

Code.require_file("support.exs", __DIR__)

defmodule Bench.Schedulers do
  import Bench.Support, only: [ec2_request: 2, load: 0, profile: 0]

  alias AWSCluster.{AWS, Error, Native}
  alias AWSCluster.Test.{Cluster, FaultProxy, Moto}

  @calls String.to_integer(System.get_env("BENCH_CALLS", "1000"))
  @delay String.to_integer(System.get_env("BENCH_DELAY_MS", "100"))
  @instances 10
  @filters [{"tag:app", ["p1"]}]

  def run do
    Moto.fresh!()

    Moto.run_instances!(
      for i <- 1..@instances, do: %{ip: "127.0.1.#{100 + i}", tags: %{"app" => "p1"}}
    )

    peer = Cluster.start_hidden_peer()
    {:ok, proxy} = :peer.call(peer, GenServer, :start, [FaultProxy, [upstream: Moto.port()]])
    endpoint = :peer.call(peer, FaultProxy, :endpoint, [proxy])
    :ok = :peer.call(peer, FaultProxy, :set_mode, [proxy, {:delay, @delay}])
    # moto answers 1,000 requests at once slowly: no SDK timeout may cut the load short.
    {:ok, client} =
      AWS.client(
        Moto.client_opts(endpoint: endpoint, operation_timeout: 300_000, connect_timeout: 60_000)
      )

    ours = fn -> AWS.describe_instances(client, Map.new(@filters)) end

    blocking = fn ->
      case Error.wrap(Native.aws_describe_instances_blocking(client.resource, @filters, [], nil)) do
        {:ok, %{instances: instances}} -> {:ok, instances}
        error -> error
      end
    end

    proxy_port = endpoint |> URI.parse() |> Map.fetch!(:port)
    raw = fn -> raw_describe(proxy_port) end

    # All paths answer the same thing before anything is timed or counted.
    {:ok, a} = ours.()
    {:ok, b} = blocking.()
    true = length(a) == @instances and Enum.sort(a) == Enum.sort(b)
    {:ok, @instances} = raw.()

    header()
    report("AWSCluster.AWS (async NIF, ours)", measure(ours, peer, proxy))
    report("blocking NIF (baseline)", measure(blocking, peer, proxy))
    report("control: :gen_tcp POST, no NIF", measure(raw, peer, proxy))
    nif_call_times()
    IO.puts("load average at the end: #{load()}")
    Cluster.stop(peer)
  end

  defp measure(fun, peer, proxy) do
    :ok = :peer.call(peer, FaultProxy, :clear_requests, [proxy])
    parent = self()
    collector = spawn(fn -> collect([]) end)
    :erlang.system_monitor(collector, [{:long_schedule, 1}])
    preempted0 = scheduler_preemptions()
    t0 = now()

    callers =
      for _ <- 1..@calls do
        spawn(fn ->
          started = now()
          result = fun.()
          send(parent, {:done, self(), started, now(), outcome(result)})
        end)
      end

    done =
      for _ <- callers do
        receive do
          {:done, pid, started, finished, outcome} -> {pid, started, finished, outcome}
        after
          600_000 -> raise "a call gave no answer within 10 min"
        end
      end

    wall = now() - t0
    :erlang.system_monitor(:undefined)
    preempted = scheduler_preemptions() - preempted0
    send(collector, {:events, self()})
    events = receive(do: ({:events, events} -> events))
    caller_set = MapSet.new(callers)
    {from_callers, other} = Enum.split_with(events, fn {who, _} -> who in caller_set end)

    %{
      events: length(events),
      from_callers: length(from_callers),
      other: length(other),
      sample: events |> Enum.sort_by(fn {_, i} -> -i[:timeout] end) |> Enum.take(3),
      total_ms: events |> Enum.map(fn {_, info} -> info[:timeout] end) |> Enum.sum(),
      max_ms: events |> Enum.map(fn {_, info} -> info[:timeout] end) |> Enum.max(fn -> 0 end),
      wall_ms: wall,
      preempted: preempted,
      peak: peak_in_flight(done),
      ok: Enum.count(done, fn {_, _, _, o} -> o == :ok end),
      errors:
        done
        |> Enum.map(&elem(&1, 3))
        |> Enum.reject(&(&1 == :ok))
        |> Enum.group_by(&elem(&1, 0), &elem(&1, 1)),
      proxied:
        peer
        |> :peer.call(FaultProxy, :requests, [proxy])
        |> Enum.count(&(&1 == "DescribeInstances"))
    }
  end

  # How long the async NIF call takes the caller (to a dirty IO scheduler and back,
  # validate, hand to the runtime; no normal scheduler is held meanwhile): as many calls
  # as the load, one after another, timed around the NIF call alone, against a closed
  # loopback port so that the replies (unreachable) come back at once.
  defp nif_call_times do
    {:ok, dead} = AWS.client(Moto.client_opts(endpoint: "http://127.0.0.1:#{Moto.free_port()}"))

    micros =
      for _ <- 1..@calls do
        ref = make_ref()
        t0 = System.monotonic_time(:nanosecond)
        :ok = Native.aws_describe_instances(dead.resource, ref, @filters, [], nil)
        t = System.monotonic_time(:nanosecond) - t0
        receive(do: ({:aws_cluster, ^ref, {:error, _}} -> :ok))
        t / 1000
      end
      |> Enum.sort()

    at = fn q -> Float.round(Enum.at(micros, min(@calls - 1, trunc(q * @calls))), 1) end

    IO.puts(
      "aws_describe_instances NIF call alone, dirty IO hop included (#{@calls} sequential " <>
        "calls, replies from a " <>
        "closed port): p50 #{at.(0.5)} us, p99 #{at.(0.99)} us, max #{at.(1.0)} us"
    )
  end

  defp outcome({:ok, @instances}), do: :ok
  defp outcome({:ok, instances}) when length(instances) == @instances, do: :ok
  defp outcome({:ok, instances}), do: {:wrong_count, length(instances)}
  defp outcome({:error, %Error{reason: reason, message: message}}), do: {reason, message}
  defp outcome({:error, reason}), do: {reason, inspect(reason)}

  # The same DescribeInstances as a hand-written HTTP request from pure Erlang code: the
  # noise floor of this VM on this (shared) machine under the same load, with no native
  # code involved. Answers `{:ok, instance_count}`.
  defp raw_describe(port) do
    body =
      "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aapp&Filter.1.Value.1=p1"

    with {:ok, socket} <- :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false]),
         :ok <- :gen_tcp.send(socket, ec2_request(port, body)),
         {:ok, response} <- recv_response(socket, "") do
      :gen_tcp.close(socket)

      if String.starts_with?(response, "HTTP/1.1 200"),
        do: {:ok, length(:binary.matches(response, "<instanceId>"))},
        else: {:error, :bad_response}
    end
  end

  # The proxy keeps the connection open after answering, so read by Content-Length.
  defp recv_response(socket, acc) do
    with [head, body] <- :binary.split(acc, "\r\n\r\n"),
         [_, length] <- Regex.run(~r/\r\ncontent-length:\s*(\d+)/i, head),
         true <- byte_size(body) >= String.to_integer(length) do
      {:ok, acc}
    else
      _ ->
        case :gen_tcp.recv(socket, 0, 120_000) do
          {:ok, data} -> recv_response(socket, acc <> data)
          {:error, _} = error -> error
        end
    end
  end

  defp collect(events) do
    receive do
      {:monitor, who, :long_schedule, info} -> collect([{who, info} | events])
      {:events, to} -> send(to, {:events, Enum.reverse(events)})
    end
  end

  # Calls whose [started, finished] intervals overlap at the busiest moment.
  defp peak_in_flight(done) do
    done
    |> Enum.flat_map(fn {_, s, f, _} -> [{s, 1}, {f, -1}] end)
    # At equal times count the end first, so back-to-back calls do not look concurrent.
    |> Enum.sort_by(fn {t, d} -> {t, d} end)
    |> Enum.reduce({0, 0}, fn {_, d}, {cur, peak} -> {cur + d, max(peak, cur + d)} end)
    |> elem(1)
  end

  defp now, do: System.monotonic_time(:microsecond)

  # long_schedule measures wall time, so a scheduler thread the OS takes off its core
  # (this machine is shared) shows up as a long schedule of whatever process it was
  # running. The kernel's count of involuntary context switches of the scheduler
  # threads tells how often that happened.
  defp scheduler_preemptions do
    dir = "/proc/#{System.pid()}/task"

    dir
    |> File.ls!()
    |> Enum.map(fn tid ->
      with {:ok, comm} <- File.read(Path.join([dir, tid, "comm"])),
           true <- comm =~ ~r/^\d+_scheduler$/,
           {:ok, status} <- File.read(Path.join([dir, tid, "status"])),
           [_, n] <- Regex.run(~r/nonvoluntary_ctxt_switches:\s+(\d+)/, status) do
        String.to_integer(n)
      else
        _ -> 0
      end
    end)
    |> Enum.sum()
  end

  defp header do
    IO.puts("""
    P1 schedulers: #{@calls} concurrent DescribeInstances calls (#{@instances} instances \
    per answer) through a fault proxy delaying each request #{@delay} ms
    #{System.schedulers_online()} schedulers online; NIF build profile: #{profile()}; \
    load average #{load()}
    long_schedule events counted in this VM (>= 1 ms), split into the #{@calls} caller \
    processes vs any other process
    """)
  end

  defp report(name, r) do
    errors =
      Enum.map_join(r.errors, "", fn {reason, [_ | _] = all} -> " #{reason}=#{length(all)}" end)

    IO.puts(
      "#{String.pad_trailing(name, 34)} long_schedule=#{r.events} " <>
        "(callers #{r.from_callers}, other #{r.other}) max=#{r.max_ms} ms sum=#{r.total_ms} ms  " <>
        "wall=#{Float.round(r.wall_ms / 1.0e6, 2)} s  peak in flight=#{r.peak}  " <>
        "ok=#{r.ok}/#{@calls}  proxied DescribeInstances=#{r.proxied}  " <>
        "scheduler threads preempted by the OS=#{r.preempted}#{errors}"
    )

    for {reason, [message | _]} <- r.errors, do: IO.puts("    #{reason}, e.g.: #{message}")

    for {_who, info} <- r.sample do
      IO.puts(
        "    longest: #{info[:timeout]} ms, scheduled in at #{inspect(info[:in])}, " <>
          "out at #{inspect(info[:out])}"
      )
    end
  end
end

Bench.Schedulers.run()
