defmodule AWSCluster.Interface do
  @moduledoc """
  Addresses of the host's network interfaces, read with `getifaddrs(3)` in the NIF.

  Name a node after the interface that carries cluster traffic (Weave's `ethwe`,
  a second ENI) rather than whatever `hostname -I` prints first:

      iex> {:ok, ip} = AWSCluster.Interface.address("lo")
      iex> ip
      {127, 0, 0, 1}
  """

  alias AWSCluster.{Error, Native}

  @type family :: :inet | :inet6
  @type flag :: :up | :running | :loopback | :broadcast | :pointtopoint | :multicast
  @type entry :: %{
          name: String.t(),
          family: family(),
          address: :inet.ip_address(),
          netmask: :inet.ip_address() | nil,
          flags: [flag()]
        }

  @flags %{
    "up" => :up,
    "running" => :running,
    "loopback" => :loopback,
    "broadcast" => :broadcast,
    "pointtopoint" => :pointtopoint,
    "multicast" => :multicast
  }

  @doc """
  Lists every IPv4 and IPv6 address of every interface.
  """
  @spec addresses() :: {:ok, [entry()]} | {:error, Error.t()}
  def addresses do
    case Error.wrap(Native.interface_addresses()) do
      {:ok, list, _names} -> {:ok, Enum.map(list, &entry/1)}
      {:error, _} = error -> error
    end
  end

  @doc """
  Names of all interfaces, including those without an IP address.
  """
  @spec names() :: {:ok, [String.t()]} | {:error, Error.t()}
  def names do
    case Error.wrap(Native.interface_addresses()) do
      {:ok, _list, names} -> {:ok, names}
      {:error, _} = error -> error
    end
  end

  @doc """
  The address of interface `name`.

  Options: `family: :inet | :inet6` (default `:inet`). For IPv6 a global address is
  preferred over a link-local one.

  Fails with reason `:no_such_interface` (the message lists the interfaces that exist)
  or `:no_address` (the interface exists but has no address of that family).
  """
  @spec address(String.t(), keyword()) :: {:ok, :inet.ip_address()} | {:error, Error.t()}
  def address(name, opts \\ []) do
    family = Keyword.get(opts, :family, :inet)

    cond do
      not is_binary(name) ->
        {:error,
         Error.new(:invalid_argument, "interface name must be a string, got #{inspect(name)}")}

      family not in [:inet, :inet6] ->
        {:error,
         Error.new(:invalid_argument, "family must be :inet or :inet6, got #{inspect(family)}")}

      true ->
        Error.wrap(Native.interface_address(name, Atom.to_string(family)))
    end
  end

  defp entry({name, family, address, netmask, flags}) do
    %{
      name: name,
      family: family,
      address: address,
      netmask: netmask,
      flags: Enum.map(flags, &Map.fetch!(@flags, &1))
    }
  end
end
