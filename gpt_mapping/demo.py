"""``python -m gpt_mapping.demo <name>``: representative runs through the command-line path.

``gemm`` (what ``nox -s sim`` runs): a seeded random GEMM, T = 64, K = 512, N = 64 on a 4 x 4
fabric, once dense and once with 90 % of the weights pruned to zero, each through
``python -m gpt_mapping gemm`` (:func:`gpt_mapping.gemm_cli.main`); prints both reports.

``gpt`` (what ``nox -s gpt`` runs) is dispatched to ``gpt_mapping.gpt_cli.demo(argv)``, which
the GPT-layer mapping provides. New demos are entries of :data:`DEMOS`.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gpt_mapping import gemm_cli

__all__ = ["DEMOS", "demo_gemm", "make_gemm_operands", "main"]

ROOT = Path(__file__).resolve().parent.parent


def make_gemm_operands(tokens=64, features=512, outputs=64, sparsity=0.0, seed=0):
    """Seeded X [T, K] ~ N(0, 1) and W [K, N] ~ N(0, 1/K) in float16; ``sparsity`` is the
    fraction of W set to zero (chosen uniformly at random)."""
    rng = np.random.default_rng(seed)
    x16 = rng.standard_normal((tokens, features)).astype(np.float16)
    w = rng.standard_normal((features, outputs)) / np.sqrt(features)
    if sparsity:
        w[rng.random(w.shape) < sparsity] = 0.0
    return x16, w.astype(np.float16)


def demo_gemm(argv):
    """Run the dense and the 90 % sparse GEMM through the CLI; return the exit code."""
    parser = argparse.ArgumentParser(prog="python -m gpt_mapping.demo gemm",
                                     description=__doc__.split("\n\n")[1])
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "demo" / "gemm")
    parser.add_argument("--fabric", default="4x4")
    parser.add_argument("--shape", default="64,512,64", help="T,K,N")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", choices=gemm_cli.BACKENDS, default="rtl")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    tokens, features, outputs = (int(v) for v in args.shape.split(","))

    status, summaries = 0, []
    for name, sparsity in (("dense", 0.0), ("sparse90", 0.9)):
        run_dir = args.out_dir / name
        run_dir.mkdir(parents=True, exist_ok=True)
        x16, w16 = make_gemm_operands(tokens, features, outputs, sparsity, args.seed)
        np.save(run_dir / "X.npy", x16)
        np.save(run_dir / "W.npy", w16)
        cli_args = ["--x", str(run_dir / "X.npy"), "--w", str(run_dir / "W.npy"),
                    "--fabric", args.fabric, "--out", str(run_dir / "Y.npy"),
                    "--report", str(run_dir / "report.json")]
        if args.backend:
            cli_args += ["--backend", args.backend]
        if args.no_progress:
            cli_args.append("--no-progress")
        print(f"== GEMM {name}: python -m gpt_mapping gemm {' '.join(cli_args)}")
        code = gemm_cli.main(cli_args)
        status = status or code
        if code == 2:
            continue
        report = json.loads((run_dir / "report.json").read_text())
        print(json.dumps(report, indent=2))
        summaries.append((name, report))

    print("\n== summary")
    print(f"{'run':9} {'backend':8} {'cycles':>9} {'source':10} {'FMAC util':>9} "
          f"{'non-zeros':>9} {'bit exact':>9} {'max|err| torch':>14}")
    for name, r in summaries:
        print(f"{name:9} {r['backend']:8} {r['cycles']:9d} {r['cycles_source']:10} "
              f"{r['fmac_utilization']:9.3f} {r['nonzero_weights']:9d} "
              f"{str(r['bit_exact_vs_golden']):>9} {r['max_abs_error_vs_torch_fp32']:14.3g}")
    return status


def _demo_gpt(argv):
    """The GPT block demo: ``gpt_cli.demo(argv)``."""
    from gpt_mapping import gpt_cli
    return gpt_cli.demo(argv)


#: demo name -> function(argv) returning an exit code
DEMOS = {
    "gemm": demo_gemm,
    "gpt": _demo_gpt,
}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in DEMOS:
        print(f"usage: python -m gpt_mapping.demo {{{','.join(DEMOS)}}} [options]",
              file=sys.stderr)
        return 2
    return DEMOS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
