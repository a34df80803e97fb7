"""Analytical model of the weight-streaming GEMM schedule: fabric cycles and FMAC utilization.

It predicts what the RTL fabric measures, from the mapping and the per-(column, n) counts of
streamed weights (:func:`gpt_mapping.streams.nonzero_counts`). Every latency, depth and rate
is an explicit field of :class:`PerfParams`, each the value of a piece of the hardware
(rtl/pe/pe.py, rtl/router.py; docs/pe.md), and the terms follow the PE recipe of
gpt_mapping/fabric_run.py. The derivation is in docs/gemm.md; in short:

* The rows run the same schedule in parallel; the column's weight stream is multicast to all
  of them, so the row with the most tokens (the *critical row*: T_y, T_pad) sets the pace.
* Column x spends, per output n, a *step*: the most of four resources it needs for n,
  - the FMAC chain: every weight's FMAC re-reads the accumulator lines the previous one
    wrote, so it issues ``max(g, pipeline_latency)`` cycles after it (g = T_pad / 4 vectors);
  - the datapath: ``nnz * g`` FMAC issues plus the reduction's own vectors, which fill the
    chain's idle cycles;
  - the task launcher: ``task_interval`` cycles per weight, and for the reduction command
    ``task_interval + launches - 1`` (a launch-list task) or, as the mapper runs it, a code
    task of the control core: ``task_interval - 1 + code_task_latency + launches`` (decoded
    and handed to the core, whose launches follow ``code_task_latency`` cycles later, one
    per cycle; its ``tend`` frees the weight colour for the next pick in the cycle after);
  - the RAMP input: the weights and the command, the 2 T_y partial-sum wavelets from the west
    and the T_y results tapped from the return path, at most one wavelet per cycle, each
    input stream in vectors that refill the PE's ``rx_depth``-deep queue after each issue.
* FMACs of n start when those of n - 1 are done and the accumulator buffer of n is free
  (:func:`accumulator_buffers` of them: the reduction of n overlaps the FMACs of n + 1).
* The reduction of n is one micro-thread per PE, chained along the row: its timing is that of
  the thread's vectors (:func:`reduction_thread`): 2 FP32 values per issue, the second half of
  an accumulator line only ``pipeline_latency`` after the first (the first issue's ``clear_a``
  of that line is still in the pipeline), an ``out_depth``-wavelet output buffer, a
  ``rx_depth``-deep input queue refilled one wavelet per cycle, and ordering: the next output's
  reduction thread on the same colors issues only once this one has sent its last wavelet
  (``retire_latency`` after it). So column x starts the reduction of n once its FMACs are
  written back, the first vector from x - 1 has arrived, and its reduction of n - 1 has
  retired. The east end rounds to FP16 and returns the result westward to the owner column.
* Fill: the first weight reaches the critical row after (y + 1) router hops and the RAMP.

* Column groups (``mapping.groups`` > 1): each group is a GEMM of its own on its W / G
  columns with all of K and its slice of N, sharing no link with the others; the GEMM takes
  as long as its slowest group (:func:`predict` of every group).

Cost is one loop over the N outputs with numpy vectors over the columns: GPT-2 sizes in well
under a second.

The layout choice (:func:`choose_layout`) adds to these predictions a bound on moving the
activations between layouts (:func:`redistribution_cycles`), which the RTL does not run.
"""

import dataclasses
from dataclasses import asdict, dataclass, field

import numpy as np

from gpt_mapping.layout import GemmMapping, MappingError

__all__ = ["PerfParams", "PerfEstimate", "ThreadTiming", "predict", "predict_from_weights",
           "accumulator_buffers", "reduction_thread", "choose_interleave", "choose_layout",
           "interleave_validated",
           "layout_options", "LayoutChoice", "redistribution_cycles", "held_features",
           "needed_features", "plain_layout", "group_candidates"]

#: FP32 lanes of the datapath (SPEC 1: FP32 ops run 2 lanes).
FP32_LANES = 2
#: Wavelets of one FP32 value on the fabric (low half, high half).
FP32_WAVELETS = 2
#: PE launch stages: a launch accepted at t (L0) is decoded at t + 1 (L1) and its thread can
#: issue at t + 2 (rtl/pe/pe.py).
LAUNCH_TO_ISSUE = 2


@dataclass(frozen=True)
class PerfParams:
    """Latencies (cycles), depths and rates of the schedule, each one of the hardware's.

    router_latency:   one router traversal (SPEC 3.2: 1).
    ramp_latency:     router RAMP output -> the PE's input queue, visible to its scheduler.
    pipeline_latency: datapath issue -> write-back. An issue may read a line written back
                      in its own cycle (forwarding), so a line written by an issue at t is
                      readable at t + pipeline_latency: the distance between two FMACs into
                      the same accumulators, and between the two halves of an accumulator
                      line that a reduction reads with ``clear_a``.
    out_latency:      write-back into a thread's output buffer -> its first wavelet on tx.
    retire_latency:   last wavelet of a fabric-output thread sent -> a thread ordered after
                      it (same color) issues.
    inject_interval:  cycles between wavelets injected at the north edge (1 = full rate).
    task_interval:    cycles of the task launcher per one-launch task (pick/decode, launch);
                      a task of e launches takes ``task_interval + e - 1``.
    code_task_latency: a code task of the control core (rtl/pe/core.py): cycles from the
                      core accepting it to its first launch (docs/core_pipeline.md: 4);
                      its e launches follow one per cycle and its ``tend`` frees the colour
                      in the cycle after the last, when the launcher picks again (0: the
                      reduction commands are launch-list tasks).
    rx_depth:         wavelets of the PE's input queue per color: a fabric input issues a
                      vector once it is queued whole, then the queue refills one per cycle.
    out_depth:        wavelets a fabric-output thread buffers (its credits).
    max_accumulator_buffers: the PE program rotates through as many accumulator buffers as
                      the cache holds for the largest T_pad, at least the mapping's
                      ``accumulator_buffers`` and at most this many (0: exactly the
                      mapping's). :func:`accumulator_buffers` is the rule.
    """
    router_latency: int = 1
    ramp_latency: int = 1
    pipeline_latency: int = 4
    out_latency: int = 1
    retire_latency: int = 2
    inject_interval: int = 1
    task_interval: int = 2
    code_task_latency: int = 4
    rx_depth: int = 4
    out_depth: int = 8
    max_accumulator_buffers: int = 4

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"PerfParams.{name} must be an int >= 0, not {value!r}")
        for name in ("inject_interval", "task_interval", "pipeline_latency"):
            if getattr(self, name) < 1:
                raise ValueError(f"PerfParams.{name} must be >= 1, not {getattr(self, name)}")
        if self.rx_depth < 2 * FP32_WAVELETS or self.out_depth < 2 * FP32_WAVELETS:
            raise ValueError(f"PerfParams.rx_depth and out_depth must hold a 2-lane FP32 "
                             f"vector ({2 * FP32_WAVELETS} wavelets), not "
                             f"{self.rx_depth} / {self.out_depth}")


@dataclass(frozen=True)
class ThreadTiming:
    """One reduction micro-thread, in cycles after its first issue (:func:`reduction_thread`).

    issues:      datapath issues it makes.
    last_issue:  its last issue.
    first_out:   the last wavelet of its first output vector leaves the PE (what the next
                 column waits for), or None without fabric output.
    last_out:    its last wavelet leaves the PE, or None.
    period:      the next thread ordered after it (same colors) may issue.
    """
    issues: int
    last_issue: int
    first_out: object
    last_out: object
    period: int


def reduction_thread(values, params=None, *, fabric_in=False, out_wavelets=0, lanes=2,
                     clear_pairs=True):
    """Vector-level timing of one reduction micro-thread of the PE recipe.

    ``values`` elements, ``lanes`` per issue (2 with an FP32 fabric input or output, 4
    otherwise); ``fabric_in``: each issue waits for its vector's wavelets (2 per FP32 value)
    to be queued whole, and the ``rx_depth``-deep queue refills one wavelet per cycle after
    the issue that emptied it; ``out_wavelets``: wavelets each value sends (0: none, 1:
    FP16, 2: FP32), at most ``out_depth`` outstanding, leaving ``pipeline_latency +
    out_latency`` after the issue, one per cycle; ``clear_pairs``: two consecutive 2-lane
    issues read the same accumulator line, which the first one clears, so the second waits
    ``pipeline_latency``.
    """
    p = params or PerfParams()
    issue, pops, prev = [], [], None
    out_time = None
    for start in range(0, values, lanes):
        count = min(lanes, values - start)
        if prev is None:
            t = 0
        else:
            t = prev + 1
            if clear_pairs and lanes == FP32_LANES and (start // lanes) % 2 == 1:
                t = max(t, prev + p.pipeline_latency)
            if fabric_in:
                t = max(t, prev + 1 + count * FP32_WAVELETS)
        waves = count * out_wavelets
        if waves:
            # Room for the vector in the output buffer: the wavelets issued before it, less
            # out_depth - waves, must have left.
            must_have_left = len(pops) - (p.out_depth - waves)
            if must_have_left > 0:
                t = max(t, pops[must_have_left - 1] + 1)
            ready = t + p.pipeline_latency + p.out_latency
            for _ in range(waves):
                ready = max(ready, pops[-1] + 1) if pops else ready
                pops.append(ready)
                ready += 1
            if out_time is None:
                out_time = pops[-1]
        issue.append(t)
        prev = t
    if pops:
        period = pops[-1] + p.retire_latency
    else:
        period = issue[-1] + 1
    return ThreadTiming(issues=len(issue), last_issue=issue[-1], first_out=out_time,
                        last_out=pops[-1] if pops else None, period=period)


@dataclass(frozen=True)
class PerfEstimate:
    """The prediction; :meth:`as_dict` is what reports carry."""
    cycles: int
    fmac_lane_ops: int            # useful: streamed weights x tokens (no padding lanes)
    fmac_lane_ops_issued: int     # including the padding lanes up to T_pad
    fmac_utilization: float       # fmac_lane_ops / (lanes * PEs * cycles)
    nonzero_weights: int
    pes: int
    lanes: int
    critical_row: int
    tokens_critical_row: int
    t_pad: int
    cycles_per_weight: int
    fill_cycles: int
    datapath_bound_steps: int     # (column, n) steps where the FMACs / datapath / launcher bind
    ramp_bound_steps: int         # ... where the PE's RAMP input (reduction traffic) does
    reduction_period: int         # cycles per output of the slowest reduction thread in a row
    busiest_column: int
    busiest_column_step_cycles: int
    params: PerfParams = field(default_factory=PerfParams)

    def as_dict(self):
        out = asdict(self)
        out["params"] = asdict(self.params)
        return out


def accumulator_buffers(mapping, params=None):
    """Accumulator buffers the GEMM's PE program rotates through (see
    :attr:`PerfParams.max_accumulator_buffers`); ``gpt_mapping.fabric_run`` uses this rule."""
    params = params or PerfParams()
    least = mapping.pe.accumulator_buffers
    il = mapping.interleave
    t_pad = int(mapping.t_pad_per_row.max())
    if il > 1:
        # Interleaved outputs: a whole number of groups of ``il`` buffers (the slot is added
        # to the group's base, which does not wrap), two groups when they fit.
        fits = mapping.pe.accumulator_words // t_pad if t_pad else 2 * il
        return max(il, min(2 * il, fits) // il * il)
    if params.max_accumulator_buffers == 0:
        return least
    fits = mapping.pe.accumulator_words // t_pad if t_pad else params.max_accumulator_buffers
    return max(least, min(params.max_accumulator_buffers, fits))


#: The interleaves the GPT mapping considers for each GEMM (docs/gemm.md section 9).
INTERLEAVES = (1, 2, 4)


def interleave_validated(mapping, interleave, params=None):
    """True where the model is validated for ``interleave`` outputs (docs/gemm.md
    sections 9 and 11), so the mapper may choose it: 1 always; otherwise the group must
    hide the FMA latency whole (``I g >= pipeline_latency``, g the FMAC's vectors) and
    two groups of buffers must fit the accumulator cache (``2 I T_pad`` words), so that one
    group's reductions overlap the next group's FMACs. Outside these the RTL measured the
    model off by -12.8 % (2 x 2, T_y 4, I = 2) and up to +67 % (I = 4 with one group of
    buffers, sparse: the first post-freeze round)."""
    if interleave == 1:
        return True
    p = params or PerfParams()
    t_pad = int(mapping.t_pad_per_row.max())
    g = -(-t_pad // mapping.pe.lanes)
    return interleave * g >= p.pipeline_latency \
        and 2 * interleave * t_pad <= mapping.pe.accumulator_words


def choose_interleave(mapping, w16, params=None, candidates=INTERLEAVES):
    """``mapping`` with the interleave of the fewest predicted cycles for weights ``w16``
    (the smaller on a tie; those the mapping cannot take are skipped): how the GPT mapping
    lays out each GEMM (the report names it, ``mapping.interleave``). An interleave that
    only partly hides the FMA latency, or whose buffers hold only one group, is not
    considered: the model is not validated there (:func:`interleave_validated`)."""
    from gpt_mapping.streams import nonzero_counts
    counts = nonzero_counts(mapping, w16)
    p = params or PerfParams()
    best = None
    for il in candidates:
        if not interleave_validated(mapping, il, p):
            continue
        try:
            m = dataclasses.replace(mapping, interleave=il)
        except MappingError:
            continue
        cycles = predict(m, counts, params).cycles
        if best is None or cycles < best[0]:
            best = (cycles, m)
    return best[1]


def predict_from_weights(mapping, w16, params=None):
    """:func:`predict` with the counts taken from W (float16 [K, N])."""
    from gpt_mapping.streams import nonzero_counts
    return predict(mapping, nonzero_counts(mapping, w16), params)


def _role_threads(t_y, lanes, p):
    """The reduction threads of the recipe (gpt_mapping.fabric_run.pe_program) for T_y."""
    return {
        # west: FMOV red_out <- acc (clear_a): FP32 out, 2 lanes
        "west": reduction_thread(t_y, p, out_wavelets=FP32_WAVELETS),
        # middle: FADD red_out <- acc + red_in (clear_a): FP32 in and out
        "middle": reduction_thread(t_y, p, fabric_in=True, out_wavelets=FP32_WAVELETS),
        # east, partial: FADD res_out <- acc + red_in (clear_a): FP32 in, FP16 out
        "east": reduction_thread(t_y, p, fabric_in=True, out_wavelets=1),
        # east, final: FADD y_w <- acc + red_in (clear_a) into SRAM ...
        "east_final": reduction_thread(t_y, p, fabric_in=True),
        # ... then FMOV res_out <- y_r: FP16 out, 4 lanes
        "east_return": reduction_thread(t_y, p, out_wavelets=1, lanes=lanes,
                                        clear_pairs=False),
        # one column: FMOV y_w <- acc (clear_a), 4 lanes, one line per issue
        "single": reduction_thread(t_y, p, lanes=lanes, clear_pairs=False),
    }


def _interleaved_chain(nz, il, g, latency):
    """[N, width]: the FMAC chain of each group of ``il`` outputs at its first output (0 at
    the others). Round r issues the r-th weight of every output that has one, so with the
    counts sorted d_1 >= d_2 >= ..., the rounds where j outputs remain cost ``max(j g,
    latency)`` each (an output's next FMAC reads what its previous one wrote)."""
    n_out, width = nz.shape
    out = np.zeros_like(nz)
    for first in range(0, n_out, il):
        d = -np.sort(-nz[first:first + il], axis=0)                   # [<= il, width]
        d = np.vstack([d, np.zeros((1, width), dtype=d.dtype)])
        j = np.arange(1, d.shape[0])[:, None]
        out[first] = ((d[:-1] - d[1:]) * np.maximum(j * g, latency)).sum(axis=0)
    return out


def _group_sum(a, il):
    """[N, width]: the sums over each group of ``il`` outputs at its first output."""
    a = np.asarray(a)
    out = np.zeros(a.shape, dtype=np.int64)
    out[::il] = np.add.reduceat(a, np.arange(0, a.shape[0], il), axis=0)
    return out


def _predict_groups(mapping, nonzero, params):
    """Column groups (SPEC 7): each group is a GEMM of its own on ``group_width`` columns
    (all of K, its slice of N) that runs beside the others, sharing no link; the GEMM takes
    as long as its slowest group."""
    parts = []
    for g in range(mapping.groups):
        cols, outs = mapping.group_columns(g), mapping.group_outputs(g)
        sub = dataclasses.replace(mapping, width=mapping.group_width, outputs=len(outs),
                                  groups=1)
        counts = nonzero[cols.start:cols.stop, outs.start:outs.stop]
        if nonzero[cols.start:cols.stop].sum() != counts.sum():
            raise ValueError(f"nonzero counts of column group {g} (columns {cols.start}.."
                             f"{cols.stop - 1}) name outputs outside its {outs.start}.."
                             f"{outs.stop - 1}")
        parts.append((cols.start, predict(sub, counts, params)))
    offset, slow = max(parts, key=lambda part: part[1].cycles)
    lanes, cycles = mapping.pe.lanes, slow.cycles
    useful = sum(e.fmac_lane_ops for _, e in parts)
    return dataclasses.replace(
        slow, fmac_lane_ops=useful,
        fmac_lane_ops_issued=sum(e.fmac_lane_ops_issued for _, e in parts),
        fmac_utilization=useful / (lanes * mapping.num_pes * cycles) if cycles else 0.0,
        nonzero_weights=sum(e.nonzero_weights for _, e in parts), pes=mapping.num_pes,
        datapath_bound_steps=sum(e.datapath_bound_steps for _, e in parts),
        ramp_bound_steps=sum(e.ramp_bound_steps for _, e in parts),
        reduction_period=max(e.reduction_period for _, e in parts),
        busiest_column=offset + slow.busiest_column)


def predict(mapping, nonzero, params=None):
    """Predict cycles and FMAC utilization of the GEMM ``mapping``.

    Parameters
    ----------
    mapping : GemmMapping
    nonzero : int [width, N], weights streamed by column x for output n
    params : PerfParams (defaults when None)
    """
    if not isinstance(mapping, GemmMapping):
        raise TypeError(f"mapping must be a GemmMapping, not {type(mapping).__name__}")
    params = params or PerfParams()
    nonzero = np.asarray(nonzero)
    width, outputs = mapping.width, mapping.outputs
    if nonzero.shape != (width, outputs):
        raise ValueError(f"nonzero counts must have shape (width, N) = {(width, outputs)}, "
                         f"got {nonzero.shape}")
    if nonzero.dtype.kind not in "iu" or (nonzero < 0).any() \
            or (nonzero > mapping.features_per_column[:, None]).any():
        raise ValueError("nonzero counts must be integers in 0..K_x per column")
    nonzero = nonzero.astype(np.int64)
    if mapping.groups > 1:
        return _predict_groups(mapping, nonzero, params)
    p = params
    lanes = mapping.pe.lanes

    # The critical row: most tokens; among those the farthest from the north edge.
    t_rows = mapping.tokens_per_row
    row = int(np.flatnonzero(t_rows == t_rows.max())[-1])
    t_y = int(t_rows[row])
    t_pad = int(mapping.t_pad_per_row[row])
    g = -(-t_pad // lanes)                       # FMAC vectors per weight
    threads = _role_threads(max(t_y, 1), lanes, p)
    fp16_vectors = -(-t_y // lanes)              # 4-lane FP16 vectors of a result column
    # An FMAC re-reads the accumulator lines the previous one of its output wrote.
    cycles_per_weight = max(g, p.pipeline_latency, p.inject_interval)

    x = np.arange(width)
    owner = mapping.owner_column(np.arange(outputs))
    chained = width > 1
    east = width - 1
    nz = nonzero.T                               # [N, width]
    owns = owner[:, None] == x                   # [N, width]

    # --- per (n, x): the reduction thread of column x and what it costs the PE ------------
    if chained:
        role = np.where(x == 0, 0, np.where(x == east, 2, 1))
        roles = [threads["west"], threads["middle"], threads["east"]]
        red_issues = np.array([r.issues for r in roles])[role]
        period = np.array([r.period for r in roles])[role]
        first_out = np.array([r.first_out for r in roles[:2]] + [0])[role]
        # the east end's own output: FADD into Y, then FMOV of Y to the return path
        east_final = threads["east_final"].issues + threads["east_return"].issues
        red_issues = np.where(owns & (x == east), east_final, red_issues)
        period = np.where(owns & (x == east),
                          max(threads["east_final"].period, threads["east_return"].period),
                          period)
        # results from the return path: drained, or stored by the owner
        red_issues = red_issues + np.where(x < east, fp16_vectors, 0)
        launches = np.where(x == east, np.where(owns, 2, 1), 2)
        # RAMP input: 2 T_y partial-sum wavelets (x > 0), T_y results (x < W - 1). Each
        # stream arrives in vectors (2 FP32 values, 4 FP16 values) that fill the color's
        # queue; the cycle its issue empties the queue takes no wavelet of that color.
        red_vectors = -(-t_y // FP32_LANES)
        ramp_waves = np.where(x > 0, FP32_WAVELETS * t_y + red_vectors, 0) \
            + np.where(x < east, t_y + fp16_vectors, 0)
    else:
        red_issues = np.full(width, threads["single"].issues)
        period = np.full(width, 1)
        first_out = np.zeros(width, dtype=np.int64)
        launches = np.ones(width, dtype=np.int64)
        ramp_waves = np.zeros(width, dtype=np.int64)
    red_issues = np.broadcast_to(red_issues, (outputs, width))
    period = np.broadcast_to(period, (outputs, width))
    launches = np.broadcast_to(launches, (outputs, width))

    chain = nz * cycles_per_weight
    il = mapping.interleave
    if il > 1:
        latency = max(p.pipeline_latency, p.inject_interval)
        chain = _interleaved_chain(nz, il, g, latency)
        if il * g <= latency:
            # No slack in the rounds: every issue of the group's reductions delays the
            # chain by its own cycle and by the cycle a blocked FMAC pick then wastes
            # (the scheduler picks a thread before it sees the pending write).
            chain = chain + 2 * _group_sum(red_issues, il)
    datapath = nz * g + red_issues
    if p.code_task_latency:
        command = p.task_interval - 1 + p.code_task_latency + launches
    else:
        command = p.task_interval + launches - 1
    launcher = nz * p.task_interval + command
    ramp_in = (nz + 1) * p.inject_interval + ramp_waves
    if il > 1:
        # A group of il outputs is one step: its weights alternate, so the resources add up
        # over the group (the chain already is the group's), charged to its first output.
        datapath, launcher, ramp_in = (_group_sum(a, il) for a in (datapath, launcher,
                                                                   ramp_in))
    pe_step = np.maximum(np.maximum(chain, datapath), launcher)
    step = np.maximum(pe_step, ramp_in)
    column_busy = step.sum(axis=0)

    # Hop of the chain: the first vector of x - 1 has left its PE and crossed two routers
    # into x's queue.
    hop = first_out + 2 * p.router_latency + p.ramp_latency
    hop = np.concatenate([[0], hop[:-1]])
    offset = np.cumsum(hop)
    buffers = accumulator_buffers(mapping, p)
    # The reduction reads the accumulator lines the last FMAC wrote: its first line is
    # written back pipeline_latency after that FMAC's first vector.
    after_fmac = np.where(nz > 0, max(0, p.pipeline_latency - g), 0)

    # --- the recurrence over outputs (max-plus; the chain along the row is a running max)
    # Fill: the first weight crosses (row + 1) routers into the PE's queue, the launcher
    # picks and launches it, and the launch takes LAUNCH_TO_ISSUE stages to its first issue.
    fill = (row + 1) * p.router_latency + p.ramp_latency + p.task_interval + LAUNCH_TO_ISSUE
    fmac_done = np.full(width, fill, dtype=np.int64)
    chain_start = np.full(width, -(1 << 40), dtype=np.int64)
    freed = np.full((buffers, width), fill, dtype=np.int64)        # ring of buffer-free times
    east_start = np.empty(outputs, dtype=np.int64)
    base = np.empty(width, dtype=np.int64)
    for n in range(outputs):
        free = freed[n % buffers]
        if n % il == 0:
            # the group's FMACs start when all its buffers are free
            for b in range(n, min(n + il, outputs)):
                np.maximum(fmac_done, freed[b % buffers], out=fmac_done)
        fmac_done += step[n]
        # base = max(FMACs written back, reduction of n - 1 retired), minus the hop offset
        if n:
            chain_start += period[n - 1]
        np.add(fmac_done, after_fmac[n], out=base)
        np.maximum(base, chain_start, out=base)
        base -= offset
        np.maximum.accumulate(base, out=chain_start)
        chain_start += offset
        np.add(chain_start, period[n], out=free)
        east_start[n] = chain_start[-1]

    # --- the tail: the last results reach their owners and are written back ---------------
    if chained:
        back = owner != east
        t_east = np.where(back, threads["east"].last_out,
                          threads["east_final"].last_issue)
        end = east_start + t_east
        # the last result crosses to the owner, whose store issues once it is queued
        end[back] += (east - owner[back]) * p.router_latency + p.router_latency \
            + p.ramp_latency
        end += p.pipeline_latency + 1
    else:
        end = east_start + threads["single"].last_issue + p.pipeline_latency + 1
    done = int(end.max())
    datapath_bound = int((pe_step >= ramp_in).sum())
    ramp_bound = step.size - datapath_bound

    cycles = int(done)
    nnz = int(nonzero.sum())
    useful = nnz * mapping.tokens
    issued = nnz * int(mapping.t_pad_per_row.sum())
    busiest = int(np.argmax(column_busy))
    return PerfEstimate(
        cycles=cycles, fmac_lane_ops=useful, fmac_lane_ops_issued=issued,
        fmac_utilization=useful / (lanes * mapping.num_pes * cycles) if cycles else 0.0,
        nonzero_weights=nnz, pes=mapping.num_pes, lanes=lanes, critical_row=row,
        tokens_critical_row=t_y, t_pad=t_pad, cycles_per_weight=cycles_per_weight,
        fill_cycles=fill, datapath_bound_steps=datapath_bound, ramp_bound_steps=ramp_bound,
        reduction_period=int(period.max()),
        busiest_column=busiest, busiest_column_step_cycles=int(column_busy[busiest]),
        params=p)


# --- column groups: the layout choice and the cost of moving activations between layouts ---

def held_features(mapping):
    """``[(start, stop)]`` per column: the outputs column x stores (Y's layout, one copy)."""
    b = mapping.output_bounds
    return [(int(b[x]), int(b[x + 1])) for x in range(mapping.width)]


def needed_features(mapping):
    """``[(start, stop)]`` per column: the features column x reads (X's layout; with
    column groups every group holds all of K)."""
    return [(int(a), int(a + k)) for a, k in zip(mapping.feature_starts,
                                                 mapping.features_per_column)]


def plain_layout(features, width):
    """The plain layout of ``features`` over ``width`` columns (the balanced split)."""
    b = (np.arange(width + 1, dtype=np.int64) * features) // width
    return [(int(b[x]), int(b[x + 1])) for x in range(width)]


def redistribution_cycles(held, needed, t_y, params=None):
    """A lower bound on the cycles to move a row's activations from layout ``held`` (each
    feature in exactly one column) to layout ``needed`` (each column a range of features,
    a feature possibly needed by several columns), every column's features being ``t_y``
    FP16 values of one wavelet each.

    Each feature leaves its holder once and is multicast by the routers to the columns that
    need it: the eastward link between columns c and c + 1 carries the features held at or
    west of c and needed east of it, the westward link likewise; a PE's RAMP takes in the
    features it needs but does not hold and sends out those it holds and others need. At one
    wavelet per link and cycle the busiest of these sets the time, plus the latency of the
    farthest hop (its routers and the two RAMPs). The RTL does not run redistributions
    (docs/gemm.md section 10): this bound is what the layout choice charges, not a
    validated prediction.
    """
    p = params or PerfParams()
    width = len(held)
    if len(needed) != width:
        raise ValueError(f"held and needed layouts cover {width} and {len(needed)} columns")
    features = max(stop for _, stop in held)
    source = np.full(features, -1, dtype=np.int64)
    for x, (a, b) in enumerate(held):
        if (source[a:b] >= 0).any():
            raise ValueError(f"the held layout holds feature {a + int(np.argmax(source[a:b] >= 0))}"
                             f" in column {x} and in column {int(source[a:b].max())}: each "
                             f"feature must be held once")
        source[a:b] = x
    if (source < 0).any():
        raise ValueError(f"the held layout does not hold feature {int(np.argmax(source < 0))}")
    need = np.zeros((width, features), dtype=bool)
    for x, (a, b) in enumerate(needed):
        if b > features:
            raise ValueError(f"column {x} needs features up to {b - 1}, the layout holds "
                             f"{features}")
        need[x, a:b] = True
    cols = np.arange(width)[:, None]
    moved = need & (cols != source[None, :])                 # [width, features]
    if not moved.any():
        return 0
    any_moved = moved.any(axis=0)
    east_most = np.where(moved.any(axis=0), width - 1 - np.argmax(moved[::-1], axis=0), -1)
    west_most = np.where(any_moved, np.argmax(moved, axis=0), width)
    links = np.arange(width - 1)[:, None]                    # link c: between c and c + 1
    east = ((source[None, :] <= links) & (east_most[None, :] > links)).sum(axis=1)
    west = ((west_most[None, :] <= links) & (source[None, :] > links)).sum(axis=1)
    ramp_in = moved.sum(axis=1)
    ramp_out = np.bincount(source[any_moved], minlength=width)
    busiest = max(int(east.max(initial=0)), int(west.max(initial=0)), int(ramp_in.max()),
                  int(ramp_out.max()))
    src = source[any_moved]
    hops = int(np.maximum(east_most[any_moved] - src, src - west_most[any_moved]).max())
    return busiest * t_y + (hops + 1) * p.router_latency + 2 * p.ramp_latency


def group_candidates(mapping):
    """The column groups a mapping can take: the divisors G of the width with G <= N."""
    return [g for g in range(1, mapping.width + 1)
            if mapping.width % g == 0 and g <= mapping.outputs]


@dataclass(frozen=True)
class LayoutChoice:
    """A GEMM's chosen layout: the mapping, its predicted cycles, and the redistribution
    bound charged for bringing X into its layout (``cycles_in``) and its Y into the layout
    the next operation reads (``cycles_out``)."""
    mapping: GemmMapping
    estimate: PerfEstimate
    cycles_in: int
    cycles_out: int

    @property
    def total_cycles(self):
        return self.estimate.cycles + self.cycles_in + self.cycles_out


def layout_options(mapping, nonzero_of, params=None, groups=None, interleaves=INTERLEAVES):
    """Every (groups, interleave) layout of ``mapping`` the fabric can take, predicted:
    ``[(mapping, PerfEstimate)]``. ``nonzero_of(mapping)`` gives the counts of a layout
    (:func:`gpt_mapping.streams.nonzero_counts` with the weights). Interleaves where the
    model is not validated are left out as in :func:`choose_interleave`."""
    p = params or PerfParams()
    out = []
    for g in groups or group_candidates(mapping):
        for il in interleaves:
            if not interleave_validated(mapping, il, p):
                continue
            try:
                m = dataclasses.replace(mapping, groups=g, interleave=il)
            except MappingError:
                continue
            out.append((m, predict(m, nonzero_of(m), p)))
    return out


def choose_layout(mapping, w16, params=None, *, held=None, then=None, groups=None,
                  interleaves=INTERLEAVES):
    """The layout (column groups and interleave) of fewest cycles for weights ``w16``,
    counting the redistribution bound (:func:`redistribution_cycles`) from the layout
    ``held`` that X is in (default: the plain layout, where nothing moves for G = 1) and
    to the layout ``then`` the next operation reads Y in (default: the plain layout).
    Returns a :class:`LayoutChoice` (the smaller G, then I, on a tie)."""
    from gpt_mapping.streams import nonzero_counts
    p = params or PerfParams()
    t_y = int(mapping.tokens_per_row.max())
    if held is None:
        held = plain_layout(mapping.features, mapping.width)
    if then is None:
        then = plain_layout(mapping.outputs, mapping.width)
    best = None
    for m, est in layout_options(mapping, lambda m: nonzero_counts(m, w16), p, groups,
                                 interleaves):
        choice = LayoutChoice(m, est, redistribution_cycles(held, needed_features(m), t_y, p),
                              redistribution_cycles(held_features(m), then, t_y, p))
        if best is None or choice.total_cycles < best.total_cycles:
            best = choice
    return best
