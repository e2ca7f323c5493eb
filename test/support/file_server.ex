defmodule AWSCluster.Test.FileServer do
  @moduledoc """
  A loopback HTTP/1.1 server for the files of one directory (`GET /<name>`), for the
  prebuilt-NIF tests: 200 with the file's bytes, 404 for anything else. Every request is
  counted, so a test can tell whether anything was fetched.
  """

  alias AWSCluster.Test.LocalServer

  @doc "Serves `dir` on a free port of 127.0.0.1; returns `{base_url, counter}`."
  @spec serve(Path.t()) :: {String.t(), :counters.counters_ref()}
  def serve(dir) do
    counter = :counters.new(1, [])

    {_listener, port} =
      LocalServer.listen(0, [packet: :http_bin], fn socket -> handle(socket, dir, counter) end)

    {"http://127.0.0.1:#{port}", counter}
  end

  defp handle(socket, dir, counter) do
    with {:ok, {:http_request, :GET, {:abs_path, "/" <> name}, _}} <-
           :gen_tcp.recv(socket, 0, 5_000),
         :ok <- skip_headers(socket) do
      :counters.add(counter, 1, 1)
      path = Path.join(dir, Path.basename(name))

      {status, body} =
        case File.read(path) do
          {:ok, bytes} -> {"200 OK", bytes}
          {:error, _} -> {"404 Not Found", "not found\n"}
        end

      :gen_tcp.send(socket, [
        "HTTP/1.1 #{status}\r\ncontent-length: #{byte_size(body)}\r\nconnection: close\r\n\r\n",
        body
      ])
    end

    :gen_tcp.close(socket)
  end

  defp skip_headers(socket) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, :http_eoh} -> :inet.setopts(socket, packet: :raw)
      {:ok, {:http_header, _, _, _, _}} -> skip_headers(socket)
      other -> other
    end
  end
end
