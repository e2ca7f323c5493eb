defmodule AWSCluster.Test.LocalServer do
  @moduledoc """
  The TCP listener behind the test HTTP servers (`FakeIMDS`, `FaultProxy`): it listens on
  `127.0.0.1` only and hands each accepted connection to its own process, so a slow or
  hanging connection never holds up the next accept.
  """

  @doc """
  Listens on `port` (0 for a free one) with passive binary sockets plus `opts`, and
  starts an accept loop linked to the caller that runs `handler.(socket)` in a fresh
  process per connection. The loop ends when the listener is closed. Returns the
  listener and the port it got.
  """
  @spec listen(:inet.port_number(), [:gen_tcp.listen_option()], (:gen_tcp.socket() -> any())) ::
          {:gen_tcp.socket(), :inet.port_number()}
  def listen(port, opts, handler) do
    {:ok, listener} =
      :gen_tcp.listen(port, [:binary, ip: {127, 0, 0, 1}, reuseaddr: true, active: false] ++ opts)

    {:ok, port} = :inet.port(listener)
    spawn_link(fn -> accept_loop(listener, handler) end)
    {listener, port}
  end

  defp accept_loop(listener, handler) do
    case :gen_tcp.accept(listener) do
      {:ok, socket} ->
        # The handler may only read once it owns the socket.
        pid = spawn(fn -> receive(do: (:go -> handler.(socket))) end)
        :ok = :gen_tcp.controlling_process(socket, pid)
        send(pid, :go)
        accept_loop(listener, handler)

      {:error, _closed} ->
        :ok
    end
  end
end
