"""cocotb drivers, monitors, scoreboard and watchdog for fabric links (router benches).

The bench top is :class:`tb.fabric_harness.MeshBench`. One coroutine
(:meth:`FabricBench.run`) does all per-cycle work on the falling clock edge, where every
mesh output depends only on registered state: it reads the sinks (one packed ``valid``
read, then the payloads that are valid), feeds the :class:`Scoreboard`, and lets every
:class:`LinkDriver` offer its next wavelet on a color whose stop bit is clear. A wavelet
offered this way transfers at the next rising edge, so nothing has to be read back.

* :class:`LinkDriver`: per-color queues (a stopped color never blocks the others), random
  idle insertion, send order kept per color.
* Sinks: hardware back-pressure (``snk_mode``, random per color and cycle) and per-color
  stalls (``snk_stall``), set by :meth:`FabricBench.set_sink`.
* :class:`Scoreboard`: expected wavelets per (sink, source, color) from the golden routing
  model (:mod:`golden.routing`); fails at once on a corrupted, reordered, duplicated or
  unexpected wavelet and, at the end, on any lost one, naming port, color and wavelet.
* Watchdog: a run that makes no progress for ``watchdog`` cycles, or exceeds its cycle
  budget, fails with a report of where wavelets are held (drivers' queues, routers'
  QUEUED registers, the sinks still waiting).
"""

import random
from collections import deque

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from golden.routing import Endpoint, wavelet_color
from rtl.mesh import mesh_cfg_addr, mesh_endpoints
from rtl.router import Port, RouterReg, counter_addr
from rtl.wavelet import NUM_COLORS, unpack

__all__ = ["FabricBench", "LinkDriver", "Scoreboard", "describe", "fmt_word",
           "ALL_COLORS_READY"]

#: Colors >= NUM_COLORS are always accepted (dropped as bad traffic by the router).
ALL_COLORS_READY = ((1 << 32) - 1) ^ ((1 << NUM_COLORS) - 1)


def describe(endpoint):
    """Human name of a link end ``(x, y, Port)``."""
    x, y, port = endpoint
    return f"tile ({x}, {y}) {Port(port).name}"


def fmt_word(word):
    """A wavelet word with its fields, for error messages."""
    f = unpack(word)
    return (f"{word:#010x} (color {f.color}, ctrl {f.ctrl}, index {f.index}, "
            f"data {f.data:#06x})")


class LinkDriver:
    """Drives one input link: per-color queues, sends on a ready color, idle insertion.

    Parameters
    ----------
    endpoint : (x, y, Port)
    link_valid, link_payload, link_ready : cocotb handles of the link.
    rng : random.Random
    idle : float
        Probability of not sending in a cycle even when something could go.
    """

    def __init__(self, endpoint, link_valid, link_payload, link_ready, rng, idle=0.0):
        self.endpoint = Endpoint(*endpoint)
        self._valid, self._payload, self._ready = link_valid, link_payload, link_ready
        self._rng = rng
        self.idle = idle
        self._queues = {}
        self._nonempty = 0
        self._ptr = 0
        self._valid_on = False
        self.sent = 0
        self.on_send = None      # optional callback(cycle, word)

    def push(self, word):
        """Queue a wavelet word (sent after the earlier ones of its color)."""
        color = wavelet_color(word)
        q = self._queues.get(color)
        if q is None:
            q = self._queues[color] = deque()
        q.append(int(word))
        self._nonempty |= 1 << color

    def extend(self, words):
        for w in words:
            self.push(w)

    @property
    def pending(self):
        """Queued wavelets not yet sent."""
        return sum(len(q) for q in self._queues.values())

    def pending_colors(self):
        """``{color: queued count}`` of non-empty queues."""
        return {c: len(q) for c, q in sorted(self._queues.items()) if q}

    def ready_bits(self):
        return int(self._ready.value)

    def step(self, cycle):
        """Offer the next wavelet for this cycle; return True if one will transfer."""
        cand = self._nonempty
        if cand and not (self.idle and self._rng.random() < self.idle):
            cand &= int(self._ready.value) | ALL_COLORS_READY
        else:
            cand = 0
        if not cand:
            if self._valid_on:
                self._valid.value = 0
                self._valid_on = False
            return False
        above = cand >> self._ptr << self._ptr
        pick = above or cand
        color = (pick & -pick).bit_length() - 1
        self._ptr = color + 1 if color < 31 else 0
        q = self._queues[color]
        word = q.popleft()
        if not q:
            self._nonempty &= ~(1 << color)
        self._payload.value = word
        if not self._valid_on:
            self._valid.value = 1
            self._valid_on = True
        self.sent += 1
        if self.on_send is not None:
            self.on_send(cycle, word)
        return True

    def stop(self):
        if self._valid_on:
            self._valid.value = 0
            self._valid_on = False


class Scoreboard:
    """In-order checker per (sink, source, color) flow, fed by a golden :class:`Delivery`.

    Flows sharing a sink and a color (merged flows) are told apart by matching the flow
    heads; the benches make words unique per flow so that a match is never ambiguous.
    """

    def __init__(self, delivery=None):
        # sink -> color -> list of [source, words, next index]
        self._flows = {}
        self.outstanding = 0
        self.received = 0
        if delivery is not None:
            self.expect(delivery)

    def expect(self, delivery):
        """Add the expected wavelets of a golden :class:`golden.routing.Delivery`."""
        for sink, flows in delivery.outputs.items():
            per_color = self._flows.setdefault(Endpoint(*sink), {})
            for (source, color), words in flows.items():
                per_color.setdefault(color, []).append([Endpoint(*source), list(words), 0])
                self.outstanding += len(words)

    def observe(self, sink, word):
        """Check a wavelet delivered by ``sink``; raise AssertionError if it is wrong."""
        color = wavelet_color(word)
        flows = self._flows.get(sink, {}).get(color)
        self.received += 1
        if flows:
            for flow in flows:
                words, i = flow[1], flow[2]
                if i < len(words) and words[i] == word:
                    flow[2] = i + 1
                    self.outstanding -= 1
                    return
        raise AssertionError(self._explain(sink, color, word, flows))

    def _explain(self, sink, color, word, flows):
        where = f"{describe(sink)} output, color {color}: got {fmt_word(word)}"
        if not flows:
            return f"{where}, but no flow is routed there on that color (misrouted)"
        for source, words, i in flows:
            if word in words[:i]:
                return (f"{where}, a duplicate of wavelet #{words.index(word)} of the flow "
                        f"from {describe(source)}")
            if word in words[i:]:
                lost = words.index(word, i) - i
                return (f"{where}, wavelet #{words.index(word, i)} of the flow from "
                        f"{describe(source)} while {fmt_word(words[i])} (#{i}) was expected: "
                        f"{lost} wavelet(s) lost or reordered")
        heads = "; ".join(f"from {describe(s)}: " +
                          (fmt_word(w[i]) if i < len(w) else "nothing more")
                          for s, w, i in flows)
        return f"{where}, which no flow sent (corrupted); expected heads: {heads}"

    def missing(self):
        """``[(sink, color, source, count, next word)]`` of flows not fully delivered."""
        out = []
        for sink, per_color in self._flows.items():
            for color, flows in per_color.items():
                for source, words, i in flows:
                    if i < len(words):
                        out.append((sink, color, source, len(words) - i, words[i]))
        return out

    def check_complete(self):
        """Raise AssertionError naming every flow with lost wavelets."""
        missing = self.missing()
        if missing:
            lines = [f"{describe(sink)} output, color {color}: {n} wavelet(s) of the flow "
                     f"from {describe(src)} never arrived, first {fmt_word(w)}"
                     for sink, color, src, n, w in missing[:20]]
            raise AssertionError("lost wavelets:\n  " + "\n  ".join(lines))


class FabricBench:
    """Wires drivers, sinks, scoreboard and watchdog to a :class:`MeshBench` top.

    Parameters
    ----------
    dut : cocotb handle of the ``mesh_bench`` top.
    width, height : int
        Mesh size (as built).
    seed : int
        Seeds the drivers' idle insertion and the hardware back-pressure.
    """

    def __init__(self, dut, width, height, seed=1):
        self.dut = dut
        self.width, self.height = width, height
        self.endpoints = [Endpoint(*e) for e in mesh_endpoints(width, height)]
        self.index = {e: k for k, e in enumerate(self.endpoints)}
        self.rng = random.Random(seed)
        self.seed = seed
        self.cycle = 0
        self.drivers = {}
        self.scoreboard = Scoreboard()
        self.sink_hooks = {}          # k -> list of callback(cycle, word)
        self._modes = [0] * len(self.endpoints)
        self._snk_data = [getattr(dut, f"snk_data__{k}") for k in range(len(self.endpoints))]
        self._periodic = []

    # --- set-up -------------------------------------------------------------------------
    async def start(self):
        """Start the clock, reset (seeding the hardware back-pressure), idle every input."""
        dut = self.dut
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value = 1
        dut.seed.value = self.seed & 0xFFFFFFFF
        dut.gen_en.value = 0
        dut.gen_colors.value = 0
        dut.snk_mode.value = 0
        dut.cfg__we.value = 0
        dut.cfg__re.value = 0
        dut.cfg__addr.value = 0
        dut.cfg__wdata.value = 0
        for k in range(len(self.endpoints)):
            getattr(dut, f"src__{k}__valid").value = 0
            getattr(dut, f"src__{k}__payload").value = 0
            getattr(dut, f"snk_stall__{k}").value = 0
        for _ in range(3):
            await FallingEdge(dut.clk)
        dut.rst.value = 0
        await FallingEdge(dut.clk)

    def endpoint_index(self, endpoint, role="link end"):
        """Index k of ``endpoint`` in the bench top's ``src``/``snk`` arrays; ``ValueError``
        naming its tile and port if the mesh has no such link end (``role``: for the
        message, e.g. "input")."""
        endpoint = Endpoint(*endpoint)
        k = self.index.get(endpoint)
        if k is None:
            x, y, port = endpoint
            name = Port(port).name if port in tuple(Port) else repr(port)
            raise ValueError(f"tile ({x}, {y}) port {name} is not an edge or RAMP {role} "
                             f"of the {self.width} x {self.height} mesh")
        return k

    def driver(self, endpoint, idle=0.0):
        """The :class:`LinkDriver` of input ``endpoint`` (created on first use)."""
        endpoint = Endpoint(*endpoint)
        if endpoint not in self.drivers:
            k = self.endpoint_index(endpoint, "input")
            d = self.dut
            self.drivers[endpoint] = LinkDriver(
                endpoint, getattr(d, f"src__{k}__valid"), getattr(d, f"src__{k}__payload"),
                getattr(d, f"src__{k}__ready"), self.rng, idle)
        drv = self.drivers[endpoint]
        drv.idle = idle
        return drv

    def set_sink(self, endpoint, mode=None, stall=None):
        """Back-pressure of output ``endpoint``: ``mode`` 0..3 (ready with probability
        1, 3/4, 1/2, 1/4 per color and cycle), ``stall`` a mask of colors held stopped."""
        k = self.endpoint_index(endpoint, "output")
        if mode is not None:
            if not 0 <= mode <= 3:
                raise ValueError(f"sink mode {mode} not in 0..3")
            self._modes[k] = mode
            self.dut.snk_mode.value = sum(m << (2 * i) for i, m in enumerate(self._modes))
        if stall is not None:
            getattr(self.dut, f"snk_stall__{k}").value = stall

    def on_sink(self, endpoint, callback):
        """Call ``callback(cycle, word)`` for every wavelet delivered by ``endpoint``."""
        self.sink_hooks.setdefault(self.endpoint_index(endpoint, "output"), []).append(callback)

    def every(self, cycles, callback):
        """Call ``callback(cycle)`` every ``cycles`` cycles of :meth:`run`."""
        self._periodic.append((cycles, callback))

    def stop_every(self):
        """Drop every callback registered with :meth:`every`."""
        self._periodic.clear()

    # --- configuration port -------------------------------------------------------------
    async def cfg_write(self, writes):
        """Write ``[(address, value)]`` on the configuration port, one per cycle."""
        dut = self.dut
        fe = FallingEdge(dut.clk)
        for addr, value in writes:
            dut.cfg__addr.value = addr
            dut.cfg__wdata.value = value
            dut.cfg__we.value = 1
            await fe
            self._observe_sinks()
        dut.cfg__we.value = 0

    async def cfg_read(self, addresses):
        """Read configuration words (pipelined, one per cycle); return their values."""
        dut = self.dut
        fe = FallingEdge(dut.clk)
        out = []
        for addr in addresses:
            dut.cfg__addr.value = addr
            dut.cfg__re.value = 1
            await fe
            self._observe_sinks()
            out.append(int(dut.cfg__rdata.value))
        dut.cfg__re.value = 0
        return out

    def _observe_sinks(self):
        """Monitor the sinks for one cycle outside :meth:`run` (wavelets already in the
        mesh keep arriving while the bench uses the configuration port)."""
        self.cycle += 1
        valid = int(self.dut.snk_valid.value)
        while valid:
            low = valid & -valid
            k = low.bit_length() - 1
            valid ^= low
            word = int(self._snk_data[k].value)
            self.scoreboard.observe(self.endpoints[k], word)
            for hook in self.sink_hooks.get(k, ()):
                hook(self.cycle, word)

    def reg_addr(self, x, y, reg):
        return mesh_cfg_addr(self.width, self.height, x, y, reg)

    async def load_tables(self, tables):
        """Write every non-empty entry of a :class:`golden.routing.RouteTables`."""
        await self.cfg_write([(self.reg_addr(x, y, addr), value)
                              for x, y, addr, value in tables.register_writes()])

    async def read_router(self, x, y, regs):
        """``{reg address: value}`` of router (x, y)."""
        values = await self.cfg_read([self.reg_addr(x, y, r) for r in regs])
        return dict(zip(regs, values))

    async def read_counters(self):
        """``{(x, y): {"forwarded": [..5], "blocked": [..], "received": [..], "queued": [..],
        "err_count": n, "err_status": s}}`` of every router."""
        per_port = [(name, reg) for name, reg in (
            ("forwarded", RouterReg.FORWARDED), ("blocked", RouterReg.BLOCKED),
            ("received", RouterReg.RECEIVED), ("queued", RouterReg.QUEUED))]
        out = {}
        for y in range(self.height):
            for x in range(self.width):
                regs = [counter_addr(reg, p) for _, reg in per_port for p in Port]
                regs += [RouterReg.ERR_COUNT, RouterReg.ERR_STATUS]
                values = await self.read_router(x, y, regs)
                tile = {name: [values[counter_addr(reg, p)] for p in Port]
                        for name, reg in per_port}
                tile["err_count"] = values[RouterReg.ERR_COUNT]
                tile["err_status"] = values[RouterReg.ERR_STATUS]
                out[x, y] = tile
        return out

    # --- traffic ------------------------------------------------------------------------
    def expect(self, model, injections, drive=None):
        """Add the golden expectation of ``injections`` (``[(source, word)]``) under the
        routing ``model`` to the scoreboard and queue the words on the drivers.

        ``drive``: the sources whose words are queued now (default all); the others are
        sent later by the bench (e.g. a PE model echoing what it receives).
        Returns the :class:`golden.routing.Delivery`.
        """
        delivery = model.deliver(injections)
        self.scoreboard.expect(delivery)
        drive = None if drive is None else {Endpoint(*e) for e in drive}
        for source, word in injections:
            if drive is None or Endpoint(*source) in drive:
                self.driver(source).push(word)
        return delivery

    async def run(self, *, max_cycles, watchdog=2000, until=None, drain=16):
        """Run traffic until every driver is empty and the scoreboard has everything.

        Parameters
        ----------
        max_cycles : int
            Cycle budget; exceeding it fails with the stuck report.
        watchdog : int
            Cycles without any transfer (while work is pending) before failing.
        until : callable, optional
            ``until(cycle) -> bool`` ends the run early (used by measurements).
        drain : int
            Cycles run after completion to catch late duplicates.

        Returns the number of cycles run.
        """
        dut = self.dut
        fe = FallingEdge(dut.clk)
        snk_valid = dut.snk_valid
        snk_data = self._snk_data
        endpoints = self.endpoints
        hooks = self.sink_hooks
        sb = self.scoreboard
        observe = sb.observe
        drivers = list(self.drivers.values())
        periodic = self._periodic
        start = self.cycle
        last_progress = self.cycle
        done_at = None
        while True:
            await fe
            self.cycle += 1
            cycle = self.cycle
            valid = int(snk_valid.value)
            if valid:
                last_progress = cycle
                while valid:
                    low = valid & -valid
                    k = low.bit_length() - 1
                    valid ^= low
                    word = int(snk_data[k].value)
                    observe(endpoints[k], word)
                    if k in hooks:
                        for hook in hooks[k]:
                            hook(cycle, word)
            # Checked before the drivers offer anything: nothing is left half-sent.
            if until is not None and until(cycle):
                break
            busy = False
            for drv in drivers:
                if drv._nonempty:
                    busy = True
                    if drv.step(cycle):
                        last_progress = cycle
                elif drv._valid_on:
                    drv.stop()
            for every, callback in periodic:
                if cycle % every == 0:
                    callback(cycle)
            if len(drivers) != len(self.drivers):       # a hook created a driver
                drivers = list(self.drivers.values())
            if not busy and sb.outstanding == 0:
                if done_at is None:
                    done_at = cycle
                if cycle - done_at >= drain:
                    break
            else:
                done_at = None
            if cycle - last_progress > watchdog:
                raise AssertionError(await self.stuck_report(
                    f"no progress for {watchdog} cycles (cycle {cycle})"))
            if cycle - start > max_cycles:
                raise AssertionError(await self.stuck_report(
                    f"cycle budget of {max_cycles} cycles exceeded"))
        for drv in self.drivers.values():
            drv.stop()
        if int(dut.proto_err.value):
            raise AssertionError("a mesh output raised valid on a stopped color "
                                 "(link protocol violation)")
        return self.cycle - start

    async def stuck_report(self, why):
        """Where wavelets are held: drivers, routers (QUEUED/BLOCKED), waiting sinks."""
        for drv in self.drivers.values():
            drv.stop()
        lines = [f"watchdog: {why}; {self.scoreboard.outstanding} wavelet(s) outstanding"]
        for drv in self.drivers.values():
            colors = drv.pending_colors()
            if colors:
                ready = drv.ready_bits()
                lines.append(f"  driver {describe(drv.endpoint)} input holds " + ", ".join(
                    f"color {c}: {n} ({'ready' if ready >> c & 1 else 'stopped'})"
                    for c, n in colors.items()))
        counters = await self.read_counters()
        for (x, y), tile in counters.items():
            for p in Port:
                if tile["queued"][p]:
                    colors = [c for c in range(32) if tile["queued"][p] >> c & 1]
                    lines.append(f"  router ({x}, {y}) input {p.name} holds colors {colors}; "
                                 f"blocked cycles per output " + ", ".join(
                                     f"{q.name}={tile['blocked'][q]}" for q in Port))
        for sink, color, source, n, word in self.scoreboard.missing()[:12]:
            lines.append(f"  {describe(sink)} output still waits for {n} wavelet(s) of "
                         f"color {color} from {describe(source)}, next {fmt_word(word)}")
        return "\n".join(lines)

    async def check_counters(self, delivery):
        """Compare every router's FORWARDED, RECEIVED and ERR_COUNT with the golden model."""
        counters = await self.read_counters()
        errors = []
        for (x, y), tile in counters.items():
            for p in Port:
                for name, expected in (("forwarded", delivery.forwarded.get((x, y, p), 0)),
                                       ("received", delivery.received.get((x, y, p), 0))):
                    if tile[name][p] != expected & 0xFFFFFFFF:
                        errors.append(f"router ({x}, {y}) {name.upper()}[{p.name}] = "
                                      f"{tile[name][p]}, golden model {expected}")
            expected = delivery.errors.get((x, y), 0)
            if tile["err_count"] != expected:
                errors.append(f"router ({x}, {y}) ERR_COUNT = {tile['err_count']}, golden "
                              f"model {expected}")
            if bool(tile["err_status"] & 1) != bool(expected):
                errors.append(f"router ({x}, {y}) ERR_STATUS = {tile['err_status']:#x}, "
                              f"golden model expects {expected} error(s)")
        assert not errors, "counters disagree:\n  " + "\n  ".join(errors)
        return counters

