"""The redistribution into column groups on the RTL fabric against its cycle model
(gpt_mapping/redistribute.py, docs/gemm.md section 12).

    python bench/redistribute.py [--json OUT.json]

Each case loads X [T, K] in the plain layout, runs the ``REDISTRIBUTE`` program and reads
back every tile's copy (bit for bit X, every group's alike). Per case: measured cycles, the
frozen perf model's lower bound (``redistribution_cycles``), the model (bound +
``REDISTRIBUTE_FIXED``), its error. The model's one constant was taken from the ``tune``
case (the demo block's layout); the ``check`` cases were not used to set it.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_mapping.layout import GemmMapping  # noqa: E402
from gpt_mapping import redistribute as RD  # noqa: E402

#: (role, W, H, T, K, N, G)
CASES = [
    ("tune", 4, 4, 32, 64, 64, 4),
    ("check", 4, 4, 32, 64, 64, 2),
    ("check", 4, 4, 64, 64, 64, 4),
    ("check", 4, 4, 16, 256, 64, 2),
    ("check", 4, 2, 16, 128, 64, 4),
    ("check", 4, 1, 4, 32, 32, 4),
    ("check", 2, 2, 8, 16, 16, 2),
    ("check", 2, 4, 16, 64, 64, 2),
    ("check", 8, 2, 16, 64, 128, 8),
    ("check", 8, 4, 30, 64, 64, 4),
    ("check", 8, 4, 32, 256, 64, 8),
    ("check", 6, 2, 12, 36, 36, 3),
    ("check", 6, 2, 24, 72, 72, 6),
    ("check", 4, 4, 8, 128, 32, 4),       # T_y 2 in T_pad 4: the padding moves too
    ("check", 4, 4, 8, 32, 96, 4),
]


def run(case, seed=0):
    role, w, h, t, k, n, g = case
    m = GemmMapping(tokens=t, features=k, outputs=n, width=w, height=h, groups=g)
    x16 = np.random.default_rng(seed).standard_normal((t, k)).astype(np.float16)
    start = time.perf_counter()
    copy, c = RD.run_redistribute_rtl(m, x16)
    wall = time.perf_counter() - start
    cycles = int(c["cycles"])
    predicted = RD.predict_redistribute_cycles(m)
    return {"role": role, "fabric": [w, h], "shape": [t, k], "groups": g,
            "t_y": int(m.tokens_per_row.max()), "cycles": cycles,
            "bound": RD.redistribute_bound(m), "predicted": predicted,
            "error": predicted / cycles - 1,
            "wavelets_in": int(np.asarray(c["pe_wavelets_in"]).sum()),
            "bit_exact": bool(np.array_equal(copy.view(np.uint16), x16.view(np.uint16))),
            "wall_seconds": wall}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    print(f"{'role':<6}{'fabric':>7}{'T':>4}{'K':>5}{'G':>3}{'T_y':>4}{'cycles':>8}"
          f"{'bound':>7}{'model':>7}{'error':>8}  bit-exact")
    for case in CASES:
        r = run(case)
        rows.append(r)
        print(f"{r['role']:<6}{'x'.join(map(str, r['fabric'])):>7}{r['shape'][0]:>4}"
              f"{r['shape'][1]:>5}{r['groups']:>3}{r['t_y']:>4}{r['cycles']:>8,}"
              f"{r['bound']:>7,}{r['predicted']:>7,}{100 * r['error']:>+7.1f}%  "
              f"{'yes' if r['bit_exact'] else 'NO'}", flush=True)
    check = [abs(r["error"]) for r in rows if r["role"] == "check"]
    print(f"check cases: {len(check)}, worst {100 * max(check):.1f} %, mean "
          f"{100 * np.mean(check):.1f} %; the bound is below the measurement in "
          f"{sum(r['bound'] < r['cycles'] for r in rows)} of {len(rows)}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
