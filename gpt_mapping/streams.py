"""Weight streams of the GEMM: what MemoryX injects at the north edge of every column.

Column x's stream (SPEC section 7), for each output n = 0 .. N-1:

* for each k in K_x ascending with W[k, n] != 0 (both +0.0 and -0.0 are zero and never
  sent), one data wavelet: ``data`` = the FP16 bits of W[k, n], ``index`` = k - start(K_x),
  ``ctrl`` = 0, ``color`` = the column's weight colour;
* then one command wavelet: ``ctrl`` = 1, ``index`` = a :class:`ReductionCommand` code,
  ``data`` = n_local, the index of n inside its owner's output range N_owner, same colour.

The command codes are defined here, once; the PE binds its reduction tasks to them.
Streams are numpy ``uint32`` wavelet words built with :func:`rtl.wavelet.pack_array`.
"""

import enum

import numpy as np

from gpt_mapping.layout import GemmMapping, MappingError, block_bounds, check_gemm_operands
from rtl.wavelet import pack_array

__all__ = ["ReductionCommand", "BlockCommand", "streamed_mask", "nonzero_counts", "column_stream",
           "weight_streams", "stream_length"]


class ReductionCommand(enum.IntEnum):
    """Command codes carried in the ``index`` field of a weight stream's control wavelets.

    The PE of column x in every row reacts to the command for output n (argument ``data`` =
    n_local) once the FMACs of n are done:

    ``PARTIAL_SUM``: x does not own n. Add the FP32 partial sums arriving on the reduce colour
    from x - 1 (none at x = 0) to its accumulators, in token order, and send the sums east
    (at the east end x = W - 1: round to FP16 and send them west on the result colour);
    then release the accumulator buffer.
    ``FINAL_SUM``: x owns n. The same contribution to the chain, and store the FP16 result
    (from the result colour, or computed locally when x = W - 1) at Y[:, n_local].

    Code 0 is reserved so that an all-zero control wavelet is never a valid command.
    """
    PARTIAL_SUM = 1
    FINAL_SUM = 2


class BlockCommand(enum.IntEnum):
    """Command codes of the block's other operations (gpt_mapping/rowops.py,
    gpt_mapping/elementwise.py; docs/rowops.md), in the same code space as
    :class:`ReductionCommand` (one binding serves both; data wavelets stay the GEMM's
    weights):

    ``ROW_REDUCE``: reduce the PE's activation tile over its features and along the row
    (sum or max, as the PE's program says); every PE of the row keeps the FP32 result.
    ``LAYERNORM``: LayerNorm's statistics and normalisation; the stream then carries the
    column's scale (one ``LN_SCALE`` per feature, in feature order, ``data`` = the FP16
    scale) and shift (one ``LN_SHIFT`` per feature, ``data`` = the FP16 shift).
    ``BIAS``: one per feature of the column, in order, ``data`` = the FP16 bias: add it to
    that feature's column.
    ``RESIDUAL``: add the tile's second operand (the residual stream) to it.
    ``GELU``: the GELU kernel over the tile.
    ``ATTN_SCORES``: the attention's scores, causal mask and softmax of the PE's head and
    queries (gpt_mapping/attention.py); ``ATTN_VALUES``: its ``P V``.
    ``STREAM``: send the PE's operand to its neighbour (bench/zero_filter.py).
    ``REDISTRIBUTE``: copy the PE's activation tile to the columns of the other column
    groups that need it and take theirs (gpt_mapping/redistribute.py).
    ``REDUCE_NORTH``: add the PE's FP32 partial to what arrives from the south and send the
    sum north, off the fabric at row 0 (gradients to MemoryX, gpt_mapping/backward.py).
    """
    ROW_REDUCE = 3
    LAYERNORM = 4
    LN_SCALE = 5
    LN_SHIFT = 6
    BIAS = 7
    RESIDUAL = 8
    GELU = 9
    ATTN_SCORES = 10
    ATTN_VALUES = 11
    STREAM = 12
    REDISTRIBUTE = 13
    REDUCE_NORTH = 14


def _weight_bits(w16):
    check_gemm_operands(None, w16)
    return w16.view(np.uint16)


def streamed_mask(w16):
    """bool [K, N]: True where W[k, n] is sent (not +0.0 or -0.0)."""
    return (_weight_bits(w16) & 0x7FFF) != 0


def _check(mapping, w16):
    if not isinstance(mapping, GemmMapping):
        raise TypeError(f"mapping must be a GemmMapping, not {type(mapping).__name__}")
    check_gemm_operands(None, w16)
    if w16.shape != (mapping.features, mapping.outputs):
        raise MappingError(f"W has shape {w16.shape}, the mapping expects "
                           f"({mapping.features}, {mapping.outputs})")


def nonzero_counts(mapping, w16):
    """int64 [width, N]: the weights column x streams for output n (its FMAC count per n);
    0 for the outputs of other column groups, which the column never sees.

    ``.sum(axis=1)`` gives the non-zeros per column, ``.sum()`` all of them.
    """
    _check(mapping, w16)
    mask = streamed_mask(w16).astype(np.int64)
    # Segment sums over the K split: cumulative sum, differences at the column bounds.
    cum = np.vstack([np.zeros((1, mapping.outputs), dtype=np.int64), np.cumsum(mask, axis=0)])
    starts = mapping.feature_starts
    counts = cum[starts + mapping.features_per_column] - cum[starts]
    if mapping.groups > 1:
        group = mapping.group_of(np.arange(mapping.width))
        n_group = np.repeat(np.arange(mapping.groups),
                            np.diff(block_bounds(mapping.groups, mapping.outputs)))
        counts[group[:, None] != n_group[None, :]] = 0
    return counts


def stream_length(mapping, w16, column):
    """Number of wavelets in ``column``'s stream: its non-zeros plus one command per output
    of its column group."""
    outputs = mapping.group_outputs(mapping.group_of(column))
    return int(nonzero_counts(mapping, w16)[column].sum()) + len(outputs)


def column_stream(mapping, w16, column):
    """The weight stream of ``column`` as ``uint32`` wavelet words, in injection order.

    The column streams the outputs of its column group (all of N in the plain layout).
    They go in groups of ``mapping.interleave`` (1: each output alone, the plain
    layout): a group's weights alternate round by round (round r: the r-th non-zero of each
    of its outputs that has one, outputs ascending), each wavelet's index ``k_local * I +
    slot``, then the group's commands, outputs ascending (SPEC 7's interleaved outputs)."""
    _check(mapping, w16)
    il = mapping.interleave
    k_x = mapping.feature_range(column)
    outputs = mapping.group_outputs(mapping.group_of(column))
    color = mapping.colors.weight_color(column)
    bits = w16.view(np.uint16)[k_x.start:k_x.stop, outputs.start:outputs.stop].T
    mask = (bits & 0x7FFF) != 0                                 # [N_g, K_x]: order n, k
    per_n = mask.sum(axis=1)
    n_of, k_local = np.nonzero(mask)                            # sorted by n, then k
    rank = np.arange(len(n_of)) - (np.cumsum(per_n) - per_n)[n_of]     # k's place in n
    order = np.lexsort((n_of % il, rank, n_of // il))           # group, round, slot
    n_of, k_local = n_of[order], k_local[order]
    words = np.empty(len(n_of) + len(outputs), dtype=np.uint32)
    # Each group's data wavelets are followed by its commands: shift by the commands before.
    words[np.arange(len(n_of)) + n_of // il * il] = pack_array(
        data=bits[n_of, k_local], index=k_local * il + n_of % il, ctrl=0, color=color)
    rel = np.arange(len(outputs))
    n = outputs.start + rel
    owner = mapping.owner_column(n)
    command = np.where(owner == column, int(ReductionCommand.FINAL_SUM),
                       int(ReductionCommand.PARTIAL_SUM))
    group_ends = np.cumsum(np.bincount(rel // il, weights=per_n).astype(np.int64))
    words[group_ends[rel // il] + rel] = pack_array(data=mapping.n_local(n), index=command,
                                                    ctrl=1, color=color)
    return words


def weight_streams(mapping, w16):
    """The streams of every column: a list of ``uint32`` arrays, index = column."""
    return [column_stream(mapping, w16, x) for x in range(mapping.width)]
