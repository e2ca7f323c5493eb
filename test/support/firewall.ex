defmodule AWSCluster.Test.Firewall do
  @moduledoc """
  Cuts a 127.x address off with nftables, for partition tests (root only).

  Each cut is its own table, `aws_cluster_cut_<os pid>_<n>`, dropping every packet from
  or to the address in the output hook (loopback traffic passes it once). Tests delete
  their tables in `on_exit`; `sweep_stale/0` deletes tables left by a test VM that died
  before it could (their os pid is gone).

  Only the cut address is affected: a `AWSCluster.Test.Fleet` node sends all its
  distribution traffic from its own address, while its AWS calls go to moto on
  127.0.0.1 from 127.0.0.1, so a cut node is partitioned from its peers, not from AWS.
  """

  @prefix "aws_cluster_cut_"

  @doc "`:ok` when nftables can be used here, or `{:error, why}` (not root, no `nft`, ...)."
  @spec available() :: :ok | {:error, String.t()}
  def available do
    probe = @prefix <> "probe_#{System.pid()}"

    cond do
      System.find_executable("nft") == nil ->
        {:error, "nft is not installed (script/setup installs Debian's nftables)"}

      uid() != "0" ->
        {:error, "nftables rules need root (uid is #{uid()})"}

      true ->
        case nft(["add", "table", "inet", probe]) do
          :ok ->
            _ = nft(["delete", "table", "inet", probe])
            :ok

          {:error, out} ->
            {:error, "nft cannot add a table: #{String.trim(out)}"}
        end
    end
  end

  @doc "Drops all traffic from and to `ip` (a 127.x address). Returns the table name."
  @spec cut!(String.t()) :: String.t()
  def cut!("127." <> _ = ip) do
    {:ok, _} = :inet.parse_ipv4strict_address(String.to_charlist(ip))
    table = @prefix <> "#{System.pid()}_#{System.unique_integer([:positive])}"

    rules = """
    table inet #{table} {
      chain out {
        type filter hook output priority 0; policy accept;
        ip saddr #{ip} drop
        ip daddr #{ip} drop
      }
    }
    """

    path = Path.join(System.tmp_dir!(), table <> ".nft")
    File.write!(path, rules)

    try do
      :ok = nft(["-f", path])
    after
      File.rm(path)
    end

    table
  end

  @doc "Deletes a cut's table; a table that is already gone is fine."
  @spec heal(String.t()) :: :ok
  def heal(@prefix <> _ = table) do
    if table in tables(), do: :ok = nft(["delete", "table", "inet", table])
    :ok
  end

  @doc "Deletes cut tables whose test VM (the os pid in the name) no longer runs."
  @spec sweep_stale() :: :ok
  def sweep_stale do
    for table <- tables(),
        [pid | _] = String.split(String.replace_prefix(table, @prefix, ""), "_"),
        pid =~ ~r/\A\d+\z/,
        not File.exists?("/proc/#{pid}") do
      heal(table)
    end

    :ok
  end

  @doc "The cut tables that exist now."
  @spec tables() :: [String.t()]
  def tables do
    case System.cmd("nft", ["list", "tables", "inet"], stderr_to_stdout: true) do
      {out, 0} ->
        for "table inet " <> name <- String.split(out, "\n"),
            String.starts_with?(name, @prefix),
            do: String.trim(name)

      _ ->
        []
    end
  end

  defp nft(args) do
    case System.cmd("nft", args, stderr_to_stdout: true) do
      {_, 0} -> :ok
      {out, _} -> {:error, out}
    end
  end

  defp uid do
    {out, 0} = System.cmd("id", ["-u"])
    String.trim(out)
  end
end
