defmodule Mix.AWSCluster do
  @moduledoc false
  # What the mix aws_cluster.* tasks share: their switches, turning them into
  # topologies (from app config, or built from flags), and how they fail.

  alias AWSCluster.Probe

  @switches [
    topology: :keep,
    strategy: :string,
    tags: :keep,
    filter: :keep,
    group: :keep,
    cluster: :string,
    family: :string,
    service_name: :string,
    region: :string,
    endpoint: :string,
    imds_endpoint: :string,
    address: :string,
    basename: :string,
    operation_timeout: :integer
  ]

  @addresses %{
    "private_ip" => :private_ip,
    "public_ip" => :public_ip,
    "private_dns" => :private_dns,
    "ipv6" => :ipv6,
    "awsvpc" => :awsvpc,
    "host" => :host
  }

  @strategies %{
    "ec2" => AWSCluster.Strategy.EC2,
    "autoscaling" => AWSCluster.Strategy.AutoScaling,
    "ecs" => AWSCluster.Strategy.ECS
  }

  @doc "The switches every task accepts (for OptionParser)."
  @spec switches() :: keyword()
  def switches, do: @switches

  @doc """
  Loads the project's config (without starting its application) and starts
  :aws_cluster, so a task sees `config/runtime.exs` but never joins a cluster by itself.
  """
  @spec start(OptionParser.argv()) :: :ok
  def start(args) do
    Mix.Task.run("app.config", Enum.filter(args, &(&1 == "--no-compile")))
    {:ok, _} = Application.ensure_all_started(:aws_cluster)
    :ok
  end

  @doc """
  The topologies to work on: built from flags when `--strategy` is given, otherwise the
  configured ones (only those named by `--topology`, if any), each with the flag
  overrides (`--region`, `--endpoint` ...) merged into its config.
  """
  @spec topologies(keyword()) :: {:ok, keyword()} | {:error, String.t()}
  def topologies(opts) do
    with {:ok, overrides} <- overrides(opts) do
      case Keyword.fetch(opts, :strategy) do
        {:ok, name} -> from_flags(name, overrides, opts)
        :error -> from_config(Keyword.get_values(opts, :topology), overrides)
      end
    end
  end

  defp from_flags(name, overrides, opts) do
    case Map.fetch(@strategies, String.downcase(name)) do
      {:ok, strategy} ->
        config = Keyword.put_new_lazy(overrides, :node_basename, fn -> default_basename(opts) end)
        config = Enum.reject(config, fn {_k, v} -> v == nil end)
        {:ok, [cli: [strategy: strategy, config: config]]}

      :error ->
        {:error, "--strategy must be ec2, autoscaling or ecs, got #{inspect(name)}"}
    end
  end

  # A distributed VM (`elixir --name chat@10.0.1.5 -S mix ...`) already says which
  # basename the cluster uses.
  defp default_basename(_opts) do
    if Node.alive?(), do: node() |> Atom.to_string() |> String.split("@") |> hd()
  end

  defp from_config(wanted, overrides) do
    configured = Probe.configured()

    selected =
      case wanted do
        [] ->
          configured

        names ->
          Enum.filter(configured, fn {name, _} -> Atom.to_string(name) in names end)
      end

    cond do
      configured == [] ->
        {:error,
         "no topologies configured (config :libcluster or :aws_cluster, topologies: [...]); " <>
           "or give one with flags, e.g. --strategy ec2 --tags app=chat --basename chat --region us-east-1"}

      selected == [] or length(selected) < length(Enum.uniq(wanted)) ->
        {:error,
         "no topology named #{Enum.join(wanted, ", ")}; configured: " <>
           Enum.map_join(configured, ", ", fn {name, _} -> Atom.to_string(name) end)}

      true ->
        {:ok, Enum.map(selected, fn {name, spec} -> {name, override(spec, overrides)} end)}
    end
  end

  defp override(spec, overrides) when is_list(spec) do
    if Keyword.keyword?(spec) do
      config = Keyword.get(spec, :config, [])
      config = if Keyword.keyword?(config), do: Keyword.merge(config, overrides), else: config
      Keyword.put(spec, :config, config)
    else
      spec
    end
  end

  defp override(spec, _overrides), do: spec

  defp overrides(opts) do
    with {:ok, tags} <- pairs(opts, :tags),
         {:ok, filters} <- pairs(opts, :filter),
         {:ok, address} <- address(opts[:address]) do
      basename =
        case opts[:basename] do
          "tag:" <> key -> {:tag, key}
          other -> other
        end

      groups = Keyword.get_values(opts, :group)

      overrides = [
        tags: if(tags != %{}, do: tags),
        filters: if(filters != %{}, do: filters),
        groups: if(groups != [], do: groups),
        cluster: opts[:cluster],
        family: opts[:family],
        service_name: opts[:service_name],
        region: opts[:region],
        endpoint: opts[:endpoint],
        imds_endpoint: opts[:imds_endpoint],
        address: address,
        node_basename: basename,
        operation_timeout: opts[:operation_timeout]
      ]

      {:ok, Enum.reject(overrides, fn {_k, v} -> v == nil end)}
    end
  end

  defp pairs(opts, key) do
    opts
    |> Keyword.get_values(key)
    |> Enum.reduce_while({:ok, %{}}, fn text, {:ok, acc} ->
      case String.split(text, "=", parts: 2) do
        [k, v] when k != "" -> {:cont, {:ok, Map.put(acc, k, v)}}
        _ -> {:halt, {:error, "--#{key} takes key=value, got #{inspect(text)}"}}
      end
    end)
  end

  defp address(nil), do: {:ok, nil}

  defp address(text) do
    case {Map.fetch(@addresses, text), String.split(text, ":", parts: 2)} do
      {{:ok, kind}, _} ->
        {:ok, kind}

      {:error, ["interface", index]} ->
        case Integer.parse(index) do
          {n, ""} when n >= 0 -> {:ok, {:interface, n}}
          _ -> {:error, "--address interface:N takes a device index, got #{inspect(text)}"}
        end

      {:error, ["subnet", id]} when id != "" ->
        {:ok, {:subnet, id}}

      {:error, ["tag", key]} when key != "" ->
        {:ok, {:tag, key}}

      _ ->
        {:error,
         "--address must be private_ip, public_ip, private_dns, ipv6, interface:N, " <>
           "subnet:ID or tag:KEY (ECS: awsvpc or host), got #{inspect(text)}"}
    end
  end

  @doc "Prints `message` on stderr and ends the task with exit status 1."
  @spec fail(String.t()) :: no_return()
  def fail(message) do
    Mix.shell().error(message)
    exit({:shutdown, 1})
  end
end
