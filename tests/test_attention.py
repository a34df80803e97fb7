"""Causal attention on the fabric (gpt_mapping/attention.py): the golden model against the
host's float32 attention and torch, the layout's conditions and errors, and on the RTL
fabric the probabilities and P V bit for bit against the golden model, the FMACs equal to
the unmasked (query, key) pairs, the keys' traffic and the cycle model."""

import math

import numpy as np
import pytest
import torch

from golden import fabric_ops as G
from golden.block import attention_probs16
from golden.nonlinear import KERNELS
from gpt_mapping import attention as A
from gpt_mapping.layout import MappingError
from gpt_mapping.model import GPTConfig
from rtl.router import Port


def _qkv(t, c, seed=0):
    return np.random.default_rng(seed).standard_normal((t, 3 * c)).astype(np.float16)


def _torch_attention(qkv, h, n, b):
    q, k, v = torch.from_numpy(qkv.astype(np.float32)).reshape(b, n, 3, h, -1).unbind(2)
    q, k, v = (a.transpose(1, 2) for a in (q, k, v))
    d = q.shape[-1]
    s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
    s = s.masked_fill(torch.triu(torch.ones(n, n, dtype=torch.bool), 1), float("-inf"))
    p = torch.softmax(s, dim=-1)
    return p.numpy(), (p @ v).transpose(1, 2).reshape(b * n, -1).numpy()


def test_golden_attention_is_close_to_torch_and_to_the_host_model():
    c, h, n, b = 64, 4, 16, 2
    qkv = _qkv(n * b, c)
    probs, att = G.attention(qkv.view(np.uint16), h, n, b)
    p32, a32 = (x.view(np.float16).astype(np.float32) for x in (probs, att))
    tp, ta = _torch_attention(qkv, h, n, b)
    assert np.abs(p32 - tp).max() < 2e-3
    assert np.abs(a32 - ta).max() / np.abs(ta).max() < 2e-3
    cfg = GPTConfig(n_embd=c, n_head=h, n_ctx=n, batch=b)
    hp = attention_probs16(qkv, cfg)
    assert np.abs(p32 - hp.astype(np.float32)).max() < 2e-3
    # Masked pairs are +0, every row sums to 1 within FP16 rounding.
    assert not probs[..., np.triu_indices(n, 1)[0], np.triu_indices(n, 1)[1]].any()
    assert np.allclose(p32.sum(-1), 1, atol=1e-2)
    # P V alone from the same probabilities: the attention's second half.
    assert np.array_equal(G.attention_values(probs, qkv.view(np.uint16), h, n, b), att)


def test_golden_attention_keys_in_order_fma_from_plus_zero():
    """One query, written out: the order and roundings the docstring states."""
    from golden import fp
    from golden.nonlinear import run
    c, h, n, b = 4, 1, 3, 1
    qkv = _qkv(n, c, seed=3)
    probs, att = G.attention(qkv.view(np.uint16), h, n, b)
    x = fp.f16_to_f32(qkv.view(np.uint16))
    q, k = x[:, :c], x[:, c:2 * c]
    p = 2
    scale = fp.f32_to_bits(np.float32(1 / math.sqrt(c)))
    s = []
    for u in range(p + 1):
        acc = np.uint32(0)
        for i in range(c):
            acc = fp.fmac32(acc, q[p, i], k[u, i])
        s.append(fp.mul32(acc, scale))
    m = fp.max32(fp.max32(s[0], s[1]), s[2])
    e = run("exp", np.array([fp.f32_to_f16(fp.sub32(v_, m)) for v_ in s], dtype=np.uint16))
    e32 = fp.f16_to_f32(e)
    total = fp.add32(fp.add32(e32[0], e32[1]), e32[2])
    r = fp.f16_to_f32(run("reciprocal", np.array([fp.f32_to_f16(total)], dtype=np.uint16)))[0]
    want = [fp.f32_to_f16(fp.mul32(e32[u], r)) for u in range(3)]
    assert [int(v_) for v_ in probs[0, 0, p]] == [int(w) for w in want]


@pytest.mark.parametrize("args, message", [
    ((64, 4, 16, 2, 2, 4), "one head per column: n_head 4 on 2 columns"),
    ((12, 4, 8, 1, 4, 2), "even head size, not 3"),
])
def test_layout_conditions_are_named(args, message):
    with pytest.raises(MappingError) as exc:
        A.attention_layout(*args)
    assert message in str(exc.value)


def test_uneven_rows_and_sequences_inside_rows_are_laid_out():
    # 9 tokens (3 sequences of 3) on 4 rows: 2, 2, 2, 3 tokens; sequences start at tokens
    # 3 (inside row 1) and 6 (row 3's first).
    lay = A.attention_layout(16, 2, 3, 3, 2, 4)
    assert lay.tokens_per_row == (2, 2, 2, 3) and lay.rows_per_sequence == 2
    t1 = A.tile(lay, 0, 1)
    assert (t1.first_key, t1.recv, t1.keys, t1.qa, t1.segments) == (0, 2, 4, 1, ((0, 1), (1, 2)))
    assert not t1.fwd_recv and t1.fwd_from == 1        # row 2 needs only token 3
    t3 = A.tile(lay, 0, 3)
    assert (t3.recv, t3.fwd_from) == (0, 3)            # a new sequence, the last row
    # A row without tokens passes the keys on: 2 tokens on 4 rows are rows 1 and 3.
    lay = A.attention_layout(16, 2, 2, 1, 2, 4)
    assert lay.tokens_per_row == (0, 1, 0, 1)
    routes = {(y, port) for x, y, port, color, mask in A.kv_routes(lay) if x == 0}
    assert routes == {(1, Port.RAMP), (2, Port.N), (3, Port.N)}
    assert A.scores_program(lay, 0, 0) == ([], "")


def test_a_tile_that_does_not_fit_is_named():
    # 256 tokens of one sequence on 16 rows: row 7 already sees 128 keys x 16 tokens.
    with pytest.raises(MappingError, match=r"tile \(0, 7\): the attention's scores and "
                                           r"softmax needs 50968 bytes of SRAM \(128 keys"):
        A.attention_layout(16, 2, 256, 1, 2, 16)


def test_permute_qkv_puts_each_head_whole_in_its_column():
    c, h = 8, 2
    qkv = np.arange(2 * 3 * c, dtype=np.float16).reshape(2, 3 * c)
    perm = A.permute_qkv(qkv, h)
    d = c // h
    for head in range(h):
        got = perm[:, head * 3 * d:(head + 1) * 3 * d]
        want = np.concatenate([qkv[:, part * c + head * d: part * c + (head + 1) * d]
                               for part in range(3)], axis=1)
        assert np.array_equal(got, want)


def test_cycle_model_terms_and_bad_operation():
    lay = A.attention_layout(64, 4, 16, 2, 4, 4)
    assert A.predict_attention_cycles(lay, "scores") > A.predict_attention_cycles(lay, "values")
    with pytest.raises(ValueError, match="no attention operation 'softmax'"):
        A.cycle_features(lay, "softmax")


def test_bad_qkv_is_refused_before_anything_runs():
    lay = A.attention_layout(16, 2, 4, 2, 2, 2)
    with pytest.raises(MappingError, match=r"qkv must be float16 \[8, 48\], not float32"):
        A.run_scores_rtl(lay, np.zeros((8, 48), np.float32))


def _fmac_steps(name):
    return sum(1 for s in KERNELS[name].steps if s.op.name == "FMAC")


@pytest.mark.rtl
@pytest.mark.slow
@pytest.mark.parametrize("case", [
    (16, 2, 4, 2, 2),        # one row per sequence: no keys travel
    (16, 2, 6, 1, 2),        # two rows, 3 tokens per row (padding), one block forwarded
    (32, 4, 8, 1, 4),        # four rows per sequence: keys stored and forwarded
    (32, 4, 5, 2, 4),        # rows of 2, 3, 2, 3 tokens, the second sequence from row 2
    (16, 2, 3, 3, 4),        # rows of 2, 2, 2, 3: a sequence starts inside row 1
    (16, 2, 2, 1, 4),        # rows of 0, 1, 0, 1: row 2 passes the keys on
])
def test_attention_on_the_rtl_fabric(case):
    c, h, n, b, rows = case
    lay = A.attention_layout(c, h, n, b, h, rows)
    qkv = _qkv(n * b, c, seed=5)
    gp = G.attention_probs(qkv.view(np.uint16), h, n, b)
    ga = G.attention_values(gp, qkv.view(np.uint16), h, n, b)
    probs, cs = A.run_scores_rtl(lay, qkv)
    assert np.array_equal(probs.view(np.uint16), gp), "probabilities not bit-exact"
    att, cv = A.run_values_rtl(lay, gp.view(np.float16), qkv)
    assert np.array_equal(att.view(np.uint16), ga), "P V not bit-exact"
    d = lay.head_dim
    pairs = b * h * n * (n + 1) // 2
    # Only the unmasked pairs are multiplied: P V's FMAC lanes are exactly d per pair; the
    # scores' are d per pair plus the exp and reciprocal kernels' own FMACs, over each
    # row's keys (its sequence's tokens from the rows above, and its own) x T_pad.
    assert cv["fmac_lane_ops"] == d * pairs
    bounds = lay.qkv.token_bounds
    kernels = 0
    for y in range(rows):
        t = int(bounds[y + 1] - bounds[y])
        if t:
            keys = t + int(bounds[y]) % n
            kernels += _fmac_steps("exp") * keys * lay.qkv.t_pad(y) + _fmac_steps("reciprocal") * t
    assert cs["fmac_lane_ops"] == d * pairs + h * kernels
    # Keys go south only, each from its row to the row of its sequence's last token (the
    # command wavelet of each column's stream passes south too, once per row but the last).
    ports = np.asarray(cs["router_port_wavelets"])          # [H, W, 5]: N E S W RAMP
    assert ports[..., 0].sum() == 0
    row = np.searchsorted(bounds, np.arange(n * b), side="right") - 1
    last = (np.arange(n * b) // n + 1) * n - 1
    assert ports[..., 2].sum() == d * h * (row[last] - row).sum() + h * (rows - 1)
    for op, counters in (("scores", cs), ("values", cv)):
        measured, predicted = counters["cycles"], counters["predicted_cycles"]
        assert predicted == A.predict_attention_cycles(lay, op)
        assert abs(predicted - measured) <= 0.10 * measured, (op, predicted, measured)
