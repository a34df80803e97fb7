"""The RTL control core against the ISS, one retired instruction at a time.

:func:`first_difference` walks two retire traces (``(pc, word, rd, value)`` records, the
layout of :class:`rtl.pe.isa.RetireRecord`) in step and describes the first record where
they differ: its position, the PC, the instruction (disassembled), both records, and the
few instructions retired before it. :func:`check_run` compares a whole run of the PE
(:class:`runtime.pe_core_run.PERun`) with the ISS on the same program: the traces, how it
stopped, the registers, the SRAM words read back and the wavelets sent; it raises
:class:`LockstepMismatch` with every difference found, the first trace difference first.

:func:`iss_run` runs a program on the ISS the way :func:`runtime.pe_core_run.program_job` starts
it on the PE (start PC, the trigger's data and index, bindings, input wavelets).
:func:`run_lockstep` runs the constrained-random programs of :mod:`tb.core_programs` on
Verilated PEs and on the ISS and checks each (``tests/test_pe_core.py``,
``bench/core_lockstep.py``).
"""

from golden.iss import ISS
from rtl.pe import regs as R
from rtl.pe.asm import disassemble
from rtl.pe.isa import decode
from tb.core_programs import (DATA_BASE, DATA_WORDS, SLOT_WORDS, TENSOR_BASE, TENSOR_SLOTS,
                              generate_program)
from runtime.pe_core_run import program_job, run_on_pe

__all__ = ["LockstepMismatch", "first_difference", "iss_run", "check_run", "describe",
           "SRAM_READ", "program_jobs", "run_batch", "run_lockstep"]

#: Retired instructions shown before the first difference.
CONTEXT = 4


class LockstepMismatch(AssertionError):
    """The RTL and the ISS disagree; the message says where and how."""


def describe(record):
    """``PC 0x0040 `add r3, r1, r2` -> r3 = 0x00000005`` for a (pc, word, rd, value)."""
    pc, word, rd, value = record
    text = disassemble(word, pc=pc) or f"word {word:#010x}"
    effect = f"r{rd} = {value:#010x}" if rd else f"value {value:#010x}"
    return f"PC {pc:#06x} `{text}` -> {effect}"


def first_difference(rtl, iss, context=CONTEXT):
    """The first difference of two retire traces (sequences of ``(pc, word, rd, value)``),
    as a message, or ``None`` when they are equal."""
    rtl, iss = [tuple(r) for r in rtl], [tuple(r) for r in iss]
    for i, (a, b) in enumerate(zip(rtl, iss)):
        if a != b:
            before = "".join(f"\n    #{j}: {describe(iss[j])}"
                             for j in range(max(0, i - context), i))
            return (f"retired instruction #{i} differs at PC {b[0]:#06x} "
                    f"(`{disassemble(b[1], pc=b[0]) or hex(b[1])}`):\n"
                    f"  RTL: {describe(a)}\n  ISS: {describe(b)}"
                    + (f"\n  retired before it:{before}" if before else ""))
    if len(rtl) != len(iss):
        longer, name = (rtl, "RTL") if len(rtl) > len(iss) else (iss, "ISS")
        extra = longer[min(len(rtl), len(iss))]
        return (f"the RTL retired {len(rtl)} instructions, the ISS {len(iss)}; the first "
                f"one only the {name} retired: {describe(extra)}")
    return None


def iss_run(program, *, pc=0, data=0, index=0, binds=None, inputs=None, budget=1_000_000):
    """``(iss, result)``: ``program`` on a fresh ISS, started as the PE job starts it."""
    iss = ISS(inputs=inputs)
    iss.load(program)
    for color, bind in (binds or {}).items():
        iss.bind(color, **bind)
    iss.start(pc, wavelet=(data & 0xFFFF) | (index & 0x3FF) << 16)
    return iss, iss.run(max_instructions=budget)


def check_run(run, iss, result, what="program"):
    """Compare a :class:`runtime.pe_core_run.PERun` with the ISS's run of the same program;
    raises :class:`LockstepMismatch` naming every difference (the trace's first)."""
    problems = []
    trace = first_difference([r[1:] for r in run.trace], iss.trace)
    if trace:
        problems.append(trace)
    stop = "halt" if result.stop == "halt" else result.stop
    if run.stopped != stop:
        problems.append(f"the RTL stopped by {run.stopped}, the ISS by {stop}")
    for r in range(16):
        if run.regs[r] != iss.regs[r]:
            problems.append(f"r{r}: RTL {run.regs[r]:#010x}, ISS {iss.regs[r]:#010x}")
    for start, words in run.mem.items():
        want = iss.read_words(start, len(words))
        for i, (got, exp) in enumerate(zip(words, want)):
            if got != exp:
                problems.append(f"SRAM word at {start + 4 * i:#x}: RTL {got:#010x}, ISS "
                                f"{exp:#010x}")
                break
    sent = {c: [tuple(w) for w in ws] for c, ws in iss.outputs.items() if ws}
    if run.outputs != sent:
        problems.append(f"wavelets sent: RTL {run.outputs}, ISS {sent}")
    if problems:
        raise LockstepMismatch(f"{what}: " + "\n".join(problems))


#: What a program may read without having written it, cleared before each (the SRAM, the
#: DSR file and the accumulator cache keep their contents across a PE reset; the ISS
#: starts from zeros): the data and tensor regions, every DSR word, the accumulator cache.
SRAM_READ = [(DATA_BASE, DATA_WORDS), (TENSOR_BASE, TENSOR_SLOTS * SLOT_WORDS)]


def _scrub(program, pe=None):
    """Configuration writes that clear what ``program`` may read before writing it: the
    DSRs its ``dsrr`` instructions name (every other DSR it uses it writes first) and the
    accumulator cache."""
    p = pe or R.PEParams()
    dsrs = set()
    for word in program.words:
        decoded = decode(word)
        if decoded and not isinstance(decoded[0], str) and decoded[0].mnemonic == "dsrr":
            dsrs.add(decoded[1]["imm"] >> 3)
    writes = [(R.dsr_addr(d, w), 0) for d in sorted(dsrs) if d < p.num_dsrs
              for w in range(R.DSR_WORDS)]
    writes += [(R.acc_addr(i), 0) for i in range(p.acc_words)]
    return writes


def program_jobs(seeds):
    """``[(generated program, job)]`` for ``seeds``."""
    out = []
    for seed in seeds:
        generated = generate_program(seed)
        program = generated.assemble()
        job = program_job(program, inputs=generated.inputs, zero=SRAM_READ,
                          writes=_scrub(program), mem=SRAM_READ,
                          max_cycles=20 * generated.max_instructions + 2000)
        out.append((generated, job))
    return out


def run_batch(seeds):
    """One simulator run of ``seeds``: ``(instructions retired, [mismatch messages])``."""
    pairs = program_jobs(seeds)
    runs = run_on_pe([job for _, job in pairs], timeout=3600)
    retired, mismatches = 0, []
    for (generated, _), run in zip(pairs, runs):
        iss, result = iss_run(generated.assemble(), inputs=generated.inputs)
        retired += run.retired
        try:
            check_run(run, iss, result, what=f"seed {generated.seed}")
        except LockstepMismatch as exc:
            mismatches.append(str(exc))
    return retired, mismatches


def run_lockstep(seeds, batch=250, progress=None, jobs=1):
    """Run ``seeds`` in lockstep, ``batch`` programs per simulator process, ``jobs``
    processes at a time; returns ``(programs, instructions, [mismatch messages])``."""
    seeds = list(seeds)
    batches = [seeds[i:i + batch] for i in range(0, len(seeds), batch)]
    retired, mismatches, done = 0, [], 0
    pool = None
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        pool = ProcessPoolExecutor(jobs)
    try:
        results = pool.map(run_batch, batches) if pool else map(run_batch, batches)
        for part, (r, m) in zip(batches, results):
            retired, done = retired + r, done + len(part)
            mismatches += m
            if progress:
                progress(done, retired, len(mismatches))
    finally:
        if pool:
            pool.shutdown()
    return len(seeds), retired, mismatches
