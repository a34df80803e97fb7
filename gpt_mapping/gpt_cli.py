"""``python -m gpt_mapping gpt``: map, run and report a GPT block on the fabric.

    python -m gpt_mapping gpt --n-embd 64 --n-head 4 --n-ctx 16 --batch 2 --fabric 4x4 \\
        [--sparsity 0.9] [--state-dict F [--block-prefix transformer.h.0.]] \\
        [--input X.npy] [--out Y.npy] [--backend rtl|golden] \\
        --report report.json --plots DIR [--trace TIMELINE.json]

Steps: build the block (seeded, or from a nanoGPT-style state dict), prune its linear layers
to ``--sparsity``, map its fabric operations (validated before anything runs), run
the block operation by operation with a progress bar each, check it (bit-exact against the
golden pipeline or the SPEC 7 loop reference; error against the torch float32 block), print
the report table and write the JSON report, the output and the plots.

``--trace FILE`` (rtl only) writes the timeline of the block's 13 fabric operations, one
after the other (each is its own simulation; the host operations between them take no
fabric cycles and are marked as instants), as trace-event JSON for the Perfetto UI
(docs/timeline.md). The golden backend runs no hardware: ``--trace`` with it is an error.

Exit code: 0 ok, 1 a bit-exactness check failed, 2 bad input (the message names it).

``demo(argv)`` is ``python -m gpt_mapping.demo gpt`` (what ``nox -s gpt`` runs).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from . import gpt, plots, report
from .layout import MappingError
from .model import GELU_FORMS, GPTConfig, StateDictError, init_block, load_block

__all__ = ["build_parser", "main", "run", "demo", "load_input"]

ROOT = Path(__file__).resolve().parent.parent


def build_parser(prog="python -m gpt_mapping gpt"):
    parser = argparse.ArgumentParser(
        prog=prog, description="Map a GPT block onto the fabric, run it, check it and report.")
    shape = parser.add_argument_group("block")
    shape.add_argument("--n-embd", type=int, required=True, help="model width")
    shape.add_argument("--n-head", type=int, required=True, help="attention heads")
    shape.add_argument("--n-ctx", type=int, required=True, help="tokens per sequence")
    shape.add_argument("--batch", type=int, default=1, help="sequences (default 1)")
    shape.add_argument("--gelu", choices=GELU_FORMS, default="erf",
                       help="GELU form: erf (exact, nanoGPT nn.GELU(); default) or tanh")
    shape.add_argument("--state-dict", type=Path,
                       help="torch.save'd nanoGPT Block state dict (default: seeded weights)")
    shape.add_argument("--block-prefix", default="",
                       help="key prefix of the block in a whole-model state dict, "
                            "e.g. transformer.h.0.")
    shape.add_argument("--seed", type=int, default=0,
                       help="seed of the weights (without --state-dict) and of the input "
                            "(without --input)")
    run_args = parser.add_argument_group("run")
    run_args.add_argument("--fabric", required=True, help="WIDTHxHEIGHT PEs, e.g. 4x4")
    run_args.add_argument("--sparsity", type=float, default=0.0,
                          help="fraction of each linear layer's weights pruned by magnitude")
    run_args.add_argument("--backend", choices=gpt.BACKENDS, default="rtl",
                          help="rtl (default): GEMMs on the Verilator fabric; golden: the "
                               "golden model with predicted cycles")
    run_args.add_argument("--input", type=Path,
                          help="input .npy, float32 or float16 [batch, n_ctx, n_embd] "
                               "(default: seeded standard normal)")
    run_args.add_argument("--out", type=Path, help="write the block output here (.npy float32)")
    run_args.add_argument("--report", type=Path, help="write the JSON report here")
    run_args.add_argument("--plots", type=Path, help="write the PNG pictures in this folder")
    run_args.add_argument("--trace", type=Path, metavar="FILE",
                          help="rtl backend: also write the timeline of the fabric GEMMs "
                               "(trace-event JSON for https://ui.perfetto.dev, "
                               "docs/timeline.md)")
    run_args.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def load_input(path, config):
    """The block input from a ``.npy`` file: float32 or float16 ``[batch, n_ctx, n_embd]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"input: no such file {path}")
    try:
        x = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"input: {path} is not a plain .npy array ({exc})") from None
    want = (config.batch, config.n_ctx, config.n_embd)
    if x.dtype not in (np.float16, np.float32):
        raise ValueError(f"input {path}: dtype {x.dtype}, expected float32 or float16")
    if x.shape != want:
        raise ValueError(f"input {path}: shape {list(x.shape)}, expected [batch, n_ctx, "
                         f"n_embd] = {list(want)}")
    return x


def run(args):
    """Run the block as ``args`` (parsed :func:`build_parser` arguments) say.

    Returns ``(report dict, BlockRun)``; raises ``ValueError``/``MappingError`` on bad input.
    """
    config = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_ctx=args.n_ctx,
                       batch=args.batch, gelu=args.gelu)
    fabric = gpt.parse_fabric(args.fabric)
    if not 0.0 <= args.sparsity < 1.0:
        raise ValueError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.state_dict is not None:
        block = load_block(args.state_dict, config, args.block_prefix)
        weights = f"state dict {args.state_dict}"
    else:
        block = init_block(config, args.seed)
        weights = f"seeded (seed {args.seed})"
    x = load_input(args.input, config) if args.input else gpt.random_input(config, args.seed)
    trace = getattr(args, "trace", None)
    collector = None
    if trace is not None:
        from .traces import FabricTrace, check_trace_backend
        check_trace_backend(trace, args.backend)
        collector = FabricTrace(f"GPT block (n_embd {config.n_embd}, n_head "
                                f"{config.n_head}, {config.tokens} tokens) on the "
                                f"{fabric[0]} x {fabric[1]} RTL fabric")
        backend = gpt.RtlBackend(trace=collector)
    else:
        backend = gpt.select_backend(args.backend)
    print(f"GPT block: weights {weights}; input "
          f"{args.input or f'seeded (seed {args.seed})'}; backend {backend.name}",
          flush=True)

    block_run, _ = gpt.run_gpt(block, x, fabric, backend, args.sparsity,
                               progress=not args.no_progress)
    if collector is not None:
        _mark_host_operations(collector, block_run)
        collector.write(trace)
        print(f"timeline -> {trace} (open it in https://ui.perfetto.dev)")
    dense = gpt.predict_block_cycles(block, fabric) if args.sparsity > 0 else None
    pictures = plots.plot_run(block_run, args.plots) if args.plots else []
    rep = report.build_report(block_run, dense=dense, plots=pictures)
    rep["weights"] = weights
    rep["input"] = str(args.input) if args.input else f"seeded (seed {args.seed})"
    return rep, block_run


def _mark_host_operations(collector, block_run):
    """The host operations on the timeline: instants where they run, between the GEMMs
    (they take no fabric cycles; ``args.seconds`` is their time on the host)."""
    tl = collector.timeline
    host = tl.process("host", sort_index=0)
    track = tl.thread(host, "host operations", 3)
    ends = {job["label"]: job["end"] for job in collector.jobs}
    at = 0
    for rec in block_run.ops:
        if rec.where == "fabric":
            at = ends.get(rec.name, at)
            continue
        tl.instant(host, track, rec.name, at, seconds=round(rec.seconds, 6))


def main(argv=None):
    """Entry point of ``python -m gpt_mapping gpt``; returns the exit code."""
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    try:
        rep, block_run = run(args)
    except (ValueError, TypeError, MappingError, StateDictError, FileNotFoundError,
            RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.format_report(rep))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        np.save(args.out, block_run.out16.astype(np.float32))
        print(f"output {list(block_run.out16.shape)} float32 -> {args.out}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        report.write_report(rep, args.report)
        print(f"report -> {args.report}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    if rep["totals"]["bit_exact_all"] is False:
        bad = [row["name"] for row in rep["operations"] if row["bit_exact"] is False]
        print(f"error: not bit-exact: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


DEMO_ARGS = ["--n-embd", "64", "--n-head", "4", "--n-ctx", "16", "--batch", "2",
             "--fabric", "4x4"]


def demo(argv=None):
    """``python -m gpt_mapping.demo gpt``: a representative block dense and 90 % sparse.

    Both runs go through :func:`main` (the command line); prints both reports and the
    sparse speed-up measured between the two runs (same backend, same kind of cycles).
    """
    parser = argparse.ArgumentParser(prog="python -m gpt_mapping.demo gpt",
                                     description=demo.__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "demo" / "gpt")
    parser.add_argument("--backend", choices=gpt.BACKENDS, default="rtl")
    parser.add_argument("--no-progress", action="store_true")
    parser.epilog = (f"Any other option goes to every run and overrides the demo block "
                     f"{' '.join(DEMO_ARGS)}, e.g. --n-embd 128 --n-head 2 --fabric 8x4.")
    args, extra = parser.parse_known_args(argv)
    if extra[:1] == ["--"]:
        extra = extra[1:]
    block_args = DEMO_ARGS + extra          # argparse keeps the last of a repeated option
    status, reports = 0, {}
    for name, sparsity in (("dense", 0.0), ("sparse90", 0.9)):
        run_dir = args.out_dir / name
        cli = [*block_args, "--sparsity", str(sparsity), "--backend", args.backend,
               "--out", str(run_dir / "out.npy"), "--report", str(run_dir / "report.json"),
               "--plots", str(run_dir / "plots")]
        if args.no_progress:
            cli.append("--no-progress")
        print(f"\n== GPT block, {name}: python -m gpt_mapping gpt {' '.join(cli)}", flush=True)
        code = main(cli)
        status = status or code
        if code != 2:
            reports[name] = json.loads((run_dir / "report.json").read_text())
    if len(reports) == 2:
        dense, sparse = reports["dense"]["totals"], reports["sparse90"]["totals"]
        ratio = report.speedup(dense["fabric_cycles"], sparse["fabric_cycles"])
        gemm_ratio = report.speedup(dense["gemm_cycles"], sparse["gemm_cycles"])
        print(f"\n== sparse speed-up ({sparse['cycles_kind']} cycles): all fabric operations "
              f"dense {dense['fabric_cycles']:,} / 90 % sparse {sparse['fabric_cycles']:,} "
              f"= {ratio:.2f}x; the GEMMs alone {dense['gemm_cycles']:,} / "
              f"{sparse['gemm_cycles']:,} = {gemm_ratio:.2f}x")
        for row_d, row_s in zip(reports["dense"]["operations"],
                                reports["sparse90"]["operations"]):
            if row_d["where"] == "fabric":
                print(f"   {row_d['name']:<17} {row_d['fabric_cycles']:>9,} -> "
                      f"{row_s['fabric_cycles']:>9,} cycles "
                      f"({row_d['fabric_cycles'] / row_s['fabric_cycles']:.2f}x)")
        print(f"reports, outputs and plots in {args.out_dir}")
    return status
