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
  reset. Logic evaluated per cycle is gated on the stage valid bits
  (:func:`rtl.pe.util.sig`), so that Verilator skips it while a stage is empty (docs/pe.md
  section 12).
"""

from amaranth import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from rtl.pe import isa
from rtl.pe.isa import INSNS, TENSOR_MAJOR, AluOp, BranchOp, Cls, Format, LaunchModifier
from rtl.pe.regs import (DSR_WAVELET, DSR_WORDS, MAX_DSRS, MAX_TASKS, CoreStatus, ErrorCode,
                         LaunchRequest, TensorOp)
from rtl.pe.util import sig as _sig   # the PE's helper (docs/pe.md section 12)
from rtl.wavelet import Wavelet

__all__ = ["Core", "TaskOp", "TaskControl", "FetchSignature", "MemSignature", "DsrSignature",
           "CsrSignature", "RecvSignature", "ErrorSignature", "GprSignature",
           "TraceSignature", "Ctl", "ClsBits", "DecodeEntry", "ImmKind", "Decoder",
           "decode_rom", "zero_masks", "range_checks", "WORD_ADDR_BITS"]

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

#: One flag per semantic class (:class:`rtl.pe.isa.Cls`, lower-case names): the decoder's
#: one-hot class, so that every later test of the class is one bit.
ClsBits = data.StructLayout({cls.name.lower(): 1 for cls in Cls})


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


class Ctl(data.Struct):
    """Decoded control bits carried from D to W (with the word and the operands)."""
    cls: ClsBits
    alu: AluOp
    branch: BranchOp
    use_imm: 1      #: ALU operand b is ``imm`` (else rs2)
    link: 1         #: result is pc + 4 (jal, jalr)
    late: 1         #: the result comes from a PE port, in W (lw, dsrr, csrr, recv)


class DecodeEntry(data.Struct):
    """One entry of the decode ROM (indexed by the 6-bit major opcode); all zero for a
    word that is not an instruction (no class bit set)."""
    ctl: Ctl
    writes_rd: 1
    use_rs1: 1
    use_rs2: 1
    rs1_t: 1        #: rs1 is the tensor launch's ``rs`` (bits 7..4)
    rs2_field: Rs2Field
    imm: ImmKind
    zero_sel: 4     #: index into :func:`zero_masks`: the bits of word[25:0] that must be 0
    range_sel: 2    #: index into :func:`range_checks`: packed operands below a bound


def _packing(insn):
    """How ``insn`` packs operands into its immediate (:data:`rtl.pe.isa.IMM_OPERANDS`):
    ``(mask, checks)``, the word bits of the immediate outside every packed operand (they
    must be 0) and ``(lowest bit, width, count)`` of each operand whose count is not a power
    of two (its field must be below ``count``). ``(0, ())`` for an instruction that packs
    nothing."""
    if not insn.imm_operands:
        return 0, ()
    imm = data.Layout.cast(isa.FORMATS[insn.fmt])["imm"]
    used, checks = 0, []
    for kind in insn.imm_operands:
        shift, count = isa.IMM_OPERANDS[kind]
        width = (count - 1).bit_length()
        used |= ((1 << width) - 1) << shift
        if count != 1 << width:
            checks.append((imm.offset + shift, width, count))
    outside = ((1 << imm.width) - 1) & ~used
    return outside << imm.offset, tuple(checks)


def _zero_mask(insn):
    """The word bits of ``insn`` that must be 0: its ``zero`` fields and the bits of its
    immediate that no packed operand uses."""
    layout = data.Layout.cast(isa.FORMATS[insn.fmt])
    mask = _packing(insn)[0]
    for name in insn.zero:
        fld = layout[name]
        mask |= ((1 << fld.width) - 1) << fld.offset
    return mask


def range_checks():
    """The distinct range checks of packed operands (:func:`_packing`), index 0: none. Each
    is a tuple of ``(lowest bit, width, count)``: the word is an instruction only if every
    such field is below its count."""
    checks = [()]
    for insn in INSNS:
        if _packing(insn)[1] not in checks:
            checks.append(_packing(insn)[1])
    assert len(checks) <= 4
    return checks


def zero_masks():
    """The distinct must-be-zero masks of the table (index 0: none)."""
    masks = [0]
    for insn in INSNS:
        if _zero_mask(insn) not in masks:
            masks.append(_zero_mask(insn))
    assert len(masks) <= 16
    return masks


def _entry(insn=None, tensor=False):
    """The decode-ROM fields of ``insn`` (a :class:`rtl.pe.isa.Insn`), or of a tensor
    launch."""
    if tensor:
        return dict(ctl=dict(cls={"tensor": 1}, alu=AluOp.ADD, branch=BranchOp.EQ, use_imm=1,
                             link=0, late=0),
                    writes_rd=0, use_rs1=1, use_rs2=1, rs1_t=1, rs2_field=Rs2Field.T,
                    imm=ImmKind.ZERO, zero_sel=0, range_sel=0)
    cls = insn.cls
    ops = insn.operand_list
    ctl = dict(cls={cls.name.lower(): 1}, alu=insn.alu or AluOp.ADD,
               branch=insn.branch or BranchOp.EQ,
               link=int(cls in (Cls.JAL, Cls.JALR)),
               late=int(cls in (Cls.LOAD, Cls.DSRR, Cls.CSRR, Cls.RECV)))
    entry = dict(writes_rd=int(insn.writes_rd), use_rs1=int("rs1" in ops or "mem" in ops),
                 use_rs2=int("rs2" in ops), rs1_t=0,
                 rs2_field=Rs2Field.S if insn.fmt == Format.S else Rs2Field.R,
                 zero_sel=zero_masks().index(_zero_mask(insn)),
                 range_sel=range_checks().index(_packing(insn)[1]))
    if cls == Cls.ALU:
        immediate = "imm" in ops
        ctl["use_imm"], entry["imm"] = int(immediate), ImmKind.I if immediate else ImmKind.ZERO
    elif cls == Cls.LUI:
        ctl["use_imm"], entry["imm"] = 1, ImmKind.U
    elif cls in (Cls.LOAD, Cls.STORE, Cls.JALR):
        ctl["use_imm"], entry["imm"] = 1, ImmKind.I
    elif cls == Cls.BRANCH:
        ctl["use_imm"], entry["imm"] = 0, ImmKind.BRANCH
    elif cls == Cls.JAL:
        ctl["use_imm"], entry["imm"] = 0, ImmKind.JUMP
    else:   # PE instructions and the system ones: the ALU passes rs1 through (a + 0)
        ctl["use_imm"], entry["imm"] = 1, ImmKind.ZERO
    entry["ctl"] = ctl
    return entry


def decode_rom():
    """The 64 entries of the decode ROM (dicts of :class:`DecodeEntry` fields), generated
    from :data:`rtl.pe.isa.INSNS` and :class:`rtl.pe.regs.TensorOp`."""
    rom = [{} for _ in range(64)]
    for insn in INSNS:
        rom[insn.opcode.value] = _entry(insn)
    for op in TensorOp:
        rom[(TENSOR_MAJOR << 4) | op.value] = _entry(tensor=True)
    return rom


def _rom_init():
    layout = data.Layout.cast(DecodeEntry)
    return [layout.const(entry).as_bits() for entry in decode_rom()]


class Decoder(wiring.Component):
    """The D stage's decoder: the ROM entry of ``word`` (its major opcode) and whether
    ``word`` is an instruction, which is exactly when :func:`rtl.pe.isa.decode` accepts it:
    the entry has a class bit, no must-be-zero bit is set (:func:`zero_masks`: the table's
    ``zero`` fields and the immediate bits outside its packed operands) and every packed
    operand whose count is not a power of two is below it (:func:`range_checks`)."""

    word: In(32)
    entry: Out(DecodeEntry)
    legal: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.rom = rom = memory.Memory(
            shape=data.Layout.cast(DecodeEntry).size, depth=64, init=_rom_init())
        rom_r = rom.read_port(domain="comb")
        m.submodules.zero_masks = zrom = memory.Memory(shape=26, depth=16, init=zero_masks())
        zrom_r = zrom.read_port(domain="comb")
        word, entry = self.word, self.entry
        m.d.comb += [rom_r.addr.eq(word[26:32]), entry.eq(rom_r.data),
                     zrom_r.addr.eq(entry.zero_sel)]
        out_of_range = Const(0, 1)
        for index, checks in enumerate(range_checks()):
            for lo, width, count in checks:
                out_of_range = out_of_range | ((entry.range_sel == index)
                                               & (word[lo:lo + width] >= count))
        m.d.comb += self.legal.eq((entry.ctl.as_value() != 0)
                                  & ((word[:26] & zrom_r.data) == 0) & ~out_of_range)
        return m


# --- helpers -----------------------------------------------------------------------------------

class _Record:
    """An inter-stage record: a ``StructLayout`` per group of fields, each group one
    reset-less signal of at most 64 bits (named ``<prefix>_<first field>``), so that no
    value wider than 64 bits is evaluated per cycle and the model has few registers to
    update; fields are read and written through the groups' views."""

    def __init__(self, prefix, groups):
        self.views = []
        self.fields = {}
        for group in groups:
            layout = data.StructLayout(group)
            assert layout.size <= 64, f"{prefix}: group {list(group)} is {layout.size} bits"
            view = Signal(layout, name=f"{prefix}_{next(iter(group))}", reset_less=True)
            self.views.append(view)
            for name in group:
                self.fields[name] = (view, name)

    def __getattr__(self, name):
        try:
            view, field = self.__dict__["fields"][name]
        except KeyError:
            raise AttributeError(name) from None
        return view[field]

    def eq(self, **values):
        """Assignments of the whole record (every field must be named): one per group."""
        if set(values) != set(self.fields):
            missing = set(self.fields) ^ set(values)
            raise ValueError(f"record fields not matched: {sorted(missing)}")
        return [view.eq(Cat(*(_fit(values[name], fld.width)
                              for name, fld in data.Layout.cast(view.shape()))))
                for view in self.views]


def _fit(value, width):
    """``value`` as exactly ``width`` bits (truncated, or extended as ``.eq`` would)."""
    v = Value.cast(value)
    if len(v) >= width:
        return v[:width]
    fill = v[-1] if v.shape().signed else Const(0, 1)
    return Cat(v, *([fill] * (width - len(v))))


#: Fetch faults carried from F1 to D.
_FF_NONE, _FF_ADDRESS, _FF_MISALIGNED = 0, 1, 2

# Stage records (SPEC 4.5 stage names; STYLE "Stage layouts and prefixes").
_F2_LAYOUT = [{"pc": isa.PC_BITS, "ffault": 2, "held": 1, "word": 32}]
_D_LAYOUT = [{"pc": isa.PC_BITS, "ffault": 2, "word": 32}]
_X_LAYOUT = [{"pc": isa.PC_BITS, "ctl": Ctl, "rd": 4, "we": 1, "rs1": 4, "rs2": 4,
               "fault": ErrorCode},
              {"word": 32, "info": 8}, {"src1": 32, "src2": 32}, {"imm": 32}]
_M_LAYOUT = [{"pc": isa.PC_BITS, "ctl": Ctl, "rd": 4, "we": 1, "fault": ErrorCode, "info": 8},
             {"word": 32, "result": 32}, {"req": 64}]
_W_LAYOUT = [{"pc": isa.PC_BITS, "rd": 4, "we": 1, "late": 1, "port": 2, "value": 32},
             {"word": 32}]

# Ports a late result comes from (W record ``port``).
_P_MEM, _P_DSR, _P_CSR, _P_RECV = range(4)

#: The M record's ``req``: the payload of the one PE request of the instruction, built in X
#: (so that M drives its ports from a register). Bits 31..0 by request (mem: word address;
#: dsr: word | id << 3; csr: offset; recv: color; send: the wavelet; task_ctl: op | task <<
#: 2), bits 63..32 the data word (store data, DSR word, task argument); a launch uses all
#: 64 bits as its LaunchRequest.
_REQ_DATA = 32


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
        try:
            self._check(sram_words, banks, num_colors, num_tasks, num_dsrs)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # a rejected core is not an unused design
            raise
        self._init(sram_words, banks, num_colors, num_tasks, num_dsrs)

    @staticmethod
    def _check(sram_words, banks, num_colors, num_tasks, num_dsrs):
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

    def _init(self, sram_words, banks, num_colors, num_tasks, num_dsrs):
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
            "wake": Out(1),
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
        E = ErrorCode

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

        m.submodules.decoder = decoder = Decoder()

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

        # ================================= W =============================================
        late_data = Mux(w.port == _P_MEM, self.mem.rdata,
                        Mux(w.port == _P_DSR, self.dsr.rdata,
                            Mux(w.port == _P_CSR, self.csr.rdata, self.recv.rdata)))
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
        mc = mm.ctl.cls
        m_ok = _sig(m, m_valid & (mm.fault == E.NONE), "m_ok")
        m_mem = _sig(m, m_ok & (mc.load | mc.store), "m_mem")
        m_tensor = m_ok & mc.tensor
        m_dsr = m_ok & (mc.dsrw | mc.dsrr)
        m_send = m_ok & mc.send
        m_recv = m_ok & mc.recv
        m_task = m_ok & (mc.tact | mc.tblk | mc.tunblk)
        m_twait = m_ok & mc.twait
        m_tend = _sig(m, m_ok & mc.tend, "m_tend")
        m_halt = m_ok & mc.halt
        req_data = mm.req[_REQ_DATA:]

        # Requests of M, each held until granted / transferred; payloads from ``req``.
        m.d.comb += [
            self.mem.en.eq(m_mem),
            self.mem.we.eq(mc.store),
            self.mem.addr.eq(mm.req[:WORD_ADDR_BITS]),
            self.mem.wdata.eq(req_data),
            self.launch.valid.eq(m_tensor),
            self.launch.payload.eq(mm.req),
            self.dsr.en.eq(m_dsr),
            self.dsr.we.eq(mc.dsrw),
            self.dsr.word.eq(mm.req[:3]),
            self.dsr.id.eq(mm.req[3:9]),
            self.dsr.wdata.eq(req_data),
            self.csr.en.eq(m_ok & mc.csrr),
            self.csr.addr.eq(mm.req[:8]),
            self.send.valid.eq(m_send),
            self.send.payload.eq(mm.req[:32]),
            self.recv.en.eq(m_recv),
            self.recv.color.eq(mm.req[:5]),
            self.task_ctl.valid.eq(m_task),
            self.task_ctl.payload.eq(Cat(mm.req[:7], req_data)),
        ]

        # Completion of M this cycle, and the faults that the PE's answers raise here.
        m_wait = _sig(m, (m_mem & ~self.mem.grant)
                      | (m_tensor & ~self.launch.ready)
                      | (m_dsr & ~self.dsr.grant)
                      | (m_send & ~self.send.ready)
                      | (m_recv & ~self.recv.grant & ~self.recv.bad)
                      | (m_task & ~self.task_ctl.ready)
                      | (m_twait & (self.ops_pending | launched)), "m_wait",
                      when=m_valid, idle=mm.we)   # read only with m_valid
        m_dsr_busy = m_dsr & mc.dsrw & self.dsr.grant & self.dsr.busy
        m_recv_bad = m_recv & self.recv.bad
        m_fault_code = _sig(m, Mux(m_dsr_busy, E.DSR_BUSY,
                                   Mux(m_recv_bad, E.BAD_OPERAND, mm.fault)), "m_fault_code",
                            ErrorCode)
        m_take_fault = _sig(m, m_valid & (m_fault_code != E.NONE), "m_take_fault")
        m_stall = _sig(m, m_valid & m_wait & ~m_take_fault, "m_stall")
        m_complete = _sig(m, m_valid & ~m_wait & ~m_take_fault, "m_complete")
        m_flush = _sig(m, m_take_fault | (m_complete & (m_tend | m_halt)), "m_flush")
        m.d.comb += [
            self.error.valid.eq(m_take_fault),
            self.error.code.eq(m_fault_code),
            self.error.info.eq(Mux(m_dsr_busy, mm.req[3:9],
                                   Mux(m_recv_bad, mm.req[:5], mm.info))),
            self.done.eq(m_tend),
        ]

        # ================================= X =============================================
        xc = x.ctl.cls

        def operand(src, rs, name):
            value = Mux(m_valid & mm.we & (mm.rd == rs), mm.result,
                        Mux(w_write & (w.rd == rs), w_result, src))
            return _sig(m, value, name, 32, when=x_valid, idle=src)
        x_a = operand(x.src1, x.rs1, "x_a")
        x_b = operand(x.src2, x.rs2, "x_b")
        # A result that comes from a port is in W one cycle after M: wait for it.
        late_hazard = m_valid & mm.ctl.late & mm.we & ((mm.rd == x.rs1) | (mm.rd == x.rs2))
        x_hold = _sig(m, x_valid & (m_stall | late_hazard), "x_hold")
        x_go = _sig(m, x_valid & ~x_hold & ~m_flush, "x_go")

        alu_b = Mux(x.ctl.use_imm, x.imm, x_b)
        shamt = alu_b[:5]
        op = x.ctl.alu
        alu = Mux(op == AluOp.ADD, x_a + alu_b,
              Mux(op == AluOp.SUB, x_a - alu_b,
              Mux(op == AluOp.AND, x_a & alu_b,
              Mux(op == AluOp.OR, x_a | alu_b,
              Mux(op == AluOp.XOR, x_a ^ alu_b,
              Mux(op == AluOp.SLL, x_a << shamt,
              Mux(op == AluOp.SRL, x_a >> shamt,
              Mux(op == AluOp.SRA, x_a.as_signed() >> shamt,
              Mux(op == AluOp.SLT, x_a.as_signed() < alu_b.as_signed(),
                  x_a < alu_b)))))))))
        x_alu = _sig(m, alu, "x_alu", 32, when=x_valid, idle=mm.result)

        br = x.ctl.branch
        eq, lt, ltu = x_a == x_b, x_a.as_signed() < x_b.as_signed(), x_a < x_b
        taken = _sig(m, Mux(br == BranchOp.EQ, eq, Mux(br == BranchOp.NE, ~eq,
                        Mux(br == BranchOp.LT, lt, Mux(br == BranchOp.GE, ~lt,
                        Mux(br == BranchOp.LTU, ltu, ~ltu))))), "x_taken",
                     when=x_valid, idle=x.we)     # read only with x_go

        # Faults of X (unless D already found one): addresses, operand ranges.
        imm_field = x.word[:18]         # the raw immediate (negative values are >= 2**17)
        opcode = x.word[26:32]
        checks = [   # (condition, code, info), first match wins
            (x.fault != E.NONE, x.fault, x.info),
            ((xc.load | xc.store | xc.jalr) & (x_alu[:2] != 0), E.CORE_MISALIGNED, opcode),
            ((xc.load | xc.store) & (x_alu >= sram_bytes), E.CORE_ADDRESS, opcode),
            (xc.csrr & (imm_field >= 0x100), E.ILLEGAL_INSTRUCTION, opcode),
            ((xc.dsrw | xc.dsrr) & (imm_field >= DSR_WORDS * self._num_dsrs), E.BAD_OPERAND,
             imm_field[3:11]),
            ((xc.send | xc.recv) & (imm_field >= self._num_colors), E.BAD_COLOR,
             imm_field[:8]),
            ((xc.tact | xc.tblk | xc.tunblk) & (imm_field >= self._num_tasks), E.BAD_TASK,
             imm_field[:8]),
        ]
        code_expr, info_expr = Const(E.NONE.value, 5), Const(0, 8)
        for cond, code, info in reversed(checks):
            code_expr = Mux(cond, code, code_expr)
            info_expr = Mux(cond, info, info_expr)
        x_fault = _sig(m, code_expr, "x_fault", ErrorCode, when=x_valid, idle=mm.fault)
        x_info = _sig(m, info_expr, "x_info", 8, when=x_valid, idle=mm.info)

        # Redirects of X: a taken branch, jalr.
        x_jump = (xc.branch & taken) | xc.jalr
        x_redirect = _sig(m, x_go & x_jump & (x_fault == E.NONE), "x_redirect")
        x_target = _sig(m, Mux(xc.jalr, x_alu, x.imm), "x_target", 32,
                        when=x_valid, idle=x.imm)

        # The request M will make (see _REQ_DATA), and the value W reports.
        lmod = data.View(LaunchModifier, x_b)
        tw = data.View(isa.TFormat, x.word)
        launch = Cat(tw.op, tw.dst, tw.a, tw.b, Mux(lmod.s_dsr, lmod.s, DSR_WAVELET), lmod.prio,
                     lmod.idx, lmod.adv, lmod.clear_a, x_a[:16], x_a[16:26], Const(1, 1))
        assert len(launch) == data.Layout.cast(LaunchRequest).size == 64
        wavelet = Cat(x_a[:16], x_b[:10], x.word[26:32] == isa.Opcode.SENDC, imm_field[:5])
        task_op = Mux(xc.tblk, TaskOp.BLOCK.value, Mux(xc.tunblk, TaskOp.UNBLOCK.value,
                                                       TaskOp.ACTIVATE.value))
        req = Mux(xc.tensor, launch,
              Mux(xc.load | xc.store, Cat(x_alu[2:PCB], Const(0, 32 - WORD_ADDR_BITS), x_b),
              Mux(xc.send, wavelet,
              Mux(xc.tact | xc.tblk | xc.tunblk, Cat(task_op[:2],
                                                     imm_field[:5], Const(0, 25), x_a),
                  Cat(imm_field[:9], Const(0, 23), x_a)))))  # dsr, csr, recv
        x_req = _sig(m, req, "x_req", 64, when=x_valid, idle=mm.req)
        x_value = Mux(x.we, Mux(x.ctl.link, x.pc + 4, x_alu),
                      Mux(xc.store, x_b, 0))

        # ================================= D =============================================
        dw = d.word
        m.d.comb += decoder.word.eq(dw)
        entry = decoder.entry
        rs1_field = Mux(entry.rs1_t, dw[4:8], dw[18:22])
        rs2_field = Mux(entry.rs2_field == Rs2Field.R, dw[14:18],
                        Mux(entry.rs2_field == Rs2Field.S, dw[22:26], dw[:4]))
        d_rs1 = _sig(m, Mux(entry.use_rs1, rs1_field, 0), "d_rs1", 4, when=d_valid, idle=x.rs1)
        d_rs2 = _sig(m, Mux(entry.use_rs2, rs2_field, 0), "d_rs2", 4, when=d_valid, idle=x.rs2)
        d_rd = _sig(m, Mux(entry.writes_rd, dw[22:26], 0), "d_rd", 4, when=d_valid, idle=x.rd)
        m.d.comb += [rf_r1.addr.eq(d_rs1), rf_r2.addr.eq(d_rs2)]
        d_src1 = _sig(m, Mux(w_write & (w.rd == d_rs1), w_result, rf_r1.data), "d_src1",
                      when=d_valid, idle=x.src1)
        d_src2 = _sig(m, Mux(w_write & (w.rd == d_rs2), w_result, rf_r2.data), "d_src2",
                      when=d_valid, idle=x.src2)
        s18 = dw[:18].as_signed()
        kind = entry.imm
        imm = Mux(kind == ImmKind.I, s18,
              Mux(kind == ImmKind.U, Cat(Const(0, 12), dw[:20]),
              Mux(kind == ImmKind.BRANCH, d.pc + (s18 << 2),
              Mux(kind == ImmKind.JUMP, d.pc + (dw[:22].as_signed() << 2), 0))))
        d_imm = _sig(m, imm, "d_imm", 32, when=d_valid, idle=x.imm)
        legal = decoder.legal
        fault = Mux(d.ffault == _FF_ADDRESS, E.CORE_ADDRESS,
                Mux(d.ffault == _FF_MISALIGNED, E.CORE_MISALIGNED,
                    Mux(legal, E.NONE, E.ILLEGAL_INSTRUCTION)))
        d_fault = _sig(m, fault, "d_fault", ErrorCode, when=d_valid, idle=x.fault)
        d_info = _sig(m, Mux(d.ffault == _FF_NONE, dw[26:32], 0), "d_info", 8,
                      when=d_valid, idle=x.info)
        d_ctl = _sig(m, entry.ctl, "d_ctl", when=d_valid, idle=x.ctl)
        d_we = (d_rd != 0) & (d_fault == E.NONE)

        d_hold = _sig(m, d_valid & x_hold, "d_hold")
        d_go = _sig(m, d_valid & ~x_hold & ~m_flush & ~x_redirect, "d_go")
        dc = d_ctl.cls
        d_redirect = _sig(m, d_go & dc.jal & (d_fault == E.NONE), "d_redirect")
        # tend, halt or a fault in D: fetch nothing younger (unless an older branch
        # redirects, which flushes D).
        d_stop = _sig(m, d_go & (dc.tend | dc.halt | (d_fault != E.NONE)), "d_stop")

        # ================================= F1 / F2 =======================================
        start_fire = _sig(m, self.start.valid & self.start.ready, "start_fire")
        f1_on = start_fire | f1_valid
        f1_cur = _sig(m, Mux(start_fire, self.start.payload.pc, f1_pc), "f1_cur")
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

        # ================================= state ===========================================
        stopped = halted | faulted
        m.d.comb += [
            self.start.ready.eq(~stopped & (~running | m_tend)),
            self.running.eq(running),
            self.status.running.eq(running),
            self.status.halted.eq(halted),
            self.status.fault.eq(faulted),
            self.status.waiting.eq(m_stall & (mc.twait | mc.recv)),
            self.status.task.eq(task),
            self.pc.eq(Mux(x_valid, x.pc, stop_pc)),
            self.active.eq(running),
            self.stall_bank.eq((self.fetch.en & ~self.fetch.grant)
                               | (self.mem.en & ~self.mem.grant)),
        ]

        busy = Signal()
        m.d.comb += busy.eq(running | s_pend | w_valid)
        # Every register and register-file write of the core happens under ``wake``: a PE
        # could stop the core's clock while it is low (measured: bench/tile_cost.py
        # --variant gated-clock, docs/pe.md section 12).
        m.d.comb += self.wake.eq(busy | self.start.valid | self.restart | self.gpr.we)
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
                    value=mm.result, late=mm.ctl.late & mm.we,
                    port=Mux(mc.load, _P_MEM, Mux(mc.dsrr, _P_DSR,
                                                  Mux(mc.csrr, _P_CSR, _P_RECV))))

            # --- M ---
            m.d.sync += m_valid.eq(m_stall | x_go)
            with m.If(x_go):
                m.d.sync += mm.eq(pc=x.pc, word=x.word, ctl=x.ctl, rd=x.rd,
                                  we=x.we & (x_fault == E.NONE), result=x_value, req=x_req,
                                  fault=x_fault, info=x_info)

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
                m.d.sync += d.eq(pc=f2.pc, ffault=f2.ffault,
                                 word=Mux(f2.held, f2.word, self.fetch.rdata))

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
            next_pc = f1_cur + 4
            with m.If(start_fire):
                m.d.sync += [f1_valid.eq(~f1_adv | f1_ok),
                             f1_pc.eq(Mux(f1_adv, next_pc[:PCB], f1_cur)),
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
