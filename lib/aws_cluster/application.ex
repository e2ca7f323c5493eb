defmodule AWSCluster.Application do
  @moduledoc false
  # Starts only what must outlive every topology: the peer table behind
  # AWSCluster.node_info/1 and the pg scope of coordinated polling. Topologies are
  # started by the host (libcluster or AWSCluster.Supervisor), never here, so the
  # library does nothing unless asked.

  use Application

  @impl true
  def start(_type, _args) do
    Supervisor.start_link([AWSCluster.Peers, AWSCluster.Poller.Coordination],
      strategy: :one_for_one,
      name: AWSCluster.ApplicationSupervisor
    )
  end
end
