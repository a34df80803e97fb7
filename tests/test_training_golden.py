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
