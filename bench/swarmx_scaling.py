"""SwarmX's predicted step time for 1 to 64 systems (gpt_mapping/swarmx.py, docs/training.md
section 6).

    python bench/swarmx_scaling.py [--link-gbps 1200] [--latency-us 5] [--clock-ghz 1.1]

GPT-2 small (124,439,808 parameters) trained data-parallel, each system a 750 x 994 wafer
with the wafer batch of bench/gpt2_wafer.py (15 sequences of 1,024 tokens). A system's
compute per row is an assumption built from a prediction: the perf model's GEMM cycles of
one block on the wafer in the mapper's layouts (52,811 for 15,360 rows, docs/gemm.md
section 10), times 12 blocks, times 3 (forward, and the backward's two GEMMs of the same
size: the FLOP ratio, not a measurement; the fabric's dW measured 6.0x its forward GEMM at
4 x 4, docs/training.md section 5). The link figures are assumptions too (design choice):
one link per system to its tree parent, 1.2 Tb/s by default (twelve 100 Gb/s ports), 5 us
a hop, 1 MiB chunks. Weak scaling: every system keeps the wafer batch; strong scaling: 64
wafer batches split over S systems.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_mapping.swarmx import SwarmXModel  # noqa: E402

PARAMS = 124_439_808
ROWS = 15 * 1024
CYCLES_PER_ROW = 52_811 * 12 * 3 / ROWS


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--link-gbps", type=float, default=1200.0)
    parser.add_argument("--latency-us", type=float, default=5.0)
    parser.add_argument("--clock-ghz", type=float, default=1.1)
    args = parser.parse_args(argv)
    model = SwarmXModel(args.link_gbps * 1e9 / 8, args.latency_us * 1e-6, args.clock_ghz * 1e9)
    print(f"GPT-2 small, {PARAMS:,} parameters; {CYCLES_PER_ROW:.1f} fabric cycles per row "
          f"(assumed); links {args.link_gbps:g} Gb/s, {args.latency_us:g} us; clock "
          f"{args.clock_ghz:g} GHz")
    print(f"{'S':>3} {'levels':>6} | weak: {'compute':>9} {'link':>9} {'tree':>9} "
          f"{'step':>9} {'rows/s':>12} {'eff.':>6} | strong: {'step':>9} {'speed-up':>8}")
    base = None
    strong_rows = 64 * ROWS
    strong1 = model.step_seconds(1, PARAMS, CYCLES_PER_ROW, strong_rows)["total"]
    for s in (1, 2, 4, 8, 16, 32, 64):
        w = model.step_seconds(s, PARAMS, CYCLES_PER_ROW, ROWS * s)
        rate = ROWS * s / w["total"]
        base = base or rate
        st = model.step_seconds(s, PARAMS, CYCLES_PER_ROW, strong_rows)["total"]
        print(f"{s:>3} {model.levels(s):>6} | {1e3 * w['compute']:>7.2f}ms "
              f"{1e3 * w['transfer']:>7.2f}ms {1e3 * w['tree']:>7.3f}ms "
              f"{1e3 * w['total']:>7.2f}ms {rate:>12,.0f} {rate / (base * s):>6.1%} | "
              f"{1e3 * st:>7.1f}ms {strong1 / st:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
