"""Column groups on the RTL fabric, in the reduction-bound regime (docs/gemm.md section 10).

    python bench/gemm_groups.py [--fabric 16x16] [--json OUT.json]
    python bench/gemm_groups.py --demo     # the demo block's GEMMs in the mapper's layouts

A GEMM of few features per PE (K = 4 features per column in the plain layout, 16 tokens
per PE) on a 16 x 16 fabric, with every output's 2 T_y partial-sum wavelets on the row
link binding the plain layout: run on the RTL with 1, 2, 4, 8 and 16 column groups (the
interleave the mapper would pick for each), dense and 90 % sparse. Per run: measured and
predicted cycles, the model's error, FMAC utilization, bit-exact against the golden model
of the same group width. This is the layout family the wafer-scale prediction of GPT-2
small chooses from (bench/gpt2_wafer.py); the model was frozen before these runs
(bench/perf_model_sweep.py, FROZEN_MODEL_SHA256).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golden.gemm import fabric_gemm  # noqa: E402
from gpt_mapping.layout import GemmMapping, parse_fabric  # noqa: E402
from gpt_mapping.perf_model import choose_interleave, predict_from_weights  # noqa: E402

TOKENS_PER_PE = 16
FEATURES_PER_PE = 4
OUTPUTS = 64


def run(width, height, groups, sparsity, seed=0):
    from gpt_mapping.fabric_run import run_gemm_rtl
    t, k = TOKENS_PER_PE * height, FEATURES_PER_PE * width
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, k)).astype(np.float16)
    w = rng.standard_normal((k, OUTPUTS)).astype(np.float16)
    w[rng.random(w.shape) < sparsity] = 0
    m = choose_interleave(GemmMapping(t, k, OUTPUTS, width, height, groups=groups), w)
    predicted = predict_from_weights(m, w)
    start = time.perf_counter()
    y, c = run_gemm_rtl(m, x, w)
    wall = time.perf_counter() - start
    exact = bool(np.array_equal(y.view(np.uint16),
                                fabric_gemm(x, w, width, height, groups=groups)
                                .view(np.uint16)))
    cycles = int(c["cycles"])
    return {"fabric": [width, height], "shape": [t, k, OUTPUTS], "groups": groups,
            "interleave": m.interleave, "sparsity": sparsity, "cycles": cycles,
            "predicted": predicted.cycles, "error": predicted.cycles / cycles - 1,
            "utilization": c["fmac_lane_ops"] / (4 * width * height * cycles),
            "predicted_utilization": predicted.fmac_utilization,
            "bit_exact": exact, "wall_seconds": wall}


def demo_layouts(sparsities=(0.0, 0.9)):
    """The demo block's four GEMMs in the layouts the mapper chooses
    (bench/gpt2_wafer.py --demo, the redistribution bound counted), run on the 4 x 4 RTL
    with X loaded in each layout by the host: measured against predicted, and the plain
    layout's cycles beside them."""
    from gpt_mapping import gpt
    from gpt_mapping.fabric_run import run_gemm_rtl
    from gpt_mapping.model import GPTConfig, init_block
    from gpt_mapping.perf_model import choose_layout
    config = GPTConfig(n_embd=64, n_head=4, n_ctx=16, batch=2)
    rows = []
    for sparsity in sparsities:
        mapped = gpt.map_block(init_block(config, 0), sparsity)
        rng = np.random.default_rng(0)
        for name, layer in mapped.linears.items():
            x = rng.standard_normal((config.tokens, layer.k)).astype(np.float16)
            plain = GemmMapping(config.tokens, layer.k, layer.n, 4, 4)
            choice = choose_layout(plain, layer.w16)
            m = choice.mapping
            y, c = run_gemm_rtl(m, x, layer.w16)
            exact = bool(np.array_equal(y.view(np.uint16), fabric_gemm(
                x, layer.w16, 4, 4, groups=m.groups).view(np.uint16)))
            _, c1 = run_gemm_rtl(choose_interleave(plain, layer.w16), x, layer.w16)
            cycles = int(c["cycles"])
            rows.append({"gemm": name, "sparsity": sparsity, "groups": m.groups,
                         "interleave": m.interleave, "cycles": cycles,
                         "predicted": choice.estimate.cycles,
                         "error": choice.estimate.cycles / cycles - 1,
                         "redistribution_bound": choice.cycles_in + choice.cycles_out,
                         "lane_ops": int(c["fmac_lane_ops"]),
                         "plain_cycles": int(c1["cycles"]), "bit_exact": exact})
            r = rows[-1]
            print(f"{name:12s} {sparsity:4.0%} G {m.groups} I {m.interleave}: {cycles:6,d} "
                  f"cycles (predicted {r['predicted']:,}, {100 * r['error']:+.1f} %), "
                  f"{r['lane_ops'] / (64 * cycles):.1%}; plain {r['plain_cycles']:,}; "
                  f"moves bound {r['redistribution_bound']}; exact {exact}", flush=True)
        part = [r for r in rows if r["sparsity"] == sparsity]
        cyc = sum(r["cycles"] for r in part)
        ops = sum(r["lane_ops"] for r in part)
        moves = sum(r["redistribution_bound"] for r in part)
        print(f"  {sparsity:.0%}: GEMMs {cyc:,} cycles, {ops / (64 * cyc):.1%} (with the "
              f"moves bound {ops / (64 * (cyc + moves)):.1%}); plain "
              f"{sum(r['plain_cycles'] for r in part):,}")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fabric", type=parse_fabric, default=(16, 16))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--demo", action="store_true",
                        help="the demo block's GEMMs in the mapper's layouts on 4 x 4 instead")
    args = parser.parse_args(argv)
    if args.demo:
        rows = demo_layouts()
        if args.json:
            args.json.write_text(json.dumps(rows, indent=2) + "\n")
        return 0 if all(r["bit_exact"] for r in rows) else 1
    width, height = args.fabric
    rows = []
    print(f"{'G':>3} {'I':>2} {'zeros':>5} {'measured':>8} {'predicted':>9} {'error':>7} "
          f"{'util':>6} exact")
    for sparsity in (0.0, 0.9):
        for groups in [g for g in (1, 2, 4, 8, 16) if width % g == 0]:
            r = run(width, height, groups, sparsity)
            rows.append(r)
            print(f"{groups:3d} {r['interleave']:2d} {sparsity:5.0%} {r['cycles']:8d} "
                  f"{r['predicted']:9d} {100 * r['error']:+6.1f}% {r['utilization']:6.1%} "
                  f"{r['bit_exact']}", flush=True)
    errors = np.array([abs(r["error"]) for r in rows])
    print(f"\nmodel error: worst {100 * errors.max():.1f} %, mean {100 * errors.mean():.1f} %"
          f" over {len(rows)} runs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
