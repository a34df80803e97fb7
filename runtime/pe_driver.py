"""cocotb driver of the processing element: configuration port, rx driver, tx sink.

One :class:`PEBench` owns every port of the ``pe`` top and advances the simulation one cycle
at a time in :meth:`PEBench.step`, so the configuration writes and reads, the wavelets offered
on ``rx`` and the back-pressure on ``tx`` stay cycle-consistent without concurrent coroutines:

* rx driver: per-color queues of wavelets; each cycle it offers, with probability
  ``1 - idle``, the head of a color whose ``rx.ready`` bit is set (round-robin over colors),
  so one color's stall never blocks another and the link protocol is respected.
* tx sink: each cycle every color's ready bit is set with probability ``1 - stall``
  (per-color random back-pressure); it checks that ``tx.valid`` is only raised for a ready
  color and logs ``(data, index, ctrl, cycle)`` per color.
* cfg: writes and reads are queued and issued one per cycle; a read's data is sampled one
  cycle later, as the bus defines.

Handshakes are decided in the read-write phase after a clock edge (registered state is
settled) and sampled in the read-only phase before the next edge.
"""

import random
from collections import defaultdict, deque

from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, ReadWrite, RisingEdge

from rtl.pe.regs import Counter, Reg, counter_addr, reg_addr
from rtl.wavelet import NUM_COLORS, pack, unpack

__all__ = ["PEBench", "bench_verilog", "PE_PORTS"]


class PEBench:
    """Cycle-stepped bench of one PE (see module docstring)."""

    def __init__(self, dut, *, seed=1, idle=0.0, stall=0.0):
        self.dut = dut
        self.rng = random.Random(seed)
        self.idle = idle
        self.stall = stall
        self.cycle = 0
        self.rx_q = defaultdict(deque)      # color -> deque of wavelet words
        self.rx_sent = defaultdict(list)    # color -> [(word, cycle)]
        self.tx_got = defaultdict(list)     # color -> [(data, index, ctrl, cycle)]
        self.cfg_q = deque()                # ("w", addr, value) / ("r", addr, results list)
        self._read_pending = None
        self._rx_rr = 0
        self.tx_ready_mask = (1 << NUM_COLORS) - 1
        self.hooks = []                     # callables run every cycle (after sampling)

    async def start(self):
        """Start the clock and reset the PE."""
        Clock(self.dut.clk, 10, unit="ns").start()
        d = self.dut
        d.rst.value = 1
        d.rx__valid.value = 0
        d.rx__payload.value = 0
        d.tx__ready.value = 0
        d.cfg__we.value = 0
        d.cfg__re.value = 0
        d.cfg__addr.value = 0
        d.cfg__wdata.value = 0
        await ClockCycles(d.clk, 3)
        d.rst.value = 0
        await RisingEdge(d.clk)

    # --- one cycle ---------------------------------------------------------------------------
    async def step(self):
        """Advance one clock cycle, driving and sampling every port."""
        d = self.dut
        await ReadWrite()
        # Configuration port.
        if self.cfg_q:
            kind, addr, arg = self.cfg_q.popleft()
            d.cfg__addr.value = addr
            d.cfg__we.value = int(kind == "w")
            d.cfg__re.value = int(kind == "r")
            if kind == "w":
                d.cfg__wdata.value = arg
            issued_read = arg if kind == "r" else None
        else:
            d.cfg__we.value = 0
            d.cfg__re.value = 0
            issued_read = None
        # rx driver: a ready color with something to send, round-robin.
        offer = None
        if self.rx_q and self.rng.random() >= self.idle:
            ready = int(d.rx__ready.value)
            colors = sorted(self.rx_q)
            n = len(colors)
            for i in range(n):
                c = colors[(self._rx_rr + i) % n]
                if c >= NUM_COLORS or (ready >> c) & 1:
                    offer = c
                    self._rx_rr = (self._rx_rr + i + 1) % n
                    break
        if offer is not None:
            d.rx__valid.value = 1
            d.rx__payload.value = self.rx_q[offer][0]
        else:
            d.rx__valid.value = 0
        # tx sink: random per-color back-pressure.
        if self.stall:
            mask = 0
            for c in range(NUM_COLORS):
                if self.rng.random() >= self.stall:
                    mask |= 1 << c
            self.tx_ready_mask = mask
        else:
            self.tx_ready_mask = (1 << NUM_COLORS) - 1
        d.tx__ready.value = self.tx_ready_mask
        await ReadOnly()
        # Sample.
        if self._read_pending is not None:
            self._read_pending.append(int(d.cfg__rdata.value))
        self._read_pending = issued_read
        if offer is not None:
            word = self.rx_q[offer].popleft()
            self.rx_sent[offer].append((word, self.cycle))
            if not self.rx_q[offer]:
                del self.rx_q[offer]
        if int(d.tx__valid.value):
            w = unpack(int(d.tx__payload.value))
            assert (self.tx_ready_mask >> w.color) & 1, \
                f"cycle {self.cycle}: tx.valid on color {w.color} whose ready bit is clear"
            self.tx_got[w.color].append((w.data, w.index, w.ctrl, self.cycle))
        for hook in self.hooks:
            hook(self)
        await RisingEdge(d.clk)
        self.cycle += 1

    # --- transactions ------------------------------------------------------------------------
    def send(self, color, wavelets):
        """Queue wavelets ``(data, index, ctrl)`` (or words) on ``color``."""
        for w in wavelets:
            word = w if isinstance(w, int) else pack(w[0], w[1], w[2], color)
            self.rx_q[color].append(word)

    async def write(self, writes):
        """Issue ``(addr, value)`` configuration writes, one per cycle."""
        for addr, value in writes:
            self.cfg_q.append(("w", int(addr), int(value) & 0xFFFFFFFF))
        while self.cfg_q:
            await self.step()

    async def read(self, addrs):
        """Read configuration addresses (pipelined, one per cycle); return the values."""
        out = []
        for addr in addrs:
            self.cfg_q.append(("r", int(addr), out))
        while self.cfg_q or self._read_pending is not None:
            await self.step()
        return out

    async def read_reg(self, reg):
        return (await self.read([reg_addr(reg)]))[0]

    async def counters(self):
        """All performance counters as a dict name -> value."""
        values = await self.read([counter_addr(c) for c in Counter])
        return {c.name: v for c, v in zip(Counter, values)}

    async def run_until_idle(self, budget=20000, what="the PE"):
        """Step until nothing is queued on rx and the PE reports not busy."""
        start = self.cycle
        quiet = 0
        while True:
            await self.step()
            busy = int(self.dut.busy.value)
            quiet = quiet + 1 if (not busy and not self.rx_q and not self.cfg_q) else 0
            if quiet >= 2:
                return self.cycle - start
            if self.cycle - start > budget:
                status = await self.read_reg(Reg.STATUS)
                raise AssertionError(
                    f"{what} still busy after {budget} cycles (STATUS={status:#x}, "
                    f"rx queued {sum(len(q) for q in self.rx_q.values())}, "
                    f"tx received {sum(len(v) for v in self.tx_got.values())})")

    async def run(self, cycles):
        for _ in range(cycles):
            await self.step()


#: Ports of the PE as Amaranth names them in Verilog: (direction, name, width).
PE_PORTS = [
    ("input", "clk", 1), ("input", "rst", 1),
    ("input", "rx__valid", 1), ("input", "rx__payload", 32), ("output", "rx__ready", 24),
    ("output", "tx__valid", 1), ("output", "tx__payload", 32), ("input", "tx__ready", 24),
    ("input", "cfg__addr", 18), ("input", "cfg__wdata", 32), ("input", "cfg__we", 1),
    ("input", "cfg__re", 1), ("output", "cfg__rdata", 32),
    ("output", "error", 1), ("output", "busy", 1),
    ("output", "trace__valid", 1), ("output", "trace__payload", 85),
    ("output", "dbg", 37),
]


def bench_verilog(top="pe_bench", **pe_params):
    """Verilog of the PE (module ``pe``) under a thin top ``top`` with the same ports.

    The benches make the top module's signals visible to cocotb; with the PE one level
    down, its internals stay private and Verilator optimises them as in the fabric.
    """
    from rtl.pe.pe import pe_verilog
    ports = ",\n".join(f"  {d} {'[%d:0] ' % (w - 1) if w > 1 else ''}{n}"
                       for d, n, w in PE_PORTS)
    conns = ",\n".join(f"    .{n}({n})" for _, n, _ in PE_PORTS)
    wrapper = f"module {top}(\n{ports}\n);\n  pe pe (\n{conns}\n  );\nendmodule\n"
    return pe_verilog("pe", **pe_params) + "\n" + wrapper
