"""The tile, the fabric top, the host driver and the weight-streaming GEMM on the RTL fabric.

Python-only tests check the Verilog structure (the tile once, a top of wiring), the
configuration program format, the GEMM's routes, PE programs and SRAM placement, and that
bad input is rejected before anything is simulated.

The RTL tests (``rtl``) share one Verilator build, a 4 x 5 fabric: every GEMM of a smaller
fabric (3 x 5, 1 x 1, 1 x 4, 4 x 1, ...) runs on its north-west corner with exactly the
routes, programs and edges of that size (nothing is routed beyond it; the corner's east and
south neighbours stay unconfigured and idle). They run on one xdist worker, in order.
"""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from golden.gemm import compare_to_torch, fabric_gemm, fabric_gemm_reference
from gpt_mapping import fabric_run
from gpt_mapping.demo import make_gemm_operands
from gpt_mapping.fabric_run import (DSR_IDS, gemm_routes, pe_program, placements,
                                    run_gemm_chain_rtl, run_gemm_rtl)
from gpt_mapping.layout import GemmMapping, MappingError, map_gemm
from gpt_mapping.streams import nonzero_counts
from rtl.export import to_verilog
from rtl.fabric import (CfgCommandOp, Fabric, compact_memory_init,
                        encode_command)
from rtl.pe import regs as R
from rtl.router import Port
from rtl.tile import BROADCAST_X, pe_tile_addr, router_tile_addr
from rtl.link import TileRegion
from runtime.fabric_host import ConfigProgram, FabricRunError, FabricStallError, MAX_BURST
from runtime.sim import ROOT

#: The one fabric build of the RTL tests.
BUILD = (4, 5)


def _modules(verilog):
    return re.findall(r"^module (\S+?)\(", verilog, re.M)


# --- structure and host-side formats (no simulation) -----------------------------------------

def test_fabric_top_is_wiring_of_tiles():
    """The top holds tile and memory instances and wiring only; it grows with the fabric's
    wiring, not with copies of the tile."""
    lines = {}
    for w, h in ((2, 2), (6, 6)):
        text = to_verilog(Fabric(w, h), "fabric")
        assert _modules(text) == ["fabric"]
        assert len(re.findall(r"^\s*tile \S+ \(", text, re.M)) == w * h
        assert not re.search(r"^\s*reg \[31:0\] \S+ \[", text, re.M)   # no memory inside
        lines[w, h] = text.count("\n")
    # Per tile: wiring only (measured ~200 lines), nowhere near a tile's ~32k lines.
    assert (lines[6, 6] - lines[2, 2]) / 32 < 400


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_fabric_verilog_holds_the_tile_once():
    """The whole design: the top, the tile with one router and one PE inside, the host
    memories; each module once (the tile's text is cached with the builds)."""
    from rtl.fabric import fabric_verilog
    from runtime.sim import BUILD_ROOT
    text = fabric_verilog(*BUILD, cache_dir=BUILD_ROOT / "verilog-cache")
    names = re.findall(r"^module (\S+?)\s*\(", text, re.M)
    assert len(names) == len(set(names))
    assert names.count("fabric") == names.count("tile") == 1
    assert [n for n in names if n.endswith(".router")] == ["\\tile.router"]
    assert [n for n in names if n.endswith(".pe")] == ["\\tile.pe"]
    assert len(re.findall(r"^\s*tile \S+ \(", text, re.M)) == BUILD[0] * BUILD[1]


def test_config_command_layout_and_program():
    word = encode_command(CfgCommandOp.WRITE_BURST, 3, 0x40005)
    assert word & 0xFFFFF == 0x40005 and (word >> 20) & 0xFF == 3 and word >> 28 == 3
    with pytest.raises(ValueError, match="x=256"):
        encode_command(CfgCommandOp.WRITE, 256, 0)
    prog = ConfigProgram(3, 2)
    prog.write(1, 0, 7, 0xDEADBEEF)
    prog.write_block(2, 1, 100, np.arange(MAX_BURST + 5))
    ticket = prog.read(0, 1, 5, count=3)
    assert ticket == (1, 0, 3)
    assert prog.words == [2, 2 + MAX_BURST + 2 + 5 + 2]
    assert prog.reads == [0, 3]
    chunks = prog.chunks(cfg_depth=1030, resp_depth=16)
    assert len(chunks) == 2 and all(len(c[1]) <= 1030 for c in chunks)
    assert sum(len(c[1]) for c in chunks) == prog.words[1]
    with pytest.raises(ValueError, match=r"tile \(3, 0\) is outside"):
        prog.write(3, 0, 0, 0)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        prog.read(BROADCAST_X, 0, 0)
    assert pe_tile_addr(R.dsr_addr(2, 1)) == TileRegion.PE_REGS + R.DSR_BASE + 17
    assert pe_tile_addr(12) == 12
    assert router_tile_addr(0x101) == TileRegion.ROUTER + 0x101


def test_compact_memory_init():
    text = ("module m(clk);\n  reg [31:0] mem [2:0];\n  initial begin\n    mem[0] = 32'd0;\n"
            "    mem[1] = 32'd0;\n    mem[2] = 32'd0;\n  end\n  initial begin\n"
            "    other[0] = 8'd0;\n    other[1] = 8'h5;\n  end\nendmodule\n")
    out = compact_memory_init(text)
    assert "for (i = 0; i < 3; i = i + 1) mem[i] = 32'd0;" in out
    assert "other[1] = 8'h5;" in out                 # not all zero: left alone


def test_gemm_routes_skip_rows_without_tokens():
    m = GemmMapping(tokens=2, features=8, outputs=4, width=2, height=4)
    assert list(m.tokens_per_row) == [0, 1, 0, 1]
    tables = gemm_routes(m)
    weight, reduce = m.colors.weight, m.colors.reduce
    for x in range(2):
        assert tables.mask(x, 0, Port.N, weight) == 1 << Port.S          # passes row 0
        assert tables.mask(x, 1, Port.N, weight) == (1 << Port.S) | (1 << Port.RAMP)
        assert tables.mask(x, 3, Port.N, weight) == 1 << Port.RAMP       # last row
    assert tables.mask(0, 0, Port.RAMP, reduce) == 0
    assert tables.mask(0, 1, Port.RAMP, reduce) == 1 << Port.E
    assert pe_program(m, 0, 0, placements([m])[0][0, 0]) == []
    fabric_run._check_routes(m, tables)


def test_pe_program_follows_the_recipe():
    m = GemmMapping(tokens=20, features=40, outputs=10, width=3, height=2)
    place = placements([m])[0]
    program = dict((addr, words) for addr, words in pe_program(m, 1, 0, place[1, 0]))
    x_dsr = R.decode_fields(R.DSR, sum(w << (32 * i) for i, w in
                                       enumerate(program[R.dsr_addr(DSR_IDS["x"])])))
    assert x_dsr["kind"] == R.Kind.MEM.value
    assert x_dsr["base"] == m.pe.data_base // 2 and x_dsr["idx_stride"] == m.t_pad(0)
    assert x_dsr["dims.0.len"] == m.tokens_per_row[0]
    bind = R.decode_fields(R.ColorBind, program[R.bind_addr(m.colors.weight)][0])
    assert bind["data_en"] and bind["ctrl_en"] and bind["data_task"] == 0


def test_chain_placement_keeps_y_where_the_next_gemm_reads_x():
    a = GemmMapping(tokens=16, features=64, outputs=24, width=2, height=2)
    b = GemmMapping(tokens=16, features=24, outputs=40, width=2, height=2)
    pa, pb = placements([a, b])
    for xy in pa:
        assert pb[xy].x_base == pa[xy].y_base
        x_end = pb[xy].x_base + b.features_per_column[xy[0]] * b.t_pad(xy[1]) * 2
        y_end = pb[xy].y_base + b.outputs_per_column[xy[0]] * b.t_pad(xy[1]) * 2
        assert pb[xy].y_base >= x_end or y_end <= pb[xy].x_base
    # Each fits alone, but the second's Y does not fit beside the first's (its X).
    wide = GemmMapping(tokens=32, features=1280, outputs=24, width=2, height=2)
    tall = GemmMapping(tokens=32, features=24, outputs=1750, width=2, height=2)
    with pytest.raises(MappingError, match=r"tile \(0, 0\): GEMM 1 of the chain needs SRAM"):
        placements([wide, tall])


@pytest.fixture
def no_build(monkeypatch):
    """Fail if anything tries to build or simulate."""
    def refuse(*args, **kwargs):
        raise AssertionError("bad input reached the simulator")
    monkeypatch.setattr(fabric_run, "fabric_build", refuse)


@pytest.mark.parametrize("case,error,message", [
    ("x_dtype", TypeError, "X must be float16, got float32"),
    ("x_shape", MappingError, "X has shape (8, 9), the mapping expects (8, 12)"),
    ("w_shape", MappingError, "W of GEMM 0 has shape (12, 6), the mapping expects (12, 5)"),
    ("build", MappingError, "the GEMM needs a 3 x 2 fabric; the build is 2 x 2"),
    ("chain", MappingError, "GEMM 1 of the chain has K = 7 features but GEMM 0 produces "
                            "N = 5 outputs"),
])
def test_bad_input_rejected_before_simulating(no_build, case, error, message):
    x16, w16 = make_gemm_operands(8, 12, 5, seed=2)
    m = map_gemm(x16, w16, 3, 2)
    with pytest.raises(error) as info:
        if case == "x_dtype":
            run_gemm_rtl(m, x16.astype(np.float32), w16)
        elif case == "x_shape":
            run_gemm_rtl(m, x16[:, :9], w16)
        elif case == "w_shape":
            run_gemm_rtl(m, x16, np.zeros((12, 6), dtype=np.float16))
        elif case == "build":
            run_gemm_rtl(m, x16, w16, fabric=(2, 2))
        else:
            m2 = GemmMapping(tokens=8, features=7, outputs=3, width=3, height=2)
            run_gemm_chain_rtl([m, m2], x16, [w16, np.zeros((7, 3), np.float16)])
    assert message in str(info.value)


def test_bad_input_through_the_command_line_is_named(no_build, tmp_path, capsys):
    from gpt_mapping import gemm_cli
    x16, w16 = make_gemm_operands(12, 40, 9, seed=3)
    np.save(tmp_path / "X.npy", x16.astype(np.float32))
    np.save(tmp_path / "W.npy", w16)
    code = gemm_cli.main(["--x", str(tmp_path / "X.npy"), "--w", str(tmp_path / "W.npy"),
                          "--fabric", "3x2", "--out", str(tmp_path / "Y.npy"), "--report",
                          str(tmp_path / "r.json"), "--backend", "rtl", "--no-progress"])
    assert code == 2
    assert "error: X must be float16, got float32 with shape (12, 40)" in capsys.readouterr().err
    assert not (tmp_path / "Y.npy").exists()


# --- on the RTL fabric --------------------------------------------------------------------------

def _check(y16, x16, w16, width, height, counters):
    """Bit exact against both golden models, within the torch tolerance, counters sane."""
    golden = fabric_gemm(x16, w16, width, height)
    assert np.array_equal(y16.view(np.uint16), golden.view(np.uint16)), \
        f"Y differs from the golden model at {np.argwhere(y16.view(np.uint16) != golden.view(np.uint16))[:5].tolist()}"
    if x16.size * w16.shape[1] <= 200_000:
        ref = fabric_gemm_reference(x16, w16, width, height)
        assert np.array_equal(y16.view(np.uint16), ref.view(np.uint16))
    assert compare_to_torch(y16, x16, w16, width).ok
    nnz = int(nonzero_counts(map_gemm(x16, w16, width, height), w16).sum())
    # The PEs run exactly T_y lanes per weight: every counted lane operation is useful.
    assert counters["fmac_lane_ops"] == nnz * x16.shape[0]
    assert counters["cycles"] > 0 and counters["edge_wavelets"] == 0


def _run(x16, w16, width, height, fabric=BUILD, **kwargs):
    """The GEMM on ``fabric`` (default: the north-west corner of the shared 4 x 5 build)."""
    m = map_gemm(x16, w16, width, height)
    y16, counters = run_gemm_rtl(m, x16, w16, fabric=fabric, **kwargs)
    _check(y16, x16, w16, width, height, counters)
    return y16, counters


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_gemm_that_does_not_divide_the_fabric():
    """T = 13, K = 37, N = 29 on 3 x 5: ragged token, feature and output splits."""
    x16, w16 = make_gemm_operands(13, 37, 29, sparsity=0.3, seed=5)
    _, counters = _run(x16, w16, 3, 5)
    assert counters["pe_fmac_lane_ops"].shape == (5, 3)
    assert counters["router_port_wavelets"].shape == (5, 3, 5)
    assert (counters["router_port_wavelets"][:, :, Port.RAMP] > 0).all()


@pytest.mark.rtl
@pytest.mark.parametrize("width,height,shape", [
    (1, 1, (7, 12, 5)),
    (1, 4, (30, 20, 6)),
    (4, 1, (9, 45, 11)),
])
def test_small_fabrics_on_their_own_builds(width, height, shape):
    """1 x 1, 1 x 4 and 4 x 1 fabrics, each its own Verilator build (every edge of the
    fabric is a real edge; the tile model is shared, so each top builds in seconds)."""
    x16, w16 = make_gemm_operands(*shape, sparsity=0.2, seed=width * 10 + height)
    _, counters = _run(x16, w16, width, height, fabric=(width, height))
    assert counters["pe_fmac_lane_ops"].shape == (height, width)


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
@pytest.mark.parametrize("width,height,shape", [
    (1, 1, (7, 12, 5)),
    (2, 5, (3, 20, 6)),          # more rows than tokens: rows 0, 2 and 3 hold none
    (4, 2, (8, 3, 2)),           # more columns than features and than outputs
])
def test_small_fabrics_on_a_corner(width, height, shape):
    """Smaller GEMMs on the north-west corner of the shared build: their own routes and
    programs, the neighbours beyond the corner unconfigured (stray wavelets are errors)."""
    x16, w16 = make_gemm_operands(*shape, sparsity=0.2, seed=width * 10 + height)
    _run(x16, w16, width, height)


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_long_streams_and_programs_are_played_in_chunks():
    """A weight stream longer than its north-edge memory is refilled while the fabric runs,
    and a configuration program longer than a row's sequencer memory is played in chunks."""
    x16, w16 = make_gemm_operands(16, 1024, 17, seed=12)
    m = map_gemm(x16, w16, 1, 1)
    assert 1024 * 17 + 17 > 16384                       # stream_depth of the build
    assert m.footprint(0, 0).x_bytes // 4 >= 8192        # cfg_depth of the build
    _, counters = _run(x16, w16, 1, 1)
    assert counters["stream_wavelets"] == 1024 * 17 + 17


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9])
def test_weight_sparsity(sparsity):
    x16, w16 = make_gemm_operands(24, 64, 12, sparsity=sparsity, seed=11)
    _, counters = _run(x16, w16, 4, 3)
    if sparsity == 0.9:
        assert counters["fmac_lane_ops"] < 0.2 * 24 * 64 * 12


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_zero_weight_columns_give_zero_outputs():
    x16, w16 = make_gemm_operands(16, 40, 10, sparsity=0.3, seed=3)
    w16[:, [0, 4, 9]] = 0
    w16[::2, 4] = -0.0                                  # both zero signs are "zero"
    y16, _ = _run(x16, w16, 3, 2)
    assert (y16.view(np.uint16)[:, [0, 4, 9]] == 0).all()


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_special_values_in_x():
    x16, w16 = make_gemm_operands(20, 30, 9, sparsity=0.4, seed=8)
    sub = np.array([0x0001, 0x03FF, 0x8200, 0x0400], dtype=np.uint16).view(np.float16)
    x16[0, :4] = sub
    x16[1, 3] = np.inf
    x16[2, 7] = -np.inf
    x16[3, 11] = np.nan
    x16[4, :] = np.float16(6e-8)                       # a row of subnormals
    w16[3, 0] = 0                                      # inf meets a zero weight: skipped
    _run(x16, w16, 3, 4)


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_back_to_back_gemms_keep_y_on_the_fabric():
    x16, w1 = make_gemm_operands(24, 48, 20, sparsity=0.5, seed=21)
    _, w2 = make_gemm_operands(24, 20, 30, sparsity=0.0, seed=22)
    m1 = map_gemm(x16, w1, 3, 3)
    m2 = GemmMapping(tokens=24, features=20, outputs=30, width=3, height=3)
    (y1, y2), (c1, c2) = run_gemm_chain_rtl([m1, m2], x16, [w1, w2], fabric=BUILD)
    g1 = fabric_gemm(x16, w1, 3, 3)
    g2 = fabric_gemm(g1, w2, 3, 3)
    assert np.array_equal(y1.view(np.uint16), g1.view(np.uint16))
    assert np.array_equal(y2.view(np.uint16), g2.view(np.uint16))
    assert compare_to_torch(y2, y1, w2, 3).ok
    assert c2["fmac_lane_ops"] == int((w2 != 0).sum()) * 24 and c1["cycles"] > 0


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_watchdog_names_the_tile_and_color_of_a_missing_task_binding():
    x16, w16 = make_gemm_operands(16, 24, 6, seed=4)
    m = map_gemm(x16, w16, 3, 2)

    def drop_binding(gemm, x, y, program):
        if (x, y) != (1, 0):
            return program
        return [(a, w) for a, w in program if a != R.bind_addr(m.colors.weight)]

    with pytest.raises(FabricStallError) as info:
        run_gemm_rtl(m, x16, w16, fabric=BUILD, watchdog=2000, pe_program_hook=drop_binding)
    message = str(info.value)
    assert "no wavelet moved for 2000 cycles" in message
    assert "progress stopped at tile (1, 0), color 0" in message
    assert info.value.report["blocked_at"]["to"] == ["S", "RAMP"]


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_watchdog_names_the_tile_and_color_of_a_wrong_route():
    x16, w16 = make_gemm_operands(16, 24, 6, seed=4)
    m = map_gemm(x16, w16, 3, 2)

    def cut_chain(tables):
        tables.set(2, 1, Port.W, m.colors.reduce, 0)   # partial sums into (2, 1) dropped

    with pytest.raises(FabricStallError) as info:
        run_gemm_rtl(m, x16, w16, fabric=BUILD, watchdog=2000, route_hook=cut_chain)
    assert ("progress stopped at tile (2, 1), color 1: its router dropped" in str(info.value)
            and "of color 1 arriving on port W (an empty route)" in str(info.value))


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_wavelets_leaving_the_fabric_are_reported():
    x16, w16 = make_gemm_operands(8, 12, 4, seed=6)
    m = map_gemm(x16, w16, 2, 1)

    def leak(tables):                                   # the weights also go off the north
        tables.add(0, 0, Port.N, m.colors.weight, 1 << Port.N)

    with pytest.raises(FabricRunError, match=r"left the fabric; the first through tile "
                                             r"\(0, 0\) port N: color 0"):
        run_gemm_rtl(m, x16, w16, fabric=BUILD, route_hook=leak)


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_command_line_runs_on_the_rtl_fabric(tmp_path):
    x16, w16 = make_gemm_operands(20, 40, 12, sparsity=0.5, seed=9)
    np.save(tmp_path / "X.npy", x16)
    np.save(tmp_path / "W.npy", w16)
    run = subprocess.run(
        [sys.executable, "-W", "error", "-m", "gpt_mapping", "gemm", "--x",
         str(tmp_path / "X.npy"), "--w", str(tmp_path / "W.npy"), "--fabric", "4x5", "--out",
         str(tmp_path / "Y.npy"), "--report", str(tmp_path / "r.json"), "--no-progress"],
        cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "backend: rtl" in run.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cycles_source"] == "measured" and report["bit_exact_vs_golden"] is True
    assert report["torch_fp32_check"]["ok"] and report["fabric"] == {"width": 4, "height": 5}
    assert 0 < report["fmac_utilization"] <= 1
    assert report["measured_counters"]["fmac_lane_ops"] == int((w16 != 0).sum()) * 20


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_wavelets_leaving_the_corner_of_a_bigger_build_are_reported():
    x16, w16 = make_gemm_operands(8, 12, 4, seed=6)
    m = map_gemm(x16, w16, 2, 1)

    def leak(tables):                                   # the weights also go on south
        tables.add(1, 0, Port.N, m.colors.weight, 1 << Port.S)

    with pytest.raises(FabricRunError, match=r"left the GEMM's 2 x 1 corner: tile \(1, 1\) "
                                             r"of the build dropped them, the first of "
                                             r"color 0 on port N"):
        run_gemm_rtl(m, x16, w16, fabric=BUILD, route_hook=leak)
