"""Analytical model of the weight-streaming GEMM schedule: fabric cycles and FMAC utilization.

It predicts what the RTL fabric will measure, from the mapping and the per-(column, n) counts
of streamed weights (:func:`gpt_mapping.streams.nonzero_counts`). Every latency and rate is an
explicit field of :class:`PerfParams`, to be calibrated against the RTL's counters (target:
within 10 %). The model and its derivation are in docs/gemm.md; in short:

* The rows run the same schedule in parallel; the column's weight stream is multicast to all
  of them, so the row with the most tokens (the *critical row*: T_y, T_pad) sets the pace.
* Column x spends, per output n, a *step* of ``max(datapath, ramp-in)`` cycles:
  datapath = nnz(x, n) * max(ceil(T_pad / lanes), accumulate_interval, task_interval) FMAC
  cycles (calibrated on the RTL: docs/fabric.md) + the reduction's own vector work
  (FP32 adds at 2 lanes, FP16 convert/store at 4 lanes) + ``command_cycles``;
  ramp-in = the wavelets the PE must take in: nnz(x, n) weights + 1 command + 2 T_y partial
  sums from the west (x > 0) + T_y FP16 results tapped from the return path (x < W - 1).
* FMACs of n start when those of n - 1 are done and an accumulator buffer is free
  (``accumulator_buffers`` = 2: the reduction of n overlaps the FMACs of n + 1).
* The reduction of n streams through the row: column x starts it once its FMACs of n are done
  (+ ``fmac_latency``), the partial sums from x - 1 have arrived (chain hop ``2 router +
  ramp + fadd`` latency) and its RAMP output is done with n - 1; it occupies the link for
  2 T_y cycles (FP32 = 2 wavelets). The east end rounds to FP16 and returns the result
  westward to the owner column.
* Fill: the first weight reaches the critical row after (y + 1) router hops + the RAMP.

Cost is one loop over the N outputs with numpy vectors over the columns: GPT-2 sizes in well
under a second.
"""

from dataclasses import asdict, dataclass, field

import numpy as np

from gpt_mapping.layout import GemmMapping

__all__ = ["PerfParams", "PerfEstimate", "predict", "predict_from_weights",
           "accumulator_buffers"]

#: FP32 lanes of the datapath (SPEC 1: FP32 ops run 2 lanes).
FP32_LANES = 2


@dataclass(frozen=True)
class PerfParams:
    """Latencies (cycles) and rates of the schedule; calibrate against the RTL.

    Defaults: SPEC 3.2 for the router, docs/fp_units.md for the FP pipelines (FMA 3 cycles,
    FP32 -> FP16 1 cycle); the rest are first guesses until the PE is measured.

    router_latency:  one router traversal (SPEC 3.2: 1).
    ramp_latency:    between a router's RAMP port and the PE's task/datapath.
    fmac_latency:    FMAC pipeline depth: last weight accepted -> accumulators final.
    fadd_latency:    FP32 add pipeline of one reduction step (s + P_x).
    convert_latency: FP32 -> FP16 rounding at the chain's east end.
    command_cycles:  datapath/scheduler cycles to start one reduction (per output, per PE).
    weight_cycles:   extra cycles per streamed weight beyond its FMAC vectors (task dispatch).
    inject_interval: cycles between wavelets injected at the north edge (1 = full rate).
    accumulate_interval: fewest cycles between two FMACs issuing the same accumulator line
                     (the result of one must be written before the next reads it: the PE's
                     issue-to-write-back distance).
    task_interval:   fewest cycles between two tasks started by the PE's task launcher.
    reduce_ramp_overhead: percent of extra RAMP-input cycles per reduction wavelet (partial
                     sums, results) beyond one per cycle: flow-control bubbles between the
                     router and the PE's 4-deep color queues, measured on the RTL.
    max_accumulator_buffers: the PE program rotates through as many accumulator buffers as
                     the cache holds for the largest T_pad, at least the mapping's
                     ``accumulator_buffers`` and at most this many (0: exactly the
                     mapping's). :func:`accumulator_buffers` is the rule.
    """
    router_latency: int = 1
    ramp_latency: int = 1
    fmac_latency: int = 3
    fadd_latency: int = 3
    convert_latency: int = 1
    command_cycles: int = 1
    weight_cycles: int = 0
    inject_interval: int = 1
    accumulate_interval: int = 4
    task_interval: int = 2
    reduce_ramp_overhead: int = 10
    max_accumulator_buffers: int = 4

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"PerfParams.{name} must be an int >= 0, not {value!r}")
        if self.inject_interval < 1:
            raise ValueError(f"PerfParams.inject_interval must be >= 1, "
                             f"not {self.inject_interval}")


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
    datapath_bound_steps: int     # (column, n) steps where the datapath is the bottleneck
    ramp_bound_steps: int         # ... where the PE's RAMP input (reduction traffic) is
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
    if params.max_accumulator_buffers == 0:
        return least
    t_pad = int(mapping.t_pad_per_row.max())
    fits = mapping.pe.accumulator_words // t_pad if t_pad else params.max_accumulator_buffers
    return max(least, min(params.max_accumulator_buffers, fits))


def predict_from_weights(mapping, w16, params=None):
    """:func:`predict` with the counts taken from W (float16 [K, N])."""
    from gpt_mapping.streams import nonzero_counts
    return predict(mapping, nonzero_counts(mapping, w16), params)


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
    p = params
    lanes = mapping.pe.lanes

    # The critical row: most tokens; among those the farthest from the north edge.
    t_rows = mapping.tokens_per_row
    row = int(np.flatnonzero(t_rows == t_rows.max())[-1])
    t_y = int(t_rows[row])
    t_pad = int(mapping.t_pad_per_row[row])
    fp16_vectors = -(-t_pad // lanes)
    fp32_vectors = -(-t_pad // FP32_LANES)
    # A weight's FMAC re-reads the accumulator lines the previous one wrote: it can issue a
    # line only ``accumulate_interval`` cycles after the previous FMAC issued it; the task
    # launcher starts one task per ``task_interval`` cycles.
    cycles_per_weight = max(p.inject_interval, p.task_interval, p.accumulate_interval,
                            fp16_vectors + p.weight_cycles)

    x = np.arange(width)
    owner = mapping.owner_column(np.arange(outputs))
    chained = width > 1
    # Reduction work of each column per output, outside the FMACs.
    # Chained: every column moves (x = 0) or adds (x > 0) its T_pad FP32 sums, 2 lanes wide;
    # the east end then rounds them to FP16 (straight to memory when it owns n). Owners
    # elsewhere store the FP16 results arriving on the return path.
    reduce_vectors = (fp32_vectors if chained else 0) + np.where(x == width - 1, fp16_vectors, 0)
    owner_store = (owner[:, None] == x) & (x != width - 1)
    ramp_reduce = (np.where(x > 0, 2 * t_y, 0) + np.where(x < width - 1, t_y, 0)) if chained \
        else np.zeros(width, dtype=np.int64)
    # Cycles the RAMP output (chain) or the local store (1 column) is busy per output.
    reduce_span = 2 * t_y if chained else fp16_vectors
    hop = 2 * p.router_latency + p.ramp_latency + p.fadd_latency
    ramp_offset = x * hop
    buffers = accumulator_buffers(mapping, p)

    # Step of every (n, column), vectorised: [N, width].
    nz = nonzero.T
    datapath = nz * cycles_per_weight + p.command_cycles + reduce_vectors \
        + owner_store * fp16_vectors
    ramp_in = (nz + 1) * p.inject_interval \
        + -(-ramp_reduce * (100 + p.reduce_ramp_overhead) // 100)
    step = np.maximum(datapath, ramp_in)
    column_busy = step.sum(axis=0)

    # The recurrence over outputs (max-plus; the chain along the row is a running maximum).
    fill = (row + 1) * p.router_latency + p.ramp_latency
    fmac_done = np.full(width, fill, dtype=np.int64)
    chain_start = np.full(width, -(1 << 40), dtype=np.int64)
    freed = np.full((buffers, width), fill, dtype=np.int64)        # ring of buffer-free times
    east_start = np.empty(outputs, dtype=np.int64)
    base = np.empty(width, dtype=np.int64)
    for n in range(outputs):
        free = freed[n % buffers]
        np.maximum(fmac_done, free, out=fmac_done)
        fmac_done += step[n]
        # base = max(FMACs done + pipeline, RAMP output done with n - 1), minus the hop offset
        np.add(chain_start, reduce_span - ramp_offset, out=chain_start)
        np.add(fmac_done, p.fmac_latency, out=base)
        base -= ramp_offset
        np.maximum(base, chain_start, out=base)
        np.maximum.accumulate(base, out=chain_start)
        chain_start += ramp_offset
        np.add(chain_start, reduce_span, out=free)
        east_start[n] = chain_start[-1]
    end = east_start + reduce_span
    if chained:
        end += p.fadd_latency + p.convert_latency
        back = owner != width - 1
        end[back] += (width - owner[back]) * p.router_latency + p.ramp_latency
    else:
        end += p.convert_latency
    done = int(end.max())
    datapath_bound = int((datapath >= ramp_in).sum())
    ramp_bound = datapath.size - datapath_bound

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
        busiest_column=busiest, busiest_column_step_cycles=int(column_busy[busiest]),
        params=p)
