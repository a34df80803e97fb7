"""Run element-wise kernels (golden/nonlinear.py, compiled by gpt_mapping/kernels.py) on one
real PE in Verilator: each input in chunks of ``n`` elements, one job (one code-task run) per
chunk, every job of every kernel in one simulator run (tb/pe_core_run.py)."""

from dataclasses import dataclass

import numpy as np

from gpt_mapping.kernels import compile_kernel
from rtl.pe.regs import ErrorCode
from tb.pe_core_run import program_job, run_on_pe

__all__ = ["KernelRun", "run_kernels_on_pe", "run_kernel_on_pe"]


@dataclass
class KernelRun:
    """The FP16 outputs and, per chunk, the cycles the code task ran (``CORE_ACTIVE``: from
    its start to its ``tend``) and the PE's counters (``{Counter name: value}``)."""
    y16: np.ndarray
    cycles: list
    counters: list
    n: int
    steps: int


def run_kernels_on_pe(inputs, *, n=512, timeout=None):
    """``{name: KernelRun}`` for ``inputs`` = ``{kernel name: FP16 bits}``, computed by the
    PE's code task, ``n`` elements per task run (the last chunk of each input shorter)."""
    plan, jobs = [], []
    for name, x16 in inputs.items():
        x16 = np.asarray(x16, dtype=np.uint16).ravel()
        for i in range(0, len(x16), n):
            chunk = x16[i:i + n]
            kp = compile_kernel(name, len(chunk))
            budget = 40 * len(kp.kernel.steps) * (len(chunk) + 16) + 10_000
            plan.append((name, kp, chunk))
            # (the host's writes of the chunk precede the start: not the task's cycles)
            jobs.append(program_job(kp.program, writes=kp.config + kp.input_words(chunk),
                                    mem=[kp.output_range()], max_cycles=budget))
    runs = run_on_pe(jobs, timeout=timeout)
    out = {name: ([], [], []) for name in inputs}
    for (name, kp, chunk), run in zip(plan, runs):
        code = run.error[0]
        if run.stopped != "idle" or (isinstance(code, ErrorCode) and code != ErrorCode.NONE):
            raise RuntimeError(f"kernel {name}: the PE stopped with {run.stopped!r} at PC "
                               f"{run.pc:#x}, error {run.error}")
        start, _ = kp.output_range()
        out[name][0].extend(kp.unpack(run.mem[start], len(chunk)))
        out[name][1].append(run.counters["CORE_ACTIVE"])
        out[name][2].append(run.counters)
    return {name: KernelRun(np.array(ys, dtype=np.uint16), cycles, counters, n,
                            len(compile_kernel(name, 1).kernel.steps))
            for name, (ys, cycles, counters) in out.items()}


def run_kernel_on_pe(name, x16, *, n=512, timeout=None):
    """:func:`run_kernels_on_pe` for one kernel."""
    return run_kernels_on_pe({name: x16}, n=n, timeout=timeout)[name]
