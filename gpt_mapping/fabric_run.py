"""The weight-streaming GEMM on the RTL fabric: ``run_gemm_rtl`` and ``run_gemm_chain_rtl``.

From a :class:`gpt_mapping.layout.GemmMapping` this module builds everything the fabric
needs and runs it on the Verilator model of :mod:`rtl.fabric` through the bench of
:mod:`runtime.fabric_tb`:

1. route tables from :meth:`ColorPlan.routes`, adjusted for rows without tokens, checked
   with the golden routing model (:mod:`golden.routing`) before anything is simulated;
2. the PE program of every tile (:func:`pe_program`): data-structure registers, launch
   entries, the task table and the color binding of the GEMM recipe (docs/fabric.md);
3. the X slices into the PEs' SRAM, the weight streams (:mod:`gpt_mapping.streams`) into
   the north-edge memories;
4. after each GEMM: Y from the owner PEs' SRAM, the PE and router counters;
5. with ``trace``, a timeline of the run from every PE's debug port
   (:class:`gpt_mapping.traces.FabricTrace`, docs/timeline.md).

A chain of GEMMs keeps every intermediate result on the fabric: GEMM i + 1 reads its X
where GEMM i wrote its Y (the mapper places Y exactly like X), so nothing goes back to the
host between them; only the PE registers are rewritten.

The fabric is built once per size (``runtime.sim`` caches the Verilator model by its Verilog).
"""

import hashlib
import os
from dataclasses import dataclass

import numpy as np

from golden.routing import Endpoint, RouteTables, RoutingError, RoutingModel
from gpt_mapping.layout import (FP16_BYTES, GemmMapping, MappingError, check_gemm_operands)
from gpt_mapping.perf_model import (accumulator_buffers, held_features, needed_features,
                                    predict)
from gpt_mapping.streams import ReductionCommand, nonzero_counts, weight_streams
from rtl.mesh import edge_endpoints
from rtl.pe import regs as R
from rtl.pe.asm import assemble
from rtl.pe.isa import LaunchModifier
from rtl.router import (Port, RouterErrorStatus, RouterReg, counter_addr, port_mask,
                        route_addr)
from rtl.tile import BROADCAST_X
from rtl.wavelet import unpack
from runtime.fabric_host import (ConfigProgram, FabricRunError, FabricStallError, Job, diagnose,
                            run_job)

__all__ = ["run_gemm_rtl", "run_gemm_chain_rtl", "gemm_routes", "pe_program", "pe_params",
           "placements", "Placement", "FabricSpec", "fabric_build", "DSR_IDS", "TASKS",
           "ENTRIES", "TASK_NAMES"]

# --- the PE recipe of the GEMM ---------------------------------------------------------------

#: Data-structure registers of the GEMM recipe.
DSR_IDS = {
    "acc": 0,        # ACC FP32 [T_y], the accumulators of the current output (rotating)
    "x": 1,          # MEM FP16 [T_y] at X[:, k_local]: base + index * T_pad (index offset)
    "red_in": 2,     # FIN FP32: partial sums from the west (reduce color)
    "red_out": 3,    # FOUT FP32 [T_y]: partial sums to the east (reduce color)
    "res_in": 4,     # FIN FP16: final results from the east (result color)
    "res_out": 5,    # FOUT FP16 [T_y]: final results to the west (result color)
    "y_w": 6,        # MEM FP16 [T_y] at Y[:, n_local], advanced per owned output (write)
    "y_r": 7,        # the same, read by the east end to send what it stored
    "null": 8,       # NULL [T_y]: drains results of outputs owned elsewhere
}
#: Task ids: 0 runs the FMAC of a weight; command code c starts task CTRL_BASE + c.
CTRL_BASE = 2
TASKS = {"fmac": 0, "bad_command": CTRL_BASE,
         "partial": CTRL_BASE + ReductionCommand.PARTIAL_SUM,
         "final": CTRL_BASE + ReductionCommand.FINAL_SUM}
#: Launch-entry ids.
ENTRIES = {"fmac": 0, "bad": 1, "partial": 2, "final": 5}
#: The tasks' names on a timeline (``--trace``).
TASK_NAMES = {TASKS["fmac"]: "fmac", TASKS["bad_command"]: "bad command",
              TASKS["partial"]: "partial sum", TASKS["final"]: "final sum"}
#: Priorities: the reduction chain goes before the FMACs of the next outputs.
PRIO_FMAC, PRIO_REDUCE = 0, 1
#: The reduction commands (partial sum, final sum, the invalid command) run as code tasks
#: of the control core (SPEC 4.5): two ``t.*`` launches and ``tend`` each; the per-weight
#: FMAC stays a launch-list task (the hardware fast path). False: every task is a launch
#: list, the PE's first form (kept to measure one against the other, docs/fabric.md).
REDUCTIONS_AS_CODE = True
#: The first register holding a launch modifier of the code tasks (r1..r3 are the task's
#: wavelet); the host writes them with the program.
MODIFIER_REGS = 4


@dataclass(frozen=True)
class Placement:
    """Byte addresses of one GEMM's X and Y slices in PE (x, y)'s SRAM."""
    x_base: int
    y_base: int


def placements(mappings):
    """SRAM placement of every GEMM of a chain: ``[{(x, y): Placement}]``.

    GEMM 0 uses its mapping's layout (X at ``data_base``, Y at ``y_base``). GEMM i + 1 reads
    its X where GEMM i wrote its Y, and writes its Y at ``data_base`` when that does not
    overlap its X, else right after its X. Raises :class:`MappingError` naming the tile and
    the GEMM when a slice does not fit the SRAM.
    """
    first = mappings[0]
    out = []
    for i, m in enumerate(mappings):
        table = {}
        for y in range(m.height):
            t_pad = m.t_pad(y)
            for x in range(m.width):
                k_x = int(m.features_per_column[x])
                n_x = int(m.outputs_per_column[x])
                x_bytes, y_bytes = k_x * t_pad * FP16_BYTES, n_x * t_pad * FP16_BYTES
                if i == 0:
                    place = Placement(m.pe.data_base, m.y_base(x, y))
                else:
                    x_base = out[i - 1][x, y].y_base
                    y_base = m.pe.data_base
                    if y_base + y_bytes > x_base and x_base + x_bytes > y_base:
                        y_base = x_base + x_bytes
                    place = Placement(x_base, y_base)
                end = max(place.x_base + x_bytes, place.y_base + y_bytes)
                if end > first.pe.sram_bytes:
                    raise MappingError(
                        f"tile ({x}, {y}): GEMM {i} of the chain needs SRAM up to byte {end} "
                        f"(X slice at {place.x_base}, {x_bytes} bytes; Y slice at "
                        f"{place.y_base}, {y_bytes} bytes), the PE has {first.pe.sram_bytes}")
                table[x, y] = place
        out.append(table)
    return out


def _check_chain(mappings, x16, w16s):
    if not mappings:
        raise MappingError("a GEMM chain needs at least one mapping")
    for i, m in enumerate(mappings):
        if not isinstance(m, GemmMapping):
            raise TypeError(f"mapping {i} must be a GemmMapping, not {type(m).__name__}")
    first = mappings[0]
    for i, m in enumerate(mappings[1:], 1):
        prev = mappings[i - 1]
        if (m.width, m.height, m.tokens) != (first.width, first.height, first.tokens):
            raise MappingError(f"GEMM {i} of the chain is {m.tokens} tokens on {m.width} x "
                               f"{m.height}; GEMM 0 is {first.tokens} tokens on "
                               f"{first.width} x {first.height}")
        if m.features != prev.outputs:
            raise MappingError(f"GEMM {i} of the chain has K = {m.features} features but GEMM "
                               f"{i - 1} produces N = {prev.outputs} outputs")
        held, needed = held_features(prev), needed_features(m)
        if held != needed:
            x = next(c for c in range(m.width) if held[c] != needed[c])
            raise MappingError(
                f"GEMM {i} of the chain reads X features {needed[x][0]}..{needed[x][1] - 1} "
                f"in column {x}, where GEMM {i - 1} leaves its outputs "
                f"{held[x][0]}..{held[x][1] - 1} ({m.groups} vs {prev.groups} column groups):"
                f" the layouts need a redistribution between them, which a chain does not do")
        if m.pe != first.pe or m.colors != first.colors:
            raise MappingError(f"GEMM {i} of the chain uses another PEConfig or ColorPlan "
                               f"than GEMM 0")
    check_gemm_operands(x16, None)
    if x16.shape != (first.tokens, first.features):
        raise MappingError(f"X has shape {x16.shape}, the mapping expects "
                           f"({first.tokens}, {first.features})")
    if len(w16s) != len(mappings):
        raise MappingError(f"{len(w16s)} weight matrices for a chain of {len(mappings)} GEMMs")
    for i, (m, w16) in enumerate(zip(mappings, w16s)):
        check_gemm_operands(None, w16)
        if w16.shape != (m.features, m.outputs):
            raise MappingError(f"W of GEMM {i} has shape {w16.shape}, the mapping expects "
                               f"({m.features}, {m.outputs})")


def _position(mapping, x):
    """The column's place in its (column group's) reduction chain."""
    span, local = mapping.group_width, x % mapping.group_width
    if span == 1:
        return "single"
    if local == 0:
        return "west"
    if local == span - 1:
        return "east"
    return "middle"


#: Clear the accumulators with a launch of their own (``FMOV null <- acc``, ``clear_a``)
#: where a final sum goes to SRAM, instead of ``clear_a`` on the storing launch. The PE once
#: did not order such a clear against later FMACs (fixed, with the directed bench case
#: ``clear_then_reuse``); False, the default, is exactly the recipe of docs/pe.md section 9.
CLEAR_SEPARATELY = False


def pe_params(mapping):
    """The :class:`rtl.pe.regs.PEParams` of the PEs the mapping is for (its SRAM and
    accumulator cache; the rest as the fabric builds them): what the encoders check the
    program's DSR, task, entry and color ids against."""
    pe = mapping.pe
    return R.PEParams(sram_words=pe.sram_bytes // 4, banks=pe.sram_banks,
                      acc_words=pe.accumulator_words, lanes=pe.lanes)


def _launch(op, dst, a=R.DSR_NONE, b=R.DSR_NONE, s=R.DSR_NONE, **fields):
    """One launch of a task, as the keyword arguments of :func:`rtl.pe.regs.encode_entry`
    (``last`` is set by :func:`_task`)."""
    return dict(op=op, dst=dst, a=a, b=b, s=s, **fields)


def _task(pe, *launches):
    """The launch-entry words of a task: its launches in order, the last one ending it (ids
    checked against the PE's parameters ``pe``)."""
    words = []
    for i, launch in enumerate(launches):
        words.append(R.encode_entry(**launch, last=i == len(launches) - 1, pe=pe))
    return words


def _store_final(store, *after):
    """The launches of a final sum that ``store`` (reading the accumulators) writes to SRAM,
    then ``after``: the accumulators are cleared and advanced by ``store`` itself
    (``clear_a``) or by a launch of their own at the end (:data:`CLEAR_SEPARATELY`)."""
    if CLEAR_SEPARATELY:
        clear = _launch(R.TensorOp.FMOV, DSR_IDS["null"], DSR_IDS["acc"], clear_a=True,
                        adv=("a",), prio=PRIO_REDUCE)
        return [store, *after, clear]
    store = dict(store, clear_a=True, adv=tuple(store.get("adv", ())) + ("a",))
    return [store, *after]


def perf_params():
    """The :class:`gpt_mapping.perf_model.PerfParams` of the recipe as this module runs it
    (reduction commands as code tasks or, :data:`REDUCTIONS_AS_CODE` off, launch lists)."""
    from gpt_mapping.perf_model import PerfParams
    return PerfParams() if REDUCTIONS_AS_CODE else PerfParams(code_task_latency=0)


def _modifier(launch):
    """The :class:`rtl.pe.isa.LaunchModifier` word of a launch (its ``rm`` register)."""
    roles = {"dst": 1, "a": 2, "b": 4}
    return R.encode_fields(LaunchModifier, prio=launch.get("prio", 0),
                           idx=sum(roles[r] for r in set(launch.get("idx", ()))),
                           adv=sum(roles[r] for r in set(launch.get("adv", ()))),
                           clear_a=int(bool(launch.get("clear_a", False))))


def code_tasks(tasks, limit, pe=None):
    """The control-core program of code tasks: ``{label: [launch, ...]}`` (the keyword
    dicts of :func:`_launch`) become ``label: t.<op> dst, a, b, r0, rM`` lines and a
    ``tend``, each distinct launch modifier held in a register from :data:`MODIFIER_REGS`
    on. Returns ``(program, {register: modifier word})``; the program (at byte 0) must end
    below ``limit`` (the start of the GEMM's data). Every launch's DSR ids are checked
    against the PE's parameters ``pe`` as a launch entry's are (the encoder's check)."""
    names = {v: k for k, v in DSR_IDS.items()}
    regs = {}
    lines = [f".equ {name}, {ident}" for name, ident in DSR_IDS.items()]
    for label, launches in tasks.items():
        lines.append(f"{label}:")
        for launch in launches:
            if launch.get("s", R.DSR_NONE) not in (R.DSR_NONE, R.DSR_WAVELET):
                raise ValueError(f"code task {label}: a SCALAR DSR as s is not used here")
            R.encode_entry(**launch, pe=pe)          # the ids, against the PE's limits
            word = _modifier(launch)
            if word and word not in regs.values():
                regs[MODIFIER_REGS + len(regs)] = word
            rm = next((r for r, w in regs.items() if w == word), 0) if word else 0
            operands = [names.get(launch[role], "none" if launch[role] == R.DSR_NONE
                                  else str(launch[role]))
                        for role in ("dst", "a", "b")]
            lines.append(f"    t.{R.TensorOp(launch['op']).name.lower()} "
                         f"{', '.join(operands)}, r0, r{rm}")
        lines.append("    tend")
    if MODIFIER_REGS + len(regs) > 16:
        raise ValueError(f"the code tasks need {len(regs)} launch modifiers, more than the "
                         f"{16 - MODIFIER_REGS} registers r{MODIFIER_REGS}..r15")
    program = assemble("\n".join(lines) + "\n")
    if program.end > limit:
        raise MappingError(f"the PE program of the reduction tasks needs {program.end} bytes, "
                           f"more than the {limit} reserved below the GEMM's data")
    return program, regs


def pe_program(mapping, x, y, place):
    """The GEMM configuration of PE (x, y): ``[(pe_address, [words])]``.

    Registers (see :data:`DSR_IDS`), launch entries, task table and the binding of the
    weight color, and (:data:`REDUCTIONS_AS_CODE`) the code of the reduction tasks with
    the registers it reads; tiles of rows without tokens get nothing (they are not on any
    route).
    """
    t_y = int(mapping.tokens_per_row[y])
    if t_y == 0:
        return []
    t_pad = mapping.t_pad(y)
    colors = mapping.colors
    pe = pe_params(mapping)
    n_x = int(mapping.outputs_per_column[x])
    buffers = accumulator_buffers(mapping)
    D = DSR_IDS
    vec = ((t_y, 1),)
    y_adv = n_x if 0 < n_x < (1 << R.LEN_BITS) else 0
    # Interleaved outputs: the weight's index is k_local * I + slot; X takes its high part
    # (the feature), the accumulators its low part (the slot, one buffer per output of
    # the group, on top of the group's base that the reductions advance).
    shift = mapping.interleave.bit_length() - 1
    dsrs = {
        "acc": R.encode_dsr(R.Kind.ACC, dtype=R.DType.FP32, base=0, dims=vec,
                            adv_step=t_pad, adv_count=buffers,
                            **({"idx_stride": t_pad, "idx_width": shift} if shift else {})),
        "x": R.encode_dsr(R.Kind.MEM, base=place.x_base // FP16_BYTES, dims=vec,
                          idx_stride=t_pad, idx_shift=shift),
        "red_in": R.encode_dsr(R.Kind.FIN, dtype=R.DType.FP32, color=colors.reduce, dims=vec,
                               pe=pe),
        "red_out": R.encode_dsr(R.Kind.FOUT, dtype=R.DType.FP32, color=colors.reduce,
                                dims=vec, pe=pe),
        "res_in": R.encode_dsr(R.Kind.FIN, color=colors.result, dims=vec, pe=pe),
        "res_out": R.encode_dsr(R.Kind.FOUT, color=colors.result, dims=vec, pe=pe),
        "y_w": R.encode_dsr(R.Kind.MEM, base=place.y_base // FP16_BYTES, dims=vec,
                            adv_step=t_pad, adv_count=y_adv),
        "y_r": R.encode_dsr(R.Kind.MEM, base=place.y_base // FP16_BYTES, dims=vec,
                            adv_step=t_pad, adv_count=y_adv),
        "null": R.encode_dsr(R.Kind.NULL, dims=vec),
    }
    L = _launch
    take_acc = dict(clear_a=True, adv=("a",), prio=PRIO_REDUCE)
    fmac = L(R.TensorOp.FMAC, D["acc"], D["acc"], D["x"], R.DSR_WAVELET,
             idx=("dst", "a", "b") if shift else ("b",), prio=PRIO_FMAC)
    # An invalid command: a launch without a destination, which the PE refuses with
    # BAD_OPERAND (info: DSR_NONE).
    bad = L(R.TensorOp.FMOV, R.DSR_NONE)
    store = L(R.TensorOp.FMOV, D["y_w"], D["res_in"], adv=("dst",), prio=PRIO_REDUCE)
    drain = L(R.TensorOp.FMOV, D["null"], D["res_in"], prio=PRIO_REDUCE)
    position = _position(mapping, x)
    if position == "single":
        partial = [bad]
        final = _store_final(L(R.TensorOp.FMOV, D["y_w"], D["acc"], adv=("dst",),
                               prio=PRIO_REDUCE))
    elif position == "west":
        send = L(R.TensorOp.FMOV, D["red_out"], D["acc"], **take_acc)
        partial, final = [send, drain], [send, store]
    elif position == "middle":
        send = L(R.TensorOp.FADD, D["red_out"], D["acc"], D["red_in"], **take_acc)
        partial, final = [send, drain], [send, store]
    else:   # east end: round the row's sum to FP16 and return it westward
        partial = [L(R.TensorOp.FADD, D["res_out"], D["acc"], D["red_in"], **take_acc)]
        final = _store_final(L(R.TensorOp.FADD, D["y_w"], D["acc"], D["red_in"],
                               adv=("dst",), prio=PRIO_REDUCE),
                             L(R.TensorOp.FMOV, D["res_out"], D["y_r"], adv=("a",),
                               prio=PRIO_REDUCE))
    out = []
    for name, words in dsrs.items():
        out.append((R.dsr_addr(D[name], pe=pe), words))
    if REDUCTIONS_AS_CODE:
        entries = {ENTRIES["fmac"]: _task(pe, fmac)}
        program, regs = code_tasks({"bad_command": [bad], "partial": partial,
                                    "final": final}, mapping.pe.data_base, pe)
        out.append((0, list(program.words)))                 # SRAM words from byte 0
        out += [(R.gpr_addr(r), [word]) for r, word in regs.items()]
        tasks = {TASKS["fmac"]: R.encode_task(ENTRIES["fmac"], pe=pe)}
        for name in ("bad_command", "partial", "final"):
            tasks[TASKS[name]] = R.encode_task(pc=program.labels[name], pe=pe)
    else:
        entries = {ENTRIES["fmac"]: _task(pe, fmac), ENTRIES["bad"]: _task(pe, bad),
                   ENTRIES["partial"]: _task(pe, *partial),
                   ENTRIES["final"]: _task(pe, *final)}
        if len(partial) > ENTRIES["final"] - ENTRIES["partial"]:
            raise AssertionError("launch entries overlap")
        tasks = {TASKS[name]: R.encode_task(ENTRIES[key], pe=pe)
                 for name, key in (("fmac", "fmac"), ("bad_command", "bad"),
                                   ("partial", "partial"), ("final", "final"))}
    for first, group in entries.items():
        for i in range(len(group)):
            R.entry_addr(first + i, pe=pe)          # every entry of the group exists
        out.append((R.entry_addr(first, pe=pe), [w for entry in group for w in entry]))
    for task, word in tasks.items():
        out.append((R.task_addr(task, pe=pe), [word]))
    out.append((R.bind_addr(colors.weight, pe=pe),
                [R.encode_bind(data_task=TASKS["fmac"], ctrl_base=CTRL_BASE, pe=pe)]))
    return out


# --- routes -----------------------------------------------------------------------------------

def gemm_routes(mapping):
    """Route tables of the GEMM (:class:`golden.routing.RouteTables`).

    :meth:`ColorPlan.routes`, except that rows without tokens (more rows than tokens) take
    no part: the weight stream passes them southward only down to the last row with tokens,
    and their reduce/result routes are left empty.
    """
    W, H = mapping.width, mapping.height
    tables = RouteTables(W, H)
    active = [int(t) > 0 for t in mapping.tokens_per_row]
    last = max((y for y in range(H) if active[y]), default=-1)
    for r in mapping.colors.routes(W, H, mapping.groups):
        outs = set(r.out_ports)
        if r.color == mapping.colors.weight:
            if r.y > last:
                continue
            if not active[r.y]:
                outs.discard("RAMP")
            if r.y == last:
                outs.discard("S")
        elif not active[r.y]:
            continue
        if outs:
            tables.set(r.x, r.y, Port[r.in_port], r.color, port_mask(*(Port[p] for p in outs)))
    return tables


def _check_routes(mapping, tables):
    """The golden routing model's checks, before anything is simulated."""
    model = RoutingModel(tables, exported=())
    sources = [(Endpoint(x, 0, Port.N), mapping.colors.weight) for x in range(mapping.width)]
    sources += [(Endpoint(x, y, Port.RAMP), c) for x, y, p, c, _ in tables.entries()
                if p == Port.RAMP]
    try:
        model.validate(sources)
    except RoutingError as exc:
        raise MappingError(f"the GEMM's routes are invalid: {exc}") from None


# --- the fabric build -------------------------------------------------------------------------

@dataclass(frozen=True)
class FabricSpec:
    """A built fabric: its size, memory depths and Verilator build."""
    width: int
    height: int
    stream_depth: int
    cfg_depth: int
    resp_depth: int
    build: object
    #: The tile model (``runtime.tile_model.TileLibrary``) of a "dpi" build, None otherwise.
    tile_library: object = None


_BUILDS = {}


#: How the tiles are simulated: "dpi" (each tile its own Verilated model behind a DPI
#: wrapper, runtime/tile_model.py) or "hierarchical" (Verilator hierarchical blocks, about twice
#: as slow; kept for comparison). The environment variable ``WSE_TILE_MODEL`` picks
#: the default.
TILE_MODELS = ("dpi", "hierarchical")


def fabric_build(width, height, *, stream_depth=16384, cfg_depth=8192, resp_depth=4096,
                 tile_model=None):
    """Build (or reuse) the Verilator model of a ``width`` x ``height`` fabric.

    ``tile_model``: one of :data:`TILE_MODELS`; default ``$WSE_TILE_MODEL`` or "dpi".
    """
    if tile_model is None:
        tile_model = os.environ.get("WSE_TILE_MODEL", "dpi")
    from rtl.fabric import fabric_sources, verilator_config
    from rtl.export import concat
    from runtime import sim, tile_model as tm
    if tile_model not in TILE_MODELS:
        raise ValueError(f"tile_model (or $WSE_TILE_MODEL) must be one of {TILE_MODELS}, "
                         f"not {tile_model!r}")
    key = (width, height, stream_depth, cfg_depth, resp_depth, tile_model)
    if key in _BUILDS:
        return _BUILDS[key]
    depths = dict(stream_depth=stream_depth, cfg_depth=cfg_depth, resp_depth=resp_depth)
    cache = sim.BUILD_ROOT / "verilog-cache"
    top, tile = fabric_sources(width, height, cache_dir=cache, **depths)
    hierarchical = tile_model == "hierarchical"
    config = verilator_config(hierarchical=hierarchical, **depths)
    vlt = cache / f"fabric-{hashlib.sha256(config.encode()).hexdigest()[:12]}.vlt"
    if not vlt.exists():
        vlt.parent.mkdir(parents=True, exist_ok=True)
        tmp = vlt.with_name(f"{vlt.name}.{os.getpid()}.tmp")
        tmp.write_text(config)
        tmp.replace(vlt)
    library = None
    if hierarchical:
        build = sim.build("fabric", concat(top, tile), extra_args=["--hierarchical", str(vlt)])
    else:
        library = tm.tile_library(tile)
        build = sim.build("fabric", top + "\n" + tm.wrapper_verilog(),
                          extra_args=[str(vlt), *library.verilator_args()])
    spec = FabricSpec(width, height, stream_depth, cfg_depth, resp_depth, build, library)
    _BUILDS[key] = spec
    return spec


# --- running ----------------------------------------------------------------------------------

_ROUTER_COUNTERS = (RouterReg.FORWARDED, RouterReg.BLOCKED, RouterReg.RECEIVED)
_PE_COUNTERS = list(R.Counter)


def _clear_counters(program, y):
    """Clear every router's counters and every PE's counters of row y (broadcasts)."""
    for reg in _ROUTER_COUNTERS:
        for port in Port:
            program.router_write(BROADCAST_X, y, counter_addr(reg, port), 0)
    program.router_write(BROADCAST_X, y, RouterReg.CYCLES, 0)
    program.pe_write(BROADCAST_X, y, R.reg_addr(R.Reg.COUNTER_CTRL), 1)


def _setup_gemm(program, mapping, place, x16=None, hook=None):
    """PE programs (and X, for the first GEMM) of every tile, then clear the counters.

    ``hook(x, y, [(pe_addr, words)])`` may replace a tile's PE program (fault injection).
    """
    acc_words = mapping.pe.accumulator_words
    for y in range(mapping.height):
        # Accumulators start at +0.0 (the reductions leave them cleared, this covers the
        # first GEMM and any earlier aborted run).
        program.pe_write_block(BROADCAST_X, y, R.acc_addr(0),
                               np.zeros(acc_words, dtype=np.uint32))
        for x in range(mapping.width):
            tile_program = pe_program(mapping, x, y, place[x, y])
            if hook is not None:
                tile_program = hook(x, y, tile_program)
            for addr, words in tile_program:
                program.pe_write_block(x, y, addr, words)
            if x16 is not None and mapping.tokens_per_row[y] and mapping.features_per_column[x]:
                tile = mapping.x_tile(x16, x, y)
                program.pe_write_block(x, y, place[x, y].x_base // 4,
                                       tile.reshape(-1).view("<u4"))
        _clear_counters(program, y)


def _readback(program, mapping, place):
    """Reads of Y (owner PEs) and of every counter; returns the tickets."""
    tickets = {"y": {}, "pe": {}, "router": {}}
    for y in range(mapping.height):
        t_pad = mapping.t_pad(y)
        for x in range(mapping.width):
            n_x = int(mapping.outputs_per_column[x])
            if mapping.tokens_per_row[y] and n_x:
                tickets["y"][x, y] = program.pe_read(x, y, place[x, y].y_base // 4,
                                                     n_x * t_pad // 2)
            tickets["pe"][x, y] = (
                program.pe_read(x, y, R.counter_addr(_PE_COUNTERS[0]), len(_PE_COUNTERS)),
                program.pe_read(x, y, R.reg_addr(R.Reg.ERROR), 2))
            tickets["router"][x, y] = (
                [program.router_read(x, y, counter_addr(reg, Port.N), len(Port))
                 for reg in _ROUTER_COUNTERS],
                program.router_read(x, y, RouterReg.ERR_STATUS, 2))
    # Tiles of a bigger build outside the GEMM's corner: their routes are empty, so any
    # wavelet that strays there is dropped and counted; read those counts too.
    tickets["outside"] = {
        (x, y): program.router_read(x, y, RouterReg.ERR_STATUS, 2)
        for y in range(program.height) for x in range(program.width)
        if x >= mapping.width or y >= mapping.height}
    return tickets


def _decode(mapping, tickets, answers, run):
    """Y (float16 [T, N]) and the counters of one GEMM."""
    W, H = mapping.width, mapping.height
    y16 = np.zeros((mapping.tokens, mapping.outputs), dtype=np.float16)
    for (x, y), ticket in tickets["y"].items():
        t_pad, t_y = mapping.t_pad(y), int(mapping.tokens_per_row[y])
        words = ticket.take(answers)
        block = words.view("<u2").reshape(int(mapping.outputs_per_column[x]), t_pad)
        tr, nr = mapping.token_range(y), mapping.output_range(x)
        y16[tr.start:tr.stop, nr.start:nr.stop] = block[:, :t_y].T.view(np.float16)
    pe = np.zeros((H, W, len(_PE_COUNTERS)), dtype=np.int64)
    pe_err = np.zeros((H, W, 2), dtype=np.int64)
    router = np.zeros((H, W, len(_ROUTER_COUNTERS), len(Port)), dtype=np.int64)
    router_err = np.zeros((H, W, 2), dtype=np.int64)
    for (x, y), (counters, errors) in tickets["pe"].items():
        pe[y, x] = counters.take(answers)
        pe_err[y, x] = errors.take(answers)
    for (x, y), (regs, errors) in tickets["router"].items():
        for i, ticket in enumerate(regs):
            router[y, x, i] = ticket.take(answers)
        router_err[y, x] = errors.take(answers)
    C = {c.name.lower(): pe[:, :, c.value] for c in _PE_COUNTERS}
    counters = {
        "cycles": int(run.cycles),
        "fmac_lane_ops": int(C["fmac_lanes"].sum()),
        "pe_fmac_lane_ops": C["fmac_lanes"],
        "pe_busy_cycles": C["busy"],
        "pe_stall_input": C["stall_input"],
        "pe_stall_output": C["stall_output"],
        "pe_stall_bank": C["stall_bank"],
        "pe_stall_hazard": C["stall_hazard"],
        "pe_launches": C["launches"],
        "pe_tasks": C["tasks"],
        "pe_wavelets_in": C["wavelets_in"],
        "pe_wavelets_out": C["wavelets_out"],
        "pe_errors": C["errors"],
        "router_port_wavelets": router[:, :, 0],
        "router_blocked": router[:, :, 1],
        "router_received": router[:, :, 2],
        "run_cycles_to_done": int(run.run_cycles),
        "stream_wavelets": int(sum(run.stream_words)),
        "edge_wavelets": int(run.edge_count),
        "wall_seconds": float(run.wall_seconds),
        "cpu_seconds": float(run.cpu_seconds),
        "sim_cycles_per_second": float(run.run_cycles / run.wall_seconds)
        if run.wall_seconds > 0 else None,
        "sim_cycles_per_cpu_second": float(run.run_cycles / run.cpu_seconds)
        if run.cpu_seconds > 0 else None,
        "_pe_error_regs": pe_err,
        "_router_error_regs": router_err,
        "_outside_error_regs": {xy: t.take(answers) for xy, t in tickets["outside"].items()},
    }
    return y16, counters


def _check_errors(mapping, counters, run, index):
    """Raise :class:`FabricRunError` for edge traffic or any error register set."""
    where = f"GEMM {index}"
    if run.edge_count:
        x, y, port = edge_endpoints(mapping.width, mapping.height)[run.edge_first_link]
        f = unpack(run.edge_first)
        raise FabricRunError(
            f"{where}: {run.edge_count} cycle(s) of wavelets left the fabric; the first "
            f"through tile ({x}, {y}) port {Port(port).name}: color {f.color}, ctrl {f.ctrl}, "
            f"index {f.index}, data {f.data:#06x} (the GEMM's routes never leave the fabric)")
    north = [x for x, n in enumerate(run.north_count or ()) if n]
    if north:
        x = north[0]
        f = unpack(int(run.north[x][0])) if run.north is not None and len(run.north[x]) \
            else None
        first = (f"color {f.color}, ctrl {f.ctrl}, index {f.index}, data {f.data:#06x}"
                 if f is not None else "not captured")
        raise FabricRunError(
            f"{where}: {sum(run.north_count)} wavelet(s) left the fabric; the first through "
            f"tile ({x}, 0) port N: {first} (the north edge is MemoryX's gradient port: only "
            f"a backward pass sends anything there)")
    problems = []
    pe_err = counters.pop("_pe_error_regs")
    router_err = counters.pop("_router_error_regs")
    for (x, y), (status_word, count) in sorted(counters.pop("_outside_error_regs").items()):
        status = R.decode_fields(RouterErrorStatus, int(status_word))
        if status["error"]:
            problems.append(f"{int(count)} wavelet(s) left the GEMM's {mapping.width} x "
                            f"{mapping.height} corner: tile ({x}, {y}) of the build dropped "
                            f"them, the first of color {status['color']} on port "
                            f"{Port(status['port']).name}")
    for y in range(mapping.height):
        for x in range(mapping.width):
            code, info = R.decode_error(int(pe_err[y, x, 0]))
            if int(pe_err[y, x, 0]) & 0x1F or pe_err[y, x, 1]:
                name = code.name if hasattr(code, "name") else code
                problems.append(f"tile ({x}, {y}) PE error {name} (info {info}, flags "
                                f"{int(pe_err[y, x, 1]):#x})")
            status = R.decode_fields(RouterErrorStatus, int(router_err[y, x, 0]))
            if status["error"]:
                problems.append(f"tile ({x}, {y}) router dropped {int(router_err[y, x, 1])} "
                                f"wavelet(s), the first of color {status['color']} on port "
                                f"{Port(status['port']).name}")
    if problems:
        raise FabricRunError(f"{where}: " + "; ".join(problems))


def run_gemm_chain_rtl(mappings, x16, w16s, progress=None, *, fabric=None, budget=None,
                       watchdog=5000, timeout=None, pe_program_hook=None, route_hook=None,
                       trace=None, trace_label=""):
    """Run GEMMs back to back on the RTL fabric, each Y staying on the fabric as the next X.

    Parameters
    ----------
    mappings : list of GemmMapping
        GEMM i computes ``Y_i = Y_{i-1} W_i`` (``Y_{-1} = X``); all on the same fabric and
        tokens, ``mappings[i].features == mappings[i - 1].outputs``.
    x16 : float16 [T, K_0]
    w16s : list of float16 [K_i, N_i]
    progress : tqdm-like, optional
        ``reset(total=...)`` and ``update(n)`` with simulated cycles.
    fabric : (width, height), optional
        Size of the fabric build (default: the mapping's). A bigger build runs the GEMM on
        its north-west corner.
    budget : int, optional
        Cycle budget per GEMM (default: 4 x the performance model's prediction + 20 000).
    watchdog : int
        Cycles without any wavelet moving after which a run is stopped as stuck.
    timeout : float, optional
        Wall-clock limit of the simulator in seconds (default: generous, from the budgets).
    pe_program_hook : callable, optional
        ``hook(gemm_index, x, y, [(pe_addr, words)]) -> [(pe_addr, words)]``: to alter a
        tile's program (fault injection in tests).
    route_hook : callable, optional
        ``hook(tables)`` may alter the route tables *after* they were checked (fault
        injection in tests: the hardware's own error reporting is then what catches it).
    trace : FabricTrace or path, optional
        Record every PE's debug port and add the run to this
        :class:`gpt_mapping.traces.FabricTrace` (after the GEMMs it already holds), or write
        the run's timeline to this file (trace-event JSON, docs/timeline.md). Also done for
        a run the watchdog stopped, before the error is raised. The cycles are the same as
        untraced.
    trace_label : str
        Prefix of this run's step names on the timeline (e.g. the GPT layer).

    Returns
    -------
    (list of float16 [T, N_i], list of counter dicts)

    Raises
    ------
    MappingError
        Bad input, found before anything is simulated.
    FabricStallError
        The watchdog stopped a run; the message names the tile and color where it stopped.
    FabricRunError
        Wavelets left the fabric, or an error register is set.
    """
    mappings = list(mappings)
    w16s = list(w16s)
    _check_chain(mappings, x16, w16s)
    first = mappings[0]
    W, H = first.width, first.height
    fw, fh = fabric or (W, H)
    if fw < W or fh < H:
        raise MappingError(f"the GEMM needs a {W} x {H} fabric; the build is {fw} x {fh}")
    place = placements(mappings)
    tables = gemm_routes(first)
    _check_routes(first, tables)
    if route_hook is not None:
        route_hook(tables)
    streams = [weight_streams(m, w) for m, w in zip(mappings, w16s)]
    estimates = [predict(m, nonzero_counts(m, w), perf_params())
                 for m, w in zip(mappings, w16s)]

    job = Job(fw, fh)
    setup = ConfigProgram(fw, fh)
    for x, y, port, color, mask in tables.entries():
        setup.router_write(x, y, route_addr(port, color), mask)
    tickets = []
    shown_steps = []                 # (step index, name on a timeline, phase)
    one = len(mappings) == 1
    for i, m in enumerate(mappings):
        # GEMM 0's setup also holds the routes and X; later GEMMs only rewrite the PEs'
        # registers (their X is the previous GEMM's Y, already in place).
        program = setup if i == 0 else ConfigProgram(fw, fh)
        hook = None
        if pe_program_hook is not None:
            hook = (lambda x, y, prog, i=i: pe_program_hook(i, x, y, prog))
        _setup_gemm(program, m, place[i], x16 if i == 0 else None, hook)
        head = "" if one else f"gemm {i} "
        shown_steps.append((job.configure(program, name=f"gemm {i} setup"), f"{head}load",
                            "load"))
        expect = estimates[i].cycles
        run_budget = budget or 4 * expect + 20_000
        cols = streams[i] + [np.zeros(0, dtype=np.uint32)] * (fw - W)
        shown_steps.append((job.run(cols, budget=run_budget, watchdog=watchdog,
                                    name=f"gemm {i}", expect_cycles=expect),
                            f"{head}run", "run"))
        readback = ConfigProgram(fw, fh)
        read_step = job.configure(readback, name=f"gemm {i} readback")
        shown_steps.append((read_step, f"{head}readback", "readback"))
        tickets.append((read_step, _readback(readback, m, place[i])))

    spec = fabric_build(fw, fh)
    total = sum(e.cycles for e in estimates)
    if progress is not None:
        progress.reset(total=total)
    shown = [0]

    def report(name, cycles, expect):
        # The bench reports from run steps only, named "gemm <i>".
        if progress is None or not name:
            return
        index = int(name.split()[1])
        base = sum(estimates[j].cycles for j in range(index))
        now = min(total, base + min(cycles, estimates[index].cycles))
        if now > shown[0]:
            progress.update(now - shown[0])
            shown[0] = now

    if timeout is None:
        # A last resort only (the cycle budget and the watchdog stop a run in simulated
        # time): at a pessimistic 500 simulated cycles per second.
        budgets = sum(step["budget"] for step in job.steps if step["kind"] == "run")
        timeout = 300 + budgets / 500
    result = run_job(spec.build, job, cfg_depth=spec.cfg_depth, resp_depth=spec.resp_depth,
                     stream_depth=spec.stream_depth, progress=report, timeout=timeout,
                     trace=trace is not None)
    if trace is not None:
        _add_trace(trace, result, shown_steps, trace_label, first, (fw, fh))
    if result.stopped is not None:
        run = result.runs[result.stopped]
        name = job.steps[result.stopped]["name"]
        why = (f"the cycle budget of {job.steps[result.stopped]['budget']} cycles ran out"
               if run.timed_out else
               f"no wavelet moved for {job.steps[result.stopped]['watchdog']} cycles "
               f"(last movement at cycle {run.last_active})")
        message, rep = diagnose(job, result.diagnosis,
                                routes=lambda x, y, p, c: tables.mask(x, y, p, c)
                                if x < W and y < H else 0)
        raise FabricStallError(f"{name} stopped: {why}; {message}", rep)
    ys, all_counters = [], []
    run_steps = sorted(result.runs)
    for i, (m, (step, tick)) in enumerate(zip(mappings, tickets)):
        run = result.runs[run_steps[i]]
        y16, counters = _decode(m, tick, result.answers[step], run)
        _check_errors(m, counters, run, i)
        counters["predicted_cycles"] = estimates[i].cycles
        counters["fabric"] = {"width": fw, "height": fh}
        counters["total_wall_seconds"] = result.total_seconds
        ys.append(y16)
        all_counters.append(counters)
    if progress is not None and shown[0] < total:
        progress.update(total - shown[0])
    return ys, all_counters


def _add_trace(trace, result, steps, label, mapping, build):
    """The run on the timeline ``trace`` (a FabricTrace, or a path to write one to)."""
    from gpt_mapping.traces import FabricTrace
    collector = trace
    if not isinstance(trace, FabricTrace):
        collector = FabricTrace(f"GEMM on the RTL fabric ({mapping.width} x {mapping.height}"
                                f" of a {build[0]} x {build[1]} build)")
    collector.add_job(result, [s for s in steps if s[0] in result.spans], label=label,
                      task_names=TASK_NAMES, width=mapping.width, height=mapping.height)
    if collector is not trace:
        collector.write(trace)


def run_gemm_rtl(mapping, x16, w16, progress=None, **options):
    """Y = X W on the RTL fabric: ``(y16, counters)`` (the backend of ``--backend rtl``).

    ``counters`` has ``cycles`` (measured: first injection to the last cycle anything was
    busy or moved), ``fmac_lane_ops`` (FMAC lane operations counted by the PEs: the PEs run
    exactly T_y lanes per weight, so these are all useful), per-PE and per-router counter
    arrays ``[H, W]`` / ``[H, W, port]``, and the simulation's wall time and speed.
    Options as :func:`run_gemm_chain_rtl`.
    """
    ys, counters = run_gemm_chain_rtl([mapping], x16, [w16], progress, **options)
    return ys[0], counters[0]
