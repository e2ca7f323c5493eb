defmodule AWSCluster.Test.RegistryRows do
  @moduledoc """
  Registry rows as a writer with the secret would make them, computed here apart from
  the NIF: HMAC-SHA256 with the key HKDF-SHA256(salt = cluster, ikm = secret,
  info = "aws_cluster registry row v1"), over the length-prefixed fields (NULL as
  0xFFFFFFFF), as `AWSCluster.Registry` documents. A row the NIF accepts proves the two
  agree; the same row with a bad name shows the name check is what refuses it.
  """

  @doc "The hex MAC of a row with boot id `b`, version `0.1.0` and no AZ, instance or group."
  @spec mac(String.t(), String.t(), String.t(), String.t()) :: String.t()
  def mac(secret, cluster, node, address) do
    prk = :crypto.mac(:hmac, :sha256, cluster, secret)
    key = :crypto.mac(:hmac, :sha256, prk, "aws_cluster registry row v1" <> <<1>>)

    field = fn
      nil -> <<0xFFFFFFFF::32>>
      text -> <<byte_size(text)::32, text::binary>>
    end

    data = Enum.map([cluster, node, address, nil, nil, nil, "b", "0.1.0"], field)
    :crypto.mac(:hmac, :sha256, key, data) |> Base.encode16(case: :lower)
  end
end
