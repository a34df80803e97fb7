"""gpt_mapping/layout.py: splits, padding, SRAM layout, colours and routes, and validation
errors that name the offending array, tile, column or row."""

import numpy as np
import pytest

from golden import gemm as golden_gemm
from gpt_mapping.layout import (ColorPlan, GemmMapping, MappingError, OperandTypeError,
                                PEConfig, block_bounds, block_len, block_owner, block_range,
                                block_start, map_gemm, parse_fabric)
from rtl.wavelet import NUM_COLORS


# --- balanced block split ----------------------------------------------------------------------

@pytest.mark.parametrize("parts,n", [(1, 1), (3, 37), (5, 13), (7, 3), (750, 768), (994, 1024),
                                     (4, 4), (16, 0)])
def test_block_split_is_balanced_and_covers(parts, n):
    bounds = block_bounds(parts, n)
    assert bounds[0] == 0 and bounds[-1] == n and (np.diff(bounds) >= 0).all()
    lengths = [block_len(i, parts, n) for i in range(parts)]
    assert sum(lengths) == n and max(lengths) - min(lengths) <= 1
    for i in range(parts):
        assert block_start(i, parts, n) == i * n // parts == bounds[i]
        assert block_start(i, parts, n) == golden_gemm._start(i, parts, n)   # same SPEC split
        assert list(block_range(i, parts, n)) == list(range(bounds[i], bounds[i + 1]))
    assert (block_start(np.arange(parts + 1), parts, n) == bounds).all()
    if n:
        owner = block_owner(np.arange(n), parts, n)
        assert all(j in block_range(int(o), parts, n) for j, o in enumerate(owner))


def test_block_owner_rejects_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        block_owner(5, 2, 5)


# --- the mapping -------------------------------------------------------------------------------

def test_ranges_padding_and_footprint():
    m = GemmMapping(tokens=13, features=37, outputs=29, width=3, height=5)
    assert [len(m.token_range(y)) for y in range(5)] == [2, 3, 2, 3, 3]
    assert [len(m.feature_range(x)) for x in range(3)] == [12, 12, 13]
    assert [len(m.output_range(x)) for x in range(3)] == [9, 10, 10]
    assert m.t_pad_per_row.tolist() == [4, 4, 4, 4, 4]
    assert m.owner_column(np.array([0, 8, 9, 18, 19, 28])).tolist() == [0, 0, 1, 1, 2, 2]
    assert m.n_local(np.array([0, 8, 9, 19, 28])).tolist() == [0, 8, 0, 0, 9]
    fp = m.footprint(2, 1)
    assert (fp.tokens, fp.t_pad, fp.features, fp.outputs) == (3, 4, 13, 10)
    assert fp.x_bytes == 13 * 4 * 2 and fp.y_bytes == 10 * 4 * 2
    assert fp.padding_bytes == (13 + 10) * 1 * 2
    assert fp.reserved_bytes == PEConfig().reserved_sram_bytes
    assert fp.total_bytes == fp.reserved_bytes + fp.x_bytes + fp.y_bytes
    assert fp.sram_bytes == 48 * 1024 and fp.accumulator_words == 8
    summary = m.summary()
    assert summary["fabric"] == {"width": 3, "height": 5}
    assert summary["shape"] == {"T": 13, "K": 37, "N": 29}


@pytest.mark.parametrize("tokens,height", [(13, 5), (64, 4), (5, 1), (3, 7), (1024, 994)])
def test_every_column_is_vector_aligned(tokens, height):
    m = GemmMapping(tokens=tokens, features=10, outputs=6, width=2, height=height)
    for y in range(height):
        t_y, t_pad = len(m.token_range(y)), m.t_pad(y)
        assert t_pad % 4 == 0 and t_y <= t_pad < t_y + 4
        for k_local in range(len(m.feature_range(0))):
            assert m.x_address(k_local, 0, y) % 8 == 0
        for x in range(2):
            assert m.y_base(x, y) % 8 == 0
            assert m.y_base(x, y) == m.x_address(len(m.feature_range(x)), 0, y)
            assert m.y_address(x, y, 1, 0) - m.y_address(x, y, 0, 0) == 2 * t_pad


def test_x_tile_is_column_major_and_padded():
    x16 = np.arange(13 * 7, dtype=np.float16).reshape(13, 7)
    m = map_gemm(x16, np.ones((7, 2), dtype=np.float16), width=2, height=3)
    tile = m.x_tile(x16, 1, 2)                         # tokens 8..12, features 3..6
    assert tile.shape == (4, 8) and tile.dtype == np.float16
    assert (tile[:, :5] == x16[8:13, 3:7].T).all() and (tile[:, 5:] == 0).all()
    words = tile.reshape(-1).view("<u4")
    assert words[0] & 0xFFFF == x16[8, 3].view(np.uint16)   # lower address = low half
    with pytest.raises(MappingError, match=r"X has shape \(13, 6\)"):
        m.x_tile(x16[:, :6], 0, 0)


def test_index_errors_name_the_column_or_row():
    m = GemmMapping(tokens=4, features=4, outputs=4, width=2, height=2)
    with pytest.raises(IndexError, match="column 2"):
        m.feature_range(2)
    with pytest.raises(IndexError, match="row -1"):
        m.footprint(0, -1)


# --- colours and routes ------------------------------------------------------------------------

def test_color_plan_validation():
    plan = ColorPlan()
    assert len(set(plan.as_dict().values())) == 3
    assert all(0 <= c < NUM_COLORS for c in plan.as_dict().values())
    with pytest.raises(ValueError, match="ColorPlan.result = 24"):
        ColorPlan(result=24)
    with pytest.raises(ValueError, match="ColorPlan.reduce and ColorPlan.weight share colour 5"):
        ColorPlan(weight=5, reduce=5)


STEP = {"N": (0, -1), "S": (0, 1), "E": (1, 0), "W": (-1, 0)}
OPPOSITE = {"N": "S", "S": "N", "E": "W", "W": "E"}


def deliveries(routes, width, height, x, y, in_port, color):
    """Follow the static routes from (x, y, in_port): the set of PEs whose RAMP gets the flow;
    fails if a route leads off the fabric or no route exists for a wavelet."""
    table = {(r.x, r.y, r.in_port, r.color): r.out_ports for r in routes}
    reached, todo, seen = set(), [(x, y, in_port)], set()
    while todo:
        key = todo.pop()
        assert key not in seen, f"routing loop at {key}"
        seen.add(key)
        assert (*key, color) in table, f"no route for colour {color} at {key}"
        for port in table[(*key, color)]:
            if port == "RAMP":
                reached.add(key[:2])
                continue
            nx, ny = key[0] + STEP[port][0], key[1] + STEP[port][1]
            assert 0 <= nx < width and 0 <= ny < height, f"route leaves the fabric at {key}"
            todo.append((nx, ny, OPPOSITE[port]))
    return reached


@pytest.mark.parametrize("width,height", [(1, 1), (1, 4), (4, 1), (3, 5), (4, 4)])
def test_routes_deliver_the_gemm_flows(width, height):
    plan = ColorPlan(weight=7, reduce=3, result=11)
    routes = plan.routes(width, height)
    keys = [(r.x, r.y, r.in_port, r.color) for r in routes]
    assert len(keys) == len(set(keys)), "two routes for one (router, input, colour)"
    for x in range(width):
        # Weights injected at the north edge reach every PE of the column.
        assert deliveries(routes, width, height, x, 0, "N", plan.weight_color(x)) == \
            {(x, y) for y in range(height)}
    if width == 1:
        assert {r.color for r in routes} == {plan.weight}
        return
    for y in range(height):
        for x in range(width - 1):
            # The reduction chain goes to the east neighbour only.
            assert deliveries(routes, width, height, x, y, "RAMP", plan.reduce) == {(x + 1, y)}
        # The east end's results reach every other PE of the row.
        assert deliveries(routes, width, height, width - 1, y, "RAMP", plan.result) == \
            {(x, y) for x in range(width - 1)}


# --- validation --------------------------------------------------------------------------------

def ones(shape, dtype=np.float16):
    return np.ones(shape, dtype=dtype)


def test_operands_must_be_float16_and_named():
    with pytest.raises(OperandTypeError, match=r"X must be float16, got float32 with shape "
                                               r"\(4, 8\)"):
        map_gemm(ones((4, 8), np.float32), ones((8, 2)), 2, 2)
    with pytest.raises(TypeError, match=r"W must be float16, got int64 with shape \(8, 2\)"):
        map_gemm(ones((4, 8)), ones((8, 2), np.int64), 2, 2)
    with pytest.raises(TypeError, match="W must be a numpy float16 array, not list"):
        map_gemm(ones((4, 8)), [[1.0]], 2, 2)


def test_operand_shapes_are_named():
    with pytest.raises(MappingError, match=r"disagree on K: X has shape \(4, 8\), W has shape "
                                           r"\(9, 2\)"):
        map_gemm(ones((4, 8)), ones((9, 2)), 2, 2)
    with pytest.raises(MappingError, match=r"X must be 2-D \(\[T, K\]\), got shape \(8,\)"):
        map_gemm(ones(8), ones((8, 2)), 2, 2)
    with pytest.raises(MappingError, match=r"W is empty: shape \(8, 0\)"):
        map_gemm(ones((4, 8)), ones((8, 0)), 2, 2)


@pytest.mark.parametrize("width,height", [(0, 4), (4, 0), (0, 0)])
def test_fabric_of_zero_size(width, height):
    with pytest.raises(MappingError, match=f"fabric of zero size: {width} x {height}"):
        map_gemm(ones((4, 8)), ones((8, 2)), width, height)


def test_parse_fabric():
    assert parse_fabric("4x4") == (4, 4) and parse_fabric("750X994") == (750, 994)
    with pytest.raises(MappingError, match="fabric of zero size: '0x4'"):
        parse_fabric("0x4")
    with pytest.raises(MappingError, match="'4by4' is not WIDTHxHEIGHT"):
        parse_fabric("4by4")


def test_too_many_local_features_names_the_column():
    # 2049 features on 2 columns: K_x = 1024 fits column 0, 1025 is too many for column 1.
    with pytest.raises(MappingError, match=r"column 1 holds K_x = 1025 features \(k 1024..2048\)"
                                           r", more than the 10-bit wavelet index can address "
                                           r"\(1024\); use a wider fabric \(>= 3 columns\)"):
        GemmMapping(tokens=4, features=2049, outputs=2, width=2, height=1)
    GemmMapping(tokens=4, features=2048, outputs=2, width=2, height=1)     # 1024 fits


def test_tokens_beyond_the_accumulator_double_buffer_name_the_row():
    # 65 tokens on 2 rows: row 1 has 33 -> T_pad 36, 2 x 36 = 72 > 64 words.
    with pytest.raises(MappingError, match=r"row 1 has T_y = 33 tokens per PE \(T_pad 36\): 2 "
                                           r"accumulator buffers need 72 FP32 words, the "
                                           r"accumulator cache holds 64; use a taller fabric "
                                           r"\(>= 3 rows\)"):
        GemmMapping(tokens=65, features=8, outputs=2, width=1, height=2)
    GemmMapping(tokens=64, features=8, outputs=2, width=1, height=2)       # 2 x 32 fits
    GemmMapping(tokens=65, features=8, outputs=2, width=1, height=2,
                pe=PEConfig(accumulator_buffers=1))


def test_x_slice_too_big_names_the_tile_and_bytes():
    # K = 2048 on 2 columns x 2 rows of 32 tokens: X slice 1024 x 32 x 2 B = 65536 > 49152.
    with pytest.raises(MappingError, match=r"tile \(0, 0\): X slice X\[T_y=32 \(padded 32\), "
                                           r"K_x=1024\] needs 65536 bytes, more than the PE's "
                                           r"49152-byte SRAM by 16384 bytes"):
        GemmMapping(tokens=64, features=2048, outputs=8, width=2, height=2)


def test_whole_footprint_too_big_names_the_tile():
    # X slice 736 x 32 x 2 = 47104 fits alone, and with the 2048 reserved bytes; Y does not.
    with pytest.raises(MappingError, match=r"tile \(0, 0\) does not fit its 49152-byte SRAM: "
                                           r"X slice 47104 \+ Y slice 128 \(of which padding 0\)"
                                           r" \+ reserved 2048 = 49280 bytes, 128 bytes over"):
        GemmMapping(tokens=32, features=736, outputs=2, width=1, height=1)
    # Two columns own 2 and 3 outputs: the second is the tile that does not fit.
    with pytest.raises(MappingError, match=r"tile \(1, 0\) does not fit .* 192 bytes over"):
        GemmMapping(tokens=32, features=1472, outputs=5, width=2, height=1)
    GemmMapping(tokens=32, features=736, outputs=2, width=1, height=1,
                pe=PEConfig(reserved_sram_bytes=1920))


def test_pe_config_checks():
    assert PEConfig().sram_bytes == 8 * 1536 * 4
    assert PEConfig(reserved_sram_bytes=13).data_base == 16
    with pytest.raises(ValueError, match="PEConfig.sram_banks must be a positive int, not 0"):
        PEConfig(sram_banks=0)
    with pytest.raises(ValueError, match="PEConfig.reserved_sram_bytes"):
        PEConfig(reserved_sram_bytes=-1)


def test_gpt2_sized_mapping_validates_quickly():
    m = GemmMapping(tokens=1024, features=768, outputs=3072, width=750, height=994)
    assert m.features_per_column.max() == 2 and m.t_pad_per_row.max() == 4
    assert m.summary()["worst_tile"]["sram_bytes_used"] <= 48 * 1024
