"""The golden routing model: deliveries per flow, and the configuration checks."""

import pytest

from golden.routing import RouteTables, RoutingError, RoutingModel, wavelet_color
from rtl.router import Port, port_mask
from rtl.wavelet import pack

N, E, S, W, RAMP = Port


def _kinds(issues):
    return sorted({i.kind for i in issues})


def test_single_router_multicast_and_order():
    t = RouteTables(1, 1)
    t.set(0, 0, W, 3, port_mask(E, S, RAMP))
    t.set(0, 0, N, 3, port_mask(E))
    model = RoutingModel(t)
    inj = [((0, 0, W), pack(data=i, color=3)) for i in range(5)]
    inj += [((0, 0, N), pack(data=100 + i, color=3)) for i in range(3)]
    d = model.deliver(inj)
    for sink in ((0, 0, E), (0, 0, S), (0, 0, RAMP)):
        assert d.outputs[sink][(0, 0, W), 3] == [pack(data=i, color=3) for i in range(5)]
    assert d.outputs[0, 0, E][(0, 0, N), 3] == [pack(data=100 + i, color=3) for i in range(3)]
    assert d.forwarded[0, 0, E] == 8 and d.received[0, 0, W] == 5
    assert d.expected_count() == 18
    # Two flows share output E on color 3: a merge, reported unless allowed.
    issues = model.check()
    assert _kinds(issues) == ["merge"]
    assert "tile (0, 0) port E color 3" in str(issues[0])
    assert model.check(allow_merge=True) == []


def test_column_broadcast_reaches_every_ramp():
    t = RouteTables(3, 4)
    for y in range(4):
        t.set(1, y, N, 2, port_mask(S, RAMP))
    model = RoutingModel(t)
    model.validate()
    tr = model.trace((1, 0, N), 2)
    assert sorted(tr.sinks) == sorted([(1, y, RAMP) for y in range(4)] + [(1, 3, S)])
    d = model.deliver([((1, 0, N), pack(data=i, color=2)) for i in range(4)])
    assert d.received[1, 3, N] == 4 and d.forwarded[1, 2, S] == 4


def test_route_leaving_the_fabric_is_named():
    t = RouteTables(2, 2)
    t.set(0, 0, RAMP, 7, port_mask(N))
    model = RoutingModel(t, exported=[])         # no edge output exported
    issues = model.check()
    assert _kinds(issues) == ["leaves_fabric"]
    assert "tile (0, 0) port N color 7" in issues[0].message
    with pytest.raises(RoutingError, match=r"tile \(0, 0\) port N color 7"):
        model.deliver([((0, 0, RAMP), pack(color=7))])
    assert RoutingModel(t).check() == []         # all edges exported: delivered there


def test_loop_is_detected_and_not_simulated():
    t = RouteTables(2, 1)
    t.set(0, 0, RAMP, 4, port_mask(E))
    t.set(1, 0, W, 4, port_mask(W))              # U-turn back west
    t.set(0, 0, E, 4, port_mask(E))              # ... and east again
    model = RoutingModel(t)
    issues = model.check()
    assert "loop" in _kinds(issues)
    loop = next(i for i in issues if i.kind == "loop")
    assert (loop.x, loop.y, loop.port, loop.color) == (1, 0, W, 4)
    with pytest.raises(RoutingError, match="loop"):
        model.deliver([((0, 0, RAMP), pack(color=4))])


def test_reconvergence_duplicates():
    t = RouteTables(2, 2)
    t.set(0, 0, RAMP, 1, port_mask(E, S))
    t.set(1, 0, W, 1, port_mask(S))
    t.set(0, 1, N, 1, port_mask(E))
    t.set(1, 1, N, 1, port_mask(RAMP))
    t.set(1, 1, W, 1, port_mask(RAMP))
    issues = RoutingModel(t).check()
    dup = [i for i in issues if i.kind == "duplicate"]
    assert dup and (dup[0].x, dup[0].y, dup[0].port) == (1, 1, RAMP)


def test_empty_route_and_invalid_color_are_drops_with_errors():
    t = RouteTables(2, 1)
    t.set(0, 0, W, 5, port_mask(E, RAMP))         # tile (1, 0) has no entry for color 5
    model = RoutingModel(t)
    issues = model.check()
    assert _kinds(issues) == ["empty_route"]
    assert "tile (1, 0) port W color 5" in issues[0].message
    assert model.check(allow_drop=True) == []
    d = model.deliver([((0, 0, W), pack(data=1, color=5)), ((0, 0, W), pack(color=30)),
                       ((0, 0, W), pack(color=6))])
    assert d.outputs[0, 0, RAMP][(0, 0, W), 5] == [pack(data=1, color=5)]
    assert dict(d.errors) == {(1, 0): 1, (0, 0): 2}
    assert [where for _, _, where in d.dropped] == [(1, 0, W), (0, 0, W), (0, 0, W)]
    assert "invalid color" in model.trace((0, 0, W), 30).issues[0].message


def test_tables_reject_bad_entries_naming_them():
    t = RouteTables(2, 2)
    with pytest.raises(ValueError, match=r"tile \(2, 0\)"):
        t.set(2, 0, N, 0, 1)
    with pytest.raises(ValueError, match="color 24"):
        t.set(0, 0, N, 24, 1)
    with pytest.raises(ValueError, match="mask"):
        t.set(0, 0, N, 0, 1 << 5)
    t.add(0, 0, N, 0, port_mask(S))
    t.add(0, 0, N, 0, port_mask(RAMP))
    assert t.mask(0, 0, N, 0) == port_mask(S, RAMP)
    assert t.entries() == [(0, 0, N, 0, port_mask(S, RAMP))]
    assert wavelet_color(pack(color=17)) == 17


def test_xy_unicast_reaches_each_destination_without_loops():
    from golden.routing import xy_unicast_tables
    t = xy_unicast_tables(3, 3, list(range(9)))
    model = RoutingModel(t)
    sources = [((x, y, RAMP), d) for x in range(3) for y in range(3) for d in range(9)]
    assert model.check(sources, allow_merge=True) == []
    for (src, d) in sources:
        assert model.trace(src, d).sinks == [(d % 3, d // 3, RAMP)]
    with pytest.raises(ValueError, match="destination tile 9"):
        xy_unicast_tables(3, 3, [9])


# --- the bench scoreboard, fed by the model ------------------------------------------------

def _scoreboard(n=4):
    from tb.fabric_link import Scoreboard
    t = RouteTables(1, 1)
    t.set(0, 0, W, 2, port_mask(E, S))
    t.set(0, 0, N, 2, port_mask(E))
    words = [pack(data=i, index=1, color=2) for i in range(n)]
    others = [pack(data=i, index=2, color=2) for i in range(n)]
    d = RoutingModel(t).deliver([((0, 0, W), w) for w in words] +
                                [((0, 0, N), w) for w in others])
    return Scoreboard(d), words, others


def test_scoreboard_accepts_merged_flows_in_any_interleaving():
    sb, words, others = _scoreboard()
    for a, b in zip(words, others):
        sb.observe((0, 0, E), b)
        sb.observe((0, 0, E), a)
    for w in words:
        sb.observe((0, 0, S), w)
    assert sb.outstanding == 0
    sb.check_complete()


@pytest.mark.parametrize("case,message", [
    ("lost", "1 wavelet(s) lost or reordered"),
    ("duplicate", "a duplicate of wavelet #0"),
    ("corrupt", "which no flow sent (corrupted)"),
    ("misrouted", "no flow is routed there"),
])
def test_scoreboard_names_port_color_and_wavelet(case, message):
    sb, words, _ = _scoreboard()
    sink = (0, 0, S)
    sb.observe(sink, words[0])
    bad = {"lost": words[2], "duplicate": words[0], "corrupt": words[1] ^ 0x4,
           "misrouted": pack(color=5)}[case]
    with pytest.raises(AssertionError, match="tile \\(0, 0\\) S output, color") as exc:
        sb.observe(sink, bad)
    assert message in str(exc.value)


def test_scoreboard_reports_lost_wavelets_at_the_end():
    sb, words, _ = _scoreboard()
    sb.observe((0, 0, S), words[0])
    with pytest.raises(AssertionError, match="never arrived") as exc:
        sb.check_complete()
    assert "tile (0, 0) E output, color 2" in str(exc.value)


def test_register_writes_use_the_router_map():
    from rtl.router import route_addr
    t = RouteTables(2, 1)
    t.set(1, 0, RAMP, 9, port_mask(W))
    assert t.register_writes() == [(1, 0, route_addr(RAMP, 9), port_mask(W))]


@pytest.mark.parametrize("source,message", [
    ((5, 5, N), r"source tile \(5, 5\) port N is outside the 2 x 2 mesh"),
    ((0, -1, S), r"source tile \(0, -1\) port S is outside the 2 x 2 mesh"),
    ((0, 0, E), r"source tile \(0, 0\) port E is a link between two tiles"),
])
def test_deliver_rejects_a_source_that_is_not_a_mesh_input(source, message):
    t = RouteTables(2, 2)
    t.set(0, 0, W, 1, port_mask(RAMP))
    model = RoutingModel(t)
    with pytest.raises(ValueError, match=message):
        model.deliver([((0, 0, W), pack(color=1)), (source, pack(color=1))])
    with pytest.raises(ValueError, match=message):
        model.check([(source, 1)])
    # A good source still works and nothing was recorded for the bad one.
    d = model.deliver([((0, 0, W), pack(color=1))])
    assert dict(d.errors) == {} and d.expected_count() == 1


class _NoDut:
    """Stands in for a cocotb handle: the bench looks signals up lazily."""

    def __getattr__(self, name):
        return None


@pytest.mark.parametrize("endpoint,message", [
    ((5, 5, N), r"tile \(5, 5\) port N is not an edge or RAMP input of the 2 x 2 mesh"),
    ((1, 1, W), r"tile \(1, 1\) port W is not an edge or RAMP input of the 2 x 2 mesh"),
])
def test_bench_driver_names_an_endpoint_the_mesh_lacks(endpoint, message):
    from tb.fabric_link import FabricBench
    bench = FabricBench(_NoDut(), 2, 2)
    with pytest.raises(ValueError, match=message):
        bench.driver(endpoint)
    with pytest.raises(ValueError, match=message.replace("input", "output")):
        bench.set_sink(endpoint, mode=1)
    with pytest.raises(ValueError, match=message.replace("input", "output")):
        bench.on_sink(endpoint, lambda cycle, word: None)


def test_generator_colors_are_uniform():
    """The bench top's traffic generator draws every color equally often (to within one
    16-bit value in 2,700), for any number of colors: no folding of 0..31 onto 0..23."""
    from tb.fabric_harness import generator_color
    for colors in (1, 4, 16, 23, 24):
        counts = [0] * colors
        for r in range(1 << 16):
            counts[generator_color(r, colors)] += 1
        assert max(counts) - min(counts) <= 1, (colors, min(counts), max(counts))
