"""Non-linear functions as fixed sequences of the PE's tensor operations (SPEC 8).

Each function (:data:`KERNELS`: ``exp``, ``reciprocal``, ``rsqrt``, ``gelu`` in the erf form
nanoGPT uses, ``gelu_tanh``) is a :class:`Kernel`: a list of :class:`Step` s, each one tensor
operation of ``rtl.pe.regs.TensorOp`` over whole vectors, from an FP16 input vector ``x`` to
an FP16 output vector ``y`` through FP32 temporaries, with FP32 constants. The same list is
what the PE runs (``gpt_mapping/kernels.py`` turns it into a code task: DSR setup, one
``t.<op>`` per step, ``twait`` between steps) and what :func:`run` here executes on numpy
arrays with ``golden/fp.py``'s operations, so the RTL is bit-exact against this model.

Semantics of one step (the tensor engine's, SPEC 4.3 and docs/pe.md): every operand is widened
exactly to FP32 (FP16 buffers) or read as FP32 bits (FP32 buffers, constants); the operation
is computed in IEEE binary32 with one rounding (``FMAC``: ``a + b * s``, fused); the result is
rounded once to the destination's type. ``FMOV`` between buffers of one type copies bits.

Algorithms (docs/nonlinear.md has the derivations and the measured errors):

* ``exp``: clamp to [-18, 12], scale by 2**-5, a degree-6 polynomial of e**y on
  [-0.5625, 0.375], then five squarings (scaling and squaring, no integer operations).
* ``rsqrt``: ``|x|`` clamped to [2**-60, 2**60] (so that 0 and inf come out as FP16 inf and
  0), the seed ``FRSQE`` (``0x5F3759DF - (bits >> 1)``), three Newton steps
  ``y = y * (1.5 - 0.5 * w * y * y)``, the sign of ``x`` (``rsqrt(-0) = -inf``), and a NaN for
  negative ``x`` from ``FRSQE`` of ``x`` itself.
* ``reciprocal``: ``rsqrt(|x|)`` squared, with the sign of ``x``.
* ``gelu``: ``max(x, 0) - |x| * erfc(|x| / sqrt 2) / 2``, equal to ``x * Phi(x)`` for both
  signs without cancellation; ``erfc(z) = t * exp(-z*z + P(t))``, ``t = 1 / (1 + z / 2)``
  (Numerical Recipes' ``erfcc``, relative error below 1.2e-7), ``|x|`` clamped to 8.
* ``gelu_tanh``: ``max(x, 0) - |x| / (1 + exp(v))``, ``v = 2 sqrt(2/pi) (|x| + 0.044715 |x|**3)``
  (the tanh form, ``0.5 x (1 + tanh(u)) = x * sigmoid(2u)``), ``|x|`` clamped to 8.

:func:`accuracy` measures a kernel against float64 over every FP16 input, in ulps of the
FP16 result.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from golden import fp
from rtl.pe.ops import OPS
from rtl.pe.regs import DType, TensorOp

__all__ = ["Const", "Step", "Kernel", "KERNELS", "kernel", "run", "reference", "ulp_error",
           "accuracy", "all_fp16", "ACCURACY_BOUNDS", "ROUNDING_BOUNDS"]


@dataclass(frozen=True)
class Const:
    """An FP32 constant operand (a SCALAR DSR on the PE); ``value`` rounds to FP32 once."""
    value: float

    @property
    def bits(self):
        return int(np.float32(self.value).view(np.uint32))

    def __repr__(self):
        return str(np.float32(self.value))


@dataclass(frozen=True)
class Step:
    """``dst = op(a, b)`` (``FMAC``: ``a + b * s``) over whole vectors. ``a`` and ``b`` name
    buffers or are :class:`Const` s; ``s`` is a :class:`Const` (FMAC only)."""
    op: TensorOp
    dst: str
    a: object
    b: object = None
    s: Const = None

    def text(self):
        args = [self.dst, self.a] + ([self.b] if self.b is not None else [])
        args += [self.s] if self.s is not None else []
        return f"{self.op.name.lower()} " + ", ".join(map(str, args))


@dataclass
class Kernel:
    """A function as tensor operations: FP16 ``x`` in, FP16 ``y`` out, FP32 temporaries."""
    name: str
    steps: list = field(default_factory=list)
    buffers: dict = field(default_factory=lambda: {"x": DType.FP16, "y": DType.FP16})
    doc: str = ""

    def listing(self):
        return "\n".join(f"{i:3d}  {s.text()}" for i, s in enumerate(self.steps))

    def constants(self):
        """The distinct constants, in order of first use."""
        seen = {}
        for s in self.steps:
            for c in (s.a, s.b, s.s):
                if isinstance(c, Const):
                    seen.setdefault(c.bits, c)
        return list(seen.values())


# --- building kernels --------------------------------------------------------------------------

#: The operations with a second source (the tensor-op table's fact, rtl/pe/ops.py).
_BINARY = {op for op, info in OPS.items() if info.uses_b}


class _Builder:
    """Appends steps to a kernel and hands out FP32 temporaries (``t0``, ``t1``, ...),
    reusing the ones given back with :meth:`free`."""

    def __init__(self, name, doc=""):
        self.kernel = Kernel(name, doc=doc)
        self._free = []
        self._count = 0

    def temp(self):
        if self._free:
            return self._free.pop()
        name = f"t{self._count}"
        self._count += 1
        self.kernel.buffers[name] = DType.FP32
        return name

    def free(self, *names):
        for n in names:
            if n in ("x", "y") or n in self._free:
                raise ValueError(f"{self.kernel.name}: buffer {n!r} cannot be freed")
            self._free.append(n)

    def op(self, op, a, b=None, s=None, dst=None):
        if (b is not None) != (op in _BINARY):
            raise ValueError(f"{self.kernel.name}: {op.name} takes "
                             f"{'two operands' if op in _BINARY else 'one operand'}")
        if (s is not None) != (op == TensorOp.FMAC):
            raise ValueError(f"{self.kernel.name}: only FMAC takes a scalar s")
        if isinstance(a, Const) and isinstance(b, Const):
            raise ValueError(f"{self.kernel.name}: {op.name} of two constants")
        dst = dst or self.temp()
        self.kernel.steps.append(Step(op, dst, a, b, s))
        return dst


def _clamp(k, v, lo, hi):
    t = k.op(TensorOp.FMAX, v, Const(lo))
    return k.op(TensorOp.FMIN, t, Const(hi), dst=t)


def _horner(k, t, coeffs):
    """``sum(coeffs[i] * t**i)``: the top two terms in one FMAC, then a multiply and an add
    per coefficient (two roundings each)."""
    hi = len(coeffs) - 1
    p = k.op(TensorOp.FMAC, Const(coeffs[hi - 1]), t, s=Const(coeffs[hi]))
    q = k.temp()
    for c in reversed(coeffs[:hi - 1]):
        k.op(TensorOp.FMUL, p, t, dst=q)
        k.op(TensorOp.FADD, q, Const(c), dst=p)
    k.free(q)
    return p


def _exp(k, v, squarings, coeffs):
    """e**v for v already in the range the polynomial was fitted for (times 2**squarings):
    ``(P(v * 2**-squarings)) ** (2**squarings)``."""
    y = k.op(TensorOp.FMUL, v, Const(2.0 ** -squarings))
    p = _horner(k, y, coeffs)
    k.free(y)
    for _ in range(squarings):
        k.op(TensorOp.FMUL, p, p, dst=p)
    return p


def _rsqrt_newton(k, w, steps=3):
    """1/sqrt(w) for finite positive w of a normal FP32 range: the FRSQE seed (3.5 %) and
    ``steps`` Newton steps (3.5 % -> 1.8e-3 -> 5e-6 -> FP32 rounding)."""
    y = k.op(TensorOp.FRSQE, w)
    t = k.temp()
    for _ in range(steps):
        k.op(TensorOp.FMUL, y, y, dst=t)
        k.op(TensorOp.FMUL, t, w, dst=t)
        k.op(TensorOp.FMAC, Const(1.5), t, s=Const(-0.5), dst=t)
        k.op(TensorOp.FMUL, y, t, dst=y)
    k.free(t)
    return y


def _reciprocal_positive(k, w, steps=3):
    """1/w for finite positive w: rsqrt(w) squared (``steps`` Newton steps)."""
    r = _rsqrt_newton(k, w, steps)
    k.op(TensorOp.FMUL, r, r, dst=r)
    return r


#: e**y on [-0.5625, 0.375] (``exp``'s range [-18, 12] over 2**5), degree 6, constant term
#: first: relative error 3.2e-8 with these FP32 coefficients (near-minimax: Lawson-weighted
#: least squares on Chebyshev nodes against the relative error; docs/nonlinear.md).
EXP_COEFFS_5 = (1.0, 0.9999999403953552, 0.4999982416629791, 0.1666664332151413,
                0.04169716686010361, 0.008362838998436928, 0.001255940762348473)
#: e**y on [-0.52, 0.01] (gelu's exponent range [-33.3, 0] over 2**6), degree 5: relative
#: error 2.5e-8 (the same fit as EXP_COEFFS_5; 1.6e-6 after the six squarings).
EXP_COEFFS_6 = (1.0, 0.9999988079071045, 0.4999683201313019, 0.16639241576194763,
                0.04061280936002731, 0.006440431345254183)
#: e**y on [0, 0.39] (gelu_tanh's range [0, 49.3] over 2**7), degree 6: 1.1e-9.
EXP_COEFFS_7 = (1.0, 1.0, 0.5000003576278687, 0.1666608601808548, 0.041709739714860916,
                0.008171075955033302, 0.0016859270399436355)
#: erfc(z) = t * exp(-z*z + P(t)), t = 1 / (1 + z/2), Numerical Recipes' erfcc form with a
#: degree-5 P fitted for gelu's range z in [0, 8 / sqrt 2] (t in [0.2612, 1]): absolute error
#: of P 7.1e-6, so erfc's relative error is 7.1e-6 (NR's degree 9, 1.2e-7, costs 8 more
#: steps; docs/nonlinear.md section 4). Constant term first, FP32 values.
ERFC_COEFFS = (-1.266196370124817, 1.0150351524353027, 0.2642313241958618,
               0.45907527208328247, -0.6974866390228271, 0.22534827888011932)
#: Newton steps of gelu's reciprocal (1.8e-3 -> 5e-6 relative: enough beside P's 7e-6).
GELU_NEWTON_STEPS = 2
#: Where gelu's |x| is clamped: beyond it gelu(x) is x (x > 0) or rounds to -0 (x < 0).
GELU_CLAMP = 8.0


def _build_exp():
    k = _Builder("exp", "e**x")
    v = _clamp(k, "x", -18.0, 12.0)
    p = _exp(k, v, 5, EXP_COEFFS_5)
    k.op(TensorOp.FMOV, p, dst="y")
    return k.kernel


def _abs_clamped(k, lo, hi):
    """|x| (FCPSGN with +1), clamped below at ``lo`` (unless None) and above at ``hi``."""
    a = k.op(TensorOp.FCPSGN, "x", Const(1.0))
    if lo is not None:
        k.op(TensorOp.FMAX, a, Const(lo), dst=a)
    return k.op(TensorOp.FMIN, a, Const(hi), dst=a)


def _build_rsqrt():
    k = _Builder("rsqrt", "1/sqrt(x)")
    a = _abs_clamped(k, 2.0 ** -60, 2.0 ** 60)
    r = _rsqrt_newton(k, a)
    k.op(TensorOp.FCPSGN, r, "x", dst=r)                 # rsqrt(-0) = -inf
    n = k.op(TensorOp.FRSQE, "x", dst=a)                 # NaN exactly for x < 0 and NaN
    k.op(TensorOp.FMAX, n, Const(0.0), dst=n)
    k.op(TensorOp.FMIN, n, Const(0.0), dst=n)            # +0, or NaN
    k.op(TensorOp.FADD, r, n, dst="y")
    return k.kernel


def _build_reciprocal():
    k = _Builder("reciprocal", "1/x")
    a = _abs_clamped(k, 2.0 ** -60, 2.0 ** 60)
    r = _reciprocal_positive(k, a)
    k.op(TensorOp.FCPSGN, r, "x", dst="y")
    return k.kernel


def _build_gelu():
    k = _Builder("gelu", "x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)), nanoGPT's GELU")
    a = _abs_clamped(k, None, GELU_CLAMP)                              # |x| <= 8
    w = k.op(TensorOp.FMAC, Const(1.0), a, s=Const(0.5 / math.sqrt(2.0)))   # 1 + z/2
    t = _reciprocal_positive(k, w, GELU_NEWTON_STEPS)                  # t, w's buffer freed
    k.free(w)
    p = _horner(k, t, ERFC_COEFFS)                                     # P(t)
    x2 = k.op(TensorOp.FMUL, a, a)                                     # x*x (exact)
    k.op(TensorOp.FMAC, p, x2, s=Const(-0.5), dst=p)                   # P(t) - z*z
    k.free(x2)
    e = _exp(k, p, 6, EXP_COEFFS_6)
    k.free(p)
    k.op(TensorOp.FMUL, t, e, dst=t)                                   # erfc(z)
    k.op(TensorOp.FMUL, a, t, dst=t)                                   # |x| erfc(z)
    m = k.op(TensorOp.FMAX, "x", Const(0.0), dst=e)
    k.op(TensorOp.FMAC, m, t, s=Const(-0.5), dst=m)
    k.op(TensorOp.FMOV, m, dst="y")
    return k.kernel


def _build_gelu_tanh():
    k = _Builder("gelu_tanh", "x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x**3)))")
    a = _abs_clamped(k, None, GELU_CLAMP)
    c = 2.0 * math.sqrt(2.0 / math.pi)
    x2 = k.op(TensorOp.FMUL, a, a)
    k.op(TensorOp.FMAC, Const(c), x2, s=Const(c * 0.044715), dst=x2)
    k.op(TensorOp.FMUL, x2, a, dst=x2)                                 # v = 2u
    e = _exp(k, x2, 7, EXP_COEFFS_7)
    k.free(x2)
    k.op(TensorOp.FADD, e, Const(1.0), dst=e)
    s = _reciprocal_positive(k, e)                                     # sigmoid(-v)
    k.op(TensorOp.FMUL, a, s, dst=s)
    m = k.op(TensorOp.FMAX, "x", Const(0.0), dst=a)
    k.op(TensorOp.FSUB, m, s, dst=m)
    k.op(TensorOp.FMOV, m, dst="y")
    return k.kernel


def _build_gelu_grad():
    """GELU's derivative for the backward pass (docs/training.md section 7)."""
    k = _Builder("gelu_grad", "d/dx x Phi(x) = Phi(x) + x phi(x), nanoGPT's GELU's derivative")
    a = _abs_clamped(k, None, GELU_CLAMP)                              # |x| <= 8
    w = k.op(TensorOp.FMAC, Const(1.0), a, s=Const(0.5 / math.sqrt(2.0)))   # 1 + z/2
    t = _reciprocal_positive(k, w, GELU_NEWTON_STEPS)
    k.free(w)
    p = _horner(k, t, ERFC_COEFFS)                                     # P(t)
    x2 = k.op(TensorOp.FMUL, a, a)                                     # x*x (exact)
    k.op(TensorOp.FMAC, p, x2, s=Const(-0.5), dst=p)                   # P(t) - x*x/2
    e = _exp(k, p, 6, EXP_COEFFS_6)
    k.free(p)
    k.op(TensorOp.FMUL, t, e, dst=t)                                   # erfc(|x| / sqrt 2)
    k.op(TensorOp.FMAC, Const(0.5), t, s=Const(-0.5), dst=t)           # q = 1/2 - erfc/2
    k.op(TensorOp.FCPSGN, t, "x", dst=t)
    k.op(TensorOp.FADD, t, Const(0.5), dst=t)                          # Phi(x)
    k.op(TensorOp.FMUL, x2, Const(-0.5), dst=x2)                       # -x*x/2
    g = _exp(k, x2, 6, EXP_COEFFS_6)                                   # sqrt(2 pi) phi(x)
    k.free(x2)
    xc = k.op(TensorOp.FCPSGN, a, "x", dst=a)                          # x clamped to 8
    k.op(TensorOp.FMUL, xc, g, dst=g)
    k.op(TensorOp.FMAC, t, g, s=Const(1.0 / math.sqrt(2.0 * math.pi)), dst=t)
    k.op(TensorOp.FMOV, t, dst="y")
    return k.kernel


KERNELS = {k.name: k for k in (_build_exp(), _build_reciprocal(), _build_rsqrt(),
                               _build_gelu(), _build_gelu_tanh(), _build_gelu_grad())}


def kernel(name):
    """The :class:`Kernel` called ``name``; a ``KeyError`` names the ones there are."""
    try:
        return KERNELS[name]
    except KeyError:
        raise KeyError(f"no kernel {name!r} (there are: {', '.join(KERNELS)})") from None


# --- the golden execution ----------------------------------------------------------------------

_F32 = {
    TensorOp.FADD: fp.add32, TensorOp.FSUB: fp.sub32, TensorOp.FMUL: fp.mul32,
    TensorOp.FMAX: fp.max32, TensorOp.FMIN: fp.min32, TensorOp.FCPSGN: fp.copysign32,
}


def run(kern, x16):
    """Execute ``kern`` on the FP16 bits ``x16`` (any shape); returns the FP16 bits of ``y``
    (and nothing else: the temporaries are the kernel's own)."""
    if isinstance(kern, str):
        kern = kernel(kern)
    x16 = np.asarray(x16)
    if x16.dtype != np.uint16:
        raise TypeError(f"x16: FP16 bits (uint16) expected, got {x16.dtype}")
    bufs = {"x": x16.copy(), "y": np.zeros_like(x16)}

    def read(o):
        if isinstance(o, Const):
            return np.uint32(o.bits)
        v = bufs[o]
        return fp.f16_to_f32(v) if kern.buffers[o] == DType.FP16 else v

    for st in kern.steps:
        a = read(st.a)
        if st.op == TensorOp.FMOV:
            src_type = DType.FP32 if isinstance(st.a, Const) else kern.buffers[st.a]
            if src_type == kern.buffers[st.dst]:
                bufs[st.dst] = np.broadcast_to(bufs[st.a], x16.shape).copy()
                continue
            res = a
        elif st.op == TensorOp.FMAC:
            res = fp.fmac32(a, read(st.b), np.uint32(st.s.bits))
        elif st.op == TensorOp.FNEG:
            res = fp.neg32(a)
        elif st.op == TensorOp.FRSQE:
            res = fp.rsqe32(a)
        else:
            res = _F32[st.op](a, read(st.b))
        res = np.broadcast_to(np.asarray(res, dtype=np.uint32), x16.shape)
        bufs[st.dst] = (fp.f32_to_f16(res) if kern.buffers[st.dst] == DType.FP16
                        else res.copy())
    return bufs["y"]


# --- accuracy against float64 ------------------------------------------------------------------

def all_fp16():
    """Every FP16 bit pattern, 0x0000 .. 0xFFFF."""
    return np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)


def _gelu64(x):
    # x * Phi(x) = x/2 * erfc(-x / sqrt 2): no cancellation for negative x.
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    out = 0.5 * x * erfc(-x / math.sqrt(2.0))
    return np.where(np.isneginf(x), -0.0, np.where(np.isposinf(x), np.inf, out))


def _gelu_tanh64(x):
    u = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)
    with np.errstate(over="ignore", invalid="ignore"):
        out = x / (1.0 + np.exp(-2.0 * u))          # x * sigmoid(2u)
    return np.where(np.isneginf(x), -0.0, np.where(np.isposinf(x), np.inf, out))


def _gelu_grad64(x):
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    with np.errstate(over="ignore", invalid="ignore"):
        out = 0.5 * erfc(-x / math.sqrt(2.0)) + x * np.exp(-0.5 * x * x) / math.sqrt(
            2.0 * math.pi)
    # below x = -1 the derivative is negative (x phi(x) outweighs Phi(x)): where float64
    # underflows to zero, the limit is -0
    out = np.where((out == 0) & (x < -1), -0.0, out)
    return np.where(np.isneginf(x), -0.0, np.where(np.isposinf(x), 1.0, out))


def reference(name, x16):
    """float64 values of the function ``name`` at the FP16 inputs ``x16`` (IEEE special
    values: exp(-inf) = 0, 1/(+-0) = +-inf, rsqrt(-0) = -inf, rsqrt(x < 0) = NaN,
    gelu(-inf) = -0, gelu(inf) = inf)."""
    x = np.asarray(x16, dtype=np.uint16).view(np.float16).astype(np.float64)
    with np.errstate(all="ignore"):
        if name == "exp":
            return np.exp(x)
        if name == "reciprocal":
            return 1.0 / x
        if name == "rsqrt":
            return np.where(x == 0, np.copysign(np.inf, x), 1.0 / np.sqrt(x))
        if name == "gelu":
            return _gelu64(x)
        if name == "gelu_tanh":
            return _gelu_tanh64(x)
        if name == "gelu_grad":
            return _gelu_grad64(x)
    raise KeyError(f"no reference for {name!r}")


def _ulp16(v):
    """The FP16 ulp at |v| (float64; 2**-24 in the subnormal range, 32 from 32768 up)."""
    a = np.abs(v)
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return np.exp2(np.clip(e, -14, 15) - 10)


def ulp_error(y16, ref64):
    """Per element: |y - ref| in FP16 ulps of ref, where an infinite y counts as 65536 (the
    next power of two past the largest finite value) and a finite ref beyond 65520 is
    clamped likewise; 0 where both are the same infinity or both NaN; ``inf`` where exactly
    one is NaN or the infinities differ. +0 and -0 are equal here (see :func:`accuracy`)."""
    y = np.asarray(y16, dtype=np.uint16).view(np.float16).astype(np.float64)
    ref = np.asarray(ref64, dtype=np.float64)
    ny, nr = np.isnan(y), np.isnan(ref)
    big = 65536.0
    yc = np.clip(y, -big, big)
    rc = np.clip(np.where(nr, 0, ref), -big, big)
    with np.errstate(invalid="ignore"):
        err = np.abs(yc - rc) / _ulp16(np.clip(rc, -65504.0, 65504.0))
    same_inf = np.isinf(y) & np.isinf(ref) & (np.sign(y) == np.sign(ref))
    err = np.where(same_inf, 0.0, err)
    err = np.where(ny & nr, 0.0, np.where(ny | nr, np.inf, err))
    return err


#: The bounds the tests assert (docs/nonlinear.md gives the measured values).
ACCURACY_BOUNDS = {"exp": 0.51, "reciprocal": 0.51, "rsqrt": 0.51, "gelu": 1.0,
                   "gelu_tanh": 1.0,
                   # near its zero at x = -0.7518, Phi(x) and x phi(x) (about 0.23 each)
                   # cancel: 18.7 ulps of a value below 1e-3 (0.62 ulp where
                   # |gelu'| >= 2^-6; absolute error at most 4.9e-4 everywhere)
                   "gelu_grad": 20.0}
#: The share of inputs correctly rounded the tests assert.
ROUNDING_BOUNDS = {"exp": 0.997, "reciprocal": 0.997, "rsqrt": 0.997, "gelu": 0.99,
                   "gelu_tanh": 0.997, "gelu_grad": 0.99}


def accuracy(name, x16=None):
    """The kernel's error over ``x16`` (default: all 65,536 FP16 inputs) against float64:
    ``{"max_ulp", "mean_ulp", "correctly_rounded" (fraction equal to the float64 value
    rounded to FP16), "zero_sign_mismatches", "worst_input" (FP16 bits)}``."""
    x16 = all_fp16() if x16 is None else np.asarray(x16, dtype=np.uint16)
    y16 = run(name, x16)
    ref = reference(name, x16)
    err = ulp_error(y16, ref)
    with np.errstate(all="ignore"):
        rounded = ref.astype(np.float16)
    yv = y16.view(np.float16)
    exact = (yv == rounded) | (np.isnan(yv) & np.isnan(rounded))
    zero_sign = (yv == 0) & (rounded == 0) & (np.signbit(yv) != np.signbit(rounded))
    worst = int(np.argmax(err))
    return {"max_ulp": float(err.max()), "mean_ulp": float(err[np.isfinite(err)].mean()),
            "correctly_rounded": float(exact.mean()), "zero_sign_mismatches": int(zero_sign.sum()),
            "worst_input": int(x16[worst]), "steps": len(kernel(name).steps)}


def _main(argv=None):
    import argparse
    parser = argparse.ArgumentParser(
        prog="python -m golden.nonlinear",
        description="List the kernels' steps and their accuracy over every FP16 input.")
    parser.add_argument("names", nargs="*", help="kernels (default: all)")
    args = parser.parse_args(argv)
    for name in args.names or list(KERNELS):
        k = kernel(name)
        acc = accuracy(name)
        print(f"## {name}: {k.doc} ({len(k.steps)} steps, {len(k.constants())} constants)")
        print(k.listing())
        print(f"max {acc['max_ulp']:.4f} ulp, mean {acc['mean_ulp']:.4f} ulp, "
              f"{100 * acc['correctly_rounded']:.3f} % correctly rounded, worst at x = "
              f"{acc['worst_input']:#06x}\n")


if __name__ == "__main__":
    _main()
