"""The 5-port fabric router (SPEC section 3) and its configuration register map.

Ports, directions and the register map are defined here once: :class:`Port` (N, E, S, W,
RAMP, also the bit order of a transmit mask), :class:`RouterReg` with :func:`route_addr`
and :func:`counter_addr` (the configuration address map), :class:`RouterErrorStatus` and
:class:`RouterInfo` (register layouts). The golden routing model, the benches and the
mapper import them from here.

Microarchitecture (see ``docs/router.md``)
------------------------------------------
* Per input port and color a FIFO of ``fifo_depth`` wavelets (default 2). The input link's
  per-color stop bit is ``ready[c] = FIFO c not full``, from registered state only. A
  wavelet entering at cycle t is in its FIFO at t+1 and may leave the router that cycle.
* Every output port arbitrates round-robin among the ``5 x num_colors`` (input, color) FIFO
  heads that still need that output and whose color is ready downstream. The output link is
  driven combinationally from the FIFO heads, the route table and the downstream stop bits
  (all registered state), so one hop costs one cycle and no combinational path crosses a
  link.
* A multicast head keeps a mask of the branches that already took it; it leaves its FIFO
  in the cycle its last branch takes it. Branches may take it in different cycles, so a
  stalled branch delays only this (input, color) flow.
* A wavelet with an invalid color (>= ``num_colors``) or an empty route is accepted, not
  queued, and counted in the sticky error registers.
"""

import enum
from amaranth import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from rtl.link import CfgSignature, LinkSignature
from rtl.wavelet import COLOR_BITS, FIELDS, NUM_COLORS

__all__ = [
    "Port", "NUM_PORTS", "port_mask", "mask_ports", "link_name",
    "RouterReg", "ROUTER_ADDR_BITS", "ROUTE_PORT_STRIDE", "route_addr", "counter_addr",
    "RouterErrorStatus", "RouterInfo", "Router", "router_signature",
]


class Port(enum.IntEnum):
    """The five router ports; the value is also the port's bit in a transmit mask.

    Mesh coordinates: x grows east, y grows south, tile (0, 0) is the north-west corner.
    """
    N = 0
    E = 1
    S = 2
    W = 3
    RAMP = 4

    @property
    def opposite(self):
        """The port of the neighbour that faces this one (RAMP faces itself)."""
        return {Port.N: Port.S, Port.S: Port.N, Port.E: Port.W, Port.W: Port.E,
                Port.RAMP: Port.RAMP}[self]

    @property
    def delta(self):
        """``(dx, dy)`` from a tile to the neighbour behind this port."""
        return {Port.N: (0, -1), Port.E: (1, 0), Port.S: (0, 1), Port.W: (-1, 0),
                Port.RAMP: (0, 0)}[self]


NUM_PORTS = len(Port)


def port_mask(*ports):
    """Transmit mask (``int``) naming ``ports``: ``port_mask(Port.S, Port.RAMP)``."""
    mask = 0
    for port in ports:
        mask |= 1 << Port(port)
    return mask


def mask_ports(mask):
    """The ports named by a transmit mask, in :class:`Port` order."""
    if not 0 <= mask < (1 << NUM_PORTS):
        raise ValueError(f"transmit mask {mask:#x} does not fit in {NUM_PORTS} bits")
    return tuple(p for p in Port if mask >> p & 1)


def link_name(direction, port):
    """Name of a router link member: ``link_name("in", Port.RAMP) == "in_ramp"``."""
    if direction not in ("in", "out"):
        raise ValueError(f"link direction must be 'in' or 'out', not {direction!r}")
    return f"{direction}_{Port(port).name.lower()}"


# --- configuration register map ---------------------------------------------------------

#: Word address width of a router's configuration port.
ROUTER_ADDR_BITS = 9
#: Route-table words per input port (one per color id of the 5-bit color field).
ROUTE_PORT_STRIDE = 1 << COLOR_BITS


class RouterReg(enum.IntEnum):
    """Word addresses of a router's configuration registers (router-relative).

    ``ROUTE``: ``route_addr(port, color)``, the 5-bit transmit mask of (input port, color),
    read/write, reset 0 (empty route). Colors >= ``num_colors`` read 0 and ignore writes.
    ``ERR_STATUS``: a :class:`RouterErrorStatus` (sticky bit and the first error's cause);
    a write clears it. ``ERR_COUNT``: wavelets dropped as bad traffic; a write clears it.
    ``INFO``: read-only :class:`RouterInfo`. ``CYCLES``: cycles since reset or last write
    (a write clears it). ``FORWARDED + port``: wavelets sent on output ``port``.
    ``BLOCKED + port``: cycles in which output ``port`` had a wavelet to send but every such
    wavelet's color was stopped downstream. ``RECEIVED + port``: wavelets accepted on input
    ``port`` (including dropped bad traffic). Counters are 32 bits, wrap, and a write to
    one clears it. ``QUEUED + port``: read-only bitmap of the colors holding wavelets in
    input ``port``'s FIFOs (where traffic is stuck). Unmapped addresses read 0.
    """
    ROUTE = 0x000
    ERR_STATUS = 0x100
    ERR_COUNT = 0x101
    INFO = 0x102
    CYCLES = 0x103
    FORWARDED = 0x110
    BLOCKED = 0x118
    RECEIVED = 0x120
    QUEUED = 0x128


_PER_PORT = (RouterReg.FORWARDED, RouterReg.BLOCKED, RouterReg.RECEIVED, RouterReg.QUEUED)


def route_addr(port, color):
    """Address of the route-table word of (input ``port``, ``color``)."""
    port = Port(port)
    if not 0 <= color < ROUTE_PORT_STRIDE:
        raise ValueError(f"color {color} is outside the {COLOR_BITS}-bit color field")
    return RouterReg.ROUTE + port * ROUTE_PORT_STRIDE + color


def counter_addr(reg, port):
    """Address of a per-port register: ``counter_addr(RouterReg.FORWARDED, Port.E)``."""
    reg = RouterReg(reg)
    if reg not in _PER_PORT:
        raise ValueError(f"{reg.name} is not a per-port register")
    return reg + Port(port)


class RouterErrorStatus(data.Struct):
    """``ERR_STATUS``: sticky error bit and the cause of the first error since cleared.

    ``port``: the input port the bad wavelet arrived on (lowest port if several at once);
    ``color``: its color field; ``invalid_color``: 1 if the color was >= ``num_colors``,
    0 if the (port, color) route was empty.
    """
    error: 1
    port: 3
    color: COLOR_BITS
    invalid_color: 1


class RouterInfo(data.Struct):
    """``INFO``: the router's build parameters, so the host can check what it talks to."""
    num_colors: 8
    fifo_depth: 8
    num_ports: 8
    version: 8


ROUTER_VERSION = 1

#: The part of a wavelet a color FIFO stores (the color is implied by the FIFO).
_Body = data.StructLayout({name: unsigned(FIELDS[name][1])
                           for name in ("data", "index", "ctrl")})


def _or_reduce(values, width=1):
    values = list(values)
    if not values:
        return Const(0, width)
    while len(values) > 1:  # balanced tree: shallow expressions
        values = [values[i] | values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


_DE_BRUIJN = 0x077CB531
#: log2 of a one-hot word, indexed by bits 31..27 of (word * _DE_BRUIJN) mod 2**32.
_DE_BRUIJN_TABLE = {((1 << i) * _DE_BRUIJN >> 27) & 31: i for i in range(32)}


def _onehot_index(m, rom, onehot, name):
    """Index of the set bit of a one-hot value of up to 32 bits (0 when none is set).

    A de Bruijn multiply and a table lookup (``rom``, a read port per use): two word
    operations in simulation, where an encoder or a case chain costs one per bit.
    """
    assert onehot.shape().width <= 32
    product = Signal(32, name=f"{name}_db")
    lookup = rom.read_port(domain="comb")
    m.d.comb += [product.eq(onehot * _DE_BRUIJN), lookup.addr.eq(product[27:32])]
    return lookup.data


def _increment(m, bits, enable):
    """Bit-sliced counters: add ``enable`` (one bit per color) to the counters whose bit b
    over the colors is ``bits[b]``; they wrap at ``2 ** len(bits)``."""
    carry = enable
    for b in bits:
        m.d.sync += b.eq(b ^ carry)
        carry = carry & b


def _check_params(num_colors, fifo_depth):
    if not isinstance(num_colors, int) or not 1 <= num_colors <= NUM_COLORS:
        raise ValueError(f"num_colors must be an int in 1..{NUM_COLORS}, not {num_colors!r}")
    if fifo_depth not in (1, 2, 4, 8):
        raise ValueError(f"fifo_depth must be 1, 2, 4 or 8, not {fifo_depth!r}")


def router_signature():
    """The router's signature (independent of its parameters): the five input links, the
    five output links (:func:`link_name`) and the configuration port ``cfg``."""
    members = {}
    for port in Port:
        members[link_name("in", port)] = In(LinkSignature())
    for port in Port:
        members[link_name("out", port)] = Out(LinkSignature())
    members["cfg"] = In(CfgSignature(ROUTER_ADDR_BITS))
    return wiring.Signature(members)


class Router(wiring.Component):
    """Five-port wavelet router with per-color static routes and per-color flow control.

    Parameters
    ----------
    num_colors : int
        Routable colors 0..num_colors-1 (1..24, default :data:`rtl.wavelet.NUM_COLORS`).
        Higher colors are invalid: accepted, dropped and counted.
    fifo_depth : int
        Wavelets buffered per (input port, color). 2 (default) sustains one wavelet per
        cycle per flow with registered stop bits; 1 halves a single flow's rate.

    Members
    -------
    in_n, in_e, in_s, in_w, in_ramp : ``In(LinkSignature())``
        Input links (see :func:`link_name`).
    out_n, out_e, out_s, out_w, out_ramp : ``Out(LinkSignature())``
        Output links.
    cfg : ``In(CfgSignature(ROUTER_ADDR_BITS))``
        Configuration port, register map :class:`RouterReg`.
    """

    def __new__(cls, num_colors=NUM_COLORS, fifo_depth=2, **kwargs):
        # Checked before the object exists, so a refused router is not "created but never
        # used" in Amaranth's eyes.
        _check_params(num_colors, fifo_depth)
        return super().__new__(cls, **kwargs)

    def __init__(self, num_colors=NUM_COLORS, fifo_depth=2):
        self._num_colors = num_colors
        self._fifo_depth = fifo_depth
        super().__init__(router_signature())

    @property
    def num_colors(self):
        return self._num_colors

    @property
    def fifo_depth(self):
        return self._fifo_depth

    def link_in(self, port):
        """The input link of ``port``."""
        return getattr(self, link_name("in", port))

    def link_out(self, port):
        """The output link of ``port``."""
        return getattr(self, link_name("out", port))

    def elaborate(self, platform):
        m = Module()
        C, D, P = self._num_colors, self._fifo_depth, NUM_PORTS
        K = P * C  # (input, color) requesters per output; index k = input * C + color
        ports = list(Port)
        ones = Const((1 << C) - 1, C)

        # The state is kept as C-bit vectors over the colors, so that the logic is word
        # operations (fast to simulate) rather than per-color bit shuffling.
        # Route table, transposed: route[p][o] bit c = output o in the mask of (p, c).
        route = [[Signal(C, name=f"route_{p.name}_to_{o.name}") for o in ports]
                 for p in ports]
        # Branches that already took the head of (p, c): served[p][o] bit c.
        served = [[Signal(C, name=f"served_{p.name}_to_{o.name}") for o in ports]
                  for p in ports]
        # FIFO occupancy, thermometer code: occ[p][j] bit c = (p, c) holds more than j
        # wavelets. occ[p][0]: a head is present; occ[p][D-1]: full.
        occ = [[Signal(C, name=f"occ_{p.name}_{j}") for j in range(D)] for p in ports]
        # FIFO pointers, bit-sliced over the colors: rd[p][b] bit c = bit b of the read
        # pointer of (p, c) (same for wr). D is a power of two; the pointers wrap.
        PB = D.bit_length() - 1
        rd = [[Signal(C, name=f"rd_{p.name}_{b}") for b in range(PB)] for p in ports]
        wr = [[Signal(C, name=f"wr_{p.name}_{b}") for b in range(PB)] for p in ports]
        # Wavelet storage: one memory, word ((p * C + c) << PB) | slot; a write port per
        # input (one arrival per cycle) and a read port per output (its granted head).
        m.submodules.store = store = Memory(shape=_Body, depth=K * D, init=[])

        routed = [Signal(C, name=f"routed_{p.name}") for p in ports]   # mask != 0
        enq = [Signal(C, name=f"enq_{p.name}") for p in ports]
        deq = [Signal(C, name=f"deq_{p.name}") for p in ports]
        in_xfer = Signal(P)          # a wavelet transferred on the input link
        drop = Signal(P)             # ... and was bad traffic
        drop_invalid = Signal(P)     # ... because its color was invalid

        # --- input stage --------------------------------------------------------------------
        for p in ports:
            link = self.link_in(p)
            color = link.payload.color
            not_full = ~occ[p][D - 1]
            ready_bits = not_full
            if C < NUM_COLORS:
                ready_bits = Cat(not_full, Const(-1, NUM_COLORS - C))
            m.d.comb += [
                link.ready.eq(ready_bits),
                routed[p].eq(_or_reduce(route[p], C)),
            ]
            valid_color = link.valid & (color < C)
            hit = Signal(C, name=f"hit_{p.name}")
            m.d.comb += [
                hit.eq(Mux(valid_color, Const(1, C) << color, 0) & not_full),
                enq[p].eq(hit & routed[p]),
                drop_invalid[p].eq(link.valid & (color >= C)),
                drop[p].eq(drop_invalid[p] | (hit & ~routed[p]).any()),
                in_xfer[p].eq(drop[p] | hit.any()),
            ]
            body = Signal(_Body, name=f"in_body_{p.name}")
            m.d.comb += [body.data.eq(link.payload.data), body.index.eq(link.payload.index),
                         body.ctrl.eq(link.payload.ctrl)]
            # Occupancy: one more (enq only), one less (deq only) or the same.
            grow = enq[p] & ~deq[p]
            shrink = deq[p] & ~enq[p]
            for j in range(D):
                below = occ[p][j - 1] if j else ones
                above = occ[p][j + 1] if j + 1 < D else Const(0, C)
                m.d.sync += occ[p][j].eq((occ[p][j] & ~shrink) | (shrink & above) |
                                         (grow & below))
            _increment(m, wr[p], enq[p])
            _increment(m, rd[p], deq[p])
            store_w = store.write_port()
            slot = Cat(wr[p][b].bit_select(color, 1) for b in range(PB))
            m.d.comb += [
                store_w.en.eq(enq[p].any()),
                store_w.addr.eq(Cat(slot, p * C + color[:COLOR_BITS])),
                store_w.data.eq(body),
            ]

        # --- output stage: round-robin arbitration among (input, color) heads ---------------
        taken = [[None] * P for _ in ports]      # taken[p][o]: C bits granted this cycle
        m.submodules.log2_rom = log2_rom = Memory(
            shape=unsigned(5), depth=32,
            init=[_DE_BRUIJN_TABLE[i] for i in range(32)])
        pending = Signal(P)
        for o in ports:
            link = self.link_out(o)
            # Round-robin over the P x C requesters in the order k = input * C + color:
            # requesters after the last grant first, the lowest index wins. It is computed
            # per input slice of C bits (word-wide logic, fast to simulate) rather than on
            # one P x C-bit vector: first the input (the lowest slice with a request after
            # the pointer, else the lowest with any request), then the color in it.
            pend = [Signal(C, name=f"pend_{p.name}_to_{o.name}") for p in ports]
            req = [Signal(C, name=f"req_{p.name}_to_{o.name}") for p in ports]
            # prio[p]: colors of input p after the last grant (the round-robin pointer).
            prio = [Signal(C, name=f"prio_{p.name}_to_{o.name}", init=(1 << C) - 1)
                    for p in ports]
            masked = [Signal(C, name=f"masked_{p.name}_to_{o.name}") for p in ports]
            for p in ports:
                m.d.comb += [
                    pend[p].eq(route[p][o] & ~served[p][o] & occ[p][0]),
                    req[p].eq(pend[p] & link.ready[:C]),
                    masked[p].eq(req[p] & prio[p]),
                ]
            any_masked = Signal(P, name=f"any_masked_{o.name}")
            any_req = Signal(P, name=f"any_req_{o.name}")
            m.d.comb += [any_masked.eq(Cat(masked[p].any() for p in ports)),
                         any_req.eq(Cat(req[p].any() for p in ports)),
                         pending[o].eq(Cat(pend[p].any() for p in ports).any())]
            use_masked = Signal(name=f"use_masked_{o.name}")
            inputs = Signal(P, name=f"inputs_{o.name}")
            port_hot = Signal(P, name=f"grant_port_{o.name}")       # one-hot input
            colors = Signal(C, name=f"colors_{o.name}")
            color_hot = Signal(C, name=f"grant_color_{o.name}")    # one-hot color
            m.d.comb += [
                use_masked.eq(any_masked.any()),
                inputs.eq(Mux(use_masked, any_masked, any_req)),
                port_hot.eq(inputs & (~inputs + 1)),                 # lowest set bit
                colors.eq(_or_reduce([Mux(port_hot[p], Mux(use_masked, masked[p], req[p]), 0)
                                      for p in ports], C)),
                color_hot.eq(colors & (~colors + 1)),
            ]
            # Inputs after the granted one: all their colors are after the pointer.
            later = Signal(P, name=f"later_{o.name}")
            m.d.comb += later.eq(~(port_hot | (port_hot - 1)))
            with m.If(inputs.any()):
                for p in ports:
                    m.d.sync += prio[p].eq(Mux(port_hot[p], ~(color_hot | (color_hot - 1)),
                                               Mux(later[p], ones, 0)))
            for p in ports:
                taken[p][o] = Signal(C, name=f"taken_{p.name}_to_{o.name}")
                m.d.comb += taken[p][o].eq(Mux(port_hot[p], color_hot, 0))
            # The grant's index: which input (one of P slices), and which color in it.
            g_color = _onehot_index(m, log2_rom, color_hot, f"grant_c_{o.name}")
            g_port = _onehot_index(m, log2_rom, port_hot, f"grant_p_{o.name}")
            g_index = Signal(range(K), name=f"grant_k_{o.name}")
            m.d.comb += g_index.eq(g_port * C + g_color)
            store_r = store.read_port(domain="comb")
            out_body = store_r.data
            if PB:
                slot = Cat(Cat(rd[p][b] for p in ports).bit_select(g_index, 1)
                           for b in range(PB))
                m.d.comb += store_r.addr.eq(Cat(slot, g_index))
            else:
                m.d.comb += store_r.addr.eq(g_index)
            m.d.comb += [
                link.valid.eq(inputs.any()),
                link.payload.data.eq(out_body.data),
                link.payload.index.eq(out_body.index),
                link.payload.ctrl.eq(out_body.ctrl),
                link.payload.color.eq(g_color),
            ]

        # A head leaves its FIFO when its last outstanding branch takes it.
        for p in ports:
            left = _or_reduce([route[p][o] & ~served[p][o] & ~taken[p][o] for o in ports], C)
            m.d.comb += deq[p].eq(occ[p][0] & routed[p] & ~left)
            for o in ports:
                m.d.sync += served[p][o].eq((served[p][o] | taken[p][o]) & ~deq[p])

        # --- error registers and counters -------------------------------------------------
        err = Signal(RouterErrorStatus)
        err_count = Signal(32)
        cycles = Signal(32)
        forwarded = [Signal(32, name=f"forwarded_{p.name}") for p in ports]
        blocked = [Signal(32, name=f"blocked_{p.name}") for p in ports]
        received = [Signal(32, name=f"received_{p.name}") for p in ports]

        m.d.sync += cycles.eq(cycles + 1)
        m.d.sync += err_count.eq(err_count + sum(drop[p] for p in ports))
        with m.If(drop.any() & ~err.error):
            m.d.sync += err.error.eq(1)
            for p in reversed(ports):     # the lowest port wins
                with m.If(drop[p]):
                    m.d.sync += [err.port.eq(p), err.color.eq(self.link_in(p).payload.color),
                                 err.invalid_color.eq(drop_invalid[p])]
        for o in ports:
            valid = self.link_out(o).valid
            m.d.sync += forwarded[o].eq(forwarded[o] + valid)
            m.d.sync += blocked[o].eq(blocked[o] + (pending[o] & ~valid))
        for p in ports:
            m.d.sync += received[p].eq(received[p] + in_xfer[p])

        # --- configuration port ------------------------------------------------------------
        cfg = self.cfg
        info = Const({"num_colors": C, "fifo_depth": D, "num_ports": P,
                      "version": ROUTER_VERSION}, RouterInfo)
        is_route = cfg.addr < RouterReg.ROUTE + P * ROUTE_PORT_STRIDE
        r_port = cfg.addr[COLOR_BITS:COLOR_BITS + 3]
        r_color = cfg.addr[:COLOR_BITS]
        route_word = Array(Cat(route[p][o].bit_select(r_color, 1) for o in ports)
                           for p in ports)[r_port]
        regs = [(RouterReg.ERR_STATUS, err.as_value()), (RouterReg.ERR_COUNT, err_count),
                (RouterReg.INFO, info.as_value()), (RouterReg.CYCLES, cycles)]
        for p in ports:
            regs += [(counter_addr(RouterReg.FORWARDED, p), forwarded[p]),
                     (counter_addr(RouterReg.BLOCKED, p), blocked[p]),
                     (counter_addr(RouterReg.RECEIVED, p), received[p]),
                     (counter_addr(RouterReg.QUEUED, p), occ[p][0])]
        with m.If(cfg.re):
            with m.If(is_route):
                m.d.sync += cfg.rdata.eq(Mux(r_color < C, route_word, 0))
            with m.Else():
                with m.Switch(cfg.addr):
                    for addr, value in regs:
                        with m.Case(addr):
                            m.d.sync += cfg.rdata.eq(value)
                    with m.Default():
                        m.d.sync += cfg.rdata.eq(0)

        # Writes: a route word loads the mask of (port, color); a write to a status
        # register or counter clears it (later assignments override the increments above).
        with m.If(cfg.we & is_route & (r_color < C)):
            bit = Const(1, C) << r_color
            for p in ports:
                with m.If(r_port == p):
                    for o in ports:
                        m.d.sync += route[p][o].eq(
                            (route[p][o] & ~bit) | Mux(cfg.wdata[o], bit, 0))
        clearable = [(RouterReg.ERR_STATUS, err), (RouterReg.ERR_COUNT, err_count),
                     (RouterReg.CYCLES, cycles)]
        for p in ports:
            clearable += [(counter_addr(RouterReg.FORWARDED, p), forwarded[p]),
                          (counter_addr(RouterReg.BLOCKED, p), blocked[p]),
                          (counter_addr(RouterReg.RECEIVED, p), received[p])]
        for addr, reg in clearable:
            with m.If(cfg.we & (cfg.addr == addr)):
                m.d.sync += reg.eq(0)
        return m
