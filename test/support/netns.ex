defmodule AWSCluster.Test.Netns do
  @moduledoc """
  Network namespaces the tests create and always remove: test hosts with their own
  interfaces (this kernel has no `dummy` links, so interfaces are veth pairs).
  Names start with `awsc` so a crashed run's leftovers are recognisable.
  """

  @doc "`:ok` when namespaces can be made here, else `{:skip, reason}`."
  def available do
    cond do
      System.find_executable("ip") == nil -> {:skip, "the ip command (iproute2) is missing"}
      uid() != 0 -> {:skip, "creating network namespaces needs root (uid is #{uid()})"}
      true -> :ok
    end
  end

  defp uid do
    {out, 0} = System.cmd("id", ["-u"])
    out |> String.trim() |> String.to_integer()
  end

  @doc "Creates a namespace named after `tag` plus a unique suffix."
  def create!(tag) do
    ns = "awsc#{tag}#{System.unique_integer([:positive])}" |> String.slice(0, 15)
    ip!(["netns", "add", ns])
    ip!(["-n", ns, "link", "set", "lo", "up"])
    ns
  end

  @doc """
  Creates a veth pair whose inside end is `inside_name` in `ns`; returns the outside
  end's name (left in the root namespace).
  """
  def veth_into!(ns, inside_name) do
    outside = "awsv#{System.unique_integer([:positive])}" |> String.slice(0, 15)
    ip!(["link", "add", outside, "type", "veth", "peer", "name", inside_name, "netns", ns])
    outside
  end

  @doc """
  Creates a veth pair from namespace `hub` (end `hub_end`) into `ns` (end `inside_name`);
  both ends stay down.
  """
  def veth_between!(hub, hub_end, ns, inside_name) do
    ip!([
      "-n",
      hub,
      "link",
      "add",
      hub_end,
      "type",
      "veth",
      "peer",
      "name",
      inside_name,
      "netns",
      ns
    ])

    :ok
  end

  @doc """
  A LAN of test hosts: one namespace per address in `ips` (127.x strings), each with an
  `ethwe` on one bridge in a hub namespace. Returns `%{hub: ns, hosts: %{ip => ns}}`.

  A 127.x address only leaves a host through a real interface when the host does not
  own all of 127/8 and accepts such packets: so `lo` keeps only 127.0.0.1/32, ethwe gets
  the address as a /16, and `route_localnet` is on (namespace-local sysctls).
  """
  def lan!(tag, ips) do
    hub = create!(tag <> "h")
    ip!(["-n", hub, "link", "add", "br0", "type", "bridge"])
    ip!(["-n", hub, "link", "set", "br0", "up"])

    hosts =
      ips
      |> Enum.with_index(1)
      |> Map.new(fn {ip, i} ->
        ns = create!(tag <> "#{i}")
        veth_between!(hub, "p#{i}", ns, "ethwe")
        ip!(["-n", hub, "link", "set", "p#{i}", "master", "br0", "up"])

        for key <- ["all", "ethwe"],
            do: exec!(ns, ["sysctl", "-qw", "net.ipv4.conf.#{key}.route_localnet=1"])

        ip!(["-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo"])
        ip!(["-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo"])
        ip!(["-n", ns, "addr", "add", ip <> "/16", "dev", "ethwe"])
        ip!(["-n", ns, "link", "set", "ethwe", "up"])
        {ip, ns}
      end)

    %{hub: hub, hosts: hosts}
  end

  @doc "Runs `cmd` inside `ns`, raising with its output on failure; returns the output."
  def exec!(ns, [cmd | args]) do
    case System.cmd("ip", ["netns", "exec", ns, cmd | args], stderr_to_stdout: true) do
      {out, 0} -> out
      {out, code} -> raise "in #{ns}: #{cmd} #{Enum.join(args, " ")} failed (#{code}): #{out}"
    end
  end

  @doc """
  A fresh TCP connect from inside `ns` to `ip:port`: `:connected`, `:refused`, or
  `:timeout` (no answer within `ms`, as when a firewall drops the SYN).
  """
  def tcp_connect(ns, ip, port, ms \\ 2_000) do
    script = "exec 3<>/dev/tcp/#{ip}/#{port}"
    secs = Float.to_string(ms / 1000)

    case System.cmd("ip", ["netns", "exec", ns, "timeout", secs, "bash", "-c", script],
           stderr_to_stdout: true
         ) do
      {_, 0} -> :connected
      {_, 124} -> :timeout
      {out, _} -> if out =~ "refused", do: :refused, else: {:failed, out}
    end
  end

  @doc "Kills what still runs in `namespaces` (nodes, their epmd), then deletes them."
  def cleanup(namespaces) do
    for ns <- namespaces do
      {out, _} = System.cmd("ip", ["netns", "pids", ns], stderr_to_stdout: true)

      for pid <- String.split(out),
          pid =~ ~r/\A\d+\z/,
          do: System.cmd("kill", ["-9", pid], stderr_to_stdout: true)

      delete(ns)
    end

    :ok
  end

  @doc "Deletes a namespace (and with it the veth ends inside it)."
  def delete(ns) do
    System.cmd("ip", ["netns", "delete", ns], stderr_to_stdout: true)
    :ok
  end

  @doc "Runs `ip args`, raising with its output on failure."
  def ip!(args) do
    case System.cmd("ip", args, stderr_to_stdout: true) do
      {out, 0} -> out
      {out, code} -> raise "ip #{Enum.join(args, " ")} failed (#{code}): #{out}"
    end
  end
end
