"""Moving an activation into a column-group layout on the fabric (docs/gemm.md section 12).

A GEMM in ``G`` column groups (SPEC 7, :attr:`GemmMapping.groups`) needs all of X in every
group, split over the group's ``W / G`` columns; the operation before it left X in the plain
layout, each feature in one column. The redistribution copies it on the fabric, row by row:

* column ``s`` holds the plain features ``block_range(s, W, K)``; column ``x`` at position
  ``j = x mod (W / G)`` of its group needs ``block_range(j, W / G, K)``, which is the union
  of the plain pieces of columns ``j G .. j G + G - 1`` (the floor split nests:
  ``floor(j G K / W) = floor(j K / (W / G))``), in that order;
* so column ``s`` sends its piece, FP16 feature-major as it lies, to every column at
  position ``s // G`` (one per group), on a colour of its own: the routers multicast it
  east and west along the row and tap it into each destination's RAMP;
* every column receives its ``G`` pieces one after the other into consecutive places of the
  copy (a piece it holds itself is copied from SRAM to SRAM, the router has no RAMP to RAMP
  turn), so the copy is the grouped layout's X tile, ``x_tile`` of the grouped mapping.

The copy lies above the plain X (the plain X stays: a residual may read it later). The
pieces travel on per-source colours (:func:`group_colors`) because a static route cannot
tell two sources of one colour apart at a router both pass through. The PE program is one
code task started by a ``REDISTRIBUTE`` command in the column's stream: one FOUT launch of
the whole piece, the local copy, then one FIN launch per source in ascending source order
(the receivers all take the lowest source first, so a multicast whose branch is not yet
drained always has a source ahead of it that drains: no deadlock with fewer thread slots
than sources), ``tend`` (the launches run on after it).

The cycles are predicted by :func:`predict_redistribute_cycles`: the frozen model's lower
bound (:func:`gpt_mapping.perf_model.redistribution_cycles`, the busiest link or RAMP and
the farthest hop) plus a fixed start and end taken from one measurement; bench/redistribute.py
checks it against the RTL on other layouts (docs/gemm.md section 12).
"""

from dataclasses import dataclass

import numpy as np

from gpt_mapping.layout import FP16_BYTES, ColorPlan, MappingError
from gpt_mapping.perf_model import (needed_features, plain_layout, redistribution_cycles,
                                    held_features)
from gpt_mapping.streams import BlockCommand
from rtl.pe import regs as R
from rtl.router import NUM_COLORS, Port, port_mask
from rtl.wavelet import pack_array

__all__ = ["FREE_COLORS", "GroupColors", "group_colors", "redistributable", "sources",
           "destinations", "redistribute_routes", "redistribute_program",
           "redistribute_streams", "predict_redistribute_cycles", "redistribute_bound",
           "REDISTRIBUTE_FIXED", "copy_bytes",
           "decode_copies", "run_redistribute_rtl", "grouped_colors", "TASK",
           "block_layouts", "choose_block_layout", "add_redistribution"]

#: Colours left to the grouped layouts: above the GEMM's (weight 0, reduce 1, result 2) and
#: the attention's key/value colour (3), below the gradients' (23, gpt_mapping/backward.py).
FREE_COLORS = tuple(range(4, NUM_COLORS - 1))
#: The stream colour's binding is the GEMM's (data task 0, command c starts task 2 + c).
_CTRL_BASE = 2
TASK = _CTRL_BASE + int(BlockCommand.REDISTRIBUTE)


@dataclass(frozen=True)
class GroupColors:
    """The colours of a ``groups``-group layout on a fabric ``width`` wide: the grouped
    GEMM's own reduction and result colours (None when every column is its own group: no
    chain), and the redistribution's colour of each source column."""
    groups: int
    reduce: object
    result: object
    sources: tuple


def group_colors(width):
    """``{G: GroupColors}`` for every G > 1 dividing ``width`` that the colour budget
    holds (design choice, docs/gemm.md section 12): the colours are given out in
    :data:`FREE_COLORS` order to the largest G first (most useful at few tokens per PE),
    ``width`` source colours each plus a reduction and a result colour when the groups are
    wider than one column; a G that no longer fits gets none (the mapper cannot choose it
    in a block program). The same for every program on a fabric of this width, so layouts
    chosen for different blocks share their colours."""
    out, free = {}, list(FREE_COLORS)
    for g in sorted((g for g in range(2, width + 1) if width % g == 0), reverse=True):
        chain = width // g > 1
        need = width + (2 if chain else 0)
        if need > len(free):
            continue
        taken, free = free[:need], free[need:]
        out[g] = GroupColors(g, taken[0] if chain else None, taken[1] if chain else None,
                             tuple(taken[2:] if chain else taken))
    return out


def grouped_colors(mapping):
    """``mapping`` with the colour plan of its groups (the plain one for G = 1): a grouped
    GEMM in a block program keeps its reduction chain off the plain chain's colours."""
    import dataclasses
    if mapping.groups == 1:
        return mapping
    colors = group_colors(mapping.width).get(mapping.groups)
    if colors is None:
        raise MappingError(f"{mapping.groups} column groups on {mapping.width} columns need "
                           f"more colours than the {len(FREE_COLORS)} free ones "
                           f"({FREE_COLORS[0]}..{FREE_COLORS[-1]})")
    if colors.reduce is None:
        return mapping
    plan = ColorPlan(weight=mapping.colors.weight, reduce=colors.reduce, result=colors.result)
    return dataclasses.replace(mapping, colors=plan)


def redistributable(mapping):
    """None when X can be moved on the fabric from the plain layout into ``mapping``'s and
    its Y lands in the plain layout (so the next operation reads it in place), else the
    reason (a sentence). G = 1 needs nothing."""
    w, k, n = mapping.width, mapping.features, mapping.outputs
    if mapping.groups == 1:
        return None
    if mapping.groups not in group_colors(w):
        return (f"{mapping.groups} column groups on {w} columns need more than the "
                f"{len(FREE_COLORS)} free colours")
    if k % w or n % w:
        return (f"K = {k} and N = {n} must both split evenly over the {w} columns (every "
                f"plain piece one size, Y in the plain layout)")
    if held_features(mapping) != plain_layout(n, w):
        return "Y of the grouped layout is not the plain layout"
    return None


def sources(mapping, x):
    """The plain columns whose pieces column ``x`` receives, in the copy's order."""
    j = x % mapping.group_width
    return range(j * mapping.groups, (j + 1) * mapping.groups)


def destinations(mapping, s):
    """The columns that receive source ``s``'s piece (one per group), ascending."""
    j = s // mapping.groups
    return [g * mapping.group_width + j for g in range(mapping.groups)]


def _piece(mapping):
    return mapping.features // mapping.width


def copy_bytes(mapping, y):
    """Bytes of the copy in a PE of row ``y`` (the grouped X tile)."""
    return _piece(mapping) * mapping.groups * mapping.t_pad(y) * FP16_BYTES


def _color(mapping, s):
    return group_colors(mapping.width)[mapping.groups].sources[s]


def redistribute_routes(mapping):
    """``[(x, y, in_port, colour, mask)]``: each source's piece multicast along its row, on
    every row with tokens. Raises :class:`MappingError` (with :func:`redistributable`'s
    reason) when the layout cannot be reached."""
    why = redistributable(mapping)
    if why:
        raise MappingError(f"no redistribution into {mapping.groups} column groups: {why}")
    out = []
    if mapping.groups == 1:
        return out
    for y in range(mapping.height):
        if not mapping.tokens_per_row[y]:
            continue
        for s in range(mapping.width):
            dest = [d for d in destinations(mapping, s) if d != s]
            if not dest:
                continue
            c, lo, hi = _color(mapping, s), min(dest + [s]), max(dest + [s])
            first = (([Port.E] if hi > s else []) + ([Port.W] if lo < s else []))
            out.append((s, y, Port.RAMP, c, port_mask(*first)))
            for x in range(s + 1, hi + 1):
                ports = ([Port.RAMP] if x in dest else []) + ([Port.E] if x < hi else [])
                out.append((x, y, Port.W, c, port_mask(*ports)))
            for x in range(lo, s):
                ports = ([Port.RAMP] if x in dest else []) + ([Port.W] if x > lo else [])
                out.append((x, y, Port.E, c, port_mask(*ports)))
    return out


def redistribute_program(mapping, x, y, src_base, dst_base, token_major=False):
    """PE (x, y)'s program of ``REDISTRIBUTE``: ``(config, source)``, ``config`` =
    ``[(pe_address, [words])]``. ``src_base`` / ``dst_base``: byte addresses of the plain
    X tile and of the copy (:func:`copy_bytes` long). ``token_major``: lay the copy out
    ``[T_pad, K_group]`` (a token's features contiguous; the receiving DSRs write with a
    stride) instead of the grouped X tile's ``[K_group, T_pad]`` (the backward's dW reads
    one token's row of dY at a time, gpt_mapping/backward.py)."""
    from gpt_mapping.rowops import _Program
    from gpt_mapping.fabric_run import pe_params
    if not mapping.tokens_per_row[y]:
        return [], ""
    why = redistributable(mapping)
    if why:
        raise MappingError(f"no redistribution into {mapping.groups} column groups: {why}")
    pe = pe_params(mapping)
    prog = _Program(pe)
    tp, k = mapping.t_pad(y), _piece(mapping)
    grid = ((tp, 1), (k, tp))                 # one piece: [k, T_pad] FP16 feature-major
    F16 = R.DType.FP16
    if src_base % 4 or dst_base % 4:
        raise MappingError(f"tile ({x}, {y}): the redistribution's bases {src_base} and "
                           f"{dst_base} must be word aligned")
    prog.dsr("xsrc", R.Kind.MEM, dtype=F16, base=src_base // FP16_BYTES, dims=grid)
    remote = [d for d in destinations(mapping, x) if d != x]
    prog.emit("redistribute:")
    if remote:
        prog.dsr("xout", R.Kind.FOUT, dtype=F16, color=_color(mapping, x), dims=grid)
        prog.launch("fmov", "xout", "xsrc",
                    note=f"my piece to columns {', '.join(map(str, remote))}")
    total = k * mapping.groups
    for i, s in enumerate(sources(mapping, x)):
        if token_major:                       # element (t, f) at t * total + f
            prog.dsr(f"dst{s}", R.Kind.MEM, dtype=F16,
                     base=dst_base // FP16_BYTES + i * k, dims=((tp, total), (k, 1)))
        else:
            prog.dsr(f"dst{s}", R.Kind.MEM, dtype=F16,
                     base=dst_base // FP16_BYTES + i * k * tp, dims=grid)
        if s == x:
            prog.launch("fmov", f"dst{s}", "xsrc", note="my own piece, SRAM to SRAM")
        else:
            prog.dsr(f"in{s}", R.Kind.FIN, dtype=F16, color=_color(mapping, s), dims=grid)
            prog.launch("fmov", f"dst{s}", f"in{s}", note=f"the piece of column {s}")
    prog.emit("    tend                  # the launches run on; the step ends when they do")
    return prog.single_task(mapping.pe.data_base, f"tile ({x}, {y}): the redistribution's",
                            "redistribute", TASK, mapping.colors.weight, _CTRL_BASE)


def redistribute_streams(mapping):
    """Every column's stream: the one ``REDISTRIBUTE`` command."""
    color = mapping.colors.weight
    return [pack_array(data=0, index=int(BlockCommand.REDISTRIBUTE), ctrl=1, color=color)
            .reshape(1).astype(np.uint32) for _ in range(mapping.width)]


#: Cycles of a redistribution outside the busiest link's wavelets and the farthest hop
#: (the bound): the command's way down the column, the code task's start, its launches and
#: the FIN's last write-back. Taken from one measurement, the demo
#: block's (4 x 4, G = 4, T_y 8, K 64: 408 cycles, bound 390); bench/redistribute.py
#: checks the model on the other cases (docs/gemm.md section 12).
REDISTRIBUTE_FIXED = 18


def redistribute_bound(mapping, params=None):
    """The frozen model's lower bound (:func:`gpt_mapping.perf_model.redistribution_cycles`)
    of moving X from the plain layout into ``mapping``'s (0 for G = 1), at the ``T_pad``
    wavelets per feature the kernel sends (:func:`gpt_mapping.perf_model.choose_layout`
    charges it at ``T_y``, the same where no row is padded)."""
    if mapping.groups == 1:
        return 0
    # The tiles move whole, padding included: T_pad wavelets per feature.
    t_pad = int(mapping.t_pad_per_row.max())
    return int(redistribution_cycles(plain_layout(mapping.features, mapping.width),
                                     needed_features(mapping), t_pad, params))


def predict_redistribute_cycles(mapping, params=None):
    """Predicted cycles of the redistribution into ``mapping``'s groups on the fabric:
    :func:`redistribute_bound` plus :data:`REDISTRIBUTE_FIXED` (0 for G = 1)."""
    if mapping.groups == 1:
        return 0
    return redistribute_bound(mapping, params) + REDISTRIBUTE_FIXED


def decode_copies(mapping, words):
    """X [T, K] float16 from the copies read back, ``words`` = ``{(x, y): uint32 array}``
    (:func:`copy_bytes` each); raises :class:`MappingError` naming the tile and the first
    token and feature where two groups' copies differ."""
    out = np.zeros((mapping.tokens, mapping.features), dtype=np.uint16)
    seen = np.zeros(out.shape, dtype=bool)
    for (x, y), w in sorted(words.items()):
        t = int(mapping.tokens_per_row[y])
        if not t:
            continue
        tile = np.asarray(w, dtype="<u4").view("<u2").reshape(-1, mapping.t_pad(y))[:, :t].T
        tr, kr = mapping.token_range(y), mapping.feature_range(x)
        region = out[tr.start:tr.stop, kr.start:kr.stop]
        held = seen[tr.start:tr.stop, kr.start:kr.stop]
        bad = held & (region != tile)
        if bad.any():
            t0, k0 = np.argwhere(bad)[0]
            raise MappingError(f"tile ({x}, {y}): its copy of X[{tr.start + t0}, "
                               f"{kr.start + k0}] is {tile[t0, k0]:#06x}, another group's "
                               f"is {region[t0, k0]:#06x}")
        region[...] = tile
        held[...] = True
    return out.view(np.float16)


def run_redistribute_rtl(mapping, x16, **options):
    """Move X (float16 [T, K], loaded by the host in the plain layout at the PE's data base)
    into ``mapping``'s grouped layout on the RTL fabric: ``(copy, counters)``, ``copy`` the
    X every tile holds afterwards (:func:`decode_copies`: every group's copy agrees) and
    ``counters`` the run's (``cycles``, ``predicted_cycles``, router and PE counters).
    ``options`` as :func:`gpt_mapping.rowops.run_tile_op`'s."""
    from gpt_mapping.rowops import run_tile_op, row_mapping
    plain = row_mapping(mapping.tokens, mapping.features, mapping.width, mapping.height,
                        mapping.pe)
    src = mapping.pe.data_base
    dst = {(x, y): src + plain.features_per_column[x] * plain.t_pad(y) * FP16_BYTES
           for y in range(mapping.height) for x in range(mapping.width)}
    programs = {(x, y): redistribute_program(mapping, x, y, src, int(dst[x, y]))[0]
                for (x, y) in dst}
    reads = {xy: (int(dst[xy]), copy_bytes(mapping, xy[1]) // 4) for xy in dst
             if mapping.tokens_per_row[xy[1]]}
    _, _, counters = run_tile_op(plain, [(x16, lambda x, y: src)], programs,
                                 redistribute_streams(mapping),
                                 predict_redistribute_cycles(mapping), read_y=False,
                                 name="redistribution", extra_routes=redistribute_routes(mapping),
                                 extra_reads=reads, **options)
    copy = decode_copies(mapping, counters.pop("extra_reads"))
    return copy, counters


def block_layouts(mapping):
    """The column groups a block program can run ``mapping`` in: 1 and every G whose
    redistribution the fabric can do (:func:`redistributable`)."""
    import dataclasses
    from gpt_mapping.perf_model import group_candidates
    out = []
    for g in group_candidates(mapping):
        try:
            m = dataclasses.replace(mapping, groups=g, interleave=1)
        except MappingError:
            continue
        if redistributable(m) is None:
            out.append(g)
    return out


def choose_block_layout(mapping, w16, params=None):
    """The layout a GEMM of the GPT mapping takes (docs/gemm.md section 12): as
    :func:`gpt_mapping.perf_model.choose_layout`, over the column groups of
    :func:`block_layouts` and the validated interleaves, the fewest predicted cycles of the
    GEMM plus the move of its X (:func:`predict_redistribute_cycles`; Y of these layouts
    lies in the plain layout), with the grouped colours
    (:func:`grouped_colors`). The block program, the golden pipeline and the per-operation
    runs all take this one, so their bits agree."""
    from gpt_mapping.perf_model import layout_options
    from gpt_mapping.streams import nonzero_counts
    best = None
    for m, est in layout_options(mapping, lambda m: nonzero_counts(m, w16), params,
                                 block_layouts(mapping)):
        total = est.cycles + predict_redistribute_cycles(m, params)
        if best is None or total < best[0]:          # the smaller G, then I, on a tie
            best = (total, m)
    return grouped_colors(best[1])


def add_redistribution(counters, moves):
    """The GEMM's ``counters`` with the redistribution run's (``moves``) folded in: its
    cycles and predicted cycles added (the GEMM's row counts the moves of its X), the
    redistribution's own figures under ``redistribute``."""
    out = dict(counters)
    out["cycles"] = int(counters["cycles"]) + int(moves["cycles"])
    if "predicted_cycles" in counters:
        out["predicted_cycles"] = int(counters["predicted_cycles"]) + int(
            moves["predicted_cycles"])
    out["redistribute"] = {"cycles": int(moves["cycles"]),
                           "predicted_cycles": int(moves["predicted_cycles"]),
                           "wavelets_in": int(np.asarray(moves["pe_wavelets_in"]).sum())}
    return out
