"""Interleaved outputs on the RTL fabric: the GPT demo block's four GEMM shapes (4 x 4, 8
tokens per PE), the benchmark GEMM and the 2 x 2 test block's mlp.c_proj (4 tokens per PE), each with 1, 2 and 4 outputs interleaved, dense and
90 % sparse: cycles, FMAC utilization, the bits against the golden model (the same for every
interleave) and the performance model's prediction.

    python bench/gemm_interleave.py [--json OUT.json]

docs/gemm.md section 9 has the table and what bounds each shape.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden.gemm import fabric_gemm                                       # noqa: E402
from gpt_mapping.fabric_run import run_gemm_rtl                           # noqa: E402
from gpt_mapping.layout import GemmMapping                                # noqa: E402
from gpt_mapping.perf_model import predict_from_weights                   # noqa: E402

#: (name, T, K, N, width, height)
SHAPES = [("attn.c_attn", 32, 64, 192, 4, 4), ("attn.c_proj", 32, 64, 64, 4, 4),
          ("mlp.c_fc", 32, 64, 256, 4, 4), ("mlp.c_proj", 32, 256, 64, 4, 4),
          ("bench/gemm_fabric", 64, 512, 64, 4, 4),
          ("2x2 block mlp.c_proj", 8, 64, 16, 2, 2)]         # tests/test_gpt_rtl.py's, T_y 4
INTERLEAVES = (1, 2, 4)
SPARSITIES = (0.0, 0.9)


def run(name, t, k, n, width, height, sparsity, interleave, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, k)).astype(np.float16)
    w = rng.standard_normal((k, n)).astype(np.float16)
    w[rng.random((k, n)) < sparsity] = 0
    m = GemmMapping(t, k, n, width, height, interleave=interleave)
    y, c = run_gemm_rtl(m, x, w)
    cycles = int(c["cycles"])
    predicted = predict_from_weights(m, w).cycles
    return {"gemm": name, "shape": [t, k, n], "fabric": [width, height],
            "sparsity": sparsity, "interleave": interleave, "cycles": cycles,
            "utilization": c["fmac_lane_ops"] / (4 * width * height * cycles),
            "predicted": predicted, "error": (predicted - cycles) / cycles,
            "bit_exact": bool(np.array_equal(y.view(np.uint16),
                                             fabric_gemm(x, w, width, height).view(np.uint16))),
            "stall_hazard": int(np.asarray(c["pe_stall_hazard"]).sum()),
            "stall_input": int(np.asarray(c["pe_stall_input"]).sum())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows, ok = [], True
    print(f"{'GEMM':<18} {'sparse':>6} {'I':>2} {'cycles':>7} {'util':>6} {'model':>7} "
          f"{'error':>7} exact")
    for name, t, k, n, wd, ht in SHAPES:
        for sp in SPARSITIES:
            for il in INTERLEAVES:
                r = run(name, t, k, n, wd, ht, sp, il)
                rows.append(r)
                ok &= r["bit_exact"]
                print(f"{name:<18} {sp:>6.0%} {il:>2} {r['cycles']:>7} "
                      f"{100 * r['utilization']:>5.1f}% {r['predicted']:>7} "
                      f"{100 * r['error']:>6.1f}% {'yes' if r['bit_exact'] else 'NO'}",
                      flush=True)
    errs = [abs(r["error"]) for r in rows]
    print(f"model error: worst {100 * max(errs):.1f} %, mean {100 * np.mean(errs):.1f} %")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
