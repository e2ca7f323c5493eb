defmodule AWSCluster.Application do
  @moduledoc false
  # Starts only what must outlive every topology: the peer table behind
  # AWSCluster.node_info/1, the pg scope of coordinated polling, the registry of
  # firewall tables and the server that carries calls between groups. Topologies are started by the host (libcluster or
  # AWSCluster.Supervisor), never here, so the library does nothing unless asked.

  use Application

  @impl true
  def start(_type, _args) do
    children = [
      AWSCluster.Peers,
      AWSCluster.Poller.Coordination,
      {Registry, keys: :unique, name: AWSCluster.Firewall.Registry},
      AWSCluster.Groups.Server
    ]

    Supervisor.start_link(children,
      strategy: :one_for_one,
      name: AWSCluster.ApplicationSupervisor
    )
  end
end
