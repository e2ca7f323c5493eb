defmodule AWSCluster.Native do
  # NIF stubs only. Each stub's prefix names the Rust file that implements it
  # (`interface_*` -> native/aws_cluster_nif/src/interface.rs). Only the domain
  # wrappers (AWSCluster.Interface, .AWS, .Gossip.Codec ...) call this module.
  @moduledoc false

  @on_load :load
  @lib "libaws_cluster_nif"

  @doc false
  def load do
    path = path()

    case :erlang.load_nif(String.to_charlist(path), 0) do
      :ok ->
        :persistent_term.erase({__MODULE__, :load_error})
        :ok

      {:error, {_kind, text}} ->
        # Loading still succeeds so callers get a clear error instead of
        # UndefinedFunctionError; each stub raises it.
        :persistent_term.put({__MODULE__, :load_error}, {path, to_string(text)})
        :ok
    end
  end

  @doc false
  @spec path() :: String.t()
  def path do
    env = System.get_env("AWS_CLUSTER_NIF_PATH")

    cond do
      env not in [nil, ""] -> Path.rootname(env, ".so")
      path = Application.get_env(:aws_cluster, :nif_path) -> Path.rootname(path, ".so")
      true -> Path.join([priv_dir(), "native", @lib])
    end
  end

  defp priv_dir do
    case :code.priv_dir(:aws_cluster) do
      {:error, _} -> Path.expand("../../priv", __DIR__)
      dir -> to_string(dir)
    end
  end

  @doc false
  @spec load_error() :: AWSCluster.Error.t()
  def load_error do
    {path, text} =
      :persistent_term.get({__MODULE__, :load_error}, {path(), "the NIF was not loaded"})

    AWSCluster.Error.new(
      :nif_not_loaded,
      "aws_cluster's native library could not be loaded from #{path}.so (#{text}). " <>
        "Build it with `mix compile` (needs cargo), or point AWS_CLUSTER_NIF_PATH or " <>
        "`config :aws_cluster, nif_path: ...` at a prebuilt #{@lib}.so",
      %{path: path <> ".so"}
    )
  end

  defp err, do: raise(load_error())

  def interface_addresses, do: err()
  def interface_address(_name, _family), do: err()

  def aws_client_new(_ref, _opts), do: err()
  def aws_describe_instances(_client, _ref, _filters, _instance_ids, _page_size), do: err()
  def aws_describe_auto_scaling_groups(_client, _ref, _names), do: err()
  # Benchmark baseline only (bench/schedulers.exs): blocks the calling scheduler.
  def aws_describe_instances_blocking(_client, _filters, _instance_ids, _page_size), do: err()

  def imds_fetch(_ref, _opts), do: err()

  def gossip_keyring_new(_secrets, _label, _insecure), do: err()
  def gossip_keyring_ids(_ring), do: err()
  def gossip_replay_new(_max_senders, _window_ms), do: err()
  def gossip_seal(_ring, _kind, _name, _boot_id, _seq, _timestamp_ms, _meta), do: err()
  def gossip_open(_ring, _replay, _packet, _now_ms), do: err()

  def runtime_probe(_ref, _delay_ms, _panic), do: err()
  def runtime_workers, do: err()
end
