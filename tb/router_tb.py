"""cocotb benches of a single router (the 1 x 1 :class:`tb.fabric_harness.MeshBench`).

Endpoint k of the 1 x 1 bench is port k of the router (N, E, S, W, RAMP), so every input
and output of the router has a driver or a sink with back-pressure.
"""

import random
import time

import cocotb
from cocotb.triggers import FallingEdge

from golden.routing import RouteTables, RoutingModel
from rtl.router import (Port, RouterErrorStatus, RouterInfo, RouterReg, counter_addr,
                        port_mask, route_addr, ROUTE_PORT_STRIDE)
from rtl.wavelet import FIELDS, NUM_COLORS, pack, unpack
from tb.fabric_link import FabricBench
from runtime.sim import params

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


_DATA_BITS = FIELDS["data"][1]
_SEQ_HIGH_BITS = FIELDS["index"][1] - 3       # the index's top 3 bits carry the port


def _flow_words(rng, source_port, colors, count, seq, invalid_rate=0.0, good=None):
    """Words from ``source_port`` until ``count`` of them satisfy ``good(color)`` (default:
    every word counts). Data and the low index bits are the flow's sequence number, the
    top index bits the source port, so every word is unique within its (sink, color)."""
    words = []
    n_good = 0
    while n_good < count:
        if invalid_rate and rng.random() < invalid_rate:
            color = rng.randrange(NUM_COLORS, 32)
        else:
            color = rng.choice(colors)
        n = seq.get((source_port, color), 0)
        seq[source_port, color] = n + 1
        words.append(pack(data=n & ((1 << _DATA_BITS) - 1),
                          index=(int(source_port) << _SEQ_HIGH_BITS) |
                          (n >> _DATA_BITS & ((1 << _SEQ_HIGH_BITS) - 1)),
                          ctrl=rng.getrandbits(1), color=color))
        n_good += good is None or good(color)
    return words


@cocotb.test()
async def random_traffic(dut):
    """Random traffic on all 5 inputs and 24 colors, random multicast masks, random
    back-pressure on every output and one color stalled for thousands of cycles: every
    wavelet delivered once, in flow order, uncorrupted; counters match the golden model.
    ``count`` (tb_params) good wavelets (valid color, non-empty route) are injected, plus
    the bad ones mixed in."""
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
        words = _flow_words(rng, port, range(NUM_COLORS), -(-count // 5), seq,
                            invalid_rate=0.01,
                            good=lambda c, p=port: tables.mask(0, 0, p, c) != 0)
        injections += [(_ep(port), w) for w in words]
    delivery = bench.expect(model, injections)
    n_bad = len(delivery.dropped)
    n_good = len(injections) - n_bad
    assert n_good >= count, f"only {n_good} good wavelets injected, {count} asked for"
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
    dut._log.info(f"seed {seed}: {len(injections)} wavelets injected ({n_good} good, "
                  f"{n_bad} bad), {delivery.expected_count()} delivered, "
                  f"{counters[TILE]['err_count']} dropped as bad traffic, {cycles} cycles in "
                  f"{wall:.1f} s ({cycles / wall:.0f} cycles/s); blocked cycles per output "
                  f"{blocked}")


@cocotb.test()
async def per_color_independence(dut):
    """A color stalled at its sink does not slow the other colors on the same link.

    Baseline: only the other colors are offered (back to back, no stalled color present).
    Then the stalled color is offered too while its sink holds it stopped: the others keep
    >= 90 % of the baseline and the link stays near its capacity of one wavelet per cycle.
    """
    bench = FabricBench(dut, 1, 1, seed=5)
    await bench.start()
    tables = RouteTables(1, 1)
    colors = [3, 9, 14, 20]
    stalled, others = colors[0], colors[1:]
    for c in colors:
        tables.set(0, 0, Port.W, c, port_mask(Port.E))
    model = RoutingModel(tables)
    await bench.load_tables(tables)
    rng = random.Random(5)
    seq = {}
    warm, measure, settle, hold = 200, 3000, 200, 2000
    # Enough of the others to keep them offered to the end of the last window.
    other_words = _flow_words(rng, Port.W, others, warm + 2 * measure + settle + hold + 600,
                              seq)
    stalled_words = _flow_words(rng, Port.W, [stalled], 400, seq)
    delivery = bench.expect(model, [(_ep(Port.W), w) for w in other_words + stalled_words],
                            drive=[])
    driver = bench.driver(_ep(Port.W))
    driver.extend(other_words)

    got = {}

    def count(cycle, word):
        c = unpack(word).color
        got[c] = got.get(c, 0) + 1
    bench.on_sink(_ep(Port.E), count)

    async def window(cycles):
        before = dict(got)
        end = bench.cycle + cycles
        await bench.run(max_cycles=cycles + 10, until=lambda c: c >= end)
        return sum(got.get(c, 0) - before.get(c, 0) for c in others) / cycles

    await window(warm)
    baseline = await window(measure)
    bench.set_sink(_ep(Port.E), stall=1 << stalled)
    driver.extend(stalled_words)
    await window(settle)                     # the stalled color fills its FIFO
    held = await window(measure)
    await window(hold)
    assert driver.pending > 0 and all(driver.pending_colors().get(c) for c in others), \
        "the other colors ran dry: the windows did not measure a saturated link"
    assert got.get(stalled, 0) == 0, \
        f"{got[stalled]} wavelet(s) of the stopped color {stalled} were delivered"
    bench.set_sink(_ep(Port.E), stall=0)
    await bench.run(max_cycles=40000)
    bench.scoreboard.check_complete()
    await bench.check_counters(delivery)
    dut._log.info(f"other colors {others}: {baseline:.3f} wavelets/cycle offered alone, "
                  f"{held:.3f} with color {stalled} offered and stopped "
                  f"(ratio {held / baseline:.3f})")
    assert baseline >= 0.95, f"the other colors alone reached only {baseline:.3f} " \
                             f"wavelets/cycle on an always-ready link"
    assert held >= 0.9 * baseline, \
        f"stalling color {stalled} cut the other colors from {baseline:.3f} to {held:.3f} " \
        f"wavelets/cycle (< 90 %)"
    assert held >= 0.95, f"with color {stalled} stopped the link carried only {held:.3f} " \
                         f"wavelets/cycle of the other colors (capacity 1)"


@cocotb.test()
async def blocked_counter(dut):
    """BLOCKED[o] counts exactly the cycles in which output o holds a wavelet to send and
    every color it could send is stopped downstream (docs/router.md): a head waiting k
    cycles behind its stopped color counts k; cycles in which another color leaves on o
    do not count; the other outputs count nothing."""
    bench = FabricBench(dut, 1, 1, seed=19)
    await bench.start()
    tables = RouteTables(1, 1)
    head_color, other_color = 5, 6
    for c in (head_color, other_color):
        tables.set(0, 0, Port.W, c, port_mask(Port.E))
    model = RoutingModel(tables)
    await bench.load_tables(tables)
    blocked_regs = [counter_addr(RouterReg.BLOCKED, p) for p in Port]
    sent, delivered = {}, []
    driver = bench.driver(_ep(Port.W))
    driver.on_send = lambda cycle, word: sent.__setitem__(word, cycle)
    bench.on_sink(_ep(Port.E), lambda cycle, word: delivered.append((cycle, word)))

    async def wait_behind_stop(k, companions, tag):
        """One head of ``head_color`` waits k cycles with its color stopped while
        ``companions`` wavelets of ``other_color`` pass; return (BLOCKED[E], expected)."""
        bench.set_sink(_ep(Port.E), stall=1 << head_color)
        await bench.cfg_write([(bench.reg_addr(0, 0, a), 0) for a in blocked_regs])
        head = pack(data=tag, color=head_color)
        extra = [pack(data=tag + 1 + i, color=other_color) for i in range(companions)]
        bench.expect(model, [(_ep(Port.W), w) for w in [head] + extra])
        await bench.run(max_cycles=100, until=lambda c: head in sent)
        arrive = sent[head] + 1                      # in its FIFO from this cycle on
        release = sent[head] + k                     # last cycle with its color stopped
        await bench.run(max_cycles=k + 10, until=lambda c: c >= release)
        bench.set_sink(_ep(Port.E), stall=0)         # ready again from cycle release + 1
        await bench.run(max_cycles=200)
        left = next(c for c, w in delivered if w == head)
        assert left == release + 1, \
            f"the head left at cycle {left}, expected {release + 1} (one cycle after its " \
            f"color was released)"
        passing = sum(1 for c, _ in delivered if arrive <= c <= release)
        values = await bench.read_router(0, 0, blocked_regs)
        others = {p.name: values[counter_addr(RouterReg.BLOCKED, p)] for p in Port
                  if p != Port.E}
        assert not any(others.values()), f"BLOCKED of outputs with nothing to send: {others}"
        return values[counter_addr(RouterReg.BLOCKED, Port.E)], k - passing, passing

    k = 37
    blocked, expected, passing = await wait_behind_stop(k, 0, 0)
    assert passing == 0 and expected == k
    assert blocked == k, f"BLOCKED[E] = {blocked} after a head waited {k} cycles behind " \
                         f"its stopped color, expected {k}"
    k = 60
    blocked, expected, passing = await wait_behind_stop(k, 20, 100)
    assert passing >= 15, f"only {passing} wavelets of color {other_color} passed the " \
                          f"stopped head: the test did not cover that case"
    assert blocked == expected, \
        f"BLOCKED[E] = {blocked}: the head waited {k} cycles, {passing} of them output E " \
        f"sent color {other_color}; expected {expected}"
    bench.scoreboard.check_complete()
    dut._log.info(f"BLOCKED[E]: 37 for a head stopped 37 cycles; {blocked} = {k} - "
                  f"{passing} when {passing} wavelets of another color left meanwhile")


@cocotb.test()
async def route_change_under_traffic(dut):
    """Clearing a route while its FIFO holds wavelets (docs/router.md, route changes): the
    queued wavelets wait, and leave by the new mask once the entry is rewritten. If the FIFO
    is full the color stays stopped upstream and nothing is lost; if not, wavelets arriving
    meanwhile are dropped and counted as empty-route errors."""
    bench = FabricBench(dut, 1, 1, seed=23)
    await bench.start()
    color = 5
    route = bench.reg_addr(0, 0, route_addr(Port.W, color))
    old, new = RouteTables(1, 1), RouteTables(1, 1)
    old.set(0, 0, Port.W, color, port_mask(Port.E))
    new.set(0, 0, Port.W, color, port_mask(Port.E, Port.RAMP))
    cleared = RoutingModel(RouteTables(1, 1))
    await bench.load_tables(old)
    delivered = []
    for sink in (Port.E, Port.RAMP):
        bench.on_sink(_ep(sink), lambda cycle, word: delivered.append(word))
    driver = bench.driver(_ep(Port.W))
    stop_all = 1 << color

    async def cycles(n):
        end = bench.cycle + n
        await bench.run(max_cycles=n + 10, until=lambda c: c >= end)

    async def hold_then_clear(words):
        """Queue ``words`` behind a stopped color, clear the route, release the color."""
        bench.set_sink(_ep(Port.E), stall=stop_all)
        bench.set_sink(_ep(Port.RAMP), stall=stop_all)
        bench.expect(RoutingModel(new), [(_ep(Port.W), w) for w in words])
        sent_before = driver.sent
        await cycles(10)
        assert driver.sent - sent_before == min(len(words), 2), \
            f"{driver.sent - sent_before} wavelets entered a FIFO of depth 2"
        await bench.cfg_write([(route, 0)])
        bench.set_sink(_ep(Port.E), stall=0)
        bench.set_sink(_ep(Port.RAMP), stall=0)
        await cycles(60)
        assert not delivered, f"a wavelet left by a cleared route: {delivered}"
        queued = (await bench.read_router(0, 0, [counter_addr(RouterReg.QUEUED, Port.W)]))[
            counter_addr(RouterReg.QUEUED, Port.W)]
        assert queued == 1 << color, f"QUEUED[W] = {queued:#x}, expected color {color}"

    # Full FIFO (2 wavelets) and 2 more waiting upstream: the color stays stopped.
    words = [pack(data=i, index=1, color=color) for i in range(4)]
    await hold_then_clear(words)
    assert driver.pending == 2, f"{driver.pending} wavelets still upstream, expected 2"
    await bench.cfg_write([(route, port_mask(Port.E, Port.RAMP))])
    await bench.run(max_cycles=200)
    assert sorted(delivered) == sorted(words * 2)

    # One wavelet queued: arrivals while the route is empty are dropped and counted.
    delivered.clear()
    await bench.cfg_write([(bench.reg_addr(0, 0, RouterReg.ERR_COUNT), 0),
                           (bench.reg_addr(0, 0, RouterReg.ERR_STATUS), 0)])
    head = pack(data=10, index=1, color=color)
    await hold_then_clear([head])
    late = [pack(data=11 + i, index=1, color=color) for i in range(3)]
    bench.expect(cleared, [(_ep(Port.W), w) for w in late])
    await cycles(20)
    assert driver.pending == 0, "the late arrivals were stopped, not accepted"
    regs = await bench.read_router(0, 0, [RouterReg.ERR_COUNT, RouterReg.ERR_STATUS])
    status = RouterErrorStatus.from_bits(regs[RouterReg.ERR_STATUS])
    assert regs[RouterReg.ERR_COUNT] == 3, f"ERR_COUNT = {regs[RouterReg.ERR_COUNT]}, " \
                                           f"expected the 3 late arrivals"
    first = (int(status.error), Port(int(status.port)), int(status.color),
             int(status.invalid_color))
    assert first == (1, Port.W, color, 0), \
        f"ERR_STATUS {regs[RouterReg.ERR_STATUS]:#x} = {first}, expected an empty route " \
        f"of input W color {color}"
    assert not delivered
    await bench.cfg_write([(route, port_mask(Port.E, Port.RAMP))])
    await bench.run(max_cycles=200)
    assert delivered == [head, head], delivered
    bench.scoreboard.check_complete()


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
        fields = unpack(word)
        flow = (fields.index, fields.color)
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
    delivered and do not stall the good traffic beside them. ERR_STATUS names the first
    error exactly: its input port, color and cause; the lowest port when two inputs err in
    the same cycle; later errors do not overwrite it."""
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
    error_regs = [RouterReg.ERR_STATUS, RouterReg.ERR_COUNT]
    sent = {}

    async def clear_errors():
        await bench.cfg_write([(bench.reg_addr(0, 0, r), 0) for r in error_regs])

    async def inject(bad):
        """Send ``[(port, color)]`` bad wavelets, one per port, all in the same cycle."""
        words = [(_ep(p), pack(data=len(sent) + i, index=int(p), color=c))
                 for i, (p, c) in enumerate(bad)]
        for ep, _ in words:
            bench.driver(ep).on_send = lambda cycle, word: sent.__setitem__(word, cycle)
        bench.expect(model, words)
        await bench.run(max_cycles=200)
        cycles = {sent[w] for _, w in words}
        assert len(cycles) == 1, f"the bad wavelets were sent in cycles {sorted(cycles)}"

    async def first_error():
        regs = await bench.read_router(0, 0, error_regs)
        status = RouterErrorStatus.from_bits(regs[RouterReg.ERR_STATUS])
        return ((int(status.error), Port(int(status.port)).name, int(status.color),
                 "invalid color" if status.invalid_color else "empty route"),
                regs[RouterReg.ERR_COUNT])

    directed = [
        # (bad wavelets sent together, then more sent later, expected first error)
        ([(Port.S, 6)], [], (1, "S", 6, "empty route")),
        ([(Port.E, 27)], [], (1, "E", 27, "invalid color")),
        ([(Port.W, 1), (Port.N, 30)], [], (1, "N", 30, "invalid color")),
        ([(Port.W, 1), (Port.RAMP, 25)], [], (1, "W", 1, "empty route")),
        ([(Port.RAMP, 2)], [(Port.W, 25), (Port.N, 6)], (1, "RAMP", 2, "empty route")),
    ]
    for together, later, expected in directed:
        await clear_errors()
        assert await first_error() == ((0, "N", 0, "empty route"), 0)
        await inject(together)
        for bad in later:
            await inject([bad])
        status, count = await first_error()
        names = [[(p.name, c) for p, c in group] for group in (together, later)]
        assert status == expected, \
            f"bad wavelets (port, color) {names[0]} in one cycle, then {names[1]}: " \
            f"ERR_STATUS says {status}, expected {expected}"
        assert count == len(together) + len(later), f"ERR_COUNT = {count}"

    # A mix: half good, a quarter empty routes, a quarter invalid colors on two inputs.
    await clear_errors()
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
    before = await bench.read_counters()
    delivery = bench.expect(model, injections)
    cycles = await bench.run(max_cycles=20000)
    bench.scoreboard.check_complete()
    after = await bench.read_counters()
    dropped = len(delivery.dropped)
    assert after[TILE]["err_count"] == dropped == 6000 - n_good
    for port, out in ((Port.W, Port.E), (Port.N, Port.S)):
        forwarded = after[TILE]["forwarded"][out] - before[TILE]["forwarded"][out]
        received = after[TILE]["received"][port] - before[TILE]["received"][port]
        assert received == 3000 and forwarded == delivery.forwarded[0, 0, out], \
            (port.name, received, forwarded)
    # Two inputs, each offering one wavelet per cycle: bad traffic costs no extra cycle.
    assert cycles <= 3000 + 20, f"3000 wavelets per input took {cycles} cycles"
    # Both registers clear by a write; traffic goes on.
    await clear_errors()
    after = await bench.read_router(0, 0, error_regs)
    assert after == {RouterReg.ERR_STATUS: 0, RouterReg.ERR_COUNT: 0}, after
    dut._log.info(f"{len(directed)} directed first-error cases; {dropped} bad wavelets "
                  f"dropped and counted, {n_good} good delivered in {cycles} cycles")


@cocotb.test()
async def generator_color_distribution(dut):
    """The bench top's hardware generator draws its colors uniformly over 0..gen_colors-1
    (each color within 20 % of the mean over 12,000 wavelets; folding 0..31 onto 0..23
    would send colors 0..7 twice as often)."""
    bench = FabricBench(dut, 1, 1, seed=29)
    await bench.start()
    tables = RouteTables(1, 1)
    for c in range(NUM_COLORS):
        tables.set(0, 0, Port.W, c, port_mask(Port.E))
    await bench.load_tables(tables)
    k_in = bench.endpoint_index(_ep(Port.W), "input")
    k_out = bench.endpoint_index(_ep(Port.E), "output")
    out_data = getattr(dut, f"snk_data__{k_out}")
    dut.gen_colors.value = NUM_COLORS
    dut.gen_en.value = 1 << k_in
    counts = [0] * 32
    fe = FallingEdge(dut.clk)
    for _ in range(12_000):
        await fe
        if int(dut.snk_valid.value) >> k_out & 1:
            counts[unpack(int(out_data.value)).color] += 1
    dut.gen_en.value = 0
    for _ in range(8):
        await fe
    total = sum(counts)
    mean = total / NUM_COLORS
    assert not any(counts[NUM_COLORS:]), f"colors >= {NUM_COLORS} generated: {counts}"
    assert total >= 11_000, f"the generator sent only {total} wavelets in 12,000 cycles"
    skewed = {c: n for c, n in enumerate(counts[:NUM_COLORS]) if abs(n - mean) > 0.2 * mean}
    assert not skewed, f"colors drawn off the mean of {mean:.0f}: {skewed}"
    dut._log.info(f"generator: {total} wavelets, per color {min(counts[:NUM_COLORS])} to "
                  f"{max(counts[:NUM_COLORS])} (mean {mean:.0f})")


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
