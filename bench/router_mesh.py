"""Router mesh benchmark: Verilog size, Verilator build time and simulation speed.

    python bench/router_mesh.py                 # 2x2, 4x4, 8x8; builds are cached
    python bench/router_mesh.py --fresh         # rebuild into a fresh folder (build times)
    python bench/router_mesh.py --sizes 4x4 --repeats 7
    python bench/router_mesh.py --no-build      # Verilog sizes only

For each size it reports the lines of Verilog of the router module, of the mesh top alone
(wiring only) and of the bench top; the Verilator build time of the bench top (the
figure recorded when it was built); and, for 4x4 and 8x8, the simulated cycles per second
under full random load (median of ``--repeats`` windows, Python idle during a window:
tb/mesh_load_tb.py) with the wavelets delivered per cycle. The machine is shared and
noisy: compare medians and ratios, not single figures.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _split_lines(text, top):
    """Lines of the ``router`` module and of everything else."""
    marker = "\nmodule router("
    head, _, router = text.partition(marker)
    return head.count("\n"), (marker + router).count("\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2x2,4x4,8x8")
    parser.add_argument("--sim-sizes", default="4x4,8x8")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cycles", type=int, default=0,
                        help="cycles per window (default: 20000 / tiles * 16)")
    parser.add_argument("--fresh", action="store_true",
                        help="build in a new temporary folder to time the builds")
    parser.add_argument("--no-build", action="store_true",
                        help="only convert to Verilog and count lines (no Verilator)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.fresh:
        os.environ["WSE_BUILD_DIR"] = tempfile.mkdtemp(prefix="router_mesh_bench_")
    sys.path.insert(0, str(ROOT))
    from rtl.mesh import RouterMesh, mesh_verilog
    from runtime import sim
    from tb.fabric_harness import BENCH_TOP, VERILATOR_ARGS, bench_verilog

    results = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.split("x"))
        mesh = RouterMesh(w, h)
        t0 = time.monotonic()
        top_lines, router_lines = _split_lines(mesh_verilog(mesh), "router_mesh")
        bench_text = bench_verilog(w, h)
        convert_s = time.monotonic() - t0
        bench_top_lines, _ = _split_lines(bench_text, BENCH_TOP)
        row = {"size": size, "router_lines": router_lines, "mesh_top_lines": top_lines,
               "bench_lines": bench_text.count("\n"), "bench_top_lines": bench_top_lines,
               "convert_s": round(convert_s, 1)}
        line = (f"{size}: router {router_lines} lines, mesh top {top_lines} lines "
                f"({top_lines / (w * h):.0f} per tile), bench total {row['bench_lines']}; "
                f"Verilog {convert_s:.1f} s")
        if args.no_build:
            print(line, flush=True)
            results.append(row)
            continue
        built = sim.build(BENCH_TOP, bench_text, extra_args=VERILATOR_ARGS)
        row.update(build_s=round(built.build_seconds, 1), build_cached=built.cached)
        print(f"{line}; Verilator build {built.build_seconds:.1f} s"
              f"{' (cached figure)' if built.cached else ''}", flush=True)
        if size in args.sim_sizes.split(","):
            cycles = args.cycles or max(2000, 20000 * 16 // (w * h))
            with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
                out = f.name
            sim.run(built, "tb.mesh_load_tb",
                    tb_params={"width": w, "height": h, "cycles": cycles,
                               "repeats": args.repeats, "out": out},
                    timeout=1800, name=f"load_{size}")
            load = json.loads(Path(out).read_text())
            os.unlink(out)
            row.update(median_cycles_per_s=round(load["median_cycles_per_s"]),
                       cycles_per_s=[round(r) for r in load["cycles_per_s"]],
                       delivered_per_cycle=round(load["delivered_per_cycle"], 2))
            print(f"{size}: {row['median_cycles_per_s']} cycles/s median under full random "
                  f"load (windows {row['cycles_per_s']}), {row['delivered_per_cycle']} "
                  f"wavelets delivered per cycle", flush=True)
        results.append(row)
    sims = {r["size"]: r for r in results if "median_cycles_per_s" in r}
    if "4x4" in sims and "8x8" in sims:
        ratio = sims["4x4"]["median_cycles_per_s"] / sims["8x8"]["median_cycles_per_s"]
        print(f"cycles/s ratio 4x4 / 8x8: {ratio:.2f} (4x the routers)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
