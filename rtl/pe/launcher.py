"""The task launcher (SPEC 4.4 and 4.5; docs/pe.md section 5, docs/core.md).

Sources of activations: the head wavelet of every bound color, the host trigger, and the
local activations of the control core (``tact``: one pending activation per task, with an
argument word). The launcher picks the source whose priority is highest (a color's
``ColorBind.prio``; the task's ``TaskEntry.prio`` for the trigger and local activations),
round-robin among equals; it looks up the task (``BIND``: data wavelets start
``data_task``, control wavelets ``ctrl_base + index``) and its ``TaskEntry``:

* a launch-list task (the hardware fast path): its launch entries are issued, one
  :class:`rtl.pe.regs.LaunchRequest` per accepted cycle, with the wavelet's data as the
  scalar and its index as the offset;
* a code task: the control core starts it at ``TaskEntry.pc`` with the wavelet (``r1``
  data, ``r2`` index, ``r3`` the word). Tasks run to completion: while it runs, its color
  takes no other activation (so a color's wavelets start their tasks in order), and another
  code task waits parked until the core is done; launch-list tasks of other sources go on.

A wavelet of a blocked task, or of a kind (data / control) its color does not bind, parks
its source until ``BLOCKED``, ``BLOCK_CLR``, a binding, an unblock by the core or the end
of a code task.

State machine: IDLE (pick a source), DECODE (the head wavelet and its task; a code task is
handed to the core here), LAUNCH (the entries, until the one with ``last`` is accepted;
then pick again in the same cycle).
"""

from amaranth import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from rtl.pe.core import TaskControl, TaskOp
from rtl.pe.iface import (LauncherQueueSignature, LauncherReport, LaunchStream,
                          RegionSignature, TaskStarted)
from rtl.pe.isa import TaskStart
from rtl.pe.regs import (PE_REGS_BASE, CfgRegion, ColorBind, HostTrigger, LaunchEntry, Reg,
                         TaskEntry, region)
from rtl.pe.util import round_robin, sig
from rtl.wavelet import Wavelet

__all__ = ["TaskLauncher"]

_IDLE, _DECODE, _LAUNCH = range(3)


class TaskLauncher(wiring.Component):
    """The task launcher with the binding, task and launch-entry tables.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    queue : Out(LauncherQueueSignature)
        Reads and pops the head wavelet of the rx queue it activates from.
    launch : Out(LaunchStream)
        The launches of the running task (``core`` = 0), to the engine's arbiter.
    bound : Out(num_colors)
        Bit c: color c has a data or control binding (the engine refuses such a color as a
        fabric input operand).
    bind, task, entry, ctrl : In(RegionSignature)
        The host's ports: regions BIND, TASK, ENTRY and TASK_CTRL (TRIGGER, BLOCKED,
        BLOCK_SET, BLOCK_CLR) of the address map.
    report : Out(LauncherReport)
        Tasks activated, BAD_TASK / BAD_COLOR (binding) / TRIGGER_OVERRUN, busy flags.
    core_start : Out(stream.Signature(TaskStart))
        A code task for the control core (offered only in a cycle the core is ready).
    core_done : In(1)
        The core's task ended (``tend``).
    core_ctl : In(stream.Signature(TaskControl))
        The core's ``tact`` / ``tblk`` / ``tunblk`` (always accepted).
    blocked : Out(num_tasks)
        The BLOCKED register (for the core's ``csrr``).
    started : Out(TaskStarted)
        The task started in this cycle, if any (for the PE's debug port).
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "queue": Out(LauncherQueueSignature(params.num_colors)),
            "launch": Out(LaunchStream),
            "bound": Out(params.num_colors),
            "bind": In(RegionSignature(region(CfgRegion.BIND, params))),
            "task": In(RegionSignature(region(CfgRegion.TASK, params))),
            "entry": In(RegionSignature(region(CfgRegion.ENTRY, params))),
            "ctrl": In(RegionSignature(region(CfgRegion.TASK_CTRL, params))),
            "report": Out(LauncherReport()),
            "core_start": Out(stream.Signature(TaskStart)),
            "core_done": In(1),
            "core_ctl": In(stream.Signature(TaskControl)),
            "blocked": Out(params.num_tasks),
            "started": Out(TaskStarted),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        C, NT = p.num_colors, p.num_tasks
        CB = max(1, bits_for(C - 1))
        TKB = max(1, bits_for(NT - 1))
        rep = self.report

        # --- tables -------------------------------------------------------------------------
        m.submodules.bind_mem = bind_mem = memory.Memory(shape=ColorBind, depth=C, init=[])
        bind_wr = bind_mem.write_port()
        bind_rd_host = bind_mem.read_port()
        bind_rd = bind_mem.read_port(domain="comb")
        bound_any = self.bound          # bit c: color c has a data or control binding
        m.submodules.task_mem = task_mem = memory.Memory(shape=TaskEntry, depth=NT, init=[])
        task_wr = task_mem.write_port()
        task_rd_host = task_mem.read_port()
        task_rd = task_mem.read_port(domain="comb")
        m.submodules.entry_mem = entry_mem = memory.Memory(shape=64, depth=p.num_entries,
                                                           init=[])
        entry_wr = entry_mem.write_port(granularity=32)
        entry_rd_host = entry_mem.read_port()
        entry_rd = entry_mem.read_port(domain="comb")
        blocked = self.blocked
        SRC = C + 1 + NT             # colors, the host trigger, then the local activations
        parked = Signal(SRC)
        unpark = Signal()
        # Priorities of the sources (two bits each, as two bit vectors: high and low bit),
        # from the bindings and the task table, kept beside them.
        c_prio = [Signal(C, name=f"color_prio{i}") for i in range(2)]
        t_prio = [Signal(NT, name=f"task_prio{i}") for i in range(2)]
        # Local activations: pending bit and argument word per task.
        act_pending = Signal(NT)
        m.submodules.act_arg = act_mem = memory.Memory(shape=32, depth=NT, init=[])
        act_wr = act_mem.write_port()
        act_rd = act_mem.read_port(domain="comb")
        # The color whose code task runs on the core takes no other activation meanwhile.
        inflight = Signal(C)

        # --- the launcher -------------------------------------------------------------------
        launch = self.launch
        q = self.queue
        trig_valid = Signal()
        trig = Signal(HostTrigger, reset_less=True)      # read only under trig_valid

        k_state = Signal(2)
        k_src = Signal(range(SRC))
        k_last_src = Signal(range(SRC))
        k_ptr = Signal(6)
        k_data = Signal(16, reset_less=True)             # read only in LAUNCH
        k_index = Signal(10, reset_less=True)
        # (The color of a code task that ends in this cycle may go again in this cycle.)
        # The end of a code task also unparks in its own cycle, so that the sources parked
        # while the core was busy compete with those that arrived since, round-robin.
        busy_colors = Mux(self.core_done, 0, inflight)
        cand = Cat(q.nonempty & bound_any & ~busy_colors, trig_valid,
                   act_pending & ~blocked) & ~Mux(self.core_done, 0, parked)
        # The highest priority present: keep the sources with the high bit if any, then of
        # those the ones with the low bit if any (all priorities 0: every candidate).
        trig_prio = [t_prio[i].bit_select(trig.task[:TKB], 1) for i in range(2)]
        src_prio = [Cat(c_prio[i], trig_prio[i], t_prio[i]) for i in range(2)]
        top_hi = sig(m, cand & src_prio[1], "k_top_hi", SRC)
        top = sig(m, Mux(top_hi.any(), top_hi, cand), "k_top", SRC)
        top_lo = sig(m, top & src_prio[0], "k_top_lo", SRC)
        k_pick_any, k_pick = round_robin(m, Mux(top_lo.any(), top_lo, top), k_last_src, SRC,
                                         "k_pick")
        m.d.comb += q.pick.eq(Mux(k_pick < C, k_pick, C))

        # DECODE: the head wavelet (trigger, local argument) of the chosen source, its task.
        k_head = q.head
        k_is_color = k_src < C
        k_is_trig = k_src == C
        k_is_local = k_src > C
        k_local = (k_src - (C + 1))[:TKB]
        m.d.comb += act_rd.addr.eq(k_local)
        k_arg = data.View(Wavelet, act_rd.data)
        k_w_data = Mux(k_is_trig, trig.data, Mux(k_is_local, k_arg.data, k_head.data))
        k_w_index = Mux(k_is_trig, trig.index, Mux(k_is_local, k_arg.index, k_head.index))
        k_w_ctrl = Mux(k_is_color, k_head.ctrl, 0)
        m.d.comb += bind_rd.addr.eq(k_src[:CB])
        k_bind = bind_rd.data
        # A wavelet whose kind (data / control) has no binding on its color waits parked.
        k_unbound = k_is_color & Mux(k_w_ctrl, ~k_bind.ctrl_en, ~k_bind.data_en)
        k_task_wide = sig(m, Mux(k_is_trig, trig.task, Mux(
            k_is_local, k_local, Mux(k_w_ctrl, k_bind.ctrl_base + k_w_index,
                                     k_bind.data_task))), "k_task_wide", 11)
        k_task_bad = k_task_wide >= NT
        k_task = k_task_wide[:TKB]
        k_blocked = blocked.bit_select(k_task, 1)
        m.d.comb += task_rd.addr.eq(k_task)

        entry = data.View(LaunchEntry, entry_rd.data)
        m.d.comb += entry_rd.addr.eq(k_ptr)
        m.d.comb += [
            launch.payload.launch.eq(entry.launch), launch.payload.data.eq(k_data),
            launch.payload.index.eq(k_index), launch.payload.core.eq(0),
        ]
        k_pop = Signal()
        m.d.comb += [q.pop.eq(k_pop & k_is_color), q.color.eq(Mux(k_is_color, k_src, C))]
        # A code task: handed to the core in DECODE, in a cycle the core can take it.
        entry_of = task_rd.data
        k_word = Signal(Wavelet)
        m.d.comb += [k_word.data.eq(k_w_data), k_word.index.eq(k_w_index),
                     k_word.ctrl.eq(k_w_ctrl), k_word.color.eq(Mux(k_is_color, k_src, 0))]
        cs = self.core_start
        m.d.comb += [cs.payload.pc.eq(entry_of.pc), cs.payload.task.eq(k_task),
                     cs.payload.wavelet.eq(Mux(k_is_local, act_rd.data, k_word.as_value()))]
        k_can_pick = (k_state == _IDLE) | ((k_state == _LAUNCH) & launch.ready & entry.last)
        # A code task goes to the core only if the core could take it when it was picked:
        # one picked while the core was busy parks, and competes again (by priority) with
        # the other parked sources when the core's task ends.
        k_core_free = Signal()
        with m.If(k_can_pick):
            with m.If(k_pick_any):
                m.d.sync += [k_src.eq(k_pick), k_last_src.eq(k_pick), k_state.eq(_DECODE),
                             k_core_free.eq(self.core_start.ready)]
            with m.Else():
                m.d.sync += k_state.eq(_IDLE)
        with m.If(k_state == _DECODE):
            with m.If(k_task_bad):
                m.d.comb += k_pop.eq(1)
                m.d.sync += k_state.eq(_IDLE)
            with m.Elif(k_blocked | k_unbound | (entry_of.code & ~(cs.ready & k_core_free))):
                m.d.sync += [parked.bit_select(k_src, 1).eq(1), k_state.eq(_IDLE)]
            with m.Elif(entry_of.code):
                m.d.comb += [k_pop.eq(1), rep.tasks.eq(1), cs.valid.eq(1)]
                m.d.sync += k_state.eq(_IDLE)
                with m.If(k_is_color):
                    m.d.sync += inflight.eq(Const(1, C) << k_src[:CB])
            with m.Else():
                m.d.comb += [k_pop.eq(1), rep.tasks.eq(1)]
                m.d.sync += [k_data.eq(k_w_data), k_index.eq(k_w_index),
                             k_ptr.eq(entry_of.entry), k_state.eq(_LAUNCH)]
        m.d.comb += [rep.task_error.valid.eq((k_state == _DECODE) & k_task_bad),
                     rep.task_error.info.eq(k_task_wide[:8])]
        # The debug port's view of a start: the cycle that counts it (rep.tasks); the fields
        # are 0 in other cycles, so that the port changes only with the events it shows.
        m.d.comb += [self.started.valid.eq(rep.tasks),
                     self.started.code.eq(rep.tasks & entry_of.code),
                     self.started.task.eq(Mux(rep.tasks, k_task, 0))]
        with m.If(k_state == _LAUNCH):
            m.d.comb += launch.valid.eq(1)
            with m.If(launch.ready & ~entry.last):
                m.d.sync += k_ptr.eq(k_ptr + 1)
        with m.If(k_pop & k_is_trig):
            m.d.sync += trig_valid.eq(0)
        with m.If(self.core_done):
            m.d.sync += inflight.eq(0)
            m.d.comb += unpark.eq(1)
        with m.If(unpark):
            m.d.sync += parked.eq(0)

        # --- the core's task control: activations, block, unblock ---------------------------
        cc = self.core_ctl
        m.d.comb += cc.ready.eq(1)
        c_bit = Mux(cc.valid, Const(1, NT) << cc.payload.task[:TKB], 0)
        c_act = Mux(cc.payload.op == TaskOp.ACTIVATE, c_bit, 0)
        m.d.comb += [act_wr.addr.eq(cc.payload.task[:TKB]), act_wr.data.eq(cc.payload.arg),
                     act_wr.en.eq(cc.valid & (cc.payload.op == TaskOp.ACTIVATE))]
        popped = Mux(k_pop & k_is_local, Const(1, NT) << k_local, 0)
        with m.If(cc.valid | (k_pop & k_is_local)):
            m.d.sync += act_pending.eq((act_pending & ~popped) | c_act)
        core_block = Mux(cc.payload.op == TaskOp.BLOCK, c_bit, 0)
        core_unblock = Mux(cc.payload.op == TaskOp.UNBLOCK, c_bit, 0)
        with m.If(cc.valid & (cc.payload.op == TaskOp.UNBLOCK)):
            m.d.comb += unpark.eq(1)
        m.d.comb += [rep.active.eq(k_state != _IDLE), rep.trigger_pending.eq(trig_valid)]

        # --- the host's ports ---------------------------------------------------------------
        hb = self.bind
        wbind = data.View(ColorBind, hb.wdata)
        present = hb.index < C          # colors C .. 31 are decoded, but not there
        m.d.comb += [bind_wr.addr.eq(hb.index[:CB]), bind_wr.data.eq(hb.wdata),
                     bind_wr.en.eq(hb.we & present),
                     bind_rd_host.addr.eq(hb.index[:CB]), bind_rd_host.en.eq(hb.re),
                     hb.rdata.eq(bind_rd_host.data.as_value())]
        with m.If(hb.we):
            with m.If(present):
                m.d.sync += bound_any.bit_select(hb.index[:CB], 1).eq(
                    wbind.data_en | wbind.ctrl_en)
                m.d.sync += [c_prio[i].bit_select(hb.index[:CB], 1).eq(wbind.prio[i])
                             for i in range(2)]
            m.d.comb += unpark.eq(1)
        m.d.comb += [rep.bind_error.valid.eq(hb.we & ~present & (wbind.data_en | wbind.ctrl_en)),
                     rep.bind_error.info.eq(hb.index)]

        ht = self.task
        m.d.comb += [task_wr.addr.eq(ht.index), task_wr.data.eq(ht.wdata),
                     task_wr.en.eq(ht.we),
                     task_rd_host.addr.eq(ht.index), task_rd_host.en.eq(ht.re),
                     ht.rdata.eq(task_rd_host.data.as_value())]
        wtask = data.View(TaskEntry, ht.wdata)
        with m.If(ht.we):
            m.d.sync += [t_prio[i].bit_select(ht.index[:TKB], 1).eq(wtask.prio[i])
                         for i in range(2)]

        he = self.entry
        rd_word = Signal()
        m.d.comb += [
            entry_rd_host.addr.eq(he.index), entry_rd_host.en.eq(he.re),
            entry_wr.addr.eq(he.index), entry_wr.data.eq(Cat(he.wdata, he.wdata)),
            entry_wr.en.eq(Mux(he.we, 1 << he.word, 0)),
            he.rdata.eq(Mux(rd_word, entry_rd_host.data[32:], entry_rd_host.data[:32])),
        ]
        with m.If(he.re):
            m.d.sync += rd_word.eq(he.word)

        hc = self.ctrl
        base = region(CfgRegion.TASK_CTRL, p).base - PE_REGS_BASE

        def at(reg):
            """The TASK_CTRL item of register ``reg``."""
            return reg - base
        m.d.comb += [rep.trigger_error.valid.eq(hc.we & (hc.index == at(Reg.TRIGGER))
                                                & trig_valid),
                     rep.trigger_error.info.eq(0)]
        # BLOCKED: the host's write first, then the core's block / unblock of this cycle.
        host_blocked = Signal(NT)
        m.d.comb += host_blocked.eq(blocked)
        with m.If(hc.we):
            with m.Switch(hc.index):
                with m.Case(at(Reg.TRIGGER)):
                    with m.If(~trig_valid):
                        m.d.sync += [trig_valid.eq(1), trig.eq(hc.wdata)]
                with m.Case(at(Reg.BLOCKED)):
                    m.d.comb += [host_blocked.eq(hc.wdata[:NT]), unpark.eq(1)]
                with m.Case(at(Reg.BLOCK_SET)):
                    m.d.comb += host_blocked.eq(blocked | hc.wdata[:NT])
                with m.Case(at(Reg.BLOCK_CLR)):
                    m.d.comb += [host_blocked.eq(blocked & ~hc.wdata[:NT]), unpark.eq(1)]
        with m.If(hc.we | cc.valid):
            m.d.sync += blocked.eq((host_blocked | core_block) & ~core_unblock)
        rd_ctrl = Signal(32)
        with m.If(hc.re):
            m.d.sync += rd_ctrl.eq(Mux(hc.index == at(Reg.BLOCKED), blocked, 0))
        m.d.comb += hc.rdata.eq(rd_ctrl)
        return m
