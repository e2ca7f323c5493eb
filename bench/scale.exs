# P4, scale: one discovery round over 10,000 instances (1,000 of them tagged app=bench)
# through the EC2 strategy, against boto3's DescribeInstances paginator on the same moto,
# with peak memory of both processes.
#
#   MIX_ENV=test mix run bench/scale.exs
#   AWS_CLUSTER_NIF_PROFILE=release MIX_ENV=test mix run bench/scale.exs   # release NIF
#
# (a cold release build of the AWS SDK takes 20+ min on a 2-core machine; the default is
# the dev profile, which the output names). Needs the venv of `bash script/setup`.
# BENCH_ROUNDS (default 2) timed rounds per side after one warm-up round each;
# BENCH_TOTAL / BENCH_MATCHING (10000 / 1000) shrink the fleet for a quick try.
#
# Seeding 10,000 instances into moto takes minutes; it is done once and timed.
# moto's cost shapes the fleet: for every page it filters all 10,000 instances, and its
# tag lookup scans every tagged resource (quadratic), so one page with tag filters over
# 10,000 tagged instances takes minutes here. Hence the 9,000 others carry no tags (no
# effect on what AWS would return) and the 1,000 matching share 10 reservations, which
# moto (paging by 100 reservations) returns in one page. Pagination itself is proven by
# test/aws_cluster/aws_test.exs at 1,200 instances.
#
# Ours: AWSCluster.Strategy.EC2.discover/1 (validated config, client built once, as the
# poller runs it): every page, parsing, conversion to Elixir maps and node names.
# boto3: the paginator loop collecting instance ids, timed inside a Python process that
# stays up for the whole run (imports and client creation excluded). Floor: the same
# pages fetched with hand-written HTTP requests from this VM, not parsed: moto's own
# cost. Rounds are interleaved (ours, boto3, floor, ours, ...) so that the load of this
# shared machine falls on all three alike.
#
# Peak memory: for each timed round the process's peak RSS (VmHWM) is reset first
# (`5` written to /proc/<pid>/clear_refs) and read after, so no sampler perturbs the
# round; the NIF's Rust allocations show only there. :erlang.memory(:total) is sampled
# every 20 ms during our rounds.

Code.require_file("support.exs", __DIR__)

defmodule Bench.Scale do
  import Bench.Support, only: [ec2_request: 2, load: 0, mb: 1, profile: 0, status_kb: 2]

  alias AWSCluster.Probe
  alias AWSCluster.Strategy.EC2
  alias AWSCluster.Test.Moto

  @total String.to_integer(System.get_env("BENCH_TOTAL", "10000"))
  @matching String.to_integer(System.get_env("BENCH_MATCHING", "1000"))
  @matching_per_reservation 100
  @rounds String.to_integer(System.get_env("BENCH_ROUNDS", "2"))

  def run do
    load0 = load()
    Moto.fresh!()
    seed_seconds = seed()

    spec = [
      strategy: EC2,
      config:
        Moto.client_opts(operation_timeout: 300_000) ++
          [tags: %{"app" => "bench"}, node_basename: "bench"]
    ]

    {:ok, EC2, state, config} = Probe.validate(:bench, spec)
    {:ok, strategy_state} = EC2.init(config, state)
    python = python_start()

    # Warm-up: connections opened, code and models loaded, both answers checked.
    {:ok, warm} = EC2.discover(strategy_state)
    true = length(warm) == @matching
    %{count: @matching} = python_round(python)

    rounds =
      for _ <- 1..@rounds do
        %{ours: ours_round(strategy_state), boto3: python_round(python), floor: floor_round()}
      end

    Port.close(python)
    ours = Enum.map(rounds, & &1.ours)
    boto3 = Enum.map(rounds, & &1.boto3)
    floor = Enum.map(rounds, & &1.floor)

    IO.puts("""

    P4 scale: #{@total} instances in moto, #{@matching} match tag app=bench \
    (seeding took #{seed_seconds} s); #{@rounds} timed rounds per side, interleaved, \
    after one warm-up round
    NIF build profile: #{profile()}; #{System.schedulers_online()} schedulers online; \
    load average at start #{load0}, now #{load()}
    """)

    # The same query on the same moto: the pages the floor walks are the ones ours reads.
    pages = hd(floor).pages
    line("EC2.discover/1 (ours)", ours, "#{@matching} peers, #{pages} page(s)")
    line("boto3 paginator (baseline)", boto3, "#{hd(boto3).count} instances")
    line("floor: raw HTTP, no parsing", floor, "#{hd(floor).count} instances")

    {o, b, f} = {median(ours), median(boto3), median(floor)}

    IO.puts(
      "ratio ours/boto3 (medians): #{ratio(o, b)}; " <>
        "above the floor (ours - floor)/(boto3 - floor): #{ratio(o - f, b - f)}"
    )

    {o_peak, b_peak} = {Enum.max_by(ours, & &1.rss_added), Enum.max_by(boto3, & &1.rss_added)}

    IO.puts("""

    peak memory in the timed round that grew most
      BEAM (this VM)  VmRSS #{mb(o_peak.rss_before)} MB before, peak (VmHWM) \
    #{mb(o_peak.rss_peak)} MB: +#{mb(o_peak.rss_added)} MB; :erlang.memory(:total) \
    #{mb(o_peak.mem_before)} MB before, sampled peak #{mb(o_peak.mem_peak)} MB: \
    +#{mb(o_peak.mem_peak - o_peak.mem_before)} MB
      python (boto3)  VmRSS #{mb(b_peak.rss_before)} MB before, peak (VmHWM) \
    #{mb(b_peak.rss_peak)} MB: +#{mb(b_peak.rss_added)} MB
    """)
  end

  defp seed do
    t0 = System.monotonic_time(:millisecond)

    matching =
      Moto.bulk_instances!(@matching, %{"app" => "bench"},
        per_reservation: @matching_per_reservation
      )

    true = length(matching) == @matching

    # In chunks, so no single seeder call comes near its timeout.
    others =
      (@total - @matching)
      |> chunks(1_000)
      |> Enum.reduce(0, fn n, acc ->
        acc + length(Moto.bulk_instances!(n, %{}, per_reservation: 100))
      end)

    true = others == @total - @matching
    Float.round((System.monotonic_time(:millisecond) - t0) / 1000, 1)
  end

  defp chunks(0, _size), do: []
  defp chunks(n, size) when n <= size, do: [n]
  defp chunks(n, size), do: [size | chunks(n - size, size)]

  # ── ours ──────────────────────────────────────────────────────────────────────────

  defp ours_round(strategy_state) do
    :erlang.garbage_collect()
    pid = System.pid()
    reset_hwm(pid)
    rss_before = status_kb(pid, "VmRSS") * 1024
    mem_before = :erlang.memory(:total)
    sampler = spawn_link(fn -> sample(mem_before) end)
    {us, {:ok, peers}} = :timer.tc(fn -> EC2.discover(strategy_state) end)
    rss_peak = status_kb(pid, "VmHWM") * 1024
    send(sampler, {:peak, self()})
    mem_peak = receive(do: ({:peak, m} -> m))
    true = length(peers) == @matching

    %{
      ms: us / 1000,
      rss_before: rss_before,
      rss_peak: rss_peak,
      rss_added: rss_peak - rss_before,
      mem_before: mem_before,
      mem_peak: mem_peak
    }
  end

  defp sample(peak) do
    receive do
      {:peak, to} -> send(to, {:peak, peak})
    after
      20 -> sample(max(peak, :erlang.memory(:total)))
    end
  end

  # ── boto3 ─────────────────────────────────────────────────────────────────────────

  # One command per line on stdin: "round" answers "<ms> <count> <rss_before_kb> <hwm_kb>".
  @python ~S"""
  import sys, time, warnings
  warnings.filterwarnings("ignore")
  import boto3

  ec2 = boto3.client("ec2", endpoint_url=sys.argv[1], region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing")
  filters = [{"Name": "tag:app", "Values": ["bench"]},
             {"Name": "instance-state-name", "Values": ["running"]}]

  def status(key):
      with open("/proc/self/status") as f:
          for line in f:
              if line.startswith(key + ":"):
                  return int(line.split()[1])

  def discover():
      ids = []
      for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
          for reservation in page["Reservations"]:
              for instance in reservation["Instances"]:
                  ids.append(instance["InstanceId"])
      return ids

  for command in sys.stdin:
      with open("/proc/self/clear_refs", "w") as f:
          f.write("5")
      before = status("VmRSS")
      t = time.perf_counter()
      ids = discover()
      ms = (time.perf_counter() - t) * 1000
      print(ms, len(ids), before, status("VmHWM"), flush=True)
      del ids
  """

  defp python_start do
    venv = System.get_env("AWS_CLUSTER_VENV") || Path.expand("~/.cache/aws_cluster/venv")

    Port.open({:spawn_executable, Path.join([venv, "bin", "python"])}, [
      :binary,
      :exit_status,
      {:line, 1024},
      args: ["-c", @python, Moto.endpoint()]
    ])
  end

  defp python_round(port) do
    true = Port.command(port, "round\n")

    receive do
      {^port, {:data, {:eol, line}}} ->
        [ms, count, before, hwm] = String.split(line)
        {ms, ""} = Float.parse(ms)
        rss_before = String.to_integer(before) * 1024
        rss_peak = String.to_integer(hwm) * 1024

        %{
          ms: ms,
          count: String.to_integer(count),
          rss_before: rss_before,
          rss_peak: rss_peak,
          rss_added: rss_peak - rss_before
        }

      {^port, {:exit_status, code}} ->
        raise "the boto3 process exited with status #{code}"
    after
      600_000 -> raise "no answer from the boto3 process within 10 min"
    end
  end

  # ── floor ─────────────────────────────────────────────────────────────────────────

  defp floor_round do
    {us, {count, pages}} = :timer.tc(fn -> raw_pages(nil, 0, 0) end)
    true = count == @matching
    %{ms: us / 1000, count: count, pages: pages}
  end

  defp raw_pages(token, count, pages) do
    next = if token, do: "&NextToken=" <> URI.encode_www_form(token), else: ""

    body =
      "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Aapp&Filter.1.Value.1=bench" <>
        "&Filter.2.Name=instance-state-name&Filter.2.Value.1=running" <> next

    {200, xml} = post(body)
    count = count + length(:binary.matches(xml, "<instanceId>"))

    case Regex.run(~r{<nextToken>([^<]+)</nextToken>}, xml) do
      [_, token] -> raw_pages(token, count, pages + 1)
      nil -> {count, pages + 1}
    end
  end

  defp post(body) do
    port = Moto.port()
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000)

    :ok = :gen_tcp.send(socket, ec2_request(port, body))

    {:ok, response} = recv_all(socket, [])
    [head, xml] = :binary.split(response, "\r\n\r\n")
    ["HTTP/1.1", code | _] = String.split(head, " ", parts: 3)
    {String.to_integer(code), xml}
  end

  defp recv_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 600_000) do
      {:ok, data} -> recv_all(socket, [acc, data])
      {:error, :closed} -> {:ok, IO.iodata_to_binary(acc)}
    end
  end

  # ── output ────────────────────────────────────────────────────────────────────────

  defp line(name, rounds, what) do
    shown = Enum.map_join(rounds, " ", &format_ms(&1.ms))

    IO.puts(
      "#{String.pad_trailing(name, 30)} median #{format_ms(median(rounds))} ms  " <>
        "(rounds: #{shown} ms)  #{what}"
    )
  end

  defp median(rounds) do
    sorted = rounds |> Enum.map(& &1.ms) |> Enum.sort()
    n = length(sorted)

    if rem(n, 2) == 1,
      do: Enum.at(sorted, div(n, 2)),
      else: (Enum.at(sorted, div(n, 2) - 1) + Enum.at(sorted, div(n, 2))) / 2
  end

  defp ratio(_a, b) when b <= 0, do: "n/a"
  defp ratio(a, b), do: "#{Float.round(a / b, 2)}x"

  defp format_ms(ms), do: :erlang.float_to_binary(ms / 1, decimals: 1)

  # Resets the kernel's peak-RSS mark (VmHWM) of `pid` to its current RSS.
  defp reset_hwm(pid), do: File.write!("/proc/#{pid}/clear_refs", "5")
end

Bench.Scale.run()
