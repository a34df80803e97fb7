"""Run control-core programs on one real PE in Verilator (host side of runtime/pe_core_tb.py).

:func:`program_job` turns an assembled :class:`rtl.pe.asm.Program` and what surrounds it
(bindings, input wavelets, GPRs, extra configuration words) into a job: the configuration
writes, the host trigger that starts it and the budget. :func:`run_on_pe` plays a list of
jobs in one simulator run on the cached ``pe_bench`` build (the default PE, as the fabric
instantiates it) and returns one :class:`PERun` per job.

The core starts as a task: the program's own ``.task`` entries enter the task table, and a
free task id (:func:`start_task`) is made a code task at the start PC and triggered by the
host, so the core starts at that PC with ``r1`` = data, ``r2`` = index, ``r3`` = their
wavelet word (data | index << 16), as the ISS's ``start(pc, wavelet)``.
"""

import functools
import itertools
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rtl.pe.isa import RetireRecord  # noqa: F401  (the trace records' layout, for readers)
from rtl.pe.regs import (MAX_TASKS, CoreStatus, ErrorCode, Reg, bind_addr, decode_error,
                         decode_fields, encode_bind, encode_task, encode_trigger, gpr_addr,
                         reg_addr, task_addr)
from runtime import sim

__all__ = ["program_job", "run_on_pe", "PERun", "start_task", "pe_build"]

_runs = itertools.count()


@functools.lru_cache(maxsize=None)
def pe_build():
    """The Verilator model of the default PE under its bench top (the build of
    tests/test_pe.py: the same Verilog, so the same cached model)."""
    from runtime.pe_driver import bench_verilog
    return sim.build("pe_bench", bench_verilog())


def start_task(program):
    """The task id the host starts the program with: the lowest id the program's ``.task``
    entries leave free (0 for most programs)."""
    used = set(program.task_words())
    for task in range(MAX_TASKS):
        if task not in used:
            return task
    raise ValueError("the program's .task entries use every task id: none is left to "
                     "start it with")


def program_job(program, *, pc=0, data=0, index=0, binds=None, inputs=None, gprs=None,
                writes=(), mem=(), zero=(), max_cycles=100_000):
    """A job of :func:`run_on_pe`.

    Parameters
    ----------
    program : rtl.pe.asm.Program
        Loaded at its base; its ``.task`` entries enter the task table.
    pc, data, index : int
        The start PC and the trigger's data and index (r1, r2; r3 = data | index << 16).
    binds : dict, optional
        ``{color: {"data_task": t, "ctrl_base": c, "prio": p}}`` (keys optional).
    inputs : dict, optional
        ``{color: [(data, index, ctrl), ...]}`` offered on rx from the start.
    gprs : dict, optional
        ``{register: value}`` written by the host before the start (every other GPR is
        written 0: the register file keeps its values across a PE reset).
    writes : sequence of (pe_address, word)
        Any other configuration (DSRs, launch entries, SRAM data), before the start.
    mem : sequence of (byte_address, count)
        SRAM words read back at the end.
    zero : sequence of (byte_address, count)
        SRAM words cleared before the program is loaded (the SRAM keeps its contents
        across a PE reset; a job that needs zero memory where an earlier one wrote says so).
    max_cycles : int
        Cycles the run may take after the start.
    """
    task = start_task(program)
    cfg = [(w, 0) for start, count in zero for w in range(start // 4, start // 4 + count)]
    cfg += [(program.base // 4 + i, int(w)) for i, w in enumerate(program.words)]
    cfg += [(task_addr(t), int(w)) for t, w in program.task_words().items()]
    cfg.append((task_addr(task), encode_task(pc=pc)))
    for color, bind in (binds or {}).items():
        cfg.append((bind_addr(color), encode_bind(**bind)))
    # The register file has no reset: every GPR is written (0 unless given).
    regs = {r: 0 for r in range(1, 16)} | dict(gprs or {})
    cfg += [(gpr_addr(r), int(v) & 0xFFFFFFFF) for r, v in regs.items()]
    cfg += [(int(a), int(v)) for a, v in writes]
    cfg.append((reg_addr(Reg.COUNTER_CTRL), 1))      # counters from here on (inputs next)
    start = [(reg_addr(Reg.TRIGGER), encode_trigger(task, index=index, data=data))]
    return {"writes": cfg, "start": start, "max_cycles": int(max_cycles),
            "inputs": {str(c): [list(w) for w in ws] for c, ws in (inputs or {}).items()},
            "mem": [[int(a), int(n)] for a, n in mem]}


@dataclass
class PERun:
    """What one job left behind on the PE.

    ``stopped``: ``"halt"``, ``"fault"``, ``"idle"`` (the core ended its task and the PE has
    nothing left to do) or ``"budget"``; ``pc``: CORE_PC (the halt, the faulting instruction,
    the last one in X); ``fault``: the ERROR register's code when stopped by a fault;
    ``trace``: ``[(cycle, pc, word, rd, value)]``; ``dbg``: ``[(cycle, PEDebug word)]``
    in the cycles the debug port changed or held an event; ``origin`` / ``end``: the cycles
    the start was configured at and the run stopped at (all cycles are the bench's);
    ``counters``: ``{Counter name: value}`` (counted from the start); ``mem``: ``{byte
    address: [words]}``; ``outputs``: ``{color: [(data, index, ctrl)]}`` sent on tx.
    """
    stopped: str
    pc: int
    regs: list
    fault: object
    error: tuple
    error_flags: int
    core_status: dict
    trace: list
    counters: dict
    mem: dict
    outputs: dict
    dbg: list
    origin: int
    end: int

    @property
    def retired(self):
        return self.counters["CORE_RETIRED"]

    def read_word(self, byte_address):
        """An SRAM word read back (``byte_address`` inside one of the job's ``mem`` ranges)."""
        for start, words in self.mem.items():
            if start <= byte_address < start + 4 * len(words):
                return words[(byte_address - start) // 4]
        raise KeyError(f"byte address {byte_address:#x} was not read back")


def _result(raw):
    code, info = decode_error(raw["error"])
    stopped = raw["stopped"]
    return PERun(
        stopped=stopped, pc=raw["core_pc"], regs=raw["regs"],
        fault=code if stopped == "fault" and isinstance(code, ErrorCode) else None,
        error=(code, info), error_flags=raw["error_flags"],
        core_status=decode_fields(CoreStatus, raw["core_status"]),
        trace=[tuple(r) for r in raw["trace"]], counters=raw["counters"],
        mem={int(a): w for a, w in raw["mem"].items()},
        outputs={int(c): [tuple(w) for w in ws] for c, ws in raw["outputs"].items()},
        dbg=[tuple(r) for r in raw["dbg"]], origin=raw["origin"], end=raw["end"])


def run_on_pe(jobs, *, timeout=None):
    """Play ``jobs`` (from :func:`program_job`) on the PE, one simulator run for all;
    returns a :class:`PERun` per job."""
    build = pe_build()
    folder = Path(tempfile.mkdtemp(prefix="pe-core-", dir=build.build_dir)).resolve()
    (folder / "jobs.json").write_text(json.dumps(list(jobs)))
    name = f"pe-core-{os.getpid()}-{next(_runs)}"
    sim.run(build, "runtime.pe_core_tb", testcase="run_programs", name=name, timeout=timeout,
            tb_params={"jobs": str(folder / "jobs.json"),
                       "results": str(folder / "results.json")})
    results = [_result(r) for r in json.loads((folder / "results.json").read_text())]
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()
    return results
