"""Row operations on the RTL fabric: row reductions (sum, max) and LayerNorm (docs/rowops.md).

An activation ``[T, C]`` lies on the fabric as a GEMM's X does (SPEC 7): tokens split over
the rows, features over the columns, PE (x, y) holding ``X[T_y, K_x]`` FP16 feature-major
with ``T_pad`` elements per feature. A row operation reduces over the features, so it works
in two passes, both on the colours of the GEMM (:class:`gpt_mapping.layout.ColorPlan`):

1. **local**: each PE reduces its ``K_x`` features token by token into the accumulator
   cache (one launch per feature, in feature order: ``acc = v[:, 0]``, then
   ``acc = acc OP v[:, k]``);
2. **row chain**: PE 0 sends its partial east on ``reduce``; PE x combines its own partial
   with what arrives (``s = p_x OP s``) and sends it on; the east end keeps the result and
   returns it west on ``result``, tapped by every PE, so every PE of the row holds the FP32
   result (``s32``). The same order as the GEMM's partial sums, one row at a time, all rows
   at once.

A row operation is started by a command in the column's stream from the north edge
(:class:`gpt_mapping.streams.BlockCommand`), so it runs as a task of the PE's control core
(SPEC 4.5): ``ROW_REDUCE`` (sum or max; :func:`run_row_reduce_rtl`) and ``LAYERNORM``
(:func:`run_layernorm_rtl`): mean and variance as two row sums, the reciprocal square root
by the FP16 kernel of golden/nonlinear.py on the PE, then the scale and shift, which arrive
in the same stream after the command: one ``LN_SCALE`` command per feature (a launch-list
task multiplies that feature's column by the command's FP16 argument), then one
``LN_SHIFT`` per feature (a launch-list task adds it and rounds the column to FP16).

The golden model is golden/fabric_ops.py, a separate implementation of the same arithmetic;
every run here is checked against it by the tests (tests/test_rowops_rtl.py).
"""

import functools
from dataclasses import dataclass

import numpy as np

from golden import fp
from golden.fabric_ops import LN_EPS, check_bounds
from gpt_mapping.fabric_run import (Placement, _check_errors, _check_routes,
                                    _clear_counters, _decode, _readback, fabric_build,
                                    gemm_routes, pe_params)
from gpt_mapping.kernels import embed_kernel
from gpt_mapping.layout import FP16_BYTES, GemmMapping, MappingError, check_gemm_operands
from gpt_mapping.streams import ReductionCommand, BlockCommand
from rtl.pe import regs as R
from rtl.pe.asm import assemble
from rtl.pe.isa import LaunchModifier
from rtl.router import route_addr
from rtl.tile import BROADCAST_X
from rtl.wavelet import pack_array
from runtime.fabric_host import ConfigProgram, FabricStallError, Job, diagnose, run_job

__all__ = ["row_mapping", "RowTile", "tile_plan", "row_reduce_program", "layernorm_program",
           "row_streams", "run_row_reduce_rtl", "run_layernorm_rtl", "RowOpResult",
           "predict_row_cycles", "run_tile_op", "DATA_TASK", "CTRL_BASE", "ROW_TASKS"]

#: The binding of the stream colour, the GEMM's: data wavelets start task DATA_TASK (the
#: GEMM's FMAC; refused here), command c starts task CTRL_BASE + c.
DATA_TASK, CTRL_BASE = 0, 2
ROW_TASKS = {"row_reduce": CTRL_BASE + BlockCommand.ROW_REDUCE,
             "layernorm": CTRL_BASE + BlockCommand.LAYERNORM,
             "scale": CTRL_BASE + BlockCommand.LN_SCALE,
             "shift": CTRL_BASE + BlockCommand.LN_SHIFT}
#: Data wavelets (weights), the GEMM's commands and code 0 are refused here: their task is a
#: launch the PE rejects with BAD_OPERAND, so a stream meant for a GEMM cannot silently run.
_BAD_TASKS = (DATA_TASK, CTRL_BASE, CTRL_BASE + int(ReductionCommand.PARTIAL_SUM),
              CTRL_BASE + int(ReductionCommand.FINAL_SUM))
#: Launch entries of the launch-list tasks.
_ENTRY = {"scale": 0, "shift": 1, "bad": 2}
_SPAN = 16                         # FP16 elements per round of the 8 banks (bank-pair offsets)
#: Launches per iteration of a local pass's loop (fewer features: no loop at all).
UNROLL = 8


def _round_up(v, m):
    return (v + m - 1) // m * m


def row_mapping(tokens, features, width, height, pe=None):
    """The layout of a ``[tokens, features]`` activation on a ``width`` x ``height`` fabric:
    the :class:`GemmMapping` of a square GEMM on it (X's split; Y's split is the same, so
    the output of a row operation lies exactly where its input did). Raises
    :class:`MappingError` when a column would hold no feature."""
    kw = {} if pe is None else {"pe": pe}
    m = GemmMapping(tokens=tokens, features=features, outputs=features, width=width,
                    height=height, **kw)
    if features < width:
        raise MappingError(f"a row operation over {features} features on {width} columns "
                           f"leaves column {features} without a feature; use at most "
                           f"{features} columns")
    return m


@dataclass(frozen=True)
class RowTile:
    """Where a row operation keeps things in PE (x, y): bases in FP16 elements."""
    x: int
    y: int
    tokens: int                     #: T_y
    t_pad: int
    features: int                   #: K_x
    position: str                   #: "single", "west", "middle", "east"
    x_base: int                     #: the input (FP16 [K_x, T_pad])
    y_base: int                     #: the output (FP16 [K_x, T_pad])
    s_base: int                     #: the row result (FP32 [T_pad])
    d_base: int                     #: x - mean (FP32 [K_x, T_pad])
    q_base: int                     #: (x - mean)^2, then the normalised values (FP32)
    v_base: int                     #: var + eps (FP16 [T_pad]): the rsqrt kernel's input
    r_base: int                     #: its output (FP16 [T_pad])
    end: int                        #: first element after these (the kernel's buffers)


def _position(width, x):
    if width == 1:
        return "single"
    return "west" if x == 0 else "east" if x == width - 1 else "middle"


def tile_plan(mapping, x, y, *, layernorm=True):
    """The :class:`RowTile` of PE (x, y); raises :class:`MappingError` naming the tile when
    its buffers do not fit the SRAM."""
    t, tp = int(mapping.tokens_per_row[y]), mapping.t_pad(y)
    k = int(mapping.features_per_column[x])
    x_base = mapping.pe.data_base // FP16_BYTES
    y_base = mapping.y_base(x, y) // FP16_BYTES
    at = y_base + k * tp
    bases = {}
    for name, pair, size in (("s", 3, 2 * tp), ("d", 1, 2 * k * tp), ("q", 2, 2 * k * tp),
                             ("v", 0, tp), ("r", 0, tp)):
        if not layernorm and name != "s":
            bases[name] = at
            continue
        at = _round_up(at, _SPAN) + 4 * pair
        bases[name] = at
        at += size
    tile = RowTile(x, y, t, tp, k, _position(mapping.width, x), x_base, y_base, bases["s"],
                   bases["d"], bases["q"], bases["v"], bases["r"], at)
    halves = mapping.pe.sram_bytes // FP16_BYTES
    if at > halves:
        raise MappingError(f"tile ({x}, {y}): the row operation needs {at * FP16_BYTES} bytes "
                           f"of SRAM ({k} features x {tp} tokens: input, output and FP32 "
                           f"temporaries), the PE has {mapping.pe.sram_bytes}; use more "
                           f"columns or rows")
    return tile


# --- the PE program ----------------------------------------------------------------------------

def _mod(**fields):
    """A LaunchModifier word (for ``li``)."""
    return LaunchModifier.const(fields).as_bits()


#: Modifiers the code keeps in registers: r4 advances a, r5 advances b (prio 0).
_ADV_A, _ADV_B = _mod(adv=2), _mod(adv=4)


class _Program:
    """DSRs and assembly of one tile's row-operation program."""

    def __init__(self, pe):
        self.pe = pe
        self.dsrs = {}                       # name -> (id, words)
        self.lines = []

    def dsr(self, name, kind, **fields):
        ident = len(self.dsrs)
        if ident >= self.pe.num_dsrs:
            raise MappingError(f"the row operation needs more than {self.pe.num_dsrs} DSRs")
        self.dsrs[name] = (ident, R.encode_dsr(kind, pe=self.pe, **fields))
        return ident

    def id(self, name):
        return self.dsrs[name][0]

    def emit(self, *lines):
        self.lines.extend(lines)

    def assemble(self, data_base, where):
        """The code (from byte 0, below the data) and the DSRs as configuration writes:
        ``(config, program, source)``; :class:`MappingError` naming ``where`` (the tile and
        the operation) when the code reaches ``data_base``."""
        source = "\n".join(self.lines) + "\n"
        program = assemble(source)
        if program.end > data_base:
            raise MappingError(f"{where} code needs {program.end} bytes, more than the "
                               f"{data_base} reserved below the data")
        out = [(0, list(program.words))]
        out += [(R.dsr_addr(ident, pe=self.pe), words) for ident, words in self.dsrs.values()]
        return out, program, source

    def single_task(self, data_base, where, label, task, color, ctrl_base):
        """The configuration of a program with one code task: its code and DSRs
        (:meth:`assemble`), launch entry 0 a launch the PE refuses (BAD_OPERAND), every task
        id below ``ctrl_base + 3`` pointing at it, ``task`` at ``label``, and the stream
        ``color`` bound (data task 0, commands from ``ctrl_base``): ``(config, source)``.
        A stray command or data wavelet on the stream then raises an error, never runs."""
        pe = self.pe
        out, program, source = self.assemble(data_base, where)
        out.append((R.entry_addr(0, pe=pe), list(R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE,
                                                                pe=pe))))
        tasks = {t: R.encode_task(0, pe=pe) for t in range(ctrl_base + 3)}
        tasks[task] = R.encode_task(pc=program.labels[label], pe=pe)
        for t, word in sorted(tasks.items()):
            out.append((R.task_addr(t, pe=pe), [word]))
        out.append((R.bind_addr(color, pe=pe),
                    [R.encode_bind(data_task=0, ctrl_base=ctrl_base, pe=pe)]))
        return out, source

    def launch(self, op, dst, a, b=None, rm="r0", note=""):
        names = [str(self.id(n)) if n is not None else "-" for n in (dst, a, b)]
        comment = f"    # {note}" if note else f"    # {dst} = {op} {a}{', ' + b if b else ''}"
        self.emit(f"    t.{op} {', '.join(names)}, r0, {rm}{comment}")


def _local_and_chain(prog, tile, col, op, label):
    """Code of the two passes of a row reduction of the per-feature vectors ``col`` (a DSR
    advancing one feature per launch) into ``s32``; ``op``: "fadd" or "fmax"."""
    k = tile.features
    prog.emit(f"# {label}: local pass over {k} feature(s), then the row chain "
              f"({tile.position})")
    prog.launch("fmov", "acc", col, rm="r4", note=f"acc = {col}[0]")
    # The other k - 1 features: straight launches, UNROLL per loop iteration (the core
    # issues one launch a cycle; a loop's addi / bne / taken branch would cost more than
    # the launch when a feature is a few element groups).
    loops, rest = divmod(k - 1, UNROLL)
    step = dict(rm="r5", note=f"acc = acc {op[1:]} {col}[k]")
    if loops > 1:
        prog.emit(f"    li r6, {loops}",
                  f"{label}_loop:")
        for _ in range(UNROLL):
            prog.launch(op, "acc", "acc", col, **step)
        prog.emit("    addi r6, r6, -1",
                  f"    bne r6, r0, {label}_loop")
        rest_launches = rest
    else:
        rest_launches = k - 1
    for _ in range(rest_launches):
        prog.launch(op, "acc", "acc", col, **step)
    if tile.position == "single":
        prog.launch("fmov", "s32", "acc", note="s = acc (one column)")
    elif tile.position == "west":
        prog.launch("fmov", "red_out", "acc", note="send the partial east")
        prog.launch("fmov", "s32", "res_in", note="s = the row's result, from the east")
    elif tile.position == "middle":
        prog.launch(op, "red_out", "acc", "red_in", note="s = p OP s_in, sent east")
        prog.launch("fmov", "s32", "res_in", note="s = the row's result, from the east")
    else:
        prog.launch(op, "s32", "acc", "red_in", note="s = p OP s_in: the row's result")
        prog.launch("fmov", "res_out", "s32", note="... returned west to every PE")


def _common_dsrs(prog, mapping, tile):
    t, tp, k = tile.tokens, tile.t_pad, tile.features
    c = mapping.colors
    vec = ((t, 1),)
    prog.dsr("acc", R.Kind.ACC, dtype=R.DType.FP32, base=0, dims=vec)
    prog.dsr("xcol", R.Kind.MEM, base=tile.x_base, dims=vec, adv_step=tp, adv_count=k)
    prog.dsr("s32", R.Kind.MEM, dtype=R.DType.FP32, base=tile.s_base, dims=vec)
    if tile.position in ("middle", "east"):
        prog.dsr("red_in", R.Kind.FIN, dtype=R.DType.FP32, color=c.reduce, dims=vec)
    if tile.position in ("west", "middle"):
        prog.dsr("red_out", R.Kind.FOUT, dtype=R.DType.FP32, color=c.reduce, dims=vec)
        prog.dsr("res_in", R.Kind.FIN, dtype=R.DType.FP32, color=c.result, dims=vec)
    if tile.position == "east":
        prog.dsr("res_out", R.Kind.FOUT, dtype=R.DType.FP32, color=c.result, dims=vec)


def _assemble_tile(mapping, tile, prog, code_tasks, list_tasks):
    """The tile's configuration ``[(pe_address, [words])]``: code (from byte 0, below the
    data), DSRs, launch entries, task table, the stream colour's binding."""
    pe = prog.pe
    out, program, source = prog.assemble(mapping.pe.data_base,
                                         f"tile ({tile.x}, {tile.y}): the row operation's")
    bad = R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE, pe=pe)
    entries = dict(list_tasks, bad=bad)
    tasks = {}
    for name, words in entries.items():
        out.append((R.entry_addr(_ENTRY[name], pe=pe), list(words)))
    for name, task in ROW_TASKS.items():
        if name in code_tasks:
            tasks[task] = R.encode_task(pc=program.labels[name], pe=pe)
        elif name in list_tasks:
            tasks[task] = R.encode_task(_ENTRY[name], pe=pe)
        else:
            tasks[task] = R.encode_task(_ENTRY["bad"], pe=pe)
    for task in _BAD_TASKS:
        tasks[task] = R.encode_task(_ENTRY["bad"], pe=pe)
    for task, word in sorted(tasks.items()):
        out.append((R.task_addr(task, pe=pe), [word]))
    out.append((R.bind_addr(mapping.colors.weight, pe=pe),
                [R.encode_bind(data_task=DATA_TASK, ctrl_base=CTRL_BASE, pe=pe)]))
    return out, source


def row_reduce_program(mapping, x, y, op="sum"):
    """PE (x, y)'s program of ``ROW_REDUCE``: ``(config, source)``; ``config`` is
    ``[(pe_address, [words])]`` (nothing for a row without tokens)."""
    if op not in ("sum", "max"):
        raise ValueError(f"no row reduction {op!r} (there are: sum, max)")
    if not mapping.tokens_per_row[y]:
        return [], ""
    tile = tile_plan(mapping, x, y, layernorm=False)
    prog = _Program(pe_params(mapping))
    _common_dsrs(prog, mapping, tile)
    prog.emit("row_reduce:",
              f"    li r4, {_ADV_A:#x}    # rm: advance a",
              f"    li r5, {_ADV_B:#x}    # rm: advance b")
    _local_and_chain(prog, tile, "xcol", "fadd" if op == "sum" else "fmax", "red")
    prog.emit("    tend")
    return _assemble_tile(mapping, tile, prog, {"row_reduce"}, {})


def layernorm_program(mapping, x, y, eps=LN_EPS):
    """PE (x, y)'s program of ``LAYERNORM`` (and the scale and shift tasks that follow it):
    ``(config, source)``."""
    if not mapping.tokens_per_row[y]:
        return [], ""
    tile = tile_plan(mapping, x, y)
    pe = pe_params(mapping)
    prog = _Program(pe)
    t, tp, k = tile.tokens, tile.t_pad, tile.features
    _common_dsrs(prog, mapping, tile)
    M, F16, F32 = R.Kind.MEM, R.DType.FP16, R.DType.FP32
    grid = ((tp, 1), (k, tp))                 # [K_x, T_pad] feature-major, padding included
    bcast = ((tp, 1), (k, 0))                 # a per-token vector repeated for every feature
    prog.dsr("x2d", M, dtype=F16, base=tile.x_base, dims=grid)
    prog.dsr("d2d", M, dtype=F32, base=tile.d_base, dims=grid)
    prog.dsr("q2d", M, dtype=F32, base=tile.q_base, dims=grid)
    prog.dsr("qcol", M, dtype=F32, base=tile.q_base, dims=((t, 1),), adv_step=tp,
             adv_count=k)
    prog.dsr("s2d", M, dtype=F32, base=tile.s_base, dims=bcast)
    prog.dsr("r2d", M, dtype=F16, base=tile.r_base, dims=bcast)
    prog.dsr("v16", M, dtype=F16, base=tile.v_base, dims=((t, 1),))
    prog.dsr("r16", M, dtype=F16, base=tile.r_base, dims=((t, 1),))
    inv_c = int(fp.f32_to_bits(np.float32(1.0) / np.float32(mapping.features)))
    prog.dsr("inv_c", R.Kind.SCALAR, dtype=F32, value=inv_c)
    prog.dsr("eps", R.Kind.SCALAR, dtype=F32, value=int(fp.f32_to_bits(np.float32(eps))))
    # The scale and shift tasks (LN_SCALE, LN_SHIFT: one per feature in order): launch
    # lists on the normalised values z (in q), each DSR advancing one feature per launch.
    column = dict(dims=((t, 1),), adv_step=tp, adv_count=k)
    prog.dsr("zs_dst", M, dtype=F32, base=tile.q_base, **column)
    prog.dsr("zs_src", M, dtype=F32, base=tile.q_base, **column)
    prog.dsr("zadv", M, dtype=F32, base=tile.q_base, **column)
    prog.dsr("ycol", M, dtype=F16, base=tile.y_base, dims=((t, 1),), adv_step=tp,
             adv_count=k)
    kern = embed_kernel("rsqrt", t, at=tile.end, first_dsr=len(prog.dsrs),
                        x_dsr=prog.id("v16"), y_dsr=prog.id("r16"), pe=pe)
    if kern.end > mapping.pe.sram_bytes // FP16_BYTES:
        raise MappingError(f"tile ({x}, {y}): LayerNorm needs {kern.end * FP16_BYTES} bytes "
                           f"of SRAM with the rsqrt kernel's buffers, the PE has "
                           f"{mapping.pe.sram_bytes}")
    prog.emit("layernorm:",
              f"    li r4, {_ADV_A:#x}    # rm: advance a",
              f"    li r5, {_ADV_B:#x}    # rm: advance b")
    _local_and_chain(prog, tile, "xcol", "fadd", "sum")
    prog.launch("fmul", "s32", "s32", "inv_c", note="mean = S * (1 / C)")
    prog.launch("fsub", "d2d", "x2d", "s2d", note="d = x - mean (every feature)")
    prog.launch("fmul", "q2d", "d2d", "d2d", note="q = d * d")
    _local_and_chain(prog, tile, "qcol", "fadd", "sumsq")
    prog.launch("fmul", "s32", "s32", "inv_c", note="var = S2 * (1 / C)")
    prog.launch("fadd", "v16", "s32", "eps", note="v = round16(var + eps)")
    prog.emit("# rsqrt kernel (golden/nonlinear.py) on v -> r", *kern.lines)
    prog.launch("fmul", "q2d", "d2d", "r2d", note="z = d * r (every feature)")
    prog.emit("    tend                  # scale and shift follow in the stream")
    config_words = {}
    for addr, word in kern.config:
        config_words.setdefault(addr, word)
    scale = R.encode_entry(R.TensorOp.FMUL, prog.id("zs_dst"), prog.id("zs_src"),
                           R.DSR_WAVELET, adv=("dst", "a"), pe=pe)
    shift = R.encode_entry(R.TensorOp.FADD, prog.id("ycol"), prog.id("zadv"), R.DSR_WAVELET,
                           adv=("dst", "a"), pe=pe)
    out, source = _assemble_tile(mapping, tile, prog, {"layernorm"},
                                 {"scale": scale, "shift": shift})
    out += [(addr, [word]) for addr, word in config_words.items()]
    return out, source


# --- streams -----------------------------------------------------------------------------------

def row_streams(mapping, command, gamma16=None, beta16=None):
    """The stream of every column: the command, and for ``LAYERNORM`` the column's scale
    (``LN_SCALE`` commands) and shift (``LN_SHIFT`` commands), ``data`` = the FP16 value,
    in feature order. ``uint32`` wavelet words, one array per column."""
    color = mapping.colors.weight
    out = []
    for x in range(mapping.width):
        words = [pack_array(data=0, index=int(command), ctrl=1, color=color).reshape(1)]
        if command == BlockCommand.LAYERNORM:
            kr = mapping.feature_range(x)
            g = np.asarray(gamma16).view(np.uint16)[kr.start:kr.stop]
            b = np.asarray(beta16).view(np.uint16)[kr.start:kr.stop]
            words.append(pack_array(data=g, index=int(BlockCommand.LN_SCALE), ctrl=1,
                                    color=color))
            words.append(pack_array(data=b, index=int(BlockCommand.LN_SHIFT), ctrl=1,
                                    color=color))
        out.append(np.concatenate(words).astype(np.uint32))
    return out


#: The tasks' names on a timeline (``--trace``).
TASK_NAMES = {**{task: name.replace("_", " ") for name, task in ROW_TASKS.items()},
              **{CTRL_BASE + int(c): c.name.lower()
                 for c in (BlockCommand.BIAS, BlockCommand.RESIDUAL, BlockCommand.GELU,
                           BlockCommand.ATTN_SCORES, BlockCommand.ATTN_VALUES,
                           BlockCommand.REDISTRIBUTE)}}


# --- the cycle model ---------------------------------------------------------------------------

#: The model's constants. Structural: FMA latency (a feature's launch into the same
#: accumulators waits for the previous one's write-back) and the lanes per issue. Fitted
#: (least squares on the 4 x 4 fabric, T in {4, 16, 32, 64} x C in {16, 64, 128}; checked on
#: other fabrics and sizes, docs/rowops.md section 5): the code task's start and end
#: (REDUCE_FIXED), the chain's cost per token (two wavelets per FP32 value, out and back)
#: and per hop, and LayerNorm's element-wise terms.
FMA_LATENCY = 4
REDUCE_FIXED, CHAIN_PER_TOKEN, CHAIN_PER_HOP, CHAIN_FIXED = 19, 5, 13, -2
LN_FIXED, LN_PER_TILE_GROUP, LN_PER_GROUP, LN_PER_FEATURE = -19.484, 2.815, 5.516, -1.368


def _reduce_cycles(t, k, width, lanes):
    """One row reduction: the local pass (a feature per launch, at least the FMA latency
    apart) and the chain."""
    groups = -(-t // lanes)
    chain = (CHAIN_PER_TOKEN * t + CHAIN_PER_HOP * (width - 1) + CHAIN_FIXED
             if width > 1 else 0)
    return REDUCE_FIXED + k * max(groups, FMA_LATENCY) + chain


@functools.lru_cache(maxsize=256)
def _kernel_cycles(name, n):
    """The embedded kernel: its issue model, or its steps' latency chain if longer (short
    vectors: each step waits for the previous one's write-back)."""
    from gpt_mapping.kernels import KERNEL_OVERHEAD, compile_kernel, predict_cycles
    kp = compile_kernel(name, n)
    return max(predict_cycles(kp), (FMA_LATENCY + 1) * len(kp.steps) + KERNEL_OVERHEAD)


def predict_row_cycles(mapping, op="layernorm"):
    """Cycles of a row operation (``"reduce"`` or ``"layernorm"``) from the first injection
    to the end: the slowest row (most tokens) with the widest column (most features).

    Row reduction: the local pass plus the chain (:func:`_reduce_cycles`). LayerNorm: two
    reductions (x in FP16, 4 lanes; q in FP32, 2 lanes), the rsqrt kernel on T_y elements,
    and the element-wise work: the three whole-tile FP32 launches (d, q, z: per FP32 group
    of the [K_x, T_pad] tile) and the scale and shift tasks (per feature, per FP32 group of
    its T_y tokens).
    Validated against the RTL in tests/test_rowops_rtl.py (within 10 % on the sizes it
    runs)."""
    if op not in ("reduce", "layernorm"):
        raise ValueError(f"no row operation {op!r} (there are: reduce, layernorm)")
    k = int(mapping.features_per_column.max())
    tokens = {int(t): mapping.t_pad(y) for y, t in enumerate(mapping.tokens_per_row) if t}
    worst = 0
    for t, tp in tokens.items():
        cycles = _reduce_cycles(t, k, mapping.width, 4)
        if op == "layernorm":
            cycles += (_reduce_cycles(t, k, mapping.width, 2) + _kernel_cycles("rsqrt", t)
                       + LN_FIXED + LN_PER_TILE_GROUP * k * tp // 2
                       + LN_PER_GROUP * k * max(-(-t // 2), 2) + LN_PER_FEATURE * k)
        worst = max(worst, cycles)
    return int(round(worst))


# --- running on the RTL ------------------------------------------------------------------------

@dataclass
class RowOpResult:
    """A row operation's outputs and counters.

    ``y16``: LayerNorm's output float16 [T, C] (None for a reduction); ``s32``: the row
    result (FP32 bits [T]) as every PE of each row holds it, ``[width, T]`` (row reductions;
    for LayerNorm the variance's sum ``S2``); ``counters``: as the GEMM runs'
    (:func:`gpt_mapping.fabric_run.run_gemm_rtl`), with ``predicted_cycles``."""
    y16: np.ndarray
    s32: np.ndarray
    counters: dict
    sources: dict


def _check_input(mapping, x16, name="X"):
    check_gemm_operands(x16, None)
    if x16.shape != (mapping.tokens, mapping.features):
        raise MappingError(f"{name} has shape {x16.shape}, the layout expects "
                           f"({mapping.tokens}, {mapping.features})")


def run_tile_op(mapping, loads, programs, streams, predicted, *, read_y=True, reads=None,
                fabric=None, budget=None, watchdog=5000, name="row op", trace=None,
                trace_label="", extra_routes=(), extra_reads=None):
    """Run one operation on the activations' layout: configure the routes (the GEMM's),
    load the tensors ``loads`` = ``[(x16 [T, C], byte_base(x, y))]`` into every PE (as
    :meth:`GemmMapping.x_tile` lays X out), write the tiles' ``programs``
    (``{(x, y): [(pe_address, [words])]}``), inject the column ``streams`` and read back:
    the output Y (FP16 [T, C] from :meth:`GemmMapping.y_base`, ``read_y``), ``reads`` =
    ``byte_base(x, y)`` of T_y FP32 words per PE (the row result), and every counter.

    Returns ``(y16 or None, s32 [width, T] or None, counters)``. Errors as the GEMM runs':
    :class:`MappingError` before anything runs, :class:`FabricStallError` naming where it
    stopped, :class:`FabricRunError` for a PE or router error or traffic off the fabric.
    ``trace``: a :class:`gpt_mapping.traces.FabricTrace` the run is added to (its steps
    named ``trace_label: load / run / readback``, as a GEMM's), also for a stopped run.
    ``extra_routes``: ``[(x, y, in_port, color, mask)]`` beside the GEMM's (validated with
    them); ``extra_reads``: ``{(x, y): (byte_address, words)}`` read back too, returned as
    ``counters["extra_reads"]`` (``{(x, y): uint32 array}``).
    """
    W, H = mapping.width, mapping.height
    fw, fh = fabric or (W, H)
    if fw < W or fh < H:
        raise MappingError(f"the {name} needs a {W} x {H} fabric; the build is {fw} x {fh}")
    for i, (x16, _) in enumerate(loads):
        _check_input(mapping, x16, "X" if i == 0 else f"operand {i}")
    tables = gemm_routes(mapping)
    for x, y, port, color, mask in extra_routes:
        tables.set(x, y, port, color, mask)
    _check_routes(mapping, tables)
    place = {(x, y): Placement(mapping.pe.data_base, mapping.y_base(x, y))
             for y in range(H) for x in range(W)}
    setup = ConfigProgram(fw, fh)
    for x, y, port, color, mask in tables.entries():
        setup.router_write(x, y, route_addr(port, color), mask)
    for y in range(H):
        setup.pe_write_block(BROADCAST_X, y, R.acc_addr(0),
                             np.zeros(mapping.pe.accumulator_words, dtype=np.uint32))
        for x in range(W):
            for addr, words in programs[x, y]:
                setup.pe_write_block(x, y, addr, words)
            if mapping.tokens_per_row[y]:
                for x16, base in loads:
                    tile = mapping.x_tile(x16, x, y)
                    setup.pe_write_block(x, y, base(x, y) // 4, tile.reshape(-1).view("<u4"))
        _clear_counters(setup, y)
    budget = budget or 4 * predicted + 20_000
    # The hardware's no-progress detector watches wavelets; an operation that computes
    # locally for long (GELU over a large tile) moves none meanwhile.
    watchdog = max(watchdog, 2 * predicted)
    job = Job(fw, fh)
    steps = [(job.configure(setup, name=f"{name} setup"), "load", "load")]
    steps.append((job.run(list(streams) + [np.zeros(0, dtype=np.uint32)] * (fw - W),
                          budget=budget, watchdog=watchdog, name=name,
                          expect_cycles=predicted), "run", "run"))
    readback = ConfigProgram(fw, fh)
    read_step = job.configure(readback, name=f"{name} readback")
    steps.append((read_step, "readback", "readback"))
    tickets = _readback(readback, mapping, place)
    s_tickets = {}
    x_tickets = {xy: readback.pe_read(xy[0], xy[1], addr // 4, words)
                 for xy, (addr, words) in (extra_reads or {}).items()}
    if reads is not None:
        for y in range(H):
            if not mapping.tokens_per_row[y]:
                continue
            for x in range(W):
                s_tickets[x, y] = readback.pe_read(x, y, reads(x, y) // 4,
                                                   int(mapping.tokens_per_row[y]))
    spec = fabric_build(fw, fh)
    result = run_job(spec.build, job, cfg_depth=spec.cfg_depth, resp_depth=spec.resp_depth,
                     stream_depth=spec.stream_depth, timeout=300 + budget / 500,
                     trace=trace is not None)
    if trace is not None:
        trace.add_job(result, [s for s in steps if s[0] in result.spans], label=trace_label,
                      task_names=TASK_NAMES, width=W, height=H)
    if result.stopped is not None:
        run = result.runs[result.stopped]
        why = ("the cycle budget ran out" if run.timed_out else
               f"no wavelet moved for {watchdog} cycles")
        message, rep = diagnose(job, result.diagnosis,
                                routes=lambda x, y, p, c: tables.mask(x, y, p, c)
                                if x < W and y < H else 0)
        raise FabricStallError(f"{name} stopped: {why}; {message}", rep)
    run = result.runs[sorted(result.runs)[0]]
    answers = result.answers[read_step]
    y16, counters = _decode(mapping, tickets, answers, run)
    _check_errors(mapping, counters, run, 0)
    counters["predicted_cycles"] = predicted
    counters["fabric"] = {"width": fw, "height": fh}
    if extra_reads:
        counters["extra_reads"] = {xy: np.asarray(t.take(answers), dtype=np.uint32)
                                   for xy, t in x_tickets.items()}
    s32 = None
    if reads is not None:
        s32 = np.zeros((W, mapping.tokens), dtype=np.uint32)
        for (x, y), ticket in s_tickets.items():
            tr = mapping.token_range(y)
            s32[x, tr.start:tr.stop] = ticket.take(answers)
    return (y16 if read_y else None), s32, counters


def _x_base(mapping):
    return lambda x, y: mapping.pe.data_base


def _s_reads(mapping, layernorm):
    return lambda x, y: 2 * tile_plan(mapping, x, y, layernorm=layernorm).s_base


def run_row_reduce_rtl(mapping, x16, op="sum", **options):
    """The row reduction ``op`` ("sum" or "max") of the FP16 activation ``x16`` [T, C] on
    the RTL fabric: :class:`RowOpResult` with ``s32`` [width, T] (what each column's PEs
    hold; every column holds the same). Options: ``fabric``, ``budget``, ``watchdog``."""
    _check_input(mapping, x16)
    check_bounds(mapping.feature_bounds, mapping.features)
    programs, sources = {}, {}
    for y in range(mapping.height):
        for x in range(mapping.width):
            programs[x, y], sources[x, y] = row_reduce_program(mapping, x, y, op)
    predicted = predict_row_cycles(mapping, "reduce")
    _, s32, counters = run_tile_op(mapping, [(x16, _x_base(mapping))], programs,
                                   row_streams(mapping, BlockCommand.ROW_REDUCE), predicted,
                                   read_y=False, reads=_s_reads(mapping, False),
                                   name="row reduction", **options)
    return RowOpResult(None, s32, counters, sources)


def run_layernorm_rtl(mapping, x16, gamma16, beta16, eps=LN_EPS, **options):
    """LayerNorm of the FP16 activation ``x16`` [T, C] with FP16 scale and shift [C] on the
    RTL fabric: :class:`RowOpResult` with ``y16`` float16 [T, C] (where ``x16`` lay, split
    the same way) and ``s32`` the sums of squares ``S2`` per column."""
    _check_input(mapping, x16)
    for name, v in (("gamma", gamma16), ("beta", beta16)):
        v = np.asarray(v)
        if v.dtype != np.float16 or v.shape != (mapping.features,):
            raise MappingError(f"LayerNorm {name} must be float16 [{mapping.features}], not "
                               f"{v.dtype} {list(v.shape)}")
    programs, sources = {}, {}
    for y in range(mapping.height):
        for x in range(mapping.width):
            programs[x, y], sources[x, y] = layernorm_program(mapping, x, y, eps)
    predicted = predict_row_cycles(mapping, "layernorm")
    y16, s32, counters = run_tile_op(
        mapping, [(x16, _x_base(mapping))], programs,
        row_streams(mapping, BlockCommand.LAYERNORM, gamma16, beta16), predicted,
        reads=_s_reads(mapping, True), name="LayerNorm", **options)
    return RowOpResult(y16, s32, counters, sources)
