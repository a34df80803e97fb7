"""The FP units in Verilator against golden/fp.py (the cocotb FP regression).

Each unit has its own Verilator build of :class:`tb.fp_top.FPRegressionTop`, shared by its cases. Counts follow
issue 2: 1,000,000 random operand triples for the mixed FMAC, 200,000 for every other
operation, all 65,536 FP16 -> FP32 conversions, plus the full cross of special classes and
boundary values for each.
"""

import pytest

from rtl.export import to_verilog
from runtime import sim
from tb.fp_top import FPRegressionTop
from tb.fp_tb import CASES

pytestmark = pytest.mark.rtl

RANDOM_COUNT = {("fma_mixed", "FMA"): 1_000_000}
DEFAULT_COUNT = 200_000


def fp_build(unit):
    """The Verilator model of one unit's regression top (built once, then cached)."""
    top = f"fp_{unit}"
    return sim.build(top, to_verilog(FPRegressionTop([unit]), top))


CASE_IDS = [(u, op) for u, ops in CASES.items() for op in ops]


@pytest.mark.parametrize("unit,op", CASE_IDS, ids=[f"{u}-{op}" for u, op in CASE_IDS])
def test_fp_unit_bit_exact(unit, op):
    count = RANDOM_COUNT.get((unit, op), DEFAULT_COUNT)
    seed = sum(map(ord, unit + op))  # fixed per case, so CI runs are repeatable
    sim.run(fp_build(unit), "tb.fp_tb", testcase="fp_vectors", name=f"fp_{unit}_{op}",
            tb_params={"unit": unit, "op": op, "count": count, "seed": seed}, timeout=900)


@pytest.mark.parametrize("unit,op", CASE_IDS, ids=[f"{u}-{op}" for u, op in CASE_IDS])
def test_fp_unit_backpressure(unit, op):
    sim.run(fp_build(unit), "tb.fp_tb", testcase="fp_backpressure", name=f"fp_bp_{unit}_{op}",
            tb_params={"unit": unit, "op": op, "count": 2000, "seed": 7}, timeout=600)
