"""Row reductions and LayerNorm: the golden model of golden/fabric_ops.py against plain
float32 / float64 arithmetic and torch, the PE programs of gpt_mapping/rowops.py as text,
the cycle model's structure, and the errors of bad input (no simulator here; the RTL runs
are in tests/test_rowops_rtl.py)."""

import numpy as np
import pytest
import torch

from golden import fabric_ops as G, fp
from gpt_mapping import rowops
from gpt_mapping.layout import MappingError, PEConfig
from gpt_mapping.streams import ReductionCommand, BlockCommand
from rtl.wavelet import unpack


def f32(bits):
    return np.asarray(bits, dtype=np.uint32).view(np.float32)


def test_row_sum_is_the_documented_order():
    """Each column's features in order, then the columns' partials west to east: a float32
    loop in that order gives the same bits, and another order (one sequential sum over
    all features) gives different bits on this input."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((7, 23)) * np.exp2(rng.integers(-8, 8, (7, 23)))).astype(
        np.float16)
    bounds = [0, 5, 11, 17, 23]
    got = f32(G.row_reduce(fp.f16_to_f32(x.view(np.uint16)), bounds, "sum"))
    want = np.zeros(7, dtype=np.float32)
    for t in range(7):
        parts = []
        for c in range(4):
            p = np.float32(x[t, bounds[c]])
            for k in range(bounds[c] + 1, bounds[c + 1]):
                p = np.float32(p + np.float32(x[t, k]))
            parts.append(p)
        s = parts[0]
        for p in parts[1:]:
            s = np.float32(p + s)
        want[t] = s
    assert (got.view(np.uint32) == want.view(np.uint32)).all()
    seq = np.zeros(7, dtype=np.float32)
    for k in range(23):
        seq = (seq + x[:, k].astype(np.float32)).astype(np.float32)
    assert (seq.view(np.uint32) != want.view(np.uint32)).any()


def test_row_max_is_the_maximum():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((9, 12)).astype(np.float16)
    got = f32(G.row_reduce(fp.f16_to_f32(x.view(np.uint16)), [0, 3, 6, 12], "max"))
    assert (got == x.astype(np.float32).max(axis=1)).all()


def test_row_reduce_rejects_bad_splits():
    v = np.zeros((2, 4), dtype=np.uint32)
    with pytest.raises(ValueError, match="column 1 .* holds no feature"):
        G.row_reduce(v, [0, 2, 2, 4])
    with pytest.raises(ValueError, match="do not split 4 features"):
        G.row_reduce(v, [0, 2, 3])
    with pytest.raises(ValueError, match="no row reduction 'min'"):
        G.row_reduce(v, [0, 4], "min")


@pytest.mark.parametrize("bounds", [[0, 64], [0, 16, 32, 48, 64], [0, 21, 42, 64]])
def test_layernorm_golden_is_close_to_torch(bounds):
    """The fabric's LayerNorm sequence (FP16 scale and shift, the FP16 rsqrt kernel) within
    the block's tolerance of torch's float32 LayerNorm on the same FP16 values."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((32, 64)) * 2 + 0.5).astype(np.float16)
    g = (1 + 0.2 * rng.standard_normal(64)).astype(np.float16)
    b = (0.2 * rng.standard_normal(64)).astype(np.float16)
    y = G.layernorm(x.view(np.uint16), g.view(np.uint16), b.view(np.uint16), bounds)
    y = y.view(np.float16).astype(np.float32)
    ref = torch.nn.functional.layer_norm(
        torch.tensor(x.astype(np.float32)), (64,), torch.tensor(g.astype(np.float32)),
        torch.tensor(b.astype(np.float32)), eps=G.LN_EPS).numpy()
    assert np.abs(y - ref).max() <= 4e-3 * np.abs(ref).max()


def test_layernorm_stages_are_what_they_say():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 16)).astype(np.float16)
    st = {}
    ones = np.full(16, 0x3C00, dtype=np.uint16)
    G.layernorm(x.view(np.uint16), ones, np.zeros(16, np.uint16), [0, 8, 16], stages=st)
    mean = x.astype(np.float64).mean(axis=1)
    var = x.astype(np.float64).var(axis=1)
    assert np.allclose(f32(st["mean"]), mean, atol=1e-6)
    assert np.allclose(f32(st["var"]), var, rtol=1e-5)
    r = st["rstd16"].view(np.float16).astype(np.float64)
    assert np.allclose(r, 1 / np.sqrt(var + G.LN_EPS), rtol=1e-3)


def test_layernorm_rejects_bad_parameters():
    x = np.zeros((2, 4), dtype=np.uint16)
    with pytest.raises(ValueError, match="gamma has shape"):
        G.layernorm(x, np.zeros(3, np.uint16), np.zeros(4, np.uint16), [0, 4])


# --- the programs -----------------------------------------------------------------------------

def test_programs_by_position():
    """West sends its partial and receives the result; a middle PE combines; the east end
    keeps the result and returns it; a single column does neither."""
    m = rowops.row_mapping(8, 32, 4, 2)
    text = {x: rowops.row_reduce_program(m, x, 0, "max")[1] for x in range(4)}
    assert "send the partial east" in text[0] and "from the east" in text[0]
    assert "t.fmax" in text[1] and "from the east" in text[1]
    assert "returned west" in text[3] and "from the east" not in text[3]
    single = rowops.row_reduce_program(rowops.row_mapping(8, 32, 1, 2), 0, 0)[1]
    assert "one column" in single and "red_out" not in single
    ln = rowops.layernorm_program(m, 1, 1)[1]
    for what in ("mean = S * (1 / C)", "d = x - mean", "q = d * d", "var = S2 * (1 / C)",
                 "v = round16(var + eps)", "rsqrt 0:", "z = d * r"):
        assert what in ln, what


def test_local_pass_unrolls_and_loops():
    """Few features: straight launches; many: a loop of UNROLL launches (code stays small)."""
    few = rowops.row_reduce_program(rowops.row_mapping(8, 4 * 6, 4, 2), 0, 0)[1]
    assert "red_loop" not in few and few.count("acc = acc add") == 5
    many = rowops.row_reduce_program(rowops.row_mapping(8, 4 * 40, 4, 2), 0, 0)[1]
    assert "red_loop" in many and many.count("acc = acc add") == rowops.UNROLL + 39 % 8


def test_rows_without_tokens_get_no_program():
    m = rowops.row_mapping(3, 24, 3, 4)
    assert list(m.tokens_per_row) == [0, 1, 1, 1]
    assert rowops.layernorm_program(m, 0, 0) == ([], "")
    assert rowops.row_reduce_program(m, 2, 0) == ([], "")


def test_streams_carry_the_command_then_scale_then_shift():
    m = rowops.row_mapping(8, 10, 2, 2)
    g = np.arange(10).astype(np.float16)
    b = -np.arange(10).astype(np.float16)
    s = rowops.row_streams(m, BlockCommand.LAYERNORM, g, b)
    assert [len(c) for c in s] == [11, 11]
    f = [unpack(int(w)) for w in s[1]]
    assert (f[0].ctrl, f[0].index) == (1, BlockCommand.LAYERNORM)
    assert [(w.ctrl, w.index) for w in f[1:6]] == [(1, BlockCommand.LN_SCALE)] * 5
    assert [w.data for w in f[1:6]] == [int(v) for v in g[5:].view(np.uint16)]
    assert [w.data for w in f[6:]] == [int(v) for v in b[5:].view(np.uint16)]
    only = rowops.row_streams(m, BlockCommand.ROW_REDUCE)
    assert [len(c) for c in only] == [1, 1]


def test_gemm_commands_and_weights_are_refused_by_the_row_programs():
    """A GEMM's weight or command arriving at a row-operation PE starts a task that the PE
    refuses (BAD_OPERAND), never a silent wrong computation."""
    m = rowops.row_mapping(8, 16, 2, 2)
    config, _ = rowops.row_reduce_program(m, 0, 0)
    from rtl.pe import regs as R
    bad_entry = R.entry_addr(rowops._ENTRY["bad"])
    tasks = {addr: words[0] for addr, words in config}
    for task in (rowops.DATA_TASK, rowops.CTRL_BASE + ReductionCommand.PARTIAL_SUM,
                 rowops.CTRL_BASE + ReductionCommand.FINAL_SUM):
        assert tasks[R.task_addr(task)] == R.encode_task(rowops._ENTRY["bad"])
    assert bad_entry in {addr for addr, _ in config}


def test_bad_layouts_are_refused_before_anything_runs():
    with pytest.raises(MappingError, match="column 3 without a feature"):
        rowops.row_mapping(8, 3, 4, 2)
    small = PEConfig(sram_bank_words=100)          # 3,200 bytes: the GEMM fits, LN does not
    m = rowops.row_mapping(16, 16, 2, 1, pe=small)
    with pytest.raises(MappingError, match=r"tile \(0, 0\): the row operation needs"):
        rowops.layernorm_program(m, 0, 0)
    m = rowops.row_mapping(8, 16, 2, 2)
    with pytest.raises(MappingError, match="X has shape"):
        rowops.run_row_reduce_rtl(m, np.zeros((8, 15), np.float16))
    with pytest.raises(MappingError, match=r"gamma must be float16 \[16\]"):
        rowops.run_layernorm_rtl(m, np.zeros((8, 16), np.float16),
                                 np.zeros(16, np.float32), np.zeros(16, np.float16))
    with pytest.raises(ValueError, match="no row reduction 'mean'"):
        rowops.row_reduce_program(m, 0, 0, "mean")


def test_cycle_model_terms():
    """The model grows with features (FMA latency per feature), tokens and hops."""
    base = rowops.predict_row_cycles(rowops.row_mapping(32, 64, 4, 4), "reduce")
    assert rowops.predict_row_cycles(rowops.row_mapping(32, 128, 4, 4), "reduce") == \
        base + 16 * rowops.FMA_LATENCY
    assert rowops.predict_row_cycles(rowops.row_mapping(64, 64, 4, 4), "reduce") > base
    assert rowops.predict_row_cycles(rowops.row_mapping(32, 64, 4, 4), "layernorm") > base
    with pytest.raises(ValueError, match="no row operation"):
        rowops.predict_row_cycles(rowops.row_mapping(32, 64, 4, 4), "softmax")
