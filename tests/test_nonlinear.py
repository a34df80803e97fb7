"""The non-linear functions of golden/nonlinear.py: their accuracy against float64 over every
FP16 input (asserted against ACCURACY_BOUNDS, the figures in docs/nonlinear.md), their
special values, and the kernels' structure (what the PE can run)."""

import math

import numpy as np
import pytest

from golden import fp
from golden import nonlinear as N
from gpt_mapping.kernels import allocate, compile_kernel
from rtl.pe.regs import DType, PEParams, TensorOp


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_accuracy_over_every_fp16_input(name):
    acc = N.accuracy(name)
    assert acc["max_ulp"] <= N.ACCURACY_BOUNDS[name], acc
    # NaN results exactly where float64 has them (an unmatched NaN is an infinite error).
    assert math.isfinite(acc["max_ulp"])
    assert acc["correctly_rounded"] >= N.ROUNDING_BOUNDS[name], acc


def f16(values):
    return fp.f16_to_bits(np.array(values, dtype=np.float64))


def values(name, xs):
    return N.run(name, f16(xs)).view(np.float16).astype(np.float64)


def test_special_values():
    inf, nan = math.inf, math.nan
    e = values("exp", [-inf, inf, 0.0, -0.0, nan, 11.0, 11.1, -17.0, -18.0])
    assert list(e[:4]) == [0.0, inf, 1.0, 1.0] and math.isnan(e[4])
    assert e[5] == np.float16(math.exp(11.0)) and e[6] == inf
    assert e[7] == np.float16(math.exp(-17.0)) > 0 and e[8] == 0.0
    r = values("reciprocal", [0.0, -0.0, inf, -inf, nan, 2.0 ** -24, 65504.0])
    assert list(r[:4]) == [inf, -inf, 0.0, -0.0] and np.signbit(r[3]) and math.isnan(r[4])
    assert r[5] == inf and r[6] == np.float16(1 / 65504.0)
    q = values("rsqrt", [0.0, -0.0, inf, -1.0, -inf, nan, 4.0, 2.0 ** -24])
    assert list(q[:3]) == [inf, -inf, 0.0] and all(math.isnan(v) for v in q[3:6])
    assert q[6] == 0.5 and q[7] == 4096.0
    for g in ("gelu", "gelu_tanh"):
        v = values(g, [inf, -inf, nan, 0.0, 1e4, -1e4, 8.0, -8.0])
        assert v[0] == inf and v[1] == 0.0 and math.isnan(v[2]) and v[3] == 0.0
        assert v[4] == np.float16(1e4) and v[5] == 0.0 and v[6] == 8.0 and v[7] == 0.0


def test_gelu_matches_torch_where_torch_is_exact():
    """nanoGPT's GELU (torch's erf form) in float64 agrees with the reference used here,
    where torch's ``x/2 (1 + erf(x/sqrt 2))`` does not cancel (x >= -3: below, the reference's
    erfc form is the accurate one)."""
    torch = pytest.importorskip("torch")
    x16 = N.all_fp16()
    x = x16.view(np.float16).astype(np.float64)
    finite = np.isfinite(x) & (x >= -3)
    ref = N.reference("gelu", x16)[finite]
    t = torch.nn.functional.gelu(torch.from_numpy(x[finite])).numpy()
    assert np.allclose(ref, t, rtol=1e-10, atol=1e-300)
    tt = torch.nn.functional.gelu(torch.from_numpy(x[finite]), approximate="tanh").numpy()
    assert np.allclose(N.reference("gelu_tanh", x16)[finite], tt, rtol=1e-9, atol=1e-300)


def test_ulp_error_metric():
    ref = np.array([1.0, 1.0, 65504.0, 1e6, math.nan, 1.0, 2.0 ** -24])
    y = f16([1.0, 1.0 + 2 ** -10, math.inf, math.inf, math.nan, math.nan, 0.0])
    err = N.ulp_error(y, ref)
    assert list(err[:2]) == [0.0, 1.0]
    assert err[2] == (65536 - 65504) / 32 and err[3] == 0.0 and err[4] == 0.0
    assert err[5] == math.inf and err[6] == 1.0


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_kernels_are_tensor_ops_the_pe_has(name):
    k = N.kernel(name)
    assert k.buffers["x"] == k.buffers["y"] == DType.FP16
    for st in k.steps:
        assert st.op in TensorOp
        assert (st.s is not None) == (st.op == TensorOp.FMAC)
        assert st.dst != "x"
    assert k.steps[-1].dst == "y"
    kp = compile_kernel(name, 512)
    assert len(kp.dsrs) <= PEParams().num_dsrs
    assert sum(1 for line in kp.source.splitlines() if line.startswith("t.")) == len(k.steps)


def test_compile_errors_name_the_kernel_and_the_limit():
    with pytest.raises(ValueError, match=r"gelu: n = 0"):
        compile_kernel("gelu", 0)
    with pytest.raises(ValueError, match=r"gelu: n = 4000 needs .* the PE has 24576"):
        compile_kernel("gelu", 4000)
    with pytest.raises(KeyError, match="no kernel 'softplus'"):
        N.kernel("softplus")
    with pytest.raises(TypeError, match="x16"):
        N.run("exp", np.zeros(4, dtype=np.float32))


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_allocation_renames_without_changing_a_value(name):
    """The PE's buffers (gpt_mapping.kernels.allocate): no step writes a buffer it reads, a
    step's FP32 operands sit on distinct bank pairs, and the renamed steps compute the same
    bits over every FP16 input."""
    k = N.kernel(name)
    steps, buffers, pairs = allocate(k)
    for st in steps:
        srcs = [o for o in (st.a, st.b) if isinstance(o, str)]
        assert st.dst not in srcs, st
        fp32 = [o for o in set(srcs) | {st.dst} if buffers[o] == DType.FP32]
        assert len({pairs[o] for o in fp32}) == len(fp32), (st, {o: pairs[o] for o in fp32})
    renamed = N.Kernel(name, steps, buffers)
    x16 = N.all_fp16()
    assert np.array_equal(N.run(renamed, x16), N.run(k, x16))
