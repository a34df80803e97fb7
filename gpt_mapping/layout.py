"""The mapping data model of the weight-streaming GEMM (SPEC section 7).

Y = X W with X [T, K], W [K, N] in FP16 on a fabric of ``width`` x ``height`` tiles:

* tokens are split along y (rows) and features along x (columns) with the balanced block
  split ``start(i, p, n) = floor(i * n / p)``; the outputs n are split along x the same way,
  so Y comes out distributed exactly as X was;
* PE (x, y) holds X[T_y, K_x] one feature column at a time, each column of T_y tokens padded
  to ``T_pad`` (a multiple of the 4 FP16 lanes) so every 4-lane access is 8-byte aligned;
  Y[T_y, N_x] is stored the same way;
* one colour table (:class:`ColorPlan`) names every colour the GEMM uses.

Everything here is checked before anything is simulated (SPEC section 10):
:func:`map_gemm` raises :class:`MappingError` (or ``TypeError`` for wrong dtypes) with a
message that names the array, the tile (x, y), the column or the row at fault.
"""

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from rtl.wavelet import FIELDS, INDEX_BITS, NUM_COLORS

__all__ = [
    "block_start", "block_len", "block_range", "block_bounds", "block_owner",
    "PEConfig", "ColorPlan", "Route", "PORTS", "TileFootprint", "GemmMapping",
    "MappingError", "OperandTypeError", "map_gemm", "parse_fabric", "check_gemm_operands",
    "balanced_output_order",
]

#: Bits of the wavelet ``data`` field: the command argument (``n_local``) must fit it.
DATA_BITS = FIELDS["data"][1]
FP16_BYTES = 2
FP32_BYTES = 4


class MappingError(ValueError):
    """A GEMM that cannot be mapped onto the fabric; the message names what does not fit."""


class OperandTypeError(MappingError, TypeError):
    """An operand of the wrong type or dtype (a ``TypeError`` and a :class:`MappingError`)."""


# --- balanced block split ----------------------------------------------------------------------

def block_start(i, parts, n):
    """First index of block ``i`` of ``n`` items split into ``parts``: ``floor(i * n / parts)``.

    Works on Python ints and on integer numpy arrays (vectorised over ``i``).
    """
    if isinstance(i, np.ndarray):
        i = i.astype(np.int64)
    return (i * n) // parts


def block_len(i, parts, n):
    """Number of items in block ``i``: ``start(i + 1) - start(i)`` (the sizes differ by <= 1)."""
    return block_start(i + 1, parts, n) - block_start(i, parts, n)


def block_range(i, parts, n):
    """The items of block ``i`` as a ``range``."""
    return range(block_start(i, parts, n), block_start(i + 1, parts, n))


def block_bounds(parts, n):
    """All block boundaries: an int64 array ``b`` of ``parts + 1`` with block i = [b[i], b[i+1])."""
    return (np.arange(parts + 1, dtype=np.int64) * n) // parts


def block_owner(j, parts, n):
    """The block that holds item ``j`` (vectorised over ``j``); empty blocks own nothing."""
    j = np.asarray(j, dtype=np.int64)
    if np.any((j < 0) | (j >= n)):
        raise ValueError(f"item index out of range [0, {n}): {j[(j < 0) | (j >= n)].flat[0]}")
    return np.searchsorted(block_bounds(parts, n), j, side="right") - 1


def _frozen(array):
    """``array`` made read-only: the mapping caches it and hands the same object out."""
    array.flags.writeable = False
    return array


def _pad(length, multiple):
    """``length`` rounded up to a multiple of ``multiple`` (vectorised)."""
    return -(-np.asarray(length) // multiple) * multiple


# --- the PE as the mapper sees it --------------------------------------------------------------

@dataclass(frozen=True)
class PEConfig:
    """The PE parameters the mapping depends on (SPEC section 1 defaults).

    Parameters
    ----------
    sram_banks, sram_bank_words, sram_word_bits:
        SRAM geometry: 8 banks x 1536 words x 32 bit = 48 KiB by default.
    accumulator_words:
        FP32 words of the accumulator cache beside the datapath (64 = 256 B).
    accumulator_buffers:
        How many outputs' accumulators the cache must hold at once: 2 = double buffering, so
        the reduction of output n overlaps the FMACs of n + 1.
    lanes:
        FP16 lanes of the datapath (4 = one 64-bit access); token columns are padded to it.
    reserved_sram_bytes:
        SRAM kept for everything that is not X or Y (program, descriptors, task table,
        FIFOs). A placeholder until the PE's own footprint is known.
    """
    sram_banks: int = 8
    sram_bank_words: int = 1536
    sram_word_bits: int = 32
    accumulator_words: int = 64
    accumulator_buffers: int = 2
    lanes: int = 4
    reserved_sram_bytes: int = 2048

    def __post_init__(self):
        for name in ("sram_banks", "sram_bank_words", "sram_word_bits", "accumulator_words",
                     "accumulator_buffers", "lanes"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"PEConfig.{name} must be a positive int, not {value!r}")
        if self.sram_word_bits % 8:
            raise ValueError(f"PEConfig.sram_word_bits must be a multiple of 8, "
                             f"not {self.sram_word_bits}")
        r = self.reserved_sram_bytes
        if not isinstance(r, (int, np.integer)) or isinstance(r, bool) or r < 0:
            raise ValueError(f"PEConfig.reserved_sram_bytes must be an int >= 0, not {r!r}")

    @property
    def sram_bytes(self):
        """Total SRAM in bytes."""
        return self.sram_banks * self.sram_bank_words * self.sram_word_bits // 8

    @property
    def vector_bytes(self):
        """Bytes of one datapath vector access (lanes x FP16): the alignment of every column."""
        return self.lanes * FP16_BYTES

    @property
    def data_base(self):
        """Byte address of the first X column: the reserved area rounded up to a vector."""
        return int(_pad(self.reserved_sram_bytes, self.vector_bytes))


# --- colours -----------------------------------------------------------------------------------

#: Router port names used in :class:`Route` (the router's own enum lives in rtl/router.py).
PORTS = ("N", "E", "S", "W", "RAMP")


@dataclass(frozen=True)
class Route:
    """One static route: at router (x, y), wavelets of ``color`` from ``in_port`` go to
    every port in ``out_ports`` (more than one = multicast)."""
    x: int
    y: int
    in_port: str
    color: int
    out_ports: tuple


@dataclass(frozen=True)
class ColorPlan:
    """The one table of colours the GEMM mapping uses.

    ``weight``: the weight stream of each column, injected at the north edge and multicast
    south with a tap at every RAMP; commands travel in it, in order with the weights. Every
    column uses the same colour: the columns' streams never share a link.
    ``reduce``: the row reduction chain, eastward; PE x adds its partial sum to what arrives
    from x - 1 and sends the result to x + 1 (2 wavelets per FP32 value, low half first).
    ``result``: the return path, westward from the chain's east end (which rounds the final
    sum to FP16) with a tap at every RAMP; the owner column of n stores it.
    """
    weight: int = 0
    reduce: int = 1
    result: int = 2

    def __post_init__(self):
        colors = self.as_dict()
        for name, color in colors.items():
            if not isinstance(color, (int, np.integer)) or not 0 <= color < NUM_COLORS:
                raise ValueError(f"ColorPlan.{name} = {color!r} is not a routable colour "
                                 f"(0..{NUM_COLORS - 1})")
        seen = {}
        for name, color in colors.items():
            if color in seen:
                raise ValueError(f"ColorPlan.{name} and ColorPlan.{seen[color]} share "
                                 f"colour {color}")
            seen[color] = name

    def as_dict(self):
        """``{role: colour}`` for reports and configuration dumps."""
        return {"weight": self.weight, "reduce": self.reduce, "result": self.result}

    def weight_color(self, column):
        """The weight-stream colour of ``column`` (the same for every column)."""
        return self.weight

    def routes(self, width, height, groups=1):
        """Every static route of the GEMM on a ``width`` x ``height`` fabric, as :class:`Route`.

        Weight: N in -> RAMP (+ S above the bottom row). Reduce: RAMP in -> E except at the
        east end; W in -> RAMP except at x = 0. Result: RAMP in -> W at the east end; E in ->
        RAMP (+ W except at x = 0). A 1-column fabric has no reduce or result routes. With
        ``groups`` column groups, "east end" and "x = 0" are those of the column's group:
        no reduce or result route crosses from one group into the next.
        """
        span = width // groups
        routes = []
        for y in range(height):
            for x in range(width):
                south = ("S",) if y < height - 1 else ()
                routes.append(Route(x, y, "N", self.weight, ("RAMP",) + south))
                local = x % span
                if span == 1:
                    continue
                if local < span - 1:
                    routes.append(Route(x, y, "RAMP", self.reduce, ("E",)))
                    routes.append(Route(x, y, "E", self.result,
                                        ("RAMP",) + (("W",) if local > 0 else ())))
                else:
                    routes.append(Route(x, y, "RAMP", self.result, ("W",)))
                if local > 0:
                    routes.append(Route(x, y, "W", self.reduce, ("RAMP",)))
        return routes


# --- per-tile footprint ------------------------------------------------------------------------

@dataclass(frozen=True)
class TileFootprint:
    """What one PE (x, y) holds, in bytes (SRAM) and words (accumulator cache).

    ``x_bytes`` and ``y_bytes`` include the padding of every column to ``t_pad`` tokens;
    ``padding_bytes`` is the part of them that is padding.
    """
    x: int
    y: int
    tokens: int
    t_pad: int
    features: int
    outputs: int
    x_bytes: int
    y_bytes: int
    padding_bytes: int
    reserved_bytes: int
    sram_bytes: int
    accumulator_words: int

    @property
    def total_bytes(self):
        """SRAM in use: reserved area (rounded to a vector), X slice, Y slice."""
        return self.reserved_bytes + self.x_bytes + self.y_bytes

    @property
    def free_bytes(self):
        """SRAM left over (negative when the tile does not fit)."""
        return self.sram_bytes - self.total_bytes


# --- the mapping -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GemmMapping:
    """Y[T, N] = X[T, K] W[K, N] on a ``width`` x ``height`` fabric (columns x rows).

    Construction validates the sizes against the fabric, the wavelet fields and the PE
    (:meth:`validate`); it does not need the arrays. Use :func:`map_gemm` to also check them.
    The per-row and per-column arrays are computed once and read-only.
    """
    tokens: int
    features: int
    outputs: int
    width: int
    height: int
    pe: PEConfig = field(default_factory=PEConfig)
    colors: ColorPlan = field(default_factory=ColorPlan)
    #: Interleaved outputs (SPEC 7's first freedom, docs/gemm.md section 9): the streams of
    #: ``interleave`` consecutive outputs alternate weight by weight (per output k stays
    #: ascending), each into its own accumulators, so the FMA latency of one output hides
    #: behind the others. 1, 2, 4 or 8; 1 is the plain layout.
    interleave: int = 1
    #: Column groups (SPEC 7's second freedom, docs/gemm.md section 10): the ``width``
    #: columns form ``groups`` groups of ``width // groups`` side by side; group g holds its
    #: own copy of X split over its columns and computes the outputs
    #: ``block_range(g, groups, N)``, split over its columns; each group's reduction chain
    #: runs along its own columns only. 1 is the plain layout.
    groups: int = 1

    def __post_init__(self):
        self.validate()

    # ----- splits
    @cached_property
    def token_bounds(self):
        """Row boundaries: rows y holds tokens [b[y], b[y+1])."""
        return _frozen(block_bounds(self.height, self.tokens))

    @property
    def group_width(self):
        """Columns per column group (the whole width in the plain layout)."""
        return self.width // self.groups

    def group_of(self, x):
        """The column group of column ``x`` (vectorised)."""
        return x // self.group_width

    def group_columns(self, g):
        """The columns of group ``g`` as a ``range``."""
        if not 0 <= g < self.groups:
            raise IndexError(f"column group {g} is outside 0..{self.groups - 1}")
        return range(g * self.group_width, (g + 1) * self.group_width)

    def group_outputs(self, g):
        """The outputs group ``g`` computes: ``block_range(g, groups, N)``."""
        if not 0 <= g < self.groups:
            raise IndexError(f"column group {g} is outside 0..{self.groups - 1}")
        return block_range(g, self.groups, self.outputs)

    @cached_property
    def feature_starts(self):
        """First feature of every column, int64 [width]: the K split over the column's
        group (every group holds all of K)."""
        local = np.arange(self.width, dtype=np.int64) % self.group_width
        return _frozen(block_start(local, self.group_width, self.features))

    @cached_property
    def feature_bounds(self):
        """Column boundaries of the K split: column x holds features [b[x], b[x+1]).

        Only the plain layout's K split is one partition of K over the columns; with column
        groups use :meth:`feature_range` or :attr:`feature_starts`."""
        if self.groups != 1:
            raise MappingError(f"a layout of {self.groups} column groups holds K once per "
                               f"group: its K split has no single set of bounds")
        return _frozen(block_bounds(self.width, self.features))

    @cached_property
    def output_bounds(self):
        """Column boundaries of the N split: column x owns outputs [b[x], b[x+1]).

        With column groups: group g's outputs split over its columns, the groups in order
        (still one partition of N over the columns, ascending)."""
        x = np.arange(self.width + 1, dtype=np.int64)
        g = np.minimum(x // self.group_width, self.groups - 1)   # x = width: end of the last
        local = x - g * self.group_width
        g0 = block_start(g, self.groups, self.outputs)
        n_g = block_start(g + 1, self.groups, self.outputs) - g0
        return _frozen(g0 + block_start(local, self.group_width, n_g))

    def token_range(self, y):
        """T_y: the tokens of row ``y``."""
        self._check_row(y)
        return block_range(y, self.height, self.tokens)

    def feature_range(self, x):
        """K_x: the features (rows of W, columns of X) of column ``x`` (split over the
        column's group)."""
        self._check_column(x)
        return block_range(x % self.group_width, self.group_width, self.features)

    def output_range(self, x):
        """N_x: the outputs owned (stored) by column ``x``."""
        self._check_column(x)
        return range(int(self.output_bounds[x]), int(self.output_bounds[x + 1]))

    def owner_column(self, n):
        """The column that owns output ``n`` (gets the 'final sum' command); vectorised."""
        n = np.asarray(n, dtype=np.int64)
        if np.any((n < 0) | (n >= self.outputs)):
            raise ValueError(f"output index out of range [0, {self.outputs}): "
                             f"{n[(n < 0) | (n >= self.outputs)].flat[0]}")
        return np.searchsorted(self.output_bounds, n, side="right") - 1

    def n_local(self, n):
        """Index of output ``n`` inside its owner's N_x (the final-sum command argument)."""
        n = np.asarray(n, dtype=np.int64)
        return n - self.output_bounds[self.owner_column(n)]

    @cached_property
    def tokens_per_row(self):
        """len(T_y) for every row, int64 [height]."""
        return _frozen(np.diff(self.token_bounds))

    @cached_property
    def features_per_column(self):
        """len(K_x) for every column, int64 [width]."""
        local = np.arange(self.width, dtype=np.int64) % self.group_width
        return _frozen(block_len(local, self.group_width, self.features))

    @cached_property
    def outputs_per_column(self):
        """len(N_x) for every column, int64 [width]."""
        return _frozen(np.diff(self.output_bounds))

    @cached_property
    def t_pad_per_row(self):
        """T_pad of every row: T_y rounded up to a multiple of the lanes (0 stays 0)."""
        return _frozen(_pad(self.tokens_per_row, self.pe.lanes).astype(np.int64))

    def t_pad(self, y):
        """T_pad of row ``y``."""
        self._check_row(y)
        return int(self.t_pad_per_row[y])

    @property
    def num_pes(self):
        return self.width * self.height

    # ----- SRAM layout
    def x_address(self, k_local, t_local, y=0):
        """Byte address of X[T_y[t_local], K_x[k_local]] in a PE of row ``y``."""
        return self.pe.data_base + (k_local * self.t_pad(y) + t_local) * FP16_BYTES

    def y_base(self, x, y):
        """Byte address of the Y slice of PE (x, y): right after its padded X slice."""
        self._check_column(x)
        return self.pe.data_base + int(self.features_per_column[x]) * self.t_pad(y) * FP16_BYTES

    def y_address(self, x, y, n_local, t_local):
        """Byte address of Y[T_y[t_local], N_x[n_local]] in PE (x, y)."""
        return self.y_base(x, y) + (n_local * self.t_pad(y) + t_local) * FP16_BYTES

    def x_tile(self, x16, x, y):
        """The X slice of PE (x, y) as stored: float16 [K_x, T_pad], column k_local holding the
        T_y tokens of feature k contiguous, zero padded. ``.reshape(-1).view('<u4')`` gives
        the SRAM words from :meth:`x_address` on (lower address = low half)."""
        check_gemm_operands(x16, None)
        if x16.shape != (self.tokens, self.features):
            raise MappingError(f"X has shape {x16.shape}, the mapping expects "
                               f"({self.tokens}, {self.features})")
        tr, kr = self.token_range(y), self.feature_range(x)
        tile = np.zeros((len(kr), self.t_pad(y)), dtype=np.float16)
        tile[:, :len(tr)] = x16[tr.start:tr.stop, kr.start:kr.stop].T
        return tile

    def footprint(self, x, y):
        """The :class:`TileFootprint` of PE (x, y)."""
        self._check_column(x)
        self._check_row(y)
        t, tp = int(self.tokens_per_row[y]), self.t_pad(y)
        k, n = int(self.features_per_column[x]), int(self.outputs_per_column[x])
        return TileFootprint(
            x=x, y=y, tokens=t, t_pad=tp, features=k, outputs=n,
            x_bytes=k * tp * FP16_BYTES, y_bytes=n * tp * FP16_BYTES,
            padding_bytes=(k + n) * (tp - t) * FP16_BYTES,
            reserved_bytes=self.pe.data_base, sram_bytes=self.pe.sram_bytes,
            accumulator_words=self.pe.accumulator_buffers * tp)

    # ----- validation
    def _check_column(self, x):
        if not 0 <= x < self.width:
            raise IndexError(f"column {x} is outside the fabric's 0..{self.width - 1}")

    def _check_row(self, y):
        if not 0 <= y < self.height:
            raise IndexError(f"row {y} is outside the fabric's 0..{self.height - 1}")

    def validate(self):
        """Raise :class:`MappingError` naming the first thing that does not fit.

        Checked in order: sizes and fabric are positive ints; every column's K_x fits the
        10-bit wavelet index; every column's N_x fits the 16-bit command argument; every row's
        T_pad fits the accumulator cache ``accumulator_buffers`` times; every tile's X slice
        and then its whole footprint fits the SRAM.
        """
        for name in ("tokens", "features", "outputs"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"GEMM {name} must be an int, not {value!r}")
            if value <= 0:
                raise MappingError(f"GEMM has {value} {name}: every dimension must be >= 1")
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError(f"fabric {name} must be an int, not {value!r}")
        if self.width <= 0 or self.height <= 0:
            raise MappingError(f"fabric of zero size: {self.width} x {self.height} "
                               f"(width x height must both be >= 1)")
        if not isinstance(self.pe, PEConfig):
            raise TypeError(f"pe must be a PEConfig, not {self.pe!r}")
        if not isinstance(self.colors, ColorPlan):
            raise TypeError(f"colors must be a ColorPlan, not {self.colors!r}")

        groups = self.groups
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) \
                or groups < 1:
            raise MappingError(f"column groups must be an int >= 1, not {groups!r}")
        if self.width % groups:
            divisors = [d for d in range(1, self.width + 1) if self.width % d == 0]
            raise MappingError(f"{groups} column groups do not divide the fabric's "
                               f"{self.width} columns (groups of W / G columns; G one of "
                               f"{divisors})")
        if groups > self.outputs:
            raise MappingError(f"{groups} column groups for N = {self.outputs} outputs: a "
                               f"group would compute none (G <= N)")

        il = self.interleave
        if not isinstance(il, (int, np.integer)) or isinstance(il, bool) \
                or il not in (1, 2, 4, 8):
            raise MappingError(f"interleave must be 1, 2, 4 or 8 outputs, not {il!r}")
        k_x = self.features_per_column
        if il > 1 and k_x.max() * il > (1 << INDEX_BITS):
            x = int(np.argmax(k_x))
            raise MappingError(
                f"column {x} holds K_x = {int(k_x[x])} features: interleaving {il} outputs "
                f"puts the slot in the wavelet index's low bits, which leaves "
                f"{(1 << INDEX_BITS) // il} features; interleave less or use more columns")
        if k_x.max() > (1 << INDEX_BITS):
            x = int(np.argmax(k_x))
            kr = self.feature_range(x)
            raise MappingError(
                f"column {x} holds K_x = {len(kr)} features (k {kr.start}..{kr.stop - 1}), "
                f"more than the {INDEX_BITS}-bit wavelet index can address "
                f"({1 << INDEX_BITS}); use a wider fabric "
                f"(>= {-(-self.features // (1 << INDEX_BITS))} columns"
                f"{' per column group' if self.groups > 1 else ''})")
        n_x = self.outputs_per_column
        if n_x.max() > (1 << DATA_BITS):
            x = int(np.argmax(n_x))
            raise MappingError(f"column {x} owns N_x = {int(n_x[x])} outputs, more than the "
                               f"{DATA_BITS}-bit command argument can name")

        t_pad = self.t_pad_per_row
        need = max(self.pe.accumulator_buffers, il) * t_pad
        if need.max() > self.pe.accumulator_words:
            y = int(np.argmax(need))
            raise MappingError(
                f"row {y} has T_y = {int(self.tokens_per_row[y])} tokens per PE (T_pad "
                f"{int(t_pad[y])}): {max(self.pe.accumulator_buffers, il)} accumulator "
                f"buffers need "
                f"{int(need[y])} FP32 words, the accumulator cache holds "
                f"{self.pe.accumulator_words}; use a taller fabric "
                f"(>= {self._rows_needed()} rows)")

        sram = self.pe.sram_bytes
        # Tile sizes depend on (column, row) only through K_x, N_x and T_pad: outer products.
        x_bytes = np.multiply.outer(t_pad, k_x) * FP16_BYTES          # [height, width]
        if x_bytes.max() > sram:
            y, x = np.unravel_index(int(np.argmax(x_bytes)), x_bytes.shape)
            fp = self.footprint(int(x), int(y))
            raise MappingError(
                f"tile ({x}, {y}): X slice X[T_y={fp.tokens} (padded {fp.t_pad}), "
                f"K_x={fp.features}] needs {fp.x_bytes} bytes, more than the PE's {sram}-byte "
                f"SRAM by {fp.x_bytes - sram} bytes")
        total = self.pe.data_base + x_bytes + np.multiply.outer(t_pad, n_x) * FP16_BYTES
        if total.max() > sram:
            y, x = np.unravel_index(int(np.argmax(total)), total.shape)
            fp = self.footprint(int(x), int(y))
            raise MappingError(
                f"tile ({x}, {y}) does not fit its {sram}-byte SRAM: X slice {fp.x_bytes} + "
                f"Y slice {fp.y_bytes} (of which padding {fp.padding_bytes}) + reserved "
                f"{fp.reserved_bytes} = {fp.total_bytes} bytes, {-fp.free_bytes} bytes over")

    def _rows_needed(self):
        """Smallest fabric height whose T_pad fits the accumulator cache (for error hints)."""
        max_t = self.pe.accumulator_words // max(self.pe.accumulator_buffers, self.interleave)
        max_t -= max_t % self.pe.lanes
        return -(-self.tokens // max_t) if max_t > 0 else "no"

    # ----- reporting
    def summary(self):
        """A JSON-ready description: shapes, fabric, splits' extremes, colours, worst tile."""
        t_y, k_x, n_x = self.tokens_per_row, self.features_per_column, self.outputs_per_column
        worst = self.footprint(int(np.argmax(k_x + n_x)), int(np.argmax(self.t_pad_per_row)))
        return {
            "shape": {"T": int(self.tokens), "K": int(self.features), "N": int(self.outputs)},
            "fabric": {"width": int(self.width), "height": int(self.height)},
            "tokens_per_row": [int(t_y.min()), int(t_y.max())],
            "t_pad_max": int(self.t_pad_per_row.max()),
            "features_per_column": [int(k_x.min()), int(k_x.max())],
            "outputs_per_column": [int(n_x.min()), int(n_x.max())],
            "colors": self.colors.as_dict(),
            **({"interleave": int(self.interleave)} if self.interleave > 1 else {}),
            **({"groups": int(self.groups), "group_width": int(self.group_width)}
               if self.groups > 1 else {}),
            "worst_tile": {"x": worst.x, "y": worst.y, "sram_bytes_used": worst.total_bytes,
                           "sram_bytes": worst.sram_bytes,
                           "accumulator_words_used": worst.accumulator_words,
                           "accumulator_words": self.pe.accumulator_words},
        }


# --- operands ----------------------------------------------------------------------------------

def check_gemm_operands(x16, w16):
    """Check that X and W are 2-D float16 arrays with matching K; either may be ``None``.

    Raises :class:`OperandTypeError` (a ``TypeError``: not an array / not float16) or
    :class:`MappingError` (shapes), naming the array and its shape.
    """
    for name, arr in (("X", x16), ("W", w16)):
        if arr is None:
            continue
        if not isinstance(arr, np.ndarray):
            raise OperandTypeError(f"{name} must be a numpy float16 array, not "
                                   f"{type(arr).__name__}")
        if arr.dtype != np.float16:
            raise OperandTypeError(f"{name} must be float16, got {arr.dtype} with shape "
                                   f"{arr.shape}")
        if arr.ndim != 2:
            raise MappingError(f"{name} must be 2-D ({'[T, K]' if name == 'X' else '[K, N]'}), "
                               f"got shape {arr.shape}")
        if 0 in arr.shape:
            raise MappingError(f"{name} is empty: shape {arr.shape}")
    if x16 is not None and w16 is not None and x16.shape[1] != w16.shape[0]:
        raise MappingError(f"X [T, K] and W [K, N] disagree on K: X has shape {x16.shape}, "
                           f"W has shape {w16.shape}")


def parse_fabric(text):
    """Parse ``'WxH'`` (e.g. ``'4x4'``) into ``(width, height)``; raises MappingError."""
    parts = str(text).lower().split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise MappingError(f"fabric {text!r} is not WIDTHxHEIGHT (e.g. 4x4)") from None
    if width <= 0 or height <= 0:
        raise MappingError(f"fabric of zero size: {text!r} (width x height must both be >= 1)")
    return width, height


def map_gemm(x16, w16, width, height, pe=None, colors=None):
    """Validate X, W and the fabric and return the :class:`GemmMapping` of Y = X W."""
    check_gemm_operands(x16, w16)
    return GemmMapping(tokens=x16.shape[0], features=x16.shape[1], outputs=w16.shape[1],
                       width=width, height=height, pe=pe or PEConfig(),
                       colors=colors or ColorPlan())


def balanced_output_order(w16, groups):
    """An order of the N outputs (an int64 permutation) that spreads the non-zero weights
    evenly over ``groups`` column groups: group g computes the outputs
    ``order[block_range(g, groups, N)]``. Greedy, largest first: each output, by
    descending non-zero count (ties: lower index), goes to the group with the fewest
    non-zeros so far that still has room (its ``block_len`` outputs; ties: lower group),
    and each group's outputs stay ascending. A host-side permutation of W's columns and Y's
    (the QKV GEMM's head-by-head order is another): every output is computed as before, so
    Y[:, order] run with ``W[:, order]`` is bit for bit Y. With 1 group it is the identity."""
    check_gemm_operands(None, w16)
    n = w16.shape[1]
    if not isinstance(groups, (int, np.integer)) or not 1 <= groups <= n:
        raise MappingError(f"groups = {groups!r}: 1 .. N = {n}")
    nnz = ((np.asarray(w16).view(np.uint16) & 0x7FFF) != 0).sum(axis=0)
    room = [block_len(g, groups, n) for g in range(groups)]
    load = [0] * groups
    members = [[] for _ in range(groups)]
    for j in sorted(range(n), key=lambda j: (-int(nnz[j]), j)):
        g = min((g for g in range(groups) if len(members[g]) < room[g]),
                key=lambda g: (load[g], g))
        members[g].append(j)
        load[g] += int(nnz[j])
    return np.array([j for m in members for j in sorted(m)], dtype=np.int64)
