defmodule AWSCluster.Groups.Mode do
  @moduledoc """
  The kernel settings a grouped topology runs under, checked before it starts.

    * `:compat` - OTP's defaults (`connect_all true`, `dist_auto_connect` on). Every
      `global` and `pg` feature works inside a group. A stray message from one group to
      a node of another auto-connects visibly, and `global` then merges the two meshes;
      `AWSCluster.Groups.Server` reports it, and nothing is disconnected.
    * `:strict` - `-kernel connect_all false -kernel dist_auto_connect never`. A stray
      send fails with `noconnection` and the meshes stay apart, links come only from
      discovery, and the topology also cuts visible links that cross groups (safe there,
      as `global` guards no overlap). `global` names do not resolve, even on neighbours.

  `dist_auto_connect never` with `connect_all` left on isolates every node (measured on
  OTP 25), so that combination is refused in both modes.
  """

  alias AWSCluster.Config

  @strict_flags "-kernel connect_all false -kernel dist_auto_connect never"

  @type t :: :compat | :strict

  @doc "The kernel settings that decide the mode, as this VM runs."
  @spec kernel() :: %{connect_all: boolean(), dist_auto_connect: atom()}
  def kernel do
    %{connect_all: connect_all?(), dist_auto_connect: dist_auto_connect()}
  end

  @doc """
  Checks that this VM's kernel settings fit `mode`; the error names `key` (the option)
  and the kernel parameters to set.
  """
  @spec check(t(), atom()) :: :ok | {:error, AWSCluster.Error.t()}
  def check(mode, key \\ :group_mode) do
    k = kernel()
    now = "this VM runs connect_all #{k.connect_all}, dist_auto_connect #{k.dist_auto_connect}"

    cond do
      k.dist_auto_connect == :never and k.connect_all ->
        {:error,
         Config.error(
           key,
           "dist_auto_connect never with connect_all true isolates every node (#{now}); " <>
             "start the VM with #{@strict_flags} for :strict"
         )}

      mode == :strict and (k.connect_all or k.dist_auto_connect != :never) ->
        {:error, Config.error(key, ":strict needs the VM started with #{@strict_flags} (#{now})")}

      true ->
        :ok
    end
  end

  defp connect_all? do
    Application.get_env(:kernel, :connect_all) != false and
      :init.get_argument(:connect_all) != {:ok, [[~c"false"]]}
  end

  defp dist_auto_connect do
    case Application.get_env(:kernel, :dist_auto_connect) do
      value when is_atom(value) and value != nil -> value
      _ -> :always
    end
  end
end
