"""runtime/sim.py: cocotb results reach pytest, hung simulators are stopped, builds are cached."""

import threading
import time

import pytest

from rtl.export import to_verilog
from runtime import sim
from tb.wavelet_probe import WaveletProbe

pytestmark = pytest.mark.rtl


@pytest.fixture(scope="module")
def probe():
    return sim.build("wavelet_probe", to_verilog(WaveletProbe(), "wavelet_probe"))


def test_cocotb_failure_message_reaches_pytest(probe):
    with pytest.raises(AssertionError, match=r"fails_with_message: expected 0x3c00 got 0x3c01"):
        sim.run(probe, "tb.sim_selftest_tb", testcase="fails_with_message", name="selftest_f")


def test_hung_simulator_is_stopped_at_its_limit(probe):
    start = time.monotonic()
    with pytest.raises(AssertionError, match="exceeded its 3 s limit"):
        sim.run(probe, "tb.sim_selftest_tb", testcase="hangs", timeout=3, name="selftest_h")
    assert time.monotonic() - start < 60


def test_timeout_kills_only_its_own_run(probe):
    """A hung run on a build must not take down another run of the same build."""
    errors = {}

    def slow():
        try:
            sim.run(probe, "tb.sim_selftest_tb", testcase="passes_slowly",
                    tb_params={"seconds": 6}, timeout=120, name="selftest_slow")
        except AssertionError as exc:
            errors["slow"] = exc
    worker = threading.Thread(target=slow)
    worker.start()
    time.sleep(1)
    with pytest.raises(AssertionError, match="limit"):
        sim.run(probe, "tb.sim_selftest_tb", testcase="hangs", timeout=3, name="selftest_h2")
    worker.join()
    assert "slow" not in errors, f"the sibling run was killed: {errors.get('slow')}"


def test_build_rejects_verilog_without_the_top(probe):
    with pytest.raises(ValueError, match="no module named 'nothere'"):
        sim.build("nothere", "module other(); endmodule\n")


def test_only_the_top_inputs_are_writable():
    """cocotb may write the top's inputs (either port style) and only read the rest:
    Verilator re-evaluates logic fed by a writable signal at every evaluation."""
    yosys_style = ("module top(a, b, y);\n  input [3:0] a;\n  wire [3:0] a;\n  input b;\n"
                   "  output y;\n  wire t;\nendmodule\n")
    ansi_style = ("module top (\n  input wire clk,\n  input logic [7:0] d,\n  output q\n);\n"
                  "endmodule\n")
    for text, inputs in ((yosys_style, ["a", "b"]), (ansi_style, ["clk", "d"])):
        config = sim._public_top_config("top", text).splitlines()
        assert config[1] == 'public_flat_rd -module "top" -var "*"'
        assert config[2:] == [f'public_flat_rw -module "top" -var "{n}"' for n in inputs]
    with pytest.raises(ValueError, match="no input port of module 'top'"):
        sim._public_top_config("top", "module top(y);\n  output y;\nendmodule\n")
