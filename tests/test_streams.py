"""gpt_mapping/streams.py: the weight streams are exactly the SPEC 7 sequence, in wavelets built
from the one wavelet layout, and build fast at GPT sizes."""

import time

import numpy as np
import pytest

from gpt_mapping.layout import ColorPlan, GemmMapping, MappingError
from gpt_mapping.streams import (ReductionCommand, column_stream, nonzero_counts,
                                 stream_length, streamed_mask, weight_streams)
from rtl.wavelet import INDEX_BITS, pack, unpack, unpack_array


def loop_stream(mapping, w16, column, outputs=None):
    """SPEC 7 written out with scalar loops and rtl.wavelet.pack (the first ``outputs``)."""
    bits = w16.view(np.uint16)
    k_x = mapping.feature_range(column)
    color = mapping.colors.weight_color(column)
    words = []
    for n in range(mapping.outputs if outputs is None else outputs):
        for k in k_x:
            if bits[k, n] & 0x7FFF:
                words.append(pack(data=int(bits[k, n]), index=k - k_x.start, ctrl=0, color=color))
        owner = next(x for x in range(mapping.width) if n in mapping.output_range(x))
        command = ReductionCommand.FINAL_SUM if owner == column else ReductionCommand.PARTIAL_SUM
        words.append(pack(data=n - mapping.output_range(owner).start, index=int(command),
                          ctrl=1, color=color))
    return np.array(words, dtype=np.uint32)


def sparse_weights(rng, features, outputs, sparsity):
    w = rng.standard_normal((features, outputs)).astype(np.float16)
    zero = rng.random(w.shape) < sparsity
    w[zero] = np.where(rng.random(w.shape) < 0.5, 0.0, -0.0)[zero]
    return w


@pytest.mark.parametrize("features,outputs,width", [(37, 29, 3), (8, 5, 1), (3, 6, 5),
                                                    (16, 16, 4)])
@pytest.mark.parametrize("sparsity", [0.0, 0.6, 1.0])
def test_streams_match_the_spec_loop(features, outputs, width, sparsity):
    rng = np.random.default_rng(features * outputs + width)
    w = sparse_weights(rng, features, outputs, sparsity)
    m = GemmMapping(tokens=4, features=features, outputs=outputs, width=width, height=2,
                    colors=ColorPlan(weight=9, reduce=1, result=2))
    streams = weight_streams(m, w)
    counts = nonzero_counts(m, w)
    assert len(streams) == width and counts.shape == (width, outputs)
    for x, words in enumerate(streams):
        assert words.dtype == np.uint32
        assert np.array_equal(words, loop_stream(m, w, x))
        assert len(words) == stream_length(m, w, x) == counts[x].sum() + outputs
        fields = unpack_array(words)
        assert (fields.color == 9).all()
        assert (fields.ctrl == 1).sum() == outputs
    assert counts.sum() == streamed_mask(w).sum()


def test_zero_weights_of_both_signs_are_not_sent_and_nan_is():
    w = np.array([[0.0, -0.0], [np.nan, 1.0], [-0.0, -2.0]], dtype=np.float16)
    m = GemmMapping(tokens=4, features=3, outputs=2, width=1, height=1)
    words = column_stream(m, w, 0)
    fields = [unpack(word) for word in words]
    assert [(f.ctrl, f.index) for f in fields] == [
        (0, 1), (1, ReductionCommand.FINAL_SUM),             # n = 0: only the NaN
        (0, 1), (0, 2), (1, ReductionCommand.FINAL_SUM)]     # n = 1: 1.0 and -2.0
    assert fields[0].data == w[1, 0].view(np.uint16)          # NaN bits sent as they are
    assert fields[3].data == 0xC000                          # -2.0
    assert [f.data for f in fields if f.ctrl] == [0, 1]      # n_local
    assert nonzero_counts(m, w).tolist() == [[1, 2]]


def test_commands_name_the_owner_and_n_local():
    m = GemmMapping(tokens=4, features=6, outputs=7, width=3, height=1)
    w = np.ones((6, 7), dtype=np.float16)
    for x in range(3):
        fields = unpack_array(column_stream(m, w, x))
        cmd = fields.ctrl == 1
        codes, args = fields.index[cmd], fields.data[cmd]
        owned = list(m.output_range(x))
        for n in range(7):
            if n in owned:
                assert codes[n] == ReductionCommand.FINAL_SUM and args[n] == n - owned[0]
            else:
                assert codes[n] == ReductionCommand.PARTIAL_SUM
        # Data wavelets carry the local feature index, ascending within each n.
        data_index = fields.index[~cmd].reshape(7, 2)
        assert (data_index == [0, 1]).all()


def test_empty_column_streams_only_commands():
    m = GemmMapping(tokens=4, features=2, outputs=3, width=4, height=1)
    w = np.ones((2, 3), dtype=np.float16)
    words = column_stream(m, w, 0)               # K split 0,0,1,1,2: column 0 is empty
    assert len(m.feature_range(0)) == 0
    assert (unpack_array(words).ctrl == 1).all() and len(words) == 3


def test_command_codes():
    codes = [int(c) for c in ReductionCommand]
    assert len(set(codes)) == len(codes) and 0 not in codes
    assert max(codes) < (1 << INDEX_BITS)


def test_wrong_weights_are_named():
    m = GemmMapping(tokens=4, features=6, outputs=7, width=3, height=1)
    with pytest.raises(MappingError, match=r"W has shape \(6, 6\), the mapping expects \(6, 7\)"):
        column_stream(m, np.ones((6, 6), dtype=np.float16), 0)
    with pytest.raises(TypeError, match="W must be float16, got float32"):
        nonzero_counts(m, np.ones((6, 7), dtype=np.float32))
    with pytest.raises(IndexError, match="column 3"):
        column_stream(m, np.ones((6, 7), dtype=np.float16), 3)


def test_column_stream_builds_fast_at_gpt_size():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3072, 768)).astype(np.float16)
    m = GemmMapping(tokens=64, features=3072, outputs=768, width=4, height=4)
    start = time.perf_counter()
    words = column_stream(m, w, 1)
    elapsed = time.perf_counter() - start
    assert len(words) == 768 * 768 + 768
    assert elapsed < 0.5, f"column stream took {elapsed:.2f} s"
    head = loop_stream(m, w, 1, outputs=3)
    assert np.array_equal(words[:len(head)], head)
