"""The control core on its standalone harness in Verilator (cocotb benches of tb/core_tb.py).

One Verilator build of :class:`tb.core_top.CoreTop` with the PE's default parameters is
shared by every bench; each pytest case runs one cocotb test (``tb_params`` select the
random stalls of the harness).
"""

import functools

import pytest

from tb import sim

pytestmark = pytest.mark.rtl


@functools.lru_cache(maxsize=None)
def core_build():
    """The Verilator model of the core harness (built once, then cached)."""
    from tb.core_top import core_verilog
    return sim.build("core_top", core_verilog())


@pytest.mark.parametrize("testcase,tb_params", [
    ("alu", {}),
])
def test_core(testcase, tb_params):
    sim.run(core_build(), "tb.core_tb", testcase=testcase, name=f"core_{testcase}",
            tb_params=tb_params, timeout=300)
