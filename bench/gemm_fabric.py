"""Benchmark of the weight-streaming GEMM on the RTL fabric (figures in docs/fabric.md).

    python bench/gemm_fabric.py                       # 4 x 4, T=64 K=512 N=64, dense + 90 %
    python bench/gemm_fabric.py --fabric 4x4 --shape 64,512,64 --sparsity 0,0.9 --json out.json
    WSE_TILE_MODEL=hierarchical python bench/gemm_fabric.py   # the slower tile model

For every run: measured fabric cycles, FMAC utilization over the whole GEMM (reductions
included: useful lane operations / (4 lanes x PEs x cycles)), the performance model's
prediction beside it, whether Y is bit exact against the golden model, and the simulation
speed: simulated fabric cycles per second of wall time and per second of the simulator's
CPU time, from start to done (the machine is shared: the CPU figure is the stable one;
configuration and readback are not included).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golden.gemm import compare_to_torch, fabric_gemm  # noqa: E402
from gpt_mapping.demo import make_gemm_operands  # noqa: E402
from gpt_mapping import fabric_run  # noqa: E402
from gpt_mapping.fabric_run import fabric_build, run_gemm_rtl  # noqa: E402
from gpt_mapping.layout import balanced_output_order, map_gemm, parse_fabric  # noqa: E402
from gpt_mapping.perf_model import layout_options, predict  # noqa: E402
from gpt_mapping.streams import nonzero_counts  # noqa: E402


def choose(mapping, w16, balance=True):
    """The layout the perf model predicts fewest cycles for (column groups and interleave,
    the smaller G, then I, on a tie): a GEMM on its own has X placed and Y read by the
    host, so no layout costs a move. With ``balance`` each layout's outputs are ordered
    by :func:`balanced_output_order` (the non-zeros spread evenly over its groups).
    Returns ``(mapping, order)``."""
    def order(m):
        return (balanced_output_order(w16, m.groups) if balance
                else np.arange(w16.shape[1], dtype=np.int64))
    best = None
    for m, est in layout_options(
            mapping, lambda m: nonzero_counts(m, np.ascontiguousarray(w16[:, order(m)])),
            fabric_run.perf_params()):
        if best is None or est.cycles < best[1].cycles:
            best = (m, est)
    return best[0], order(best[0])


def run_one(x16, w16, width, height, progress=True, layout="plain"):
    """One GEMM on the fabric; a dict of its figures. ``layout``: "plain", or "chosen"
    (:func:`choose`; the outputs in the balanced order on the fabric, Y put back in order
    by the host)."""
    mapping = map_gemm(x16, w16, width, height)
    w_in = w16
    order = np.arange(w16.shape[1])
    if layout == "chosen":
        mapping, order = choose(mapping, w16)
        w16 = np.ascontiguousarray(w_in[:, order])
    nonzero = nonzero_counts(mapping, w16)
    estimate = predict(mapping, nonzero, fabric_run.perf_params())
    start = time.perf_counter()
    with tqdm(total=None, unit="cycle", desc="RTL fabric", disable=not progress,
              leave=False) as bar:
        y16, counters = run_gemm_rtl(mapping, x16, w16, bar)
    wall = time.perf_counter() - start
    y16 = np.ascontiguousarray(y16[:, np.argsort(order)])
    w16 = w_in
    golden = fabric_gemm(x16, w16, width, height, groups=mapping.groups)
    cycles = counters["cycles"]
    lanes = mapping.pe.lanes * mapping.num_pes
    return {
        "shape": list(x16.shape) + [w16.shape[1]],
        "fabric": [width, height],
        "groups": mapping.groups,
        "interleave": mapping.interleave,
        "outputs_reordered": bool((order != np.arange(len(order))).any()),
        "nonzero_weights": int(nonzero.sum()),
        "cycles": cycles,
        "predicted_cycles": estimate.cycles,
        "model_error": (estimate.cycles - cycles) / cycles,
        "fmac_utilization": counters["fmac_lane_ops"] / (lanes * cycles),
        "predicted_fmac_utilization": estimate.fmac_utilization,
        "bit_exact": bool(np.array_equal(y16.view(np.uint16), golden.view(np.uint16))),
        "torch_ok": compare_to_torch(y16, x16, w16, mapping.group_width).ok,
        "sim_cycles_per_second": counters["sim_cycles_per_second"],
        "sim_cycles_per_cpu_second": counters["sim_cycles_per_cpu_second"],
        "run_wall_seconds": counters["wall_seconds"],
        "total_wall_seconds": wall,
        "bench_seconds": counters["total_wall_seconds"],
        "pe_busy_fraction": float(counters["pe_busy_cycles"].mean() / cycles),
        "pe_stall_input": int(counters["pe_stall_input"].sum()),
        "pe_stall_hazard": int(counters["pe_stall_hazard"].sum()),
        "pe_stall_bank": int(counters["pe_stall_bank"].sum()),
        "pe_stall_output": int(counters["pe_stall_output"].sum()),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fabric", default="4x4")
    parser.add_argument("--shape", default="64,512,64", help="T,K,N")
    parser.add_argument("--sparsity", default="0,0.9", help="fractions of zero weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reductions", choices=("code", "list"), default="code",
                        help="the reduction commands as code tasks of the control core (the "
                             "mapper's default) or as launch-list tasks (the PE's first form)")
    parser.add_argument("--layout", choices=("plain", "chosen"), default="plain",
                        help="the plain layout (G = 1, I = 1: the benchmark's historical "
                             "figures) or the one the perf model chooses for each sparsity "
                             "(column groups and interleave, docs/gemm.md section 10)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    fabric_run.REDUCTIONS_AS_CODE = args.reductions == "code"
    width, height = parse_fabric(args.fabric)
    tokens, features, outputs = (int(v) for v in args.shape.split(","))
    start = time.perf_counter()
    spec = fabric_build(width, height)
    tile = spec.tile_library
    tile_note = "" if tile is None else (
        f", tile model {tile.build_seconds:.0f} s ({'cached' if tile.cached else 'built now'})")
    print(f"fabric {width} x {height}: Verilator build {spec.build.build_seconds:.0f} s "
          f"({'cached' if spec.build.cached else 'built now'}{tile_note}, "
          f"{time.perf_counter() - start:.1f} s to get it)")
    results = []
    for sparsity in (float(s) for s in args.sparsity.split(",")):
        x16, w16 = make_gemm_operands(tokens, features, outputs, sparsity, args.seed)
        r = run_one(x16, w16, width, height, progress=not args.no_progress,
                    layout=args.layout)
        r["sparsity"] = sparsity
        results.append(r)
        print(f"sparsity {sparsity:4.2f}, G {r['groups']} I {r['interleave']}: "
              f"{r['cycles']:7d} cycles (model {r['predicted_cycles']}"
              f", {100 * r['model_error']:+.1f} %), FMAC utilization "
              f"{r['fmac_utilization']:.3f} (model {r['predicted_fmac_utilization']:.3f}), "
              f"bit exact {r['bit_exact']}, torch ok {r['torch_ok']}, "
              f"{r['sim_cycles_per_second']:,.0f} cycles/s of wall time, "
              f"{r['sim_cycles_per_cpu_second']:,.0f} per CPU second "
              f"({r['run_wall_seconds']:.1f} s run, {r['total_wall_seconds']:.1f} s in all)")
    if len(results) > 1:
        print(f"dense / sparse cycles: {results[0]['cycles'] / results[-1]['cycles']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    ok = all(r["bit_exact"] and r["torch_ok"] for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
