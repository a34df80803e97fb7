"""cocotb bench of the DPI tile wrapper (runtime/tile_model.py) around a small stand-in tile.

The stand-in (:func:`stand_in_verilog`) has the real tile's ports and simple logic whose
every output is predictable: a cycle counter behind the registered outputs, an outgoing
payload that mixes the counter with the downstream stop bits (allowed to be combinational),
and a payload that returns, one cycle later, what arrived on an input link. ``bad`` makes one
outgoing ``valid`` follow an incoming ``valid`` combinationally, which the link contract
forbids: the wrapper must stop the simulation and name it.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge, Timer

from runtime import sim
from runtime.tile_model import module_header

MASK24 = (1 << 24) - 1


def stand_in_verilog(ports, bad=False):
    """Verilog of a module ``tile`` with the tile's ``ports`` (see the module docstring)."""
    names = {p.name for p in ports}
    body = [
        "    reg [31:0] count = 0;",
        "    reg [31:0] arrived = 0;",
        "    always @(posedge clk) begin",
        "        count <= rst ? 32'd0 : count + 32'd1;",
        "        arrived <= in_w__payload;",
        "    end",
        "    assign in_n__ready = count[23:0];",
        "    assign in_e__ready = 24'hffffff;",
        "    assign in_s__ready = 24'h0;",
        "    assign in_w__ready = ~count[23:0];",
        "    assign chain_out = {31'b0, count};",
        "    assign pe_busy = count[0];",
        "    assign pe_error = 1'b0;",
        "    assign ramp_active = count[1];",
        "    assign pe_dbg = {5'b0, count};",
        "    assign out_n__valid = count[0];",
        "    assign out_n__payload = count ^ {8'b0, out_n__ready};",
        "    assign out_e__valid = " + ("in_s__valid;" if bad else "1'b0;"),
        "    assign out_e__payload = 32'd0;",
        "    assign out_s__valid = 1'b1;",
        "    assign out_s__payload = arrived;",
        "    assign out_w__valid = 1'b0;",
        "    assign out_w__payload = 32'd0;",
    ]
    driven = {line.split()[1] for line in body if line.strip().startswith("assign")}
    missing = {p.name for p in ports if p.direction == "out"} - driven
    if missing:  # the tile grew outputs: the stand-in must drive them
        raise ValueError(f"stand-in tile does not drive {sorted(missing)}")
    assert "in_w__payload" in names and "rst" in names
    return module_header("tile", ports, net="wire") + "\n" + "\n".join(body) + "\nendmodule\n"


def top_verilog(ports):
    """A top ``tile_top`` exposing every port of one wrapped ``tile`` under the same name."""
    conns = ["        .clk(clk)"] + [f"        .{p.name}({p.name})" for p in ports]
    return (module_header("tile_top", ports, net="wire") + "\n    tile dut (\n" +
            ",\n".join(conns) + "\n    );\nendmodule\n")


async def _reset(dut):
    Clock(dut.clk, 10, unit="ns").start()
    for name in ("in_n__valid", "in_e__valid", "in_s__valid", "in_w__valid", "in_w__payload",
                 "out_n__ready", "out_e__ready", "out_s__ready", "out_w__ready", "chain_in",
                 "tile_x"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    await FallingEdge(dut.clk)
    dut.rst.value = 0


@cocotb.test()
async def wrapper_matches_the_tile(dut):
    """Registered, ready-dependent and input-fed outputs, cycle by cycle, with random
    stop bits and payloads changing mid-cycle."""
    rng = random.Random(sim.params().get("seed", 1))
    await _reset(dut)
    count = 0          # the stand-in's counter in the current cycle
    arrived = None     # in_w__payload sampled at the last rising edge
    for cycle in range(300):
        ready = rng.getrandbits(24)
        payload = rng.getrandbits(32)
        dut.out_n__ready.value = ready
        dut.in_w__payload.value = payload
        await Timer(1, unit="ns")
        assert int(dut.in_n__ready.value) == count & MASK24, f"cycle {cycle}"
        assert int(dut.in_w__ready.value) == ~count & MASK24, f"cycle {cycle}"
        assert int(dut.chain_out.value) == count, f"cycle {cycle}"
        assert int(dut.pe_busy.value) == count & 1, f"cycle {cycle}"
        assert int(dut.out_n__valid.value) == count & 1, f"cycle {cycle}"
        assert int(dut.out_n__payload.value) == count ^ ready, f"cycle {cycle}"
        if arrived is not None:
            assert int(dut.out_s__payload.value) == arrived, f"cycle {cycle}"
        await RisingEdge(dut.clk)
        count += 1
        arrived = payload
        await FallingEdge(dut.clk)


@cocotb.test()
async def contract_breach_stops_the_simulation(dut):
    """An outgoing valid that follows an incoming valid (only the bad stand-in has one)."""
    await _reset(dut)
    await ClockCycles(dut.clk, 3)
    dut.in_s__valid.value = 1
    await ClockCycles(dut.clk, 3)
    assert int(dut.out_e__valid.value) == 0, "the good stand-in's out_e__valid is constant 0"


@cocotb.test()
async def trace_records_the_debug_port(dut):
    """Run with the wrapper's tracing on: the stand-in's ``pe_dbg`` is its cycle counter.
    Writes ``[(sim time in ns, pe_dbg)]`` samples, taken between rising edges, to the file
    named by the ``samples`` parameter, for the caller to check against the trace."""
    import json
    from cocotb.utils import get_sim_time
    await _reset(dut)      # starts the clock at time 0
    samples = []
    for cycle in range(50):
        await RisingEdge(dut.clk)
        await Timer(1 + cycle % 5, unit="ns")
        if cycle % 7 == 0:
            samples.append((get_sim_time("ns"), int(dut.pe_dbg.value)))
    with open(sim.params()["samples"], "w") as out:
        json.dump(samples, out)
