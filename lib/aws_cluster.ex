defmodule AWSCluster do
  @moduledoc """
  Forms and keeps an Erlang distribution cluster for BEAM apps on AWS.

  Peers are found through EC2 tags or filters, AutoScaling groups, or authenticated
  UDP gossip; each node is named after the interface that carries cluster traffic.
  See `AWSCluster.Distribution` for naming a node, `AWSCluster.Interface` for
  interface lookups and the README for topologies.
  """
end
