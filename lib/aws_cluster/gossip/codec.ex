defmodule AWSCluster.Gossip.Codec do
  @moduledoc """
  Seals and opens gossip packets. The only caller of the `gossip_*` NIFs.

  The packet format (version byte, label tag, key id, random nonce, ChaCha20-Poly1305
  ciphertext of the payload, tag; at most 1,400 bytes) is documented byte by byte in
  `native/aws_cluster_core/src/gossip/mod.rs`.

  A key ring is derived once from the secrets and a cluster label; the first secret
  seals, every secret opens. A replay guard belongs to one receiver and remembers, per
  sender, which (boot id, seq) pairs it has accepted.

  `open/4` never creates atoms from packet data: a message's name and metadata are
  binaries, and every rejection is one of `reasons/0`.
  """

  alias AWSCluster.{Error, Native}

  @typedoc "A key ring (NIF resource)."
  @type keyring :: reference()
  @typedoc "A replay guard (NIF resource)."
  @type guard :: reference()
  @type kind :: :announce | :leave

  @typedoc """
  What a packet says: its kind, the sender's node name, the sender's boot id and per-boot
  sequence number, the sender's clock (unix ms) and up to 4 metadata entries.
  """
  @type message :: %{
          kind: kind(),
          name: String.t(),
          boot_id: non_neg_integer(),
          seq: non_neg_integer(),
          timestamp: non_neg_integer(),
          meta: %{optional(String.t()) => String.t()}
        }

  @typedoc "Why `open/4` dropped a packet."
  @type reason ::
          :too_short
          | :too_large
          | :bad_version
          | :wrong_label
          | :unknown_key
          | :auth_failed
          | :malformed
          | :bad_name
          | :stale
          | :future
          | :replayed
          | :too_many_senders
          | :internal

  @reasons [
    :too_short,
    :too_large,
    :bad_version,
    :wrong_label,
    :unknown_key,
    :auth_failed,
    :malformed,
    :bad_name,
    :stale,
    :future,
    :replayed,
    :too_many_senders,
    :internal
  ]

  @max_u64 0xFFFF_FFFF_FFFF_FFFF

  @doc "Shortest secret accepted without `insecure: true`."
  @spec min_secret_bytes() :: pos_integer()
  def min_secret_bytes, do: 32

  @doc "The largest packet this codec sends or accepts."
  @spec max_packet() :: pos_integer()
  def max_packet, do: 1400

  @doc "Every reason `open/4` can return, in the order the checks run."
  @spec reasons() :: [reason()]
  def reasons, do: @reasons

  @doc """
  Derives a key ring from `secrets` (binaries, first one seals) for `label`.

  Secrets shorter than #{32} bytes are refused unless `insecure: true`. Errors are
  `:invalid_argument` and name the secret by position, never by content.
  """
  @spec keyring([binary()], binary(), keyword()) :: {:ok, keyring()} | {:error, Error.t()}
  def keyring(secrets, label, opts \\ []) do
    insecure = Keyword.get(opts, :insecure, false) == true

    cond do
      not (is_list(secrets) and Enum.all?(secrets, &is_binary/1)) ->
        invalid(:secrets, "secrets must be a list of binaries")

      not is_binary(label) ->
        invalid(:label, "label must be a binary, got #{inspect(label)}")

      true ->
        Error.wrap(Native.gossip_keyring_new(secrets, label, insecure))
    end
  end

  @doc "The ring's key ids as hex strings, sealing key first. Safe to log."
  @spec key_ids(keyring()) :: [String.t()]
  def key_ids(ring),
    do: Enum.map(Native.gossip_keyring_ids(ring), &Base.encode16(&1, case: :lower))

  @doc """
  A replay guard tracking at most `max_senders` senders, accepting timestamps within
  `window_ms` of the receiver's clock.
  """
  @spec replay_guard(pos_integer(), pos_integer()) :: guard()
  def replay_guard(max_senders, window_ms)
      when is_integer(max_senders) and max_senders > 0 and is_integer(window_ms) and
             window_ms > 0 do
    Native.gossip_replay_new(max_senders, window_ms)
  end

  @doc """
  Seals `message` (see `t:message/0`; `:timestamp` defaults to now, `:meta` to `%{}`,
  `:name` may be an atom) with the ring's first key.
  """
  @spec seal(keyring(), map()) :: {:ok, binary()} | {:error, Error.t()}
  def seal(ring, %{kind: kind, name: name, boot_id: boot_id, seq: seq} = message) do
    name = if is_atom(name), do: Atom.to_string(name), else: name
    timestamp = Map.get(message, :timestamp) || System.os_time(:millisecond)
    meta = Map.get(message, :meta, %{})

    cond do
      kind not in [:announce, :leave] ->
        invalid(:kind, "kind must be :announce or :leave")

      not is_binary(name) ->
        invalid(:name, "name must be a string or atom")

      not u64?(boot_id) ->
        invalid(:boot_id, "boot_id must be an unsigned 64-bit integer")

      not u64?(seq) ->
        invalid(:seq, "seq must be an unsigned 64-bit integer")

      not u64?(timestamp) ->
        invalid(:timestamp, "timestamp must be unix milliseconds")

      not meta?(meta) ->
        invalid(:meta, "meta must be a map of strings to strings")

      true ->
        Error.wrap(
          Native.gossip_seal(ring, kind, name, boot_id, seq, timestamp, Map.to_list(meta))
        )
    end
  end

  @doc """
  Opens `packet`: size, version, label, key, AEAD, payload, timestamp window, then replay
  through `guard` (or no replay check with `nil`, timestamp window 30 s). `now` is the
  receiver's clock in unix ms.
  """
  @spec open(keyring(), guard() | nil, binary(), non_neg_integer()) ::
          {:ok, message()} | {:error, reason()}
  def open(ring, guard, packet, now \\ System.os_time(:millisecond))

  def open(ring, guard, packet, now) when is_binary(packet) and is_integer(now) and now >= 0 do
    Native.gossip_open(ring, guard, packet, now)
  end

  def open(_ring, _guard, _packet, _now), do: {:error, :malformed}

  defp u64?(n), do: is_integer(n) and n >= 0 and n <= @max_u64

  defp meta?(meta) when is_map(meta),
    do: Enum.all?(meta, fn {k, v} -> is_binary(k) and is_binary(v) end)

  defp meta?(_), do: false

  defp invalid(key, text), do: {:error, Error.new(:invalid_argument, text, %{key: key})}
end
