"""The zero filter at the sender (seed 002, SPEC 4.3's FOUT): wavelets and cycles of a
PE-to-PE operand stream against the fraction of zeros it carries.

    python bench/zero_filter.py [--features K] [--tokens T] [--json OUT.json]

PE (0, 0) of a 1 x 2 fabric sends an FP16 vector ``v`` of K elements south on colour 3
through a FOUT DSR with the zero filter (``encode_dsr(..., filter_zeros=True)``): +-0 are
dropped, every other element goes with its index. PE (0, 1) holds ``X[T_y, K]`` and binds
colour 3 to a launch-list FMAC in index-offset mode, ``acc = fma(acc, X[:, index], v_index)``,
so it computes only for the non-zeros: the weight-streaming step of SPEC 7 with the operand
coming from another PE. Each case is checked bit for bit (``acc``: FP32, the non-zeros in
index order from +0) and prints the operand's wavelets (the sender's router's south port,
less the command), the receiver's FMAC lane-operations and the cycles, for zero fractions
0 to 0.95.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from golden import fp                                                     # noqa: E402
from gpt_mapping.fabric_run import pe_params                              # noqa: E402
from gpt_mapping.layout import FP16_BYTES                                  # noqa: E402
from gpt_mapping.rowops import CTRL_BASE, row_mapping, run_tile_op          # noqa: E402
from gpt_mapping.streams import BlockCommand                              # noqa: E402
from rtl.pe import regs as R                                              # noqa: E402
from rtl.pe.asm import assemble                                           # noqa: E402
from rtl.router import Port, port_mask                                    # noqa: E402
from rtl.wavelet import pack_array                                        # noqa: E402

COLOR = 3
FRACTIONS = (0.0, 0.5, 0.75, 0.9, 0.95)


def _programs(mapping, k, v_base, acc_words):
    pe = pe_params(mapping)
    t = int(mapping.tokens_per_row[1])
    tp = mapping.t_pad(1)
    task = CTRL_BASE + int(BlockCommand.STREAM)
    bad = R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE, pe=pe)
    # Sender: the command starts a code task that streams v through the filtering FOUT.
    src = assemble("stream:\n    t.fmov 0, 1, -, r0, r0\n    tend\n")
    send = [(0, list(src.words)),
            (R.dsr_addr(0, pe=pe), R.encode_dsr(R.Kind.FOUT, color=COLOR, dims=((k, 1),),
                                                filter_zeros=True, pe=pe)),
            (R.dsr_addr(1, pe=pe), R.encode_dsr(R.Kind.MEM, base=v_base, dims=((k, 1),),
                                                pe=pe)),
            (R.entry_addr(0, pe=pe), list(bad)),
            (R.task_addr(0, pe=pe), [R.encode_task(0, pe=pe)]),
            (R.task_addr(task, pe=pe), [R.encode_task(pc=src.labels["stream"], pe=pe)]),
            (R.bind_addr(mapping.colors.weight, pe=pe),
             [R.encode_bind(data_task=0, ctrl_base=CTRL_BASE, pe=pe)])]
    # Receiver: colour 3's data wavelets start the FMAC (index-offset mode on X's column).
    end = assemble("stream:\n    tend\n")
    recv = [(0, list(end.words)),
            (R.dsr_addr(0, pe=pe), R.encode_dsr(R.Kind.ACC, dtype=R.DType.FP32, base=0,
                                                dims=((t, 1),), pe=pe)),
            (R.dsr_addr(1, pe=pe), R.encode_dsr(R.Kind.MEM, base=mapping.pe.data_base // 2,
                                                dims=((t, 1),), idx_stride=tp, pe=pe)),
            (R.entry_addr(0, pe=pe), list(R.encode_entry(R.TensorOp.FMAC, 0, 0, 1,
                                                          R.DSR_WAVELET, idx=("b",), pe=pe))),
            (R.entry_addr(1, pe=pe), list(bad)),
            (R.task_addr(0, pe=pe), [R.encode_task(1, pe=pe)]),
            (R.task_addr(1, pe=pe), [R.encode_task(0, pe=pe)]),
            (R.task_addr(task, pe=pe), [R.encode_task(pc=end.labels["stream"], pe=pe)]),
            (R.bind_addr(mapping.colors.weight, pe=pe),
             [R.encode_bind(data_task=0, ctrl_base=CTRL_BASE, pe=pe)]),
            (R.bind_addr(COLOR, pe=pe), [R.encode_bind(data_task=1, pe=pe)])]
    return {(0, 0): send, (0, 1): recv}


def golden_acc(x16, v16):
    """acc[t] = fma over the non-zero k ascending, from +0: FP32 bits [T_y]."""
    acc = np.zeros(x16.shape[0], dtype=np.uint32)
    x32 = fp.f16_to_f32(x16)
    v32 = fp.f16_to_f32(v16)
    for k in np.nonzero(v16 & 0x7FFF)[0]:
        acc = fp.fmac32(acc, x32[:, k], np.full(x16.shape[0], v32[k], dtype=np.uint32))
    return acc


def measure(k=256, t=8, zeros=0.9, seed=0):
    """One stream of K elements, a fraction ``zeros`` of them +-0: a dict of the figures."""
    rng = np.random.default_rng(seed)
    mapping = row_mapping(2 * t, k, 1, 2)
    x = rng.standard_normal((2 * t, k)).astype(np.float16)
    v = rng.standard_normal(k).astype(np.float16)
    zero = rng.permutation(k)[:int(round(zeros * k))]
    v[zero] = np.where(rng.random(len(zero)) < 0.5, np.float16(0.0), np.float16(-0.0))
    v16 = v.view(np.uint16)
    nnz = int(np.count_nonzero(v16 & 0x7FFF))
    v_base = mapping.y_base(0, 0) // FP16_BYTES           # beside the sender's (unused) X
    programs = _programs(mapping, k, v_base, mapping.pe.accumulator_words)
    programs[0, 0] = programs[0, 0] + [(v_base // 2, v16.view("<u4"))]
    routes = [(0, 0, Port.RAMP, COLOR, port_mask(Port.S)),
              (0, 1, Port.N, COLOR, port_mask(Port.RAMP))]
    stream = [pack_array(data=0, index=int(BlockCommand.STREAM), ctrl=1,
                         color=mapping.colors.weight).reshape(1).astype(np.uint32)]
    tp = mapping.t_pad(1)
    _, _, counters = run_tile_op(mapping, [(x, lambda xx, yy: mapping.pe.data_base)],
                                 programs, stream, 20 + 2 * k, read_y=False,
                                 name="zero-filtered stream", extra_routes=routes,
                                 extra_reads={(0, 1): (R.acc_addr(0) * 4, t)})
    acc = counters.pop("extra_reads")[0, 1]
    want = golden_acc(x[t:].view(np.uint16), v16)
    ports = np.asarray(counters["router_port_wavelets"])
    lanes = np.asarray(counters["pe_fmac_lane_ops"])
    return {"features": k, "tokens_per_pe": t, "t_pad": tp, "zeros": zeros, "nonzeros": nnz,
            # The sender's router passes the operand and the column's command south.
            "cycles": int(counters["cycles"]), "operand_wavelets": int(ports[0, 0, 2]) - 1,
            "receiver_fmac_lanes": int(lanes[1, 0]), "bit_exact": bool(np.array_equal(acc, want))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--tokens", type=int, default=8, help="tokens per PE (T_y)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    rows = [measure(args.features, args.tokens, z) for z in FRACTIONS]
    base = rows[0]
    print(f"{'zeros':>6} {'non-zeros':>9} {'wavelets':>8} {'FMAC lanes':>10} {'cycles':>7} "
          f"{'saving':>7} exact")
    for r in rows:
        r["saving"] = round(base["cycles"] / r["cycles"], 3)
        print(f"{r['zeros']:>6.0%} {r['nonzeros']:>9} {r['operand_wavelets']:>8} "
              f"{r['receiver_fmac_lanes']:>10} {r['cycles']:>7} {r['saving']:>6.2f}x "
              f"{'yes' if r['bit_exact'] else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
