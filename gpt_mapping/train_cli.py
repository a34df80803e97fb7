"""``python -m gpt_mapping train``: train a nanoGPT model by weight streaming (docs/training.md
section 8).

Every step: MemoryX's FP16 weights to the systems, each system's forward and backward on
its slice of the batch (gpt_mapping/train.py: the GEMMs on the fabric, the rest as the
report says), the gradients reduced up SwarmX's tree (gpt_mapping/swarmx.py; on a Dask
cluster when ``--systems`` > 1), one MemoryX update (gpt_mapping/memoryx.py).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["build_parser", "main", "load_data"]


def build_parser(prog="python -m gpt_mapping train"):
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    m = p.add_argument_group("model")
    m.add_argument("--n-layer", type=int, default=2)
    m.add_argument("--n-embd", type=int, required=True)
    m.add_argument("--n-head", type=int, required=True)
    m.add_argument("--n-ctx", type=int, required=True, help="tokens per sequence")
    m.add_argument("--vocab", type=int, help="vocabulary (with --text: at least its "
                                             "characters; default their number)")
    m.add_argument("--block-size", type=int, help="positions of wpe (default n_ctx)")
    m.add_argument("--gelu", choices=("erf", "tanh"), default="erf")
    m.add_argument("--state-dict", type=Path, help="a nanoGPT model's state dict")
    m.add_argument("--seed", type=int, default=0, help="seed of the weights")
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="TOKENS.npy, int [sequences, n_ctx + 1]")
    src.add_argument("--text", type=Path, help="a text file, character-level")
    o = p.add_argument_group("optimisation")
    o.add_argument("--steps", type=int, default=10)
    o.add_argument("--batch", type=int, default=2, help="sequences per step")
    o.add_argument("--lr", type=float, default=1e-3)
    o.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    o.add_argument("--momentum", type=float, default=0.0)
    o.add_argument("--betas", type=float, nargs=2, default=(0.9, 0.999))
    o.add_argument("--eps", type=float, default=1e-8)
    o.add_argument("--weight-decay", type=float, help="default: torch's (SGD 0, AdamW 0.01)")
    r = p.add_argument_group("run")
    r.add_argument("--systems", type=int, default=1, help="SwarmX systems (divide --batch)")
    r.add_argument("--scheduler", help="a Dask scheduler address (default: a LocalCluster)")
    r.add_argument("--backend", choices=("rtl", "golden", "auto"), default="golden",
                   help="auto: the RTL when the Verilator tool chain is there")
    r.add_argument("--fabric", default="4x4")
    r.add_argument("--out", type=Path, help="STATE.pt: FP32 master weights, nanoGPT names")
    r.add_argument("--report", type=Path)
    r.add_argument("--plots", type=Path, help="a directory for the loss curve")
    r.add_argument("--compare-torch", action="store_true",
                   help="also train the float32 torch model with torch.optim, side by side")
    r.add_argument("--no-progress", action="store_true")
    return p


def load_data(args, vocab):
    """``(rows int64 [sequences, n_ctx + 1], vocab, chars or None)``; a ``ValueError``
    names what does not fit."""
    n = args.n_ctx
    chars = None
    if args.text is not None:
        text = Path(args.text).read_text(encoding="utf-8")
        chars = sorted(set(text))
        if vocab is None:
            vocab = len(chars)
        elif vocab < len(chars):
            raise ValueError(f"--text {args.text} has {len(chars)} distinct characters, more "
                             f"than --vocab {vocab}")
        ids = np.array([chars.index(ch) for ch in text], dtype=np.int64)
        rows = len(ids) // (n + 1)
        if rows < 1:
            raise ValueError(f"--text {args.text} has {len(ids)} characters, shorter than one "
                             f"sequence of n_ctx + 1 = {n + 1}")
        data = ids[:rows * (n + 1)].reshape(rows, n + 1)
    else:
        data = np.load(args.data)
        if data.dtype.kind not in "iu" or data.ndim != 2 or data.shape[1] != n + 1:
            raise ValueError(f"--data {args.data} must hold integer ids [sequences, n_ctx + 1 "
                             f"= {n + 1}], not {data.dtype} {list(data.shape)}")
        if vocab is None:
            raise ValueError("--data needs --vocab")
        data = data.astype(np.int64)
    bad = np.argwhere((data < 0) | (data >= vocab))
    if len(bad):
        s, t = (int(v) for v in bad[0])
        raise ValueError(f"token {int(data[s, t])} at sequence {s}, position {t} is outside "
                         f"the vocabulary of {vocab}")
    return data, vocab, chars


def _optimizer(args):
    from .memoryx import AdamWConfig, SGDConfig
    if args.optimizer == "sgd":
        return SGDConfig(lr=args.lr, momentum=args.momentum,
                         weight_decay=args.weight_decay or 0.0)
    return AdamWConfig(lr=args.lr, betas=tuple(args.betas), eps=args.eps,
                       weight_decay=0.01 if args.weight_decay is None else args.weight_decay)


def _torch_optimizer(args, params):
    import torch
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=args.lr, momentum=args.momentum,
                               weight_decay=args.weight_decay or 0.0)
    return torch.optim.AdamW(params, lr=args.lr, betas=tuple(args.betas), eps=args.eps,
                             weight_decay=0.01 if args.weight_decay is None
                             else args.weight_decay)


def _system(model, tokens, targets, fabric, backend):
    """One system's step (a Dask task): its loss and gradients, the where of each op."""
    import os
    from .train import train_step
    res = train_step(model, tokens, targets, fabric, backend)
    return {"loss": {"loss": np.float32(res.loss)}, "grads": res.grads, "pid": os.getpid(),
            "forward_cycles": res.forward_cycles, "backward_cycles": res.backward_cycles,
            "where": {r.name: r.where for r in res.rows},
            "forward": [{"name": n, "where": w, "cycles": c, "kind": k}
                        for n, w, c, k in res.forward_rows],
            "backward": [{"name": r.name, "where": r.where,
                          "cycles": {k: int(v) for k, v in r.cycles.items()}}
                         for r in res.rows]}


def _check_rtl(cfg, args, vocab, fabric):
    """The RTL backward's layouts, before the first step: dY of every linear layer is
    copied to every column (its outputs split evenly) and every row holds tokens."""
    width, height = fabric
    c = cfg.n_embd
    tokens = (args.batch // args.systems) * args.n_ctx
    for name, n in (("attn.c_attn", 3 * c), ("attn.c_proj", c), ("mlp.c_fc", 4 * c),
                    ("mlp.c_proj", c), ("lm_head", vocab)):
        if n % width:
            raise ValueError(f"--backend rtl: {name}'s {n} outputs do not split evenly over "
                             f"the {width} columns (the backward copies its dY to every "
                             f"column); use a --vocab or --n-embd that {width} divides")
    if tokens < height:
        raise ValueError(f"--backend rtl: {tokens} tokens a system on {height} rows leave "
                         f"a row without tokens")


def _backend(name):
    if name != "auto":
        return name
    try:
        from runtime import sim
        sim.verilator_root()
        return "rtl"
    except Exception:                               # no tool chain: the golden model
        return "golden"


def main(argv=None):
    import torch
    from tqdm import tqdm
    from .gpt import parse_fabric
    from .memoryx import MemoryX
    from .model import GPTConfig, init_gpt, load_gpt
    from . import swarmx as SX
    from .train import apply_weights
    args = build_parser().parse_args(argv)
    try:
        fabric = parse_fabric(args.fabric)
        data, vocab, _ = load_data(args, args.vocab)
        if args.steps < 1 or args.batch < 1:
            raise ValueError(f"--steps {args.steps} and --batch {args.batch} must be >= 1")
        need = args.steps * args.batch
        if need > len(data):
            raise ValueError(f"--steps {args.steps} x --batch {args.batch} needs {need} "
                             f"sequences; the data has {len(data)}")
        if args.systems < 1 or args.batch % args.systems:
            raise ValueError(f"--systems {args.systems} does not divide --batch {args.batch}")
        cfg = GPTConfig(n_embd=args.n_embd, n_head=args.n_head, n_ctx=args.n_ctx,
                        batch=args.batch // args.systems, gelu=args.gelu)
        model = (load_gpt(args.state_dict, cfg, args.n_layer, vocab) if args.state_dict
                 else init_gpt(cfg, args.n_layer, vocab, seed=args.seed,
                               block_size=args.block_size))
        backend = _backend(args.backend)
        if backend == "rtl":
            _check_rtl(cfg, args, vocab, fabric)
        client = cluster = None
        if args.systems > 1:
            client, cluster = SX.connect(args.scheduler, workers=min(args.systems, 2),
                                         timeout=5)
    except (ValueError, ConnectionError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    mx = MemoryX({n: p.detach().numpy() for n, p in model.named_parameters()},
                 _optimizer(args))
    ref = ref_opt = None
    if args.compare_torch:
        ref = model.with_context(args.n_ctx, args.batch).requires_grad_(True).train()
        ref_opt = _torch_optimizer(args, ref.parameters())
    steps, losses, torch_losses = [], [], []
    start = time.perf_counter()
    try:
        for s in tqdm(range(args.steps), desc="training", unit="step",
                      disable=args.no_progress):
            rows = data[s * args.batch:(s + 1) * args.batch]
            tokens, targets = rows[:, :-1], rows[:, 1:]
            parts = np.array_split(np.arange(args.batch), args.systems)
            futures = None
            if client is None:
                results = [_system(model, tokens[p], targets[p], fabric, backend)
                           for p in parts]
            else:
                workers = sorted(client.scheduler_info()["workers"])
                futures = [client.submit(_system, model, tokens[p], targets[p], fabric,
                                         backend, workers=[workers[i % len(workers)]],
                                         pure=False) for i, p in enumerate(parts)]
                results = client.gather(futures)
            grads, loss = SX.reduce_results(results, futures, client)
            t_update = time.perf_counter()
            mx.update(grads)
            apply_weights(model, mx.params)
            t_update = time.perf_counter() - t_update
            losses.append(float(loss))
            steps.append({"step": s, "loss": float(loss),
                          "forward_cycles": [r["forward_cycles"] for r in results],
                          "backward_cycles": [r["backward_cycles"] for r in results],
                          "pids": [r["pid"] for r in results],
                          "where": results[0]["where"],
                          # per operation (system 0's): forward and backward fabric
                          # cycles ("predicted" on the golden backend, backward cycles
                          # only measured on the RTL); MemoryX's update on the host
                          "forward": results[0]["forward"],
                          "backward": results[0]["backward"],
                          "update": {"where": "host (MemoryX)",
                                     "seconds": round(t_update, 6)}})
            if ref is not None:
                ref_opt.zero_grad()
                out = ref(torch.from_numpy(tokens))
                tl = torch.nn.functional.cross_entropy(out.reshape(-1, vocab),
                                                       torch.from_numpy(targets).reshape(-1))
                tl.backward()
                ref_opt.step()
                torch_losses.append(float(tl.item()))
    finally:
        if client is not None:
            client.close()
            if cluster is not None:
                cluster.close()
    seconds = time.perf_counter() - start
    print(f"trained {args.steps} step(s) of {args.batch} sequences on {args.systems} "
          f"system(s), backend {backend}, fabric {fabric[0]} x {fabric[1]}: loss "
          f"{losses[0]:.4f} -> {losses[-1]:.4f} ({seconds:.1f} s)")
    if torch_losses:
        print(f"torch float32 with torch.optim: {torch_losses[0]:.4f} -> "
              f"{torch_losses[-1]:.4f}")
    host = sorted(n for n, w in steps[-1]["where"].items() if w == "host")
    print(f"backward on the host: {', '.join(host)}")
    if args.out:
        torch.save({n: torch.from_numpy(p.copy()) for n, p in mx.params.items()}, args.out)
        print(f"FP32 master weights -> {args.out}")
    if args.report:
        rep = {"command": "train", "backend": backend, "systems": args.systems,
               "fabric": list(fabric), "optimizer": args.optimizer, "lr": args.lr,
               "loss": losses, "torch_loss": torch_losses or None, "steps": steps,
               "seconds": seconds}
        args.report.write_text(json.dumps(rep, indent=1))
        print(f"report -> {args.report}")
    if args.plots:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        args.plots.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(range(len(losses)), losses, marker="o", label=f"fabric ({backend})")
        if torch_losses:
            ax.plot(range(len(torch_losses)), torch_losses, marker="x",
                    label="torch float32")
        ax.set_xlabel("step")
        ax.set_ylabel("mean cross-entropy")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plots / "loss.png", dpi=100)
        plt.close(fig)
        print(f"loss curve -> {args.plots / 'loss.png'}")
    return 0
