"""Element-wise operations on the RTL fabric: bias add, residual add, GELU (docs/rowops.md).

The activations lie as a GEMM's X (SPEC 7; :func:`gpt_mapping.rowops.row_mapping`): PE (x, y)
holds ``X[T_y, K_x]`` FP16 feature-major, ``T_pad`` elements per feature. An element-wise
operation never leaves the PE: it reads the tile at ``data_base`` and writes its result
where a GEMM's Y goes (:meth:`GemmMapping.y_base`), so the output lies as the input did.
Each is started by a command of :class:`gpt_mapping.streams.BlockCommand` in the column's
stream from the north edge:

* ``BIAS``, one per feature of the column in feature order, ``data`` = the FP16 bias: the
  biases travel in the stream (from MemoryX, as weights do) and each starts a launch-list
  task ``y[:, k] = round16(x[:, k] + b)`` (the DSRs advance one feature per command);
* ``RESIDUAL``: a launch-list task ``y = round16(x + r)`` over the whole tile, ``r`` the
  residual stream's tile (loaded beside X, at ``y_base + K_x T_pad``);
* ``GELU``: a code task running the GELU kernel of golden/nonlinear.py (its ~60 FP32 steps)
  over the tile as one 2-D grid.

The golden model is golden/fabric_ops.py (``bias_add``, ``residual_add``, ``gelu``).
"""

import functools

import numpy as np

from gpt_mapping.fabric_run import pe_params
from gpt_mapping.kernels import embed_kernel, predict_cycles
from gpt_mapping.layout import FP16_BYTES, MappingError
from gpt_mapping.rowops import (_BAD_TASKS, CTRL_BASE, _check_input, _x_base, _Program,
                                run_tile_op)
from gpt_mapping.streams import BlockCommand
from rtl.pe import regs as R
from rtl.pe.asm import assemble
from rtl.wavelet import pack_array

__all__ = ["OPS", "elementwise_program", "elementwise_streams", "operand_base",
           "predict_elementwise_cycles", "run_elementwise_rtl"]

#: The operations and their command.
OPS = {"bias": BlockCommand.BIAS, "residual": BlockCommand.RESIDUAL,
       "gelu": BlockCommand.GELU, "gelu_tanh": BlockCommand.GELU,
       # the backward pass (gpt_mapping/block_backward.py): GELU's derivative, and the
       # product of two tiles (the residual add's form with FMUL)
       "gelu_grad": BlockCommand.GELU, "product": BlockCommand.RESIDUAL}
#: The operations with a second tile (read where :func:`operand_base` puts it).
TWO_TILES = ("residual", "product")
_SPAN = 16


def _pair(element):
    """The bank pair of an FP16 element address (8 banks: 4 pairs of 64 bits)."""
    return (element // 4) % 4


def operand_base(mapping, x, y):
    """Byte address of the residual operand's tile in PE (x, y): after Y, on a bank pair
    that neither X nor Y starts on (the add reads X and R and writes Y every cycle; a
    source on the pair of the write-back 4 issues behind it would stall)."""
    k = int(mapping.features_per_column[x])
    x_el = mapping.pe.data_base // FP16_BYTES
    y_el = mapping.y_base(x, y) // FP16_BYTES
    at = _round_up(y_el + k * mapping.t_pad(y), _SPAN)
    used = {_pair(x_el), _pair(y_el)}
    pair = next(p for p in range(4) if p not in used)
    return (at + 4 * pair) * FP16_BYTES


def _round_up(v, m):
    return (v + m - 1) // m * m


def _grid(mapping, x, y):
    tp, k = mapping.t_pad(y), int(mapping.features_per_column[x])
    return ((tp, 1), (k, tp))


def gelu_chunks(mapping, x, y, op):
    """How the GELU kernel covers PE (x, y)'s tile: ``(kc, starts)``, chunks of ``kc``
    features starting at ``starts`` (the last one may overlap its predecessor), the largest
    ``kc`` whose temporaries fit the SRAM after Y. Raises :class:`MappingError` naming the
    tile when not even one feature's fits."""
    tp, k = mapping.t_pad(y), int(mapping.features_per_column[x])
    at = mapping.y_base(x, y) // FP16_BYTES + k * tp
    halves = mapping.pe.sram_bytes // FP16_BYTES
    for kc in range(k, 0, -1):
        if kc * tp > MAX_CHUNK:
            continue
        emb = embed_kernel(op, kc * tp, at=at, first_dsr=0, x_dsr=0, y_dsr=0,
                           grid=((tp, 1), (kc, tp)))
        if emb.end <= halves:
            n = -(-k // kc)
            starts = [min(i * kc, k - kc) for i in range(n)]
            return kc, starts
    raise MappingError(f"tile ({x}, {y}): {op}'s temporaries for one feature of {tp} tokens "
                       f"do not fit the SRAM after the tile's input and output "
                       f"({mapping.pe.sram_bytes} bytes); use more columns or rows")


#: Elements per GELU chunk at most (a kernel's temporaries on the 2-D grid).
MAX_CHUNK = 4095


def elementwise_program(mapping, x, y, op, operand_at=None):
    """PE (x, y)'s program of ``op``: ``(config, source)`` (nothing for a row without
    tokens); ``config`` is ``[(pe_address, [words])]``. Raises :class:`MappingError`
    naming the tile when its buffers do not fit. ``operand_at``: the residual operand's
    FP16 element address when it already lies somewhere else than :func:`operand_base`
    (gpt_mapping/block_program.py: the residual stream where an earlier operation left
    it)."""
    if op not in OPS:
        raise ValueError(f"no element-wise operation {op!r} (there are: {', '.join(OPS)})")
    if not mapping.tokens_per_row[y]:
        return [], ""
    pe = pe_params(mapping)
    t, tp, k = int(mapping.tokens_per_row[y]), mapping.t_pad(y), \
        int(mapping.features_per_column[x])
    x_base = mapping.pe.data_base // FP16_BYTES
    y_base = mapping.y_base(x, y) // FP16_BYTES
    b_base = operand_base(mapping, x, y) // FP16_BYTES if operand_at is None else operand_at
    prog = _Program(pe)
    M, F16 = R.Kind.MEM, R.DType.FP16
    grid = _grid(mapping, x, y)
    entries, code = {}, None
    end = b_base + (k * tp if op in TWO_TILES else 0)
    if operand_at is not None:
        end = max(end, y_base + k * tp)
    if op == "bias":
        column = dict(dims=((t, 1),), adv_step=tp, adv_count=k)
        prog.dsr("xcol", M, dtype=F16, base=x_base, **column)
        prog.dsr("ycol", M, dtype=F16, base=y_base, **column)
        entries["bias"] = R.encode_entry(R.TensorOp.FADD, prog.id("ycol"), prog.id("xcol"),
                                         R.DSR_WAVELET, adv=("dst", "a"), pe=pe)
    elif op in TWO_TILES:
        prog.dsr("x2d", M, dtype=F16, base=x_base, dims=grid)
        prog.dsr("r2d", M, dtype=F16, base=b_base, dims=grid)
        prog.dsr("y2d", M, dtype=F16, base=y_base, dims=grid)
        entries[op] = R.encode_entry(R.TensorOp.FADD if op == "residual" else R.TensorOp.FMUL,
                                     prog.id("y2d"), prog.id("x2d"), prog.id("r2d"), pe=pe)
    else:
        kc, starts = gelu_chunks(mapping, x, y, op)
        cgrid = ((tp, 1), (kc, tp))
        prog.dsr("x2d", M, dtype=F16, base=x_base, dims=cgrid)
        prog.dsr("y2d", M, dtype=F16, base=y_base, dims=cgrid)
        kern = embed_kernel(op, kc * tp, at=end, first_dsr=len(prog.dsrs),
                            x_dsr=prog.id("x2d"), y_dsr=prog.id("y2d"), pe=pe, grid=cgrid)
        end = kern.end
        xd, yd = prog.id("x2d"), prog.id("y2d")
        prog.emit(f"gelu:    # {op} (golden/nonlinear.py) over the [{k}, {tp}] tile, "
                  f"{len(starts)} chunk(s) of {kc} features")
        # Chunks of kc features, the temporaries reused: the kernel runs on the chunk the
        # x2d / y2d bases (DSR word 1) point at; twait before moving them (a DSR a live
        # operation uses cannot be rewritten). The last chunk may overlap the one before
        # (y = f(x) computed twice is the same y).
        if len(starts) > 2:
            prog.emit(f"    li r10, {x_base + starts[0] * tp}",
                      f"    li r11, {y_base + starts[0] * tp}",
                      f"    li r9, {len(starts) - 1}",
                      "gelu_loop:",
                      f"    dsrw r10, {xd}, 1",
                      f"    dsrw r11, {yd}, 1",
                      *kern.lines,
                      "    twait",
                      f"    addi r10, r10, {kc * tp}",
                      f"    addi r11, r11, {kc * tp}",
                      "    addi r9, r9, -1",
                      "    bne r9, r0, gelu_loop")
            tail = starts[-1:]
        else:
            tail = starts
        for i, start in enumerate(tail):
            if i or len(starts) > 2:
                prog.emit(f"    li r10, {x_base + start * tp}",
                          f"    li r11, {y_base + start * tp}",
                          f"    dsrw r10, {xd}, 1",
                          f"    dsrw r11, {yd}, 1")
            prog.emit(*kern.lines)
            if i < len(tail) - 1:
                prog.emit("    twait")
        prog.emit("    tend")
        code = kern
    if end * FP16_BYTES > mapping.pe.sram_bytes:
        raise MappingError(f"tile ({x}, {y}): {op} needs {end * FP16_BYTES} bytes of SRAM "
                           f"({k} features x {tp} tokens and its temporaries), the PE has "
                           f"{mapping.pe.sram_bytes}; use more columns or rows")
    source = "\n".join(prog.lines) + "\n" if prog.lines else ""
    out = []
    labels = {}
    if source:
        program = assemble(source)
        if program.end > mapping.pe.data_base:
            raise MappingError(f"tile ({x}, {y}): the {op} code needs {program.end} bytes, "
                               f"more than the {mapping.pe.data_base} reserved below the "
                               f"data")
        out.append((0, list(program.words)))
        labels = program.labels
    for ident, words in prog.dsrs.values():
        out.append((R.dsr_addr(ident, pe=pe), words))
    if code is not None:
        seen = set()
        for addr, word in code.config:
            if addr not in seen:
                seen.add(addr)
                out.append((addr, [word]))
    bad = R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE, pe=pe)
    out.append((R.entry_addr(0, pe=pe), list(entries.get(op, bad))))
    out.append((R.entry_addr(1, pe=pe), list(bad)))
    tasks = {CTRL_BASE + int(c): R.encode_task(1, pe=pe) for c in BlockCommand}
    for task in _BAD_TASKS:
        tasks[task] = R.encode_task(1, pe=pe)
    task = CTRL_BASE + int(OPS[op])
    tasks[task] = (R.encode_task(pc=labels["gelu"], pe=pe) if code is not None
                   else R.encode_task(0, pe=pe))
    for t_id, word in sorted(tasks.items()):
        out.append((R.task_addr(t_id, pe=pe), [word]))
    out.append((R.bind_addr(mapping.colors.weight, pe=pe),
                [R.encode_bind(data_task=0, ctrl_base=CTRL_BASE, pe=pe)]))
    return out, source


def elementwise_streams(mapping, op, bias16=None):
    """Every column's stream: ``BIAS`` commands (one per feature, ``data`` = its FP16
    bias) or the single ``RESIDUAL`` / ``GELU`` command."""
    color = mapping.colors.weight
    out = []
    for x in range(mapping.width):
        if op == "bias":
            kr = mapping.feature_range(x)
            words = pack_array(data=np.asarray(bias16).view(np.uint16)[kr.start:kr.stop],
                               index=int(BlockCommand.BIAS), ctrl=1, color=color)
        else:
            words = pack_array(data=0, index=int(OPS[op]), ctrl=1, color=color).reshape(1)
        out.append(np.asarray(words, dtype=np.uint32))
    return out


#: The model's constants: the command's trip and the task's start and end (fitted on the
#: 4 x 4 fabric, checked elsewhere: docs/rowops.md section 5), the launch-list task's
#: minimum cycles per feature (a BIAS command per feature).
EW_FIXED = {"bias": 10, "residual": 10, "gelu": 10, "gelu_tanh": 10, "gelu_grad": 10,
            "product": 10}
BIAS_PER_FEATURE = 2
RESIDUAL_SAME_PAIR = 1.5
#: Cycles per issue when the operand starts on that pair too (measured: 2 x 2, T 8, C 16:
#: 16 for 8 issues; 4 x 4, T 32, C 64: 64 for 32 issues).
RESIDUAL_ALL_SAME_PAIR = 2
#: Cycles a GELU chunk costs beyond the kernel's issues (twait drain, dsrw, loop).
GELU_CHUNK = 0


class _Kp:
    """What :func:`gpt_mapping.kernels.predict_cycles` reads of a kernel program."""

    def __init__(self, emb, n):
        self.steps, self.bases, self.types, self.n = emb.steps, emb.bases, emb.types, n


def predict_elementwise_cycles(mapping, op, operand_at=None):
    """Cycles of ``op`` from the first injection to the end: the slowest PE's work.
    ``bias``: one launch-list task per feature (its T_y tokens at 4 FP16 lanes, at least
    :data:`BIAS_PER_FEATURE` cycles: the command's activation); ``residual``: one launch
    over the [K_x, T_pad] tile (4 lanes); ``gelu``: the kernel's issue model
    (:func:`gpt_mapping.kernels.predict_cycles`) on the tile. ``operand_at``: as
    :func:`elementwise_program`'s (the residual operand's bank pair counts)."""
    if op not in OPS:
        raise ValueError(f"no element-wise operation {op!r} (there are: {', '.join(OPS)})")
    # Every tile of a row holds the same tokens and every tile of a column the same
    # features: the distinct (tokens, features) pairs, each at the last row holding them
    # (the command reaches row y after y hops).
    last_row = {}
    for y in range(mapping.height):
        t = int(mapping.tokens_per_row[y])
        if t:
            last_row[t] = y
    columns = {int(k): x for x, k in enumerate(mapping.features_per_column)}
    worst = 0
    for t, y in last_row.items():
        for k, x in columns.items():
            worst = max(worst, EW_FIXED[op] + _work(mapping, op, x, y, t, k, operand_at) + y)
    return int(worst)


@functools.lru_cache(maxsize=256)
def _kernel_work(op, n, grid):
    emb = embed_kernel(op, n, at=0, first_dsr=0, grid=grid)
    return predict_cycles(_Kp(emb, n))


def _work(mapping, op, x, y, t, k, operand_at=None):
    tp = mapping.t_pad(y)
    if op == "bias":
        return k * max(-(-t // 4), BIAS_PER_FEATURE)
    if op in TWO_TILES:
        # One issue per 4 elements; when Y's write-back meets X's reads (both tiles start
        # on one bank pair: K_x T_pad / 4 a multiple of 4), every issue after the first
        # write-back (4 issues in) costs RESIDUAL_SAME_PAIR (measured on 4 x 4, T 32, C 256).
        # When the operand R starts on that pair too (the block program's residual stream,
        # gpt_mapping/block_program.py), every issue costs RESIDUAL_ALL_SAME_PAIR (two reads
        # and a write-back on one pair).
        x_el = mapping.pe.data_base // FP16_BYTES
        y_pair = _pair(mapping.y_base(x, y) // FP16_BYTES)
        r_el = operand_base(mapping, x, y) // FP16_BYTES if operand_at is None else operand_at
        same = _pair(x_el) == y_pair
        issues = k * tp // 4
        if not same:
            return issues
        if _pair(r_el) == y_pair:
            return int(RESIDUAL_ALL_SAME_PAIR * issues)
        return int(issues + (RESIDUAL_SAME_PAIR - 1) * max(0, issues - 4))
    kc, starts = gelu_chunks(mapping, x, y, op)
    return len(starts) * (_kernel_work(op, kc * tp, ((tp, 1), (kc, tp))) + GELU_CHUNK)


def run_elementwise_rtl(mapping, op, x16, operand16=None, **options):
    """``op`` of the FP16 activation ``x16`` [T, C] on the RTL fabric: ``(y16, counters)``.

    ``operand16``: the bias (float16 [C]) for ``bias``, the residual stream (float16
    [T, C]) for ``residual``; nothing for the GELUs. Options as
    :func:`gpt_mapping.rowops.run_tile_op` (``fabric``, ``budget``, ``watchdog``)."""
    if op not in OPS:
        raise ValueError(f"no element-wise operation {op!r} (there are: {', '.join(OPS)})")
    _check_input(mapping, x16)
    loads = [(x16, _x_base(mapping))]
    if op == "bias":
        b = np.asarray(operand16) if operand16 is not None else None
        if b is None or b.dtype != np.float16 or b.shape != (mapping.features,):
            raise MappingError(f"the bias must be float16 [{mapping.features}], not "
                               f"{None if b is None else (b.dtype, list(b.shape))}")
    elif op in TWO_TILES:
        if operand16 is None:
            raise MappingError(f"the {op} needs its second operand")
        loads.append((operand16, lambda x, y: operand_base(mapping, x, y)))
    elif operand16 is not None:
        raise MappingError(f"{op} takes no operand")
    programs = {(x, y): elementwise_program(mapping, x, y, op)[0]
                for y in range(mapping.height) for x in range(mapping.width)}
    predicted = predict_elementwise_cycles(mapping, op)
    y16, _, counters = run_tile_op(mapping, loads, programs,
                                   elementwise_streams(mapping, op, operand16), predicted,
                                   name=op, **options)
    return y16, counters
