"""One fabric program per block: the whole GPT block in one simulation, the activations
resident in the PEs' SRAM from the first operation to the last (SPEC 8; docs/gpt.md
section 2).

The host loads the block input once (through the configuration path, with the routes and
the first operation's PE program), then for every operation writes that operation's PE
program (code, DSRs, tasks, bindings: the operations share no program) and starts its
streams; the activations never move. It reads the block output once at the end. Between
operations it also *reads* each operation's output without touching it (verification
reads, so that every report row can be checked bit for bit against the golden pipeline);
their cycles are reported apart and are not part of the block's.

Where things lie (design choice): every operation reads its input where the previous one
wrote its output, and writes its output right after its input (the SPEC 7 rule ``Y after
X``), so each operation's mapping is the usual one with the PE's ``data_base`` moved to its
input (:func:`dataclasses.replace` of the :class:`PEConfig`): the programs are the
per-operation programs, unchanged. The block input and the residual stream ``x1`` stay
where they were written (everything later lies above them), and the residual adds read
them there. A GEMM the mapper lays out in column groups (``choose_block_layout``) is
preceded by a ``redistribute`` step that copies its X, on the fabric, into the groups right
above the plain X (gpt_mapping/redistribute.py); the GEMM reads the copy, writes Y (in the
plain layout) after it, and its counters include the copy's cycles. The QKV GEMM's weight
columns and bias are ordered head by head, so the
attention finds q, k and v where it needs them (attention.md section 1). This needs every
column to hold the same number of features of every activation and every row that holds
tokens the same padded count ``T_pad`` (rows of 2 and 3 tokens qualify with 4 lanes;
:func:`plan`'s :class:`MappingError` says which does not hold; the block then runs
operation by operation).
"""

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from gpt_mapping import attention as A
from gpt_mapping.elementwise import elementwise_program, elementwise_streams
from gpt_mapping.fabric_run import (Placement, _check_errors, _check_routes, _clear_counters,
                                    _decode, _readback, fabric_build, gemm_routes, perf_params,
                                    pe_program)
from gpt_mapping.layout import FP16_BYTES, ColorPlan, GemmMapping, MappingError
from gpt_mapping.perf_model import predict
from gpt_mapping import redistribute as R_
from gpt_mapping.redistribute import add_redistribution, choose_block_layout
from gpt_mapping.elementwise import predict_elementwise_cycles
from gpt_mapping.rowops import layernorm_program, predict_row_cycles, row_mapping, row_streams
from gpt_mapping.streams import BlockCommand, nonzero_counts, weight_streams
from rtl.pe import regs as R
from rtl.router import Port, route_addr
from rtl.tile import BROADCAST_X
from runtime.fabric_host import (ConfigProgram, FabricRunError, FabricStallError, Job, diagnose,
                                 run_job)

__all__ = ["Step", "BlockProgram", "plan", "run"]


@dataclass
class Step:
    """One operation of the block program."""
    name: str
    kind: str                      #: gemm, layernorm, bias, residual, gelu, attn_scores, ...
    mapping: object                #: its mapping (AttentionLayout for the attention)
    out: object                    #: the mapping its output is read back with
    base: int                      #: byte address of its input X in every PE
    out_base: int                  #: byte address of its output
    programs: dict = field(default_factory=dict)
    streams: list = field(default_factory=list)
    predicted: int = 0
    w16: np.ndarray = None
    extra_reads: dict = None


@dataclass
class BlockProgram:
    """The planned block: its steps, the routes, where the input and output lie."""
    steps: list
    tables: object
    input_base: int
    output_base: int
    first: object                  #: the mapping of the input's layout (ln_1's)
    perm: np.ndarray               #: the head-by-head order of the QKV features


def _uniform(mapping, what):
    """Every column the same features and every row holding tokens the same ``T_pad``
    (so every tile of an activation has one size, and one base serves them all)."""
    k = {int(v) for v in mapping.features_per_column}
    t = {mapping.t_pad(y) for y in range(mapping.height) if mapping.tokens_per_row[y]}
    if len(k) != 1 or len(t) != 1:
        raise MappingError(f"one fabric program per block needs the same {what} features on "
                           f"every column and the same padded tokens (T_pad) on every row "
                           f"with tokens; the split gives {sorted(k)} features, T_pad "
                           f"{sorted(t)}")


def _at(pe, base):
    return dataclasses.replace(pe, reserved_sram_bytes=int(base))


class _Builder:
    """Steps laid one after the other in every PE's SRAM: each reads at ``base`` and writes
    right after its input, and ``base`` moves to its output."""

    def __init__(self, tokens, fabric, pe, base):
        self.t, (self.width, self.height), self.pe = tokens, fabric, pe
        self.base = int(base)
        self.steps = []

    def _tiles(self):
        for y in range(self.height):
            for x in range(self.width):
                yield x, y

    def _bytes(self, m, features):
        _uniform(m, features)
        return int(m.features_per_column[0]) * int(m.t_pad_per_row.max()) * FP16_BYTES

    def row(self, name, kind, n, operand=None, operand_base=None, eps=None):
        m = row_mapping(self.t, n, self.width, self.height, _at(self.pe, self.base))
        st = Step(name, kind, m, m, self.base, self.base + self._bytes(m, n))
        for x, y in self._tiles():
            st.programs[x, y] = (layernorm_program(m, x, y, eps)[0] if kind == "layernorm"
                                 else elementwise_program(m, x, y, kind,
                                                          operand_at=operand_base)[0])
        if kind == "layernorm":
            st.streams = row_streams(m, BlockCommand.LAYERNORM, *operand)
            st.predicted = predict_row_cycles(m, "layernorm")
        else:
            st.streams = elementwise_streams(m, kind, operand)
            st.predicted = predict_elementwise_cycles(m, kind, operand_base)
        return self._add(st)

    def gemm(self, name, k, n, w16):
        m = choose_block_layout(GemmMapping(tokens=self.t, features=k, outputs=n,
                                            width=self.width, height=self.height,
                                            pe=_at(self.pe, self.base)), w16, perf_params())
        _uniform(row_mapping(self.t, n, self.width, self.height, self.pe), n)
        if m.groups > 1:
            self.redistribute(name, m)
            m = dataclasses.replace(m, pe=_at(self.pe, self.base))
        out_base = self.base + self._bytes(m, k)
        st = Step(name, "gemm", m, m, self.base, out_base, w16=w16)
        place = Placement(self.base, out_base)
        for x, y in self._tiles():
            st.programs[x, y] = pe_program(m, x, y, place)
        st.streams = weight_streams(m, w16)
        st.predicted = int(predict(m, nonzero_counts(m, w16), perf_params()).cycles)
        return self._add(st)

    def redistribute(self, name, m):
        """The step that copies X (at ``base``, plain layout) into ``m``'s column groups,
        right above it (gpt_mapping/redistribute.py); ``base`` moves to the copy."""
        plain = row_mapping(self.t, m.features, self.width, self.height,
                            _at(self.pe, self.base))
        copy_base = self.base + self._bytes(plain, m.features)
        st = Step(name + ".redistribute", "redistribute", m, plain, self.base, copy_base)
        for x, y in self._tiles():
            st.programs[x, y] = R_.redistribute_program(m, x, y, self.base, copy_base)[0]
        st.streams = R_.redistribute_streams(m)
        st.predicted = R_.predict_redistribute_cycles(m, perf_params())
        st.extra_reads = {(x, y): (copy_base, R_.copy_bytes(m, y) // 4)
                          for x, y in self._tiles() if m.tokens_per_row[y]}
        self.steps.append(st)
        self.base = copy_base
        return st

    def attention(self, prefix, cfg):
        lay = A.attention_layout(cfg.n_embd, cfg.n_head, cfg.n_ctx, cfg.batch, self.width,
                                 self.height, _at(self.pe, self.base))
        out_base = max(lay.out.y_base(0, y) for y in range(self.height))
        for name, kind, make in (("attn.softmax", "attn_scores", A.scores_program),
                                 ("attn.av", "attn_values", A.values_program)):
            st = Step(prefix + name, kind, lay, lay.out, self.base, out_base)
            for x, y in self._tiles():
                st.programs[x, y] = make(lay, x, y)[0]
            cmd = (BlockCommand.ATTN_SCORES if kind == "attn_scores"
                   else BlockCommand.ATTN_VALUES)
            st.streams = A._streams(lay, cmd)
            st.predicted = A.predict_attention_cycles(lay, kind[5:])
            if kind == "attn_scores":
                st.extra_reads = A.p_reads(lay)
            self.steps.append(st)
        self.base = out_base
        return lay

    def _add(self, st):
        self.steps.append(st)
        self.base = st.out_base
        return st


def _block_steps(b, mapped, prefix=""):
    """The 15 steps of one block on builder ``b`` (its input at ``b.base``)."""
    from .gpt import GELU_KERNELS
    cfg = mapped.config
    c = cfg.n_embd
    lin = mapped.linears
    ln = mapped.ln16
    input_base = b.base
    perm = A.permute_qkv(np.arange(3 * c).reshape(1, -1), cfg.n_head)[0]
    b.row(prefix + "ln_1", "layernorm", c, ln("ln_1"), eps=cfg.ln_eps)
    b.gemm(prefix + "attn.c_attn", c, 3 * c,
           np.ascontiguousarray(lin["attn.c_attn"].w16[:, perm]))
    b.row(prefix + "attn.c_attn.bias", "bias", 3 * c,
          np.ascontiguousarray(lin["attn.c_attn"].b16[perm]))
    lay = b.attention(prefix, cfg)
    b.gemm(prefix + "attn.c_proj", c, c, lin["attn.c_proj"].w16)
    b.row(prefix + "attn.c_proj.bias", "bias", c, lin["attn.c_proj"].b16)
    b.row(prefix + "residual_1", "residual", c, None, input_base // FP16_BYTES)
    x1_base = b.base
    b.row(prefix + "ln_2", "layernorm", c, ln("ln_2"), eps=cfg.ln_eps)
    b.gemm(prefix + "mlp.c_fc", c, 4 * c, lin["mlp.c_fc"].w16)
    b.row(prefix + "mlp.c_fc.bias", "bias", 4 * c, lin["mlp.c_fc"].b16)
    b.row(prefix + "mlp.gelu", GELU_KERNELS[cfg.gelu], 4 * c)
    b.gemm(prefix + "mlp.c_proj", 4 * c, c, lin["mlp.c_proj"].w16)
    b.row(prefix + "mlp.c_proj.bias", "bias", c, lin["mlp.c_proj"].b16)
    b.row(prefix + "residual_2", "residual", c, None, x1_base // FP16_BYTES)
    return lay, perm


def _program(b, lay, perm, input_base):
    first_gemm = dataclasses.replace(
        next(st for st in b.steps if st.kind == "gemm").mapping, groups=1, interleave=1,
        colors=ColorPlan())
    tables = gemm_routes(first_gemm)
    extra = list(A.kv_routes(lay))
    for st in b.steps:
        if st.kind == "gemm" and st.mapping.groups > 1:
            extra += gemm_routes(st.mapping).entries()
        elif st.kind == "redistribute":
            extra += R_.redistribute_routes(st.mapping)
    for x, y, port, color, mask in extra:
        held = tables.mask(x, y, port, color)
        if held and held != mask:
            raise MappingError(f"tile ({x}, {y}) {Port(port).name} colour {color}: two "
                               f"operations of the block route it differently ({held:#x} "
                               f"and {mask:#x})")
        tables.set(x, y, port, color, mask)
    _check_routes(first_gemm, tables)
    return BlockProgram(b.steps, tables, input_base, b.base, b.steps[0].mapping, perm)


def plan(mapped, fabric, pe, att_layout):
    """The :class:`BlockProgram` of a mapped block, or a :class:`MappingError`."""
    if att_layout is None:
        raise MappingError("one fabric program per block needs the attention on the fabric")
    b = _Builder(mapped.config.tokens, fabric, pe, pe.data_base)
    lay, perm = _block_steps(b, mapped)
    return _program(b, lay, perm, pe.data_base)


def plan_model(blocks, ln_f16, head_w16, fabric, pe, att_layout, eps):
    """The whole model as one program: every block (steps named ``h.<i>.<operation>``),
    ``ln_f`` and ``lm_head``, each block's input where the previous one left its output;
    a :class:`MappingError` when it cannot be (the attention on the host, a vocabulary the
    columns do not split evenly, the SRAM filled by the blocks' activations)."""
    if att_layout is None:
        raise MappingError("one fabric program per model needs the attention on the fabric")
    b = _Builder(blocks[0].config.tokens, fabric, pe, pe.data_base)
    for i, mapped in enumerate(blocks):
        lay, perm = _block_steps(b, mapped, f"h.{i}.")
    c = blocks[0].config.n_embd
    b.row("ln_f", "layernorm", c, ln_f16, eps=eps)
    b.gemm("lm_head", c, head_w16.shape[1], head_w16)
    return _program(b, lay, perm, pe.data_base)


def _write_step(program, st, width, height):
    """The step's PE programs, the accumulators cleared, the counters cleared."""
    pe = (st.mapping.qkv if isinstance(st.mapping, A.AttentionLayout) else st.mapping).pe
    for y in range(height):
        program.pe_write_block(BROADCAST_X, y, R.acc_addr(0),
                               np.zeros(pe.accumulator_words, dtype=np.uint32))
        for x in range(width):
            for addr, words in st.programs[x, y]:
                program.pe_write_block(x, y, addr, words)
        _clear_counters(program, y)


def run(prog, x16, fabric=None, watchdog=5000, progress=None):
    """Run the :class:`BlockProgram` on the block input ``x16`` (float16 [T, C]) in one
    simulation: ``(outputs, counters, figures)``: every step's output read back (float16,
    the attention's probabilities ``[B, H, n, n]``, the QKV features in nanoGPT's order),
    its counters (as the per-operation runs'), and the block's ``load`` / ``readback`` /
    ``programs`` / ``verification`` cycles of the configuration path. ``progress``: a
    tqdm-like bar (``reset(total=)``, ``update(n)``) over the predicted cycles, driven by
    the simulated cycles of every step."""
    first = prog.first
    W, H = first.width, first.height
    fw, fh = fabric or (W, H)
    job = Job(fw, fh)
    setup = ConfigProgram(fw, fh)
    for x, y, port, color, mask in prog.tables.entries():
        setup.router_write(x, y, route_addr(port, color), mask)
    for y in range(H):
        for x in range(W):
            tile = first.x_tile(x16, x, y)
            setup.pe_write_block(x, y, prog.input_base // 4, tile.reshape(-1).view("<u4"))
    index = []
    for i, st in enumerate(prog.steps):
        program = setup if i == 0 else ConfigProgram(fw, fh)
        _write_step(program, st, W, H)
        cfg_step = job.configure(program, name=f"{st.name} setup")
        budget = 4 * st.predicted + 20_000
        run_step = job.run(list(st.streams) + [np.zeros(0, dtype=np.uint32)] * (fw - W),
                           budget=budget, watchdog=max(watchdog, 2 * st.predicted),
                           name=st.name, expect_cycles=st.predicted)
        readback = ConfigProgram(fw, fh)
        out = st.out
        place = {(x, y): Placement(st.base, st.out_base) for y in range(H) for x in range(W)}
        tickets = _readback(readback, out, place)
        extra = {xy: readback.pe_read(xy[0], xy[1], a // 4, n)
                 for xy, (a, n) in (st.extra_reads or {}).items()}
        read_step = job.configure(readback, name=f"{st.name} readback")
        index.append((cfg_step, run_step, read_step, tickets, extra))
    spec = fabric_build(fw, fh)
    budgets = sum(s["budget"] for s in job.steps if s["kind"] == "run")
    names = [st.name for st in prog.steps]
    before = np.concatenate([[0], np.cumsum([st.predicted for st in prog.steps])])
    shown = [0]
    if progress is not None:
        progress.reset(total=int(before[-1]))

    def report(name, cycles, expect):
        if progress is None or name not in names:
            return
        i = names.index(name)
        now = int(before[i] + min(cycles, prog.steps[i].predicted))
        if now > shown[0]:
            progress.update(now - shown[0])
            shown[0] = now

    result = run_job(spec.build, job, cfg_depth=spec.cfg_depth, resp_depth=spec.resp_depth,
                     stream_depth=spec.stream_depth, timeout=300 + budgets / 500,
                     progress=report)
    if progress is not None and shown[0] < before[-1]:
        progress.update(int(before[-1]) - shown[0])
    if result.stopped is not None:
        run_stats = result.runs[result.stopped]
        name = job.steps[result.stopped]["name"]
        why = ("the cycle budget ran out" if run_stats.timed_out else
               "no wavelet moved for the watchdog's cycles")
        message, rep = diagnose(job, result.diagnosis,
                                routes=lambda x, y, p, c: prog.tables.mask(x, y, p, c)
                                if x < W and y < H else 0)
        raise FabricStallError(f"block program stopped in {name}: {why}; {message}", rep)
    outputs, counters, moves = {}, {}, None
    inv = np.argsort(prog.perm)
    span = lambda i: int(result.spans[i][1] - result.spans[i][0])     # noqa: E731
    figures = {"programs": 0, "verification": 0}
    for i, (st, (cfg_step, run_step, read_step, tickets, extra)) in enumerate(
            zip(prog.steps, index)):
        run_stats = result.runs[run_step]
        y16, cnt = _decode(st.out, tickets, result.answers[read_step], run_stats)
        _check_errors(st.out, cnt, run_stats, i)
        cnt["predicted_cycles"] = st.predicted
        cnt["fabric"] = {"width": fw, "height": fh}
        if st.kind == "attn_scores":
            got = {xy: np.asarray(t.take(result.answers[read_step]), dtype=np.uint32)
                   for xy, t in extra.items()}
            y16 = A.decode_probs(st.mapping, got)
        elif st.kind == "redistribute":
            got = {xy: np.asarray(t.take(result.answers[read_step]), dtype=np.uint32)
                   for xy, t in extra.items()}
            y16 = R_.decode_copies(st.mapping, got)
            before_copy = outputs[prog.steps[i - 1].name] if i else x16
            if not np.array_equal(np.asarray(y16).view(np.uint16),
                                  np.asarray(before_copy).view(np.uint16)):
                raise FabricRunError(f"block program, {st.name}: the copy of X in the "
                                     f"column groups differs from the X it copied")
        elif st.name.endswith(("attn.c_attn", "attn.c_attn.bias")):
            y16 = np.ascontiguousarray(np.asarray(y16)[:, inv])
        if st.kind == "redistribute":
            moves = cnt                      # counted in the GEMM's row that follows
        else:
            outputs[st.name] = np.asarray(y16)
            counters[st.name] = (add_redistribution(cnt, moves) if st.kind == "gemm"
                                 and st.mapping.groups > 1 else cnt)
        if i == 0:
            figures["load"] = span(cfg_step)
        else:
            figures["programs"] += span(cfg_step)
        if i == len(prog.steps) - 1:
            figures["readback"] = span(read_step)
        else:
            figures["verification"] += span(read_step)
    figures["compute"] = int(sum(c["cycles"] for c in counters.values()))
    figures["wall_seconds"] = result.total_seconds
    return outputs, counters, figures
