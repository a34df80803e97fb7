"""MemoryX: the FP32 master weights, the optimizer state and the update (SPEC section 11;
docs/training.md section 3).

MemoryX sits beside the fabric. It holds every parameter in FP32 under its nanoGPT name, in
the order it was given (the state dict's), streams FP16 copies (round to nearest even) to
the fabric, takes the FP32 gradients the north edge delivers and updates the parameters one
after the other in that order, each element independently. The optimizers follow torch's
definitions (``torch.optim.SGD``, ``torch.optim.AdamW``, their default single-tensor
form), operation by operation in FP32 with Python-float scalars rounded to FP32 where torch
rounds them:

* **SGD** (``lr``, ``momentum`` 0, ``dampening`` 0, ``weight_decay`` 0, ``nesterov``
  False): ``g = g + wd p``; with momentum ``buf = g`` on the first step, then
  ``buf = momentum buf + (1 - dampening) g``, and ``g = g + momentum buf`` (Nesterov) or
  ``g = buf``; ``p = p - lr g``.
* **AdamW** (``lr``, ``betas`` (0.9, 0.999), ``eps`` 1e-8, ``weight_decay`` 0.01):
  ``p = p (1 - lr wd)``; ``m = m + (1 - b1) (g - m)``; ``v = b2 v + (1 - b2) g g``;
  with ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t`` (in float64): ``denom = sqrt(v) / sqrt(c2) +
  eps``; ``p = p - (lr / c1) m / denom``.

Each product and sum is its own FP32 rounding (numpy float32, no fused operations), so the
update is bit-reproducible; against torch it is checked within a tolerance
(tests/test_memoryx.py), since torch's kernels may fuse or reorder within an element.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["SGDConfig", "AdamWConfig", "MemoryX"]

F32 = np.float32


@dataclass(frozen=True)
class SGDConfig:
    """torch.optim.SGD's hyper-parameters and defaults."""
    lr: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    weight_decay: float = 0.0
    nesterov: bool = False

    def __post_init__(self):
        _positive("lr", self.lr)
        for name in ("momentum", "dampening", "weight_decay"):
            if not 0.0 <= float(getattr(self, name)):
                raise ValueError(f"SGD {name} = {getattr(self, name)!r} must be >= 0")
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("SGD nesterov needs momentum > 0 and dampening 0 (as torch)")


@dataclass(frozen=True)
class AdamWConfig:
    """torch.optim.AdamW's hyper-parameters and defaults."""
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.01

    def __post_init__(self):
        _positive("lr", self.lr)
        b1, b2 = self.betas
        for i, b in enumerate((b1, b2)):
            if not 0.0 <= float(b) < 1.0:
                raise ValueError(f"AdamW betas[{i}] = {b!r} must be in [0, 1)")
        if not float(self.eps) >= 0.0:
            raise ValueError(f"AdamW eps = {self.eps!r} must be >= 0")
        if not float(self.weight_decay) >= 0.0:
            raise ValueError(f"AdamW weight_decay = {self.weight_decay!r} must be >= 0")


def _positive(name, value):
    if not isinstance(value, (int, float)) or not float(value) > 0.0:
        raise ValueError(f"{name} = {value!r} must be a number > 0")


class MemoryX:
    """Master weights and optimizer state. ``params``: ``{name: array}`` (any float dtype,
    kept as FP32 copies, in the given order); ``optimizer``: an :class:`SGDConfig` or
    :class:`AdamWConfig`."""

    def __init__(self, params, optimizer):
        if not isinstance(optimizer, (SGDConfig, AdamWConfig)):
            raise TypeError(f"optimizer must be an SGDConfig or an AdamWConfig, not "
                            f"{type(optimizer).__name__}")
        self.opt = optimizer
        self.params = {}
        for name, value in params.items():
            a = np.asarray(value)
            if not np.issubdtype(a.dtype, np.floating):
                raise TypeError(f"parameter {name!r} is {a.dtype}, not a float array")
            self.params[name] = a.astype(F32, copy=True)
        self.state = {name: {} for name in self.params}
        self.steps = 0

    def fp16(self):
        """``{name: float16 array}``: the copies streamed to the fabric."""
        return {name: p.astype(np.float16) for name, p in self.params.items()}

    def update(self, grads):
        """One optimizer step with the FP32 gradients ``{name: array}`` (every parameter's,
        its shape); the parameters in their order. Raises ``KeyError`` / ``ValueError``
        naming a missing, unknown or misshapen gradient before anything changes."""
        unknown = sorted(set(grads) - set(self.params))
        if unknown:
            raise KeyError(f"gradient for {unknown[0]!r}, which MemoryX does not hold")
        for name, p in self.params.items():
            if name not in grads:
                raise KeyError(f"no gradient for parameter {name!r}")
            if np.shape(grads[name]) != p.shape:
                raise ValueError(f"gradient of {name!r} has shape {list(np.shape(grads[name]))}"
                                 f", the parameter {list(p.shape)}")
        self.steps += 1
        with np.errstate(over="ignore", invalid="ignore"):
            for name, p in self.params.items():
                g = np.asarray(grads[name]).astype(F32)
                if isinstance(self.opt, SGDConfig):
                    self._sgd(p, g, self.state[name])
                else:
                    self._adamw(p, g, self.state[name])

    def _sgd(self, p, g, st):
        o = self.opt
        if o.weight_decay:
            g = g + F32(o.weight_decay) * p
        if o.momentum:
            if "momentum_buffer" not in st:
                st["momentum_buffer"] = g.copy()
            else:
                buf = st["momentum_buffer"]
                buf *= F32(o.momentum)
                buf += F32(1.0 - o.dampening) * g
            buf = st["momentum_buffer"]
            g = g + F32(o.momentum) * buf if o.nesterov else buf
        p -= F32(o.lr) * g

    def _adamw(self, p, g, st):
        o = self.opt
        b1, b2 = (float(b) for b in o.betas)
        if not st:
            st["step"] = 0
            st["exp_avg"] = np.zeros_like(p)
            st["exp_avg_sq"] = np.zeros_like(p)
        st["step"] += 1
        t = st["step"]
        m, v = st["exp_avg"], st["exp_avg_sq"]
        p *= F32(1.0 - o.lr * o.weight_decay)
        m += F32(1.0 - b1) * (g - m)
        v *= F32(b2)
        v += F32(1.0 - b2) * (g * g)
        c1 = 1.0 - b1 ** t
        c2_sqrt = (1.0 - b2 ** t) ** 0.5
        denom = np.sqrt(v) / F32(c2_sqrt) + F32(o.eps)
        p -= F32(o.lr / c1) * (m / denom)

    def state_dict(self):
        """``{name: FP32 array}``: the master weights, nanoGPT names (copies)."""
        return {name: p.copy() for name, p in self.params.items()}
