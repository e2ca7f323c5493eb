defmodule AWSCluster.Test.FakeTaskMetadata do
  @moduledoc """
  A tiny ECS task metadata v4 endpoint on `127.0.0.1:<free port>`: moto has none.
  `GET /v4/task-1/task` answers the task document and `GET /v4/task-1` this container's,
  both built from the options (`cluster:`, `task_arn:`, `family:`, `az:`, `ip:`).
  `set(pid, mode: :down)` makes every request a 503, `mode: :up` undoes it.

      meta = start_supervised!({FakeTaskMetadata, cluster: "web", family: "app", ...})
      uri = FakeTaskMetadata.uri(meta)
  """

  use Agent

  alias AWSCluster.Test.LocalServer

  @doc "Starts the endpoint, linked to the caller."
  @spec start_link(keyword()) :: Agent.on_start()
  def start_link(opts) do
    Agent.start_link(fn ->
      me = self()
      {_listener, port} = LocalServer.listen(0, [], &serve(&1, me))
      %{port: port, mode: :up, opts: opts, requests: []}
    end)
  end

  @doc "The `ECS_CONTAINER_METADATA_URI_V4` of this endpoint."
  @spec uri(pid()) :: String.t()
  def uri(pid), do: "http://127.0.0.1:#{Agent.get(pid, & &1.port)}/v4/task-1"

  @doc "Switches the mode: `:up` or `:down` (503 to everything)."
  @spec set(pid(), keyword()) :: :ok
  def set(pid, mode: mode), do: Agent.update(pid, &%{&1 | mode: mode})

  @doc "The paths asked so far, oldest first."
  @spec requests(pid()) :: [String.t()]
  def requests(pid), do: Agent.get(pid, &Enum.reverse(&1.requests))

  defp serve(socket, agent) do
    with {:ok, data} <- :gen_tcp.recv(socket, 0, 5_000),
         [_, path] <- Regex.run(~r/\AGET (\S+) HTTP/, data) do
      state = Agent.get_and_update(agent, &{&1, %{&1 | requests: [path | &1.requests]}})
      {status, body} = answer(state, path)

      :gen_tcp.send(socket, [
        "HTTP/1.1 #{status} X\r\nContent-Type: application/json\r\nConnection: close\r\n",
        "Content-Length: #{byte_size(body)}\r\n\r\n",
        body
      ])
    end

    :gen_tcp.close(socket)
  end

  defp answer(%{mode: :down}, _path), do: {503, "{}"}

  defp answer(%{opts: o}, "/v4/task-1/task") do
    {200,
     ~s({"Cluster":"#{o[:cluster]}","TaskARN":"#{o[:task_arn]}","Family":"#{o[:family]}",) <>
       ~s("Revision":"1","AvailabilityZone":"#{o[:az]}","LaunchType":"FARGATE","Containers":[]})}
  end

  defp answer(%{opts: o}, "/v4/task-1") do
    {200,
     ~s({"DockerId":"d1","Name":"app","Networks":[{"NetworkMode":"awsvpc","IPv4Addresses":["#{o[:ip]}"]}]})}
  end

  defp answer(_state, _path), do: {404, "{}"}
end
