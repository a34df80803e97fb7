"""The PE's counters, error registers and status (SPEC 4.6; docs/pe.md sections 10, 11).

Every block reports to this one (:mod:`rtl.pe.iface`: ``*Report``): counter increments (a
member named after a :class:`rtl.pe.regs.Counter`), the errors it raises, and what keeps the
PE busy. Here they become the 32-bit counters, the sticky ``ERROR`` (first code and info)
and ``ERROR_FLAGS`` (every code seen), the ``STATUS`` and ``ID`` words, and the PE's
``busy`` and ``error`` outputs.

Errors raised in the same cycle: the first in :data:`ERROR_SOURCES` names ``ERROR``, all
set their flags. Sources whose ``valid`` depends on the PE's inputs (rx, cfg) are merged
apart from those that depend on registers only, so that Verilator evaluates only the last
merge in its input region (docs/pe.md section 12).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.pe.core import CsrSignature
from rtl.pe.iface import (ConfigReport, CoreReport, DatapathReport, EngineReport,
                          LauncherReport, QueueReport, RegionSignature)
from rtl.pe.isa import PC_BITS
from rtl.pe.regs import (COUNTER_BASE, PE_REGS_BASE, CfgRegion, CoreStatus, Counter, ErrorCode,
                         ErrorWord, Reg, Status, region)
from rtl.pe.util import packed, sig

__all__ = ["StatusBlock", "ERROR_SOURCES"]

#: The error sources in priority order: (report, member, depends on the PE's inputs).
ERROR_SOURCES = (
    ("queues", "rx_error", True),          # BAD_COLOR: a wavelet on a color >= num_colors
    ("launcher", "task_error", False),     # BAD_TASK: a command past the task table
    ("engine", "launch_error", False),     # the checks of a launch (L1)
    ("launcher", "bind_error", True),      # BAD_COLOR: a binding of a color >= num_colors
    ("launcher", "trigger_error", True),   # TRIGGER_OVERRUN
    ("config", "config_error", True),      # BAD_CONFIG: a write with nothing behind it
    ("core", "core_error", False),         # the control core's errors (codes 11 to 14)
)
#: Counters that no block reports: kept here.
_OWN_COUNTERS = (Counter.CYCLES, Counter.FMAC_FIRST, Counter.FMAC_LAST, Counter.ERRORS)


class StatusBlock(wiring.Component):
    """Counters, error registers, STATUS and ID.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    queues, launcher, engine, datapath, config, core : In(*Report)
        What each block reports (the core's: idle until the core is attached).
    regs, counter_ctrl, counters : In(RegionSignature)
        The host's ports: regions STATUS (ID, STATUS, ERROR, ERROR_FLAGS), COUNTER_CTRL and
        COUNTER of the address map.
    busy : Out(1)
        Work in flight anywhere in the PE (docs/pe.md section 1).
    error : Out(1)
        Sticky: some error was raised and not cleared.
    core_csr : In(CsrSignature)
        The control core's ``csrr``: offsets of the register region below 0x100; ID,
        STATUS, ERROR, ERROR_FLAGS, BLOCKED, the counters, CORE_STATUS and CORE_PC read
        their value, every other offset 0; the value is the one of the cycle of the request.
    blocked, core_status, core_pc : In
        BLOCKED (from the launcher), the core's status and pc, for ``csrr``.
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "queues": In(QueueReport()),
            "launcher": In(LauncherReport()),
            "engine": In(EngineReport(params)),
            "datapath": In(DatapathReport()),
            "config": In(ConfigReport()),
            "core": In(CoreReport()),
            "regs": In(RegionSignature(region(CfgRegion.STATUS, params))),
            "counter_ctrl": In(RegionSignature(region(CfgRegion.COUNTER_CTRL, params))),
            "counters": In(RegionSignature(region(CfgRegion.COUNTER, params))),
            "busy": Out(1),
            "error": Out(1),
            "core_csr": In(CsrSignature()),
            "blocked": In(params.num_tasks),
            "core_status": In(CoreStatus),
            "core_pc": In(PC_BITS),
        })

    def _reports(self):
        return {name: getattr(self, name)
                for name in ("queues", "launcher", "engine", "datapath", "config", "core")}

    def elaborate(self, platform):
        m = Module()
        p = self._p
        reports = self._reports()

        # ================================ errors ============================================
        err_code = Signal(5)
        err_info = Signal(8)
        err_flags = Signal(32)
        sources = []                 # (valid, code, info, from_inputs), in priority order
        for rep, member, from_inputs in ERROR_SOURCES:
            port = getattr(reports[rep], member)
            code = port.signature.code
            sources.append((port.valid, code if code is not None else port.code, port.info,
                            from_inputs))

        def first_raised(group, name):
            code, info = Const(0, 5), Const(0, 8)
            for valid, c, i, _ in reversed(group):
                code, info = Mux(valid, c, code), Mux(valid, i, info)
            return (sig(m, Cat(*[s[0] for s in group]).any(), f"{name}_valid"),
                    sig(m, code, f"{name}_code", 5), sig(m, info, f"{name}_info", 8))
        # Runs of sources that depend on registers only are merged first into named
        # signals: Verilator then evaluates them once per clock, not also in its input
        # region (twice per cycle).
        groups, run = [], []
        for source in sources + [None]:
            if source is None or source[3]:
                if run:
                    groups.append(first_raised(run, f"err_int{len(groups)}") + (False,))
                    run = []
                if source is not None:
                    groups.append(source)
            else:
                run.append(source)
        e_valid, e_code, e_info = first_raised(groups, "err_first")

        def flags_of(group):
            terms = {c.value: [] for c in ErrorCode if c != ErrorCode.NONE}
            for valid, code, info, _ in group:
                if isinstance(code, ErrorCode):
                    terms[code.value].append(valid)
                else:
                    for value in terms:
                        terms[value].append(valid & (code == value))
            return Cat(*[Cat(*terms[v]).any() if terms.get(v) else Const(0, 1)
                         for v in range(32)])
        # The flags raised this cycle, computed only in a cycle that raises one: both
        # readers OR them into ``err_flags``, so ``err_flags`` stands for "none" (-166 host
        # instructions per tile cycle: the one-hot of every block's error code).
        int_sources = [s for s in sources if not s[3]]
        flags_int = sig(m, flags_of(int_sources), "err_flags_int", 32,
                        when=Cat(*[s[0] for s in int_sources]).any(), idle=err_flags)
        flags_now = sig(m, flags_int | flags_of([s for s in sources if s[3]]), "flags_now", 32,
                        when=e_valid, idle=err_flags)
        with m.If(e_valid):
            m.d.sync += err_flags.eq(err_flags | flags_now)
            with m.If(err_code == 0):
                m.d.sync += [err_code.eq(e_code), err_info.eq(e_info)]
        hr = self.regs
        base = region(CfgRegion.STATUS, p).base - PE_REGS_BASE

        def at(reg):
            """The STATUS item of register ``reg``."""
            return reg - base
        with m.If(hr.we & (hr.index == at(Reg.ERROR))):
            m.d.sync += [err_code.eq(0), err_info.eq(0), err_flags.eq(0)]
        with m.If(hr.we & (hr.index == at(Reg.ERROR_FLAGS))):
            m.d.sync += err_flags.eq((err_flags | flags_now) & ~hr.wdata)
        m.d.comb += self.error.eq((err_code != 0) | (err_flags != 0))

        # ================================ counters ==========================================
        counters = [Signal(32, name=f"ctr_{c.name.lower()}") for c in Counter]
        inc = {}
        for c in Counter:
            found = [rep for rep in reports.values() if c.name.lower() in rep.signature.members]
            assert len(found) == (0 if c in _OWN_COUNTERS else 1), \
                f"counter {c.name}: reported by {len(found)} blocks"
            if found:
                inc[c] = getattr(found[0], c.name.lower())
        inc[Counter.CYCLES] = Const(1, 1)
        inc[Counter.ERRORS] = e_valid
        fmac_seen = Signal()
        ctr_clear = Signal()
        cycles = counters[Counter.CYCLES]
        for c in Counter:
            if c in (Counter.FMAC_FIRST, Counter.FMAC_LAST):
                continue
            m.d.sync += counters[c].eq(counters[c] + inc[c])
        with m.If(inc[Counter.FMAC_LANES] != 0):
            m.d.sync += [counters[Counter.FMAC_LAST].eq(cycles), fmac_seen.eq(1)]
            with m.If(~fmac_seen):
                m.d.sync += counters[Counter.FMAC_FIRST].eq(cycles)
        cc = self.counter_ctrl
        m.d.comb += [ctr_clear.eq(cc.we & cc.wdata[0]), cc.rdata.eq(0)]
        with m.If(ctr_clear):
            m.d.sync += [c.eq(0) for c in counters] + [fmac_seen.eq(0)]

        # ================================ status, busy, reads ===============================
        q, ln, en, dp, core = (reports[k] for k in ("queues", "launcher", "engine", "datapath",
                                                     "core"))
        busy = Signal()
        m.d.comb += [
            busy.eq(en.threads_active.any() | en.launching | ln.active | ln.trigger_pending
                    | q.pending | dp.pipeline_busy | dp.tx_pending | core.running),
            self.busy.eq(busy),
        ]
        # The STATUS word, assembled only for a read of it (host or csrr).
        status_word = sig(m, packed(
            Status, busy=busy, error=self.error, launcher_busy=ln.active,
            trigger_pending=ln.trigger_pending, threads_active=en.threads_active,
            rx_pending=q.pending, tx_pending=dp.tx_pending, core_running=core.running,
            core_halted=core.halted), "status_word", 32,
            when=hr.re | self.core_csr.en, idle=err_flags)
        error_word = Signal(ErrorWord)
        m.d.comb += [error_word.code.eq(err_code), error_word.info.eq(err_info)]
        # Registers are captured at the read; rdata holds until the next one.
        hc = self.counters
        rd_reg = Signal(32)
        reg_val = Signal(32)
        with m.If(hr.re):
            with m.Switch(hr.index):
                with m.Case(at(Reg.ID)):
                    m.d.comb += reg_val.eq(p.id_word)     # the IdWord layout (PEParams.id_word)
                with m.Case(at(Reg.STATUS)):
                    m.d.comb += reg_val.eq(status_word)
                with m.Case(at(Reg.ERROR)):
                    m.d.comb += reg_val.eq(error_word)
                with m.Case(at(Reg.ERROR_FLAGS)):
                    m.d.comb += reg_val.eq(err_flags)
        with m.Elif(hc.re):
            with m.Switch(hc.index):
                for c in Counter:
                    with m.Case(c.value):
                        m.d.comb += reg_val.eq(counters[c.value])
        with m.If(hr.re | hc.re):
            m.d.sync += rd_reg.eq(reg_val)
        m.d.comb += [hr.rdata.eq(rd_reg), hc.rdata.eq(rd_reg)]

        # The core's csrr (only evaluated with a request: Verilator keeps the If).
        cs = self.core_csr
        csr_reg = Signal(32, reset_less=True)              # read only after a request
        with m.If(cs.en):
            with m.Switch(cs.addr):
                with m.Case(Reg.ID):
                    m.d.sync += csr_reg.eq(p.id_word)
                with m.Case(Reg.STATUS):
                    m.d.sync += csr_reg.eq(status_word)
                with m.Case(Reg.ERROR):
                    m.d.sync += csr_reg.eq(error_word)
                with m.Case(Reg.ERROR_FLAGS):
                    m.d.sync += csr_reg.eq(err_flags)
                with m.Case(Reg.BLOCKED):
                    m.d.sync += csr_reg.eq(self.blocked)
                with m.Case(Reg.CORE_STATUS):
                    m.d.sync += csr_reg.eq(self.core_status)
                with m.Case(Reg.CORE_PC):
                    m.d.sync += csr_reg.eq(self.core_pc)
                for c in Counter:
                    with m.Case(COUNTER_BASE + c.value):
                        m.d.sync += csr_reg.eq(counters[c.value])
                with m.Default():
                    m.d.sync += csr_reg.eq(0)
        m.d.comb += cs.rdata.eq(csr_reg)
        return m
