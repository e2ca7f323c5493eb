defmodule AWSCluster.FirewallTest do
  # The firewall on real parts: hosts in network namespaces on one bridge, real BEAM
  # nodes in them, EC2 discovery on moto (reached through a Unix-socket relay, since a
  # namespace cannot see the root namespace's 127.0.0.1), and the kernel's nftables.
  use AWSCluster.Test.MotoCase, async: false

  import ExUnit.CaptureLog

  alias AWSCluster.{Error, Firewall}
  alias AWSCluster.Test.{Fleet, Moto, Netns, Relay, Wait}

  @moduletag timeout: 240_000

  @dist_min 9100
  @dist_max 9109
  @config [enabled: true, interface: "ethwe", dist_ports: {@dist_min, @dist_max}]

  @host_skip (with :ok <- Netns.available(),
                   :ok <- AWSCluster.Test.Firewall.available() do
                nil
              else
                {_, why} ->
                  IO.puts("AWSCluster.FirewallTest: skipping the namespace and nft tests: #{why}")
                  why
              end)

  describe "config" do
    test "an unpinned distribution port range is refused, naming the key" do
      assert {:error, %Error{reason: :invalid_config} = e} = Firewall.validate(enabled: true)

      assert e.details.key == {:firewall, :dist_ports}
      assert e.message =~ "firewall: invalid option :dist_ports"
      assert e.message =~ "inet_dist_listen_min"
    end

    test "an unknown interface is refused, naming the key and the interfaces there are" do
      assert {:error, %Error{reason: :invalid_config} = e} =
               Firewall.validate(Keyword.put(@config, :interface, "nosuch0"))

      assert e.details.key == {:firewall, :interface}
      assert e.message =~ ~s(no interface "nosuch0" here (have: )
      assert e.message =~ "lo"

      assert {:error, %Error{details: %{key: {:firewall, :interface}}} = e} =
               Firewall.validate(
                 Keyword.put(@config, :interface, ~s(lo" accept; flush ruleset "x))
               )

      assert e.message =~ "is not an interface name"
    end

    test "a bad table name is refused; disabled is nil" do
      assert {:error, %Error{details: %{key: {:firewall, :table}}}} =
               Firewall.validate(Keyword.put(@config, :table, "x; flush ruleset"))

      assert {:ok, nil} = Firewall.validate(enabled: false, table: "anything")
    end

    test "a topology with a bad firewall option does not start, and says which" do
      assert {:error, %Error{reason: :invalid_config} = e} =
               AWSCluster.Supervisor.start_link(
                 topologies: [
                   fw: [
                     strategy: AWSCluster.Strategy.EC2,
                     config: Moto.ec2_config("fw", firewall: [enabled: true, interface: "lo"])
                   ]
                 ]
               )

      assert e.message =~ "topology :fw: firewall: invalid option :dist_ports"
    end
  end

  describe "render/2" do
    test "accepts the set on the protected ports, drops the rest on those ports only" do
      {:ok, config} =
        Firewall.validate(Keyword.merge(@config, interface: nil, udp_ports: [45_892]))

      text = Firewall.render(config, [{127, 0, 1, 12}, {127, 0, 1, 11}, {0, 0, 0, 0, 0, 0, 0, 1}])

      assert text =~ "set peers_v4 { type ipv4_addr; elements = { 127.0.1.11, 127.0.1.12 } }"
      assert text =~ "set peers_v6 { type ipv6_addr; elements = { ::1 } }"
      assert text =~ "tcp dport { 4369, 9100-9109 } ip saddr @peers_v4 accept"
      assert text =~ "tcp dport { 4369, 9100-9109 } drop"
      assert text =~ "udp dport { 45892 } ip6 saddr @peers_v6 accept"
      refute text =~ "iifname"
      assert text =~ "ct state established,related accept"
    end
  end

  describe "dry_run" do
    if @host_skip, do: @tag(skip: @host_skip)

    test "logs a ruleset that nft -c -f accepts, and applies nothing" do
      {:ok, config} =
        Firewall.validate(
          Keyword.merge(@config, interface: "lo", dry_run: true, table: "awsc_dry")
        )

      log =
        capture_log(fn ->
          {:ok, fw} = Firewall.start(config, :dry)
          fw = Firewall.follow(fw, ["127.0.1.12", :"a@127.0.2.12", "not an ip"])
          assert "127.0.1.12" in Firewall.allowed(fw)
          assert "127.0.2.12" in Firewall.allowed(fw)
          Firewall.stop(fw)
        end)

      [_, batch] =
        Regex.run(~r/would apply:\n(.*?\n}\n)/s, List.last(String.split(log, "firewall dry run")))

      path =
        Path.join(System.tmp_dir!(), "aws_cluster_dry_#{System.unique_integer([:positive])}.nft")

      File.write!(path, batch)
      on_exit(fn -> File.rm(path) end)

      assert {_, 0} = System.cmd("nft", ["-c", "-f", path], stderr_to_stdout: true)
      {tables, 0} = System.cmd("nft", ["list", "tables"])
      refute tables =~ "awsc_dry"
    end
  end

  describe "start and failures" do
    if @host_skip, do: @tag(skip: @host_skip)

    setup do
      table = "awsc_t#{System.unique_integer([:positive])}"

      on_exit(fn ->
        System.cmd("nft", ["delete", "table", "inet", table], stderr_to_stdout: true)
      end)

      # On lo only, behind `iif "lo" accept`: the rules cannot drop anything on this host.
      {:ok, config} = Firewall.validate(Keyword.merge(@config, interface: "lo", table: table))
      %{config: config}
    end

    test "no nft command: a start error naming it", %{config: config} do
      assert {:error, %Error{reason: :firewall_unavailable, details: %{missing: :nft}} = e} =
               Firewall.start(%{config | nft: "nft-not-installed"}, :fw)

      assert e.message =~ ~s(the nft command "nft-not-installed" is missing)
    end

    test "no CAP_NET_ADMIN: a start error naming it (a VM started without the capability)", %{
      config: config
    } do
      {:ok, pid, _} =
        :peer.start_link(%{
          connection: :standard_io,
          exec:
            {String.to_charlist(System.find_executable("setpriv")),
             [
               ~c"--bounding-set",
               ~c"-net_admin",
               String.to_charlist(System.find_executable("erl"))
             ]},
          args: AWSCluster.Test.Cluster.code_path_args()
        })

      {:ok, _} = :peer.call(pid, Application, :ensure_all_started, [:aws_cluster])

      assert {:error, %Error{reason: :firewall_unavailable, details: %{missing: :cap_net_admin}}} =
               :peer.call(pid, Firewall, :start, [config, :fw])

      :peer.stop(pid)
    end

    test "a loop that crashed leaves its set, and the restart starts from it", %{config: config} do
      crashed =
        Task.async(fn ->
          {:ok, fw} = Firewall.start(config, :fw)
          Firewall.follow(fw, ["127.0.9.7"])
          # No stop/1: the process ends as a crash would, its claim with it.
        end)

      Task.await(crashed)
      assert {:ok, listed} = Firewall.listed(config)
      assert "127.0.9.7" in listed

      {:ok, fw} = Firewall.start(config, :fw)
      assert "127.0.9.7" in Firewall.allowed(fw)
      assert {:ok, listed} = Firewall.listed(config)
      assert "127.0.9.7" in listed
      Firewall.stop(fw)
    end

    test "a table is one topology's", %{config: config} do
      {:ok, fw} = Firewall.start(config, :first)
      on_exit(fn -> Firewall.stop(fw) end)

      assert {:error, %Error{reason: :firewall_unavailable, message: message}} =
               Task.async(fn -> Firewall.start(config, :second) end) |> Task.await()

      assert message =~ "already kept by topology :first"
    end

    test "a failed nft run is an error and an event, and the kernel keeps the last ruleset", %{
      config: config
    } do
      # The real nft behind a switch: while the flag file exists, it fails as nft does.
      dir = Path.join(System.tmp_dir!(), "awsc_nft_#{System.unique_integer([:positive])}")
      File.mkdir_p!(dir)
      on_exit(fn -> File.rm_rf(dir) end)
      flag = Path.join(dir, "fail")
      wrapper = Path.join(dir, "nft")

      File.write!(wrapper, """
      #!/bin/sh
      if [ -e #{flag} ]; then echo "Error: Could not process rule: Operation not permitted" >&2; exit 1; fi
      exec #{System.find_executable("nft")} "$@"
      """)

      File.chmod!(wrapper, 0o755)
      Application.put_env(:aws_cluster, :telemetry_module, AWSCluster.Test.TelemetryProbe)
      on_exit(fn -> Application.delete_env(:aws_cluster, :telemetry_module) end)
      Process.register(self(), AWSCluster.Test.TelemetryProbe)

      {:ok, fw} = Firewall.start(%{config | nft: wrapper}, :fw)
      fw = Firewall.follow(fw, ["127.0.9.1"])
      assert_received {:telemetry, [:aws_cluster, :firewall, :applied], %{addresses: _}, _}

      File.write!(flag, "")

      log =
        capture_log(fn ->
          failed = Firewall.follow(fw, ["127.0.9.2"])
          assert Firewall.allowed(failed) == Firewall.allowed(fw)
          send(self(), {:failed, failed})
        end)

      assert log =~ "firewall not updated, the last ruleset stays: nft -f"
      assert log =~ "Operation not permitted"

      assert_received {:telemetry, [:aws_cluster, :firewall, :error], _,
                       %{error: %Error{reason: :firewall_failed}}}

      assert {:ok, listed} = Firewall.listed(config)
      assert "127.0.9.1" in listed
      refute "127.0.9.2" in listed

      # Fixed: the next answer applies.
      File.rm!(flag)
      assert_received {:failed, failed}
      fw = Firewall.follow(failed, ["127.0.9.2"])
      assert {:ok, listed} = Firewall.listed(config)
      assert "127.0.9.2" in listed
      refute "127.0.9.1" in listed
      Firewall.stop(fw)
      assert {:error, %Error{reason: :not_found}} = Firewall.listed(config)
    end
  end

  describe "in network namespaces" do
    if @host_skip, do: @tag(skip: @host_skip)

    test "only discovered peers reach EPMD and distribution; a prune closes new connections; stopping removes the table" do
      run = Fleet.run_id()
      [a, b] = Fleet.plan(2, prefix: "fw", run: run, host_base: 240)
      outsider = "127.0.3.240"

      lan = Netns.lan!("fw", [a.ip, b.ip, outsider])
      on_exit(fn -> Netns.cleanup([lan.hub | Map.values(lan.hosts)]) end)
      ns = lan.hosts

      # moto, for nodes inside namespaces: root-side Unix socket -> moto.
      socket = Path.join(System.tmp_dir!(), "awsc_moto_#{run}.sock")
      {relay, _} = Relay.start({:local, socket}, {{127, 0, 0, 1}, Moto.port()})
      on_exit(fn -> Relay.stop(relay) && File.rm(socket) end)

      tag = "fw#{run}"
      [a, b] = Fleet.launch!([a, b], %{"cluster" => tag})
      log_dir = Fleet.log_dir!("firewall_test")

      args = [
        "-kernel",
        "inet_dist_listen_min",
        "#{@dist_min}",
        "inet_dist_listen_max",
        "#{@dist_max}"
      ]

      cookie = :"fw_#{run}"

      boot = fn spec, firewall ->
        member =
          Fleet.start_node(spec, cookie: cookie, netns: ns[spec.ip], args: args, log_dir: log_dir)

        {_, {_, port}} =
          :peer.call(member.pid, Relay, :start, [{{127, 0, 0, 1}, 0}, {:local, socket}])

        topology =
          Fleet.topology(:ec2, spec,
            tags: %{"cluster" => tag},
            interval: 1_000,
            prune_after: 2,
            endpoint: "http://127.0.0.1:#{port}",
            # These nodes run with connect_all false, where a prune would also cut the
            # link (prune_disconnect: :when_safe): :never keeps it, to show that the
            # firewall leaves an established link alone.
            config: [coordinate: false, prune_disconnect: :never, firewall: firewall]
          )

        {:ok, sup} = :peer.call(member.pid, Fleet, :local_start, [topology], 30_000)
        Map.merge(member, %{sup: sup, topology: topology})
      end

      node_a = boot.(a, @config)
      on_exit(fn -> Fleet.halt(node_a) end)
      node_b = boot.(b, [])
      on_exit(fn -> Fleet.halt(node_b) end)

      assert Wait.until(
               fn -> Fleet.mesh?([node_a, node_b], Fleet.snapshots([node_a, node_b])) end,
               60_000
             ),
             "a and b did not mesh through a's firewall"

      table = Netns.exec!(ns[a.ip], ["nft", "list", "table", "inet", "aws_cluster"])
      assert table =~ b.ip
      refute table =~ outsider

      dist_a = dist_port(node_a, a)
      dist_b = dist_port(node_b, b)
      assert dist_a in @dist_min..@dist_max

      results = %{
        "outsider -> b:4369 (no firewall on b)" => Netns.tcp_connect(ns[outsider], b.ip, 4369),
        "outsider -> b:dist" => Netns.tcp_connect(ns[outsider], b.ip, dist_b),
        "outsider -> a:4369" => Netns.tcp_connect(ns[outsider], a.ip, 4369),
        "outsider -> a:dist" => Netns.tcp_connect(ns[outsider], a.ip, dist_a),
        "b -> a:4369 (in the set)" => Netns.tcp_connect(ns[b.ip], a.ip, 4369),
        "b -> a:dist (in the set)" => Netns.tcp_connect(ns[b.ip], a.ip, dist_a)
      }

      IO.puts("firewall connects, before the prune: #{inspect(results, pretty: true)}")

      assert results["outsider -> b:4369 (no firewall on b)"] == :connected
      assert results["outsider -> b:dist"] == :connected
      assert results["outsider -> a:4369"] == :timeout
      assert results["outsider -> a:dist"] == :timeout
      assert results["b -> a:4369 (in the set)"] == :connected
      assert results["b -> a:dist (in the set)"] == :connected

      assert %{status: :pass, message: message} = doctor_firewall(node_a)

      assert message =~
               "table inet aws_cluster: 3 addresses in the set; every discovered peer is in it"

      # The prune: b's instance loses the tag discovery selects on.
      Moto.untag!([b.instance_id], ["cluster"])

      assert Wait.until(
               fn ->
                 not (Netns.exec!(ns[a.ip], [
                        "nft",
                        "list",
                        "set",
                        "inet",
                        "aws_cluster",
                        "peers_v4"
                      ]) =~
                        b.ip)
               end,
               30_000
             ),
             "b's address stayed in a's set after the prune"

      after_prune = %{
        "b -> a:4369 (pruned)" => Netns.tcp_connect(ns[b.ip], a.ip, 4369),
        "b -> a:dist (pruned)" => Netns.tcp_connect(ns[b.ip], a.ip, dist_a)
      }

      IO.puts("firewall connects, after the prune: #{inspect(after_prune, pretty: true)}")
      assert after_prune["b -> a:4369 (pruned)"] == :timeout
      assert after_prune["b -> a:dist (pruned)"] == :timeout

      # The established link still carries calls both ways after the table changed.
      assert b.node in Fleet.snapshot(node_a).connected
      assert :peer.call(node_a.pid, :erpc, :call, [b.node, :erlang, :node, []]) == b.node
      assert :peer.call(node_b.pid, :erpc, :call, [a.node, :erlang, :node, []]) == a.node

      # (Fleet.local_start put the topology under the application's supervisor.)
      :ok =
        :peer.call(node_a.pid, Supervisor, :terminate_child, [
          AWSCluster.ApplicationSupervisor,
          :fleet_topologies
        ])

      {tables, 0} = System.cmd("ip", ["netns", "exec", ns[a.ip], "nft", "list", "tables"])
      refute tables =~ "aws_cluster"
      assert Netns.tcp_connect(ns[outsider], a.ip, 4369) == :connected
      assert %{status: :fail, message: "no table inet aws_cluster" <> _} = doctor_firewall(node_a)
    end
  end

  # `mix aws_cluster.doctor`'s checks, run on the host of `member` (IMDS is not there).
  defp doctor_firewall(member) do
    checks =
      :peer.call(
        member.pid,
        AWSCluster.Doctor,
        :run,
        [member.topology, [imds_endpoint: "http://127.0.0.1:9"]],
        60_000
      )

    Enum.find(checks, &(&1.name == "firewall [ec2]")) || checks
  end

  defp dist_port(member, spec) do
    {:port, port, _} =
      :peer.call(member.pid, :erl_epmd, :port_please, [
        String.to_charlist(spec.basename),
        ip_tuple(spec.ip)
      ])

    port
  end

  defp ip_tuple(ip) do
    {:ok, tuple} = :inet.parse_address(String.to_charlist(ip))
    tuple
  end
end
