"""The backward pass of one GPT block (SPEC section 11; docs/training.md section 7).

From the forward pass's saved FP16 activations (a :class:`gpt_mapping.gpt.BlockRun`) and
the FP16 gradient of the block's output, in reverse order of the forward operations:

* the four linear layers on the fabric (:mod:`golden.training` on the golden backend,
  :func:`gpt_mapping.backward.linear_backward_rtl` on the RTL, bit for bit the same):
  ``dX = dY W^T`` (FP16), ``dW`` and ``db`` (FP32, delivered at the north edge);
* GELU's (erf form) on the fabric: the ``gelu_grad`` kernel over the tile, then the
  element-wise product with the incoming gradient, each rounded to FP16 (the tanh form on
  the host, torch autograd of ``F.gelu``);
* the rest on the host (report rows ``host``), in float32 from the FP16 activations, each
  result rounded once to FP16 where it flows into the next operation: LayerNorm's (torch autograd of ``F.layer_norm``, with the
  FP16 scale and shift the fabric used; FP32 ``dgamma``, ``dbeta``), the attention's from
  the fabric's FP16 probabilities ``P``: ``dV = P^T dA``, ``dP = dA V^T``,
  ``dS = P (dP - rowsum(dP P))``, ``dQ = dS K / sqrt(d)``, ``dK = dS^T Q / sqrt(d)`` (numpy
  float32);
* the residual fan-in on the fabric: the forward's element-wise residual add on the two
  FP16 gradients (``round16(a + b)``).

:func:`block_backward` returns the gradient of the block's input (FP16) and every
parameter's (FP32, nanoGPT names: ``attn.c_attn.weight`` is ``[N, K]`` as torch's), with a
row per operation saying where it ran.
"""

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from golden import training as TR
from golden.block import f16_values, round_f32_to_f16

__all__ = ["BackwardRow", "BlockGradients", "block_backward"]


@dataclass
class BackwardRow:
    """One operation of the backward pass: where it ran, its fabric cycles if any."""
    name: str
    where: str                       #: "fabric" or "host"
    cycles: dict = field(default_factory=dict)


@dataclass
class BlockGradients:
    dx16: np.ndarray                 #: the block input's gradient, float16 [T, C]
    grads: dict                      #: {nanoGPT parameter name: FP32 array}
    rows: list                       #: [BackwardRow], in the order they ran


def _f16(a):
    return round_f32_to_f16(np.asarray(a, dtype=np.float32))


def _linear(name, w16, x16, dy16, backend, fabric, rows, bias=True):
    """A linear layer's dX, dW (and db) on the fabric: ``(dx16, {name.weight, name.bias})``
    (torch's ``[N, K]`` weight gradient)."""
    if backend == "rtl":
        from gpt_mapping.backward import linear_backward_rtl
        dx16, dw, db, cycles = linear_backward_rtl(x16, w16, dy16, *fabric, bias=bias)
    else:
        width, height = fabric
        dx16 = TR.linear_backward_dx(dy16, w16, width, height)
        dw = TR.weight_gradient(x16, dy16, height)
        db = TR.bias_gradient(dy16, height) if bias else None
        cycles = {}
    rows.append(BackwardRow(name, "fabric", cycles))
    grads = {f"{name}.weight": np.ascontiguousarray(dw.T)}
    if bias:
        grads[f"{name}.bias"] = db
    return dx16, grads


def _layernorm(name, x16, g16, b16, dy16, eps, rows):
    x = torch.tensor(f16_values(x16), requires_grad=True)
    g = torch.tensor(f16_values(g16), requires_grad=True)
    b = torch.tensor(f16_values(b16), requires_grad=True)
    F.layer_norm(x, (x.shape[1],), g, b, eps).backward(torch.tensor(f16_values(dy16)))
    rows.append(BackwardRow(name, "host"))
    return (_f16(x.grad.numpy()), {f"{name}.weight": g.grad.numpy().copy(),
                                   f"{name}.bias": b.grad.numpy().copy()})


def _gelu(up16, dy16, form, rows, backend="golden", fabric=None):
    """d(up) = dy * gelu'(up). The erf form on the fabric: the ``gelu_grad`` kernel over
    the tile (golden/nonlinear.py), then the element-wise product with dy, each rounded to
    FP16; the tanh form on the host (torch autograd of ``F.gelu``)."""
    if form != "erf":
        u = torch.tensor(f16_values(up16), requires_grad=True)
        F.gelu(u, approximate="tanh").backward(torch.tensor(f16_values(dy16)))
        rows.append(BackwardRow("mlp.gelu", "host"))
        return _f16(u.grad.numpy())
    from gpt_mapping.rowops import row_mapping
    m = row_mapping(*up16.shape, *fabric)
    if backend == "rtl":
        from gpt_mapping.elementwise import run_elementwise_rtl
        g16, c1 = run_elementwise_rtl(m, "gelu_grad", up16)
        out, c2 = run_elementwise_rtl(m, "product", np.asarray(g16, np.float16), dy16)
        cycles = {"gelu_grad": int(c1["cycles"]), "product": int(c2["cycles"])}
    else:
        from golden import fabric_ops as G
        g16 = G.gelu_grad(up16.view(np.uint16))
        out = G.product(g16, dy16.view(np.uint16)).view(np.float16)
        cycles = {}
    rows.append(BackwardRow("mlp.gelu", "fabric", cycles))
    return np.asarray(out, dtype=np.float16)


def _attention(cfg, qkv16, probs16, datt16, rows):
    """d(qkv) [T, 3C] float16 from the attention's output gradient [T, C]."""
    b, n, h, c = cfg.batch, cfg.n_ctx, cfg.n_head, cfg.n_embd
    d = c // h
    qkv = f16_values(qkv16).reshape(b, n, 3, h, d)
    q, k, v = (np.ascontiguousarray(qkv[:, :, i].transpose(0, 2, 1, 3)) for i in range(3))
    p = f16_values(probs16).reshape(b, h, n, n)
    da = f16_values(datt16).reshape(b, n, h, d).transpose(0, 2, 1, 3)
    scale = np.float32(1.0 / math.sqrt(d))
    with np.errstate(all="ignore"):
        dv = np.matmul(p.transpose(0, 1, 3, 2), da)
        dp = np.matmul(da, v.transpose(0, 1, 3, 2))
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        dq = np.matmul(ds, k) * scale
        dk = np.matmul(ds.transpose(0, 1, 3, 2), q) * scale
    out = np.stack([z.transpose(0, 2, 1, 3) for z in (dq, dk, dv)], axis=2)
    rows.append(BackwardRow("attn.softmax+attn.av", "host"))
    return _f16(out.reshape(b * n, 3 * c))


def _fan_in(name, a16, b16, backend, fabric, rows):
    """The residual fan-in on the fabric: the element-wise residual add of the forward pass
    (``round16(a + b)``, gpt_mapping/elementwise.py) on the two FP16 gradients."""
    from gpt_mapping.rowops import row_mapping
    t, c = a16.shape
    m = row_mapping(t, c, *fabric)
    if backend == "rtl":
        from gpt_mapping.elementwise import run_elementwise_rtl
        y16, counters = run_elementwise_rtl(m, "residual", a16, b16)
        cycles = {"add": int(counters["cycles"])}
    else:
        from golden import fabric_ops as G
        y16 = G.residual_add(a16.view(np.uint16), b16.view(np.uint16)).view(np.float16)
        cycles = {}
    rows.append(BackwardRow(name, "fabric", cycles))
    return np.asarray(y16, dtype=np.float16)


def block_backward(run, mapped, dout16, backend="golden", fabric=None):
    """The backward pass of the block ``mapped`` whose forward pass is ``run`` (a
    :class:`gpt_mapping.gpt.BlockRun`: its operations' FP16 inputs and outputs), for the
    output gradient ``dout16`` (float16 [T, C]); ``backend`` runs the linear layers
    ("golden" or "rtl") on ``fabric`` (default the forward's). :class:`BlockGradients`."""
    cfg = mapped.config
    fabric = tuple(fabric or run.fabric)
    t, c = cfg.tokens, cfg.n_embd
    dout16 = np.asarray(dout16)
    if dout16.dtype != np.float16 or dout16.shape != (t, c):
        raise ValueError(f"the output gradient must be float16 [{t}, {c}], not "
                         f"{dout16.dtype} {list(dout16.shape)}")
    if backend not in ("golden", "rtl"):
        raise ValueError(f"backend {backend!r}: golden or rtl")
    if run.op("attn.softmax").where != "fabric":
        raise ValueError("the block backward needs the forward's attention probabilities "
                         "as the fabric computed them (the attention ran on the host)")
    op = run.op
    lin = mapped.linears
    rows, grads = [], {}
    x16 = run.x16.reshape(t, c)
    # residual_2: out = x1 + mlp(ln_2(x1))
    d_g, g = _linear("mlp.c_proj", lin["mlp.c_proj"].w16, op("mlp.gelu").out16, dout16,
                     backend, fabric, rows)
    grads.update(g)
    d_up = _gelu(op("mlp.c_fc.bias").out16, d_g, cfg.gelu, rows, backend, fabric)
    d_h2, g = _linear("mlp.c_fc", lin["mlp.c_fc"].w16, op("ln_2").out16, d_up, backend, fabric,
                      rows)
    grads.update(g)
    d_x1_ln, g = _layernorm("ln_2", op("residual_1").out16, *mapped.ln16("ln_2"), d_h2,
                            cfg.ln_eps, rows)
    grads.update(g)
    d_x1 = _fan_in("residual_2", d_x1_ln, dout16, backend, fabric, rows)
    # residual_1: x1 = x + attn(ln_1(x))
    d_att, g = _linear("attn.c_proj", lin["attn.c_proj"].w16, op("attn.av").out16, d_x1,
                       backend, fabric, rows)
    grads.update(g)
    d_qkv = _attention(cfg, op("attn.c_attn.bias").out16, op("attn.softmax").out16, d_att,
                       rows)
    d_h, g = _linear("attn.c_attn", lin["attn.c_attn"].w16, op("ln_1").out16, d_qkv, backend,
                     fabric, rows)
    grads.update(g)
    d_x_ln, g = _layernorm("ln_1", x16, *mapped.ln16("ln_1"), d_h, cfg.ln_eps, rows)
    grads.update(g)
    dx16 = _fan_in("residual_1", d_x_ln, d_x1, backend, fabric, rows)
    return BlockGradients(dx16, grads, rows)
