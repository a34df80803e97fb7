"""cocotb benches of a router mesh (:class:`tb.fabric_harness.MeshBench`, W x H from
``tb_params``): hop latency and link throughput, and the traffic patterns the weight-
streaming GEMM needs (column broadcast, east chain through every PE, westward return path
with taps), uniform random unicast, and per-color independence over several hops.

Every test runs on any size, single rows and columns included (SPEC: 1 x 1 and 1 x N);
``tb_params`` ``scale`` (default 1) shortens the patterns' streams for quick runs.
"""

import random

import cocotb

from golden.routing import RouteTables, RoutingModel, xy_unicast_tables
from rtl.router import Port, port_mask
from rtl.wavelet import pack, unpack
from tb.fabric_link import FabricBench
from runtime.sim import params


def _size():
    p = params()
    return p.get("width", 4), p.get("height", 4)


async def _bench(dut, seed):
    w, h = _size()
    bench = FabricBench(dut, w, h, seed)
    await bench.start()
    return bench, w, h


def _ramps(w, h):
    return [(x, y, Port.RAMP) for y in range(h) for x in range(w)]


def _count(n):
    """Wavelets per source of a pattern: ``n`` scaled by the ``scale`` tb_param (short
    runs on the extra mesh sizes of the regression)."""
    return max(50, int(n * params().get("scale", 1.0)))


def _random_sinks(bench, rng, endpoints):
    for ep in endpoints:
        bench.set_sink(ep, mode=rng.randrange(1, 4))


@cocotb.test()
async def latency_and_throughput(dut):
    """One cycle per hop on three straight paths that share no link; one wavelet per cycle
    sustained by each flow, all three at once. Any size: on a single row (H = 1) the third
    path runs westward (the row's west edge input is the first path's)."""
    bench, w, h = await _bench(dut, 21)
    tables = RouteTables(w, h)
    row, col = h // 2, w // 2
    for x in range(w):                       # west edge -> east edge along a row
        tables.set(x, row, Port.W, 1, port_mask(Port.E))
    for y in range(h):                       # north edge -> south edge down a column
        tables.set(col, y, Port.N, 2, port_mask(Port.S))
    if h > 1:                                # west edge -> RAMP of the last tile, row 0
        for x in range(w):
            tables.set(x, 0, Port.W, 3, port_mask(Port.E if x < w - 1 else Port.RAMP))
        third = ((0, 0, Port.W), (w - 1, 0, Port.RAMP), w)
    else:                                    # east edge -> RAMP of the first tile
        for x in range(w):
            tables.set(x, 0, Port.E, 3, port_mask(Port.W if x > 0 else Port.RAMP))
        third = ((w - 1, 0, Port.E), (0, 0, Port.RAMP), w)
    model = RoutingModel(tables)
    model.validate()
    await bench.load_tables(tables)
    paths = {1: ((0, row, Port.W), (w - 1, row, Port.E), w),
             2: ((col, 0, Port.N), (col, h - 1, Port.S), h),
             3: third}
    assert len({src for src, _, _ in paths.values()}) == 3

    sent, got = {}, {}
    for color, (src, dst, hops) in paths.items():
        bench.driver(src).on_send = lambda cycle, word: sent.__setitem__(word, cycle)
        bench.on_sink(dst, lambda cycle, word: got.__setitem__(word, cycle))

    # Latency: isolated wavelets, one every 16 cycles on each path.
    singles = [(paths[c][0], pack(data=i, index=c, color=c)) for i in range(20)
               for c in paths]
    delivery = model.deliver(singles)
    bench.scoreboard.expect(delivery)
    pending = list(singles)

    def inject(cycle):
        for _ in range(len(paths)):
            if pending:
                src, word = pending.pop(0)
                bench.driver(src).push(word)
    bench.every(16, inject)
    await bench.run(max_cycles=2000, until=lambda c: not pending and
                    bench.scoreboard.outstanding == 0)
    bench.stop_every()
    for color, (src, dst, hops) in paths.items():
        lat = {got[word] - sent[word] for s, word in singles if unpack(word).color == color}
        assert lat == {hops}, f"color {color} {src} -> {dst}: latency {lat}, expected " \
                              f"{hops} cycles for {hops} routers"

    # Throughput: 2000 back-to-back wavelets per path, all three paths at once.
    sent.clear()
    got.clear()
    n = 2000
    burst = [(paths[c][0], pack(data=i, index=100 + c, color=c)) for c in paths
             for i in range(n)]
    delivery = bench.expect(model, burst)
    cycles = await bench.run(max_cycles=4 * n)
    bench.scoreboard.check_complete()
    for color, (src, dst, hops) in paths.items():
        words = [word for s, word in burst if unpack(word).color == color]
        t_in = sorted(sent[word] for word in words)
        t_out = sorted(got[word] for word in words)
        assert t_in[-1] - t_in[0] == n - 1, f"color {color}: the source was stopped"
        assert t_out[-1] - t_out[0] == n - 1, \
            f"color {color}: {n} wavelets left {dst} over {t_out[-1] - t_out[0] + 1} cycles"
    dut._log.info(f"{w} x {h}: latency = hops on 3 paths ({w}, {h}, {w} hops); {n} "
                  f"wavelets per path in {n} consecutive cycles (run {cycles} cycles)")


@cocotb.test()
async def column_broadcast(dut):
    """A north-edge injection reaches the RAMP of every tile of its column, in order."""
    bench, w, h = await _bench(dut, 22)
    rng = random.Random(22)
    tables = RouteTables(w, h)
    color = 2
    for x in range(w):
        for y in range(h):
            tables.set(x, y, Port.N, color, port_mask(Port.S, Port.RAMP))
    model = RoutingModel(tables)
    model.validate()
    await bench.load_tables(tables)
    n = _count(1500)
    streams = {x: [pack(data=i, index=x, ctrl=i & 1, color=color) for i in range(n)]
               for x in range(w)}
    injections = [((x, 0, Port.N), word) for x in range(w) for word in streams[x]]
    delivery = bench.expect(model, injections)
    for x in range(w):
        bench.driver((x, 0, Port.N), idle=0.1)
    sinks = _ramps(w, h) + [(x, h - 1, Port.S) for x in range(w)]
    got = {sink: [] for sink in sinks}
    for sink in sinks:
        bench.on_sink(sink, lambda cycle, word, seen=got[sink]: seen.append(word))
    _random_sinks(bench, rng, sinks)
    cycles = await bench.run(max_cycles=50000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    # What the hardware delivered: every RAMP of column x (and its south edge) received
    # column x's whole stream, in order, and nothing else.
    for (x, y, port), words in got.items():
        assert words == streams[x], \
            f"tile ({x}, {y}) {port.name} received {len(words)} wavelets, not the " \
            f"{n} of column {x} in order"
    dut._log.info(f"column broadcast: {len(injections)} injected, "
                  f"{delivery.expected_count()} delivered in {cycles} cycles")


@cocotb.test()
async def east_chain_through_every_pe(dut):
    """Each tile receives from the west on its RAMP and sends east on the same color; the
    bench is every PE and echoes what it receives. The stream crosses every PE, in order."""
    bench, w, h = await _bench(dut, 23)
    rng = random.Random(23)
    tables = RouteTables(w, h)
    color = 3
    for x in range(w):
        for y in range(h):
            tables.set(x, y, Port.W, color, port_mask(Port.RAMP))
            tables.set(x, y, Port.RAMP, color, port_mask(Port.E))
    model = RoutingModel(tables)
    model.validate()
    await bench.load_tables(tables)
    n = _count(800)
    injections = []
    for y in range(h):
        words = [pack(data=i, index=y, ctrl=i & 1, color=color) for i in range(n)]
        injections += [((0, y, Port.W), wd) for wd in words]
        injections += [((x, y, Port.RAMP), wd) for x in range(w) for wd in words]
    # Only the west edge is driven now; every PE forwards what it gets.
    delivery = bench.expect(model, injections, drive=[(0, y, Port.W) for y in range(h)])
    for x, y, port in _ramps(w, h):
        echo = bench.driver((x, y, Port.RAMP), idle=0.2)
        bench.on_sink((x, y, Port.RAMP), lambda cycle, word, d=echo: d.push(word))
    _random_sinks(bench, rng, _ramps(w, h) + [(w - 1, y, Port.E) for y in range(h)])
    cycles = await bench.run(max_cycles=50000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"east chain: {n} wavelets per row through {w} PE(s) in {cycles} cycles")


@cocotb.test()
async def return_path_with_taps(dut):
    """A westward stream along every row, tapped at every RAMP on the way."""
    bench, w, h = await _bench(dut, 24)
    rng = random.Random(24)
    tables = RouteTables(w, h)
    color = 4
    for x in range(w):
        for y in range(h):
            tables.set(x, y, Port.E, color, port_mask(Port.W, Port.RAMP))
    model = RoutingModel(tables)
    model.validate()
    await bench.load_tables(tables)
    injections = [((w - 1, y, Port.E), pack(data=i, index=y, color=color))
                  for y in range(h) for i in range(_count(1500))]
    delivery = bench.expect(model, injections)
    _random_sinks(bench, rng, _ramps(w, h) + [(0, y, Port.W) for y in range(h)])
    cycles = await bench.run(max_cycles=50000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"return path: {len(injections)} injected, {delivery.expected_count()} "
                  f"delivered in {cycles} cycles")


@cocotb.test()
async def random_unicast(dut):
    """Uniform random unicast between all RAMPs (XY routes, one color per destination),
    random idle insertion and back-pressure; every flow arrives complete and in order."""
    bench, w, h = await _bench(dut, 25)
    rng = random.Random(25)
    assert w * h <= 24, "one color per destination tile"
    tables = xy_unicast_tables(w, h, list(range(w * h)))
    model = RoutingModel(tables)
    sources = [((x, y, Port.RAMP), d) for x, y, _ in _ramps(w, h) for d in range(w * h)]
    issues = model.check(sources, allow_merge=True)
    assert not issues, issues
    await bench.load_tables(tables)
    injections = []
    seq = {}
    for x, y, port in _ramps(w, h):
        for _ in range(_count(1500)):
            d = rng.randrange(w * h)
            n = seq.get((x, y, d), 0)
            seq[x, y, d] = n + 1
            injections.append(((x, y, port), pack(data=n, index=y * w + x, color=d)))
    delivery = bench.expect(model, injections)
    for ep in _ramps(w, h):
        bench.driver(ep, idle=rng.choice((0.0, 0.2, 0.5)))
    _random_sinks(bench, rng, _ramps(w, h))
    cycles = await bench.run(max_cycles=100000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"random unicast: {len(injections)} wavelets between {w * h} RAMPs in "
                  f"{cycles} cycles")


@cocotb.test()
async def per_color_independence_multihop(dut):
    """One color held stopped at the end of a row fills its FIFOs in every router on the
    way, while the other colors sharing those links keep >= 90 % of the throughput they
    reach when offered alone, and the row's links stay near one wavelet per cycle."""
    bench, w, h = await _bench(dut, 26)
    tables = RouteTables(w, h)
    row = 1 % h
    colors = [5, 6, 7, 8]
    stalled = colors[0]
    for c in colors:
        for x in range(w):
            tables.set(x, row, Port.W, c, port_mask(Port.E))
    tables.set(0, row, Port.RAMP, 9, port_mask(Port.E))     # joins the row at tile 0
    for x in range(1, w):
        tables.set(x, row, Port.W, 9, port_mask(Port.E))
    model = RoutingModel(tables)
    model.validate()
    await bench.load_tables(tables)
    others = colors[1:] + [9]
    warm, settle, measure = 200, 300, max(1000, _count(3000))
    # Each of the 4 other colors gets a quarter of the link: enough to stay offered to the
    # end of the last window.
    per_color = (warm + settle + 2 * measure) // 4 + 600
    west, ramp = (0, row, Port.W), (0, row, Port.RAMP)
    words = {c: [pack(data=i, index=1 if c != 9 else 2, color=c) for i in range(per_color)]
             for c in colors + [9]}
    injections = [(ramp if c == 9 else west, wd) for c, ws in words.items() for wd in ws]
    delivery = bench.expect(model, injections, drive=[])
    for c in others:
        bench.driver(ramp if c == 9 else west).extend(words[c])
    sink = (w - 1, row, Port.E)
    got = {}

    def count(cycle, word):
        c = unpack(word).color
        got[c] = got.get(c, 0) + 1
    bench.on_sink(sink, count)

    async def window(cycles):
        before = dict(got)
        end = bench.cycle + cycles
        await bench.run(max_cycles=cycles + 10, until=lambda c: c >= end)
        return sum(got.get(c, 0) - before.get(c, 0) for c in others) / cycles

    await window(warm)
    baseline = await window(measure)                  # the other colors alone
    bench.set_sink(sink, stall=1 << stalled)
    bench.driver(west).extend(words[stalled])
    await window(settle)
    held = await window(measure)                      # ... beside the stopped color
    offered = {c: bench.driver(ramp if c == 9 else west).pending_colors().get(c, 0)
               for c in others}
    assert all(offered.values()), \
        f"a color ran dry, the windows did not measure a saturated link: {offered}"
    assert got.get(stalled, 0) == 0, f"the stopped color {stalled} was delivered"
    counters = await bench.read_counters()
    for x in range(w):
        queued = counters[x, row]["queued"][Port.W]
        assert queued >> stalled & 1, f"router ({x}, {row}) holds no color {stalled}"
    bench.set_sink(sink, stall=0)
    await bench.run(max_cycles=60000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"other colors {others} over {w} hop(s): {baseline:.3f} wavelets/cycle "
                  f"offered alone, {held:.3f} beside color {stalled} stopped (ratio "
                  f"{held / baseline:.3f})")
    assert baseline >= 0.95, f"the other colors alone reached only {baseline:.3f} " \
                             f"wavelets/cycle on an always-ready row"
    assert held >= 0.9 * baseline, f"stalling color {stalled} cut the others from " \
                                   f"{baseline:.3f} to {held:.3f} wavelets/cycle"
    assert held >= 0.95, f"with color {stalled} stopped the row carried only {held:.3f} " \
                         f"wavelets/cycle of the other colors (capacity 1)"
