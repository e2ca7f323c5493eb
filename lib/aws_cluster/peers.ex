defmodule AWSCluster.Peers do
  @moduledoc false
  # What discovery knows about each peer, for AWSCluster.node_info/1 and nodes_by_az/0.
  #
  # One public ETS table owned by this long-lived process: pollers come and go (and may
  # crash), the table must not vanish with them. Each poller writes only its own
  # topology's rows and registers itself, so its rows are dropped when it dies instead of
  # describing peers nobody watches any more.

  use GenServer

  @table __MODULE__
  # One row per grouped topology: {topology, AWSCluster.Groups.view()}.
  @views AWSCluster.Peers.Groups

  @type info :: AWSCluster.node_info()

  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(_opts), do: GenServer.start_link(__MODULE__, :ok, name: __MODULE__)

  @doc "Starts the :aws_cluster application if the table's owner is not running yet."
  @spec ensure_started() :: :ok
  def ensure_started do
    if Process.whereis(__MODULE__) == nil do
      _ = Application.ensure_all_started(:aws_cluster)
    end

    :ok
  end

  @doc "Ties `topology`'s rows to `pid`: they are deleted when it exits."
  @spec register(atom(), pid()) :: :ok
  def register(topology, pid) do
    if Process.whereis(__MODULE__), do: GenServer.call(__MODULE__, {:register, topology, pid})
    :ok
  end

  @doc "Replaces every row of `topology` with `infos`."
  @spec replace(atom(), [info()]) :: :ok
  def replace(topology, infos) do
    if table?() do
      keep = MapSet.new(infos, & &1.node)

      for {{^topology, node}, _} <- :ets.match_object(@table, {{topology, :_}, :_}),
          not MapSet.member?(keep, node),
          do: :ets.delete(@table, {topology, node})

      :ets.insert(@table, Enum.map(infos, &{{topology, &1.node}, &1}))
    end

    :ok
  end

  @doc "Every known peer, across topologies."
  @spec all() :: [info()]
  def all do
    if table?(), do: for({_key, info} <- :ets.tab2list(@table), do: info), else: []
  end

  @doc "The info of `node` from the first topology that knows it."
  @spec lookup(node()) :: info() | nil
  def lookup(node) do
    if table?() do
      case :ets.match_object(@table, {{:_, node}, :_}) do
        [{_key, info} | _] -> info
        [] -> nil
      end
    end
  end

  @doc "Stores `topology`'s group view (`AWSCluster.Groups`)."
  @spec put_view(atom(), map()) :: :ok
  def put_view(topology, view) do
    if :ets.whereis(@views) != :undefined, do: :ets.insert(@views, {topology, view})
    :ok
  end

  @doc "Every grouped topology's view, as `{topology, view}`."
  @spec views() :: [{atom(), map()}]
  def views do
    if :ets.whereis(@views) != :undefined, do: :ets.tab2list(@views), else: []
  end

  defp table?, do: :ets.whereis(@table) != :undefined

  @impl true
  def init(:ok) do
    :ets.new(@table, [:named_table, :public, :set, read_concurrency: true])
    :ets.new(@views, [:named_table, :public, :set, read_concurrency: true])
    {:ok, %{}}
  end

  @impl true
  def handle_call({:register, topology, pid}, _from, monitors) do
    ref = Process.monitor(pid)
    {:reply, :ok, Map.put(monitors, ref, topology)}
  end

  @impl true
  def handle_info({:DOWN, ref, :process, _pid, _reason}, monitors) do
    {topology, monitors} = Map.pop(monitors, ref)

    if topology do
      :ets.match_delete(@table, {{topology, :_}, :_})
      :ets.delete(@views, topology)
    end

    {:noreply, monitors}
  end
end
