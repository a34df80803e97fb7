"""The host operations of the mapped GPT block (golden/block.py, run by gpt_mapping.gpt): the
golden model of everything that is not a fabric GEMM, in float32 with a fixed order and FP16
results."""

import math

import numpy as np
import pytest
import torch

from golden import fp
from golden import block
from gpt_mapping.model import GPTConfig

RNG = np.random.default_rng(1234)


def f16(values):
    return np.asarray(values, dtype=np.float32).astype(np.float16)


def test_round_f32_to_f16_matches_golden_fp_at_every_rounding_boundary():
    """Every FP16 value, the float32 midpoints between neighbours (ties) and one float32 ulp
    either side of them, plus specials: the fast cast gives golden.fp's bits."""
    h = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)   # +0 .. max
    mids = (h[:-1] + h[1:]) / 2                                     # exact in float32
    mids32 = mids.astype(np.float32)
    cand = np.concatenate([h.astype(np.float32), mids32, np.nextafter(mids32, np.float32(0)),
                           np.nextafter(mids32, np.float32(np.inf)),
                           np.float32([65504, 65519.99, 65520, 1e5, np.inf, np.nan, 2.0**-26,
                                       2.0**-25, 3 * 2.0**-26, 1e-40])])
    cand = np.concatenate([cand, -cand])
    want = fp.f32_to_f16(cand.view(np.uint32))
    got = block.round_f32_to_f16(cand).view(np.uint16)
    assert np.array_equal(got, want)


def test_sums_run_in_index_order():
    """Not numpy's pairwise sum: the documented left-to-right order, bit for bit."""
    x = (RNG.standard_normal((3, 1000)) * 10.0 ** RNG.integers(-4, 5, (3, 1000))).astype(np.float32)
    loop = x[:, 0].copy()
    for i in range(1, x.shape[1]):
        loop = loop + x[:, i]
    assert np.array_equal(block.sum_in_order(x, axis=-1).view(np.uint32), loop.view(np.uint32))
    # An input where the order changes the result: pairwise would keep the small terms.
    y = np.array([1e8] + [1.0] * 15 + [-1e8], dtype=np.float32)
    assert block.sum_in_order(y) == 0.0 and np.sum(y) != 0.0


def test_layer_norm16_close_to_float64_and_fp16():
    x = f16(RNG.standard_normal((16, 48)) * 3 + 1)
    w = (1 + 0.1 * RNG.standard_normal(48)).astype(np.float32)
    b = (0.1 * RNG.standard_normal(48)).astype(np.float32)
    out = block.layer_norm16(x, w, b, 1e-5)
    assert out.dtype == np.float16
    x64 = x.astype(np.float64)
    ref = (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5) * w + b
    # One FP16 rounding (half an ulp, <= 2**-11 relative) plus float32 noise.
    assert np.all(np.abs(out - ref) <= 2.0**-11 * np.abs(ref) * 1.01 + 1e-6)


def _qkv(cfg, scale=1.0):
    return f16(RNG.standard_normal((cfg.tokens, 3 * cfg.n_embd)) * scale)


def test_attention_probs16_masked_normalised_and_chunk_independent():
    cfg = GPTConfig(n_embd=24, n_head=3, n_ctx=11, batch=2)
    qkv = _qkv(cfg, 2.0)
    probs = block.attention_probs16(qkv, cfg)
    assert probs.shape == (2, 3, 11, 11) and probs.dtype == np.float16
    upper = np.triu(np.ones((11, 11), bool), 1)
    assert np.all(probs.view(np.uint16)[..., upper] == 0)          # exactly +0 where masked
    assert np.allclose(probs.astype(np.float64).sum(-1), 1.0, atol=11 * 2.0**-11)
    for chunk in (1, 3, 11):
        assert np.array_equal(block.attention_probs16(qkv, cfg, chunk=chunk).view(np.uint16),
                              probs.view(np.uint16))
    # Against float64 softmax of the same FP16 q, k.
    q, k, _ = (qkv.astype(np.float64).reshape(2, 11, 3, 3, 8)[:, :, i].transpose(0, 2, 1, 3)
               for i in range(3))
    s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(8)
    s[..., upper] = -np.inf
    ref = np.exp(s - s.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.max(np.abs(probs - ref)) < 2.0**-11


def test_attention_values16_order_and_reference():
    cfg = GPTConfig(n_embd=16, n_head=2, n_ctx=9, batch=2)
    qkv = _qkv(cfg)
    probs = block.attention_probs16(qkv, cfg)
    out = block.attention_values16(probs, qkv, cfg)
    assert out.shape == (18, 16) and out.dtype == np.float16
    for chunk in (1, 4):
        assert np.array_equal(block.attention_values16(probs, qkv, cfg, chunk=chunk).view(np.uint16),
                              out.view(np.uint16))
    # Spelled out for one (batch, head, token): y = p[0] v[0] + p[1] v[1] + ... in float32.
    v = qkv.astype(np.float32).reshape(2, 9, 3, 2, 8)[:, :, 2]        # [B, n, H, d]
    p = probs.astype(np.float32)
    b, h, t = 1, 1, 6
    acc = p[b, h, t, 0] * v[b, 0, h]
    for u in range(1, t + 1):
        acc = acc + p[b, h, t, u] * v[b, u, h]
    assert np.array_equal(out.reshape(2, 9, 2, 8)[b, t, h].view(np.uint16),
                          block.round_f32_to_f16(acc).view(np.uint16))


@pytest.mark.parametrize("form", ["erf", "tanh"])
def test_gelu16_is_the_formula_rounded_once(form):
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    finite = np.isfinite(x)
    out = block.gelu16(x, form)
    t = torch.from_numpy(x[finite].astype(np.float64))
    ref = torch.nn.functional.gelu(t, approximate="none" if form == "erf" else "tanh").numpy()
    # Within half an FP16 ulp of the float64 value (plus float64 noise near ties).
    err = np.abs(out[finite].astype(np.float64) - ref)
    with np.errstate(divide="ignore"):
        exponent = np.floor(np.log2(np.abs(ref)))
    ulp = np.maximum(2.0**-24, 2.0 ** (exponent - 10))              # FP16 spacing at |ref|
    assert np.all(err <= 0.5 * ulp * (1 + 1e-6) + 1e-12)
    specials = block.gelu16(np.float16([np.inf, -np.inf, np.nan]), form).view(np.uint16)
    assert list(specials) == [0x7C00, 0x8000, fp.NAN16]


def test_gelu16_rejects_unknown_form():
    with pytest.raises(ValueError, match="'relu'"):
        block.gelu16(f16([1.0]), "relu")


def test_residual16_is_the_spec_fp16_add():
    a, b = f16(RNG.standard_normal(4096) * 100), f16(RNG.standard_normal(4096) * 1e-2)
    assert np.array_equal(block.residual16(a, b).view(np.uint16),
                          fp.add16(a.view(np.uint16), b.view(np.uint16)))


def test_add_bias16_rounds_float32_sum_once():
    y = f16(RNG.standard_normal((8, 5)))
    bias = RNG.standard_normal(5).astype(np.float32)
    want = (y.astype(np.float32) + bias).astype(np.float16)
    assert np.array_equal(block.add_bias16(y, bias).view(np.uint16), want.view(np.uint16))


def test_to_f16_accepts_float16_and_float32_only():
    assert block.to_f16(np.float32([1 + 2.0**-12])).view(np.uint16)[0] == 0x3C00
    with pytest.raises(TypeError, match="float64"):
        block.to_f16(np.zeros(3))
