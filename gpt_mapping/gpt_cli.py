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

``--n-layer L --vocab V`` runs a whole nanoGPT model instead (token and position
embeddings, L blocks, ``ln_f``, ``lm_head``; :mod:`gpt_mapping.gpt_model`) on ``--tokens``
(integer ids ``[batch, n_ctx]``), ``--out`` gets its logits, ``--generate N`` decodes N
tokens greedily on the fabric beside torch's; ``--state-dict`` is then a whole-model
nanoGPT state dict.

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
    whole = parser.add_argument_group(
        "whole model (embeddings, --n-layer blocks, ln_f, lm_head; docs/gpt.md section 9)")
    whole.add_argument("--n-layer", type=int,
                       help="run a whole nanoGPT model of this many blocks instead of one "
                            "block: its input is --tokens, its output the logits")
    whole.add_argument("--vocab", type=int, help="vocabulary size (with --n-layer)")
    whole.add_argument("--block-size", type=int,
                       help="positions of wpe (default: the state dict's, else --n-ctx)")
    whole.add_argument("--tokens", type=Path,
                       help="integer token ids .npy [batch, n_ctx] (default: seeded)")
    whole.add_argument("--generate", type=int, default=0, metavar="N",
                       help="then decode N tokens greedily on the fabric, the whole prefix "
                            "re-run for each (no KV cache), compared with torch's")
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
    run_args.add_argument("--out", type=Path,
                          help="write the block output here (.npy float32); with --n-layer "
                               "the logits [batch, n_ctx, vocab]")
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
    if getattr(args, "n_layer", None) is not None:
        return run_model_args(args, config, fabric)
    for name in ("vocab", "block_size", "tokens"):
        if getattr(args, name, None) is not None:
            raise ValueError(f"--{name.replace('_', '-')} needs --n-layer (a whole model)")
    if getattr(args, "generate", 0):
        raise ValueError("--generate needs --n-layer (a whole model)")
    if args.state_dict is not None:
        block = load_block(args.state_dict, config, args.block_prefix)
        weights = f"state dict {args.state_dict}"
    else:
        block = init_block(config, args.seed)
        weights = f"seeded (seed {args.seed})"
    x = load_input(args.input, config) if args.input else gpt.random_input(config, args.seed)
    trace, collector, backend = _backend(
        args, f"GPT block (n_embd {config.n_embd}, n_head {config.n_head}, {config.tokens} "
              f"tokens) on the {fabric[0]} x {fabric[1]} RTL fabric")
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


def _backend(args, title):
    """``(trace file, FabricTrace or None, backend)``: with ``--trace``, an RTL backend
    that adds every fabric run to a timeline called ``title``."""
    trace = getattr(args, "trace", None)
    if trace is None:
        return None, None, gpt.select_backend(args.backend)
    from .traces import FabricTrace, check_trace_backend
    check_trace_backend(trace, args.backend)
    collector = FabricTrace(title)
    return trace, collector, gpt.RtlBackend(trace=collector)


def load_tokens(path, config, vocab):
    """Token ids from a ``.npy`` file: integers ``[batch, n_ctx]`` (checked against the
    vocabulary by :func:`gpt_mapping.gpt_model.check_tokens`)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"tokens: no such file {path}")
    try:
        tokens = np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"tokens: {path} is not a plain .npy array ({exc})") from None
    if tokens.dtype.kind not in "iu":
        raise ValueError(f"tokens {path}: dtype {tokens.dtype}, expected integer token ids")
    want = (config.batch, config.n_ctx)
    if tokens.shape != want:
        raise ValueError(f"tokens {path}: shape {list(tokens.shape)}, expected [batch, n_ctx] "
                         f"= {list(want)}")
    return tokens


def run_model_args(args, config, fabric):
    """The ``--n-layer`` path of :func:`run`: a whole model on ``--tokens``, its logits and,
    with ``--generate N``, N greedy tokens on the fabric beside torch's."""
    from . import gpt_model
    from .model import init_gpt, load_gpt
    if args.n_layer < 1:
        raise ValueError(f"--n-layer must be >= 1, got {args.n_layer}")
    if args.vocab is None or args.vocab < 1:
        raise ValueError(f"--n-layer needs --vocab >= 1, got {args.vocab}")
    for name in ("input", "block_prefix"):
        if getattr(args, name, None):
            raise ValueError(f"--{name.replace('_', '-')} is for one block; a whole model "
                             f"(--n-layer) takes --tokens")
    if args.generate < 0:
        raise ValueError(f"--generate must be >= 0, got {args.generate}")
    if args.state_dict is not None:
        model = load_gpt(args.state_dict, config, args.n_layer, args.vocab)
        if args.block_size is not None and args.block_size != model.block_size:
            raise ValueError(f"--block-size {args.block_size}: the state dict's "
                             f"transformer.wpe.weight has {model.block_size} positions")
        weights = f"state dict {args.state_dict}"
    else:
        model = init_gpt(config, args.n_layer, args.vocab, args.seed, args.block_size)
        weights = f"seeded (seed {args.seed})"
    if args.tokens is not None:
        tokens = load_tokens(args.tokens, config, args.vocab)
        source = str(args.tokens)
    else:
        tokens = np.random.default_rng(args.seed).integers(
            0, args.vocab, size=(config.batch, config.n_ctx))
        source = f"seeded (seed {args.seed})"
    tokens = gpt_model.check_tokens(tokens, model)
    if args.generate:
        gpt_model.check_generate(tokens, args.generate, model)
    trace, collector, backend = _backend(
        args, f"GPT model ({args.n_layer} blocks, n_embd {config.n_embd}, {config.tokens} "
              f"tokens) on the {fabric[0]} x {fabric[1]} RTL fabric")
    print(f"GPT model: {args.n_layer} blocks, vocabulary {args.vocab}, {model.block_size} "
          f"positions; weights {weights}; tokens {source}; backend {backend.name}",
          flush=True)
    run = gpt_model.run_gpt_model(model, tokens, fabric, backend, args.sparsity,
                                  progress=not args.no_progress)
    if collector is not None:
        _mark_host_operations(collector, run)
        collector.write(trace)
        print(f"timeline -> {trace} (open it in https://ui.perfetto.dev)")
    dense = gpt_model.predict_model_cycles(model, tokens, fabric) if args.sparsity > 0 \
        else None
    pictures = plots.plot_run(run, args.plots) if args.plots else []
    rep = report.build_report(run, dense=dense, plots=pictures)
    rep["weights"] = weights
    rep["input"] = source
    rep["model"] = {"n_layer": args.n_layer, "vocab": args.vocab,
                    "block_size": model.block_size, "tokens": tokens.tolist()}
    if args.generate:
        start = time.perf_counter()
        ours = gpt_model.generate(model, tokens, args.generate, fabric, backend,
                                  args.sparsity)
        theirs = gpt_model.torch_generate(model, tokens, args.generate, args.sparsity)
        rep["generated"] = {
            "steps": args.generate, "backend": backend.name,
            "tokens": ours.tolist(), "torch_tokens": theirs.tolist(),
            "matches_torch": bool(np.array_equal(ours, theirs)),
            "seconds": round(time.perf_counter() - start, 3),
            "note": "greedy (argmax, first index on ties); the whole prefix is re-run on the "
                    "fabric for every new token (no KV cache)"}
    return rep, run


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
        if "model" in rep:
            from .gpt_model import logits
            out = logits(block_run)
            np.save(args.out, out)
            print(f"logits {list(out.shape)} float32 -> {args.out}")
        else:
            np.save(args.out, block_run.out16.astype(np.float32))
            print(f"output {list(block_run.out16.shape)} float32 -> {args.out}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        report.write_report(rep, args.report)
        print(f"report -> {args.report}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    gen = rep.get("generated")
    if gen and not gen["matches_torch"]:
        print(f"warning: greedy tokens differ from torch float32's (FP16 arithmetic can flip "
              f"a near-tie): {gen['tokens']} vs {gen['torch_tokens']}", file=sys.stderr)
    if rep["totals"]["bit_exact_all"] is False:
        bad = [row["name"] for row in rep["operations"] if row["bit_exact"] is False]
        print(f"error: not bit-exact: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


DEMO_ARGS = ["--n-embd", "64", "--n-head", "4", "--n-ctx", "16", "--batch", "2",
             "--fabric", "4x4"]


#: The demo's whole model: two blocks, logits and two greedy tokens, every fabric run on
#: the RTL (about 2.5 minutes: the check run and its golden twin, then the two decoding
#: runs; each of the 28 fabric operations is its own simulation).
MODEL_ARGS = ["--n-embd", "32", "--n-head", "4", "--n-ctx", "8", "--batch", "1",
              "--fabric", "4x4", "--n-layer", "2", "--vocab", "64", "--block-size", "16",
              "--generate", "2"]


def demo(argv=None):
    """``python -m gpt_mapping.demo gpt``: a representative block dense and 90 % sparse,
    then a small whole model (logits and greedy decoding).

    Every run goes through :func:`main` (the command line); prints the reports and the
    sparse speed-up measured between the two block runs (same backend, same kind of
    cycles). ``--no-model`` skips the whole model (:data:`MODEL_ARGS`).
    """
    parser = argparse.ArgumentParser(prog="python -m gpt_mapping.demo gpt",
                                     description=demo.__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "demo" / "gpt")
    parser.add_argument("--backend", choices=gpt.BACKENDS, default="rtl")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--no-model", action="store_true",
                        help="skip the whole-model run (logits and greedy decoding)")
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
    if not args.no_model:
        run_dir = args.out_dir / "model"
        cli = [*MODEL_ARGS, "--backend", args.backend, "--out", str(run_dir / "logits.npy"),
               "--report", str(run_dir / "report.json")]
        if args.no_progress:
            cli.append("--no-progress")
        print(f"\n== GPT model (logits and greedy decoding): python -m gpt_mapping gpt "
              f"{' '.join(cli)}", flush=True)
        status = status or main(cli)
    print(f"reports, outputs and plots in {args.out_dir}")
    return status
