defmodule Mix.Tasks.AwsCluster.Nif.Package do
  @shortdoc "Packages the built NIF as a prebuilt artifact with its sha256"
  @moduledoc """
  Packages a built `libaws_cluster_nif.so` the way the compiler fetches prebuilt NIFs
  (`AWS_CLUSTER_NIF_BASE_URL`, see the README):

      mix aws_cluster.nif.package [--lib PATH] [--out DIR] [--target TRIPLE] [--checksums FILE]

  It writes `DIR/libaws_cluster_nif-v<version>-nif-2.16-<target>.so.tar.gz` and, beside
  it, `<artifact>.sha256`, and records the hash in the checksums file that ships with the
  package (default `native/checksums.txt`), replacing an older line for the same artifact.

    * `--lib` - the library to package; default the one `mix compile` installed.
    * `--out` - output directory, default `nif-artifacts`.
    * `--target` - the Rust target triple it was built for; default this machine's.
    * `--checksums` - the checksums file to update.

  Build the library with `AWS_CLUSTER_NIF_PROFILE=release` first: artifacts are for
  production hosts.
  """
  use Mix.Task

  @switches [lib: :string, out: :string, target: :string, checksums: :string]

  @impl true
  @spec run(OptionParser.argv()) :: :ok
  def run(args) do
    {opts, rest, invalid} = OptionParser.parse(args, strict: @switches)

    if rest != [] or invalid != [] do
      Mix.raise(
        "usage: mix aws_cluster.nif.package [--lib PATH] [--out DIR] " <>
          "[--target TRIPLE] [--checksums FILE]"
      )
    end

    build = AWSCluster.NativeBuild
    version = Mix.Project.config()[:version]
    lib = Keyword.get_lazy(opts, :lib, &build.dest/0)
    target = Keyword.get_lazy(opts, :target, &build.target/0)
    out = Keyword.get(opts, :out, "nif-artifacts")
    checksums = Keyword.get_lazy(opts, :checksums, fn -> build.checksums_path(File.cwd!()) end)

    File.exists?(lib) || Mix.raise("no library at #{lib}: run `mix compile` or pass --lib")

    name = build.artifact(version, target)
    tarball = Path.join(out, name)
    File.mkdir_p!(out)

    :ok =
      :erl_tar.create(
        String.to_charlist(tarball),
        [{String.to_charlist(build.lib_file()), String.to_charlist(lib)}],
        [
          :compressed
        ]
      )

    hash = build.sha256(File.read!(tarball))
    File.write!(tarball <> ".sha256", "#{hash}  #{name}\n")
    record(checksums, name, hash)
    Mix.shell().info("#{tarball}\nsha256 #{hash} (recorded in #{checksums})")
  end

  # One line per artifact: a re-run replaces the line instead of adding a second one.
  defp record(path, name, hash) do
    lines =
      case File.read(path) do
        {:ok, text} -> String.split(text, "\n", trim: true)
        {:error, _} -> []
      end

    {comments, entries} = Enum.split_with(lines, &String.starts_with?(&1, "#"))
    entries = Enum.reject(entries, &String.ends_with?(&1, "  " <> name))

    File.write!(
      path,
      Enum.join(comments ++ Enum.sort(entries ++ ["#{hash}  #{name}"]), "\n") <> "\n"
    )
  end
end
