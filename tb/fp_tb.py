"""cocotb bench: every FP unit against golden/fp.py, bit for bit.

The top is :class:`tb.fp_top.FPRegressionTop`. One cocotb test streams one (unit, op) case,
chosen by ``tb_params``: the full cross of special operand classes, targeted boundary cases
(rounding ties, overflow, the subnormal/normal boundary) and ``count`` random operands from a
generator that mixes uniform bits with operands of nearby exponents, short significands and
near-cancelling addends. A second test runs a unit under random idle insertion and random
back-pressure and checks that every result arrives once, in order, correct.

Vectors are built and checked with numpy; Python's per-cycle work is one payload write and
one read, with :data:`tb.fp_top.LANES` vectors per cycle.
"""

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from golden import fp as gfp
from tb.fp_top import LANES, TAG_WIDTH, payload_fields
from runtime.sim import params

#: unit -> op -> (operand formats (a, b, c) as bit widths or None, golden function)
CASES = {
    "fma_mixed": {"FMA": ((16, 16, 32), lambda a, b, c: gfp.fmac_mixed(c, a, b))},
    "fma_fp32": {
        "FMA": ((32, 32, 32), lambda a, b, c: gfp.fmac32(c, a, b)),
        "MUL": ((32, 32, None), lambda a, b, c: gfp.mul32(a, b)),
        "ADD": ((32, 32, None), lambda a, b, c: gfp.add32(a, b)),
        "SUB": ((32, 32, None), lambda a, b, c: gfp.sub32(a, b)),
    },
    "fma_fp16": {
        "FMA": ((16, 16, 16), lambda a, b, c: gfp.fmac16(c, a, b)),
        "MUL": ((16, 16, None), lambda a, b, c: gfp.mul16(a, b)),
        "ADD": ((16, 16, None), lambda a, b, c: gfp.add16(a, b)),
        "SUB": ((16, 16, None), lambda a, b, c: gfp.sub16(a, b)),
    },
    "max_fp16": {"MAX": ((16, 16, None), lambda a, b, c: gfp.max16(a, b))},
    "max_fp32": {"MAX": ((32, 32, None), lambda a, b, c: gfp.max32(a, b))},
    "neg_fp16": {"NEG": ((16, None, None), lambda a, b, c: gfp.neg16(a))},
    "neg_fp32": {"NEG": ((32, None, None), lambda a, b, c: gfp.neg32(a))},
    "f16_to_f32": {"CVT": ((16, None, None), lambda a, b, c: gfp.f16_to_f32(a))},
    "f32_to_f16": {"CVT": ((32, None, None), lambda a, b, c: gfp.f32_to_f16(a))},
}

OPCODES = {"FMA": 0, "MUL": 1, "ADD": 2, "SUB": 3}
_DTYPE = {16: np.uint16, 32: np.uint32}


# --- operand generation ----------------------------------------------------------------------

def _specials(width):
    return np.asarray(gfp.special_values16() if width == 16 else gfp.special_values32())


def _boundary(width):
    """Operands that put results at the edges: overflow, the subnormal/normal boundary, ties.

    Crossed with each other and with the specials they give, among others: the overflow tie
    (FP16 65504 + 16 = 65520, FP32 max + 2**103), results just below overflow (max times
    1 - ulp), products and sums at and just below the smallest normal, and FP32 inputs that
    convert to FP16 exactly at, just below and just above a rounding tie at overflow, at the
    subnormal/normal boundary and at half the smallest subnormal.
    """
    if width == 16:
        vals = [0x7BFF, 0x7BFE, 0x7800, 0x0400, 0x0401, 0x03FF, 0x0200, 0x0001, 0x0002,
                0x3C00, 0x3C01, 0x3BFF, 0x3800, 0x4000, 0x1400, 0x1000, 0x0C00, 0x3555,
                0x4C00, 0x4BFF, 0x4C01,          # 16 -/+: 65504 + 16 is the overflow tie
                0x5BFF, 0x5C00, 0x5C01,          # ~256: products at 65504 and beyond
                0x1C00, 0x2000, 0x1FFF]          # ~2**-8: products at the normal boundary
    else:
        vals = [0x7F7FFFFF, 0x7F7FFFFE, 0x7F000000, 0x00800000, 0x00800001, 0x007FFFFF,
                0x00400000, 0x00000001, 0x00000002, 0x3F800000, 0x3F800001, 0x3F7FFFFF,
                0x3F000000, 0x40000000, 0x33800000, 0x34000000, 0x0C800000, 0x3EAAAAAB,
                0x73000000, 0x72FFFFFF, 0x73000001,   # 2**103: max + it is the overflow tie
                0x5F800000, 0x5F7FFFFF, 0x5F800001,   # 2**64: products at max and beyond
                0x20000000, 0x1FFFFFFF,               # 2**-63: products at min normal
                # FP32 -> FP16 edges: 65504, just below/at/above the 65520 tie, the largest
                # subnormal, the subnormal/normal tie, half the smallest subnormal (tie to
                # 0), 1.5 x the smallest subnormal (tie to even), the smallest normal
                0x477FE000, 0x477FEFFF, 0x477FF000, 0x477FF001, 0x387FC000, 0x387FE000,
                0x387FDFFF, 0x33000000, 0x33000001, 0x33C00000, 0x38800000, 0x387FFFFF]
    vals = np.asarray(vals, dtype=_DTYPE[width])
    return np.concatenate([vals, vals | _DTYPE[width](1 << (width - 1))])


def _random_bits(rng, width, n, ref=None):
    """Random operands: uniform bits, specials, nearby exponents and short significands."""
    dtype = _DTYPE[width]
    man = 10 if width == 16 else 23
    emask = (1 << (width - 1 - man)) - 1
    out = rng.integers(0, 1 << width, n, dtype=np.uint64).astype(dtype)
    kind = rng.integers(0, 8, n)
    # nearby exponents (cancellation, alignment ties): around ref's exponent or 1.0's
    near = kind >= 4
    base_exp = (((ref.astype(np.int64) >> man) & emask) if ref is not None
                else np.full(n, emask >> 1, dtype=np.int64))
    exp = np.clip(base_exp + rng.integers(-3 if width == 16 else -26,
                                          4 if width == 16 else 27, n), 0, emask)
    mant = rng.integers(0, 1 << man, n, dtype=np.int64)
    short = kind == 7   # few significant bits: exact products, exact ties
    mant = np.where(short, mant & (((1 << man) - 1) ^ ((1 << (man - 3)) - 1)), mant)
    sign = rng.integers(0, 2, n, dtype=np.int64) << (width - 1)
    out = np.where(near, (sign | (exp << man) | mant).astype(dtype), out)
    # a sprinkle of specials
    specials = _specials(width)
    pick = kind == 3
    out[pick] = specials[rng.integers(0, len(specials), pick.sum())]
    return out


def _cancelling_addend(rng, a, b, width_ab, width_c):
    """An addend close to -(a*b), so that the fused sum cancels massively."""
    fa = (gfp.bits_to_f16(a) if width_ab == 16 else gfp.bits_to_f32(a)).astype(np.float64)
    fb = (gfp.bits_to_f16(b) if width_ab == 16 else gfp.bits_to_f32(b)).astype(np.float64)
    with np.errstate(all="ignore"):
        p = -(fa * fb)
        c = gfp.f32_to_bits(p) if width_c == 32 else gfp.f16_to_bits(p)
    c = c.astype(np.int64) + rng.integers(-2, 3, len(c))
    return np.clip(c, 0, (1 << width_c) - 1).astype(_DTYPE[width_c])


def make_vectors(unit, op, count, seed, cross=True):
    """(a, b, c) operand arrays for a case: special cross, boundary cross, random.

    With ``cross=False`` only the ``count`` random operands (the back-pressure runs).
    """
    widths, _ = CASES[unit][op]
    rng = np.random.default_rng(seed)
    used = [w for w in widths if w is not None]
    # full cross of the special classes (+ boundary values) over the used operands
    sets = [np.concatenate([_specials(w), _boundary(w)]) for w in used]
    if not cross:
        sets = [s[:0] for s in sets]
    grids = np.meshgrid(*sets, indexing="ij")
    cross = [g.ravel() for g in grids]
    # random operands; a third of the addends cancel the product
    rand = []
    for k, w in enumerate(used):
        ref = rand[0] if (k > 0 and rand and w == used[0]) else None
        rand.append(_random_bits(rng, w, count, ref))
    if len(used) == 3:
        cancel = rng.random(count) < 0.33
        addend = _cancelling_addend(rng, rand[0], rand[1], used[0], used[2])
        rand[2] = np.where(cancel, addend, rand[2]).astype(_DTYPE[used[2]])
    ops = [np.concatenate([x, r]).astype(_DTYPE[w]) for x, r, w in zip(cross, rand, used)]
    n = len(ops[0])
    full = []
    for w in widths:
        full.append(ops.pop(0) if w is not None else None)
    if unit.startswith("fma") and full[2] is None:
        # c is ignored by MUL/ADD/SUB: feed random bits to prove it
        cw = 32 if unit in ("fma_mixed", "fma_fp32") else 16
        full[2] = rng.integers(0, 1 << cw, n, dtype=np.uint64).astype(_DTYPE[cw])
    if unit == "f16_to_f32" and n > count:
        full[0] = np.arange(1 << 16, dtype=np.uint16)   # exhaustive
    return full


def expected(unit, op, a, b, c):
    """Golden result bits for a case."""
    return np.asarray(CASES[unit][op][1](a, b, c))


# --- packing ---------------------------------------------------------------------------------

def _pack_field(values, offset, width, count):
    """Per-cycle Python ints holding ``count`` lanes of ``values`` (shape [cycles, count])."""
    cycles = values.shape[0]
    raw = values.astype(_DTYPE[width]).reshape(cycles, count)
    return [int.from_bytes(row.tobytes(), "little") << offset for row in raw]


def _pad(x, lanes):
    pad = (-len(x)) % lanes
    return np.concatenate([x, np.zeros(pad, dtype=x.dtype)]) if pad else x


def pack_inputs(unit, op, operands, lanes=LANES):
    """Per-cycle payload ints for a unit's input stream, and the number of vectors."""
    fields = payload_fields(unit, "i")
    n = len(operands[0])
    cycles = -(-n // lanes)
    words = [0] * cycles
    for name, arr in zip(("a", "b", "c"), operands):
        if arr is None or name not in fields:
            continue
        off, width, count = fields[name]
        packed = _pack_field(_pad(arr, lanes).reshape(cycles, lanes), off, width, count)
        words = [w | p for w, p in zip(words, packed)]
    if "op" in fields:
        off = fields["op"][0]
        words = [w | (OPCODES[op] << off) for w in words]
    toff = fields["tag"][0]
    words = [w | ((k & ((1 << TAG_WIDTH) - 1)) << toff) for k, w in enumerate(words)]
    return words, n


def unpack_results(unit, words, n, lanes=LANES):
    """Result bits (numpy) and tags from the output payload ints."""
    fields = payload_fields(unit, "o")
    off, width, count = fields["result"]
    toff, twidth, _ = fields["tag"]
    nbytes = width * count // 8
    raw = b"".join(((w >> off) & ((1 << (width * count)) - 1)).to_bytes(nbytes, "little")
                   for w in words)
    res = np.frombuffer(raw, dtype=_DTYPE[width])[:n]
    tags = [(w >> toff) & ((1 << twidth) - 1) for w in words]
    return res, tags


def check(unit, op, operands, got, want, limit=10):
    """Raise AssertionError listing the first mismatches with operands in hex."""
    bad = np.nonzero(got != want)[0]
    if len(bad) == 0:
        return
    names = [n for n, x in zip("abc", operands) if x is not None]
    lines = []
    for i in bad[:limit]:
        ops = " ".join(f"{nm}={int(x[i]):#x}" for nm, x in zip(names, operands)
                       if x is not None)
        lines.append(f"  {unit} {op} {ops}: expected {int(want[i]):#x} got {int(got[i]):#x}")
    raise AssertionError(f"{len(bad)} of {len(got)} {unit} {op} results differ:\n"
                         + "\n".join(lines))


# --- driving ---------------------------------------------------------------------------------

async def _reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0


async def _stream(dut, unit, payloads, *, rng=None, idle=0.0, stall=0.0, budget=None):
    """Push ``payloads`` through ``unit``; return the output payload ints in arrival order.

    Without ``rng`` the input is offered every cycle and the output never stalls: the fast
    path, one write and one read per cycle. With ``rng``, the input idles and the output
    stalls at random, and every handshake is sampled in the read-only phase before the edge
    at which it transfers.
    """
    i_valid = getattr(dut, f"{unit}_i__valid")
    i_ready = getattr(dut, f"{unit}_i__ready")
    i_payload = getattr(dut, f"{unit}_i__payload")
    o_valid = getattr(dut, f"{unit}_o__valid")
    o_ready = getattr(dut, f"{unit}_o__ready")
    o_payload = getattr(dut, f"{unit}_o__payload")
    outputs = []
    sent = 0
    budget = budget or (len(payloads) * 4 + 100)
    if rng is None:
        o_ready.value = 1
        for _ in range(budget):
            if len(outputs) == len(payloads):
                break
            if sent < len(payloads):
                i_valid.value = 1
                i_payload.value = payloads[sent]
                sent += 1
            else:
                i_valid.value = 0
            await RisingEdge(dut.clk)
            if o_valid.value:
                outputs.append(int(o_payload.value))
    else:
        for _ in range(budget):
            if len(outputs) == len(payloads):
                break
            ready = rng.random() >= stall
            o_ready.value = int(ready)
            offer = sent < len(payloads) and rng.random() >= idle
            i_valid.value = int(offer)
            if offer:
                i_payload.value = payloads[sent]
            await ReadOnly()
            if offer and i_ready.value:
                sent += 1
            if o_valid.value and ready:
                outputs.append(int(o_payload.value))
            await RisingEdge(dut.clk)
    i_valid.value = 0
    assert len(outputs) == len(payloads), (
        f"{unit}: {len(outputs)} of {len(payloads)} results after {budget} cycles "
        f"({sent} accepted): the pipeline stopped making progress")
    return outputs


@cocotb.test()
async def fp_vectors(dut):
    """One (unit, op) case at full rate: specials cross, boundary cross and random operands."""
    p = params()
    unit, op = p["unit"], p["op"]
    operands = make_vectors(unit, op, p["count"], p["seed"])
    want = expected(unit, op, *operands)
    payloads, n = pack_inputs(unit, op, operands)
    await _reset(dut)
    outputs = await _stream(dut, unit, payloads)
    got, tags = unpack_results(unit, outputs, n)
    assert tags == [k & ((1 << TAG_WIDTH) - 1) for k in range(len(payloads))], \
        f"{unit}: results out of order or duplicated"
    check(unit, op, operands, got, want)
    dut._log.info("%s %s: %d vectors bit-exact", unit, op, n)


@cocotb.test()
async def fp_backpressure(dut):
    """Random idle cycles and random output stalls: every result once, in order, correct."""
    import random
    p = params()
    unit, op = p["unit"], p["op"]
    operands = make_vectors(unit, op, p["count"], p["seed"], cross=False)
    want = expected(unit, op, *operands)
    payloads, n = pack_inputs(unit, op, operands)
    await _reset(dut)
    rng = random.Random(p["seed"])
    outputs = await _stream(dut, unit, payloads, rng=rng, idle=0.3, stall=0.4,
                            budget=len(payloads) * 20 + 100)
    got, tags = unpack_results(unit, outputs, n)
    assert tags == [k & ((1 << TAG_WIDTH) - 1) for k in range(len(payloads))], \
        f"{unit}: results lost, duplicated or reordered under back-pressure"
    check(unit, op, operands, got, want)
