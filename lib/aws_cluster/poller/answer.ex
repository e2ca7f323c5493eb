defmodule AWSCluster.Poller.Answer do
  @moduledoc """
  One discovery answer, from the strategy's call to the shape the membership rules take:
  a raise, throw or exit becomes an error; a malformed or oversized answer is an error;
  and a member's `AWSCluster.node_info/1` row.
  """

  alias AWSCluster.Error

  @doc """
  `strategy.discover/1` with a raise, throw or exit turned into an error result: the
  poller's discovery process would otherwise leave a crash report per poll, and a
  diagnostic task (`AWSCluster.Probe`) would die. The raw term stays in `details`.
  """
  @spec discover(module(), term()) :: term()
  def discover(strategy, strategy_state) do
    strategy.discover(strategy_state)
  rescue
    e ->
      {:error,
       Error.new(:internal, "#{inspect(strategy)}.discover/1 raised: " <> Exception.message(e), %{
         exception: e.__struct__
       })}
  catch
    kind, reason ->
      what = if kind == :throw, do: "threw a value", else: "exited"

      {:error,
       Error.new(
         :internal,
         "#{inspect(strategy)}.discover/1 #{what} (the term is in details.#{kind})",
         %{kind => reason}
       )}
  end

  @doc """
  Checks a `discover/1` result: `{:ok, peers, gone}` or `{:error, %AWSCluster.Error{}}`.
  More than `max_peers` peers is `:too_many_peers`, before any name becomes an atom.
  """
  @spec normalize(term(), module(), pos_integer()) ::
          {:ok, [map()], [term()]} | {:error, Error.t()}
  def normalize({:ok, peers}, strategy, max_peers),
    do: normalize({:ok, peers, []}, strategy, max_peers)

  def normalize({:ok, peers, gone}, strategy, max_peers) when is_list(peers) and is_list(gone) do
    cond do
      not Enum.all?(peers, &peer?/1) ->
        {:error,
         Error.new(:bad_response, "#{inspect(strategy)}.discover/1 returned a malformed peer")}

      length(peers) > max_peers ->
        {:error,
         Error.new(
           :too_many_peers,
           "discovery found #{length(peers)} peers, more than max_peers (#{max_peers})",
           %{count: length(peers), max_peers: max_peers}
         )}

      true ->
        {:ok, peers, gone}
    end
  end

  def normalize({:error, %Error{}} = error, _strategy, _max_peers), do: error

  def normalize(other, strategy, _max_peers) do
    {:error,
     Error.new(
       :bad_response,
       "#{inspect(strategy)}.discover/1 returned neither {:ok, peers}, " <>
         "{:ok, peers, gone} nor {:error, %AWSCluster.Error{}} (the value is in details.returned)",
       %{returned: other}
     )}
  end

  # A node name is an atom, or a string the membership turns into one within its budget.
  defp peer?(%{node: n, instance: i}) when is_map(i), do: is_atom(n) or is_binary(n)
  defp peer?(_), do: false

  @doc "The `AWSCluster.node_info/1` row of a member."
  @spec info(atom(), node(), map()) :: map()
  def info(topology, node, peer) do
    instance = peer.instance

    %{
      node: node,
      topology: topology,
      # An ECS task's id is its ARN; its EC2 instance, if any, is named apart.
      instance_id: Map.get(instance, :instance_id, Map.get(instance, :id)),
      availability_zone: Map.get(instance, :availability_zone),
      address: Map.get(peer, :address),
      tags: Map.get(instance, :tags) || %{}
    }
    |> then(&if(task = Map.get(instance, :task), do: Map.put(&1, :task, task), else: &1))
  end
end
