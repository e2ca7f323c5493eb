defmodule AWSCluster.Error do
  @moduledoc """
  The error every aws_cluster function returns inside `{:error, error}`.

  Match on `reason`; read `message` for humans and `details` for the raw facts
  (AWS error code, interface names, the config key at fault ...).

  Reasons include `:invalid_argument`, `:invalid_config`, `:no_such_interface`,
  `:no_address`, `:throttled`, `:unauthorized`, `:unreachable`, `:timeout`,
  `:not_found`, `:bad_response`, `:already_started`, `:unavailable` (a local resource,
  such as an interface or a port, that a later try may find), `:nif_not_loaded`,
  `:firewall_unavailable` (no `nft`, no CAP_NET_ADMIN, or the table is taken),
  `:firewall_failed` (an `nft` run failed) and `:internal`.
  """

  defexception [:reason, :message, details: %{}]

  @type t :: %__MODULE__{reason: atom(), message: String.t(), details: map()}

  @doc "Builds an error."
  @spec new(atom(), String.t(), map()) :: t()
  def new(reason, message, details \\ %{}) when is_atom(reason) and is_binary(message) do
    %__MODULE__{reason: reason, message: message, details: details}
  end

  @doc "Converts the `{reason, message, details}` triple a NIF returns."
  @spec from_native({atom(), String.t(), map()}) :: t()
  def from_native({reason, message, details}), do: new(reason, message, details)

  @doc "Wraps a NIF result: `{:error, triple}` becomes `{:error, %AWSCluster.Error{}}`."
  @spec wrap(term()) :: term()
  def wrap({:error, {reason, message, details}}) when is_atom(reason),
    do: {:error, new(reason, message, details)}

  def wrap(other), do: other
end
