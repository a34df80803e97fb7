"""The processing element in Verilator against the model (cocotb benches of tb/pe_tb.py).

One Verilator build of :class:`rtl.pe.pe.PE` with its default parameters (the one the fabric
instantiates) is shared by every bench; each pytest case runs one cocotb test.
"""

import functools

import pytest

from runtime import sim

pytestmark = pytest.mark.rtl


@functools.lru_cache(maxsize=None)
def pe_build():
    """The Verilator model of the default PE (built once, then cached; converted to Verilog
    once per test process)."""
    from runtime.pe_driver import bench_verilog
    return sim.build("pe_bench", bench_verilog())


@pytest.mark.parametrize("testcase,tb_params,timeout", [
    ("tensor_ops", {"seed": 1}, 600),
    ("op_chains", {"seed": 1, "count": 40}, 300),
    ("weight_stream", {"seed": 1, "tokens": [4, 8, 16, 32], "features": 64}, 300),
    ("gemm_column", {"seed": 2}, 300),
    ("overlap", {"seed": 3}, 300),
    ("backpressure", {"seed": 4}, 300),
    ("tasks", {}, 300),
    ("errors", {}, 300),
    ("gemm_roles", {"seed": 7}, 300),
])
def test_pe(testcase, tb_params, timeout):
    sim.run(pe_build(), "tb.pe_tb", testcase=testcase, name=f"pe_{testcase}",
            tb_params=tb_params, timeout=timeout)
