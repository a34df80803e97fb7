"""Row reductions, LayerNorm and the element-wise operations on the RTL fabric: cycles
measured against the cycle models.

    python bench/rowops.py [--set tune|check|all] [--fit] [--json OUT.json]

Every case runs the row sum, the row max, LayerNorm, the bias add, the residual add and
both GELUs of a seeded FP16 activation on the Verilator fabric, checks the outputs bit for
bit against golden/fabric_ops.py and prints the measured cycles beside
:func:`gpt_mapping.rowops.predict_row_cycles` and
:func:`gpt_mapping.elementwise.predict_elementwise_cycles`. ``tune`` is the
set the model's constants were fitted on, ``check`` the cases it was not (docs/rowops.md
section 5); ``--fit`` prints the least-squares constants from the ``tune`` cases (what
``gpt_mapping/rowops.py`` holds).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden import fabric_ops as G, fp                                   # noqa: E402
from gpt_mapping import elementwise, rowops                               # noqa: E402

#: (width, height, tokens, features)
TUNE = [(4, 4, t, c) for t in (4, 16, 24, 40, 64) for c in (16, 64, 128)]
CHECK = [(2, 2, 8, 8), (2, 2, 8, 48), (2, 2, 24, 8), (2, 2, 24, 48), (3, 4, 12, 36),
         (1, 2, 10, 20), (4, 4, 10, 40), (4, 4, 32, 64), (4, 4, 48, 96), (4, 2, 20, 64)]


OPS = ("sum", "max", "layernorm", "bias", "residual", "gelu", "gelu_tanh")


def run_case(w, h, t, c, seed=0):
    m = rowops.row_mapping(t, c, w, h)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((t, c)).astype(np.float16)
    gamma = (1 + 0.1 * rng.standard_normal(c)).astype(np.float16)
    beta = (0.1 * rng.standard_normal(c)).astype(np.float16)
    x32 = fp.f16_to_f32(x.view(np.uint16))
    row = {"width": w, "height": h, "tokens": t, "features": c,
           "t_y": int(m.tokens_per_row.max()), "k_x": int(m.features_per_column.max())}
    for op in ("sum", "max"):
        r = rowops.run_row_reduce_rtl(m, x, op)
        gold = G.row_reduce(x32, m.feature_bounds, op)
        row[op] = {"cycles": r.counters["cycles"],
                   "predicted": rowops.predict_row_cycles(m, "reduce"),
                   "bit_exact": bool((r.s32 == gold[None]).all())}
    r = rowops.run_layernorm_rtl(m, x, gamma, beta)
    gold = G.layernorm(x.view(np.uint16), gamma.view(np.uint16), beta.view(np.uint16),
                       m.feature_bounds)
    row["layernorm"] = {"cycles": r.counters["cycles"],
                        "predicted": rowops.predict_row_cycles(m, "layernorm"),
                        "bit_exact": bool((r.y16.view(np.uint16) == gold).all())}
    res = rng.standard_normal((t, c)).astype(np.float16)
    x16, b16, r16 = x.view(np.uint16), beta.view(np.uint16), res.view(np.uint16)
    for op, operand, gold in (("bias", beta, G.bias_add(x16, b16)),
                              ("residual", res, G.residual_add(x16, r16)),
                              ("gelu", None, G.gelu(x16)),
                              ("gelu_tanh", None, G.gelu(x16, "gelu_tanh"))):
        y, counters = elementwise.run_elementwise_rtl(m, op, x, operand)
        row[op] = {"cycles": counters["cycles"],
                   "predicted": elementwise.predict_elementwise_cycles(m, op),
                   "bit_exact": bool((y.view(np.uint16) == gold).all())}
    return row


def fit(rows):
    """Least-squares constants of the LayerNorm element-wise terms from measured rows (the
    reduction's constants are read off the sum's cycles the same way; docs/rowops.md)."""
    feats, ys = [], []
    for r in rows:
        t, k, w = r["t_y"], r["k_x"], r["width"]
        tp = -(-t // 4) * 4
        rest = (r["layernorm"]["cycles"] - rowops._reduce_cycles(t, k, w, 4)
                - rowops._reduce_cycles(t, k, w, 2) - rowops._kernel_cycles("rsqrt", t))
        feats.append([1, k * tp // 2, k * max(-(-t // 2), 2), k])
        ys.append(rest)
    coef, *_ = np.linalg.lstsq(np.array(feats, float), np.array(ys, float), rcond=None)
    return dict(zip(("LN_FIXED", "LN_PER_TILE_GROUP", "LN_PER_GROUP", "LN_PER_FEATURE"),
                    np.round(coef, 3).tolist()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("tune", "check", "all"), default="all")
    ap.add_argument("--fit", action="store_true", help="print the fitted constants")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    cases = {"tune": TUNE, "check": CHECK, "all": TUNE + CHECK}[args.set]
    rows = []
    print(f"{'fabric':>7} {'T':>4} {'C':>4} | {'op':>9} {'cycles':>7} {'model':>7} "
          f"{'error':>7} exact")
    worst = {}
    for w, h, t, c in cases:
        start = time.time()
        row = run_case(w, h, t, c)
        row["set"] = "tune" if (w, h, t, c) in TUNE else "check"
        row["seconds"] = round(time.time() - start, 1)
        rows.append(row)
        for op in OPS:
            r = row[op]
            err = (r["predicted"] - r["cycles"]) / r["cycles"]
            r["error"] = round(err, 4)
            key = (row["set"], op)
            worst[key] = max(worst.get(key, 0.0), abs(err))
            print(f"{w:>3} x {h:<2} {t:>4} {c:>4} | {op:>9} {r['cycles']:>7} "
                  f"{r['predicted']:>7} {100 * err:>6.1f}% {'yes' if r['bit_exact'] else 'NO'}",
                  flush=True)
    print("worst model error: " + ", ".join(f"{s} {op} {100 * e:.1f}%"
                                             for (s, op), e in sorted(worst.items())))
    if args.fit:
        print("fitted on the tune cases:", fit([r for r in rows if r["set"] == "tune"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r[op]["bit_exact"] for r in rows for op in OPS) else 1


if __name__ == "__main__":
    sys.exit(main())
