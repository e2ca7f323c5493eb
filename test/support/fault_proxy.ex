defmodule AWSCluster.Test.FaultProxy do
  @moduledoc """
  An HTTP/1.1 proxy on `127.0.0.1:<free port>` in front of moto (or any local HTTP
  server) that injects faults per request; the mode can be switched at any time.

      proxy = start_supervised!({AWSCluster.Test.FaultProxy, upstream: Moto.port()})
      {:ok, client} = AWSCluster.AWS.client(Moto.client_opts(endpoint: FaultProxy.endpoint(proxy)))
      FaultProxy.set_mode(proxy, :throttle)

  Modes:

    * `:pass` (default) - forward unchanged;
    * `:refuse` - stop listening: connects are refused (the port is kept and reopened
      by the next mode);
    * `:drop` - read the request, close the connection without answering;
    * `{:delay, ms}` - wait `ms`, then forward;
    * `{:status, code}` - answer `code` (500, 503 ...) with a plain-text body and no
      AWS error code;
    * `:throttle` - answer as AWS does when throttling: EC2's 503
      `RequestLimitExceeded` XML, AutoScaling's 400 `Throttling` XML for
      AutoScaling actions, or ECS's 400 `ThrottlingException` JSON;
    * `:truncate` - forward, then send the headers and only half of the body (the
      Content-Length still announces all of it) and close;
    * `{:slow_body, ms}` - forward, send the headers and half the body, wait `ms`,
      send the rest;
    * `{:page, which, damage}` - forward, and damage the answer if it is the `which`
      page of a paginated call (`:first`: the request has no `NextToken`; `:last`: the
      answer has none; `:middle`: both have one), then close. `damage` is `:cut` (half
      the body, delimited by the close, no Content-Length), `:drop_next_token` (whole,
      well-formed XML that ends the listing early) or `:wrong_root` (well-formed XML
      answering another action). Other pages pass.
    * `:unknown_instance_id` - answer every DescribeInstances that names instances
      (`InstanceId.N`) with EC2's 400 `InvalidInstanceID.NotFound`, as AWS does when one
      named id no longer exists; other requests pass.
    * `{:once, mode}` - `mode` for the first request it damages (for `{:page, ...}`, the
      first matching page), then `:pass`.

  `requests/1` returns the `Action` (or `X-Amz-Target` operation) of every request received, in order, whatever the
  mode - a count independent of the code under test (pages, retries, polls).
  """

  use GenServer

  alias AWSCluster.Test.LocalServer

  @doc "Starts a proxy to `upstream:` (a port on 127.0.0.1), linked to the caller."
  @spec start_link(keyword()) :: GenServer.on_start()
  def start_link(opts), do: GenServer.start_link(__MODULE__, opts)

  @doc "`http://127.0.0.1:<port>` of the proxy."
  @spec endpoint(pid()) :: String.t()
  def endpoint(pid), do: "http://127.0.0.1:#{GenServer.call(pid, :port)}"

  @doc "Switches the fault mode; applies to every request received from now on."
  @spec set_mode(pid(), term()) :: :ok
  def set_mode(pid, mode), do: GenServer.call(pid, {:mode, mode})

  @doc "The `Action=` of every request so far, oldest first."
  @spec requests(pid()) :: [String.t()]
  def requests(pid), do: GenServer.call(pid, :requests)

  @doc "`requests/1` with each request's arrival, in this VM's monotonic ms."
  @spec timed_requests(pid()) :: [{integer(), String.t()}]
  def timed_requests(pid), do: GenServer.call(pid, :timed_requests)

  @doc "Forgets the recorded requests."
  @spec clear_requests(pid()) :: :ok
  def clear_requests(pid), do: GenServer.call(pid, :clear)

  @impl true
  def init(opts) do
    upstream = Keyword.fetch!(opts, :upstream)
    state = %{upstream: upstream, mode: :pass, port: 0, listener: nil, log: []}
    {:ok, listen(state)}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  def handle_call(:requests, _from, state),
    do: {:reply, state.log |> Enum.reverse() |> Enum.map(&elem(&1, 1)), state}

  def handle_call(:timed_requests, _from, state), do: {:reply, Enum.reverse(state.log), state}
  def handle_call(:clear, _from, state), do: {:reply, :ok, %{state | log: []}}

  def handle_call({:mode, :refuse}, _from, state) do
    if state.listener, do: :gen_tcp.close(state.listener)
    {:reply, :ok, %{state | mode: :refuse, listener: nil}}
  end

  def handle_call({:mode, mode}, _from, state) do
    {:reply, :ok, listen(%{state | mode: mode})}
  end

  def handle_call({:request, action}, _from, state) do
    entry = {System.monotonic_time(:millisecond), action}
    {:reply, {state.mode, state.upstream}, %{state | log: [entry | state.log]}}
  end

  # A one-shot mode has been used up.
  def handle_call({:spent, mode}, _from, %{mode: {:once, mode}} = state),
    do: {:reply, :ok, %{state | mode: :pass}}

  def handle_call({:spent, _}, _from, state), do: {:reply, :ok, state}

  defp listen(%{listener: nil} = state) do
    # A deep accept queue: benchmarks open 1,000 connections at once, and the default
    # backlog (5) makes the kernel drop connects, which stall for seconds or fail.
    server = self()
    {listener, port} = LocalServer.listen(state.port, [backlog: 1024], &serve(&1, server))
    %{state | listener: listener, port: port}
  end

  defp listen(state), do: state

  # One connection: requests in a row until either side closes.
  defp serve(socket, server) do
    with {:ok, request} <- read_message(socket, "", :request),
         {:ok, {mode, upstream}} <- ask(server, {:request, action(request)}),
         :continue <- respond_once(mode, server, socket, request, upstream) do
      serve(socket, server)
    else
      _ -> :gen_tcp.close(socket)
    end
  end

  defp ask(server, request) do
    {:ok, GenServer.call(server, request)}
  catch
    :exit, _ -> :closed
  end

  # `respond/4` answers `{:passed, result}` when it let a request through undamaged.
  defp respond_once({:once, inner}, server, socket, request, upstream) do
    case respond(inner, socket, request, upstream) do
      {:passed, result} ->
        result

      result ->
        ask(server, {:spent, inner})
        result
    end
  end

  defp respond_once(mode, _server, socket, request, upstream) do
    case respond(mode, socket, request, upstream) do
      {:passed, result} -> result
      result -> result
    end
  end

  defp respond({:page, which, damage}, socket, request, upstream) do
    with {:ok, response} <- forward(request, upstream) do
      {head, body} = split(response)
      asked_next? = request =~ "NextToken="
      has_next? = body =~ "<nextToken>"

      page =
        cond do
          not asked_next? -> :first
          not has_next? -> :last
          true -> :middle
        end

      if page == which do
        [status_line | _] = String.split(head, "\r\n", parts: 2)

        :gen_tcp.send(socket, [
          status_line,
          "\r\nContent-Type: text/xml;charset=UTF-8\r\nConnection: close\r\n\r\n",
          damage(damage, body)
        ])

        :close
      else
        :gen_tcp.send(socket, response)
        {:passed, keep_alive(response)}
      end
    else
      :error -> :close
    end
  end

  defp respond(:pass, socket, request, upstream) do
    case forward(request, upstream) do
      {:ok, response} ->
        :gen_tcp.send(socket, response)
        keep_alive(response)

      :error ->
        :close
    end
  end

  defp respond({:delay, ms}, socket, request, upstream) do
    Process.sleep(ms)
    respond(:pass, socket, request, upstream)
  end

  defp respond(:refuse, _socket, _request, _upstream), do: :close
  defp respond(:drop, _socket, _request, _upstream), do: :close

  defp respond({:status, code}, socket, _request, _upstream) do
    send_response(socket, code, "text/plain", "fault proxy: injected HTTP #{code}\n")
    :close
  end

  defp respond(:throttle, socket, request, _upstream) do
    cond do
      json?(request) ->
        send_response(
          socket,
          400,
          "application/x-amz-json-1.1",
          ~s({"__type":"ThrottlingException","message":"Rate exceeded"})
        )

      action(request) =~ ~r/AutoScaling|LaunchConfiguration|ScalingActivities/ ->
        send_response(socket, 400, "text/xml", """
        <ErrorResponse xmlns="https://autoscaling.amazonaws.com/doc/2011-01-01/">\
        <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
        <RequestId>fault-proxy</RequestId></ErrorResponse>\
        """)

      true ->
        send_response(socket, 503, "text/xml", """
        <?xml version="1.0" encoding="UTF-8"?>
        <Response><Errors><Error><Code>RequestLimitExceeded</Code>\
        <Message>Request limit exceeded.</Message></Error></Errors>\
        <RequestID>fault-proxy</RequestID></Response>\
        """)
    end

    :close
  end

  defp respond(:unknown_instance_id, socket, request, upstream) do
    if action(request) == "DescribeInstances" and request =~ "InstanceId.1=" do
      send_response(socket, 400, "text/xml", """
      <?xml version="1.0" encoding="UTF-8"?>
      <Response><Errors><Error><Code>InvalidInstanceID.NotFound</Code>\
      <Message>The instance ID 'i-0gone' does not exist</Message></Error></Errors>\
      <RequestID>fault-proxy</RequestID></Response>\
      """)

      :close
    else
      respond(:pass, socket, request, upstream)
    end
  end

  defp respond(:truncate, socket, request, upstream) do
    with {:ok, response} <- forward(request, upstream) do
      {head, body} = split(response)
      :gen_tcp.send(socket, [head, binary_part(body, 0, div(byte_size(body), 2))])
    end

    :close
  end

  defp respond({:slow_body, ms}, socket, request, upstream) do
    with {:ok, response} <- forward(request, upstream) do
      {head, body} = split(response)
      half = div(byte_size(body), 2)
      :gen_tcp.send(socket, [head, binary_part(body, 0, half)])
      Process.sleep(ms)
      :gen_tcp.send(socket, binary_part(body, half, byte_size(body) - half))
    end

    :close
  end

  defp damage(:cut, body), do: binary_part(body, 0, div(byte_size(body), 2))

  defp damage(:drop_next_token, body),
    do: Regex.replace(~r{<nextToken>.*?</nextToken>}s, body, "")

  defp damage(:wrong_root, body),
    do: String.replace(body, "DescribeInstancesResponse", "DescribeVolumesResponse")

  defp send_response(socket, code, type, body) do
    :gen_tcp.send(socket, [
      "HTTP/1.1 #{code} Fault\r\nContent-Type: #{type}\r\nConnection: close\r\n",
      "Content-Length: #{byte_size(body)}\r\n\r\n",
      body
    ])
  end

  defp forward(request, upstream) do
    # Generous: with 1,000 requests at once moto's accept queue (128) overflows and the
    # kernel retries the connect for tens of seconds; a refused port still fails at once.
    with {:ok, up} <-
           :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: false], 60_000),
         :ok <- :gen_tcp.send(up, request),
         {:ok, response} <- read_message(up, "", :response) do
      :gen_tcp.close(up)
      {:ok, response}
    else
      _ -> :error
    end
  end

  defp keep_alive(response) do
    {head, _} = split(response)
    if String.downcase(head) =~ "connection: close", do: :close, else: :continue
  end

  # Reads one HTTP message (request or response) framed by Content-Length, or, for a
  # response without one, until the peer closes.
  defp read_message(socket, acc, kind) do
    case :binary.split(acc, "\r\n\r\n") do
      [head, body] ->
        case {content_length(head), kind} do
          {nil, :request} -> {:ok, acc}
          {nil, :response} -> read_to_close(socket, acc)
          {n, _} when byte_size(body) >= n -> {:ok, acc}
          _ -> more(socket, acc, kind)
        end

      [_] ->
        more(socket, acc, kind)
    end
  end

  defp more(socket, acc, kind) do
    case :gen_tcp.recv(socket, 0, 120_000) do
      {:ok, data} -> read_message(socket, acc <> data, kind)
      {:error, _} -> :error
    end
  end

  defp read_to_close(socket, acc) do
    case :gen_tcp.recv(socket, 0, 120_000) do
      {:ok, data} -> read_to_close(socket, acc <> data)
      {:error, :closed} -> {:ok, acc}
      {:error, _} -> :error
    end
  end

  defp content_length(head) do
    head
    |> String.split("\r\n")
    |> Enum.find_value(fn line ->
      case String.split(line, ":", parts: 2) do
        [name, value] ->
          if String.downcase(name) == "content-length", do: String.to_integer(String.trim(value))

        _ ->
          nil
      end
    end)
  end

  defp split(message) do
    [head, body] = :binary.split(message, "\r\n\r\n")
    {head <> "\r\n\r\n", body}
  end

  # Query requests name it in the form body, awsJson1_1 ones (ECS) in X-Amz-Target.
  defp action(request) do
    case Regex.run(~r/(?:\n|&|\?)Action=([A-Za-z]+)/, request) ||
           Regex.run(~r/\nx-amz-target: *[A-Za-z0-9]+\.([A-Za-z]+)/i, request) do
      [_, action] -> action
      nil -> "unknown"
    end
  end

  defp json?(request), do: request =~ ~r/\nx-amz-target:/i
end
