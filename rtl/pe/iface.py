"""The interfaces between the PE's blocks: one signature per connection (docs/pe.md, 2).

Every signature is written from the side that starts the exchange (its ``Out`` members are
that side's outputs); the other block takes it ``In(...)``, and :class:`rtl.pe.pe.PE`
joins the two with ``connect``. Streams with a valid/ready handshake are
``stream.Signature(<layout>)``. Interfaces with many fields are records of narrow members,
not one wide struct: every value the model evaluates per cycle stays at most 64 bits wide
(simulation speed, docs/pe.md section 12).

Timing conventions: "issue stage" means the cycle in which the tensor engine selects a
micro-thread (stage I); "read stage" the next one (stage R), where the datapath receives
the data of the reads the issue stage addressed.
"""

from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from rtl.pe.regs import ErrorCode, LaunchRequest, TensorOp, layout_fields
from rtl.wavelet import COLOR_BITS, Wavelet

__all__ = [
    "QueueEntry", "LaunchStream", "QueueOperandSignature", "QueueDataSignature",
    "SchedulerLookupSignature", "LauncherQueueSignature",
    "MemReadSignature", "MemDataSignature", "SramWriteSignature", "AccWriteSignature",
    "issue_fields", "READ_STAGE_FIELDS", "IssueSignature", "PendingWrite", "HazardSignature",
    "OutBufferSignature",
    "RegionSignature", "ErrorSignature", "QueueReport", "LauncherReport", "EngineReport",
    "DatapathReport", "ConfigReport", "CoreReport", "QUEUE_LEVEL_BITS", "thread_bits",
    "TaskStarted", "ThreadLaunched", "PEDebug", "DEBUG_THREADS", "DEBUG_PULSES",
    "DEBUG_PULSE_MASK",
]

_WAVELET = data.Layout.cast(Wavelet)

#: A wavelet in a per-color input queue: the :class:`rtl.wavelet.Wavelet` without its color
#: (the queue is the color).
QueueEntry = data.StructLayout({name: _WAVELET[name].shape for name in ("data", "index", "ctrl")})

#: The tensor engine's launch interface (docs/pe.md, section 6).
LaunchStream = stream.Signature(LaunchRequest)

#: Width of a queue's fill level (0 .. rx_depth).
QUEUE_LEVEL_BITS = 3


def thread_bits(threads):
    """Width of a micro-thread number."""
    return max(1, ceil_log2(threads))


class QueueOperandSignature(wiring.Signature):
    """A fabric-input operand's port on the rx queues, driven by the engine's issue stage:
    ``color`` is looked up (``level``: wavelets queued, combinationally) and ``pop`` wavelets
    leave it at the clock edge. The wavelets themselves reach the datapath on the matching
    :class:`QueueDataSignature` one cycle later."""

    def __init__(self, depth):
        super().__init__({
            "color": Out(COLOR_BITS),
            "pop": Out(range(depth + 1)),
            "level": In(QUEUE_LEVEL_BITS),
        })


class QueueDataSignature(wiring.Signature):
    """The ``depth`` oldest wavelets of the color an operand port named in the previous
    cycle, oldest first (the queue's synchronous read; before that cycle's pop), driven by
    the rx queues for the datapath's read stage."""

    def __init__(self, depth):
        super().__init__({"entries": Out(QueueEntry).array(depth)})


class SchedulerLookupSignature(wiring.Signature):
    """The scheduler's fill-level lookups ("is a full vector queued?"), combinational:
    ``a_color[t]`` / ``b_color[t]`` is thread t's operand color, ``a_level[t]`` /
    ``b_level[t]`` the wavelets queued on it."""

    def __init__(self, threads):
        super().__init__({
            "a_color": Out(COLOR_BITS).array(threads),
            "a_level": In(QUEUE_LEVEL_BITS).array(threads),
            "b_color": Out(COLOR_BITS).array(threads),
            "b_level": In(QUEUE_LEVEL_BITS).array(threads),
        })


class LauncherQueueSignature(wiring.Signature):
    """The task launcher's port on the rx queues. ``pick`` (a color, or ``num_colors`` for
    the host trigger) addresses the queues' synchronous read; in the next cycle ``head`` is
    the oldest wavelet of ``color`` from that read, and ``pop`` removes it. ``nonempty``:
    bit c, color c has a wavelet queued."""

    def __init__(self, num_colors):
        super().__init__({
            "pick": Out(range(num_colors + 1)),
            "color": Out(range(num_colors + 1)),
            "pop": Out(1),
            "head": In(QueueEntry),
            "nonempty": In(num_colors),
        })


class MemReadSignature(wiring.Signature):
    """A datapath read port's address, driven by the issue stage: ``addr`` is the operand's
    current address (an FP16-element address of the SRAM, or an accumulator word). The data
    arrives on the matching :class:`MemDataSignature` in the read stage."""

    def __init__(self):
        super().__init__({"addr": Out(16)})


class MemDataSignature(wiring.Signature):
    """A read port's data in the read stage: ``sram`` is the 64-bit bank pair the address
    fell in, ``acc`` the four words of its accumulator row (forwarded from the write-back of
    the issue cycle). Driven by the memory."""

    def __init__(self):
        super().__init__({"sram": Out(64), "acc": Out(32).array(4)})


class SramWriteSignature(wiring.Signature):
    """The datapath's SRAM write: 64 bits into the bank pair of FP16-element address
    ``addr``, ``en`` one bit per 16-bit half (none: no write)."""

    def __init__(self):
        super().__init__({"addr": Out(16), "data": Out(64), "en": Out(4)})


class AccWriteSignature(wiring.Signature):
    """The datapath's accumulator-cache write: row ``addr[2:]``, column j gets ``data[j]``
    where ``en[j]`` is set."""

    def __init__(self):
        super().__init__({"addr": Out(16), "data": Out(32).array(4), "en": Out(4)})


def issue_fields(params):
    """Fields of one issue (the record the issue stage hands the datapath): name -> width.
    ``valid`` first; the pipeline carries the write-back fields to stage W."""
    tb = thread_bits(params.threads)
    fields = {
        "valid": 1, "thread": tb, "n": 3, "core": 1, "dst_kind": 3, "dst_dtype": 1,
        "dst_addr": 16, "raw": 1, "wmask": params.banks, "clear": 1, "clr_addr": 16,
        "w_valid": 1, "w_space": 3, "w_line": 14,
        # read-stage fields
        "op": 4, "s_value": 32, "s16": 1,
    }
    for r in ("a", "b"):
        fields.update({f"{r}_kind": 3, f"{r}_dtype": 1, f"{r}_off": 2, f"{r}_value": 32})
    return fields


#: Fields of :func:`issue_fields` that only the read stage needs (not carried past it).
READ_STAGE_FIELDS = ("op", "s_value", "s16", "a_kind", "a_dtype", "a_off", "a_value",
                     "b_kind", "b_dtype", "b_off", "b_value")


class IssueSignature(wiring.Signature):
    """One issue per cycle at most, from the engine to the datapath, which always accepts
    (no ready): ``valid`` and the narrow fields of :func:`issue_fields`."""

    def __init__(self, params):
        super().__init__({name: Out(width) for name, width in issue_fields(params).items()})


#: A write still in the datapath's pipeline, as the engine's read-after-write check sees it:
#: the destination's line (``w_*``) and, for ``clear_a``, the cleared accumulator line.
PendingWrite = data.StructLayout({
    "valid": 1, "w_valid": 1, "w_space": 3, "w_line": 14, "clear": 1, "clr_addr": 16,
})


class HazardSignature(wiring.Signature):
    """What the datapath's pipeline tells the issue stage: the writes of stages R, X and A
    (``pending``), the SRAM banks the write-back uses this cycle (``wb_banks``), and whether
    an issue of an operation the core launched is in stages R to W (``core_busy``)."""

    def __init__(self, params):
        super().__init__({
            "pending": Out(PendingWrite).array(3),
            "wb_banks": Out(params.banks),
            "core_busy": Out(1),
        })


class OutBufferSignature(wiring.Signature):
    """The engine's side of the per-thread fabric output buffers in the datapath. ``start``:
    thread ``slot`` is launched this cycle (its buffer is emptied; ``color``, ``ctrl``,
    ``index`` are what it sends with; ``filter``: it drops +-0 values and sends each other
    value with its element index instead, FP16 only). ``credits[t]``: wavelets issued by
    thread t and not yet sent or dropped (the room its issue needs, and whether it may
    retire)."""

    def __init__(self, params):
        super().__init__({
            "start": Out(1),
            "slot": Out(thread_bits(params.threads)),
            "color": Out(COLOR_BITS),
            "ctrl": Out(1),
            "index": Out(_WAVELET["index"].shape),
            "filter": Out(1),
            "credits": In(range(params.out_depth + 1)).array(params.threads),
        })


class RegionSignature(wiring.Signature):
    """A region of the configuration space (:class:`rtl.pe.regs.Region`), as the decoder
    hands it to the block behind it. ``sel``: the address is in the region (an item id
    below ``ids``; meaningful only in a cycle with ``we`` or ``re``); ``index`` / ``word``:
    which item and which of its words; ``we`` / ``re``: the bus strobes, qualified by
    ``sel``. ``rdata``: the word read, valid in the cycle after
    ``re`` (the block registers it or reads a synchronous memory port), held until the next
    read."""

    def __init__(self, region):
        members = {"sel": Out(1), "index": Out(range(max(region.ids, 2)))}
        if region.words > 1:
            members["word"] = Out(range(region.words))
        members.update({"we": Out(1), "re": Out(1), "wdata": Out(32), "rdata": In(32)})
        super().__init__(members)
        self._region = region

    @property
    def region(self):
        return self._region


class ErrorSignature(wiring.Signature):
    """An error raised this cycle: ``valid``, its ``info`` byte, and its ``code`` (an
    :class:`ErrorCode` value) unless the source has one fixed ``code``."""

    def __init__(self, code=None):
        members = {"valid": Out(1)}
        if code is None:
            members["code"] = Out(ErrorCode.as_shape())
        members["info"] = Out(8)
        super().__init__(members)
        self._code = None if code is None else ErrorCode(code)

    @property
    def code(self):
        """The fixed :class:`ErrorCode`, or None when the source drives ``code``."""
        return self._code


# --- what each block reports to the status block (counters, errors, busy) --------------------
# A member named after a :class:`rtl.pe.regs.Counter` (lower case) is that counter's
# increment this cycle.

class QueueReport(wiring.Signature):
    """From the rx queues."""

    def __init__(self):
        super().__init__({
            "wavelets_in": Out(1),
            "rx_error": Out(ErrorSignature(ErrorCode.BAD_COLOR)),
            "pending": Out(1),                 # some wavelet queued
        })


class LauncherReport(wiring.Signature):
    """From the task launcher."""

    def __init__(self):
        super().__init__({
            "tasks": Out(1),
            "task_error": Out(ErrorSignature(ErrorCode.BAD_TASK)),
            "bind_error": Out(ErrorSignature(ErrorCode.BAD_COLOR)),
            "trigger_error": Out(ErrorSignature(ErrorCode.TRIGGER_OVERRUN)),
            "active": Out(1),                  # decoding a wavelet or issuing a task
            "trigger_pending": Out(1),
        })


class EngineReport(wiring.Signature):
    """From the tensor engine."""

    def __init__(self, params):
        super().__init__({
            "busy": Out(1), "fmac_lanes": Out(3), "stall_input": Out(1),
            "stall_output": Out(1), "stall_bank": Out(1), "stall_hazard": Out(1),
            "launches": Out(1),
            "launch_error": Out(ErrorSignature()),
            "threads_active": Out(params.threads),
            "launching": Out(1),               # a launch in L1
        })


class DatapathReport(wiring.Signature):
    """From the datapath."""

    def __init__(self):
        super().__init__({
            "wavelets_out": Out(1),
            "pipeline_busy": Out(1),           # an issue in stage R, X, A or W
            "tx_pending": Out(1),              # a wavelet in an output buffer
        })


class ConfigReport(wiring.Signature):
    """From the configuration decoder."""

    def __init__(self):
        super().__init__({"config_error": Out(ErrorSignature(ErrorCode.BAD_CONFIG))})


class CoreReport(wiring.Signature):
    """From the control core (SPEC 4.5; driven idle until the core is attached)."""

    def __init__(self):
        super().__init__({
            "core_retired": Out(1), "core_active": Out(1), "stall_core_bank": Out(1),
            "core_error": Out(ErrorSignature()),
            "running": Out(1), "halted": Out(1),
        })


# --- the debug port (timelines) ---------------------------------------------------------------

#: A task the launcher starts in this cycle (the cycle it takes the activation: a launch
#: list's entries follow, a code task is handed to the core): ``valid``, the ``task`` id, and
#: ``code``, a code task rather than a launch list.
TaskStarted = data.StructLayout({"valid": 1, "code": 1, "task": 5})

#: A tensor operation the engine places into micro-thread ``slot`` in this cycle (stage L1):
#: ``valid``, its ``op`` and ``core``, launched by the control core (else by the launcher).
ThreadLaunched = data.StructLayout({"valid": 1, "slot": 4, "op": TensorOp, "core": 1})

#: Width of :data:`PEDebug`'s ``threads`` (the most micro-threads a PE can have), so that the
#: port is the same for every PE parameter set.
DEBUG_THREADS = 16


class PEDebug(data.Struct):
    """What a PE did in one cycle, for timelines (the ``dbg`` port of the PE and of the
    tile, docs/timeline.md). Built from signals the blocks already have, and registered: the
    value in cycle n tells what happened in cycle n - 1.

    ``start``: a task started (:data:`TaskStarted`); ``launch``: an operation went into a
    micro-thread slot (:data:`ThreadLaunched`); ``core_done``: the core's task ended
    (``tend``); ``core_running``: the core runs a task or program; ``retired``: the core
    retired an instruction; ``error``: the sticky error; ``threads``: bit t, micro-thread
    slot t holds a live operation.
    """
    start: TaskStarted
    launch: ThreadLaunched
    core_done: 1
    core_running: 1
    retired: 1
    error: 1
    threads: DEBUG_THREADS


#: The fields of :class:`PEDebug` that are one-cycle events: a recorder keeps every cycle in
#: which one is set, even when the port's value did not change.
DEBUG_PULSES = ("start.valid", "launch.valid", "core_done", "retired")
#: The bits of a :class:`PEDebug` word that hold :data:`DEBUG_PULSES`.
DEBUG_PULSE_MASK = sum(1 << layout_fields(PEDebug)[name][0] for name in DEBUG_PULSES)
