"""The golden model of the block's non-GEMM operations as the fabric computes them.

Every function here works on FP16 / FP32 *bits* with the operations of golden/fp.py (SPEC 6),
in explicit loops in the fixed orders the fabric uses (docs/rowops.md), and knows nothing
of PEs, DSRs or wavelets: only the feature split of the activations over the fabric's
columns (``bounds``: column x holds features ``bounds[x] .. bounds[x + 1] - 1``), because
that split fixes the order of every row reduction. The RTL runs of gpt_mapping/rowops.py
are checked bit for bit against it; it is a separate implementation (no code shared with
the PE program generator beyond golden/fp.py and golden/nonlinear.py's kernel execution).

Row reduction (sum or max) of a [T, C] tensor over its features, for each token:

1. in every column x, in feature order: ``p = v[lo]``, then ``p = p OP v[k]`` for
   k = lo + 1 .. hi - 1 (the PE's local pass);
2. along the row, west to east: ``s = p_0``, then ``s = p_x OP s`` for x = 1 .. W - 1 (the
   chain: PE x combines its own partial with what arrives from x - 1, as the GEMM's
   reduction does);
3. every PE of the row receives ``s`` (FP32).
"""

import numpy as np

from golden import fp
from golden.nonlinear import run as run_kernel

__all__ = ["REDUCE_OPS", "check_bounds", "row_reduce", "layernorm", "LN_EPS", "bias_add",
           "residual_add", "gelu", "attention",
           "attention_probs", "attention_values"]

#: The reductions: name -> the FP32 operation of golden/fp.py.
REDUCE_OPS = {"sum": fp.add32, "max": fp.max32}
#: nanoGPT's LayerNorm epsilon (torch's default).
LN_EPS = 1e-5


def check_bounds(bounds, features):
    """``bounds`` as an int64 array, checked: starts at 0, ends at ``features``, every
    column holds at least one feature (a row reduction has no identity element)."""
    b = np.asarray(bounds, dtype=np.int64)
    if b.ndim != 1 or len(b) < 2 or b[0] != 0 or b[-1] != features:
        raise ValueError(f"bounds {list(b)} do not split {features} features "
                         f"(they must run from 0 to {features})")
    empty = np.nonzero(np.diff(b) <= 0)[0]
    if len(empty):
        raise ValueError(f"column {int(empty[0])} of the split {list(b)} holds no feature; "
                         f"a row reduction needs at least one per column")
    return b


def row_reduce(v32, bounds, op="sum"):
    """The row reduction of FP32 bits ``v32`` [T, C]: FP32 bits [T] (docstring above).

    ``op``: "sum" or "max". FP16 inputs: widen them with :func:`golden.fp.f16_to_f32` first
    (exact), as the PE's first FMOV does.
    """
    if op not in REDUCE_OPS:
        raise ValueError(f"no row reduction {op!r} (there are: {', '.join(REDUCE_OPS)})")
    f = REDUCE_OPS[op]
    v32 = np.asarray(v32, dtype=np.uint32)
    if v32.ndim != 2:
        raise ValueError(f"row_reduce wants a [T, C] tensor, not shape {v32.shape}")
    b = check_bounds(bounds, v32.shape[1])
    partials = []
    for x in range(len(b) - 1):
        p = v32[:, b[x]].copy()
        for k in range(b[x] + 1, b[x + 1]):
            p = f(p, v32[:, k])
        partials.append(p)
    s = partials[0]
    for p in partials[1:]:
        s = f(p, s)
    return s


def layernorm(x16, gamma16, beta16, bounds, eps=LN_EPS, stages=None):
    """LayerNorm of FP16 bits ``x16`` [T, C] with FP16 scale and shift bits [C]: FP16 bits.

    The fabric's sequence (docs/rowops.md section 3), each line one PE operation rounding
    once to FP32 (or FP16 where it says so):

    ``S = row_reduce(x)``; ``mean = S * round32(1 / C)``; ``d = x - mean``;
    ``q = d * d``; ``S2 = row_reduce(q)``; ``var = S2 * round32(1 / C)``;
    ``v = round16(var + round32(eps))``; ``r = rsqrt(v)`` (the FP16 kernel of
    golden/nonlinear.py); ``z = d * r``; ``z = z * gamma``; ``y = round16(z + beta)``.

    ``stages``: a dict that receives the intermediate values (for tests and the report).
    """
    x16 = np.asarray(x16, dtype=np.uint16)
    T, C = x16.shape
    b = check_bounds(bounds, C)
    gamma16 = np.asarray(gamma16, dtype=np.uint16)
    beta16 = np.asarray(beta16, dtype=np.uint16)
    for name, arr in (("gamma", gamma16), ("beta", beta16)):
        if arr.shape != (C,):
            raise ValueError(f"LayerNorm {name} has shape {arr.shape}, expected ({C},)")
    inv_c = fp.f32_to_bits(np.float32(1.0) / np.float32(C))
    eps32 = fp.f32_to_bits(np.float32(eps))
    x32 = fp.f16_to_f32(x16)
    s = row_reduce(x32, b, "sum")
    mean = fp.mul32(s, inv_c)
    d = np.empty((T, C), dtype=np.uint32)
    for k in range(C):
        d[:, k] = fp.sub32(x32[:, k], mean)
    q = np.empty_like(d)
    for k in range(C):
        q[:, k] = fp.mul32(d[:, k], d[:, k])
    s2 = row_reduce(q, b, "sum")
    var = fp.mul32(s2, inv_c)
    v16 = fp.f32_to_f16(fp.add32(var, eps32))
    r16 = run_kernel("rsqrt", v16)
    r32 = fp.f16_to_f32(r16)
    y16 = np.empty_like(x16)
    for k in range(C):
        z = fp.mul32(d[:, k], r32)
        z = fp.mul32(z, fp.f16_to_f32(gamma16[k]))
        y16[:, k] = fp.f32_to_f16(fp.add32(z, fp.f16_to_f32(beta16[k])))
    if stages is not None:
        stages.update(sum=s, mean=mean, sum_sq=s2, var=var, v16=v16, rstd16=r16)
    return y16


# --- element-wise operations (gpt_mapping/elementwise.py) ----------------------------------------

def _f16_out(v32):
    """An FP16 destination of a PE operation: the FP32 result rounded to FP16."""
    return fp.f32_to_f16(v32)


def bias_add(x16, b16):
    """``round16(round32(x + b))`` per feature: FP16 bits [T, C] and [C]."""
    x16 = np.asarray(x16, dtype=np.uint16)
    b16 = np.asarray(b16, dtype=np.uint16)
    if x16.ndim != 2 or b16.shape != (x16.shape[1],):
        raise ValueError(f"bias of shape {b16.shape} for an activation of shape {x16.shape}")
    out = np.empty_like(x16)
    for k in range(x16.shape[1]):
        out[:, k] = _f16_out(fp.add32(fp.f16_to_f32(x16[:, k]), fp.f16_to_f32(b16[k])))
    return out


def residual_add(a16, b16):
    """``round16(round32(a + b))``: FP16 bits of the same shape."""
    a16 = np.asarray(a16, dtype=np.uint16)
    b16 = np.asarray(b16, dtype=np.uint16)
    if a16.shape != b16.shape:
        raise ValueError(f"residual add of shapes {a16.shape} and {b16.shape}")
    return _f16_out(fp.add32(fp.f16_to_f32(a16), fp.f16_to_f32(b16)))


def gelu(x16, form="gelu"):
    """GELU of FP16 bits: golden/nonlinear.py's kernel ``form`` ("gelu", "gelu_tanh")."""
    if form not in ("gelu", "gelu_tanh"):
        raise ValueError(f"no GELU form {form!r} (there are: gelu, gelu_tanh)")
    return run_kernel(form, np.asarray(x16, dtype=np.uint16))


def gelu_grad(x16):
    """GELU's derivative (erf form) of FP16 bits: golden/nonlinear.py's ``gelu_grad``."""
    return run_kernel("gelu_grad", np.asarray(x16, dtype=np.uint16))


def product(a16, b16):
    """``round16(a * b)``: the element-wise product of two FP16 tiles (one rounding)."""
    a16 = np.asarray(a16, dtype=np.uint16)
    b16 = np.asarray(b16, dtype=np.uint16)
    if a16.shape != b16.shape:
        raise ValueError(f"product of shapes {a16.shape} and {b16.shape}")
    return fp.mul16(a16, b16)


# --- attention (gpt_mapping/attention.py) ---------------------------------------------------------

NEG_INF32 = np.uint32(0xFF800000)


def attention(qkv16, n_head, n_ctx, batch, stages=None):
    """Causal multi-head attention of FP16 bits ``qkv16`` [T, 3C] (nanoGPT's c_attn output:
    q, k, v, each head's ``d = C / n_head`` features contiguous) as the fabric computes it:
    ``(probs16 [batch, n_head, n_ctx, n_ctx], att16 [T, C])``, FP16 bits.

    For each sequence, head and query position p, over the keys u <= p in ascending order
    (docs/attention.md section 3; every line one PE operation):

    ``s_u = fma(... fma(fma(+0, q_0, k_u0), q_1, k_u1) ...)`` (d ascending, FP32);
    ``s_u = s_u * round32(1 / sqrt(d))``; ``m = max_u s_u``;
    ``e_u = exp16(round16(s_u - m))`` (the FP16 kernel of golden/nonlinear.py);
    ``S = e_0 + e_1 + ...`` (FP32, u ascending); ``r = recip16(round16(S))``;
    ``p_u = round16(e_u * r)``; ``y = fma(... fma(+0, p_0, v_0) ...)`` (u ascending, FP32);
    ``att = round16(y)``.

    The masked keys (u > p) take no part: their probabilities are +0. (The fabric sums the
    masked keys of its own block as exp(-inf) = +0, which changes no sum; this model leaves
    them out, a second way to the same bits.)
    """
    qkv16 = np.asarray(qkv16, dtype=np.uint16)
    T, three_c = qkv16.shape
    c = three_c // 3
    if three_c != 3 * c or c % n_head or T != n_ctx * batch:
        raise ValueError(f"attention of qkv shape {qkv16.shape} with n_head={n_head}, "
                         f"n_ctx={n_ctx}, batch={batch}")
    d = c // n_head
    scale = fp.f32_to_bits(np.float32(1.0 / np.sqrt(d)))
    q32 = fp.f16_to_f32(qkv16[:, :c]).reshape(batch, n_ctx, n_head, d)
    k32 = fp.f16_to_f32(qkv16[:, c:2 * c]).reshape(batch, n_ctx, n_head, d)
    probs = np.zeros((batch, n_head, n_ctx, n_ctx), dtype=np.uint16)
    zero = np.zeros(batch * n_head, dtype=np.uint32)
    # Vectorised over (sequence, head): [B*H] lanes, the loops are the fabric's orders.
    q = q32.transpose(0, 2, 1, 3).reshape(batch * n_head, n_ctx, d)
    k = k32.transpose(0, 2, 1, 3).reshape(batch * n_head, n_ctx, d)
    for p in range(n_ctx):
        s = np.empty((batch * n_head, p + 1), dtype=np.uint32)
        for u in range(p + 1):
            acc = zero
            for i in range(d):
                acc = fp.fmac32(acc, q[:, p, i], k[:, u, i])
            s[:, u] = fp.mul32(acc, scale)
        m = s[:, 0]
        for u in range(1, p + 1):
            m = fp.max32(m, s[:, u])
        e16 = np.empty_like(s, dtype=np.uint16)
        for u in range(p + 1):
            e16[:, u] = fp.f32_to_f16(fp.sub32(s[:, u], m))
        e16 = run_kernel("exp", e16.reshape(-1)).reshape(e16.shape)
        e32 = fp.f16_to_f32(e16)
        total = e32[:, 0]
        for u in range(1, p + 1):
            total = fp.add32(total, e32[:, u])
        r32 = fp.f16_to_f32(run_kernel("reciprocal", fp.f32_to_f16(total)))
        p16 = np.empty_like(e16)
        for u in range(p + 1):
            p16[:, u] = fp.f32_to_f16(fp.mul32(e32[:, u], r32))
        probs.reshape(batch * n_head, n_ctx, n_ctx)[:, p, :p + 1] = p16
    if stages is not None:
        stages.update(scale=scale)
    return probs, attention_values(probs, qkv16, n_head, n_ctx, batch)


def attention_probs(qkv16, n_head, n_ctx, batch):
    """The probabilities of :func:`attention` alone: FP16 bits [batch, n_head, n, n]."""
    return attention(qkv16, n_head, n_ctx, batch)[0]


def attention_values(probs16, qkv16, n_head, n_ctx, batch):
    """``P V`` of :func:`attention` from FP16 probabilities ``probs16`` [batch, n_head, n,
    n] and the values in ``qkv16`` [T, 3C]: FP16 bits [T, C], heads merged (for each
    query position p and value feature j: ``fma`` over the keys u <= p ascending from +0,
    rounded once to FP16)."""
    qkv16 = np.asarray(qkv16, dtype=np.uint16)
    T, three_c = qkv16.shape
    c = three_c // 3
    d = c // n_head
    v = fp.f16_to_f32(qkv16[:, 2 * c:].reshape(batch, n_ctx, n_head, d)
                      .transpose(0, 2, 1, 3).reshape(batch * n_head, n_ctx, d))
    p32 = fp.f16_to_f32(np.asarray(probs16, dtype=np.uint16)
                        .reshape(batch * n_head, n_ctx, n_ctx))
    zero = np.zeros(batch * n_head, dtype=np.uint32)
    att = np.zeros((batch * n_head, n_ctx, d), dtype=np.uint16)
    for p in range(n_ctx):
        for j in range(d):
            acc = zero
            for u in range(p + 1):
                acc = fp.fmac32(acc, p32[:, p, u], v[:, u, j])
            att[:, p, j] = fp.f32_to_f16(acc)
    att = att.reshape(batch, n_head, n_ctx, d).transpose(0, 2, 1, 3).reshape(T, c)
    return np.ascontiguousarray(att)
