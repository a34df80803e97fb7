"""The PE case generators and the model's semantics that the RTL benches rely on (Python)."""

import numpy as np

from golden import fp
from rtl.pe.regs import DType, ErrorCode, Kind, TensorOp
from tb.pe_cases import (ChainCase, OpCase, chain_cases, clear_restart_case,
                         clear_then_reuse_case, op_cases)
from tb.pe_model import PEConfig, PEModel


def test_op_cases_are_valid():
    """Every generated case is accepted by the model (an FMAC into NULL included: the NULL
    destination is FP32 then, since an FMAC into FP16 is refused as UNSUPPORTED)."""
    cases = op_cases(seed=1)
    assert len(cases) > 150
    nulls = [c for c in cases if c.op == TensorOp.FMAC and c.kinds["dst"] == "NULL"]
    assert nulls, "no FMAC into NULL in the covering set"


def test_fmac_into_null():
    case = OpCase("fmac_null", TensorOp.FMAC,
                  {"dst": "NULL", "a": "MEM32", "b": "MEM16", "s": "SCALAR16"}, 12, 5)
    assert case.model.fmac_lanes == 12


def test_chain_cases_deterministic_and_accepted():
    a = chain_cases(seed=3, count=5)
    b = chain_cases(seed=3, count=5)
    for x, y in zip(a, b):
        assert x.describe() == y.describe()
        assert np.array_equal(x.model.sram, y.model.sram)
        assert np.array_equal(x.model.acc, y.model.acc)
    assert isinstance(a[0], ChainCase)


def test_clear_a_zeroes_as_read():
    """A cleared accumulator source shorter than the destination restarts on zeros."""
    case = clear_restart_case()
    sent = [d for d, _, _ in case.model.fout[10]]
    words = [sent[2 * i] | sent[2 * i + 1] << 16 for i in range(len(sent) // 2)]
    assert all(w != 0x80000000 for w in words[:4])
    assert words[4:] == [0x80000000] * 8            # -(+0)
    assert not case.model.acc[[4, 5, 8, 9]].any()


def test_clear_then_reuse_starts_from_zero():
    """After the read-and-clear, the FMACs accumulate onto zeros: Y of the second store is
    the first FMAC alone, the accumulators hold the second FMAC alone."""
    case = clear_then_reuse_case(1)
    x = case.cfg.sram[0x100:0x110].astype(np.uint16)
    (w0, _), (w1, _) = [(d, i) for d, i, _ in case.fabric_in[1]]
    zero = np.zeros(8, dtype=np.uint32)
    first = fp.fmac32(zero, fp.f16_to_f32(x[:8]), fp.f16_to_f32(np.uint16(w0)))
    second = fp.fmac32(zero, fp.f16_to_f32(x[8:]), fp.f16_to_f32(np.uint16(w1)))
    assert np.array_equal(case.model.sram[0x208:0x210], fp.f32_to_f16(first))
    assert np.array_equal(case.model.acc[8:16], second)


def test_one_color_as_both_sources_is_refused():
    cfg = PEConfig()
    cfg.dsr(0, Kind.MEM, base=0x100, dims=[(8, 1)])
    cfg.dsr(1, Kind.FIN, dtype=DType.FP16, color=3)
    cfg.dsr(2, Kind.FIN, dtype=DType.FP32, color=3)
    cfg.task(0, [dict(op=TensorOp.FADD, dst=0, a=1, b=1)])
    cfg.task(1, [dict(op=TensorOp.FMUL, dst=0, a=1, b=2)])
    model = PEModel(cfg, fabric_in={3: [(0, 0, 0)] * 40})
    assert model.activate(0) == [ErrorCode.BAD_OPERAND]
    assert model.activate(1) == [ErrorCode.BAD_OPERAND]
    assert len(model.fin[3]) == 40
