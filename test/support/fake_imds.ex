defmodule AWSCluster.Test.FakeIMDS do
  @moduledoc """
  A tiny instance metadata service on `127.0.0.1:<free port>`, one per test.

  moto's own IMDS cannot be used: it does not implement the
  `x-aws-ec2-metadata-token-ttl-seconds` token handshake.

      imds = start_supervised!({AWSCluster.Test.FakeIMDS, instance_id: "i-1", auto_scaling_group: "web"})
      AWSCluster.IMDS.fetch(endpoint: FakeIMDS.endpoint(imds))

  Options (all changeable later with `set/2`):

    * `:instance_id` (default `"i-0fake"`), `:region` (`"us-east-1"`),
      `:availability_zone` (`"us-east-1a"`).
    * `:auto_scaling_group` - value of the `aws:autoscaling:groupName` tag; `nil`
      (default) answers 404 on the tag path, as when tags are not exposed.
    * `:mode` -
      * `:v2` (default) - tokens required: `PUT /latest/api/token` needs the TTL header
        (1..21600) else 400; GETs without a valid token get 401;
      * `:optional` - GETs work with or without a token;
      * `:v1_only` - the token call answers 404, GETs need no token;
      * `:token_hang` - the token call never answers (a container behind hop limit 1);
        GETs need no token;
      * `:hang` - accepts connections and never answers;
      * `:down` - the port refuses connections.

  `requests/1` lists what was asked, as `{method, path, token?}` tuples in order.
  """

  use GenServer

  alias AWSCluster.Test.LocalServer

  @paths %{
    "/latest/meta-data/instance-id" => :instance_id,
    "/latest/meta-data/placement/region" => :region,
    "/latest/meta-data/placement/availability-zone" => :availability_zone,
    "/latest/meta-data/tags/instance/aws:autoscaling:groupName" => :auto_scaling_group
  }

  @doc "Starts a fake IMDS linked to the caller."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts \\ []), do: GenServer.start_link(__MODULE__, opts)

  @doc "`http://127.0.0.1:<port>`."
  @spec endpoint(pid()) :: String.t()
  def endpoint(pid), do: "http://127.0.0.1:#{GenServer.call(pid, :port)}"

  @doc "Changes values or the mode, e.g. `set(pid, mode: :down)`."
  @spec set(pid(), keyword()) :: :ok
  def set(pid, changes), do: GenServer.call(pid, {:set, changes})

  @doc "Requests seen so far: `[{method, path, token_sent?}]`."
  @spec requests(pid()) :: [{String.t(), String.t(), boolean()}]
  def requests(pid), do: GenServer.call(pid, :requests)

  @impl true
  def init(opts) do
    config = %{
      instance_id: Keyword.get(opts, :instance_id, "i-0fake"),
      region: Keyword.get(opts, :region, "us-east-1"),
      availability_zone: Keyword.get(opts, :availability_zone, "us-east-1a"),
      auto_scaling_group: Keyword.get(opts, :auto_scaling_group),
      mode: Keyword.get(opts, :mode, :v2)
    }

    state = %{config: config, port: 0, listener: nil, tokens: MapSet.new(), log: []}
    {:ok, apply_mode(state)}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}
  def handle_call(:requests, _from, state), do: {:reply, Enum.reverse(state.log), state}

  def handle_call({:set, changes}, _from, state) do
    state = %{state | config: Map.merge(state.config, Map.new(changes))}
    {:reply, :ok, apply_mode(state)}
  end

  # Called by connection handlers: decide the answer and record the request.
  def handle_call({:request, method, path, headers}, _from, state) do
    token = headers["x-aws-ec2-metadata-token"]
    state = %{state | log: [{method, path, token != nil} | state.log]}
    {reply, state} = answer(state.config.mode, method, path, headers, token, state)
    {:reply, reply, state}
  end

  defp answer(:hang, _method, _path, _headers, _token, state), do: {:hang, state}

  defp answer(mode, "PUT", "/latest/api/token", headers, _token, state) do
    ttl = headers["x-aws-ec2-metadata-token-ttl-seconds"]

    cond do
      mode == :v1_only ->
        {{404, "Not Found"}, state}

      mode == :token_hang ->
        {:hang, state}

      ttl == nil or not valid_ttl?(ttl) ->
        {{400, "Missing or invalid x-aws-ec2-metadata-token-ttl-seconds"}, state}

      true ->
        token = "fake-token-" <> Integer.to_string(System.unique_integer([:positive]))
        {{200, token}, %{state | tokens: MapSet.put(state.tokens, token)}}
    end
  end

  defp answer(mode, "GET", path, _headers, token, state) do
    authorized =
      case mode do
        :v2 -> token != nil and MapSet.member?(state.tokens, token)
        :optional -> token == nil or MapSet.member?(state.tokens, token)
        _ -> true
      end

    case {authorized, Map.fetch(@paths, path)} do
      {false, _} -> {{401, "Unauthorized"}, state}
      {true, {:ok, key}} -> {value_reply(state.config[key]), state}
      {true, :error} -> {{404, "Not Found"}, state}
    end
  end

  defp answer(_mode, _method, _path, _headers, _token, state),
    do: {{405, "Method Not Allowed"}, state}

  defp value_reply(nil), do: {404, "Not Found"}
  defp value_reply(value), do: {200, value}

  defp valid_ttl?(ttl) do
    case Integer.parse(ttl) do
      {n, ""} -> n in 1..21_600
      _ -> false
    end
  end

  # :down closes the listener so connects are refused; any other mode (re)opens it on
  # the same port.
  defp apply_mode(%{config: %{mode: :down}, listener: nil} = state), do: state

  defp apply_mode(%{config: %{mode: :down}} = state) do
    :gen_tcp.close(state.listener)
    %{state | listener: nil}
  end

  defp apply_mode(%{listener: nil} = state) do
    server = self()
    {listener, port} = LocalServer.listen(state.port, [packet: :http_bin], &handle(&1, server))
    %{state | listener: listener, port: port}
  end

  defp apply_mode(state), do: state

  defp handle(socket, server) do
    with {:ok, {:http_request, method, {:abs_path, path}, _}} <- :gen_tcp.recv(socket, 0, 5_000),
         {:ok, headers} <- headers(socket, %{}) do
      case ask(server, {:request, to_string(method), path, headers}) do
        :closed ->
          :ok

        :hang ->
          # Hold the connection open, unanswered, until the client gives up.
          :gen_tcp.recv(socket, 0, 60_000)

        {status, body} ->
          :gen_tcp.send(socket, [
            "HTTP/1.1 #{status} X\r\nContent-Type: text/plain\r\nConnection: close\r\n",
            "Content-Length: #{byte_size(body)}\r\n\r\n",
            body
          ])
      end
    end

    :gen_tcp.close(socket)
  end

  # The test (and this server) may be gone while a handler still runs.
  defp ask(server, request) do
    GenServer.call(server, request)
  catch
    :exit, _ -> :closed
  end

  defp headers(socket, acc) do
    case :gen_tcp.recv(socket, 0, 5_000) do
      {:ok, {:http_header, _, name, _, value}} ->
        headers(socket, Map.put(acc, String.downcase(to_string(name)), value))

      {:ok, :http_eoh} ->
        {:ok, acc}

      other ->
        {:error, other}
    end
  end
end
