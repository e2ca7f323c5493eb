defmodule AWSCluster.Doctor.Peers do
  @moduledoc false
  # The doctor's peer checks: for each discovered peer, TCP to EPMD, the name registered
  # there, TCP to its distribution port and a hidden connection. Closed or silent ports
  # are what mis-set security groups look like.

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.Doctor

  @default_epmd_port 4369

  @doc "One check per discovered peer (at most `:max_peers`), probed concurrently."
  @spec checks([AWSCluster.Strategy.peer()], keyword()) :: [Doctor.check()]
  def checks(peers, opts) do
    timeout = Keyword.get(opts, :port_timeout, 2_000)
    epmd = epmd_port(opts)
    connect? = Keyword.get(opts, :connect, true) and Node.alive?()

    {probed, skipped} =
      peers |> Enum.reject(&(&1.node == node())) |> Enum.split(Keyword.get(opts, :max_peers, 64))

    checks =
      probed
      |> Task.async_stream(&peer_check(&1, epmd, timeout, connect?),
        max_concurrency: 16,
        timeout: 4 * timeout + 10_000,
        on_timeout: :kill_task,
        ordered: true
      )
      |> Enum.zip(probed)
      |> Enum.map(fn
        {{:ok, check}, _peer} -> check
        {{:exit, _}, peer} -> check("peer #{peer.node}", :fail, "the probe did not finish")
      end)

    case skipped do
      [] ->
        checks

      _ ->
        checks ++ [check("peers", :warn, "#{length(skipped)} more peers not probed (max_peers)")]
    end
  end

  defp peer_check(peer, epmd, timeout, connect?) do
    name = "peer #{peer.node}"
    [base, host] = peer.node |> Atom.to_string() |> String.split("@", parts: 2)

    sg =
      "allow TCP #{epmd} and the distribution port range between the nodes' security " <>
        "groups (and any host firewall)"

    with {:ip, {:ok, ip}} <- {:ip, resolve(Map.get(peer, :address) || host)},
         {:epmd, {:ok, port}} <- {:epmd, epmd_port_please(ip, epmd, base, timeout)},
         {:dist, :ok} <- {:dist, tcp(ip, port, timeout)} do
      ports = "epmd #{epmd} open, #{base} registered on port #{port}, port open"

      cond do
        not connect? ->
          check(name, :pass, ports)

        hidden_connect(peer.node, timeout) ->
          check(name, :pass, ports <> ", connection made")

        true ->
          check(
            name,
            :fail,
            ports <> ", but the distribution handshake failed",
            "the cookies differ, or the peer runs under another name than #{peer.node}; " <>
              "the peer's log says which (\"Connection attempt from node ... rejected\")"
          )
      end
    else
      {:ip, {:error, why}} ->
        check(name, :fail, "cannot resolve #{host}: #{why}", "use address: :private_ip")

      {:epmd, {:error, :not_registered}} ->
        check(
          name,
          :fail,
          "epmd #{epmd} open, but no node #{base} is registered there",
          "the node is not running, or runs under another basename than discovery expects"
        )

      {:epmd, {:error, why}} ->
        check(name, :fail, "epmd port #{epmd} #{describe_tcp(why, timeout)}", sg)

      {:dist, {:error, why}} ->
        check(
          name,
          :fail,
          "epmd #{epmd} open, #{base} registered, but its distribution port #{describe_tcp(why, timeout)}",
          sg
        )
    end
  end

  defp describe_tcp(:econnrefused, _timeout), do: "refused the connection (closed)"
  defp describe_tcp(:timeout, timeout), do: "gave no answer within #{timeout} ms (dropped)"
  defp describe_tcp(other, _timeout), do: "is unreachable (#{inspect(other)})"

  defp resolve(text) do
    chars = String.to_charlist(text)

    case :inet.parse_strict_address(chars) do
      {:ok, ip} ->
        {:ok, ip}

      {:error, _} ->
        case :inet.getaddr(chars, :inet) do
          {:ok, ip} -> {:ok, ip}
          {:error, why} -> {:error, inspect(why)}
        end
    end
  end

  defp hidden_connect(node, timeout) do
    if node in Node.list([:visible, :hidden]) do
      true
    else
      task = Task.async(fn -> :net_kernel.hidden_connect_node(node) end)

      ok = match?({:ok, true}, Task.yield(task, timeout) || Task.shutdown(task, :brutal_kill))
      # Leave no link behind: the doctor looks, it does not join.
      if ok, do: Node.disconnect(node)
      ok
    end
  end

  defp tcp(ip, port, timeout) do
    case :gen_tcp.connect(ip, port, [:binary, active: false], timeout) do
      {:ok, socket} ->
        :gen_tcp.close(socket)
        :ok

      {:error, _} = error ->
        error
    end
  end

  @doc "The EPMD port: `:epmd_port`, else `ERL_EPMD_PORT`, else 4369."
  @spec epmd_port(keyword()) :: :inet.port_number()
  def epmd_port(opts) do
    cond do
      port = opts[:epmd_port] ->
        port

      env = System.get_env("ERL_EPMD_PORT") ->
        case Integer.parse(env) do
          {port, ""} -> port
          _ -> @default_epmd_port
        end

      true ->
        @default_epmd_port
    end
  end

  # EPMD's PORT_PLEASE2_REQ (erts/doc/src/erl_dist_protocol.xml), spoken directly so the
  # EPMD port and the timeouts are ours, and a refused port can be told from a dropped one.
  @doc "The distribution port `basename` registered with the EPMD at `ip`:`epmd`."
  @spec epmd_port_please(:inet.ip_address(), :inet.port_number(), String.t(), timeout()) ::
          {:ok, :inet.port_number()} | {:error, :not_registered | term()}
  def epmd_port_please(ip, epmd, basename, timeout) do
    case :gen_tcp.connect(ip, epmd, [:binary, active: false, packet: :raw], timeout) do
      {:ok, socket} ->
        :ok = :gen_tcp.send(socket, <<byte_size(basename) + 1::16, 122, basename::binary>>)
        reply = recv_all(socket, "", timeout)
        :gen_tcp.close(socket)

        case reply do
          {:ok, <<119, 0, port::16, _rest::binary>>} -> {:ok, port}
          {:ok, <<119, _nonzero, _rest::binary>>} -> {:error, :not_registered}
          {:ok, other} -> {:error, {:bad_epmd_reply, byte_size(other)}}
          {:error, _} = error -> error
        end

      {:error, _} = error ->
        error
    end
  end

  defp recv_all(socket, acc, timeout) do
    case :gen_tcp.recv(socket, 0, timeout) do
      {:ok, data} -> recv_all(socket, acc <> data, timeout)
      {:error, :closed} -> {:ok, acc}
      {:error, _} = error -> if acc == "", do: error, else: {:ok, acc}
    end
  end
end
