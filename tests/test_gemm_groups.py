"""Column groups (SPEC 7's second freedom; docs/gemm.md section 10): G groups of W / G
columns side by side, each with its own copy of X split over its columns and 1 / G of the
outputs, its reduction chain along its own columns only. The bits are the plain layout's on
a fabric W / G wide; the RTL, the golden model, the streams, the routes, the performance
model and the layout choice all take the group width."""

import json

import numpy as np
import pytest

from golden.gemm import compare_to_torch, fabric_gemm, fabric_gemm_reference
from gpt_mapping.demo import make_gemm_operands
from gpt_mapping.layout import ColorPlan, GemmMapping, MappingError
from gpt_mapping.perf_model import (choose_layout, held_features, needed_features,
                                    plain_layout, predict_from_weights,
                                    redistribution_cycles)
from gpt_mapping.streams import column_stream, nonzero_counts, stream_length
from rtl.wavelet import unpack_array


def _operands(t, k, n, sparsity, seed=3):
    return make_gemm_operands(t, k, n, sparsity, seed)


def test_each_group_splits_all_of_k_and_its_slice_of_n():
    m = GemmMapping(tokens=8, features=10, outputs=7, width=6, height=1, groups=2)
    assert m.group_width == 3
    assert [tuple(m.feature_range(x)) for x in (0, 3)] == [(0, 1, 2), (0, 1, 2)]
    assert [len(m.feature_range(x)) for x in range(6)] == [3, 3, 4, 3, 3, 4]
    # outputs 0..2 for group 0 (3 of 7), 3..6 for group 1; each split over its columns
    assert m.output_bounds.tolist() == [0, 1, 2, 3, 4, 5, 7]
    assert m.owner_column(np.arange(7)).tolist() == [0, 1, 2, 3, 4, 5, 5]
    three = GemmMapping(tokens=12, features=30, outputs=10, width=6, height=2, groups=3)
    assert three.output_bounds.tolist() == [0, 1, 3, 4, 6, 8, 10]
    assert three.owner_column(np.arange(10)).tolist() == [0, 1, 1, 2, 3, 3, 4, 4, 5, 5]
    assert three.n_local(np.arange(10)).tolist() == [0, 0, 1, 0, 0, 1, 0, 1, 0, 1]
    assert m.summary()["groups"] == 2 and m.summary()["group_width"] == 3
    assert "groups" not in GemmMapping(8, 10, 7, 6, 1).summary()


@pytest.mark.parametrize("groups, message", [
    (4, r"4 column groups do not divide the fabric's 6 columns .*\[1, 2, 3, 6\]"),
    (0, "column groups must be an int >= 1, not 0"),
    (3, "3 column groups for N = 2 outputs"),
])
def test_bad_groups_are_named(groups, message):
    with pytest.raises(MappingError, match=message):
        GemmMapping(tokens=8, features=12, outputs=2, width=6, height=1, groups=groups)


def test_a_grouped_layout_has_no_single_k_split():
    with pytest.raises(MappingError, match="2 column groups holds K once per group"):
        GemmMapping(8, 12, 4, 4, 1, groups=2).feature_bounds


def test_no_reduce_or_result_route_crosses_a_group_boundary():
    plan = ColorPlan()
    routes = plan.routes(6, 2, groups=2)
    for r in routes:
        if r.color == plan.weight:
            continue
        local = r.x % 3
        assert not (local == 2 and "E" in r.out_ports), r
        assert not (local == 0 and "W" in r.out_ports), r
        assert not (local == 0 and r.in_port == "W"), r
    assert plan.routes(6, 2) != routes
    # groups of one column: no chain at all
    assert {r.color for r in plan.routes(4, 1, groups=4)} == {plan.weight}


def test_column_streams_carry_only_their_groups_outputs():
    x, w = _operands(8, 12, 6, 0.3)
    m = GemmMapping(8, 12, 6, 4, 1, groups=2)
    counts = nonzero_counts(m, w)
    mask = (w.view(np.uint16) & 0x7FFF) != 0
    for col in range(4):
        g = col // 2
        outs = m.group_outputs(g)
        kr = m.feature_range(col)
        want = np.zeros(6, np.int64)
        want[outs.start:outs.stop] = mask[kr.start:kr.stop, outs.start:outs.stop].sum(axis=0)
        assert counts[col].tolist() == want.tolist()
        f = unpack_array(column_stream(m, w, col))
        assert len(f.ctrl) == stream_length(m, w, col) == want.sum() + len(outs)
        commands = f.data[f.ctrl == 1].tolist()      # n_local of each of the group's outputs
        assert commands == m.n_local(np.arange(outs.start, outs.stop)).tolist()
        assert (f.index[f.ctrl == 0] < len(kr)).all()


def test_golden_per_group_is_the_plain_model_on_the_group_width():
    x, w = _operands(12, 20, 9, 0.4)
    for groups in (1, 2, 4):
        fast = fabric_gemm(x, w, 4, 3, groups=groups).view(np.uint16)
        loop = fabric_gemm_reference(x, w, 4, 3, groups=groups).view(np.uint16)
        assert np.array_equal(fast, loop)
        bounds = (np.arange(groups + 1) * 9) // groups
        for g in range(groups):
            part = fabric_gemm(x, np.ascontiguousarray(w[:, bounds[g]:bounds[g + 1]]),
                               4 // groups, 3).view(np.uint16)
            assert np.array_equal(fast[:, bounds[g]:bounds[g + 1]], part)
        assert compare_to_torch(fast.view(np.float16), x, w, 4 // groups).ok
    # the group width changes the reduction order, so the bits differ from the plain layout
    # products 2^20, 2^-4, -2^20, -2^-4: one feature per column adds them in order (the
    # -2^-4 after -2^20 survives); a group of 2 columns sums (2^20 + 2^-4) + (-2^20 - 2^-4),
    # each pair rounding its 2^-4 away (a tie, to even)
    x = np.array([[1024, 0.25, 1024, 0.25]], np.float16)
    w = np.array([[1024, 1024], [0.25, 0.25], [-1024, -1024], [-0.25, -0.25]], np.float16)
    assert fabric_gemm(x, w, 4, 1).tolist() == [[-0.0625, -0.0625]]
    assert fabric_gemm(x, w, 4, 1, groups=2).tolist() == [[0.0, 0.0]]


def test_redistribution_bound_counts_the_busiest_link():
    # 8 columns of 8 features (T_y 8) into 2 groups of 4 columns, each needing all 64: the
    # 32 features of the west half cross the middle link eastward, and the east half's
    # westward; the farthest hop (column 0 to 4: 5 routers) and the two RAMPs on top.
    m = GemmMapping(16, 64, 64, 8, 2, groups=2)
    assert redistribution_cycles(plain_layout(64, 8), needed_features(m), 8) == 32 * 8 + 5 + 2
    assert redistribution_cycles(plain_layout(64, 8), needed_features(
        GemmMapping(16, 64, 64, 8, 2)), 8) == 0
    # Y of 2 groups is one partition of N in column order: here the plain one
    assert redistribution_cycles(held_features(m), plain_layout(64, 8), 8) == 0
    with pytest.raises(ValueError, match="held and needed layouts cover 8 and 4 columns"):
        redistribution_cycles(plain_layout(64, 8), plain_layout(64, 4), 8)


def test_layout_choice_takes_groups_where_the_row_link_binds():
    x, w = _operands(16, 64, 64, 0.9)
    plain = GemmMapping(16, 64, 64, 8, 2)
    choice = choose_layout(plain, w)
    alone = predict_from_weights(plain, w).cycles
    # 90 % sparse, K_x = 8: every output's 2 T_y wavelets on the row link bind; 8 groups of
    # one column pay for copying X into each column and still win by far
    assert choice.mapping.groups == 8 and choice.cycles_in > 0
    assert choice.total_cycles < alone / 2
    with pytest.raises(ValueError, match="holds feature 0 in column 1 and in column 0"):
        redistribution_cycles(needed_features(GemmMapping(16, 64, 64, 8, 2, groups=8)),
                              plain_layout(64, 8), 8)
    dense = choose_layout(GemmMapping(64, 512, 64, 4, 4), _operands(64, 512, 64, 0)[1])
    assert dense.mapping.groups == 1           # compute-bound: nothing to gain by moving X


@pytest.mark.slow
@pytest.mark.parametrize("shape, fabric, sparsity, groups, interleave", [
    ((16, 64, 64), (8, 2), 0.9, 2, 1),
    ((16, 64, 64), (8, 2), 0.0, 8, 2),      # one column per group: no chain
    ((12, 30, 10), (6, 2), 0.5, 3, 1),      # uneven splits; the last group's extra output
])
def test_grouped_gemm_on_the_rtl(shape, fabric, sparsity, groups, interleave):
    from gpt_mapping.fabric_run import run_gemm_rtl
    t, k, n = shape
    x, w = _operands(t, k, n, sparsity)
    m = GemmMapping(t, k, n, *fabric, groups=groups, interleave=interleave)
    y, c = run_gemm_rtl(m, x, w)
    assert np.array_equal(y.view(np.uint16), fabric_gemm(x, w, *fabric, groups=groups)
                          .view(np.uint16)), "grouped GEMM not bit-exact"
    assert c["fmac_lane_ops"] == int(nonzero_counts(m, w).sum()) * t
    predicted = predict_from_weights(m, w).cycles
    assert c["predicted_cycles"] == predicted
    assert abs(predicted - c["cycles"]) <= 0.10 * c["cycles"], (predicted, c["cycles"])
    # no wavelet crosses between groups: nothing is sent east from a group's last column
    # nor west from a group's first column; inside a group the chain does carry traffic
    from rtl.router import Port
    sent = c["router_port_wavelets"]                 # [H, W, output port]
    span = fabric[0] // groups
    for col in range(fabric[0]):
        if col % span == span - 1:
            assert sent[:, col, Port.E].sum() == 0, col
        if col % span == 0:
            assert sent[:, col, Port.W].sum() == 0, col
    if span > 1:
        assert sent[:, 0, Port.E].sum() > 0
    # the golden backend's link counts (gpt.predicted_link_wavelets) are the RTL's exactly,
    # per group (they once counted every output's command and reduction on every column)
    from gpt_mapping.gpt import predicted_link_wavelets
    assert np.array_equal(predicted_link_wavelets(m, w), sent)


@pytest.mark.rtl
def test_benchmark_gemm_in_the_chosen_layout():
    """bench/gemm_fabric.py --layout chosen: the benchmark GEMM (4 x 4, T 64, K 512, N 64)
    in four one-column groups, its outputs in the balanced order, dense and 90 % sparse,
    bit-exact once Y is put back in order; the cycles exact (docs/gemm.md section 10: 99.8 %
    dense, 9.75x; 3,464 sparse in the block order), so a timing change is caught."""
    import importlib.util
    from pathlib import Path
    from gpt_mapping.fabric_run import run_gemm_rtl
    from gpt_mapping.layout import map_gemm
    path = Path(__file__).resolve().parent.parent / "bench" / "gemm_fabric.py"
    spec = importlib.util.spec_from_file_location("bench_gemm_fabric", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cycles = {}
    for sparsity in (0.0, 0.9):
        x, w = make_gemm_operands(64, 512, 64, sparsity, 0)
        m, order = bench.choose(map_gemm(x, w, 4, 4), w)
        assert (m.groups, m.interleave) == (4, 1)
        y, c = run_gemm_rtl(m, x, np.ascontiguousarray(w[:, order]))
        assert np.array_equal(y[:, np.argsort(order)].view(np.uint16),
                              fabric_gemm(x, w, 4, 4, groups=4).view(np.uint16))
        cycles[sparsity] = c["cycles"]
        if sparsity == 0.0:
            assert c["fmac_lane_ops"] / (64 * c["cycles"]) >= 0.98
    assert cycles == {0.0: 32_845, 0.9: 3_370}
    assert cycles[0.0] / cycles[0.9] >= 9.5


def test_balanced_output_order_spreads_the_non_zeros():
    from gpt_mapping.layout import balanced_output_order, block_range
    _, w = make_gemm_operands(64, 512, 64, 0.9, 0)
    nnz = ((w.view(np.uint16) & 0x7FFF) != 0).sum(axis=0)
    for groups in (2, 4, 8, 3):
        order = balanced_output_order(w, groups)
        assert sorted(order.tolist()) == list(range(64))
        loads = [int(nnz[order[block_range(g, groups, 64)]].sum()) for g in range(groups)]
        blocks = [int(nnz[block_range(g, groups, 64)].sum()) for g in range(groups)]
        assert max(loads) - min(loads) <= nnz.max() and max(loads) <= max(blocks)
        for g in range(groups):                       # each group's outputs ascending
            part = order[block_range(g, groups, 64)]
            assert (np.diff(part) > 0).all()
    assert (balanced_output_order(w, 1) == np.arange(64)).all()
    with pytest.raises(MappingError, match="groups = 65"):
        balanced_output_order(w, 65)


def test_a_chain_refuses_layouts_that_need_a_redistribution():
    from gpt_mapping.fabric_run import _check_chain
    x, w = _operands(8, 16, 8, 0.0)
    a = GemmMapping(8, 16, 8, 4, 1)
    b = GemmMapping(8, 8, 8, 4, 1, groups=2)
    with pytest.raises(MappingError, match="GEMM 1 of the chain reads X features 0..3 in "
                                           "column 0, where GEMM 0 leaves its outputs 0..1 "
                                           r"\(2 vs 1 column groups\)"):
        _check_chain([a, b], x, [w, np.ones((8, 8), np.float16)])


def test_gemm_command_takes_groups(tmp_path):
    from gpt_mapping import gemm_cli
    x, w = _operands(16, 64, 8, 0.3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    args = ["--x", str(tmp_path / "x.npy"), "--w", str(tmp_path / "w.npy"), "--fabric",
            "4x2", "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json"),
            "--backend", "golden", "--no-progress"]
    assert gemm_cli.main(args + ["--groups", "2"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["mapping"]["groups"] == 2 and report["bit_exact_vs_reference_loop"]
    assert np.array_equal(np.load(tmp_path / "y.npy").view(np.uint16),
                          fabric_gemm(x, w, 2, 2).view(np.uint16))
    assert report["stream_wavelets"] == report["nonzero_weights"] + 2 * 8
    assert gemm_cli.main(args + ["--groups", "3"]) == 2
