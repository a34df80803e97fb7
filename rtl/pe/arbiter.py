"""The arbiter in front of the tensor engine's launch stream (docs/pe.md section 6).

Two producers start tensor operations: the task launcher (the host-configured launch lists,
the fast path of the per-weight AXPY) and the control core (its tensor-launch
instructions). Both present a :class:`rtl.pe.regs.LaunchRequest` stream; the engine sees
one. Policy (a design choice): the core wins when both are valid. The core stalls in its
pipeline while its launch waits, and a launch-list task issues one entry per accepted cycle,
so the core's launch costs the task one cycle and the task cannot hold the core off; the
task launcher keeps its request valid and is served in the next cycle the core leaves free.
Combinational, no state: with the core input idle the engine sees the launcher's stream
unchanged, cycle for cycle.
"""

from amaranth import Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.pe.iface import LaunchStream

__all__ = ["LaunchArbiter"]


class LaunchArbiter(wiring.Component):
    """Merges the core's and the task launcher's launch streams, core first.

    Attributes
    ----------
    core : In(LaunchStream)
        From the control core (``payload.core`` set by the core).
    task : In(LaunchStream)
        From the task launcher.
    out : Out(LaunchStream)
        To the tensor engine.
    """

    def __init__(self):
        super().__init__({
            "core": In(LaunchStream),
            "task": In(LaunchStream),
            "out": Out(LaunchStream),
        })

    def elaborate(self, platform):
        m = Module()
        core, task, out = self.core, self.task, self.out
        m.d.comb += [
            out.valid.eq(core.valid | task.valid),
            out.payload.eq(Mux(core.valid, core.payload, task.payload)),
            core.ready.eq(out.ready),
            task.ready.eq(out.ready & ~core.valid),
        ]
        return m
