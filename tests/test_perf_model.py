"""gpt_mapping/perf_model.py: the analytical schedule model behaves as its derivation says
(docs/gemm.md), agrees with cycles measured on the RTL fabric, and runs at GPT-2 size in a
fraction of a second."""

from dataclasses import replace

import numpy as np
import pytest

from gpt_mapping.demo import make_gemm_operands
from gpt_mapping.layout import GemmMapping, PEConfig, map_gemm
from gpt_mapping.perf_model import PerfParams, predict, predict_from_weights, reduction_thread
from gpt_mapping.streams import nonzero_counts


def dense(mapping):
    return np.tile(mapping.features_per_column[:, None], (1, mapping.outputs))


def test_worked_example_1x1():
    # T = 4 (T_pad 4: g = 1 vector), K = 3, N = 2 on one PE, default parameters: each weight's
    # FMAC re-reads the accumulator line the previous one wrote, so it issues
    # pipeline_latency = 4 cycles after it: the chain is 3 x 4 = 12 cycles per output (the
    # datapath needs 3 + 1 store vector; the launcher 3 x 2 for the weights and 2 - 1 + 4 +
    # 1 = 6 for the final-sum command, a one-launch code task of the core), step 12.
    # fill = 1 hop + RAMP + launcher pick/decode (2) + launch stages (2) = 6: the first FMAC
    # issues at 6, as on the RTL.
    # n = 0: FMACs done 6 + 12 = 18; the store reads the line the last FMAC wrote: 18 + 3 = 21.
    # n = 1: FMACs done 30, store at 33; write-back 4 cycles later, last busy cycle + 1 = 38.
    # (The RTL measures 36: the first FMAC of n = 1 issues in the idle cycles of n = 0's
    # chain; the model does not overlap the FMAC chains of consecutive outputs.)
    m = GemmMapping(tokens=4, features=3, outputs=2, width=1, height=1)
    est = predict(m, dense(m))
    assert est.cycles == 38
    assert est.fill_cycles == 6 and est.cycles_per_weight == 4
    assert est.fmac_lane_ops == 6 * 4 and est.fmac_utilization == pytest.approx(24 / (4 * 38))
    # Without the pipeline's read-after-write distance, with a one-cycle launcher and
    # launch-list commands, the datapath (3 FMACs + 1 store per output) sets the pace.
    free = PerfParams(pipeline_latency=1, task_interval=1, code_task_latency=0)
    assert predict(m, dense(m), free).cycles == 15
    # The same with the command as a code task: the launcher, 3 + (1 - 1 + 4 + 1) = 8 cycles
    # per output, sets it: 8 more cycles than the 4-cycle datapath step over 2 outputs.
    assert predict(m, dense(m), PerfParams(pipeline_latency=1, task_interval=1)).cycles == 23


def test_reduction_thread_follows_the_rtl_schedule():
    """The reduction micro-threads of the PE recipe, vector by vector, as the RTL runs them
    (seen in a trace of the 2 x 2 GPT test block: the west column's sends issue at t and
    t + 4 and the next output's send at t + 14)."""
    west = reduction_thread(4, out_wavelets=2)
    # values 0-1 at 0; 2-3 share the accumulator line the first issue clears: at 4.
    # Vector 0 leaves at 5..8 (write-back 4 + out buffer 1), vector 1 at 9..12; retired 2 later.
    assert (west.issues, west.last_issue, west.first_out, west.last_out, west.period) == \
        (2, 4, 8, 12, 14)
    # A forwarding column waits for each input vector to refill its 4-deep queue: 5 cycles.
    middle = reduction_thread(4, fabric_in=True, out_wavelets=2)
    assert (middle.last_issue, middle.period) == (5, 15)
    # The east end sends FP16: 2 wavelets per 2-value issue.
    east = reduction_thread(4, fabric_in=True, out_wavelets=1)
    assert (east.first_out, east.last_out, east.period) == (6, 11, 13)
    # T_y = 16: the 8-wavelet output buffer paces the west send (2 lines per 9 cycles).
    assert reduction_thread(16, out_wavelets=2).period == 41
    # Without fabric output the thread retires after its last issue; 4 lanes from SRAM.
    store = reduction_thread(16, lanes=4, clear_pairs=False)
    assert (store.issues, store.period) == (4, 4)
    with pytest.raises(ValueError, match="rx_depth and out_depth must hold"):
        PerfParams(rx_depth=3)


def test_sparse_small_t_y_is_bound_by_the_reduction_period():
    # 8 tokens on 2 x 2 (T_y = 4) and almost no weights: every output costs the west column's
    # send of 4 FP32 values (14 cycles, above), however few weights it has.
    m = GemmMapping(tokens=8, features=16, outputs=48, width=2, height=2)
    empty = predict(m, np.zeros((2, 48), dtype=np.int64))
    assert empty.reduction_period == 14
    assert 48 * 14 <= empty.cycles < 48 * 14 + 40
    one = np.zeros((2, 48), dtype=np.int64)
    one[:, ::3] = 1
    assert predict(m, one).cycles < 48 * 14 + 40        # a weight here and there is free


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
    # With no weights at all the reductions remain: the middle column takes in per output
    # 2 x 16 partial sums in 8 vectors, 16 results in 4 vectors (one cycle per vector in
    # which its full queue takes nothing) and the command: 1 + 40 + 20 = 61 cycles.
    empty = predict(m, np.zeros_like(counts))
    assert 24 * 61 <= empty.cycles < 24 * 61 + 100
    assert empty.ramp_bound_steps == 24 * 3


def test_latency_parameters_enter_where_documented():
    m = GemmMapping(tokens=16, features=32, outputs=8, width=1, height=6)
    base = PerfParams()
    est = predict(m, dense(m), base)
    # One column: router latency only enters the fill, (critical row + 1) hops.
    slower = predict(m, dense(m), replace(base, router_latency=base.router_latency + 1))
    assert slower.cycles - est.cycles == est.critical_row + 1
    # T_y = 3 (g = 1): every weight of the chain waits for the pipeline, so one more cycle
    # of it costs one cycle per weight, one before the last store and one in its write-back.
    deeper = predict(m, dense(m), replace(base, pipeline_latency=base.pipeline_latency + 1))
    assert deeper.cycles - est.cycles == 32 * 8 + 2
    with pytest.raises(ValueError, match="PerfParams.retire_latency must be an int >= 0"):
        PerfParams(retire_latency=-1)


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


def test_gpt2_size():
    """The perf model at GPT-2 size (its wall time: ``python bench/model_speed.py``)."""
    m = GemmMapping(tokens=1024, features=768, outputs=3072, width=750, height=994)
    est = predict(m, dense(m))
    assert est.nonzero_weights == 768 * 3072 and est.cycles > 3072
    as_dict = est.as_dict()
    assert as_dict["params"]["router_latency"] == 1 and as_dict["cycles"] == est.cycles


# --- against the RTL ----------------------------------------------------------------------
# Cycles measured on the RTL fabric (gpt_mapping.fabric_run.run_gemm_rtl; each row is
# ``python bench/gemm_fabric.py --fabric WxH --shape T,K,N --sparsity S --seed SEED``, the
# operands of gpt_mapping.demo.make_gemm_operands). tests/test_gpt_rtl.py runs some of them
# live, with the GPT block's own GEMMs.

#: docs/fabric.md's calibration GEMMs: (T, K, N, W, H, sparsity, seed, measured cycles).
CALIBRATED = [
    (64, 512, 64, 4, 4, 0.0, 0, 33840), (64, 512, 64, 4, 4, 0.9, 0, 4505),
    (64, 128, 32, 4, 4, 0.0, 1, 4681), (64, 128, 32, 4, 4, 0.9, 1, 1973),
    (16, 64, 16, 1, 1, 0.0, 1, 4170), (16, 64, 16, 1, 1, 0.8, 1, 936),
    (13, 37, 29, 3, 5, 0.3, 1, 1044), (64, 16, 32, 4, 4, 0.0, 1, 2008),
    (32, 96, 24, 3, 2, 0.5, 1, 2125), (20, 200, 8, 4, 1, 0.0, 1, 2253),
    (8, 64, 16, 4, 2, 0.0, 1, 1070), (4, 3, 2, 1, 1, 0.0, 1, 36),
]

#: The small-T_y corner (seed 1): T_y = T / H in 1, 2, 3, 4, 5, 8, two to 24 features per
#: column, dense, 50 % and 90 % zero weights, on 2 x 2 and 4 x 4: (T, K, N, W, H, sparsity,
#: measured cycles).
SMALL_T_Y = [
    (2, 4, 16, 2, 2, 0.0, 208), (2, 4, 16, 2, 2, 0.5, 174), (2, 4, 16, 2, 2, 0.9, 157),
    (2, 16, 16, 2, 2, 0.0, 493), (2, 16, 16, 2, 2, 0.5, 279), (2, 16, 16, 2, 2, 0.9, 178),
    (2, 48, 12, 2, 2, 0.0, 1103), (2, 48, 12, 2, 2, 0.5, 595), (2, 48, 12, 2, 2, 0.9, 191),
    (4, 4, 16, 2, 2, 0.0, 212), (4, 4, 16, 2, 2, 0.5, 192), (4, 4, 16, 2, 2, 0.9, 191),
    (4, 16, 16, 2, 2, 0.0, 495), (4, 16, 16, 2, 2, 0.5, 280), (4, 16, 16, 2, 2, 0.9, 193),
    (4, 48, 12, 2, 2, 0.0, 1152), (4, 48, 12, 2, 2, 0.5, 558), (4, 48, 12, 2, 2, 0.9, 195),
    (6, 4, 16, 2, 2, 0.0, 244), (6, 4, 16, 2, 2, 0.5, 233), (6, 4, 16, 2, 2, 0.9, 227),
    (6, 16, 16, 2, 2, 0.0, 557), (6, 16, 16, 2, 2, 0.5, 332), (6, 16, 16, 2, 2, 0.9, 232),
    (6, 48, 12, 2, 2, 0.0, 1187), (6, 48, 12, 2, 2, 0.5, 625), (6, 48, 12, 2, 2, 0.9, 224),
    (8, 4, 16, 2, 2, 0.0, 276), (8, 4, 16, 2, 2, 0.5, 270), (8, 4, 16, 2, 2, 0.9, 260),
    (8, 16, 16, 2, 2, 0.0, 565), (8, 16, 16, 2, 2, 0.5, 317), (8, 16, 16, 2, 2, 0.9, 268),
    (8, 48, 12, 2, 2, 0.0, 1185), (8, 48, 12, 2, 2, 0.5, 641), (8, 48, 12, 2, 2, 0.9, 230),
    (10, 4, 16, 2, 2, 0.0, 323), (10, 4, 16, 2, 2, 0.5, 313), (10, 4, 16, 2, 2, 0.9, 312),
    (10, 16, 16, 2, 2, 0.0, 516), (10, 16, 16, 2, 2, 0.5, 345), (10, 16, 16, 2, 2, 0.9, 314),
    (10, 48, 12, 2, 2, 0.0, 1090), (10, 48, 12, 2, 2, 0.5, 583), (10, 48, 12, 2, 2, 0.9, 255),
    (16, 4, 16, 2, 2, 0.0, 453), (16, 4, 16, 2, 2, 0.5, 442), (16, 4, 16, 2, 2, 0.9, 428),
    (16, 16, 16, 2, 2, 0.0, 557), (16, 16, 16, 2, 2, 0.5, 488), (16, 16, 16, 2, 2, 0.9, 441),
    (16, 48, 12, 2, 2, 0.0, 1110), (16, 48, 12, 2, 2, 0.5, 597), (16, 48, 12, 2, 2, 0.9, 357),
    (4, 8, 16, 4, 4, 0.0, 231), (4, 8, 16, 4, 4, 0.5, 199), (4, 8, 16, 4, 4, 0.9, 186),
    (4, 32, 16, 4, 4, 0.0, 529), (4, 32, 16, 4, 4, 0.5, 328), (4, 32, 16, 4, 4, 0.9, 199),
    (4, 96, 12, 4, 4, 0.0, 1163), (4, 96, 12, 4, 4, 0.5, 565), (4, 96, 12, 4, 4, 0.9, 197),
    (8, 8, 16, 4, 4, 0.0, 240), (8, 8, 16, 4, 4, 0.5, 227), (8, 8, 16, 4, 4, 0.9, 224),
    (8, 32, 16, 4, 4, 0.0, 540), (8, 32, 16, 4, 4, 0.5, 331), (8, 32, 16, 4, 4, 0.9, 228),
    (8, 96, 12, 4, 4, 0.0, 1146), (8, 96, 12, 4, 4, 0.5, 580), (8, 96, 12, 4, 4, 0.9, 212),
    (12, 8, 16, 4, 4, 0.0, 276), (12, 8, 16, 4, 4, 0.5, 268), (12, 8, 16, 4, 4, 0.9, 266),
    (12, 32, 16, 4, 4, 0.0, 580), (12, 32, 16, 4, 4, 0.5, 399), (12, 32, 16, 4, 4, 0.9, 270),
    (12, 96, 12, 4, 4, 0.0, 1205), (12, 96, 12, 4, 4, 0.5, 591), (12, 96, 12, 4, 4, 0.9, 241),
    (16, 8, 16, 4, 4, 0.0, 346), (16, 8, 16, 4, 4, 0.5, 332), (16, 8, 16, 4, 4, 0.9, 342),
    (16, 32, 16, 4, 4, 0.0, 616), (16, 32, 16, 4, 4, 0.5, 381), (16, 32, 16, 4, 4, 0.9, 335),
    (16, 96, 12, 4, 4, 0.0, 1206), (16, 96, 12, 4, 4, 0.5, 656), (16, 96, 12, 4, 4, 0.9, 281),
    (20, 8, 16, 4, 4, 0.0, 390), (20, 8, 16, 4, 4, 0.5, 382), (20, 8, 16, 4, 4, 0.9, 375),
    (20, 32, 16, 4, 4, 0.0, 580), (20, 32, 16, 4, 4, 0.5, 421), (20, 32, 16, 4, 4, 0.9, 378),
    (20, 96, 12, 4, 4, 0.0, 1124), (20, 96, 12, 4, 4, 0.5, 601), (20, 96, 12, 4, 4, 0.9, 308),
    (32, 8, 16, 4, 4, 0.0, 573), (32, 8, 16, 4, 4, 0.5, 555), (32, 8, 16, 4, 4, 0.9, 552),
    (32, 32, 16, 4, 4, 0.0, 644), (32, 32, 16, 4, 4, 0.5, 599), (32, 32, 16, 4, 4, 0.9, 553),
    (32, 96, 12, 4, 4, 0.0, 1173), (32, 96, 12, 4, 4, 0.5, 664), (32, 96, 12, 4, 4, 0.9, 453),
]


def _error(t, k, n, w, h, sparsity, seed, measured):
    x16, w16 = make_gemm_operands(t, k, n, sparsity, seed)
    m = map_gemm(x16, w16, w, h)
    return (predict(m, nonzero_counts(m, w16)).cycles - measured) / measured


@pytest.mark.parametrize("case", CALIBRATED, ids=lambda c: "{}x{}x{}@{}x{}/s{}".format(*c))
def test_calibrated_gemms_within_10_percent_of_the_rtl(case):
    error = _error(*case)
    assert abs(error) <= 0.10, f"{case}: model {100 * error:+.1f} % off the RTL"


def test_small_t_y_corner_against_the_rtl():
    """Latency-bound GEMMs (under one weight per column and output, 1 to 8 tokens per PE):
    within 10 % on average and 15 % each; docs/gemm.md has the whole table."""
    errors = np.array([_error(*case[:6], 1, case[6]) for case in SMALL_T_Y])
    worst = SMALL_T_Y[int(np.argmax(np.abs(errors)))]
    assert np.abs(errors).max() <= 0.15, f"{worst}: {100 * np.abs(errors).max():.1f} % off"
    assert np.abs(errors).mean() <= 0.07
    assert (np.abs(errors) <= 0.10).mean() >= 0.85


def _postfreeze():
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "bench" / "perf_model_sweep.py"
    spec = importlib.util.spec_from_file_location("bench_perf_model_sweep", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: A live subset of the post-freeze set (docs/gemm.md section 11): (index in the set,
#: cycles the RTL measured, cycles the frozen model predicted) when the set was run. A change
#: of the RTL's timing or of the model shows here.
POSTFREEZE_LIVE = [(0, 281, 287), (9, 443, 408), (11, 633, 627), (19, 151, 149)]


def test_the_post_freeze_set_is_the_frozen_models():
    sweep = _postfreeze()
    assert sweep.model_sha256() == sweep.FROZEN_MODEL_SHA256, \
        "gpt_mapping/perf_model.py changed since the freeze: re-run the post-freeze set " \
        "(nox -s perf_model_postfreeze), record it in docs/gemm.md section 11 and freeze again"
    cases = sweep.postfreeze_cases()
    assert len(cases) == 64 and len({c.name for c in cases}) == 64
    assert {c.groups for c in cases} >= {1, 2, 4, 8} and {c.interleave for c in cases} == {1, 2, 4}


@pytest.mark.slow
@pytest.mark.parametrize("index, measured, predicted", POSTFREEZE_LIVE,
                         ids=[f"postfreeze{c[0]}" for c in POSTFREEZE_LIVE])
def test_post_freeze_subset_on_the_rtl(index, measured, predicted):
    sweep = _postfreeze()
    record = sweep.run_case(sweep.postfreeze_cases()[index])
    assert record["ok"], record["error"]
    assert record["predicted_cycles"] == predicted
    assert record["cycles"] == measured, f"the RTL's timing changed: {record['cycles']} cycles"
