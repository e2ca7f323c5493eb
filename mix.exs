defmodule Mix.Tasks.Compile.AwsClusterNif do
  @shortdoc "Builds the aws_cluster Rust NIF with cargo and copies it to priv/native"
  @moduledoc """
  Builds `native/aws_cluster_nif` with cargo and installs the library as
  `priv/native/libaws_cluster_nif.so`.

  Environment:

    * `AWS_CLUSTER_NIF_PROFILE` - `dev` or `release`. Defaults to `release` when
      `MIX_ENV=prod`, `dev` otherwise (a cold dev build of the AWS SDK takes minutes,
      release several times that).
    * `AWS_CLUSTER_TARGET_DIR` - cargo target dir, default `~/.cache/aws_cluster/target`,
      outside the checkout so one cold build serves mix, `cargo test` and CI.
    * `AWS_CLUSTER_NIF_PATH` - a prebuilt library to load instead; the build is skipped.
    * `AWS_CLUSTER_NIF_FEATURES` - cargo features of the NIF crate; `bench` adds the
      deliberately blocking baseline `bench/schedulers.exs` compares against.
  """
  use Mix.Task.Compiler

  @lib "libaws_cluster_nif"

  @impl true
  def run(_args) do
    cond do
      System.get_env("AWS_CLUSTER_NIF_PATH") not in [nil, ""] ->
        {:noop, []}

      System.find_executable("cargo") == nil ->
        Mix.raise(
          "aws_cluster needs cargo to build its NIF (install Rust from your package manager " <>
            "or rustup), or set AWS_CLUSTER_NIF_PATH to a prebuilt #{@lib}.so"
        )

      true ->
        build()
    end
  end

  defp build do
    root = __DIR__
    profile = profile()
    target_dir = target_dir()
    args = ["build", "-p", "aws_cluster_nif", "--target-dir", target_dir]
    args = if profile == "release", do: args ++ ["--release"], else: args
    args = args ++ features()

    case System.cmd("cargo", args,
           cd: root,
           into: IO.stream(:stdio, :line),
           stderr_to_stdout: true
         ) do
      {_, 0} -> install(Path.join([target_dir, dir(profile), @lib <> ".so"]), root)
      {_, code} -> Mix.raise("cargo build of the aws_cluster NIF failed (exit #{code})")
    end
  end

  # The loaded .so must never be overwritten in place: a running VM that has it mapped
  # crashes. Removing first gives the new file a new inode.
  defp install(built, root) do
    dest = Path.join([root, "priv", "native", @lib <> ".so"])

    if File.exists?(dest) and File.read!(dest) == File.read!(built) do
      {:noop, []}
    else
      File.mkdir_p!(Path.dirname(dest))
      File.rm(dest)
      File.cp!(built, dest)
      {:ok, []}
    end
  end

  defp profile do
    case System.get_env("AWS_CLUSTER_NIF_PROFILE") do
      p when p in ["dev", "release"] -> p
      nil -> if Mix.env() == :prod, do: "release", else: "dev"
      "" -> if Mix.env() == :prod, do: "release", else: "dev"
      other -> Mix.raise("AWS_CLUSTER_NIF_PROFILE must be dev or release, got #{inspect(other)}")
    end
  end

  # Only `bench` exists: it adds the blocking baseline NIF bench/schedulers.exs measures.
  defp features do
    case System.get_env("AWS_CLUSTER_NIF_FEATURES") do
      f when f in [nil, ""] -> []
      f -> ["--features", f]
    end
  end

  defp dir("dev"), do: "debug"
  defp dir("release"), do: "release"

  defp target_dir do
    case System.get_env("AWS_CLUSTER_TARGET_DIR") do
      dir when dir in [nil, ""] -> Path.expand("~/.cache/aws_cluster/target")
      dir -> Path.expand(dir)
    end
  end
end

defmodule AWSCluster.MixProject do
  use Mix.Project

  def project do
    [
      app: :aws_cluster,
      version: "0.1.0",
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:aws_cluster_nif] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      package: [
        files:
          ~w(lib native/aws_cluster_core native/aws_cluster_nif Cargo.toml Cargo.lock mix.exs README.md)
      ]
    ]
  end

  def application do
    [extra_applications: [:logger, :crypto], mod: {AWSCluster.Application, []}]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  # script/demo drives real nodes with the test harness (moto, fleet), outside _build/test.
  defp elixirc_paths(:demo), do: ["lib", "test/support"]
  defp elixirc_paths(_), do: ["lib"]
end
