"""Bench top around a :class:`rtl.mesh.RouterMesh`: sinks with hardware back-pressure and
optional hardware traffic generators, so that Python does little work per cycle.

Every mesh link end (``rtl.mesh.mesh_endpoints``: the edges, then the RAMPs) gets index k:

* ``src[k]``: the input link into the mesh, driven by the Python drivers, or, when
  ``gen_en[k]`` is set, by a generator that offers a random wavelet of a random color in
  0..``gen_colors``-1 every cycle (1 <= gen_colors <= 24; sent when that color is ready,
  otherwise another is drawn the next cycle: a full random load). The color is
  ``(r * gen_colors) >> 16`` of 16 random bits ``r``: every color is equally likely to
  within 1 part in 2,700 (:func:`generator_color`).
* ``snk_valid[k]`` / ``snk_data[k]``: the mesh output link, for the Python monitors. Its
  per-color stop bits come from a register (the sink's registered state, as the link
  protocol requires): ``ready = random(snk_mode[k]) & ~snk_stall[k]``, where mode 0 is
  always ready and modes 1, 2, 3 are ready with probability about 3/4, 1/2, 1/4 per color
  and cycle (xorshift generators seeded from ``seed`` during reset).
* ``proto_err``: sticky; a mesh output raised ``valid`` for a color that was stopped.
* ``delivered``: wavelets taken by all sinks since reset (for throughput benchmarks).
* ``cfg``: the mesh configuration port.

Python writes inputs on the falling clock edge and reads outputs there: the outputs then
depend only on registered state, so what it reads is what transfers at the next rising edge.
"""

from pathlib import Path

from amaranth import Const, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from rtl.link import CfgSignature, LinkSignature
from rtl.mesh import RouterMesh, mesh_cfg_addr_bits, mesh_endpoints, mesh_verilog
from rtl.wavelet import NUM_COLORS

__all__ = ["MeshBench", "bench_verilog", "build_bench", "generator_color", "BENCH_TOP",
           "VERILATOR_ARGS"]

BENCH_TOP = "mesh_bench"

#: Hierarchical verilation of the router (tb/router.vlt): Verilator otherwise emits the
#: router's code once per instance, so build time and simulation speed would degrade with
#: the mesh size. With it the router is compiled once and every instance shares it.
VERILATOR_ARGS = ("--hierarchical", str(Path(__file__).resolve().with_name("router.vlt")))


def _xorshift32(x):
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    x = x ^ (x << 5)[:32]
    return x


class MeshBench(wiring.Component):
    """The bench top: a router mesh plus sinks, back-pressure and generators."""

    def __init__(self, width, height, *, num_colors=NUM_COLORS, fifo_depth=2):
        self.mesh = RouterMesh(width, height, num_colors=num_colors, fifo_depth=fifo_depth)
        self.endpoints = mesh_endpoints(width, height)
        n = len(self.endpoints)
        super().__init__({
            "src": In(LinkSignature()).array(n),
            "snk_valid": Out(n),
            "snk_data": Out(32).array(n),
            "snk_mode": In(2 * n),
            "snk_stall": In(NUM_COLORS).array(n),
            "gen_en": In(n),
            "gen_colors": In(6),
            "seed": In(32),
            "proto_err": Out(1),
            "delivered": Out(32),
            "cfg": In(CfgSignature(mesh_cfg_addr_bits(width, height))),
        })

    @property
    def router_params(self):
        return self.mesh.router_params

    def elaborate(self, platform):
        m = Module()
        m.submodules.mesh = mesh = self.mesh
        connect(m, flipped(self.cfg), mesh.cfg)
        taken = []
        for k, (x, y, port) in enumerate(self.endpoints):
            # Source: Python driver or generator.
            src, into = self.src[k], mesh.endpoint_in(x, y, port)
            gen = Signal(32, name=f"gen_{k}", reset_less=True)
            gen_color = Signal(5, name=f"gen_color_{k}")
            m.d.comb += gen_color.eq((gen[16:32] * self.gen_colors)[16:21])
            gen_valid = self.gen_en[k] & (gen_color < self.gen_colors) & \
                into.ready.bit_select(gen_color, 1)
            with m.If(ResetSignal()):
                m.d.sync += gen.eq(self.seed ^ ((0x9E3779B9 * (k + 1)) & 0xFFFFFFFF) | 1)
            with m.Else():
                m.d.sync += gen.eq(_xorshift32(gen))
            with m.If(self.gen_en[k]):
                m.d.comb += [into.valid.eq(gen_valid), into.payload.color.eq(gen_color),
                             into.payload.data.eq(gen[5:21]), into.payload.index.eq(k)]
            with m.Else():
                m.d.comb += [into.valid.eq(src.valid), into.payload.eq(src.payload)]
            m.d.comb += src.ready.eq(into.ready)

            # Sink: registered random per-color stop bits.
            out = mesh.endpoint_out(x, y, port)
            rnd = Signal(32, name=f"bp_{k}", reset_less=True)
            with m.If(ResetSignal()):
                m.d.sync += rnd.eq(~self.seed ^ ((0x85EBCA6B * (k + 1)) & 0xFFFFFFFF) | 1)
            with m.Else():
                m.d.sync += rnd.eq(_xorshift32(rnd))
            lo, hi = rnd[:NUM_COLORS], rnd[32 - NUM_COLORS:]
            mode = self.snk_mode[2 * k:2 * k + 2]
            level = Mux(mode == 0, Const(-1, NUM_COLORS),
                        Mux(mode == 1, lo | hi, Mux(mode == 2, lo, lo & hi)))
            ready = Signal(NUM_COLORS, name=f"snk_ready_{k}", init=-1)
            m.d.sync += ready.eq(level & ~self.snk_stall[k])
            m.d.comb += [out.ready.eq(ready), self.snk_valid[k].eq(out.valid),
                         self.snk_data[k].eq(out.payload)]
            color = out.payload.color
            with m.If(out.valid & (color < NUM_COLORS) & ~ready.bit_select(color, 1)):
                m.d.sync += self.proto_err.eq(1)
            taken.append(out.valid)
        n = len(taken)
        m.d.sync += self.delivered.eq(self.delivered + sum(taken[k] for k in range(n)))
        return m


def generator_color(r, gen_colors):
    """The color a generator draws from its 16 random bits ``r`` (the hardware's formula):
    each of 0..gen_colors-1 comes from ``65536 // gen_colors`` or one more values of r."""
    return (r * gen_colors) >> 16


def bench_verilog(width, height, *, num_colors=NUM_COLORS, fifo_depth=2):
    """Verilog of the bench top (module :data:`BENCH_TOP`) with the router module."""
    bench = MeshBench(width, height, num_colors=num_colors, fifo_depth=fifo_depth)
    return mesh_verilog(bench, name=BENCH_TOP)


def build_bench(width, height, *, num_colors=NUM_COLORS, fifo_depth=2):
    """Build (or reuse from the cache) the Verilator model of the W x H bench top."""
    from runtime import sim
    return sim.build(BENCH_TOP, bench_verilog(width, height, num_colors=num_colors,
                                              fifo_depth=fifo_depth),
                     extra_args=VERILATOR_ARGS)
