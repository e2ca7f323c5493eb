defmodule AWSCluster.Distribution do
  @moduledoc """
  Starts Erlang distribution at runtime as `basename@<ip>`, with the distribution
  listener bound to that one address.

  The IP comes from an interface (`interface: "ethwe"`, a second ENI) or is given
  (`ip: {10, 0, 1, 5}`). Binding only that address is how cluster control traffic is
  kept on its own subnet. Use it as the first child of an application booted with
  `RELEASE_DISTRIBUTION=none`:

      children = [
        {AWSCluster.Distribution, basename: "chat", interface: "ethwe"},
        {AWSCluster.Supervisor, topologies: topologies},
        MyAppWeb.Endpoint
      ]

  Options:

    * `:basename` (required) - the part before `@`: letters, digits, `_` and `-`.
    * `:interface` - interface whose address names the node.
    * `:ip` - the address itself, as a tuple or a string. One of `:interface`/`:ip` is required.
    * `:family` - `:inet` (default) or `:inet6`; IPv6 needs the VM started with
      `-proto_dist inet6_tcp`.
    * `:cookie` - an atom to set as the cookie once distribution is up.
    * `:start_epmd` - start `epmd -daemon` when none answers (default `true`).
  """

  alias AWSCluster.{Error, Interface, Redacted}

  @known [:basename, :interface, :ip, :family, :cookie, :start_epmd]

  @doc """
  Starts distribution. A node already running under the same name is a no-op
  returning `{:ok, node}`; one running under another name is an `:already_started` error.
  """
  @spec start(keyword()) :: {:ok, node()} | {:error, Error.t()}
  def start(opts) do
    with :ok <- check_keys(opts),
         {:ok, basename} <- basename(opts),
         {:ok, family} <- family(opts),
         {:ok, ip} <- ip(opts, family) do
      name = :"#{basename}@#{:inet.ntoa(ip)}"

      cond do
        node() == name -> {:ok, name}
        Node.alive?() -> {:error, already_started(name)}
        true -> boot(name, ip, opts)
      end
    end
  end

  @doc "Supervisor entry point: starts distribution, then returns `:ignore`."
  @spec start_link(keyword()) :: :ignore | {:error, Error.t()}
  def start_link(opts) do
    case start(opts) do
      {:ok, _node} -> :ignore
      {:error, _} = error -> error
    end
  end

  @doc false
  @spec child_spec(keyword()) :: Supervisor.child_spec()
  def child_spec(opts) do
    # The options hold the cookie; see AWSCluster.Redacted.seal_child/1.
    Redacted.seal_child(%{
      id: __MODULE__,
      start: {__MODULE__, :start_link, [opts]},
      restart: :temporary
    })
  end

  defp boot(name, ip, opts) do
    :ok = :application.set_env(:kernel, :inet_dist_use_interface, ip)

    with :ok <- ensure_epmd(Keyword.get(opts, :start_epmd, true)),
         :ok <- start_net_kernel(name) do
      if cookie = opts[:cookie], do: Node.set_cookie(cookie)
      {:ok, name}
    end
  end

  defp start_net_kernel(name) do
    case :net_kernel.start([name, :longnames]) do
      {:ok, _} ->
        :ok

      {:error, {:already_started, _}} ->
        if node() == name, do: :ok, else: {:error, already_started(name)}

      {:error, reason} ->
        {:error,
         Error.new(
           :distribution_failed,
           "could not start distribution as #{name}: #{inspect(reason)}",
           %{node: name}
         )}
    end
  end

  defp already_started(wanted) do
    Error.new(
      :already_started,
      "distribution already runs as #{node()}, cannot rename it to #{wanted}",
      %{node: node(), wanted: wanted}
    )
  end

  defp ensure_epmd(start?) do
    cond do
      epmd_up?() -> :ok
      not start? -> {:error, Error.new(:epmd_unavailable, "no epmd answers on this host")}
      exe = epmd_executable() -> spawn_epmd(exe)
      true -> {:error, Error.new(:epmd_unavailable, "epmd is not running and not found")}
    end
  end

  defp epmd_up?, do: match?({:ok, _}, :erl_epmd.names({127, 0, 0, 1}))

  defp epmd_executable do
    bundled =
      Path.join([:code.root_dir(), "erts-#{:erlang.system_info(:version)}", "bin", "epmd"])

    if File.exists?(bundled), do: bundled, else: System.find_executable("epmd")
  end

  defp spawn_epmd(exe) do
    {_, _} = System.cmd(exe, ["-daemon"], stderr_to_stdout: true)
    wait_epmd(50)
  end

  defp wait_epmd(0), do: {:error, Error.new(:epmd_unavailable, "epmd did not come up")}

  defp wait_epmd(tries) do
    if epmd_up?() do
      :ok
    else
      Process.sleep(20)
      wait_epmd(tries - 1)
    end
  end

  defp check_keys(opts) do
    if Keyword.keyword?(opts) do
      case Keyword.keys(opts) -- @known do
        [] -> :ok
        [key | _] -> invalid(key, "is not an option; known: #{inspect(@known)}")
      end
    else
      {:error,
       Error.new(
         :invalid_config,
         "options must be a keyword list, got #{inspect(AWSCluster.Config.redact(opts))}"
       )}
    end
  end

  @doc """
  Whether `value` is a valid basename, the part of a node name before `@`: 1-64
  letters, digits, `_` or `-`. Every node name aws_cluster builds is checked with this.
  """
  @spec basename?(term()) :: boolean()
  def basename?(value), do: is_binary(value) and value =~ ~r/\A[A-Za-z0-9_-]{1,64}\z/

  defp basename(opts) do
    case opts[:basename] do
      b when is_binary(b) ->
        if basename?(b),
          do: {:ok, b},
          else: invalid(:basename, "must be 1-64 letters, digits, _ or -, got #{inspect(b)}")

      other ->
        invalid(:basename, "is required and must be a string, got #{inspect(other)}")
    end
  end

  defp family(opts) do
    case Keyword.get(opts, :family, :inet) do
      :inet ->
        {:ok, :inet}

      :inet6 ->
        if :init.get_argument(:proto_dist) == {:ok, [[~c"inet6_tcp"]]},
          do: {:ok, :inet6},
          else:
            invalid(:family, "is :inet6 but the VM was not started with -proto_dist inet6_tcp")

      other ->
        invalid(:family, "must be :inet or :inet6, got #{inspect(other)}")
    end
  end

  defp ip(opts, family) do
    case {opts[:interface], opts[:ip]} do
      {nil, nil} -> invalid(:interface, "or :ip is required")
      {iface, nil} when is_binary(iface) -> Interface.address(iface, family: family)
      {nil, ip} -> parse_ip(ip)
      {_, nil} -> invalid(:interface, "must be a string")
      {_, _} -> invalid(:ip, "cannot be given together with :interface")
    end
  end

  defp parse_ip(ip) when is_tuple(ip) do
    if :inet.is_ip_address(ip), do: {:ok, ip}, else: invalid(:ip, "is not an IP: #{inspect(ip)}")
  end

  defp parse_ip(ip) when is_binary(ip) do
    case :inet.parse_strict_address(String.to_charlist(ip)) do
      {:ok, parsed} -> {:ok, parsed}
      {:error, _} -> invalid(:ip, "is not an IP: #{inspect(ip)}")
    end
  end

  defp parse_ip(ip), do: invalid(:ip, "must be a tuple or string, got #{inspect(ip)}")

  defp invalid(key, text) do
    {:error, Error.new(:invalid_config, "#{inspect(key)} #{text}", %{key: key})}
  end
end
