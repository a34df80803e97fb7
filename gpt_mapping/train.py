"""One training step of a whole nanoGPT model (SPEC section 11; docs/training.md section 8).

:func:`train_step`: the forward pass of :func:`gpt_mapping.gpt_model.run_model` (golden or
RTL backend; every activation kept), the mean cross-entropy of the logits against the
targets with its FP16 gradient (host), then backward in reverse order: ``lm_head`` on the
fabric (dX and dW; it has no bias), ``ln_f`` on the host, every block through
:func:`gpt_mapping.block_backward.block_backward`, and the embedding on the host (a
scatter-add of the gradient into ``wte``'s rows and ``wpe``'s, in token order, FP32).
Returns the loss and every parameter's FP32 gradient under its nanoGPT name; MemoryX
(:mod:`gpt_mapping.memoryx`) then updates, and the model takes the new weights.
"""

from dataclasses import dataclass, field

import numpy as np
import torch

from golden import training as TR
from golden.block import f16_values
from .block_backward import BackwardRow, _layernorm, _linear, block_backward
from .gpt import map_block, round_f32_to_f16

__all__ = ["StepResult", "model_gradients", "train_step", "apply_weights"]


@dataclass
class StepResult:
    loss: float                              #: mean cross-entropy of the batch (FP32)
    grads: dict                              #: {nanoGPT name: FP32 gradient}
    rows: list = field(default_factory=list)  #: [BackwardRow] of the backward pass
    forward_cycles: int = 0                  #: the forward pass's fabric cycles
    backward_cycles: int = 0                 #: the backward's fabric cycles (RTL only)
    forward_rows: list = field(default_factory=list)  #: [(name, where, cycles, kind)]


class _BlockView:
    """Block ``i`` of a model run, seen as a block run (its operations unprefixed)."""

    def __init__(self, run, i, x16):
        self._run, self._prefix, self.x16, self.fabric = run, f"h.{i}.", x16, run.fabric

    def op(self, name):
        return self._run.op(self._prefix + name)


def model_gradients(model, run, targets, backend="golden"):
    """The loss and gradients of the model run ``run`` (:func:`run_model`'s) against
    ``targets`` (int [batch, n]); ``backend`` runs the backward's linear layers."""
    cfg = model.config
    t = cfg.tokens
    fabric = tuple(run.fabric)
    targets = np.asarray(targets).reshape(-1)
    logits16 = run.op("lm_head").out16.reshape(t, -1)
    ce = TR.cross_entropy(logits16, targets)
    rows, grads = [BackwardRow("loss", "host")], {}
    # lm_head (no bias) on the fabric
    d_h, g = _linear("lm_head", run.op("lm_head").w16, run.op("ln_f").out16, ce.dlogits16,
                     backend, fabric, rows, bias=False)
    grads.update(g)
    # ln_f on the host
    ln16 = (round_f32_to_f16(p.detach().numpy().astype(np.float32))
            for p in (model.transformer.ln_f.weight, model.transformer.ln_f.bias))
    d, g = _layernorm("ln_f", run.op(f"h.{model.n_layer - 1}.residual_2").out16, *ln16, d_h,
                      cfg.ln_eps, rows)
    grads.update({f"transformer.{k}": v for k, v in g.items()})
    # the blocks, last first
    for i in reversed(range(model.n_layer)):
        x_in = run.op("embedding" if i == 0 else f"h.{i - 1}.residual_2").out16
        mapped = map_block(model.transformer.h[i], run.sparsity)
        bg = block_backward(_BlockView(run, i, x_in), mapped, d, backend, fabric)
        grads.update({f"transformer.h.{i}.{k}": v for k, v in bg.grads.items()})
        rows += [BackwardRow(f"h.{i}.{r.name}", r.where, r.cycles) for r in bg.rows]
        d = bg.dx16
    # the embedding: scatter-add in token order (host)
    tokens = np.asarray(run.tokens).reshape(-1)
    dx = f16_values(d).astype(np.float32)
    dwte = np.zeros(tuple(model.transformer.wte.weight.shape), np.float32)
    dwpe = np.zeros(tuple(model.transformer.wpe.weight.shape), np.float32)
    n = cfg.n_ctx
    with np.errstate(all="ignore"):
        for r in range(t):                              # fixed order: token index
            dwte[tokens[r]] += dx[r]
            dwpe[r % n] += dx[r]
    grads["transformer.wte.weight"] = dwte
    grads["transformer.wpe.weight"] = dwpe
    rows.append(BackwardRow("embedding", "host"))
    order = [name for name, _ in model.named_parameters()]
    missing = set(order) - set(grads)
    if missing:
        raise RuntimeError(f"no gradient for {sorted(missing)}")
    cycles = sum(int(v) for r in rows for v in r.cycles.values())
    forward_rows = []
    for rec in run.ops:
        fab = rec.gemm or rec.fabric_op
        forward_rows.append((rec.name, rec.where, int(fab.cycles) if fab is not None else 0,
                             fab.kind if fab is not None else "host"))
    fwd = sum(r[2] for r in forward_rows)
    return StepResult(ce.loss, {k: grads[k] for k in order}, rows, fwd, cycles, forward_rows)


def train_step(model, tokens, targets, fabric, backend="golden"):
    """Forward, loss and backward of ``model`` on ``tokens`` [batch, n] against ``targets``
    [batch, n]: a :class:`StepResult` (nothing updated)."""
    from .gpt_model import run_model
    targets = np.asarray(targets)
    if targets.shape != np.shape(tokens):
        raise ValueError(f"targets have shape {list(targets.shape)}, the tokens "
                         f"{list(np.shape(tokens))}")
    run = run_model(model, tokens, fabric, backend)
    run.tokens = np.asarray(tokens)
    model_ctx = model.with_context(np.shape(tokens)[1], np.shape(tokens)[0])
    return model_gradients(model_ctx, run, targets, backend)


def apply_weights(model, params):
    """Copy MemoryX's FP32 masters ``{name: array}`` into ``model``'s parameters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.from_numpy(np.asarray(params[name], np.float32)))
