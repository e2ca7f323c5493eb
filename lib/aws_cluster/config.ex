defmodule AWSCluster.Config do
  @moduledoc """
  A small schema-driven validator for option lists.

  Every strategy checks its options once, at start, so a typo fails the boot with a
  message naming the key and what was expected instead of surfacing as a crash minutes
  later. The same schema generates the option docs (`docs/1`), so the documentation
  cannot drift from what is accepted.

  A schema is a keyword list of `{key, spec}`; a spec is a keyword list with:

    * `:type` - see `t:type/0` (required).
    * `:required` - the key must be present (default `false`).
    * `:default` - the value used when the key is absent.
    * `:doc` - one line for the generated docs.

  Secrets are marked in one place, by key: the value of any key in `secret_keys/0` is
  never echoed in an error message and is replaced by `redact/1`.
  """

  alias AWSCluster.Error

  @secret_keys [
    :secret,
    :secrets,
    :access_key_id,
    :secret_access_key,
    :session_token,
    :cookie,
    :password,
    # A database URL holds its password.
    :url
  ]

  @doc "The keys whose values are secrets, wherever they appear."
  @spec secret_keys() :: [atom()]
  def secret_keys, do: @secret_keys

  @typedoc """
  Types a value is checked against. `{:custom, description, fun}` takes a one-arity
  function returning `:ok`, `{:ok, normalized}` or `:error`; `description` completes
  the sentence "expected ...". Use remote captures (`&Mod.fun/1`) so a schema can live
  in a module attribute.
  """
  @type type ::
          :any
          | :pos_integer
          | :non_neg_integer
          | {:integer, Range.t()}
          | :string
          | :non_empty_string
          | :ip_address
          | :boolean
          | :atom
          | :module
          | :mfa
          | :keyword
          | {:in, [term()]}
          | {:literal, term()}
          | {:list, type()}
          | {:map, type(), type()}
          | {:tuple, [type()]}
          | {:fun, arity()}
          | {:or, [type()]}
          | {:custom, String.t(), (term() -> :ok | {:ok, term()} | :error)}

  @type spec :: keyword()
  @type schema :: [{atom(), spec()}]

  @doc """
  Validates `opts` (a keyword list) against `schema` and returns a map holding every
  schema key: given values (possibly normalized by `:custom` types), defaults, or `nil`.

  Errors are `%AWSCluster.Error{reason: :invalid_config, details: %{key: key}}`.
  """
  @spec validate(term(), schema()) :: {:ok, map()} | {:error, Error.t()}
  def validate(opts, schema) when is_list(schema) do
    with :ok <- check_keyword(opts),
         :ok <- check_duplicates(opts),
         :ok <- check_unknown(opts, schema) do
      Enum.reduce_while(schema, {:ok, %{}}, fn {key, spec}, {:ok, acc} ->
        case value(opts, key, spec) do
          {:ok, value} -> {:cont, {:ok, Map.put(acc, key, value)}}
          {:error, _} = error -> {:halt, error}
        end
      end)
    end
  end

  @doc """
  `validate/2` for a function's options rather than a user's config: the same checks
  and messages, with `reason: :invalid_argument`.
  """
  @spec arguments(term(), schema()) :: {:ok, map()} | {:error, Error.t()}
  def arguments(opts, schema) do
    with {:error, e} <- validate(opts, schema), do: {:error, %{e | reason: :invalid_argument}}
  end

  @doc """
  Checks one value against a type; returns the (possibly normalized) value or the text
  that completes "expected ...".
  """
  @spec check(term(), type()) :: {:ok, term()} | {:error, String.t()}
  def check(value, type) do
    case conform(value, type) do
      {:ok, _} = ok -> ok
      :error -> {:error, describe(type)}
    end
  end

  @doc "Renders the schema as a markdown option list for a `@moduledoc`."
  @spec docs(schema()) :: String.t()
  def docs(schema) do
    Enum.map_join(schema, "\n", fn {key, spec} ->
      extra =
        cond do
          spec[:required] -> " Required."
          Keyword.has_key?(spec, :default) -> " Default: `#{inspect(spec[:default])}`."
          true -> ""
        end

      "  * `#{inspect(key)}` - #{spec[:doc] || ""} Expects #{describe(spec[:type])}.#{extra}"
    end)
  end

  @redacted "**redacted**"

  @doc """
  `term` with the value of every secret-bearing key (#{Enum.map_join(@secret_keys, ", ", &inspect/1)})
  replaced by `#{inspect(@redacted)}`, in keyword lists, maps and structs at any depth.
  Use it on anything about to be inspected into a message or a log line.
  """
  @spec redact(term()) :: term()
  def redact({key, _value}) when key in @secret_keys, do: {key, @redacted}
  def redact([head | tail]), do: [redact(head) | redact(tail)]
  def redact([]), do: []

  def redact(term) when is_map(term) do
    :maps.map(
      fn key, value -> if key in @secret_keys, do: @redacted, else: redact(value) end,
      term
    )
  end

  def redact(term) when is_tuple(term) do
    term |> Tuple.to_list() |> redact() |> List.to_tuple()
  end

  def redact(term), do: term

  @doc "`error` with its message prefixed by, and its details naming, `topology`."
  @spec in_topology(Error.t(), atom()) :: Error.t()
  def in_topology(%Error{} = error, topology) do
    %{
      error
      | message: "topology #{inspect(topology)}: #{error.message}",
        details: Map.put(error.details, :topology, topology)
    }
  end

  @doc "Builds the `:invalid_config` error for `key` (used by callers with their own checks)."
  @spec error(atom(), String.t()) :: Error.t()
  def error(key, text) do
    Error.new(:invalid_config, "invalid option #{inspect(key)}: #{text}", %{key: key})
  end

  defp check_keyword(opts) do
    if is_list(opts) and Keyword.keyword?(opts) do
      :ok
    else
      {:error,
       Error.new(
         :invalid_config,
         "options must be a keyword list, got #{inspect(redact(opts))}",
         %{
           key: nil
         }
       )}
    end
  end

  defp check_duplicates(opts) do
    case Keyword.keys(opts) -- Enum.uniq(Keyword.keys(opts)) do
      [] -> :ok
      [key | _] -> {:error, error(key, "given more than once")}
    end
  end

  defp check_unknown(opts, schema) do
    known = Keyword.keys(schema)

    case Enum.find(Keyword.keys(opts), &(&1 not in known)) do
      nil ->
        :ok

      key ->
        {:error,
         Error.new(
           :invalid_config,
           "unknown option #{inspect(key)}; known options: " <>
             Enum.map_join(known, ", ", &inspect/1),
           %{key: key}
         )}
    end
  end

  defp value(opts, key, spec) do
    case Keyword.fetch(opts, key) do
      {:ok, value} ->
        case conform(value, Keyword.fetch!(spec, :type)) do
          {:ok, _} = ok ->
            ok

          :error ->
            shown =
              if key in @secret_keys,
                do: "a value that is not shown",
                else: inspect(redact(value))

            {:error, error(key, "expected #{describe(spec[:type])}, got #{shown}")}
        end

      :error ->
        cond do
          spec[:required] ->
            {:error,
             Error.new(
               :invalid_config,
               "missing required option #{inspect(key)}: expected #{describe(spec[:type])}",
               %{key: key}
             )}

          true ->
            {:ok, Keyword.get(spec, :default)}
        end
    end
  end

  defp conform(v, :any), do: {:ok, v}
  defp conform(v, :pos_integer) when is_integer(v) and v > 0, do: {:ok, v}
  defp conform(v, :non_neg_integer) when is_integer(v) and v >= 0, do: {:ok, v}

  defp conform(v, {:integer, first..last}) when is_integer(v) and v >= first and v <= last,
    do: {:ok, v}

  defp conform(v, :string) when is_binary(v), do: {:ok, v}
  defp conform(v, :non_empty_string) when is_binary(v) and v != "", do: {:ok, v}

  defp conform(v, :ip_address) when is_tuple(v),
    do: if(:inet.is_ip_address(v), do: {:ok, v}, else: :error)

  defp conform(v, :ip_address) when is_binary(v) do
    case :inet.parse_strict_address(String.to_charlist(v)) do
      {:ok, ip} -> {:ok, ip}
      {:error, _} -> :error
    end
  end

  defp conform(v, :boolean) when is_boolean(v), do: {:ok, v}
  defp conform(v, :atom) when is_atom(v), do: {:ok, v}

  defp conform(v, :module) when is_atom(v) and v not in [nil, true, false] do
    if Code.ensure_loaded?(v), do: {:ok, v}, else: :error
  end

  defp conform({m, f, a} = v, :mfa) when is_atom(m) and is_atom(f) and is_list(a), do: {:ok, v}

  defp conform(v, :keyword) when is_list(v) do
    if Keyword.keyword?(v), do: {:ok, v}, else: :error
  end

  defp conform(v, {:in, values}), do: if(v in values, do: {:ok, v}, else: :error)
  defp conform(v, {:literal, v}), do: {:ok, v}

  defp conform(v, {:list, type}) when is_list(v) do
    all(v, &conform(&1, type))
  end

  defp conform(v, {:map, kt, vt}) when is_map(v) and not is_struct(v) do
    with {:ok, pairs} <-
           all(Map.to_list(v), fn {k, x} ->
             with {:ok, k} <- conform(k, kt), {:ok, x} <- conform(x, vt), do: {:ok, {k, x}}
           end) do
      {:ok, Map.new(pairs)}
    end
  end

  defp conform(v, {:tuple, types}) when is_tuple(v) and tuple_size(v) == length(types) do
    with {:ok, items} <-
           all(Enum.zip(Tuple.to_list(v), types), fn {x, t} -> conform(x, t) end) do
      {:ok, List.to_tuple(items)}
    end
  end

  defp conform(v, {:fun, arity}) when is_function(v, arity), do: {:ok, v}

  defp conform(v, {:or, types}) do
    Enum.find_value(types, :error, fn type ->
      case conform(v, type) do
        {:ok, _} = ok -> ok
        :error -> nil
      end
    end)
  end

  defp conform(v, {:custom, _text, fun}) do
    case fun.(v) do
      :ok -> {:ok, v}
      true -> {:ok, v}
      {:ok, _} = ok -> ok
      _ -> :error
    end
  end

  defp conform(_v, _type), do: :error

  defp all(items, fun) do
    Enum.reduce_while(items, {:ok, []}, fn item, {:ok, acc} ->
      case fun.(item) do
        {:ok, x} -> {:cont, {:ok, [x | acc]}}
        :error -> {:halt, :error}
      end
    end)
    |> case do
      {:ok, acc} -> {:ok, Enum.reverse(acc)}
      :error -> :error
    end
  end

  @doc false
  @spec describe(type()) :: String.t()
  def describe(:any), do: "any term"
  def describe(:pos_integer), do: "a positive integer"
  def describe(:non_neg_integer), do: "a non-negative integer"
  def describe({:integer, first..last}), do: "an integer in #{first}..#{last}"
  def describe(:string), do: "a string"
  def describe(:non_empty_string), do: "a non-empty string"
  def describe(:ip_address), do: "an IP address (tuple or string)"
  def describe(:boolean), do: "true or false"
  def describe(:atom), do: "an atom"
  def describe(:module), do: "a loaded module"
  def describe(:mfa), do: "a {module, function, args} tuple"
  def describe(:keyword), do: "a keyword list"
  def describe({:in, values}), do: "one of " <> Enum.map_join(values, ", ", &inspect/1)
  def describe({:literal, v}), do: inspect(v)
  def describe({:list, type}), do: "a list of (#{describe(type)})"
  def describe({:map, kt, vt}), do: "a map of (#{describe(kt)}) to (#{describe(vt)})"

  def describe({:tuple, types}),
    do: "{" <> Enum.map_join(types, ", ", &describe/1) <> "}"

  def describe({:fun, arity}), do: "a function of arity #{arity}"
  def describe({:or, types}), do: Enum.map_join(types, " or ", &describe/1)
  def describe({:custom, text, _fun}), do: text
end
