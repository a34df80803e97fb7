"""The numerics of the GPT block's operations that are not GEMMs (SPEC 8), on FP16 activations.

The golden model of LayerNorm, bias adds, attention scores and softmax, the attention-value
product, GELU and residual adds, as ``gpt_mapping.gpt`` runs them for the block (on the host
today; docs/gpt.md), with the precision contract stated there: activations FP16, every host
operation in float32 numpy in a fixed order (sums in index order from the first term, never
BLAS or pairwise), its result rounded once to FP16; ``exp`` in float64 rounded to float32;
GELU a 65536-entry table of the float64 formula rounded once; residual adds the FP16 add of
SPEC 6 (:func:`golden.fp.add16`).
"""

import math
from functools import lru_cache

import numpy as np

from golden import fp

__all__ = ["to_f16", "f16_values", "bits", "round_f32_to_f16", "sum_in_order", "layer_norm16",
           "add_bias16", "split_heads", "attention_probs16", "attention_values16", "gelu16",
           "residual16"]


# --- FP16 activations -----------------------------------------------------------------------

def to_f16(values):
    """FP16 activations (``np.float16``) from float16/float32 values; float32 rounds RNE."""
    arr = np.asarray(values)
    if arr.dtype == np.float16:
        return arr.copy()
    if arr.dtype != np.float32:
        raise TypeError(f"activations must be float16 or float32, got {arr.dtype}")
    return round_f32_to_f16(arr)


def f16_values(x16):
    """The float32 values (exact) of FP16 activations."""
    x16 = np.asarray(x16)
    if x16.dtype != np.float16:
        raise TypeError(f"FP16 activations must be float16, got {x16.dtype}")
    return x16.astype(np.float32)


def bits(x16):
    """The raw ``uint16`` bits of FP16 activations (for bit-exact comparisons)."""
    return np.asarray(x16, dtype=np.float16).view(np.uint16)


def round_f32_to_f16(values):
    """Round float32 values to FP16: RNE, subnormals, overflow to inf, canonical NaN.

    The same bits as :func:`golden.fp.f32_to_f16` (a test checks every FP16 rounding
    boundary), through numpy's IEEE cast, which is ~70x faster at GPT-2 size.
    """
    arr = np.asarray(values, dtype=np.float32)
    with np.errstate(all="ignore"):
        b = arr.astype(np.float16).view(np.uint16)
    return np.where(np.isnan(arr), np.uint16(fp.NAN16), b).astype(np.uint16).view(np.float16)


def sum_in_order(values, axis=-1):
    """Float32 sum along ``axis`` in index order, starting from the first term.

    ``np.add.accumulate`` is a sequential scan (out[i] = out[i-1] + a[i]), unlike
    ``np.sum``'s pairwise blocks, so the order is the one the documentation states.
    """
    return np.take(np.add.accumulate(values, axis=axis, dtype=np.float32), -1, axis=axis)


# --- the operations ---------------------------------------------------------------------------

def layer_norm16(x16, weight, bias, eps):
    """LayerNorm over the last axis of FP16 activations; float32 ``weight``/``bias``.

    ``mean = sum(x) / C``; ``d = x - mean``; ``var = sum(d * d) / C`` (biased, as torch);
    ``y = (d * (1 / sqrt(var + eps))) * weight + bias``, each step a float32 rounding.
    """
    x = f16_values(x16)
    n = np.float32(x.shape[-1])
    with np.errstate(all="ignore"):
        mean = sum_in_order(x) / n
        d = x - mean[..., None]
        var = sum_in_order(d * d) / n
        rstd = np.float32(1.0) / np.sqrt(var + np.float32(eps))
        y = (d * rstd[..., None]) * np.asarray(weight, np.float32) + np.asarray(bias, np.float32)
    return round_f32_to_f16(y)


def add_bias16(y16, bias):
    """``round16(round32(y + bias))``: the host-side bias add after a fabric GEMM."""
    with np.errstate(all="ignore"):
        return round_f32_to_f16(f16_values(y16) + np.asarray(bias, np.float32))


def split_heads(qkv16, config):
    """``[T, 3C]`` FP16 -> float32 q, k, v as ``[d, B, H, n]`` (head feature first)."""
    b, n, h, d = config.batch, config.n_ctx, config.n_head, config.head_dim
    qkv = f16_values(qkv16).reshape(b, n, 3, h, d)
    return [np.ascontiguousarray(qkv[:, :, i].transpose(3, 0, 2, 1)) for i in range(3)]


def attention_probs16(qkv16, config, chunk=128, tick=None):
    """Causal softmax of the attention scores, as FP16 ``[B, H, n, n]``.

    Per head, ``s[t, u] = sum_i q[t, i] k[u, i]`` (i in order, float32 products and sums),
    then ``s * (1 / sqrt(d))`` (float32), keys ``u > t`` masked, ``m = max_u s``,
    ``e = float32(exp_float64(s - m))``, ``p = e / sum_u e`` (u in order). Query rows are
    processed in chunks of ``chunk`` tokens, which does not change any value.
    """
    q, k, _ = split_heads(qkv16, config)
    d, b, h, n = q.shape
    scale = np.float32(1.0 / math.sqrt(d))
    probs = np.zeros((b, h, n, n), dtype=np.float16)
    for t0 in range(0, n, chunk):
        t1 = min(n, t0 + chunk)
        # Only keys u < t1 can be unmasked for these queries.
        with np.errstate(all="ignore"):
            s = q[0, :, :, t0:t1, None] * k[0, :, :, None, :t1]
            prod = np.empty_like(s)
            for i in range(1, d):
                np.multiply(q[i, :, :, t0:t1, None], k[i, :, :, None, :t1], out=prod)
                np.add(s, prod, out=s)
            s *= scale
            masked = np.arange(t1)[None, :] > np.arange(t0, t1)[:, None]
            s[..., masked] = -np.inf
            m = s.max(axis=-1, keepdims=True)
            e = np.exp((s - m).astype(np.float64)).astype(np.float32)
            p = e / sum_in_order(e)[..., None]
        probs[:, :, t0:t1, :t1] = round_f32_to_f16(p)
        if tick:
            tick(t1 - t0)
    return probs


def attention_values16(probs16, qkv16, config, chunk=128, tick=None):
    """The attention-value product with heads merged back, FP16 ``[T, C]``.

    ``y[t] = sum_{u <= t} p[t, u] v[u]`` with u in order from 0 (float32 products and sums;
    masked keys are not added at all, so they cannot change a signed zero).
    """
    _, _, v = split_heads(qkv16, config)
    d, b, h, n = v.shape
    v = np.ascontiguousarray(v.transpose(1, 2, 3, 0))        # [B, H, n, d]
    p = f16_values(probs16)
    y = np.zeros((b, h, n, d), dtype=np.float32)
    for t0 in range(0, n, chunk):
        t1 = min(n, t0 + chunk)
        acc = y[:, :, t0:t1]
        prod = np.empty_like(acc)
        with np.errstate(all="ignore"):
            np.multiply(p[:, :, t0:t1, 0, None], v[:, :, 0, None, :], out=acc)
            for u in range(1, t1):
                r0 = max(0, u - t0)     # rows t >= u of this chunk see key u
                np.multiply(p[:, :, t0 + r0:t1, u, None], v[:, :, u, None, :],
                            out=prod[:, :, r0:])
                np.add(acc[:, :, r0:], prod[:, :, r0:], out=acc[:, :, r0:])
        if tick:
            tick(t1 - t0)
    merged = y.transpose(0, 2, 1, 3).reshape(b * n, h * d)
    return round_f32_to_f16(merged)


@lru_cache(maxsize=None)
def _gelu_table(form):
    """GELU of every FP16 value (indexed by its bits): the float64 formula rounded once."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float64)
    out = np.empty_like(x)
    for i, v in enumerate(x.tolist()):
        if math.isnan(v) or v == math.inf:
            out[i] = v
        elif v == -math.inf:
            out[i] = -0.0            # the limit; the formula would give -inf * 0
        elif form == "erf":
            out[i] = v * 0.5 * math.erfc(-v / math.sqrt(2.0))   # x * Phi(x), no cancellation
        else:
            inner = math.sqrt(2.0 / math.pi) * (v + 0.044715 * v * v * v)
            out[i] = 0.5 * v * (1.0 + math.tanh(inner))
    table = fp.f16_to_bits(out).view(np.float16)
    table.setflags(write=False)
    return table


def gelu16(x16, form="erf"):
    """GELU of FP16 activations (``form`` ``"erf"`` or ``"tanh"``) by table lookup."""
    if form not in ("erf", "tanh"):
        raise ValueError(f"GELU form must be 'erf' or 'tanh', got {form!r}")
    return _gelu_table(form)[bits(x16)]


def residual16(a16, b16):
    """Residual add: the FP16 add of SPEC 6 (one rounding of the exact sum)."""
    return fp.add16(bits(a16), bits(b16)).view(np.float16)
