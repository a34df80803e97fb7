"""Train a tiny character-level GPT on the corpus shipped in bench/data, and replay one of its
steps on the RTL fabric bit for bit (docs/training.md section 8; ``nox -s train``).

    python bench/train_tiny.py [--steps 40] [--replay 5] [--out-dir build/train]

1. ``python -m gpt_mapping train`` on ``bench/data/tiny_corpus.txt`` (2 blocks, n_embd 32,
   4 heads, 16 characters a sequence, 4 sequences a step, AdamW lr 3e-3, golden backend on
   a 4 x 4 fabric), with torch's float32 model trained beside it by ``torch.optim.AdamW``
   on the same data: the two loss curves in ``loss.png``, their largest difference printed.
2. The weights before step ``--replay`` (the command run for that many steps, ``--out``),
   then that step's forward and backward on the golden model and on the RTL fabric: the
   loss and every gradient compared bit for bit.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gpt_mapping import train_cli  # noqa: E402
from gpt_mapping.model import GPTConfig, init_gpt  # noqa: E402
from gpt_mapping.train import apply_weights, train_step  # noqa: E402

CORPUS = ROOT / "bench" / "data" / "tiny_corpus.txt"
#: 32 ids for the corpus's 30 characters: the fabric's dW splits the vocabulary over 4
#: columns
MODEL = ["--n-layer", "2", "--n-embd", "32", "--n-head", "4", "--n-ctx", "16", "--vocab", "32"]
OPT = ["--batch", "4", "--lr", "3e-3", "--optimizer", "adamw", "--fabric", "4x4"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--replay", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "build" / "train")
    args = parser.parse_args(argv)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    common = MODEL + ["--text", str(CORPUS)] + OPT + ["--no-progress"]
    start = time.perf_counter()
    code = train_cli.main(common + ["--steps", str(args.steps), "--report",
                                    str(out / "report.json"), "--plots", str(out),
                                    "--compare-torch"])
    if code:
        return code
    rep = json.loads((out / "report.json").read_text())
    loss, ref = np.array(rep["loss"]), np.array(rep["torch_loss"])
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s: loss {loss[0]:.4f} -> "
          f"{loss[-1]:.4f}; torch {ref[0]:.4f} -> {ref[-1]:.4f}; largest difference "
          f"{np.abs(loss - ref).max():.2e} ({np.abs(loss - ref).max() / ref.max():.2e} of "
          f"the largest loss)")
    # the weights before step k, then step k on the golden model and on the RTL
    k = args.replay
    if k:
        code = train_cli.main(common + ["--steps", str(k), "--out", str(out / "before.pt")])
        if code:
            return code
    parsed = train_cli.build_parser().parse_args(common)
    data, vocab, _ = train_cli.load_data(parsed, parsed.vocab)
    cfg = GPTConfig(n_embd=32, n_head=4, n_ctx=16, batch=4)
    model = init_gpt(cfg, 2, vocab, seed=0)
    if k:
        state = torch.load(out / "before.pt")
        apply_weights(model, {n: v.numpy() for n, v in state.items()})
    rows = data[k * 4:(k + 1) * 4]
    t0 = time.perf_counter()
    gold = train_step(model, rows[:, :-1], rows[:, 1:], (4, 4), "golden")
    t1 = time.perf_counter()
    rtl = train_step(model, rows[:, :-1], rows[:, 1:], (4, 4), "rtl")
    t2 = time.perf_counter()
    same = [n for n, g in gold.grads.items()
            if np.array_equal(g.view(np.uint32), rtl.grads[n].view(np.uint32))]
    print(f"step {k} replayed: loss golden {gold.loss!r}, RTL {rtl.loss!r} (the run's "
          f"{float(loss[k])!r}); {len(same)} of {len(gold.grads)} gradients bit for bit; golden "
          f"{t1 - t0:.1f} s, RTL {t2 - t1:.1f} s; RTL cycles: forward {rtl.forward_cycles:,}, "
          f"backward's fabric operations {rtl.backward_cycles:,} "
          f"({rtl.backward_cycles / max(rtl.forward_cycles, 1):.2f}x)")
    ok = (gold.loss == rtl.loss == float(np.float32(loss[k])) and len(same) == len(gold.grads)
          and loss[-1] < loss[0])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
