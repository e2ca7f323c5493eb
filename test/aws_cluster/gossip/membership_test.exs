defmodule AWSCluster.Gossip.MembershipTest do
  use ExUnit.Case, async: true

  alias AWSCluster.Gossip.Membership

  @config %{
    allow_nat: false,
    max_peers: 2,
    peer_timeout: 1_000,
    timestamp_window: 30_000,
    name_budget: nil,
    name_budget_per_day: nil
  }

  @v4 {{127, 0, 0, 7}, 4000}

  defp msg(name, boot, seq, meta \\ %{}),
    do: %{name: name, boot_id: boot, seq: seq, meta: meta}

  defp new(extra \\ %{}),
    do: Membership.new(Map.merge(@config, extra), 0, :"t#{System.unique_integer([:positive])}")

  defp name(host), do: "gm#{System.unique_integer([:positive])}@#{host}"

  test "a new peer, the same again, and a metadata change" do
    n = name("127.0.0.7")
    assert {:new, node, m} = Membership.heard(new(), msg(n, 1, 1), @v4, 0)
    assert Atom.to_string(node) == n
    assert {:same, m} = Membership.heard(m, msg(n, 1, 2), @v4, 1)
    assert {:changed, m} = Membership.heard(m, msg(n, 1, 3, %{"az" => "b"}), @v4, 2)
    assert Membership.nodes(m) == [node]
  end

  test "the name's host must be the source, unless allow_nat" do
    n = name("127.0.0.7")
    other = {{127, 0, 0, 8}, 4000}
    assert {:rejected, :source_mismatch, _} = Membership.heard(new(), msg(n, 1, 1), other, 0)
    assert {:new, _, _} = Membership.heard(new(%{allow_nat: true}), msg(n, 1, 1), other, 0)
    # IPv4 seen on an IPv6 socket as ::ffff:127.0.0.7 is the same host.
    mapped = {{0, 0, 0, 0, 0, 0xFFFF, 0x7F00, 0x0007}, 4000}
    assert {:new, _, _} = Membership.heard(new(), msg(n, 1, 1), mapped, 0)
  end

  test "where names and sources cannot be compared, the address moves only on a newer packet" do
    n = name("ip-10-0-0-7.ec2.internal")
    a = {{0xFD00, 0, 0, 0, 0, 0, 0, 7}, 4000}
    b = {{0xFD00, 0, 0, 0, 0, 0, 0, 8}, 4000}
    {:new, _, m} = Membership.heard(new(), msg(n, 1, 5), a, 0)
    assert {:rejected, :source_mismatch, m} = Membership.heard(m, msg(n, 1, 4), b, 1)
    assert {:changed, m} = Membership.heard(m, msg(n, 1, 6), b, 2)
    assert {:changed, _} = Membership.heard(m, msg(n, 2, 0), a, 3)
  end

  test "after a leave only another boot, or a higher seq of the same boot, is accepted" do
    n = name("127.0.0.7")
    {:new, node, m} = Membership.heard(new(), msg(n, 1, 1), @v4, 0)
    assert {:left, ^node, m} = Membership.left(m, msg(n, 1, 10), @v4, 1)
    assert Membership.nodes(m) == []
    assert {:rejected, :after_leave, m} = Membership.heard(m, msg(n, 1, 3), @v4, 2)
    assert {:rejected, :after_leave, m} = Membership.heard(m, msg(n, 1, 10), @v4, 2)
    assert {:new, ^node, _} = Membership.heard(m, msg(n, 1, 11), @v4, 3)
    assert {:new, ^node, _} = Membership.heard(m, msg(n, 2, 0), @v4, 3)
    # The tombstone ends with the timestamp window: older packets are stale by then.
    assert {:new, ^node, _} = Membership.heard(m, msg(n, 1, 3), @v4, 30_002)
  end

  test "a late leave of an earlier boot does not forget the boot heard now" do
    n = name("127.0.0.7")
    {:new, node, m} = Membership.heard(new(), msg(n, 2, 1), @v4, 0)
    assert {:ignored, m} = Membership.left(m, msg(n, 1, 99), @v4, 1)
    assert Membership.nodes(m) == [node]
  end

  test "a leave from elsewhere is refused; an unknown leaver is ignored" do
    n = name("127.0.0.7")
    {:new, _, m} = Membership.heard(new(), msg(n, 1, 1), @v4, 0)

    assert {:rejected, :source_mismatch, m} =
             Membership.left(m, msg(n, 1, 2), {{127, 0, 0, 9}, 1}, 1)

    assert length(Membership.nodes(m)) == 1
    assert {:ignored, _} = Membership.left(m, msg(name("127.0.0.7"), 1, 1), @v4, 1)
  end

  test "max_peers and the name budget bound new peers; silence forgets" do
    {:new, _, m} = Membership.heard(new(), msg(name("127.0.0.7"), 1, 1), @v4, 0)
    {:new, _, m} = Membership.heard(m, msg(name("127.0.0.7"), 1, 1), @v4, 500)

    assert {:rejected, :too_many_peers, m} =
             Membership.heard(m, msg(name("127.0.0.7"), 1, 1), @v4, 0)

    assert {[_], m} = Membership.forget_silent(m, 1_200)
    assert length(Membership.nodes(m)) == 1

    budget = new(%{name_budget: 1, name_budget_per_day: 0})
    {:new, _, budget} = Membership.heard(budget, msg(name("127.0.0.7"), 1, 1), @v4, 0)

    assert {:rejected, :name_budget, _} =
             Membership.heard(budget, msg(name("127.0.0.7"), 1, 1), @v4, 0)
  end
end
