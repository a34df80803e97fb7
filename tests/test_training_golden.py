"""The golden model of a linear layer's backward pass and of the loss (golden/training.py):
against independent scalar loops in the documented order, against torch autograd within
the FP32/FP16 bounds, and dX = dY W^T on the RTL fabric as a weight-streaming GEMM."""

import numpy as np
import pytest
import torch

from golden import training as TR
from golden.gemm import compare_to_torch, fabric_gemm_reference
from gpt_mapping.demo import make_gemm_operands


def _case(t=12, k=10, n=7, sparsity=0.5, seed=3):
    x16, w16 = make_gemm_operands(t, k, n, sparsity, seed)
    dy16 = (np.random.default_rng(seed + 1).standard_normal((t, n)) * 0.1).astype(np.float16)
    return x16, w16, dy16


def _weight_gradient_loop(x16, dy16, height):
    """dW element by element, scalar FP32: rows' partials over their tokens ascending, then
    the column northward from the last row with tokens."""
    t, k = x16.shape
    n = dy16.shape[1]
    rows = [range(y * t // height, (y + 1) * t // height) for y in range(height)]
    rows = [r for r in rows if len(r)]
    out = np.zeros((k, n), dtype=np.float32)
    for kk in range(k):
        for nn in range(n):
            parts = []
            for r in rows:
                acc = np.float32(0.0)
                for tt in r:
                    acc = np.float32(acc + np.float32(x16[tt, kk]) * np.float32(dy16[tt, nn]))
                parts.append(acc)
            s = parts[-1]
            for p in reversed(parts[:-1]):
                s = np.float32(p + s)
            out[kk, nn] = s
    return out


@pytest.mark.parametrize("height", [1, 2, 3, 5, 16])
def test_weight_and_bias_gradients_in_the_documented_order(height):
    x16, _, dy16 = _case()
    dw = TR.weight_gradient(x16, dy16, height)
    assert dw.dtype == np.float32
    assert np.array_equal(dw.view(np.uint32), _weight_gradient_loop(x16, dy16, height)
                          .view(np.uint32))
    db = TR.bias_gradient(dy16, height)
    ones = np.ones((x16.shape[0], 1), np.float16)
    assert np.array_equal(db, _weight_gradient_loop(ones, dy16, height)[0])
    # against torch autograd (float64): each value a sum of T exact products, at most T - 1
    # FP32 roundings of partial sums bounded by sum |x dy|
    x = torch.tensor(x16.astype(np.float64), requires_grad=True)
    w = torch.tensor(np.zeros((10, 7)), requires_grad=True)
    b = torch.tensor(np.zeros(7), requires_grad=True)
    (x @ w + b).backward(torch.tensor(dy16.astype(np.float64)))
    bound = (x16.shape[0] * 2.0 ** -24) * (np.abs(x16.astype(np.float64)).T
                                           @ np.abs(dy16.astype(np.float64)))
    assert (np.abs(dw - w.grad.numpy()) <= bound).all()
    assert (np.abs(db - b.grad.numpy()) <= bound.max()).all()


def test_the_order_matters():
    """The reduction order is part of the model: a different split of the tokens over the
    rows gives other bits somewhere (so the golden model pins the order)."""
    x16, _, dy16 = _case(t=64, k=16, n=16)
    assert not np.array_equal(TR.weight_gradient(x16, dy16, 1),
                              TR.weight_gradient(x16, dy16, 8))


def test_dx_is_the_forward_gemm_of_w_transposed():
    x16, w16, dy16 = _case()
    for width, height in ((1, 1), (2, 3), (5, 2)):
        dx = TR.linear_backward_dx(dy16, w16, width, height)
        assert np.array_equal(dx.view(np.uint16), fabric_gemm_reference(
            dy16, np.ascontiguousarray(w16.T), width, height).view(np.uint16))
        assert compare_to_torch(dx, dy16, np.ascontiguousarray(w16.T), width).ok
    with pytest.raises(ValueError, match="dY has 6 outputs, W 7"):
        TR.linear_backward_dx(dy16[:, :6], w16, 2, 2)
    with pytest.raises(TypeError, match="dY must be a 2-D float16 array, not float32"):
        TR.linear_backward_dx(dy16.astype(np.float32), w16, 2, 2)


def test_cross_entropy_against_torch():
    rng = np.random.default_rng(5)
    logits16 = (rng.standard_normal((24, 50)) * 3).astype(np.float16)
    targets = rng.integers(0, 50, 24)
    ce = TR.cross_entropy(logits16, targets)
    z = torch.tensor(logits16.astype(np.float64), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(z, torch.tensor(targets))
    loss.backward()
    assert ce.loss == pytest.approx(loss.item(), rel=2 ** -23)
    want16 = z.grad.numpy().astype(np.float16)             # one rounding of the float64 grad
    assert ce.dlogits16.dtype == np.float16
    assert np.array_equal(ce.dlogits16, want16)
    with pytest.raises(ValueError, match="target 50 at row 3 is outside the vocabulary 0..49"):
        TR.cross_entropy(logits16, np.where(np.arange(24) == 3, 50, targets))


@pytest.mark.rtl
def test_dx_on_the_rtl_fabric():
    """dX = dY W^T on the RTL: the forward GEMM's machinery with W^T's columns as the
    weight streams (for each input feature its non-zero weights, outputs ascending)."""
    from gpt_mapping.fabric_run import run_gemm_rtl
    from gpt_mapping.layout import GemmMapping
    x16, w16, dy16 = _case(t=16, k=24, n=32, sparsity=0.6)
    m = GemmMapping(tokens=16, features=32, outputs=24, width=2, height=2)
    dx, counters = run_gemm_rtl(m, dy16, np.ascontiguousarray(w16.T))
    assert np.array_equal(dx.view(np.uint16),
                          TR.linear_backward_dx(dy16, w16, 2, 2).view(np.uint16))
    assert counters["fmac_lane_ops"] == int((w16 != 0).sum()) * 16


@pytest.mark.rtl
@pytest.mark.parametrize("height, width, length", [(4, 4, 48), (3, 2, 5), (1, 3, 4)])
def test_north_reduction_on_the_rtl_delivers_memoryx_the_golden_sums(height, width, length):
    """The dW / db reduction northward on the RTL (gpt_mapping/backward.py): every column's
    FP32 sums arrive at the north edge, two wavelets per value, bit for bit the golden
    order (-0 stays -0 only where every row's is -0; inf and NaN pass through)."""
    from gpt_mapping.backward import run_reduce_north_rtl
    p = np.random.default_rng(height * 10 + width).standard_normal(
        (height, width, length)).astype(np.float32)
    p[:, 0, 0] = -0.0                       # all -0: the sum is -0
    p[0, -1, -1] = np.float32("inf")
    sums, counters = run_reduce_north_rtl(p)
    want = np.stack([TR.reduce_north([p[y, x] for y in range(height)]) for x in range(width)])
    assert np.array_equal(sums.view(np.uint32), want.view(np.uint32))
    assert np.signbit(sums[0, 0]) and np.isinf(sums[-1, -1])
    assert counters["north_count"] == [2 * length] * width     # every wavelet out counted


def test_north_words_are_checked():
    from gpt_mapping.backward import GRAD_COLOR, decode_north
    from rtl.wavelet import pack_array
    words = pack_array(data=np.array([0x0000, 0x3F80]), color=GRAD_COLOR)
    assert decode_north(words, 1)[0] == np.float32(1.0)
    with pytest.raises(ValueError, match="column 2: 2 wavelets off the north edge, expected 4"):
        decode_north(words, 2, column=2)
    with pytest.raises(ValueError, match="north-edge wavelet 1 has colour 0"):
        decode_north(pack_array(data=np.array([0, 0]), color=np.array([GRAD_COLOR, 0])), 1)


@pytest.mark.rtl
@pytest.mark.parametrize("width, height, t, k, n", [(2, 2, 8, 16, 8), (4, 4, 32, 64, 64),
                                                     (3, 2, 10, 7, 6), (1, 3, 5, 4, 3)])
def test_weight_gradient_on_the_rtl_is_the_golden_dw(width, height, t, k, n):
    """dW = X^T dY on the RTL (gpt_mapping/backward.py): dY copied to every column, each
    row's partial by FMACs with X[t, k] as the scalar, the column's sum north to MemoryX:
    bit for bit golden/training.py's order, K split unevenly (3 x 2: 7 features), a column
    of its own (1 x 3), every wavelet off the north edge counted."""
    from gpt_mapping.backward import run_weight_gradient_rtl
    from gpt_mapping.layout import GemmMapping
    x16, _ = make_gemm_operands(t, k, n, 0.0, 1)
    x16[0, 0] = np.float16("-0")
    dy16 = (np.random.default_rng(2).standard_normal((t, n)) * 0.1).astype(np.float16)
    dw, counters = run_weight_gradient_rtl(x16, dy16, width, height)
    want = TR.weight_gradient(x16, dy16, height)
    assert np.array_equal(dw.view(np.uint32), want.view(np.uint32))
    m = GemmMapping(tokens=t, features=k, outputs=n, width=width, height=height)
    assert counters["north_count"] == [2 * int(kx) * n for kx in m.features_per_column]


def test_weight_gradient_refuses_what_it_cannot_run():
    from gpt_mapping.backward import run_weight_gradient_rtl
    from gpt_mapping.layout import MappingError
    x16 = np.ones((3, 8), np.float16)
    with pytest.raises(MappingError, match="3 tokens on 4 rows: row 3 would have none"):
        run_weight_gradient_rtl(x16, np.ones((3, 4), np.float16), 2, 4)
    with pytest.raises(MappingError, match="dY cannot be copied to every column: K = 6"):
        run_weight_gradient_rtl(np.ones((8, 8), np.float16), np.ones((8, 6), np.float16), 4, 2)
    with pytest.raises(MappingError, match="X has 8 tokens, dY 7"):
        run_weight_gradient_rtl(np.ones((8, 8), np.float16), np.ones((7, 8), np.float16), 2, 2)


@pytest.mark.rtl
def test_linear_backward_on_the_rtl_against_golden_and_torch():
    """One linear layer's backward on the RTL (4 x 4, T 32, K 64, N 48, W 50 % pruned): dX,
    dW and db bit for bit golden/training.py, and within the documented bounds of torch
    autograd on the same FP16 inputs (dX: golden.gemm's GEMM bound; dW, db:
    T 2^-24 sum |x dy|)."""
    from gpt_mapping.backward import linear_backward_rtl
    x16, w16 = make_gemm_operands(32, 64, 48, 0.5, 4)
    dy16 = (np.random.default_rng(9).standard_normal((32, 48)) * 0.05).astype(np.float16)
    dx16, dw, db, cycles = linear_backward_rtl(x16, w16, dy16, 4, 4)
    assert np.array_equal(dx16.view(np.uint16),
                          TR.linear_backward_dx(dy16, w16, 4, 4).view(np.uint16))
    assert np.array_equal(dw.view(np.uint32), TR.weight_gradient(x16, dy16, 4).view(np.uint32))
    assert np.array_equal(db.view(np.uint32), TR.bias_gradient(dy16, 4).view(np.uint32))
    x = torch.tensor(x16.astype(np.float64), requires_grad=True)
    w = torch.tensor(w16.astype(np.float64), requires_grad=True)
    b = torch.zeros(48, dtype=torch.float64, requires_grad=True)
    (x @ w + b).backward(torch.tensor(dy16.astype(np.float64)))
    assert compare_to_torch(dx16, dy16, np.ascontiguousarray(w16.T), 4).ok
    ax, ady = np.abs(x16.astype(np.float64)), np.abs(dy16.astype(np.float64))
    assert (np.abs(dw - w.grad.numpy()) <= 32 * 2.0 ** -24 * (ax.T @ ady)).all()
    assert (np.abs(db - b.grad.numpy()) <= 32 * 2.0 ** -24 * ady.sum(axis=0)).all()
    assert min(cycles.values()) > 0


@pytest.mark.rtl
@pytest.mark.parametrize("width, height, t, n", [(3, 2, 10, 7), (2, 3, 3, 2)])
def test_bias_gradient_on_the_rtl(width, height, t, n):
    """db on the RTL: each PE sums its own outputs over its row's tokens (FMACs with 1.0 as
    the scalar), the columns reduce northward; N split unevenly (7 on 3 columns)."""
    from gpt_mapping.backward import run_bias_gradient_rtl
    dy16 = (np.random.default_rng(t).standard_normal((t, n))).astype(np.float16)
    db, counters = run_bias_gradient_rtl(dy16, width, height)
    assert np.array_equal(db.view(np.uint32), TR.bias_gradient(dy16, height).view(np.uint32))
    assert sum(counters["north_count"]) == 2 * n
