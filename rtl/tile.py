"""The tile: one router plus one PE, and its stage of the row configuration chain (SPEC 5).

::

                 in_n/out_n
                     |
    in_w/out_w -- router -- in_e/out_e          chain_in --> [stage 1] --> [stage 2] --> chain_out
                     | RAMP                                     | cfg (TileRegion decode)
                     PE  (rx <- router out_ramp, tx -> router in_ramp)

The tile is converted to Verilog once, as module :data:`TILE_MODULE` (its Verilog holds one
router and one PE module); the fabric top (:mod:`rtl.fabric`) places it by name.

Configuration chain
-------------------
Every row of the fabric has one configuration chain that enters at the west edge and runs
east through the row's tiles. A :class:`ChainPacket` moves one tile per two cycles. A tile
acts on a packet whose ``x`` is its own column (``tile_x``, a constant from the top) or
:data:`BROADCAST_X` (writes only): a WRITE goes to the tile's configuration space
(:class:`rtl.link.TileRegion`), a READ is answered one cycle later and its data replaces the
packet's ``data`` (``filled`` set) on its way east, so read answers leave the east end of the
row in the order the reads were issued, with a fixed latency. All rows load in parallel, one
word per cycle each: loading costs O(words / rows) cycles.

Address decoding (:class:`rtl.link.TileRegion`): ``PE_SRAM + a`` -> PE address ``a`` for
``a < PE_REGS_BASE``; ``ROUTER + r`` -> router register ``r`` (``r`` < 2**ROUTER_ADDR_BITS);
``PE_REGS + o`` -> PE address ``PE_REGS_BASE + o``. Other addresses ignore writes and read 0.
"""

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out, connect, flipped

from rtl.link import CFG_ADDR_BITS, LinkSignature, TileRegion, link_accepts
from rtl.pe.iface import PEDebug
from rtl.pe.pe import PE
from rtl.pe.regs import PE_REGS_BASE
from rtl.router import ROUTER_ADDR_BITS, Port, Router, link_name

__all__ = ["Tile", "ChainOp", "ChainPacket", "TILE_MODULE", "TILE_X_BITS", "BROADCAST_X",
           "MAX_COLUMNS", "STAGE_LATENCY", "tile_signature", "tile_verilog",
           "pe_tile_addr", "router_tile_addr"]

#: Verilog module name of the tile, converted once per design.
TILE_MODULE = "tile"
#: Width of the column address of a configuration packet.
TILE_X_BITS = 8
#: Column address that every tile of the row accepts (writes only).
BROADCAST_X = (1 << TILE_X_BITS) - 1
#: Most columns a fabric can have (the broadcast address is reserved).
MAX_COLUMNS = BROADCAST_X
#: Cycles a configuration packet spends in each tile.
STAGE_LATENCY = 2

#: The edge links of the router that the tile exports (RAMP stays inside).
EDGE_PORTS = (Port.N, Port.E, Port.S, Port.W)


class ChainOp(enum.Enum, shape=2):
    """What a configuration packet does at the tile it addresses."""
    NONE = 0    #: an empty slot
    WRITE = 1   #: write ``data`` to ``addr``
    READ = 2    #: read ``addr``; the answer replaces ``data`` (``filled`` = 1)


class ChainPacket(data.Struct):
    """One slot of a row's configuration chain (one per cycle per row)."""
    data: 32
    addr: CFG_ADDR_BITS
    x: TILE_X_BITS
    op: ChainOp
    filled: 1


def tile_signature():
    """The tile's signature (the same for every router and PE parameter set), which the
    fabric top needs to place ``tile`` instances without building a tile."""
    members = {}
    for port in EDGE_PORTS:
        members[link_name("in", port)] = In(LinkSignature())
    for port in EDGE_PORTS:
        members[link_name("out", port)] = Out(LinkSignature())
    members.update({
        "chain_in": In(ChainPacket),
        "chain_out": Out(ChainPacket),
        "tile_x": In(TILE_X_BITS),
        "pe_busy": Out(1),
        "pe_error": Out(1),
        "ramp_active": Out(1),
        "pe_dbg": Out(PEDebug),
    })
    return wiring.Signature(members)


class Tile(wiring.Component):
    """Router + PE with the RAMP between them, and a configuration-chain stage.

    Parameters
    ----------
    router : dict
        Keyword arguments of :class:`rtl.router.Router`.
    pe : dict
        Keyword arguments of :class:`rtl.pe.pe.PE`.

    Members
    -------
    in_n, in_e, in_s, in_w : ``In(LinkSignature())``
        Links from the neighbours (or the fabric edge) into the router.
    out_n, out_e, out_s, out_w : ``Out(LinkSignature())``
        Links from the router to the neighbours (or off the fabric).
    chain_in, chain_out : :class:`ChainPacket`
        The row's configuration chain, from the west neighbour (or the fabric's row
        sequencer) and to the east neighbour (or the row's readback capture).
    tile_x : ``In(TILE_X_BITS)``
        This tile's column, a constant wired by the fabric top.
    pe_busy, pe_error : ``Out(1)``
        The PE's ``busy`` and sticky ``error`` outputs.
    ramp_active : ``Out(1)``
        A wavelet crossed the RAMP (either direction) this cycle: the fabric's progress signal.
    pe_dbg : ``Out(PEDebug)``
        The PE's debug port (:class:`rtl.pe.iface.PEDebug`, registered in the PE), for
        timelines; the fabric top leaves it unconnected, the simulation's tile model records
        it (``runtime/tile_model.py``).
    """

    def __init__(self, *, router=None, pe=None):
        self._router_args = dict(router or {})
        self._pe_args = dict(pe or {})
        # Built here so that bad parameters raise at construction.
        self._router = Router(**self._router_args)
        self._pe = PE(**self._pe_args)
        super().__init__(tile_signature())

    @property
    def router_args(self):
        return dict(self._router_args)

    @property
    def pe_args(self):
        return dict(self._pe_args)

    def elaborate(self, platform):
        m = Module()
        # Everything in the tile runs in a local domain whose reset is the tile's reset
        # input registered once. Each tile then has no logic that depends combinationally
        # on its reset or on its configuration inputs: only the router's link logic sees
        # the tile's inputs, so a simulator that evaluates a tile's input-driven logic
        # several times per cycle (Verilator's hierarchical blocks do) touches little.
        m.domains.tile = tile_cd = ClockDomain("tile", local=True)
        rst_q = Signal(reset_less=True)
        m.d.sync += rst_q.eq(ResetSignal())
        m.d.comb += [tile_cd.clk.eq(ClockSignal()), tile_cd.rst.eq(rst_q)]
        router, pe = self._router, self._pe
        m.submodules.router = DomainRenamer("tile")(router)
        m.submodules.pe = DomainRenamer("tile")(pe)

        # --- links: edges to the ports, RAMP between router and PE -------------------------
        for port in EDGE_PORTS:
            connect(m, flipped(getattr(self, link_name("in", port))), router.link_in(port))
            connect(m, router.link_out(port), flipped(getattr(self, link_name("out", port))))
        connect(m, router.out_ramp, pe.rx)
        connect(m, pe.tx, router.in_ramp)
        m.d.comb += [
            self.pe_busy.eq(pe.busy),
            self.pe_error.eq(pe.error),
            self.pe_dbg.eq(pe.dbg),
            self.ramp_active.eq(link_accepts(router.out_ramp) | link_accepts(pe.tx)),
        ]

        # --- configuration chain ----------------------------------------------------------
        # Stage 0 registers the arriving packet and whether it addresses this tile; the
        # blocks' configuration ports are driven from it. Stage 1 holds the packet while the
        # addressed block answers (one cycle after the read); the answer is merged on the
        # way out (from registers only).
        pkt = self.chain_in
        s0 = Signal(ChainPacket)
        s0_mine = Signal()        # this column or broadcast
        s0_exact = Signal()       # this column (reads)
        m.d.tile += [
            s0.eq(pkt),
            s0_mine.eq((pkt.x == self.tile_x) | (pkt.x == BROADCAST_X)),
            s0_exact.eq(pkt.x == self.tile_x),
        ]
        addr = s0.addr
        region = addr[18:CFG_ADDR_BITS]
        offset = addr[:18]
        write = (s0.op == ChainOp.WRITE) & s0_mine
        read = (s0.op == ChainOp.READ) & s0_exact
        pe_sram = (region == TileRegion.PE_SRAM >> 18) & (offset < PE_REGS_BASE)
        pe_regs = (region == TileRegion.PE_REGS >> 18) & (offset < PE_REGS_BASE)
        to_router = (region == TileRegion.ROUTER >> 18) & (offset < (1 << ROUTER_ADDR_BITS))
        m.d.comb += [
            router.cfg.addr.eq(offset[:ROUTER_ADDR_BITS]),
            router.cfg.wdata.eq(s0.data),
            router.cfg.we.eq(write & to_router),
            router.cfg.re.eq(read & to_router),
            pe.cfg.addr.eq(Mux(pe_regs, PE_REGS_BASE | offset, offset)),
            pe.cfg.wdata.eq(s0.data),
            pe.cfg.we.eq(write & (pe_sram | pe_regs)),
            pe.cfg.re.eq(read & (pe_sram | pe_regs)),
        ]
        s1 = Signal(ChainPacket)
        s1_read = Signal()
        s1_from = Signal(2)   # 0 nothing mapped, 1 router, 2 PE
        m.d.tile += [
            s1.eq(s0),
            s1_read.eq(read),
            s1_from.eq(Mux(to_router, 1, Mux(pe_sram | pe_regs, 2, 0))),
        ]
        answer = Mux(s1_from == 1, router.cfg.rdata, Mux(s1_from == 2, pe.cfg.rdata, 0))
        m.d.comb += self.chain_out.eq(s1)
        with m.If(s1_read):
            m.d.comb += [self.chain_out.data.eq(answer), self.chain_out.filled.eq(1)]
        return m


def pe_tile_addr(pe_addr):
    """Tile configuration address of PE configuration address ``pe_addr`` (SRAM word or
    register, as :mod:`rtl.pe.regs` gives them)."""
    pe_addr = int(pe_addr)
    if not 0 <= pe_addr < 2 * PE_REGS_BASE:
        raise ValueError(f"PE address {pe_addr:#x} is outside the PE's configuration space")
    if pe_addr >= PE_REGS_BASE:
        return TileRegion.PE_REGS + (pe_addr - PE_REGS_BASE)
    return TileRegion.PE_SRAM + pe_addr


def router_tile_addr(reg):
    """Tile configuration address of router register ``reg`` (:mod:`rtl.router`)."""
    reg = int(reg)
    if not 0 <= reg < (1 << ROUTER_ADDR_BITS):
        raise ValueError(f"router register address {reg:#x} does not fit in "
                         f"{ROUTER_ADDR_BITS} bits")
    return TileRegion.ROUTER + reg


def tile_verilog(tile=None):
    """Verilog of the tile, module :data:`TILE_MODULE` (one router and one PE module)."""
    from rtl.export import to_verilog
    return to_verilog(tile or Tile(), TILE_MODULE)
