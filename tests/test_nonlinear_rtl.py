"""The non-linear kernels on the RTL PE, as code tasks, bit for bit against golden/nonlinear.py:
a sample of each function's inputs (every special class, the inputs around its overflow,
underflow and clamp points, the kernel's worst-ulp inputs, random bit patterns). ``nox -s
nonlinear`` runs all 65,536 FP16 inputs (docs/nonlinear.md)."""

import functools

import numpy as np
import pytest

from golden import fp
from golden import nonlinear as N
from gpt_mapping.kernels import compile_kernel, predict_cycles, run_kernels_on_pe

pytestmark = pytest.mark.rtl

#: Per kernel, values around the points where its sequence changes regime.
EDGES = {
    "exp": [11.0, 11.08, 11.09, 11.1, 12.0, -17.3, -17.33, -17.4, -18.0, -24.0],
    "reciprocal": [2.0 ** -15, 2.0 ** -16, 2.0 ** -24, 6.1e-5, 32768.0, 65504.0, 3.0],
    "rsqrt": [2.0 ** -24, 2.0 ** -14, 65504.0, 0.25, 2.0, 3.0, -2.0 ** -24],
    "gelu": [-5.9, -5.5, -4.0, -8.0, -7.99, 8.0, 7.99, 1e-3, -1e-3, 2.0 ** -24],
    "gelu_tanh": [-5.9, -5.5, -4.0, -8.0, -7.99, 8.0, 7.99, 1e-3, -1e-3, 2.0 ** -24],
    # gelu_grad: its zero near -0.7518, the clamp, the tails where it rounds to +-0 and 1
    "gelu_grad": [-0.7515, -0.752, -0.7524, -8.0, -7.99, 8.0, 7.99, -6.0, 4.5, 2.0 ** -24],
}
N_RANDOM = 400


def sample(name):
    rng = np.random.default_rng(sum(map(ord, name)))
    edges = fp.f16_to_bits(np.array(EDGES[name] + [-v for v in EDGES[name]]))
    nudged = np.concatenate([edges - 1, edges + 1]).astype(np.uint16)
    everything = N.all_fp16()
    err = N.ulp_error(N.run(name, everything), N.reference(name, everything))
    worst = everything[np.argsort(err)[-16:]]
    rand = rng.integers(0, 1 << 16, N_RANDOM).astype(np.uint16)
    return np.concatenate([fp.special_values16(), edges, nudged, worst, rand]).astype(np.uint16)


@functools.lru_cache(maxsize=None)
def rtl_runs():
    """Every kernel's sample in one simulator run, 256 elements per code-task run."""
    inputs = {name: sample(name) for name in N.KERNELS}
    return inputs, run_kernels_on_pe(inputs, n=256, timeout=1800)


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_kernel_on_the_pe_is_bit_exact(name):
    inputs, runs = rtl_runs()
    x16, got = inputs[name], runs[name].y16
    want = N.run(name, x16)
    bad = np.flatnonzero(got != want)
    assert not len(bad), [(hex(int(x16[i])), hex(int(got[i])), hex(int(want[i])))
                          for i in bad[:8]]


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_kernel_cycles_are_the_datapath_streaming(name):
    """Every step streams the vector once at two FP32 lanes per issue, back to back (the
    launches run ahead; the engine orders them), and the buffer allocation leaves few bank
    conflicts (only the FP16 input's one-word reads can meet a write): the task's cycles are
    within 12 % of the issues, plus the task's start and the last step's drain."""
    inputs, runs = rtl_runs()
    run = runs[name]
    issues = run.steps * 256 // 2
    counters = run.counters[0]               # a chunk of 256 elements
    assert counters["BUSY"] == issues
    assert counters["STALL_HAZARD"] == 0
    assert issues <= run.cycles[0] <= 1.12 * issues + 300, (run.cycles[0], counters)


@pytest.mark.parametrize("name", list(N.KERNELS))
def test_cycle_model_predicts_the_task(name):
    """gpt_mapping.kernels.predict_cycles within 5 % of the RTL on every chunk (256 elements
    and the shorter last one): sizes and kernels its one constant was not taken from."""
    inputs, runs = rtl_runs()
    run = runs[name]
    sizes = [min(256, len(inputs[name]) - i) for i in range(0, len(inputs[name]), 256)]
    for n, measured in zip(sizes, run.cycles):
        predicted = predict_cycles(compile_kernel(name, n))
        assert abs(predicted - measured) <= 0.05 * measured, (n, predicted, measured)
