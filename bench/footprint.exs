# P6, footprint: OS threads and RSS the NIF and its tokio runtime add to an idle BEAM.
#
#   MIX_ENV=test mix run bench/footprint.exs
#   AWS_CLUSTER_NIF_PROFILE=release MIX_ENV=test mix run bench/footprint.exs   # release NIF
#
# (a cold release build of the AWS SDK takes 20+ min on a 2-core machine; the default is
# the dev profile, which the output names; its unoptimized library with debuginfo is far
# larger than a release build). Needs the venv of `bash script/setup`.
#
# Snapshots of this VM (/proc/<pid>/task count with thread names, VmRSS from
# /proc/<pid>/status, :erlang.memory(:total)) after settling (GC + 1 s idle):
#   baseline  moto running, AWSCluster.Native not loaded yet (same VM, same run)
#   loaded    NIF library loaded, runtime not started (runtime_workers() == 0)
#   in use    client built and one DescribeInstances answered, idle 1 s
#   idle 11s  11 s later: tokio retires idle blocking-pool threads after 10 s
# moto and the seeder are separate OS processes, started before the baseline.

Code.require_file("support.exs", __DIR__)

defmodule Bench.Footprint do
  import Bench.Support, only: [mb: 1, profile: 0, status_kb: 2]

  alias AWSCluster.{AWS, Native}
  alias AWSCluster.Test.Moto

  def run do
    Moto.fresh!()
    Moto.run_instances!([%{ip: "127.0.1.60", tags: %{"app" => "p6"}}])
    preloaded = :code.is_loaded(Native) != false

    base = snapshot()
    {:module, Native} = Code.ensure_loaded(Native)
    0 = Native.runtime_workers()
    loaded = snapshot()

    {:ok, client} = AWS.client(Moto.client_opts())
    {:ok, [_]} = AWS.describe_instances(client, %{"tag:app" => "p6"})
    workers = Native.runtime_workers()
    in_use = snapshot()
    Process.sleep(10_000)
    idle = snapshot()

    IO.puts("""
    P6 footprint of this BEAM (#{System.schedulers_online()} schedulers, OTP \
    #{System.otp_release()}); NIF build profile: #{profile()}
    runtime workers reported by the NIF: #{workers}#{if preloaded, do: "; NOTE: the NIF was already loaded at start, so baseline includes the library", else: ""}
    """)

    row("baseline (NIF not loaded)", base)
    row("NIF loaded, runtime idle", loaded)
    row("client + 1 call, idle 1 s", in_use)
    row("same, idle 11 s", idle)

    IO.puts("")
    delta("loading the library", base, loaded)
    delta("runtime + client + call (1 s)", loaded, in_use)
    delta("runtime + client + call (11 s)", loaded, idle)
    delta("total added at idle (11 s)", base, idle)
  end

  defp snapshot do
    for pid <- Process.list(), do: :erlang.garbage_collect(pid)
    Process.sleep(1_000)
    dir = "/proc/#{System.pid()}/task"
    tasks = File.ls!(dir)

    names =
      tasks
      |> Enum.map(fn tid ->
        case File.read(Path.join([dir, tid, "comm"])) do
          {:ok, name} -> String.trim(name)
          # A thread that ended between listing and reading.
          {:error, _} -> "?"
        end
      end)
      |> Enum.frequencies()

    %{
      threads: length(tasks),
      names: names,
      rss: status_kb(System.pid(), "VmRSS"),
      erlang: :erlang.memory(:total)
    }
  end

  defp row(name, s) do
    IO.puts(
      "#{String.pad_trailing(name, 28)} threads #{String.pad_leading("#{s.threads}", 3)}  " <>
        "VmRSS #{mb(s.rss * 1024)} MB  :erlang.memory(:total) #{mb(s.erlang)} MB"
    )
  end

  defp delta(name, from, to) do
    added =
      to.names
      |> Enum.map(fn {n, c} -> {n, c - Map.get(from.names, n, 0)} end)
      |> Enum.reject(fn {_, c} -> c == 0 end)
      |> Enum.map_join(", ", fn {n, c} -> "#{n} #{if c > 0, do: "+"}#{c}" end)

    IO.puts(
      "#{String.pad_trailing(name, 31)} threads #{signed(to.threads - from.threads)}  " <>
        "VmRSS #{signed_mb((to.rss - from.rss) * 1024)} MB" <>
        if(added == "", do: "", else: "  (by name: #{added})")
    )
  end

  defp signed(n) when n >= 0, do: "+#{n}"
  defp signed(n), do: "#{n}"

  defp signed_mb(bytes) when bytes >= 0, do: "+" <> mb(bytes)
  defp signed_mb(bytes), do: mb(bytes)
end

Bench.Footprint.run()
