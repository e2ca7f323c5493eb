defmodule AWSCluster.Gossip.Receiver do
  @moduledoc """
  One datagram, from bytes to what it means for the topology: opened and checked by
  `AWSCluster.Gossip.Codec` (authentication, timestamp, replay), then applied to
  `AWSCluster.Gossip.Membership` (source binding, leaves, bounds). Counts it in
  `AWSCluster.Gossip.Stats`. Pure but for the NIF's replay guard.
  """

  alias AWSCluster.Gossip.{Codec, Membership, Stats}

  @typedoc "What the receiver knows: its keys, replay guard, own name, peers and counters."
  @type ctx :: %{
          ring: Codec.keyring(),
          guard: Codec.guard(),
          own: String.t() | nil,
          members: Membership.t(),
          stats: Stats.t()
        }

  @typedoc "What the strategy must act on."
  @type outcome ::
          :quiet | :changed | {:new, node()} | {:left, node()} | {:rejected, atom()}

  @doc """
  Handles `packet` from `from`; returns the new members and counters and the outcome.
  `now` is monotonic ms, `wall` the unix ms clock the timestamp window is checked on.
  """
  @spec handle(ctx(), {:inet.ip_address(), :inet.port_number()}, binary(), integer(), integer()) ::
          {Membership.t(), Stats.t(), outcome()}
  def handle(ctx, from, packet, now, wall) do
    case Codec.open(ctx.ring, ctx.guard, packet, wall) do
      {:ok, %{name: name}} when name == ctx.own ->
        {ctx.members, Stats.accepted(ctx.stats, :own), :quiet}

      {:ok, %{kind: :announce} = m} ->
        ctx.members |> Membership.heard(m, from, now) |> counted(ctx.stats, :announce)

      {:ok, %{kind: :leave} = m} ->
        ctx.members |> Membership.left(m, from, now) |> counted(ctx.stats, :leave)

      {:error, reason} ->
        {ctx.members, Stats.rejected(ctx.stats, reason), {:rejected, reason}}
    end
  end

  defp counted({:rejected, reason, members}, stats, _kind),
    do: {members, Stats.rejected(stats, reason), {:rejected, reason}}

  defp counted(result, stats, kind) do
    {outcome, members} =
      case result do
        {:new, node, members} -> {{:new, node}, members}
        {:left, node, members} -> {{:left, node}, members}
        {:changed, members} -> {:changed, members}
        {:same, members} -> {:quiet, members}
        {:ignored, members} -> {:quiet, members}
      end

    {members, Stats.accepted(stats, kind), outcome}
  end
end
