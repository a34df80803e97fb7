"""cocotb benches of a single router (the 1 x 1 :class:`tb.fabric_harness.MeshBench`).

Endpoint k of the 1 x 1 bench is port k of the router (N, E, S, W, RAMP), so every input
and output of the router has a driver or a sink with back-pressure.
"""

import random
import time

import cocotb

from golden.routing import RouteTables, RoutingModel
from rtl.router import (Port, RouterErrorStatus, RouterInfo, RouterReg, counter_addr,
                        port_mask, route_addr, ROUTE_PORT_STRIDE)
from rtl.wavelet import NUM_COLORS, pack
from tb.fabric_link import FabricBench
from tb.sim import params

TILE = (0, 0)


def _ep(port):
    return (0, 0, Port(port))


def _random_mask(rng):
    r = rng.random()
    if r < 0.5:
        return 1 << rng.randrange(5)
    if r < 0.85:
        return port_mask(*rng.sample(list(Port), rng.choice((2, 3))))
    return port_mask(*rng.sample(list(Port), rng.choice((4, 5))))


def _flow_words(rng, source_port, colors, count, seq, invalid_rate=0.0):
    """``count`` words from ``source_port``: data is the flow's sequence number and index
    carries the source, so every word is unique within its (sink, color)."""
    words = []
    for _ in range(count):
        if invalid_rate and rng.random() < invalid_rate:
            color = rng.randrange(NUM_COLORS, 32)
        else:
            color = rng.choice(colors)
        n = seq.get((source_port, color), 0)
        seq[source_port, color] = n + 1
        words.append(pack(data=n & 0xFFFF, index=(int(source_port) << 7) | (n >> 16 & 0x7F),
                          ctrl=rng.getrandbits(1), color=color))
    return words


@cocotb.test()
async def random_traffic(dut):
    """Random traffic on all 5 inputs and 24 colors, random multicast masks, random
    back-pressure on every output and one color stalled for thousands of cycles: every
    wavelet delivered once, in flow order, uncorrupted; counters match the golden model."""
    p = params()
    seed, count = p.get("seed", 1), p.get("count", 100_000)
    rng = random.Random(seed)
    bench = FabricBench(dut, 1, 1, seed)
    await bench.start()

    tables = RouteTables(1, 1)
    for port in Port:
        for color in range(NUM_COLORS):
            # A few empty routes: bad traffic mixed into the good.
            tables.set(0, 0, port, color, 0 if rng.random() < 0.03 else _random_mask(rng))
    model = RoutingModel(tables)
    await bench.load_tables(tables)

    seq = {}
    injections = []
    for port in Port:
        words = _flow_words(rng, port, range(NUM_COLORS), count // 5, seq, invalid_rate=0.01)
        injections += [(_ep(port), w) for w in words]
    delivery = bench.expect(model, injections)
    for port in Port:
        bench.driver(_ep(port), idle=rng.choice((0.0, 0.1, 0.3)))

    def reshuffle(cycle):
        for port in Port:
            bench.set_sink(_ep(port), mode=rng.randrange(4))
        if cycle == 4000:          # one color of one sink stalled for 6000 cycles
            bench.set_sink(_ep(Port.S), stall=1 << 7)
        if cycle == 10000:
            bench.set_sink(_ep(Port.S), stall=0)
    reshuffle(0)
    bench.every(2000, reshuffle)

    start = time.monotonic()
    cycles = await bench.run(max_cycles=20 * count, watchdog=8000)
    wall = time.monotonic() - start
    bench.scoreboard.check_complete()
    counters = await bench.check_counters(delivery)
    blocked = counters[TILE]["blocked"]
    assert sum(blocked) > 0, "random back-pressure never blocked an output"
    dut._log.info(f"seed {seed}: {len(injections)} wavelets injected, "
                  f"{delivery.expected_count()} delivered, {sum(delivery.errors.values())} "
                  f"dropped as bad traffic, {cycles} cycles in {wall:.1f} s "
                  f"({cycles / wall:.0f} cycles/s); blocked cycles per output {blocked}")


@cocotb.test()
async def per_color_independence(dut):
    """A color stalled at its sink does not slow the other colors on the same link."""
    bench = FabricBench(dut, 1, 1, seed=5)
    await bench.start()
    tables = RouteTables(1, 1)
    colors = [3, 9, 14, 20]
    stalled = colors[0]
    for c in colors:
        tables.set(0, 0, Port.W, c, port_mask(Port.E))
    model = RoutingModel(tables)
    await bench.load_tables(tables)
    seq = {}
    words = _flow_words(random.Random(5), Port.W, colors, 16000, seq)
    delivery = bench.expect(model, [(_ep(Port.W), w) for w in words])

    got = {}

    def count(cycle, word):
        c = word >> 27
        got[c] = got.get(c, 0) + 1
    bench.on_sink(_ep(Port.E), count)

    async def window(cycles):
        before = dict(got)
        await bench.run(max_cycles=cycles + 10, until=lambda c, end=bench.cycle + cycles:
                        c >= end)
        return sum(got.get(c, 0) - before.get(c, 0) for c in colors[1:]) / cycles

    await window(200)                        # warm-up
    free = await window(3000)
    bench.set_sink(_ep(Port.E), stall=1 << stalled)
    await window(200)                        # the stalled color fills its FIFO
    held = await window(3000)
    stalled_before = got.get(stalled, 0)
    await window(2000)
    assert got.get(stalled, 0) == stalled_before, "the stalled color was delivered"
    bench.set_sink(_ep(Port.E), stall=0)
    await bench.run(max_cycles=40000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"other colors: {free:.3f} wavelets/cycle free, {held:.3f} with color "
                  f"{stalled} stalled (ratio {held / free:.2f})")
    assert held >= 0.9 * free, \
        f"stalling color {stalled} cut the other colors from {free:.3f} to {held:.3f} " \
        f"wavelets/cycle (< 90 %)"


@cocotb.test()
async def fairness_full_contention(dut):
    """All 5 inputs x 24 colors contend for output E. A flow's wait is the time from when
    its next wavelet could leave (in the router and its predecessor gone) to when it does;
    round-robin bounds it by (requesters - 1) = 119 cycles, and the output never idles."""
    bench = FabricBench(dut, 1, 1, seed=7)
    await bench.start()
    tables = RouteTables(1, 1)
    for port in Port:
        for c in range(NUM_COLORS):
            tables.set(0, 0, port, c, port_mask(Port.E))
    model = RoutingModel(tables)
    await bench.load_tables(tables)
    per_flow = 40
    injections = []
    for port in Port:
        for n in range(per_flow):
            for c in range(NUM_COLORS):
                injections.append((_ep(port), pack(data=n, index=int(port), color=c)))
    delivery = bench.expect(model, injections)
    flows = len(Port) * NUM_COLORS
    bound = flows - 1                  # documented: wait <= (requesters - 1) cycles

    sent = {}                          # word -> cycle it was offered (enters a cycle later)
    last = {}                          # flow -> cycle of its last delivery
    waits = {}

    def on_send(cycle, word):
        sent[word] = cycle
    for port in Port:
        bench.driver(_ep(port)).on_send = on_send

    def watch(cycle, word):
        flow = (word >> 16 & 0x3FF, word >> 27)
        ready_at = max(sent.pop(word) + 1, last.get(flow, -1) + 1)
        waits[flow] = max(waits.get(flow, 0), cycle - ready_at)
        last[flow] = cycle
    bench.on_sink(_ep(Port.E), watch)
    cycles = await bench.run(max_cycles=20 * len(injections))
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    worst = max(waits.values())
    assert len(waits) == flows
    dut._log.info(f"{flows} flows, {len(injections)} wavelets in {cycles} cycles; longest "
                  f"wait of a flow whose wavelet could leave: {worst} cycles (bound {bound})")
    assert worst <= bound, f"a flow waited {worst} cycles > bound {bound}: " + str(
        sorted(waits.items(), key=lambda kv: -kv[1])[:5])
    assert cycles <= len(injections) + 200, \
        f"output E idled: {len(injections)} wavelets took {cycles} cycles"


@cocotb.test()
async def bad_traffic(dut):
    """Invalid colors and empty routes set the sticky error bit and counter, are not
    delivered and do not stall the good traffic beside them."""
    bench = FabricBench(dut, 1, 1, seed=11)
    await bench.start()
    tables = RouteTables(1, 1)
    good = [0, 5, 23]
    empty = [1, 6]
    for c in good:
        tables.set(0, 0, Port.W, c, port_mask(Port.E))
        tables.set(0, 0, Port.N, c, port_mask(Port.S))
    model = RoutingModel(tables)
    await bench.load_tables(tables)
    rng = random.Random(11)
    injections = []
    n_good = 0
    for port in (Port.W, Port.N):
        for n in range(3000):
            r = rng.random()
            color = good[n % 3] if r < 0.5 else (rng.choice(empty) if r < 0.75
                                                  else rng.randrange(NUM_COLORS, 32))
            n_good += color in good
            injections.append((_ep(port), pack(data=n, index=int(port), color=color)))
    delivery = bench.expect(model, injections)
    cycles = await bench.run(max_cycles=20000)
    bench.scoreboard.check_complete()
    counters = await bench.check_counters(delivery)
    dropped = sum(delivery.errors.values())
    assert counters[TILE]["err_count"] == dropped == 6000 - n_good
    # Two inputs, each offering one wavelet per cycle: bad traffic costs no extra cycle.
    assert cycles <= 3000 + 20, f"3000 wavelets per input took {cycles} cycles"
    status = RouterErrorStatus.from_bits(counters[TILE]["err_status"])
    first_port, first_color = Port(int(status.port)), int(status.color)
    assert status.error
    assert first_port in (Port.W, Port.N)
    if status.invalid_color:
        assert first_color >= NUM_COLORS
    else:
        assert first_color in empty
    # Both registers clear by a write; traffic goes on.
    await bench.cfg_write([(bench.reg_addr(0, 0, RouterReg.ERR_STATUS), 0),
                           (bench.reg_addr(0, 0, RouterReg.ERR_COUNT), 0)])
    after = await bench.read_router(0, 0, [RouterReg.ERR_STATUS, RouterReg.ERR_COUNT])
    assert after == {RouterReg.ERR_STATUS: 0, RouterReg.ERR_COUNT: 0}, after
    dut._log.info(f"{dropped} bad wavelets dropped and counted, first: port "
                  f"{first_port.name} color {first_color}; {n_good} good delivered in "
                  f"{cycles} cycles")


@cocotb.test()
async def watchdog_reports_stuck(dut):
    """A run that stops moving fails, naming the port and color that hold wavelets."""
    bench = FabricBench(dut, 1, 1, seed=13)
    await bench.start()
    tables = RouteTables(1, 1)
    tables.set(0, 0, Port.W, 5, port_mask(Port.E))
    await bench.load_tables(tables)
    bench.set_sink(_ep(Port.E), stall=1 << 5)
    bench.expect(RoutingModel(tables), [(_ep(Port.W), pack(data=i, color=5))
                                        for i in range(10)])
    try:
        await bench.run(max_cycles=5000, watchdog=300)
    except AssertionError as exc:
        report = str(exc)
    else:
        raise AssertionError("the watchdog did not fire on a stalled color")
    dut._log.info(report)
    assert "no progress for 300 cycles" in report
    assert "router (0, 0) input W holds colors [5]" in report, report
    assert "driver tile (0, 0) W input holds color 5: 8 (stopped)" in report, report
    assert "tile (0, 0) E output still waits for 10 wavelet(s) of color 5" in report, report


@cocotb.test()
async def config_registers(dut):
    """Route words read back, INFO describes the router, counters clear by a write."""
    bench = FabricBench(dut, 1, 1, seed=17)
    await bench.start()
    rng = random.Random(17)
    entries = {(p, c): rng.randrange(32) for p in Port for c in range(NUM_COLORS)}
    await bench.cfg_write([(bench.reg_addr(0, 0, route_addr(p, c)), m | 0xFFE0)
                           for (p, c), m in entries.items()])
    addrs = [route_addr(p, c) for p, c in entries]
    values = await bench.read_router(0, 0, addrs)
    assert [values[a] for a in addrs] == list(entries.values())
    # Colors beyond num_colors: not stored, read 0.
    await bench.cfg_write([(bench.reg_addr(0, 0, route_addr(Port.N, 30)), 0x1F)])
    assert (await bench.read_router(0, 0, [route_addr(Port.N, 30)]))[
        route_addr(Port.N, 30)] == 0
    assert route_addr(Port.RAMP, 0) == 4 * ROUTE_PORT_STRIDE
    info = RouterInfo.from_bits((await bench.read_router(0, 0, [RouterReg.INFO]))[RouterReg.INFO])
    assert (info.num_colors, info.fifo_depth, info.num_ports) == (NUM_COLORS, 2, 5)
    # Traffic to move the counters, then clear them.
    tables = RouteTables(1, 1)
    tables.set(0, 0, Port.RAMP, 2, port_mask(Port.N, Port.E))
    await bench.load_tables(tables)
    model = RoutingModel(tables)
    delivery = bench.expect(model, [(_ep(Port.RAMP), pack(data=i, color=2))
                                    for i in range(50)])
    await bench.run(max_cycles=1000)
    counters = await bench.check_counters(delivery)
    assert counters[TILE]["forwarded"][Port.N] == 50
    cycles_reg = (await bench.read_router(0, 0, [RouterReg.CYCLES]))[RouterReg.CYCLES]
    assert cycles_reg > 50
    clear = [counter_addr(r, p) for r in (RouterReg.FORWARDED, RouterReg.BLOCKED,
                                          RouterReg.RECEIVED) for p in Port]
    clear.append(RouterReg.CYCLES)
    await bench.cfg_write([(bench.reg_addr(0, 0, a), 0xFFFF) for a in clear])
    values = await bench.read_router(0, 0, clear[:-1])
    assert not any(values.values()), values
