defmodule AWSCluster.Doctor do
  @moduledoc """
  Checks, on one host, what stops clusters from forming in practice, and says how to fix
  each problem. `mix aws_cluster.doctor` prints the result; inside a running release:

      bin/my_app rpc 'AWSCluster.Doctor.run() |> AWSCluster.Doctor.format() |> IO.puts()'

  Checks, each `:pass`, `:warn` or `:fail`:

    * **imds** - the instance metadata service answers, with an IMDSv2 token. An answer
      only without a token is what a container sees behind a hop limit of 1.
    * **region**, **credentials**, **iam** - per AWS topology: where the region comes
      from; whether AWS accepts the credentials; each IAM action the strategy needs,
      probed with the real call (DescribeInstances, DescribeAutoScalingGroups).
    * **discovery** - one round of each topology through the strategy's own code.
    * **node name** - distribution is up, and the node's host is the chosen interface's
      or address's, and is the name discovery gives this instance.
    * **distribution ports** - the listen port is inside a pinned range.
    * **cookie** - set, not `:nocookie`, not per-host. The cookie itself is never shown.
    * **peer** - for each discovered peer: TCP to EPMD (4369), the peer's name
      registered there, TCP to its distribution port, and a hidden connection.
      Closed or silent ports are what mis-set security groups look like.

  Options of `run/2`:

    * `:imds_endpoint` - IMDS to ask (default `http://169.254.169.254`); `:imds` -
      `false` skips the IMDS check.
    * `:interface` or `:address` - what the node's host must be.
    * `:epmd_port` - default `ERL_EPMD_PORT` or 4369.
    * `:port_timeout` - ms per TCP probe, default 2_000.
    * `:connect` - try a hidden connection to each peer (default `true`).
    * `:max_peers` - peers probed at most, default 64.
  """

  alias AWSCluster.{AWS, Error, IMDS, Interface, Probe}
  alias AWSCluster.Strategy.{AutoScaling, Client, EC2, State}

  @type status :: :pass | :warn | :fail
  @type check :: %{name: String.t(), status: status(), message: String.t(), fix: String.t() | nil}

  @default_epmd_port 4369
  @actions %{
    EC2 => ["ec2:DescribeInstances"],
    AutoScaling => ["autoscaling:DescribeAutoScalingGroups", "ec2:DescribeInstances"]
  }
  @credential_codes ~w(AuthFailure InvalidClientTokenId SignatureDoesNotMatch ExpiredToken
                       ExpiredTokenException RequestExpired InvalidAccessKeyId
                       MissingAuthenticationToken UnrecognizedClientException IncompleteSignature)
  @iam_policy "the README's IAM policy"

  @doc """
  Runs every check for `topologies` (default: the configured ones, see
  `AWSCluster.Probe.configured/0`) and returns them in order.
  """
  @spec run(keyword(), keyword()) :: [check()]
  def run(topologies \\ Probe.configured(), opts \\ []) do
    {imds_checks, imds} = imds(topologies, opts)
    {topology_checks, results} = topologies(topologies, imds)
    peers = results |> Enum.flat_map(& &1.peers) |> Enum.uniq_by(& &1.node)

    imds_checks ++
      topology_checks ++
      node_checks(results, imds, opts) ++
      ports_check() ++ cookie_check() ++ peer_checks(peers, opts)
  end

  @doc "Whether any check failed."
  @spec failed?([check()]) :: boolean()
  def failed?(checks), do: Enum.any?(checks, &(&1.status == :fail))

  @doc "Renders checks as `PASS  name  message` lines, each problem followed by its fix."
  @spec format([check()]) :: String.t()
  def format(checks) do
    width = checks |> Enum.map(&String.length(&1.name)) |> Enum.max(fn -> 0 end)

    lines =
      Enum.flat_map(checks, fn c ->
        line = "#{label(c.status)}  #{String.pad_trailing(c.name, width)}  #{c.message}"
        if c.fix, do: [line, "      fix: " <> c.fix], else: [line]
      end)

    counts = Enum.frequencies_by(checks, & &1.status)

    summary =
      "#{Map.get(counts, :pass, 0)} passed, #{Map.get(counts, :warn, 0)} warnings, " <>
        "#{Map.get(counts, :fail, 0)} failed"

    Enum.join(lines ++ ["", summary], "\n")
  end

  defp label(:pass), do: "PASS"
  defp label(:warn), do: "WARN"
  defp label(:fail), do: "FAIL"

  defp check(name, status, message, fix \\ nil),
    do: %{name: name, status: status, message: message, fix: fix}

  # ── IMDS ──────────────────────────────────────────────────────────────────────────

  @hop_limit "in a container (Docker or ECS bridge mode, Weave) the token answer is " <>
               "dropped after one network hop: set the instance's metadata hop limit to 2 " <>
               "(aws ec2 modify-instance-metadata-options --instance-id <id> " <>
               "--http-put-response-hop-limit 2, or MetadataOptions.HttpPutResponseHopLimit " <>
               "in the launch template)"

  defp imds(topologies, opts) do
    if Keyword.get(opts, :imds, true) == false do
      {[check("imds", :warn, "not checked (--no-imds)")], nil}
    else
      endpoint = opts[:imds_endpoint] || "http://169.254.169.254"
      needed = imds_needed(topologies)
      probe_opts = [endpoint: endpoint, attempts: 1, connect_timeout: 1_000, timeout: 1_000]

      case IMDS.probe(probe_opts) do
        {:ok, %{version: 2} = md} ->
          {[check("imds", :pass, "IMDSv2 at #{endpoint}: #{describe_md(md)}")], md}

        {:ok, md} ->
          warn =
            check(
              "imds",
              :warn,
              "IMDS at #{endpoint} answered only without a session token (IMDSv1): " <>
                describe_md(md),
              "the IMDSv2 token call was refused or got no answer; " <>
                @hop_limit <> ". IMDSv1 stops working once http-tokens is set to required"
            )

          {[warn], md}

        {:error, %Error{} = e} ->
          {[imds_failure(e, endpoint, needed)], nil}
      end
    end
  end

  defp describe_md(md),
    do: "instance #{md.instance_id} in #{md.availability_zone} (#{md.region})"

  defp imds_failure(e, endpoint, needed) do
    {status, fix} =
      cond do
        e.message =~ "IMDSv2 tokens" ->
          {:fail, "IMDS wants a token that never arrived; " <> @hop_limit}

        e.message =~ "disabled" ->
          {:fail,
           "metadata is turned off for this instance: enable it " <>
             "(--http-endpoint enabled) or set #{Enum.join(needed, ", ")} in the topology config"}

        needed == [] ->
          {:warn, nil}

        true ->
          {:fail,
           "set #{Enum.join(needed, ", ")} in the topology config, or run on EC2 with " <>
             "metadata enabled (" <> @hop_limit <> ")"}
      end

    message =
      if status == :warn,
        do:
          "IMDS at #{endpoint} does not answer (#{e.reason}); not needed: the config gives every value",
        else: "IMDS at #{endpoint} does not answer (#{e.reason}): #{e.message}"

    check("imds", status, message, fix)
  end

  # The config keys that would replace what topologies read from IMDS.
  defp imds_needed(topologies) do
    Enum.flat_map(topologies, fn {_name, spec} ->
      config = spec_config(spec)

      case spec_strategy(spec) do
        s when s in [EC2, AutoScaling] ->
          if(config[:region], do: [], else: ["region:"]) ++
            if s == AutoScaling and config[:groups] == nil, do: ["groups:"], else: []

        _ ->
          []
      end
    end)
    |> Enum.uniq()
  end

  defp spec_strategy(spec), do: if(Keyword.keyword?(spec), do: spec[:strategy])

  defp spec_config(spec) do
    config = if Keyword.keyword?(spec), do: Keyword.get(spec, :config, []), else: []
    if Keyword.keyword?(config), do: config, else: []
  end

  # ── topologies ────────────────────────────────────────────────────────────────────

  defp topologies(topologies, imds) do
    {checks, results} =
      topologies
      |> Enum.map(fn {name, spec} -> topology(name, spec, imds) end)
      |> Enum.unzip()

    {List.flatten(checks), Enum.reject(results, &is_nil/1)}
  end

  defp topology(name, spec, imds) do
    strategy = spec_strategy(spec)

    cond do
      strategy in [EC2, AutoScaling] ->
        aws_topology(name, spec, imds)

      strategy == AWSCluster.Strategy.Gossip ->
        {gossip_topology(name, spec), nil}

      true ->
        {[
           check(
             "topology #{name}",
             :warn,
             "#{inspect(strategy)} is not an aws_cluster strategy; not checked"
           )
         ], nil}
    end
  end

  defp aws_topology(name, spec, imds) do
    case Probe.validate(name, spec) do
      {:error, e} ->
        {[check("config [#{name}]", :fail, e.message, "fix the topology's options")], nil}

      {:ok, strategy, _state, config} ->
        {region_check, config} = region(name, config, imds)

        if config.region do
          case Client.build(config) do
            {:ok, client, _config} ->
              iam = iam_checks(name, strategy, client, config)
              {discovery_check, result} = discovery(name, spec, config)
              {[region_check | iam] ++ [discovery_check], result}

            {:error, e} ->
              {[region_check, check("aws client [#{name}]", :fail, e.message)], nil}
          end
        else
          {[region_check], nil}
        end
    end
  end

  defp region(name, config, imds) do
    cond do
      config.region ->
        {check("region [#{name}]", :pass, "#{config.region} (from the topology config)"), config}

      imds ->
        {check("region [#{name}]", :pass, "#{imds.region} (from IMDS)"),
         %{config | region: imds.region}}

      true ->
        {check(
           "region [#{name}]",
           :fail,
           "no region: none in the config and IMDS did not answer",
           "set region: in the topology config"
         ), config}
    end
  end

  # One real call per IAM action, cheap and harmless: a filter on an instance id that
  # cannot exist, a group name nobody uses. A denial names the action; anything else
  # that got an AWS answer proves the action is allowed.
  defp iam_checks(name, strategy, client, config) do
    results = for action <- Map.fetch!(@actions, strategy), do: {action, call(action, client)}
    creds = credentials_check(name, results, config)

    iam =
      for {action, result} <- results, creds.status != :fail or result == :ok do
        case result do
          :ok ->
            check("iam #{action} [#{name}]", :pass, "allowed")

          {:error, %Error{} = e} ->
            if denied?(e) do
              check(
                "iam #{action} [#{name}]",
                :fail,
                "denied: #{e.message}",
                "allow #{action} for this instance's role (see #{@iam_policy})"
              )
            else
              check(
                "iam #{action} [#{name}]",
                :fail,
                "not checked, the call failed (#{e.reason}): #{e.message}",
                reach_fix(client)
              )
            end
        end
      end

    [creds | iam]
  end

  defp call("ec2:DescribeInstances", client) do
    case AWS.describe_instances(client, %{"instance-id" => "i-00000000000000000"}) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  defp call("autoscaling:DescribeAutoScalingGroups", client) do
    case AWS.describe_auto_scaling_groups(client, ["aws-cluster-doctor-probe"]) do
      {:ok, _} -> :ok
      error -> error
    end
  end

  defp denied?(%Error{reason: :unauthorized} = e), do: not credentials_error?(e)
  defp denied?(%Error{details: %{status: "403"}} = e), do: not credentials_error?(e)
  defp denied?(_), do: false

  defp credentials_error?(%Error{details: details, message: message}) do
    Map.get(details, :code) in @credential_codes or message =~ ~r/credential/i
  end

  defp credentials_check(name, results, config) do
    source = credentials_source(config)
    errors = for {_action, {:error, e}} <- results, do: e

    cond do
      Enum.any?(errors, &credentials_error?/1) ->
        e = Enum.find(errors, &credentials_error?/1)

        check(
          "credentials [#{name}]",
          :fail,
          "AWS rejected or found no credentials (#{source}): #{e.message}",
          "give the instance (or the ECS task) a role with #{@iam_policy}, or fix the " <>
            "AWS_* environment or profile; static keys in the config are for tests"
        )

      length(errors) < length(results) or Enum.any?(errors, &denied?/1) ->
        check("credentials [#{name}]", :pass, "accepted by AWS (#{source})")

      true ->
        e = hd(errors)

        check(
          "credentials [#{name}]",
          :fail,
          "could not reach AWS to check them (#{e.reason}): #{e.message}",
          reach_fix(nil)
        )
    end
  end

  defp reach_fix(_client) do
    "make the AWS API reachable from this host (NAT gateway or VPC endpoints for ec2 and " <>
      "autoscaling, outbound HTTPS in the security group), or set endpoint:"
  end

  defp credentials_source(config) do
    cond do
      config[:access_key_id] -> "static keys in the topology config"
      System.get_env("AWS_ACCESS_KEY_ID") -> "environment: AWS_ACCESS_KEY_ID"
      System.get_env("AWS_WEB_IDENTITY_TOKEN_FILE") -> "web identity token (EKS)"
      System.get_env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") -> "ECS task role"
      System.get_env("AWS_CONTAINER_CREDENTIALS_FULL_URI") -> "container credentials endpoint"
      profile = System.get_env("AWS_PROFILE") -> "profile #{profile}"
      true -> "SDK default chain: ~/.aws files or the instance role"
    end
  end

  defp discovery(name, spec, config) do
    spec = Keyword.update(spec, :config, [], &Keyword.put(&1, :region, config.region))

    case Probe.discover(name, spec) do
      {:ok, result} ->
        azs = result.peers |> Enum.map(&az/1) |> Enum.uniq() |> length()
        status = if result.peers == [], do: :warn, else: :pass

        fix =
          if result.peers == [],
            do:
              "no instance matched: check the tags/filters or groups, and that instances are running"

        {check(
           "discovery [#{name}]",
           status,
           "#{length(result.peers)} peers in #{azs} AZs (#{inspect(result.strategy)})",
           fix
         ), result}

      {:error, e} ->
        {check("discovery [#{name}]", :fail, "#{e.reason}: #{e.message}", discovery_fix(e)), nil}
    end
  end

  defp discovery_fix(%Error{details: %{action: action}} = e) do
    if denied?(e), do: "allow #{action} (see #{@iam_policy})", else: nil
  end

  defp discovery_fix(_), do: nil

  defp az(peer), do: Map.get(peer.instance, :availability_zone)

  defp gossip_topology(name, spec) do
    gossip = AWSCluster.Strategy.Gossip

    with {:ok, state} <- State.new(topology: name, config: spec_config(spec)),
         {:ok, config} <- gossip.validate(state) do
      secret =
        if config[:insecure] do
          check(
            "gossip secret [#{name}]",
            :warn,
            "insecure: true: anyone who reaches UDP #{config.port} can forge announces",
            "set secret: (32+ random bytes, the same on every node) and drop insecure: true"
          )
        else
          n = length(config.secrets)

          check(
            "gossip secret [#{name}]",
            :pass,
            "set (#{n} #{if n == 1, do: "key", else: "keys"}; never shown)"
          )
        end

      [
        secret,
        check(
          "gossip port [#{name}]",
          :pass,
          "UDP #{config.port}: must be open between the nodes' security groups; no IAM action needed"
        )
      ]
    else
      {:error, e} -> [check("config [#{name}]", :fail, e.message, "fix the topology's options")]
    end
  end

  # ── this node ─────────────────────────────────────────────────────────────────────

  defp node_checks(results, imds, opts) do
    if Node.alive?() do
      [host_check(opts) | own_name_check(results, imds)]
    else
      [
        check(
          "node name",
          :warn,
          "this VM runs without distribution, so its name and cookie cannot be checked",
          "run the doctor as the node runs: elixir --name <basename>@<address> --cookie " <>
            "\"$RELEASE_COOKIE\" -S mix aws_cluster.doctor, or inside the release: " <>
            "bin/my_app rpc 'AWSCluster.Doctor.run() |> AWSCluster.Doctor.format() |> IO.puts()'"
        )
      ]
    end
  end

  defp node_host, do: node() |> Atom.to_string() |> String.split("@") |> List.last()

  defp host_check(opts) do
    host = node_host()

    expected =
      cond do
        iface = opts[:interface] ->
          case Interface.address(iface) do
            {:ok, ip} -> {:ok, to_string(:inet.ntoa(ip)), "#{iface}'s address"}
            {:error, e} -> {:error, e.message}
          end

        address = opts[:address] ->
          {:ok, address, "the address asked for"}

        true ->
          local_addresses(host)
      end

    fix =
      "name the node after the cluster interface: RELEASE_DISTRIBUTION=none and " <>
        "{AWSCluster.Distribution, basename: ..., interface: ...} as the first child, or " <>
        "RELEASE_NODE=<basename>@<address>"

    case expected do
      {:ok, ^host, what} ->
        check("node name", :pass, "#{node()}: host is #{what}")

      {:ok, other, what} ->
        check("node name", :fail, "#{node()}: host #{host} is not #{what} (#{other})", fix)

      {:error, text} ->
        check("node name", :fail, "#{node()}: #{text}", fix)
    end
  end

  defp local_addresses(host) do
    with {:ok, ip} <- :inet.parse_strict_address(String.to_charlist(host)),
         {:ok, entries} <- Interface.addresses(),
         %{name: name} <- Enum.find(entries, &(&1.address == ip)) do
      {:ok, host, "#{name}'s address"}
    else
      {:error, %Error{} = e} ->
        {:error, e.message}

      {:error, _} ->
        {:error,
         "host #{host} is a name, not an address; peers dial the address discovery " <>
           "reports, so the name must match it"}

      nil ->
        {:error, "host #{host} is not an address of any interface of this host"}
    end
  end

  # Discovery names this instance too: the node must carry exactly that name, or peers
  # dial a name nobody answers to.
  defp own_name_check(_results, nil), do: []

  defp own_name_check(results, imds) do
    own = for r <- results, p <- r.peers, Map.get(p.instance, :id) == imds.instance_id, do: {r, p}

    case own do
      [] ->
        []

      [{r, peer} | _] when peer.node == node() ->
        [check("node name [#{r.topology}]", :pass, "discovery names this instance #{node()}")]

      [{r, peer} | _] ->
        [
          check(
            "node name [#{r.topology}]",
            :fail,
            "discovery names this instance (#{imds.instance_id}) #{peer.node}, but this node is #{node()}: " <>
              "peers will dial a name nobody answers to",
            "make node_basename/address match how the node names itself (or the reverse)"
          )
        ]
    end
  end

  defp ports_check do
    min = Application.get_env(:kernel, :inet_dist_listen_min)
    max = Application.get_env(:kernel, :inet_dist_listen_max) || min

    port =
      if Node.alive?() do
        [base, _] = node() |> Atom.to_string() |> String.split("@")

        case epmd_port_please({127, 0, 0, 1}, epmd_port([]), base, 2_000) do
          {:ok, port} -> port
          _ -> nil
        end
      end

    fix =
      "pin the range in rel/vm.args.eex: -kernel inet_dist_listen_min 9100 " <>
        "inet_dist_listen_max 9155, and open it and 4369 between the nodes' security groups"

    cond do
      is_integer(min) and is_integer(max) and is_integer(port) and port in min..max ->
        [
          check(
            "distribution ports",
            :pass,
            "listening on #{port}, inside the pinned range #{min}-#{max}"
          )
        ]

      is_integer(min) and is_integer(max) and is_integer(port) ->
        [
          check(
            "distribution ports",
            :fail,
            "listening on #{port}, outside the pinned range #{min}-#{max}",
            fix
          )
        ]

      is_integer(min) and is_integer(max) ->
        [check("distribution ports", :pass, "pinned to #{min}-#{max}")]

      true ->
        where = if port, do: "listening on #{port}, a port", else: "the listen port is"

        [
          check(
            "distribution ports",
            :warn,
            "#{where} chosen at random at boot: security groups would have to allow every port",
            fix
          )
        ]
    end
  end

  defp cookie_check do
    cookie = if Node.alive?(), do: Node.get_cookie(), else: :nocookie

    cond do
      not Node.alive?() ->
        []

      cookie == :nocookie ->
        [
          check(
            "cookie",
            :fail,
            "no cookie is set (:nocookie)",
            "set RELEASE_COOKIE (or --cookie) to the same secret value on every node"
          )
        ]

      home_cookie() == Atom.to_string(cookie) ->
        [
          check(
            "cookie",
            :warn,
            "set, from ~/.erlang.cookie, which is random per host unless copied",
            "set RELEASE_COOKIE to one secret value on every node (or ship the release's own)"
          )
        ]

      byte_size(Atom.to_string(cookie)) < 16 ->
        [
          check(
            "cookie",
            :warn,
            "set, but shorter than 16 characters (value not shown)",
            "use a long random cookie: anyone who guesses it can run code on every node"
          )
        ]

      true ->
        [check("cookie", :pass, "set (value not shown)")]
    end
  end

  defp home_cookie do
    case File.read(Path.join(System.user_home() || "/nonexistent", ".erlang.cookie")) do
      {:ok, text} -> String.trim(text)
      _ -> nil
    end
  end

  # ── peers ─────────────────────────────────────────────────────────────────────────

  defp peer_checks(peers, opts) do
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

  defp epmd_port(opts) do
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
  @doc false
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
