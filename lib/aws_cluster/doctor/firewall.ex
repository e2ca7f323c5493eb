defmodule AWSCluster.Doctor.Firewall do
  @moduledoc false
  # The doctor's firewall check: the table this host holds against what discovery found.

  import AWSCluster.Doctor, only: [check: 3, check: 4]

  alias AWSCluster.{Doctor, Firewall}

  @doc """
  Splits a topology spec into the spec without `firewall:` (so the other checks run
  even where this VM lacks the node's pinned port range) and the firewall options.
  """
  @spec split(keyword()) :: {keyword(), keyword()}
  def split(spec) do
    config = Doctor.spec_config(spec)

    {Keyword.put(spec, :config, Keyword.delete(config, :firewall)),
     Keyword.get(config, :firewall, [])}
  end

  @doc "The firewall check of topology `name`, given discovery's result (or nil)."
  @spec checks(atom(), keyword(), map() | nil) :: [Doctor.check()]
  def checks(name, opts, result) do
    label = "firewall [#{name}]"

    # Listing needs no port range, and this VM may not be the node that pinned it.
    case Firewall.validate(Keyword.put_new(opts, :dist_ports, {1, 1})) do
      {:ok, nil} ->
        []

      {:error, e} ->
        [check(label, :fail, e.message, "fix the topology's firewall: options")]

      {:ok, %{dry_run: true} = config} ->
        [check(label, :warn, "dry_run: true: table #{config.table} is logged, not applied")]

      {:ok, config} ->
        [listed(label, config, result)]
    end
  end

  defp listed(label, config, result) do
    case Firewall.listed(config) do
      {:ok, addresses} ->
        discovered =
          if result, do: Enum.map(result.peers, &to_string(Map.get(&1, :address))), else: []

        missing = Enum.reject(discovered, &(&1 in addresses))
        summary = "table inet #{config.table}: #{length(addresses)} addresses in the set"

        if missing == [],
          do: check(label, :pass, summary <> "; every discovered peer is in it"),
          else:
            check(
              label,
              :warn,
              summary <> "; discovered but not in the set: #{Enum.join(missing, ", ")}",
              "is the topology running on this host? The set follows its members within a polling interval"
            )

      {:error, e} ->
        check(
          label,
          :fail,
          e.message,
          "start the topology on this host (as root or with CAP_NET_ADMIN)"
        )
    end
  end
end
