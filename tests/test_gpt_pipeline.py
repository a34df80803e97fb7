"""The mapped GPT block (gpt_mapping.gpt): golden pipeline against torch, bit-exactness
checks, pruning, predicted counters, residency and the report."""

import json

import numpy as np
import pytest

from gpt_mapping import gpt, report
from gpt_mapping.layout import MappingError
from gpt_mapping.model import LINEAR_LAYERS, GPTConfig, init_block

CFG = GPTConfig(n_embd=64, n_head=4, n_ctx=16, batch=2)


@pytest.fixture(scope="module")
def block():
    return init_block(CFG, 0)


@pytest.fixture(scope="module")
def x():
    return gpt.random_input(CFG, 1)


# --- golden pipeline against torch float32 -------------------------------------------------------

@pytest.mark.parametrize("cfg, fabric, sparsity, seed", [
    (CFG, (4, 4), 0.0, 0),
    (CFG, (4, 4), 0.9, 1),
    (GPTConfig(n_embd=48, n_head=3, n_ctx=12, batch=1, gelu="tanh"), (3, 2), 0.5, 2),
    (GPTConfig(n_embd=32, n_head=2, n_ctx=8, batch=2), (1, 1), 0.0, 3),
    (GPTConfig(n_embd=32, n_head=1, n_ctx=8, batch=1), (1, 4), 0.0, 4),
])
def test_golden_pipeline_within_tolerance_of_torch(cfg, fabric, sparsity, seed):
    run, mapped = gpt.run_gpt(init_block(cfg, seed), gpt.random_input(cfg, seed + 10), fabric,
                              "golden", sparsity)
    assert [rec.name for rec in run.ops] == [spec.name for spec in gpt.OPERATIONS]
    for rec in run.ops:
        assert rec.out16.dtype == np.float16
        assert rec.rel_err <= gpt.TORCH_REL_TOL, (rec.name, rec.rel_err)
        assert rec.within_tolerance
    for rec in run.gemms:
        assert rec.where == "fabric"
        assert rec.bit_exact is True and rec.bit_exact_vs == "SPEC 7 loop reference"
        assert rec.torch_gemm_check["ok"], rec.name
    assert run.out16.shape == (cfg.batch, cfg.n_ctx, cfg.n_embd)


def test_golden_pipeline_is_deterministic(block, x):
    a, _ = gpt.run_gpt(block, x, (4, 4), "golden")
    b, _ = gpt.run_gpt(block, x, (4, 4), "golden")
    for ra, rb in zip(a.ops, b.ops):
        assert np.array_equal(gpt.bits(ra.out16), gpt.bits(rb.out16)), ra.name


def test_fabric_width_changes_only_gemm_rounding(block, x):
    """The K split sets the reduction order, so widths may differ in the last bits; both
    stay within tolerance. The height (token split) never changes a bit as long as the
    attention runs in the same place: on the fabric its key order is the positions' on
    every split (4 x 4: two rows per sequence; 4 x 2: one; 4 x 1: two sequences in one
    row), and a layout it cannot take (4 heads on 2 columns) runs it on the host, whose
    arithmetic differs (float32 exp) and says so."""
    a, _ = gpt.run_gpt(block, x, (4, 4), "golden")
    b, _ = gpt.run_gpt(block, x, (4, 2), "golden")
    c, _ = gpt.run_gpt(block, x, (2, 4), "golden")
    h, _ = gpt.run_gpt(block, x, (4, 1), "golden")
    assert a.op("attn.softmax").where == b.op("attn.softmax").where == "fabric"
    assert np.array_equal(gpt.bits(a.out16), gpt.bits(b.out16))
    assert c.ops[-1].rel_err <= gpt.TORCH_REL_TOL
    assert c.op("attn.softmax").where == "host"            # 4 heads on 2 columns
    assert "one head per column" in c.op("attn.softmax").mapping["on_host_because"]
    assert ("attention on the host because: attention on the fabric needs one head per "
            "column: n_head 4 on 2 columns") in report.format_report(report.build_report(c))
    assert h.op("attn.av").where == "fabric"
    assert np.array_equal(gpt.bits(a.out16), gpt.bits(h.out16))


# --- bit-exactness against the golden pipeline (the RTL path) ----------------------------------

class FakeRtl(gpt.GoldenBackend):
    """Stands in for the RTL backend: the golden GEMM, optionally one corrupted bit, and
    counters in the format of gpt_mapping.fabric_run.run_gemm_rtl; the other fabric
    operations from the golden model, their cycles marked measured."""
    name, kind = "rtl", "measured"

    def fabric_op(self, *args, **kwargs):
        run = super().fabric_op(*args, **kwargs)
        run.kind, run.busy = "measured", np.ones((4, 4), dtype=np.int64)
        return run

    def __init__(self, corrupt=None, arrays=True):
        self.corrupt, self.arrays = corrupt, arrays

    def run(self, mapping, x16, w16, bar, label=""):
        from golden.gemm import fabric_gemm
        y16 = fabric_gemm(x16, w16, mapping.width, mapping.height,
                          groups=mapping.groups).copy()
        if mapping.outputs == self.corrupt:
            y16.view(np.uint16)[0, 0] ^= 1
        counters = {"cycles": 1234}
        if self.arrays:
            counters[gpt.PE_LANE_OPS_KEY] = gpt.predicted_lane_ops(mapping, w16)
            counters[gpt.PORT_WAVELETS_KEY] = gpt.predicted_link_wavelets(mapping, w16) + 1
        return gpt.GemmRun(y16=y16, **gpt.counters_to_stats(mapping, w16, counters))


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_rtl_path_is_compared_bit_for_bit_with_the_golden_pipeline(block, x, sparsity):
    run, _ = gpt.run_gpt(block, x, (4, 4), FakeRtl(), sparsity)
    assert run.golden is not None and run.golden.backend == "golden"
    assert all(rec.bit_exact is True for rec in run.ops)
    assert {rec.bit_exact_vs for rec in run.ops} == {"golden pipeline"}
    rec = run.op("attn.c_proj")
    assert rec.gemm.kind == rec.gemm.util_kind == rec.gemm.links_kind == "measured"
    assert rec.gemm.cycles == 1234
    rep = report.build_report(run)
    assert rep["totals"]["bit_exact_all"] is True and rep["cycles_kind"] == "measured"


def test_one_wrong_bit_is_reported_where_it_happens(block, x):
    run, _ = gpt.run_gpt(block, x, (4, 4), FakeRtl(corrupt=CFG.n_embd * 4))   # mlp.c_fc
    exact = {rec.name: rec.bit_exact for rec in run.ops}
    assert exact["attn.c_attn"] and exact["residual_1"] and exact["ln_2"]
    assert exact["mlp.c_fc"] is False
    assert report.build_report(run)["totals"]["bit_exact_all"] is False


def test_rtl_counters_without_arrays_fall_back_to_predictions(block, x):
    run, _ = gpt.run_gpt(block, x, (4, 4), FakeRtl(arrays=False))
    g = run.op("mlp.c_proj").gemm
    assert g.kind == "measured" and g.util_kind == g.links_kind == "predicted"


def test_counters_with_wrong_shapes_are_rejected():
    from gpt_mapping.layout import GemmMapping
    mapping = GemmMapping(tokens=8, features=8, outputs=4, width=2, height=2)
    w16 = np.ones((8, 4), np.float16)
    with pytest.raises(ValueError, match=r"pe_fmac_lane_ops has shape \(3, 2\)"):
        gpt.counters_to_stats(mapping, w16, {"cycles": 5, gpt.PE_LANE_OPS_KEY: np.ones((3, 2))})
    with pytest.raises(KeyError, match="no 'cycles'"):
        gpt.counters_to_stats(mapping, w16, {})


def test_backend_selection():
    assert gpt.select_backend("golden").name == "golden"
    assert gpt.select_backend().name == "rtl"
    with pytest.raises(ValueError, match="'fpga'"):
        gpt.select_backend("fpga")


# --- sparsity -----------------------------------------------------------------------------------

def test_prune_by_magnitude_keeps_the_largest():
    w = np.array([[0.5, -3.0, 0.1], [2.0, -0.2, 1.0]], np.float32)
    pruned = gpt.prune_by_magnitude(w, 0.5)
    assert np.array_equal(pruned, [[0, -3.0, 0], [2.0, 0, 1.0]])
    assert np.array_equal(gpt.prune_by_magnitude(w, 0.0), w)
    ties = gpt.prune_by_magnitude(np.ones(4, np.float32), 0.5)
    assert np.array_equal(ties, [0, 0, 1, 1])                     # lower index pruned first
    with pytest.raises(ValueError, match="sparsity must be in"):
        gpt.prune_by_magnitude(w, 1.0)


def test_sparse_block_prunes_each_layer_and_streams_only_nonzeros(block):
    mapped = gpt.map_block(block, 0.9)
    torch_block = mapped.torch_block()
    for name in LINEAR_LAYERS:
        layer = mapped.linears[name]
        size = layer.k * layer.n
        assert layer.nnz == size - round(0.9 * size)              # per layer, exactly
        assert layer.w16.shape == (layer.k, layer.n)              # W = weight.T
        assert np.array_equal(layer.w16 != 0, layer.weight.T != 0)
        weight = torch_block.get_submodule(name).weight.numpy()
        assert np.array_equal(weight, layer.weight)               # torch uses the same pruning
    from gpt_mapping.layout import GemmMapping
    layer = mapped.linears["mlp.c_fc"]
    mapping = GemmMapping(tokens=CFG.tokens, features=layer.k, outputs=layer.n, width=4, height=4)
    lane_ops = gpt.predicted_lane_ops(mapping, layer.w16)
    assert lane_ops.sum() == layer.nnz * CFG.tokens
    ramp_row0 = gpt.predicted_link_wavelets(mapping, layer.w16)[0, :, 4].sum()
    t_y = CFG.tokens // 4
    # 3 columns take 2 T_y FP32 partial-sum wavelets per output, 3 tap T_y FP16 results.
    reduction = 3 * (2 + 1) * t_y * layer.n
    assert ramp_row0 - reduction == layer.nnz + 4 * layer.n       # non-zeros + 1 command each


def test_sparse_run_has_fewer_cycles_and_flops(block, x):
    dense, _ = gpt.run_gpt(block, x, (4, 4), "golden")
    sparse, _ = gpt.run_gpt(block, x, (4, 4), "golden", 0.9)
    for d, s in zip(dense.gemms, sparse.gemms):
        assert s.gemm.cycles < d.gemm.cycles
        assert s.flops < 0.11 * d.flops and s.dense_flops == d.dense_flops
    predicted = gpt.predict_block_cycles(block, (4, 4))
    assert predicted == {rec.name: rec.gemm.cycles for rec in dense.gemms}


# --- predicted link counts ------------------------------------------------------------------

@pytest.mark.parametrize("fabric", [(4, 4), (1, 3), (5, 1)])
def test_predicted_link_wavelets_follow_the_routes(fabric):
    from gpt_mapping.layout import GemmMapping
    from gpt_mapping.streams import weight_streams
    width, height = fabric
    rng = np.random.default_rng(0)
    w16 = (rng.standard_normal((12, 5)) * (rng.random((12, 5)) < 0.5)).astype(np.float16)
    mapping = GemmMapping(tokens=10, features=12, outputs=5, width=width, height=height)
    links = gpt.predicted_link_wavelets(mapping, w16)
    n_port, e_port, s_port, w_port, ramp = range(5)
    streams = np.array([len(s) for s in weight_streams(mapping, w16)])
    assert np.all(links[..., n_port] == 0)
    assert np.array_equal(links[:-1, :, s_port], np.broadcast_to(streams, (height - 1, width)))
    assert np.all(links[-1, :, s_port] == 0)
    t_y = mapping.tokens_per_row
    if width == 1:
        assert np.all(links[..., [e_port, w_port]] == 0)
        assert np.array_equal(links[..., ramp], np.broadcast_to(streams, (height, 1)))
    else:
        assert np.array_equal(links[:, 0, e_port], 2 * t_y * 5)    # FP32 partials: 2 each
        assert np.all(links[:, -1, e_port] == 0) and np.all(links[:, 0, w_port] == 0)
        assert np.array_equal(links[:, -1, w_port], t_y * 5)      # FP16 results westward
        # What leaves eastward arrives at the next RAMP; what goes west is tapped.
        assert links[..., ramp].sum() == height * streams.sum() + links[..., e_port].sum() \
            + links[..., w_port].sum()


# --- residency, validation, report ---------------------------------------------------------------

def test_residency_is_reported_per_gemm(block, x):
    run, _ = gpt.run_gpt(block, x, (4, 4), "golden")
    res = {rec.name: rec.residency for rec in run.gemms}
    assert not any(r["stays_on_fabric"] for r in res.values())
    assert res["attn.c_attn"]["input"] == "host (read back after ln_1 on the fabric)"
    assert all("its own fabric run" in r["why"] for r in res.values())
    # The attention runs on the fabric, on q, k, v where c_attn (heads ordered) leaves them.
    assert res["attn.c_attn"]["layout_allows"]
    assert "attn.softmax" in res["attn.c_attn"]["why"] and "head by head" in \
        res["attn.c_attn"]["why"]
    # On a fabric that cannot take it (4 heads, 2 columns) the attention mixes tokens on
    # the host, and the layout cannot keep c_attn's output in place.
    run2, _ = gpt.run_gpt(block, x, (2, 4), "golden")
    res2 = {rec.name: rec.residency for rec in run2.gemms}
    assert not res2["attn.c_attn"]["layout_allows"] and "mix tokens" in \
        res2["attn.c_attn"]["why"]
    assert res["mlp.c_fc"]["layout_allows"] and "mlp.c_proj" in res["mlp.c_fc"]["why"]
    assert res["mlp.c_proj"]["layout_allows"]


def test_mapping_errors_surface_before_anything_runs():
    # 40 tokens on one row (padded to 40) need 2 x 40 accumulator words; the cache has 64.
    cfg = GPTConfig(n_embd=64, n_head=4, n_ctx=40, batch=1)
    with pytest.raises(MappingError, match=r"row 0 has T_y = 40 tokens .*accumulator"):
        gpt.run_block(gpt.map_block(init_block(cfg)), gpt.to_f16(gpt.random_input(cfg)),
                      (4, 1), FailIfRun())


class FailIfRun:
    name, kind = "never", "measured"

    def run(self, *args, **kwargs):
        raise AssertionError("a GEMM ran before every mapping was validated")


def test_run_block_checks_its_input(block):
    mapped = gpt.map_block(block)
    with pytest.raises(ValueError, match=r"float16 \[2, 16, 64\], got float16 \[2, 16, 32\]"):
        gpt.run_block(mapped, np.zeros((2, 16, 32), np.float16), (4, 4))


def test_report_json_and_table(block, x, tmp_path):
    run, _ = gpt.run_gpt(block, x, (4, 4), "golden", 0.9)
    rep = report.build_report(run, dense=gpt.predict_block_cycles(block, (4, 4)))
    path = tmp_path / "r.json"
    report.write_report(rep, path)
    back = json.loads(path.read_text())
    assert back["where"]["host"] == []                  # all 15 operations on the fabric
    assert set(LINEAR_LAYERS) < set(back["where"]["fabric"]) and "mlp.gelu" in \
        back["where"]["fabric"]
    rows = {row["name"]: row for row in back["operations"]}
    assert rows["ln_1"]["where"] == "fabric" and rows["ln_1"]["fabric_cycles"] > 0
    assert rows["ln_1"]["cycles_kind"] == "predicted" and rows["ln_1"]["utilization"] is None
    assert rows["attn.softmax"]["fabric_cycles"] > 0 and rows["attn.av"]["where"] == "fabric"
    assert rows["mlp.c_fc"]["cycles_kind"] == "predicted"
    assert 0 < rows["mlp.c_fc"]["fmac_utilization"] <= 1
    assert back["totals"]["gemm_cycles"] == sum(r.gemm.cycles for r in run.gemms)
    assert back["totals"]["fabric_cycles"] == back["totals"]["gemm_cycles"] + \
        sum(r.fabric_op.cycles for r in run.fabric_ops)
    assert 0 < back["totals"]["non_gemm_share"] < 1
    assert back["sparse_speedup"]["speedup"] > 1
    assert back["totals"]["all_within_tolerance"] and back["totals"]["gemms_within_torch_bound"]
    text = report.format_report(back)
    for needle in ("attn.softmax", "on the host (golden model, numpy): none", "fabric", "p ",
                   "sparse speed-up", "ref"):
        assert needle in text
