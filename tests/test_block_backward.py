"""One GPT block's backward pass (gpt_mapping/block_backward.py): the linear layers on the
RTL fabric bit for bit the golden model, everything within a documented tolerance of
torch autograd on the same FP16 input, and one MemoryX step on the block's parameters."""

import numpy as np
import pytest
import torch

from gpt_mapping import gpt
from gpt_mapping.block_backward import block_backward
from gpt_mapping.memoryx import AdamWConfig, MemoryX
from gpt_mapping.model import GPTConfig, init_block

#: max |ours - torch| / max |torch| for every gradient; measured at most 1.8e-3 on these
#: blocks (FP16 activations and gradients between operations, a relative 2^-11 each)
TOL = 4e-3
CASES = {"2x2": (GPTConfig(n_embd=16, n_head=2, n_ctx=4, batch=2), (2, 2)),
         "4x4": (GPTConfig(n_embd=64, n_head=4, n_ctx=16, batch=2), (4, 4))}


def _forward(cfg, fabric, seed=0):
    block = init_block(cfg, seed)
    x = gpt.random_input(cfg, 1)
    run, _ = gpt.run_gpt(block, x, fabric, "golden")
    dout = (np.random.default_rng(3).standard_normal((cfg.tokens, cfg.n_embd)) * 0.1) \
        .astype(np.float16)
    return block, x, run, gpt.map_block(block, 0.0), dout


def _torch_grads(mapped, x, dout):
    tb = mapped.torch_block().requires_grad_(True)
    xt = torch.tensor(x.astype(np.float32), requires_grad=True)
    out = tb(xt)
    out.backward(torch.tensor(dout.astype(np.float32)).reshape(out.shape))
    grads = {n: p.grad.numpy() for n, p in tb.named_parameters()}
    return xt.grad.numpy().reshape(dout.shape), grads


@pytest.mark.parametrize("case", CASES)
def test_block_backward_against_torch_autograd(case):
    cfg, fabric = CASES[case]
    _, x, run, mapped, dout = _forward(cfg, fabric)
    bg = block_backward(run, mapped, dout, "golden")
    dx_t, grads_t = _torch_grads(mapped, x, dout)
    assert sorted(bg.grads) == sorted(grads_t)
    for name, want in grads_t.items():
        got = bg.grads[name]
        assert got.dtype == np.float32 and got.shape == want.shape, name
        assert np.abs(got - want).max() <= TOL * np.abs(want).max(), name
    assert bg.dx16.dtype == np.float16
    assert np.abs(bg.dx16.astype(np.float32) - dx_t).max() <= TOL * np.abs(dx_t).max()
    where = {r.name: r.where for r in bg.rows}
    assert [n for n, w in where.items() if w == "fabric"] == [
        "mlp.c_proj", "mlp.gelu", "mlp.c_fc", "residual_2", "attn.c_proj", "attn.c_attn",
        "residual_1"]
    assert {"ln_1", "ln_2", "attn.softmax+attn.av"} <= {
        n for n, w in where.items() if w == "host"}


@pytest.mark.rtl
@pytest.mark.slow
def test_block_backward_linear_layers_on_the_rtl_are_the_golden_ones():
    """The training step's gradients of the 2 x 2 test block with its four linear layers'
    dX, dW and db, GELU's derivative and the residual fan-ins on the RTL fabric: every
    gradient bit for bit the golden backward's."""
    cfg, fabric = CASES["2x2"]
    _, x, run, mapped, dout = _forward(cfg, fabric)
    gold = block_backward(run, mapped, dout, "golden")
    rtl = block_backward(run, mapped, dout, "rtl")
    assert np.array_equal(gold.dx16.view(np.uint16), rtl.dx16.view(np.uint16))
    for name, g in gold.grads.items():
        assert np.array_equal(g.view(np.uint32), rtl.grads[name].view(np.uint32)), name
    cycles = {r.name: r.cycles for r in rtl.rows if r.where == "fabric"}
    assert all(c["dx"] > 0 and c["dw"] > 0 and c["db"] > 0 for n, c in cycles.items()
               if n.startswith(("attn.", "mlp.c_")))
    assert cycles["residual_1"]["add"] > 0
    assert cycles["mlp.gelu"]["gelu_grad"] > 0 and cycles["mlp.gelu"]["product"] > 0


def test_one_memoryx_step_on_the_block_lowers_the_loss():
    """0.5 |out|^2 as the loss (dout = out): one AdamW step from the block's gradients
    lowers it, measured again through the golden forward pass with the new FP16 weights."""
    cfg, fabric = CASES["2x2"]
    block, x, run, mapped, _ = _forward(cfg, fabric)
    out = run.out16.reshape(cfg.tokens, cfg.n_embd)
    loss0 = 0.5 * float((out.astype(np.float64) ** 2).sum())
    bg = block_backward(run, mapped, out, "golden")
    params = {n: p.detach().numpy() for n, p in block.named_parameters()}
    mx = MemoryX(params, AdamWConfig(lr=1e-2))
    mx.update(bg.grads)
    with torch.no_grad():
        for n, p in block.named_parameters():
            p.copy_(torch.from_numpy(mx.params[n]))
    run2, _ = gpt.run_gpt(block, x, fabric, "golden")
    loss1 = 0.5 * float((run2.out16.astype(np.float64) ** 2).sum())
    assert loss1 < loss0


def test_bad_gradient_is_named():
    cfg, fabric = CASES["2x2"]
    _, x, run, mapped, dout = _forward(cfg, fabric)
    with pytest.raises(ValueError, match=r"must be float16 \[8, 16\], not float32"):
        block_backward(run, mapped, dout.astype(np.float32))
    with pytest.raises(ValueError, match="backend 'gpu'"):
        block_backward(run, mapped, dout, "gpu")
