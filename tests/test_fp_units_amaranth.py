"""Amaranth-simulator checks of the floating-point units in ``rtl/fp.py``.

Each unit gets a few hundred vectors (operand classes crossed, targeted cancellation /
underflow / rounding cases and random bits) pushed through its stream with idle insertion
and random back-pressure; the scoreboard checks every result bit-exactly, in order, with its
tag. The expected values come from an exact ``Fraction`` reference written here, and are also
compared with ``golden/fp.py`` so the two references keep each other honest. The millions of
vectors run later in the Verilator regression; this file stays small and fast.
"""

import random
from fractions import Fraction

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden import fp as golden
from rtl.fp import (FP16, FP32, F16ToF32, F32ToF16, FMAUnit, FPOp, MaxUnit, NegUnit,
                    FPFormat)


# --- exact reference ------------------------------------------------------------------------

def decode(fmt, bits):
    """Raw bits -> ('nan',), ('inf', sign) or ('num', sign, Fraction)."""
    sign = bits >> (fmt.width - 1)
    efield = (bits >> fmt.man_bits) & fmt.exp_field_max
    frac = bits & ((1 << fmt.man_bits) - 1)
    if efield == fmt.exp_field_max:
        return ("nan",) if frac else ("inf", sign)
    sig = frac | (1 << fmt.man_bits) if efield else frac
    exp = max(efield, 1) - fmt.bias - fmt.man_bits
    value = Fraction(sig) * Fraction(2) ** exp
    return ("num", sign, value)


def round_to(fmt, sign, value):
    """RNE of the exact non-negative ``value`` with ``sign`` to ``fmt`` bits."""
    if value == 0:
        return sign << (fmt.width - 1)
    exp = value.numerator.bit_length() - value.denominator.bit_length()
    if Fraction(2) ** exp > value:
        exp -= 1
    exp = max(exp, fmt.emin)
    ulp = Fraction(2) ** (exp - fmt.man_bits)
    q, r = divmod(value, ulp)
    q = int(q)
    if r > ulp / 2 or (r == ulp / 2 and q & 1):
        q += 1
    if q >> fmt.precision:  # carry out of the significand
        q >>= 1
        exp += 1
    if exp > fmt.emax:
        return (sign << (fmt.width - 1)) | fmt.inf_bits
    efield = exp + fmt.bias if q >> fmt.man_bits else 0
    return (sign << (fmt.width - 1)) | (efield << fmt.man_bits) | (q & ((1 << fmt.man_bits) - 1))


def ref_fma(in_fmt, out_fmt, a, b, c):
    """Exact ``c + a*b`` (a, b in ``in_fmt``, c in ``out_fmt``), one rounding to ``out_fmt``."""
    da, db, dc = decode(in_fmt, a), decode(in_fmt, b), decode(out_fmt, c)
    if "nan" in (da[0], db[0], dc[0]):
        return out_fmt.nan_bits
    p_sign = da[1] ^ db[1]
    if da[0] == "inf" or db[0] == "inf":
        if (da[0] == "num" and da[2] == 0) or (db[0] == "num" and db[2] == 0):
            return out_fmt.nan_bits
        if dc[0] == "inf" and dc[1] != p_sign:
            return out_fmt.nan_bits
        return (p_sign << (out_fmt.width - 1)) | out_fmt.inf_bits
    if dc[0] == "inf":
        return (dc[1] << (out_fmt.width - 1)) | out_fmt.inf_bits
    product = da[2] * db[2] * (-1 if p_sign else 1)
    addend = dc[2] * (-1 if dc[1] else 1)
    total = product + addend
    if total == 0:
        both_negative_zeros = da[2] * db[2] == 0 and dc[2] == 0 and p_sign and dc[1]
        return round_to(out_fmt, int(bool(both_negative_zeros)), Fraction(0))
    return round_to(out_fmt, int(total < 0), abs(total))


def ref_op(in_fmt, out_fmt, op, a, b, c):
    """The FMAUnit contract per op; ADD/SUB in a mixed unit read both operands in in_fmt."""
    if op == FPOp.FMA:
        return ref_fma(in_fmt, out_fmt, a, b, c)
    if op == FPOp.MUL:
        return ref_fma(in_fmt, out_fmt, a, b, out_fmt.neg_zero_bits)
    b_signed = b ^ (in_fmt.sign_mask if op == FPOp.SUB else 0)
    # a + b == a*1 + b: with the addend in in_fmt, widen it exactly when the formats differ.
    if in_fmt != out_fmt:
        db = decode(in_fmt, b_signed)
        if db[0] == "nan":
            return out_fmt.nan_bits
        if db[0] == "inf":
            b_signed = (db[1] << (out_fmt.width - 1)) | out_fmt.inf_bits
        else:
            b_signed = round_to(out_fmt, db[1], db[2])  # exact: out_fmt is wider
    return ref_fma(in_fmt, out_fmt, a, in_fmt.one_bits, b_signed)


# --- operand generators ---------------------------------------------------------------------

SPECIAL = {16: [int(x) for x in golden.special_values16()],
           32: [int(x) for x in golden.special_values32()]}


def random_bits(rng, fmt):
    """Random bits, with exponents skewed toward the interesting ends now and then."""
    choice = rng.random()
    sign = rng.getrandbits(1) << (fmt.width - 1)
    frac = rng.getrandbits(fmt.man_bits)
    if choice < 0.15:
        efield = 0                                            # subnormals
    elif choice < 0.25:
        efield = rng.choice([1, 2, fmt.exp_field_max - 1])   # normal limits
    elif choice < 0.35:
        return rng.choice(SPECIAL[fmt.width])
    else:
        efield = rng.randrange(fmt.exp_field_max + 1)
    return sign | (efield << fmt.man_bits) | frac


def fma_vectors(rng, in_fmt, out_fmt, count):
    """(op, a, b, c) tuples: specials crossed, cancellations, underflows, random bits."""
    specials_in, specials_out = SPECIAL[in_fmt.width], SPECIAL[out_fmt.width]
    vectors = []
    for _ in range(count // 4):                   # operand classes crossed (sampled)
        vectors.append((FPOp.FMA, rng.choice(specials_in), rng.choice(specials_in),
                        rng.choice(specials_out)))
    for _ in range(count // 4):                   # c close to -a*b: massive cancellation
        a, b = random_bits(rng, in_fmt), random_bits(rng, in_fmt)
        near = ref_fma(in_fmt, out_fmt, a, b, out_fmt.neg_zero_bits) ^ out_fmt.sign_mask
        if (near & ~out_fmt.sign_mask) < out_fmt.inf_bits:
            near = (near + rng.randint(-2, 2)) % (1 << out_fmt.width)
        vectors.append((FPOp.FMA, a, b, near))
    for _ in range(count // 8):                   # small products: subnormal results
        def tiny():
            sign = rng.getrandbits(1) << (in_fmt.width - 1)
            efield = rng.randrange(0, in_fmt.bias // 2 + 2)
            return sign | (efield << in_fmt.man_bits) | rng.getrandbits(in_fmt.man_bits)
        c = random_bits(rng, out_fmt) if rng.random() < 0.3 else rng.choice(
            [0, out_fmt.sign_mask, 1, out_fmt.sign_mask | 1, rng.getrandbits(out_fmt.man_bits)])
        vectors.append((FPOp.FMA, tiny(), tiny(), c))
    for _ in range(count // 8):                   # the product lands on c's half ulp: ties
        a = random_bits(rng, in_fmt) & ~(in_fmt.exp_field_max << in_fmt.man_bits) | (
            rng.randrange(1, in_fmt.exp_field_max) << in_fmt.man_bits)
        e_a = ((a >> in_fmt.man_bits) & in_fmt.exp_field_max) - in_fmt.bias
        k = rng.randrange(in_fmt.emin, in_fmt.emax + 1)                  # b = +-2**k
        e_c = k + e_a - in_fmt.man_bits + out_fmt.man_bits + 1
        if not out_fmt.emin <= e_c <= out_fmt.emax:
            continue
        b = (rng.getrandbits(1) << (in_fmt.width - 1)) | ((k + in_fmt.bias) << in_fmt.man_bits)
        c = (rng.getrandbits(1) << (out_fmt.width - 1)) | ((e_c + out_fmt.bias)
                                                           << out_fmt.man_bits) | rng.getrandbits(
            out_fmt.man_bits)
        vectors.append((FPOp.FMA, a, b, c))
    while len(vectors) < count:                   # random bits, every op
        op = rng.choice(list(FPOp)) if in_fmt == out_fmt or rng.random() < 0.3 else FPOp.FMA
        vectors.append((op, random_bits(rng, in_fmt), random_bits(rng, in_fmt),
                        random_bits(rng, out_fmt)))
    return vectors


# --- stream harness -------------------------------------------------------------------------

def run_stream(dut, inputs, *, seed, p_valid=0.7, p_ready=0.6, max_cycles=None):
    """Push ``inputs`` (payload dicts) through ``dut`` with idle insertion and random
    back-pressure; return the output payloads in arrival order, with cycle counts checked."""
    rng = random.Random(seed)
    received = []
    in_layout = dut.i.payload.shape()
    max_cycles = max_cycles or 20 * (len(inputs) + 10)

    async def bench(ctx):
        sent = 0
        for cycle in range(max_cycles):
            if len(received) == len(inputs):
                break
            valid = sent < len(inputs) and (ctx.get(dut.i.valid) or rng.random() < p_valid)
            ctx.set(dut.i.valid, valid)   # once raised, held until the transfer happens
            if valid:
                ctx.set(dut.i.payload, in_layout.const(inputs[sent]))
            ctx.set(dut.o.ready, rng.random() < p_ready)
            # Back-pressure contract: the pipeline advances iff the output slot frees up.
            assert ctx.get(dut.i.ready) == (not ctx.get(dut.o.valid) or ctx.get(dut.o.ready))
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                out = ctx.get(dut.o.payload)
                received.append(([int(x) for x in out.result], int(out.tag)))
            if valid and ctx.get(dut.i.ready):
                sent += 1
            await ctx.tick()
        else:
            raise AssertionError(f"{type(dut).__name__}: {len(received)} of {len(inputs)} "
                                 f"results after {max_cycles} cycles")
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 0)
        for _ in range(dut.latency + 2):   # nothing extra may come out: no duplicates
            assert not ctx.get(dut.o.valid), f"{type(dut).__name__}: spurious output"
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return received


def lanes_of(items, lanes, fill):
    """Split ``items`` into transfers of ``lanes`` items, padding the last with ``fill``."""
    items = list(items)
    items += [fill] * (-len(items) % lanes)
    return [items[k:k + lanes] for k in range(0, len(items), lanes)]


def check(name, got, want, operands):
    mismatches = [(ops, g, w) for ops, g, w in zip(operands, got, want) if g != w]
    if mismatches:
        lines = [f"{name}: {len(mismatches)} of {len(want)} results differ"]
        for ops, g, w in mismatches[:10]:
            lines.append(f"  operands {ops}: got {g:#x}, want {w:#x}")
        raise AssertionError("\n".join(lines))


# --- reference self-checks (fast, no simulation) --------------------------------------------

def test_reference_agrees_with_golden():
    """The Fraction reference and golden/fp.py agree on a sample of every FMA flavour."""
    rng = random.Random(1)
    cases = [(FP16, FP32, golden.fmac_mixed), (FP32, FP32, golden.fmac32),
             (FP16, FP16, golden.fmac16)]
    for in_fmt, out_fmt, fmac in cases:
        vectors = fma_vectors(rng, in_fmt, out_fmt, 400)
        for op, a, b, c in vectors:
            if op == FPOp.FMA:
                assert ref_fma(in_fmt, out_fmt, a, b, c) == int(fmac(c, a, b)), (in_fmt, a, b, c)


def test_reference_agrees_with_numpy_conversion():
    """round_to() matches numpy's float32 -> float16 cast (RNE with subnormals)."""
    rng = random.Random(2)
    for _ in range(500):
        x = random_bits(rng, FP32)
        d = decode(FP32, x)
        if d[0] != "num":
            continue
        with np.errstate(over="ignore"):
            want = int(np.array([x], dtype=np.uint32).view(np.float32).astype(np.float16)
                       .view(np.uint16)[0])
        assert round_to(FP16, d[1], d[2]) == want, hex(x)


# --- FMA unit -------------------------------------------------------------------------------

FMA_CASES = [
    pytest.param(FP16, FP32, 4, 400, id="mixed16x16+32"),
    pytest.param(FP32, FP32, 2, 300, id="fp32"),
    pytest.param(FP16, FP16, 4, 400, id="fp16"),
]


def subnormal_addend_vectors(rng, in_fmt, out_fmt, count):
    """(op, a, b, c) with a subnormal addend beside a product of about its size.

    FMA: ``c`` a subnormal of ``out_fmt`` (the unit aligns it unnormalised, its top at
    ``emin``) and ``a*b`` within a few binades of c's leading bit, either sign, so that the
    product is sometimes the larger one although its exponent is smaller, and the two
    cancel. ADD/SUB: ``b`` a subnormal of ``in_fmt`` beside ``a`` of about its size (in a
    mixed unit that addend is normalised first).
    """
    def value(fmt, exp, sign):          # a normal with leading bit 2**exp, random fraction
        return (sign << (fmt.width - 1)) | ((exp + fmt.bias) << fmt.man_bits) | \
            rng.getrandbits(fmt.man_bits)

    def subnormal(fmt):                 # random leading zeros; returns (bits, leading exp)
        frac = max(rng.getrandbits(fmt.man_bits) >> rng.randrange(fmt.man_bits), 1)
        bits = (rng.getrandbits(1) << (fmt.width - 1)) | frac
        return bits, fmt.emin - fmt.man_bits + frac.bit_length() - 1

    vectors = []
    for _ in range(50 * count):
        if len(vectors) >= count:
            break
        if rng.random() < 0.5:
            c, e_c = subnormal(out_fmt)
            target = e_c + rng.randint(-3, 2)           # the product's leading exponent
            lo, hi = max(in_fmt.emin, target - in_fmt.emax), min(in_fmt.emax,
                                                                 target - in_fmt.emin)
            if lo > hi:
                continue                                # out of reach (mixed formats)
            e_a = rng.randint(lo, hi)
            vectors.append((FPOp.FMA, value(in_fmt, e_a, rng.getrandbits(1)),
                            value(in_fmt, target - e_a, rng.getrandbits(1)), c))
        else:
            b, e_b = subnormal(in_fmt)
            e_a = max(e_b + rng.randint(-2, 3), in_fmt.emin)
            a = value(in_fmt, e_a, rng.getrandbits(1)) if e_a > in_fmt.emin + 1 or \
                rng.random() < 0.5 else subnormal(in_fmt)[0]
            vectors.append((rng.choice([FPOp.ADD, FPOp.SUB]), a, b, 0))
    return vectors


def check_fma_unit(in_fmt, out_fmt, lanes, vectors, seed):
    """Stream ``vectors`` through an FMAUnit; check every result against both references."""
    # One op per transfer: group the vectors by op, then split into lane-wide transfers.
    transfers, operands = [], []
    for op in FPOp:
        group = [(a, b, c) for o, a, b, c in vectors if o == op]
        for chunk in lanes_of(group, lanes, (0, 0, 0)):
            transfers.append((op, chunk))
    inputs = [{"op": op, "a": [a for a, _, _ in chunk], "b": [b for _, b, _ in chunk],
               "c": [c for _, _, c in chunk], "tag": index % 256}
              for index, (op, chunk) in enumerate(transfers)]
    dut = FMAUnit(in_fmt, out_fmt, lanes, tag_width=8)
    received = run_stream(dut, inputs, seed=seed)

    assert [tag for _, tag in received] == [t["tag"] for t in inputs]
    got, want, ops = [], [], []
    for (op, chunk), (results, _) in zip(transfers, received):
        for (a, b, c), result in zip(chunk, results):
            got.append(result)
            want.append(ref_op(in_fmt, out_fmt, op, a, b, c))
            ops.append((op.name, hex(a), hex(b), hex(c)))
    check(f"FMAUnit({in_fmt}, {out_fmt})", got, want, ops)

    # The colleague's golden model agrees too, wherever it has the function.
    gold = {(16, 32, FPOp.FMA): lambda a, b, c: golden.fmac_mixed(c, a, b)}
    for width, add, sub, mul, fmac in ((16, golden.add16, golden.sub16, golden.mul16,
                                        golden.fmac16),
                                       (32, golden.add32, golden.sub32, golden.mul32,
                                        golden.fmac32)):
        gold[(width, width, FPOp.FMA)] = lambda a, b, c, f=fmac: f(c, a, b)
        gold[(width, width, FPOp.ADD)] = lambda a, b, c, f=add: f(a, b)
        gold[(width, width, FPOp.SUB)] = lambda a, b, c, f=sub: f(a, b)
        gold[(width, width, FPOp.MUL)] = lambda a, b, c, f=mul: f(a, b)
    for (op, chunk), (results, _) in zip(transfers, received):
        fn = gold.get((in_fmt.width, out_fmt.width, op))
        if fn is None:
            continue
        for (a, b, c), result in zip(chunk, results):
            assert result == int(fn(a, b, c)), (op.name, hex(a), hex(b), hex(c), hex(result))


@pytest.mark.parametrize("in_fmt, out_fmt, lanes, count", FMA_CASES)
def test_fma_unit(in_fmt, out_fmt, lanes, count):
    rng = random.Random(in_fmt.width * 100 + out_fmt.width)
    check_fma_unit(in_fmt, out_fmt, lanes, fma_vectors(rng, in_fmt, out_fmt, count), count)


@pytest.mark.parametrize("in_fmt, out_fmt, lanes, count", FMA_CASES)
def test_fma_unit_subnormal_addend(in_fmt, out_fmt, lanes, count):
    """The unit aligns an addend of the result's format without normalising it: a
    subnormal c (or b) of any leading-zero count against products of about its size."""
    rng = random.Random(in_fmt.width * 100 + out_fmt.width + 1)
    vectors = subnormal_addend_vectors(rng, in_fmt, out_fmt, count)
    assert sum(op == FPOp.FMA for op, *_ in vectors) > count // 4 or in_fmt != out_fmt
    check_fma_unit(in_fmt, out_fmt, lanes, vectors, count + 1)


def test_fma_unit_signed_zeros_and_specials():
    """Table of hand-picked FP32 cases: zero signs, exact cancellation, NaN, inf rules."""
    P0, N0, ONE, NONE = 0x00000000, 0x80000000, 0x3F800000, 0xBF800000
    INF, NINF, NAN, TWO = 0x7F800000, 0xFF800000, 0x7FC00000, 0x40000000
    table = [  # op, a, b, c, expected
        (FPOp.FMA, P0, ONE, N0, P0),          # +0 + -0 = +0
        (FPOp.FMA, N0, ONE, N0, N0),          # -0 + -0 = -0
        (FPOp.FMA, ONE, ONE, NONE, P0),       # exact cancellation: +0
        (FPOp.FMA, NONE, ONE, ONE, P0),
        (FPOp.MUL, N0, ONE, 0, N0),           # MUL keeps the product's zero sign
        (FPOp.MUL, P0, NONE, 0, N0),
        (FPOp.MUL, P0, ONE, 0, P0),
        (FPOp.ADD, N0, N0, 0, N0),
        (FPOp.SUB, N0, P0, 0, N0),
        (FPOp.SUB, P0, P0, 0, P0),
        (FPOp.SUB, ONE, ONE, 0, P0),
        (FPOp.FMA, INF, P0, ONE, NAN),        # inf * 0
        (FPOp.FMA, INF, ONE, NINF, NAN),      # inf - inf
        (FPOp.FMA, INF, NONE, NINF, NINF),
        (FPOp.FMA, ONE, ONE, 0x7FA00001, NAN),  # signalling NaN addend, canonical result
        (FPOp.FMA, 0xFFC12345, ONE, ONE, NAN),
        (FPOp.SUB, INF, INF, 0, NAN),
        (FPOp.MUL, 0x7F7FFFFF, TWO, 0, INF),  # overflow
        (FPOp.MUL, 0x00000001, 0x3F000000, 0, P0),   # min subnormal / 2: tie to even 0
        (FPOp.MUL, 0x00000003, 0x3F000000, 0, 0x2),  # 1.5 ulp -> 2 ulp (even)
        (FPOp.FMA, 0x00800000, 0xBF7FFFFE, 0x00800000, 0x00000001),  # exact subnormal
        (FPOp.FMA, 0x00800000, 0xBF7FFFFF, 0x00800000, P0),          # 2**-150: tie to 0
        (FPOp.FMA, 0x00800000, 0xBF7FFFFF, 0x00800001, 0x00000002),  # 1.5 ulp: to even
    ]
    for row in table:
        assert ref_op(FP32, FP32, *row[:4]) == row[4], row
    inputs = [{"op": op, "a": [a, a], "b": [b, b], "c": [c, c], "tag": k}
              for k, (op, a, b, c, _) in enumerate(table)]
    received = run_stream(FMAUnit(FP32, FP32, 2, tag_width=5), inputs, seed=7)
    for row, (results, tag) in zip(table, received):
        assert results == [row[4], row[4]], (row, [hex(r) for r in results])


# --- single-stage units ---------------------------------------------------------------------

def unit_vectors(rng, fmt, count):
    values = SPECIAL[fmt.width] + [random_bits(rng, fmt) for _ in range(count)]
    return values


@pytest.mark.parametrize("fmt, lanes", [(FP16, 4), (FP32, 2)], ids=["fp16", "fp32"])
def test_max_unit(fmt, lanes):
    rng = random.Random(fmt.width + 11)
    specials = SPECIAL[fmt.width]
    pairs = [(a, b) for a in specials for b in specials]     # every class pair
    pairs = rng.sample(pairs, 200) + [(random_bits(rng, fmt), random_bits(rng, fmt))
                                      for _ in range(200)]
    pairs += [(a, a ^ 1) for a, _ in pairs[:40]]             # neighbours
    chunks = lanes_of(pairs, lanes, (0, 0))
    inputs = [{"a": [a for a, _ in ch], "b": [b for _, b in ch], "tag": k % 16}
              for k, ch in enumerate(chunks)]
    received = run_stream(MaxUnit(fmt, lanes, tag_width=4), inputs, seed=3)
    assert [t for _, t in received] == [x["tag"] for x in inputs]
    maximum = golden.max16 if fmt.width == 16 else golden.max32
    got = [r for results, _ in received for r in results]
    flat = [p for ch in chunks for p in ch]
    want = []
    for a, b in flat:                                        # independent reference
        da, db = decode(fmt, a), decode(fmt, b)
        if "nan" in (da[0], db[0]):
            want.append(fmt.nan_bits)
            continue
        key = lambda d, bits: (float("inf") if d[0] == "inf" else d[2]) * (-1 if d[1] else 1)
        ka, kb = key(da, a), key(db, b)
        if ka == kb:                                         # equal reals: +0 beats -0
            want.append(a if not (a >> (fmt.width - 1)) else b)
        else:
            want.append(a if ka > kb else b)
    check(f"MaxUnit({fmt})", got, want, flat)
    assert got == [int(maximum(a, b)) for a, b in flat]


@pytest.mark.parametrize("fmt, lanes", [(FP16, 4), (FP32, 2)], ids=["fp16", "fp32"])
def test_neg_unit(fmt, lanes):
    rng = random.Random(fmt.width + 12)
    values = unit_vectors(rng, fmt, 200)
    chunks = lanes_of(values, lanes, 0)
    inputs = [{"a": ch, "tag": k % 4} for k, ch in enumerate(chunks)]
    received = run_stream(NegUnit(fmt, lanes, tag_width=2), inputs, seed=4)
    got = [r for results, _ in received for r in results]
    flat = [x for ch in chunks for x in ch]
    want = [fmt.nan_bits if decode(fmt, x)[0] == "nan" else x ^ fmt.sign_mask for x in flat]
    check(f"NegUnit({fmt})", got, want, flat)
    negate = golden.neg16 if fmt.width == 16 else golden.neg32
    assert got == [int(negate(x)) for x in flat]


def test_f16_to_f32_unit():
    rng = random.Random(13)
    values = unit_vectors(rng, FP16, 300)
    chunks = lanes_of(values, 4, 0)
    inputs = [{"a": ch, "tag": k % 8} for k, ch in enumerate(chunks)]
    received = run_stream(F16ToF32(4, tag_width=3), inputs, seed=5)
    got = [r for results, _ in received for r in results]
    flat = [x for ch in chunks for x in ch]
    want = []
    for x in flat:
        d = decode(FP16, x)
        want.append(FP32.nan_bits if d[0] == "nan" else
                    (d[1] << 31) | FP32.inf_bits if d[0] == "inf" else round_to(FP32, d[1], d[2]))
    check("F16ToF32", got, want, flat)
    assert got == [int(golden.f16_to_f32(x)) for x in flat]


def test_f32_to_f16_unit():
    rng = random.Random(14)
    values = unit_vectors(rng, FP32, 300)
    # Values around the FP16 range: overflow edge, subnormal ties, underflow to zero.
    for _ in range(150):
        efield = rng.randrange(127 - 27, 127 + 17)
        values.append((rng.getrandbits(1) << 31) | (efield << 23) | rng.choice(
            [rng.getrandbits(23), rng.getrandbits(23) & ~0x1FFF | 0x1000, 0x7FF000]))
    # Just below, at and above the ties of the subnormal range, where the sticky bit comes
    # from bits shifted out of the significand entirely.
    for efield in range(127 - 26, 127 - 13):
        for frac in (0, 1, 0x7FF, 0x400000, 0x400001, 0x3FFFFF, 0x7FFFFF):
            values.append((rng.getrandbits(1) << 31) | (efield << 23) | frac)
    chunks = lanes_of(values, 2, 0)
    inputs = [{"a": ch, "tag": k % 8} for k, ch in enumerate(chunks)]
    received = run_stream(F32ToF16(2, tag_width=3), inputs, seed=6)
    got = [r for results, _ in received for r in results]
    flat = [x for ch in chunks for x in ch]
    want = []
    for x in flat:
        d = decode(FP32, x)
        want.append(FP16.nan_bits if d[0] == "nan" else
                    (d[1] << 15) | FP16.inf_bits if d[0] == "inf" else round_to(FP16, d[1], d[2]))
    check("F32ToF16", got, want, flat)
    assert got == [int(golden.f32_to_f16(x)) for x in flat]


# --- handshake, API and export --------------------------------------------------------------

def test_fma_back_pressure_heavy():
    """Long stalls and bursts: every transfer comes out once, in order, with its tag."""
    inputs = [{"op": FPOp.FMA, "a": [0x3C00 + k], "b": [0x3C00], "c": [0], "tag": k % 64}
              for k in range(120)]
    for p_valid, p_ready, seed in ((1.0, 0.2, 1), (0.3, 1.0, 2), (0.9, 0.5, 3)):
        received = run_stream(FMAUnit(FP16, FP32, 1, tag_width=6), inputs, seed=seed,
                              p_valid=p_valid, p_ready=p_ready)
        assert [t for _, t in received] == [x["tag"] for x in inputs]
        assert [r[0] for r, _ in received] == [
            ref_fma(FP16, FP32, x["a"][0], 0x3C00, 0) for x in inputs]


def test_full_throughput():
    """With o.ready held high and i.valid always set, one result per cycle after latency."""
    dut = FMAUnit(FP16, FP16, 1)
    outputs = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for cycle in range(12):
            ctx.set(dut.i.payload.a[0], 0x3C00 + cycle)
            ctx.set(dut.i.payload.b[0], 0x3C00)
            assert ctx.get(dut.i.ready)
            if ctx.get(dut.o.valid):
                outputs.append((cycle, ctx.get(dut.o.payload.result[0])))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert [c for c, _ in outputs] == list(range(dut.latency, 12))
    assert [r for _, r in outputs] == [0x3C00 + k for k in range(12 - dut.latency)]


def test_format_constants():
    assert (FP16.width, FP16.bias, FP16.nan_bits, FP16.inf_bits) == (16, 15, 0x7E00, 0x7C00)
    assert (FP32.width, FP32.bias, FP32.nan_bits, FP32.one_bits) == (32, 127, 0x7FC00000,
                                                                      0x3F800000)
    assert FPFormat(5, 10) == FP16 and FP16 != FP32
    assert FMAUnit.latency == 3 and MaxUnit.latency == 1
    with pytest.raises(TypeError, match="in_fmt"):
        FMAUnit("fp16", FP32, 4)
    with pytest.raises(ValueError, match="lanes"):
        FMAUnit(FP16, FP32, 0)
    with pytest.raises(ValueError, match="lanes"):
        MaxUnit(FP16, -1)
    with pytest.raises(TypeError, match="fmt"):
        NegUnit(16, 4)
    with pytest.raises(ValueError, match="exp_bits"):
        FPFormat(1, 10)


def test_verilog_export_mixed():
    from amaranth.back import verilog
    text = verilog.convert(FMAUnit(FP16, FP32, 2, tag_width=4), name="fma_mixed")
    assert "module fma_mixed" in text
