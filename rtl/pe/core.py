"""The control core of a PE (SPEC 4.5): an in-order, 6-stage, single-issue pipeline.

::

    F1 ──> F2 ──> D ───────> X ─────────> M ──────────> W
    PC to   word   decode     ALU, branch   SRAM load/    register write,
    fetch   (from  (ROM from  resolve,      store, PE     retire (trace,
    port    SRAM)  isa.INSNS) address,      side effects  counters)
                   reg read,  fault checks  (one per insn,
                   W->D byp.  fwd M->X, W->X in order)
                   jal redirect

``docs/core_pipeline.md`` is the reference: the stage records, the forwarding and interlock
rules, branch handling, how side effects and faults are made precise, the interface and the
measured figures. In short:

* the decoder is a 64-entry ROM generated from :data:`rtl.pe.isa.INSNS` (control bits, the
  register fields used, the immediate kind and the mask of must-be-zero bits per opcode);
* forwarding M -> X and W -> X (ALU results, and in W the data a port returns), W -> D
  through the register file read; results that come from a PE port (``lw``, ``dsrr``,
  ``csrr``, ``recv``) arrive in W, so a consumer right behind waits one cycle in X;
* branches are predicted not taken and resolved in X (3 bubbles when taken), ``jal`` in D
  (2 bubbles);
* every side effect happens in M, where everything older has completed and nothing younger
  has had one; every fault is taken in M by the instruction that would retire (an
  instruction flushed by a taken branch, ``tend`` or ``halt`` never faults);
* the per-stage records are reset-less; only the valid bits and the core's state have a
  reset. Logic evaluated per cycle is gated on the stage valid bits (:func:`_sig`), so an
  idle core costs little in Verilator (docs/pe.md section 12).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.pe import isa
from rtl.pe.isa import INSNS, TENSOR_MAJOR, AluOp, BranchOp, Cls, Format, LaunchModifier
from rtl.pe.regs import (DSR_WAVELET, DSR_WORDS, MAX_DSRS, MAX_TASKS, CoreStatus, ErrorCode,
                         LaunchRequest, TensorOp)
from rtl.wavelet import Wavelet

__all__ = ["Core", "TaskOp", "TaskControl", "FetchSignature", "MemSignature", "DsrSignature",
           "CsrSignature", "RecvSignature", "ErrorSignature", "GprSignature",
           "TraceSignature", "DecodeEntry", "ImmKind", "decode_rom", "WORD_ADDR_BITS"]

#: Width of a word address of the SRAM (the fetch and mem ports).
WORD_ADDR_BITS = isa.PC_BITS - 2


# --- interface --------------------------------------------------------------------------------

class TaskOp(enum.Enum, shape=2):
    """What a ``task_ctl`` request does to task ``task``."""
    ACTIVATE = 0    #: ``tact``: activate it with ``arg`` as its wavelet word
    BLOCK = 1       #: ``tblk``
    UNBLOCK = 2     #: ``tunblk``


class TaskControl(data.Struct):
    """A request of the core to the PE's task logic (``tact`` / ``tblk`` / ``tunblk``)."""
    op: TaskOp
    task: 5
    arg: 32


class FetchSignature(wiring.Signature):
    """Instruction fetch: ``en``/``addr`` (a word address) this cycle, ``grant`` the same
    cycle (the PE may deny a bank), ``rdata`` the cycle after a grant."""
    def __init__(self):
        super().__init__({"en": Out(1), "addr": Out(WORD_ADDR_BITS),
                          "grant": In(1), "rdata": In(32)})


class MemSignature(wiring.Signature):
    """Load/store: as :class:`FetchSignature` plus ``we`` and ``wdata``."""
    def __init__(self):
        super().__init__({"en": Out(1), "we": Out(1), "addr": Out(WORD_ADDR_BITS),
                          "wdata": Out(32), "grant": In(1), "rdata": In(32)})


class DsrSignature(wiring.Signature):
    """DSR word access: ``grant`` the same cycle; ``busy`` (with ``grant``): a live tensor
    operation uses that DSR, so a write faults (and the PE drops it); ``rdata`` the cycle
    after a grant."""
    def __init__(self):
        super().__init__({"en": Out(1), "we": Out(1), "id": Out(6), "word": Out(3),
                          "wdata": Out(32), "grant": In(1), "busy": In(1), "rdata": In(32)})


class CsrSignature(wiring.Signature):
    """Read of a PE register (offset below 0x100 of the register region); always granted,
    ``rdata`` the next cycle."""
    def __init__(self):
        super().__init__({"en": Out(1), "addr": Out(8), "rdata": In(32)})


class RecvSignature(wiring.Signature):
    """Pop of a wavelet of an unbound color: ``grant`` the same cycle when one is there,
    ``bad`` when the color is bound to a task; ``rdata`` (the wavelet word) the cycle after
    the grant."""
    def __init__(self):
        super().__init__({"en": Out(1), "color": Out(5), "grant": In(1), "bad": In(1),
                          "rdata": In(32)})


class ErrorSignature(wiring.Signature):
    """A fault, reported for one cycle."""
    def __init__(self):
        super().__init__({"valid": Out(1), "code": Out(ErrorCode), "info": Out(8)})


class GprSignature(wiring.Signature):
    """Host access to the general-purpose registers (as the host sees it: the core takes
    it as ``In``): combinational read, write at the clock edge."""
    def __init__(self):
        super().__init__({"addr": Out(4), "we": Out(1), "wdata": Out(32), "rdata": In(32)})


class TraceSignature(wiring.Signature):
    """Every retired instruction, one cycle each, no back-pressure."""
    def __init__(self):
        super().__init__({"valid": Out(1), "payload": Out(isa.RetireRecord)})


# --- the decoder, generated from the ISA table ------------------------------------------------


def _kind_enum():
    namespace = enum.EnumMeta.__prepare__("Kind", (enum.Enum,), shape=5)
    for i, cls in enumerate(Cls):
        namespace[cls.name] = i
    namespace["__doc__"] = "Semantic class codes of the decoder (the order of isa.Cls)."
    namespace["__module__"] = __name__
    return enum.EnumMeta("Kind", (enum.Enum,), namespace, shape=5)


#: Semantic class codes (one per :class:`rtl.pe.isa.Cls`, in its order).
Kind = _kind_enum()


class ImmKind(enum.Enum, shape=3):
    """What D puts into the X record's ``imm``."""
    ZERO = 0     #: 0 (so that the ALU passes rs1 through: ``a + 0``)
    I = 1        #: the signed 18-bit immediate (I and S formats)  # noqa: E741
    U = 2        #: ``imm << 12`` (lui)
    BRANCH = 3   #: the branch target, pc + 4 * imm
    JUMP = 4     #: the jal target, pc + 4 * imm (22 bits)


class Rs2Field(enum.Enum, shape=2):
    """Where the second source register is in the word."""
    R = 0        #: bits 17..14 (R format)
    S = 1        #: bits 25..22 (S format)
    T = 2        #: bits 3..0 (``rm`` of a tensor launch)


class DecodeEntry(data.Struct):
    """One entry of the decode ROM (indexed by the 6-bit major opcode)."""
    legal: 1
    kind: Kind
    alu: AluOp
    branch: BranchOp
    use_imm: 1      #: ALU operand b is ``imm`` (else rs2)
    link: 1         #: result is pc + 4 (jal, jalr)
    late: 1         #: the result comes from a PE port, in W (lw, dsrr, csrr, recv)
    writes_rd: 1
    use_rs1: 1
    use_rs2: 1
    rs1_t: 1        #: rs1 is the tensor launch's ``rs`` (bits 7..4)
    rs2_field: Rs2Field
    imm: ImmKind
    zero_mask: 26   #: bits of word[25:0] that must be 0


class Ctl(data.Struct):
    """Decoded control bits carried from D to W (with the word and the operands)."""
    kind: Kind
    alu: AluOp
    branch: BranchOp
    use_imm: 1
    link: 1
    late: 1


def _zero_mask(insn):
    layout = data.Layout.cast(isa.FORMATS[insn.fmt])
    mask = 0
    for name in insn.zero:
        fld = layout[name]
        mask |= ((1 << fld.width) - 1) << fld.offset
    return mask


def _entry(insn=None, tensor=False):
    """The decode-ROM fields of ``insn`` (a :class:`rtl.pe.isa.Insn`), or of a tensor
    launch."""
    if tensor:
        return dict(legal=1, kind=Kind.TENSOR, alu=AluOp.ADD, branch=BranchOp.EQ, use_imm=1,
                    link=0, late=0, writes_rd=0, use_rs1=1, use_rs2=1, rs1_t=1,
                    rs2_field=Rs2Field.T, imm=ImmKind.ZERO, zero_mask=0)
    cls = insn.cls
    ops = insn.operand_list
    use_rs1 = "rs1" in ops or "mem" in ops
    use_rs2 = "rs2" in ops
    entry = dict(
        legal=1, kind=Kind[cls.name], alu=insn.alu or AluOp.ADD,
        branch=insn.branch or BranchOp.EQ,
        link=int(cls in (Cls.JAL, Cls.JALR)),
        late=int(cls in (Cls.LOAD, Cls.DSRR, Cls.CSRR, Cls.RECV)),
        writes_rd=int(insn.writes_rd), use_rs1=int(use_rs1), use_rs2=int(use_rs2), rs1_t=0,
        rs2_field=Rs2Field.S if insn.fmt == Format.S else Rs2Field.R,
        zero_mask=_zero_mask(insn))
    if cls == Cls.ALU:
        immediate = "imm" in ops
        entry.update(use_imm=int(immediate), imm=ImmKind.I if immediate else ImmKind.ZERO)
    elif cls == Cls.LUI:
        entry.update(use_imm=1, imm=ImmKind.U)
    elif cls in (Cls.LOAD, Cls.STORE, Cls.JALR):
        entry.update(use_imm=1, imm=ImmKind.I)
    elif cls == Cls.BRANCH:
        entry.update(use_imm=0, imm=ImmKind.BRANCH)
    elif cls == Cls.JAL:
        entry.update(use_imm=0, imm=ImmKind.JUMP)
    else:   # PE instructions and the system ones: the ALU passes rs1 through (a + 0)
        entry.update(use_imm=1, imm=ImmKind.ZERO)
    return entry


def decode_rom():
    """The 64 entries of the decode ROM (dicts of :class:`DecodeEntry` fields), generated
    from :data:`rtl.pe.isa.INSNS` and :class:`rtl.pe.regs.TensorOp`."""
    rom = [dict(legal=0) for _ in range(64)]
    for insn in INSNS:
        rom[insn.opcode.value] = _entry(insn)
    for op in TensorOp:
        rom[(TENSOR_MAJOR << 4) | op.value] = _entry(tensor=True)
    return rom


def _rom_init():
    layout = data.Layout.cast(DecodeEntry)
    return [layout.const(entry).as_bits() for entry in decode_rom()]


# --- helpers -----------------------------------------------------------------------------------

def _sig(m, value, name, shape=None, when=None, idle=None):
    """A named signal driven by ``value`` (so that the expression is built once).

    With ``when``: ``value`` while ``when`` is high, else ``idle``, a value of no meaning
    (read from a register, not a constant: Verilator keeps such a multiplexer a C++
    conditional, so its model does not compute ``value`` in the cycles without ``when``).
    The same helper as in :mod:`rtl.pe.pe` (docs/pe.md section 12)."""
    sig = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.comb += sig.eq(value if when is None else Mux(when, value, idle))
    return sig


class _Record:
    """An inter-stage record: one reset-less signal per field of ``layout``, named
    ``<prefix>_<field>``, so that no value wider than 64 bits is evaluated per cycle (a
    ``Signal(layout)`` would be one wide signal)."""

    def __init__(self, prefix, layout):
        self.layout = data.StructLayout(layout)
        self.fields = {name: Signal(fld.shape, name=f"{prefix}_{name}", reset_less=True)
                       for name, fld in self.layout}

    def __getattr__(self, name):
        try:
            return self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def eq(self, **values):
        """Assignments of the named fields (every field must be named)."""
        if set(values) != set(self.fields):
            missing = set(self.fields) ^ set(values)
            raise ValueError(f"record fields not matched: {sorted(missing)}")
        return [self.fields[k].eq(v) for k, v in values.items()]


#: Fetch faults carried from F1 to D.
_FF_NONE, _FF_ADDRESS, _FF_MISALIGNED = 0, 1, 2

# Stage records (SPEC 4.5 stage names; STYLE "Stage layouts and prefixes").
_F2_LAYOUT = {"pc": isa.PC_BITS, "ffault": 2, "word": 32, "held": 1}
_D_LAYOUT = {"pc": isa.PC_BITS, "ffault": 2, "word": 32}
_X_LAYOUT = {"pc": isa.PC_BITS, "word": 32, "ctl": Ctl, "rd": 4, "we": 1, "rs1": 4, "rs2": 4,
             "src1": 32, "src2": 32, "imm": 32, "fault": ErrorCode, "info": 8}
_M_LAYOUT = {"pc": isa.PC_BITS, "word": 32, "ctl": Ctl, "rd": 4, "we": 1, "result": 32,
             "src2": 32, "fault": ErrorCode, "info": 8}
_W_LAYOUT = {"pc": isa.PC_BITS, "word": 32, "rd": 4, "we": 1, "value": 32, "late": 1,
             "port": 2}

# Ports a late result comes from (W record ``port``).
_P_MEM, _P_DSR, _P_CSR, _P_RECV = range(4)


class Core(wiring.Component):
    """The control core of a PE (SPEC 4.5); see the module docstring and
    ``docs/core_pipeline.md``.

    Parameters
    ----------
    sram_words : int
        Words of the PE's SRAM (instructions and data); at most ``2 ** 15``.
    banks : int
        SRAM banks (a power of two; word ``w`` is in bank ``w % banks``). The core does not
        arbitrate banks itself: the PE grants or denies its fetch and mem requests.
    num_colors, num_tasks, num_dsrs : int
        The PE's colors, tasks and DSRs: ``send``/``recv`` of a color, ``tact``/``tblk``/
        ``tunblk`` of a task and ``dsrw``/``dsrr`` of a DSR outside them fault.
    """

    def __init__(self, sram_words=12288, banks=8, num_colors=24, num_tasks=32, num_dsrs=44):
        for name, value in (("sram_words", sram_words), ("banks", banks),
                            ("num_colors", num_colors), ("num_tasks", num_tasks),
                            ("num_dsrs", num_dsrs)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, not {value!r}")
        if not 1 <= sram_words <= 1 << WORD_ADDR_BITS:
            raise ValueError(f"sram_words={sram_words} is not in 1..{1 << WORD_ADDR_BITS}")
        if banks < 1 or banks & (banks - 1) or sram_words % banks:
            raise ValueError(f"banks={banks} must be a power of two dividing "
                             f"sram_words={sram_words}")
        if not 1 <= num_colors <= 32:
            raise ValueError(f"num_colors={num_colors} is not in 1..32")
        if not 1 <= num_tasks <= MAX_TASKS:
            raise ValueError(f"num_tasks={num_tasks} is not in 1..{MAX_TASKS}")
        if not 1 <= num_dsrs <= MAX_DSRS:
            raise ValueError(f"num_dsrs={num_dsrs} is not in 1..{MAX_DSRS}")
        self._sram_words = sram_words
        self._banks = banks
        self._num_colors = num_colors
        self._num_tasks = num_tasks
        self._num_dsrs = num_dsrs
        super().__init__({
            "start": In(stream.Signature(isa.TaskStart)),
            "done": Out(1),
            "running": Out(1),
            "status": Out(CoreStatus),
            "pc": Out(isa.PC_BITS),
            "restart": In(1),
            "fetch": Out(FetchSignature()),
            "mem": Out(MemSignature()),
            "launch": Out(stream.Signature(LaunchRequest)),
            "ops_pending": In(1),
            "dsr": Out(DsrSignature()),
            "csr": Out(CsrSignature()),
            "send": Out(stream.Signature(Wavelet)),
            "recv": Out(RecvSignature()),
            "task_ctl": Out(stream.Signature(TaskControl)),
            "error": Out(ErrorSignature()),
            "gpr": In(GprSignature()),
            "trace": Out(TraceSignature()),
            "retired": Out(1),
            "active": Out(1),
            "stall_bank": Out(1),
        })

    @property
    def sram_words(self):
        return self._sram_words

    @property
    def banks(self):
        return self._banks

    @property
    def num_colors(self):
        return self._num_colors

    @property
    def num_tasks(self):
        return self._num_tasks

    @property
    def num_dsrs(self):
        return self._num_dsrs

    def elaborate(self, platform):
        m = Module()
        PCB = isa.PC_BITS
        sram_bytes = 4 * self._sram_words

        # --- architectural state ---------------------------------------------------------
        running = Signal(name="running_q")
        halted = Signal()
        faulted = Signal()
        task = Signal(5)
        stop_pc = Signal(PCB)       # pc output when X is empty (last X pc, or halt / fault)
        launched = Signal()         # a launch transferred in the previous cycle (for twait)

        m.submodules.rf = rf = memory.Memory(shape=32, depth=isa.NUM_GPRS, init=[])
        rf_r1 = rf.read_port(domain="comb")
        rf_r2 = rf.read_port(domain="comb")
        rf_rh = rf.read_port(domain="comb")
        rf_w0 = rf.write_port()     # W, the task start's r1, the host
        rf_w2 = rf.write_port()     # the task start's r2
        rf_w3 = rf.write_port()     # the task start's r3

        m.submodules.decoder = rom = memory.Memory(
            shape=data.Layout.cast(DecodeEntry).size, depth=64, init=_rom_init())
        rom_r = rom.read_port(domain="comb")

        # --- pipeline valid bits (reset) and records (reset-less) -------------------------
        f1_valid = Signal()
        f1_pc = Signal(PCB, reset_less=True)
        f1_over = Signal(reset_less=True)          # the pc is beyond the 17-bit space
        f2_valid = Signal()
        f2 = _Record("f2", _F2_LAYOUT)
        d_valid = Signal()
        d = _Record("d", _D_LAYOUT)
        x_valid = Signal()
        x = _Record("x", _X_LAYOUT)
        m_valid = Signal()
        mm = _Record("m", _M_LAYOUT)
        w_valid = Signal()
        w = _Record("w", _W_LAYOUT)
        s_pend = Signal()                         # the cycle after a task start: r1..r3
        s_wavelet = Signal(32, reset_less=True)

        x_ctl = x.ctl
        m_ctl = mm.ctl

        def kind_is(ctl, *classes):
            out = Const(0, 1)
            for cls in classes:
                out = out | (ctl.kind == Kind[cls.name])
            return out

        # ================================= W =============================================
        # The data of a late result arrives from its port in this cycle.
        late_data = Signal(32)
        with m.Switch(w.port):
            with m.Case(_P_MEM):
                m.d.comb += late_data.eq(self.mem.rdata)
            with m.Case(_P_DSR):
                m.d.comb += late_data.eq(self.dsr.rdata)
            with m.Case(_P_CSR):
                m.d.comb += late_data.eq(self.csr.rdata)
            with m.Default():
                m.d.comb += late_data.eq(self.recv.rdata)
        w_result = _sig(m, Mux(w.late, late_data, w.value), "w_result",
                        when=w_valid, idle=w.value)
        w_write = _sig(m, w_valid & w.we, "w_write")
        m.d.comb += [
            self.trace.valid.eq(w_valid),
            self.trace.payload.pc.eq(w.pc),
            self.trace.payload.word.eq(w.word),
            self.trace.payload.rd.eq(w.rd),
            self.trace.payload.value.eq(w_result),
            self.retired.eq(w_valid),
        ]

        # Register file writes: the task start's r1..r3 (the cycle after the start, when W
        # holds nothing that writes), else W, else the host.
        with m.If(s_pend):
            m.d.comb += [rf_w0.en.eq(1), rf_w0.addr.eq(1),
                         rf_w0.data.eq(s_wavelet[:16]),
                         rf_w2.en.eq(1), rf_w2.addr.eq(2), rf_w2.data.eq(s_wavelet[16:26]),
                         rf_w3.en.eq(1), rf_w3.addr.eq(3), rf_w3.data.eq(s_wavelet)]
        with m.Elif(w_write):
            m.d.comb += [rf_w0.en.eq(1), rf_w0.addr.eq(w.rd), rf_w0.data.eq(w_result)]
        with m.Elif(self.gpr.we & (self.gpr.addr != 0)):
            m.d.comb += [rf_w0.en.eq(1), rf_w0.addr.eq(self.gpr.addr),
                         rf_w0.data.eq(self.gpr.wdata)]
        m.d.comb += [rf_rh.addr.eq(self.gpr.addr), self.gpr.rdata.eq(rf_rh.data)]

        # ================================= M =============================================
        m_kind_mem = m_valid & kind_is(m_ctl, Cls.LOAD, Cls.STORE)
        m_ok = _sig(m, m_valid & (mm.fault == ErrorCode.NONE), "m_ok")
        m_tensor = m_ok & kind_is(m_ctl, Cls.TENSOR)
        m_dsr = m_ok & kind_is(m_ctl, Cls.DSRW, Cls.DSRR)
        m_csr = m_ok & kind_is(m_ctl, Cls.CSRR)
        m_send = m_ok & kind_is(m_ctl, Cls.SEND)
        m_recv = m_ok & kind_is(m_ctl, Cls.RECV)
        m_task = m_ok & kind_is(m_ctl, Cls.TACT, Cls.TBLK, Cls.TUNBLK)
        m_twait = m_ok & kind_is(m_ctl, Cls.TWAIT)
        m_tend = _sig(m, m_ok & kind_is(m_ctl, Cls.TEND), "m_tend")
        m_halt = m_ok & kind_is(m_ctl, Cls.HALT)
        m_mem = _sig(m, m_kind_mem & (mm.fault == ErrorCode.NONE), "m_mem")
        m_store = kind_is(m_ctl, Cls.STORE)

        # Requests of M (each held until granted / transferred).
        lmod = data.View(LaunchModifier, mm.src2)
        tw = data.View(isa.TFormat, mm.word)
        m.d.comb += [
            self.mem.en.eq(m_mem),
            self.mem.we.eq(m_store),
            self.mem.addr.eq(mm.result[2:PCB]),
            self.mem.wdata.eq(mm.src2),
            self.launch.valid.eq(m_tensor),
            self.launch.payload.launch.op.eq(tw.op),
            self.launch.payload.launch.dst.eq(tw.dst),
            self.launch.payload.launch.a.eq(tw.a),
            self.launch.payload.launch.b.eq(tw.b),
            self.launch.payload.launch.s.eq(Mux(lmod.s_dsr, lmod.s, DSR_WAVELET)),
            self.launch.payload.launch.prio.eq(lmod.prio),
            self.launch.payload.launch.idx.eq(lmod.idx),
            self.launch.payload.launch.adv.eq(lmod.adv),
            self.launch.payload.launch.clear_a.eq(lmod.clear_a),
            self.launch.payload.data.eq(mm.result[:16]),
            self.launch.payload.index.eq(mm.result[16:26]),
            self.launch.payload.core.eq(1),
            self.dsr.en.eq(m_dsr),
            self.dsr.we.eq(kind_is(m_ctl, Cls.DSRW)),
            self.dsr.id.eq(mm.word[3:9]),
            self.dsr.word.eq(mm.word[:3]),
            self.dsr.wdata.eq(mm.result),
            self.csr.en.eq(m_csr),
            self.csr.addr.eq(mm.word[:8]),
            self.send.valid.eq(m_send),
            self.send.payload.data.eq(mm.result[:16]),
            self.send.payload.index.eq(mm.src2[:10]),
            self.send.payload.ctrl.eq(mm.word[26:32] == isa.Opcode.SENDC),
            self.send.payload.color.eq(mm.word[:5]),
            self.recv.en.eq(m_recv),
            self.recv.color.eq(mm.word[:5]),
            self.task_ctl.valid.eq(m_task),
            self.task_ctl.payload.task.eq(mm.word[:5]),
            self.task_ctl.payload.arg.eq(mm.result),
        ]
        with m.Switch(m_ctl.kind):
            with m.Case(Kind.TBLK):
                m.d.comb += self.task_ctl.payload.op.eq(TaskOp.BLOCK)
            with m.Case(Kind.TUNBLK):
                m.d.comb += self.task_ctl.payload.op.eq(TaskOp.UNBLOCK)
            with m.Default():
                m.d.comb += self.task_ctl.payload.op.eq(TaskOp.ACTIVATE)

        # Completion of M this cycle, and the faults that the PE's answers raise here.
        m_wait = _sig(m, (m_mem & ~self.mem.grant)
                      | (m_tensor & ~self.launch.ready)
                      | (m_dsr & ~self.dsr.grant)
                      | (m_send & ~self.send.ready)
                      | (m_recv & ~self.recv.grant & ~self.recv.bad)
                      | (m_task & ~self.task_ctl.ready)
                      | (m_twait & (self.ops_pending | launched)), "m_wait")
        m_dsr_busy = m_dsr & self.dsr.we & self.dsr.grant & self.dsr.busy
        m_recv_bad = m_recv & self.recv.bad
        m_fault_code = Signal(ErrorCode)
        m_fault_info = Signal(8)
        with m.If(m_dsr_busy):
            m.d.comb += [m_fault_code.eq(ErrorCode.DSR_BUSY), m_fault_info.eq(mm.word[3:9])]
        with m.Elif(m_recv_bad):
            m.d.comb += [m_fault_code.eq(ErrorCode.BAD_OPERAND), m_fault_info.eq(mm.word[:5])]
        with m.Else():
            m.d.comb += [m_fault_code.eq(mm.fault), m_fault_info.eq(mm.info)]
        m_take_fault = _sig(m, m_valid & (m_fault_code != ErrorCode.NONE), "m_take_fault")
        m_stall = _sig(m, m_wait & ~m_take_fault, "m_stall")
        m_complete = _sig(m, m_valid & ~m_wait & ~m_take_fault, "m_complete")
        m_flush = _sig(m, m_take_fault | (m_complete & (m_tend | m_halt)), "m_flush")
        m.d.comb += [
            self.error.valid.eq(m_take_fault),
            self.error.code.eq(m_fault_code),
            self.error.info.eq(m_fault_info),
            self.done.eq(m_tend),
        ]

        # ================================= X =============================================
        fwd_m_ok = m_valid & mm.we
        fwd_w_ok = w_write

        def operand(src, rs):
            value = Mux(fwd_m_ok & (mm.rd == rs), mm.result,
                        Mux(fwd_w_ok & (w.rd == rs), w_result, src))
            return _sig(m, value, f"x_{'a' if src is x.src1 else 'b'}", 32,
                        when=x_valid, idle=src)
        x_a = operand(x.src1, x.rs1)
        x_b = operand(x.src2, x.rs2)
        # A result that comes from a port is in W one cycle after M: wait for it.
        late_hazard = _sig(m, m_valid & m_ctl.late & mm.we
                           & ((mm.rd == x.rs1) | (mm.rd == x.rs2)), "x_late_hazard")
        x_hold = _sig(m, x_valid & (m_stall | late_hazard), "x_hold")
        x_go = _sig(m, x_valid & ~x_hold & ~m_flush, "x_go")

        alu_b = Mux(x_ctl.use_imm, x.imm, x_b)
        shamt = alu_b[:5]
        alu = Signal(32)
        with m.Switch(x_ctl.alu):
            with m.Case(AluOp.ADD):
                m.d.comb += alu.eq(x_a + alu_b)
            with m.Case(AluOp.SUB):
                m.d.comb += alu.eq(x_a - alu_b)
            with m.Case(AluOp.AND):
                m.d.comb += alu.eq(x_a & alu_b)
            with m.Case(AluOp.OR):
                m.d.comb += alu.eq(x_a | alu_b)
            with m.Case(AluOp.XOR):
                m.d.comb += alu.eq(x_a ^ alu_b)
            with m.Case(AluOp.SLL):
                m.d.comb += alu.eq(x_a << shamt)
            with m.Case(AluOp.SRL):
                m.d.comb += alu.eq(x_a >> shamt)
            with m.Case(AluOp.SRA):
                m.d.comb += alu.eq(x_a.as_signed() >> shamt)
            with m.Case(AluOp.SLT):
                m.d.comb += alu.eq(x_a.as_signed() < alu_b.as_signed())
            with m.Case(AluOp.SLTU):
                m.d.comb += alu.eq(x_a < alu_b)
        x_result = _sig(m, Mux(x_ctl.link, x.pc + 4, alu), "x_result", 32,
                        when=x_valid, idle=mm.result)

        taken = Signal()
        with m.Switch(x_ctl.branch):
            with m.Case(BranchOp.EQ):
                m.d.comb += taken.eq(x_a == x_b)
            with m.Case(BranchOp.NE):
                m.d.comb += taken.eq(x_a != x_b)
            with m.Case(BranchOp.LT):
                m.d.comb += taken.eq(x_a.as_signed() < x_b.as_signed())
            with m.Case(BranchOp.GE):
                m.d.comb += taken.eq(x_a.as_signed() >= x_b.as_signed())
            with m.Case(BranchOp.LTU):
                m.d.comb += taken.eq(x_a < x_b)
            with m.Case(BranchOp.GEU):
                m.d.comb += taken.eq(x_a >= x_b)

        # Faults of X (unless D already found one): addresses, operand ranges.
        x_is_mem = kind_is(x_ctl, Cls.LOAD, Cls.STORE)
        x_is_jalr = kind_is(x_ctl, Cls.JALR)
        imm_field = x.word[:18]         # the raw immediate (negative values are >= 2**17)
        x_fault = Signal(ErrorCode)
        x_info = Signal(8)
        opcode = x.word[26:32]
        with m.If(x.fault != ErrorCode.NONE):
            m.d.comb += [x_fault.eq(x.fault), x_info.eq(x.info)]
        with m.Elif((x_is_mem | x_is_jalr) & (alu[:2] != 0)):
            m.d.comb += [x_fault.eq(ErrorCode.CORE_MISALIGNED), x_info.eq(opcode)]
        with m.Elif(x_is_mem & (alu >= sram_bytes)):
            m.d.comb += [x_fault.eq(ErrorCode.CORE_ADDRESS), x_info.eq(opcode)]
        with m.Elif(kind_is(x_ctl, Cls.CSRR) & (imm_field >= 0x100)):
            m.d.comb += [x_fault.eq(ErrorCode.ILLEGAL_INSTRUCTION), x_info.eq(opcode)]
        with m.Elif(kind_is(x_ctl, Cls.DSRW, Cls.DSRR)
                    & (imm_field >= DSR_WORDS * self._num_dsrs)):
            m.d.comb += [x_fault.eq(ErrorCode.BAD_OPERAND), x_info.eq(imm_field[3:11])]
        with m.Elif(kind_is(x_ctl, Cls.SEND, Cls.RECV) & (imm_field >= self._num_colors)):
            m.d.comb += [x_fault.eq(ErrorCode.BAD_COLOR), x_info.eq(imm_field[:8])]
        with m.Elif(kind_is(x_ctl, Cls.TACT, Cls.TBLK, Cls.TUNBLK)
                    & (imm_field >= self._num_tasks)):
            m.d.comb += [x_fault.eq(ErrorCode.BAD_TASK), x_info.eq(imm_field[:8])]
        x_fault = _sig(m, x_fault, "x_fault", when=x_valid, idle=mm.fault)

        # Redirects of X: a taken branch, jalr.
        x_jump = (kind_is(x_ctl, Cls.BRANCH) & taken) | x_is_jalr
        x_redirect = _sig(m, x_go & x_jump & (x_fault == ErrorCode.NONE), "x_redirect")
        x_target = _sig(m, Mux(x_is_jalr, alu, x.imm), "x_target", 32,
                        when=x_valid, idle=x.imm)

        # ================================= D =============================================
        rom_entry = data.View(DecodeEntry, rom_r.data)
        m.d.comb += rom_r.addr.eq(d.word[26:32])
        dw = d.word
        rs1_field = Mux(rom_entry.rs1_t, dw[4:8], dw[18:22])
        rs2_field = Signal(4)
        with m.Switch(rom_entry.rs2_field):
            with m.Case(Rs2Field.R):
                m.d.comb += rs2_field.eq(dw[14:18])
            with m.Case(Rs2Field.S):
                m.d.comb += rs2_field.eq(dw[22:26])
            with m.Default():
                m.d.comb += rs2_field.eq(dw[:4])
        d_rs1 = _sig(m, Mux(rom_entry.use_rs1, rs1_field, 0), "d_rs1", 4,
                     when=d_valid, idle=x.rs1)
        d_rs2 = _sig(m, Mux(rom_entry.use_rs2, rs2_field, 0), "d_rs2", 4,
                     when=d_valid, idle=x.rs2)
        d_rd = _sig(m, Mux(rom_entry.writes_rd, dw[22:26], 0), "d_rd", 4,
                    when=d_valid, idle=x.rd)
        m.d.comb += [rf_r1.addr.eq(d_rs1), rf_r2.addr.eq(d_rs2)]
        d_src1 = _sig(m, Mux(w_write & (w.rd == d_rs1), w_result, rf_r1.data), "d_src1",
                      when=d_valid, idle=x.src1)
        d_src2 = _sig(m, Mux(w_write & (w.rd == d_rs2), w_result, rf_r2.data), "d_src2",
                      when=d_valid, idle=x.src2)

        s18 = dw[:18].as_signed()
        imm = Signal(32)
        with m.Switch(rom_entry.imm):
            with m.Case(ImmKind.I):
                m.d.comb += imm.eq(s18)
            with m.Case(ImmKind.U):
                m.d.comb += imm.eq(Cat(Const(0, 12), dw[:20]))
            with m.Case(ImmKind.BRANCH):
                m.d.comb += imm.eq(d.pc + (s18 << 2))
            with m.Case(ImmKind.JUMP):
                m.d.comb += imm.eq(d.pc + (dw[:22].as_signed() << 2))
            with m.Default():
                m.d.comb += imm.eq(0)
        d_imm = _sig(m, imm, "d_imm", 32, when=d_valid, idle=x.imm)

        legal = rom_entry.legal & ((dw[:26] & rom_entry.zero_mask) == 0)
        d_fault = Signal(ErrorCode)
        d_info = Signal(8)
        with m.Switch(d.ffault):
            with m.Case(_FF_ADDRESS):
                m.d.comb += d_fault.eq(ErrorCode.CORE_ADDRESS)
            with m.Case(_FF_MISALIGNED):
                m.d.comb += d_fault.eq(ErrorCode.CORE_MISALIGNED)
            with m.Default():
                m.d.comb += [d_fault.eq(Mux(legal, ErrorCode.NONE,
                                            ErrorCode.ILLEGAL_INSTRUCTION)),
                             d_info.eq(dw[26:32])]
        d_fault = _sig(m, d_fault, "d_fault", when=d_valid, idle=x.fault)
        ctl = Signal(Ctl)
        m.d.comb += [ctl.kind.eq(rom_entry.kind), ctl.alu.eq(rom_entry.alu),
                     ctl.branch.eq(rom_entry.branch), ctl.use_imm.eq(rom_entry.use_imm),
                     ctl.link.eq(rom_entry.link), ctl.late.eq(rom_entry.late)]
        d_ctl = _sig(m, ctl, "d_ctl", when=d_valid, idle=x.ctl)
        d_we = (d_rd != 0) & (d_fault == ErrorCode.NONE)

        d_hold = _sig(m, d_valid & x_hold, "d_hold")
        d_go = _sig(m, d_valid & ~x_hold & ~m_flush & ~x_redirect, "d_go")
        d_kind = d_ctl.kind
        d_redirect = _sig(m, d_go & (d_kind == Kind.JAL) & (d_fault == ErrorCode.NONE),
                          "d_redirect")
        # tend, halt or a fault in D: fetch nothing younger (unless an older branch
        # redirects, which flushes D).
        d_stop = _sig(m, d_go & ((d_kind == Kind.TEND) | (d_kind == Kind.HALT)
                                 | (d_fault != ErrorCode.NONE)), "d_stop")

        # ================================= F1 / F2 =======================================
        start_fire = _sig(m, self.start.valid & self.start.ready, "start_fire")
        f1_on = start_fire | f1_valid
        f1_cur = Mux(start_fire, self.start.payload.pc, f1_pc)
        f1_cur_over = ~start_fire & f1_over
        f1_misaligned = f1_cur[:2] != 0
        f1_ok = ~f1_cur_over & (f1_cur < sram_bytes) & ~f1_misaligned
        f2_hold = f2_valid & d_hold
        f1_room = ~f2_hold
        m.d.comb += [
            self.fetch.en.eq(f1_on & f1_ok & f1_room),
            self.fetch.addr.eq(f1_cur[2:]),
        ]
        f1_adv = _sig(m, f1_on & f1_room & (self.fetch.grant | ~f1_ok), "f1_adv")
        flush_f = m_flush | x_redirect | d_redirect | d_stop
        flush_d = m_flush | x_redirect
        f2_word = Mux(f2.held, f2.word, self.fetch.rdata)

        # ================================= state ===========================================
        stopped = halted | faulted
        m.d.comb += [
            self.start.ready.eq(~stopped & (~running | m_tend)),
            self.running.eq(running),
            self.status.running.eq(running),
            self.status.halted.eq(halted),
            self.status.fault.eq(faulted),
            self.status.waiting.eq(m_stall & (m_twait | m_recv)),
            self.status.task.eq(task),
            self.pc.eq(Mux(x_valid, x.pc, stop_pc)),
            self.active.eq(running),
            self.stall_bank.eq((self.fetch.en & ~self.fetch.grant)
                               | (self.mem.en & ~self.mem.grant)),
        ]

        busy = Signal()
        m.d.comb += busy.eq(running | s_pend | w_valid)
        with m.If(busy | start_fire | self.restart):
            m.d.sync += [s_pend.eq(start_fire), launched.eq(self.launch.valid
                                                            & self.launch.ready)]
            with m.If(start_fire):
                m.d.sync += [running.eq(1), task.eq(self.start.payload.task),
                             s_wavelet.eq(self.start.payload.wavelet)]
            with m.Elif(m_complete & m_tend):
                m.d.sync += running.eq(0)
            with m.If(m_take_fault):
                m.d.sync += [running.eq(0), faulted.eq(1), stop_pc.eq(mm.pc)]
            with m.Elif(m_complete & m_halt):
                m.d.sync += [running.eq(0), halted.eq(1), stop_pc.eq(mm.pc)]
            with m.Elif(x_valid):
                m.d.sync += stop_pc.eq(x.pc)
            with m.If(self.restart & stopped):
                m.d.sync += [halted.eq(0), faulted.eq(0)]

            # --- W ---
            m.d.sync += w_valid.eq(m_complete)
            with m.If(m_complete):
                m.d.sync += w.eq(
                    pc=mm.pc, word=mm.word, rd=Mux(mm.we, mm.rd, 0), we=mm.we,
                    value=Mux(mm.we, mm.result, Mux(m_store, mm.src2, 0)),
                    late=m_ctl.late & mm.we,
                    port=Mux(m_kind_mem, _P_MEM,
                             Mux(kind_is(m_ctl, Cls.DSRR), _P_DSR,
                                 Mux(kind_is(m_ctl, Cls.CSRR), _P_CSR, _P_RECV))))

            # --- M ---
            m.d.sync += m_valid.eq(m_stall | x_go)
            with m.If(x_go):
                m.d.sync += mm.eq(pc=x.pc, word=x.word, ctl=x.ctl, rd=x.rd,
                                  we=x.we & (x_fault == ErrorCode.NONE), result=x_result,
                                  src2=x_b, fault=x_fault, info=x_info)

            # --- X ---
            m.d.sync += x_valid.eq(~m_flush & (x_hold | d_go))
            with m.If(d_go):
                m.d.sync += x.eq(pc=d.pc, word=d.word, ctl=d_ctl, rd=d_rd, we=d_we,
                                 rs1=d_rs1, rs2=d_rs2, src1=d_src1, src2=d_src2, imm=d_imm,
                                 fault=d_fault, info=d_info)
            with m.Elif(x_hold):
                # Keep what is forwarded now: the producer may leave W before X moves.
                m.d.sync += [x.src1.eq(x_a), x.src2.eq(x_b)]

            # --- D ---
            m.d.sync += d_valid.eq(~flush_d & (d_hold | (f2_valid & ~flush_f)))
            with m.If(~d_hold & f2_valid):
                m.d.sync += d.eq(pc=f2.pc, ffault=f2.ffault, word=f2_word)

            # --- F2 ---
            f2_load = f1_adv & (~flush_f | start_fire)
            m.d.sync += f2_valid.eq(f2_load | (f2_hold & ~flush_f))
            with m.If(f2_load):
                m.d.sync += f2.eq(
                    pc=f1_cur, word=f2.word, held=0,
                    ffault=Mux(f1_ok, _FF_NONE,
                               Mux(f1_misaligned, _FF_MISALIGNED, _FF_ADDRESS)))
            with m.Elif(f2_hold & ~f2.held):
                m.d.sync += [f2.word.eq(self.fetch.rdata), f2.held.eq(1)]

            # --- F1 ---
            next_pc = Signal(PCB + 1)
            m.d.comb += next_pc.eq(f1_cur + 4)
            with m.If(start_fire):
                m.d.sync += f1_valid.eq(~f1_adv | f1_ok)
                m.d.sync += [f1_pc.eq(Mux(f1_adv, next_pc[:PCB], f1_cur)),
                             f1_over.eq(f1_adv & next_pc[PCB])]
            with m.Elif(m_flush | d_stop):
                m.d.sync += f1_valid.eq(0)
            with m.Elif(x_redirect):
                m.d.sync += [f1_valid.eq(1), f1_pc.eq(x_target[:PCB]),
                             f1_over.eq(x_target[PCB:] != 0)]
            with m.Elif(d_redirect):
                m.d.sync += [f1_valid.eq(1), f1_pc.eq(d_imm[:PCB]),
                             f1_over.eq(d_imm[PCB:] != 0)]
            with m.Elif(f1_adv):
                m.d.sync += [f1_pc.eq(next_pc[:PCB]), f1_over.eq(f1_over | next_pc[PCB]),
                             f1_valid.eq(f1_ok)]
        return m
