"""A W x H mesh of routers, the router exported once and placed by name (SPEC section 5).

The mesh top holds no logic of its own apart from the configuration select: it places
``Instance("router", ...)`` per tile and wires neighbours together, so the Verilog of an
8 x 8 mesh is the router module plus a top of wiring (:func:`mesh_verilog`).

Coordinates: x grows east, y grows south, tile (0, 0) is the north-west corner. Every edge
link and every RAMP is a top-level port: ``north_in[x]``/``north_out[x]`` (tile (x, 0),
port N), ``south_*[x]`` (tile (x, H-1)), ``east_*[y]`` (tile (W-1, y)), ``west_*[y]``
(tile (0, y)) and ``ramp_in[y][x]``/``ramp_out[y][x]``. :meth:`RouterMesh.endpoint_in` and
:meth:`RouterMesh.endpoint_out` find them from ``(x, y, port)``.

Configuration (temporary, until the fabric's configuration path replaces it): one
:class:`rtl.link.CfgSignature` port; the word address is ``tile << ROUTER_ADDR_BITS | reg``
with ``tile = y * W + x`` (:func:`mesh_cfg_addr`); reads return the addressed router's
``rdata`` one cycle later, like any configuration port.
"""

from amaranth import Instance, Module, Signal, Value, ClockSignal, ResetSignal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out, flipped, connect

from rtl.export import concat, to_verilog
from rtl.link import CfgSignature, LinkSignature
from rtl.router import ROUTER_ADDR_BITS, Port, Router, router_signature
from rtl.wavelet import NUM_COLORS

__all__ = ["RouterMesh", "mesh_cfg_addr", "mesh_cfg_addr_bits", "edge_endpoints",
           "mesh_endpoints", "instance_ports", "mesh_verilog", "router_verilog",
           "ROUTER_MODULE"]

#: Verilog module name of the router, converted once per design.
ROUTER_MODULE = "router"

_EDGE = {Port.N: "north", Port.E: "east", Port.S: "south", Port.W: "west"}


def _check_size(width, height):
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"mesh {name} must be a positive int, not {value!r}")


def mesh_cfg_addr_bits(width, height):
    """Address width of a mesh's configuration port."""
    _check_size(width, height)
    return ROUTER_ADDR_BITS + max(1, (width * height - 1).bit_length())


def mesh_cfg_addr(width, height, x, y, reg):
    """Configuration word address of router register ``reg`` in tile ``(x, y)``."""
    _check_size(width, height)
    if not (0 <= x < width and 0 <= y < height):
        raise ValueError(f"tile ({x}, {y}) is outside the {width} x {height} mesh")
    if not 0 <= reg < (1 << ROUTER_ADDR_BITS):
        raise ValueError(f"router register address {reg:#x} does not fit in "
                         f"{ROUTER_ADDR_BITS} bits")
    return ((y * width + x) << ROUTER_ADDR_BITS) | int(reg)


def edge_endpoints(width, height):
    """The edge ports of a mesh as ``(x, y, Port)``, in top-level port order.

    North (x ascending), east (y ascending), south (x), west (y).
    """
    _check_size(width, height)
    out = []
    for port in (Port.N, Port.E, Port.S, Port.W):
        if port in (Port.N, Port.S):
            y = 0 if port == Port.N else height - 1
            out += [(x, y, port) for x in range(width)]
        else:
            x = width - 1 if port == Port.E else 0
            out += [(x, y, port) for y in range(height)]
    return out


def mesh_endpoints(width, height):
    """Every link end of a mesh as ``(x, y, Port)``: the edges, then the RAMPs by tile."""
    return edge_endpoints(width, height) + [(x, y, Port.RAMP) for y in range(height)
                                            for x in range(width)]


def instance_ports(signature, interface):
    """``Instance`` keyword arguments binding every member of ``signature`` to ``interface``.

    Port names follow Amaranth's Verilog naming of a component's flattened signature
    (``in_n__valid``), so a component converted alone can be placed by name.
    """
    kwargs = {}
    for path, member, value in signature.flatten(interface):
        name = "__".join(str(part) for part in path)
        kwargs[("i_" if member.flow == In else "o_") + name] = Value.cast(value)
    return kwargs


class RouterMesh(wiring.Component):
    """W x H routers wired as a mesh, every edge link and RAMP exported.

    Parameters
    ----------
    width, height : int
        Mesh size in tiles (1 x 1 and 1 x N work).
    num_colors, fifo_depth : int
        Router parameters (see :class:`rtl.router.Router`).
    """

    def __init__(self, width, height, *, num_colors=NUM_COLORS, fifo_depth=2):
        _check_size(width, height)
        self._width, self._height = width, height
        self._router_params = {"num_colors": num_colors, "fifo_depth": fifo_depth}
        link = LinkSignature()
        super().__init__({
            "north_in": In(link).array(width), "north_out": Out(link).array(width),
            "east_in": In(link).array(height), "east_out": Out(link).array(height),
            "south_in": In(link).array(width), "south_out": Out(link).array(width),
            "west_in": In(link).array(height), "west_out": Out(link).array(height),
            "ramp_in": In(link).array(height, width),
            "ramp_out": Out(link).array(height, width),
            "cfg": In(CfgSignature(mesh_cfg_addr_bits(width, height))),
        })

    @property
    def width(self):
        return self._width

    @property
    def height(self):
        return self._height

    @property
    def router_params(self):
        """Parameters of the router placed in every tile (for :func:`router_verilog`)."""
        return dict(self._router_params)

    def _endpoint(self, direction, x, y, port):
        port = Port(port)
        if port == Port.RAMP:
            return getattr(self, f"ramp_{direction}")[y][x]
        edge_ok = {Port.N: y == 0, Port.S: y == self._height - 1,
                   Port.E: x == self._width - 1, Port.W: x == 0}[port]
        if not (0 <= x < self._width and 0 <= y < self._height) or not edge_ok:
            raise ValueError(f"tile ({x}, {y}) port {port.name} is not an edge of the "
                             f"{self._width} x {self._height} mesh")
        links = getattr(self, f"{_EDGE[port]}_{direction}")
        return links[x] if port in (Port.N, Port.S) else links[y]

    def endpoint_in(self, x, y, port):
        """The top-level input link into tile ``(x, y)`` through edge/RAMP ``port``."""
        return self._endpoint("in", x, y, port)

    def endpoint_out(self, x, y, port):
        """The top-level output link out of tile ``(x, y)`` through edge/RAMP ``port``."""
        return self._endpoint("out", x, y, port)

    def elaborate(self, platform):
        m = Module()
        W, H = self._width, self._height
        sig = router_signature()
        tiles = {}
        for y in range(H):
            for x in range(W):
                tile = sig.create(path=(f"r{x}_{y}",))
                tiles[x, y] = tile
                m.submodules[f"router_{x}_{y}"] = Instance(
                    ROUTER_MODULE, i_clk=ClockSignal(), i_rst=ResetSignal(),
                    **instance_ports(sig, tile))

        # Neighbour links, and edges/RAMPs to the top-level ports.
        for (x, y), tile in tiles.items():
            for port in Port:
                dx, dy = port.delta
                out_link = getattr(tile, f"out_{port.name.lower()}")
                in_link = getattr(tile, f"in_{port.name.lower()}")
                if port != Port.RAMP and (x + dx, y + dy) in tiles:
                    peer = tiles[x + dx, y + dy]
                    connect(m, out_link,
                            getattr(peer, f"in_{port.opposite.name.lower()}"))
                else:
                    connect(m, flipped(self._endpoint("in", x, y, port)), in_link)
                    connect(m, out_link, flipped(self._endpoint("out", x, y, port)))

        # Configuration: tile select from the high address bits.
        cfg = self.cfg
        select = cfg.addr[ROUTER_ADDR_BITS:]
        read_tile = Signal.like(select)
        with m.If(cfg.re):
            m.d.sync += read_tile.eq(select)
        rdata = 0
        for (x, y), tile in tiles.items():
            index = y * W + x
            m.d.comb += [
                tile.cfg.addr.eq(cfg.addr[:ROUTER_ADDR_BITS]),
                tile.cfg.wdata.eq(cfg.wdata),
                tile.cfg.we.eq(cfg.we & (select == index)),
                tile.cfg.re.eq(cfg.re & (select == index)),
            ]
            rdata = rdata | ((read_tile == index).replicate(32) & tile.cfg.rdata)
        m.d.comb += cfg.rdata.eq(rdata)
        return m


def mesh_verilog(top, name="router_mesh"):
    """Verilog of ``top`` plus the router module it places by name.

    ``top`` is a :class:`RouterMesh` or a component containing one; its ``router_params``
    select the router (converted once per parameters, :func:`router_verilog`).
    """
    return concat(to_verilog(top, name), router_verilog(**top.router_params))


_ROUTER_VERILOG = {}


def router_verilog(num_colors=NUM_COLORS, fifo_depth=2):
    """Verilog of a :class:`rtl.router.Router` as module :data:`ROUTER_MODULE`, converted
    once per set of parameters in a process (the conversion takes seconds)."""
    key = (num_colors, fifo_depth)
    if key not in _ROUTER_VERILOG:
        _ROUTER_VERILOG[key] = to_verilog(Router(num_colors=num_colors, fifo_depth=fifo_depth),
                                          ROUTER_MODULE)
    return _ROUTER_VERILOG[key]
