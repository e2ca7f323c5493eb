defmodule AWSCluster.Gossip.CodecTest do
  # Through the real NIF: the Rust core has its own unit and mutation tests; these check
  # what crosses the boundary (terms, atoms, errors) and the key ring semantics.
  use ExUnit.Case, async: true

  alias AWSCluster.Error
  alias AWSCluster.Gossip.Codec

  @s1 String.duplicate("1", 32)
  @s2 String.duplicate("2", 32)

  defp ring(secrets, label \\ "prod") do
    {:ok, ring} = Codec.keyring(secrets, label)
    ring
  end

  defp message(overrides \\ %{}) do
    Map.merge(
      %{
        kind: :announce,
        name: "chat@127.0.0.1",
        boot_id: 42,
        seq: 7,
        timestamp: System.os_time(:millisecond),
        meta: %{"az" => "us-east-1a"}
      },
      overrides
    )
  end

  test "a sealed message opens to the same fields, name and meta as binaries" do
    r = ring([@s1])
    m = message(%{kind: :leave, meta: %{"az" => "us-east-1b", "instance_id" => "i-0abc"}})
    {:ok, packet} = Codec.seal(r, m)
    assert byte_size(packet) <= Codec.max_packet()
    assert <<1, _label_tag::binary-4, _key_id::binary-4, _nonce::binary-12, _::binary>> = packet
    assert {:ok, opened} = Codec.open(r, nil, packet)
    assert opened == m
  end

  test "node names may be given as atoms and always come back as binaries" do
    r = ring([@s1])
    {:ok, packet} = Codec.seal(r, message(%{name: :"chat@127.0.0.1"}))
    assert {:ok, %{name: "chat@127.0.0.1"}} = Codec.open(r, nil, packet)
  end

  test "opening never creates atoms from packet data" do
    r = ring([@s1])
    names = for i <- 1..200, do: "fresh#{System.unique_integer([:positive])}x#{i}@127.0.0.1"

    packets =
      for name <- names do
        {:ok, p} = Codec.seal(r, message(%{name: name, meta: %{"k#{rem(i(name), 9)}" => name}}))
        p
      end

    before = :erlang.system_info(:atom_count)
    for p <- packets, do: assert({:ok, _} = Codec.open(r, nil, p))
    assert :erlang.system_info(:atom_count) - before < 5

    for name <- names do
      assert_raise ArgumentError, fn -> String.to_existing_atom(name) end
    end
  end

  defp i(name), do: :erlang.phash2(name)

  test "the first secret seals and every secret opens" do
    old = ring([@s1])
    both = ring([@s2, @s1])
    new = ring([@s2])
    {:ok, from_old} = Codec.seal(old, message())
    {:ok, from_new} = Codec.seal(new, message())
    {:ok, from_both} = Codec.seal(both, message())

    assert {:ok, _} = Codec.open(both, nil, from_old)
    assert {:ok, _} = Codec.open(both, nil, from_new)
    assert {:ok, _} = Codec.open(new, nil, from_both)
    assert {:error, :unknown_key} = Codec.open(old, nil, from_both)
    assert Codec.key_ids(both) == Codec.key_ids(new) ++ Codec.key_ids(old)
    assert [<<_::binary-8>>] = Codec.key_ids(old)
  end

  test "a replay guard accepts each (sender, boot, seq) once" do
    r = ring([@s1])
    guard = Codec.replay_guard(16, 30_000)
    {:ok, p} = Codec.seal(r, message())
    {:ok, resealed} = Codec.seal(r, message())
    assert {:ok, _} = Codec.open(r, guard, p)
    assert {:error, :replayed} = Codec.open(r, guard, p)
    assert {:error, :replayed} = Codec.open(r, guard, resealed)
    # Without a guard there is no replay state, only the timestamp window.
    assert {:ok, _} = Codec.open(r, nil, p)
    # Anything else in the guard's place is a bug, never a silent "no replay check".
    assert_raise ArgumentError, fn -> Codec.open(r, :none, p) end
    assert_raise ArgumentError, fn -> Codec.open(r, r, p) end
  end

  test "each rejection has its own reason" do
    r = ring([@s1])
    now = System.os_time(:millisecond)
    {:ok, good} = Codec.seal(r, message())
    {:ok, foreign_key} = Codec.seal(ring([@s2]), message())
    {:ok, foreign_label} = Codec.seal(ring([@s1], "staging"), message())
    {:ok, stale} = Codec.seal(r, message(%{timestamp: now - 31_000}))
    {:ok, future} = Codec.seal(r, message(%{timestamp: now + 31_000}))
    <<_, rest::binary>> = good
    <<head::binary-30, b, tail::binary>> = good

    cases = [
      {"heartbeat::garbage", :too_short},
      {binary_part(good, 0, 67), :too_short},
      {good <> :binary.copy(<<0>>, 1401 - byte_size(good)), :too_large},
      {<<2, rest::binary>>, :bad_version},
      {foreign_label, :wrong_label},
      {foreign_key, :unknown_key},
      {head <> <<Bitwise.bxor(b, 1)>> <> tail, :auth_failed},
      {stale, :stale},
      {future, :future}
    ]

    for {packet, reason} <- cases do
      assert Codec.open(r, nil, packet, now) == {:error, reason}
    end

    assert Enum.all?(Enum.map(cases, &elem(&1, 1)), &(&1 in Codec.reasons()))
    assert Codec.open(r, nil, :not_a_binary) == {:error, :malformed}
  end

  test "secrets shorter than 32 bytes need insecure, and errors never echo a secret" do
    assert {:error, %Error{reason: :invalid_argument, message: msg, details: details}} =
             Codec.keyring([@s1, "tooshort-secret"], "prod")

    assert msg =~ "secret #1 is 15 bytes"
    refute msg =~ "tooshort"
    assert details.index == 1
    assert {:ok, _} = Codec.keyring(["tooshort-secret"], "prod", insecure: true)
    assert {:error, %Error{reason: :invalid_argument}} = Codec.keyring([], "prod")
    assert {:error, %Error{reason: :invalid_argument}} = Codec.keyring([@s1], "")
    assert {:error, %Error{reason: :invalid_argument}} = Codec.keyring([@s1], "bad\nlabel")
    assert {:error, %Error{reason: :invalid_argument}} = Codec.keyring(:nope, "prod")
  end

  test "seal validates what it is given, naming the field" do
    r = ring([@s1])

    for {overrides, key} <- [
          {%{kind: :hello}, :kind},
          {%{name: 42}, :name},
          {%{boot_id: -1}, :boot_id},
          {%{seq: Bitwise.bsl(1, 64)}, :seq},
          {%{meta: %{az: "x"}}, :meta}
        ] do
      assert {:error, %Error{reason: :invalid_argument, details: %{key: ^key}}} =
               Codec.seal(r, message(overrides))
    end

    for {overrides, key} <- [
          {%{name: "no-at-sign"}, "name"},
          {%{name: "bad name@host"}, "name"},
          {%{meta: %{"AZ" => "x"}}, "meta"},
          {%{meta: %{"az" => String.duplicate("x", 65)}}, "meta"},
          {%{meta: Map.new(1..5, &{"k#{&1}", "v"})}, "meta"}
        ] do
      assert {:error, %Error{reason: :invalid_argument, details: %{key: ^key}}} =
               Codec.seal(r, message(overrides))
    end
  end
end
