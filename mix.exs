Code.require_file("native/build.exs", __DIR__)

defmodule Mix.Tasks.Compile.AwsClusterNif do
  @shortdoc "Builds or fetches the aws_cluster Rust NIF and installs it in the app's priv/native"
  @moduledoc """
  Installs `libaws_cluster_nif.so` into `Mix.Project.app_path()/priv/native`, where
  `:code.priv_dir(:aws_cluster)` and `mix release` find it, for this project and when
  aws_cluster is a dependency. The logic is in `native/build.exs`.

  Environment:

    * `AWS_CLUSTER_NIF_PROFILE` - cargo profile, `dev` or `release`. Default: `release`
      when the app being built is in `prod` (as `MIX_ENV=prod mix release`), `dev`
      otherwise; for a dependency that is the consuming app's env, not Mix's `:prod`.
    * `AWS_CLUSTER_TARGET_DIR` - cargo target dir, default `~/.cache/aws_cluster/target`.
    * `AWS_CLUSTER_NIF_BASE_URL` (or `config :aws_cluster, nif_base_url:`) - fetch the
      prebuilt artifact for this target from there instead of running cargo; its sha256
      must match `native/checksums.txt`.
    * `AWS_CLUSTER_FORCE_BUILD=1` - build with cargo even when a base URL is set.
    * `AWS_CLUSTER_NIF_PATH` - load this library at run time instead; nothing is built.
    * `AWS_CLUSTER_NIF_SERVICES` (or `config :aws_cluster, nif_services:`) - the AWS
      services to build in, e.g. `ec2` or `ec2,ecs`; default all (`ec2`, `autoscaling`,
      `ecs`, `postgres`). A strategy whose service is left out fails its start saying so.
    * `AWS_CLUSTER_NIF_FEATURES` - more cargo features of the NIF crate; `bench` adds the
      deliberately blocking baseline `bench/schedulers.exs` compares against.
  """
  use Mix.Task.Compiler

  @impl true
  def run(_args), do: AWSCluster.NativeBuild.run(__DIR__, Mix.Project.config()[:version])

  @impl true
  def manifests, do: [AWSCluster.NativeBuild.manifest()]

  @impl true
  def clean, do: AWSCluster.NativeBuild.clean()
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
          ~w(lib native/aws_cluster_core native/aws_cluster_nif native/build.exs native/checksums.txt
             Cargo.toml Cargo.lock mix.exs README.md)
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
