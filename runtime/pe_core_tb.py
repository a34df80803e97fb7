"""cocotb bench: programs on the control core of one real PE (the ``pe_bench`` build).

One cocotb test, :func:`run_programs`, plays a list of jobs written by
:func:`runtime.pe_core_run.run_on_pe` (a JSON file named by the ``jobs`` parameter) and writes one
result per job (``results``). Each job starts from a PE reset: the host loads the program,
its task table, bindings, GPRs and any other configuration words through the configuration
port, starts a task with the host trigger, then offers the input wavelets on rx, and the bench
runs until the PE is idle (everything the program started has finished), the core has
stopped (halt or fault), or the cycle budget is spent. It then reads back the GPRs, the core
and error registers, the counters and the requested SRAM words.

The retire trace is sampled from the PE's ``trace`` port every cycle (one Python step per
cycle: fine for the programs of the tests, a few thousand cycles each), and so is the debug
port ``dbg`` (:class:`rtl.pe.iface.PEDebug`: kept in the cycles it changed or holds a
one-cycle event, as the fabric's tile model records it). The per-cycle loop only drives rx
while wavelets are queued; otherwise it waits for the clock edge and samples. Cycles are the
bench's (:attr:`PEBench.cycle`); ``origin`` is the cycle the job's start was configured at.
"""

import json
from pathlib import Path

import cocotb
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from rtl.pe.iface import DEBUG_PULSE_MASK
from rtl.pe.isa import RetireRecord
from rtl.pe.regs import (CoreStatus, Counter, Reg, counter_addr, decode_fields, gpr_addr,
                         reg_addr)
from runtime import sim
from runtime.pe_driver import PEBench
from rtl.wavelet import unpack

#: Counters every result reports.
COUNTERS = tuple(Counter)
#: Cycles the PE must stay idle (``busy`` low) before a run counts as finished.
IDLE_CYCLES = 3


async def _reset(bench):
    d = bench.dut
    d.rst.value = 1
    await ClockCycles(d.clk, 2)
    d.rst.value = 0
    await RisingEdge(d.clk)
    bench.tx_got.clear()
    bench.rx_sent.clear()
    bench.rx_q.clear()


async def _configure(bench, writes):
    await bench.write(writes)
    while bench.cfg_q:
        await bench.step()


async def _read(bench, addrs):
    values = await bench.read(addrs)
    return values


async def run_job(bench, job):
    """One job (see the module docstring); returns its result dict."""
    await _reset(bench)
    await _configure(bench, [tuple(w) for w in job["writes"]])
    origin = bench.cycle
    await _configure(bench, [tuple(w) for w in job["start"]])
    # The wavelets follow the start (the start task is the first to run, as in the ISS).
    for color, wavelets in job.get("inputs", {}).items():
        bench.send(int(color), [tuple(w) for w in wavelets])
    d = bench.dut
    trace, dbg, state = [], [], {"idle": 0, "dbg": 0}

    def sample(b, tx=False):
        """In the read-only phase before a clock edge: the retire record, busy (and tx,
        which :meth:`PEBench.step` samples itself)."""
        if tx and int(d.tx__valid.value):
            w = unpack(int(d.tx__payload.value))
            b.tx_got[w.color].append((w.data, w.index, w.ctrl, b.cycle))
        if int(d.trace__valid.value):
            rec = decode_fields(RetireRecord, int(d.trace__payload.value))
            trace.append([b.cycle, rec["pc"], rec["word"], rec["rd"], rec["value"]])
        value = int(d.dbg.value)
        if value != state["dbg"] or value & DEBUG_PULSE_MASK:
            dbg.append([b.cycle, value])
        state["dbg"] = value
        busy = int(d.busy.value)
        state["idle"] = state["idle"] + 1 if not busy and not b.rx_q else 0
    bench.hooks.append(sample)
    budget = int(job["max_cycles"])
    stopped, cycle = "budget", 0
    drove = True          # the last cycle drove cfg or rx: one more step sets them idle
    while cycle < budget:
        cycle += 1
        if bench.rx_q or bench.cfg_q or drove:
            drove = bool(bench.rx_q or bench.cfg_q)
            await bench.step()             # drives rx, samples (hook), then the clock edge
        else:
            await ReadOnly()
            sample(bench, tx=True)
            for hook in bench.hooks:
                if hook is not sample:
                    hook(bench)
            await RisingEdge(d.clk)
            bench.cycle += 1
        if state["idle"] >= IDLE_CYCLES:
            stopped = "idle"
            break
    bench.hooks.remove(sample)
    status_words = await _read(bench, [reg_addr(Reg.CORE_STATUS), reg_addr(Reg.CORE_PC),
                                       reg_addr(Reg.ERROR), reg_addr(Reg.ERROR_FLAGS),
                                       reg_addr(Reg.STATUS)])
    core = decode_fields(CoreStatus, status_words[0])
    if core["fault"]:
        stopped = "fault"
    elif core["halted"]:
        stopped = "halt"
    regs = await _read(bench, [gpr_addr(r) for r in range(16)])
    counters = await _read(bench, [counter_addr(c) for c in COUNTERS])
    mem = {}
    for start, count in job.get("mem", []):
        mem[str(start)] = await _read(bench, list(range(start // 4, start // 4 + count)))
    outputs = {str(c): [list(w[:3]) for w in got] for c, got in bench.tx_got.items() if got}
    return {
        "stopped": stopped, "core_status": status_words[0], "core_pc": status_words[1],
        "error": status_words[2], "error_flags": status_words[3], "status": status_words[4],
        "regs": regs, "counters": {c.name: v for c, v in zip(COUNTERS, counters)},
        "trace": trace, "dbg": dbg, "origin": origin, "end": bench.cycle,
        "mem": mem, "outputs": outputs, "cycles_run": cycle,
        "inputs_sent": {str(c): [cyc for _, cyc in sent] for c, sent in bench.rx_sent.items()},
    }


@cocotb.test()
async def run_programs(dut):
    """Play every job of the ``jobs`` file, write their results to ``results``."""
    params = sim.params()
    jobs = json.loads(Path(params["jobs"]).read_text())
    bench = PEBench(dut)
    await bench.start()
    results = []
    for job in jobs:
        results.append(await run_job(bench, job))
    Path(params["results"]).write_text(json.dumps(results))
