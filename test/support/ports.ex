defmodule AWSCluster.Test.Ports do
  @moduledoc "Free loopback ports for test listeners (the gossip receivers)."

  @doc "A UDP port free on `ip` (default 127.0.0.1) at the time of the call."
  @spec udp(:inet.ip_address()) :: :inet.port_number()
  def udp(ip \\ {127, 0, 0, 1}) do
    {:ok, socket} = :gen_udp.open(0, [:binary, ip: ip])
    {:ok, port} = :inet.port(socket)
    :gen_udp.close(socket)
    port
  end
end
