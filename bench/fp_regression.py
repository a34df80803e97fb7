"""Benchmark the FP regression: Verilog size, Verilator build time and vectors per second.

    python bench/fp_regression.py [--units fma_mixed,fma_fp32] [--count 200000] [--repeat 3]

Every unit is built from scratch in a temporary build folder (so the build time is real,
not a cache hit), then each of its cases streams ``count`` random operands plus the special
and boundary crosses; throughput is vectors over the simulator's wall time, the median of
``repeat`` runs. The machine is shared: read ratios and medians, not single figures.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", default=None, help="comma-separated unit names (all)")
    parser.add_argument("--count", type=int, default=200_000, help="random vectors per case")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fpbench-") as tmp:
        os.environ["WSE_BUILD_DIR"] = tmp
        from rtl.export import to_verilog
        from runtime import sim
        from tb.fp_tb import CASES, make_vectors
        from tb.fp_top import LANES, FPRegressionTop

        units = args.units.split(",") if args.units else list(CASES)
        print(f"{'unit':12s} {'lines':>7s} {'convert s':>9s} {'build s':>8s} "
              f"{'case':5s} {'vectors':>9s} {'vectors/s':>10s}")
        for unit in units:
            start = time.monotonic()
            verilog = to_verilog(FPRegressionTop([unit]), f"fp_{unit}")
            convert = time.monotonic() - start
            built = sim.build(f"fp_{unit}", verilog)
            for op in CASES[unit]:
                n = len(make_vectors(unit, op, args.count, 1)[0])
                rates = []
                for rep in range(args.repeat):
                    run_dir = sim.run(built, "tb.fp_tb", testcase="fp_vectors",
                                      name=f"bench_{op}_{rep}",
                                      tb_params={"unit": unit, "op": op, "count": args.count,
                                                 "seed": rep + 1})
                    case = next(ET.parse(run_dir / "results.xml").iter("testcase"))
                    rates.append(n / float(case.get("time")))
                print(f"{unit:12s} {built.verilog_lines:7d} {convert:9.1f} "
                      f"{built.build_seconds:8.1f} {op:5s} {n:9d} "
                      f"{statistics.median(rates):10.0f}", flush=True)
        print(f"({LANES} lanes per cycle; median of {args.repeat} runs)")


if __name__ == "__main__":
    main()
