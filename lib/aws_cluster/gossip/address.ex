defmodule AWSCluster.Gossip.Address do
  @moduledoc false
  # Parsing the addresses of the gossip options: IPs, multicast groups and seeds
  # (`"10.0.1.5"`, `"10.0.1.5:45910"`, `"[fd00::5]:45910"`, `"host:port"`, `{ip, port}`).

  @doc false
  # Accepts an IP tuple or string; returns the tuple.
  @spec parse_ip(term()) :: {:ok, :inet.ip_address()} | :error
  def parse_ip(ip) do
    case AWSCluster.Config.check(ip, :ip_address) do
      {:ok, ip} -> {:ok, ip}
      {:error, _} -> :error
    end
  end

  @doc false
  @spec parse_multicast(term()) :: {:ok, :inet.ip_address()} | :error
  def parse_multicast(value) do
    case parse_ip(value) do
      {:ok, {a, _, _, _} = ip} when a in 224..239 -> {:ok, ip}
      {:ok, {a, _, _, _, _, _, _, _} = ip} when a in 0xFF00..0xFFFF -> {:ok, ip}
      _ -> :error
    end
  end

  @doc false
  # A seed: `{ip, port}` / ip tuple / "ip" / "ip:port" / "[ip6]:port" / "host:port".
  # Returns `{ip, port | nil}` or `{:host, host, port | nil}`, resolved later.
  @spec parse_seed(term()) :: {:ok, tuple()} | :error
  def parse_seed({ip, port}) when is_integer(port) and port in 1..65_535 do
    case parse_ip(ip) do
      {:ok, ip} -> {:ok, {ip, port}}
      :error -> :error
    end
  end

  def parse_seed(ip) when is_tuple(ip) do
    case parse_ip(ip) do
      {:ok, ip} -> {:ok, {ip, nil}}
      :error -> :error
    end
  end

  def parse_seed(seed) when is_binary(seed) do
    with :error <- plain_ip(seed),
         :error <- bracketed(seed) do
      host_port(seed)
    end
  end

  def parse_seed(_), do: :error

  defp plain_ip(seed) do
    case parse_ip(seed) do
      {:ok, ip} -> {:ok, {ip, nil}}
      :error -> :error
    end
  end

  defp bracketed(seed) do
    with [_, ip, port] <- Regex.run(~r/\A\[([0-9A-Fa-f:.]+)\]:(\d{1,5})\z/, seed),
         {:ok, ip} <- parse_ip(ip),
         {port, ""} when port in 1..65_535 <- Integer.parse(port) do
      {:ok, {ip, port}}
    else
      _ -> :error
    end
  end

  defp host_port(seed) do
    case Regex.run(~r/\A([A-Za-z0-9.-]+)(?::(\d{1,5}))?\z/, seed) do
      [_, host] ->
        {:ok, {:host, host, nil}}

      [_, host, port] ->
        case {parse_ip(host), Integer.parse(port)} do
          {{:ok, ip}, {p, ""}} when p in 1..65_535 -> {:ok, {ip, p}}
          {:error, {p, ""}} when p in 1..65_535 -> {:ok, {:host, host, p}}
          _ -> :error
        end

      nil ->
        :error
    end
  end
end
