"""The processing element: the top that joins the PE's blocks (SPEC 4.1-4.4, 4.6).

Block diagram (one clock domain; docs/pe.md section 2 names every stream)::

              cfg ──> ConfigDecoder ──regions──> every block's host port
                                                       the control core (_attach_core)
    rx ──> RxQueues ──head/pop──> TaskLauncher ──LaunchStream──┐   │ LaunchStream
              │ ▲                 (bindings, tasks, entries)   v   v
              │ │ level/pop                                LaunchArbiter (core first)
              │ │                                                 │ LaunchStream
              │ └────────────────────── TensorEngine <────────────┘
              │    fabric operands    (DSR file, L0/L1, threads,
              │                        scheduler, issue) ──addresses──> PEMemory
              │                               │ issue                   (SRAM banks,
              └──wavelets (read stage)──> Datapath <──data (read stage)── acc cache)
                                          (R, X/A/N, W,  ──writes──────────────^
                                           out buffers) ──> tx
       every block ──report──> StatusBlock (counters, ERROR, STATUS, busy, error)

Each block is a ``wiring.Component`` in its own module of :mod:`rtl.pe`, joined here by
the signatures of :mod:`rtl.pe.iface`. ``docs/pe.md`` is the reference: register map, DSR
encoding, the launch interface, the hazard rules, the GEMM recipe, counters and error codes.
The register map and encoders are in :mod:`rtl.pe.regs`.

Simulation speed is a design goal (the PE is instantiated many times in the fabric): every
value evaluated per cycle is at most 64 bits wide (memories are split by word, lane or
field, interfaces are records of narrow members), per-thread state that only the issuing
thread needs lives in memories indexed by thread, and per-color state is looked up through
packed bit vectors. Values read only under a condition are multiplexed against a register
(:func:`rtl.pe.util.sig` with ``when=``, ``idle=``) so that Verilator's model skips them in
the other cycles, and state read only under a reset flag has no reset of its own
(docs/pe.md, section 12).
"""

import re

from amaranth import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from rtl.link import CfgSignature, LinkSignature
from rtl.pe.arbiter import LaunchArbiter
from rtl.pe.config import ConfigDecoder
from rtl.pe.core import Core, TraceSignature
from rtl.pe.datapath import Datapath
from rtl.pe.engine import TensorEngine
from rtl.pe.iface import PEDebug
from rtl.pe.launcher import TaskLauncher
from rtl.pe.memory import PEMemory
from rtl.pe.queues import RxQueues
from rtl.pe.regs import CFG_BITS, PEParams, Reg
from rtl.pe.status import StatusBlock

__all__ = ["PE", "pe_verilog", "compact_memory_init"]


class PE(wiring.Component):
    """A processing element of the fabric (SPEC sections 4.1 to 4.4 and 4.6).

    Parameters
    ----------
    sram_words, banks, acc_words, num_dsrs, threads, lanes, num_colors, num_tasks,
    num_entries, rx_depth, out_depth : int
        See :class:`rtl.pe.regs.PEParams` (which checks them).

    Attributes
    ----------
    rx : In(LinkSignature)
        From the router's RAMP output. ``rx.ready`` is per color, from registered queue state.
    tx : Out(LinkSignature)
        To the router's RAMP input; ``valid`` only for a color whose ``tx.ready`` bit is set.
    cfg : In(CfgSignature(18))
        Host configuration and readback; SRAM at 0, registers at ``PE_REGS_BASE``.
    error : Out(1)
        Sticky: some error was raised (code in the ERROR register).
    busy : Out(1)
        An operation in flight, a task pending or running, or a wavelet queued.
    trace : Out(TraceSignature)
        The control core's retired instructions (a debug stream: no back-pressure; the
        tile leaves it unconnected, so that its logic is optimised away in the fabric).
    dbg : Out(PEDebug)
        What the PE did, for timelines (:class:`rtl.pe.iface.PEDebug`): task starts, thread
        launches and occupancy, the core's task ends and retirements, the error. Registered
        from signals the blocks have anyway: the value in cycle n is cycle n - 1's.

    Blocks (built in :meth:`elaborate`, see docs/pe.md section 2): ``queues``
    (:class:`RxQueues`), ``launcher`` (:class:`TaskLauncher`), ``arbiter``
    (:class:`LaunchArbiter`, its ``core`` input idle until the control core is attached),
    ``engine`` (:class:`TensorEngine`), ``datapath`` (:class:`Datapath`), ``memory``
    (:class:`PEMemory`), ``config`` (:class:`ConfigDecoder`), ``status``
    (:class:`StatusBlock`).
    """

    def __init__(self, **params):
        try:
            self._params = PEParams(**params)
        except (TypeError, ValueError):
            self._MustUse__silence = True      # a rejected PE is not an unused design
            raise
        super().__init__(self._members())

    def _members(self):
        """The signature's members (a subclass that attaches a core may add its own)."""
        return {
            "rx": In(LinkSignature()),
            "tx": Out(LinkSignature()),
            "cfg": In(CfgSignature(CFG_BITS)),
            "error": Out(1),
            "busy": Out(1),
            "trace": Out(TraceSignature()),
            "dbg": Out(PEDebug),
        }

    @property
    def params(self):
        """The constructor parameters, as a dict."""
        return self._params.as_dict()

    @property
    def pe_params(self):
        """The parameters, as the :class:`rtl.pe.regs.PEParams` the encoders take."""
        return self._params

    @property
    def id_word(self):
        """Value of the read-only ID register (layout in docs/pe.md)."""
        return self._params.id_word

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.queues = queues = RxQueues(p)
        m.submodules.launcher = launcher = TaskLauncher(p)
        m.submodules.arbiter = arbiter = LaunchArbiter()
        m.submodules.engine = engine = TensorEngine(p)
        m.submodules.datapath = datapath = Datapath(p)
        m.submodules.memory = mem = PEMemory(p)
        m.submodules.config = config = ConfigDecoder(p)
        m.submodules.status = status = StatusBlock(p)

        # Fabric: rx into the queues, tx from the datapath's output buffers.
        connect(m, flipped(self.rx), queues.rx)
        connect(m, datapath.tx, flipped(self.tx))
        # Launches: the task launcher and (later) the control core, through the arbiter.
        connect(m, launcher.queue, queues.launcher)
        connect(m, launcher.launch, arbiter.task)   # arbiter.core: see _attach_core
        connect(m, arbiter.out, engine.launch)
        m.d.comb += engine.bound.eq(launcher.bound)
        # The engine's issue stage addresses the reads; the datapath gets their data.
        connect(m, engine.fin_a, queues.a)
        connect(m, engine.fin_b, queues.b)
        connect(m, engine.sched, queues.sched)
        connect(m, engine.mem_a, mem.a)
        connect(m, engine.mem_b, mem.b)
        connect(m, engine.issue, datapath.issue)
        connect(m, queues.a_data, datapath.fin_a)
        connect(m, queues.b_data, datapath.fin_b)
        connect(m, mem.a_data, datapath.mem_a)
        connect(m, mem.b_data, datapath.mem_b)
        connect(m, datapath.hazards, engine.hazards)
        connect(m, engine.outbuf, datapath.outbuf)
        connect(m, datapath.sram_wr, mem.sram_wr)
        connect(m, datapath.acc_wr, mem.acc_wr)
        # Configuration: one region of the address map per block port.
        connect(m, flipped(self.cfg), config.cfg)
        connect(m, config.sram, mem.sram)
        connect(m, config.acc, mem.acc)
        connect(m, config.dsr, engine.dsr)
        connect(m, config.bind, launcher.bind)
        connect(m, config.task, launcher.task)
        connect(m, config.entry, launcher.entry)
        connect(m, config.task_ctrl, launcher.ctrl)
        connect(m, config.status, status.regs)
        connect(m, config.counter_ctrl, status.counter_ctrl)
        connect(m, config.counter, status.counters)
        # Reports.
        connect(m, queues.report, status.queues)
        connect(m, launcher.report, status.launcher)
        connect(m, engine.report, status.engine)
        connect(m, datapath.report, status.datapath)
        connect(m, config.report, status.config)
        m.d.comb += [self.error.eq(status.error), self.busy.eq(status.busy)]
        # The debug port (the core's fields: _attach_core).
        dbg = self.dbg
        m.d.sync += [dbg.start.eq(launcher.started), dbg.launch.eq(engine.launched),
                     dbg.threads.eq(engine.report.threads_active), dbg.error.eq(status.error)]
        self._attach_core(m, {"queues": queues, "launcher": launcher, "arbiter": arbiter,
                              "engine": engine, "datapath": datapath, "memory": mem,
                              "config": config, "status": status})
        return m

    def _attach_core(self, m, blocks):
        """The control core (SPEC 4.5) and its ports on the blocks: launches through the
        arbiter, fetch and loads / stores on the SRAM banks (after the datapath), the DSR
        file, the rx queues (``recv``), tx (``send``), the launcher (code tasks, ``tact``,
        ``tblk``, ``tunblk``), ``csrr``, the CORE and GPR registers, counters and errors."""
        p = self._params
        b = blocks
        m.submodules.core = core = Core(sram_words=p.sram_words, banks=p.banks,
                                        num_colors=p.num_colors, num_tasks=p.num_tasks,
                                        num_dsrs=p.num_dsrs)
        connect(m, core.launch, b["arbiter"].core)
        m.d.comb += core.ops_pending.eq(b["engine"].core_ops_pending)
        connect(m, core.fetch, b["memory"].core_fetch)
        connect(m, core.mem, b["memory"].core_mem)
        m.d.comb += b["memory"].busy_banks.eq(b["engine"].bank_use
                                              | b["datapath"].hazards.wb_banks)
        connect(m, core.dsr, b["engine"].core_dsr)
        connect(m, core.recv, b["queues"].core_recv)
        m.d.comb += b["queues"].bound.eq(b["launcher"].bound)
        connect(m, core.send, b["datapath"].core_send)
        # csrr: the status block answers; CORE_PC reads the csrr's own PC (the pc of the
        # instruction in W, where the core takes the answer: its trace record).
        st_csr = b["status"].core_csr
        m.d.comb += [st_csr.en.eq(core.csr.en), st_csr.addr.eq(core.csr.addr)]
        asked_pc = Signal()
        with m.If(core.csr.en):
            m.d.sync += asked_pc.eq(core.csr.addr == Reg.CORE_PC)
        m.d.comb += core.csr.rdata.eq(Mux(asked_pc, core.trace.payload.pc, st_csr.rdata))
        connect(m, core.task_ctl, b["launcher"].core_ctl)
        connect(m, b["launcher"].core_start, core.start)
        # The host's CORE registers: CORE_CTRL (restart), CORE_STATUS, CORE_PC; the GPRs.
        cr, gr, st = b["config"].core, b["config"].gpr, b["status"]
        base = Reg.CORE_CTRL
        restart = cr.we & (cr.index == Reg.CORE_CTRL - base) & cr.wdata[0]
        m.d.comb += [core.restart.eq(restart),
                     b["launcher"].core_done.eq(core.done | restart)]
        core_rd = Signal(32, reset_less=True)            # read only after a read
        with m.If(cr.re):
            m.d.sync += core_rd.eq(Mux(cr.index == Reg.CORE_STATUS - base,
                                       core.status.as_value(),
                                       Mux(cr.index == Reg.CORE_PC - base, core.pc, 0)))
        gpr_rd = Signal(32, reset_less=True)
        with m.If(gr.re):
            m.d.sync += gpr_rd.eq(core.gpr.rdata)
        m.d.comb += [cr.rdata.eq(core_rd), gr.rdata.eq(gpr_rd),
                     core.gpr.addr.eq(gr.index), core.gpr.we.eq(gr.we),
                     core.gpr.wdata.eq(gr.wdata)]
        # Status, counters, errors, the trace.
        m.d.comb += [
            st.blocked.eq(b["launcher"].blocked), st.core_status.eq(core.status),
            st.core_pc.eq(core.pc),
            st.core.core_retired.eq(core.retired), st.core.core_active.eq(core.active),
            st.core.stall_core_bank.eq(core.stall_bank),
            st.core.core_error.valid.eq(core.error.valid),
            st.core.core_error.code.eq(core.error.code),
            st.core.core_error.info.eq(core.error.info),
            st.core.running.eq(core.running), st.core.halted.eq(core.status.halted),
        ]
        connect(m, core.trace, flipped(self.trace))
        m.d.sync += [self.dbg.core_done.eq(core.done), self.dbg.core_running.eq(core.running),
                     self.dbg.retired.eq(core.retired)]


_INIT_BLOCK = re.compile(r"  initial begin\n((?:    [^\n\[]+\[\d+\] = \d+'[dhb]0+;\n)+)  end\n")


def compact_memory_init(verilog):
    """Replace the word-by-word zero initialisation Amaranth writes for each memory by a
    loop: same semantics, a fraction of the lines (and of Verilator's build time)."""
    count = 0

    def replace(match):
        nonlocal count
        lines = match.group(1).splitlines()
        names = {line.strip().split("[", 1)[0] for line in lines}
        if len(names) != 1:
            return match.group(0)
        name = names.pop()
        width = lines[0].split("= ", 1)[1].split("'", 1)[0]
        var = f"init_i{count}"
        count += 1
        return (f"  integer {var};\n  initial begin\n"
                f"    for ({var} = 0; {var} < {len(lines)}; {var} = {var} + 1)\n"
                f"      {name}[{var}] = {width}'d0;\n  end\n")
    return _INIT_BLOCK.sub(replace, verilog)


def pe_verilog(name="pe", **params):
    """Verilog of a :class:`PE` (module ``name``), with compact memory initialisation."""
    from rtl.export import to_verilog
    return compact_memory_init(to_verilog(PE(**params), name))
