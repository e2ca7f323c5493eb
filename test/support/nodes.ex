defmodule AWSCluster.Test.Nodes do
  @moduledoc """
  Connect, disconnect and list_nodes MFA targets for strategy tests (libcluster style):
  no network, every call is a message to the test process.

  The table (see `table/0`) holds the "connected" nodes so disconnects (which only touch
  listed nodes) can be observed, and `{:hang, node}` rows that make a connect to that
  node block forever after sending `{:connect_hang, node, pid}`.
  """

  @doc "A public table owned by the caller."
  def table, do: :ets.new(:test_nodes, [:public, :set])

  @doc "The MFAs for a strategy state."
  def mfas(test_pid, table) do
    [
      connect: {__MODULE__, :connect, [test_pid, table]},
      disconnect: {__MODULE__, :disconnect, [test_pid, table]},
      list_nodes: {__MODULE__, :list_nodes, [table]}
    ]
  end

  @doc "Makes connects to `node` hang."
  def hang(table, node), do: :ets.insert(table, {{:hang, node}})

  @doc "Makes connects to `node` fail (return `false`, like a refused connect) until `heal/2`."
  def fail(table, node), do: :ets.insert(table, {{:fail, node}})

  @doc "Undoes `fail/2`."
  def heal(table, node), do: :ets.delete(table, {:fail, node})

  def connect(test_pid, table, node) do
    cond do
      :ets.member(table, {:hang, node}) ->
        send(test_pid, {:connect_hang, node, self()})
        Process.sleep(:infinity)

      :ets.member(table, {:fail, node}) ->
        send(test_pid, {:connect_failed, node})
        false

      true ->
        :ets.insert(table, {node})
        send(test_pid, {:connect, node})
        true
    end
  end

  def disconnect(test_pid, table, node) do
    :ets.delete(table, node)
    send(test_pid, {:disconnect, node})
    true
  end

  def list_nodes(table), do: for({node} <- :ets.tab2list(table), is_atom(node), do: node)

  @doc "A connect MFA with options, as a user's might carry: reports what it was given."
  def connect_with(test_pid, opts, node) do
    send(test_pid, {:connect_with, opts, node})
    true
  end

  @doc "libcluster's own test shape: `{Nodes, :connect, [pid]}`."
  def connect(test_pid, node) do
    send(test_pid, {:connect, node})
    true
  end
end
