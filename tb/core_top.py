"""Standalone harness of the control core (:class:`rtl.pe.core.Core`): the core plus simple
functional models of everything the PE gives it, and a host port to load and read them.

* SRAM of ``banks`` single-ported banks (word ``w`` in bank ``w % banks``, the PE's mapping):
  per bank one access per cycle, the host first, then the core's ``mem`` port, then its
  ``fetch`` port; a bank can also be denied to the core by a per-cycle random mask (input
  ``rate_bank``: each bank is denied with probability ``rate_bank / 16``), which exercises
  the core's stall paths the way the tensor datapath does in the PE.
* DSR file (a memory of ``num_dsrs x 8`` words; input ``dsr_busy`` marks DSRs a "live
  tensor operation" uses), launch sink (logs every LaunchRequest), ``ops_pending`` (input,
  or-ed with a countdown of ``op_latency`` cycles from every accepted launch), CSR stub
  (register ``a`` reads :func:`csr_value`), send sink, recv source (per-color queues the host
  preloads; input ``recv_bound`` marks colors bound to a task), task_ctl sink. Every port
  with a handshake is stalled at random with probability ``rate_port / 16`` per cycle.
* Logs in memories, each entry stamped with the cycle counter: launches, sends, task
  controls, the trace (every retired instruction), task starts, ``done`` pulses, errors.
  The bench reads them after a run, so no Python runs per simulated cycle.
* A start queue (8 deep) that offers TaskStarts to the core back to back.

Host port: ``host_addr`` = region (bits 19..16, :class:`Region`) and offset, ``host_we`` /
``host_re``, ``host_rdata`` two cycles after ``host_re`` (every input of the harness is
registered before it is used, so that the core's logic depends on registers only, as in the
PE; inputs act one cycle after they are driven). Log fields are at offset
``field << LOG_BITS | entry``.
"""

import enum as py_enum

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, fifo, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2, exact_log2

from rtl.pe import isa
from rtl.pe.core import Core
from rtl.pe.regs import CoreStatus

__all__ = ["CoreTop", "Region", "LOG_BITS", "TRACE_BITS", "LOGS", "csr_value", "core_verilog"]

#: Entries of every log but the trace (2 ** LOG_BITS) and of the trace (2 ** TRACE_BITS).
LOG_BITS = 6
TRACE_BITS = 10


class Region(py_enum.IntEnum):
    """Host address regions (``host_addr[19:16]``)."""
    SRAM = 0x0        #: + word address (R/W)
    DSR = 0x1         #: + 8 * dsr + word (R/W)
    RECV_Q = 0x2      #: + 8 * color + slot: the wavelet words of a color's queue (W)
    RECV_COUNT = 0x3  #: + color: number of queued words (W; the queue restarts at slot 0)
    GPR = 0x4         #: + register (R/W, through the core's gpr port)
    START = 0x5       #: + 0: pc | task << 17 (W, latched); + 1: wavelet word (W, pushes)
    CTRL = 0x6        #: + 0: write clears the cycle counter and every log count
    LAUNCH = 0x8      #: log: launch bits 31..0, 63..32, cycle
    SEND = 0x9        #: log: wavelet word, cycle
    TASK = 0xA        #: log: op | task << 2, arg, cycle
    TRACE = 0xB       #: log: pc | rd << 17, word, value, cycle
    STARTS = 0xC      #: log: task | pc << 5, cycle
    DONES = 0xD       #: log: cycle
    ERRORS = 0xE      #: log: code | info << 8, cycle (the pc: the ``pc`` output after it)


#: Fields of each log, in order.
LOGS = {
    Region.LAUNCH: ("lo", "hi", "cycle"),
    Region.SEND: ("word", "cycle"),
    Region.TASK: ("op_task", "arg", "cycle"),
    Region.TRACE: ("pc_rd", "word", "value", "cycle"),
    Region.STARTS: ("task_pc", "cycle"),
    Region.DONES: ("cycle",),
    Region.ERRORS: ("code_info", "cycle"),
}


def csr_value(offset):
    """What the CSR stub returns for register ``offset``."""
    return 0xC5000000 | (offset << 8) | (~offset & 0xFF)


class _Log:
    """A log in memories: one 32-bit memory per field, written at ``count`` on ``push``."""

    def __init__(self, m, name, fields, bits, host_offset, host_re, clear):
        self.count = Signal(bits + 1, name=f"{name}_count")
        self.push = Signal(name=f"{name}_push")
        self.values = {}
        self.rdata = {}
        for f in fields:
            mem = memory.Memory(shape=32, depth=1 << bits, init=[])
            m.submodules[f"{name}_{f}"] = mem
            wp = mem.write_port()
            rp = mem.read_port(transparent_for=())
            value = Signal(32, name=f"{name}_{f}_in")
            m.d.comb += [wp.en.eq(self.push & ~self.count[bits]), wp.addr.eq(self.count[:bits]),
                         wp.data.eq(value),
                         rp.addr.eq(host_offset[:bits]), rp.en.eq(host_re)]
            self.values[f] = value
            self.rdata[f] = rp.data
        self.field_bits = bits
        with m.If(clear):
            m.d.sync += self.count.eq(0)
        with m.Elif(self.push & ~self.count[bits]):
            m.d.sync += self.count.eq(self.count + 1)


class _NoCore(wiring.Component):
    """A stand-in with the core's ports and no logic (its outputs are 0): the harness
    alone, for the floor of the simulation-cost measurement (bench/core_speed.py)."""

    def __init__(self, **params):
        core = Core(**params)
        core._MustUse__silence = True       # only its signature is used
        super().__init__(dict(core.signature.members))

    def elaborate(self, platform):
        return Module()


class CoreTop(wiring.Component):
    """The core with the PE-side models of the module docstring (``with_core=False``: the
    harness around a stand-in without logic, to measure the harness's own cost)."""

    def __init__(self, sram_words=12288, banks=8, num_colors=24, num_tasks=32, num_dsrs=44,
                 with_core=True):
        self._params = dict(sram_words=sram_words, banks=banks, num_colors=num_colors,
                            num_tasks=num_tasks, num_dsrs=num_dsrs)
        self._with_core = with_core
        super().__init__({
            "host_addr": In(20), "host_wdata": In(32), "host_we": In(1), "host_re": In(1),
            "host_rdata": Out(32),
            "restart": In(1),
            "ops_pending": In(1), "op_latency": In(8),
            "dsr_busy": In(64), "recv_bound": In(32),
            "rate_bank": In(4), "rate_port": In(4), "seed": In(32), "seed_we": In(1),
            "status": Out(CoreStatus), "pc": Out(isa.PC_BITS), "cycle": Out(32),
            "done_count": Out(LOG_BITS + 1), "trace_count": Out(TRACE_BITS + 1),
            "error_count": Out(LOG_BITS + 1), "start_pending": Out(1),
            "launch_count": Out(LOG_BITS + 1), "send_count": Out(LOG_BITS + 1),
            "task_count": Out(LOG_BITS + 1), "starts_count": Out(LOG_BITS + 1),
            "retired_count": Out(32), "active_count": Out(32), "stall_bank_count": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._params
        m.submodules.core = core = Core(**p) if self._with_core else _NoCore(**p)
        words, banks = p["sram_words"], p["banks"]
        log2_banks = exact_log2(banks)
        addr_bits = ceil_log2(words)

        # Every input registered: the model's logic then depends on registers only (as the
        # core's would in the PE), not on top-level inputs, which Verilator re-evaluates
        # at every eval() (bench/core_speed.py measures the core, not this harness).
        inp = {}
        for name in ['host_addr', 'host_wdata', 'host_we', 'host_re', 'restart', 'ops_pending', 'op_latency', 'dsr_busy', 'recv_bound', 'rate_bank', 'rate_port', 'seed_we', 'seed']:
            port = getattr(self, name)
            inp[name] = Signal.like(port, name=f"{name}_q")
            m.d.sync += inp[name].eq(port)
        region = inp['host_addr'][16:20]
        offset = inp['host_addr'][:16]
        host_we = {r: inp['host_we'] & (region == r) for r in Region}
        host_re = {r: inp['host_re'] & (region == r) for r in Region}
        clear = host_we[Region.CTRL]

        cycle = Signal(32)
        m.d.sync += cycle.eq(Mux(clear, 0, cycle + 1))
        m.d.comb += self.cycle.eq(cycle)

        # Random stalls: a 64-bit xorshift, 4-bit slices against the rates.
        rng = Signal(64, init=0x9E3779B97F4A7C15)
        rng_on = Signal()
        m.d.sync += rng_on.eq((inp['rate_bank'] != 0) | (inp['rate_port'] != 0))
        with m.If(inp['seed_we']):
            m.d.sync += rng.eq(Cat(inp['seed'], ~inp['seed']))
        with m.Elif(rng_on):
            s1 = rng ^ (rng << 13)[:64]
            s2 = s1 ^ (s1 >> 7)
            m.d.sync += rng.eq(s2 ^ (s2 << 17)[:64])

        def chance(slot, rate):
            return rng_on & (rng[4 * slot:4 * slot + 4] < rate)
        bank_denied = Signal(banks)
        m.d.comb += bank_denied.eq(Cat(*(chance(b % 8, inp['rate_bank']) for b in range(banks))))
        stall = {name: chance(8 + i, inp['rate_port'])
                 for i, name in enumerate(("launch", "dsr", "send", "recv", "task"))}

        # --- SRAM: banked grants, one memory ----------------------------------------------
        m.submodules.sram = sram = memory.Memory(shape=32, depth=words, init=[])
        s_fetch = sram.read_port(transparent_for=())
        s_mem = sram.read_port(transparent_for=())
        s_host = sram.read_port(transparent_for=())
        s_w = sram.write_port()
        host_sram = (inp['host_we'] | inp['host_re']) & (region == Region.SRAM)
        host_bank = offset[:log2_banks] if log2_banks else Const(0, 1)
        mem_bank = core.mem.addr[:log2_banks] if log2_banks else Const(0, 1)
        fetch_bank = core.fetch.addr[:log2_banks] if log2_banks else Const(0, 1)
        mem_grant = (core.mem.en & ~bank_denied.bit_select(mem_bank, 1)
                     & ~(host_sram & (host_bank == mem_bank)))
        fetch_grant = (core.fetch.en & ~bank_denied.bit_select(fetch_bank, 1)
                       & ~(host_sram & (host_bank == fetch_bank))
                       & ~(core.mem.en & (mem_bank == fetch_bank)))
        m.d.comb += [
            core.mem.grant.eq(mem_grant), core.fetch.grant.eq(fetch_grant),
            s_fetch.addr.eq(core.fetch.addr[:addr_bits]), s_fetch.en.eq(fetch_grant),
            s_mem.addr.eq(core.mem.addr[:addr_bits]), s_mem.en.eq(mem_grant & ~core.mem.we),
            s_host.addr.eq(offset[:addr_bits]), s_host.en.eq(host_re[Region.SRAM]),
            core.fetch.rdata.eq(s_fetch.data), core.mem.rdata.eq(s_mem.data),
        ]
        with m.If(host_we[Region.SRAM]):
            m.d.comb += [s_w.en.eq(1), s_w.addr.eq(offset[:addr_bits]),
                         s_w.data.eq(inp['host_wdata'])]
        with m.Elif(mem_grant & core.mem.we):
            m.d.comb += [s_w.en.eq(1), s_w.addr.eq(core.mem.addr[:addr_bits]),
                         s_w.data.eq(core.mem.wdata)]

        # --- DSR file ----------------------------------------------------------------------
        dsr_words = 8 * p["num_dsrs"]
        m.submodules.dsrs = dsrs = memory.Memory(shape=32, depth=dsr_words, init=[])
        d_core = dsrs.read_port(transparent_for=())
        d_host = dsrs.read_port(transparent_for=())
        d_w = dsrs.write_port()
        dsr_index = Cat(core.dsr.word, core.dsr.id)
        dsr_grant = core.dsr.en & ~stall["dsr"]
        dsr_busy = inp['dsr_busy'].bit_select(core.dsr.id, 1)
        m.d.comb += [
            core.dsr.grant.eq(dsr_grant), core.dsr.busy.eq(dsr_grant & dsr_busy),
            d_core.addr.eq(dsr_index), d_core.en.eq(dsr_grant & ~core.dsr.we),
            core.dsr.rdata.eq(d_core.data),
            d_host.addr.eq(offset), d_host.en.eq(host_re[Region.DSR]),
        ]
        with m.If(host_we[Region.DSR]):
            m.d.comb += [d_w.en.eq(1), d_w.addr.eq(offset), d_w.data.eq(inp['host_wdata'])]
        with m.Elif(dsr_grant & core.dsr.we & ~dsr_busy):
            m.d.comb += [d_w.en.eq(1), d_w.addr.eq(dsr_index), d_w.data.eq(core.dsr.wdata)]

        # --- launch sink, ops_pending --------------------------------------------------------
        logs = {r: _Log(m, r.name.lower(), fields,
                        TRACE_BITS if r == Region.TRACE else LOG_BITS, offset,
                        host_re[r], clear) for r, fields in LOGS.items()}
        launch_fire = core.launch.valid & ~stall["launch"]
        pending = Signal(8)
        with m.If(launch_fire):
            m.d.sync += pending.eq(Mux(pending > inp['op_latency'], pending, inp['op_latency']))
        with m.Elif(pending != 0):
            m.d.sync += pending.eq(pending - 1)
        req_bits = Signal(64)
        m.d.comb += [
            core.launch.ready.eq(~stall["launch"]),
            core.ops_pending.eq(inp['ops_pending'] | (pending != 0)),
            req_bits.eq(core.launch.payload.as_value()),
            logs[Region.LAUNCH].push.eq(launch_fire),
            logs[Region.LAUNCH].values["lo"].eq(req_bits[:32]),
            logs[Region.LAUNCH].values["hi"].eq(req_bits[32:]),
        ]

        # --- CSR stub -----------------------------------------------------------------------
        csr_q = Signal(32)
        with m.If(core.csr.en):
            a = core.csr.addr
            m.d.sync += csr_q.eq(Cat(~a, a, Const(0, 8), Const(0xC5, 8)))
        m.d.comb += core.csr.rdata.eq(csr_q)

        # --- send sink ------------------------------------------------------------------------
        m.d.comb += [
            core.send.ready.eq(~stall["send"]),
            logs[Region.SEND].push.eq(core.send.valid & ~stall["send"]),
            logs[Region.SEND].values["word"].eq(core.send.payload.as_value()),
        ]

        # --- recv source ----------------------------------------------------------------------
        m.submodules.recv_q = recv_q = memory.Memory(shape=32, depth=32 * 8, init=[])
        r_core = recv_q.read_port(transparent_for=())
        r_w = recv_q.write_port()
        counts = Signal(32 * 4)
        heads = Signal(32 * 3)
        color = core.recv.color
        count = counts.word_select(color, 4)
        head = heads.word_select(color, 3)
        bound = inp['recv_bound'].bit_select(color, 1)
        recv_grant = core.recv.en & ~bound & (count != 0) & ~stall["recv"]
        m.d.comb += [
            core.recv.grant.eq(recv_grant), core.recv.bad.eq(core.recv.en & bound),
            r_core.addr.eq(Cat(head, color)), r_core.en.eq(recv_grant),
            core.recv.rdata.eq(r_core.data),
            r_w.en.eq(host_we[Region.RECV_Q]), r_w.addr.eq(offset[:8]),
            r_w.data.eq(inp['host_wdata']),
        ]
        with m.If(host_we[Region.RECV_COUNT]):
            m.d.sync += [counts.word_select(offset[:5], 4).eq(inp['host_wdata'][:4]),
                         heads.word_select(offset[:5], 3).eq(0)]
        with m.Elif(recv_grant):
            m.d.sync += [count.eq(count - 1), head.eq(head + 1)]

        # --- task_ctl sink --------------------------------------------------------------------
        task_fire = core.task_ctl.valid & ~stall["task"]
        m.d.comb += [
            core.task_ctl.ready.eq(~stall["task"]),
            logs[Region.TASK].push.eq(task_fire),
            logs[Region.TASK].values["op_task"].eq(Cat(core.task_ctl.payload.op,
                                                       core.task_ctl.payload.task)),
            logs[Region.TASK].values["arg"].eq(core.task_ctl.payload.arg),
        ]

        # --- start queue ----------------------------------------------------------------------
        start_layout = data.Layout.cast(isa.TaskStart)
        m.submodules.start_q = start_q = fifo.SyncFIFOBuffered(width=start_layout.size,
                                                               depth=8)
        start_head = Signal(22)
        with m.If(host_we[Region.START] & (offset[0] == 0)):
            m.d.sync += start_head.eq(inp['host_wdata'][:22])
        m.d.comb += [
            start_q.w_en.eq(host_we[Region.START] & (offset[0] == 1)),
            start_q.w_data.eq(Cat(start_head, inp['host_wdata'])),
            core.start.valid.eq(start_q.r_rdy),
            core.start.payload.eq(start_q.r_data),
            start_q.r_en.eq(core.start.ready),
            self.start_pending.eq(start_q.r_rdy),
        ]

        # --- GPRs, restart --------------------------------------------------------------------
        m.d.comb += [
            core.gpr.addr.eq(offset[:4]), core.gpr.we.eq(host_we[Region.GPR]),
            core.gpr.wdata.eq(inp['host_wdata']), core.restart.eq(inp['restart']),
        ]

        # --- trace, events, counters ----------------------------------------------------------
        t = core.trace.payload
        m.d.comb += [
            logs[Region.TRACE].push.eq(core.trace.valid),
            logs[Region.TRACE].values["pc_rd"].eq(Cat(t.pc, t.rd)),
            logs[Region.TRACE].values["word"].eq(t.word),
            logs[Region.TRACE].values["value"].eq(t.value),
            logs[Region.STARTS].push.eq(core.start.valid & core.start.ready),
            logs[Region.STARTS].values["task_pc"].eq(Cat(core.start.payload.task,
                                                        core.start.payload.pc)),
            logs[Region.DONES].push.eq(core.done),
            logs[Region.ERRORS].push.eq(core.error.valid),
            logs[Region.ERRORS].values["code_info"].eq(Cat(core.error.code, Const(0, 3),
                                                           core.error.info)),
        ]
        for log in logs.values():
            m.d.comb += log.values["cycle"].eq(cycle)
        counters = {"retired_count": core.retired, "active_count": core.active,
                    "stall_bank_count": core.stall_bank}
        for name, inc in counters.items():
            counter = getattr(self, name)
            cnt = Signal(32, name=f"{name}_q")
            with m.If(clear):
                m.d.sync += cnt.eq(0)
            with m.Elif(inc):
                m.d.sync += cnt.eq(cnt + 1)
            m.d.comb += counter.eq(cnt)
        m.d.comb += [
            self.status.eq(core.status), self.pc.eq(core.pc),
            self.done_count.eq(logs[Region.DONES].count),
            self.trace_count.eq(logs[Region.TRACE].count),
            self.error_count.eq(logs[Region.ERRORS].count),
            self.launch_count.eq(logs[Region.LAUNCH].count),
            self.send_count.eq(logs[Region.SEND].count),
            self.task_count.eq(logs[Region.TASK].count),
            self.starts_count.eq(logs[Region.STARTS].count),
        ]

        # --- host reads (data one cycle after host_re) ----------------------------------------
        region_q = Signal(4)
        field_q = Signal(2)
        gpr_q = Signal(32)
        with m.If(inp['host_re']):
            m.d.sync += [region_q.eq(region), field_q.eq(offset[LOG_BITS:LOG_BITS + 2])]
            with m.If(region == Region.TRACE):
                m.d.sync += field_q.eq(offset[TRACE_BITS:TRACE_BITS + 2])
            m.d.sync += gpr_q.eq(core.gpr.rdata)
        with m.Switch(region_q):
            with m.Case(Region.SRAM):
                m.d.comb += self.host_rdata.eq(s_host.data)
            with m.Case(Region.DSR):
                m.d.comb += self.host_rdata.eq(d_host.data)
            with m.Case(Region.GPR):
                m.d.comb += self.host_rdata.eq(gpr_q)
            for r, log in logs.items():
                with m.Case(r):
                    with m.Switch(field_q):
                        for i, f in enumerate(LOGS[r]):
                            with m.Case(i):
                                m.d.comb += self.host_rdata.eq(log.rdata[f])
        return m


def core_verilog(top="core_top", **params):
    """Verilog of :class:`CoreTop` (module ``top``), zero-initialised memories as loops."""
    from rtl.export import to_verilog
    from rtl.pe.pe import compact_memory_init
    return compact_memory_init(to_verilog(CoreTop(**params), top))
