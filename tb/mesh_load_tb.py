"""cocotb benchmark: simulated cycles per second of a router mesh under full random load.

Every mesh input is driven by the bench top's hardware generator (a random wavelet on a
random routed color every cycle, sent when its color is ready), the routes are X-then-Y
unicast to one RAMP per color, every sink is always ready, and Python only waits on a
timer, so the figure is the simulator's speed, not Python's. Parameters (``tb_params``):
``width``, ``height``, ``cycles`` per window, ``repeats``, ``out`` (a JSON file for the
results).
"""

import json
import statistics
import time

import cocotb
from cocotb.triggers import Timer

from golden.routing import xy_unicast_tables
from rtl.wavelet import NUM_COLORS
from tb.fabric_link import FabricBench
from runtime.sim import params


def spread_destinations(width, height, colors=NUM_COLORS):
    """One destination tile per color, spread over the mesh (all tiles if they fit)."""
    tiles = width * height
    n = min(colors, tiles)
    return [c * tiles // n for c in range(n)]


@cocotb.test()
async def full_random_load(dut):
    """Cycles per second with every input generating traffic on every cycle."""
    p = params()
    w, h = p["width"], p["height"]
    cycles, repeats = p.get("cycles", 10000), p.get("repeats", 5)
    bench = FabricBench(dut, w, h, seed=31)
    await bench.start()
    dests = spread_destinations(w, h)
    await bench.load_tables(xy_unicast_tables(w, h, dests))
    dut.gen_colors.value = len(dests)
    dut.gen_en.value = (1 << len(bench.endpoints)) - 1
    rates, loads = [], []
    for _ in range(repeats):
        before = int(dut.delivered.value)
        start = time.perf_counter()
        await Timer(cycles * 10, unit="ns")
        rates.append(cycles / (time.perf_counter() - start))
        loads.append((int(dut.delivered.value) - before) / cycles)
    dut.gen_en.value = 0
    assert not int(dut.proto_err.value)
    result = {"width": w, "height": h, "cycles_per_window": cycles,
              "cycles_per_s": rates, "median_cycles_per_s": statistics.median(rates),
              "delivered_per_cycle": statistics.median(loads)}
    dut._log.info(json.dumps(result))
    if p.get("out"):
        with open(p["out"], "w") as f:
            json.dump(result, f)
