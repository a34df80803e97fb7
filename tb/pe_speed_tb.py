"""cocotb bench: simulated cycles per second of the PE model with no Python per cycle.

Two measurements: idle (after reset) and busy (a long FMAC over an SRAM tensor into the
accumulator cache, relaunched every 4000 cycles), each timed over a fixed number of cycles
with ``Timer`` awaits, so no Python runs per cycle.
"""

import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer

from rtl.pe.regs import DSR_WAVELET, DType, Kind, Reg, TensorOp, encode_trigger, reg_addr
from tb.pe_model import PEConfig
from tb.pe_tb import _report
from runtime.sim import params


@cocotb.test()
async def speed(dut):
    p = params()
    cycles = p.get("cycles", 50000)
    Clock(dut.clk, 10, unit="ns").start()
    dut.rst.value = 1
    dut.rx__valid.value = 0
    dut.tx__ready.value = (1 << 24) - 1
    dut.cfg__we.value = 0
    dut.cfg__re.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    t0 = time.perf_counter()
    await Timer(10 * cycles, unit="ns")
    idle = cycles / (time.perf_counter() - t0)
    # Busy: one FMAC over 4 x 4095 elements of SRAM into the accumulator cache, which
    # keeps the datapath issuing every cycle for ~4000 cycles; relaunched to fill the run.
    cfg = PEConfig()
    cfg.dsr(0, Kind.MEM, dtype=DType.FP16, base=0, dims=[(4095 * 4 // 4, 1), (4, 0)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(64, 1), (256, 0)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET)])
    for addr, value in cfg.all_writes():
        dut.cfg__addr.value = addr
        dut.cfg__wdata.value = value
        dut.cfg__we.value = 1
        await RisingEdge(dut.clk)
    dut.cfg__we.value = 0
    done = 0
    t0 = time.perf_counter()
    while done < cycles:
        dut.cfg__addr.value = reg_addr(Reg.TRIGGER)
        dut.cfg__wdata.value = encode_trigger(0, data=0x3C00)
        dut.cfg__we.value = 1
        await RisingEdge(dut.clk)
        dut.cfg__we.value = 0
        await Timer(10 * 4000, unit="ns")
        await RisingEdge(dut.clk)
        done += 4002
    busy = done / (time.perf_counter() - t0)
    dut._log.info(f"PE simulation speed: idle {idle:,.0f} cycles/s, busy {busy:,.0f} cycles/s")
    _report("speed", {"idle_cycles_per_s": idle, "busy_cycles_per_s": busy})
