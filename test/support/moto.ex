defmodule AWSCluster.Test.Moto do
  @moduledoc """
  One real `moto_server` per test run, on `127.0.0.1:<free port>`, plus a boto3 seeder
  (`test/support/moto_seed.py`) from the same venv (`$AWS_CLUSTER_VENV`, default
  `~/.cache/aws_cluster/venv`; `bash script/setup` creates it).

  Tests that use moto share its state, so their modules must be `async: false` and
  start from `fresh!/0`:

      setup do
        AWSCluster.Test.Moto.fresh!()       # reset + VPC and subnets
        :ok
      end

      ids = Moto.run_instances!([%{ip: "127.0.1.10", tags: %{"app" => "chat"}}])
      {:ok, client} = AWSCluster.AWS.client(Moto.client_opts())

  Address plan: VPC `127.0.0.0/16`; subnet `127.0.1.0/24` in `us-east-1a`,
  `127.0.2.0/24` in `b`, `127.0.3.0/24` in `c`; bulk instances go to `127.0.128.0/17`
  (in `a`). An instance's subnet and AZ follow from its IP.

  moto and the seeder are OS processes behind ports: when this VM exits, for any
  reason, their stdin closes and they stop (the wrapper shell kills moto).
  `kill!/0` and `restart!/0` stop and start moto on the same port (its state is lost).
  """

  use GenServer

  @region "us-east-1"
  @seed_timeout 300_000

  # ── lifecycle ─────────────────────────────────────────────────────────────────────

  @doc "Starts moto (once per VM) and returns its endpoint."
  @spec start!() :: String.t()
  def start! do
    case GenServer.start(__MODULE__, [], name: __MODULE__) do
      {:ok, _} -> :ok
      {:error, {:already_started, _}} -> :ok
      {:error, reason} -> raise "cannot start moto_server: #{inspect(reason)}"
    end

    endpoint()
  end

  @doc "`http://127.0.0.1:<port>` of the running moto."
  @spec endpoint() :: String.t()
  def endpoint, do: "http://127.0.0.1:#{port()}"

  @doc "moto's TCP port."
  @spec port() :: :inet.port_number()
  def port do
    ensure_started()
    # A concurrent first caller may still be waiting for moto to boot.
    GenServer.call(__MODULE__, :port, 60_000)
  end

  @doc "The region every test uses."
  @spec region() :: String.t()
  def region, do: @region

  @doc "Options for `AWSCluster.AWS.client/1` against moto (dummy keys, 1 attempt)."
  @spec client_opts(keyword()) :: keyword()
  def client_opts(extra \\ []) do
    Keyword.merge(
      [
        region: @region,
        endpoint: start!(),
        access_key_id: "testing",
        secret_access_key: "testing",
        max_attempts: 1,
        operation_timeout: 60_000
      ],
      extra
    )
  end

  @doc """
  An EC2 strategy config against moto: instances tagged `"cluster" => cluster`, named
  by their `"node_basename"` tag, dummy keys, one attempt; `extra` merged over it.
  """
  @spec ec2_config(String.t(), keyword()) :: keyword()
  def ec2_config(cluster, extra) do
    Keyword.merge(
      [
        tags: %{"cluster" => cluster},
        node_basename: {:tag, "node_basename"},
        region: @region,
        endpoint: endpoint(),
        access_key_id: "testing",
        secret_access_key: "testing",
        max_attempts: 1
      ],
      extra
    )
  end

  @doc "Wipes all moto state (POST /moto-api/reset)."
  @spec reset!() :: :ok
  def reset! do
    {200, _} = http(port(), "POST", "/moto-api/reset")
    :ok
  end

  @doc "Resets moto and creates the VPC and subnets. Returns `%{\"vpc_id\" => .., \"subnets\" => %{\"a\" => ..}}`."
  @spec fresh!() :: map()
  def fresh! do
    reset!()
    setup_vpc!()
  end

  @doc "Kills the moto process (the port then refuses connections)."
  @spec kill!() :: :ok
  def kill! do
    ensure_started()
    GenServer.call(__MODULE__, :kill, 30_000)
  end

  @doc "Starts moto again on the same port after `kill!/0` (empty state)."
  @spec restart!() :: :ok
  def restart! do
    ensure_started()
    GenServer.call(__MODULE__, :restart, 60_000)
  end

  # ── seeding ───────────────────────────────────────────────────────────────────────

  @doc "Creates (or finds) the VPC 127.0.0.0/16 with its subnets."
  @spec setup_vpc!() :: map()
  def setup_vpc!, do: seed!("setup_vpc", %{})

  @doc """
  Launches one instance per spec and returns their ids in order. A spec is
  `%{ip: "127.0.x.y", tags: %{..}}`, optionally with `second_ip:` for a second ENI
  (device index 1) in the subnet of that address.
  """
  @spec run_instances!([map()]) :: [String.t()]
  def run_instances!(specs), do: seed!("run_instances", %{instances: specs})

  @doc """
  Launches `count` instances in the bulk subnet, `per_reservation` (default 100) per
  RunInstances call, all with `tags`. moto pages DescribeInstances by reservation, so
  this is how a page size of 5 spans pages.
  """
  @spec bulk_instances!(pos_integer(), map(), keyword()) :: [String.t()]
  def bulk_instances!(count, tags, opts \\ []) do
    seed!("bulk_instances", %{
      count: count,
      tags: tags,
      per_reservation: Keyword.get(opts, :per_reservation, 100)
    })
  end

  @doc "Terminates instances."
  @spec terminate!([String.t()]) :: non_neg_integer()
  def terminate!(ids), do: seed!("terminate", %{ids: ids})

  @doc "Creates ECS cluster `name` (and enables the VPC's DNS host names RunTask needs)."
  @spec ecs_cluster!(String.t()) :: String.t()
  def ecs_cluster!(name), do: seed!("ecs_cluster", %{name: name})

  @doc """
  Runs one task of `family` in `cluster` per spec and returns `%{"arn" => .., "ip" => ..}`
  for each. awsvpc specs are `%{az: "a", tags: %{..}}` (the ENI gets the next free
  `127.0.<a|b|c>.100+`); with `network_mode: "host"`, `%{container_instance: arn}`.
  """
  @spec ecs_run_tasks!(String.t(), String.t(), [map()], keyword()) :: [map()]
  def ecs_run_tasks!(cluster, family, specs, opts \\ []) do
    seed!("ecs_run_tasks", %{
      cluster: cluster,
      family: family,
      tasks: specs,
      network_mode: Keyword.get(opts, :network_mode, "awsvpc")
    })
  end

  @doc "Stops tasks (StopTask): their lastStatus becomes STOPPED."
  @spec ecs_stop!(String.t(), [String.t()]) :: non_neg_integer()
  def ecs_stop!(cluster, arns), do: seed!("ecs_stop", %{cluster: cluster, arns: arns})

  @doc "Registers EC2 instance `instance_id` as a container instance of `cluster`."
  @spec ecs_container_instance!(String.t(), String.t()) :: String.t()
  def ecs_container_instance!(cluster, instance_id),
    do: seed!("ecs_container_instance", %{cluster: cluster, instance_id: instance_id})

  @doc "Stops instances."
  @spec stop_instances!([String.t()]) :: non_neg_integer()
  def stop_instances!(ids), do: seed!("stop", %{ids: ids})

  @doc "Starts stopped instances."
  @spec start_instances!([String.t()]) :: non_neg_integer()
  def start_instances!(ids), do: seed!("start", %{ids: ids})

  @doc "Adds or overwrites tags."
  @spec tag!([String.t()], map()) :: non_neg_integer()
  def tag!(ids, tags), do: seed!("tag", %{ids: ids, tags: tags})

  @doc "Removes the tags `keys` from instances `ids`."
  @spec untag!([String.t()], [String.t()]) :: non_neg_integer()
  def untag!(ids, keys), do: seed!("untag", %{ids: ids, keys: keys})

  @doc "Creates AutoScaling group `name` over the three AZ subnets, holding `instance_ids`."
  @spec create_asg!(String.t(), [String.t()]) :: String.t()
  def create_asg!(name, instance_ids \\ []),
    do: seed!("create_asg", %{name: name, instance_ids: instance_ids})

  @doc "Attaches instances to a group."
  @spec attach!(String.t(), [String.t()]) :: non_neg_integer()
  def attach!(name, ids), do: seed!("attach", %{name: name, ids: ids})

  @doc "Detaches instances from a group."
  @spec detach!(String.t(), [String.t()]) :: non_neg_integer()
  def detach!(name, ids), do: seed!("detach", %{name: name, ids: ids})

  @doc "Sets an instance's AutoScaling health: `\"Healthy\"` or `\"Unhealthy\"`."
  @spec set_health!(String.t(), String.t()) :: String.t()
  def set_health!(id, status), do: seed!("set_health", %{id: id, status: status})

  @doc "Moves instances of group `name` to Standby."
  @spec standby!(String.t(), [String.t()]) :: non_neg_integer()
  def standby!(name, ids), do: seed!("standby", %{name: name, ids: ids})

  @doc "Moves instances of group `name` back to InService."
  @spec exit_standby!(String.t(), [String.t()]) :: non_neg_integer()
  def exit_standby!(name, ids), do: seed!("exit_standby", %{name: name, ids: ids})

  @doc "Runs a seeder op (see moto_seed.py); raises with the Python error on failure."
  @spec seed!(String.t(), map()) :: term()
  def seed!(op, args) do
    case seed(op, args) do
      {:ok, value} -> value
      {:error, why} -> raise "moto seed #{op} failed: #{why}"
    end
  end

  @doc "Runs a seeder op: `{:ok, value}` or `{:error, message}`."
  @spec seed(String.t(), map()) :: {:ok, term()} | {:error, String.t()}
  def seed(op, args) do
    ensure_started()
    # An op runs in the test region unless `args` names another (multi-region tests).
    request = Map.merge(%{region: @region}, Map.merge(args, %{op: op, endpoint: endpoint()}))
    GenServer.call(__MODULE__, {:seed, json(request)}, @seed_timeout + 5_000)
  end

  defp ensure_started do
    if Process.whereis(__MODULE__) == nil, do: start!()
    :ok
  end

  # ── server ────────────────────────────────────────────────────────────────────────

  @impl true
  def init(_) do
    venv = venv!()
    port = free_port()
    state = %{venv: venv, port: port, moto: nil, seeder: nil}
    {:ok, state |> launch_moto() |> launch_seeder()}
  end

  @impl true
  def handle_call(:port, _from, state), do: {:reply, state.port, state}

  def handle_call(:kill, _from, state) do
    {:reply, :ok, stop_moto(state)}
  end

  def handle_call(:restart, _from, state) do
    {:reply, :ok, state |> stop_moto() |> launch_moto()}
  end

  def handle_call({:seed, request}, _from, %{seeder: seeder} = state) do
    true = Port.command(seeder, request)

    receive do
      {^seeder, {:data, reply}} -> {:reply, parse_reply(reply), state}
      {^seeder, {:exit_status, code}} -> {:stop, {:seeder_exited, code}, state}
    after
      @seed_timeout -> {:stop, :seeder_timeout, state}
    end
  end

  @impl true
  def handle_info({port, {:data, _line}}, %{moto: port} = state), do: {:noreply, state}
  def handle_info({_port, {:exit_status, _}}, state), do: {:noreply, state}
  def handle_info(_other, state), do: {:noreply, state}

  defp venv! do
    dir = System.get_env("AWS_CLUSTER_VENV") || Path.expand("~/.cache/aws_cluster/venv")

    unless File.exists?(Path.join([dir, "bin", "moto_server"])) do
      raise "moto_server not found in #{dir}; run `bash script/setup` (or set AWS_CLUSTER_VENV)"
    end

    dir
  end

  # The wrapper shell runs moto in the background and kills it as soon as its own
  # stdin (the port) closes, which also happens when this VM dies.
  @wrapper ~S"""
  "$1" "$4" -H 127.0.0.1 -p "$2" </dev/null >>"$3" 2>&1 &
  child=$!
  echo "$child"
  read _ignored
  kill -TERM "$child" 2>/dev/null
  i=0
  while kill -0 "$child" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
  kill -KILL "$child" 2>/dev/null
  exit 0
  """

  defp launch_moto(state) do
    log = Path.join(System.tmp_dir!(), "aws_cluster_moto_#{state.port}.log")
    python = Path.join([state.venv, "bin", "python"])
    launcher = Path.expand("moto_launch.py", __DIR__)

    port =
      Port.open({:spawn_executable, "/bin/sh"}, [
        :binary,
        :exit_status,
        {:line, 256},
        args: [
          "-c",
          @wrapper,
          "moto_wrapper",
          python,
          Integer.to_string(state.port),
          log,
          launcher
        ]
      ])

    AWSCluster.Test.Wait.until(
      fn -> match?({200, _}, http(state.port, "GET", "/moto-api/")) end,
      30_000,
      100
    ) ||
      raise "moto_server did not answer on 127.0.0.1:#{state.port} within 30 s (log: #{log})"

    # Left alone, moto moves a task one step towards STOPPED on every DescribeTasks; a
    # task here stays RUNNING until StopTask. The setting survives /moto-api/reset.
    {status, _} =
      http(
        state.port,
        "POST",
        "/moto-api/state-manager/set-transition",
        ~s({"model_name":"ecs::task","transition":{"progression":"manual","times":1000000000}})
      )

    status in 200..299 || raise "moto refused the ecs::task transition: HTTP #{status}"

    %{state | moto: port}
  end

  defp stop_moto(%{moto: nil} = state), do: state

  defp stop_moto(%{moto: port} = state) do
    # A line on stdin also wakes the wrapper; closing makes sure it sees EOF.
    Port.command(port, "stop\n")
    Port.close(port)

    AWSCluster.Test.Wait.until(
      fn -> http(state.port, "GET", "/moto-api/") == :refused end,
      10_000,
      100
    ) ||
      raise "moto_server on port #{state.port} did not stop"

    %{state | moto: nil}
  end

  defp launch_seeder(state) do
    python = Path.join([state.venv, "bin", "python"])
    script = Path.expand("moto_seed.py", __DIR__)

    seeder =
      Port.open({:spawn_executable, python}, [
        :binary,
        :exit_status,
        {:packet, 4},
        args: [script],
        env: [{~c"PYTHONWARNINGS", ~c"ignore"}]
      ])

    %{state | seeder: seeder}
  end

  defp parse_reply(text) do
    {:ok, tokens, _} = :erl_scan.string(String.to_charlist(text) ++ ~c".")

    case :erl_parse.parse_term(tokens) do
      {:ok, {:ok, value}} -> {:ok, value}
      {:ok, {:error, why}} -> {:error, why}
    end
  end

  # ── small helpers shared by the test support modules ─────────────────────────────

  @doc false
  def free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1}, reuseaddr: true)
    {:ok, port} = :inet.port(socket)
    :gen_tcp.close(socket)
    port
  end

  @doc """
  A one-shot HTTP/1.1 request to 127.0.0.1:`port`: `{status, body}`, `:refused`
  or `{:error, reason}`.
  """
  @spec http(:inet.port_number(), String.t(), String.t(), binary()) ::
          {non_neg_integer(), binary()} | :refused | {:error, term()}
  def http(port, method, path, body \\ "") do
    case :gen_tcp.connect({127, 0, 0, 1}, port, [:binary, active: false], 5_000) do
      {:ok, socket} ->
        request =
          "#{method} #{path} HTTP/1.1\r\nHost: 127.0.0.1:#{port}\r\nConnection: close\r\n" <>
            "Content-Length: #{byte_size(body)}\r\n\r\n" <> body

        # A moto that is shutting down may accept and then close before the request
        # is written: that is an answer too (stop_moto/1 polls through it).
        result = with :ok <- :gen_tcp.send(socket, request), do: recv_all(socket, [])

        :gen_tcp.close(socket)

        with {:ok, raw} <- result,
             [head, resp_body] <- :binary.split(raw, "\r\n\r\n"),
             ["HTTP/1." <> _, code | _] <- String.split(head, " ", parts: 3) do
          {String.to_integer(code), resp_body}
        else
          {:error, _} = e -> e
          _ -> {:error, :malformed}
        end

      {:error, :econnrefused} ->
        :refused

      {:error, _} = e ->
        e
    end
  end

  defp recv_all(socket, acc) do
    case :gen_tcp.recv(socket, 0, 30_000) do
      {:ok, data} -> recv_all(socket, [acc, data])
      {:error, :closed} -> {:ok, IO.iodata_to_binary(acc)}
      {:error, _} = e -> e
    end
  end

  @doc false
  # Enough JSON for seeder requests: maps, lists, strings, integers, booleans, nil.
  def json(value) when is_map(value) do
    [
      "{",
      Enum.map_intersperse(value, ",", fn {k, v} -> [json(to_string(k)), ":", json(v)] end),
      "}"
    ]
    |> IO.iodata_to_binary()
  end

  def json(value) when is_list(value),
    do: IO.iodata_to_binary(["[", Enum.map_intersperse(value, ",", &json/1), "]"])

  def json(value) when is_binary(value) do
    escaped =
      for <<c::utf8 <- value>>, into: "" do
        case c do
          ?" -> "\\\""
          ?\\ -> "\\\\"
          c when c < 32 -> "\\u" <> String.pad_leading(Integer.to_string(c, 16), 4, "0")
          c -> <<c::utf8>>
        end
      end

    "\"" <> escaped <> "\""
  end

  def json(value) when is_integer(value), do: Integer.to_string(value)
  def json(true), do: "true"
  def json(false), do: "false"
  def json(nil), do: "null"
  def json(value) when is_atom(value), do: json(Atom.to_string(value))
end
