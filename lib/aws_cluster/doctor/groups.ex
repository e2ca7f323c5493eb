defmodule AWSCluster.Doctor.Groups do
  @moduledoc false
  # The doctor's meta-clustering check: the mode and the kernel settings it needs, the
  # groups discovery finds, and (inside the running node) this node's group, gateway
  # role and gateway links.

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{Doctor, Groups}
  alias AWSCluster.Groups.{Gateways, Mode, Rule}

  @doc "The group checks of topology `name`, given its validated config and discovery's result."
  @spec checks(atom(), map(), map() | nil) :: [Doctor.check()]
  def checks(_name, %{group: nil}, _result), do: []

  def checks(name, config, result) do
    view =
      case Groups.view(name) do
        {:ok, view} -> view
        {:error, _} -> nil
      end

    [mode(name, config.group_mode, view), groups(name, config, result) | node(name, view)]
  end

  defp mode(name, mode, view) do
    k = Mode.kernel()
    kernel = "this VM runs connect_all #{k.connect_all}, dist_auto_connect #{k.dist_auto_connect}"

    case Mode.check(mode) do
      :ok ->
        check("group mode [#{name}]", :pass, "#{inspect(mode)}; #{kernel}")

      # Outside the node (a mix task) the VM's settings say nothing about the node's.
      {:error, e} ->
        status = if view, do: :fail, else: :warn
        check("group mode [#{name}]", status, "#{inspect(mode)}: #{e.message}", fix(view))
    end
  end

  defp fix(nil), do: "run the check inside the node (bin/my_app rpc ...) to see its own settings"
  defp fix(_view), do: "start the VM with the kernel parameters named above"

  defp groups(name, _config, nil),
    do: check("groups [#{name}]", :warn, "no discovery answer, so no groups to show")

  defp groups(name, config, result) do
    placed = Enum.group_by(result.peers, &Rule.group(config.group, &1))
    {unplaced, placed} = Map.pop(placed, nil, [])
    sizes = placed |> Enum.sort() |> Enum.map_join(", ", fn {g, ps} -> "#{g} (#{length(ps)})" end)
    text = "#{map_size(placed)} groups: #{sizes}; gateways #{inspect(config.gateways)}"

    untagged =
      for {group, peers} <- placed,
          match?({:tag, _, _}, config.gateways),
          not Enum.any?(peers, &Gateways.tagged?(config.gateways, &1.instance)),
          do: group

    cond do
      unplaced != [] ->
        check(
          "groups [#{name}]",
          :warn,
          text <> "; #{length(unplaced)} peers have no group and are never dialled",
          "tag them (or fix the group: rule); a node can name its own with self_group:"
        )

      untagged != [] ->
        check(
          "groups [#{name}]",
          :warn,
          text <>
            "; no member carries the gateway tag in #{Enum.join(Enum.sort(untagged), ", ")}",
          "tag a member of each group, or those groups reach no other"
        )

      true ->
        check("groups [#{name}]", :pass, text)
    end
  end

  defp node(_name, nil), do: []

  defp node(name, view) do
    own = Map.get(view.gateways, view.group, [])

    text =
      if view.gateway?,
        do:
          "this node is a gateway of group #{view.group}; hidden links to " <>
            if(view.links == [], do: "none yet", else: Enum.join(view.links, ", ")),
        else:
          "this node is in group #{view.group}; its gateways: " <>
            if(own == [], do: "none up", else: Enum.join(own, ", "))

    if view.group == nil,
      do: [
        check(
          "gateway [#{name}]",
          :fail,
          "this node has no group, so it dials no one",
          "set self_group:"
        )
      ],
      else: [check("gateway [#{name}]", :pass, text)]
  end
end
