"""The processing element in Verilator against the model (cocotb benches of tb/pe_tb.py).

One Verilator build of :class:`rtl.pe.pe.PE` with its default parameters (the one the fabric
instantiates) is shared by every bench; each pytest case runs one cocotb test.
"""

import functools
import json

import pytest

from gpt_mapping.pe_jobs import gemm_role_jobs
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
])
def test_pe(testcase, tb_params, timeout):
    sim.run(pe_build(), "tb.pe_tb", testcase=testcase, name=f"pe_{testcase}",
            tb_params=tb_params, timeout=timeout)


def test_pe_gemm_roles(tmp_path):
    """The mapper's PE program for every column position of a 3-wide row (west, middle,
    east; owner or not) on the PE, bit-exact (tb/pe_tb.py plays the jobs built here, so the
    bench imports no mapper)."""
    path = tmp_path / "gemm_jobs.json"
    path.write_text(json.dumps(gemm_role_jobs(seed=7)))
    sim.run(pe_build(), "tb.pe_tb", testcase="gemm_roles", name="pe_gemm_roles",
            tb_params={"jobs": str(path)}, timeout=300)
