"""Instruction-set simulator (ISS) of the PE's control core (SPEC 4.5).

The reference the RTL core is run against in lockstep: one PE's architectural state (16
GPRs with ``r0 = 0``, the PC, the SRAM as 32-bit words, the DSR file, the accumulator cache,
the task table, the color bindings, the blocked set, the error registers) and the semantics
of every instruction of :mod:`rtl.pe.isa`, which it decodes with :func:`rtl.pe.isa.decode`
(nothing is listed twice). Tensor launches run through the tensor-operation code of
:class:`tb.pe_model.PEModel`, whose SRAM, DSR words and accumulator cache *are* the ISS's
state (the ISS views the model's FP16 SRAM array as little-endian 32-bit words: FP16
element ``h`` is the low (even ``h``) or high half of word ``h >> 1``).

Semantics beyond the instruction table (``docs/core.md``, "The ISS"):

* Tensor operations complete at their launch: nothing is *live* after the launch
  instruction, so ``twait`` returns at once and ``dsrw`` never raises ``DSR_BUSY``. The RTL
  can differ only for programs that write a DSR (or read the memory) of a launched
  operation before a ``twait``; lockstep programs do not do that.
* Faults stop the core (:class:`CoreFault`): ``ILLEGAL_INSTRUCTION`` (a word that is not an
  instruction), ``CORE_ADDRESS`` (fetch, load or store outside the SRAM),
  ``CORE_MISALIGNED`` (load/store address or ``jalr`` target not a multiple of 4; checked
  before the range), and operands beyond the PE's parameters: ``BAD_OPERAND`` (``dsrw`` /
  ``dsrr`` of a DSR id >= ``num_dsrs``; ``recv`` of a color bound to a task), ``BAD_COLOR``
  (``send``/``recv`` color >= ``num_colors``), ``BAD_TASK`` (``tact``/``tblk``/``tunblk``
  task >= ``num_tasks``). A control transfer to an address outside the SRAM retires, and
  the fetch at the target faults. The faulting instruction does not retire.
* Errors of a tensor launch (codes 1..10 of :class:`rtl.pe.regs.ErrorCode`) do not stop
  the core: the launch is dropped and the error recorded, as the engine does.
* ``recv`` of an empty queue and a tensor launch whose fabric input has too few wavelets
  raise :class:`CoreBlocked` (the RTL would wait forever).
* Tasks: ``tact`` and wavelets on bound colors make *activations*; at ``tend`` the core
  starts the runnable (not blocked) activation that comes first in ``task_order`` (default
  :func:`prio_then_id`: highest priority, then lowest task id, then the oldest). Launch-list
  tasks (``TaskEntry.code = 0``) run on the task launcher, not the core: the ISS runs them
  as soon as they are activated and not blocked.
"""

import sys
from collections import deque, namedtuple
from dataclasses import dataclass

import numpy as np
from amaranth.lib import data

from rtl.pe.asm import disassemble
from rtl.pe.isa import (NUM_GPRS, TENSOR_MNEMONICS, AluOp, BranchOp, Cls, Format,
                        LaunchModifier, RetireRecord, decode)
from rtl.pe.regs import (COUNTER_BASE, DSR_WAVELET, DSR_WORDS, GPR_BASE, MAX_TASKS,
                         ColorBind, CoreStatus, Counter, ErrorCode, ErrorWord, IdWord, Reg,
                         Status, TaskEntry, TensorOp, decode_fields, encode_bind,
                         encode_fields, encode_task, layout_fields)
from rtl.wavelet import FIELDS as WAVELET_FIELDS
from rtl.wavelet import NUM_COLORS
from rtl.wavelet import pack as pack_wavelet
from tb.pe_model import PEConfig, PEModel, PEModelError

__all__ = ["ISS", "CoreFault", "CoreBlocked", "Retire", "CycleModel", "RunResult",
           "Activation", "TASK_ORDERS", "prio_then_id", "prio_then_age", "pack_retire",
           "unpack_retire", "task_start_registers"]

M32 = 0xFFFFFFFF

#: One retired instruction: the fields of :class:`rtl.pe.isa.RetireRecord`, in its order.
Retire = namedtuple("Retire", [name for name, _ in data.Layout.cast(RetireRecord)])


def pack_retire(record):
    """The :class:`rtl.pe.isa.RetireRecord` bits of a :class:`Retire` (an ``int``)."""
    return encode_fields(RetireRecord, **record._asdict())


def unpack_retire(bits):
    """The :class:`Retire` of :class:`rtl.pe.isa.RetireRecord` bits."""
    return Retire(**decode_fields(RetireRecord, bits))


def task_start_registers(wavelet):
    """``{1: data, 2: index, 3: word}``: the registers a task starts with (SPEC 4.5)."""
    wavelet = int(wavelet) & M32
    data_off, data_w = WAVELET_FIELDS["data"]
    index_off, index_w = WAVELET_FIELDS["index"]
    return {1: (wavelet >> data_off) & ((1 << data_w) - 1),
            2: (wavelet >> index_off) & ((1 << index_w) - 1),
            3: wavelet}


class CoreFault(Exception):
    """The core stopped on an error.

    Attributes: ``code`` (:class:`rtl.pe.regs.ErrorCode`), ``pc`` (byte address of the
    faulting instruction or fetch), ``word`` (its word, ``None`` for a fetch outside the
    SRAM) and ``message``, which names the PC and the disassembled instruction.
    """

    def __init__(self, code, pc, word, message):
        super().__init__(message)
        self.code, self.pc, self.word, self.message = code, pc, word, message


class CoreBlocked(RuntimeError):
    """The core waits for something that never comes in this run (an empty input queue):
    the RTL would wait forever. ``pc`` and ``word`` name the instruction; nothing changed,
    so the caller may queue input and step again."""

    def __init__(self, pc, word, message):
        super().__init__(message)
        self.pc, self.word, self.message = pc, word, message


@dataclass(frozen=True)
class CycleModel:
    """The cycle model: the RTL pipeline's design targets (6 stages F1 F2 D X M W).

    ``cycles`` counts clock cycles from the start of the core until the last retired
    instruction leaves W: ``stages - 1`` to fill the pipeline, then one per instruction
    (CPI 1) plus the bubbles below.

    Parameters
    ----------
    stages : int
        Pipeline depth (the first instruction retires after ``stages`` cycles).
    taken_branch : int
        Bubbles after a taken branch (resolved in X; the target's fetch follows).
    jalr : int
        Bubbles after ``jalr`` (target from a register, resolved in X).
    jal : int
        Bubbles after ``jal`` (target known in D).
    load_use : int
        Bubbles when an instruction reads the register the instruction just before it
        loaded with ``lw``.
    task_switch : int
        Bubbles between a ``tend`` and the first instruction of the next task.
    """
    stages: int = 6
    taken_branch: int = 3
    jalr: int = 3
    jal: int = 2
    load_use: int = 1
    task_switch: int = 3


#: An activation waiting for the core: ``task``, ``prio``, ``seq`` (arrival order),
#: ``word`` (the wavelet word the task starts with), ``color`` (None: from ``tact``).
Activation = namedtuple("Activation", "task prio seq word color")


def prio_then_id(activation):
    """Task order: highest priority first, then the lowest task id, then the oldest."""
    return (-activation.prio, activation.task, activation.seq)


def prio_then_age(activation):
    """Task order: highest priority first, then the oldest activation."""
    return (-activation.prio, activation.seq)


#: Named task orders for ``ISS(task_order=...)``.
TASK_ORDERS = {"prio_then_id": prio_then_id, "prio_then_age": prio_then_age}


@dataclass
class RunResult:
    """How :meth:`ISS.run` ended.

    ``stop``: ``"halt"``, ``"idle"`` (``tend`` with no runnable task), ``"budget"`` (the
    instruction or cycle budget ran out) or ``"fault"`` (``fault`` is the
    :class:`CoreFault`); ``pc``: the halt, the parked ``tend``, the next instruction or the
    fault; ``retired`` and ``cycles``: the core's totals since reset.
    """
    stop: str
    pc: int
    retired: int
    cycles: int
    fault: CoreFault = None

    @property
    def halted(self):
        return self.stop == "halt"


def _signed(value):
    return value - (1 << 32) if value & 0x80000000 else value


_ALU = {
    AluOp.ADD: lambda a, b: (a + b) & M32,
    AluOp.SUB: lambda a, b: (a - b) & M32,
    AluOp.AND: lambda a, b: a & b,
    AluOp.OR: lambda a, b: a | b,
    AluOp.XOR: lambda a, b: a ^ b,
    AluOp.SLL: lambda a, b: (a << (b & 31)) & M32,
    AluOp.SRL: lambda a, b: a >> (b & 31),
    AluOp.SRA: lambda a, b: (_signed(a) >> (b & 31)) & M32,
    AluOp.SLT: lambda a, b: int(_signed(a) < _signed(b)),
    AluOp.SLTU: lambda a, b: int(a < b),
}

_BRANCH = {
    BranchOp.EQ: lambda a, b: a == b,
    BranchOp.NE: lambda a, b: a != b,
    BranchOp.LT: lambda a, b: _signed(a) < _signed(b),
    BranchOp.GE: lambda a, b: _signed(a) >= _signed(b),
    BranchOp.LTU: lambda a, b: a < b,
    BranchOp.GEU: lambda a, b: a >= b,
}

RESET, RUNNING, HALTED, IDLE, FAULTED = "reset", "running", "halted", "idle", "fault"

_MODIFIER_FIELDS = layout_fields(LaunchModifier)


class ISS:
    """Instruction-set simulator of one PE's control core.

    Parameters
    ----------
    sram_words, acc_words, num_dsrs, banks, threads, num_colors, num_tasks : int
        The PE's parameters (``rtl.pe.pe.PE``'s defaults); ``csrr ID`` reports them.
    timing : CycleModel, optional
        The cycle model (default: the RTL design targets).
    task_order : str or callable, optional
        Which runnable activation ``tend`` starts: a name of :data:`TASK_ORDERS` or a key
        function of an :class:`Activation` (smallest first). Default ``"prio_then_id"``.
    config : tb.pe_model.PEConfig, optional
        Initial SRAM, accumulator cache, DSRs, launch entries; its launch-list tasks and
        color bindings enter the task table and the bindings.
    keep_trace : bool
        Keep every :class:`Retire` record in :attr:`trace`.
    inputs : dict, optional
        Wavelets queued before the start: ``{color: [(data, index, ctrl), ...]}`` (as
        :meth:`push_input`).

    Use: :meth:`load` a :class:`rtl.pe.asm.Program`, :meth:`start` at a PC, then
    :meth:`step` (one retired instruction) or :meth:`run`.
    """

    def __init__(self, sram_words=12288, num_dsrs=44, acc_words=64, banks=8, threads=8,
                 num_colors=NUM_COLORS, num_tasks=MAX_TASKS, timing=None,
                 task_order="prio_then_id", config=None, keep_trace=True, inputs=None):
        if sys.byteorder != "little":
            raise RuntimeError("the ISS views FP16 halves as little-endian words: run it on "
                               "a little-endian host")
        if config is None:
            config = PEConfig(sram_words=sram_words, acc_words=acc_words)
        if config.sram_words != sram_words or config.acc_words != acc_words:
            raise ValueError(f"config has {config.sram_words} SRAM / {config.acc_words} "
                             f"accumulator words, the ISS {sram_words} / {acc_words}")
        self.sram_words, self.num_dsrs, self.acc_words = sram_words, num_dsrs, acc_words
        self.banks, self.threads = banks, threads
        self.num_colors, self.num_tasks = num_colors, num_tasks
        self.timing = timing or CycleModel()
        self.task_order = TASK_ORDERS[task_order] if isinstance(task_order, str) else task_order
        self.keep_trace = keep_trace
        self.model = PEModel(config, num_colors=num_colors, num_dsrs=num_dsrs)
        #: The SRAM as 32-bit words (a view of the model's FP16 array: one memory).
        self.mem = self.model.sram.view(np.uint32)
        self._sram_bytes = 4 * sram_words
        self.regs = [0] * NUM_GPRS
        self.pc = 0
        self.state = RESET
        self.task = None
        self.retired = 0
        self.cycles = 0
        self.trace = []
        self.fault = None
        #: Non-fatal errors: ``(ErrorCode, pc, what)`` in order.
        self.errors = []
        self.error_word = 0
        self.error_flags = 0
        self.blocked = 0
        self.task_table = {t: encode_task(e) for t, e in config.tasks.items()}
        self.binds = {}
        for color, (data_task, ctrl_base) in config.binds.items():
            self.bind(color, data_task, ctrl_base)
        self.pending = []
        self.counters = dict.fromkeys(Counter, 0)
        self._seq = 0
        self._fill = 0
        self._last_load_rd = 0
        self._last_pc = None
        self._cache = {}
        for color, wavelets in (inputs or {}).items():
            for wavelet in wavelets:
                self.push_input(color, *wavelet)

    # --- configuration ------------------------------------------------------------------
    def load(self, program):
        """Write a :class:`rtl.pe.asm.Program` into the SRAM and its ``.task`` entries into
        the task table. Raises ``ValueError`` if it does not fit the SRAM."""
        if program.end > self._sram_bytes:
            raise ValueError(f"the program ends at byte {program.end:#x}, past the SRAM "
                             f"({self._sram_bytes:#x} bytes)")
        first = program.base // 4
        self.mem[first:first + len(program.words)] = np.asarray(program.words, dtype=np.uint32)
        for task, word in program.task_words().items():
            self.task_table[task] = word

    def set_task(self, task, pc=None, entry=None, prio=0):
        """Task table entry: code at byte address ``pc``, or a launch list at ``entry``."""
        self._check_task_id(task)
        self.task_table[task] = encode_task(entry, pc=pc, prio=prio)

    def bind(self, color, data_task=None, ctrl_base=None, prio=0):
        """Bind ``color``: data wavelets start ``data_task``, control wavelets
        ``ctrl_base + index`` (``None``: that kind is not bound), at priority ``prio``."""
        if not 0 <= color < self.num_colors:
            raise ValueError(f"color {color} out of range 0..{self.num_colors - 1}")
        self.binds[color] = decode_fields(ColorBind, encode_bind(data_task, ctrl_base, prio))
        self.model.binds[color] = (data_task, ctrl_base)

    def push_input(self, color, data=0, index=0, ctrl=0):
        """Queue a wavelet arriving on ``color`` (for ``recv``, a FIN operand or, on a bound
        color, a task activation)."""
        if not 0 <= color < self.num_colors:
            raise ValueError(f"color {color} out of range 0..{self.num_colors - 1}")
        pack_wavelet(data, index, ctrl, color)   # checks the field widths
        self.model.fin.setdefault(color, deque()).append((data, index, ctrl))
        self._service_launcher()

    @property
    def outputs(self):
        """Wavelets sent, per color: ``{color: [(data, index, ctrl), ...]}`` (``send``,
        ``sendc`` and FOUT tensor operands, in order)."""
        return self.model.fout

    def read_words(self, byte_address, count):
        """``count`` SRAM words from ``byte_address`` (a multiple of 4), as ints."""
        if byte_address % 4 or byte_address < 0 or byte_address + 4 * count > self._sram_bytes:
            raise ValueError(f"words {byte_address:#x} + {count} are not inside the SRAM "
                             f"(0..{self._sram_bytes - 4:#x}, multiples of 4)")
        first = byte_address // 4
        return [int(w) for w in self.mem[first:first + count]]

    # --- running -------------------------------------------------------------------------
    def start(self, pc, wavelet=0):
        """Start the core at byte address ``pc`` as a task started by wavelet word
        ``wavelet`` (r1 = data, r2 = index, r3 = the word; other registers kept)."""
        if pc % 4:
            raise self._make_fault(ErrorCode.CORE_MISALIGNED, pc, None,
                                   f"start address {pc:#x} is not a multiple of 4")
        for reg, value in task_start_registers(wavelet).items():
            self.regs[reg] = value
        self.pc = pc & M32
        self.state = RUNNING
        self.fault = None
        self._fill = self.timing.stages - 1
        self._last_load_rd = 0

    def run(self, max_instructions=None, max_cycles=None):
        """Step until ``halt``, a fault, an idle core or a budget; returns a
        :class:`RunResult`. ``max_instructions`` counts this call's instructions,
        ``max_cycles`` the core's cycles since reset (checked before each instruction).
        :class:`CoreBlocked` propagates."""
        budget = max_instructions
        while True:
            if self.state == IDLE and not self._dispatch():
                return RunResult(IDLE, self.pc, self.retired, self.cycles)
            if self.state == HALTED:
                return RunResult("halt", self.pc, self.retired, self.cycles)
            if self.state == FAULTED:
                return RunResult(FAULTED, self.fault.pc, self.retired, self.cycles, self.fault)
            if self.state != RUNNING:
                raise RuntimeError(f"the core is {self.state}: start() it first")
            if budget is not None:
                if budget <= 0:
                    return RunResult("budget", self.pc, self.retired, self.cycles)
                budget -= 1
            if max_cycles is not None and self.cycles >= max_cycles:
                return RunResult("budget", self.pc, self.retired, self.cycles)
            try:
                self.step()
            except CoreFault:
                pass   # recorded in self.fault; reported by the next loop turn

    def step(self):
        """Execute one instruction; returns its :class:`Retire` record.

        Raises :class:`CoreFault` (the core stops), :class:`CoreBlocked` (nothing changed)
        or ``RuntimeError`` when the core is not running."""
        if self.state != RUNNING:
            if not (self.state == IDLE and self._dispatch()):
                raise RuntimeError(f"the core is {self.state} at PC {self.pc:#x}")
        pc = self.pc
        if pc >= self._sram_bytes:
            raise self._fetch_fault(pc)
        word = self.mem.item(pc >> 2)
        entry = self._cache.get(word)
        if entry is None:
            entry = self._cache[word] = self._compile(word)
        execute, reads, load_rd = entry
        rd, value, next_pc, bubbles = execute(pc)
        self.regs[0] = 0
        last = self._last_load_rd
        if last and last in reads:
            bubbles += self.timing.load_use
        self._last_load_rd = load_rd
        self.cycles += 1 + bubbles + self._fill
        self._fill = 0
        self.retired += 1
        self._last_pc = pc
        if self.state == RUNNING:
            self.pc = next_pc
        record = Retire(pc, word, rd, value)
        if self.keep_trace:
            self.trace.append(record)
        return record

    # --- faults and errors ----------------------------------------------------------------
    def _describe(self, pc, word):
        if word is None:
            return "no instruction"
        text = disassemble(word, pc=pc)
        return f"`{text}`" if text else f"word {word:#010x}, not an instruction"

    def _make_fault(self, code, pc, word, detail):
        message = f"{code.name} at PC {pc:#06x} ({self._describe(pc, word)}): {detail}"
        return CoreFault(code, pc, word, message)

    def _raise_fault(self, code, pc, word, detail):
        fault = self._make_fault(code, pc, word, detail)
        self._record_error(code, pc, detail)
        self.fault = fault
        self.state = FAULTED
        self.pc = pc
        return fault

    def _fetch_fault(self, pc):
        after = ""
        if self._last_pc is not None:
            last = self.mem.item(self._last_pc >> 2)
            after = f" after {self._describe(self._last_pc, last)} at {self._last_pc:#06x}"
        return self._raise_fault(ErrorCode.CORE_ADDRESS, pc, None,
                                 f"fetch outside the SRAM (0x0..{self._sram_bytes - 4:#x})"
                                 f"{after}")

    def _record_error(self, code, pc, what):
        self.errors.append((code, pc, what))
        if decode_fields(ErrorWord, self.error_word)["code"] == ErrorCode.NONE.value:
            self.error_word = encode_fields(ErrorWord, code=code, info=0)
        self.error_flags |= 1 << code.value
        self.counters[Counter.ERRORS] += 1

    def _check_dsr(self, dsr, pc, word):
        if dsr >= self.num_dsrs:
            raise self._raise_fault(ErrorCode.BAD_OPERAND, pc, word,
                                    f"no DSR {dsr} (the PE has {self.num_dsrs})")

    def _check_color(self, color, pc, word):
        if color >= self.num_colors:
            raise self._raise_fault(ErrorCode.BAD_COLOR, pc, word,
                                    f"no color {color} (the PE has {self.num_colors})")

    def _check_task(self, task, pc, word):
        if task >= self.num_tasks:
            raise self._raise_fault(ErrorCode.BAD_TASK, pc, word,
                                    f"no task {task} (the PE has {self.num_tasks})")

    def _data_address(self, base, imm, pc, word, what):
        address = (base + imm) & M32
        if address & 3:
            raise self._raise_fault(ErrorCode.CORE_MISALIGNED, pc, word,
                                    f"{what} address {address:#x} is not a multiple of 4")
        if address >= self._sram_bytes:
            raise self._raise_fault(ErrorCode.CORE_ADDRESS, pc, word,
                                    f"{what} address {address:#x} is outside the SRAM "
                                    f"(0x0..{self._sram_bytes - 4:#x})")
        return address >> 2

    # --- decoding into closures -------------------------------------------------------------
    def _compile(self, word):
        """``(execute(pc) -> (rd, value, next_pc, bubbles), registers read, load rd)``."""
        decoded = decode(word)
        if decoded is None:
            def illegal(pc):
                raise self._raise_fault(ErrorCode.ILLEGAL_INSTRUCTION, pc, word,
                                        "not an instruction")
            return illegal, (), 0
        insn, f = decoded
        if isinstance(insn, str):
            return self._compile_tensor(insn, f, word), \
                tuple({f["rs"], f["rm"]} - {0}), 0
        execute = getattr(self, f"_compile_{insn.cls.value}")(insn, f, word)
        reads = tuple({f[r] for r in insn.reads} - {0})
        load_rd = f["rd"] if insn.cls == Cls.LOAD else 0
        return execute, reads, load_rd

    def _compile_alu(self, insn, f, word):
        R, fn, rd, rs1 = self.regs, _ALU[insn.alu], f["rd"], f["rs1"]
        if insn.fmt == Format.R:
            rs2 = f["rs2"]

            def alu_rr(pc):
                v = R[rd] = fn(R[rs1], R[rs2])
                return rd, v if rd else 0, pc + 4, 0
            return alu_rr
        imm = f["imm"] & M32

        def alu_ri(pc):
            v = R[rd] = fn(R[rs1], imm)
            return rd, v if rd else 0, pc + 4, 0
        return alu_ri

    def _compile_lui(self, insn, f, word):
        R, rd, value = self.regs, f["rd"], (f["imm"] << 12) & M32

        def lui(pc):
            R[rd] = value
            return rd, value if rd else 0, pc + 4, 0
        return lui

    def _compile_load(self, insn, f, word):
        R, mem, rd, rs1, imm = self.regs, self.mem, f["rd"], f["rs1"], f["imm"]

        def load(pc):
            v = R[rd] = mem.item(self._data_address(R[rs1], imm, pc, word, "load"))
            return rd, v if rd else 0, pc + 4, 0
        return load

    def _compile_store(self, insn, f, word):
        R, mem, rs1, rs2, imm = self.regs, self.mem, f["rs1"], f["rs2"], f["imm"]

        def store(pc):
            v = R[rs2]
            mem[self._data_address(R[rs1], imm, pc, word, "store")] = v
            return 0, v, pc + 4, 0
        return store

    def _compile_branch(self, insn, f, word):
        R, cmp, rs1, rs2 = self.regs, _BRANCH[insn.branch], f["rs1"], f["rs2"]
        offset, bubbles = 4 * f["imm"], self.timing.taken_branch

        def branch(pc):
            if cmp(R[rs1], R[rs2]):
                return 0, 0, (pc + offset) & M32, bubbles
            return 0, 0, pc + 4, 0
        return branch

    def _compile_jal(self, insn, f, word):
        R, rd, offset, bubbles = self.regs, f["rd"], 4 * f["imm"], self.timing.jal

        def jal(pc):
            R[rd] = pc + 4
            return rd, pc + 4 if rd else 0, (pc + offset) & M32, bubbles
        return jal

    def _compile_jalr(self, insn, f, word):
        R, rd, rs1, imm, bubbles = self.regs, f["rd"], f["rs1"], f["imm"], self.timing.jalr

        def jalr(pc):
            target = (R[rs1] + imm) & M32
            if target & 3:
                raise self._raise_fault(ErrorCode.CORE_MISALIGNED, pc, word,
                                        f"jalr target {target:#x} is not a multiple of 4")
            R[rd] = pc + 4
            return rd, pc + 4 if rd else 0, target, bubbles
        return jalr

    def _compile_csrr(self, insn, f, word):
        R, rd, csr = self.regs, f["rd"], insn.split_imm(f["imm"])["csr"]

        def csrr(pc):
            v = R[rd] = self.read_csr(csr, pc)
            return rd, v if rd else 0, pc + 4, 0
        return csrr

    def _compile_dsrw(self, insn, f, word):
        R, rs1 = self.regs, f["rs1"]
        packed = insn.split_imm(f["imm"])
        dsr, index = packed["dsr"], packed["word"]

        def dsrw(pc):
            self._check_dsr(dsr, pc, word)
            self.model.dsr_words.setdefault(dsr, [0] * DSR_WORDS)[index] = R[rs1]
            return 0, 0, pc + 4, 0
        return dsrw

    def _compile_dsrr(self, insn, f, word):
        R, rd = self.regs, f["rd"]
        packed = insn.split_imm(f["imm"])
        dsr, index = packed["dsr"], packed["word"]

        def dsrr(pc):
            self._check_dsr(dsr, pc, word)
            v = R[rd] = int(self.model.dsr_words.get(dsr, [0] * DSR_WORDS)[index]) & M32
            return rd, v if rd else 0, pc + 4, 0
        return dsrr

    def _compile_send(self, insn, f, word):
        R, rs1, rs2 = self.regs, f["rs1"], f["rs2"]
        color = insn.split_imm(f["imm"])["color"]
        ctrl = int(insn.mnemonic == "sendc")
        data_mask = (1 << WAVELET_FIELDS["data"][1]) - 1
        index_mask = (1 << WAVELET_FIELDS["index"][1]) - 1

        def send(pc):
            self._check_color(color, pc, word)
            self.model.fout.setdefault(color, []).append(
                (R[rs1] & data_mask, R[rs2] & index_mask, ctrl))
            self.counters[Counter.WAVELETS_OUT] += 1
            return 0, 0, pc + 4, 0
        return send

    def _compile_recv(self, insn, f, word):
        R, rd = self.regs, f["rd"]
        color = insn.split_imm(f["imm"])["color"]

        def recv(pc):
            self._check_color(color, pc, word)
            if color in self.binds and (self.binds[color]["data_en"]
                                        or self.binds[color]["ctrl_en"]):
                raise self._raise_fault(ErrorCode.BAD_OPERAND, pc, word,
                                        f"color {color} is bound to a task: its wavelets "
                                        f"start tasks, recv cannot take them")
            queue = self.model.fin.get(color)
            if not queue:
                raise CoreBlocked(pc, word, f"recv at PC {pc:#06x} ({self._describe(pc, word)})"
                                            f": no wavelet queued on color {color} (the RTL "
                                            f"core would wait forever)")
            d, index, ctrl = queue.popleft()
            v = R[rd] = pack_wavelet(d, index, ctrl, color)
            self.counters[Counter.WAVELETS_IN] += 1
            return rd, v if rd else 0, pc + 4, 0
        return recv

    def _compile_tact(self, insn, f, word):
        R, rs1, task = self.regs, f["rs1"], insn.split_imm(f["imm"])["task"]

        def tact(pc):
            self._check_task(task, pc, word)
            self._activate(task, R[rs1], pc)
            return 0, 0, pc + 4, 0
        return tact

    def _compile_block(self, insn, f, word, block):
        task = insn.split_imm(f["imm"])["task"]

        def tblk(pc):
            self._check_task(task, pc, word)
            if block:
                self.blocked |= 1 << task
            else:
                self.blocked &= ~(1 << task)
                self._service_launcher()
            return 0, 0, pc + 4, 0
        return tblk

    def _compile_tblk(self, insn, f, word):
        return self._compile_block(insn, f, word, True)

    def _compile_tunblk(self, insn, f, word):
        return self._compile_block(insn, f, word, False)

    def _compile_twait(self, insn, f, word):
        def twait(pc):   # every operation completed at its launch
            return 0, 0, pc + 4, 0
        return twait

    def _compile_tend(self, insn, f, word):
        def tend(pc):
            self.task = None
            if self._dispatch(from_idle=False):
                return 0, 0, self.pc, self.timing.task_switch
            self.state = IDLE
            self.pc = pc
            return 0, 0, pc, 0
        return tend

    def _compile_halt(self, insn, f, word):
        def halt(pc):
            self.state = HALTED
            self.pc = pc
            return 0, 0, pc, 0
        return halt

    def _compile_tensor(self, mnemonic, f, word):
        R, op = self.regs, TENSOR_MNEMONICS[mnemonic]
        dst, a, b, rs, rm = f["dst"], f["a"], f["b"], f["rs"], f["rm"]

        def tensor(pc):
            self.launch(op, dst, a, b, R[rs], R[rm], pc, word)
            return 0, 0, pc + 4, 0
        return tensor

    # --- PE state behind the instructions ----------------------------------------------------
    def launch(self, op, dst, a, b, scalar_word, modifier_word, pc=0, word=None):
        """Run one tensor operation as ``t.<op> dst, a, b, rs, rm`` does: scalar and index
        from ``scalar_word`` (wavelet layout), :class:`rtl.pe.isa.LaunchModifier` from
        ``modifier_word``. Errors of the launch are recorded (the launch is dropped)."""
        mod = {name: (modifier_word >> offset) & ((1 << width) - 1)
               for name, (offset, width, _) in _MODIFIER_FIELDS.items()}
        data_off, data_w = WAVELET_FIELDS["data"]
        index_off, index_w = WAVELET_FIELDS["index"]
        entry = {"op": TensorOp(op), "dst": dst, "a": a, "b": b,
                 "s": mod["s"] if mod["s_dsr"] else DSR_WAVELET, "prio": mod["prio"],
                 "idx": mod["idx"], "adv": mod["adv"], "clear_a": mod["clear_a"]}
        saved = {c: deque(q) for c, q in self.model.fin.items() if q}
        self.counters[Counter.LAUNCHES] += 1
        try:
            self.model.launch(entry, (scalar_word >> data_off) & ((1 << data_w) - 1),
                              (scalar_word >> index_off) & ((1 << index_w) - 1))
        except PEModelError as exc:
            self._record_error(exc.code, pc, f"{TensorOp(op).name}: {exc}")
        except IndexError:
            self.counters[Counter.LAUNCHES] -= 1
            for color, queue in saved.items():
                self.model.fin[color] = queue
            raise CoreBlocked(pc, word, f"tensor launch at PC {pc:#06x} "
                                        f"({self._describe(pc, word)}): a fabric input has "
                                        f"too few wavelets queued (the RTL would wait "
                                        f"forever)") from None

    def read_csr(self, number, pc=0):
        """The value ``csrr`` reads from register-region offset ``number``.

        Exact: ``ID``, ``ERROR``, ``ERROR_FLAGS``, ``BLOCKED``, ``CORE_PC`` (the ``csrr``
        itself), the GPRs and the event counters the ISS counts (``CORE_RETIRED``,
        ``LAUNCHES``, ``TASKS``, ``WAVELETS_IN`` / ``_OUT`` of the core, ``FMAC_LANES``,
        ``ERRORS``). Modelled: ``CYCLES`` (the cycle model's count before this
        instruction), ``STATUS`` and ``CORE_STATUS`` (the core running, the engine idle).
        Stall counters, write-only registers and unmapped offsets read 0.
        """
        if number == Reg.ID:
            return encode_fields(IdWord, num_dsrs=self.num_dsrs,
                                 log2_banks=self.banks.bit_length() - 1,
                                 threads_m1=self.threads - 1,
                                 sram_div512=self.sram_words // 512,
                                 acc_div4_m1=self.acc_words // 4 - 1)
        if number == Reg.STATUS:
            return encode_fields(Status, error=int(self.error_flags != 0), core_running=1)
        if number == Reg.ERROR:
            return self.error_word
        if number == Reg.ERROR_FLAGS:
            return self.error_flags
        if number == Reg.BLOCKED:
            return self.blocked
        if number == Reg.CORE_STATUS:
            return encode_fields(CoreStatus, running=1, task=self.task or 0)
        if number == Reg.CORE_PC:
            return pc
        if GPR_BASE <= number < GPR_BASE + NUM_GPRS:
            return self.regs[number - GPR_BASE]
        if COUNTER_BASE <= number < COUNTER_BASE + len(Counter):
            counter = Counter(number - COUNTER_BASE)
            if counter == Counter.CYCLES:
                return self.cycles & M32
            if counter == Counter.CORE_RETIRED:
                return self.retired & M32
            if counter == Counter.FMAC_LANES:
                return self.model.fmac_lanes & M32
            return self.counters[counter] & M32
        return 0

    def _check_task_id(self, task):
        if not 0 <= task < self.num_tasks:
            raise ValueError(f"task {task} out of range 0..{self.num_tasks - 1}")

    def _task_entry(self, task):
        return decode_fields(TaskEntry, self.task_table.get(task, 0))

    def _activate(self, task, wavelet, pc):
        entry = self._task_entry(task)
        self.pending.append(Activation(task, entry["prio"], self._seq, wavelet & M32, None))
        self._seq += 1
        self.counters[Counter.TASKS] += 1
        self._service_launcher()

    def _candidates(self):
        """Runnable activations: local ones and the head wavelet of every bound color."""
        found = [a for a in self.pending if not self.blocked >> a.task & 1]
        for color, bind in self.binds.items():
            queue = self.model.fin.get(color)
            while queue:
                d, index, ctrl = queue[0]
                if ctrl and bind["ctrl_en"]:
                    task = bind["ctrl_base"] + index
                elif not ctrl and bind["data_en"]:
                    task = bind["data_task"]
                else:
                    break   # the kind is not bound: the wavelet waits
                if task >= self.num_tasks:
                    queue.popleft()
                    self._record_error(ErrorCode.BAD_TASK, self.pc,
                                       f"color {color} dispatches to task {task}")
                    continue
                if not self.blocked >> task & 1:
                    found.append(Activation(task, bind["prio"], -1,
                                            pack_wavelet(d, index, ctrl, color), color))
                break
        return found

    def _take(self, activation):
        if activation.color is None:
            self.pending.remove(activation)
        else:
            self.model.fin[activation.color].popleft()
            self.counters[Counter.TASKS] += 1

    def _service_launcher(self):
        """Run every runnable activation of a launch-list task (the task launcher's work,
        beside the core)."""
        while True:
            ready = [a for a in self._candidates() if not self._task_entry(a.task)["code"]]
            if not ready:
                return
            activation = min(ready, key=self.task_order)
            self._take(activation)
            regs = task_start_registers(activation.word)
            first = self._task_entry(activation.task)["entry"]
            if first not in self.model.entries:
                raise ValueError(f"task {activation.task} (activated at PC {self.pc:#06x}) "
                                 f"is not configured: no .task entry, no launch list at "
                                 f"entry {first}")
            for code in self.model.run_entries(first, regs[1], regs[2]):
                self._record_error(code, self.pc, f"launch-list task {activation.task}")

    def _dispatch(self, from_idle=True):
        """Start the next runnable code task; ``False`` if there is none."""
        self._service_launcher()
        ready = self._candidates()
        if not ready:
            return False
        activation = min(ready, key=self.task_order)
        self._take(activation)
        entry = self._task_entry(activation.task)
        self.task = activation.task
        pc = entry["pc"]
        if pc % 4:
            raise self._raise_fault(ErrorCode.CORE_MISALIGNED, pc, None,
                                    f"task {activation.task} starts at {pc:#x}, not a "
                                    f"multiple of 4")
        for reg, value in task_start_registers(activation.word).items():
            self.regs[reg] = value
        self.pc = pc
        self.state = RUNNING
        if from_idle:
            self._fill = self.timing.stages - 1
            self._last_load_rd = 0
        return True
