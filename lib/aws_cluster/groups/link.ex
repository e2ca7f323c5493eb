defmodule AWSCluster.Groups.Link do
  @moduledoc """
  The one place that makes a gateway link: a **hidden** distribution connection, which
  `pg`, `global` and the overlapping-partition logic never see and which is never
  transitive, so two groups' meshes stay apart while their gateways talk.

  It rests on `:net_kernel.hidden_connect_node/1`. The OTP team calls that function
  undocumented and says it "will eventually be removed" (erlang/otp#6932), so:

    * `available?/0` says whether this OTP still has it, and the topology refuses to
      start with groups when it does not (the test suite checks it on every run);
    * a node started with `-hidden` (the supported way to get hidden links) needs no
      such function: all its connections are hidden, so a plain `connect_node` is used.
      A dedicated gateway node started with `-hidden` keeps working on an OTP without
      `hidden_connect_node/1`.
  """

  @doc "Whether this VM can make hidden links (see the moduledoc)."
  @spec available?() :: boolean()
  def available? do
    hidden_node?() or function_exported?(:net_kernel, :hidden_connect_node, 1)
  end

  @doc """
  Makes a hidden link to `node` (nothing when one exists): `true`, `false` (refused or
  unreachable) or `:ignored` (distribution not started), like `:net_kernel.connect_node/1`.
  """
  @spec connect(node()) :: boolean() | :ignored
  def connect(node) do
    cond do
      hidden_node?() -> :net_kernel.connect_node(node)
      function_exported?(:net_kernel, :hidden_connect_node, 1) -> hidden_connect(node)
      true -> false
    end
  end

  # Called through apply/3 so the compiler does not warn the day OTP drops it.
  defp hidden_connect(node), do: apply(:net_kernel, :hidden_connect_node, [node])

  @doc "Cuts the link to `node` if it is hidden; a visible link is left alone."
  @spec disconnect(node()) :: boolean()
  def disconnect(node) do
    if node in Node.list(:hidden), do: :erlang.disconnect_node(node), else: false
  end

  defp hidden_node?, do: :init.get_argument(:hidden) != :error
end
