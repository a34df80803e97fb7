"""MemoryX (gpt_mapping/memoryx.py): the FP32 master weights and the optimizer update
against torch.optim on the same gradients, step by step; the FP16 copies; bad input."""

import numpy as np
import pytest
import torch

from gpt_mapping.memoryx import AdamWConfig, MemoryX, SGDConfig

SHAPES = {"transformer.h.0.attn.c_attn.weight": (16, 48), "transformer.h.0.attn.c_attn.bias": (48,),
          "transformer.ln_f.weight": (16,)}


def _params(seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(s).astype(np.float32) for n, s in SHAPES.items()}


def _grads(step, seed=1):
    rng = np.random.default_rng(seed + 100 * step)
    return {n: (rng.standard_normal(s) * 10.0 ** rng.integers(-4, 1)).astype(np.float32)
            for n, s in SHAPES.items()}


def _torch_run(params, opt_cls, kwargs, steps):
    tp = {n: torch.nn.Parameter(torch.from_numpy(p.copy())) for n, p in params.items()}
    opt = opt_cls(list(tp.values()), **kwargs)
    out = []
    for s in range(steps):
        for n, g in _grads(s).items():
            tp[n].grad = torch.from_numpy(g.copy())
        opt.step()
        out.append({n: p.detach().numpy().copy() for n, p in tp.items()})
    return out


CASES = [
    (SGDConfig(lr=0.1), torch.optim.SGD, dict(lr=0.1)),
    (SGDConfig(lr=0.05, momentum=0.9), torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
    (SGDConfig(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True), torch.optim.SGD,
     dict(lr=0.05, momentum=0.9, weight_decay=0.01, nesterov=True)),
    (SGDConfig(lr=0.05, momentum=0.5, dampening=0.1), torch.optim.SGD,
     dict(lr=0.05, momentum=0.5, dampening=0.1)),
    (AdamWConfig(lr=1e-3), torch.optim.AdamW, dict(lr=1e-3)),
    (AdamWConfig(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1), torch.optim.AdamW,
     dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1)),
]


@pytest.mark.parametrize("cfg, opt_cls, kwargs", CASES, ids=lambda c: repr(c)[:40])
def test_updates_follow_torch(cfg, opt_cls, kwargs):
    """Ten steps from the same weights and gradients: every master weight within 2 FP32
    ulps of its tensor's largest value of torch's after each step, most of them the same
    bits (the same operations; torch's kernels may fuse a multiply-add); the copies are the
    masters rounded to FP16."""
    params = _params()
    mx = MemoryX(params, cfg)
    ref = _torch_run(params, opt_cls, kwargs, 10)
    exact = total = 0
    for s in range(10):
        mx.update(_grads(s))
        for n, want in ref[s].items():
            got = mx.params[n]
            # within 2 FP32 ulps of the tensor's largest value (measured: at most 1.6
            # half-ulps after 10 steps; near-cancelled elements differ in their last bits)
            tol = 4 * 2.0 ** -24 * float(np.abs(want).max())
            assert float(np.abs(got - want).max()) <= tol, (s, n)
            exact += int((got == want).sum())
            total += got.size
    assert exact > 0.5 * total            # mostly the same bits
    for n, p16 in mx.fp16().items():
        assert p16.dtype == np.float16 and np.array_equal(p16, mx.params[n].astype(np.float16))
    assert mx.steps == 10 and list(mx.state_dict()) == list(SHAPES)


def test_update_is_deterministic_and_in_order():
    a, b = MemoryX(_params(), AdamWConfig()), MemoryX(_params(), AdamWConfig())
    for s in range(3):
        a.update(_grads(s))
        b.update(dict(reversed(list(_grads(s).items()))))     # the grads' order is not used
    for n in SHAPES:
        assert np.array_equal(a.params[n].view(np.uint32), b.params[n].view(np.uint32))


def test_bad_input_is_named():
    mx = MemoryX(_params(), SGDConfig(lr=0.1))
    g = _grads(0)
    with pytest.raises(KeyError, match="no gradient for parameter 'transformer.ln_f.weight'"):
        mx.update({k: v for k, v in g.items() if "ln_f" not in k})
    with pytest.raises(KeyError, match="'nope', which MemoryX does not hold"):
        mx.update({**g, "nope": np.zeros(1)})
    with pytest.raises(ValueError, match=r"gradient of 'transformer.ln_f.weight' has shape "
                                         r"\[17\], the parameter \[16\]"):
        mx.update({**g, "transformer.ln_f.weight": np.zeros(17, np.float32)})
    assert mx.steps == 0 and np.array_equal(mx.params["transformer.ln_f.weight"],
                                            _params()["transformer.ln_f.weight"])
    with pytest.raises(ValueError, match="lr = 0"):
        SGDConfig(lr=0)
    with pytest.raises(ValueError, match=r"betas\[1\] = 1.0"):
        AdamWConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov"):
        SGDConfig(nesterov=True)
    with pytest.raises(TypeError, match="not a float array"):
        MemoryX({"w": np.arange(3)}, SGDConfig())
