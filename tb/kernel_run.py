"""Run element-wise kernels (golden/nonlinear.py, compiled by gpt_mapping/kernels.py) on one
real PE in Verilator: the input in chunks of ``n`` elements, one job per chunk, all jobs in
one simulator run (tb/pe_core_run.py)."""

from dataclasses import dataclass

import numpy as np

from gpt_mapping.kernels import compile_kernel
from tb.pe_core_run import program_job, run_on_pe

__all__ = ["KernelRun", "run_kernel_on_pe"]


@dataclass
class KernelRun:
    """The FP16 outputs and, per chunk, the cycles from the task's start to its end."""
    y16: np.ndarray
    cycles: list
    n: int
    steps: int


def run_kernel_on_pe(name, x16, *, n=512, timeout=None):
    """``y16`` of kernel ``name`` for the FP16 bits ``x16`` computed by the PE's code task,
    ``n`` elements per task run (the last chunk shorter)."""
    x16 = np.asarray(x16, dtype=np.uint16).ravel()
    chunks = [x16[i:i + n] for i in range(0, len(x16), n)]
    programs, jobs = [], []
    for chunk in chunks:
        kp = compile_kernel(name, len(chunk))
        programs.append(kp)
        budget = 40 * len(kp.kernel.steps) * (len(chunk) + 16) + 10_000
        jobs.append(program_job(kp.program, writes=kp.config + kp.input_words(chunk),
                                mem=[kp.output_range()], max_cycles=budget))
    runs = run_on_pe(jobs, timeout=timeout)
    out, cycles = [], []
    for kp, chunk, run in zip(programs, chunks, runs):
        if run.stopped != "idle" or run.fault is not None or int(run.error[0].value if hasattr(run.error[0], "value") else run.error[0]):
            raise RuntimeError(f"kernel {name}: the PE stopped with {run.stopped!r} at PC "
                               f"{run.pc:#x}, error {run.error}")
        start, _ = kp.output_range()
        out += kp.unpack(run.mem[start], len(chunk))
        cycles.append(run.end - run.origin)
    return KernelRun(np.array(out, dtype=np.uint16), cycles, n, len(programs[0].kernel.steps))
