"""Bit-exact reference of IEEE 754 binary16 / binary32 arithmetic on raw bits.

Every function takes and returns raw bit patterns (``uint16`` for FP16, ``uint32`` for FP32),
vectorised over numpy arrays with broadcasting, so the golden model, the RTL test benches and
the mapper compare integers, never floats. The arithmetic contract is SPEC section 6: round to
nearest even, subnormals (no flush to zero), signed zeros, infinities, and every NaN result is
the canonical quiet NaN (``0x7E00`` / ``0x7FC00000``).

Inputs are numpy arrays or scalars of the exact bits dtype, or Python ints / integer arrays
whose values fit the format; anything else raises ``TypeError`` naming the argument.
Results are numpy arrays (0-d for scalar inputs).

How exactness is obtained: FP32 add/sub/mul use numpy float32 arithmetic (IEEE, one rounding).
Fused multiply-adds compute the product exactly in float64, the sum with an error-free TwoSum
and round it to odd at 53 bits; a second rounding to the narrower format (RNE) is then correct
because 53 >= p + 2. Rounding to FP16 is done here on bits rather than trusted to numpy's cast.
"""

import numpy as np

__all__ = [
    "NAN16", "NAN32",
    "bits_to_f16", "bits_to_f32", "f16_to_bits", "f32_to_bits",
    "is_nan16", "is_nan32",
    "f16_to_f32", "f32_to_f16",
    "add16", "sub16", "mul16", "fmac16", "max16", "neg16",
    "add32", "sub32", "mul32", "fmac32", "max32", "min32", "neg32", "copysign32", "rsqe32",
    "RSQE_MAGIC",
    "fmac_mixed",
    "special_values16", "special_values32",
]

NAN16 = 0x7E00
"""Canonical quiet NaN of FP16: the only NaN any operation returns."""
NAN32 = 0x7FC00000
"""Canonical quiet NaN of FP32: the only NaN any operation returns."""

_SIGN16, _EXP16, _ABS16 = 0x8000, 0x7C00, 0x7FFF
_SIGN32, _EXP32, _ABS32 = 0x80000000, 0x7F800000, 0x7FFFFFFF


# --- argument checks ------------------------------------------------------------------------

def _bits(value, name, dtype):
    """Return ``value`` as an array of ``dtype`` bits, or raise TypeError naming ``name``."""
    dtype = np.dtype(dtype)
    arr = np.asarray(value)
    if arr.dtype == dtype:
        return arr
    # Signed integers (Python ints, lists of ints, np.arange) are accepted when in range;
    # unsigned integers of another width are the bits of another format, so they are not.
    if arr.dtype.kind == "i" or (arr.dtype.kind == "u" and not isinstance(value, np.ndarray)
                                 and not isinstance(value, np.generic)):
        hi = (1 << (8 * dtype.itemsize)) - 1
        if arr.size == 0 or (int(arr.min()) >= 0 and int(arr.max()) <= hi):
            return arr.astype(dtype)
        raise TypeError(f"{name} must be {dtype} bits, got {arr.dtype} values outside "
                        f"[0, {hi:#x}]")
    raise TypeError(f"{name} must be {dtype} bits, got {arr.dtype}")


def _broadcast(**arrays):
    """Broadcast the named arrays together, or raise ValueError naming them."""
    try:
        return np.broadcast_arrays(*arrays.values())
    except ValueError:
        shapes = ", ".join(f"{name} {np.shape(a)}" for name, a in arrays.items())
        raise ValueError(f"{', '.join(arrays)} do not broadcast together: {shapes}") from None


def _args16(**kwargs):
    return _broadcast(**{k: _bits(v, k, np.uint16) for k, v in kwargs.items()})


def _args32(**kwargs):
    return _broadcast(**{k: _bits(v, k, np.uint32) for k, v in kwargs.items()})


# --- bits <-> floats ------------------------------------------------------------------------

def bits_to_f16(x16):
    """View FP16 bits as ``np.float16`` values (NaN payloads kept), for printing and numpy."""
    return np.array(_bits(x16, "x16", np.uint16)).view(np.float16)


def bits_to_f32(x32):
    """View FP32 bits as ``np.float32`` values (NaN payloads kept), for printing and numpy."""
    return np.array(_bits(x32, "x32", np.uint32)).view(np.float32)


def _real(value, name):
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be real numbers, got {arr.dtype}")
    return arr


def f16_to_bits(x):
    """Return the FP16 bits of real numbers ``x``; wider values are rounded RNE to FP16.

    ``np.float16`` inputs are viewed as-is (NaN payloads kept); anything wider goes through
    this module's own float64 -> FP16 rounding, so the result does not depend on numpy's cast.
    """
    arr = _real(x, "x")
    if arr.dtype == np.float16:
        return np.array(arr).view(np.uint16)
    return _round64_to_f16(arr.astype(np.float64))


def f32_to_bits(x):
    """Return the FP32 bits of real numbers ``x`` (wider values rounded RNE to FP32)."""
    arr = _real(x, "x")
    with np.errstate(all="ignore"):
        return np.array(arr.astype(np.float32)).view(np.uint32)


def is_nan16(x16):
    """True where the FP16 bits are a NaN (quiet or signalling, any sign and payload)."""
    return (_bits(x16, "x16", np.uint16) & _ABS16) > _EXP16


def is_nan32(x32):
    """True where the FP32 bits are a NaN (quiet or signalling, any sign and payload)."""
    return (_bits(x32, "x32", np.uint32) & _ABS32) > _EXP32


# --- rounding cores -------------------------------------------------------------------------

def _round64_to_f16(v):
    """Round float64 values to FP16 bits (RNE, subnormals, overflow to inf, canonical NaN)."""
    b = np.asarray(v, dtype=np.float64).view(np.uint64)
    sign = ((b >> np.uint64(48)) & np.uint64(_SIGN16)).astype(np.int64)
    biased = ((b >> np.uint64(52)) & np.uint64(0x7FF)).astype(np.int64)
    frac = (b & np.uint64((1 << 52) - 1)).astype(np.int64)
    # Significand with its implicit bit: 53 bits, value = m * 2**(e - 52).
    m = np.where(biased > 0, frac | (1 << 52), frac)
    e = np.maximum(biased, 1) - 1023
    # FP16 keeps 11 significant bits at exponents >= -14, fewer below (subnormals).
    shift = np.minimum(42 + np.maximum(-14 - e, 0), 62)
    q = m >> shift
    rem = m & ((np.int64(1) << shift) - 1)
    half = np.int64(1) << (shift - 1)
    q += (rem > half) | ((rem == half) & ((q & 1) == 1))
    # For normals q holds the implicit bit, which carries into the exponent field; a rounding
    # carry (q == 2048) then correctly bumps the exponent.
    out = (np.clip(e + 14, 0, 31) << 10) + q
    out = np.where((e > 15) | (out >= _EXP16), _EXP16, out)
    out = np.where(biased == 0x7FF, np.where(frac != 0, NAN16, _EXP16), out)
    out = np.where(out == NAN16, NAN16, out | sign)
    return out.astype(np.uint16)


def _f64_to_f32_bits(v):
    """Round float64 values to FP32 bits with canonical NaN (numpy's cast is IEEE RNE)."""
    with np.errstate(all="ignore"):
        out = np.asarray(v, dtype=np.float64).astype(np.float32).view(np.uint32)
    return np.where(np.isnan(v), np.uint32(NAN32), out).astype(np.uint32)


def _f32_bits(v):
    """FP32 bits of float32 values with canonical NaN."""
    v = np.asarray(v, dtype=np.float32)
    return np.where(np.isnan(v), np.uint32(NAN32), v.view(np.uint32)).astype(np.uint32)


def _sum_round_to_odd(a, b):
    """Return a + b in float64 rounded to odd, for exact float64 addends without overflow.

    Round-to-odd at 53 bits followed by one RNE rounding to p <= 51 bits equals a single RNE
    rounding of the exact sum, which is how the fused operations avoid double rounding.
    Infinities and NaNs pass through as the plain IEEE sum.
    """
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)  # TwoSum: s + err == a + b exactly
    even = (s.view(np.uint64) & np.uint64(1)) == 0
    inexact = np.isfinite(s) & (err != 0) & even
    nudged = np.nextafter(s, np.copysign(np.inf, err))
    return np.where(inexact, nudged, s)


def _fma64(acc, a, b):
    """Exact-product fused acc + a*b in float64, rounded to odd (see _sum_round_to_odd)."""
    with np.errstate(all="ignore"):
        product = a * b  # exact: <= 48 significant bits, exponent well inside float64
        return _sum_round_to_odd(acc, product)


def _f16_as_f64(x16):
    """FP16 bits as exact float64 values (signalling NaNs quietly become NaNs)."""
    with np.errstate(all="ignore"):
        return x16.view(np.float16).astype(np.float64)


def _f32_as_f64(x32):
    """FP32 bits as exact float64 values (signalling NaNs quietly become NaNs)."""
    with np.errstate(all="ignore"):
        return x32.view(np.float32).astype(np.float64)


# --- conversions ----------------------------------------------------------------------------

def f16_to_f32(x16):
    """Convert FP16 bits to FP32 bits: exact for every non-NaN, canonical NaN otherwise."""
    (x16,) = _args16(x16=x16)
    with np.errstate(all="ignore"):
        return _f32_bits(x16.view(np.float16).astype(np.float32))


def f32_to_f16(x32):
    """Convert FP32 bits to FP16 bits: RNE, subnormal results, overflow to inf, canonical NaN."""
    (x32,) = _args32(x32=x32)
    return _round64_to_f16(_f32_as_f64(x32))


# --- FP16 arithmetic ------------------------------------------------------------------------

def add16(a16, b16):
    """FP16 ``a + b`` with one rounding (the float64 sum of two FP16 values is exact)."""
    a16, b16 = _args16(a16=a16, b16=b16)
    with np.errstate(all="ignore"):
        return _round64_to_f16(_f16_as_f64(a16) + _f16_as_f64(b16))


def sub16(a16, b16):
    """FP16 ``a - b`` with one rounding (the float64 difference is exact)."""
    a16, b16 = _args16(a16=a16, b16=b16)
    with np.errstate(all="ignore"):
        return _round64_to_f16(_f16_as_f64(a16) - _f16_as_f64(b16))


def mul16(a16, b16):
    """FP16 ``a * b`` with one rounding (the float64 product is exact)."""
    a16, b16 = _args16(a16=a16, b16=b16)
    with np.errstate(all="ignore"):
        return _round64_to_f16(_f16_as_f64(a16) * _f16_as_f64(b16))


def fmac16(acc16, a16, b16):
    """FP16 fused ``acc + a * b`` with a single rounding, as the FP16 FMAC unit computes it."""
    acc16, a16, b16 = _args16(acc16=acc16, a16=a16, b16=b16)
    return _round64_to_f16(_fma64(_f16_as_f64(acc16), _f16_as_f64(a16), _f16_as_f64(b16)))


def _max(a, b, sign, nan_mask, nan, dtype):
    """Max on bits by the total order key, +0 above -0, canonical NaN on any NaN operand."""
    wide = np.int64
    a_, b_ = a.astype(wide), b.astype(wide)
    # Map sign-magnitude bits to an integer order: negatives below zero, -0 just below +0.
    key_a = np.where(a_ & sign, -(a_ & (sign - 1)) - 1, a_)
    key_b = np.where(b_ & sign, -(b_ & (sign - 1)) - 1, b_)
    out = np.where(key_a >= key_b, a_, b_)
    return np.where(nan_mask, nan, out).astype(dtype)


def max16(a16, b16):
    """FP16 maximum: canonical NaN if either is NaN, ``max(-0, +0) = +0``, else the larger."""
    a16, b16 = _args16(a16=a16, b16=b16)
    nan = ((a16 & _ABS16) > _EXP16) | ((b16 & _ABS16) > _EXP16)
    return _max(a16, b16, _SIGN16, nan, NAN16, np.uint16)


def neg16(a16):
    """FP16 negation (sign flip); a NaN input gives the canonical NaN."""
    (a16,) = _args16(a16=a16)
    return np.where((a16 & _ABS16) > _EXP16, NAN16, a16 ^ _SIGN16).astype(np.uint16)


# --- FP32 arithmetic ------------------------------------------------------------------------

def add32(a32, b32):
    """FP32 ``a + b`` with one rounding."""
    a32, b32 = _args32(a32=a32, b32=b32)
    with np.errstate(all="ignore"):
        return _f32_bits(a32.view(np.float32) + b32.view(np.float32))


def sub32(a32, b32):
    """FP32 ``a - b`` with one rounding."""
    a32, b32 = _args32(a32=a32, b32=b32)
    with np.errstate(all="ignore"):
        return _f32_bits(a32.view(np.float32) - b32.view(np.float32))


def mul32(a32, b32):
    """FP32 ``a * b`` with one rounding."""
    a32, b32 = _args32(a32=a32, b32=b32)
    with np.errstate(all="ignore"):
        return _f32_bits(a32.view(np.float32) * b32.view(np.float32))


def fmac32(acc32, a32, b32):
    """FP32 fused ``acc + a * b`` with a single rounding (IEEE fusedMultiplyAdd)."""
    acc32, a32, b32 = _args32(acc32=acc32, a32=a32, b32=b32)
    # |a*b| < 2**256 and |acc + a*b| < 2**257: no float64 overflow, so TwoSum stays exact.
    return _f64_to_f32_bits(_fma64(_f32_as_f64(acc32), _f32_as_f64(a32), _f32_as_f64(b32)))


def fmac_mixed(acc32, x16, w16):
    """Mixed-precision FMAC ``round32(acc + f32(x) * f32(w))`` with one rounding.

    The FP16 x FP16 product is exact in FP32, so plain float32 arithmetic is already the
    single-rounding reference (SPEC section 6).
    """
    acc32 = _bits(acc32, "acc32", np.uint32)
    x16 = _bits(x16, "x16", np.uint16)
    w16 = _bits(w16, "w16", np.uint16)
    acc32, x16, w16 = _broadcast(acc32=acc32, x16=x16, w16=w16)
    with np.errstate(all="ignore"):
        product = x16.view(np.float16).astype(np.float32) * w16.view(np.float16).astype(np.float32)
        return _f32_bits(acc32.view(np.float32) + product)


def max32(a32, b32):
    """FP32 maximum: canonical NaN if either is NaN, ``max(-0, +0) = +0``, else the larger."""
    a32, b32 = _args32(a32=a32, b32=b32)
    nan = ((a32 & _ABS32) > _EXP32) | ((b32 & _ABS32) > _EXP32)
    return _max(a32, b32, _SIGN32, nan, NAN32, np.uint32)


def min32(a32, b32):
    """FP32 minimum: canonical NaN if either is NaN, ``min(-0, +0) = -0``, else the smaller."""
    a32, b32 = _args32(a32=a32, b32=b32)
    nan = ((a32 & _ABS32) > _EXP32) | ((b32 & _ABS32) > _EXP32)
    # min(a, b) = -max(-a, -b) on the total order (the sign flip maps it onto itself).
    return (_max(a32 ^ _SIGN32, b32 ^ _SIGN32, _SIGN32, nan, NAN32 ^ _SIGN32, np.uint32)
            ^ np.uint32(_SIGN32)).astype(np.uint32)


def copysign32(a32, b32):
    """FP32 ``|a|`` with the sign of ``b``; canonical NaN if either is NaN."""
    a32, b32 = _args32(a32=a32, b32=b32)
    nan = ((a32 & _ABS32) > _EXP32) | ((b32 & _ABS32) > _EXP32)
    return np.where(nan, NAN32, (a32 & _ABS32) | (b32 & _SIGN32)).astype(np.uint32)


RSQE_MAGIC = 0x5F3759DF
"""The constant of the reciprocal-square-root estimate :func:`rsqe32`."""


def rsqe32(a32):
    """FP32 reciprocal-square-root estimate: ``RSQE_MAGIC - (a >> 1)`` on the bits of a
    positive finite non-zero ``a`` (within 3.5 % of ``1/sqrt(a)`` for normal ``a``);
    ``+inf`` for ``+0``, ``-inf`` for ``-0``, ``+0`` for ``+inf``, the canonical NaN for a NaN
    or a negative ``a``. A seed for Newton steps (golden/nonlinear.py), not a rounding."""
    (a32,) = _args32(a32=a32)
    a = a32.astype(np.int64)
    mag = a & _ABS32
    neg = (a & _SIGN32) != 0
    out = (RSQE_MAGIC - (a >> 1)) & 0xFFFFFFFF
    out = np.where(mag == _EXP32, 0, out)
    out = np.where(mag == 0, _EXP32 | (a & _SIGN32), out)
    out = np.where((mag > _EXP32) | (neg & (mag != 0)), NAN32, out)
    return out.astype(np.uint32)


def neg32(a32):
    """FP32 negation (sign flip); a NaN input gives the canonical NaN."""
    (a32,) = _args32(a32=a32)
    return np.where((a32 & _ABS32) > _EXP32, NAN32, a32 ^ _SIGN32).astype(np.uint32)


# --- operand classes for test benches -------------------------------------------------------

_SPECIAL16 = (
    0x0000, 0x8000,            # +0, -0
    0x0001, 0x8001,            # smallest subnormal
    0x03FF, 0x83FF,            # largest subnormal
    0x0400, 0x8400,            # smallest normal
    0x7BFF, 0xFBFF,            # largest normal (65504)
    0x3C00, 0xBC00,            # +1, -1
    0x7C00, 0xFC00,            # +inf, -inf
    0x7E00, 0xFE01,            # quiet NaN: canonical, negative with payload
    0x7C01, 0xFD55,            # signalling NaN with payloads
    0x3C01, 0x3FFF,            # 1 + ulp, 2 - ulp
    0x1000, 0x1400,            # 2**-11 (half an ulp of 1: ties), 2**-10
    0x0200, 0x3555,            # mid subnormal, ~1/3
    0x7BFE, 0x5BFF,            # near overflow, ~sqrt(max)
)

_SPECIAL32 = (
    0x00000000, 0x80000000,    # +0, -0
    0x00000001, 0x80000001,    # smallest subnormal
    0x007FFFFF, 0x807FFFFF,    # largest subnormal
    0x00800000, 0x80800000,    # smallest normal
    0x7F7FFFFF, 0xFF7FFFFF,    # largest normal
    0x3F800000, 0xBF800000,    # +1, -1
    0x7F800000, 0xFF800000,    # +inf, -inf
    0x7FC00000, 0xFFC12345,    # quiet NaN: canonical, negative with payload
    0x7F800001, 0xFFA00000,    # signalling NaN with payloads
    0x3F800001, 0x3FFFFFFF,    # 1 + ulp, 2 - ulp
    0x33800000, 0x34000000,    # 2**-24 (half an ulp of 1: ties), 2**-23
    0x00400000, 0x3EAAAAAB,    # mid subnormal, ~1/3
    0x7F7FFFFE, 0x5F800000,    # near overflow, 2**64 (products near overflow)
    0x1F800000,                # 2**-64 (products near underflow)
)


def special_values16():
    """FP16 operand classes for crossing: zeros, subnormal/normal limits, ones, infinities,
    quiet/signalling NaNs with payloads, tie-makers and near-overflow values."""
    return np.array(_SPECIAL16, dtype=np.uint16)


def special_values32():
    """FP32 operand classes for crossing: zeros, subnormal/normal limits, ones, infinities,
    quiet/signalling NaNs with payloads, tie-makers and near-overflow/underflow values."""
    return np.array(_SPECIAL32, dtype=np.uint32)
