defmodule AWSCluster.Distribution do
  @schema [
    basename: [
      type: {:custom, "1-64 letters, digits, _ or -", &__MODULE__.basename?/1},
      required: true,
      doc: "The part before `@`."
    ],
    interface: [
      type: :non_empty_string,
      doc: "Interface whose address names the node. One of `:interface`/`:ip` is required."
    ],
    ip: [
      type: :ip_address,
      doc: "The address itself."
    ],
    family: [
      type: {:in, [:inet, :inet6]},
      default: :inet,
      doc: "IPv6 needs the VM started with `-proto_dist inet6_tcp`."
    ],
    cookie: [type: :atom, doc: "Set as the cookie once distribution is up."],
    start_epmd: [type: :boolean, default: true, doc: "Start `epmd -daemon` when none answers."]
  ]

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

  #{AWSCluster.Config.docs(@schema)}
  """

  alias AWSCluster.{Config, Error, Interface, Redacted}

  @doc """
  Starts distribution. A node already running under the same name is a no-op
  returning `{:ok, node}`; one running under another name is an `:already_started` error.
  """
  @spec start(keyword()) :: {:ok, node()} | {:error, Error.t()}
  def start(opts) do
    with {:ok, o} <- Config.validate(opts, @schema),
         :ok <- family(o.family),
         {:ok, ip} <- ip(o) do
      name = :"#{o.basename}@#{:inet.ntoa(ip)}"

      cond do
        node() == name -> {:ok, name}
        Node.alive?() -> {:error, already_started(name)}
        true -> boot(name, ip, o)
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

    with :ok <- ensure_epmd(opts.start_epmd),
         :ok <- start_net_kernel(name) do
      if cookie = opts.cookie, do: Node.set_cookie(cookie)
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

  @doc """
  Whether `value` is a valid basename, the part of a node name before `@`: 1-64
  letters, digits, `_` or `-`. Every node name aws_cluster builds is checked with this.
  """
  @spec basename?(term()) :: boolean()
  def basename?(value), do: is_binary(value) and value =~ ~r/\A[A-Za-z0-9_-]{1,64}\z/

  defp family(:inet), do: :ok

  defp family(:inet6) do
    if :init.get_argument(:proto_dist) == {:ok, [[~c"inet6_tcp"]]},
      do: :ok,
      else: invalid(:family, "is :inet6 but the VM was not started with -proto_dist inet6_tcp")
  end

  defp ip(%{interface: nil, ip: nil}), do: invalid(:interface, "or :ip is required")

  defp ip(%{interface: iface, ip: nil, family: family}),
    do: Interface.address(iface, family: family)

  defp ip(%{interface: nil, ip: ip}), do: {:ok, ip}
  defp ip(_), do: invalid(:ip, "cannot be given together with :interface")

  defp invalid(key, text) do
    {:error, Error.new(:invalid_config, "#{inspect(key)} #{text}", %{key: key})}
  end
end
