defmodule AWSCluster.SecretsTest do
  # No secret ever appears in a log line or an error: not the gossip key, not the AWS
  # secret access key or session token, not the cookie. Logs are captured at debug level
  # (crash and supervisor reports included) across: start, discovery failing against
  # moto with bad credentials and behind the fault proxy, start failures (with the
  # supervisor's report), invalid config, gossip rejects and rotation, and crashes of
  # the strategy processes (whose reports print their state).
  use ExUnit.Case, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.{Config, Poller}
  alias AWSCluster.Strategy.{EC2, Gossip, State}
  alias AWSCluster.Test.{FaultProxy, LogWatch, Moto, MotoIAM, Ports, Wait}

  @moduletag timeout: 120_000

  # Distinctive values: any occurrence in a log or an error is a leak.
  @aws_secret "wJalrXUtnFEMI/K7MDENG/bPxRfiCYsecretLEAKa1"
  @session_token "FwoGZXIvYXdzEleakTOKEN/session+token=="
  @gossip_secret "gossip-shared-secret-LEAK-0123456789abcdef"
  @gossip_old "gossip-previous-secret-LEAK-9876543210fedcba"
  @cookie :"cookie-LEAK-0123456789"

  @secrets [@aws_secret, @session_token, @gossip_secret, @gossip_old, Atom.to_string(@cookie)]

  setup_all do
    Moto.start!()
    :ok
  end

  # Supervisor reports (a child that fails to start is printed with its start
  # arguments) are off by default in Elixir; users turn them on. On only inside a
  # capture: the console backend coming back would be reported too.
  defp with_sasl_reports(fun) do
    previous = Application.get_env(:logger, :handle_sasl_reports, false)
    Application.put_env(:logger, :handle_sasl_reports, true)
    Logger.configure(handle_sasl_reports: true)

    try do
      result = fun.()
      # A poller failing in init logs its crash report after start_link has returned
      # (unless its supervisor's exit kills it first): reports stay on until it is gone.
      assert Wait.until(&no_poller_left?/0)
      result
    after
      Application.put_env(:logger, :handle_sasl_reports, previous)
      Logger.configure(handle_sasl_reports: previous)
    end
  end

  defp no_poller_left? do
    Enum.all?(Process.list(), fn pid ->
      case Process.info(pid, :dictionary) do
        {:dictionary, dict} -> dict[:"$initial_call"] != {AWSCluster.Poller, :init, 1}
        nil -> true
      end
    end)
  end

  setup do
    Moto.fresh!()
    %{tag: "s#{System.unique_integer([:positive])}"}
  end

  defp refute_secrets(text, where) do
    text =
      if is_binary(text),
        do: text,
        else: inspect(text, limit: :infinity, printable_limit: :infinity)

    for secret <- @secrets do
      refute String.contains?(text, secret), "#{where} leaks #{inspect(secret)}:\n#{text}"
      # Also as it would appear escaped inside an inspected string.
      refute String.contains?(text, inspect(secret)), "#{where} leaks #{inspect(secret)}"
    end
  end

  # Runs `fun` capturing the log; reports from other processes are logged
  # asynchronously, so it first waits (bounded) until each of `expected` was logged.
  defp capture(fun, expected \\ []) do
    parent = self()

    log =
      capture_log([level: :debug], fn ->
        send(parent, {:result, LogWatch.after_logged(expected, fun)})
      end)

    assert_received {:result, result}
    {result, log}
  end

  defp ec2_config(tag, endpoint, extra) do
    [
      tags: %{"cluster" => tag},
      node_basename: "x",
      region: Moto.region(),
      endpoint: endpoint,
      access_key_id: "AKIAIOSFODNN7EXAMPLE",
      secret_access_key: @aws_secret,
      session_token: @session_token,
      max_attempts: 1,
      operation_timeout: 2_000,
      polling_interval: 100
    ]
    |> Keyword.merge(extra)
  end

  defp poller(sup) do
    [{_, pid, _, _}] = Supervisor.which_children(sup)
    pid
  end

  test "EC2: start, bad credentials rejected by moto's IAM, faults, a crash", %{tag: tag} do
    {key, _real_secret} = MotoIAM.user!("#{tag}-user", ["ec2:DescribeInstances"])
    proxy = start_supervised!({FaultProxy, upstream: Moto.port()})

    {_, log} =
      capture(
        fn ->
          MotoIAM.enforce!()

          try do
            config = ec2_config(tag, FaultProxy.endpoint(proxy), access_key_id: key)

            {:ok, sup} =
              AWSCluster.Supervisor.start_link(topologies: [sec: [strategy: EC2, config: config]])

            pid = poller(sup)
            assert Wait.until(fn -> Poller.status(pid).health == :failing end)
            status = Poller.status(pid)
            assert status.last_error.reason == :unauthorized
            refute_secrets(status, "Poller.status/1")

            # Every fault the proxy has, one after the other.
            for mode <- [{:status, 500}, :throttle, :truncate, :drop, :refuse] do
              FaultProxy.set_mode(proxy, mode)
              failures = Poller.status(pid).failures
              assert Wait.until(fn -> Poller.status(pid).failures > failures end)
              refute_secrets(Poller.status(pid), "Poller.status/1 under #{inspect(mode)}")
            end

            # A crash of the poller prints its state in the crash report. (An unknown
            # call is answered with an error; a cast has no clause.)
            Process.unlink(sup)
            ref = Process.monitor(pid)
            GenServer.cast(pid, :no_such_request)
            assert_receive {:DOWN, ^ref, :process, ^pid, _}, 5_000
            Process.exit(sup, :shutdown)
          after
            MotoIAM.relax!()
          end
        end,
        ["[aws_cluster:sec] discovery failing (unauthorized)", "no_such_request"]
      )

    assert log =~ "[aws_cluster:sec] discovery failing (unauthorized)"
    assert log =~ "no_such_request"
    refute_secrets(log, "the log")
  end

  test "EC2: a start with IMDS down boots failing and says to set region:, showing no secret",
       %{tag: tag} do
    down = "http://127.0.0.1:#{Moto.free_port()}"
    config = ec2_config(tag, Moto.endpoint(), imds_endpoint: down) |> Keyword.delete(:region)

    {status, log} =
      capture(
        fn ->
          {:ok, sup} =
            AWSCluster.Supervisor.start_link(topologies: [sec: [strategy: EC2, config: config]])

          pid = poller(sup)
          assert Wait.until(fn -> Poller.status(pid).health == :failing end)
          status = Poller.status(pid)
          Supervisor.stop(sup)
          status
        end,
        ["[aws_cluster:sec] cannot start discovery yet"]
      )

    assert status.last_error.message =~ "region:"
    refute_secrets(status, "Poller.status/1")
    assert log =~ "[aws_cluster:sec] cannot start discovery yet"
    refute_secrets(log, "the log")
  end

  test "child specs that fail to start under any supervisor report redacted start arguments",
       %{tag: tag} do
    # Invalid options are what still fails a start.
    config = ec2_config(tag, Moto.endpoint(), polling_interval: 0)

    children = [
      {AWSCluster.Distribution, basename: "x", ip: "1.2.3", cookie: @cookie},
      {EC2, topology: :sec_child, config: config},
      {AWSCluster.Supervisor, topologies: [sec_sup: [strategy: EC2, config: config]]}
    ]

    for {module, _} = child <- children do
      {result, log} =
        capture(
          fn ->
            Process.flag(:trap_exit, true)
            with_sasl_reports(fn -> Supervisor.start_link([child], strategy: :one_for_one) end)
          end,
          ["Start Call: AWSCluster.Redacted.start_child(#{inspect(module)}"]
        )

      assert {:error, _} = result
      refute_secrets(result, "the start error of #{inspect(module)}")
      assert log =~ "**redacted**"
      refute_secrets(log, "the log of #{inspect(module)}")
    end
  end

  test "invalid config: errors never echo a secret" do
    cases = [
      # Not a keyword list at all, secrets inside.
      fn -> Config.validate([{:secret_access_key, @aws_secret}, :oops], EC2.schema()) end,
      fn -> Config.validate(%{secret: @gossip_secret}, AWSCluster.Gossip.Config.schema()) end,
      # A secret of the wrong type, and a wrong value next to a secret.
      fn -> Config.validate([secret_access_key: [@aws_secret]], EC2.schema()) end,
      fn -> Config.validate([session_token: {@session_token}], EC2.schema()) end,
      fn ->
        Config.validate([secret_access_key: @aws_secret, max_attempts: 0], EC2.schema())
      end,
      # A strategy's config given as a map, not a keyword list.
      fn -> EC2.start_link(topology: :sec, config: %{secret_access_key: @aws_secret}) end,
      fn -> State.new({:config, [secret_access_key: @aws_secret]}) end,
      fn ->
        AWSCluster.Supervisor.start_link(
          topologies: [sec: [strategy: EC2, config: [secret_access_key: @aws_secret, bogus: 1]]]
        )
      end,
      fn ->
        AWSCluster.Supervisor.start_link(
          topologies: [sec: [strategy: EC2, config: {:secret_access_key, @aws_secret}]]
        )
      end,
      # Gossip: short, both, wrong type, a non-keyword list.
      fn ->
        Gossip.start_link(topology: :sec, config: [secret: "short", seeds: ["127.0.0.1"]])
      end,
      fn ->
        Gossip.start_link(
          topology: :sec,
          config: [secret: @gossip_secret, secrets: [@gossip_old], seeds: ["127.0.0.1"]]
        )
      end,
      fn -> Gossip.start_link(topology: :sec, config: [secrets: @gossip_secret]) end,
      fn -> Gossip.start_link(topology: :sec, config: [{:secret, @gossip_secret}, 1]) end,
      # A misspelt secret key: the error names keys, never values.
      fn -> Gossip.start_link(topology: :sec, config: [secert: @gossip_secret]) end,
      fn -> EC2.start_link(topology: :sec, config: [secret_acess_key: @aws_secret]) end,
      # Distribution's cookie.
      fn -> AWSCluster.Distribution.start(basename: "x", ip: "1.2.3", cookie: @cookie) end,
      fn -> AWSCluster.Distribution.start([{:cookie, @cookie}, :bogus]) end,
      # The AWS client's own validation.
      fn -> AWSCluster.AWS.client(region: "us-east-1", secret_access_key: [@aws_secret]) end,
      fn -> AWSCluster.AWS.client(%{secret_access_key: @aws_secret}) end
    ]

    # Each case fails validating, in the calling process, before anything is started:
    # no report can come later, so nothing is waited for.
    for {fun, i} <- Enum.with_index(cases) do
      {result, log} = capture(fun)
      assert {:error, _} = result, "case #{i} did not fail: #{inspect(result)}"
      refute_secrets(result, "the error of case #{i}")
      refute_secrets(log, "the log of case #{i}")
    end
  end

  test "gossip: start, rejects, rotation, stop and a crash" do
    port = Ports.udp()

    {_, log} =
      capture(
        fn ->
          Process.flag(:trap_exit, true)

          {:ok, pid} =
            Gossip.start_link(
              topology: :sec_gossip,
              config: [
                secrets: [@gossip_secret, @gossip_old],
                port: port,
                if_addr: "127.0.0.1",
                seeds: ["127.0.0.1:#{Ports.udp()}"],
                announce_interval: 100,
                stats_log_interval: 100
              ]
            )

          {:ok, socket} = :gen_udp.open(0, [:binary, ip: {127, 0, 0, 1}])
          for _ <- 1..20, do: :gen_udp.send(socket, {127, 0, 0, 1}, port, "heartbeat::garbage")
          :gen_udp.close(socket)
          # UDP: count what arrived, not what was sent.
          assert Wait.until(fn -> Gossip.stats(pid).rejected_total >= 10 end)
          # The rejects summary is logged on a timer; crash the process only after it ran.
          assert Wait.until(fn -> :sys.get_state(pid).stats.unlogged == %{} end)
          refute_secrets(Gossip.stats(pid), "Gossip.stats/1")
          refute_secrets(Gossip.peers(pid), "Gossip.peers/1")

          assert {:error, e} = Gossip.rotate(pid, ["short"])
          refute_secrets(e, "a rotation error")
          assert :ok = Gossip.rotate(pid, [@gossip_old, @gossip_secret])

          # The exits of a rotation that never reached the process carry the request:
          # the secrets in it are sealed.
          noproc = catch_exit(Gossip.rotate(:no_such_gossip_topology, [@gossip_secret]))
          assert {:noproc, _} = noproc
          refute_secrets(noproc, "rotate's :noproc exit")
          :sys.suspend(pid)
          timeout = catch_exit(Gossip.rotate(pid, [@gossip_secret, @gossip_old], 100))
          :sys.resume(pid)
          assert {:timeout, _} = timeout
          refute_secrets(timeout, "rotate's :timeout exit")

          # A crash prints the state: an unknown cast has no clause.
          GenServer.cast(pid, :no_such_request)
          assert_receive {:EXIT, ^pid, _}, 5_000
        end,
        # The rejects summary comes every stats_log_interval.
        [
          "[aws_cluster:sec_gossip] gossip started",
          "[aws_cluster:sec_gossip] dropped",
          "no_such_request"
        ]
      )

    assert log =~ "[aws_cluster:sec_gossip] gossip started"
    assert log =~ "[aws_cluster:sec_gossip] dropped"
    assert log =~ "no_such_request"
    refute_secrets(log, "the log")
  end

  test "Config.redact/1 hides every secret-bearing key at any depth" do
    term = %{
      config: [secret: "a", secrets: ["b"], secret_access_key: "c", session_token: "d"],
      state: %State{topology: :t, config: [cookie: :e, region: "r"]},
      list: [{:x, [secret_access_key: "f"]}]
    }

    redacted = Config.redact(term)
    text = inspect(redacted, limit: :infinity)
    for s <- ~w(a b c d e f), do: refute(text =~ ~s("#{s}") or text =~ ":#{s}]")
    assert redacted.state.__struct__ == State
    assert text =~ ~s(region: "r")
  end
end
