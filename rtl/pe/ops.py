"""The facts about each tensor operation, in one table (:data:`OPS`).

Which operands an operation reads (``b``, the FMAC scalar ``s``), which unit computes it (the
FP32 :class:`rtl.fp.FMAUnit` and its operation, or the MOV/MAX/NEG path beside it), how many
lanes it computes per issue and its latency from issue to write-back, and whether an FP16
destination is allowed. The tensor engine (operand checks at launch), the datapath (unit
select, operand routing) and the transaction-level model (``tb/pe_model.py``) read it; the
Amaranth helpers below turn it into the few compares the hardware needs.
"""

import enum as py_enum
from dataclasses import dataclass
from functools import reduce

from amaranth import Const, Mux

from rtl.fp import FMAUnit, FPOp
from rtl.pe.regs import TensorOp

__all__ = ["Unit", "Alt", "OpInfo", "OPS", "LANES", "LATENCY", "op_is", "op_where",
           "op_invalid", "fma_op"]

#: Lanes of the datapath: FP32 operations per issue (FP16 elements: 4; FP32 SRAM operands
#: supply 2 per issue, so such an operation issues 2).
LANES = 4
#: Cycles from issue (stage I) to write-back (stage W): the read stage, then the FMA's
#: stages; the MOV/MAX/NEG path waits beside the FMA so that every operation writes back in
#: order through one port.
LATENCY = 1 + FMAUnit.latency


class Unit(py_enum.Enum):
    """Which part of the datapath computes an operation."""
    FMA = "fma"     #: the FP32 fused multiply-add unit (rtl/fp.py)
    ALT = "alt"     #: the MOV / MAX / NEG path beside it


class Alt(py_enum.Enum):
    """What the MOV/MAX/NEG path (the path beside the FMA) does."""
    MOV = "mov"     #: the widened source (a conversion), or its bits when the types agree
    MAX = "max"
    NEG = "neg"
    MIN = "min"     #: the MAX comparator, the other operand picked
    CPSGN = "cpsgn"  #: |a| with the sign of b
    RSQE = "rsqe"   #: reciprocal-square-root estimate (rtl.fp.fp_rsqrt_estimate)


@dataclass(frozen=True)
class OpInfo:
    """One row of :data:`OPS`."""
    op: TensorOp
    uses_b: bool             #: reads source b
    uses_s: bool             #: reads the scalar s (then dst = a + b * s, fused)
    unit: Unit
    fma: FPOp = None         #: the FMA unit's operation (Unit.FMA)
    alt: Alt = None          #: the MOV/MAX/NEG path's function (Unit.ALT)
    #: an FP16 destination is exact (FMAC: the FP32 result rounded again would be two
    #: roundings, SPEC 6 wants one, so the PE refuses it with UNSUPPORTED)
    fp16_dst: bool = True
    #: FP32 lanes per issue and cycles from issue to write-back (every operation alike)
    lanes: int = LANES
    latency: int = LATENCY


#: The table: every :class:`TensorOp`, in encoding order.
OPS = {info.op: info for info in (
    OpInfo(TensorOp.FMOV, uses_b=False, uses_s=False, unit=Unit.ALT, alt=Alt.MOV),
    OpInfo(TensorOp.FADD, uses_b=True, uses_s=False, unit=Unit.FMA, fma=FPOp.ADD),
    OpInfo(TensorOp.FSUB, uses_b=True, uses_s=False, unit=Unit.FMA, fma=FPOp.SUB),
    OpInfo(TensorOp.FMUL, uses_b=True, uses_s=False, unit=Unit.FMA, fma=FPOp.MUL),
    OpInfo(TensorOp.FMAC, uses_b=True, uses_s=True, unit=Unit.FMA, fma=FPOp.FMA,
           fp16_dst=False),
    OpInfo(TensorOp.FMAX, uses_b=True, uses_s=False, unit=Unit.ALT, alt=Alt.MAX),
    OpInfo(TensorOp.FNEG, uses_b=False, uses_s=False, unit=Unit.ALT, alt=Alt.NEG),
    OpInfo(TensorOp.FMIN, uses_b=True, uses_s=False, unit=Unit.ALT, alt=Alt.MIN),
    OpInfo(TensorOp.FCPSGN, uses_b=True, uses_s=False, unit=Unit.ALT, alt=Alt.CPSGN),
    OpInfo(TensorOp.FRSQE, uses_b=False, uses_s=False, unit=Unit.ALT, alt=Alt.RSQE),
)}
assert list(OPS) == list(TensorOp), "OPS must list every TensorOp in encoding order"


def op_is(op, tensor_op):
    """Amaranth: the raw 4-bit ``op`` is ``tensor_op``."""
    return op == tensor_op.value


def op_where(op, predicate):
    """Amaranth: the raw ``op`` is one of the operations whose :class:`OpInfo` satisfies
    ``predicate`` (one compare per such operation)."""
    terms = [op_is(op, info.op) for info in OPS.values() if predicate(info)]
    return reduce(lambda x, y: x | y, terms) if terms else Const(0, 1)


def op_invalid(op):
    """Amaranth: ``op`` encodes no :class:`TensorOp`."""
    return op > max(o.value for o in OPS)


def fma_op(op):
    """Amaranth: the :class:`FPOp` value the FMA unit runs for ``op`` (FADD's for the
    operations it does not compute: their result is not used)."""
    default = OPS[TensorOp.FADD].fma
    out = Const(default.value, FPOp.as_shape())
    for info in reversed(OPS.values()):
        if info.unit == Unit.FMA and info.fma != default:
            out = Mux(op_is(op, info.op), info.fma.value, out)
    return out
