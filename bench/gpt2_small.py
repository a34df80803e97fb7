"""GPT-2 small's block on large virtual fabrics with the fast functional model.

    python bench/gpt2_small.py                       # n_embd 768, 12 heads, 1024 tokens
    python bench/gpt2_small.py --fabric 64x64 --fabric 750x994 --sparsity 0 --sparsity 0.9

For every (fabric, sparsity): the same mapping code as the CLI (gpt_mapping.gpt.run_block)
with the golden backend, so the bits come from golden.gemm and the host golden model and
the cycles and utilization from gpt_mapping.perf_model's streaming schedule. Prints wall
times (mapping, run and its CPU time, checks) and the predictions; the figures are recorded
in docs/gpt.md. On a shared machine the CPU time is the steadier figure.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_mapping import gpt  # noqa: E402
from gpt_mapping.model import GPTConfig, init_block  # noqa: E402

GPT2_SMALL = GPTConfig(n_embd=768, n_head=12, n_ctx=1024, batch=1)


def bench(config=GPT2_SMALL, fabrics=((64, 64), (750, 994)), sparsities=(0.0, 0.9), seed=0,
          check=True, plots=None):
    """Run the block for every fabric and sparsity; return one dict per run."""
    block = init_block(config, seed)
    x16 = gpt.to_f16(gpt.random_input(config, seed + 1))
    rows, dense_cycles, outputs = [], {}, {}
    for sparsity in sparsities:
        t0 = time.perf_counter()
        mapped = gpt.map_block(block, sparsity)
        map_s = time.perf_counter() - t0
        trace = None
        for fabric in fabrics:
            t0, c0 = time.perf_counter(), time.process_time()
            run = gpt.run_block(mapped, x16, fabric, "golden")
            run_s, run_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            check_s = None
            if check:
                t0 = time.perf_counter()
                trace = trace or gpt.torch_trace(mapped, x16)
                gpt.evaluate(run, trace, mapped=mapped)
                check_s = time.perf_counter() - t0
            if plots:
                from gpt_mapping.plots import plot_run
                plot_run(run, Path(plots) / f"{fabric[0]}x{fabric[1]}_s{int(sparsity * 100)}")
            width, height = fabric
            cycles = {rec.name: rec.gemm.cycles for rec in run.gemms}
            lane_ops = sum(rec.gemm.fmac_lane_ops for rec in run.gemms)
            total = sum(cycles.values())
            if sparsity == 0.0:
                dense_cycles[fabric] = total
            outputs[(fabric, sparsity)] = gpt.bits(run.out16)
            rows.append({
                "fabric": fabric, "sparsity": sparsity, "map_s": map_s, "run_s": run_s,
                "run_cpu_s": run_cpu_s,
                "check_s": check_s, "host_s": sum(r.seconds for r in run.ops if r.gemm is None),
                "fabric_model_s": sum(r.seconds for r in run.gemms),
                "cycles": cycles, "total_cycles": total,
                "utilization": lane_ops / (run.lanes * width * height * total),
                "gemm_utilization": {rec.name: rec.gemm.fmac_lane_ops
                                     / (run.lanes * width * height * rec.gemm.cycles)
                                     for rec in run.gemms},
                "speedup": dense_cycles[fabric] / total if fabric in dense_cycles else None,
                "rel_err": run.ops[-1].rel_err if check else None,
                "worst_op_rel_err": max(r.rel_err for r in run.ops) if check else None,
                "gemms_within_bound": all(r.torch_gemm_check["ok"] for r in run.gemms)
                if check else None,
            })
    for sparsity in sparsities:
        outs = [outputs[(f, sparsity)] for f in fabrics]
        differing = [int(np.count_nonzero(o != outs[0])) for o in outs]
        for row in rows:
            if row["sparsity"] == sparsity:
                row["output_bits_differing_from_first_fabric"] = \
                    differing[fabrics.index(row["fabric"])]
    return rows


def _fabric(text):
    width, height = (int(v) for v in text.lower().split("x"))
    return width, height


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-embd", type=int, default=GPT2_SMALL.n_embd)
    parser.add_argument("--n-head", type=int, default=GPT2_SMALL.n_head)
    parser.add_argument("--n-ctx", type=int, default=GPT2_SMALL.n_ctx)
    parser.add_argument("--batch", type=int, default=GPT2_SMALL.batch)
    parser.add_argument("--fabric", type=_fabric, action="append",
                        help="WIDTHxHEIGHT (repeatable; default 64x64 and 750x994)")
    parser.add_argument("--sparsity", type=float, action="append",
                        help="repeatable; default 0 and 0.9")
    parser.add_argument("--no-check", action="store_true", help="skip the torch comparison")
    parser.add_argument("--plots", type=Path, help="also write the PNG pictures here")
    args = parser.parse_args(argv)
    config = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_ctx=args.n_ctx,
                       batch=args.batch)
    fabrics = tuple(args.fabric or [(64, 64), (750, 994)])
    sparsities = tuple(args.sparsity or [0.0, 0.9])
    print(f"GPT block n_embd={config.n_embd} n_head={config.n_head} n_ctx={config.n_ctx} "
          f"batch={config.batch}: fast functional model (golden backend), cycles predicted "
          f"by gpt_mapping.perf_model", flush=True)
    t0 = time.perf_counter()
    rows = bench(config, fabrics, sparsities, check=not args.no_check, plots=args.plots)
    print(f"\n{'fabric':>9} {'sparse':>6} {'map s':>6} {'run s':>6} {'(cpu)':>6} "
          f"{'host s':>6} {'GEMM s':>6} {'check s':>7} {'cycles (pred.)':>14} {'util':>6} "
          f"{'speed-up':>8} {'rel err':>8} {'bits != first fabric':>20}")
    for r in rows:
        check = "-" if r["check_s"] is None else f"{r['check_s']:.1f}"
        err = "-" if r["rel_err"] is None else f"{r['rel_err']:.1e}"
        speed = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        print(f"{r['fabric'][0]:>4}x{r['fabric'][1]:<4} {r['sparsity']:>6.0%} "
              f"{r['map_s']:>6.1f} {r['run_s']:>6.1f} {r['run_cpu_s']:>6.1f} "
              f"{r['host_s']:>6.1f} {r['fabric_model_s']:>6.1f} {check:>7} "
              f"{r['total_cycles']:>14,} {r['utilization']:>6.1%} {speed:>8} {err:>8} "
              f"{r['output_bits_differing_from_first_fabric']:>20}")
    print("\nper GEMM: predicted cycles (FMAC utilization)")
    for r in rows:
        per = ", ".join(f"{name} {c:,} ({r['gemm_utilization'][name]:.1%})"
                        for name, c in r["cycles"].items())
        print(f"  {r['fabric'][0]}x{r['fabric'][1]} {r['sparsity']:.0%}: {per}")
    print(f"\ntotal wall time {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
