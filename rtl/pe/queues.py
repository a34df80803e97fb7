"""The per-color rx input queues of the PE (docs/pe.md, sections 2 and 5).

Every color has a queue of ``rx_depth`` wavelets. The router's RAMP output pushes into it
(``rx.ready[c]`` = color c's queue is not full, from registered state only); the tensor
engine's issue stage pops its fabric operands a and b, the task launcher pops the wavelet
that activates a task, and the control core pops wavelets of unbound colors (``recv``; it
shares the launcher's pop, which goes first). The scheduler looks up the fill level of every thread's
fabric operands each cycle.

Storage: ``rx_depth`` slot memories (one wavelet of every color each) and one memory of
(count, head) per color, written at the colors of this cycle's events (a push, the pops of a,
b and the launcher); two bit vectors (full, non-empty) give every color at once.
"""

from amaranth import Array, Const, Module, Mux, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from rtl.link import LinkSignature
from rtl.pe.iface import (QUEUE_LEVEL_BITS, LauncherQueueSignature, QueueDataSignature,
                          QueueEntry, QueueOperandSignature, QueueReport,
                          SchedulerLookupSignature)
from rtl.pe.core import RecvSignature
from rtl.pe.util import sig
from rtl.wavelet import Wavelet

__all__ = ["RxQueues"]


class RxQueues(wiring.Component):
    """The per-color input queues.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    rx : In(LinkSignature)
        From the router's RAMP output. A wavelet of a color >= num_colors is dropped and
        raises ``BAD_COLOR`` (``report.rx_error``).
    a, b : In(QueueOperandSignature)
        The engine's fabric operands (issue stage): level lookup and pop.
    a_data, b_data : Out(QueueDataSignature)
        The wavelets of ``a.color`` / ``b.color`` one cycle later (the datapath's read stage).
    sched : In(SchedulerLookupSignature)
        The scheduler's level lookups (operands a and b of every thread).
    launcher : In(LauncherQueueSignature)
        The task launcher's read and pop of a queue's head, and the non-empty colors.
    core_recv : In(RecvSignature)
        The control core's ``recv``: granted (and popped) when a wavelet of that color is
        queued and the launcher does not pop in the same cycle; ``bad`` when the color is
        bound to a task; the wavelet word in the next cycle.
    bound : In(num_colors)
        Bit c: color c is bound to a task (from the launcher).
    report : Out(QueueReport)
        Wavelets accepted, the rx error, "a wavelet is queued".
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "rx": In(LinkSignature()),
            "a": In(QueueOperandSignature(params.rx_depth)),
            "b": In(QueueOperandSignature(params.rx_depth)),
            "a_data": Out(QueueDataSignature(params.rx_depth)),
            "b_data": Out(QueueDataSignature(params.rx_depth)),
            "sched": In(SchedulerLookupSignature(params.threads)),
            "launcher": In(LauncherQueueSignature(params.num_colors)),
            "core_recv": In(RecvSignature()),
            "bound": In(params.num_colors),
            "report": Out(QueueReport()),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        C, D, T = p.num_colors, p.rx_depth, p.threads
        CB = max(1, bits_for(C - 1))          # bits of a color index into per-color tables
        HB = exact_log2(D)

        # D slot memories (one wavelet each per color), read by operands a, b and the
        # launcher.
        slot_rd = {port: [] for port in ("a", "b", "l", "c")}
        slot_wr = []
        for s in range(D):
            mem = memory.Memory(shape=QueueEntry, depth=C, init=[])
            m.submodules[f"slot{s}"] = mem
            slot_wr.append(mem.write_port())
            for port in slot_rd:
                slot_rd[port].append(mem.read_port())
        QS = data.StructLayout({"count": QUEUE_LEVEL_BITS, "head": HB})
        m.submodules.state = state = memory.Memory(shape=QS, depth=C, init=[])
        full = Signal(C)
        nonempty = Signal(C)

        def lookup(color):
            """The (count, head) of ``color``'s queue, read combinationally."""
            rp = state.read_port(domain="comb")
            m.d.comb += rp.addr.eq(color[:CB])
            return rp.data

        def entries(port, head):
            """The D queued wavelets read by ``port``, oldest first."""
            datas = [rp.data for rp in slot_rd[port]]
            return [Array(datas)[(head + j)[:HB]] for j in range(D)]

        rx = self.rx
        rx_color = rx.payload.color
        cidx = rx_color[:CB]
        rx_take = sig(m, rx.valid & (rx_color < C) & ~full.bit_select(cidx, 1), "rx_take", 1)
        m.d.comb += [
            rx.ready.eq(~full),
            self.report.rx_error.valid.eq(rx.valid & (rx_color >= C)),
            self.report.rx_error.info.eq(rx_color),
            self.report.wavelets_in.eq(rx_take),
            self.report.pending.eq(nonempty.any()),
        ]

        # The core's recv: a pop of one wavelet through the launcher's event, when the
        # launcher does not pop.
        a, b, ln, cr = self.a, self.b, self.launcher, self.core_recv
        c_color = cr.color[:CB]
        c_bound = self.bound.bit_select(c_color, 1)
        c_pop = sig(m, cr.en & ~ln.pop & nonempty.bit_select(c_color, 1) & ~c_bound,
                    "core_pop", 1)
        m.d.comb += [cr.grant.eq(c_pop), cr.bad.eq(cr.en & c_bound)]
        l_pop = ln.pop | c_pop
        l_color = Mux(ln.pop, ln.color, cr.color)

        # This cycle's events: a push from rx, the pops of a, b and the launcher (or core).
        events = [(rx_take, rx_color, 1, 0), (a.pop != 0, a.color, a.pop, a.pop),
                  (b.pop != 0, b.color, b.pop, b.pop), (l_pop, l_color, l_pop, l_pop)]
        full_next, nonempty_next = full, nonempty
        rx_slot = None
        for e, (valid, color, _, _) in enumerate(events):
            st = lookup(color)
            if e == 0:
                rx_slot = sig(m, (st.head + st.count)[:HB], "rx_slot", range(D))
            inc = sum(Mux(v & (c == color), 1, 0) for v, c, _, _ in events[:1])
            dec = sum(Mux(v & (c == color), n, 0) for v, c, n, _ in events[1:])
            hd = sum(Mux(v & (c == color), h, 0) for v, c, _, h in events[1:])
            new_count = sig(m, st.count + inc - dec, f"ev{e}_count", QUEUE_LEVEL_BITS)
            wp = state.write_port()
            m.d.comb += [wp.addr.eq(color[:CB]), wp.en.eq(valid),
                         wp.data.count.eq(new_count), wp.data.head.eq(st.head + hd)]
            bit = Const(1, C) << color[:CB]
            full_next = Mux(valid, (full_next & ~bit) | Mux(new_count == D, bit, 0), full_next)
            nonempty_next = Mux(valid, (nonempty_next & ~bit) | Mux(new_count != 0, bit, 0),
                                nonempty_next)
        m.d.sync += [full.eq(full_next), nonempty.eq(nonempty_next)]
        for s in range(D):
            m.d.comb += [
                slot_wr[s].addr.eq(cidx),
                slot_wr[s].data.data.eq(rx.payload.data),
                slot_wr[s].data.index.eq(rx.payload.index),
                slot_wr[s].data.ctrl.eq(rx.payload.ctrl),
                slot_wr[s].en.eq(rx_take & (rx_slot == s)),
            ]

        # The engine's operands: level now, the wavelets (oldest first) in the next cycle.
        for name, port, out in (("a", a, self.a_data), ("b", b, self.b_data)):
            st = lookup(port.color)
            head = Signal(HB, name=f"{name}_head", reset_less=True)   # read under its kind
            m.d.comb += port.level.eq(st.count)
            m.d.sync += head.eq(st.head)
            for rp in slot_rd[name]:
                m.d.comb += rp.addr.eq(port.color)
            for j, entry in enumerate(entries(name, head)):
                m.d.comb += out.entries[j].eq(entry)

        # The scheduler's level lookups.
        sc = self.sched
        for t in range(T):
            m.d.comb += [sc.a_level[t].eq(lookup(sc.a_color[t]).count),
                         sc.b_level[t].eq(lookup(sc.b_color[t]).count)]

        # The launcher: read at the picked color, the head of the color it decodes.
        for rp in slot_rd["l"]:
            m.d.comb += rp.addr.eq(ln.pick)
        m.d.comb += [ln.head.eq(entries("l", lookup(ln.color).head)[0]),
                     ln.nonempty.eq(nonempty)]

        # The core: read at its color; the popped wavelet (the head at the pop) next cycle.
        c_head = Signal(HB, reset_less=True)                # read only after a pop
        c_was = Signal(len(cr.color), reset_less=True)
        for rp in slot_rd["c"]:
            m.d.comb += rp.addr.eq(c_color)
        with m.If(c_pop):
            m.d.sync += [c_head.eq(lookup(cr.color).head), c_was.eq(cr.color)]
        got = Signal(QueueEntry)
        m.d.comb += got.eq(entries("c", c_head)[0])
        word = Signal(Wavelet)
        m.d.comb += [word.data.eq(got.data), word.index.eq(got.index), word.ctrl.eq(got.ctrl),
                     word.color.eq(c_was), cr.rdata.eq(word)]
        return m
