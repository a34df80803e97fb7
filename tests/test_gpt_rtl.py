"""A small GPT block with its GEMMs on the RTL fabric, bit for bit against the golden
pipeline, its cycles against the perf model, and the report's sparse speed-up."""

import pytest

from gpt_mapping import gpt, report
from gpt_mapping.model import GPTConfig, init_block

pytestmark = [
    pytest.mark.rtl,
    pytest.mark.slow,
]

CFG = GPTConfig(n_embd=16, n_head=2, n_ctx=4, batch=2)
FABRIC = (2, 2)


@pytest.fixture(scope="module")
def rtl_runs():
    """The block on the 2 x 2 RTL fabric, dense and 90 % sparse, run once per module."""
    runs = {}

    def get(sparsity):
        if sparsity not in runs:
            runs[sparsity], _ = gpt.run_gpt(init_block(CFG, 0), gpt.random_input(CFG, 1),
                                            FABRIC, "rtl", sparsity)
        return runs[sparsity]
    return get


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_block_on_the_rtl_fabric_is_bit_exact(rtl_runs, sparsity):
    run = rtl_runs(sparsity)
    assert run.backend == "rtl" and run.golden.backend == "golden"
    bad = [rec.name for rec in run.ops if rec.bit_exact is not True]
    assert not bad, f"not bit-exact against the golden pipeline: {bad}"
    assert all(rec.within_tolerance for rec in run.ops)
    rep = report.build_report(run)
    assert rep["cycles_kind"] == "measured"
    assert rep["where"]["host"] == []                   # the whole block on the fabric
    for row in rep["operations"]:
        if row["where"] == "fabric":
            assert row["fabric_cycles"] > 0 and 0 < row["utilization"] <= 1
            assert row["cycles_kind"] == "measured"


@pytest.mark.parametrize("sparsity", [0.0, 0.9])
def test_predicted_cycles_within_10_percent_of_measured(rtl_runs, sparsity):
    """The perf model that predicts GPT-2 on large virtual fabrics agrees with the RTL on
    every fabric operation of the block: at 90 % sparsity (T_y = 4 tokens per PE, under one
    weight per column and output) the reductions' latency sets the GEMMs' pace."""
    rows = [row for row in report.build_report(rtl_runs(sparsity))["operations"]
            if row["where"] == "fabric"]
    assert len(rows) == 15 and sum("gemm" in row for row in rows) == 4
    for row in rows:
        measured = row["fabric_cycles"]
        predicted = (row["gemm"] if "gemm" in row else row["fabric_op"])["predicted_cycles"]
        assert abs(predicted - measured) <= 0.10 * measured, (
            f"{row['name']}: predicted {predicted} cycles, measured {measured}")


def test_sparse_speedup_divides_cycles_of_one_kind(rtl_runs):
    """Measured dense over measured sparse when both ran on the RTL; against a predicted
    dense figure the speed-up is the model's own (predicted over predicted), and the
    measured sparse cycles stand beside it, never divided by a prediction."""
    dense, sparse = rtl_runs(0.0), rtl_runs(0.9)
    measured = report.build_report(sparse, dense=dense)["sparse_speedup"]
    dense_cycles = sum(rec.gemm.cycles for rec in dense.gemms)
    sparse_cycles = sum(rec.gemm.cycles for rec in sparse.gemms)
    assert measured["basis"] == measured["dense_cycles_kind"] \
        == measured["sparse_cycles_kind"] == "measured"
    assert (measured["dense_fabric_cycles"], measured["sparse_fabric_cycles"]) == \
        (dense_cycles, sparse_cycles)
    assert measured["speedup"] == pytest.approx(dense_cycles / sparse_cycles)
    assert "sparse_measured_fabric_cycles" not in measured

    predicted_dense = gpt.predict_block_cycles(init_block(CFG, 0), FABRIC)
    model = report.build_report(sparse, dense=predicted_dense)
    sp = model["sparse_speedup"]
    predicted_sparse = sum(rec.gemm.details["predicted_cycles"] for rec in sparse.gemms)
    assert sp["basis"] == sp["dense_cycles_kind"] == sp["sparse_cycles_kind"] == "predicted"
    assert sp["dense_fabric_cycles"] == sum(predicted_dense.values())
    assert sp["sparse_fabric_cycles"] == predicted_sparse != sparse_cycles
    assert sp["speedup"] == pytest.approx(sum(predicted_dense.values()) / predicted_sparse)
    assert sp["sparse_measured_fabric_cycles"] == sparse_cycles
    for rec in sparse.gemms:
        assert sp["per_gemm"][rec.name] == pytest.approx(
            predicted_dense[rec.name] / rec.gemm.details["predicted_cycles"])
    line = [ln for ln in report.format_report(model).splitlines() if "speed-up" in ln][0]
    assert "(predicted) / sparse" in line and "(measured)" not in line
    assert f"measured sparse {sparse_cycles:,} (no measured dense run)" in line


#: Small-T_y GEMMs on the 2 x 2 build of this module: (T, K, N, sparsity). T_y = T / 2 tokens
#: per PE, from 1 to 4, mostly sparse: the latency-bound corner of the perf model.
SMALL_GEMMS = [(2, 16, 16, 0.9), (4, 16, 16, 0.9), (6, 4, 16, 0.9), (8, 16, 16, 0.9),
               (8, 48, 12, 0.5), (4, 48, 12, 0.0)]


@pytest.mark.parametrize("case", SMALL_GEMMS, ids=lambda c: "T{}_K{}_N{}_s{}".format(*c))
def test_small_t_y_gemms_predicted_within_10_percent(case):
    from gpt_mapping.demo import make_gemm_operands
    from gpt_mapping.fabric_run import run_gemm_rtl
    from gpt_mapping.layout import map_gemm
    from gpt_mapping.perf_model import predict
    from gpt_mapping.streams import nonzero_counts
    tokens, features, outputs, sparsity = case
    x16, w16 = make_gemm_operands(tokens, features, outputs, sparsity, seed=1)
    m = map_gemm(x16, w16, *FABRIC)
    _, counters = run_gemm_rtl(m, x16, w16)
    measured = counters["cycles"]
    predicted = predict(m, nonzero_counts(m, w16)).cycles
    assert abs(predicted - measured) <= 0.10 * measured, (
        f"{case}: predicted {predicted} cycles, measured {measured}")
