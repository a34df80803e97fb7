"""Constrained-random programs on the RTL core (in the PE) in lockstep with the ISS.

    python bench/core_lockstep.py --count 10000 [--seed 0] [--batch 250] [--jobs 2] \
        [--json out.json]

Each program of ``tb.core_programs.generate_program`` (seeds ``seed .. seed + count - 1``)
runs on one Verilated PE (``tb.pe_core_run``) and on the ISS; ``tb.lockstep.check_run``
compares the retire traces record by record (stopping at the first differing instruction:
its PC, the disassembled instruction, both values), the stop, the registers, the data and
tensor regions of the SRAM and the wavelets sent. Programs run ``--batch`` to a simulator
process. Prints the programs, instructions and mismatches, and the first mismatches in
full; exit status 1 if any program mismatched. ``nox -s lockstep`` runs 10,000 (the figure
of docs/core.md); ``tests/test_pe_core.py`` runs 500 of them.
"""

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rtl.pe import regs as R  # noqa: E402
from rtl.pe.isa import decode  # noqa: E402
from tb.core_programs import (DATA_BASE, DATA_WORDS, SLOT_WORDS, TENSOR_BASE,  # noqa: E402
                              TENSOR_SLOTS, generate_program)
from tb.lockstep import LockstepMismatch, check_run, iss_run  # noqa: E402
from tb.pe_core_run import program_job, run_on_pe  # noqa: E402

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
    if jobs > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(jobs) as pool:
            results = pool.map(run_batch, batches)
            for part, (r, m) in zip(batches, results):
                retired, done = retired + r, done + len(part)
                mismatches += m
                if progress:
                    progress(done, retired, len(mismatches))
    else:
        for part in batches:
            r, m = run_batch(part)
            retired, done = retired + r, done + len(part)
            mismatches += m
            if progress:
                progress(done, retired, len(mismatches))
    return len(seeds), retired, mismatches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--jobs", type=int, default=1, help="simulator processes at a time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def progress(done, retired, bad):
        print(f"{done} programs, {retired} instructions, {bad} mismatches "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    count, retired, mismatches = run_lockstep(range(args.seed, args.seed + args.count),
                                              args.batch, progress, args.jobs)
    wall = time.perf_counter() - start
    print(f"lockstep: {count} programs, {retired} retired instructions, "
          f"{len(mismatches)} mismatches, {wall:.0f} s")
    for message in mismatches[:5]:
        print(message)
    if args.json:
        args.json.write_text(json.dumps({"programs": count, "retired": retired,
                                         "mismatches": mismatches, "seconds": wall}) + "\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
