defmodule AWSCluster.NativeBuild do
  @moduledoc false
  # How the NIF gets into `<app_path>/priv/native`: built by cargo, or downloaded as a
  # prebuilt artifact checked against native/checksums.txt. Loaded by mix.exs, so it runs
  # before lib/ is compiled and cannot use anything from it.
  #
  # The library is installed into Mix.Project.app_path() and never into the source tree:
  # Mix links _build/<env>/lib/aws_cluster/priv to the project's priv/ only when that
  # exists before the compilers run, and a dependency's priv/ in deps/ is never linked.

  @lib "libaws_cluster_nif"
  @nif_version "2.16"
  @heartbeat_ms 30_000

  @doc "Installs the NIF for the project being compiled; a Mix compiler result."
  def run(root, version) do
    cond do
      env("AWS_CLUSTER_NIF_PATH") ->
        {:noop, []}

      base_url() && not env_flag?("AWS_CLUSTER_FORCE_BUILD") ->
        prebuilt(root, version, base_url())

      System.find_executable("cargo") == nil ->
        Mix.raise(
          "aws_cluster needs cargo to build its NIF (install Rust from your package manager " <>
            "or rustup). Or set AWS_CLUSTER_NIF_BASE_URL to fetch a prebuilt " <>
            "#{artifact(version)}, or AWS_CLUSTER_NIF_PATH to a #{@lib}.so you built"
        )

      true ->
        cargo(root)
    end
  end

  @doc "The library's file name, in priv/native and inside an artifact."
  def lib_file, do: @lib <> ".so"

  @doc "Where the installed library lives."
  def dest, do: Path.join([Mix.Project.app_path(), "priv", "native", @lib <> ".so"])

  @doc "The compiler's manifest: what the installed library was made from."
  def manifest, do: Path.join(Mix.Project.manifest_path(), "compile.aws_cluster_nif")

  @doc "Removes the installed library and the manifest (`mix clean`)."
  def clean do
    File.rm(dest())
    File.rm(manifest())
    :ok
  end

  # ── cargo ────────────────────────────────────────────────────────────────────────

  @doc """
  The cargo profile: AWS_CLUSTER_NIF_PROFILE if set; otherwise `dev` when the app being
  built is in `dev` or `test`, and `release` in any other env (`prod`, `staging` ...).
  Mix compiles every dependency with `Mix.env() == :prod`, so for a dependency the
  consuming app's env is read from its build path (`_build/<env>`), or from MIX_ENV when
  it builds without per-environment paths.
  """
  def profile do
    case System.get_env("AWS_CLUSTER_NIF_PROFILE") do
      p when p in ["dev", "release"] ->
        p

      p when p in [nil, ""] ->
        if app_env() in ["dev", "test"], do: "dev", else: "release"

      other ->
        Mix.raise("AWS_CLUSTER_NIF_PROFILE must be dev or release, got #{inspect(other)}")
    end
  end

  defp app_env do
    config = Mix.Project.config()

    cond do
      config[:app_path] == nil -> Atom.to_string(Mix.env())
      config[:build_per_environment] == false -> System.get_env("MIX_ENV", "dev")
      true -> Path.basename(Mix.Project.build_path())
    end
  end

  @doc "The cargo target dir, outside the checkout so every build on this machine shares it."
  def target_dir do
    case env("AWS_CLUSTER_TARGET_DIR") do
      nil -> Path.expand("~/.cache/aws_cluster/target")
      dir -> Path.expand(dir)
    end
  end

  defp cargo(root) do
    profile = profile()
    target_dir = target_dir()

    built =
      Path.join([
        target_dir,
        if(profile == "release", do: "release", else: "debug"),
        @lib <> ".so"
      ])

    args =
      ["build", "--locked", "-p", "aws_cluster_nif", "--target-dir", target_dir] ++
        if(profile == "release", do: ["--release"], else: []) ++
        services_args() ++
        case env("AWS_CLUSTER_NIF_FEATURES") do
          nil -> []
          features -> ["--features", features]
        end

    unless File.exists?(built) do
      Mix.shell().info(
        "==> aws_cluster: building its Rust NIF (cargo, #{profile} profile) into #{target_dir}. " <>
          "A first build compiles aws-config, rustls/aws-lc and tokio and takes about 5 " <>
          "minutes on 2 cores; later builds reuse it."
      )
    end

    case stream_cmd(System.find_executable("cargo"), args, root) do
      0 ->
        install_file(built, {:cargo, profile, stat_key(built)})

      code ->
        Mix.raise("cargo build of the aws_cluster NIF failed (exit #{code}); its output is above")
    end
  end

  @services ~w(ec2 autoscaling ecs postgres dynamodb)

  @doc """
  The AWS services to build in, from AWS_CLUSTER_NIF_SERVICES (comma-separated) or
  `config :aws_cluster, nif_services: [...]`; `nil` (every one) when neither is set.
  EC2 is always built in: AutoScaling and ECS's host mode read instances with it.
  """
  def services do
    given =
      case env("AWS_CLUSTER_NIF_SERVICES") || Application.get_env(:aws_cluster, :nif_services) do
        nil ->
          nil

        text when is_binary(text) ->
          text |> String.split(",", trim: true) |> Enum.map(&String.trim/1)

        list when is_list(list) ->
          Enum.map(list, &to_string/1)

        other ->
          Mix.raise("nif_services must be a list such as [:ec2, :ecs], got #{inspect(other)}")
      end

    case given && given -- @services do
      nil ->
        nil

      [] ->
        Enum.uniq(["ec2" | given])

      unknown ->
        Mix.raise(
          "unknown AWS service #{Enum.map_join(unknown, ", ", &inspect/1)} in nif_services " <>
            "(AWS_CLUSTER_NIF_SERVICES or config :aws_cluster, nif_services:); known: " <>
            Enum.join(@services, ", ")
        )
    end
  end

  # Each service beyond EC2 is a default cargo feature of the NIF crate.
  defp services_args do
    case services() do
      nil -> []
      services -> ["--no-default-features" | features_args(services -- ["ec2"])]
    end
  end

  defp features_args([]), do: []
  defp features_args(features), do: ["--features", Enum.join(features, ",")]

  # Runs a command, printing its output as it comes, and a line of our own after every
  # 30 s without any: cargo says nothing while rustc works on aws-sdk-ec2 for minutes.
  defp stream_cmd(exe, args, cd) do
    port =
      Port.open({:spawn_executable, exe}, [
        :binary,
        :exit_status,
        :stderr_to_stdout,
        :hide,
        {:line, 4096},
        {:args, args},
        {:cd, cd}
      ])

    stream_loop(port, System.monotonic_time(:millisecond), false)
  end

  defp stream_loop(port, started, compiling?) do
    receive do
      {^port, {:data, {_, line}}} ->
        compiling? = compiling? or String.contains?(line, "Compiling")
        # A warm no-op build prints only "Finished": stay as quiet as Mix's own compilers.
        if compiling? or not String.contains?(line, "Finished"), do: IO.puts(line)
        stream_loop(port, started, compiling?)

      {^port, {:exit_status, code}} ->
        code
    after
      @heartbeat_ms ->
        secs = div(System.monotonic_time(:millisecond) - started, 1000)
        Mix.shell().info("==> aws_cluster: still building the NIF (#{secs} s so far)")
        stream_loop(port, started, compiling?)
    end
  end

  # Size, mtime and inode change whenever cargo writes a new library; reading two copies
  # of a large .so to compare them is what we must not do on every compile.
  defp stat_key(path) do
    %File.Stat{size: size, mtime: mtime, inode: inode} = File.stat!(path, time: :posix)
    {size, mtime, inode}
  end

  # ── installing ───────────────────────────────────────────────────────────────────

  # `source` is a path or `{:binary, bytes}`. A running VM may have the old library
  # mapped, so it is never overwritten in place: write a new file and rename it over.
  defp install_file(source, key) do
    dest = dest()

    if File.exists?(dest) and read_manifest() == key do
      {:noop, []}
    else
      File.mkdir_p!(Path.dirname(dest))
      tmp = "#{dest}.tmp-#{System.unique_integer([:positive])}"

      try do
        case source do
          {:binary, bytes} -> File.write!(tmp, bytes)
          path -> File.cp!(path, tmp)
        end

        File.rename!(tmp, dest)
      after
        File.rm(tmp)
      end

      File.mkdir_p!(Path.dirname(manifest()))
      File.write!(manifest(), :erlang.term_to_binary(key))
      {:ok, []}
    end
  end

  defp read_manifest do
    case File.read(manifest()) do
      {:ok, bin} -> :erlang.binary_to_term(bin)
      _ -> nil
    end
  rescue
    ArgumentError -> nil
  end

  # ── prebuilt artifacts ───────────────────────────────────────────────────────────

  @doc "The artifact name of `version` for `target` (default: this machine's)."
  def artifact(version, target \\ target()),
    do: "#{@lib}-v#{version}-nif-#{@nif_version}-#{target}.so.tar.gz"

  @doc "The file listing the sha256 of every prebuilt artifact of this version."
  def checksums_path(root), do: Path.join([root, "native", "checksums.txt"])

  @doc """
  This machine's Rust target triple, from the VM's own system architecture
  (AWS_CLUSTER_NIF_TARGET overrides it).
  """
  def target do
    env("AWS_CLUSTER_NIF_TARGET") || target(to_string(:erlang.system_info(:system_architecture)))
  end

  @doc false
  def target(arch_string) do
    [arch | _] = String.split(arch_string, "-")
    arch = %{"amd64" => "x86_64", "arm64" => "aarch64"}[arch] || arch

    cond do
      arch_string =~ "darwin" ->
        "#{arch}-apple-darwin"

      arch_string =~ "musl" ->
        "#{arch}-unknown-linux-musl"

      arch_string =~ "linux" ->
        "#{arch}-unknown-linux-gnu"

      true ->
        Mix.raise("no prebuilt aws_cluster NIF exists for #{arch_string}; build it with cargo")
    end
  end

  @doc "`{name => sha256}` from a checksums file (sha256sum's format; `#` starts a comment)."
  def read_checksums(path) do
    case File.read(path) do
      {:ok, text} ->
        for line <- String.split(text, "\n"),
            line = String.trim(line),
            line != "" and not String.starts_with?(line, "#"),
            # A line of another shape lists nothing, so it can verify nothing.
            [hash, name] <- [String.split(line, ~r/\s+\*?/, parts: 2)],
            into: %{},
            do: {name, String.downcase(hash)}

      {:error, _} ->
        %{}
    end
  end

  defp base_url do
    url = env("AWS_CLUSTER_NIF_BASE_URL") || Application.get_env(:aws_cluster, :nif_base_url)
    url && String.trim_trailing(url, "/")
  end

  defp prebuilt(root, version, base_url) do
    name = artifact(version)
    url = "#{base_url}/#{name}"
    checksums = checksums_path(root)

    expected =
      read_checksums(checksums)[name] ||
        Mix.raise(
          "aws_cluster #{version} lists no prebuilt NIF #{name} in #{checksums}, so nothing " <>
            "fetched from #{url} could be verified. Set AWS_CLUSTER_FORCE_BUILD=1 to build " <>
            "it with cargo."
        )

    if File.exists?(dest()) and read_manifest() == {:prebuilt, expected} do
      {:noop, []}
    else
      Mix.shell().info("==> aws_cluster: fetching its prebuilt NIF #{url}")
      tarball = download(url)
      actual = sha256(tarball)

      if actual != expected do
        Mix.raise(
          "the prebuilt aws_cluster NIF from #{url} has sha256 #{actual}, but #{checksums} " <>
            "lists #{expected} for #{name}; it was not installed. Check the URL " <>
            "(AWS_CLUSTER_NIF_BASE_URL), or set AWS_CLUSTER_FORCE_BUILD=1 to build with cargo."
        )
      end

      install_file({:binary, untar(tarball, url)}, {:prebuilt, expected})
    end
  end

  defp download(url) do
    {:ok, _} = Application.ensure_all_started(:inets)
    {:ok, _} = Application.ensure_all_started(:ssl)

    # Verified TLS with the OS's CA store (OTP 25+), for https URLs; plain http is for
    # mirrors on a trusted network and this repo's tests.
    ssl = [
      verify: :verify_peer,
      cacerts: :public_key.cacerts_get(),
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]

    use_proxy(url)
    http = [ssl: ssl, timeout: 300_000, connect_timeout: 20_000]

    case :httpc.request(:get, {String.to_charlist(url), []}, http, body_format: :binary) do
      {:ok, {{_, 200, _}, _, body}} ->
        body

      {:ok, {{_, status, _}, _, _}} ->
        Mix.raise("fetching the prebuilt aws_cluster NIF #{url} failed: HTTP #{status}")

      {:error, reason} ->
        Mix.raise("fetching the prebuilt aws_cluster NIF #{url} failed: #{inspect(reason)}")
    end
  end

  # HTTPS_PROXY / HTTP_PROXY (and NO_PROXY), as curl and Hex read them.
  defp use_proxy(url) do
    var = if String.starts_with?(url, "https:"), do: "HTTPS_PROXY", else: "HTTP_PROXY"
    key = if var == "HTTPS_PROXY", do: :https_proxy, else: :proxy

    case env(var) || env(String.downcase(var)) do
      nil ->
        :ok

      proxy ->
        %URI{host: host, port: port} = URI.parse(proxy)
        no_proxy = String.split(env("NO_PROXY") || env("no_proxy") || "", ",", trim: true)

        :ok =
          :httpc.set_options([
            {key, {{String.to_charlist(host), port}, Enum.map(no_proxy, &String.to_charlist/1)}}
          ])
    end
  end

  defp untar(tarball, url) do
    case :erl_tar.extract({:binary, tarball}, [:compressed, :memory]) do
      {:ok, files} ->
        case List.keyfind(files, ~c"#{@lib}.so", 0) do
          {_, bytes} -> bytes
          nil -> Mix.raise("#{url} holds no #{@lib}.so")
        end

      {:error, reason} ->
        Mix.raise("#{url} is not a .tar.gz: #{inspect(reason)}")
    end
  end

  @doc "Lowercase hex sha256."
  def sha256(bytes), do: Base.encode16(:crypto.hash(:sha256, bytes), case: :lower)

  defp env(name), do: if(v = System.get_env(name), do: if(v != "", do: v))
  defp env_flag?(name), do: env(name) not in [nil, "0", "false"]
end
