"""Benchmarks of the processing element (figures recorded in docs/pe.md).

    python bench/pe_bench.py [--fresh] [--tokens 4 8 16 32] [--features 64] [--cycles 200000]

1. Verilator build time of the PE (``--fresh``: into a new build folder, else the cached one
   reports the time its build took) and the size of its Verilog.
2. FMAC lane utilization of a streaming AXPY (SPEC 7 weight stream into X[T, K]) for each
   T: FMAC lane-operations / (4 x cycles from the first to the last FMAC), from the PE's
   counters (cocotb test ``weight_stream``).
3. The mapper's GEMM recipe on every column position of a 3-wide row (``gemm_roles``):
   cycles lost to SRAM bank conflicts (STALL_BANK) for the mapper's X/Y layout, and the
   datapath cycles a reduction costs per output besides the FMACs.
4. Simulated cycles per second of the PE alone, idle and busy, with no Python per cycle
   (``tb/pe_speed_tb.py``), and with ``--native`` also without cocotb at all: a C++ harness
   (``bench/pe_native_main.cpp``) built by Verilator directly (its build time is reported:
   the PE as the fabric compiles it, without cocotb's VPI).

Prints Markdown tables and writes ``build/bench/pe.json``.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh", action="store_true",
                        help="measure the Verilator build in a new build folder")
    parser.add_argument("--tokens", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--cycles", type=int, default=200000)
    parser.add_argument("--native", action="store_true",
                        help="also build and run the native C++ speed harness")
    args = parser.parse_args(argv)
    if args.fresh:
        os.environ["WSE_BUILD_DIR"] = tempfile.mkdtemp(prefix="pe-bench-")
    from runtime import sim
    from runtime.pe_driver import bench_verilog

    out_dir = ROOT / "build" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    report = out_dir / "pe_records.jsonl"
    if report.exists():
        report.unlink()
    start = time.monotonic()
    verilog = bench_verilog()
    convert = time.monotonic() - start
    build = sim.build("pe_bench", verilog)
    results = {"verilog_lines": build.verilog_lines, "convert_seconds": convert,
               "build_seconds": build.build_seconds, "build_cached": build.cached}
    common = {"report": str(report)}
    sim.run(build, "tb.pe_tb", testcase="weight_stream", name="bench_weight_stream",
            tb_params={**common, "seed": 1, "tokens": args.tokens,
                       "features": args.features}, timeout=1800)
    from gpt_mapping.pe_jobs import gemm_role_jobs
    jobs = out_dir / "gemm_role_jobs.json"
    jobs.write_text(json.dumps(gemm_role_jobs(seed=7)))
    sim.run(build, "tb.pe_tb", testcase="gemm_roles", name="bench_gemm_roles",
            tb_params={**common, "jobs": str(jobs)}, timeout=1800)
    sim.run(build, "tb.pe_speed_tb", testcase="speed", name="bench_speed",
            tb_params={**common, "cycles": args.cycles}, timeout=1800)
    records = [json.loads(line) for line in report.read_text().splitlines()]
    if args.native:
        results["native"] = native_speed(out_dir, args.cycles)
    results["records"] = records
    (out_dir / "pe.json").write_text(json.dumps(results, indent=2))

    print(f"PE Verilog: {build.verilog_lines} lines (conversion {convert:.1f} s); Verilator "
          f"build {build.build_seconds:.1f} s{' (cached)' if build.cached else ''}\n")
    print("| tokens T | T_pad | FMAC lane utilization | window (cycles) | hazard stalls |")
    print("|---|---|---|---|---|")
    for r in records:
        if r["test"] == "weight_stream":
            t_pad = (r["tokens"] + 3) // 4 * 4
            print(f"| {r['tokens']} | {t_pad} | {100 * r['utilization']:.1f} % | "
                  f"{r['window']} | {r['STALL_HAZARD']} |")
    print("\n| column (of 3) | sparsity | FMAC lanes | bank-conflict stalls | other datapath "
          "cycles / output |")
    print("|---|---|---|---|---|")
    for r in records:
        if r["test"] == "gemm_roles":
            print(f"| {r['column']} | {r['sparsity']} | {r['FMAC_LANES']} | {r['STALL_BANK']} | "
                  f"{r['reduction_cycles_per_output']:.1f} |")
    for r in records:
        if r["test"] == "speed":
            print(f"\nPE alone in Verilator: {r['idle_cycles_per_s']:,.0f} cycles/s idle, "
                  f"{r['busy_cycles_per_s']:,.0f} cycles/s busy (FMAC every cycle)")
    if args.native:
        n = results["native"]
        print(f"native C++ harness (no cocotb): Verilator build {n['build_seconds']:.1f} s; "
              f"{n['idle_cycles_per_s']:,.0f} cycles/s idle, {n['busy_cycles_per_s']:,.0f} "
              f"cycles/s busy")
    print(f"\nwrote {out_dir / 'pe.json'}")


def native_speed(out_dir, cycles):
    """Build the PE with the C++ harness (no cocotb) and measure its speed."""
    import subprocess
    from rtl.pe.pe import pe_verilog
    from rtl.pe.regs import DSR_WAVELET, DType, Kind, Reg, TensorOp, encode_trigger, reg_addr
    from runtime import sim
    from tb.pe_model import PEConfig
    work = out_dir / "pe_native"
    work.mkdir(parents=True, exist_ok=True)
    (work / "pe.v").write_text(pe_verilog())
    cfg = PEConfig()
    cfg.dsr(0, Kind.MEM, dtype=DType.FP16, base=0, dims=[(4095, 1), (4, 0)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(64, 1), (256, 0)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET)])
    writes = cfg.all_writes() + [(reg_addr(Reg.TRIGGER), encode_trigger(0, data=0x3C00))]
    (work / "cfg.txt").write_text("".join(f"{a} {v}\n" for a, v in writes))
    root = sim.setup_verilator()
    cmd = [str(root / "bin" / "verilator"), "--cc", "pe.v", "--top-module", "pe", "--exe",
           str(ROOT / "bench" / "pe_native_main.cpp"), "--build", "-j", "2", "-O3",
           "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-lint",
           "-Wno-style", "-MAKEFLAGS", f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={sim.OPT_FAST}",
           "-Mdir", "obj"]
    start = time.monotonic()
    subprocess.run(cmd, cwd=work, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    built = time.monotonic() - start
    out = subprocess.run([str(work / "obj" / "Vpe"), str(cycles), str(work / "cfg.txt")],
                         check=True, capture_output=True, text=True).stdout
    return {"build_seconds": built, **json.loads(out)}


if __name__ == "__main__":
    main()
