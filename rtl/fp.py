"""Floating-point units of the processing element (SPEC sections 4.3 and 6).

Bit-exact IEEE 754 binary16 / binary32 arithmetic: round to nearest even, subnormal inputs
and outputs (no flush to zero), signed zeros, infinities, and one NaN result per format, the
canonical quiet NaN (``0x7E00`` / ``0x7FC00000``), whatever NaN came in.

Stream units (``wiring.Component``, one ``i`` and one ``o`` stream, lanes in an array):

* :class:`FMAUnit` -- fused ``c + a*b`` with a single rounding, plus ``a*b``, ``a+b`` and
  ``a-b`` on the same datapath, selected per transfer by :class:`FPOp`. Latency 3.
* :class:`MaxUnit`, :class:`NegUnit`, :class:`F16ToF32`, :class:`F32ToF16` -- latency 1.

Every unit advances its whole pipeline on ``~o.valid | o.ready`` (which is also ``i.ready``),
so each accepted transfer leaves exactly ``latency`` advances later, in order, with its
``tag`` untouched. The combinational cores (:func:`fp_max`, :func:`fp_neg`,
:func:`f16_to_f32`, :func:`f32_to_f16`) are plain functions that build logic into a module,
for use inline in the PE datapath. ``docs/fp_units.md`` explains the algorithm and choices.
"""

import contextlib

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, unsigned
from amaranth.hdl import EnableInserter
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

__all__ = [
    "FPFormat", "FP16", "FP32", "FPOp",
    "FMAUnit", "MaxUnit", "NegUnit", "F16ToF32", "F32ToF16",
    "fp_max", "fp_neg", "f16_to_f32", "f32_to_f16",
]


class FPFormat:
    """An IEEE 754 binary interchange format: 1 sign bit, ``exp_bits``, ``man_bits``.

    Besides the field widths it gives the derived constants the units need (``bias``,
    ``emin``, the bit patterns of one, infinity and the canonical NaN) and small helpers that
    slice or classify a raw-bits Amaranth value of this format.

    Parameters
    ----------
    exp_bits : int
        Width of the biased exponent field (at least 2).
    man_bits : int
        Width of the stored fraction field, without the hidden bit (at least 1).
    """

    def __init__(self, exp_bits, man_bits):
        for name, value, minimum in (("exp_bits", exp_bits, 2), ("man_bits", man_bits, 1)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if value < minimum:
                raise ValueError(f"{name} must be at least {minimum}, not {value}")
        self._exp_bits = exp_bits
        self._man_bits = man_bits

    @property
    def exp_bits(self):
        """Width of the biased exponent field."""
        return self._exp_bits

    @property
    def man_bits(self):
        """Width of the fraction field (the hidden bit is not stored)."""
        return self._man_bits

    @property
    def width(self):
        """Total width in bits (16 for FP16, 32 for FP32)."""
        return 1 + self._exp_bits + self._man_bits

    @property
    def precision(self):
        """Significand width including the hidden bit."""
        return self._man_bits + 1

    @property
    def bias(self):
        """Exponent bias: ``2**(exp_bits-1) - 1``."""
        return (1 << (self._exp_bits - 1)) - 1

    @property
    def emin(self):
        """Unbiased exponent of the smallest normal number (also of the subnormals)."""
        return 1 - self.bias

    @property
    def emax(self):
        """Unbiased exponent of the largest finite number."""
        return self.bias

    @property
    def sign_mask(self):
        """The sign bit as a mask."""
        return 1 << (self.width - 1)

    @property
    def exp_field_max(self):
        """The all-ones biased exponent (infinities and NaNs)."""
        return (1 << self._exp_bits) - 1

    @property
    def inf_bits(self):
        """Bits of +infinity (``inf_bits | sign_mask`` is -infinity)."""
        return self.exp_field_max << self._man_bits

    @property
    def nan_bits(self):
        """Bits of the canonical quiet NaN, the only NaN any unit returns."""
        return self.inf_bits | (1 << (self._man_bits - 1))

    @property
    def one_bits(self):
        """Bits of +1.0."""
        return self.bias << self._man_bits

    @property
    def neg_zero_bits(self):
        """Bits of -0.0."""
        return self.sign_mask

    def shape(self):
        """Amaranth shape of one raw value of this format."""
        return unsigned(self.width)

    # Helpers on raw-bits Amaranth values of this format.

    def sign(self, value):
        """Sign bit of ``value``."""
        return value[self.width - 1]

    def exponent(self, value):
        """Biased exponent field of ``value``."""
        return value[self._man_bits:self.width - 1]

    def fraction(self, value):
        """Stored fraction field of ``value``."""
        return value[:self._man_bits]

    def is_nan(self, value):
        """True for any NaN (quiet or signalling, any sign or payload)."""
        return value[:self.width - 1] > self.inf_bits

    def is_inf(self, value):
        """True for +infinity or -infinity."""
        return value[:self.width - 1] == self.inf_bits

    def is_zero(self, value):
        """True for +0 or -0."""
        return value[:self.width - 1] == 0

    def __eq__(self, other):
        return (isinstance(other, FPFormat)
                and (self._exp_bits, self._man_bits) == (other._exp_bits, other._man_bits))

    def __hash__(self):
        return hash((FPFormat, self._exp_bits, self._man_bits))

    def __repr__(self):
        return f"FPFormat({self._exp_bits}, {self._man_bits})"


FP16 = FPFormat(5, 10)
"""IEEE 754 binary16."""
FP32 = FPFormat(8, 23)
"""IEEE 754 binary32."""


class FPOp(enum.Enum, shape=2):
    """Operation of an :class:`FMAUnit` transfer.

    ``FMA`` is fused ``c + a*b`` (one rounding); ``MUL`` is ``a*b``, ``ADD`` is ``a + b`` and
    ``SUB`` is ``a - b`` (``c`` is ignored by those three).
    """
    FMA = 0
    MUL = 1
    ADD = 2
    SUB = 3


# --- combinational building blocks ----------------------------------------------------------

_GATES = []      # (when, idle) of the innermost _evaluated_when, applied by _wire


@contextlib.contextmanager
def _evaluated_when(when, idle):
    """Within: every :func:`_wire` is ``value`` while ``when`` is high, else ``idle``.

    For logic whose result is used only while ``when`` is high. ``idle`` is any value that
    is not a constant (a register, say): Verilator keeps ``Mux(when, value, idle)`` as a C++
    conditional, so its model skips computing ``value`` in the other cycles (against a
    constant it would compute ``value`` and mask it). ``when=None``: no effect."""
    if when is None:
        yield
        return
    _GATES.append((when, idle))
    try:
        yield
    finally:
        _GATES.pop()


def _wire(m, value, name, shape=None):
    """``value`` as a named combinational signal, so that it is built once however often it
    is used (Amaranth re-emits an expression at every use) and reads well in the Verilog."""
    signal = Signal(value.shape() if shape is None else shape, name=name)
    if _GATES:
        when, idle = _GATES[-1]
        value = Mux(when, value, idle)
    m.d.comb += signal.eq(value)
    return signal


def _leading_zeros(value):
    """Number of leading zeros of ``value`` (its width when ``value`` is zero).

    A tree of halves, so the logic depth grows with log2 of the width; the tests at each
    level are independent, which Verilator compiles into short branch-free code.
    """
    width = len(value)
    if width == 1:
        return ~value[0]
    upper = value[width // 2:]
    lower = value[:width // 2]
    return Mux(upper.any(), _leading_zeros(upper), len(upper) + _leading_zeros(lower))


def _normalize(m, value, name):
    """``value`` shifted left until its top bit is set, and the shift (its leading zeros).

    The shift is kept to ``len(value)`` bits: the Verilog shifter's result is wider, but
    only its low bits are used, so Verilator computes it as one native shift.
    """
    width = len(value)
    lz = _wire(m, _leading_zeros(value), f"{name}_lz", bits_for(width))
    return _wire(m, (value << lz)[:width], name), lz


def _lost_bits(value, amount):
    """Whether ``value >> amount`` drops a set bit (``amount <= len(value)``): ``value``
    under a mask of its ``amount`` low bits, made by shifting a constant right (a left shift
    by a variable would widen the value in the Verilog)."""
    width = len(value)
    return (value & (Const((1 << width) - 1, width) >> (width - amount)[:bits_for(width)])) != 0


def _shift_right_sticky(m, value, amount, name):
    """``value >> amount`` and whether any set bit was shifted out (``amount <= len(value)``),
    both as wide as ``value``."""
    return (_wire(m, value >> amount, f"{name}_shifted"),
            _wire(m, _lost_bits(value, amount), f"{name}_lost"))


class _ArgumentChecks:
    """Context for a constructor's argument checks: a component that raises there was never
    going to be used, so Amaranth's "created but never used" warning is silenced for it."""

    def __init__(self, component):
        self.component = component

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.component._MustUse__silence = True
        return False


def _check_format(fmt, name):
    if not isinstance(fmt, FPFormat):
        raise TypeError(f"{name} must be an FPFormat, not {fmt!r}")


def _check_lanes_tag(lanes, tag_width):
    if not isinstance(lanes, int) or isinstance(lanes, bool):
        raise TypeError(f"lanes must be an int, not {lanes!r}")
    if lanes < 1:
        raise ValueError(f"lanes must be at least 1, not {lanes}")
    if not isinstance(tag_width, int) or isinstance(tag_width, bool):
        raise TypeError(f"tag_width must be an int, not {tag_width!r}")
    if tag_width < 0:
        raise ValueError(f"tag_width must be non-negative, not {tag_width}")


class _Unpacked:
    """Fields of one operand: sign, class flags, the significand with its hidden bit, and
    the exponent of the significand's top bit.

    Exponents are *unsigned*, offset by ``exp_offset`` (``exp = e + exp_offset`` for a top
    bit of weight ``2**e``, modulo ``2**exp_width``): plain unsigned adds and compares,
    cheaper in a simulator than signed arithmetic. The caller picks an offset that keeps
    every non-zero operand's exponent in range; a zero's exponent is meaningless.

    With ``normalize`` the significand is shifted so that its top bit is set (subnormals
    look like normal numbers with a smaller exponent); without, a subnormal keeps its
    leading zeros and the exponent of ``emin``.
    """

    def __init__(self, m, fmt, bits, name, exp_width, exp_offset, normalize=True):
        frac = fmt.fraction(bits)
        efield = fmt.exponent(bits)
        subnormal = _wire(m, efield == 0, f"{name}_subnormal")
        self.sign = fmt.sign(bits)
        self.zero = fmt.is_zero(bits)
        self.inf = fmt.is_inf(bits)
        self.nan = fmt.is_nan(bits)
        self.efield, self.subnormal = efield, subnormal
        raw_sig = _wire(m, Cat(frac, ~subnormal), f"{name}_raw_sig")
        # max(efield, 1), plus the offset and minus the bias
        exp = efield + subnormal + (exp_offset - fmt.bias) % (1 << exp_width)
        if normalize:
            sig, lz = _normalize(m, raw_sig, f"{name}_norm")
            self.sig = _wire(m, sig, f"{name}_sig")
            self.exp = _wire(m, exp - lz, f"{name}_exp", exp_width)
        else:
            self.sig = raw_sig
            self.exp = _wire(m, exp, f"{name}_exp", exp_width)


def _round_and_pack(m, fmt, sign, exp, sig, name, exp_offset):
    """Round ``sig`` (top bit of weight ``2**(exp - exp_offset)``) to ``fmt`` bits, RNE.

    ``exp`` is unsigned, offset by ``exp_offset`` (see :class:`_Unpacked`). ``sig`` must
    have its top bit set unless the exponent is at most ``fmt.emin`` (or be zero, giving a
    signed zero). Below ``emin`` the significand is first shifted to the subnormal position,
    collecting a sticky bit; overflow gives infinity. NaN and infinity inputs are the caller's.
    """
    p = fmt.precision
    if len(sig) < p + 2:
        sig = Cat(Const(0, p + 2 - len(sig)), sig)
    width = len(sig)
    emin = fmt.emin + exp_offset
    tiny = _wire(m, exp < emin, f"{name}_tiny")
    below = _wire(m, emin - exp, f"{name}_below", len(exp))   # meaningful when tiny
    shift = _wire(m, Mux(tiny, Mux(below > width, width, below), 0), f"{name}_denorm_shift",
                  bits_for(width))
    shifted, lost = _shift_right_sticky(m, sig, shift, f"{name}_denorm")
    mant = _wire(m, shifted[width - p:], f"{name}_mant")
    guard = shifted[width - p - 1]
    sticky = (shifted[:width - p - 1] != 0) | lost
    round_up = _wire(m, guard & (sticky | mant[0]), f"{name}_round_up")
    # The biased exponent minus one (0 for a subnormal), never negative here.
    field = _wire(m, Mux(tiny, emin, exp) - (exp_offset - fmt.bias + 1), f"{name}_field",
                  len(exp) + 1)
    # The hidden bit adds into the exponent field: a subnormal that rounds up to 2**emin, and
    # a carry out of the significand, both land on the right encoding without a special case.
    packed = _wire(m, Cat(Const(0, fmt.man_bits), field) + (mant + round_up), f"{name}_packed")
    magnitude = Mux(packed >= fmt.inf_bits, fmt.inf_bits, packed[:fmt.width - 1])
    return _wire(m, Cat(magnitude, sign), f"{name}_bits")


# --- combinational cores for inline use -----------------------------------------------------

def fp_max(m, fmt, a, b, *, minimum=0, when=None, idle=None):
    """Build ``max(a, b)`` on raw ``fmt`` bits into ``m``; return the result value.

    Canonical NaN if either operand is a NaN; ``max(-0, +0) = +0``; otherwise the larger.
    ``minimum`` (a constant or a 1-bit value): the smaller instead (``min(-0, +0) = -0``),
    on the same comparator. With ``when`` (and ``idle``, not a constant): the result is
    needed only while ``when`` is high, and is ``idle`` otherwise, which Verilator's model
    does not compute.
    """
    _check_format(fmt, "fmt")

    def order_key(x):  # unsigned order of the reals: negatives flipped below the positives
        return Mux(fmt.sign(x), ~x, x | fmt.sign_mask)[:fmt.width]

    with _evaluated_when(when, idle):
        return _wire(m, Mux(fmt.is_nan(a) | fmt.is_nan(b), fmt.nan_bits,
                            Mux((order_key(a) >= order_key(b)) ^ minimum, a, b)),
                     "max_result", fmt.width)


def fp_copysign(m, fmt, a, b, *, when=None, idle=None):
    """Build ``|a|`` with the sign of ``b`` on raw ``fmt`` bits into ``m``; canonical NaN if
    either operand is a NaN. ``when``, ``idle``: as for :func:`fp_max`."""
    _check_format(fmt, "fmt")
    with _evaluated_when(when, idle):
        return _wire(m, Mux(fmt.is_nan(a) | fmt.is_nan(b), fmt.nan_bits,
                            Cat(a[:fmt.width - 1], fmt.sign(b))), "copysign_result", fmt.width)


#: The reciprocal-square-root estimate's constant (golden/fp.py: ``RSQE_MAGIC``).
RSQE_MAGIC = 0x5F3759DF


def fp_rsqrt_estimate(m, a, *, when=None, idle=None):
    """Build the FP32 reciprocal-square-root estimate of raw FP32 ``a`` into ``m``:
    ``RSQE_MAGIC - (a >> 1)`` on the bits for a positive finite non-zero ``a`` (within
    3.5 % of ``1/sqrt(a)`` for normal ``a``), ``+inf`` for ``+0``, ``-inf`` for ``-0``,
    ``+0`` for ``+inf`` and the canonical NaN for a NaN or a negative ``a``.
    ``when``, ``idle``: as for :func:`fp_max`."""
    fmt = FP32
    with _evaluated_when(when, idle):
        special = Mux(fmt.is_nan(a) | (fmt.sign(a) & ~fmt.is_zero(a)), fmt.nan_bits,
                      Mux(fmt.is_zero(a), Cat(Const(fmt.inf_bits, 31), fmt.sign(a)), 0))
        general = fmt.is_zero(a) | fmt.sign(a) | fmt.is_nan(a) | fmt.is_inf(a)
        return _wire(m, Mux(general, special, (RSQE_MAGIC - (a >> 1))[:32]),
                     "rsqe_result", 32)


def fp_neg(m, fmt, a, *, when=None, idle=None):
    """Build ``-a`` on raw ``fmt`` bits into ``m`` (sign flip; canonical NaN for a NaN).
    ``when``, ``idle``: as for :func:`fp_max`."""
    _check_format(fmt, "fmt")
    with _evaluated_when(when, idle):
        return _wire(m, Mux(fmt.is_nan(a), fmt.nan_bits, a ^ fmt.sign_mask), "neg_result",
                     fmt.width)


def _widen(m, src, dst, x):
    """Exact conversion to a format whose normal range covers every ``src`` value.

    One ``If`` chain with the common case (a normal number: re-bias the exponent) first and
    the leading-zero count inside the subnormal branch, so that a simulator evaluates it
    only for subnormals (Verilator keeps the branches of a process).
    """
    if not (dst.man_bits >= src.man_bits
            and dst.emin <= src.emin - src.man_bits and dst.emax >= src.emax):
        raise ValueError(f"{dst!r} does not hold every value of {src!r} exactly")
    sign, efield, frac = src.sign(x), src.exponent(x), src.fraction(x)
    pad = Const(0, dst.man_bits - src.man_bits)
    result = Signal(dst.width, name="widen_result")
    lz = Signal(bits_for(src.man_bits), name="widen_lz")
    with m.If((efield != 0) & (efield != src.exp_field_max)):
        m.d.comb += result.eq(Cat(pad, frac, (efield + (dst.bias - src.bias))[:dst.exp_bits],
                                  sign))
    with m.Elif(efield != 0):                     # infinity or NaN
        m.d.comb += result.eq(Mux(frac != 0, dst.nan_bits,
                                  Cat(Const(dst.inf_bits, dst.width - 1), sign)))
    with m.Elif(frac == 0):
        m.d.comb += result.eq(Cat(Const(0, dst.width - 1), sign))
    with m.Else():                                # subnormal: its top bit becomes hidden
        m.d.comb += [
            lz.eq(_leading_zeros(frac)),
            result.eq(Cat(pad, (frac << (lz + 1))[:src.man_bits],
                          ((src.emin - 1 + dst.bias) - lz)[:dst.exp_bits], sign)),
        ]
    return result


def _narrow(m, src, dst, x):
    """Conversion rounding to nearest even, with subnormal results and overflow to inf."""
    # A subnormal of ``src`` needs no normalisation when ``src.emin <= dst.emin``: its top
    # bit is then at or below dst's emin, where the rounder takes unnormalised significands.
    normalize = src.emin > dst.emin
    offset = src.bias + (src.precision if normalize else 0)      # keeps exponents >= 0
    u = _Unpacked(m, src, x, "narrow", bits_for(offset + src.emax), offset, normalize)
    result = Signal(dst.width, name="narrow_result")
    with m.If(u.nan):
        m.d.comb += result.eq(dst.nan_bits)
    with m.Elif(u.inf):
        m.d.comb += result.eq(Cat(Const(dst.inf_bits, dst.width - 1), u.sign))
    with m.Else():  # zeros come out of the rounder as signed zeros
        m.d.comb += result.eq(_round_and_pack(m, dst, u.sign, u.exp, u.sig, "narrow",
                                                     offset))
    return result


def f16_to_f32(m, x):
    """Build the exact FP16 -> FP32 conversion of ``x`` into ``m`` (canonical NaN for NaNs)."""
    return _widen(m, FP16, FP32, x)


def f32_to_f16(m, x, *, when=None, idle=None):
    """Build the FP32 -> FP16 conversion of ``x`` into ``m``: RNE, subnormal results,
    overflow to infinity, canonical NaN for NaNs. With ``when`` (and ``idle``, not a
    constant): the result is needed only while ``when`` is high; Verilator's model then
    skips most of the conversion in the other cycles (the result is undefined there)."""
    with _evaluated_when(when, idle):
        return _narrow(m, FP32, FP16, x)


# --- stream plumbing ------------------------------------------------------------------------

def _pipeline_control(m, i, o, latency):
    """Valid chain of a stall-all pipeline of ``latency`` stages; returns its advance signal.

    The whole pipeline moves when its output slot is empty or being taken, so ``i.ready``
    is that condition and a result is neither dropped nor duplicated.
    """
    advance = Signal()
    m.d.comb += [advance.eq(~o.valid | o.ready), i.ready.eq(advance)]
    valid = i.valid
    for stage in range(latency):
        staged = Signal(name=f"valid_{stage + 1}")
        with m.If(advance):
            m.d.sync += staged.eq(valid)
        valid = staged
    m.d.comb += o.valid.eq(valid)
    return advance


def _delay(m, value, latency, advance, name):
    """``value`` carried through ``latency`` enabled registers (data: not reset)."""
    for stage in range(latency):
        staged = Signal.like(value, name=f"{name}_{stage + 1}", reset_less=True)
        with m.If(advance):
            m.d.sync += staged.eq(value)
        value = staged
    return value


# --- the fused multiply-add unit ------------------------------------------------------------

class _FMALane(Elaboratable):
    """One lane of :class:`FMAUnit`: three register stages, every register always enabled
    (the unit wraps the lane in an ``EnableInserter`` driven by its advance signal).

    Stage ``x``: decode the op, unpack the operands, multiply the significands, resolve
    NaN / infinity results. Stage ``a``: normalise the product, align the smaller operand to
    the larger into a window with a sticky bit (round to odd), add or subtract. Stage ``n``:
    normalise, shift to the subnormal position if needed, round to nearest even and pack.
    For the PE's formats no value computed on is wider than 64 bits (a simulator's native
    integer), and exponents are unsigned with an offset (see :class:`_Unpacked`).
    """

    def __init__(self, in_fmt, out_fmt):
        self.in_fmt = in_fmt
        self.out_fmt = out_fmt
        # The op, decoded once per unit (shared by its lanes): a*1 + b, the sign of b
        # flipped, a*b + (-0).
        self.add_b = Signal()
        self.negate_b = Signal()
        self.drop_c = Signal()
        self.a = Signal(in_fmt.width)
        self.b = Signal(in_fmt.width)
        self.c = Signal(out_fmt.width)
        self.result = Signal(out_fmt.width, reset_less=True)

        pi, po = in_fmt.precision, out_fmt.precision
        self.prod_width = 2 * pi                      # exact product of two significands
        self.addend_width = max(pi, po)               # addend from c (out) or b (in, ADD/SUB)
        operand_width = max(self.prod_width, self.addend_width)
        # Operands sit with their top bit at W-2 (W-1 takes the carry) and at least one zero
        # bit below the larger one, so that the sticky bit at bit 0 is a round-to-odd;
        # W >= po + 4 keeps that bit two places below the result's rounding position whenever
        # anything was shifted out (docs/fp_units.md has the argument).
        self.window = max(operand_width + 2, po + 4)
        self.operand_width = operand_width
        lo = min(2 * (in_fmt.emin - in_fmt.man_bits), out_fmt.emin - out_fmt.man_bits,
                 in_fmt.emin - in_fmt.man_bits) - self.window - 4
        hi = max(2 * in_fmt.emax + 2, out_fmt.emax, in_fmt.emax) + 2
        self.exp_width = bits_for(hi - lo) + 1        # holds exponents and differences
        self.exp_offset = 1 << (self.exp_width - 1)   # exponent e is held as e + offset

    def elaborate(self, platform):
        m = Module()
        fi, fo = self.in_fmt, self.out_fmt
        ew, K, W, N = self.exp_width, self.exp_offset, self.window, self.operand_width
        NP, NC = self.prod_width, self.addend_width

        def datapath(shape, name):   # pipeline registers of the data: no reset needed
            return Signal(shape, name=name, reset_less=True)

        # ---- stage x: decode, unpack, multiply, special results --------------------------
        x_addsub = self.add_b
        mul_b = _wire(m, Mux(x_addsub, fi.one_bits, self.b), "x_mul_b")              # a*1 + b
        b_addend = _wire(m, self.b ^ Cat(Const(0, fi.width - 1), self.negate_b), "x_b_addend")
        c_addend = _wire(m, Mux(self.drop_c, fo.neg_zero_bits, self.c), "x_c_addend")
        # No operand is normalised here: the product is normalised once, in stage a, and an
        # unnormalised (subnormal) addend is exact where it lands (docs/fp_units.md).
        ua = _Unpacked(m, fi, self.a, "x_a", ew, K, normalize=False)
        ub = _Unpacked(m, fi, mul_b, "x_b", ew, K, normalize=False)
        if fi == fo:
            uc = _Unpacked(m, fo, _wire(m, Mux(x_addsub, b_addend, c_addend), "x_addend"),
                           "x_c", ew, K, normalize=False)
            c_sign, c_exp, c_sig = uc.sign, uc.exp, uc.sig
            c_zero, c_inf, c_nan = uc.zero, uc.inf, uc.nan
        else:
            ubc = _Unpacked(m, fi, b_addend, "x_bc", ew, K, normalize=False)
            ucc = _Unpacked(m, fo, c_addend, "x_cc", ew, K, normalize=False)

            def pick(from_b, from_c, name):
                return _wire(m, Mux(x_addsub, from_b, from_c), f"x_c_{name}")

            c_sign = pick(ubc.sign, ucc.sign, "sign")
            c_exp = pick(ubc.exp, ucc.exp, "exp")
            c_sig = pick(Cat(Const(0, NC - fi.precision), ubc.sig),
                         Cat(Const(0, NC - fo.precision), ucc.sig), "sig")
            c_zero = pick(ubc.zero, ucc.zero, "zero")
            c_inf = pick(ubc.inf, ucc.inf, "inf")
            c_nan = pick(ubc.nan, ucc.nan, "nan")

        p_sign = _wire(m, ua.sign ^ ub.sign, "x_p_sign")
        p_inf = _wire(m, ua.inf | ub.inf, "x_p_inf")
        nan = _wire(m, ua.nan | ub.nan | c_nan
                    | (ua.inf & ub.zero) | (ua.zero & ub.inf)
                    | (p_inf & c_inf & (p_sign != c_sign)), "x_nan")

        x_prod = datapath(NP, "x_prod")
        x_prod_exp = datapath(ew, "x_prod_exp")   # weight of product bit NP-1
        x_prod_sign = datapath(1, "x_prod_sign")
        x_prod_zero = datapath(1, "x_prod_zero")
        x_add_sig = datapath(NC, "x_add_sig")
        x_add_exp = datapath(ew, "x_add_exp")     # weight of addend bit NC-1
        x_add_sign = datapath(1, "x_add_sign")
        x_add_zero = datapath(1, "x_add_zero")
        x_special = datapath(1, "x_special")
        x_special_bits = datapath(fo.width, "x_special_bits")
        m.d.sync += [
            x_prod.eq(ua.sig * ub.sig),
            # ea + eb + 1 + K, from the raw fields with every constant folded into one
            x_prod_exp.eq(ua.efield + ua.subnormal + ub.efield + ub.subnormal
                          + (K + 1 - 2 * fi.bias) % (1 << ew)),
            x_prod_sign.eq(p_sign),
            x_prod_zero.eq(ua.zero | ub.zero),
            x_add_sig.eq(c_sig),
            x_add_exp.eq(c_exp),
            x_add_sign.eq(c_sign),
            x_add_zero.eq(c_zero),
            x_special.eq(nan | p_inf | c_inf),
            x_special_bits.eq(Mux(nan, fo.nan_bits,
                                  Cat(Const(fo.inf_bits, fo.width - 1),
                                      Mux(p_inf, p_sign, c_sign)))),
        ]

        # ---- stage a: normalise the product, align and add -------------------------------
        a_prod_sig, a_prod_lz = _normalize(m, x_prod, "a_prod")
        a_prod_exp = _wire(m, x_prod_exp - a_prod_lz, "a_prod_exp", ew)
        # Exponents of zeros are meaningless: a zero is never the larger operand (unless
        # both are zero), and a zero shifted by any distance is zero.
        a_prod_big = _wire(m, x_add_zero | (~x_prod_zero & (a_prod_exp >= x_add_exp)),
                           "a_prod_big")

        def in_window(sig, width):
            return Cat(Const(0, W - 1 - N), Const(0, N - width), sig, Const(0, 1))

        a_prod_win = in_window(a_prod_sig, NP)
        a_add_win = in_window(x_add_sig, NC)
        a_big_win = _wire(m, Mux(a_prod_big, a_prod_win, a_add_win), "a_big_win")
        a_small_win = _wire(m, Mux(a_prod_big, a_add_win, a_prod_win), "a_small_win")
        a_big_exp = _wire(m, Mux(a_prod_big, a_prod_exp, x_add_exp), "a_big_exp")
        a_small_exp = Mux(a_prod_big, x_add_exp, a_prod_exp)
        a_big_sign = Mux(a_prod_big, x_prod_sign, x_add_sign)
        a_distance_raw = _wire(m, a_big_exp - a_small_exp, "a_distance_raw", ew)
        a_distance = _wire(m, Mux(a_distance_raw > W, W, a_distance_raw), "a_distance",
                           bits_for(W))
        a_aligned, a_lost = _shift_right_sticky(m, a_small_win, a_distance, "a_align")
        a_small_odd = _wire(m, a_aligned | a_lost, "a_small_odd")   # round to odd at bit 0
        # Both operands are below 2**(W-1): a sum fits W bits, a difference's sign is bit W.
        a_diff = _wire(m, Mux(x_prod_sign ^ x_add_sign, a_big_win - a_small_odd,
                              a_big_win + a_small_odd), "a_diff", W + 1)
        a_negative = a_diff[W]

        a_sum = datapath(W, "a_sum")
        a_exp = datapath(ew, "a_exp")             # weight of window bit W-2
        a_sign = datapath(1, "a_sign")
        a_zero_sign = datapath(1, "a_zero_sign")
        a_special = datapath(1, "a_special")
        a_special_bits = datapath(fo.width, "a_special_bits")
        m.d.sync += [
            a_sum.eq(Mux(a_negative, -a_diff, a_diff)),
            a_exp.eq(a_big_exp),
            a_sign.eq(a_big_sign ^ a_negative),
            # An exact zero sum is +0 (RNE), except (-0) + (-0).
            a_zero_sign.eq(x_prod_zero & x_add_zero & x_prod_sign & x_add_sign),
            a_special.eq(x_special),
            a_special_bits.eq(x_special_bits),
        ]

        # ---- stage n: normalise, round, pack ---------------------------------------------
        n_norm, n_lz = _normalize(m, a_sum, "n_norm")
        n_exp = _wire(m, a_exp + 1 - n_lz, "n_exp", ew)     # weight of n_norm's top bit
        n_rounded = _round_and_pack(m, fo, a_sign, n_exp, n_norm, "n", K)
        result = Signal.like(self.result, name="n_result")
        with m.If(a_special):
            m.d.comb += result.eq(a_special_bits)
        with m.Elif(a_sum == 0):
            m.d.comb += result.eq(Cat(Const(0, fo.width - 1), a_zero_sign))
        with m.Else():
            m.d.comb += result.eq(n_rounded)
        m.d.sync += self.result.eq(result)
        return m


class FMAUnit(wiring.Component):
    """Pipelined fused multiply-add unit, ``lanes`` independent lanes, one rounding.

    Per transfer, :class:`FPOp` selects ``c + a*b`` (fused), ``a*b``, ``a + b`` or ``a - b``.
    The multiplicands ``a`` and ``b`` are ``in_fmt``; the addend ``c`` and the result are
    ``out_fmt``. ``FMAUnit(FP16, FP32, 4)`` is the PE's mixed FMAC,
    ``round32(c + f32(a)*f32(b))``; ``FMAUnit(FP32, FP32, 2)`` and ``FMAUnit(FP16, FP16, 4)``
    the uniform ones. In a mixed unit ``a + b`` and ``a - b`` take both operands in
    ``in_fmt`` and round the result to ``out_fmt`` (one rounding too).

    Parameters
    ----------
    in_fmt, out_fmt : FPFormat
        Format of the multiplicands; format of the addend and the result.
    lanes : int
        Number of lanes.
    tag_width : int
        Width of ``tag``, carried alongside the data untouched (0 for none).

    Attributes
    ----------
    i : In(stream.Signature(...))
        Payload fields ``op`` (FPOp), ``a``, ``b`` (``in_fmt`` arrays), ``c`` (``out_fmt``
        array) and ``tag``.
    o : Out(stream.Signature(...))
        Payload fields ``result`` (``out_fmt`` array) and ``tag``.
    latency : int
        Register stages between an accepted input and its output (3).
    """

    latency = 3

    def __init__(self, in_fmt, out_fmt, lanes, tag_width=0):
        with _ArgumentChecks(self):
            _check_format(in_fmt, "in_fmt")
            _check_format(out_fmt, "out_fmt")
            _check_lanes_tag(lanes, tag_width)
        self._in_fmt, self._out_fmt = in_fmt, out_fmt
        self._lanes, self._tag_width = lanes, tag_width
        in_layout = data.StructLayout({
            "op": FPOp,
            "a": data.ArrayLayout(in_fmt.width, lanes),
            "b": data.ArrayLayout(in_fmt.width, lanes),
            "c": data.ArrayLayout(out_fmt.width, lanes),
            "tag": unsigned(tag_width),
        })
        out_layout = data.StructLayout({
            "result": data.ArrayLayout(out_fmt.width, lanes),
            "tag": unsigned(tag_width),
        })
        super().__init__({
            "i": In(stream.Signature(in_layout)),
            "o": Out(stream.Signature(out_layout)),
        })

    in_fmt = property(lambda self: self._in_fmt, doc="Format of the multiplicands.")
    out_fmt = property(lambda self: self._out_fmt, doc="Format of the addend and result.")
    lanes = property(lambda self: self._lanes, doc="Number of lanes.")
    tag_width = property(lambda self: self._tag_width, doc="Width of the tag.")

    def elaborate(self, platform):
        m = Module()
        advance = _pipeline_control(m, self.i, self.o, self.latency)
        op = self.i.payload.op
        add_b = _wire(m, (op == FPOp.ADD) | (op == FPOp.SUB), "x_add_b")
        negate_b = _wire(m, op == FPOp.SUB, "x_negate_b")
        drop_c = _wire(m, op == FPOp.MUL, "x_drop_c")
        for index in range(self._lanes):
            lane = _FMALane(self._in_fmt, self._out_fmt)
            m.submodules[f"lane{index}"] = EnableInserter(advance)(lane)
            m.d.comb += [
                lane.add_b.eq(add_b), lane.negate_b.eq(negate_b), lane.drop_c.eq(drop_c),
                lane.a.eq(self.i.payload.a[index]),
                lane.b.eq(self.i.payload.b[index]),
                lane.c.eq(self.i.payload.c[index]),
                self.o.payload.result[index].eq(lane.result),
            ]
        m.d.comb += self.o.payload.tag.eq(
            _delay(m, self.i.payload.tag, self.latency, advance, "tag"))
        return m


# --- single-stage units ---------------------------------------------------------------------

class _LaneMapUnit(wiring.Component):
    """Base of the latency-1 units: a combinational core per lane, one output register."""

    latency = 1
    _operands = ("a",)

    def __init__(self, in_fmt, out_fmt, lanes, tag_width):
        with _ArgumentChecks(self):
            _check_lanes_tag(lanes, tag_width)
        self._in_fmt, self._out_fmt = in_fmt, out_fmt
        self._lanes, self._tag_width = lanes, tag_width
        fields = {name: data.ArrayLayout(in_fmt.width, lanes) for name in self._operands}
        fields["tag"] = unsigned(tag_width)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout(fields))),
            "o": Out(stream.Signature(data.StructLayout({
                "result": data.ArrayLayout(out_fmt.width, lanes),
                "tag": unsigned(tag_width),
            }))),
        })

    lanes = property(lambda self: self._lanes, doc="Number of lanes.")
    tag_width = property(lambda self: self._tag_width, doc="Width of the tag.")

    def _core(self, m, *operands):
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        advance = _pipeline_control(m, self.i, self.o, self.latency)
        for index in range(self._lanes):
            operands = [self.i.payload[name][index] for name in self._operands]
            result = self._core(m, *operands)
            m.d.comb += self.o.payload.result[index].eq(
                _delay(m, result, self.latency, advance, f"result{index}"))
        m.d.comb += self.o.payload.tag.eq(
            _delay(m, self.i.payload.tag, self.latency, advance, "tag"))
        return m


class MaxUnit(_LaneMapUnit):
    """``max(a, b)`` per lane (see :func:`fp_max`); payload ``a``, ``b``, ``tag``; latency 1."""

    _operands = ("a", "b")

    def __init__(self, fmt, lanes, tag_width=0):
        with _ArgumentChecks(self):
            _check_format(fmt, "fmt")
        self.fmt = fmt
        super().__init__(fmt, fmt, lanes, tag_width)

    def _core(self, m, a, b):
        return fp_max(m, self.fmt, a, b)


class NegUnit(_LaneMapUnit):
    """``-a`` per lane (see :func:`fp_neg`); payload ``a``, ``tag``; latency 1."""

    def __init__(self, fmt, lanes, tag_width=0):
        with _ArgumentChecks(self):
            _check_format(fmt, "fmt")
        self.fmt = fmt
        super().__init__(fmt, fmt, lanes, tag_width)

    def _core(self, m, a):
        return fp_neg(m, self.fmt, a)


class F16ToF32(_LaneMapUnit):
    """Exact FP16 -> FP32 conversion per lane (see :func:`f16_to_f32`); latency 1."""

    def __init__(self, lanes, tag_width=0):
        super().__init__(FP16, FP32, lanes, tag_width)

    def _core(self, m, a):
        return f16_to_f32(m, a)


class F32ToF16(_LaneMapUnit):
    """FP32 -> FP16 conversion per lane, RNE (see :func:`f32_to_f16`); latency 1."""

    def __init__(self, lanes, tag_width=0):
        super().__init__(FP32, FP16, lanes, tag_width)

    def _core(self, m, a):
        return f32_to_f16(m, a)
