defmodule AWSCluster.Test.RegistryRows do
  @moduledoc """
  Registry rows as a writer with the secret would make them, computed here apart from
  the NIF: HMAC-SHA256 with the key HKDF-SHA256(salt = cluster, ikm = secret,
  info = "aws_cluster registry row v2"), over the length-prefixed fields (NULL as
  0xFFFFFFFF) and then the signed time (ms, 8 bytes big-endian), as
  `AWSCluster.Registry` documents. A row the NIF accepts proves the two agree; the same
  row with a bad name or an old time shows that check is what refuses it.
  """

  @doc """
  The hex MAC of a row with boot id `b`, version `0.1.0`, no AZ, instance or group,
  signed at `stamp_ms`.
  """
  @spec mac(String.t(), String.t(), String.t(), String.t(), integer()) :: String.t()
  def mac(secret, cluster, node, address, stamp_ms) do
    prk = :crypto.mac(:hmac, :sha256, cluster, secret)
    key = :crypto.mac(:hmac, :sha256, prk, "aws_cluster registry row v2" <> <<1>>)

    field = fn
      nil -> <<0xFFFFFFFF::32>>
      text -> <<byte_size(text)::32, text::binary>>
    end

    data = Enum.map([cluster, node, address, nil, nil, nil, "b", "0.1.0"], field)

    :crypto.mac(:hmac, :sha256, key, [data, <<stamp_ms::signed-64>>])
    |> Base.encode16(case: :lower)
  end
end
