defmodule AWSCluster.Test.Postgres do
  @moduledoc """
  A real PostgreSQL (Debian's, /usr/lib/postgresql/<version>/bin) for the registry
  tests: `initdb` into a temp dir, started with `pg_ctl` on a free loopback port, with
  password authentication. PostgreSQL refuses to run as root, so as root it runs as the
  `postgres` user.

      pg = Postgres.start!()
      Postgres.url(pg)                  # postgres://aws_cluster:...@127.0.0.1:port/aws_cluster
      Postgres.query!(pg, "SELECT 1")   # [["1"]]
      Postgres.stop(pg)

  `start!(tls: true)` also turns TLS on with a certificate for IP 127.0.0.1 signed by a
  CA made for the run (openssl); `pg.ca` is that CA's PEM file.

  `available/0` says why it cannot run (no PostgreSQL installed), for a printed skip.
  """

  @user "aws_cluster"

  @type t :: %{
          dir: Path.t(),
          port: :inet.port_number(),
          password: String.t(),
          bin: Path.t(),
          ca: Path.t() | nil
        }

  @doc "`:ok`, or `{:error, why}` when no PostgreSQL server binaries are installed."
  @spec available() :: :ok | {:error, String.t()}
  def available do
    case bin_dir() do
      nil ->
        {:error, "no PostgreSQL server in /usr/lib/postgresql/*/bin (apt install postgresql)"}

      _ ->
        :ok
    end
  end

  @doc "Creates and starts a server; raises with its log when it does not come up."
  @spec start!(keyword()) :: t()
  def start!(opts \\ []) do
    bin = bin_dir() || raise "no PostgreSQL installed: #{inspect(available())}"
    dir = Path.join(System.tmp_dir!(), "aws_cluster_pg_#{System.unique_integer([:positive])}")
    File.mkdir_p!(dir)
    password = Base.url_encode64(:crypto.strong_rand_bytes(18), padding: false)
    pwfile = Path.join(dir, "pw")
    File.write!(pwfile, password)
    owner!(dir)

    run!(bin, "initdb", [
      "-D",
      Path.join(dir, "data"),
      "-U",
      @user,
      "--pwfile",
      pwfile,
      "-A",
      "scram-sha-256",
      "--no-sync"
    ])

    File.rm!(pwfile)
    ca = if Keyword.get(opts, :tls, false), do: certificates!(dir)
    pg = %{dir: dir, port: free_port(), password: password, bin: bin, ca: ca}
    start_server!(pg)
    {_, 0} = psql(pg, "postgres", "CREATE DATABASE #{@user}")
    pg
  end

  @doc "Stops the server (fast shutdown) and removes its files."
  @spec stop(t()) :: :ok
  def stop(pg) do
    _ = pg_ctl(pg, ["stop", "-m", "fast", "-w"])
    File.rm_rf!(pg.dir)
    :ok
  end

  @doc "Stops the server, keeping its data: clients see their connections drop."
  @spec halt!(t()) :: :ok
  def halt!(pg) do
    {_, 0} = pg_ctl(pg, ["stop", "-m", "immediate", "-w"])
    :ok
  end

  @doc "Starts a halted server again on the same port."
  @spec resume!(t()) :: :ok
  def resume!(pg), do: start_server!(pg)

  @doc "The user (and database) the tests connect as."
  @spec user() :: String.t()
  def user, do: @user

  @doc "The connection URL, with the password (options `:user`, `:password`)."
  @spec url(t(), keyword()) :: String.t()
  def url(pg, opts \\ []) do
    password = Keyword.get(opts, :password, pg.password)
    user = Keyword.get(opts, :user, @user)
    "postgres://#{user}:#{password}@127.0.0.1:#{pg.port}/#{@user}"
  end

  @doc "Runs `sql` with psql; the rows, each a list of text fields (`nil` for NULL)."
  @spec query!(t(), String.t()) :: [[String.t() | nil]]
  def query!(pg, sql) do
    case psql(pg, @user, sql) do
      {out, 0} ->
        for line <- String.split(out, "\n", trim: true),
            do: line |> String.split("\u001f") |> Enum.map(&null/1)

      {out, status} ->
        raise "psql exited #{status} for #{inspect(sql)}: #{out}"
    end
  end

  defp null("\\N"), do: nil
  defp null(text), do: text

  defp psql(pg, database, sql) do
    System.cmd(
      Path.join(pg.bin, "psql"),
      [
        "-X",
        "-q",
        "-A",
        "-t",
        "-F",
        "\u001f",
        "-P",
        "null=\\N",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        "127.0.0.1",
        "-p",
        Integer.to_string(pg.port),
        "-U",
        @user,
        "-d",
        database,
        "-c",
        sql
      ],
      env: [{"PGPASSWORD", pg.password}],
      stderr_to_stdout: true
    )
  end

  defp start_server!(pg) do
    tls =
      if pg.ca,
        do:
          " -c ssl=on -c ssl_cert_file=#{pg.dir}/server.pem -c ssl_key_file=#{pg.dir}/server.key",
        else: ""

    options = "-p #{pg.port} -c listen_addresses=127.0.0.1 -k #{pg.dir} -c fsync=off" <> tls
    log = Path.join(pg.dir, "server.log")

    case pg_ctl(pg, ["start", "-w", "-t", "30", "-o", options, "-l", log]) do
      {_, 0} -> :ok
      {out, status} -> raise "pg_ctl start exited #{status}: #{out}\n#{File.read!(log)}"
    end
  end

  # A CA of the run and a server certificate for IP 127.0.0.1 signed by it; the key is
  # the server user's alone, as PostgreSQL insists.
  defp certificates!(dir) do
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    at = &Path.join(dir, &1)
    ext = at.("server.ext")

    File.write!(
      ext,
      "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
    )

    for args <- [
          ["req", "-x509"] ++
            ec ++
            ["-keyout", at.("ca.key"), "-out", at.("ca.pem")] ++
            ["-days", "2", "-subj", "/CN=aws_cluster test CA"],
          ["req"] ++
            ec ++
            ["-keyout", at.("server.key"), "-out", at.("server.csr")] ++
            ["-subj", "/CN=127.0.0.1"],
          ["x509", "-req", "-in", at.("server.csr"), "-CA", at.("ca.pem"), "-CAkey"] ++
            [at.("ca.key"), "-CAcreateserial", "-out", at.("server.pem"), "-days", "2"] ++
            ["-extfile", ext]
        ] do
      {out, status} = System.cmd("openssl", args, stderr_to_stdout: true)
      status == 0 || raise "openssl #{hd(args)} exited #{status}: #{out}"
    end

    File.chmod!(at.("server.key"), 0o600)

    if root?(),
      do: {_, 0} = System.cmd("chown", ["postgres:", at.("server.key"), at.("server.pem")])

    at.("ca.pem")
  end

  defp pg_ctl(pg, args), do: run(pg.bin, "pg_ctl", ["-D", Path.join(pg.dir, "data") | args])

  defp run!(bin, exe, args) do
    case run(bin, exe, args) do
      {_, 0} -> :ok
      {out, status} -> raise "#{exe} exited #{status}: #{out}"
    end
  end

  # As root, as the postgres user: the server refuses to run as root.
  defp run(bin, exe, args) do
    path = Path.join(bin, exe)

    if root?(),
      do: System.cmd("runuser", ["-u", "postgres", "--", path | args], stderr_to_stdout: true),
      else: System.cmd(path, args, stderr_to_stdout: true)
  end

  defp owner!(dir) do
    if root?(), do: {_, 0} = System.cmd("chown", ["postgres:", dir])
    :ok
  end

  defp root?, do: System.cmd("id", ["-u"]) |> elem(0) |> String.trim() == "0"

  defp bin_dir do
    "/usr/lib/postgresql/*/bin/pg_ctl"
    |> Path.wildcard()
    |> Enum.sort()
    |> List.last()
    |> case do
      nil -> nil
      pg_ctl -> Path.dirname(pg_ctl)
    end
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end
end
