"""The control core on its standalone harness in Verilator (cocotb benches of tb/core_tb.py).

One Verilator build of :class:`tb.core_top.CoreTop` with the PE's default parameters is
shared by every bench; each pytest case runs one cocotb test (``tb_params`` select the
random stalls of the harness).
"""

import functools

import pytest

from runtime import sim

pytestmark = pytest.mark.rtl


@functools.lru_cache(maxsize=None)
def core_build():
    """The Verilator model of the core harness (built once, then cached)."""
    from tb.core_top import core_verilog
    return sim.build("core_top", core_verilog())


@pytest.mark.parametrize("testcase,tb_params", [
    ("alu", {}),
    ("forwarding", {}),
    ("branches", {}),
    ("branch_shadow", {}),
    ("memory", {}),
    ("pe_ports", {}),
    ("stalls", {"seed": 1}),
    ("stalls", {"seed": 2, "rate_bank": 10, "rate_port": 3}),
    ("stalls", {"seed": 3, "rate_bank": 2, "rate_port": 11}),
    ("tasks", {}),
    ("twait", {}),
    ("faults", {}),
    ("cpi", {}),
])
def test_core(testcase, tb_params):
    name = f"core_{testcase}_{tb_params.get('seed', 0)}"
    # Measured figures (CPI, penalties, task latencies) are appended here.
    report = sim.BUILD_ROOT / "core_report.jsonl"
    sim.run(core_build(), "tb.core_tb", testcase=testcase, name=name,
            tb_params={**tb_params, "report": str(report)}, timeout=300)
