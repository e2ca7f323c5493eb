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
      result when result == :ok or elem(elem(result, 1), 0) == :reload ->
        # {:reload, _}: another first caller loaded it a moment ago (see retry/2).
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

  # A release loads its modules before it applies its config, so `nif_path` from app
  # config is not visible to @on_load there. A stub therefore tries loading once more
  # and, if that works, re-dispatches to the NIF that has just replaced it. Many first
  # callers can race here: all but one get {:reload, _} from load_nif, which means
  # loaded, not failed.
  defp retry(fun, args) do
    case :persistent_term.get({__MODULE__, :load_error}, nil) do
      nil ->
        raise AWSCluster.Error.new(
                :nif_not_loaded,
                "the loaded #{@lib} has no #{fun}/#{length(args)}: it was built without " <>
                  "the cargo feature that adds it (AWS_CLUSTER_NIF_FEATURES) or is older " <>
                  "than this aws_cluster; rebuild it with `mix compile`"
              )

      _ ->
        load()

        if :persistent_term.get({__MODULE__, :load_error}, nil),
          do: raise(load_error()),
          else: apply(__MODULE__, fun, args)
    end
  end

  def interface_addresses, do: retry(:interface_addresses, [])
  def interface_address(name, family), do: retry(:interface_address, [name, family])

  def aws_client_new(ref, opts), do: retry(:aws_client_new, [ref, opts])

  def aws_describe_instances(client, ref, filters, instance_ids, page_size),
    do: retry(:aws_describe_instances, [client, ref, filters, instance_ids, page_size])

  def aws_describe_auto_scaling_groups(client, ref, names),
    do: retry(:aws_describe_auto_scaling_groups, [client, ref, names])

  def nif_services, do: retry(:nif_services, [])

  def aws_describe_ecs_tasks(client, ref, query),
    do: retry(:aws_describe_ecs_tasks, [client, ref, query])

  def aws_describe_container_instances(client, ref, cluster, arns),
    do: retry(:aws_describe_container_instances, [client, ref, cluster, arns])

  # Benchmark baseline only (bench/schedulers.exs): blocks the calling scheduler.
  def aws_describe_instances_blocking(client, filters, instance_ids, page_size),
    do: retry(:aws_describe_instances_blocking, [client, filters, instance_ids, page_size])

  def imds_fetch(ref, opts), do: retry(:imds_fetch, [ref, opts])

  def ecs_metadata_fetch(ref, uri, timeout_ms, attempts),
    do: retry(:ecs_metadata_fetch, [ref, uri, timeout_ms, attempts])

  def registry_new(opts), do: retry(:registry_new, [opts])
  def registry_new_dynamodb(client, opts), do: retry(:registry_new_dynamodb, [client, opts])
  def registry_open(registry, ref, create), do: retry(:registry_open, [registry, ref, create])

  def registry_heartbeat(registry, ref, row, announce),
    do: retry(:registry_heartbeat, [registry, ref, row, announce])

  def registry_listen(registry, pid), do: retry(:registry_listen, [registry, pid])
  def registry_check(registry, ref, ttl_ms), do: retry(:registry_check, [registry, ref, ttl_ms])

  def registry_read(registry, ref, cluster, ttl_ms, limit),
    do: retry(:registry_read, [registry, ref, cluster, ttl_ms, limit])

  def registry_delete(registry, ref, cluster, node, boot_id),
    do: retry(:registry_delete, [registry, ref, cluster, node, boot_id])

  def gossip_keyring_new(secrets, label, insecure),
    do: retry(:gossip_keyring_new, [secrets, label, insecure])

  def gossip_keyring_ids(ring), do: retry(:gossip_keyring_ids, [ring])

  def gossip_replay_new(max_senders, window_ms),
    do: retry(:gossip_replay_new, [max_senders, window_ms])

  def gossip_seal(ring, kind, name, boot_id, seq, timestamp_ms, meta),
    do: retry(:gossip_seal, [ring, kind, name, boot_id, seq, timestamp_ms, meta])

  def gossip_open(ring, replay, packet, now_ms),
    do: retry(:gossip_open, [ring, replay, packet, now_ms])

  def runtime_probe(ref, delay_ms, panic), do: retry(:runtime_probe, [ref, delay_ms, panic])
  def runtime_workers, do: retry(:runtime_workers, [])
end
