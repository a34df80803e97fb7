"""``python -m gpt_mapping core``: assemble a program and run it on one PE's control core.

    python -m gpt_mapping core PROG.s [--backend rtl|iss] [--max-cycles N] \\
        [--mem START:COUNT ...] --json OUT.json [--trace TIMELINE.json]

``PROG.s`` is assembled (:func:`rtl.pe.asm.assemble`) with its code at byte address 0 and
run from reset (PC 0, every register 0) until ``halt``. Its data may use any SRAM address
the program image does not occupy (the image ends after its last instruction or ``.word``);
``.task`` entries go into the task table before the start.

Writes ``OUT.json``: ``{"regs": [16 unsigned ints], "halted": bool, "cycles": int,
"retired": int, "mem": {"START": [COUNT words]}}`` (START as given, decimal or ``0x`` hex,
a byte address; one entry per ``--mem``). Exit codes: 0 halted; 1 the program ran but did
not halt (cycle budget, a fault, a ``tend`` with no task left, a ``recv`` that would wait
forever) -- the JSON is written and the message names the PC and the instruction; 2 bad
input (an assembly error names the line and the token; a bad ``--mem``; a program larger
than the SRAM; a backend that is not available).

Backends: ``iss`` runs :class:`golden.iss.ISS` (cycles from its cycle model, the RTL's
design targets); ``rtl`` (the default, SPEC 4.5) runs :func:`run_core_rtl`: the program on
one Verilated PE (the first run builds the model, about a minute; later runs reuse it).

``--trace FILE`` writes the run's timeline as trace-event JSON for the Perfetto UI
(docs/timeline.md): every retired instruction as a one-cycle slice named by its disassembly
(``args``: pc, word, rd, value), on the cycle it retired. For ``rtl`` that is the PE's cycle
(from the configuration of the start, 0) and the PE's tracks come with it (tasks,
micro-threads, the core's task spans, the retired-instruction counter, from the PE's debug
port); for ``iss`` it is the ISS's cycle model (its ``cycles``), which the timeline's
``otherData.cycles`` says. Also written for a program that does not halt.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from golden.iss import ISS, CoreBlocked
from rtl.pe.asm import AssemblyError, assemble, disassemble, parse_number

__all__ = ["main", "build_parser", "CoreRun", "run_core_iss", "run_core_rtl",
           "parse_mem_range", "BackendNotConnected", "SRAM_WORDS", "core_timeline"]

BACKENDS = ("rtl", "iss")
DEFAULT_MAX_CYCLES = 1_000_000
#: The PE's default SRAM (rtl.pe.pe.PE(sram_words=12288)).
SRAM_WORDS = 12288


class BackendNotConnected(RuntimeError):
    """The requested backend cannot run yet."""


@dataclass
class CoreRun:
    """What a backend reports about one run.

    ``regs``: the 16 registers (unsigned); ``halted``; ``cycles``; ``retired``; ``pc``: the
    halt, the faulting instruction, or where the core was when the run stopped; ``stop``:
    ``"halt"``, ``"budget"``, ``"fault"``, ``"idle"`` or ``"blocked"``; ``message``: why it
    did not halt, naming the PC and the instruction; ``mem``: ``{START text: [words]}``.
    With ``trace``: ``retires``, ``[(cycle, pc, word, rd, value)]`` per retired
    instruction, and (rtl) ``dbg``, the PE's debug records ``[(cycle, word)]`` with ``end``
    the cycle the run stopped at (cycles from the start, 0).
    """
    regs: list
    halted: bool
    cycles: int
    retired: int
    pc: int
    stop: str
    message: str = ""
    mem: dict = field(default_factory=dict)
    retires: list = None
    dbg: list = None
    end: int = None

    def as_json(self):
        """The SPEC 4.5 report."""
        return {"regs": [int(r) & 0xFFFFFFFF for r in self.regs], "halted": self.halted,
                "cycles": int(self.cycles), "retired": int(self.retired),
                "mem": {k: [int(w) for w in v] for k, v in self.mem.items()}}


def parse_mem_range(text, sram_words=SRAM_WORDS):
    """``(START text, byte address, count)`` of a ``--mem START:COUNT`` argument; raises
    ``ValueError`` naming what is wrong."""
    start_text, sep, count_text = text.partition(":")
    start, count = parse_number(start_text), parse_number(count_text)
    if not sep or start is None or count is None:
        raise ValueError(f"--mem {text!r}: expected START:COUNT, START a byte address "
                         f"(decimal or 0x hex), COUNT a number of words")
    if start % 4 or start < 0:
        raise ValueError(f"--mem {text!r}: START {start_text} is not a byte address that is a "
                         f"multiple of 4")
    if count < 1:
        raise ValueError(f"--mem {text!r}: COUNT must be at least 1")
    if start + 4 * count > 4 * sram_words:
        raise ValueError(f"--mem {text!r}: {count} words from {start:#x} are not inside the "
                         f"SRAM (0x0..{4 * sram_words - 4:#x})")
    return start_text.strip(), start, count


def _where(pc, read_word):
    """``PC 0x.. (`instruction`)`` for messages."""
    try:
        word = read_word(pc)
    except (ValueError, IndexError):
        return f"PC {pc:#06x} (outside the SRAM)"
    text = disassemble(word, pc=pc)
    return f"PC {pc:#06x} (`{text}`)" if text else f"PC {pc:#06x} (word {word:#010x})"


def run_core_iss(program, max_cycles, mem_ranges, sram_words=SRAM_WORDS, trace=False):
    """Run ``program`` (a :class:`rtl.pe.asm.Program`) on the ISS from reset at PC 0 for at
    most ``max_cycles`` cycles; ``mem_ranges``: ``[(START text, byte address, count)]`` to
    read back. Returns a :class:`CoreRun` (with ``trace``, its ``retires``: each
    instruction at the cycle the ISS's cycle model retires it in)."""
    iss = ISS(sram_words=sram_words, keep_trace=False)
    iss.load(program)
    iss.start(0)
    retires = None
    if trace:
        retires = []
        step = iss.step

        def recording_step():
            """ISS.step, noting each instruction with its cycle (``cycles`` counts the
            cycles until it left W, so it retired in the last of them)."""
            record = step()
            retires.append((iss.cycles - 1, record.pc, record.word, record.rd, record.value))
            return record
        iss.step = recording_step            # ISS.run calls self.step()

    def read_word(address):
        return iss.read_words(address, 1)[0]

    try:
        result = iss.run(max_cycles=max_cycles)
        stop, pc = result.stop, result.pc
        if stop == "halt":
            message = ""
        elif stop == "budget":
            message = (f"did not halt within {max_cycles} cycles: the core was at "
                       f"{_where(pc, read_word)}")
        elif stop == "fault":
            message = f"fault {result.fault.message}"
        else:
            message = (f"did not halt: the core went idle at {_where(pc, read_word)} with no "
                       f"task to run")
    except CoreBlocked as blocked:
        stop, pc = "blocked", blocked.pc
        message = f"did not halt: the core would wait forever: {blocked.message}"
    mem = {label: iss.read_words(start, count) for label, start, count in mem_ranges}
    return CoreRun(list(iss.regs), stop == "halt", iss.cycles, iss.retired, pc, stop,
                   message, mem, retires=retires, end=iss.cycles)


def run_core_rtl(program, max_cycles, mem_ranges, sram_words=SRAM_WORDS, trace=False):
    """Run ``program`` on the RTL core: one PE in Verilator (:mod:`runtime.pe_core_run`).

    The same contract as :func:`run_core_iss`: the program's words at byte address
    ``program.base`` (0) and its ``.task`` entries through the PE's configuration port,
    every register 0, started at PC 0 by the host trigger (r1 = r2 = r3 = 0), run until the
    PE is idle or ``max_cycles`` cycles pass; ``cycles`` is the core's CORE_ACTIVE counter
    (cycles a task was running), ``retired`` its CORE_RETIRED, ``pc`` CORE_PC, a fault the
    ERROR register's code. With ``trace``: ``retires`` from the PE's trace port and ``dbg``
    from its debug port, on the PE's cycles from the configuration of the start."""
    if sram_words != SRAM_WORDS:
        raise ValueError(f"the RTL backend runs the default PE ({SRAM_WORDS} SRAM words), "
                         f"not {sram_words}")
    from runtime.pe_core_run import program_job, run_on_pe   # brings the Verilator tool chain
    if program.end > 4 * sram_words:
        raise ValueError(f"the program ends at byte {program.end:#x}, past the SRAM "
                         f"({4 * sram_words:#x} bytes)")
    # A fresh simulator: the SRAM and the registers start at 0, as in the ISS.
    job = program_job(program, mem=[(start, count) for _, start, count in mem_ranges],
                      max_cycles=max_cycles)
    run = run_on_pe([job])[0]
    image = {program.base + 4 * i: w for i, w in enumerate(program.words)}

    def read_word(address):
        if not 0 <= address < 4 * sram_words:
            raise ValueError(address)
        return image.get(address, 0)
    where = _where(run.pc, read_word)
    stop = run.stopped
    if stop == "halt":
        message = ""
    elif stop == "fault":
        code, info = run.error
        message = f"fault {getattr(code, 'name', code)} at {where} (info {info})"
    elif stop == "budget":
        message = (f"did not halt within {max_cycles} cycles: the core was at {where}"
                   + (" waiting in twait / recv" if run.core_status["waiting"] else ""))
    else:
        message = f"did not halt: the core went idle at {where} with no task to run"
    mem = {label: run.mem[start] for label, start, _ in mem_ranges}
    out = CoreRun(list(run.regs), stop == "halt", run.counters["CORE_ACTIVE"], run.retired,
                  run.pc, stop, message, mem)
    if trace:
        # The debug port is registered: its value in cycle n is cycle n - 1's.
        out.retires = [(c - run.origin, *rest) for c, *rest in run.trace]
        out.dbg = [(c - 1 - run.origin, value) for c, value in run.dbg]
        out.end = run.end - run.origin
    return out


def core_timeline(run, backend, title):
    """The :class:`gpt_mapping.timeline.Timeline` of a traced :class:`CoreRun`."""
    from gpt_mapping.timeline import Timeline
    from gpt_mapping.traces import add_instructions, add_pe
    tl = Timeline(title)
    tl.metadata.update({"backend": backend, "retired": int(run.retired),
                        "halted": bool(run.halted), "stop": run.stop})
    if backend == "iss":
        tl.metadata["cycles"] = ("the ISS's cycle model (golden/iss.py CycleModel): each "
                                 "instruction at the cycle it retires in")
        pid = tl.process("core (ISS)")
    else:
        tl.metadata["cycles"] = ("the PE's clock cycles, 0 = the cycle the host's start "
                                 "trigger was configured")
        pid = tl.process("PE")
        cycles = [c for c, _ in run.dbg]
        add_pe(tl, pid, cycles, [v for _, v in run.dbg], end=run.end)
    add_instructions(tl, pid, run.retires)
    return tl


BACKEND_RUNNERS = {"iss": run_core_iss, "rtl": run_core_rtl}


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m gpt_mapping core",
        description="Assemble PROG.s, run it on one PE's control core from reset until "
                    "halt, and write registers, counts and memory as JSON. The code is "
                    "placed at byte address 0 and starts there; data may use any SRAM "
                    "address the program image does not occupy.")
    parser.add_argument("program", type=Path, metavar="PROG.s", help="assembly source")
    parser.add_argument("--backend", choices=BACKENDS, default="rtl",
                        help="rtl (default: the Verilated PE) or iss (golden/iss.py)")
    parser.add_argument("--max-cycles", type=int, default=DEFAULT_MAX_CYCLES, metavar="N",
                        help=f"cycle budget (default {DEFAULT_MAX_CYCLES}); a program that "
                             f"has not halted by then fails, naming its PC")
    parser.add_argument("--mem", action="append", default=[], metavar="START:COUNT",
                        help="read COUNT words from byte address START (decimal or 0x hex) "
                             "into the JSON; repeatable")
    parser.add_argument("--json", required=True, type=Path, metavar="OUT.json",
                        help="where to write the report")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="also write the run's timeline: every retired instruction "
                             "(trace-event JSON for https://ui.perfetto.dev, "
                             "docs/timeline.md)")
    return parser


def main(argv=None):
    """Entry point; returns the exit code (0 halted, 1 did not halt, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if args.max_cycles < 1:
        print(f"error: --max-cycles {args.max_cycles}: the budget must be at least 1",
              file=sys.stderr)
        return 2
    try:
        mem_ranges = [parse_mem_range(text) for text in args.mem]
        if not args.program.is_file():
            raise ValueError(f"{args.program}: no such file")
        program = assemble(args.program.read_text())
        if program.end > 4 * SRAM_WORDS:
            raise ValueError(f"{args.program}: the program image ends at {program.end:#x}, "
                             f"past the SRAM ({4 * SRAM_WORDS:#x} bytes)")
        traced = {} if args.trace is None else {"trace": True}
        run = BACKEND_RUNNERS[args.backend](program, args.max_cycles, mem_ranges, **traced)
    except AssemblyError as exc:
        print(f"error: {args.program}: {exc}", file=sys.stderr)
        return 2
    except (ValueError, BackendNotConnected) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(run.as_json(), indent=2) + "\n")
    if args.trace is not None:
        core_timeline(run, args.backend, f"{args.program.name} on the control core "
                                         f"({args.backend})").write(args.trace)
        print(f"timeline -> {args.trace} (open it in https://ui.perfetto.dev)")
    if not run.halted:
        print(f"error: {args.program}: {run.message}", file=sys.stderr)
        return 1
    print(f"{args.program}: halted at PC {run.pc:#06x} after {run.retired} instructions, "
          f"{run.cycles} cycles ({args.backend}) -> {args.json}")
    return 0
