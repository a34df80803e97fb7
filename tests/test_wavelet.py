"""The wavelet layout: Python packers, and their agreement with the Verilog view."""

import numpy as np
import pytest

from rtl.export import to_verilog
from rtl.wavelet import (FIELDS, NUM_COLORS, WAVELET_BITS, pack, pack_array, unpack,
                         unpack_array)
from runtime import sim
from tb.wavelet_probe import WaveletProbe


def test_layout_matches_spec():
    assert WAVELET_BITS == 32
    assert FIELDS == {"data": (0, 16), "index": (16, 10), "ctrl": (26, 1), "color": (27, 5)}
    assert NUM_COLORS == 24


def test_pack_unpack_roundtrip():
    rng = np.random.default_rng(0)
    words = rng.integers(0, 1 << 32, 1000, dtype=np.uint64).astype(np.uint32)
    fields = unpack_array(words)
    assert np.array_equal(pack_array(*fields), words)
    for w in words[:50]:
        assert pack(*unpack(int(w))) == int(w)
    assert pack(data=0x3C00, index=5, ctrl=1, color=23) == \
        0x3C00 | (5 << 16) | (1 << 26) | (23 << 27)


@pytest.mark.parametrize("field,value", [("data", 1 << 16), ("index", 1024), ("ctrl", 2),
                                         ("color", 32), ("index", -1)])
def test_pack_rejects_values_that_do_not_fit(field, value):
    with pytest.raises(ValueError, match=field):
        pack(**{field: value})
    with pytest.raises(ValueError, match=field):
        pack_array(**{field: np.array([0, value])})


def test_pack_array_rejects_float_fields():
    with pytest.raises(TypeError, match="data"):
        pack_array(data=np.array([1.5]))


@pytest.mark.parametrize("field", ["data", "index", "ctrl", "color"])
def test_pack_rejects_non_integers(field):
    with pytest.raises(TypeError, match=field):
        pack(**{field: 1.9})


def test_unpack_rejects_words_that_do_not_fit():
    with pytest.raises(ValueError, match="-0x1"):
        unpack_array(np.array([5, -1]))
    with pytest.raises(ValueError, match="0x10000000000"):
        unpack_array(np.array([1 << 40]))
    with pytest.raises(TypeError, match="integer"):
        unpack(1.0)


def test_pack_array_names_fields_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"data \(3,\).*index \(2,\)"):
        pack_array(data=np.arange(3), index=np.arange(2))


@pytest.mark.rtl
def test_verilog_view_matches_packers():
    verilog = to_verilog(WaveletProbe(), "wavelet_probe")
    built = sim.build("wavelet_probe", verilog)
    sim.run(built, "tb.wavelet_tb", tb_params={"seed": 3, "count": 2000}, timeout=300)
    again = sim.build("wavelet_probe", verilog)
    assert again.cached and again.build_dir == built.build_dir
