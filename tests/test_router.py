"""The router and the router mesh: Verilog export, register map, and the cocotb benches.

Verilator builds: the 1 x 1 bench (one router: tb/router_tb.py), the 4 x 4 bench
(tb/mesh_tb.py) and the single-row, single-column and 2 x 2 benches (tb/mesh_tb.py with
short runs: SPEC asks for 1 x 1 and 1 x N meshes). Each is built once (cached by runtime/sim.py,
under a file lock: a second process that needs a build waits for it and reuses it).

The ``xdist_group`` marks ask ``--dist loadgroup`` to keep the 1 x 1 tests on one worker
and the mesh tests on the other. With the pinned pytest 9.2 and pytest-xdist 3.8 they have
no effect (xdist tags the group onto ``item._nodeid``, which pytest 9 no longer reads), so
the tests are spread freely; they are kept for when the tool chain honours them.
"""

import re

import pytest

from rtl.mesh import RouterMesh, mesh_cfg_addr, mesh_endpoints, mesh_verilog
from rtl.router import (Port, Router, RouterReg, ROUTER_ADDR_BITS, counter_addr, mask_ports,
                        port_mask, route_addr)
from runtime import sim
from tb.fabric_harness import build_bench

SEEDS = (1, 2, 3)
#: Mesh sizes (width, height) run besides 4 x 4: one row, one column, and 2 x 2.
SMALL_MESHES = ((4, 1), (1, 4), (2, 2))


# --- pure Python: register map and port helpers --------------------------------------------

def test_register_map_is_dense_and_disjoint():
    addrs = [route_addr(p, c) for p in Port for c in range(32)]
    addrs += [RouterReg.ERR_STATUS, RouterReg.ERR_COUNT, RouterReg.INFO, RouterReg.CYCLES]
    addrs += [counter_addr(r, p) for r in (RouterReg.FORWARDED, RouterReg.BLOCKED,
                                           RouterReg.RECEIVED, RouterReg.QUEUED) for p in Port]
    assert len(set(addrs)) == len(addrs)
    assert max(addrs) < 1 << ROUTER_ADDR_BITS


def test_register_map_rejects_bad_arguments():
    with pytest.raises(ValueError, match="color 32"):
        route_addr(Port.N, 32)
    with pytest.raises(ValueError, match="ERR_COUNT"):
        counter_addr(RouterReg.ERR_COUNT, Port.N)
    with pytest.raises(ValueError, match="outside"):
        mesh_cfg_addr(4, 4, 4, 0, 0)
    with pytest.raises(ValueError, match="num_colors"):
        Router(num_colors=25)
    with pytest.raises(ValueError, match="fifo_depth"):
        Router(fifo_depth=0)


def test_ports():
    assert [p.name for p in Port] == ["N", "E", "S", "W", "RAMP"]
    assert mask_ports(port_mask(Port.S, Port.RAMP)) == (Port.S, Port.RAMP)
    for p in Port:
        assert p.opposite.opposite == p
        dx, dy = p.delta
        ox, oy = p.opposite.delta
        assert (dx + ox, dy + oy) == (0, 0)
    assert Port.N.delta == (0, -1)       # y grows south
    assert Port.E.delta == (1, 0)        # x grows east


def test_mesh_endpoints_order():
    eps = mesh_endpoints(2, 3)
    assert eps[:2] == [(0, 0, Port.N), (1, 0, Port.N)]
    assert eps[2:5] == [(1, 0, Port.E), (1, 1, Port.E), (1, 2, Port.E)]
    assert eps[-1] == (1, 2, Port.RAMP)
    assert len(eps) == 2 * (2 + 3) + 6


def _modules(verilog):
    return {m.group(1): m.start() for m in re.finditer(r"^module (\S+?)\(", verilog, re.M)}


def test_mesh_verilog_is_router_once_plus_wiring():
    """The 8 x 8 mesh is one router module plus a top of instances and wires; the router
    text is identical for every mesh size and the top grows only with the wiring."""
    sizes = {}
    router_text = None
    for w, h in ((2, 2), (8, 8)):
        mesh = RouterMesh(w, h)
        text = mesh_verilog(mesh)
        modules = _modules(text)
        assert set(modules) == {"router_mesh", "router"}, modules
        top = text.split("\nmodule router(")[0]
        router = text[len(top):]
        assert top.count("router router_") == w * h
        assert top.count("always") <= 2      # only the configuration read select
        if router_text is None:
            router_text = router
        assert router == router_text
        sizes[w * h] = top.count("\n")
    assert sizes[64] / 64 < 1.2 * sizes[4] / 4 + 50


def test_router_in_top_blocks():
    from rtl.top import BLOCKS
    names = {name for group in BLOCKS for name in group()}
    assert "router" in names


# --- cocotb benches -----------------------------------------------------------------------

@pytest.fixture(scope="session")
def bench_1x1():
    return build_bench(1, 1)


@pytest.fixture(scope="session")
def bench_4x4():
    return build_bench(4, 4)


@pytest.mark.rtl
@pytest.mark.xdist_group("router_1x1")
@pytest.mark.parametrize("seed", SEEDS)
def test_router_random_traffic(bench_1x1, seed):
    sim.run(bench_1x1, "tb.router_tb", testcase="random_traffic",
            tb_params={"seed": seed, "count": 100_000}, timeout=240, name=f"random_{seed}")


@pytest.mark.rtl
@pytest.mark.xdist_group("router_1x1")
def test_router_directed(bench_1x1):
    sim.run(bench_1x1, "tb.router_tb",
            testcase=["per_color_independence", "blocked_counter", "fairness_full_contention",
                      "bad_traffic", "route_change_under_traffic", "watchdog_reports_stuck",
                      "config_registers", "generator_color_distribution"],
            timeout=240, name="directed")


@pytest.mark.rtl
@pytest.mark.xdist_group("router_4x4")
def test_mesh_patterns(bench_4x4):
    sim.run(bench_4x4, "tb.mesh_tb", tb_params={"width": 4, "height": 4}, timeout=300)


@pytest.fixture(scope="session")
def mesh_builds():
    """``build(width, height)``: the bench of that size, built once per session."""
    builds = {}

    def build(width, height):
        if (width, height) not in builds:
            builds[width, height] = build_bench(width, height)
        return builds[width, height]
    return build


# Meant for loadgroup (see the module docstring): the 4 x 1 bench with the 1 x 1 tests,
# the others with the 4 x 4, so that the two workers get about the same work.
@pytest.mark.rtl
@pytest.mark.parametrize("width,height", [
    pytest.param(w, h, id=f"{w}x{h}",
                 marks=pytest.mark.xdist_group("router_1x1" if (w, h) == (4, 1)
                                               else "router_4x4"))
    for w, h in SMALL_MESHES])
def test_mesh_patterns_small(mesh_builds, width, height):
    """The mesh patterns on a row, a column and 2 x 2, with a fifth of the traffic."""
    sim.run(mesh_builds(width, height), "tb.mesh_tb",
            tb_params={"width": width, "height": height, "scale": 0.2}, timeout=300,
            name=f"patterns_{width}x{height}")
