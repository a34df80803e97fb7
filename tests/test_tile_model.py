"""The DPI tile wrapper (runtime/tile_model.py): ports, behaviour, and the link-contract check."""

import json
import re

import numpy as np
import pytest

from runtime import sim, tile_model
from tb.tile_model_tb import stand_in_verilog, top_verilog


def test_ports_cover_the_tile_verilog():
    """Every port of the real tile module has a group; the groups follow rtl/link.py."""
    from rtl.fabric import fabric_sources
    _, tile = fabric_sources(2, 1, cache_dir=sim.BUILD_ROOT / "verilog-cache")
    header = tile[tile.index("module tile("):]
    header = header[:header.index(";")]
    verilog_ports = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", header.split("(", 1)[1]))
    ports = tile_model.tile_ports()
    assert {p.name for p in ports} | {"clk"} == verilog_ports
    groups = {p.name: p.group for p in ports}
    assert groups["out_e__ready"] == "ready"
    assert groups["in_e__valid"] == groups["chain_in"] == groups["rst"] == "inputs"
    assert groups["out_e__valid"] == groups["out_e__payload"] == "link"
    assert groups["in_e__ready"] == groups["chain_out"] == groups["pe_busy"] == "registered"
    assert groups[tile_model.TRACED_PORT] == "registered"


def _build(bad):
    ports = tile_model.tile_ports()
    library = tile_model.tile_library(stand_in_verilog(ports, bad=bad))
    return sim.build("tile_top", top_verilog(ports) + tile_model.wrapper_verilog(),
                     extra_args=library.verilator_args())


def test_wrapper_reproduces_the_tile_cycle_by_cycle():
    sim.run(_build(bad=False), "tb.tile_model_tb", testcase="wrapper_matches_the_tile",
            name="good", timeout=300)


def test_good_stand_in_passes_the_breach_scenario():
    """The scenario of the next test is harmless on a tile that keeps the contract."""
    sim.run(_build(bad=False), "tb.tile_model_tb",
            testcase="contract_breach_stops_the_simulation", name="good_breach", timeout=300)


def test_contract_breach_is_reported_with_tile_and_output():
    with pytest.raises(AssertionError) as failure:
        sim.run(_build(bad=True), "tb.tile_model_tb",
                testcase="contract_breach_stops_the_simulation", name="bad", timeout=300)
    message = str(failure.value)
    assert "tile tile_top.dut: output out_e__valid changed when only its 'inputs' inputs " \
           "changed" in message, message


def test_tracing_records_the_debug_port_on_the_clock_call(tmp_path):
    """With +wse_tile_trace, the wrapper records the stand-in's pe_dbg (its cycle counter)
    once per change, at the clock call that made it; without it, no file is written."""
    build = _build(bad=False)
    trace, samples = tmp_path / "trace.bin", tmp_path / "samples.json"
    sim.run(build, "tb.tile_model_tb", testcase="trace_records_the_debug_port",
            name="traced", timeout=300, tb_params={"samples": str(samples)},
            plusargs=tile_model.trace_plusargs(trace))
    records = tile_model.read_trace(trace)
    assert list(records) == ["tile_top.dut"]
    rec = records["tile_top.dut"]
    # The counter counts every clock call after the reset: one record per cycle.
    assert len(rec) == 50 and (np.diff(rec["cycle"]) == 1).all()
    assert (np.diff(rec["value"].astype(np.int64)) == 1).all() and rec["value"][0] == 1
    # A moment of the bench (sim time) and the record in force then agree (clock_index).
    by_cycle = dict(zip(rec["cycle"].tolist(), rec["value"].tolist()))
    got = json.loads(samples.read_text())
    assert len(got) == 8
    for time_ns, value in got:
        assert by_cycle[tile_model.clock_index(time_ns, 0, 10)] == value, (time_ns, value)
    untraced = tmp_path / "untraced.json"
    sim.run(build, "tb.tile_model_tb", testcase="trace_records_the_debug_port",
            name="untraced", timeout=300, tb_params={"samples": str(untraced)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["samples.json", "trace.bin",
                                                          "untraced.json"]
