"""golden/gemm.py: the PE-by-PE loop and the vectorised model agree bit for bit, follow the
SPEC 7 order and zero-skipping, and stay within the documented tolerance of torch float32."""


import numpy as np
import pytest

from golden import fp
from golden.gemm import (accumulation_depth, column_partial_sums, compare_to_torch,
                         error_bound, fabric_gemm, fabric_gemm_reference, is_streamed,
                         torch_reference)


def f16(values):
    return np.asarray(values, dtype=np.float16)


def bits(a):
    return a.view(np.uint16)


def random_operands(rng, tokens, features, outputs, sparsity=0.0, scale=1.0):
    x = (rng.standard_normal((tokens, features)) * scale).astype(np.float16)
    w = (rng.standard_normal((features, outputs)) / np.sqrt(features)).astype(np.float16)
    if sparsity:
        zero = rng.random(w.shape) < sparsity
        w[zero] = np.where(rng.random(w.shape) < 0.5, 0.0, -0.0)[zero]
    return x, w


def assert_same_bits(a, b):
    assert a.dtype == b.dtype == np.float16 and a.shape == b.shape
    diff = np.flatnonzero(bits(a) != bits(b))
    assert diff.size == 0, (f"{diff.size} elements differ, first at flat {diff[0]}: "
                            f"{bits(a).flat[diff[0]]:#06x} vs {bits(b).flat[diff[0]]:#06x}")


def single_output(x16, w16, width, t, n):
    """Y[t, n] straight from SPEC 7, scalar by scalar (an independent third opinion)."""
    features = x16.shape[1]
    partials = []
    for col in range(width):
        acc = np.uint32(0)
        for k in range((col * features) // width, ((col + 1) * features) // width):
            w = w16[k, n].view(np.uint16)
            if w & 0x7FFF:
                acc = fp.fmac_mixed(acc, x16[t, k].view(np.uint16), w)
        partials.append(acc)
    s = partials[0]
    for p in partials[1:]:
        s = fp.add32(s, p)
    return int(fp.f32_to_f16(s))


SHAPES = [
    # tokens, features, outputs, width, height
    (13, 37, 29, 3, 5),       # nothing divides the fabric
    (5, 7, 6, 1, 1),
    (6, 9, 5, 1, 4),
    (6, 9, 5, 4, 1),
    (3, 2, 4, 5, 7),          # more columns than features, more rows than tokens
    (8, 16, 8, 4, 4),
    (1, 1, 1, 1, 1),
]


@pytest.mark.parametrize("tokens,features,outputs,width,height", SHAPES)
@pytest.mark.parametrize("sparsity", [0.0, 0.7])
def test_reference_and_fast_agree(tokens, features, outputs, width, height, sparsity):
    rng = np.random.default_rng(tokens * 1000 + features * 10 + width)
    x, w = random_operands(rng, tokens, features, outputs, sparsity)
    ref = fabric_gemm_reference(x, w, width, height)
    assert_same_bits(ref, fabric_gemm(x, w, width, height))
    assert_same_bits(ref, fabric_gemm(x, w, width, height, token_block=1))
    t, n = tokens - 1, outputs // 2
    assert int(bits(ref)[t, n]) == single_output(x, w, width, t, n)


def test_random_shapes_agree():
    rng = np.random.default_rng(7)
    for _ in range(12):
        tokens, features, outputs = rng.integers(1, 12, size=3)
        width, height = rng.integers(1, 6, size=2)
        x, w = random_operands(rng, tokens, features, outputs, sparsity=rng.random())
        assert_same_bits(fabric_gemm_reference(x, w, int(width), int(height)),
                         fabric_gemm(x, w, int(width), int(height)))


def test_result_depends_on_width_only_as_spec_order_says():
    # Products 1, 2**-11, 2**-24, 2**-24. One column: ((1 + 2**-11) + 2**-24) + 2**-24 where each
    # 2**-24 is a tie that rounds back to 1 + 2**-11, then FP16 rounds the tie 1 + 2**-11 to
    # even: 1.0. Two columns: (1 + 2**-11) + (2**-24 + 2**-24) = 1 + 2**-11 + 2**-23, above the
    # tie: FP16 1 + 2**-10. Four columns add in the same order as one: 1.0 again.
    x = f16([[1.0, 1.0, 1.0, 1.0]])
    w = f16([[1.0], [2.0 ** -11], [2.0 ** -24], [2.0 ** -24]])
    for width, expected in ((1, 0x3C00), (2, 0x3C01), (4, 0x3C00)):
        for model in (fabric_gemm_reference, fabric_gemm):
            assert int(bits(model(x, w, width, 1))[0, 0]) == expected, (model, width)
    # The height never changes the bits.
    rng = np.random.default_rng(3)
    x, w = random_operands(rng, 9, 11, 5, 0.3)
    assert_same_bits(fabric_gemm(x, w, 3, 1), fabric_gemm(x, w, 3, 9))


def test_zero_weights_are_skipped_both_signs():
    inf, nan = np.inf, np.nan
    x = f16([[inf, -inf, nan, 1.0], [-2.0, 3.0, 0.5, -1.0]])
    w = np.zeros((4, 3), dtype=np.float16)
    w[:, 1] = -0.0                     # negative zeros are zeros too
    w[3, 2] = 2.0                      # only the finite activation meets a non-zero weight
    assert is_streamed(w).sum() == 1
    for model in (fabric_gemm_reference, fabric_gemm):
        y = bits(model(x, w, 2, 2))
        # Accumulators start at +0.0 and zero weights never touch them: +0.0, even for -x.
        assert y[:, 0].tolist() == [0x0000, 0x0000]
        assert y[:, 1].tolist() == [0x0000, 0x0000]
        assert y[:, 2].tolist() == [int(bits(f16(2.0))), int(bits(f16(-2.0)))]


def test_nan_and_infinity_propagate_canonically():
    x = f16([[np.inf, 1.0], [np.inf, -np.inf], [np.nan, 1.0], [65504.0, 65504.0]])
    # A signalling-NaN weight with payload, and weights that overflow FP16 at the end.
    w = np.array([[0x3C00, 0x7C01], [0x3C00, 0x3C00]], dtype=np.uint16).view(np.float16)
    for width in (1, 2):
        for model in (fabric_gemm_reference, fabric_gemm):
            y = bits(model(x, w, width, 2))
            assert y[0, 0] == 0x7C00                       # inf + 1
            assert y[1, 0] == fp.NAN16                     # inf - inf
            assert y[2, 0] == fp.NAN16                     # NaN activation
            assert (y[:, 1] == fp.NAN16).all()             # NaN weight
            assert y[3, 0] == 0x7C00                       # 131008 overflows FP16


def test_special_values_crossed():
    specials = fp.special_values16()
    rng = np.random.default_rng(11)
    x = rng.choice(specials, size=(9, 6)).view(np.float16)
    w = rng.choice(specials, size=(6, 7)).view(np.float16)
    for width, height in ((1, 1), (2, 3), (6, 2), (4, 4)):
        y = fabric_gemm_reference(x, w, width, height)
        assert_same_bits(y, fabric_gemm(x, w, width, height))
        nan = (bits(y) & 0x7FFF) > 0x7C00
        assert (bits(y)[nan] == fp.NAN16).all()


def test_subnormals_are_kept():
    x = np.full((4, 8), 2.0 ** -14, dtype=np.float16)            # smallest normal
    w = np.full((8, 3), 2.0 ** -10, dtype=np.float16)            # products 2**-24: subnormal
    w[:, 2] = np.float16(2.0 ** -24)                               # products 2**-38: FP32 only
    for model in (fabric_gemm_reference, fabric_gemm):
        y = model(x, w, 3, 2)
        assert (y[:, :2] == np.float16(8 * 2.0 ** -24)).all()     # FP16 subnormal, not flushed
        assert (bits(y[:, 2]) == 0).all()                          # 8 * 2**-38 rounds to +0
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((7, 10)) * 2.0 ** -12).astype(np.float16)
    w = (rng.standard_normal((10, 5)) * 2.0 ** -6).astype(np.float16)
    assert_same_bits(fabric_gemm_reference(x, w, 3, 2), fabric_gemm(x, w, 3, 2))


def test_zero_columns_of_w_and_of_the_fabric():
    rng = np.random.default_rng(2)
    x, w = random_operands(rng, 6, 3, 5)
    w[:, 1] = 0.0
    for width in (3, 5, 8):                       # 5 and 8 leave columns without features
        y = fabric_gemm_reference(x, w, width, 2)
        assert_same_bits(y, fabric_gemm(x, w, width, 2))
        assert (bits(y[:, 1]) == 0).all()


def test_dense_and_masked_paths_agree():
    # Rows of W from empty to dense, with and without non-finite
    # activations, so every branch of the vectorised kernel runs (skip, plain, masked).
    rng = np.random.default_rng(9)
    x, w = random_operands(rng, 10, 12, 20)
    density = np.linspace(0.0, 1.0, 12)
    w[rng.random(w.shape) > density[:, None]] = 0.0
    x[3, 4] = np.inf
    x[6, 9] = np.nan
    for width in (1, 2, 5):
        assert_same_bits(fabric_gemm_reference(x, w, width, 3), fabric_gemm(x, w, width, 3))


def test_column_partial_sums_match_the_reference_order():
    rng = np.random.default_rng(4)
    x, w = random_operands(rng, 5, 9, 4, 0.4)
    width = 3
    partials = [column_partial_sums(x, w, width, c) for c in range(width)]
    s = partials[0]
    for p in partials[1:]:
        s = fp.add32(s, p)
    assert (fp.f32_to_f16(s) == bits(fabric_gemm(x, w, width, 1))).all()
    with pytest.raises(ValueError, match="column 3"):
        column_partial_sums(x, w, width, 3)


def test_bad_operands_are_named():
    x, w = f16(np.ones((2, 3))), f16(np.ones((3, 4)))
    with pytest.raises(TypeError, match="X must be a float16"):
        fabric_gemm(x.astype(np.float32), w, 1, 1)
    with pytest.raises(TypeError, match="W must be a float16"):
        fabric_gemm_reference(x, [[1.0]], 1, 1)
    with pytest.raises(ValueError, match=r"disagree on K: X \(2, 3\), W \(4, 4\)"):
        fabric_gemm(x, f16(np.ones((4, 4))), 1, 1)
    with pytest.raises(ValueError, match="fabric width"):
        fabric_gemm(x, w, 0, 1)


# --- tolerance against torch float32 -----------------------------------------------------------

@pytest.mark.parametrize("scale", [1e-3, 1.0, 30.0])
@pytest.mark.parametrize("tokens,features,outputs,width", [(16, 64, 24, 4), (9, 300, 7, 3),
                                                           (5, 1000, 6, 1), (4, 40, 3, 40)])
def test_within_tolerance_of_torch(tokens, features, outputs, width, scale):
    rng = np.random.default_rng(features + width)
    x, w = random_operands(rng, tokens, features, outputs, sparsity=0.5, scale=scale)
    y = fabric_gemm(x, w, width, 2)
    check = compare_to_torch(y, x, w, width)
    assert check.ok, check
    assert check.compared == tokens * outputs
    assert check.max_error_over_bound <= 1.0


def test_tolerance_is_not_vacuous():
    rng = np.random.default_rng(1)
    x, w = random_operands(rng, 32, 256, 16)
    y = fabric_gemm(x, w, 4, 4)
    bound = error_bound(x, w, 4)
    ref = torch_reference(x, w)
    # Half an FP16 ulp of the result plus a K-proportional FP32 term: below 2 ulps where the
    # result is not much smaller than the sum of |products| (no heavy cancellation) ...
    ulp = np.spacing(np.abs(ref).astype(np.float16)).astype(np.float64)
    big = np.abs(ref) >= 0.5 * np.abs(ref).max()
    assert big.sum() >= 5 and (bound[big] < 2 * ulp[big]).all()
    # ... and a tiny fraction of the result's scale everywhere.
    assert np.median(bound) < 2.0 ** -8 * np.median(np.abs(ref))
    # Moving any large result by 4 ulps is caught.
    wrong = y.copy()
    t, n = np.argwhere(big)[0]
    wrong.view(np.uint16)[t, n] += 4
    assert compare_to_torch(wrong, x, w, 4).violations == 1


def test_overflow_and_nonfinite_are_classified():
    x = f16([[60000.0, 60000.0], [np.inf, 1.0]])
    w = f16([[1.0, 0.0], [1.0, 1.0]])
    y = fabric_gemm(x, w, 1, 1)
    assert bits(y)[0, 0] == 0x7C00                 # 120000 overflows FP16
    assert bits(y)[1, 1] == int(bits(f16(1.0)))     # inf meets only a zero weight: skipped
    check = compare_to_torch(y, x, w, 1)
    assert check.ok and check.overflowed == 1 and check.torch_nonfinite == 2


def test_accumulation_depth():
    assert accumulation_depth(1, 1) == 0
    assert accumulation_depth(768, 1) == 767
    assert accumulation_depth(37, 3) == 12 + 2     # max K_x 13: 12 column adds + 2 row adds
    assert accumulation_depth(3, 5) == 4           # K_x <= 1: only the row adds


@pytest.mark.slow
def test_gpt2_size():
    """GPT-2 small's MLP GEMM on the wafer-sized fabric (its wall time is a benchmark
    figure: ``python bench/model_speed.py``, docs/gemm.md)."""
    rng = np.random.default_rng(0)
    tokens, features, outputs = 1024, 768, 3072
    x = rng.standard_normal((tokens, features)).astype(np.float16)
    w = (rng.standard_normal((features, outputs)) * 0.05).astype(np.float16)
    w[rng.random(w.shape) < 0.5] = 0.0
    y = fabric_gemm(x, w, 750, 994)
    for t, n in ((0, 0), (1023, 3071), (517, 1234)):
        assert int(bits(y)[t, n]) == single_output(x, w, 750, t, n)
    assert compare_to_torch(y, x, w, 750).ok
