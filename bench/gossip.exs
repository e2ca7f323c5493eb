# Gossip seal+open through the NIF against a pure-Elixir baseline in the same run:
# :crypto ChaCha20-Poly1305 (the same cipher) plus :erlang.term_to_binary for the payload.
# Also counts scheduler long_schedule events (>= 1 ms) while 1M packets go through each.
#
#   MIX_ENV=test mix run bench/gossip.exs            # 1M packets per side
#   GOSSIP_BENCH_PACKETS=200000 mix run bench/gossip.exs
#
# The baseline does less than the NIF: no label tag / key id checks, no name validation,
# no timestamp window, no replay guard.

alias AWSCluster.Gossip.Codec

defmodule GossipBench do
  @key :crypto.strong_rand_bytes(32)
  @label "bench"

  def message(seq) do
    %{
      kind: :announce,
      name: "chat_server_01@127.0.0.1",
      boot_id: 0xB007_B007_B007_B007,
      seq: seq,
      timestamp: System.os_time(:millisecond),
      meta: %{
        "az" => "us-east-1a",
        "instance_id" => "i-0123456789abcdef0",
        "zone_id" => "use1-az1",
        "role" => "chat-frontend-blue-green-canary-v2"
      }
    }
  end

  def nif_setup do
    {:ok, ring} = Codec.keyring([:crypto.strong_rand_bytes(32)], @label)
    {ring, Codec.replay_guard(16, 30_000)}
  end

  def nif_one({ring, guard}, seq) do
    {:ok, packet} = Codec.seal(ring, message(seq))
    {:ok, %{seq: ^seq}} = Codec.open(ring, guard, packet)
    byte_size(packet)
  end

  def baseline_one(_setup, seq) do
    payload = :erlang.term_to_binary(message(seq))
    iv = :crypto.strong_rand_bytes(12)
    header = <<1, 0::64, iv::binary>>
    aad = header <> @label

    {ct, tag} = :crypto.crypto_one_time_aead(:chacha20_poly1305, @key, iv, payload, aad, true)

    packet = header <> ct <> tag

    <<1, _::64, iv2::binary-12, rest::binary>> = packet
    ct_len = byte_size(rest) - 16
    <<ct2::binary-size(ct_len), tag2::binary-16>> = rest

    plain = :crypto.crypto_one_time_aead(:chacha20_poly1305, @key, iv2, ct2, aad, tag2, false)

    %{seq: ^seq} = :erlang.binary_to_term(plain, [:safe])
    byte_size(packet)
  end

  # Runs `n` packets in a fresh process while this one collects long_schedule events.
  def run(label, n, setup_fun, one_fun) do
    parent = self()
    :erlang.system_monitor(parent, [{:long_schedule, 1}])

    {worker, ref} =
      spawn_monitor(fn ->
        setup = setup_fun.()
        size = one_fun.(setup, 0)
        t0 = System.monotonic_time()
        Enum.each(1..n, &one_fun.(setup, &1))
        t1 = System.monotonic_time()
        send(parent, {:done, size, System.convert_time_unit(t1 - t0, :native, :microsecond)})
      end)

    {size, us} =
      receive do
        {:done, size, us} -> {size, us}
      end

    receive do
      {:DOWN, ^ref, _, _, _} -> :ok
    end

    :erlang.system_monitor(:undefined)
    longs = drain(worker, 0, 0)
    pps = n / (us / 1_000_000)

    IO.puts(
      "#{String.pad_trailing(label, 10)} packet #{size} B  #{n} packets in #{div(us, 1000)} ms  " <>
        "#{round(pps)} packets/s  #{Float.round(us / n, 2)} us/packet  " <>
        "long_schedule >=1ms: #{elem(longs, 0)} (worker), #{elem(longs, 1)} (any process)"
    )

    pps
  end

  defp drain(worker, mine, all) do
    receive do
      {:monitor, ^worker, :long_schedule, _} -> drain(worker, mine + 1, all + 1)
      {:monitor, _, :long_schedule, _} -> drain(worker, mine, all + 1)
    after
      0 -> {mine, all}
    end
  end

  def per_call(label, n, fun) do
    t0 = System.monotonic_time()
    Enum.each(1..n, fn i -> fun.(i) end)
    us = System.convert_time_unit(System.monotonic_time() - t0, :native, :nanosecond) / n / 1000
    IO.puts("  #{String.pad_trailing(label, 26)} #{Float.round(us, 2)} us/call")
  end
end

n = String.to_integer(System.get_env("GOSSIP_BENCH_PACKETS", "1000000"))

IO.puts("gossip bench: #{n} packets each, #{System.schedulers_online()} schedulers")
IO.puts("per call (NIF, for the scheduler choice):")
{ring, guard} = GossipBench.nif_setup()
secret = :crypto.strong_rand_bytes(32)
GossipBench.per_call("gossip_keyring_new", 2_000, fn _ -> Codec.keyring([secret], "bench") end)

GossipBench.per_call("gossip_seal", 50_000, fn i ->
  Codec.seal(ring, GossipBench.message(i))
end)

{:ok, packet} = Codec.seal(ring, GossipBench.message(1))

GossipBench.per_call("gossip_open (replay hit)", 50_000, fn _ ->
  Codec.open(ring, guard, packet)
end)

GossipBench.per_call("gossip_open (no guard)", 50_000, fn _ -> Codec.open(ring, nil, packet) end)
junk = :crypto.strong_rand_bytes(byte_size(packet))
GossipBench.per_call("gossip_open (junk)", 50_000, fn _ -> Codec.open(ring, guard, junk) end)

nif = GossipBench.run("nif", n, &GossipBench.nif_setup/0, &GossipBench.nif_one/2)
base = GossipBench.run("baseline", n, fn -> nil end, &GossipBench.baseline_one/2)
IO.puts("ratio nif/baseline: #{Float.round(nif / base, 2)}x packets/s")
