"""The W x H fabric: tiles placed by name, the north-edge weight streams (MemoryX), the row
configuration sequencers, the edge monitors and the run/watchdog logic (SPEC sections 5, 10).

::

      stream_0     stream_1           stream_{W-1}       (MemoryX: one memory + injector
         |            |                   |               per column, north edge)
    cfg_0 -> tile(0,0) - tile(1,0) - ... - tile(W-1,0) -> resp_0
    cfg_1 -> tile(0,1) - tile(1,1) - ... - tile(W-1,1) -> resp_1
      ...                                                 (configuration chain per row,
    cfg_{H-1} -> ...                     ... -> resp_{H-1}   west to east)

The tile (:class:`rtl.tile.Tile`: router + PE) is converted to Verilog once as module
``tile``; this top only places ``Instance("tile", ...)`` and wires neighbours, so its Verilog
grows with the wiring only (:func:`fabric_verilog`).

Host interface (every member below is a port of the top module, and the memories are
variables of the top module, so a Verilator model built with ``public="top"`` exposes all of
them to cocotb; the memories are written element by element over VPI, costing no cycles):

* ``stream_<x>`` (memory, ``stream_depth`` x 32): the wavelet words of column x's weight
  stream, used as a ring. ``stream_len[x]``: words written so far (free-running);
  ``stream_ptr[x]``: words injected so far. The injector offers word ``stream_ptr mod
  stream_depth`` to tile (x, 0)'s north input whenever ``stream_ptr != stream_len``, the run
  is started, and the word's color is ready (link protocol, :mod:`rtl.link`).
  ``streams_complete``: the host has written every stream word of this run (a run is only
  done once this is set).
* ``cfg_<y>`` (memory, ``cfg_depth`` x 32): row y's configuration program, a list of
  :class:`CfgCommand` words with their data words (format below). ``cfg_len[y]``: words in
  the program. A rising edge of ``cfg_start`` restarts every row's sequencer at word 0 (and
  its answer count at 0); each sequencer plays one chain slot per cycle.
  ``cfg_idle``: every sequencer is finished and the chains are drained.
* ``resp_<y>`` (memory, ``resp_depth`` x 32): the answers of row y's reads in issue order;
  ``resp_count[y]``: answers captured since ``cfg_start``. ``resp_unfilled``: sticky, a read
  reached the east end without an answer (it named a column outside the fabric).
* Run control: a rising edge of ``start`` clears the run state (stream pointers, cycle
  counters, done/stalled) and starts the injectors. ``run_cycles`` counts cycles from the
  start until ``done``; ``last_active`` is the last run cycle in which any PE was busy or a
  wavelet moved (injection, a RAMP in either direction, an edge output): the GEMM's measured
  length is ``last_active + 1``. ``done``: the streams are complete and fully injected, and
  nothing has been busy or moved for :attr:`Fabric.quiet_cycles` cycles.
* Watchdog: ``stall_cycles`` counts the cycles since anything last moved while a run is
  under way and not done; ``stalled`` is set while it is at least ``watchdog_limit``
  (0 = never). The host reads where traffic is held through the configuration chain, which
  does not depend on the data fabric.
* ``activity``: cycles in which something moved (for progress reports).
* ``pe_busy`` / ``pe_error``: one bit per tile, bit ``y * W + x``.
* ``north_<x>`` (memory, ``stream_depth`` x 32, written by the fabric): MemoryX's gradient
  port of column x (SPEC 11). Every wavelet tile (x, 0) sends north during a run is
  accepted (all colors ready) and stored at ``north_count[x] mod stream_depth``;
  ``north_count[x]`` counts them from the run's start (more than ``stream_depth`` means
  the first were overwritten: the host refuses such a run).
* Edge monitor: every other router output that leads off the fabric (east, south, west) is
  accepted (all colors ready, so nothing backs up) and counted: ``edge_count`` (cycles with
  such traffic), ``edge_first`` (the first such wavelet) and ``edge_first_link`` (its index
  in :func:`rtl.mesh.edge_endpoints` order: north x, east y, south x, west y).
  Nothing is expected there: any is a configuration error.

Configuration program format (:class:`CfgCommand`)
--------------------------------------------------
One command word, then its operand words:

=============== ==================================== =============================== ======
op              operand words                        chain slots                     cycles
=============== ==================================== =============================== ======
``NOP``         none                                 none                            1
``WRITE``       the data word                        write ``addr``                  2
``READ``        none                                 read ``addr``                   1
``WRITE_BURST`` count n, then n data words           write ``addr .. addr + n - 1``  n + 2
``READ_BURST``  count n                              read ``addr .. addr + n - 1``   n + 2
=============== ==================================== =============================== ======

``x`` is the tile's column in the row (:data:`rtl.tile.BROADCAST_X`: every tile, writes only)
and ``addr`` a tile address (:class:`rtl.link.TileRegion`).
"""

import hashlib
import re
from pathlib import Path

from amaranth import Cat, ClockSignal, Const, Instance, Module, Mux, ResetSignal, Signal
from amaranth.lib import data, enum, memory, wiring
from amaranth.lib.wiring import In, Out

from rtl.export import concat, to_verilog
from rtl.link import CFG_ADDR_BITS
from rtl.mesh import edge_endpoints, instance_ports
from rtl.router import Port, link_name
from rtl.tile import (MAX_COLUMNS, STAGE_LATENCY, TILE_MODULE, TILE_X_BITS,
                      ChainOp, ChainPacket, Tile, tile_signature)
from rtl.wavelet import FIELDS, NUM_COLORS

__all__ = ["Fabric", "HostMemory", "DEFAULT_DEPTHS", "host_memory_kinds", "CfgCommand", "CfgCommandOp", "FABRIC_MODULE",
           "fabric_verilog", "fabric_sources", "verilator_config", "compact_memory_init", "encode_command"]

#: Verilog module name of the fabric top.
FABRIC_MODULE = "fabric"

_COLOR_OFF, _COLOR_WIDTH = FIELDS["color"]


class CfgCommandOp(enum.Enum, shape=3):
    """Operation of a configuration program word (see the module docstring)."""
    NOP = 0
    WRITE = 1
    READ = 2
    WRITE_BURST = 3
    READ_BURST = 4


class CfgCommand(data.Struct):
    """A command word of a row's configuration program."""
    addr: CFG_ADDR_BITS
    x: TILE_X_BITS
    op: CfgCommandOp
    _pad: 32 - CFG_ADDR_BITS - TILE_X_BITS - 3


_CMD = {name: (field.offset, field.width) for name, field in data.Layout.cast(CfgCommand)}


def encode_command(op, x, addr):
    """The 32-bit :class:`CfgCommand` word (derived from the layout)."""
    op = CfgCommandOp(op)
    for name, value in (("x", x), ("addr", addr)):
        width = _CMD[name][1]
        if not 0 <= int(value) < (1 << width):
            raise ValueError(f"configuration command field {name}={value} does not fit in "
                             f"{width} bits")
    return ((op.value << _CMD["op"][0]) | (int(x) << _CMD["x"][0])
            | (int(addr) << _CMD["addr"][0]))


def _pow2(name, value):
    if not isinstance(value, int) or value < 2 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two >= 2, not {value!r}")


class HostMemory(wiring.Component):
    """A 32-bit memory that the host fills or empties over VPI, element by element.

    The fabric side has one port: a combinational read (``addr`` -> ``data``) or, when
    ``writable``, a write (``addr``, ``data``, ``en``). The words live in the variable
    :attr:`MEMORY_VAR` of module :attr:`module_name`, which the Verilator build makes public
    (:func:`public_config`). One module per (depth, kind) is converted once and placed by
    name, like the tile: converting a memory's initial contents is slow in Amaranth.
    """

    MEMORY_VAR = "mem"

    def __init__(self, depth, writable=False):
        self._depth = depth
        self._writable = bool(writable)
        super().__init__(self.signature_of(depth, writable))

    @staticmethod
    def signature_of(depth, writable):
        """The fabric-side signature of a memory of ``depth`` words."""
        _pow2("depth", depth)
        abits = (depth - 1).bit_length()
        if writable:
            return wiring.Signature({"addr": In(abits), "data": In(32), "en": In(1)})
        return wiring.Signature({"addr": In(abits), "data": Out(32)})

    @property
    def depth(self):
        return self._depth

    @staticmethod
    def name_of(depth, writable):
        """Module name of the memory of ``depth`` words (``writable`` from the fabric)."""
        return f"host_mem_{'w' if writable else 'r'}{depth}"

    @property
    def module_name(self):
        return self.name_of(self._depth, self._writable)

    def elaborate(self, platform):
        m = Module()
        m.submodules[self.MEMORY_VAR] = mem = memory.Memory(shape=32, depth=self._depth,
                                                            init=[])
        if self._writable:
            wr = mem.write_port()
            m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.data), wr.en.eq(self.en)]
        else:
            rd = mem.read_port(domain="comb")
            m.d.comb += [rd.addr.eq(self.addr), self.data.eq(rd.data)]
        return m


#: Default memory depths of the fabric top (words).
DEFAULT_DEPTHS = {"stream_depth": 16384, "cfg_depth": 8192, "resp_depth": 4096}


def host_memory_kinds(stream_depth, cfg_depth, resp_depth):
    """``{module name: (depth, writable)}`` of the :class:`HostMemory` blocks of a fabric."""
    kinds = [(stream_depth, False), (cfg_depth, False), (resp_depth, True),
             (stream_depth, True)]
    return {HostMemory.name_of(depth, writable): (depth, writable)
            for depth, writable in kinds}


class Fabric(wiring.Component):
    """W x H tiles with weight-stream injectors, configuration chains and run monitors.

    Parameters
    ----------
    width, height : int
        Fabric size in tiles (1 x 1, 1 x N and N x 1 work; width <= 255).
    stream_depth, cfg_depth, resp_depth : int
        Words of each column's stream memory, each row's configuration program memory and
        each row's answer memory (powers of two; streams and answers are rings).
    router, pe : dict, optional
        Parameters of the tile's router and PE (:class:`rtl.tile.Tile`). The top only needs
        the tile's signature; :meth:`make_tile` builds the tile that is converted separately
        as module ``tile``.
    """

    def __init__(self, width, height, *, stream_depth=DEFAULT_DEPTHS["stream_depth"],
                 cfg_depth=DEFAULT_DEPTHS["cfg_depth"], resp_depth=DEFAULT_DEPTHS["resp_depth"],
                 router=None, pe=None):
        for name, value in (("width", width), ("height", height)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"fabric {name} must be a positive int, not {value!r}")
        if width > MAX_COLUMNS:
            raise ValueError(f"fabric width {width} exceeds {MAX_COLUMNS} columns (the "
                             f"configuration chain's column address has {TILE_X_BITS} bits)")
        _pow2("stream_depth", stream_depth)
        _pow2("cfg_depth", cfg_depth)
        _pow2("resp_depth", resp_depth)
        self._width, self._height = width, height
        self._stream_depth, self._cfg_depth, self._resp_depth = \
            stream_depth, cfg_depth, resp_depth
        self._router_args = dict(router or {})
        self._pe_args = dict(pe or {})
        n_edges = 2 * (width + height)
        super().__init__({
            "start": In(1),
            "streams_complete": In(1),
            "stream_len": In(32).array(width),
            "stream_ptr": Out(32).array(width),
            "cfg_start": In(1),
            "cfg_len": In(32).array(height),
            "cfg_idle": Out(1),
            "resp_count": Out(32).array(height),
            "resp_unfilled": Out(1),
            "watchdog_limit": In(32),
            "running": Out(1),
            "done": Out(1),
            "stalled": Out(1),
            "run_cycles": Out(32),
            "last_active": Out(32),
            "stall_cycles": Out(32),
            "activity": Out(32),
            "pe_busy": Out(width * height),
            "pe_error": Out(width * height),
            "north_count": Out(32).array(width),
            "edge_count": Out(32),
            "edge_first": Out(32),
            "edge_first_link": Out(range(max(2, n_edges))),
        })

    @property
    def width(self):
        return self._width

    @property
    def height(self):
        return self._height

    @property
    def router_args(self):
        return dict(self._router_args)

    @property
    def pe_args(self):
        return dict(self._pe_args)

    def make_tile(self):
        """The tile this fabric places (a new :class:`rtl.tile.Tile`)."""
        return Tile(router=self._router_args, pe=self._pe_args)

    @property
    def stream_depth(self):
        return self._stream_depth

    @property
    def cfg_depth(self):
        return self._cfg_depth

    @property
    def resp_depth(self):
        return self._resp_depth

    @property
    def quiet_cycles(self):
        """Cycles with nothing busy and nothing moving after which a run is done: longer
        than any wavelet can spend crossing the fabric unobserved."""
        return 4 * (self._width + self._height) + 32

    @property
    def chain_latency(self):
        """Cycles from a row sequencer to the row's answer capture."""
        return STAGE_LATENCY * self._width + 1

    def elaborate(self, platform):
        m = Module()
        W, H = self._width, self._height
        sig = tile_signature()

        # Host inputs are registered before they reach any logic, and the tiles get a
        # registered reset: no tile logic then depends combinationally on a top-level input,
        # so Verilator does not re-evaluate the tiles' combinational logic at every clock
        # edge the bench drives (its "input combinational" region).
        tile_rst = Signal(reset_less=True)
        m.d.sync += tile_rst.eq(ResetSignal())
        host = {}
        for name in ("start", "streams_complete", "cfg_start", "watchdog_limit"):
            port = getattr(self, name)
            host[name] = Signal.like(port, name=f"{name}_q")
            m.d.sync += host[name].eq(port)
        for name, count in (("stream_len", W), ("cfg_len", H)):
            host[name] = []
            for i in range(count):
                reg = Signal(32, name=f"{name}_q_{i}")
                m.d.sync += reg.eq(getattr(self, name)[i])
                host[name].append(reg)

        # --- tiles, placed by name ------------------------------------------------------
        tiles = {}
        for y in range(H):
            for x in range(W):
                iface = sig.create(path=(f"t{x}_{y}",))
                tiles[x, y] = iface
                m.submodules[f"tile_{x}_{y}"] = Instance(
                    TILE_MODULE, i_clk=ClockSignal(), i_rst=tile_rst,
                    **instance_ports(sig, iface))
                m.d.comb += iface.tile_x.eq(x)

        # Neighbour links; edge inputs idle (north inputs: the injectors, below).
        edge_out = []
        for (x, y), t in tiles.items():
            for port in (Port.N, Port.E, Port.S, Port.W):
                dx, dy = port.delta
                out_link = getattr(t, link_name("out", port))
                if (x + dx, y + dy) in tiles:
                    peer = tiles[x + dx, y + dy]
                    in_link = getattr(peer, link_name("in", port.opposite))
                    m.d.comb += [in_link.valid.eq(out_link.valid),
                                 in_link.payload.eq(out_link.payload),
                                 out_link.ready.eq(in_link.ready)]
        for y in range(H):
            for x in range(W - 1):
                m.d.comb += tiles[x + 1, y].chain_in.eq(tiles[x, y].chain_out)
        stray = []                                # (index in edge_endpoints order, link)
        for k, (x, y, port) in enumerate(edge_endpoints(W, H)):
            t = tiles[x, y]
            out_link = getattr(t, link_name("out", port))
            m.d.comb += out_link.ready.eq(Const(-1, NUM_COLORS))
            edge_out.append(out_link)
            if port != Port.N:
                stray.append((k, out_link))
            if port != Port.N:
                in_link = getattr(t, link_name("in", port))
                m.d.comb += [in_link.valid.eq(0), in_link.payload.eq(0)]

        # --- run control ------------------------------------------------------------------
        start_d = Signal()
        m.d.sync += start_d.eq(host["start"])
        go = host["start"] & ~start_d
        running = self.running
        done = self.done

        # --- north edge: MemoryX stream injectors -------------------------------------------
        injected = []
        for x in range(W):
            rd = self._host_memory(m, f"stream_{x}", self._stream_depth)
            ptr = self.stream_ptr[x]
            link = tiles[x, 0].in_n
            word = rd.data
            color = word[_COLOR_OFF:_COLOR_OFF + _COLOR_WIDTH]
            have = running & (ptr != host["stream_len"][x])
            ok = (color >= NUM_COLORS) | link.ready.bit_select(color, 1)
            take = Signal(name=f"inject_{x}")
            m.d.comb += [
                rd.addr.eq(ptr[:(self._stream_depth - 1).bit_length()]),
                link.payload.eq(word),
                link.valid.eq(have & ok),
                take.eq(have & ok),
            ]
            with m.If(go):
                m.d.sync += ptr.eq(0)
            with m.Elif(take):
                m.d.sync += ptr.eq(ptr + 1)
            injected.append(take)

        # --- north edge: MemoryX's gradient ports (one capture memory per column) ----------
        depth_bits = (self._stream_depth - 1).bit_length()
        for x in range(W):
            wr = self._host_memory(m, f"north_{x}", self._stream_depth, writable=True)
            link = tiles[x, 0].out_n
            count = self.north_count[x]
            m.d.comb += [wr.addr.eq(count[:depth_bits]), wr.data.eq(link.payload),
                         wr.en.eq(running & link.valid)]
            with m.If(go):
                m.d.sync += count.eq(0)
            with m.Elif(running & link.valid):
                m.d.sync += count.eq(count + 1)

        # --- progress, done and watchdog -----------------------------------------------------
        busy_bits = Cat(*[tiles[x, y].pe_busy for y in range(H) for x in range(W)])
        error_bits = Cat(*[tiles[x, y].pe_error for y in range(H) for x in range(W)])
        m.d.comb += [self.pe_busy.eq(busy_bits), self.pe_error.eq(error_bits)]
        ramp_bits = Cat(*[tiles[x, y].ramp_active for y in range(H) for x in range(W)])
        edge_valid = Cat(*[link.valid for link in edge_out])
        moved = Signal()
        m.d.comb += moved.eq(ramp_bits.any() | Cat(*injected).any() | edge_valid.any())
        streams_done = Signal()
        m.d.comb += streams_done.eq(host["streams_complete"] & Cat(
            *[self.stream_ptr[x] == host["stream_len"][x] for x in range(W)]).all())
        quiet = Signal(range(self.quiet_cycles + 1))
        with m.If(go):
            m.d.sync += [running.eq(1), done.eq(0), self.run_cycles.eq(0),
                         self.last_active.eq(0), self.stall_cycles.eq(0), quiet.eq(0),
                         self.activity.eq(0)]
        with m.Elif(running & ~done):
            m.d.sync += self.run_cycles.eq(self.run_cycles + 1)
            with m.If(moved | busy_bits.any()):
                m.d.sync += [self.last_active.eq(self.run_cycles), quiet.eq(0)]
            with m.Elif(quiet != self.quiet_cycles):
                m.d.sync += quiet.eq(quiet + 1)
            with m.If(moved):
                m.d.sync += [self.stall_cycles.eq(0), self.activity.eq(self.activity + 1)]
            with m.Else():
                m.d.sync += self.stall_cycles.eq(self.stall_cycles + 1)
            with m.If(streams_done & (quiet == self.quiet_cycles)):
                m.d.sync += done.eq(1)
        with m.If(~host["start"]):
            m.d.sync += running.eq(0)
        limit = host["watchdog_limit"]
        m.d.comb += self.stalled.eq(running & ~done & (limit != 0)
                                    & (self.stall_cycles >= limit))

        # --- edge monitor (east, south and west: the north edge is captured above) ----------
        seen = Signal()
        stray_valid = Cat(*[link.valid for _, link in stray])
        with m.If(go):
            m.d.sync += [self.edge_count.eq(0), seen.eq(0)]
        with m.Elif(stray_valid.any()):
            m.d.sync += self.edge_count.eq(self.edge_count + 1)
            with m.If(~seen):
                m.d.sync += seen.eq(1)
                for k, link in reversed(stray):
                    with m.If(link.valid):
                        m.d.sync += [self.edge_first.eq(link.payload),
                                     self.edge_first_link.eq(k)]

        # --- configuration chains: one sequencer and one answer capture per row -----------
        cfg_start_d = Signal()
        m.d.sync += cfg_start_d.eq(host["cfg_start"])
        cfg_go = host["cfg_start"] & ~cfg_start_d
        emitting = []
        seq_idle = []
        for y in range(H):
            emit, idle = self._sequencer(m, y, cfg_go, tiles[0, y].chain_in,
                                         host["cfg_len"][y])
            emitting.append(emit)
            seq_idle.append(idle)
            self._capture(m, y, cfg_go, tiles[W - 1, y].chain_out)
        drain = Signal(range(self.chain_latency + 4))
        with m.If(Cat(*emitting).any()):
            m.d.sync += drain.eq(self.chain_latency + 3)
        with m.Elif(drain != 0):
            m.d.sync += drain.eq(drain - 1)
        m.d.comb += self.cfg_idle.eq(Cat(*seq_idle).all() & (drain == 0) & ~cfg_go)
        return m

    def _host_memory(self, m, name, depth, writable=False):
        """Place a :class:`HostMemory` instance called ``name``; return its fabric-side port."""
        sig = HostMemory.signature_of(depth, writable)
        port = sig.create(path=(name,))
        clocks = {"i_clk": ClockSignal(), "i_rst": ResetSignal()} if writable else {}
        m.submodules[name] = Instance(HostMemory.name_of(depth, writable), **clocks,
                                      **instance_ports(sig, port))
        return port

    def host_memory_kinds(self):
        """``{module name: (depth, writable)}`` of the :class:`HostMemory` blocks placed."""
        return host_memory_kinds(self._stream_depth, self._cfg_depth, self._resp_depth)

    def _sequencer(self, m, y, go, chain_in, length):
        """Row y's program player; returns (emitting this cycle, idle) signals."""
        rd = self._host_memory(m, f"cfg_{y}", self._cfg_depth)
        ptr = Signal(32, name=f"cfg{y}_ptr")
        state = Signal(3, name=f"cfg{y}_state")   # 0 head, 1 data, 2 count, 3 wburst, 4 rburst
        header = Signal(CfgCommand, name=f"cfg{y}_header")
        remaining = Signal(32, name=f"cfg{y}_remaining")
        addr = Signal(CFG_ADDR_BITS, name=f"cfg{y}_addr")
        out = Signal(ChainPacket, name=f"cfg{y}_slot")
        word = rd.data
        cmd = data.View(CfgCommand, word)
        # Armed by a start, disarmed at the end of the program: a new length written before
        # the next start does not set the sequencer going again.
        armed = Signal(name=f"cfg{y}_armed")
        have = armed & (ptr < length)
        m.d.comb += [rd.addr.eq(ptr[:(self._cfg_depth - 1).bit_length()]),
                     chain_in.eq(out)]
        m.d.sync += out.op.eq(ChainOp.NONE)
        with m.If(go):
            m.d.sync += [ptr.eq(0), state.eq(0), armed.eq(1)]
        with m.Else():
            with m.Switch(state):
                with m.Case(0):
                    with m.If(~have):
                        m.d.sync += armed.eq(0)
                    with m.Else():
                        m.d.sync += [ptr.eq(ptr + 1), header.eq(word), addr.eq(cmd.addr)]
                        with m.Switch(cmd.op):
                            with m.Case(CfgCommandOp.WRITE):
                                m.d.sync += state.eq(1)
                            with m.Case(CfgCommandOp.READ):
                                m.d.sync += [out.op.eq(ChainOp.READ), out.x.eq(cmd.x),
                                             out.addr.eq(cmd.addr), out.data.eq(0),
                                             out.filled.eq(0)]
                            with m.Case(CfgCommandOp.WRITE_BURST, CfgCommandOp.READ_BURST):
                                m.d.sync += state.eq(2)
                with m.Case(1):
                    with m.If(have):
                        m.d.sync += [ptr.eq(ptr + 1), state.eq(0),
                                     out.op.eq(ChainOp.WRITE), out.x.eq(header.x),
                                     out.addr.eq(addr), out.data.eq(word), out.filled.eq(0)]
                with m.Case(2):
                    with m.If(have):
                        m.d.sync += [ptr.eq(ptr + 1), remaining.eq(word)]
                        with m.If(word == 0):
                            m.d.sync += state.eq(0)
                        with m.Elif(header.op == CfgCommandOp.WRITE_BURST):
                            m.d.sync += state.eq(3)
                        with m.Else():
                            m.d.sync += state.eq(4)
                with m.Case(3):
                    with m.If(have):
                        m.d.sync += [ptr.eq(ptr + 1), remaining.eq(remaining - 1),
                                     addr.eq(addr + 1),
                                     out.op.eq(ChainOp.WRITE), out.x.eq(header.x),
                                     out.addr.eq(addr), out.data.eq(word), out.filled.eq(0)]
                        with m.If(remaining == 1):
                            m.d.sync += state.eq(0)
                with m.Case(4):
                    m.d.sync += [remaining.eq(remaining - 1), addr.eq(addr + 1),
                                 out.op.eq(ChainOp.READ), out.x.eq(header.x),
                                 out.addr.eq(addr), out.data.eq(0), out.filled.eq(0)]
                    with m.If(remaining == 1):
                        m.d.sync += state.eq(0)
        emitting = Signal(name=f"cfg{y}_emitting")
        idle = Signal(name=f"cfg{y}_idle")
        m.d.comb += [emitting.eq(out.op != ChainOp.NONE),
                     idle.eq((state == 0) & ~have & ~emitting)]
        return emitting, idle

    def _capture(self, m, y, go, chain_out):
        """Row y's answer capture at the east end of its chain."""
        wr = self._host_memory(m, f"resp_{y}", self._resp_depth, writable=True)
        count = self.resp_count[y]
        answer = chain_out.op == ChainOp.READ
        m.d.comb += [
            wr.addr.eq(count[:(self._resp_depth - 1).bit_length()]),
            wr.data.eq(Mux(chain_out.filled, chain_out.data, 0)),
            wr.en.eq(answer & ~go),
        ]
        with m.If(go):
            m.d.sync += count.eq(0)
        with m.Elif(answer):
            m.d.sync += count.eq(count + 1)
            with m.If(~chain_out.filled):
                m.d.sync += self.resp_unfilled.eq(1)


# --- Verilog ---------------------------------------------------------------------------------

_INIT_BLOCK = re.compile(r"^(?P<indent>[ \t]*)initial begin\n(?P<body>(?:[ \t]+\S.*\n)*?)"
                         r"(?P=indent)end\n", re.M)
_INIT_LINE = re.compile(r"^[ \t]+(?P<name>\\\S+ |[A-Za-z_][\w$]*)\[(?P<index>\d+)\] = "
                        r"(?P<width>\d+)'[dh]0+;$")


def compact_memory_init(verilog):
    """Rewrite every all-zero, word-by-word memory initialisation as a loop.

    Amaranth spells out ``mem[i] = 0`` for every word of a memory with no initial contents
    (12 500 lines for one PE's SRAM); the loop is the same initial state in four lines and
    keeps the generated C++ small. Blocks that are not exactly ``name[0..n-1] = 0`` in order
    are left alone.
    """
    counter = [0]

    def replace(match):
        lines = match.group("body").splitlines()
        parsed = [_INIT_LINE.match(line) for line in lines]
        if not parsed or not all(parsed):
            return match.group(0)
        name = parsed[0].group("name")
        if any(p.group("name") != name or int(p.group("index")) != i
               for i, p in enumerate(parsed)):
            return match.group(0)
        counter[0] += 1
        ind = match.group("indent")
        var = f"__meminit_{counter[0]}"
        return (f"{ind}initial begin : {var}\n{ind}  integer i;\n"
                f"{ind}  for (i = 0; i < {len(parsed)}; i = i + 1) {name}[i] = "
                f"{parsed[0].group('width')}'d0;\n{ind}end\n")

    return _INIT_BLOCK.sub(replace, verilog)


#: RTL sources that the tile does not depend on (its cache key ignores them).
_NOT_IN_TILE = {"fabric.py", "top.py", "mesh.py"}


def _source_digest(exclude=()):
    """Hash of the RTL source files: converted blocks are reused while none changed."""
    import amaranth
    digest = hashlib.sha256(amaranth.__version__.encode())
    root = Path(__file__).resolve().parent
    for path in sorted(root.rglob("*.py")):
        if path.name in exclude and path.parent == root:
            continue
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cached(cache_dir, name, key, convert, exclude=()):
    """``convert()`` (Verilog text), cached as ``<cache_dir>/<name>-<hash>.v``."""
    if cache_dir is None:
        return convert()
    digest = hashlib.sha256(repr((_source_digest(exclude), key)).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{name}-{digest}.v"
    if path.exists():
        return path.read_text()
    text = convert()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{id(text)}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return text


def fabric_verilog(width, height, *, cache_dir=None, **params):
    """Verilog of a ``width`` x ``height`` :class:`Fabric` (module :data:`FABRIC_MODULE`),
    then the tile and the host memories, each once.

    ``params`` are the other arguments of :class:`Fabric`. With ``cache_dir``, every
    converted block is cached there by the hash of the RTL sources and its parameters
    (converting the PE takes tens of seconds); nothing is elaborated when all are cached.
    """
    top, tile = fabric_sources(width, height, cache_dir=cache_dir, **params)
    return concat(top, tile)


def fabric_sources(width, height, *, cache_dir=None, **params):
    """``(top, tile)``: the Verilog of :func:`fabric_verilog` in two parts, the fabric top
    with the host memories, and the tile (module :data:`rtl.tile.TILE_MODULE`) on its own,
    for simulators that build the tile as a separate model (``runtime/tile_model.py``)."""
    depths = {**DEFAULT_DEPTHS, **{k: v for k, v in params.items() if k in DEFAULT_DEPTHS}}
    router, pe = dict(params.get("router") or {}), dict(params.get("pe") or {})
    unknown = set(params) - set(DEFAULT_DEPTHS) - {"router", "pe"}
    if unknown:
        raise TypeError(f"unknown Fabric parameters {sorted(unknown)}")
    args = dict(depths, router=router, pe=pe)
    key = (width, height, sorted(depths.items()), sorted(router.items()), sorted(pe.items()))
    top = [_cached(cache_dir, FABRIC_MODULE, key,
                   lambda: compact_memory_init(to_verilog(Fabric(width, height, **args),
                                                          FABRIC_MODULE)))]
    tile = _cached(cache_dir, TILE_MODULE, key[3:],
                   lambda: compact_memory_init(to_verilog(Tile(router=router, pe=pe),
                                                          TILE_MODULE)),
                   exclude=_NOT_IN_TILE)
    for name, (depth, writable) in host_memory_kinds(**depths).items():
        top.append(_cached(cache_dir, name, (),
                           lambda depth=depth, writable=writable, name=name:
                           compact_memory_init(to_verilog(HostMemory(depth, writable),
                                                          name))))
    return concat(*top), tile


def verilator_config(*, hierarchical=False, **depths):
    """Verilator configuration of a fabric build: the host memories' words are made public
    (the top module's own signals are made public by :func:`runtime.sim.build`).

    The normal build simulates each tile as its own Verilated model behind a DPI wrapper
    (``runtime/tile_model.py``). With ``hierarchical``, the tile is instead a Verilator
    hierarchical block (pass the file with ``--hierarchical``): also compiled once, but
    about twice as slow to simulate; kept to compare the two
    (``WSE_TILE_MODEL=hierarchical python bench/gemm_fabric.py``).
    """
    depths = {**DEFAULT_DEPTHS, **depths}
    lines = ["`verilator_config"]
    if hierarchical:
        lines.append(f'hier_block -module "{TILE_MODULE}"')
    for name in sorted(host_memory_kinds(**depths)):
        lines.append(f'public_flat_rw -module "{name}" -var "{HostMemory.MEMORY_VAR}"')
    return "\n".join(lines) + "\n"
