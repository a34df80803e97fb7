"""Interleaved outputs (SPEC 7's first freedom; docs/gemm.md section 9): the weight streams
of I consecutive outputs alternate weight by weight, the index carrying ``k_local * I +
slot`` so that X takes the feature and the accumulators the slot. The same bits as the
plain layout, fewer cycles where the FMA latency bound the chain, and the performance model
on the RTL's figures."""

import numpy as np
import pytest

from golden.gemm import fabric_gemm
from gpt_mapping.demo import make_gemm_operands
from gpt_mapping.layout import GemmMapping, MappingError
from gpt_mapping.perf_model import accumulator_buffers, predict_from_weights
from gpt_mapping.streams import column_stream
from rtl.pe import regs as R
from rtl.wavelet import unpack_array


def _operands(t, k, n, sparsity, seed=1):
    return make_gemm_operands(t, k, n, sparsity, seed)


def test_stream_alternates_the_group_and_then_sends_its_commands():
    m = GemmMapping(tokens=8, features=4, outputs=3, width=1, height=1, interleave=2)
    w = np.zeros((4, 3), np.float16)
    w[[0, 2, 3], 0] = 1      # output 0: k 0, 2, 3
    w[[1], 1] = 2            # output 1: k 1
    w[[0, 1], 2] = 3         # output 2 (a group of one): k 0, 1
    f = unpack_array(column_stream(m, w, 0))
    got = list(zip(f.ctrl.tolist(), f.index.tolist(), f.data.tolist()))
    one, two, three = (int(np.float16(v).view(np.uint16)) for v in (1, 2, 3))
    assert got == [(0, 0 * 2 + 0, one), (0, 1 * 2 + 1, two), (0, 2 * 2 + 0, one),
                   (0, 3 * 2 + 0, one), (1, 2, 0), (1, 2, 1),
                   (0, 0 * 2 + 0, three), (0, 1 * 2 + 0, three), (1, 2, 2)]


def test_bad_interleave_is_named():
    with pytest.raises(MappingError, match="interleave must be 1, 2, 4 or 8 outputs, not 3"):
        GemmMapping(tokens=8, features=64, outputs=8, width=1, height=1, interleave=3)
    with pytest.raises(MappingError, match=r"column 0 holds K_x = 512 features: interleaving "
                                           r"4 outputs .* leaves 256 features"):
        GemmMapping(tokens=8, features=1024, outputs=8, width=2, height=1, interleave=4)
    with pytest.raises(MappingError, match=r"8 accumulator buffers need 128 FP32 words, .* "
                                           r"use a taller fabric \(>= 2 rows\)"):
        GemmMapping(tokens=16, features=64, outputs=8, width=1, height=1, interleave=8)
    with pytest.raises(ValueError, match="idx_shift / idx_width are for MEM and ACC"):
        R.encode_dsr(R.Kind.FIN, idx_shift=1)
    with pytest.raises(ValueError, match="idx_width must be 0..15, not 16"):
        R.encode_dsr(R.Kind.MEM, idx_width=16)


def test_buffers_come_in_whole_groups():
    for il, t_pad, want in ((2, 8, 4), (4, 8, 8), (4, 16, 4), (8, 8, 8)):
        m = GemmMapping(tokens=t_pad, features=16, outputs=8, width=1, height=1, interleave=il)
        assert accumulator_buffers(m) == want, (il, t_pad)


def test_the_model_sees_the_latency_hidden():
    x, w = _operands(32, 256, 64, 0.0)
    plain = predict_from_weights(GemmMapping(32, 256, 64, 4, 4), w)
    four = predict_from_weights(GemmMapping(32, 256, 64, 4, 4, interleave=4), w)
    assert plain.cycles_per_weight == 4                    # g = 2 vectors, latency 4
    assert four.cycles < 0.6 * plain.cycles


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("shape, fabric, sparsity, interleave", [
    ((32, 256, 64), (4, 4), 0.0, 2),
    ((32, 256, 64), (4, 4), 0.0, 4),
    ((32, 256, 64), (4, 4), 0.9, 2),
    ((32, 64, 64), (4, 4), 0.0, 4),        # row-link bound: the model says so too
    ((12, 48, 10), (2, 2), 0.5, 4),        # 10 outputs: the last group of two
])
def test_interleaved_gemm_on_the_rtl(shape, fabric, sparsity, interleave):
    from gpt_mapping.fabric_run import run_gemm_rtl
    t, k, n = shape
    x, w = _operands(t, k, n, sparsity)
    want = fabric_gemm(x, w, *fabric).view(np.uint16)
    plain = GemmMapping(t, k, n, *fabric)
    m = GemmMapping(t, k, n, *fabric, interleave=interleave)
    y, c = run_gemm_rtl(m, x, w)
    assert np.array_equal(y.view(np.uint16), want), "interleaved GEMM not bit-exact"
    predicted = predict_from_weights(m, w).cycles
    assert c["predicted_cycles"] == predicted
    assert abs(predicted - c["cycles"]) <= 0.10 * c["cycles"], (predicted, c["cycles"])
    if sparsity == 0.0 and k >= 256:
        y1, c1 = run_gemm_rtl(plain, x, w)
        assert np.array_equal(y1.view(np.uint16), want)
        assert c["cycles"] < 0.7 * c1["cycles"], (c["cycles"], c1["cycles"])


def test_gemm_command_takes_interleave_and_gives_the_same_bits(tmp_path):
    from gpt_mapping import gemm_cli
    x, w = _operands(16, 64, 8, 0.3)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    outs = {}
    for il in (1, 4):
        code = gemm_cli.main(["--x", str(tmp_path / "x.npy"), "--w", str(tmp_path / "w.npy"),
                              "--fabric", "2x2", "--out", str(tmp_path / f"y{il}.npy"),
                              "--report", str(tmp_path / f"r{il}.json"), "--backend", "golden",
                              "--interleave", str(il), "--no-progress"])
        assert code == 0
        outs[il] = np.load(tmp_path / f"y{il}.npy")
    import json
    assert json.loads((tmp_path / "r4.json").read_text())["mapping"]["interleave"] == 4
    assert "interleave" not in json.loads((tmp_path / "r1.json").read_text())["mapping"]
    assert np.array_equal(outs[1].view(np.uint16), outs[4].view(np.uint16))
    assert gemm_cli.main(["--x", str(tmp_path / "x.npy"), "--w", str(tmp_path / "w.npy"),
                          "--fabric", "2x2", "--out", str(tmp_path / "y.npy"),
                          "--report", str(tmp_path / "r.json"), "--backend", "golden",
                          "--interleave", "3", "--no-progress"]) == 2


def test_the_mapper_picks_the_interleave_the_model_predicts_fastest():
    from gpt_mapping.perf_model import choose_interleave
    _, w = _operands(32, 256, 64, 0.0)
    assert choose_interleave(GemmMapping(32, 256, 64, 4, 4), w).interleave == 4
    _, w = _operands(64, 512, 64, 0.0)                  # T_pad 16: no latency to hide
    assert choose_interleave(GemmMapping(64, 512, 64, 4, 4), w).interleave == 1
    # K_x = 512 on one column: 4 and more would not fit the index; 2 is the most it takes.
    _, w = _operands(8, 512, 4, 0.0)
    assert choose_interleave(GemmMapping(8, 512, 4, 1, 1), w, candidates=(4, 2)).interleave == 2
