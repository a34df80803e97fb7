"""The processing element's configuration contract: register map, DSR and launch encodings.

Everything the host, the mapper, the benches and (later) the control core need to configure
a PE is defined here, once: the hardware views these layouts as ``data.Struct`` values, and
the Python encoders below read field offsets and widths from the same layouts, so software
and RTL cannot disagree about where a field lives.

Configuration address space of one PE (word addresses on its ``cfg`` port, 18 bits)
-----------------------------------------------------------------------------------
``0x00000 .. sram_words-1``  the SRAM, one 32-bit word per address (FP16 element ``h`` of
the PE lives in word ``h >> 1``, low half first).

``PE_REGS_BASE = 0x20000`` + offset: the registers, see :class:`Reg` and the ``*_BASE``
constants (task bindings, task table, launch entries, DSRs, accumulator cache, counters).

The regions are tabled once, by :func:`address_map` (name, first address, words per item,
item count from the PE's parameters, :class:`PEParams`); the PE's configuration decoder
(:mod:`rtl.pe.config`) computes every select and index from that table, and the address
helpers below (``dsr_addr`` ...) check their ids against it.

The tile forwards ``TileRegion.PE_SRAM + x`` to PE address ``x`` and
``TileRegion.PE_REGS + x`` to PE address ``PE_REGS_BASE + x``.
"""

import enum as py_enum
import functools
import math
from dataclasses import asdict, dataclass

from amaranth import Shape, signed, unsigned
from amaranth.lib import data, enum

from rtl.wavelet import COLOR_BITS, NUM_COLORS

__all__ = [
    "CFG_BITS", "PE_REGS_BASE", "Reg", "Counter", "ErrorCode", "Kind", "DType", "TensorOp",
    "DSR", "Dim", "TensorLaunch", "LaunchEntry", "LaunchRequest", "ColorBind", "TaskEntry",
    "HostTrigger", "Status", "CoreStatus", "ErrorWord", "IdWord", "GPR_BASE", "encode_task",
    "DSR_WORDS", "DSR_NONE", "DSR_WAVELET", "ENTRY_WORDS", "MAX_TASKS", "MAX_ENTRIES",
    "MAX_DSRS", "LEN_BITS", "BIND_BASE", "TASK_BASE", "ENTRY_BASE", "DSR_BASE", "ACC_BASE",
    "COUNTER_BASE", "dsr_addr", "entry_addr", "task_addr", "bind_addr", "acc_addr",
    "counter_addr", "reg_addr", "gpr_addr", "encode_dsr", "encode_entry", "encode_bind",
    "encode_trigger", "encode_fields", "decode_fields", "decode_error", "layout_fields",
    "PEParams", "MAX_PE", "CfgRegion", "Region", "address_map", "region", "GPR_COUNT",
]

#: Address width of the PE's configuration port.
CFG_BITS = 18
#: PE address of the register region (bit 17 set).
PE_REGS_BASE = 0x20000

#: Architectural limits of the encodings (the parameters of a PE may be smaller).
MAX_TASKS = 32      # 5-bit task ids
MAX_ENTRIES = 64    # 6-bit launch-entry ids
MAX_DSRS = 62       # 6-bit DSR ids; 62 and 63 are pseudo operands
LEN_BITS = 12       # length of one tensor dimension: 1 .. 4095

#: Pseudo DSR id: operand not used.
DSR_NONE = 62
#: Pseudo DSR id: the triggering wavelet's ``data`` field as an FP16 scalar.
DSR_WAVELET = 63


class Kind(enum.Enum, shape=3):
    """What a data-structure register describes."""
    NONE = 0     #: unused / invalid
    MEM = 1      #: SRAM tensor, 1D..4D, FP16 or FP32, base in FP16 (halfword) units
    ACC = 2      #: accumulator-cache tensor, FP32, base in FP32-word units
    FIN = 3      #: fabric input stream: a color
    FOUT = 4     #: fabric output stream: a color, a length, the control flag
    NULL = 5     #: destination that discards (drains a stream), with a length
    FIFO = 6     #: circular buffer in SRAM with a read position and an occupancy
    SCALAR = 7   #: a constant (a scalar register), FP16 or FP32


class DType(enum.Enum, shape=1):
    """Element type of a tensor operand."""
    FP16 = 0
    FP32 = 1


class TensorOp(enum.Enum, shape=4):
    """Tensor operations. Arithmetic is IEEE binary32 on exactly widened operands and the
    result is rounded once to the destination type (see ``docs/pe.md``)."""
    FMOV = 0   #: dst = a (a conversion when the types differ; a bit copy when they agree)
    FADD = 1   #: dst = a + b
    FSUB = 2   #: dst = a - b
    FMUL = 3   #: dst = a * b
    FMAC = 4   #: dst = a + b * s (AXPY form, fused, one rounding)
    FMAX = 5   #: dst = max(a, b)
    FNEG = 6   #: dst = -a
    FMIN = 7   #: dst = min(a, b)
    FCPSGN = 8  #: dst = |a| with the sign of b
    FRSQE = 9  #: dst = the reciprocal-square-root estimate of a (a Newton seed)


class ErrorCode(enum.Enum, shape=5):
    """Codes of the sticky error register; the launch (or core access) concerned is dropped
    (no write). Codes 11 and up come from the control core and the configuration port."""
    NONE = 0
    OUT_OF_BOUNDS = 1    #: a tensor reaches outside the SRAM or the accumulator cache
    ZERO_LENGTH = 2      #: a dimension (or FIFO size) of zero
    MISALIGNED = 3       #: an FP32 SRAM tensor on an odd FP16 address
    BAD_COLOR = 4        #: binding or stream on a color >= num_colors, or such a wavelet in
    BAD_TASK = 5         #: a command dispatches to a task id >= num_tasks
    BAD_OPERAND = 6      #: operand kind not allowed in its role, unknown DSR id, ...
    FIFO_OVERFLOW = 7    #: a push of more elements than the FIFO has room for
    FIFO_UNDERFLOW = 8   #: a pop of more elements than the FIFO holds
    TRIGGER_OVERRUN = 9  #: a host trigger written while the previous one is pending
    UNSUPPORTED = 10     #: an FMAC into an FP16 destination (it would round twice)
    ILLEGAL_INSTRUCTION = 11  #: the core fetched a word that is not an instruction
    CORE_ADDRESS = 12    #: the core fetched, loaded or stored outside the SRAM
    CORE_MISALIGNED = 13  #: lw/sw/jalr/task address not a multiple of 4
    DSR_BUSY = 14        #: the core wrote a DSR that a live tensor operation uses
    BAD_CONFIG = 15      #: a configuration write to an address with no register behind it


class Reg(py_enum.IntEnum):
    """Offsets of the control registers inside the register region."""
    ID = 0x000           #: read-only: parameters (see docs/pe.md)
    STATUS = 0x001       #: read-only: :class:`Status`
    ERROR = 0x002        #: sticky first error: code [3:0], info [15:8]; write: clear all
    ERROR_FLAGS = 0x003  #: sticky bit per ErrorCode; write 1s to clear
    TRIGGER = 0x004      #: write: :class:`HostTrigger`, activates a task as a wavelet would
    BLOCKED = 0x005      #: read/write: bit t set = task t is blocked
    BLOCK_SET = 0x006    #: write: set these bits of BLOCKED
    BLOCK_CLR = 0x007    #: write: clear these bits of BLOCKED
    COUNTER_CTRL = 0x008  #: write bit 0: clear every counter
    CORE_CTRL = 0x030    #: write bit 0: restart the core (leave halt / fault; registers kept)
    CORE_STATUS = 0x031  #: read-only: :class:`CoreStatus`
    CORE_PC = 0x032      #: read-only: PC of the instruction in X, or of the halt / fault


BIND_BASE = 0x100     #: + color: :class:`ColorBind` (32 entries, 0..num_colors-1 exist)
TASK_BASE = 0x200     #: + task: first launch entry of the task
ENTRY_BASE = 0x400    #: + 2 * entry + word: :class:`LaunchEntry`
DSR_BASE = 0x800      #: + 8 * dsr + word: :class:`DSR`
ACC_BASE = 0x1000     #: + word: the accumulator cache, FP32
COUNTER_BASE = 0x010  #: + :class:`Counter`
GPR_BASE = 0x040      #: + register number: the core's general-purpose registers (R/W)

DSR_WORDS = 8
ENTRY_WORDS = 2
#: General-purpose registers of the control core (``rtl.pe.isa.NUM_GPRS``), at GPR_BASE.
GPR_COUNT = 16


class Counter(py_enum.IntEnum):
    """Performance counters (32 bits, wrap around); cleared by COUNTER_CTRL."""
    CYCLES = 0          #: clock cycles
    FMAC_LANES = 1      #: FMAC lane-operations issued
    BUSY = 2            #: cycles the datapath issued an operation
    STALL_INPUT = 3     #: work pending, nothing issued, a fabric input was empty
    STALL_OUTPUT = 4    #: ... a fabric output was full
    STALL_BANK = 5      #: ... the chosen operation hit an SRAM bank conflict
    STALL_HAZARD = 6    #: ... every candidate waited on an older operation (ordering)
    LAUNCHES = 7        #: tensor operations started
    TASKS = 8           #: tasks activated
    WAVELETS_IN = 9     #: wavelets accepted from rx
    WAVELETS_OUT = 10   #: wavelets sent on tx
    FMAC_FIRST = 11     #: CYCLES value at the first FMAC issue since clear
    FMAC_LAST = 12      #: CYCLES value at the latest FMAC issue
    ERRORS = 13         #: errors raised
    CORE_RETIRED = 14   #: instructions retired by the control core
    CORE_ACTIVE = 15    #: cycles the control core was running a task or program
    STALL_CORE_BANK = 16  #: cycles the core's fetch, load or store waited for an SRAM bank


class Dim(data.Struct):
    """One dimension of a tensor: element count and stride (in elements, signed)."""
    len: unsigned(LEN_BITS)
    stride: signed(20)


class DSR(data.Struct):
    """A data-structure register, 8 words. Word 7 is updated by the hardware at launch.

    word 0: ``kind``, ``dtype``, ``ctrl`` and ``color`` (FIN/FOUT), ``out_index`` (index
    field of FOUT wavelets), ``adv_count`` (auto-advance period, 0 = off).
    word 1: ``base`` (MEM/FIFO: FP16-element address; ACC: FP32-word address) and
    ``idx_stride`` (elements added to the base per unit of the wavelet index when the launch
    asks for index-offset mode). For SCALAR, word 1 is the value.
    words 2..5: ``dims`` (innermost first; unused dimensions have length 1).
    word 6: ``adv_step`` (elements added to the base per launch that advances the DSR) and
    ``fifo_size`` (FIFO capacity in elements).
    word 7: ``pos`` (auto-advance position, or the FIFO read position) and ``count`` (FIFO
    occupancy).
    """
    kind: Kind
    dtype: DType
    ctrl: 1
    color: 5
    out_index: 10
    adv_count: 12
    base: 16
    idx_stride: 16
    dims: data.ArrayLayout(Dim, 4)
    adv_step: signed(16)
    fifo_size: 16
    pos: 16
    count: 16


class TensorLaunch(data.Struct):
    """What one tensor-operation launch names. ``dst``, ``a``, ``b``, ``s`` are DSR ids (or
    :data:`DSR_NONE` / :data:`DSR_WAVELET`). ``idx``/``adv`` are bit masks over (dst, a, b):
    add the wavelet index to the base / advance the DSR after this launch. ``clear_a``: zero
    the accumulator-cache source ``a`` as it is read."""
    op: TensorOp
    dst: 6
    a: 6
    b: 6
    s: 6
    prio: 2
    idx: 3
    adv: 3
    clear_a: 1


class LaunchEntry(data.Struct):
    """One launch of a launch-list task (2 words): a :class:`TensorLaunch`; ``last`` ends
    the task."""
    launch: TensorLaunch
    last: 1
    _pad: 26


class LaunchRequest(data.Struct):
    """What the tensor engine accepts on its launch stream: a :class:`TensorLaunch` plus
    the scalar (``data``, FP16, for ``DSR_WAVELET`` operands) and the ``index`` offset.
    Two producers: the task launcher (an entry plus the trigger wavelet) and the control
    core (a ``t.<op>`` instruction), which sets ``core`` so that ``twait`` can wait for
    the operations it launched."""
    launch: TensorLaunch
    data: 16
    index: 10
    core: 1


class ColorBind(data.Struct):
    """Binding of a color: data wavelets start task ``data_task``; a control wavelet starts
    task ``ctrl_base + index`` (its index field is the command code). ``prio``: priority
    (0..3, higher first) of the tasks this color's wavelets start."""
    data_task: 5
    data_en: 1
    ctrl_base: 5
    ctrl_en: 1
    prio: 2
    _pad: 18


class TaskEntry(data.Struct):
    """Task-table entry. ``code = 0``: a launch-list task whose first launch entry is
    ``entry``; ``code = 1``: a code task whose first instruction is at byte address ``pc``
    (a multiple of 4). ``prio``: priority (0..3, higher first) of the task when it is
    activated locally (by code or the host trigger)."""
    entry: 6
    code: 1
    prio: 2
    pc: 17
    _pad: 6


class CoreStatus(data.Struct):
    """Read-only status of the control core (register ``CORE_STATUS``)."""
    running: 1     #: a task or program is executing
    halted: 1      #: stopped by ``halt`` (restart with CORE_CTRL)
    fault: 1       #: stopped by an error (code in ERROR, PC in CORE_PC)
    waiting: 1     #: stalled in ``twait`` or ``recv``
    _pad0: 4
    task: 5        #: the task running (or that ran last)
    _pad1: 19


class ErrorWord(data.Struct):
    """The ERROR register: the first error's code and info."""
    code: ErrorCode
    _pad0: 3
    info: 8
    _pad1: 16


class IdWord(data.Struct):
    """The read-only ID register: the PE's parameters."""
    num_dsrs: 6
    log2_banks: 3
    threads_m1: 4
    sram_div512: 7
    acc_div4_m1: 12


class HostTrigger(data.Struct):
    """A host-written activation: task ``task`` as if a wavelet (data, index) arrived."""
    data: 16
    index: 10
    task: 5
    _pad: 1


class Status(data.Struct):
    """Read-only status word."""
    busy: 1
    error: 1
    launcher_busy: 1
    trigger_pending: 1
    _pad0: 4
    threads_active: 8
    rx_pending: 1
    tx_pending: 1
    core_running: 1
    core_halted: 1
    _pad1: 12


# --- the PE's parameters and the address map --------------------------------------------------

@dataclass(frozen=True)
class PEParams:
    """The parameters of one PE (the arguments of :class:`rtl.pe.pe.PE`), checked.

    The host encoders and address helpers below take one (``pe=``) to reject ids the PE does
    not have; without it they check against what the register map can hold (:data:`MAX_PE`).

    Parameters
    ----------
    sram_words : int
        SRAM size in 32-bit words (default 12288 = 48 KiB).
    banks : int
        Number of single-port 32-bit SRAM banks, a power of two >= 2; word ``w`` lives in
        bank ``w % banks``, so a 64-bit access uses one bank pair.
    acc_words : int
        Accumulator cache size in FP32 words, a multiple of 4 (default 64 = 256 B).
    num_dsrs : int
        Data-structure registers (at most 62).
    threads : int
        Micro-thread slots: tensor operations in flight (2, 4, 8 or 16).
    lanes : int
        FP16 lanes of the datapath (4; FP32 operands from SRAM run 2 lanes).
    num_colors : int
        Fabric colors (24).
    num_tasks, num_entries : int
        Size of the task table and of the launch-entry table.
    rx_depth : int
        Depth of each per-color input queue (2 or 4).
    out_depth : int
        Wavelets buffered per micro-thread for fabric output (4 or 8).

    Raises ``TypeError`` for a value that is not an int and ``ValueError`` for one out of
    range, naming the parameter and the value.
    """
    sram_words: int = 12288
    banks: int = 8
    acc_words: int = 64
    num_dsrs: int = 44
    threads: int = 8
    lanes: int = 4
    num_colors: int = NUM_COLORS
    num_tasks: int = MAX_TASKS
    num_entries: int = MAX_ENTRIES
    rx_depth: int = 4
    out_depth: int = 8

    def __post_init__(self):
        def check(name, ok, what):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {value!r}")
            if not ok(value):
                raise ValueError(f"{name}={value}: {what}")
        check("banks", lambda v: v >= 2 and v & (v - 1) == 0, "must be a power of 2 >= 2")
        check("sram_words", lambda v: v % self.banks == 0 and 0 < v <= 32768,
              "must be a multiple of banks and at most 32768")
        check("acc_words", lambda v: 4 <= v <= 4096 and v % 4 == 0,
              "must be a multiple of 4 in 4..4096")
        check("num_dsrs", lambda v: 1 <= v <= MAX_DSRS, f"must be 1..{MAX_DSRS}")
        check("threads", lambda v: v in (2, 4, 8, 16), "must be 2, 4, 8 or 16")
        check("lanes", lambda v: v == 4, "the datapath is 64 bits: 4 FP16 lanes")
        check("num_colors", lambda v: 1 <= v <= NUM_COLORS, f"must be 1..{NUM_COLORS}")
        check("num_tasks", lambda v: 1 <= v <= MAX_TASKS, f"must be 1..{MAX_TASKS}")
        check("num_entries", lambda v: 1 <= v <= MAX_ENTRIES, f"must be 1..{MAX_ENTRIES}")
        check("rx_depth", lambda v: v in (2, 4), "must be 2 or 4")
        check("out_depth", lambda v: v in (4, 8), "must be 4 or 8")

    def as_dict(self):
        """The parameters as keyword arguments of :class:`rtl.pe.pe.PE`."""
        return asdict(self)

    @property
    def id_word(self):
        """Value of the read-only ID register (:class:`IdWord`)."""
        return encode_fields(IdWord, num_dsrs=self.num_dsrs, log2_banks=_log2(self.banks),
                             threads_m1=self.threads - 1, sram_div512=self.sram_words // 512,
                             acc_div4_m1=self.acc_words // 4 - 1)


#: The largest PE the register map holds: what ids are checked against without a PE.
MAX_PE = PEParams(sram_words=32768, acc_words=4096, num_dsrs=MAX_DSRS)


class CfgRegion(py_enum.IntEnum):
    """The regions of a PE's configuration address space (:func:`address_map`); also the
    info byte of a ``BAD_CONFIG`` error (the region at or below the offending address)."""
    NONE = 0          #: below every region (never: SRAM starts at 0)
    SRAM = 1          #: SRAM words
    STATUS = 2        #: ID, STATUS, ERROR, ERROR_FLAGS
    TASK_CTRL = 3     #: TRIGGER, BLOCKED, BLOCK_SET, BLOCK_CLR
    COUNTER_CTRL = 4  #: COUNTER_CTRL
    COUNTER = 5       #: the :class:`Counter` registers
    CORE = 6          #: CORE_CTRL, CORE_STATUS, CORE_PC
    GPR = 7           #: the control core's general-purpose registers
    BIND = 8          #: :class:`ColorBind` per color
    TASK = 9          #: :class:`TaskEntry` per task
    ENTRY = 10        #: :class:`LaunchEntry` per launch entry (2 words)
    DSR = 11          #: :class:`DSR` per data-structure register (8 words)
    ACC = 12          #: accumulator-cache words


@dataclass(frozen=True)
class Region:
    """One region of the configuration address space: ``ids`` items of ``words`` words each
    from cfg address ``base``. Items ``count`` .. ``ids - 1`` are decoded but not there in
    this PE (only BIND has such: every 5-bit color id is a binding address, the colors
    >= num_colors raise ``BAD_COLOR`` when a write would bind them); every address outside
    the regions has nothing behind it (``BAD_CONFIG`` on a write, 0 on a read)."""
    region: CfgRegion
    base: int
    words: int
    count: int
    ids: int
    item: str

    @property
    def end(self):
        """First cfg address after the region."""
        return self.base + self.words * self.ids

    def addr(self, index, word=0, *, limit=None, whose="the PE has"):
        """cfg address of word ``word`` of item ``index``. Raises ``ValueError`` naming the
        value and the limit for an item at or above ``limit`` (default ``count``) or a word
        outside the item, ``TypeError`` for an id that is not an int."""
        limit = self.count if limit is None else limit
        _check_id(self.item, index, limit, whose)
        if isinstance(word, bool) or not isinstance(word, int) or not 0 <= word < self.words:
            raise ValueError(f"word {word!r} of {self.item} {index}: a {self.item} has "
                             f"{self.words} word{'s' if self.words > 1 else ''}")
        return self.base + self.words * index + word


def _check_id(what, value, limit, whose="the PE has", name=None):
    """``value`` is an int in ``0 .. limit - 1``, else an error naming it and the limit."""
    label = f"{name}={value!r}" if name else f"{what} {value!r}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{label}: a {what} id must be an int")
    if not 0 <= value < limit:
        plural = what[:-1] + "ies" if what.endswith("y") else what + "s"
        raise ValueError(f"{label} is out of range: {whose} {limit} {plural} "
                         f"({what} ids 0..{limit - 1})")


@functools.lru_cache(maxsize=None)
def address_map(pe=None):
    """The regions of the configuration space of a PE with parameters ``pe`` (a
    :class:`PEParams`; default: the default PE), in address order.

    Everything that decodes or builds configuration addresses derives from this table: the
    hardware decoder, the address helpers, docs/pe.md section 3.
    """
    p = PEParams() if pe is None else pe
    r = PE_REGS_BASE
    regions = [
        (CfgRegion.SRAM, 0, 1, p.sram_words, "SRAM word"),
        (CfgRegion.STATUS, r + Reg.ID, 1, Reg.ERROR_FLAGS - Reg.ID + 1, "status register"),
        (CfgRegion.TASK_CTRL, r + Reg.TRIGGER, 1, Reg.BLOCK_CLR - Reg.TRIGGER + 1,
         "task control register"),
        (CfgRegion.COUNTER_CTRL, r + Reg.COUNTER_CTRL, 1, 1, "counter control register"),
        (CfgRegion.COUNTER, r + COUNTER_BASE, 1, len(Counter), "counter"),
        (CfgRegion.CORE, r + Reg.CORE_CTRL, 1, Reg.CORE_PC - Reg.CORE_CTRL + 1,
         "core register"),
        (CfgRegion.GPR, r + GPR_BASE, 1, GPR_COUNT, "general-purpose register"),
        (CfgRegion.BIND, r + BIND_BASE, 1, p.num_colors, "color"),
        (CfgRegion.TASK, r + TASK_BASE, 1, p.num_tasks, "task"),
        (CfgRegion.ENTRY, r + ENTRY_BASE, ENTRY_WORDS, p.num_entries, "launch entry"),
        (CfgRegion.DSR, r + DSR_BASE, DSR_WORDS, p.num_dsrs, "DSR"),
        (CfgRegion.ACC, r + ACC_BASE, 1, p.acc_words, "accumulator word"),
    ]
    out = []
    for name, base, words, count, item in regions:
        ids = 1 << COLOR_BITS if name == CfgRegion.BIND else count
        out.append(Region(name, base, words, count, ids, item))
    for a, b in zip(out, out[1:]):
        if not a.end <= b.base:
            raise ValueError(f"address map: {a.region.name} [{a.base:#x}, {a.end:#x}) runs "
                             f"into {b.region.name} at {b.base:#x}")
    if out[0].end > PE_REGS_BASE or out[-1].end > 1 << CFG_BITS:
        raise ValueError("address map: a region runs past its address space")
    return tuple(out)


def region(name, pe=None):
    """The :class:`Region` ``name`` (a :class:`CfgRegion`) of a PE with parameters ``pe``."""
    for r in address_map(pe):
        if r.region == name:
            return r
    raise KeyError(f"no region {name!r}")


def _item_addr(name, index, word, pe):
    """cfg address of an item: checked against the PE's count, or (no PE) against the ids
    the register map decodes."""
    if pe is None:
        r = region(name, MAX_PE)
        return r.addr(index, word, limit=r.ids, whose="the register map holds")
    return region(name, pe).addr(index, word)


# --- Python encoders, derived from the layouts above ----------------------------------------

def layout_fields(layout):
    """Flatten a layout to ``{dotted name: (offset, width, signed)}``."""
    out = {}
    for name, field in data.Layout.cast(layout):
        try:
            inner = data.Layout.cast(field.shape)
        except TypeError:
            inner = None
        if inner is not None:
            for sub, (off, width, sgn) in layout_fields(inner).items():
                out[f"{name}.{sub}"] = (field.offset + off, width, sgn)
        else:
            shape = Shape.cast(field.shape)
            out[f"{name}"] = (field.offset, shape.width, shape.signed)
    return out


def encode_fields(layout, **values):
    """Pack named field values into an ``int`` following ``layout``.

    Names of nested fields are dotted (``dims.0.len``). Enum members are accepted for enum
    fields. Raises ``ValueError`` naming the field when a value does not fit, ``KeyError``
    for an unknown field.
    """
    table = layout_fields(layout)
    word = 0
    for name, value in values.items():
        if name not in table:
            raise KeyError(f"{data.Layout.cast(layout)!r} has no field {name!r}")
        off, width, sgn = table[name]
        value = int(value.value if isinstance(value, py_enum.Enum) else value)
        lo, hi = (-(1 << (width - 1)), (1 << (width - 1)) - 1) if sgn else (0, (1 << width) - 1)
        if not lo <= value <= hi:
            raise ValueError(f"field {name}={value} does not fit in {width} "
                             f"{'signed ' if sgn else ''}bits")
        word |= (value & ((1 << width) - 1)) << off
    return word


def decode_fields(layout, word):
    """Unpack an ``int`` into ``{dotted field name: int}`` following ``layout``."""
    out = {}
    for name, (off, width, sgn) in layout_fields(layout).items():
        value = (int(word) >> off) & ((1 << width) - 1)
        if sgn and value >> (width - 1):
            value -= 1 << width
        out[name] = value
    return out


def _words(value, count):
    return [(value >> (32 * i)) & 0xFFFFFFFF for i in range(count)]


def _whose(pe):
    return ("the register map holds", MAX_PE) if pe is None else ("the PE has", pe)


def _check_dsr_id(name, value, pe=None, allow_pseudo=True):
    """A DSR id of the PE (its ``num_dsrs``; without a PE: the register map's 62), or a
    pseudo operand."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be a DSR id (int), not {value!r}")
    whose, p = _whose(pe)
    if not (0 <= value < p.num_dsrs or (allow_pseudo and value in (DSR_NONE, DSR_WAVELET))):
        raise ValueError(f"{name}={value} is not a DSR id: {whose} {p.num_dsrs} DSRs "
                         f"(0..{p.num_dsrs - 1}; pseudo operands DSR_NONE = {DSR_NONE}, "
                         f"DSR_WAVELET = {DSR_WAVELET})")


def _check_task_id(name, value, pe):
    whose, p = _whose(pe)
    _check_id("task", value, p.num_tasks, whose, name=name)


def encode_dsr(kind, *, dtype=DType.FP16, base=0, dims=((1, 1),), idx_stride=0,
               adv_step=0, adv_count=0, color=0, ctrl=0, out_index=0, value=0,
               fifo_size=0, pos=0, count=0, filter_zeros=False, idx_shift=0, idx_width=0,
               pe=None):
    """The 8 words of a data-structure register.

    Parameters
    ----------
    kind : Kind
    dtype : DType
        FP16 or FP32 (ACC tensors are always FP32).
    base : int
        MEM/FIFO: address in FP16 elements (halfwords) of the SRAM; ACC: FP32 word.
    dims : sequence of (length, stride)
        Innermost first, 1 to 4 dimensions, strides in elements. For FIN/FOUT/NULL the
        product of the lengths is the stream length; for FIFO the first length is the number
        of elements pushed or popped per launch.
    idx_stride : int
        Elements added to the base per unit of the trigger's index (index-offset mode).
    adv_step, adv_count : int
        Auto-advance: a launch that advances this DSR adds ``adv_step`` elements to the base,
        wrapping back after ``adv_count`` launches (0: no wrap period; the position then
        wraps at 4096).
    color, ctrl, out_index : int
        FIN/FOUT: the color; FOUT: send control wavelets, and their index field.
    value : int
        SCALAR: the raw FP16 or FP32 bits.
    fifo_size : int
        FIFO: capacity in elements. ``pos``/``count`` preset the read position/occupancy.
    idx_shift, idx_width : int
        MEM / ACC, index-offset mode: the part of the trigger's index the offset uses,
        ``(index >> idx_shift) & (2**idx_width - 1)`` (``idx_width`` 0: all of it), so that
        one index can name two things, e.g. a feature in its high bits for X and an
        accumulator slot in its low bits (the interleaved outputs of SPEC 7). Encoded in
        bits 0..3 and 4..7 of ``fifo_size``, a field MEM and ACC do not otherwise use.
    filter_zeros : bool
        FOUT, FP16 only: the zero filter (seed 002: "the sender filters all zeros"): +0 and
        -0 are not sent, every other element goes with its index in the stream (mod 1024)
        as the wavelet's index, so a receiving task triggers on the non-zeros only. Encoded
        as bit 0 of ``fifo_size``, a field FOUT does not otherwise use.
    pe : PEParams, optional
        The PE the DSR is for: a FIN/FOUT color must be one of its ``num_colors`` (without
        it, any 5-bit color is encoded, so that a bench can provoke ``BAD_COLOR``).
    """
    kind = Kind(kind)
    dtype = DType(dtype)
    dims = list(dims)
    if not 1 <= len(dims) <= 4:
        raise ValueError(f"a tensor has 1 to 4 dimensions, not {len(dims)}")
    if kind == Kind.ACC and dtype != DType.FP32:
        raise ValueError("accumulator-cache tensors are FP32")
    if pe is not None and kind in (Kind.FIN, Kind.FOUT):
        _check_id("color", color, pe.num_colors, "the PE has", name=f"{kind.name} color")
    if filter_zeros:
        if kind != Kind.FOUT or dtype != DType.FP16:
            raise ValueError(f"the zero filter is for FP16 FOUT streams, not {kind.name} "
                             f"{dtype.name}")
        fifo_size = 1
    if idx_shift or idx_width:
        if kind not in (Kind.MEM, Kind.ACC):
            raise ValueError(f"idx_shift / idx_width are for MEM and ACC tensors, not "
                             f"{kind.name}")
        for name, v in (("idx_shift", idx_shift), ("idx_width", idx_width)):
            if not 0 <= v < 16:
                raise ValueError(f"{name} must be 0..15, not {v}")
        fifo_size = idx_shift | idx_width << 4
    fields = {"kind": kind, "dtype": dtype, "ctrl": ctrl, "color": color,
              "out_index": out_index, "adv_count": adv_count, "adv_step": adv_step,
              "fifo_size": fifo_size, "pos": pos, "count": count}
    if kind == Kind.SCALAR:
        value = int(value)
        fields["base"] = value & 0xFFFF
        fields["idx_stride"] = (value >> 16) & 0xFFFF
    else:
        fields["base"] = base
        fields["idx_stride"] = idx_stride
    for i in range(4):
        length, stride = dims[i] if i < len(dims) else (1, 0)
        fields[f"dims.{i}.len"] = length
        fields[f"dims.{i}.stride"] = stride
    return _words(encode_fields(DSR, **fields), DSR_WORDS)


def encode_entry(op, dst, a=DSR_NONE, b=DSR_NONE, s=DSR_NONE, *, prio=0, idx=(), adv=(),
                 clear_a=False, last=True, pe=None):
    """The 2 words of a launch entry. ``idx`` and ``adv`` are collections of the operand
    names (``"dst"``, ``"a"``, ``"b"``) that use index-offset mode / advance after launch.
    ``pe`` (a :class:`PEParams`): the DSR ids must be the PE's (else: the register map's)."""
    for name, value in (("dst", dst), ("a", a), ("b", b), ("s", s)):
        _check_dsr_id(name, value, pe)
    roles = {"dst": 1, "a": 2, "b": 4}
    for name, group in (("idx", idx), ("adv", adv)):
        for role in group:
            if role not in roles:
                raise ValueError(f"{name} names operand {role!r}; use 'dst', 'a' or 'b'")
    value = encode_fields(LaunchEntry, **{
        "launch.op": TensorOp(op), "launch.dst": dst, "launch.a": a, "launch.b": b,
        "launch.s": s, "launch.prio": prio, "launch.idx": sum(roles[r] for r in set(idx)),
        "launch.adv": sum(roles[r] for r in set(adv)),
        "launch.clear_a": int(bool(clear_a)), "last": int(bool(last))})
    return _words(value, ENTRY_WORDS)


def encode_bind(data_task=None, ctrl_base=None, prio=0, *, pe=None):
    """A :class:`ColorBind` word: ``None`` leaves that kind of wavelet unbound. ``pe``: the
    task ids must be the PE's (``ctrl_base`` is the task of command 0)."""
    for name, value in (("data_task", data_task), ("ctrl_base", ctrl_base)):
        if value is not None:
            _check_task_id(name, value, pe)
    return encode_fields(ColorBind, data_task=data_task or 0,
                         data_en=int(data_task is not None), ctrl_base=ctrl_base or 0,
                         ctrl_en=int(ctrl_base is not None), prio=prio)


def encode_task(entry=None, *, pc=None, prio=0, pe=None):
    """A :class:`TaskEntry` word: a launch-list task starting at launch entry ``entry``, or
    (``pc`` given) a code task starting at byte address ``pc``. ``pe``: the entry must be
    one of the PE's, the pc inside its SRAM."""
    if (entry is None) == (pc is None):
        raise ValueError("a task is either a launch list (entry=) or code (pc=), not both")
    whose, p = _whose(pe)
    if pc is not None:
        if pc % 4:
            raise ValueError(f"task pc={pc:#x} is not a multiple of 4")
        if pe is not None and not 0 <= pc < 4 * pe.sram_words:
            raise ValueError(f"task pc={pc:#x} is outside the SRAM: the PE has "
                             f"{4 * pe.sram_words:#x} bytes")
        return encode_fields(TaskEntry, code=1, pc=pc, prio=prio)
    _check_id("launch entry", entry, p.num_entries, whose, name="entry")
    return encode_fields(TaskEntry, entry=entry, prio=prio)


def encode_trigger(task, index=0, data=0, *, pe=None):
    """A :class:`HostTrigger` word (``pe``: the task must be one of the PE's)."""
    _check_task_id("task", task, pe)
    return encode_fields(HostTrigger, task=task, index=index, data=data)


def decode_error(word):
    """``(ErrorCode, info)`` of an ERROR register value (unknown codes stay ints)."""
    fields = decode_fields(ErrorWord, word)
    code = fields["code"]
    try:
        code = ErrorCode(code)
    except ValueError:
        pass
    return code, fields["info"]


# --- addresses ------------------------------------------------------------------------------

def reg_addr(offset):
    """PE cfg address of a register-region offset."""
    return PE_REGS_BASE + int(offset)


def dsr_addr(dsr, word=0, *, pe=None):
    """PE cfg address of word ``word`` of DSR ``dsr`` (checked against ``pe``'s DSRs, or
    without ``pe`` against the register map)."""
    return _item_addr(CfgRegion.DSR, dsr, word, pe)


def entry_addr(entry, word=0, *, pe=None):
    """PE cfg address of word ``word`` of launch entry ``entry``."""
    return _item_addr(CfgRegion.ENTRY, entry, word, pe)


def task_addr(task, *, pe=None):
    """PE cfg address of the task table entry of ``task``."""
    return _item_addr(CfgRegion.TASK, task, 0, pe)


def bind_addr(color, *, pe=None):
    """PE cfg address of the binding of ``color`` (without ``pe``: any 5-bit color, so that
    a bench can bind a color the PE does not have and see ``BAD_COLOR``)."""
    return _item_addr(CfgRegion.BIND, color, 0, pe)


def acc_addr(word, *, pe=None):
    """PE cfg address of accumulator-cache word ``word``."""
    return _item_addr(CfgRegion.ACC, word, 0, pe)


def counter_addr(counter):
    """PE cfg address of a :class:`Counter`."""
    return PE_REGS_BASE + COUNTER_BASE + int(counter)


def _log2(n):
    return int(math.log2(n))


def gpr_addr(register):
    """PE cfg address of the control core's general-purpose register ``register``."""
    return _item_addr(CfgRegion.GPR, int(register), 0, None)
