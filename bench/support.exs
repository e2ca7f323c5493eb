# Helpers shared by the benches; each bench loads this file with
# `Code.require_file("support.exs", __DIR__)` and imports `Bench.Support`.

defmodule Bench.Support do
  @moduledoc "What every bench prints about its conditions, and /proc readings of a process."

  @doc "The NIF build profile the figures come from, as a line for the report."
  @spec profile() :: String.t()
  def profile do
    # The compiler's own rule (native/build.exs, loaded by mix.exs), so the report names
    # the library this run really loaded.
    case AWSCluster.NativeBuild.profile() do
      "dev" -> "dev (SDK code unoptimized; figures for release builds will differ)"
      "release" -> "release"
    end
  end

  @doc """
  The 1, 5 and 15 minute load averages. The machine is shared: the load says how much
  the figures can be trusted.
  """
  @spec load() :: String.t()
  def load,
    do: "/proc/loadavg" |> File.read!() |> String.split() |> Enum.take(3) |> Enum.join(" ")

  @doc "`bytes` in MiB with one decimal."
  @spec mb(number()) :: String.t()
  def mb(bytes), do: :erlang.float_to_binary(bytes / 1_048_576, decimals: 1)

  @doc """
  A hand-written EC2 Query API POST of form `body` to moto on `127.0.0.1:port`, with
  `Connection: close`: the pure-Erlang baseline the benches compare the NIF with.
  """
  @spec ec2_request(:inet.port_number(), binary()) :: iodata()
  def ec2_request(port, body) do
    [
      "POST / HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nConnection: close\r\n",
      "Content-Type: application/x-www-form-urlencoded; charset=utf-8\r\n",
      # moto routes by the credential scope; it does not check the signature.
      "Authorization: AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/ec2/aws4_request, ",
      "SignedHeaders=host, Signature=0\r\n",
      "Content-Length: #{byte_size(body)}\r\n\r\n",
      body
    ]
  end

  @doc "The kB figure of `key` (`\"VmRSS\"`, `\"VmHWM\"` ...) in /proc/<os_pid>/status."
  @spec status_kb(String.t() | non_neg_integer(), String.t()) :: non_neg_integer() | nil
  def status_kb(os_pid, key) do
    "/proc/#{os_pid}/status"
    |> File.read!()
    |> String.split("\n")
    |> Enum.find_value(fn line ->
      case String.split(line, ":", parts: 2) do
        [^key, rest] -> rest |> String.split() |> hd() |> String.to_integer()
        _ -> nil
      end
    end)
  end
end
