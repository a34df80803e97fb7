"""GPT-2 small's block GEMMs on the wafer, 750 x 994 PEs, with layouts chosen by the mapper
(docs/gemm.md section 10; issue 12's wafer-scale figure).

    python bench/gpt2_wafer.py [--batch 15] [--sparsity 0 --sparsity 0.9] [--json OUT.json]
    python bench/gpt2_wafer.py --demo      # the same choice for the demo's block on 4 x 4

The block of GPT-2 small (n_embd 768, 12 heads, n_ctx 1024; seeded weights, magnitude-pruned
for the sparse runs) with a batch of B sequences: T = 1024 B tokens over the 994 rows. The
default B = 15 fills the wafer: 15 or 16 tokens per row, T_pad 16, the most the accumulator
cache takes with 4 outputs interleaved (4 x 16 = 64 words).

For every linear layer the mapper's layouts (column groups G, a divisor of 750, and the
interleave) are predicted by gpt_mapping.perf_model, and the activations' moves between
layouts are charged with its redistribution bound: the residual stream and what attention
reads are in the plain layout; c_fc's output goes through GELU in place into mlp.c_proj, so
that pair is chosen jointly. Printed per GEMM: the layout, predicted cycles and FMAC
utilization of the GEMM, the redistribution cycles charged, and the utilization with them.
The plain layout (G = 1, the best interleave) is printed beside it, and the layout of
fewest GEMM cycles if moving activations were free.
"""

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_mapping import gpt  # noqa: E402
from gpt_mapping.layout import GemmMapping  # noqa: E402
from gpt_mapping.model import GPTConfig, init_block  # noqa: E402
from gpt_mapping.perf_model import (layout_options, needed_features, held_features,  # noqa
                                    plain_layout, redistribution_cycles)
from gpt_mapping.streams import nonzero_counts  # noqa: E402

WAFER = (750, 994)
GPT2_SMALL = dict(n_embd=768, n_head=12, n_ctx=1024)


def best_per_group(mapping, w16):
    """{G: (mapping, estimate)} with the interleave of fewest GEMM cycles for each G."""
    best = {}
    for m, est in layout_options(mapping, lambda m: nonzero_counts(m, w16)):
        if m.groups not in best or est.cycles < best[m.groups][1].cycles:
            best[m.groups] = (m, est)
    return best


def utilization(est, cycles):
    return est.fmac_lane_ops / (est.lanes * est.pes * cycles)


def wafer_block(batch=15, sparsity=0.0, fabric=WAFER, seed=0, model=None):
    """The chosen layout of each of the block's four GEMMs, with its figures: a dict.
    ``model``: n_embd, n_head, n_ctx (default GPT-2 small's)."""
    config = GPTConfig(batch=batch, **(model or GPT2_SMALL))
    mapped = gpt.map_block(init_block(config, seed), sparsity)
    width, height = fabric
    t = config.tokens
    t_y = -(-t // height)
    layers = mapped.linears
    options = {}
    for name, layer in layers.items():
        base = GemmMapping(tokens=t, features=layer.k, outputs=layer.n, width=width,
                           height=height)
        options[name] = best_per_group(base, layer.w16)

    def move(held, needed):
        return redistribution_cycles(held, needed, t_y)

    chosen = {}
    for name in ("attn.c_attn", "attn.c_proj"):
        layer = layers[name]
        cands = []
        for g, (m, est) in options[name].items():
            into = move(plain_layout(layer.k, width), needed_features(m))
            out = move(held_features(m), plain_layout(layer.n, width))
            cands.append((est.cycles + into + out, m, est, into, out))
        chosen[name] = min(cands, key=lambda c: (c[0], c[1].groups))
    fc, proj = layers["mlp.c_fc"], layers["mlp.c_proj"]
    into_fc = {g: move(plain_layout(fc.k, width), needed_features(m))
               for g, (m, _) in options["mlp.c_fc"].items()}
    out_proj = {g: move(held_features(m), plain_layout(proj.n, width))
                for g, (m, _) in options["mlp.c_proj"].items()}
    pairs = []
    for ga, (ma, ea) in options["mlp.c_fc"].items():
        for gb, (mb, eb) in options["mlp.c_proj"].items():
            between = move(held_features(ma), needed_features(mb))
            pairs.append((ea.cycles + eb.cycles + into_fc[ga] + between + out_proj[gb],
                          ga, gb, between))
    _, ga, gb, between = min(pairs, key=lambda p: (p[0], p[1], p[2]))
    ma, ea = options["mlp.c_fc"][ga]
    mb, eb = options["mlp.c_proj"][gb]
    chosen["mlp.c_fc"] = (None, ma, ea, into_fc[ga], 0)
    chosen["mlp.c_proj"] = (None, mb, eb, between, out_proj[gb])
    rows = {}
    for name in layers:
        _, m, est, into, out = chosen[name]
        plain_m, plain_est = options[name][1]
        free_m, free_est = min(options[name].values(), key=lambda o: o[1].cycles)
        rows[name] = {
            "K": m.features, "N": m.outputs, "groups": m.groups,
            "group_width": m.group_width, "interleave": m.interleave,
            "features_per_pe": int(m.features_per_column.max()),
            "cycles": est.cycles, "utilization": est.fmac_utilization,
            "redistribution_in": into, "redistribution_out": out,
            "utilization_with_redistribution": utilization(est, est.cycles + into + out),
            "plain_interleave": plain_m.interleave, "plain_cycles": plain_est.cycles,
            "plain_utilization": plain_est.fmac_utilization,
            "unmoved_groups": free_m.groups, "unmoved_interleave": free_m.interleave,
            "unmoved_cycles": free_est.cycles,
            "unmoved_utilization": free_est.fmac_utilization,
        }
    gemm = sum(r["cycles"] for r in rows.values())
    moved = sum(r["redistribution_in"] + r["redistribution_out"] for r in rows.values())
    lane_ops = sum(chosen[n][2].fmac_lane_ops for n in layers)
    lanes = 4 * width * height
    plain = sum(r["plain_cycles"] for r in rows.values())
    plain_ops = sum(options[n][1][1].fmac_lane_ops for n in layers)
    unmoved = sum(r["unmoved_cycles"] for r in rows.values())
    unmoved_ops = sum(min(options[n].values(), key=lambda o: o[1].cycles)[1].fmac_lane_ops
                      for n in layers)
    return {"batch": batch, "unmoved_cycles": unmoved,
            "unmoved_utilization": unmoved_ops / (lanes * unmoved), "tokens": t, "tokens_per_row": [t // height, t_y],
            "fabric": list(fabric), "sparsity": sparsity, "gemms": rows,
            "gemm_cycles": gemm, "redistribution_cycles": moved,
            "gemm_utilization": lane_ops / (lanes * gemm),
            "utilization_with_redistribution": lane_ops / (lanes * (gemm + moved)),
            "plain_cycles": plain, "plain_utilization": plain_ops / (lanes * plain)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=15)
    parser.add_argument("--demo", action="store_true",
                        help="the demo's block instead (n_embd 64, 4 heads, n_ctx 16, batch "
                             "2 on 4 x 4: python -m gpt_mapping.demo gpt)")
    parser.add_argument("--sparsity", type=float, action="append")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = []
    for sparsity in args.sparsity or [0.0, 0.9]:
        start = time.perf_counter()
        if args.demo:
            r = wafer_block(2, sparsity, (4, 4), model=dict(n_embd=64, n_head=4, n_ctx=16))
        else:
            r = wafer_block(args.batch, sparsity)
        results.append(r)
        print(f"\n{'demo' if args.demo else 'GPT-2 small'} block, batch {r['batch']}: "
              f"{r['tokens']} tokens on "
              f"{r['fabric'][0]} x {r['fabric'][1]} PEs ({r['tokens_per_row']} tokens per "
              f"row), {sparsity:.0%} zeros ({time.perf_counter() - start:.0f} s)")
        print(f"{'GEMM':12s} {'K x N':>10s} {'G':>4s} {'W/G':>4s} {'I':>2s} {'K/PE':>4s} "
              f"{'cycles':>8s} {'util':>6s} {'moves in':>8s} {'out':>6s} {'with':>6s} | "
              f"{'plain G=1':>9s} {'util':>6s} | {'fastest GEMM alone (G, I, util)'}")
        for name, g in r["gemms"].items():
            shape = f"{g['K']}x{g['N']}"
            print(f"{name:12s} {shape:>10s} {g['groups']:4d} "
                  f"{g['group_width']:4d} {g['interleave']:2d} {g['features_per_pe']:4d} "
                  f"{g['cycles']:8,d} {g['utilization']:6.1%} {g['redistribution_in']:8,d} "
                  f"{g['redistribution_out']:6,d} {g['utilization_with_redistribution']:6.1%}"
                  f" | {g['plain_cycles']:9,d} {g['plain_utilization']:6.1%}"
                  f" | G {g['unmoved_groups']}, I {g['unmoved_interleave']}: "
                  f"{g['unmoved_cycles']:,} ({g['unmoved_utilization']:.1%})")
        print(f"block GEMMs: {r['gemm_cycles']:,} cycles, utilization "
              f"{r['gemm_utilization']:.1%}; with {r['redistribution_cycles']:,} cycles of "
              f"redistribution {r['utilization_with_redistribution']:.1%}; plain layout "
              f"{r['plain_cycles']:,} cycles, {r['plain_utilization']:.1%}; the fastest "
              f"layouts with free moves {r['unmoved_cycles']:,} cycles, "
              f"{r['unmoved_utilization']:.1%}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
