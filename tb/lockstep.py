"""The RTL control core against the ISS, one retired instruction at a time.

:func:`first_difference` walks two retire traces (``(pc, word, rd, value)`` records, the
layout of :class:`rtl.pe.isa.RetireRecord`) in step and describes the first record where
they differ: its position, the PC, the instruction (disassembled), both records, and the
few instructions retired before it. :func:`check_run` compares a whole run of the PE
(:class:`tb.pe_core_run.PERun`) with the ISS on the same program: the traces, how it
stopped, the registers, the SRAM words read back and the wavelets sent; it raises
:class:`LockstepMismatch` with every difference found, the first trace difference first.

:func:`iss_run` runs a program on the ISS the way :func:`tb.pe_core_run.program_job` starts
it on the PE (start PC, the trigger's data and index, bindings, input wavelets).
"""

from golden.iss import ISS
from rtl.pe.asm import disassemble

__all__ = ["LockstepMismatch", "first_difference", "iss_run", "check_run", "describe"]

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
    """Compare a :class:`tb.pe_core_run.PERun` with the ISS's run of the same program;
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
