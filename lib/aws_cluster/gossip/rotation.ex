defmodule AWSCluster.Gossip.Rotation do
  @moduledoc """
  Rotating the gossip secret without a split.

  The key ring's first secret seals, every secret opens; the log line at start and
  `stats/1` show the key ids (derived, safe to show), never the secrets.

  The rejection-free way, three rolling deploys (or three `AWSCluster.Strategy.Gossip.rotate/2` calls per node):

    1. `secrets: [old, new]` everywhere. Nodes still seal with `old`; all can now open `new`.
    2. `secrets: [new, old]` everywhere. Nodes seal with `new`, which every node opens.
    3. `secrets: [new]` everywhere, once step 2 is done on every node.

  Between steps, check on a few nodes that `AWSCluster.Strategy.Gossip.stats(topology).key_ids` shows the expected
  first key and that `rejected[:unknown_key]` does not grow.

  The two-deploy shortcut `[old] -> [new, old] -> [new]` also keeps the mesh whole: while
  the first deploy rolls, nodes still on `[old]` cannot open the moved nodes' packets (they
  count them as `:unknown_key`), but moved nodes still hear and dial everyone, existing
  connections are untouched, and a node that restarts in between still joins. Never jump
  from `[old]` to `[new]`: such a node and the rest cannot hear each other.

  Hot rotation without a restart, on every node:

      :erpc.multicall([node() | Node.list()], AWSCluster.Strategy.Gossip, :rotate,
        [:app, [new, old]])
  """
end
