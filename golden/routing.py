"""Wavelet-level routing model of the router mesh (SPEC sections 3 and 9).

Given the route tables of a W x H mesh and the wavelets injected at its inputs, the model
says which wavelets every output delivers and in which order per (source, color) flow: the
router never changes a wavelet or its color, never reorders a flow and copies a multicast
wavelet to every branch, so a flow's delivered sequence at an output is its injected
sequence. The order between different flows at one output is the arbiters' business and
is not predicted.

It also checks a configuration before anything is simulated (:meth:`RoutingModel.check`):
routes that leave the fabric through an edge that is not exported, loops, a flow that
reaches the same link twice (duplicates), two flows sharing a (link, color) (they merge
into one stream downstream), empty routes and invalid colors. Every issue names the tile
(x, y), the port and the color.

Endpoints are ``(x, y, Port)``: for an edge or RAMP port, the link into (source) or out of
(sink) tile (x, y) through that port.
"""

from collections import defaultdict, namedtuple

from rtl.router import NUM_PORTS, Port, mask_ports, route_addr
from rtl.wavelet import FIELDS, NUM_COLORS

__all__ = ["RouteTables", "RoutingModel", "RouteIssue", "RoutingError", "Trace",
           "Delivery", "Endpoint", "wavelet_color", "xy_unicast_tables"]

Endpoint = namedtuple("Endpoint", "x y port")

_COLOR_OFF, _COLOR_WIDTH = FIELDS["color"]


def wavelet_color(word):
    """The color field of a wavelet word."""
    return (int(word) >> _COLOR_OFF) & ((1 << _COLOR_WIDTH) - 1)


def _where(x, y, port, color):
    return f"tile ({x}, {y}) port {Port(port).name} color {color}"


class RouteIssue(namedtuple("RouteIssue", "kind x y port color message")):
    """One configuration problem. ``kind`` is one of :attr:`KINDS`."""
    KINDS = ("leaves_fabric", "loop", "duplicate", "merge", "empty_route", "invalid_color")

    def __str__(self):
        return f"{self.kind}: {self.message}"


class RoutingError(ValueError):
    """A configuration or traffic that the fabric cannot carry; lists every issue."""

    def __init__(self, issues):
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


class RouteTables:
    """Transmit masks of every (tile, input port, color) of a W x H mesh, all empty at first.

    Parameters
    ----------
    width, height : int
        Mesh size.
    num_colors : int
        Routable colors (as the router's ``num_colors``).
    """

    def __init__(self, width, height, num_colors=NUM_COLORS):
        if width < 1 or height < 1:
            raise ValueError(f"mesh size {width} x {height} must be at least 1 x 1")
        if not 1 <= num_colors <= NUM_COLORS:
            raise ValueError(f"num_colors {num_colors} outside 1..{NUM_COLORS}")
        self.width, self.height, self.num_colors = width, height, num_colors
        self._masks = {}

    def _check(self, x, y, port, color):
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise ValueError(f"tile ({x}, {y}) is outside the {self.width} x {self.height} "
                             f"mesh")
        Port(port)
        if not 0 <= color < self.num_colors:
            raise ValueError(f"{_where(x, y, port, color)}: color outside "
                             f"0..{self.num_colors - 1}")

    def set(self, x, y, in_port, color, mask):
        """Route ``color`` arriving at tile (x, y) on ``in_port`` to the ports of ``mask``."""
        self._check(x, y, in_port, color)
        if not 0 <= mask < (1 << NUM_PORTS):
            raise ValueError(f"{_where(x, y, in_port, color)}: transmit mask {mask:#x} "
                             f"does not fit in {NUM_PORTS} bits")
        if mask:
            self._masks[x, y, Port(in_port), color] = mask
        else:
            self._masks.pop((x, y, Port(in_port), color), None)

    def add(self, x, y, in_port, color, mask):
        """OR ``mask`` into the entry (to build multicast trees branch by branch)."""
        self.set(x, y, in_port, color, self.mask(x, y, in_port, color) | mask)

    def mask(self, x, y, in_port, color):
        """The transmit mask of (tile, input port, color); 0 when empty or invalid color."""
        if not 0 <= color < self.num_colors:
            return 0
        return self._masks.get((x, y, Port(in_port), color), 0)

    def entries(self):
        """``(x, y, in_port, color, mask)`` of every non-empty entry, sorted."""
        return [(x, y, p, c, mk) for (x, y, p, c), mk in sorted(self._masks.items())]

    def register_writes(self):
        """``(x, y, router register address, value)`` that load these tables into routers
        reset to empty routes (register map of :mod:`rtl.router`)."""
        return [(x, y, route_addr(p, c), mk) for x, y, p, c, mk in self.entries()]


class Trace(namedtuple("Trace", "sinks links drops issues")):
    """Where one wavelet of a (source, color) goes.

    ``sinks``: output endpoints that deliver it (exported edges and RAMPs); ``links``:
    ``(x, y, out_port)`` of every router output it crosses (including sinks); ``drops``:
    ``(x, y, in_port)`` where it meets an empty route or an invalid color (error counted
    by that router); ``issues``: :class:`RouteIssue` list.
    """


class Delivery:
    """What a mesh delivers for a list of injections (see :meth:`RoutingModel.deliver`).

    Attributes
    ----------
    outputs : dict
        ``{sink Endpoint: {(source Endpoint, color): [word, ...]}}`` in flow order.
    errors : dict
        ``{(x, y): wavelets dropped as bad traffic by that router}``.
    forwarded : dict
        ``{(x, y, out_port): wavelets sent}``, the routers' FORWARDED counters.
    received : dict
        ``{(x, y, in_port): wavelets accepted}``, the routers' RECEIVED counters.
    dropped : list
        ``(source, word, (x, y, in_port))`` of every dropped wavelet, in injection order.
    """

    def __init__(self):
        self.outputs = defaultdict(lambda: defaultdict(list))
        self.errors = defaultdict(int)
        self.forwarded = defaultdict(int)
        self.received = defaultdict(int)
        self.dropped = []

    def expected_count(self):
        """Total wavelets delivered over all outputs."""
        return sum(len(w) for flows in self.outputs.values() for w in flows.values())


class RoutingModel:
    """Routing model of a mesh with given tables.

    Parameters
    ----------
    tables : RouteTables
    exported : iterable of (x, y, Port), optional
        Edge outputs that are ports of the design (default: every edge). A route through
        any other edge output leaves the fabric and is an error.
    """

    def __init__(self, tables, exported=None):
        self.tables = tables
        W, H = tables.width, tables.height
        edges = {(x, y, p) for x in range(W) for y in range(H) for p in Port
                 if p != Port.RAMP and not self._inside(x + p.delta[0], y + p.delta[1])}
        self.exported = edges if exported is None else \
            {(x, y, Port(p)) for x, y, p in exported}
        self._traces = {}

    def _inside(self, x, y):
        return 0 <= x < self.tables.width and 0 <= y < self.tables.height

    def sources(self):
        """Every (source endpoint, color) with a non-empty first route: edge inputs of the
        exported edges and RAMP inputs."""
        out = []
        for x, y, port, color, _ in self.tables.entries():
            if port == Port.RAMP or (x, y, port) in self.exported:
                out.append((Endpoint(x, y, port), color))
        return out

    def trace(self, source, color):
        """The :class:`Trace` of a wavelet of ``color`` injected at ``source`` (an input of
        the mesh, else ``ValueError``: :meth:`check_source`)."""
        key = (tuple(source), color)
        if key not in self._traces:
            self._traces[key] = self._trace(Endpoint(*source), color)
        return self._traces[key]

    def check_source(self, source):
        """Raise ``ValueError`` naming ``source`` (tile and port) unless it is an input of
        the mesh: a RAMP, or an edge port whose neighbour is outside the mesh."""
        x, y, port = source
        t = self.tables
        try:
            port = Port(port)
        except ValueError:
            raise ValueError(f"source tile ({x}, {y}) port {port!r}: not a port "
                             f"({', '.join(p.name for p in Port)})") from None
        if not self._inside(x, y):
            raise ValueError(f"source tile ({x}, {y}) port {port.name} is outside the "
                             f"{t.width} x {t.height} mesh")
        if port != Port.RAMP and self._inside(x + port.delta[0], y + port.delta[1]):
            raise ValueError(f"source tile ({x}, {y}) port {port.name} is a link between "
                             f"two tiles, not an edge or RAMP input of the {t.width} x "
                             f"{t.height} mesh")

    def _trace(self, source, color):
        self.check_source(source)
        t = self.tables
        sinks, links, drops, issues = [], [], [], []
        if not 0 <= color < t.num_colors:
            drops.append((source.x, source.y, source.port))
            issues.append(RouteIssue("invalid_color", *source, color,
                                     f"{_where(*source, color)}: invalid color (the "
                                     f"router routes 0..{t.num_colors - 1})"))
            return Trace(sinks, links, drops, issues)
        visited = {}            # (x, y, in_port) -> visit order
        link_set = set()
        on_path = set()
        # Depth-first over (tile, input port); the color never changes.
        stack = [("enter", (source.x, source.y, Port(source.port)))]
        while stack:
            action, node = stack.pop()
            if action == "leave":
                on_path.discard(node)
                continue
            x, y, in_port = node
            if node in on_path:
                issues.append(RouteIssue("loop", x, y, in_port, color,
                                         f"{_where(x, y, in_port, color)}: the route from "
                                         f"{_where(*source, color)} comes back here (loop)"))
                continue
            if node in visited:
                issues.append(RouteIssue("duplicate", x, y, in_port, color,
                                         f"{_where(x, y, in_port, color)}: reached twice by "
                                         f"the flow from {_where(*source, color)} "
                                         f"(duplicated wavelets)"))
                continue
            visited[node] = len(visited)
            mask = t.mask(x, y, in_port, color)
            if not mask:
                drops.append(node)
                issues.append(RouteIssue("empty_route", x, y, in_port, color,
                                         f"{_where(x, y, in_port, color)}: empty route for "
                                         f"the flow from {_where(*source, color)}"))
                continue
            on_path.add(node)
            stack.append(("leave", node))
            for out_port in reversed(mask_ports(mask)):
                nx, ny = x + out_port.delta[0], y + out_port.delta[1]
                if (x, y, out_port) in link_set:
                    target = (nx, ny, out_port.opposite)
                    if out_port != Port.RAMP and target in on_path:
                        issues.append(RouteIssue(
                            "loop", *target, color,
                            f"{_where(*target, color)}: the route from "
                            f"{_where(*source, color)} comes back here (loop)"))
                        continue
                    issues.append(RouteIssue(
                        "duplicate", x, y, out_port, color,
                        f"{_where(x, y, out_port, color)}: the flow from "
                        f"{_where(*source, color)} reaches this output twice (duplicated "
                        f"wavelets)"))
                    continue
                links.append((x, y, out_port))
                link_set.add((x, y, out_port))
                if out_port == Port.RAMP:
                    sinks.append(Endpoint(x, y, out_port))
                elif self._inside(nx, ny):
                    stack.append(("enter", (nx, ny, out_port.opposite)))
                elif (x, y, out_port) in self.exported:
                    sinks.append(Endpoint(x, y, out_port))
                else:
                    issues.append(RouteIssue(
                        "leaves_fabric", x, y, out_port, color,
                        f"{_where(x, y, out_port, color)}: the flow from "
                        f"{_where(*source, color)} leaves the fabric through an edge "
                        f"that is not exported"))
        return Trace(sinks, links, drops, issues)

    def check(self, sources=None, *, allow_merge=False, allow_drop=False):
        """Every issue of the flows from ``sources`` (default :meth:`sources`).

        Merges (two sources on one (link, color)) are issues unless ``allow_merge``; empty
        routes met on the way unless ``allow_drop``. Returns a list of
        :class:`RouteIssue`; see :meth:`validate` to raise.
        """
        sources = self.sources() if sources is None else sources
        issues = []
        users = defaultdict(list)
        for source, color in sources:
            tr = self.trace(source, color)
            for issue in tr.issues:
                if issue.kind == "empty_route" and allow_drop:
                    continue
                issues.append(issue)
            for link in set(tr.links):
                users[link + (color,)].append(Endpoint(*source))
        if not allow_merge:
            for (x, y, port, color), who in sorted(users.items()):
                if len(set(who)) > 1:
                    names = ", ".join(f"({s.x}, {s.y}) {Port(s.port).name}"
                                      for s in sorted(set(who)))
                    issues.append(RouteIssue(
                        "merge", x, y, port, color,
                        f"{_where(x, y, port, color)}: flows from {names} share this "
                        f"output and color and merge"))
        return issues

    def validate(self, sources=None, **kwargs):
        """:meth:`check`, raising :class:`RoutingError` if there is any issue."""
        issues = self.check(sources, **kwargs)
        if issues:
            raise RoutingError(issues)

    def deliver(self, injections):
        """What the mesh delivers for ``injections``.

        Parameters
        ----------
        injections : iterable of (source, word)
            ``source`` an input endpoint ``(x, y, Port)``; per source, in injection order.

        Returns
        -------
        Delivery

        Raises
        ------
        RoutingError
            If a wavelet would loop, be duplicated or leave the fabric.
        ValueError
            If a source is not an input of the mesh (:meth:`check_source`), naming its tile
            and port.
        """
        d = Delivery()
        for source, word in injections:
            source = Endpoint(*source)
            color = wavelet_color(word)
            tr = self.trace(source, color)
            fatal = [i for i in tr.issues if i.kind in ("loop", "duplicate", "leaves_fabric")]
            if fatal:
                raise RoutingError(fatal)
            d.received[source.x, source.y, Port(source.port)] += 1
            for x, y, port in tr.links:
                d.forwarded[x, y, port] += 1
                nx, ny = x + port.delta[0], y + port.delta[1]
                if port != Port.RAMP and self._inside(nx, ny):
                    d.received[nx, ny, port.opposite] += 1
            for sink in tr.sinks:
                d.outputs[sink][source, color].append(int(word))
            for x, y, port in tr.drops:
                d.errors[x, y] += 1
                d.dropped.append((source, int(word), (x, y, port)))
        return d


def xy_unicast_tables(width, height, destinations, num_colors=NUM_COLORS):
    """Dimension-order (X then Y) unicast routes: color c leads, from every input of every
    tile, to the RAMP of tile ``destinations[c]`` (a tile index ``y * width + x``).

    Deadlock-free (no turn from Y back to X) and never a U-turn; flows to one destination
    merge on purpose (check them with ``allow_merge=True``).
    """
    if len(destinations) > num_colors:
        raise ValueError(f"{len(destinations)} destinations need more than the "
                         f"{num_colors} colors")
    tables = RouteTables(width, height, num_colors)
    for color, dest in enumerate(destinations):
        if not 0 <= dest < width * height:
            raise ValueError(f"color {color}: destination tile {dest} is outside the "
                             f"{width} x {height} mesh")
        dx, dy = dest % width, dest // width
        for x in range(width):
            for y in range(height):
                out = (Port.E if dx > x else Port.W if dx < x else
                       Port.S if dy > y else Port.N if dy < y else Port.RAMP)
                for port in Port:
                    tables.set(x, y, port, color, 1 << out)
    return tables
