"""The GPT block that the fabric runs, in torch float32: the reference of SPEC section 8.

One transformer block in nanoGPT's form: pre-LayerNorm, causal multi-head self-attention,
an MLP with 4x expansion and GELU, and two residual adds::

    x = x + attn.c_proj(attention(attn.c_attn(ln_1(x))))
    x = x + mlp.c_proj(gelu(mlp.c_fc(ln_2(x))))

Parameter names and shapes are nanoGPT's ``Block`` (``nn.Linear`` weights are
``[out_features, in_features]`` and compute ``x @ weight.T + bias``), so a block trained
elsewhere drops in through :func:`load_block`. GELU is the exact (erf) form by default, as
nanoGPT's ``nn.GELU()``; ``gelu="tanh"`` selects the tanh approximation of the original
GPT-2 code (and of older nanoGPT). Dropout is not modelled (inference).
"""

import math
from dataclasses import dataclass, asdict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "GPTConfig", "Block", "LINEAR_LAYERS", "expected_shapes", "init_block", "load_block",
    "block_from_state_dict", "StateDictError", "GPT", "model_shapes", "init_gpt",
    "gpt_from_state_dict", "load_gpt",
]

GELU_FORMS = ("erf", "tanh")

#: The four linear layers of a block, in execution order: the GEMMs the fabric runs.
LINEAR_LAYERS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


@dataclass(frozen=True)
class GPTConfig:
    """Shape of one GPT block and of the batch it processes.

    Parameters
    ----------
    n_embd : int
        Model width (features per token).
    n_head : int
        Attention heads; must divide ``n_embd``.
    n_ctx : int
        Tokens per sequence (the causal attention window).
    batch : int
        Sequences processed together; the fabric GEMMs see ``batch * n_ctx`` tokens.
    gelu : str
        ``"erf"`` (exact, nanoGPT's ``nn.GELU()``) or ``"tanh"`` (GPT-2's approximation).
    ln_eps : float
        LayerNorm epsilon (nanoGPT and GPT-2: 1e-5).
    """
    n_embd: int
    n_head: int
    n_ctx: int
    batch: int = 1
    gelu: str = "erf"
    ln_eps: float = 1e-5

    def __post_init__(self):
        for name in ("n_embd", "n_head", "n_ctx", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"GPTConfig.{name} must be an int, got {value!r}")
            if value < 1:
                raise ValueError(f"GPTConfig.{name} must be >= 1, got {value}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                             f"each head needs n_embd / n_head features")
        if self.gelu not in GELU_FORMS:
            raise ValueError(f"GPTConfig.gelu must be one of {GELU_FORMS}, got {self.gelu!r}")
        if not (isinstance(self.ln_eps, float) and self.ln_eps > 0):
            raise ValueError(f"GPTConfig.ln_eps must be a positive float, got {self.ln_eps!r}")

    @property
    def head_dim(self):
        """Features per attention head."""
        return self.n_embd // self.n_head

    @property
    def tokens(self):
        """Rows of every activation matrix: ``batch * n_ctx``."""
        return self.batch * self.n_ctx

    def as_dict(self):
        """The configuration as a plain dict (for reports)."""
        return asdict(self)


def expected_shapes(config):
    """``{parameter name: shape}`` of a block with this configuration, in nanoGPT's names."""
    c = config.n_embd
    return {
        "ln_1.weight": (c,), "ln_1.bias": (c,),
        "attn.c_attn.weight": (3 * c, c), "attn.c_attn.bias": (3 * c,),
        "attn.c_proj.weight": (c, c), "attn.c_proj.bias": (c,),
        "ln_2.weight": (c,), "ln_2.bias": (c,),
        "mlp.c_fc.weight": (4 * c, c), "mlp.c_fc.bias": (4 * c,),
        "mlp.c_proj.weight": (c, 4 * c), "mlp.c_proj.bias": (c,),
    }


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with nanoGPT's parameter names."""

    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)

    def forward(self, x, trace=None):
        b, t, c = x.shape
        qkv = self.c_attn(x)
        q, k, v = qkv.split(c, dim=2)
        heads = lambda z: z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        q, k, v = heads(q), heads(k), heads(v)
        scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        probs = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
        y = (probs @ v).transpose(1, 2).contiguous().view(b, t, c)
        out = self.c_proj(y)
        if trace is not None:
            trace.update({"attn.c_attn": F.linear(x, self.c_attn.weight),
                          "attn.c_attn.bias": qkv, "attn.softmax": probs, "attn.av": y,
                          "attn.c_proj": F.linear(y, self.c_proj.weight),
                          "attn.c_proj.bias": out})
        return out


class MLP(nn.Module):
    """The block's feed-forward network: 4x expansion, GELU, projection back."""

    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="none" if config.gelu == "erf" else "tanh")
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)

    def forward(self, x, trace=None):
        h = self.c_fc(x)
        g = self.gelu(h)
        out = self.c_proj(g)
        if trace is not None:
            trace.update({"mlp.c_fc": F.linear(x, self.c_fc.weight), "mlp.c_fc.bias": h,
                          "mlp.gelu": g, "mlp.c_proj": F.linear(g, self.c_proj.weight),
                          "mlp.c_proj.bias": out})
        return out


class Block(nn.Module):
    """One GPT block (pre-LayerNorm), float32, with nanoGPT's names.

    ``forward(x, trace)`` takes ``[batch, n_ctx, n_embd]``; when ``trace`` is a dict it also
    records every intermediate under the operation names of the mapped pipeline
    (:data:`gpt_mapping.gpt.OPERATIONS`), which the report compares against; a linear
    layer's name holds its product without bias, ``<name>.bias`` the biased result.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.ln_eps)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.ln_eps)
        self.mlp = MLP(config)

    def forward(self, x, trace=None):
        h = self.ln_1(x)
        x1 = x + self.attn(h, trace)
        h2 = self.ln_2(x1)
        out = x1 + self.mlp(h2, trace)
        if trace is not None:
            trace.update({"ln_1": h, "residual_1": x1, "ln_2": h2, "residual_2": out})
        return out


def init_block(config, seed=0):
    """A block with seeded random parameters, reproducible on every machine.

    Not nanoGPT's training initialisation (weights N(0, 0.02), zero biases, unit LayerNorm):
    that makes attention almost uniform and leaves biases and LayerNorm affine untested.
    Here linear weights are N(0, 1/fan_in) so that activations keep unit scale through the
    block; biases, LayerNorm shifts and LayerNorm scales minus 1 are normal with standard
    deviation 0.1.
    Blocks are returned in eval mode without gradients (inference only).
    """
    block = Block(config)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, param in block.named_parameters():
            noise = torch.randn(param.shape, generator=gen, dtype=torch.float32)
            if name.endswith(".weight") and param.dim() == 2:
                param.copy_(noise / math.sqrt(param.shape[1]))
            elif name.startswith("ln_") and name.endswith(".weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.1 * noise)
    return block.eval().requires_grad_(False)


class StateDictError(ValueError):
    """A state dict that does not fit the block: names every bad tensor."""


def _is_causal_mask_buffer(name, tensor, config):
    """nanoGPT (without flash attention) saves its causal mask as ``attn.bias``
    ``[1, 1, block_size, block_size]``; it carries no parameters, so it is accepted."""
    return (name == "attn.bias" and tensor.dim() == 4 and tuple(tensor.shape[:2]) == (1, 1)
            and tensor.shape[2] == tensor.shape[3] and tensor.shape[2] >= config.n_ctx)


def block_from_state_dict(state_dict, config, prefix=""):
    """Build a :class:`Block` from a nanoGPT-style ``state_dict``.

    ``prefix`` selects one block of a whole model (e.g. ``"transformer.h.0."``); keys outside
    it are ignored. Every missing, unexpected or misshaped tensor is named in one
    :class:`StateDictError` with expected and actual shapes. Floating-point tensors of any
    precision are converted to float32.
    """
    if not isinstance(state_dict, dict):
        raise StateDictError(f"a state dict must be a dict of tensors, got "
                             f"{type(state_dict).__name__}")
    if prefix:
        tensors = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not tensors:
            raise StateDictError(f"no tensor name starts with prefix {prefix!r} "
                                 f"(first names: {sorted(state_dict)[:5]})")
    else:
        tensors = dict(state_dict)
    expected = expected_shapes(config)
    problems = []
    for name, shape in expected.items():
        if name not in tensors:
            problems.append(f"missing tensor {prefix}{name}: expected shape {list(shape)}")
            continue
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            problems.append(f"tensor {prefix}{name} is a {type(tensor).__name__}, "
                            f"not a torch.Tensor")
        elif not tensor.is_floating_point():
            problems.append(f"tensor {prefix}{name} has dtype {tensor.dtype}, "
                            f"expected a floating-point tensor")
        elif tuple(tensor.shape) != shape:
            problems.append(f"misshaped tensor {prefix}{name}: expected shape {list(shape)}, "
                            f"got {list(tensor.shape)}")
    for name in sorted(set(tensors) - set(expected)):
        tensor = tensors[name]
        if isinstance(tensor, torch.Tensor) and _is_causal_mask_buffer(name, tensor, config):
            continue
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        problems.append(f"unexpected tensor {prefix}{name}: shape {shape}")
    if problems:
        raise StateDictError(f"state dict does not fit a block with n_embd={config.n_embd} "
                             f"({len(problems)} problem{'s' * (len(problems) > 1)}):\n  "
                             + "\n  ".join(problems))
    block = Block(config)
    with torch.no_grad():
        for name, param in block.named_parameters():
            param.copy_(tensors[name].detach().to(torch.float32))
    return block.eval().requires_grad_(False)


def load_block(path, config, prefix=""):
    """Load a :class:`Block` from a ``torch.save``-d state dict file (tensors only).

    The file is read with ``weights_only=True``: no code from it is executed.
    """
    return block_from_state_dict(_read_state_dict(path), config, prefix)


def _read_state_dict(path):
    """A ``torch.save``-d dict of tensors, read with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"state dict file {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable files
        raise StateDictError(f"cannot read state dict file {path}: {exc}") from exc


# --- the whole model -----------------------------------------------------------------------------

class GPT(nn.Module):
    """nanoGPT's ``GPT`` (inference, float32): token and position embeddings, ``n_layer``
    blocks, ``ln_f`` and ``lm_head`` (no bias), with nanoGPT's state-dict names
    (``transformer.wte``, ``transformer.wpe``, ``transformer.h.{i}.*``, ``transformer.ln_f``,
    ``lm_head``). ``config`` is the blocks' :class:`GPTConfig` (its ``n_ctx`` and ``batch``
    are the tokens one forward pass takes); ``block_size`` the rows of ``wpe`` (at least
    ``n_ctx``). ``lm_head.weight`` is its own parameter (nanoGPT ties it to ``wte``; a tied
    checkpoint simply holds the same values under both names)."""

    def __init__(self, config, n_layer, vocab, block_size=None):
        super().__init__()
        for name, value in (("n_layer", n_layer), ("vocab", vocab)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPT {name} must be an int >= 1, got {value!r}")
        block_size = config.n_ctx if block_size is None else block_size
        if block_size < config.n_ctx:
            raise ValueError(f"block_size {block_size} is shorter than n_ctx {config.n_ctx}")
        self.config, self.n_layer, self.vocab, self.block_size = \
            config, n_layer, vocab, block_size
        self.transformer = nn.ModuleDict({
            "wte": nn.Embedding(vocab, config.n_embd),
            "wpe": nn.Embedding(block_size, config.n_embd),
            "h": nn.ModuleList(Block(config) for _ in range(n_layer)),
            "ln_f": nn.LayerNorm(config.n_embd, eps=config.ln_eps),
        })
        self.lm_head = nn.Linear(config.n_embd, vocab, bias=False)

    def embed(self, tokens):
        """``wte[tokens] + wpe[positions]``: float32 ``[batch, n, n_embd]``."""
        pos = torch.arange(tokens.shape[1])
        return self.transformer.wte(tokens) + self.transformer.wpe(pos)[None]

    def forward(self, tokens, trace=None):
        """Logits float32 ``[batch, n, vocab]`` of integer ``tokens`` ``[batch, n]``; with a
        ``trace`` dict, every block's intermediates under ``h.{i}.<operation>`` and
        ``embedding``, ``ln_f``, ``lm_head``."""
        x = self.embed(tokens)
        if trace is not None:
            trace["embedding"] = x
        for i, block in enumerate(self.transformer.h):
            inner = {} if trace is not None else None
            x = block(x, inner)
            if trace is not None:
                trace.update({f"h.{i}.{k}": v for k, v in inner.items()})
        h = self.transformer.ln_f(x)
        logits = self.lm_head(h)
        if trace is not None:
            trace.update({"ln_f": h, "lm_head": logits})
        return logits

    def with_context(self, n_ctx, batch):
        """The same weights for another number of tokens per sequence (generation re-runs
        the growing prefix): a GPT whose blocks' config has ``n_ctx`` and ``batch``."""
        cfg = GPTConfig(n_embd=self.config.n_embd, n_head=self.config.n_head, n_ctx=n_ctx,
                        batch=batch, gelu=self.config.gelu, ln_eps=self.config.ln_eps)
        other = GPT(cfg, self.n_layer, self.vocab, self.block_size)
        other.load_state_dict(self.state_dict())
        return other.eval().requires_grad_(False)


def model_shapes(config, n_layer, vocab, block_size):
    """``{parameter name: shape}`` of a whole nanoGPT model."""
    c = config.n_embd
    shapes = {"transformer.wte.weight": (vocab, c), "transformer.wpe.weight": (block_size, c)}
    for i in range(n_layer):
        shapes.update({f"transformer.h.{i}.{k}": v for k, v in expected_shapes(config).items()})
    shapes.update({"transformer.ln_f.weight": (c,), "transformer.ln_f.bias": (c,),
                   "lm_head.weight": (vocab, c)})
    return shapes


def init_gpt(config, n_layer, vocab, seed=0, block_size=None):
    """A whole model with seeded parameters: every block as :func:`init_block` draws it
    (seed ``seed + 1 + i``), embeddings N(0, 1), ``ln_f`` as a block's LayerNorms,
    ``lm_head`` N(0, 1/n_embd)."""
    model = GPT(config, n_layer, vocab, block_size)
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for i in range(n_layer):
            model.transformer.h[i].load_state_dict(init_block(config, seed + 1 + i).state_dict())
        model.transformer.wte.weight.copy_(torch.randn(model.transformer.wte.weight.shape,
                                                       generator=gen))
        model.transformer.wpe.weight.copy_(torch.randn(model.transformer.wpe.weight.shape,
                                                       generator=gen))
        c = config.n_embd
        model.transformer.ln_f.weight.copy_(1 + 0.1 * torch.randn(c, generator=gen))
        model.transformer.ln_f.bias.copy_(0.1 * torch.randn(c, generator=gen))
        model.lm_head.weight.copy_(torch.randn(vocab, c, generator=gen) / math.sqrt(c))
    return model.eval().requires_grad_(False)


def gpt_from_state_dict(state_dict, config, n_layer, vocab, block_size=None):
    """A :class:`GPT` from a nanoGPT state dict; one :class:`StateDictError` names every
    missing, misshaped or unexpected tensor (a wrong vocabulary shows as ``wte`` and
    ``lm_head`` shapes). ``block_size`` defaults to the rows of ``transformer.wpe.weight``;
    nanoGPT's causal-mask buffers ``transformer.h.{i}.attn.bias`` are accepted."""
    if not isinstance(state_dict, dict):
        raise StateDictError(f"a state dict must be a dict of tensors, got "
                             f"{type(state_dict).__name__}")
    if block_size is None:
        wpe = state_dict.get("transformer.wpe.weight")
        block_size = int(wpe.shape[0]) if isinstance(wpe, torch.Tensor) and wpe.dim() == 2 \
            else config.n_ctx
    if block_size < config.n_ctx:
        raise StateDictError(f"transformer.wpe.weight has {block_size} positions, fewer than "
                             f"the {config.n_ctx} tokens per sequence asked for")
    expected = model_shapes(config, n_layer, vocab, block_size)
    problems = []
    for name, shape in expected.items():
        tensor = state_dict.get(name)
        if tensor is None:
            problems.append(f"missing tensor {name}: expected shape {list(shape)}")
        elif not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            problems.append(f"tensor {name} is not a floating-point torch.Tensor")
        elif tuple(tensor.shape) != shape:
            what = " (vocabulary size)" if name in ("transformer.wte.weight",
                                                    "lm_head.weight") else ""
            problems.append(f"misshaped tensor {name}{what}: expected shape {list(shape)}, "
                            f"got {list(tensor.shape)}")
    for name in sorted(set(state_dict) - set(expected)):
        tensor = state_dict[name]
        parts = name.split(".")
        if (len(parts) == 5 and parts[:2] == ["transformer", "h"] and parts[3:] == ["attn", "bias"]
                and isinstance(tensor, torch.Tensor)
                and _is_causal_mask_buffer("attn.bias", tensor, config)):
            continue
        shape = list(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        problems.append(f"unexpected tensor {name}: shape {shape}")
    if problems:
        raise StateDictError(f"state dict does not fit a GPT with n_layer={n_layer}, "
                             f"vocab={vocab}, n_embd={config.n_embd} ({len(problems)} "
                             f"problem{'s' * (len(problems) > 1)}):\n  " + "\n  ".join(problems))
    model = GPT(config, n_layer, vocab, block_size)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(state_dict[name].detach().to(torch.float32))
    return model.eval().requires_grad_(False)


def load_gpt(path, config, n_layer, vocab):
    """:func:`gpt_from_state_dict` of a ``torch.save``-d file (read ``weights_only``)."""
    return gpt_from_state_dict(_read_state_dict(path), config, n_layer, vocab)
