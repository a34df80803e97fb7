"""Moving X into column groups on the fabric (gpt_mapping/redistribute.py, docs/gemm.md
section 12): the plan (pieces, routes, colours) checked against the layout and the golden
routing model, the RTL copy bit for bit, and the GPT mapping's choice of layouts."""

import dataclasses

import numpy as np
import pytest

from golden.routing import RouteTables, RoutingModel
from gpt_mapping import redistribute as RD
from gpt_mapping.layout import GemmMapping, MappingError
from gpt_mapping.perf_model import needed_features
from rtl.router import Port

LAYOUTS = [(4, 4, 32, 64, 64, 2), (4, 4, 32, 64, 64, 4), (8, 4, 30, 64, 64, 4),
           (8, 2, 16, 64, 128, 8), (2, 2, 8, 16, 16, 2), (6, 2, 12, 36, 36, 3)]


def _mapping(w, h, t, k, n, g):
    return GemmMapping(tokens=t, features=k, outputs=n, width=w, height=h, groups=g)


@pytest.mark.parametrize("w,h,t,k,n,g", LAYOUTS)
def test_pieces_in_order_make_the_grouped_x(w, h, t, k, n, g):
    """Column x's sources, in order, hold exactly the features x needs, and each source's
    destinations are the columns whose sources name it."""
    m = _mapping(w, h, t, k, n, g)
    piece = k // w
    for x, (a, b) in enumerate(needed_features(m)):
        got = [f for s in RD.sources(m, x) for f in range(s * piece, (s + 1) * piece)]
        assert got == list(range(a, b)), x
    for s in range(w):
        assert RD.destinations(m, s) == [x for x in range(w) if s in RD.sources(m, x)]


@pytest.mark.parametrize("w,h,t,k,n,g", LAYOUTS)
def test_routes_deliver_each_piece_to_its_destinations_only(w, h, t, k, n, g):
    """The golden routing model: a wavelet from source s's RAMP on its colour reaches the
    RAMP of every other destination of s in its row, and nothing else; the tables have no
    loop, no drop and no edge exit."""
    m = _mapping(w, h, t, k, n, g)
    tables = RouteTables(w, h)
    for x, y, port, color, mask in RD.redistribute_routes(m):
        assert not tables.mask(x, y, port, color), (x, y, port, color)   # no entry twice
        tables.set(x, y, port, color, mask)
    model = RoutingModel(tables)
    colors = RD.group_colors(w)[g].sources
    for y in range(h):
        for s in range(w):
            tr = model.trace((s, y, Port.RAMP), colors[s])
            want = sorted((d, y) for d in RD.destinations(m, s) if d != s)
            assert sorted((e.x, e.y) for e in tr.sinks) == want, (s, y)
            assert all(e.port == Port.RAMP for e in tr.sinks)
            assert not tr.drops and not tr.issues


def test_colour_budget():
    """Colours 0..3 stay the GEMM's and the attention's; every G's colours are its own;
    a width whose groups do not all fit leaves the smallest G out, named in the error."""
    for w in (2, 4, 6, 8, 12, 16):
        plan = RD.group_colors(w)
        used = [c for gc in plan.values() for c in gc.sources +
                tuple(v for v in (gc.reduce, gc.result) if v is not None)]
        assert len(used) == len(set(used)) and min(used, default=4) >= 4 and max(used) < 24
        for g, gc in plan.items():
            assert len(gc.sources) == w and (gc.reduce is None) == (g == w)
    assert set(RD.group_colors(4)) == {2, 4}
    assert set(RD.group_colors(8)) == {8, 4}           # G = 2 no longer fits
    m = _mapping(8, 2, 16, 64, 64, 2)
    assert "colours" in RD.redistributable(m)
    with pytest.raises(MappingError, match="2 column groups on 8 columns"):
        RD.redistribute_routes(m)
    with pytest.raises(MappingError, match="more colours"):
        RD.grouped_colors(m)


def test_uneven_pieces_are_refused_with_the_sizes():
    m = _mapping(4, 2, 8, 66, 64, 2)
    assert "K = 66" in RD.redistributable(m)
    with pytest.raises(MappingError, match="K = 66 and N = 64"):
        RD.redistribute_program(m, 0, 0, 1024, 2048)
    assert RD.redistributable(dataclasses.replace(m, groups=1)) is None
    assert RD.block_layouts(m) == [1]


def test_grouped_gemm_keeps_its_chain_off_the_plain_colours():
    m = RD.grouped_colors(_mapping(4, 4, 32, 64, 64, 2))
    assert (m.colors.reduce, m.colors.result) == (RD.group_colors(4)[2].reduce,
                                                  RD.group_colors(4)[2].result)
    assert RD.grouped_colors(_mapping(4, 4, 32, 64, 64, 4)).colors.reduce == 1  # no chain


@pytest.mark.rtl
@pytest.mark.parametrize("w,h,t,k,n,g", [(4, 4, 32, 64, 64, 2), (4, 4, 32, 64, 64, 4),
                                         (8, 2, 16, 64, 128, 8), (4, 4, 8, 128, 32, 4)])
def test_rtl_copy_is_bit_exact_and_the_bound_holds(w, h, t, k, n, g):
    """The copy every tile holds is X, every group's alike (decode_copies checks they
    agree), the frozen bound is a lower bound and the model (bound + fixed) within 10 %.
    8 x 2 at G = 8 has 8 receptions plus the send for 8 thread slots: the ascending source
    order keeps it from deadlocking. 4 x 4 with 8 tokens has T_y 2 in T_pad 4: the padding
    moves too, and the model counts it (a bound at T_y missed it by half)."""
    m = _mapping(w, h, t, k, n, g)
    x16 = np.random.default_rng(7).standard_normal((t, k)).astype(np.float16)
    x16[0, 0], x16[1, 1] = np.float16("-0"), np.float16("inf")
    copy, counters = RD.run_redistribute_rtl(m, x16)
    assert np.array_equal(copy.view(np.uint16), x16.view(np.uint16))
    predicted, bound = counters["predicted_cycles"], RD.redistribute_bound(m)
    assert predicted == RD.predict_redistribute_cycles(m) == bound + RD.REDISTRIBUTE_FIXED
    assert bound < counters["cycles"]                       # a lower bound
    assert abs(counters["cycles"] - predicted) <= 0.1 * counters["cycles"], counters["cycles"]
    # every tile took in exactly its remote pieces (wavelets: features x T_y, one each)
    piece = k // w
    for y in range(h):
        for x in range(w):
            remote = sum(1 for s in RD.sources(m, x) if s != x)
            assert counters["pe_wavelets_in"][y, x] == remote * piece * m.t_pad(y) + 1
