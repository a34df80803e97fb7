"""Causal multi-head attention on the RTL fabric (SPEC 8; docs/attention.md).

The layout (a design choice, docs/attention.md section 1): the QKV GEMM's outputs are
ordered so that column x of the fabric owns head x whole, its q, k and v features
(``3 d`` of them, ``d = n_embd / n_head``), which needs ``n_head == W``; the tokens stay split
over the rows as every activation's (SPEC 7's balanced split: any number per row, and a
sequence may start inside a row). PE (x, y) then holds the queries, keys and values of its
``T_y`` tokens for head x, and every score it needs pairs one of its queries with a key of
its own row or of a row above it in the same sequence (:class:`Tile`).

Two fabric operations, each started by a command in the column streams
(:class:`gpt_mapping.streams.BlockCommand`) and run as a code task of every PE's core:

* ``ATTN_SCORES`` (:func:`run_scores_rtl`): the keys travel south, row to row, on the
  colour ``kv``, token by token: a row receives the earlier tokens of its first sequence
  from the row above (one FIN copy each into its SRAM), passes each on south (FOUT) when
  the row below needs it, and then sends those of its own the row below needs; nothing
  merges on a link (store and forward), so no key goes further south than the row of its
  sequence's last token and no key travels north at all: the masked (query, key) pairs of
  other rows are never sent. Then ``-inf`` where pairs are masked, ``s = q . k`` by FMACs
  (the key's element the scalar, the queries' column the vector), each key only over the
  queries of its sequence at or after it (the masked pairs are never computed), the
  scale, the row max, the
  FP16 exp kernel, the row sum, the reciprocal kernel and ``p = e r``. The probabilities
  stay in the PE (read back for the report).
* ``ATTN_VALUES`` (:func:`run_values_rtl`): the values travel as the keys did, and
  ``y = sum_u p_u v_u`` by FMACs, again only over the unmasked pairs; the
  output is the head's ``d`` features of ``att`` where the next GEMM's X lies.

The golden model is golden/fabric_ops.py (``attention_probs``, ``attention_values``), a
separate implementation of the same arithmetic in the key order the PEs use.
"""

from dataclasses import dataclass

import numpy as np

from golden import fp
from gpt_mapping.fabric_run import pe_params
from gpt_mapping.kernels import embed_kernel
from gpt_mapping.layout import FP16_BYTES, MappingError
from gpt_mapping.rowops import (_BAD_TASKS, CTRL_BASE, _mod, _Program, _kernel_cycles,
                                row_mapping, run_tile_op)
from gpt_mapping.streams import BlockCommand
from rtl.pe import regs as R
from rtl.router import Port, port_mask
from rtl.wavelet import pack_array

__all__ = ["KV_COLOR", "AttentionLayout", "attention_layout", "permute_qkv", "tile",
           "scores_program", "values_program", "predict_attention_cycles", "cycle_features",
           "run_scores_rtl", "run_values_rtl", "decode_probs", "kv_routes", "p_reads"]

#: The colour keys and values travel on, south along each column (unused by the GEMM).
KV_COLOR = 3
#: The code tasks of the two commands.
TASKS = {"scores": CTRL_BASE + BlockCommand.ATTN_SCORES,
         "values": CTRL_BASE + BlockCommand.ATTN_VALUES}
_NEG_INF32 = 0xFF800000
MAX_LEN = 4095                       # DSR dimension length limit


@dataclass(frozen=True)
class AttentionLayout:
    """Where attention runs: ``qkv`` is the layout of the permuted ``[T, 3C]`` QKV
    activation (column x: head x's q, k, v), ``out`` that of ``att`` ``[T, C]``;
    ``tokens_per_row`` the split's ``T_y`` of every row, ``rows_per_sequence`` the most
    rows one sequence touches."""
    qkv: object
    out: object
    n_head: int
    n_ctx: int
    batch: int
    head_dim: int
    tokens_per_row: tuple
    rows_per_sequence: int


def attention_layout(n_embd, n_head, n_ctx, batch, width, height, pe=None):
    """The :class:`AttentionLayout` of a block on a ``width`` x ``height`` fabric, or a
    :class:`MappingError` saying which condition of docs/attention.md section 1 fails."""
    if n_head != width:
        raise MappingError(f"attention on the fabric needs one head per column: n_head "
                           f"{n_head} on {width} columns")
    d = n_embd // n_head
    if d % 2:
        raise MappingError(f"attention on the fabric needs an even head size, not {d}")
    t = n_ctx * batch
    qkv = row_mapping(t, 3 * n_embd, width, height, pe)
    out = row_mapping(t, n_embd, width, height, pe)
    if any(int(k) != 3 * d for k in qkv.features_per_column):
        raise MappingError("the QKV split does not give every column 3 x head_dim features")
    bounds = qkv.token_bounds
    rows = max(sum(1 for y in range(height) if bounds[y] < (s + 1) * n_ctx
                   and bounds[y + 1] > s * n_ctx) for s in range(batch))
    lay = AttentionLayout(qkv, out, n_head, n_ctx, batch, d,
                          tuple(int(v) for v in qkv.tokens_per_row), rows)
    # Every tile of a row has the same program (columns differ only in the head they
    # hold): one of each row is built, so a tile that does not fit is named.
    for y in range(height):
        scores_program(lay, 0, y)
        values_program(lay, 0, y)
    return lay


def permute_qkv(qkv16, n_head):
    """``[T, 3C]`` in nanoGPT's order (q | k | v, heads inside) -> column-major heads
    (head h: its q, its k, its v), the order the attention layout loads."""
    t, three_c = qkv16.shape
    c = three_c // 3
    d = c // n_head
    return np.ascontiguousarray(qkv16.reshape(t, 3, n_head, d).transpose(0, 2, 1, 3)
                                .reshape(t, three_c))


def _al(v, m=16):
    return (v + m - 1) // m * m


@dataclass(frozen=True)
class Tile:
    """PE (x, y)'s part of the attention: element addresses (FP16 units). Its keys are the
    tokens ``first_key .. s0 + t - 1``: the ``recv`` tokens of its first query's sequence
    in the rows above (from the north), then its own ``t``; key u is token ``first_key + u``
    and lies at ``kbuf + u d`` (token-major)."""
    x: int
    y: int
    s0: int                          #: the row's first token
    t: int                           #: T_y
    tp: int
    d: int
    first_key: int                   #: the first token of the row's first sequence
    recv: int                        #: keys from the rows above
    keys: int                        #: recv + T_y
    qa: int                          #: queries 0 .. qa - 1 pair with the received keys
    segments: tuple                  #: the own tokens by sequence: ((j0, j1), ...)
    fwd_recv: bool                   #: the received keys are passed on south
    fwd_from: int                    #: own keys j >= fwd_from are sent south (t: none)
    q: int
    k: int
    v: int
    out: int                         #: att's d features (over k: dead by then)
    kbuf: int                        #: [keys, d] token-major
    s: int                           #: FP32 [keys, T_pad]
    e_in: int                        #: FP16 [keys, T_pad]
    e: int
    p: int
    m: int                           #: FP32 [T_pad]: max, then sum
    rin: int                         #: FP16 [T_pad]
    rr: int
    yacc: int                        #: FP32 [d, T_pad]
    end: int


def _next_row(lay, y):
    """The first row below ``y`` that holds tokens (the one ``y``'s keys go to), or None."""
    for y2 in range(y + 1, lay.qkv.height):
        if lay.tokens_per_row[y2]:
            return y2
    return None


def tile(lay, x, y):
    """The :class:`Tile` of PE (x, y) (a row that holds tokens)."""
    m, n = lay.qkv, lay.n_ctx
    t, tp, d = lay.tokens_per_row[y], m.t_pad(y), lay.head_dim
    if not t:
        raise ValueError(f"row {y} holds no tokens: no attention tile")
    s0 = int(m.token_bounds[y])
    a = s0 // n * n
    recv = s0 - a
    cuts = [0] + [j for j in range(1, t) if (s0 + j) % n == 0] + [t]
    segments = tuple(zip(cuts[:-1], cuts[1:]))
    below = _next_row(lay, y)
    if below is None:
        fwd_recv, fwd_from = False, t
    else:
        a2 = int(m.token_bounds[below]) // n * n      # where the next row's keys start
        fwd_recv = recv > 0 and a2 == a
        fwd_from = max(0, min(a2 - s0, t))
    keys = recv + t
    e0 = m.pe.data_base // FP16_BYTES
    at = _al(e0 + 3 * d * tp)
    bases = {}
    for name, size in (("kbuf", keys * d), ("s", 2 * keys * tp), ("e_in", keys * tp),
                       ("e", keys * tp), ("p", keys * tp), ("m", 2 * tp), ("rin", tp),
                       ("rr", tp), ("yacc", 2 * d * tp)):
        bases[name] = at
        at = _al(at + size)
    return Tile(x, y, s0, t, tp, d, a, recv, keys, segments[0][1], segments, fwd_recv,
                fwd_from, e0, e0 + d * tp, e0 + 2 * d * tp, lay.out.y_base(x, y) // FP16_BYTES,
                bases["kbuf"], bases["s"], bases["e_in"], bases["e"], bases["p"], bases["m"],
                bases["rin"], bases["rr"], bases["yacc"], at)


def _words(pe, kind, **fields):
    return R.encode_dsr(kind, pe=pe, **fields)


def _check_fits(lay, tl, end, what):
    sram = lay.qkv.pe.sram_bytes // FP16_BYTES
    if end > sram:
        raise MappingError(f"tile ({tl.x}, {tl.y}): the attention's {what} needs "
                           f"{end * FP16_BYTES} bytes of SRAM ({tl.keys} keys x {tl.tp} "
                           f"tokens, head size {tl.d}), the PE has {sram * FP16_BYTES}")
    if tl.keys * tl.tp > MAX_LEN or tl.d * tl.tp > MAX_LEN:
        raise MappingError(f"tile ({tl.x}, {tl.y}): {tl.keys} keys x {tl.tp} tokens is "
                           f"longer than one DSR dimension ({MAX_LEN} elements)")


def _transfers(prog, tl, own, note):
    """Receive the keys of the rows above token by token (FIN into kbuf), passing each on
    south when the row below needs it, then copy the own tokens (token-major) and send
    those the row below needs: the store and forward of section 2. ``own``: the DSR
    walking the own block one token (d features, stride T_pad) per advance."""
    prog.emit(f"# {note}: {tl.recv} token(s) from the north, then the own {tl.t}")
    if tl.recv:
        prog.emit(f"    li r8, {tl.recv}", f"{note}_in:")
        if tl.fwd_recv:
            prog.launch("fmov", "kb", "kin", note="kbuf[u] = the stream")
            prog.launch("fmov", "kout", "kb", rm="r5", note="... passed on south")
        else:
            prog.launch("fmov", "kb", "kin", rm="r6", note="kbuf[u] = the stream")
        prog.emit("    addi r8, r8, -1", f"    bne r8, r0, {note}_in")
    for first, count, send in ((0, tl.fwd_from, False), (tl.fwd_from, tl.t - tl.fwd_from, True)):
        if not count:
            continue
        prog.emit(f"    li r8, {count}", f"{note}_own{int(send)}:")
        if send:
            prog.launch("fmov", "kb", own, rm="r5", note="kbuf[u] = own token")
            prog.launch("fmov", "kout", "kb", rm="r5", note="... sent south")
        else:
            prog.launch("fmov", "kb", own, rm="r3", note="kbuf[u] = own token")
        prog.emit("    addi r8, r8, -1", f"    bne r8, r0, {note}_own{int(send)}")
    prog.emit("    twait")


def _own_loops(prog, tl, label, dsrs, launch_d):
    """The loops over the own keys, one per sequence segment ``(j0, j1)`` of the row: key
    j runs over the queries j .. j1 - 1 only, so before its launches the DSRs of
    ``dsrs(j0, n)`` = ``[(id, fields of key j0 (length n), base step per key)]`` are
    rewritten (words 1 and 2: the base and the first dimension's length) after a
    ``twait`` (a DSR a live operation uses cannot be rewritten); r10/r13 and r14/r15 hold
    the words, stepped per key."""
    pe = prog.pe
    for i, (j0, j1) in enumerate(tl.segments):
        n = j1 - j0
        init, step, head = [], [], ["    twait"]
        for (ident, fields, per_key), (r1, r2) in zip(dsrs(j0, n), (("r10", "r13"),
                                                                      ("r14", "r15"))):
            w0 = _words(pe, R.Kind.MEM, **fields)
            w1 = _words(pe, R.Kind.MEM, **{**fields, "base": fields["base"] + per_key,
                                           "dims": ((n - 1 or 1, 1),)})
            init += [f"    li {r1}, {w0[1]}", f"    li {r2}, {w0[2]}"]
            head += [f"    dsrw {r1}, {ident}, 1", f"    dsrw {r2}, {ident}, 2"]
            step += [f"    addi {r1}, {r1}, {w1[1] - w0[1]}",
                     f"    addi {r2}, {r2}, {w1[2] - w0[2] if n > 1 else 0}"]
        prog.emit("    twait", *init)
        _key_loop(prog, tl, f"{label}{i}", n, 2 * (tl.kbuf + (tl.recv + j0) * tl.d),
                  launch_d, step, head)
    prog.emit("    twait")


def _preamble(prog, label):
    """The task's label and the launch modifiers its launches use."""
    prog.emit(f"{label}:",
              f"    li r3, {_mod(adv=3):#x}    # rm: advance dst and a",
              f"    li r4, {_mod(adv=4):#x}    # rm: advance b",
              f"    li r5, {_mod(adv=2):#x}    # rm: advance a",
              f"    li r6, {_mod(adv=1):#x}    # rm: advance dst",
              f"    li r12, {_mod(adv=5):#x}   # rm: advance dst and b")


def _base_program(lay, x, y):
    pe = pe_params(lay.qkv)
    tl = tile(lay, x, y)
    prog = _Program(pe)
    M, F16, F32 = R.Kind.MEM, R.DType.FP16, R.DType.FP32
    d = tl.d
    prog.dsr("zero", R.Kind.SCALAR, dtype=F32, value=0)
    prog.dsr("kin", R.Kind.FIN, dtype=F16, color=KV_COLOR, dims=((d, 1),))
    prog.dsr("kout", R.Kind.FOUT, dtype=F16, color=KV_COLOR, dims=((d, 1),))
    prog.dsr("kb", M, dtype=F16, base=tl.kbuf, dims=((d, 1),), adv_step=d,
             adv_count=tl.keys)
    return pe, tl, prog, M, F16, F32


def _finish(lay, tl, prog, pe, kernels, task):
    out, program, source = prog.assemble(lay.qkv.pe.data_base,
                                         f"tile ({tl.x}, {tl.y}): the attention's")
    seen = set()
    for kern in kernels:
        for addr, word in kern.config:
            if addr not in seen:
                seen.add(addr)
                out.append((addr, [word]))
    bad = R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE, pe=pe)
    out.append((R.entry_addr(0, pe=pe), list(bad)))
    tasks = {CTRL_BASE + int(c): R.encode_task(0, pe=pe) for c in BlockCommand}
    for t_id in _BAD_TASKS:
        tasks[t_id] = R.encode_task(0, pe=pe)
    tasks[TASKS[task]] = R.encode_task(pc=program.labels[task], pe=pe)
    for t_id, word in sorted(tasks.items()):
        out.append((R.task_addr(t_id, pe=pe), [word]))
    out.append((R.bind_addr(lay.qkv.colors.weight, pe=pe),
                [R.encode_bind(data_task=0, ctrl_base=CTRL_BASE, pe=pe)]))
    return out, source


def _key_loop(prog, tl, label, count, addr, launch_d, step=(), head=()):
    """A loop over ``count`` keys whose elements (token-major, ``d`` per key) start at
    byte ``addr``: ``launch_d(d, reg)`` emits the launch of element d (its FP16 value in
    the low half of ``reg``); ``head`` / ``step``: lines before the launches / after them."""
    prog.emit(f"    li r7, {addr}", f"    li r8, {count}", f"{label}:", *head)
    for w in range(tl.d // 2):
        prog.emit(f"    lw r9, {4 * w}(r7)")
        launch_d(2 * w, "r9")
        prog.emit("    srli r9, r9, 16")
        launch_d(2 * w + 1, "r9")
    prog.emit(*step, f"    addi r7, r7, {2 * tl.d}", "    addi r8, r8, -1",
              f"    bne r8, r0, {label}")


def _rewrite(prog, name, **fields):
    """Lines rewriting DSR ``name``'s words that differ for ``fields`` (after a twait)."""
    ident, old = prog.dsrs[name]
    new = _words(prog.pe, R.Kind.MEM, **fields)
    lines = []
    for w, (a, b) in enumerate(zip(old, new)):
        if a != b:
            lines += [f"    li r9, {b}", f"    dsrw r9, {ident}, {w}"]
    return lines


def _empty(lay, x, y):
    """A row without tokens takes no part (its routers may pass the kv colour on)."""
    return not lay.tokens_per_row[y]


def scores_program(lay, x, y):
    """PE (x, y)'s program of ``ATTN_SCORES``: ``(config, source)`` (nothing for a row
    without tokens)."""
    if _empty(lay, x, y):
        return [], ""
    pe, tl, prog, M, F16, F32 = _base_program(lay, x, y)
    t, tp, d, keys, qa = tl.t, tl.tp, tl.d, tl.keys, tl.qa
    scale = int(fp.f32_to_bits(np.float32(1.0 / np.sqrt(d))))
    prog.dsr("neginf", R.Kind.SCALAR, dtype=F32, value=_NEG_INF32)
    prog.dsr("scale", R.Kind.SCALAR, dtype=F32, value=scale)
    prog.dsr("kown", M, dtype=F16, base=tl.k, dims=((d, tp),), adv_step=1, adv_count=t)
    # qc / sc: the received keys' FMACs over the queries of their sequence (0 .. qa - 1);
    # sc is rewritten to the whole row of queries for the softmax.
    prog.dsr("qc", M, dtype=F16, base=tl.q, dims=((qa, 1),), adv_step=tp, adv_count=d)
    prog.dsr("sc", M, dtype=F32, base=tl.s, dims=((qa, 1),), adv_step=tp, adv_count=keys)
    # l1 / l2: rewritten per own key (dsrw): the key's score column and the queries'
    # column from the key's own token on; then the whole S for the scale.
    prog.dsr("l1", M, dtype=F32, base=tl.s, dims=((t, 1),))
    prog.dsr("l2", M, dtype=F16, base=tl.q, dims=((t, 1),), adv_step=tp, adv_count=d)
    prog.dsr("mx", M, dtype=F32, base=tl.m, dims=((t, 1),))
    prog.dsr("mb", M, dtype=F32, base=tl.m, dims=((tp, 1), (keys, 0)))
    prog.dsr("ein", M, dtype=F16, base=tl.e_in, dims=((keys * tp, 1),))
    prog.dsr("e", M, dtype=F16, base=tl.e, dims=((keys * tp, 1),))
    prog.dsr("ek", M, dtype=F16, base=tl.e, dims=((t, 1),), adv_step=tp, adv_count=keys)
    prog.dsr("rin", M, dtype=F16, base=tl.rin, dims=((t, 1),))
    prog.dsr("rr", M, dtype=F16, base=tl.rr, dims=((t, 1),))
    prog.dsr("rb", M, dtype=F16, base=tl.rr, dims=((tp, 1), (keys, 0)))
    prog.dsr("p", M, dtype=F16, base=tl.p, dims=((keys * tp, 1),))
    exp = embed_kernel("exp", keys * tp, at=tl.end, first_dsr=len(prog.dsrs),
                       x_dsr=prog.id("ein"), y_dsr=prog.id("e"), pe=pe, rm_reg="r11")
    rec = embed_kernel("reciprocal", t, at=exp.end, first_dsr=exp.next_dsr,
                       x_dsr=prog.id("rin"), y_dsr=prog.id("rr"), pe=pe, rm_reg="r11")
    _check_fits(lay, tl, rec.end, "scores and softmax")
    if rec.next_dsr > pe.num_dsrs:
        raise MappingError(f"tile ({x}, {y}): the attention's scores need {rec.next_dsr} "
                           f"DSRs, the PE has {pe.num_dsrs}")
    ids = {n: prog.id(n) for n in prog.dsrs}
    _preamble(prog, "scores")
    _transfers(prog, tl, "kown", "keys")
    # -inf first wherever a pair is masked: the own block (its triangle, and the pairs of
    # two sequences in one row), all of S when some queries are not of the received
    # keys' sequence; the computed pairs overwrite it.
    fill_from = 0 if tl.recv and qa < t else tl.recv
    w_fill = _words(pe, M, dtype=F32, base=tl.s + 2 * fill_from * tp,
                    dims=(((keys - fill_from) * tp, 1),))
    prog.emit("# -inf where pairs are masked, then the scores of the unmasked ones",
              f"    li r10, {w_fill[1]}", f"    li r13, {w_fill[2]}",
              f"    dsrw r10, {ids['l1']}, 1", f"    dsrw r13, {ids['l1']}, 2")
    prog.launch("fmov", "l1", "neginf", note="masked pairs = -inf")

    def recv_launch(i, reg):
        a = "zero" if i == 0 else "sc"
        rm = "r12" if i == d - 1 else "r4"
        prog.emit(f"    t.fmac {ids['sc']}, {ids[a]}, {ids['qc']}, {reg}, {rm}"
                  f"    # s[key] += q[:, {i}] * k[{i}]")

    if tl.recv:
        prog.emit(f"# scores of the {tl.recv} keys of the rows above: queries 0 .. {qa - 1}")
        _key_loop(prog, tl, "sc_recv", tl.recv, 2 * tl.kbuf, recv_launch, [])

    def local_launch(i, reg):
        a = "zero" if i == 0 else "l1"
        prog.emit(f"    t.fmac {ids['l1']}, {ids[a]}, {ids['l2']}, {reg}, r4"
                  f"    # s[own key] += q[key.., {i}] * k[{i}]")

    own_s = tl.s + 2 * tl.recv * tp
    prog.emit("# the own keys: each over the queries of its sequence at or after it")
    _own_loops(prog, tl, "sc_own", lambda j0, n: [
        (ids["l1"], dict(dtype=F32, base=own_s + 2 * j0 * (tp + 1), dims=((n, 1),)),
         2 * (tp + 1)),
        (ids["l2"], dict(dtype=F16, base=tl.q + j0, dims=((n, 1),), adv_step=tp,
                         adv_count=d), 1),
    ], local_launch)
    # The scale over the whole S, then the softmax along the keys.
    w_all = _words(pe, M, dtype=F32, base=tl.s, dims=((keys * tp, 1),))
    prog.emit("# scale, max, exp, sum, 1/sum, p", f"    li r10, {w_all[1]}",
              f"    li r13, {w_all[2]}", f"    dsrw r10, {ids['l1']}, 1",
              f"    dsrw r13, {ids['l1']}, 2", f"    dsrw r0, {ids['sc']}, 7",
              *_rewrite(prog, "sc", dtype=F32, base=tl.s, dims=((t, 1),), adv_step=tp,
                        adv_count=keys))
    prog.launch("fmul", "l1", "l1", "scale", note="s = s * round32(1 / sqrt(d))")
    prog.launch("fmov", "mx", "sc", rm="r5", note="m = s[0]")
    if keys > 1:
        prog.emit(f"    li r8, {keys - 1}", "mx_loop:")
        prog.launch("fmax", "mx", "mx", "sc", rm="r4", note="m = max(m, s[key])")
        prog.emit("    addi r8, r8, -1", "    bne r8, r0, mx_loop")
    prog.launch("fsub", "ein", "l1", "mb", note="round16(s - m)")
    prog.emit("# exp kernel (golden/nonlinear.py)", *exp.lines)
    prog.launch("fmov", "mx", "ek", rm="r5", note="S = e[0]")
    if keys > 1:
        prog.emit(f"    li r8, {keys - 1}", "sum_loop:")
        prog.launch("fadd", "mx", "mx", "ek", rm="r4", note="S = S + e[key]")
        prog.emit("    addi r8, r8, -1", "    bne r8, r0, sum_loop")
    prog.launch("fmov", "rin", "mx", note="round16(S)")
    prog.emit("# reciprocal kernel", *rec.lines)
    prog.launch("fmul", "p", "e", "rb", note="p = round16(e * r)")
    # The task ends with its last operation in flight (it keeps the PE busy until done).
    prog.emit("    tend")
    return _finish(lay, tl, prog, pe, (exp, rec), "scores")


def values_program(lay, x, y):
    """PE (x, y)'s program of ``ATTN_VALUES``: ``(config, source)`` (nothing for a row
    without tokens); the probabilities lie at the tile's ``p`` as the scores left them."""
    if _empty(lay, x, y):
        return [], ""
    pe, tl, prog, M, F16, F32 = _base_program(lay, x, y)
    t, tp, d, keys, qa = tl.t, tl.tp, tl.d, tl.keys, tl.qa
    prog.dsr("vown", M, dtype=F16, base=tl.v, dims=((d, tp),), adv_step=1, adv_count=t)
    prog.dsr("pc", M, dtype=F16, base=tl.p, dims=((qa, 1),), adv_step=tp, adv_count=keys)
    prog.dsr("yc", M, dtype=F32, base=tl.yacc, dims=((qa, 1),), adv_step=tp, adv_count=d)
    prog.dsr("yall", M, dtype=F32, base=tl.yacc, dims=((d * tp, 1),))
    prog.dsr("out", M, dtype=F16, base=tl.out, dims=((d * tp, 1),))
    prog.dsr("l1", M, dtype=F32, base=tl.yacc, dims=((t, 1),), adv_step=tp, adv_count=d)
    prog.dsr("l2", M, dtype=F16, base=tl.p, dims=((t, 1),))
    _check_fits(lay, tl, tl.end, "P V")
    ids = {n: prog.id(n) for n in prog.dsrs}
    _preamble(prog, "values")
    _transfers(prog, tl, "vown", "values")
    prog.launch("fmov", "yall", "zero", note="y = +0")

    def recv_launch(i, reg):
        rm = "r12" if i == d - 1 else "r6"
        prog.emit(f"    t.fmac {ids['yc']}, {ids['yc']}, {ids['pc']}, {reg}, {rm}"
                  f"    # y[:, {i}] += p[:, key] * v[{i}]")

    if tl.recv:
        prog.emit(f"# the {tl.recv} keys of the rows above: queries 0 .. {qa - 1}")
        _key_loop(prog, tl, "pv_recv", tl.recv, 2 * tl.kbuf, recv_launch, [])
    own_p = tl.p + tl.recv * tp

    def local_launch(i, reg):
        prog.emit(f"    t.fmac {ids['l1']}, {ids['l1']}, {ids['l2']}, {reg}, r6"
                  f"    # y[key.., {i}] += p[key.., key] * v[{i}]")

    prog.emit("# the own keys: each over the queries of its sequence at or after it")
    _own_loops(prog, tl, "pv_own", lambda j0, n: [
        (ids["l1"], dict(dtype=F32, base=tl.yacc + 2 * j0, dims=((n, 1),), adv_step=tp,
                         adv_count=d), 2),
        (ids["l2"], dict(dtype=F16, base=own_p + j0 * (tp + 1), dims=((n, 1),)), tp + 1),
    ], local_launch)
    prog.launch("fmov", "out", "yall", note="att = round16(y)")
    prog.emit("    tend")
    return _finish(lay, tl, prog, pe, (), "values")


# --- routes, streams, the cycle model ---------------------------------------------------------

def kv_routes(lay):
    """The ``kv`` colour's routes: in every column, a row that receives keys takes them
    from the north (N -> RAMP), a row that sends some sends south (RAMP -> S), and a row
    without tokens between the two passes them on (N -> S)."""
    out = []
    for y in range(lay.qkv.height):
        if _empty(lay, 0, y):
            continue
        tl = tile(lay, 0, y)
        sends = tl.fwd_recv or tl.fwd_from < tl.t
        below = _next_row(lay, y)
        for x in range(lay.qkv.width):
            if tl.recv:
                out.append((x, y, Port.N, KV_COLOR, port_mask(Port.RAMP)))
            if sends:
                out.append((x, y, Port.RAMP, KV_COLOR, port_mask(Port.S)))
                out += [(x, y2, Port.N, KV_COLOR, port_mask(Port.S))
                        for y2 in range(y + 1, below)]
    return out


def _streams(lay, command):
    color = lay.qkv.colors.weight
    return [pack_array(data=0, index=int(command), ctrl=1, color=color).reshape(1)
            .astype(np.uint32) for _ in range(lay.qkv.width)]


#: The cycle model's constants, least squares of the relative error on bench/attention.py's
#: ``tune`` cases (``--fit``), checked on its ``check`` cases (docs/attention.md section 4);
#: the terms are those of :func:`cycle_features`.
SCORES_COEF = [-16.133, -3.59, 48.125, -10.659, 2.538, 1.296]
VALUES_COEF = [183.472, -2.094, 47.199, -16.604, 2.766, 0.998]


def issue_counts(source):
    """``(instructions, launches)`` the core executes running a program's ``source``
    once: its loops (counted in r8: ``li r8, N`` ... ``addi r8, r8, -1``, ``bne r8, r0,
    label``) followed to the ``tend``."""
    lines = [ln.split("#")[0].strip() for ln in source.splitlines()]
    lines = [ln for ln in lines if ln]
    labels = {ln[:-1]: i for i, ln in enumerate(lines) if ln.endswith(":")}
    pc, r8, count, launches = 0, 0, 0, 0
    while pc < len(lines):
        ln = lines[pc]
        pc += 1
        if ln.endswith(":"):
            continue
        count += 1
        op = ln.split()[0]
        launches += op.startswith("t.")
        if ln.startswith("li r8,"):
            r8 = int(ln.split(",")[1])
        elif ln == "addi r8, r8, -1":
            r8 -= 1
        elif op == "bne" and r8:
            pc = labels[ln.split(",")[2].strip()]
        elif op == "tend":
            break
    return count, launches


def _row_terms(lay, y, op):
    tl = tile(lay, 0, y)
    # The FP32 groups of the FMAC launches: a received key's run over its qa queries, an
    # own key j's over the queries j .. the end of its sequence in the row.
    groups = tl.recv * -(-tl.qa // 2) + sum(-(-(j1 - j) // 2) for j0, j1 in tl.segments
                                           for j in range(j0, j1))
    make = scores_program if op == "scores" else values_program
    source = make(lay, 0, y)[1]
    cut = source.index("    twait")                  # the end of the transfers
    pre = issue_counts(source[:cut] + "    tend\n")[0]
    post = issue_counts(source)[0] - pre
    fixed = (_kernel_cycles("exp", tl.keys * tl.tp) + _kernel_cycles("reciprocal", tl.t)
             if op == "scores" else 0)
    return {"fixed": fixed, "terms": [1, tl.recv * tl.d, tl.recv, pre, post, groups * tl.d]}


def cycle_features(lay, op):
    """The terms of the cycle model of ``op`` for the row that finishes last (the rows
    run side by side, each through its own program): ``{"fixed": cycles known from other
    models (the kernels' issue models), "terms": [...], "row": y}``.

    The terms: 1; the keys received, in wavelets ``recv d`` and in tokens ``recv`` (each
    a store and a forward operation); the instructions the row's core executes
    (:func:`issue_counts` of its program) up to the end of the transfers and after it
    (the key loops, the softmax); and the FP32 groups of its FMACs, ``d`` times the sum
    over the keys of ``ceil(queries / 2)`` (a key's queries: those of its sequence at or
    after it)."""
    if op not in ("scores", "values"):
        raise ValueError(f"no attention operation {op!r} (there are: scores, values)")
    coef = SCORES_COEF if op == "scores" else VALUES_COEF
    best = None
    for y in range(lay.qkv.height):
        if _empty(lay, 0, y):
            continue
        f = _row_terms(lay, y, op)
        cycles = f["fixed"] + float(np.dot(coef, f["terms"]))
        if best is None or cycles > best[0]:
            best = (cycles, {**f, "row": y})
    return best[1]


def predict_attention_cycles(lay, op):
    """Cycles of ``"scores"`` or ``"values"`` from the command's injection to the end
    (:func:`cycle_features` with the fitted constants)."""
    f = cycle_features(lay, op)
    coef = SCORES_COEF if op == "scores" else VALUES_COEF
    return max(1, int(round(f["fixed"] + float(np.dot(coef, f["terms"])))))


# --- running on the RTL -----------------------------------------------------------------------

def _programs(lay, which):
    make = scores_program if which == "scores" else values_program
    return {(x, y): make(lay, x, y)[0] for y in range(lay.qkv.height)
            for x in range(lay.qkv.width)}


def _tiles(lay):
    return [tile(lay, x, y) for y in range(lay.qkv.height) if not _empty(lay, 0, y)
            for x in range(lay.qkv.width)]


def _pairs(lay, tl):
    """The tile's probabilities as ``(query j, key u, sequence, position, key position)``
    index arrays: every (query, key) pair of the same sequence with the key at or before
    the query."""
    n = lay.n_ctx
    j, u = np.meshgrid(np.arange(tl.t), np.arange(tl.keys), indexing="ij")
    gq, gk = tl.s0 + j, tl.first_key + u
    keep = (gk <= gq) & (gk // n == gq // n)
    return j[keep], u[keep], gq[keep] // n, gq[keep] % n, gk[keep] % n


def _qkv_loads(lay, qkv16):
    """The permuted QKV tiles as raw writes ``{(x, y): [(word address, words)]}``."""
    perm = permute_qkv(np.asarray(qkv16), lay.n_head)
    out = {}
    for y in range(lay.qkv.height):
        for x in range(lay.qkv.width):
            if _empty(lay, x, y):
                out[x, y] = []
                continue
            tile16 = lay.qkv.x_tile(perm, x, y)
            out[x, y] = [(lay.qkv.pe.data_base // 4, tile16.reshape(-1).view("<u4"))]
    return out


def _check_qkv(lay, qkv16):
    q = np.asarray(qkv16)
    want = (lay.qkv.tokens, lay.qkv.features)
    if q.dtype != np.float16 or q.shape != want:
        raise MappingError(f"attention: qkv must be float16 {list(want)}, not {q.dtype} "
                           f"{list(q.shape)}")


def run_scores_rtl(lay, qkv16, **options):
    """``ATTN_SCORES`` on the RTL fabric: ``(probs16 float16 [batch, n_head, n, n],
    counters)``; ``qkv16`` is the c_attn output ``[T, 3C]`` in nanoGPT's order."""
    _check_qkv(lay, qkv16)
    programs = _programs(lay, "scores")
    for xy, writes in _qkv_loads(lay, qkv16).items():
        programs[xy] = programs[xy] + writes
    reads = p_reads(lay)
    predicted = predict_attention_cycles(lay, "scores")
    _, _, counters = run_tile_op(lay.out, [], programs, _streams(lay, BlockCommand.ATTN_SCORES),
                                 predicted, read_y=False, name="attention scores",
                                 extra_routes=kv_routes(lay), extra_reads=reads, **options)
    return decode_probs(lay, counters.pop("extra_reads")), counters


def p_reads(lay):
    """Every PE's probabilities buffer as reads ``{(x, y): (byte address, words)}``."""
    return {(tl.x, tl.y): (tl.p * FP16_BYTES, tl.keys * tl.tp // 2) for tl in _tiles(lay)}


def decode_probs(lay, got):
    """The probabilities float16 ``[batch, n_head, n, n]`` from every PE's ``p`` buffer
    (``{(x, y): uint32 words}``, keys x padded tokens); the masked pairs are +0."""
    b, h, n = lay.batch, lay.n_head, lay.n_ctx
    probs = np.zeros((b, h, n, n), dtype=np.uint16)
    for (x, y), words in got.items():
        tl = tile(lay, x, y)
        p = np.asarray(words).view(np.uint16).reshape(tl.keys, tl.tp)      # [key, query]
        j, u, seq, pos, kpos = _pairs(lay, tl)
        probs[seq, x, pos, kpos] = p[u, j]
    return probs.view(np.float16)


def _p_loads(lay, probs16):
    """The probabilities back into every PE (as the scores left them): raw writes."""
    p = np.asarray(probs16).view(np.uint16)
    out = {}
    for tl in _tiles(lay):
        buf = np.zeros((tl.keys, tl.tp), dtype=np.uint16)
        j, u, seq, pos, kpos = _pairs(lay, tl)
        buf[u, j] = p[seq, tl.x, pos, kpos]
        out[tl.x, tl.y] = [(tl.p * FP16_BYTES // 4, buf.reshape(-1).view("<u4"))]
    return out


def run_values_rtl(lay, probs16, qkv16, **options):
    """``ATTN_VALUES`` on the RTL fabric: ``(att16 float16 [T, C], counters)``."""
    _check_qkv(lay, qkv16)
    programs = _programs(lay, "values")
    for loads in (_qkv_loads(lay, qkv16), _p_loads(lay, probs16)):
        for xy, writes in loads.items():
            programs[xy] = programs[xy] + writes
    predicted = predict_attention_cycles(lay, "values")
    y16, _, counters = run_tile_op(lay.out, [], programs,
                                   _streams(lay, BlockCommand.ATTN_VALUES), predicted,
                                   name="attention values", extra_routes=kv_routes(lay),
                                   **options)
    return y16, counters
