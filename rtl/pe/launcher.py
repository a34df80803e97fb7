"""The task launcher (SPEC 4.4, first form; docs/pe.md section 5).

An activation pops the head wavelet of a bound color (or takes the host trigger), looks up
its task (``BIND``: data wavelets start ``data_task``, control wavelets ``ctrl_base +
index``), then issues the task's launch entries, one :class:`rtl.pe.regs.LaunchRequest` per
accepted cycle, with the wavelet's data as the scalar and its index as the offset. A
wavelet of a blocked task, or of a kind (data / control) its color does not bind, parks its
color until ``BLOCKED``, ``BLOCK_CLR`` or a binding is written.

State machine: IDLE (pick a source, round-robin over the colors with a bound wavelet
queued and the host trigger), DECODE (the head wavelet and its task), LAUNCH (the entries,
until the one with ``last`` is accepted; then pick again in the same cycle).
"""

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for

from rtl.pe.iface import LauncherQueueSignature, LauncherReport, LaunchStream, RegionSignature
from rtl.pe.regs import (PE_REGS_BASE, CfgRegion, ColorBind, HostTrigger, LaunchEntry, Reg,
                         TaskEntry, region)
from rtl.pe.util import round_robin, sig

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
        blocked = Signal(NT)
        parked = Signal(C + 1)
        unpark = Signal()

        # --- the launcher -------------------------------------------------------------------
        launch = self.launch
        q = self.queue
        trig_valid = Signal()
        trig = Signal(HostTrigger, reset_less=True)      # read only under trig_valid

        SRC = C + 1                  # colors, then the host trigger
        k_state = Signal(2)
        k_src = Signal(range(SRC))
        k_last_src = Signal(range(SRC))
        k_ptr = Signal(6)
        k_data = Signal(16, reset_less=True)             # read only in LAUNCH
        k_index = Signal(10, reset_less=True)
        cand = Cat(q.nonempty & bound_any, trig_valid) & ~parked
        k_pick_any, k_pick = round_robin(m, cand, k_last_src, SRC, "k_pick")
        m.d.comb += q.pick.eq(k_pick)

        # DECODE: the head wavelet of the chosen source and its task.
        k_head = q.head
        k_is_trig = k_src == C
        k_w_data = Mux(k_is_trig, trig.data, k_head.data)
        k_w_index = Mux(k_is_trig, trig.index, k_head.index)
        k_w_ctrl = Mux(k_is_trig, 0, k_head.ctrl)
        m.d.comb += bind_rd.addr.eq(k_src[:CB])
        k_bind = bind_rd.data
        # A wavelet whose kind (data / control) has no binding on its color waits parked.
        k_unbound = ~k_is_trig & Mux(k_w_ctrl, ~k_bind.ctrl_en, ~k_bind.data_en)
        k_task_wide = sig(m, Mux(k_is_trig, trig.task,
                                 Mux(k_w_ctrl, k_bind.ctrl_base + k_w_index,
                                     k_bind.data_task)), "k_task_wide", 11)
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
        m.d.comb += [q.pop.eq(k_pop & ~k_is_trig), q.color.eq(k_src)]
        k_can_pick = (k_state == _IDLE) | ((k_state == _LAUNCH) & launch.ready & entry.last)
        with m.If(k_can_pick):
            with m.If(k_pick_any):
                m.d.sync += [k_src.eq(k_pick), k_last_src.eq(k_pick), k_state.eq(_DECODE)]
            with m.Else():
                m.d.sync += k_state.eq(_IDLE)
        with m.If(k_state == _DECODE):
            with m.If(k_task_bad):
                m.d.comb += k_pop.eq(1)
                m.d.sync += k_state.eq(_IDLE)
            with m.Elif(k_blocked | k_unbound):
                m.d.sync += [parked.bit_select(k_src, 1).eq(1), k_state.eq(_IDLE)]
            with m.Else():
                m.d.comb += [k_pop.eq(1), rep.tasks.eq(1)]
                m.d.sync += [k_data.eq(k_w_data), k_index.eq(k_w_index),
                             k_ptr.eq(task_rd.data.entry), k_state.eq(_LAUNCH)]
        m.d.comb += [rep.task_error.valid.eq((k_state == _DECODE) & k_task_bad),
                     rep.task_error.info.eq(k_task_wide[:8])]
        with m.If(k_state == _LAUNCH):
            m.d.comb += launch.valid.eq(1)
            with m.If(launch.ready & ~entry.last):
                m.d.sync += k_ptr.eq(k_ptr + 1)
        with m.If(k_pop & k_is_trig):
            m.d.sync += trig_valid.eq(0)
        with m.If(unpark):
            m.d.sync += parked.eq(0)
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
            m.d.comb += unpark.eq(1)
        m.d.comb += [rep.bind_error.valid.eq(hb.we & ~present & (wbind.data_en | wbind.ctrl_en)),
                     rep.bind_error.info.eq(hb.index)]

        ht = self.task
        m.d.comb += [task_wr.addr.eq(ht.index), task_wr.data.eq(ht.wdata),
                     task_wr.en.eq(ht.we),
                     task_rd_host.addr.eq(ht.index), task_rd_host.en.eq(ht.re),
                     ht.rdata.eq(task_rd_host.data.as_value())]

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
        with m.If(hc.we):
            with m.Switch(hc.index):
                with m.Case(at(Reg.TRIGGER)):
                    with m.If(~trig_valid):
                        m.d.sync += [trig_valid.eq(1), trig.eq(hc.wdata)]
                with m.Case(at(Reg.BLOCKED)):
                    m.d.sync += blocked.eq(hc.wdata[:NT])
                    m.d.comb += unpark.eq(1)
                with m.Case(at(Reg.BLOCK_SET)):
                    m.d.sync += blocked.eq(blocked | hc.wdata[:NT])
                with m.Case(at(Reg.BLOCK_CLR)):
                    m.d.sync += blocked.eq(blocked & ~hc.wdata[:NT])
                    m.d.comb += unpark.eq(1)
        rd_ctrl = Signal(32)
        with m.If(hc.re):
            m.d.sync += rd_ctrl.eq(Mux(hc.index == at(Reg.BLOCKED), blocked, 0))
        m.d.comb += hc.rdata.eq(rd_ctrl)
        return m
