"""Golden model of the backward pass of a linear layer and of the loss, bit for bit in a
fixed order (SPEC section 11; docs/training.md).

For ``Y = X W`` on a ``width`` x ``height`` fabric (tokens split over the rows, as the
forward GEMM: rows ``y`` hold tokens ``[floor(y T / H), floor((y + 1) T / H))``):

* ``dX = dY W^T`` is the weight-streaming GEMM of the forward pass with ``W^T`` as its
  weights (W streamed again, transposed: for each input feature k the non-zero ``W[k, n]``
  in ascending n): :func:`golden.gemm.fabric_gemm` of ``dY`` and ``W^T``, FP16 out. A weight
  the forward pass never streamed (a zero) is not streamed back either.
* ``dW = X^T dY`` reduces over the tokens, which lie along y: every PE row computes its
  partial ``P_y[k, n]`` over its tokens in ascending order from +0, one FP32 rounding per
  token (``acc = round32(acc + f32(X[t, k]) f32(dY[t, n]))``: the FP16 product is exact in
  FP32, so this is the PE's fused FMAC); the column then reduces northward, from the last
  row with tokens to row 0: ``s = P_last; s = round32(P_y + s)`` for y descending; the north
  edge delivers ``s`` as FP32 (two wavelets per value). ``dW`` is computed for every
  ``(k, n)``, pruned weights included (MemoryX decides what to do with them).
* the bias gradient ``db[n]`` is the same reduction with ``X = 1``.

The loss is the mean cross-entropy of FP16 logits over the targets, computed on the host in
float64 and rounded once to FP32 (loss) and, for its gradient ``(softmax - onehot) / R``
over the R rows, once to FP16 (the ``dY`` of the last GEMM). Host arithmetic: the report
marks it ``host``.
"""

import numpy as np

from golden.gemm import fabric_gemm

__all__ = ["token_bounds", "reduce_north", "linear_backward_dx", "weight_gradient",
           "bias_gradient",
           "cross_entropy", "CrossEntropy"]


def token_bounds(tokens, height):
    """Row boundaries of the tokens: row y holds ``[b[y], b[y + 1])`` (SPEC 7's split)."""
    return (np.arange(height + 1, dtype=np.int64) * tokens) // height


def _check(name, a, dtype, ndim):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or a.ndim != ndim:
        got = (f"{a.dtype} {list(a.shape)}" if isinstance(a, np.ndarray)
               else type(a).__name__)
        raise TypeError(f"{name} must be a {ndim}-D {np.dtype(dtype).name} array, not {got}")


def reduce_north(partials):
    """The column's northward reduction of the rows' FP32 partials (a sequence, row 0
    first): ``s = P_last``, then ``s = round32(P_y + s)`` for y descending."""
    with np.errstate(all="ignore"):
        s = np.asarray(partials[-1], dtype=np.float32)
        for p in reversed(partials[:-1]):
            s = np.asarray(p, dtype=np.float32) + s
    return s


def linear_backward_dx(dy16, w16, width, height, groups=1):
    """``dX = dY W^T`` (float16 [T, K]) as the fabric computes it."""
    _check("dY", dy16, np.float16, 2)
    _check("W", w16, np.float16, 2)
    if dy16.shape[1] != w16.shape[1]:
        raise ValueError(f"dY has {dy16.shape[1]} outputs, W {w16.shape[1]}")
    return fabric_gemm(dy16, np.ascontiguousarray(w16.T), width, height, groups=groups)


def weight_gradient(x16, dy16, height):
    """``dW = X^T dY`` (float32 [K, N]) in the fixed order of the module docstring: per row
    of PEs over its tokens ascending, then northward along the columns."""
    _check("X", x16, np.float16, 2)
    _check("dY", dy16, np.float16, 2)
    if x16.shape[0] != dy16.shape[0]:
        raise ValueError(f"X has {x16.shape[0]} tokens, dY {dy16.shape[0]}")
    x = x16.astype(np.float32)
    dy = dy16.astype(np.float32)
    b = token_bounds(x.shape[0], height)
    partials = []
    with np.errstate(all="ignore"):
        for y in range(height):
            if b[y + 1] == b[y]:
                continue
            acc = np.zeros((x.shape[1], dy.shape[1]), dtype=np.float32)
            for t in range(b[y], b[y + 1]):
                # one FP32 rounding per token: the product of two FP16 values is exact
                acc = acc + np.multiply.outer(x[t], dy[t])
            partials.append(acc)
    return reduce_north(partials)


def bias_gradient(dy16, height):
    """``db = sum_t dY[t]`` (float32 [N]) in the order of :func:`weight_gradient`."""
    ones = np.ones((dy16.shape[0], 1), dtype=np.float16)
    return weight_gradient(ones, dy16, height)[0]


class CrossEntropy:
    """The loss (a Python float, the FP32 value) and its gradient ``dlogits`` (float16
    [R, V]) of :func:`cross_entropy`."""

    def __init__(self, loss, dlogits16):
        self.loss = loss
        self.dlogits16 = dlogits16


def cross_entropy(logits16, targets, vocab=None):
    """Mean cross-entropy of FP16 ``logits16`` [R, V] against integer ``targets`` [R];
    raises ``ValueError`` naming the first target outside ``0 .. V - 1``."""
    _check("logits", logits16, np.float16, 2)
    targets = np.asarray(targets)
    rows, v = logits16.shape
    if targets.shape != (rows,) or not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be {rows} integers, not {targets.dtype} "
                         f"{list(targets.shape)}")
    bad = np.flatnonzero((targets < 0) | (targets >= v))
    if bad.size:
        raise ValueError(f"target {int(targets[bad[0]])} at row {int(bad[0])} is outside the "
                         f"vocabulary 0..{v - 1}")
    z = logits16.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    e = np.exp(z - m)
    total = e.sum(axis=1, keepdims=True)
    logp = (z - m) - np.log(total)
    loss = float(np.float32(-logp[np.arange(rows), targets].mean()))
    grad = e / total
    grad[np.arange(rows), targets] -= 1.0
    return CrossEntropy(loss, (grad / rows).astype(np.float16))
