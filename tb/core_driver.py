"""cocotb driver of the core harness (:class:`tb.core_top.CoreTop`), a program builder over
:func:`rtl.pe.isa.encode`, and the trace checker.

* :class:`Prog` builds a program word by word from the ISA table (no text parsing: the
  assembler is :mod:`rtl.pe.asm`'s job) and, for straight-line code, the trace records it
  must retire, each written by hand where it is emitted (``value=``).
* :class:`CoreHost` drives the harness's host port (inputs set after a falling edge,
  sampled at the next rising edge), loads programs, queues task starts, runs the
  simulation in chunks until a condition holds, and reads the logs back.
* :func:`check_trace` compares retired records with the expected ones and names the first
  difference: its position, the pc, the instruction (mnemonic) and both values.
"""

from collections import namedtuple

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from rtl.pe import isa
from rtl.pe.regs import LaunchRequest, decode_fields
from rtl.wavelet import pack
from tb.core_top import LOG_BITS, LOGS, TRACE_BITS, Region

__all__ = ["Prog", "CoreHost", "Rec", "check_trace", "ANY", "li_words", "mnemonic_of"]

#: A retired instruction: pc, word, rd, value (``ANY``: not checked), cycle (log stamp).
Rec = namedtuple("Rec", "pc word rd value cycle", defaults=(None,))
ANY = object()
MASK = 0xFFFFFFFF


def mnemonic_of(word):
    """The mnemonic of ``word`` (``"?"`` if it is not an instruction)."""
    decoded = isa.decode(word)
    if decoded is None:
        return f"? ({word:#010x})"
    insn, _ = decoded
    return insn if isinstance(insn, str) else insn.mnemonic


def li_words(rd, value):
    """``li rd, value`` as the pseudo-instruction of :data:`rtl.pe.isa.PSEUDOS` expands it:
    ``[(mnemonic, fields, value of rd after it)]``."""
    value &= MASK
    signed = value - (1 << 32) if value >> 31 else value
    lo_imm, hi_imm = isa.IMM_RANGES[isa.Format.I]
    if lo_imm <= signed <= hi_imm:
        return [("addi", dict(rd=rd, rs1=0, imm=signed), value)]
    hi = ((value + 0x800) >> 12) & 0xFFFFF
    lo = value - (hi << 12)
    lo = ((lo + 0x800) & 0xFFF) - 0x800
    out = [("lui", dict(rd=rd, imm=hi), (hi << 12) & MASK)]
    if lo:
        out.append(("addi", dict(rd=rd, rs1=rd, imm=lo), value))
    return out


class Prog:
    """A program at byte address ``base``: words from :func:`rtl.pe.isa.encode`, labels,
    and the trace records straight-line code retires."""

    def __init__(self, base=0):
        self.base = base
        self._items = []        # (mnemonic, fields, label field or None, label)
        self.labels = {}
        self.expected = []      # (index of the word, rd, value)

    @property
    def pc(self):
        """Byte address of the next word."""
        return self.base + 4 * len(self._items)

    def label(self, name):
        self.labels[name] = self.pc
        return self.pc

    def at(self, name):
        return self.labels[name]

    def op(self, mnemonic, value=0, expect=True, label=None, **fields):
        """Append one instruction. ``value``: what its trace record reports (the rd value,
        the stored word of ``sw``, 0 otherwise; ``ANY``: not checked); ``expect=False``: it
        does not retire in straight-line order (skipped by a branch, after a fault).
        ``label``: the name of the label a branch or ``jal`` goes to (its ``imm``)."""
        pc = self.pc
        self._items.append((mnemonic, fields, label))
        if expect:
            rd = fields.get("rd", 0) if mnemonic in isa.BY_MNEMONIC \
                and isa.BY_MNEMONIC[mnemonic].writes_rd else 0
            self.expected.append((len(self._items) - 1, rd, 0 if rd == 0 and value is not ANY
                                  and mnemonic != "sw" else value))
        return pc

    def li(self, rd, value, expect=True):
        for mnemonic, fields, after in li_words(rd, value):
            self.op(mnemonic, value=after, expect=expect, **fields)

    def nop(self, expect=True):
        self.op("addi", rd=0, rs1=0, imm=0, expect=expect)

    def word(self, value):
        """A raw word (data, or a word that is not an instruction); never expected to
        retire."""
        self._items.append((None, value, None))
        return self.pc - 4

    def words(self):
        """The encoded words (labels resolved to word offsets from the instruction)."""
        out = []
        for i, (mnemonic, fields, label) in enumerate(self._items):
            if mnemonic is None:
                out.append(fields)
                continue
            fields = dict(fields)
            if label is not None:
                fields["imm"] = (self.labels[label] - (self.base + 4 * i)) // 4
            out.append(isa.encode(mnemonic, **fields))
        return out

    def trace(self):
        """The expected records of straight-line code (what :meth:`op` was told)."""
        words = self.words()
        return [Rec(self.base + 4 * i, words[i], rd, value) for i, rd, value in self.expected]

    def record(self, name_or_pc, rd=0, value=0):
        """An expected record for the instruction at a label or pc (for branchy code)."""
        pc = self.labels[name_or_pc] if isinstance(name_or_pc, str) else name_or_pc
        return Rec(pc, self.words()[(pc - self.base) // 4], rd, value)


def check_trace(got, want, what="trace"):
    """Assert that the retired records ``got`` are ``want`` (``Rec``s; value ``ANY`` is not
    compared); the message names the first difference."""
    for i, (g, w) in enumerate(zip(got, want)):
        same = (g.pc == w.pc and g.word == w.word and g.rd == w.rd
                and (w.value is ANY or g.value == w.value))
        if not same:
            wv = "any" if w.value is ANY else f"{w.value:#x}"
            raise AssertionError(
                f"{what}: record {i} differs: got pc {g.pc:#x} {mnemonic_of(g.word)} "
                f"rd r{g.rd} = {g.value:#x}, expected pc {w.pc:#x} {mnemonic_of(w.word)} "
                f"rd r{w.rd} = {wv}")
    if len(got) != len(want):
        extra = got[len(want)] if len(got) > len(want) else want[len(got)]
        raise AssertionError(f"{what}: {len(got)} records retired, expected {len(want)} "
                             f"(first unmatched: pc {extra.pc:#x} {mnemonic_of(extra.word)})")


class CoreHost:
    """Host side of the harness: host port, start queue, run control, log read-back."""

    def __init__(self, dut):
        self.dut = dut
        self._clock = None

    async def reset(self, *, rate_bank=0, rate_port=0, seed=1, op_latency=0):
        """Start the clock (once) and reset the harness with these stall rates (in 16ths)
        and this seed of its random stalls."""
        d = self.dut
        if self._clock is None:
            self._clock = Clock(d.clk, 10, unit="ns")
            self._clock.start()
        for name in ("host_addr", "host_wdata", "host_we", "host_re", "restart",
                     "ops_pending", "dsr_busy", "recv_bound", "seed_we"):
            getattr(d, name).value = 0
        d.op_latency.value = op_latency
        d.rate_bank.value = rate_bank
        d.rate_port.value = rate_port
        d.seed.value = seed
        d.rst.value = 1
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await FallingEdge(d.clk)
        d.seed_we.value = 1
        await FallingEdge(d.clk)
        d.seed_we.value = 0

    async def write(self, writes):
        """``(region, offset, value)`` host writes, one per cycle."""
        d = self.dut
        await FallingEdge(d.clk)
        for region, offset, value in writes:
            d.host_addr.value = (int(region) << 16) | offset
            d.host_wdata.value = value & MASK
            d.host_we.value = 1
            await FallingEdge(d.clk)
        d.host_we.value = 0

    async def read(self, addrs):
        """Read ``(region, offset)`` pairs (pipelined, one per cycle)."""
        d = self.dut
        await FallingEdge(d.clk)
        out = []
        items = list(addrs)
        # host_rdata follows host_re by two cycles (the harness registers its inputs).
        for i, item in enumerate(items + [None, None]):
            if i >= 2:
                out.append(int(d.host_rdata.value))
            if item is None:
                d.host_re.value = 0
            else:
                region, offset = item
                d.host_addr.value = (int(region) << 16) | offset
                d.host_re.value = 1
            await FallingEdge(d.clk)
        return out

    async def pulse(self, name, cycles=1):
        """Raise input ``name`` for ``cycles`` cycles."""
        await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 1
        for _ in range(cycles):
            await FallingEdge(self.dut.clk)
        getattr(self.dut, name).value = 0
        await FallingEdge(self.dut.clk)     # the harness acts on its registered copy

    async def load(self, words, base=0):
        await self.write([(Region.SRAM, base // 4 + i, w) for i, w in enumerate(words)])

    async def start_task(self, pc, task=0, wavelet=0):
        """Queue a task start (the core takes it when it can)."""
        await self.write([(Region.START, 0, pc | (task << isa.PC_BITS)),
                          (Region.START, 1, wavelet)])

    async def set_gprs(self, values):
        await self.write([(Region.GPR, r, v) for r, v in values.items()])

    async def gprs(self):
        return await self.read([(Region.GPR, r) for r in range(isa.NUM_GPRS)])

    async def queue_recv(self, color, words):
        await self.write([(Region.RECV_Q, color * 8 + i, w) for i, w in enumerate(words)]
                         + [(Region.RECV_COUNT, color, len(words))])

    async def run_until(self, cond, budget=5000, what="the core", chunk=4):
        """Advance until ``cond()`` holds (checked every ``chunk`` cycles); fail after
        ``budget`` cycles naming the core's state."""
        d = self.dut
        waited = 0
        while not cond():
            if waited >= budget:
                raise AssertionError(f"{what}: condition not reached within {budget} cycles "
                                     f"(status {int(d.status.value):#x}, pc "
                                     f"{int(d.pc.value):#x}, retired "
                                     f"{int(d.trace_count.value)})")
            await ClockCycles(d.clk, chunk)
            waited += chunk
        await FallingEdge(d.clk)

    def status(self):
        v = int(self.dut.status.value)
        return {"running": v & 1, "halted": (v >> 1) & 1, "fault": (v >> 2) & 1,
                "waiting": (v >> 3) & 1, "task": (v >> 8) & 31}

    def stopped(self):
        s = self.status()
        return bool(s["halted"] or s["fault"])

    def idle(self):
        s = self.status()
        return not s["running"] and not int(self.dut.start_pending.value)

    async def run_program(self, prog, *, budget=5000, task=0, wavelet=0, settle=4):
        """Load ``prog``, start it as a task, run until the core halts, faults or ends."""
        await self.load(prog.words(), prog.base)
        starts = int(self.dut.starts_count.value)
        await self.start_task(prog.base, task, wavelet)
        await self.run_until(lambda: int(self.dut.starts_count.value) > starts, 100,
                             "the task start")
        await self.run_until(lambda: self.stopped() or self.idle(), budget)
        await ClockCycles(self.dut.clk, settle)
        await FallingEdge(self.dut.clk)

    async def log(self, region):
        """Entries of a log as dicts of its fields."""
        count = int(getattr(self.dut, {
            Region.TRACE: "trace_count", Region.DONES: "done_count",
            Region.ERRORS: "error_count", Region.LAUNCH: "launch_count",
            Region.SEND: "send_count", Region.TASK: "task_count",
            Region.STARTS: "starts_count"}[region]).value)
        bits = TRACE_BITS if region == Region.TRACE else LOG_BITS
        fields = LOGS[region]
        values = await self.read([(region, (f << bits) | e) for e in range(count)
                                  for f in range(len(fields))])
        n = len(fields)
        return [dict(zip(fields, values[i * n:(i + 1) * n])) for i in range(count)]

    async def trace(self):
        return [Rec(e["pc_rd"] & ((1 << isa.PC_BITS) - 1), e["word"],
                    e["pc_rd"] >> isa.PC_BITS, e["value"], e["cycle"])
                for e in await self.log(Region.TRACE)]

    async def launches(self):
        out = []
        for e in await self.log(Region.LAUNCH):
            fields = decode_fields(LaunchRequest, e["lo"] | (e["hi"] << 32))
            fields["cycle"] = e["cycle"]
            out.append(fields)
        return out

    async def errors(self):
        return [(e["code_info"] & 31, e["code_info"] >> 8, e["cycle"])
                for e in await self.log(Region.ERRORS)]

    async def sram(self, word_addrs):
        return await self.read([(Region.SRAM, a) for a in word_addrs])


def wavelet_word(data=0, index=0, ctrl=0, color=0):
    return pack(data, index, ctrl, color)
