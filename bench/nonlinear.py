"""The non-linear functions (golden/nonlinear.py) measured: accuracy against float64 over all
65,536 FP16 inputs, and, with ``--rtl``, every one of those inputs through the PE's code
task on the RTL, bit for bit against the golden model, with the cycles per element.

    python bench/nonlinear.py [--kernels exp,gelu] [--rtl] [--n 512] [--json OUT.json]

The figures are in docs/nonlinear.md; ``nox -s nonlinear`` runs this with ``--rtl``.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golden import nonlinear as N  # noqa: E402


def validate_model(names, sizes):
    """The cycle model (gpt_mapping.kernels.predict_cycles) against the RTL on random inputs
    of every size in ``sizes``; prints and returns the errors."""
    from gpt_mapping.kernels import compile_kernel, predict_cycles
    from gpt_mapping.kernels import run_kernels_on_pe
    rng = np.random.default_rng(3)
    print(f"\n{'kernel':10s} {'n':>5s} {'RTL cyc':>8s} {'model':>8s} {'error':>7s}")
    out, worst = [], 0.0
    for n in sizes:
        runs = run_kernels_on_pe({name: rng.integers(0, 1 << 16, n).astype(np.uint16)
                                  for name in names}, n=n, timeout=3600)
        for name in names:
            measured = runs[name].cycles[0]
            predicted = predict_cycles(compile_kernel(name, n))
            err = (predicted - measured) / measured
            worst = max(worst, abs(err))
            out.append({"kernel": name, "n": n, "rtl": measured, "model": predicted,
                        "error": err})
            print(f"{name:10s} {n:5d} {measured:8d} {predicted:8d} {100 * err:+6.2f}%")
    mean = statistics.mean(abs(r["error"]) for r in out)
    print(f"cycle model: worst {100 * worst:.2f} %, mean {100 * mean:.2f} % over "
          f"{len(out)} cases")
    return {"cases": out, "worst": worst, "mean": mean}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kernels", default=",".join(N.KERNELS),
                        help="comma-separated kernel names (default: all)")
    parser.add_argument("--rtl", action="store_true",
                        help="also run every FP16 input on the PE (Verilator)")
    parser.add_argument("--n", type=int, default=512, help="elements per code-task run")
    parser.add_argument("--sizes", default="37,100,256,1000",
                        help="with --rtl: vector sizes on which the cycle model is checked")
    parser.add_argument("--json", default=None, help="write the figures here")
    args = parser.parse_args(argv)

    names = args.kernels.split(",")
    for name in names:
        N.kernel(name)            # a KeyError names the kernels there are
    x16 = N.all_fp16()
    rows = {}
    print(f"{'kernel':10s} {'steps':>5s} {'max ulp':>8s} {'mean ulp':>8s} "
          f"{'exact %':>8s} {'worst x':>8s}"
          + (f" {'RTL diff':>8s} {'cyc/elem':>8s} {'wall s':>7s} {'model':>7s}"
             if args.rtl else ""))
    for name in names:
        acc = N.accuracy(name, x16)
        row = dict(acc)
        line = (f"{name:10s} {acc['steps']:5d} {acc['max_ulp']:8.4f} {acc['mean_ulp']:8.4f} "
                f"{100 * acc['correctly_rounded']:8.3f} {acc['worst_input']:#06x}  ")
        if args.rtl:
            from gpt_mapping.kernels import run_kernel_on_pe
            t0 = time.perf_counter()
            run = run_kernel_on_pe(name, x16, n=args.n, timeout=7200)
            wall = time.perf_counter() - t0
            golden = N.run(name, x16)
            diff = int(np.count_nonzero(run.y16 != golden))
            per_elem = statistics.median(run.cycles) / args.n
            from gpt_mapping.kernels import compile_kernel, predict_cycles
            predicted = predict_cycles(compile_kernel(name, args.n))
            row["model_cycles"] = predicted
            row.update(rtl_mismatches=diff, rtl_cycles_per_chunk=statistics.median(run.cycles),
                       rtl_cycles_per_element=per_elem, rtl_wall_s=wall, n=args.n)
            line += (f" {diff:8d} {per_elem:8.2f} {wall:7.1f}"
                     f" {100 * (predicted / statistics.median(run.cycles) - 1):+6.2f}%")
            if diff:
                first = int(np.flatnonzero(run.y16 != golden)[0])
                print(f"{name}: RTL and golden differ at x = {int(x16[first]):#06x}: "
                      f"RTL {int(run.y16[first]):#06x}, golden {int(golden[first]):#06x}",
                      file=sys.stderr)
        rows[name] = row
        print(line, flush=True)
    model = {}
    if args.rtl:
        model = validate_model(names, [int(v) for v in args.sizes.split(",")])
    if args.json:
        Path(args.json).write_text(json.dumps({"kernels": rows, "model": model}, indent=2))
    bad = [n for n, r in rows.items() if r.get("rtl_mismatches") or
           r["max_ulp"] > N.ACCURACY_BOUNDS[n]]
    if bad:
        print(f"FAILED: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
