"""Constrained-random programs on the RTL core (in the PE) in lockstep with the ISS.

    python bench/core_lockstep.py --count 10000 [--seed 0] [--batch 250] [--jobs 2] \
        [--json out.json]

Each program of ``tb.core_programs.generate_program`` (seeds ``seed .. seed + count - 1``)
runs on one Verilated PE (``runtime.pe_core_run``) and on the ISS (``tb.lockstep.run_lockstep``);
``tb.lockstep.check_run``
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

from tb.lockstep import run_lockstep  # noqa: E402

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
