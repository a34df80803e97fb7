"""Bias add, residual add and GELU on the RTL fabric, bit for bit against golden/fabric_ops.py,
the output lying where the input did, and the cycles against the model of
gpt_mapping/elementwise.py."""

import functools

import numpy as np
import pytest

from golden import fabric_ops as G
from gpt_mapping import elementwise as E
from gpt_mapping.rowops import row_mapping

pytestmark = pytest.mark.rtl

CASES = [(2, 2, 8, 16), (2, 2, 5, 12), (4, 4, 10, 40), (4, 4, 32, 64), (3, 4, 3, 25)]
OPS = ["bias", "residual", "gelu", "gelu_tanh"]


@functools.lru_cache(maxsize=None)
def data(t, c):
    rng = np.random.default_rng(11 * t + c)
    x = (rng.standard_normal((t, c)) * 2).astype(np.float16)
    x[0, 0], x[-1, -1] = np.float16(-0.0), np.float16(65504)       # specials ride along
    r = rng.standard_normal((t, c)).astype(np.float16)
    b = rng.standard_normal(c).astype(np.float16)
    return x, r, b


@functools.lru_cache(maxsize=None)
def run(case, op):
    w, h, t, c = case
    m = row_mapping(t, c, w, h)
    x, r, b = data(t, c)
    operand = {"bias": b, "residual": r}.get(op)
    return m, E.run_elementwise_rtl(m, op, x, operand)


def golden(op, x, r, b):
    x, r, b = (v.view(np.uint16) for v in (x, r, b))
    if op == "bias":
        return G.bias_add(x, b)
    if op == "residual":
        return G.residual_add(x, r)
    return G.gelu(x, op)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}x{}-T{}-C{}".format(*c))
def test_elementwise_is_bit_exact(case, op):
    m, (y16, _) = run(case, op)
    want = golden(op, *data(*case[2:]))
    bad = np.argwhere(y16.view(np.uint16) != want)
    assert not len(bad), [(int(t), int(k)) for t, k in bad[:5]]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}x{}-T{}-C{}".format(*c))
def test_elementwise_cycles_match_the_model(case, op):
    m, (_, counters) = run(case, op)
    measured, predicted = counters["cycles"], E.predict_elementwise_cycles(m, op)
    assert counters["predicted_cycles"] == predicted
    assert abs(predicted - measured) <= 0.10 * measured, (measured, predicted)
