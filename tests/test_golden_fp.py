"""Tests of golden/fp.py against exact rational arithmetic.

The reference here shares nothing with the module under test: bits are decoded to
``fractions.Fraction``, the IEEE result is computed exactly, and a round-to-nearest-even
encoder written below (subnormals, overflow, signed zeros) produces the expected bits.
"""

from fractions import Fraction

import numpy as np
import pytest

from golden import fp


# --- independent reference: exact rationals --------------------------------------------------

class Format:
    """An IEEE binary interchange format: precision p (with the implicit bit), exponent width."""

    def __init__(self, name, width, exp_bits, nan):
        self.name, self.width, self.exp_bits, self.nan = name, width, exp_bits, nan
        self.p = width - exp_bits  # stored fraction bits + the implicit bit
        self.bias = (1 << (exp_bits - 1)) - 1
        self.emin, self.emax = 1 - self.bias, self.bias
        self.frac_bits = self.p - 1
        self.dtype = np.uint16 if width == 16 else np.uint32


F16 = Format("fp16", 16, 5, 0x7E00)
F32 = Format("fp32", 32, 8, 0x7FC00000)

NAN, INF, FIN = "nan", "inf", "fin"


def decode(bits, fmt):
    """Return (kind, sign, magnitude) of ``bits``; magnitude is an exact Fraction for FIN."""
    bits = int(bits)
    sign = bits >> (fmt.width - 1)
    biased = (bits >> fmt.frac_bits) & ((1 << fmt.exp_bits) - 1)
    frac = bits & ((1 << fmt.frac_bits) - 1)
    if biased == (1 << fmt.exp_bits) - 1:
        return (NAN, 0, None) if frac else (INF, sign, None)
    if biased == 0:
        return FIN, sign, Fraction(frac) * Fraction(2) ** (fmt.emin - fmt.frac_bits)
    return FIN, sign, Fraction(frac | (1 << fmt.frac_bits)) * Fraction(2) ** (
        biased - fmt.bias - fmt.frac_bits)


def encode(kind, sign, mag, fmt):
    """Round an exact (kind, sign, magnitude) to ``fmt`` bits with round-to-nearest-even."""
    if kind == NAN:
        return fmt.nan
    sign_bit = sign << (fmt.width - 1)
    inf = ((1 << fmt.exp_bits) - 1) << fmt.frac_bits
    if kind == INF:
        return sign_bit | inf
    if mag == 0:
        return sign_bit
    e = mag.numerator.bit_length() - mag.denominator.bit_length()
    if Fraction(2) ** e > mag:
        e -= 1  # now 2**e <= mag < 2**(e+1)
    e = max(e, fmt.emin)
    scaled = mag / Fraction(2) ** (e - fmt.frac_bits)  # significand in units of the last place
    q = scaled.numerator // scaled.denominator
    rest = scaled - q
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and q % 2 == 1):
        q += 1
    if q == 1 << fmt.p:
        q, e = q >> 1, e + 1
    if e > fmt.emax:
        return sign_bit | inf
    if q < 1 << fmt.frac_bits:  # subnormal (only possible at emin)
        return sign_bit | q
    return sign_bit | ((e + fmt.bias) << fmt.frac_bits) | (q - (1 << fmt.frac_bits))


def signed(x):
    """Signed exact value of a FIN triple."""
    return -x[2] if x[1] else x[2]


def exact_sum(x, y):
    """IEEE addition of two decoded operands, exactly (before rounding)."""
    if x[0] == NAN or y[0] == NAN:
        return NAN, 0, None
    if x[0] == INF and y[0] == INF:
        return (INF, x[1], None) if x[1] == y[1] else (NAN, 0, None)
    if x[0] == INF:
        return x
    if y[0] == INF:
        return y
    total = signed(x) + signed(y)
    if total == 0:  # exact zero: -0 only when both addends are -0 (round to nearest)
        return FIN, int(x[1] == 1 and y[1] == 1 and x[2] == 0 and y[2] == 0), Fraction(0)
    return FIN, int(total < 0), abs(total)


def exact_product(x, y):
    """IEEE multiplication of two decoded operands, exactly (before rounding)."""
    if x[0] == NAN or y[0] == NAN:
        return NAN, 0, None
    sign = x[1] ^ y[1]
    if x[0] == INF or y[0] == INF:
        if (x[0] == FIN and x[2] == 0) or (y[0] == FIN and y[2] == 0):
            return NAN, 0, None
        return INF, sign, None
    return FIN, sign, x[2] * y[2]


def negated(x):
    return x[0], x[1] ^ 1, x[2]


def ref_add(fmt):
    return lambda a, b: encode(*exact_sum(decode(a, fmt), decode(b, fmt)), fmt)


def ref_sub(fmt):
    return lambda a, b: encode(*exact_sum(decode(a, fmt), negated(decode(b, fmt))), fmt)


def ref_mul(fmt):
    return lambda a, b: encode(*exact_product(decode(a, fmt), decode(b, fmt)), fmt)


def ref_fma(fmt_acc, fmt_in):
    def fma(acc, a, b):
        product = exact_product(decode(a, fmt_in), decode(b, fmt_in))
        return encode(*exact_sum(decode(acc, fmt_acc), product), fmt_acc)
    return fma


def _order(v):
    """A decoded value's place in the total order: (value, sign rank), -0 below +0."""
    if v[0] == INF:
        return (float("-inf") if v[1] else float("inf"), 0)
    return (signed(v), -v[1])


def ref_max(fmt):
    def maximum(a, b):
        x, y = decode(a, fmt), decode(b, fmt)
        if x[0] == NAN or y[0] == NAN:
            return fmt.nan
        return int(a) if _order(x) >= _order(y) else int(b)
    return maximum


def ref_min(fmt):
    def minimum(a, b):
        x, y = decode(a, fmt), decode(b, fmt)
        if x[0] == NAN or y[0] == NAN:
            return fmt.nan
        return int(a) if _order(x) <= _order(y) else int(b)
    return minimum


def ref_copysign(fmt):
    def copysign(a, b):
        x, y = decode(a, fmt), decode(b, fmt)
        if x[0] == NAN or y[0] == NAN:
            return fmt.nan
        magnitude = int(a) & ((1 << (fmt.width - 1)) - 1)
        return magnitude | (int(b) & (1 << (fmt.width - 1)))
    return copysign


def ref_neg(fmt):
    def neg(a):
        x = decode(a, fmt)
        return encode(*negated(x), fmt) if x[0] != NAN else fmt.nan
    return neg


def check(golden_fn, reference_fn, fmt_out, *operands):
    """Compare the vectorised golden function with the scalar reference on all rows."""
    got = np.asarray(golden_fn(*operands))
    assert got.dtype == fmt_out.dtype
    assert got.shape == operands[0].shape
    bad = []
    for i, row in enumerate(zip(*operands)):
        want = reference_fn(*row)
        if int(got[i]) != want:
            bad.append((tuple(hex(int(v)) for v in row), hex(int(got[i])), hex(want)))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]} (operands, got, want)"


# --- stimulus --------------------------------------------------------------------------------

def cross(*values):
    """Every combination of the given operand arrays, as flattened columns."""
    grids = np.meshgrid(*values, indexing="ij")
    return [g.ravel() for g in grids]


def random_bits(rng, fmt, n):
    """Mix of uniform bit patterns and values clustered near a moving exponent."""
    uniform = rng.integers(0, 1 << fmt.width, n, dtype=np.uint64)
    exponent = rng.integers(0, (1 << fmt.exp_bits) - 1, n, dtype=np.uint64)
    frac = rng.integers(0, 1 << fmt.frac_bits, n, dtype=np.uint64)
    # Short significands make exact results and ties likely.
    short = frac & ~np.uint64((1 << (fmt.frac_bits - 3)) - 1)
    frac = np.where(rng.random(n) < 0.3, short, frac)
    sign = rng.integers(0, 2, n, dtype=np.uint64)
    finite = (sign << np.uint64(fmt.width - 1)) | (exponent << np.uint64(fmt.frac_bits)) | frac
    return np.where(rng.random(n) < 0.3, uniform, finite).astype(fmt.dtype)


def near(rng, fmt, base, spread):
    """Operands whose exponent is within ``spread`` of ``base``'s, random sign and fraction,
    with a share of exact powers of two (half-ulp and ulp offsets: ties)."""
    n = base.size
    base = base.astype(np.int64)
    max_biased = (1 << fmt.exp_bits) - 2
    biased = (base >> fmt.frac_bits) & ((1 << fmt.exp_bits) - 1)
    offset = rng.integers(-spread, spread + 1, n)
    exponent = np.clip(biased + offset, 0, max_biased)
    frac = rng.integers(0, 1 << fmt.frac_bits, n)
    tie_exp = np.clip(biased - fmt.p + rng.integers(-1, 3, n), 0, max_biased)
    use_tie = rng.random(n) < 0.25
    exponent = np.where(use_tie, tie_exp, exponent)
    frac = np.where(use_tie, 0, frac)
    sign = rng.integers(0, 2, n)
    return ((sign << (fmt.width - 1)) | (exponent << fmt.frac_bits) | frac).astype(fmt.dtype)


def cancelling_acc(rng, fmt, a, b):
    """Accumulators close to -a*b, so fused operations cancel heavily."""
    with np.errstate(all="ignore"):
        if fmt is F16:
            p = -(a.view(np.float16).astype(np.float64) * b.view(np.float16).astype(np.float64))
            acc = p.astype(np.float16).view(np.uint16).astype(np.int64)
        else:
            p = -(a.view(np.float32).astype(np.float64) * b.view(np.float32).astype(np.float64))
            acc = p.astype(np.float32).view(np.uint32).astype(np.int64)
    acc = acc + rng.integers(-3, 4, acc.size)
    return (acc & ((1 << fmt.width) - 1)).astype(fmt.dtype)


N_RANDOM = 2500
SPECIAL = {F16: fp.special_values16(), F32: fp.special_values32()}

BINARY_OPS = [
    ("add16", fp.add16, ref_add(F16), F16),
    ("sub16", fp.sub16, ref_sub(F16), F16),
    ("mul16", fp.mul16, ref_mul(F16), F16),
    ("max16", fp.max16, ref_max(F16), F16),
    ("add32", fp.add32, ref_add(F32), F32),
    ("sub32", fp.sub32, ref_sub(F32), F32),
    ("mul32", fp.mul32, ref_mul(F32), F32),
    ("max32", fp.max32, ref_max(F32), F32),
    ("min32", fp.min32, ref_min(F32), F32),
    ("copysign32", fp.copysign32, ref_copysign(F32), F32),
]
FMA_OPS = [
    ("fmac16", fp.fmac16, ref_fma(F16, F16), F16, F16),
    ("fmac32", fp.fmac32, ref_fma(F32, F32), F32, F32),
    ("fmac_mixed", fp.fmac_mixed, ref_fma(F32, F16), F32, F16),
]


# --- arithmetic ------------------------------------------------------------------------------

@pytest.mark.parametrize("name, golden_fn, reference_fn, fmt", BINARY_OPS,
                         ids=[op[0] for op in BINARY_OPS])
def test_binary_special_cross(name, golden_fn, reference_fn, fmt):
    check(golden_fn, reference_fn, fmt, *cross(SPECIAL[fmt], SPECIAL[fmt]))


@pytest.mark.parametrize("name, golden_fn, reference_fn, fmt", BINARY_OPS,
                         ids=[op[0] for op in BINARY_OPS])
def test_binary_random(name, golden_fn, reference_fn, fmt):
    rng = np.random.default_rng(sum(map(ord, name)))
    a = random_bits(rng, fmt, N_RANDOM)
    b = np.where(rng.random(N_RANDOM) < 0.5, near(rng, fmt, a, fmt.p + 2),
                 random_bits(rng, fmt, N_RANDOM))
    check(golden_fn, reference_fn, fmt, a, b)


@pytest.mark.parametrize("name, golden_fn, reference_fn, fmt_acc, fmt_in", FMA_OPS,
                         ids=[op[0] for op in FMA_OPS])
def test_fma_special_cross(name, golden_fn, reference_fn, fmt_acc, fmt_in):
    check(golden_fn, reference_fn, fmt_acc,
          *cross(SPECIAL[fmt_acc], SPECIAL[fmt_in], SPECIAL[fmt_in]))


@pytest.mark.parametrize("name, golden_fn, reference_fn, fmt_acc, fmt_in", FMA_OPS,
                         ids=[op[0] for op in FMA_OPS])
def test_fma_random(name, golden_fn, reference_fn, fmt_acc, fmt_in):
    rng = np.random.default_rng(sum(map(ord, name)))
    a = random_bits(rng, fmt_in, N_RANDOM)
    b = np.where(rng.random(N_RANDOM) < 0.5, near(rng, fmt_in, a, 4),
                 random_bits(rng, fmt_in, N_RANDOM))
    if fmt_acc is fmt_in:
        cancel = cancelling_acc(rng, fmt_acc, a, b)
    else:  # mixed: the FP16 product is exact in FP32; cancel against it
        product = fp.mul32(fp.f16_to_f32(a), fp.f16_to_f32(b))
        cancel = cancelling_acc(rng, fmt_acc, product, np.full_like(product, 0x3F800000))
    pick = rng.random(N_RANDOM)
    acc = np.where(pick < 0.4, cancel,
                   np.where(pick < 0.7, random_bits(rng, fmt_acc, N_RANDOM),
                            near(rng, fmt_acc, cancel, fmt_acc.p + 3)))
    check(golden_fn, reference_fn, fmt_acc, acc, a, b)


def double_rounding_fmac32(rng, n):
    """fmac32 operands whose exact result lies within 2**-53 (relative) of an FP32 tie.

    acc + a*b = acc +- half_ulp(acc) * (1 - j**2 * 2**-46): rounding first to float64 lands
    exactly on the tie, so a non-fused or doubly rounded model picks the wrong neighbour
    whenever acc's significand is odd (same sign) or even (opposite sign).
    """
    exponent = rng.integers(-90, 91, n)
    frac = rng.integers(0, 1 << 23, n) | rng.integers(0, 2, n)
    acc_sign = rng.integers(0, 2, n)
    acc = (acc_sign << 31) | ((exponent + 127) << 23) | frac
    j = rng.integers(1, 300, n)
    ea = (exponent - 24) // 2
    eb = exponent - 24 - ea
    a_sign = rng.integers(0, 2, n)
    b_sign = a_sign ^ acc_sign ^ rng.integers(0, 2, n)
    a = (a_sign << 31) | ((ea + 127) << 23) | j                    # (1 + j 2**-23) 2**ea
    b = (b_sign << 31) | ((eb - 1 + 127) << 23) | ((1 << 23) - 2 * j)  # (1 - j 2**-23) 2**eb
    return acc.astype(np.uint32), a.astype(np.uint32), b.astype(np.uint32)


def test_fmac32_single_rounding():
    """Near-tie results catch a product rounded before the add or a double rounding."""
    # (1 + 2**-23)**2 - (1 + 2**-22) = 2**-46 survives only if the product is not rounded.
    assert int(fp.fmac32(0xBF800002, 0x3F800001, 0x3F800001)) == 0x28800000
    # (2**24 + 2) + (1 - 2**-46): just below the tie at 2**24 + 3, so it rounds down.
    assert int(fp.fmac32(0x4B800001, 0x3F800001, 0x3F7FFFFE)) == 0x4B800001
    rng = np.random.default_rng(53)
    check(fp.fmac32, ref_fma(F32, F32), F32, *double_rounding_fmac32(rng, 500))


def test_fmac16_single_rounding():
    """(1 + 2**-10)**2 - (1 + 2**-9) = 2**-20 survives only if the product is not rounded.

    No FP16 double-rounding case exists through float64: the exact sum either fits in 53 bits
    or has its product far below half an FP16 ulp of acc.
    """
    assert int(fp.fmac16(0xBC02, 0x3C01, 0x3C01)) == 0x0010  # 2**-20, an FP16 subnormal


@pytest.mark.parametrize("golden_fn, fmt", [(fp.neg16, F16), (fp.neg32, F32)],
                         ids=["neg16", "neg32"])
def test_neg(golden_fn, fmt):
    rng = np.random.default_rng(7)
    values = np.concatenate([SPECIAL[fmt], random_bits(rng, fmt, N_RANDOM)])
    check(golden_fn, ref_neg(fmt), fmt, values)


# --- conversions -----------------------------------------------------------------------------

def test_f16_to_f32_exhaustive():
    every = np.arange(1 << 16, dtype=np.uint16)
    check(fp.f16_to_f32, lambda x: encode(*decode(x, F16), F32), F32, every)


def test_f32_to_f16():
    rng = np.random.default_rng(1616)
    uniform = rng.integers(0, 1 << 32, 20000, dtype=np.uint64)
    # Exponents around the FP16 range (subnormal, normal, overflow) with every rounding case:
    # low 13 fraction bits below, at and above the FP16 half-ulp.
    n = 30000
    biased = rng.integers(127 - 27, 127 + 18, n, dtype=np.uint64)
    frac = rng.integers(0, 1 << 23, n, dtype=np.uint64)
    low = rng.choice(np.array([0x0FFF, 0x1000, 0x1001, 0x0000], dtype=np.uint64), n)
    frac = np.where(rng.random(n) < 0.5, (frac & ~np.uint64(0x1FFF)) | low, frac)
    sign = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(31)
    focused = sign | (biased << np.uint64(23)) | frac
    values = np.concatenate([uniform, focused]).astype(np.uint32)
    values = np.concatenate([fp.special_values32(),
                             np.array([0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FFFFF,
                                       0x33000000, 0x33000001, 0x33800000, 0x387FC000,
                                       0x387FE000, 0x38800000], dtype=np.uint32),
                             values])
    check(fp.f32_to_f16, lambda x: encode(*decode(x, F32), F16), F16, values)


def test_helpers_round_trip():
    every = np.arange(1 << 16, dtype=np.uint16)
    assert np.array_equal(fp.f16_to_bits(fp.bits_to_f16(every)), every)
    values = fp.special_values32()
    assert np.array_equal(fp.f32_to_bits(fp.bits_to_f32(values)), values)
    assert list(fp.is_nan16(fp.special_values16())) == [
        decode(v, F16)[0] == NAN for v in fp.special_values16()]
    assert list(fp.is_nan32(values)) == [decode(v, F32)[0] == NAN for v in values]
    assert int(fp.f16_to_bits(1 + 2.0**-11 + 2.0**-40)) == 0x3C01  # one rounding, not two
    assert int(fp.f16_to_bits(65520.0)) == 0x7C00


def test_scalars_and_broadcasting():
    assert fp.add16(0x3C00, 0x3C00).shape == ()
    assert int(fp.add16(0x3C00, 0x3C00)) == 0x4000
    out = fp.fmac_mixed(np.zeros((2, 1), np.uint32), np.full(3, 0x3C00, np.uint16), 0x4000)
    assert out.shape == (2, 3) and out.dtype == np.uint32
    assert np.all(out == 0x40000000)


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda: fp.add16(np.float32(1.0), 0), "a16 must be uint16 bits, got float32"),
    (lambda: fp.mul16(0, np.array([1], np.uint32)), "b16 must be uint16 bits, got uint32"),
    (lambda: fp.fmac_mixed(0, np.uint32(1), 0), "x16 must be uint16 bits, got uint32"),
    (lambda: fp.fmac_mixed(0, 0, np.array([1.0])), "w16 must be uint16 bits, got float64"),
    (lambda: fp.fmac32(np.int64(-1), 0, 0), "acc32 must be uint32 bits, got int64"),
    (lambda: fp.f32_to_f16(1 << 32), "x32 must be uint32 bits, got int64"),
    (lambda: fp.neg16([0x10000]), "a16 must be uint16 bits, got int64"),
    (lambda: fp.max32(True, 0), "a32 must be uint32 bits, got bool"),
])
def test_bad_dtype_names_argument(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_bad_broadcast_names_arguments():
    with pytest.raises(ValueError, match="acc32, x16, w16 do not broadcast"):
        fp.fmac_mixed(np.zeros(3, np.uint32), np.zeros(4, np.uint16), 0)
    with pytest.raises(ValueError, match="a32, b32 do not broadcast"):
        fp.add32(np.zeros(2, np.uint32), np.zeros(5, np.uint32))


# --- the reciprocal-square-root estimate (a Newton seed) ----------------------------------

def test_rsqe32_specials_and_formula():
    """rsqe32 on the special classes, by its definition written out per value."""
    values = fp.special_values32()
    got = fp.rsqe32(values)
    for v, g in zip(values.tolist(), got.tolist()):
        sign, mag = v >> 31, v & 0x7FFFFFFF
        if mag > 0x7F800000 or (sign and mag):
            want = fp.NAN32
        elif mag == 0:
            want = 0x7F800000 | (sign << 31)
        elif mag == 0x7F800000:
            want = 0
        else:
            want = (fp.RSQE_MAGIC - (v >> 1)) & 0xFFFFFFFF
        assert g == want, (hex(v), hex(g), hex(want))


def test_rsqe32_is_within_its_bound_on_normals():
    """Within 3.5 % of 1/sqrt(x) on every normal FP32 exponent and a spread of fractions
    (the bound the Newton steps of golden/nonlinear.py are sized for)."""
    rng = np.random.default_rng(7)
    bits = ((rng.integers(1, 255, 20000) << 23) | rng.integers(0, 1 << 23, 20000))
    x = bits.astype(np.uint32)
    est = fp.rsqe32(x).view(np.float32).astype(np.float64)
    true = 1.0 / np.sqrt(x.view(np.float32).astype(np.float64))
    assert np.max(np.abs(est / true - 1)) < 0.035
