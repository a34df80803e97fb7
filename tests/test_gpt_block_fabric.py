"""The whole block on the RTL fabric across layouts: 2 x 2 and 4 x 4, batch 1 and 2, dense
and sparse, tokens per row with padding, token counts the rows cannot share evenly and
sequences that start inside a row, a head count the layout cannot place (the attention
then on the host, and the report says why), and causality: changing the tokens after
position t leaves every output up to t bit-identical."""

import numpy as np
import pytest

from gpt_mapping import gpt, report
from gpt_mapping.model import GPTConfig, init_block

pytestmark = [pytest.mark.rtl, pytest.mark.slow]


def _check(run):
    bad = [rec.name for rec in run.ops if rec.bit_exact is not True]
    assert not bad, f"not bit-exact against the golden pipeline: {bad}"
    assert all(rec.within_tolerance for rec in run.ops)


@pytest.mark.parametrize("cfg, fabric, sparsity", [
    (GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=2), (4, 4), 0.0),    # 4 x 4, 2 rows/seq
    (GPTConfig(n_embd=16, n_head=2, n_ctx=6, batch=1), (2, 2), 0.9),    # 3 tokens per row
])
def test_every_operation_on_the_fabric_bit_exact(cfg, fabric, sparsity):
    run, _ = gpt.run_gpt(init_block(cfg, 2), gpt.random_input(cfg, 3), fabric, "rtl", sparsity)
    _check(run)
    rep = report.build_report(run)
    assert rep["where"]["host"] == [] and rep["fabric_program"]["one_program"]


@pytest.mark.parametrize("cfg, fabric", [
    (GPTConfig(n_embd=16, n_head=2, n_ctx=5, batch=1), (2, 2)),     # rows of 2 and 3 tokens
    (GPTConfig(n_embd=32, n_head=4, n_ctx=5, batch=2), (4, 4)),     # 2, 3, 2, 3: sequence 1
    (GPTConfig(n_embd=32, n_head=4, n_ctx=3, batch=3), (4, 4)),     # starts inside row 1
])
def test_tokens_the_rows_cannot_share_evenly_still_run_as_one_program(cfg, fabric):
    run, _ = gpt.run_gpt(init_block(cfg, 2), gpt.random_input(cfg, 3), fabric, "rtl")
    _check(run)
    rep = report.build_report(run)
    assert rep["where"]["host"] == [] and rep["fabric_program"]["one_program"]


def test_heads_the_columns_cannot_hold_run_the_attention_on_the_host():
    cfg = GPTConfig(n_embd=16, n_head=4, n_ctx=4, batch=1)          # 4 heads on 2 columns
    run, _ = gpt.run_gpt(init_block(cfg, 2), gpt.random_input(cfg, 3), (2, 2), "rtl")
    _check(run)
    rep = report.build_report(run)
    assert rep["where"]["host"] == ["attn.softmax", "attn.av"]
    assert "one head per column" in run.op("attn.softmax").mapping["on_host_because"]
    assert not rep["fabric_program"]["one_program"]
    assert "needs the attention on the fabric" in rep["fabric_program"]["why"]


def test_causality_on_the_rtl():
    """Two inputs that differ only after position t = 4 (of 8, the sequence on two rows):
    every operation's outputs up to position 4 are bit-identical."""
    cfg = GPTConfig(n_embd=16, n_head=2, n_ctx=8, batch=1)
    block = init_block(cfg, 4)
    x = gpt.random_input(cfg, 5)
    y = x.copy()
    y[:, 5:] = gpt.random_input(cfg, 6)[:, 5:]
    a, _ = gpt.run_gpt(block, x, (2, 2), "rtl")
    b, _ = gpt.run_gpt(block, y, (2, 2), "rtl")
    _check(a)
    _check(b)
    assert a.program["one_program"]
    for ra, rb in zip(a.ops, b.ops):
        oa, ob = gpt.bits(ra.out16), gpt.bits(rb.out16)
        if ra.name == "attn.softmax":                              # [B, H, n, n]
            assert np.array_equal(oa[:, :, :5], ob[:, :, :5]), ra.name
        else:                                                      # [T, features]
            assert np.array_equal(oa[:5], ob[:5]), ra.name
        assert not np.array_equal(oa, ob), ra.name                 # the later tokens differ
