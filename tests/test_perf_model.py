"""gpt_mapping/perf_model.py: the analytical schedule model behaves as its derivation says
(docs/gemm.md) and runs at GPT-2 size in a fraction of a second."""

import time
from dataclasses import replace

import numpy as np
import pytest

from gpt_mapping.layout import GemmMapping, PEConfig
from gpt_mapping.perf_model import PerfParams, predict, predict_from_weights


def dense(mapping):
    return np.tile(mapping.features_per_column[:, None], (1, mapping.outputs))


def test_worked_example_1x1():
    # T = 4 (T_pad 4: 1 vector), K = 3, N = 2 on one PE, default parameters: each weight's FMAC
    # re-reads the accumulator line the previous one wrote, 4 cycles apart (accumulate
    # interval), so step = 3 weights x 4 cycles + 1 command + 1 FP16 convert/store = 14;
    # fill = 1 hop + RAMP = 2.
    # n = 0: FMACs done 2 + 14 = 16, reduction starts 16 + 3 (FMA pipeline) = 19.
    # n = 1: FMACs done 16 + 14 = 30, reduction starts 33; + 1 vector + 1 convert = 35.
    # (The RTL measures 36 cycles for this GEMM.)
    m = GemmMapping(tokens=4, features=3, outputs=2, width=1, height=1)
    est = predict(m, dense(m))
    assert est.cycles == 35
    assert est.fill_cycles == 2 and est.cycles_per_weight == 4
    assert est.fmac_lane_ops == 6 * 4 and est.fmac_utilization == pytest.approx(24 / (4 * 35))
    # Without the PE's issue constraints the old worked example (17 cycles) comes back.
    free = PerfParams(accumulate_interval=1, task_interval=1)
    assert predict(m, dense(m), free).cycles == 17


def test_dense_fmac_bound_utilization_is_high():
    m = GemmMapping(tokens=64, features=512, outputs=64, width=4, height=4)
    est = predict(m, dense(m))
    # 128 weights x 4 vectors per output and column: the datapath dominates.
    assert est.cycles >= 64 * 128 * 4
    assert 0.9 < est.fmac_utilization <= 1.0
    assert est.ramp_bound_steps == 0


def test_padding_lanes_are_not_useful_work():
    m = GemmMapping(tokens=4, features=256, outputs=8, width=1, height=4)      # T_y = 1
    est = predict(m, dense(m))
    assert est.t_pad == 4 and est.tokens_critical_row == 1
    assert est.fmac_lane_ops_issued == 4 * est.fmac_lane_ops
    assert est.fmac_utilization <= 0.25


def test_reduction_bound_when_each_column_holds_one_feature():
    # K_x = 1, T_y = 16: per output a column does 4 FMAC cycles but takes in 2 x 16 partial sums
    # and 16 results: the RAMP input is the bottleneck, ~3 T_y cycles per output.
    m = GemmMapping(tokens=64, features=8, outputs=32, width=8, height=4)
    est = predict(m, dense(m))
    assert est.ramp_bound_steps > est.datapath_bound_steps
    assert est.cycles >= 32 * 3 * 16
    assert est.fmac_utilization < 0.15


def test_fewer_weights_never_take_longer():
    rng = np.random.default_rng(0)
    m = GemmMapping(tokens=32, features=96, outputs=24, width=3, height=2)
    counts = dense(m)
    previous = predict(m, counts).cycles
    for _ in range(6):
        counts = np.minimum(counts, rng.integers(0, 33, size=counts.shape))
        cycles = predict(m, counts).cycles
        assert cycles <= previous
        previous = cycles
    # With no weights at all the reductions remain: the middle column takes in 2 x 16 partial
    # sums + 16 results (10 % flow-control overhead: 53 cycles) + 1 command per output.
    empty = predict(m, np.zeros_like(counts)).cycles
    assert 24 * 54 <= empty < 24 * 54 + 100


def test_latency_parameters_enter_where_documented():
    m = GemmMapping(tokens=16, features=32, outputs=8, width=1, height=6)
    base = PerfParams(accumulate_interval=1, task_interval=1)
    est = predict(m, dense(m), base)
    # One column: router latency only enters the fill, (critical row + 1) hops.
    slower = predict(m, dense(m), replace(base, router_latency=base.router_latency + 1))
    assert slower.cycles - est.cycles == est.critical_row + 1
    # Extra cycles per weight add up over the stream.
    taxed = predict(m, dense(m), replace(base, weight_cycles=1))
    assert taxed.cycles - est.cycles == 32 * 8
    with pytest.raises(ValueError, match="PerfParams.fadd_latency must be an int >= 0"):
        PerfParams(fadd_latency=-1)


def test_double_buffering_overlaps_the_reduction():
    exact = PerfParams(max_accumulator_buffers=0)       # exactly the mapping's buffers
    m1 = GemmMapping(tokens=32, features=16, outputs=16, width=4, height=2,
                     pe=PEConfig(accumulator_buffers=1))
    m2 = replace(m1, pe=PEConfig(accumulator_buffers=2))
    assert predict(m2, dense(m2), exact).cycles < predict(m1, dense(m1), exact).cycles


def test_buffers_follow_the_accumulator_cache():
    """The PE program rotates through as many buffers as the cache holds (up to 4)."""
    from gpt_mapping.perf_model import accumulator_buffers
    assert accumulator_buffers(GemmMapping(64, 32, 8, 2, 4)) == 4         # T_pad 16
    assert accumulator_buffers(GemmMapping(64, 32, 8, 2, 2)) == 2         # T_pad 32
    assert accumulator_buffers(GemmMapping(8, 32, 8, 2, 2)) == 4          # T_pad 4: capped
    m = GemmMapping(tokens=64, features=256, outputs=32, width=4, height=4)
    sparse = np.minimum(dense(m), 3)
    four = predict(m, sparse).cycles
    two = predict(m, sparse, PerfParams(max_accumulator_buffers=2)).cycles
    assert four <= two


def test_random_mappings_stay_physical():
    rng = np.random.default_rng(1)
    for _ in range(20):
        width, height = (int(v) for v in rng.integers(1, 7, size=2))
        tokens = int(rng.integers(1, 32 * height))
        features, outputs = (int(v) for v in rng.integers(1, 80, size=2))
        m = GemmMapping(tokens, features, outputs, width, height)
        w = rng.standard_normal((features, outputs)).astype(np.float16)
        w[rng.random(w.shape) < rng.random()] = 0
        est = predict_from_weights(m, w)
        assert 0.0 <= est.fmac_utilization <= 1.0
        assert est.fmac_lane_ops == int((w != 0).sum()) * tokens
        assert est.cycles >= est.fill_cycles + outputs
        assert est.datapath_bound_steps + est.ramp_bound_steps == width * outputs


def test_bad_counts_are_rejected():
    m = GemmMapping(tokens=4, features=6, outputs=3, width=2, height=1)
    with pytest.raises(ValueError, match=r"shape \(width, N\) = \(2, 3\), got \(3, 2\)"):
        predict(m, np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="0..K_x"):
        predict(m, np.full((2, 3), 4))
    with pytest.raises(TypeError, match="GemmMapping"):
        predict("4x4", np.zeros((2, 3), dtype=np.int64))


def test_gpt2_size_in_a_fraction_of_a_second():
    m = GemmMapping(tokens=1024, features=768, outputs=3072, width=750, height=994)
    start = time.perf_counter()
    est = predict(m, dense(m))
    elapsed = time.perf_counter() - start
    assert elapsed < 2.0, f"perf model took {elapsed:.2f} s"
    assert est.nonzero_weights == 768 * 3072 and est.cycles > 3072
    as_dict = est.as_dict()
    assert as_dict["params"]["router_latency"] == 1 and as_dict["cycles"] == est.cycles
