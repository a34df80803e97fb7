"""The backward pass's northward reduction on the fabric (SPEC section 11; docs/training.md
section 4): gradients out of the north edge to MemoryX.

``dW = X^T dY`` reduces over the tokens, which lie along y; so does every bias gradient.
Each PE of column x holds its row's FP32 partial (a vector of L values, in SRAM); the
column sums them northward in the order of :func:`golden.training.reduce_north`: the last
row sends its partial north, every row above adds its own to what arrives from the south
(``s = round32(P_y + s)``) and sends the sum on, and row 0 sends it off the fabric, where
the north edge's capture (MemoryX's gradient port, :mod:`rtl.fabric`) takes it, two
wavelets per FP32 value, low half first.

The PE program is one code task, started by a ``REDUCE_NORTH`` command in the column's
stream: ``t.fmov up, p`` on the last row, ``t.fadd up, p, from_south`` above it, ``tend``.
Routes on :data:`GRAD_COLOR`: RAMP -> N on every row, S -> RAMP on every row but the last.
"""

import numpy as np

from gpt_mapping.layout import MappingError
from gpt_mapping.streams import BlockCommand
from rtl.pe import regs as R
from rtl.router import Port, port_mask, route_addr
from rtl.wavelet import pack_array, unpack_array

__all__ = ["GRAD_COLOR", "TASK", "reduce_north_routes", "reduce_north_program",
           "reduce_north_streams", "decode_north", "run_reduce_north_rtl",
           "weight_gradient_program", "run_weight_gradient_rtl", "run_bias_gradient_rtl",
           "linear_backward_rtl"]

#: The gradients' colour towards the north edge (kept out of the redistribution's colours,
#: gpt_mapping/redistribute.py).
GRAD_COLOR = 23
#: The command colour and binding are the GEMM's (data task 0, command c starts task 2 + c).
_WEIGHT_COLOR, _CTRL_BASE = 0, 2
TASK = _CTRL_BASE + int(BlockCommand.REDUCE_NORTH)


def reduce_north_routes(width, height):
    """``[(x, y, in_port, colour, mask)]``: the command down every column (the GEMM's
    weight route) and the partial sums up it."""
    out = []
    for y in range(height):
        for x in range(width):
            south = (Port.S,) if y < height - 1 else ()
            out.append((x, y, Port.N, _WEIGHT_COLOR, port_mask(Port.RAMP, *south)))
            out.append((x, y, Port.RAMP, GRAD_COLOR, port_mask(Port.N)))
            if y < height - 1:
                out.append((x, y, Port.S, GRAD_COLOR, port_mask(Port.RAMP)))
    return out


def reduce_north_program(x, y, height, length, base, pe=None):
    """PE (x, y)'s program: ``(config, source)``; its partial is ``length`` FP32 values at
    byte ``base`` (word aligned)."""
    from gpt_mapping.rowops import _Program
    pe = pe or R.PEParams()
    if not 1 <= length < (1 << R.LEN_BITS):
        raise MappingError(f"tile ({x}, {y}): {length} values to reduce; one tensor "
                           f"dimension holds 1..{(1 << R.LEN_BITS) - 1}")
    if base % 4:
        raise MappingError(f"tile ({x}, {y}): the partial's base {base} is not word aligned")
    prog = _Program(pe)
    vec = ((length, 1),)
    F32 = R.DType.FP32
    prog.dsr("p", R.Kind.MEM, dtype=F32, base=base // 2, dims=vec)
    prog.dsr("up", R.Kind.FOUT, dtype=F32, color=GRAD_COLOR, dims=vec)
    if y < height - 1:
        prog.dsr("south", R.Kind.FIN, dtype=F32, color=GRAD_COLOR, dims=vec)
    prog.emit("reduce_north:")
    _send_north(prog, y, height, "p")
    return prog.single_task(base, f"tile ({x}, {y}): the north reduction's", "reduce_north",
                            TASK, _WEIGHT_COLOR, _CTRL_BASE)


def _send_north(prog, y, height, partial):
    """The north reduction's launch over DSR ``partial`` (and ``up``, ``south``), then
    ``tend``: the last row sends its partial, every row above adds what comes from the
    south (``s = P_y + s``)."""
    if y == height - 1:
        prog.launch("fmov", "up", partial, note="the last row's partial, north")
    else:
        prog.launch("fadd", "up", partial, "south", note="s = P_y + s from the south, north")
    prog.emit("    tend")


def reduce_north_streams(width):
    """Every column's stream: the one ``REDUCE_NORTH`` command."""
    return [pack_array(data=0, index=int(BlockCommand.REDUCE_NORTH), ctrl=1,
                       color=_WEIGHT_COLOR).reshape(1).astype(np.uint32)
            for _ in range(width)]


def decode_north(words, length, column=0):
    """The FP32 values (float32 [length]) of a column's north-edge wavelets: two per value,
    low half first, all on :data:`GRAD_COLOR`; ``ValueError`` naming the column and what
    arrived otherwise."""
    words = np.asarray(words, dtype=np.uint32)
    if len(words) != 2 * length:
        raise ValueError(f"column {column}: {len(words)} wavelets off the north edge, "
                         f"expected {2 * length} ({length} FP32 values)")
    f = unpack_array(words)
    bad = np.flatnonzero((f.color != GRAD_COLOR) | (f.ctrl != 0))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"column {column}: north-edge wavelet {i} has colour "
                         f"{int(f.color[i])}, ctrl {int(f.ctrl[i])} (expected colour "
                         f"{GRAD_COLOR}, data)")
    halves = f.data.astype(np.uint32).reshape(length, 2)
    return (halves[:, 0] | (halves[:, 1] << 16)).astype(np.uint32).view(np.float32)


def _setup(width, height, routes):
    """A configuration program with ``routes`` (``[(x, y, in_port, colour, mask)]``,
    through the golden routing tables) written into the routers."""
    from golden.routing import RouteTables
    from runtime.fabric_host import ConfigProgram
    tables = RouteTables(width, height)
    for x, y, port, color, mask in routes:
        tables.set(x, y, port, color, mask)
    setup = ConfigProgram(width, height)
    for x, y, port, color, mask in tables.entries():
        setup.router_write(x, y, route_addr(port, color), mask)
    return setup


def _play(spec, job, runs, what, timeout=300):
    """Play ``job`` on the build ``spec``; the :class:`RunStats` of the run steps ``runs``.
    Raises ``FabricStallError`` naming the step that stopped and ``FabricRunError`` for
    traffic off the east, south or west edge."""
    from runtime.fabric_host import FabricRunError, FabricStallError, run_job
    result = run_job(spec.build, job, cfg_depth=spec.cfg_depth, resp_depth=spec.resp_depth,
                     stream_depth=spec.stream_depth, timeout=timeout)
    if result.stopped is not None:
        raise FabricStallError(f"{what} stopped in {job.steps[result.stopped]['name']}: no "
                               f"wavelet moved for the watchdog's cycles", None)
    stats = [result.runs[i] for i in runs]
    for st in stats:
        if st.edge_count:
            raise FabricRunError(f"{st.name}: {st.edge_count} cycle(s) of wavelets left the "
                                 f"fabric east, south or west")
    return stats


def _north_run(job, width, expect, watchdog, name):
    """The ``REDUCE_NORTH`` run step, with the budget and watchdog of ``expect`` cycles."""
    return job.run(reduce_north_streams(width), budget=4 * expect + 20_000,
                   watchdog=max(watchdog, 2 * expect), name=name, expect_cycles=expect)


def run_reduce_north_rtl(partials, *, base=4096, watchdog=5000):
    """Reduce ``partials`` (float32 [H, W, L]: PE (x, y)'s vector) northward on the RTL
    fabric: ``(sums, counters)``, ``sums`` float32 [W, L] as MemoryX receives them and
    ``counters`` the run's cycles and north-edge wavelet counts."""
    from gpt_mapping.fabric_run import fabric_build
    from rtl.tile import BROADCAST_X
    from runtime.fabric_host import Job
    p = np.ascontiguousarray(partials, dtype=np.float32)
    if p.ndim != 3 or 0 in p.shape:
        raise ValueError(f"partials must be float32 [H, W, L], not {list(p.shape)}")
    height, width, length = p.shape
    spec = fabric_build(width, height)
    setup = _setup(width, height, reduce_north_routes(width, height))
    for y in range(height):
        for x in range(width):
            for addr, words in reduce_north_program(x, y, height, length, base)[0]:
                setup.pe_write_block(x, y, addr, words)
            setup.pe_write_block(x, y, base // 4, p[y, x].view("<u4"))
        setup.pe_write(BROADCAST_X, y, R.reg_addr(R.Reg.COUNTER_CTRL), 1)
    job = Job(width, height)
    job.configure(setup, name="north reduction setup")
    run = _north_run(job, width, 2 * length + 4 * height + 50, watchdog, "north reduction")
    stats, = _play(spec, job, [run], "north reduction")
    sums = np.stack([decode_north(stats.north_words(x, spec.stream_depth), length, x)
                     for x in range(width)])
    return sums, {"cycles": int(stats.cycles), "north_count": list(stats.north_count)}


def weight_gradient_program(x, y, height, t_y, t_pad, k_x, n, x_base, dy_base, p_base,
                            pe=None, ones=False):
    """PE (x, y)'s program of ``dW = X^T dY`` (``REDUCE_NORTH``, the same command): its rows'
    partial ``P[k, :] = sum_t X[t, k] dY[t, :]`` over its ``t_y`` tokens ascending, one FMAC
    per (k, t) with ``X[t, k]`` as the scalar (loaded by the core from the X tile at byte
    ``x_base``, FP16 ``[k_x, t_pad]``) and ``dY[t, :]`` from the row's copy of all ``n``
    outputs at byte ``dy_base`` (FP16 ``[t_pad, n]``, token-major), into FP32
    ``[k_x, n]`` at byte ``p_base`` from +0; then the northward reduction of
    :func:`reduce_north_program` over the whole partial. ``(config, source)``. With
    ``ones`` the scalar is 1.0 for every token and ``k_x`` is 1 (the bias gradient: X = 1,
    ``x_base`` unused)."""
    from gpt_mapping.rowops import _Program, _mod
    pe = pe or R.PEParams()
    length = k_x * n
    if not 1 <= length < (1 << R.LEN_BITS):
        raise MappingError(f"tile ({x}, {y}): a partial of {k_x} x {n} = {length} FP32 values;"
                           f" one tensor dimension holds 1..{(1 << R.LEN_BITS) - 1}")
    if not 1 <= t_y <= t_pad:
        raise MappingError(f"tile ({x}, {y}): {t_y} tokens (every row needs one)")
    for name, b in (("X", x_base), ("dY", dy_base), ("partial", p_base)):
        if b % 4:
            raise MappingError(f"tile ({x}, {y}): the {name} base {b} is not word aligned")
    F16, F32 = R.DType.FP16, R.DType.FP32
    prog = _Program(pe)
    column = dict(adv_step=n, adv_count=k_x)
    prog.dsr("p", R.Kind.MEM, dtype=F32, base=p_base // 2, dims=((n, 1),), **column)
    prog.dsr("pa", R.Kind.MEM, dtype=F32, base=p_base // 2, dims=((n, 1),), **column)
    # dY token-major [t_pad, n] (the copy's layout): token t's row contiguous
    prog.dsr("dy", R.Kind.MEM, dtype=F16, base=dy_base // 2, dims=((n, 1),),
             adv_step=n, adv_count=t_y)
    prog.dsr("pall", R.Kind.MEM, dtype=F32, base=p_base // 2, dims=((length, 1),))
    prog.dsr("up", R.Kind.FOUT, dtype=F32, color=GRAD_COLOR, dims=((length, 1),))
    if y < height - 1:
        prog.dsr("south", R.Kind.FIN, dtype=F32, color=GRAD_COLOR, dims=((length, 1),))
    prog.emit("reduce_north:",
              f"    li r5, {_mod(adv=4):#x}    # rm: advance dY to the next token",
              f"    li r6, {_mod(adv=7):#x}    # rm: ... and P to the next feature",
              f"    li r9, {x_base}            # X[0, k]: feature k's tokens",
              f"    li r7, {k_x}",
              "feature:")
    if ones and k_x != 1:
        raise MappingError(f"tile ({x}, {y}): the bias gradient has one row, not {k_x}")
    if ones:
        prog.emit("    li r8, 0x3c00              # X = 1.0 (FP16) for every token")
    for t in range(t_y):
        rm = "r6" if t == t_y - 1 else "r5"
        if ones:
            pass
        elif t % 2 == 0:
            prog.emit(f"    lw r8, {2 * t}(r9)        # X[{t}, k] (and X[{t + 1}, k] above)")
        else:
            prog.emit("    srli r8, r8, 16")
        prog.launch("fmac", "p", "pa", "dy", rm=rm, note=f"P[k, :] += X[{t}, k] dY[{t}, :]")
        prog.lines[-1] = prog.lines[-1].replace(", r0, ", ", r8, ", 1)
    prog.emit(f"    addi r9, r9, {2 * t_pad}",
              "    addi r7, r7, -1",
              "    bne r7, r0, feature")
    _send_north(prog, y, height, "pall")
    return prog.single_task(min(x_base, dy_base, p_base),
                            f"tile ({x}, {y}): the weight gradient's", "reduce_north", TASK,
                            _WEIGHT_COLOR, _CTRL_BASE)


def _align(v, m=16):
    return (v + m - 1) // m * m


def run_weight_gradient_rtl(x16, dy16, width, height, *, watchdog=5000):
    """``dW = X^T dY`` on the RTL fabric, delivered at the north edge: ``(dw, counters)``,
    ``dw`` float32 [K, N] as MemoryX receives it (bit for bit
    :func:`golden.training.weight_gradient`), ``counters`` the cycles of the two runs and
    the north-edge wavelets per column.

    X lies as a GEMM's (tokens over the rows, K split over the columns); dY as a GEMM's Y
    (N split over the columns). Run 1 copies dY to every column (the redistribution into
    one-column groups, gpt_mapping/redistribute.py); run 2 computes each row's partial and
    reduces it northward (:func:`weight_gradient_program`)."""
    from gpt_mapping import redistribute as RD
    from gpt_mapping.fabric_run import fabric_build
    from gpt_mapping.layout import GemmMapping, check_gemm_operands
    from runtime.fabric_host import ConfigProgram, FabricRunError, Job
    check_gemm_operands(x16, None)
    check_gemm_operands(dy16, None)
    t, k = x16.shape
    n = dy16.shape[1]
    if dy16.shape[0] != t:
        raise MappingError(f"X has {t} tokens, dY {dy16.shape[0]}")
    if t < height:
        raise MappingError(f"{t} tokens on {height} rows: row {t} would have none (the "
                           f"north reduction passes through every row)")
    m = GemmMapping(tokens=t, features=k, outputs=n, width=width, height=height)
    copy = GemmMapping(tokens=t, features=n, outputs=n, width=width, height=height,
                       groups=width)
    why = RD.redistributable(copy) if width > 1 else None
    if why:
        raise MappingError(f"dY cannot be copied to every column: {why}")
    sram = m.pe.sram_bytes
    place = {}
    for y in range(height):
        tp = m.t_pad(y)
        for x in range(width):
            kx = int(m.features_per_column[x])
            xb = m.pe.data_base
            dyb = _align(xb + kx * tp * 2)
            cb = dyb + (n // width) * tp * 2
            pb = _align(cb + n * tp * 2)
            if pb + 4 * kx * n > sram:
                raise MappingError(f"tile ({x}, {y}): X, dY, its copy and the FP32 partial "
                                   f"need {pb + 4 * kx * n} bytes, the PE has {sram}")
            place[x, y] = (xb, dyb, cb, pb)
    spec = fabric_build(width, height)
    setup = _setup(width, height, reduce_north_routes(width, height)
                   + (RD.redistribute_routes(copy) if width > 1 else []))
    plain_dy = GemmMapping(tokens=t, features=n, outputs=n, width=width, height=height)
    for (x, y), (xb, dyb, cb, pb) in place.items():
        setup.pe_write_block(x, y, xb // 4, m.x_tile(x16, x, y).reshape(-1).view("<u4"))
        if width > 1:
            setup.pe_write_block(x, y, dyb // 4,
                                 plain_dy.x_tile(dy16, x, y).reshape(-1).view("<u4"))
            for addr, words in RD.redistribute_program(copy, x, y, dyb, cb,
                                                       token_major=True)[0]:
                setup.pe_write_block(x, y, addr, words)
        else:                                      # one column: dY is already all there
            setup.pe_write_block(x, y, cb // 4, np.ascontiguousarray(
                plain_dy.x_tile(dy16, x, y).T).reshape(-1).view("<u4"))
    job = Job(width, height)
    job.configure(setup, name="weight gradient setup")
    runs = []
    if width > 1:
        expect = RD.predict_redistribute_cycles(copy)
        runs.append(job.run(RD.redistribute_streams(copy), budget=4 * expect + 20_000,
                            watchdog=watchdog, name="dY to every column",
                            expect_cycles=expect))
    second = ConfigProgram(width, height)
    for (x, y), (xb, dyb, cb, pb) in place.items():
        prog = weight_gradient_program(x, y, height, int(m.tokens_per_row[y]), m.t_pad(y),
                                       int(m.features_per_column[x]), n, xb, cb, pb)[0]
        for addr, words in prog:
            second.pe_write_block(x, y, addr, words)
    job.configure(second, name="weight gradient programs")
    expect = int(m.tokens_per_row.max()) * int(m.features_per_column.max()) * n \
        + 2 * int(m.features_per_column.max()) * n + 100
    runs.append(_north_run(job, width, expect, watchdog, "dW partials and north"))
    stats = _play(spec, job, runs, "weight gradient", timeout=600)
    first, last = stats[0], stats[-1]
    if len(runs) > 1 and any(first.north_count):
        raise FabricRunError("the copy of dY sent wavelets off the north edge")
    dw = np.zeros((k, n), dtype=np.float32)
    for x in range(width):
        kr = m.feature_range(x)
        vals = decode_north(last.north_words(x, spec.stream_depth), len(kr) * n, x)
        dw[kr.start:kr.stop] = vals.reshape(len(kr), n)
    return dw, {"cycles": int(last.cycles), "copy_cycles": int(first.cycles) if len(runs) > 1
                else 0, "north_count": list(last.north_count)}


def run_bias_gradient_rtl(dy16, width, height, *, watchdog=5000):
    """``db = sum_t dY[t]`` on the RTL fabric, delivered at the north edge: ``(db,
    counters)``, ``db`` float32 [N] (bit for bit :func:`golden.training.bias_gradient`).
    dY lies as a GEMM's Y: each PE sums its own outputs over its row's tokens (FMACs with
    1.0 as the scalar, the order of dW with X = 1) and the columns reduce northward; no copy
    is needed."""
    from gpt_mapping.fabric_run import fabric_build
    from gpt_mapping.layout import GemmMapping, check_gemm_operands
    from runtime.fabric_host import Job
    check_gemm_operands(dy16, None)
    t, n = dy16.shape
    if t < height:
        raise MappingError(f"{t} tokens on {height} rows: row {t} would have none (the "
                           f"north reduction passes through every row)")
    if n < width:
        raise MappingError(f"{n} outputs on {width} columns: column {n} would own none")
    m = GemmMapping(tokens=t, features=n, outputs=n, width=width, height=height)
    spec = fabric_build(width, height)
    setup = _setup(width, height, reduce_north_routes(width, height))
    for y in range(height):
        for x in range(width):
            nx, tp = int(m.features_per_column[x]), m.t_pad(y)
            dyb = m.pe.data_base
            pb = _align(dyb + nx * tp * 2)
            # token-major [T_pad, N_x]: the FMACs read one token's row
            setup.pe_write_block(x, y, dyb // 4, np.ascontiguousarray(
                m.x_tile(dy16, x, y).T).reshape(-1).view("<u4"))
            for addr, words in weight_gradient_program(
                    x, y, height, int(m.tokens_per_row[y]), tp, 1, nx, dyb, dyb, pb,
                    ones=True)[0]:
                setup.pe_write_block(x, y, addr, words)
    job = Job(width, height)
    job.configure(setup, name="bias gradient setup")
    expect = int(m.tokens_per_row.max()) * int(m.features_per_column.max()) \
        + 2 * int(m.features_per_column.max()) + 100
    run = _north_run(job, width, expect, watchdog, "db partials and north")
    st, = _play(spec, job, [run], "bias gradient")
    db = np.zeros(n, dtype=np.float32)
    for x in range(width):
        nr = m.feature_range(x)
        db[nr.start:nr.stop] = decode_north(st.north_words(x, spec.stream_depth), len(nr), x)
    return db, {"cycles": int(st.cycles), "north_count": list(st.north_count)}


def linear_backward_rtl(x16, w16, dy16, width, height, bias=True):
    """The backward pass of ``Y = X W + b`` on the RTL fabric: ``(dx16, dw, db, cycles)``:
    ``dX = dY W^T`` (float16 [T, K]) as a weight-streaming GEMM with W streamed again,
    transposed (for each input feature its non-zero weights, outputs ascending), and
    ``dW`` (float32 [K, N]) and ``db`` (float32 [N]) delivered at the north edge
    (:func:`run_weight_gradient_rtl`, :func:`run_bias_gradient_rtl`; ``db`` None for a
    layer without ``bias``); ``cycles``: ``{"dx", "dw", "dw_copy", "db"}``. Bit for bit
    :mod:`golden.training`."""
    from gpt_mapping.fabric_run import run_gemm_rtl
    from gpt_mapping.layout import GemmMapping, check_gemm_operands
    check_gemm_operands(x16, w16)
    t, k = x16.shape
    n = w16.shape[1]
    if dy16.shape != (t, n):
        raise MappingError(f"dY has shape {list(dy16.shape)}, Y = X W has [{t}, {n}]")
    mapping = GemmMapping(tokens=t, features=n, outputs=k, width=width, height=height)
    dx16, c_dx = run_gemm_rtl(mapping, dy16, np.ascontiguousarray(w16.T))
    dw, c_dw = run_weight_gradient_rtl(x16, dy16, width, height)
    cycles = {"dx": int(c_dx["cycles"]), "dw": c_dw["cycles"], "dw_copy": c_dw["copy_cycles"]}
    db = None
    if bias:
        db, c_db = run_bias_gradient_rtl(dy16, width, height)
        cycles["db"] = c_db["cycles"]
    return dx16, dw, db, cycles
