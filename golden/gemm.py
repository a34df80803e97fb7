"""Golden model of the fabric GEMM Y = X W, bit for bit (SPEC sections 6 and 7).

The fabric computes, for every output n and token t:

1. in every column x, one FP32 partial sum ``P_x`` over its features K_x ascending, starting at
   +0.0, one rounding per weight: ``acc = round32(acc + f32(X[t, k]) * f32(W[k, n]))``,
   **skipping every k with W[k, n] == 0** (a zero weight is never streamed; both +0.0 and -0.0
   are zero: the test is on the bits, ``(w & 0x7FFF) == 0``; NaN weights are not zero);
2. along the row, ``s = P_0; s = round32(s + P_x)`` for x = 1 .. width - 1;
3. one rounding of s to FP16 (RNE, overflow to infinity); every NaN is ``0x7E00``.

The result depends on the fabric width (the K split) but not on its height (tokens are
independent); the height is still taken so that the reference can walk every PE.

Column groups (SPEC 7): with ``groups`` = G, the W columns form G groups of W / G; group g
computes the outputs ``[start(g, G, N), start(g + 1, G, N))`` with all of K split over its
own W / G columns, so everything above holds per group with the width W / G. The
result depends on the group width, not on G itself.

Two implementations that must agree bit for bit (tests/test_golden_gemm.py):

* :func:`fabric_gemm_reference`: the PE-by-PE loop, on :mod:`golden.fp` bit arithmetic.
  Obviously correct, small sizes only.
* :func:`fabric_gemm`: vectorised over tokens and outputs with numpy float32 elementwise
  operations (each add and multiply a separate IEEE operation, never BLAS), in token blocks
  that stay in cache; GPT-2 sizes in seconds.

The split ``start(i, p, n) = floor(i * n / p)`` is re-derived here from the SPEC rather than
imported from the mapper (``gpt_mapping.layout``), so that a mapper bug cannot hide in both.

:func:`compare_to_torch` checks a result against torch float32 ``X @ W`` within the bound of
:func:`error_bound` (derivation in docs/gemm.md).
"""

from dataclasses import asdict, dataclass

import numpy as np

from golden import fp

__all__ = [
    "fabric_gemm_reference", "fabric_gemm", "column_partial_sums", "is_streamed",
    "torch_reference", "accumulation_depth", "error_bound", "compare_to_torch",
    "TorchComparison",
]

_ABS16 = 0x7FFF
_NAN16 = np.uint16(fp.NAN16)
#: Unit roundoff of FP32 and FP16 (round to nearest).
U32 = 2.0 ** -24
U16 = 2.0 ** -11
#: Largest error of rounding to FP16 in the subnormal range: half the spacing 2**-24.
SUBNORMAL_HALF_STEP16 = 2.0 ** -25
#: Smallest magnitude that RNE rounds to FP16 infinity (65504 + half an ulp of 32).
OVERFLOW16 = 65520.0


def _start(i, parts, n):
    """Balanced block split of SPEC section 7."""
    return (i * n) // parts


def _groups(width, groups, outputs):
    """The group width W / G, checked (G divides W, G <= N)."""
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"column groups must be an int >= 1, not {groups!r}")
    if width % groups:
        raise ValueError(f"{groups} column groups do not divide the fabric's {width} columns")
    if groups > outputs:
        raise ValueError(f"{groups} column groups for {outputs} outputs (G <= N)")
    return width // groups


def _per_group(fn, x16, w16, width, height, groups, **kw):
    """``fn`` on every column group's outputs with the group width, joined along N."""
    span = _groups(width, groups, w16.shape[1])
    outputs = w16.shape[1]
    parts = [fn(x16, np.ascontiguousarray(w16[:, _start(g, groups, outputs):
                                               _start(g + 1, groups, outputs)]),
                span, height, **kw) for g in range(groups)]
    return np.concatenate(parts, axis=1)


def _check(x16, w16, width, height):
    for name, arr in (("X", x16), ("W", w16)):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float16:
            kind = arr.dtype if isinstance(arr, np.ndarray) else type(arr).__name__
            raise TypeError(f"{name} must be a float16 numpy array, got {kind}")
        if arr.ndim != 2 or 0 in arr.shape:
            raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if x16.shape[1] != w16.shape[0]:
        raise ValueError(f"X [T, K] and W [K, N] disagree on K: X {x16.shape}, W {w16.shape}")
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"fabric {name} must be an int >= 1, not {value!r}")


def is_streamed(w16):
    """True where a weight is sent on the fabric: every weight but +0.0 and -0.0."""
    return (np.asarray(w16).view(np.uint16) & _ABS16) != 0


# --- the obviously correct loop ----------------------------------------------------------------

def fabric_gemm_reference(x16, w16, width, height, groups=1):
    """Y = X W as the fabric computes it, PE by PE (small sizes only).

    Parameters
    ----------
    x16 : float16 [T, K]
    w16 : float16 [K, N]
    width, height : fabric columns and rows
    groups : column groups (SPEC 7; 1 is the plain layout)

    Returns
    -------
    float16 [T, N], NaNs canonical (0x7E00).
    """
    _check(x16, w16, width, height)
    if groups != 1:
        return _per_group(fabric_gemm_reference, x16, w16, width, height, groups)
    (tokens, features), outputs = x16.shape, w16.shape[1]
    xb, wb = x16.view(np.uint16), w16.view(np.uint16)

    # FMAC phase: PE (x, y) runs, for each n, one AXPY over its tokens per streamed weight.
    partial = np.zeros((width, tokens, outputs), dtype=np.uint32)   # FP32 bits of P_x
    for x in range(width):
        k_x = range(_start(x, width, features), _start(x + 1, width, features))
        for y in range(height):
            t0, t1 = _start(y, height, tokens), _start(y + 1, height, tokens)
            if t0 == t1:
                continue
            for n in range(outputs):
                acc = np.zeros(t1 - t0, dtype=np.uint32)             # +0.0
                for k in k_x:
                    w = wb[k, n]
                    if (w & _ABS16) == 0:                             # zero: never streamed
                        continue
                    acc = fp.fmac_mixed(acc, xb[t0:t1, k], w)
                partial[x, t0:t1, n] = acc

    # Row reduction in the fixed order, then one rounding to FP16.
    out = np.zeros((tokens, outputs), dtype=np.uint16)
    for y in range(height):
        t0, t1 = _start(y, height, tokens), _start(y + 1, height, tokens)
        for n in range(outputs):
            s = partial[0, t0:t1, n]
            for x in range(1, width):
                s = fp.add32(s, partial[x, t0:t1, n])
            out[t0:t1, n] = fp.f32_to_f16(s)
    return out.view(np.float16)


# --- the fast version --------------------------------------------------------------------------

class _Operands:
    """X and W prepared once for the vectorised kernels."""

    def __init__(self, x16, w16):
        with np.errstate(all="ignore"):
            self.xt = np.ascontiguousarray(x16.astype(np.float32).T)      # [K, T]
            self.w = w16.astype(np.float32)                                # [K, N]
        self.nonzero = is_streamed(w16)                                    # [K, N]
        self.all_zero = ~self.nonzero.any(axis=1)                          # per feature
        self.x_finite = np.isfinite(x16).all(axis=0)                       # per feature

    def column_partial(self, k_range, t0, t1, acc, tmp):
        """P_x for tokens [t0, t1) into ``acc`` (float32 [t1 - t0, N]); ``tmp`` is scratch.

        Unstructured sparsity is not exploited: measured, numpy's gather/scatter over the
        non-zeros is slower than the dense elementwise pass even at 1 % density.
        """
        acc.fill(0.0)
        for k in k_range:
            if self.all_zero[k]:
                continue
            xk = self.xt[k, t0:t1, None]
            np.multiply(xk, self.w[k], out=tmp)
            if self.x_finite[k] or np.isfinite(xk).all():
                # A zero weight adds a +-0.0 product, which leaves acc unchanged: acc starts at
                # +0.0 and a round-to-nearest sum is -0.0 only if both addends are, so acc is
                # never -0.0 and acc + (+-0.0) == acc bit for bit (NaN stays NaN).
                np.add(acc, tmp, out=acc)
            else:
                # inf or NaN activations: inf * 0 would be NaN, so skip the zero weights.
                np.add(acc, tmp, out=tmp)
                np.copyto(acc, tmp, where=self.nonzero[k])
        return acc


def _f32_to_f16_canonical(y32):
    """FP32 -> FP16 (numpy's RNE cast, overflow to inf) with NaNs made canonical."""
    with np.errstate(all="ignore"):
        out = y32.astype(np.float16).view(np.uint16)
    out[np.isnan(y32)] = _NAN16
    return out.view(np.float16)


def fabric_gemm(x16, w16, width, height, *, groups=1, token_block=None, progress=None):
    """Y = X W as the fabric computes it, vectorised (bit-identical to the reference).

    Parameters
    ----------
    x16 : float16 [T, K]
    w16 : float16 [K, N]
    width, height : fabric columns and rows (the result depends on ``width`` only)
    groups : column groups (SPEC 7; the result depends on the group width W / G)
    token_block : tokens processed together (default: ~64k elements per block, cache sized)
    progress : optional callable, called with the number of tokens finished after each block

    Returns
    -------
    float16 [T, N], NaNs canonical (0x7E00).

    Memory is O(T * N + K * (T + N)); the loops are token blocks, then columns, then k in
    the column, each step one numpy elementwise operation over [block, N].
    """
    _check(x16, w16, width, height)
    if groups != 1:
        done = [0, 0]                      # tokens over all groups, whole tokens reported

        def step(count):
            done[0] += count
            whole = done[0] // groups
            if whole > done[1]:
                progress(whole - done[1])
                done[1] = whole
        return _per_group(fabric_gemm, x16, w16, width, height, groups,
                          token_block=token_block, progress=step if progress else None)
    (tokens, features), outputs = x16.shape, w16.shape[1]
    ops = _Operands(x16, w16)
    if token_block is None:
        token_block = max(1, min(tokens, 65536 // outputs))
    elif not isinstance(token_block, (int, np.integer)) or token_block < 1:
        raise ValueError(f"token_block must be an int >= 1, not {token_block!r}")
    y32 = np.empty((tokens, outputs), dtype=np.float32)
    columns = [range(_start(x, width, features), _start(x + 1, width, features))
               for x in range(width)]
    with np.errstate(all="ignore"):
        for t0 in range(0, tokens, token_block):
            t1 = min(tokens, t0 + token_block)
            s = y32[t0:t1]
            acc = np.empty((t1 - t0, outputs), dtype=np.float32)
            tmp = np.empty_like(acc)
            ops.column_partial(columns[0], t0, t1, s, tmp)               # s = P_0
            for k_x in columns[1:]:
                np.add(s, ops.column_partial(k_x, t0, t1, acc, tmp), out=s)
            if progress is not None:
                progress(t1 - t0)
    return _f32_to_f16_canonical(y32)


def column_partial_sums(x16, w16, width, column):
    """FP32 bits [T, N] of the partial sums P_x that ``column`` sends along its rows.

    For scoreboards of the reduction chain; NaNs canonical (0x7FC00000).
    """
    _check(x16, w16, width, 1)
    if not 0 <= column < width:
        raise ValueError(f"column {column} is outside the fabric's 0..{width - 1}")
    (tokens, features), outputs = x16.shape, w16.shape[1]
    ops = _Operands(x16, w16)
    acc = np.empty((tokens, outputs), dtype=np.float32)
    with np.errstate(all="ignore"):
        ops.column_partial(range(_start(column, width, features),
                                 _start(column + 1, width, features)),
                           0, tokens, acc, np.empty_like(acc))
    bits = acc.view(np.uint32).copy()
    bits[np.isnan(acc)] = np.uint32(fp.NAN32)
    return bits


# --- tolerance against torch float32 -----------------------------------------------------------

def torch_reference(x16, w16):
    """torch float32 ``X @ W`` (BLAS, unspecified order): the tolerance reference, float32."""
    import torch
    x = torch.from_numpy(np.ascontiguousarray(x16, dtype=np.float32))
    w = torch.from_numpy(np.ascontiguousarray(w16, dtype=np.float32))
    return (x @ w).numpy()


def accumulation_depth(features, width):
    """Most FP32 roundings any one product goes through on the fabric.

    A product in column x is added K_x - 1 more times in its column at most (the first add to
    +0.0 is exact) and W - 1 times along the row at most: max K_x + W - 2.
    """
    max_k_x = -(-features // width)
    return max(0, max_k_x - 1 + width - 1)


def _gamma(m):
    """Higham's gamma_m = m u / (1 - m u) for FP32."""
    return m * U32 / (1.0 - m * U32)


def error_bound(x16, w16, width, reference=None):
    """Per-element bound on |Y_fabric - Y_torch32| (float64 [T, N]) for finite, non-overflowing
    results.

    With A = |X| @ |W| (exact products), g = gamma(D) + gamma(K) (D from
    :func:`accumulation_depth`, K for torch's own order; both sums are trees of FP32 roundings
    of exact FP16 x FP16 products, no underflow error because FP32 sums of those are exact when
    tiny) and one final RNE rounding to FP16:

        |Y - Y_torch| <= u16 * (|Y_torch| + g A) + 2**-25 + g A.
    """
    _check(x16, w16, width, 1)
    if reference is None:
        reference = torch_reference(x16, w16)
    features = x16.shape[1]
    with np.errstate(all="ignore"):
        a = np.abs(x16.astype(np.float64)) @ np.abs(w16.astype(np.float64))
        a *= 1.0 + 2.0 ** -30              # covers float64 rounding in computing A itself
        g = _gamma(accumulation_depth(features, width)) + _gamma(features)
        return U16 * (np.abs(reference.astype(np.float64)) + g * a) + SUBNORMAL_HALF_STEP16 \
            + g * a


@dataclass(frozen=True)
class TorchComparison:
    """Outcome of :func:`compare_to_torch`; ``ok`` when nothing is out of tolerance."""
    compared: int                 # elements where both results are finite
    max_abs_error: float          # over the compared elements
    max_error_over_bound: float   # max |err| / bound (<= 1 within tolerance)
    violations: int               # compared elements beyond the bound
    overflowed: int               # FP16 infinities explained by |Y_torch| + g A >= 65520
    nonfinite_mismatches: int     # FP16 non-finite where torch is finite and no overflow
    torch_nonfinite: int          # torch NaN/inf: not compared (inf * skipped zero weight ...)

    @property
    def ok(self):
        return self.violations == 0 and self.nonfinite_mismatches == 0

    def as_dict(self):
        return {**asdict(self), "ok": self.ok}


def compare_to_torch(y16, x16, w16, width, reference=None):
    """Compare a fabric result ``y16`` with torch float32 ``X @ W`` within :func:`error_bound`.

    Elements where torch is not finite are counted, not compared: the fabric skips zero
    weights, so an infinite activation meeting only zero weights gives a finite fabric result
    where dense torch gives NaN.
    """
    if reference is None:
        reference = torch_reference(x16, w16)
    bound = error_bound(x16, w16, width, reference)
    y = y16.astype(np.float64)
    ref = reference.astype(np.float64)
    ref_finite, y_finite = np.isfinite(ref), np.isfinite(y)
    both = ref_finite & y_finite
    with np.errstate(all="ignore"):
        err = np.where(both, np.abs(y - ref), 0.0)
        ratio = np.where(both, err / bound, 0.0)
        g_a = bound - U16 * np.abs(ref) - SUBNORMAL_HALF_STEP16   # >= g A (1 + u16)
    overflow = ref_finite & np.isinf(y) & (np.sign(y) == np.sign(ref)) \
        & (np.abs(ref) + g_a >= OVERFLOW16)
    return TorchComparison(
        compared=int(both.sum()),
        max_abs_error=float(err.max()) if both.any() else 0.0,
        max_error_over_bound=float(ratio.max()) if both.any() else 0.0,
        violations=int((err > bound).sum()),
        overflowed=int(overflow.sum()),
        nonfinite_mismatches=int((ref_finite & ~y_finite & ~overflow).sum()),
        torch_nonfinite=int((~ref_finite).sum()),
    )
