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
