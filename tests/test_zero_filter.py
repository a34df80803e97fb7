"""The zero filter at the sender (FOUT ``filter_zeros``; bench/zero_filter.py): the encoding's
limits, and on the RTL a PE-to-PE stream that sends only its non-zeros, each with its index,
the receiver computing on those only, bit for bit."""

import sys
from pathlib import Path

import pytest

from rtl.pe import regs as R

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_filter_is_for_fp16_fout_only():
    words = R.encode_dsr(R.Kind.FOUT, color=3, dims=((8, 1),), filter_zeros=True)
    assert R.encode_dsr(R.Kind.FOUT, color=3, dims=((8, 1),)) != words
    for kind, dtype in ((R.Kind.FOUT, R.DType.FP32), (R.Kind.MEM, R.DType.FP16)):
        with pytest.raises(ValueError, match=f"not {kind.name} {dtype.name}"):
            R.encode_dsr(kind, dtype=dtype, filter_zeros=True)


@pytest.mark.rtl
@pytest.mark.slow
def test_only_the_non_zeros_travel_and_are_computed():
    import zero_filter
    dense = zero_filter.measure(k=64, t=4, zeros=0.0, seed=1)
    sparse = zero_filter.measure(k=64, t=4, zeros=0.75, seed=1)
    for r in (dense, sparse):
        assert r["bit_exact"]
        assert r["operand_wavelets"] == r["nonzeros"]
        assert r["receiver_fmac_lanes"] == r["t_pad"] * r["nonzeros"]
    assert sparse["nonzeros"] == 16 and dense["nonzeros"] == 64
    assert sparse["cycles"] < dense["cycles"] / 2
