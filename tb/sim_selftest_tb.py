"""cocotb benches that exercise runtime/sim.py itself: a failure, a hang and a slow pass."""

import time

import cocotb
from cocotb.triggers import Timer

from runtime.sim import params


@cocotb.test()
async def fails_with_message(dut):
    """Fails with a message that pytest must show."""
    assert False, "expected 0x3c00 got 0x3c01 (deliberate)"


@cocotb.test()
async def hangs(dut):
    """Never finishes: only the wall-clock limit of sim.run can end it."""
    while True:
        await Timer(1000, unit="ns")


@cocotb.test()
async def passes_slowly(dut):
    """Passes after ``seconds`` of wall time."""
    end = time.monotonic() + params().get("seconds", 1.0)
    while time.monotonic() < end:
        await Timer(1000, unit="ns")
