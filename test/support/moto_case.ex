defmodule AWSCluster.Test.MotoCase do
  @moduledoc """
  A case for tests against the shared `moto_server` (`AWSCluster.Test.Moto`): it starts
  moto once for the module and resets it to a fresh VPC before every test, so no test
  sees another's instances or groups.

      use AWSCluster.Test.MotoCase, async: false

  The options go to `ExUnit.Case`; moto's state is shared, so keep `async: false`.
  The module's own `setup` runs after the reset and may seed moto.
  """

  use ExUnit.CaseTemplate

  alias AWSCluster.Test.Moto

  setup_all do
    Moto.start!()
    :ok
  end

  setup do
    Moto.fresh!()
    :ok
  end
end
