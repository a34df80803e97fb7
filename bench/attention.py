"""Attention on the RTL fabric: cycles measured against the cycle model, bits against the
golden model, FMACs against the unmasked (query, key) pairs.

    python bench/attention.py [--set tune|check|all] [--fit] [--json OUT.json]

Every case runs ``ATTN_SCORES`` and ``ATTN_VALUES`` (gpt_mapping/attention.py) on a seeded
FP16 QKV activation on the Verilator fabric and checks:

* the probabilities and ``att`` bit for bit against golden/fabric_ops.py;
* the FMAC lane-operations of ``P V`` (counted by every PE) equal ``head_dim`` times the
  unmasked (query, key) pairs: the masked pairs are never computed;
* the wavelets on the ``kv`` colour (the routers' south ports): every key goes from its
  row down to the row of its sequence's last token and no further, none goes north;

and prints the measured cycles beside :func:`gpt_mapping.attention.predict_attention_cycles`.
``tune`` is the set the model's constants were fitted on (``--fit`` prints them from its
cases), ``check`` the cases it was not (docs/attention.md section 4).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden import fabric_ops as G                                        # noqa: E402
from gpt_mapping import attention as A                                    # noqa: E402

#: (n_embd, n_head = width, n_ctx, batch, height). The tune set holds every layout the
#: tests run (tests/test_attention.py, the blocks of tests/test_gpt_block_fabric.py and the
#: demo's), the check set layouts of neither; the last ones of each split the tokens
#: unevenly over the rows or start a sequence inside a row.
TUNE = [(16, 2, 4, 2, 2), (16, 2, 8, 1, 2), (64, 4, 16, 2, 4), (32, 4, 8, 1, 4),
        (16, 2, 2, 2, 2), (32, 2, 16, 1, 2), (64, 4, 8, 4, 4), (32, 4, 32, 1, 4),
        (16, 2, 6, 1, 2), (32, 4, 8, 2, 4), (16, 2, 5, 1, 2), (32, 4, 5, 2, 4),
        (16, 2, 3, 3, 4), (16, 2, 2, 1, 4), (32, 4, 3, 3, 4), (32, 4, 9, 1, 4),
        (16, 2, 3, 2, 2), (32, 2, 8, 2, 2)]
CHECK = [(32, 4, 8, 1, 2), (64, 4, 16, 1, 2), (24, 3, 8, 2, 4), (48, 3, 12, 1, 4),
         (16, 1, 4, 2, 2), (8, 1, 8, 1, 2), (32, 2, 12, 2, 2), (64, 4, 13, 2, 4),
         (32, 2, 7, 3, 2), (16, 2, 5, 1, 4), (16, 2, 2, 3, 2), (32, 4, 11, 1, 4)]


def kv_expected(n_ctx, batch, head_dim, width, bounds):
    """Wavelets on the south ports if every key goes from its row to the row of its
    sequence's last token, one link per row: ``d W sum_k (row(last) - row(k))``."""
    row = np.searchsorted(np.asarray(bounds), np.arange(n_ctx * batch), side="right") - 1
    last = (np.arange(n_ctx * batch) // n_ctx + 1) * n_ctx - 1
    return int(head_dim * width * (row[last] - row).sum())


def unmasked_pairs(n_ctx, batch, n_head):
    return batch * n_head * n_ctx * (n_ctx + 1) // 2


def run_case(c, h, n, b, rows, seed=0):
    lay = A.attention_layout(c, h, n, b, h, rows)
    rng = np.random.default_rng(seed)
    qkv = rng.standard_normal((n * b, 3 * c)).astype(np.float16)
    gp = G.attention_probs(qkv.view(np.uint16), h, n, b)
    ga = G.attention_values(gp, qkv.view(np.uint16), h, n, b)
    probs, cs = A.run_scores_rtl(lay, qkv)
    att, cv = A.run_values_rtl(lay, gp.view(np.float16), qkv)
    d, t, m = lay.head_dim, max(lay.tokens_per_row), lay.rows_per_sequence
    pairs = unmasked_pairs(n, b, h)
    row = {"n_embd": c, "n_head": h, "n_ctx": n, "batch": b, "width": h, "height": rows,
           "head_dim": d, "t_y": t, "rows_per_sequence": m, "unmasked_pairs": pairs,
           "all_pairs": b * h * n * n,
           "features": {op: A.cycle_features(lay, op) for op in ("scores", "values")}}
    kv = kv_expected(n, b, d, h, lay.qkv.token_bounds)
    for op, counters, exact in (("scores", cs, np.array_equal(probs.view(np.uint16), gp)),
                                ("values", cv, np.array_equal(att.view(np.uint16), ga))):
        port = np.asarray(counters["router_port_wavelets"])       # [H, W, 5] N E S W RAMP
        row[op] = {"cycles": int(counters["cycles"]),
                   "predicted": A.predict_attention_cycles(lay, op),
                   "bit_exact": bool(exact),
                   "fmac_lane_ops": int(counters["fmac_lane_ops"]),
                   "south_wavelets": int(port[..., 2].sum()),
                   "north_wavelets": int(port[..., 0].sum())}
        r = row[op]
        # the command wavelet of each column passes south once per row but the last
        r["kv_traffic_as_expected"] = (r["south_wavelets"] == kv + h * (rows - 1)
                                       and r["north_wavelets"] == 0)
    row["values"]["fmac_is_unmasked_pairs"] = row["values"]["fmac_lane_ops"] == d * pairs
    row["kv_wavelets_expected"] = kv
    return row


def fit(rows):
    """Constants of :func:`gpt_mapping.attention.predict_attention_cycles`: least squares
    of the relative error over ``rows``. The row of the fabric that finishes last (whose
    terms count) depends on the constants, so the fit is repeated with the rows it picks
    until they no longer change."""
    out = {}
    for op in ("scores", "values"):
        lays = [A.attention_layout(r["n_embd"], r["n_head"], r["n_ctx"], r["batch"],
                                   r["width"], r["height"]) for r in rows]
        per_row = [[A._row_terms(lay, y, op) for y in range(lay.qkv.height)
                    if lay.tokens_per_row[y]] for lay in lays]
        measured = np.array([r[op]["cycles"] for r in rows], float)
        coef = np.array(A.SCORES_COEF if op == "scores" else A.VALUES_COEF, float)
        picked = None
        for _ in range(20):
            feats = [max(fs, key=lambda f: f["fixed"] + np.dot(coef, f["terms"]))
                     for fs in per_row]
            if picked is not None and all(a is b for a, b in zip(feats, picked)):
                break
            picked = feats
            x = np.array([f["terms"] for f in feats], float) / measured[:, None]
            y = (measured - [f["fixed"] for f in feats]) / measured
            coef = np.linalg.lstsq(x, y, rcond=None)[0]
        out[op] = np.round(coef, 3).tolist()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=("tune", "check", "all"), default="all")
    ap.add_argument("--fit", action="store_true", help="print the fitted constants")
    ap.add_argument("--json", type=Path, help="write the rows here")
    args = ap.parse_args(argv)
    cases = {"tune": TUNE, "check": CHECK, "all": TUNE + CHECK}[args.set]
    print(f"{'C':>3} {'H':>2} {'n':>3} {'B':>2} {'fab':>5} {'T_y':>3} {'m':>2} | {'op':>6} "
          f"{'cycles':>7} {'model':>7} {'error':>7} exact  fmac / d x unmasked pairs")
    rows, worst, ok = [], {}, True
    for case in cases:
        start = time.time()
        row = run_case(*case)
        row["set"] = "tune" if case in TUNE else "check"
        row["seconds"] = round(time.time() - start, 1)
        rows.append(row)
        for op in ("scores", "values"):
            r = row[op]
            err = (r["predicted"] - r["cycles"]) / r["cycles"]
            r["error"] = round(err, 4)
            worst.setdefault((row["set"], op), []).append(abs(err))
            ok &= r["bit_exact"]
            lanes = f"{r['fmac_lane_ops']} / {row['head_dim'] * row['unmasked_pairs']}"
            print(f"{case[0]:>3} {case[1]:>2} {case[2]:>3} {case[3]:>2} {case[1]:>2}x{case[4]:<2} "
                  f"{row['t_y']:>3} {row['rows_per_sequence']:>2} | {op:>6} {r['cycles']:>7} "
                  f"{r['predicted']:>7} {100 * err:>6.1f}% {'yes' if r['bit_exact'] else 'NO ':<5}"
                  f"  {lanes}", flush=True)
        ok &= row["values"]["fmac_is_unmasked_pairs"]
        ok &= row["scores"]["kv_traffic_as_expected"] and row["values"]["kv_traffic_as_expected"]
    print("model error, worst / mean: " + ", ".join(
        f"{s} {op} {100 * max(e):.1f}% / {100 * np.mean(e):.1f}%"
        for (s, op), e in sorted(worst.items())))
    if args.fit:
        print("fitted on the tune cases:", fit([r for r in rows if r["set"] == "tune"]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
