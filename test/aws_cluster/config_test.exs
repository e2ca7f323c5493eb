defmodule AWSCluster.ConfigTest do
  use ExUnit.Case, async: true

  alias AWSCluster.{Config, Error}

  defp schema do
    [
      name: [type: :non_empty_string, required: true, doc: "A name."],
      count: [type: :pos_integer, default: 3],
      mode: [type: {:in, [:fast, :slow]}, default: :fast],
      tags: [type: {:map, :string, :string}, default: %{}],
      address: [
        type: {:or, [{:in, [:a, :b]}, {:tuple, [{:literal, :interface}, :non_neg_integer]}]}
      ],
      fun: [type: {:fun, 1}],
      list: [type: {:list, :string}, default: []],
      mfa: [type: :mfa],
      secret: [type: :non_empty_string, sensitive: true],
      upcased: [
        type:
          {:custom, "a string", &if(is_binary(&1), do: {:ok, String.upcase(&1)}, else: :error)}
      ]
    ]
  end

  defp invalid(opts) do
    assert {:error, %Error{reason: :invalid_config} = e} = Config.validate(opts, schema())
    e
  end

  test "fills defaults and leaves absent optional keys nil" do
    assert {:ok, config} = Config.validate([name: "x"], schema())
    assert config.count == 3 and config.mode == :fast and config.tags == %{}
    assert config.address == nil and config.fun == nil
  end

  test "accepts every type's good values and normalizes custom ones" do
    opts = [
      name: "x",
      count: 1,
      mode: :slow,
      tags: %{"a" => "b"},
      address: {:interface, 1},
      fun: &Function.identity/1,
      list: ["a"],
      mfa: {M, :f, [1]},
      secret: "s",
      upcased: "abc"
    ]

    assert {:ok, config} = Config.validate(opts, schema())
    assert config.upcased == "ABC"
    assert config.address == {:interface, 1}
  end

  test "an unknown key names it and lists the known ones" do
    e = invalid(name: "x", cuont: 3)
    assert e.details.key == :cuont
    assert e.message =~ "unknown option :cuont"
    assert e.message =~ ":count"
  end

  test "a missing required key names it" do
    e = invalid(count: 1)
    assert e.details.key == :name
    assert e.message =~ "missing required option :name: expected a non-empty string"
  end

  test "each wrong type names the key, the expectation and the value" do
    for {key, bad, expected} <-
          [
            count: {0, "a positive integer"},
            mode: {:medium, "one of :fast, :slow"},
            tags: {%{"a" => 1}, "a map of (a string) to (a string)"},
            address: {{:interface, -1}, "one of :a, :b or {:interface, a non-negative integer}"},
            fun: {&Map.get/2, "a function of arity 1"},
            list: {["a", :b], "a list of (a string)"},
            mfa: {{M, :f}, "a {module, function, args} tuple"},
            upcased: {1, "a string"}
          ]
          |> Enum.map(fn {k, {v, t}} -> {k, v, t} end) do
      e = invalid([name: "x"] ++ [{key, bad}])
      assert e.details.key == key

      assert e.message =~
               "invalid option #{inspect(key)}: expected #{expected}, got #{inspect(bad)}"
    end
  end

  test "a sensitive value is never echoed" do
    e = invalid(name: "x", secret: 12345)
    assert e.details.key == :secret
    refute e.message =~ "12345"
  end

  test "not a keyword list, or a key given twice, is rejected" do
    assert %Error{details: %{key: nil}} = invalid(%{name: "x"})
    assert %Error{details: %{key: :name}} = invalid(name: "x", name: "y")
  end

  test "docs/1 renders every key with its expectation and default" do
    docs = Config.docs(schema())
    assert docs =~ "`:name` - A name. Expects a non-empty string. Required."
    assert docs =~ "`:count` -  Expects a positive integer. Default: `3`."
  end
end
