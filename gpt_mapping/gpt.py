"""A GPT block mapped onto the fabric: four weight-streaming GEMMs plus host operations.

The block of :mod:`gpt_mapping.model` runs as the fixed sequence of operations
:data:`OPERATIONS`. The four linear layers (QKV, attention output, MLP up, MLP down) run as
weight-streaming GEMMs ``Y = X W`` on the fabric (SPEC section 7) through a *backend*:
``"rtl"`` (the Verilator model, :mod:`gpt_mapping.fabric_run`) or ``"golden"`` (the bit-exact
fast functional model, :func:`golden.gemm.fabric_gemm`, with cycles predicted by
:mod:`gpt_mapping.perf_model`). Everything else (LayerNorm, attention scores and softmax,
the attention-value product, GELU, bias adds, residual adds) runs on the host in the numpy
golden model of :mod:`golden.block`, and every report says so operation by operation.

Precision (the contract every backend shares, so runs compare bit for bit):

- Activations between operations are FP16 (``np.float16`` arrays, compared as bits; numpy
  never does arithmetic on them). The block input is rounded to FP16 once (RNE); the block
  output is FP16 (written out as exact float32).
- Linear weights are rounded to FP16 (RNE) after pruning; ``W = weight.T`` because
  ``nn.Linear`` computes ``x @ weight.T``. Biases and LayerNorm parameters stay float32 on
  the host.
- A fabric GEMM accumulates in FP32 and rounds each output once to FP16 (SPEC 6 and 7).
- A host operation computes in float32 numpy in a fixed order and rounds its result once to
  FP16: every sum runs in index order starting from its first term, never BLAS or numpy's
  pairwise sums; products and sums are separate float32 roundings (no fused multiply-add).
  ``exp`` is evaluated in float64 and rounded to float32, so it does not depend on numpy's
  SIMD dispatch. GELU is a 65536-entry table: for every FP16 input, the float64 value of the
  formula (``math.erfc`` / ``math.tanh``) rounded once to FP16. Residual adds are the FP16
  add of SPEC 6 (:func:`golden.fp.add16`, one rounding), what a fabric ``FADD`` computes.
"""

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from golden.block import (add_bias16, attention_probs16, attention_values16, bits, f16_values,
                          gelu16, layer_norm16, residual16, round_f32_to_f16, to_f16)
# (add_bias16, gelu16, layer_norm16, residual16: the float32 host numerics of the earlier
# mapping, re-exported; the block's fabric operations use golden/fabric_ops.py)
from golden.gemm import compare_to_torch
from .model import Block, GPTConfig, LINEAR_LAYERS

__all__ = [
    "OPERATIONS", "OpSpec", "BACKENDS",
    "to_f16", "f16_values", "bits", "round_f32_to_f16",
    "layer_norm16", "add_bias16", "attention_probs16", "attention_values16", "gelu16",
    "residual16", "prune_by_magnitude", "LinearLayer", "MappedBlock", "map_block",
    "parse_fabric", "GemmRun", "FabricOpRun", "GELU_KERNELS", "GoldenBackend", "RtlBackend",
    "select_backend",
    "spec_gemm_loop", "predict_gemm", "predict_block_cycles", "predicted_lane_ops",
    "predicted_link_wavelets", "counters_to_stats", "PORTS", "PE_LANE_OPS_KEY",
    "PORT_WAVELETS_KEY", "OpRecord", "BlockRun", "run_block", "torch_trace", "evaluate",
    "run_gpt", "random_input", "TORCH_REL_TOL", "CHECK_LIMIT",
]


# --- the operations of a block --------------------------------------------------------------

@dataclass(frozen=True)
class OpSpec:
    """One operation of the mapped block: where it runs and how it treats the layout.

    ``layout`` says what the operation does to the fabric layout of its activations
    (tokens split along rows, features along columns): ``"elementwise"`` keeps it,
    ``"row-reduction"`` keeps it but needs a reduction across the columns of a row,
    ``"mixes-tokens"`` needs data from other rows, ``"gemm"`` is a fabric GEMM.
    """
    name: str
    where: str
    what: str
    layout: str


OPERATIONS = (
    OpSpec("ln_1", "fabric", "LayerNorm 1", "row-reduction"),
    OpSpec("attn.c_attn", "fabric", "QKV projection (GEMM)", "gemm"),
    OpSpec("attn.c_attn.bias", "fabric", "QKV bias add", "elementwise"),
    OpSpec("attn.softmax", "host", "attention scores QK^T/sqrt(d), causal mask, softmax",
           "mixes-tokens"),
    OpSpec("attn.av", "host", "attention-value product P V", "mixes-tokens"),
    OpSpec("attn.c_proj", "fabric", "attention output projection (GEMM)", "gemm"),
    OpSpec("attn.c_proj.bias", "fabric", "attention output bias add", "elementwise"),
    OpSpec("residual_1", "fabric", "residual add x + attn", "elementwise"),
    OpSpec("ln_2", "fabric", "LayerNorm 2", "row-reduction"),
    OpSpec("mlp.c_fc", "fabric", "MLP up projection (GEMM)", "gemm"),
    OpSpec("mlp.c_fc.bias", "fabric", "MLP up bias add", "elementwise"),
    OpSpec("mlp.gelu", "fabric", "GELU", "elementwise"),
    OpSpec("mlp.c_proj", "fabric", "MLP down projection (GEMM)", "gemm"),
    OpSpec("mlp.c_proj.bias", "fabric", "MLP down bias add", "elementwise"),
    OpSpec("residual_2", "fabric", "residual add x1 + mlp (block output)", "elementwise"),
)
_SPECS = {spec.name: spec for spec in OPERATIONS}
#: The attention's two operations when the layout lets them run on the fabric
#: (gpt_mapping/attention.py, docs/attention.md); else the host's above, with the reason.
FABRIC_ATTENTION = {
    "attn.softmax": OpSpec("attn.softmax", "fabric", "attention scores QK^T/sqrt(d), causal "
                           "mask, softmax (keys streamed south between PEs)", "attention"),
    "attn.av": OpSpec("attn.av", "fabric", "attention-value product P V (values streamed "
                      "south between PEs)", "attention"),
}


# --- FP16 activations and the host operations: golden/block.py --------------------------------

# --- weights: pruning and FP16 -----------------------------------------------------------------

def prune_by_magnitude(weight, sparsity):
    """Zero the ``round(sparsity * size)`` smallest-magnitude entries (unstructured).

    Ties are broken by position (lower flat index pruned first), so the result is
    deterministic. Returns a new float32 array.
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    w = np.array(weight, dtype=np.float32, copy=True)
    n_prune = int(round(float(sparsity) * w.size))
    if n_prune:
        order = np.argsort(np.abs(w).ravel(), kind="stable")
        w.ravel()[order[:n_prune]] = 0.0
    return w


@dataclass
class LinearLayer:
    """One linear layer as the fabric sees it.

    ``weight`` is the (pruned) float32 ``nn.Linear`` weight ``[N, K]``; ``w16`` the FP16
    bits of ``W = weight.T`` ``[K, N]`` that stream from the north edge; ``bias`` float32
    ``[N]`` (torch's) and ``b16`` its FP16 rounding, which streams after the layer's weights
    and is added on the fabric. ``nnz`` counts non-zero FP16 weights: what is streamed.
    ``w16`` is ``np.float16``, the convention of :mod:`gpt_mapping.layout`.
    """
    name: str
    weight: np.ndarray
    bias: np.ndarray
    w16: np.ndarray
    b16: np.ndarray = None

    def __post_init__(self):
        if self.b16 is None:
            self.b16 = round_f32_to_f16(np.asarray(self.bias, dtype=np.float32))

    @property
    def k(self):
        return self.w16.shape[0]

    @property
    def n(self):
        return self.w16.shape[1]

    @property
    def nnz(self):
        from golden.gemm import is_streamed
        return int(np.count_nonzero(is_streamed(self.w16)))


@dataclass
class MappedBlock:
    """A block ready for the fabric: FP16 weights (pruned), the float32 parameters (for the
    torch block) and their FP16 roundings (what streams to the fabric), config."""
    config: GPTConfig
    sparsity: float
    ln_1: tuple
    ln_2: tuple
    linears: dict

    def ln16(self, name):
        """LayerNorm ``name``'s (scale, shift) rounded to FP16: what the fabric streams."""
        weight, bias = getattr(self, name)
        return (round_f32_to_f16(np.asarray(weight, np.float32)),
                round_f32_to_f16(np.asarray(bias, np.float32)))

    def torch_block(self):
        """The float32 torch block with these (pruned, not FP16-rounded) weights."""
        block = Block(self.config)
        params = {"ln_1.weight": self.ln_1[0], "ln_1.bias": self.ln_1[1],
                  "ln_2.weight": self.ln_2[0], "ln_2.bias": self.ln_2[1]}
        for name, layer in self.linears.items():
            params[f"{name}.weight"] = layer.weight
            params[f"{name}.bias"] = layer.bias
        with torch.no_grad():
            for name, param in block.named_parameters():
                param.copy_(torch.from_numpy(np.asarray(params[name], np.float32)))
        return block.eval().requires_grad_(False)


def map_block(block, sparsity=0.0):
    """Turn a torch :class:`~gpt_mapping.model.Block` into a :class:`MappedBlock`.

    Each linear layer's weights are pruned by magnitude, per layer, to ``sparsity`` before
    mapping, then rounded to FP16; zeros are never streamed.
    """
    params = {name: p.detach().to(torch.float32).numpy().copy()
              for name, p in block.named_parameters()}
    linears = {}
    for name in LINEAR_LAYERS:
        weight = prune_by_magnitude(params[f"{name}.weight"], sparsity)
        w16 = np.ascontiguousarray(round_f32_to_f16(weight.T))
        linears[name] = LinearLayer(name, weight, params[f"{name}.bias"], w16)
    return MappedBlock(block.config, float(sparsity),
                       (params["ln_1.weight"], params["ln_1.bias"]),
                       (params["ln_2.weight"], params["ln_2.bias"]), linears)


def random_input(config, seed=0):
    """A seeded float32 input ``[batch, n_ctx, n_embd]`` (standard normal)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((config.batch, config.n_ctx, config.n_embd)).astype(np.float32)


# --- fabric backends --------------------------------------------------------------------------

#: Router ports in the order of every ``links[H, W, port]`` array (SPEC section 3).
PORTS = ("N", "E", "S", "W", "RAMP")

BACKENDS = ("rtl", "golden")


def parse_fabric(text):
    """``'WxH'`` (columns x rows, e.g. ``'4x4'``) -> ``(width, height)``."""
    from .layout import parse_fabric as _parse
    return _parse(text)


@dataclass
class GemmRun:
    """One fabric GEMM as a backend ran it.

    ``util[H, W]``: FMAC utilization of every PE (lane-operations / (lanes x cycles)).
    ``links[H, W, 5]``: wavelets that left each router through ports N, E, S, W, RAMP.
    ``kind`` is ``"measured"`` (RTL counters) or ``"predicted"`` (perf model and streams)
    for ``cycles``; ``util_kind`` and ``links_kind`` say the same of the two arrays (an RTL
    run whose counters lack one of them falls back to the prediction and says so).
    """
    y16: np.ndarray
    cycles: int
    kind: str
    fmac_lane_ops: int
    util: np.ndarray
    links: np.ndarray
    details: dict = field(default_factory=dict)
    util_kind: str = None
    links_kind: str = None

    def __post_init__(self):
        self.util_kind = self.util_kind or self.kind
        self.links_kind = self.links_kind or self.kind


def spec_gemm_loop(x16, w16, width):
    """An independent, loop-for-loop rendering of SPEC section 7's arithmetic, for checks.

    Column x accumulates ``acc = round32(acc + x[:, k] * w[k, :])`` over its non-zero
    weights in ascending k from +0.0; the partial sums of the columns are added in column
    order and rounded once to FP16. Vectorised over tokens and outputs only, so it is meant
    for small GEMMs (the report uses it up to ``CHECK_LIMIT`` multiply-adds).
    """
    x = f16_values(x16)
    w = f16_values(w16)
    t, k = x.shape
    bounds = (np.arange(width + 1) * k) // width
    total = None
    with np.errstate(all="ignore"):
        for col in range(width):
            acc = np.zeros((t, w.shape[1]), dtype=np.float32)
            for kk in range(bounds[col], bounds[col + 1]):
                nz = w[kk] != 0
                acc = np.where(nz[None, :], acc + x[:, kk, None] * w[kk][None, :], acc)
            total = acc if total is None else total + acc
    return round_f32_to_f16(total)


#: Largest T x K x N that the report re-checks with :func:`spec_gemm_loop` (golden backend).
CHECK_LIMIT = 1 << 24

#: Tolerance against the torch float32 block, for every operation's output:
#: ``max |pipeline - torch| <= TORCH_REL_TOL * max |torch|``. Measured: <= 1.6e-3 over the
#: test configurations and GPT-2 small (docs/gpt.md); 4e-3 is 8 FP16 half-ulps of the
#: largest value, and what the tests assert.
TORCH_REL_TOL = 4e-3


@dataclass
class FabricOpRun:
    """A fabric operation other than a GEMM (LayerNorm, bias, residual, GELU) as a backend
    ran it: its FP16 output, its cycles (``kind`` "measured" on the RTL, "predicted" by the
    cycle models of gpt_mapping/rowops.py and gpt_mapping/elementwise.py), the model's
    prediction, and on the RTL every PE's datapath busy cycles ``busy[H, W]``."""
    y16: np.ndarray
    cycles: int
    kind: str
    predicted_cycles: int
    busy: np.ndarray = None
    details: dict = field(default_factory=dict)

    def busy_fraction(self):
        """Mean over the PEs of busy cycles / cycles (None when predicted)."""
        if self.busy is None or not self.cycles:
            return None
        return float(np.mean(self.busy) / self.cycles)


#: The kernel of each GELU form of :class:`gpt_mapping.model.GPTConfig`.
GELU_KERNELS = {"erf": "gelu", "tanh": "gelu_tanh"}


def _fabric_op_golden(op, mapping, x16, operand=None, eps=None):
    """The golden model (golden/fabric_ops.py) of one non-GEMM fabric operation: FP16 out."""
    from golden import fabric_ops as G
    x = bits(x16)
    if op == "layernorm":
        g16, b16 = operand
        y = G.layernorm(x, bits(g16), bits(b16), mapping.feature_bounds, eps)
    elif op == "bias":
        y = G.bias_add(x, bits(operand))
    elif op == "residual":
        y = G.residual_add(x, bits(operand))
    elif op == "attn_scores":
        y = G.attention_probs(x, mapping.n_head, mapping.n_ctx, mapping.batch)
    elif op == "attn_values":
        y = G.attention_values(bits(operand), x, mapping.n_head, mapping.n_ctx, mapping.batch)
    else:
        y = G.gelu(x, op)
    return y.view(np.float16)


def _fabric_op_prediction(op, mapping):
    from .elementwise import predict_elementwise_cycles
    from .rowops import predict_row_cycles
    if op == "layernorm":
        return predict_row_cycles(mapping, "layernorm")
    if op in ("attn_scores", "attn_values"):
        from .attention import predict_attention_cycles
        return predict_attention_cycles(mapping, op[5:])
    return predict_elementwise_cycles(mapping, op)


class GoldenBackend:
    """The fast functional model: :func:`golden.gemm.fabric_gemm` for the bits, the perf
    model for cycles and per-PE utilization, the weight streams for wavelets per link; the
    other fabric operations from golden/fabric_ops.py with their cycle models."""
    name = "golden"
    kind = "predicted"

    def run(self, mapping, x16, w16, bar, label=""):
        """Y = X W and the predicted counters; ``bar`` is a tqdm bar (tokens done);
        ``label``, the layer's name, is not used here."""
        from golden.gemm import fabric_gemm
        bar.reset(total=mapping.tokens)
        y16 = fabric_gemm(x16, w16, mapping.width, mapping.height, progress=bar.update,
                          groups=mapping.groups)
        return GemmRun(y16=y16, **predict_gemm(mapping, w16))

    def fabric_op(self, op, mapping, x16, operand=None, eps=None, label=""):
        """A non-GEMM fabric operation (``"layernorm"``, ``"bias"``, ``"residual"``,
        ``"gelu"``, ``"gelu_tanh"``) on the golden model: :class:`FabricOpRun`."""
        predicted = _fabric_op_prediction(op, mapping)
        return FabricOpRun(_fabric_op_golden(op, mapping, x16, operand, eps), predicted,
                           "predicted", predicted,
                           details={"source": "golden/fabric_ops.py (bits) + cycle model"})


class RtlBackend:
    """The Verilator model of the fabric, through :func:`gpt_mapping.fabric_run.run_gemm_rtl`
    (GEMMs), :func:`gpt_mapping.rowops.run_layernorm_rtl` and
    :func:`gpt_mapping.elementwise.run_elementwise_rtl`; cycles, utilization and link counts
    are the hardware's counters.

    ``trace``: a :class:`gpt_mapping.traces.FabricTrace` that every fabric operation is
    added to, one after the other, named by its operation (``--trace``, docs/timeline.md)."""
    name = "rtl"
    kind = "measured"

    def __init__(self, trace=None, one_program=True):
        # Imported here: the RTL backend brings the Verilator tool chain with it.
        from .fabric_run import run_gemm_rtl
        self._run = run_gemm_rtl
        self.trace = trace
        self.one_program = one_program
        self._resident = {}
        self._model_program = None

    def prepare_block(self, mapped, x16, fabric, pe, att_layout, progress=None):
        """Run the whole block as one fabric program (gpt_mapping/block_program.py) when
        its layout allows and no ``--trace`` is asked for; the operations' calls then take
        their results from that run. Returns the :attr:`BlockRun.program` dict.
        ``progress``: a tqdm-like bar the fabric program drives (simulated cycles)."""
        from . import block_program
        from .layout import MappingError
        if self._model_program is not None:
            return {**self._model_program, "why": "the whole model is one fabric program"}
        self._resident = {}
        if not self.one_program:
            return {"one_program": False, "why": "asked for one fabric run per operation"}
        if self.trace is not None:
            return {"one_program": False, "why": "--trace runs one fabric run per operation"}
        try:
            prog = block_program.plan(mapped, fabric, pe, att_layout)
        except MappingError as exc:
            return {"one_program": False, "why": str(exc)}
        outputs, counters, figures = block_program.run(prog, x16, fabric, progress=progress)
        self._resident = {name: (outputs[name], counters[name]) for name in outputs}
        return {"one_program": True, "scope": "block",
                "why": "the activations stay in the PEs from the block input to its output",
                **figures}

    def prepare_model(self, blocks, x16, ln_f16, head_w16, fabric, pe, att_layout, eps,
                      progress=None):
        """The whole model as one fabric program (``block_program.plan_model``): every
        block, ``ln_f`` and ``lm_head`` in one simulation, the activations resident from the
        embedding to the logits. Returns the model's program dict; the blocks' and the
        operations' calls then take their results from it (``end_model`` ends that)."""
        from . import block_program
        from .layout import MappingError
        self._resident, self._model_program = {}, None
        if not self.one_program or self.trace is not None:
            return None
        try:
            prog = block_program.plan_model(blocks, ln_f16, head_w16, fabric, pe, att_layout,
                                            eps)
        except MappingError as exc:
            return {"one_program": False, "why": f"not one program for the model: {exc}"}
        outputs, counters, figures = block_program.run(prog, x16, fabric, progress=progress)
        self._resident = {name: (outputs[name], counters[name]) for name in outputs}
        self._model_program = {"one_program": True, "scope": "model",
                               "why": "the whole model is one fabric program", **figures}
        return self._model_program

    def end_model(self):
        self._resident, self._model_program = {}, None

    def _take(self, label):
        return self._resident.pop(label, None)

    def run(self, mapping, x16, w16, bar, label=""):
        """Y = X W on the Verilator fabric; ``bar`` is the tqdm bar the RTL run drives;
        ``label`` (the layer's name) names the GEMM on the timeline."""
        held = self._take(label)
        if held is not None:
            y16, counters = held
            return GemmRun(y16=np.asarray(y16), **counters_to_stats(mapping, w16, counters))
        traced = {} if self.trace is None else {"trace": self.trace, "trace_label": label}
        moves = None
        if mapping.groups > 1:
            # X into the grouped layout on the fabric first, as the block program does
            # (its copy checked against X), so the GEMM's cycles count the same moves.
            from .redistribute import add_redistribution, run_redistribute_rtl
            copy, moves = run_redistribute_rtl(
                mapping, x16, **({} if self.trace is None else
                                 {"trace": self.trace,
                                  "trace_label": f"{label}.redistribute"}))
            if not np.array_equal(np.asarray(copy).view(np.uint16),
                                  np.asarray(x16).view(np.uint16)):
                raise RuntimeError(f"{label or 'GEMM'}: the redistribution's copy of X "
                                   f"differs from X")
        y16, counters = self._run(mapping, x16, w16, bar, **traced)
        if moves is not None:
            counters = add_redistribution(counters, moves)
        return GemmRun(y16=np.asarray(y16), **counters_to_stats(mapping, w16, counters))

    def fabric_op(self, op, mapping, x16, operand=None, eps=None, label=""):
        """A non-GEMM operation on the Verilator fabric: :class:`FabricOpRun`."""
        from .elementwise import run_elementwise_rtl
        from .rowops import run_layernorm_rtl
        traced = {} if self.trace is None else {"trace": self.trace, "trace_label": label}
        held = self._take(label)
        if held is not None:
            y16, counters = held
        elif op == "layernorm":
            res = run_layernorm_rtl(mapping, x16, *operand, eps=eps, **traced)
            y16, counters = res.y16, res.counters
        elif op == "attn_scores":
            from .attention import run_scores_rtl
            y16, counters = run_scores_rtl(mapping, x16, **traced)
        elif op == "attn_values":
            from .attention import run_values_rtl
            y16, counters = run_values_rtl(mapping, operand, x16, **traced)
        else:
            y16, counters = run_elementwise_rtl(mapping, op, x16, operand, **traced)
        scalars = {k: (v.item() if isinstance(v, np.generic) else v)
                   for k, v in counters.items() if np.ndim(v) == 0}
        return FabricOpRun(np.asarray(y16), int(counters["cycles"]), "measured",
                           int(counters["predicted_cycles"]),
                           busy=np.asarray(counters["pe_busy_cycles"], dtype=np.int64),
                           details={"source": "RTL counters", "counters": scalars})


def select_backend(name="rtl"):
    """The backend object for ``"rtl"`` (the Verilator fabric) or ``"golden"``."""
    if not isinstance(name, str):
        return name                               # an object with .name/.kind/.run
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "golden":
        return GoldenBackend()
    return RtlBackend()


def _nonzero_counts(mapping, w16, counts=None):
    """``streams.nonzero_counts`` (int [W, N]) unless already computed."""
    if counts is not None:
        return counts
    from .streams import nonzero_counts
    return nonzero_counts(mapping, w16)


def predicted_lane_ops(mapping, w16, counts=None):
    """FMAC lane-operations of every PE, int64 ``[H, W]``: PE (x, y) runs one FMAC over its
    T_y tokens for every weight column x streams (padding lanes are not counted).
    ``counts`` is :func:`gpt_mapping.streams.nonzero_counts`, if already at hand."""
    per_column = _nonzero_counts(mapping, w16, counts).sum(axis=1)        # [W]
    return np.multiply.outer(mapping.tokens_per_row, per_column).astype(np.int64)


def predicted_link_wavelets(mapping, w16, counts=None):
    """Wavelets leaving every router port, int64 ``[H, W, 5]`` (N, E, S, W, RAMP), from the
    weight streams and the routes of :class:`gpt_mapping.layout.ColorPlan`.

    Weight stream of column x (its non-zeros plus one command per output, as
    :func:`gpt_mapping.streams.column_stream` builds it): enters (x, 0) from the north and
    leaves every router to its RAMP and, above the bottom row, to the south. Reduction, per
    output and row: every column but the east end sends its T_y FP32 partial sums east
    (2 wavelets each), received at the RAMP of x + 1; the east end sends the T_y FP16
    results west, tapped at every RAMP on the way. With column groups all of this per
    group: a column streams (and its chain reduces) only its group's outputs, and "east
    end" and "x = 0" are its group's.
    """
    w, h = mapping.width, mapping.height
    links = np.zeros((h, w, len(PORTS)), dtype=np.int64)
    _, e_port, s_port, w_port, ramp = range(len(PORTS))
    span = mapping.group_width
    # the outputs each column's group computes (all N in the plain layout)
    n_col = np.array([len(mapping.group_outputs(int(mapping.group_of(x)))) for x in range(w)],
                     dtype=np.int64)
    lengths = _nonzero_counts(mapping, w16, counts).sum(axis=1) + n_col     # [W]
    links[:, :, ramp] += lengths[None, :]
    links[:-1, :, s_port] += lengths[None, :]
    if span > 1:
        t_y = mapping.tokens_per_row.astype(np.int64)                      # [H]
        for x in range(w):
            per_row = t_y * n_col[x]
            local = x % span
            if local < span - 1:
                links[:, x, e_port] += 2 * per_row     # partial sums east
                links[:, x + 1, ramp] += 2 * per_row   # ... received from the west
                links[:, x, ramp] += per_row           # the results, tapped on the way
            if local > 0:
                links[:, x, w_port] += per_row         # results west
    return links


def predict_gemm(mapping, w16, params=None):
    """:class:`GemmRun` fields of one GEMM, predicted: cycles from the perf model's streaming
    schedule (:func:`gpt_mapping.perf_model.predict`), lane-operations per PE and wavelets
    per link from the mapping and the weight streams' non-zero counts."""
    from .perf_model import predict
    from .redistribute import predict_redistribute_cycles
    counts = _nonzero_counts(mapping, w16)
    estimate = predict(mapping, counts, params)
    lane_ops = predicted_lane_ops(mapping, w16, counts)
    moves = predict_redistribute_cycles(mapping, params)
    cycles = int(estimate.cycles) + moves
    util = lane_ops / float(mapping.pe.lanes * max(cycles, 1))
    return {"cycles": cycles, "kind": "predicted", "fmac_lane_ops": int(lane_ops.sum()),
            "util": util, "links": predicted_link_wavelets(mapping, w16, counts),
            "details": {"source": "gpt_mapping.perf_model (cycles; with column groups plus "
                                  "the redistribution bound of X) + mapping and streams "
                                  "(per-PE lane-ops, per-link wavelets)",
                        "perf_model": estimate.as_dict(),
                        "redistribute_cycles": moves}}



def predict_block_cycles(block, fabric, sparsity=0.0, pe=None, params=None):
    """Predicted fabric cycles ``{gemm name: cycles}`` of ``block`` pruned to ``sparsity``,
    without running anything: the dense baseline of a sparse run's speed-up."""
    from .layout import GemmMapping, PEConfig
    from .perf_model import predict_from_weights
    from .redistribute import choose_block_layout, predict_redistribute_cycles
    mapped = map_block(block, sparsity)
    cfg, (width, height) = mapped.config, fabric
    out = {}
    for name, layer in mapped.linears.items():
        m = choose_block_layout(GemmMapping(tokens=cfg.tokens, features=layer.k,
                                            outputs=layer.n, width=width, height=height,
                                            pe=pe or PEConfig()), layer.w16, params)
        out[name] = int(predict_from_weights(m, layer.w16, params).cycles) + \
            predict_redistribute_cycles(m, params)
    return out


#: Keys of the RTL counters dict read by :func:`counters_to_stats` (besides ``cycles``).
PE_LANE_OPS_KEY = "pe_fmac_lane_ops"          # int [H, W]: FMAC lane-operations per PE
PORT_WAVELETS_KEY = "router_port_wavelets"    # int [H, W, 5]: wavelets out of N, E, S, W, RAMP


def counters_to_stats(mapping, w16, counters):
    """The RTL counters of one GEMM as :class:`GemmRun` fields.

    ``counters`` is the dict of :func:`gpt_mapping.fabric_run.run_gemm_rtl`: ``cycles``
    (required), and when the hardware provides them ``pe_fmac_lane_ops`` ``[H, W]`` and
    ``router_port_wavelets`` ``[H, W, 5]`` (ports N, E, S, W, RAMP). A missing array is
    replaced by its prediction and marked ``"predicted"`` (the plot titles say so).
    """
    if "cycles" not in counters:
        raise KeyError(f"the RTL counters have no 'cycles' (keys: {sorted(counters)})")
    h, w = mapping.height, mapping.width
    cycles = int(counters["cycles"])
    lane_ops = counters.get(PE_LANE_OPS_KEY)
    util_kind = "measured"
    if lane_ops is None:
        lane_ops, util_kind = predicted_lane_ops(mapping, w16), "predicted"
    lane_ops = np.asarray(lane_ops, dtype=np.int64)
    if lane_ops.shape != (h, w):
        raise ValueError(f"RTL counter {PE_LANE_OPS_KEY} has shape {lane_ops.shape}, "
                         f"expected [H, W] = ({h}, {w})")
    links = counters.get(PORT_WAVELETS_KEY)
    links_kind = "measured"
    if links is None:
        links, links_kind = predicted_link_wavelets(mapping, w16), "predicted"
    links = np.asarray(links, dtype=np.int64)
    if links.shape != (h, w, len(PORTS)):
        raise ValueError(f"RTL counter {PORT_WAVELETS_KEY} has shape {links.shape}, "
                         f"expected [H, W, 5] = ({h}, {w}, 5)")
    scalars = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in counters.items()
               if np.ndim(v) == 0}
    total = counters.get("fmac_lane_ops")
    total = int(total) if total is not None and np.ndim(total) == 0 else int(lane_ops.sum())
    return {"cycles": cycles, "kind": "measured", "fmac_lane_ops": total,
            "util": lane_ops / float(mapping.pe.lanes * max(cycles, 1)), "links": links,
            "util_kind": util_kind, "links_kind": links_kind,
            "details": {"source": "RTL counters (gpt_mapping.fabric_run)",
                        "counters": scalars,
                        "predicted_cycles": predict_gemm(mapping, w16)["cycles"]}}


# --- the mapped pipeline ----------------------------------------------------------------------

@dataclass
class OpRecord:
    """One operation of a run: what ran where, its FP16 output, cost and checks.

    ``flops`` is the arithmetic performed (for a sparse GEMM: ``2 T nnz``), ``dense_flops``
    that of the dense operation. ``bit_exact`` is ``None`` where there is nothing else to
    compare with (a host op of the golden pipeline *is* the golden model); ``bit_exact_vs``
    names the reference. ``max_abs_err`` / ``rel_err`` compare with the torch float32 block.
    """
    spec: OpSpec
    out16: np.ndarray
    flops: int
    dense_flops: int
    seconds: float
    in16: np.ndarray = None
    w16: np.ndarray = None
    gemm: GemmRun = None
    fabric_op: FabricOpRun = None
    layer: dict = None
    mapping: dict = None
    residency: dict = None
    bit_exact: bool = None
    bit_exact_vs: str = ""
    max_abs_err: float = None
    rel_err: float = None
    torch_gemm_check: dict = None

    @property
    def within_tolerance(self):
        """``rel_err <= TORCH_REL_TOL`` (None before :func:`evaluate`)."""
        if self.rel_err is None:
            return None
        return bool(self.rel_err <= TORCH_REL_TOL)

    @property
    def name(self):
        return self.spec.name

    @property
    def where(self):
        return self.spec.where


@dataclass
class BlockRun:
    """A whole block run: its operations in order, the input and the backend used."""
    config: GPTConfig
    fabric: tuple
    backend: str
    kind: str
    sparsity: float
    x16: np.ndarray
    ops: list
    seconds: float
    lanes: int = 4
    golden: "BlockRun" = None
    #: How the fabric ran the block: ``{"one_program": bool, "why": ...}`` and, for one
    #: program, the configuration path's ``load`` / ``programs`` / ``readback`` /
    #: ``verification`` cycles and the ``compute`` cycles (gpt_mapping/block_program.py).
    program: dict = None

    @property
    def out16(self):
        """The block output, FP16 ``[batch, n_ctx, n_embd]``."""
        return self.ops[-1].out16.reshape(self.config.batch, self.config.n_ctx,
                                          self.config.n_embd)

    def op(self, name):
        """The :class:`OpRecord` called ``name``."""
        for rec in self.ops:
            if rec.name == name:
                return rec
        raise KeyError(f"no operation {name!r}; operations: {[o.name for o in self.ops]}")

    @property
    def gemms(self):
        return [rec for rec in self.ops if rec.gemm is not None]

    @property
    def fabric_ops(self):
        """The operations other than GEMMs that ran on the fabric."""
        return [rec for rec in self.ops if rec.fabric_op is not None]


def _host_flops(name, config):
    """Conventional FLOP counts of the host operations (see docs/gpt.md)."""
    t, c = config.tokens, config.n_embd
    b, h, n, d = config.batch, config.n_head, config.n_ctx, config.head_dim
    return {
        "ln_1": 8 * t * c, "ln_2": 8 * t * c,
        "attn.c_attn.bias": 3 * t * c, "attn.c_proj.bias": t * c,
        "mlp.c_fc.bias": 4 * t * c, "mlp.c_proj.bias": t * c,
        "attn.softmax": 2 * b * h * n * n * d + 5 * b * h * n * n,
        "attn.av": 2 * b * h * n * n * d,
        "residual_1": t * c, "residual_2": t * c,
        "mlp.gelu": 8 * t * 4 * c,
    }[name]


def _residency(index, fabric_attention=False, one_program=False):
    """Where a GEMM's input comes from and its output goes, and whether the layout would let
    the activations stay on the fabric (tokens on rows, features on columns).
    ``fabric_attention``: the attention runs on the fabric (:data:`FABRIC_ATTENTION`)."""
    specs = [FABRIC_ATTENTION.get(op.name, op) if fabric_attention else op
             for op in OPERATIONS]
    before = specs[index - 1]
    after = specs[index + 1] if index + 1 < len(specs) else None
    between, nxt = [], None
    for later in specs[index + 1:]:
        if later.layout == "gemm":
            nxt = later
            break
        between.append(later)
    mixing = [op.name for op in between if op.layout == "mixes-tokens"]
    on_host = [op.name for op in between if op.where == "host"]
    attention = [op.name for op in between if op.layout == "attention"]
    if attention:
        allows = True
        why = (f"yes: {', '.join(attention)} run on the fabric and read q, k and v where "
               f"the QKV GEMM leaves them, its outputs ordered head by head (one head per "
               f"column: a permutation of its weight columns, docs/attention.md)")
    elif mixing:
        allows = False
        why = (f"no: {', '.join(mixing)} mix tokens across fabric rows (on the host), so the "
               f"output cannot be the next GEMM's input in place")
    elif nxt is None:
        allows = True
        why = "yes: the block output has the input layout of the next block's attn.c_attn"
    else:
        allows = True
        why = (f"yes: the output layout (tokens on rows, features on columns) is "
               f"{nxt.name}'s input layout, and {', '.join(op.name for op in between)} keep "
               f"it")
    separate = not one_program           # each operation its own run: read back, loaded again
    if separate:
        why += ("; but every operation is its own fabric run here, so the output is read "
                "back and loaded again")
    else:
        why += "; the block runs as one fabric program"
    stays = not on_host and allows and not separate
    return {
        "input": f"host (read back after {before.name} on the {before.where})"
                 if separate or before.where == "host" else
                 f"fabric (produced by {before.name})",
        "output": f"{'stays on the fabric' if stays else 'read back to the host'} "
                  f"(next: {after.name if after else 'block output'} on the "
                  f"{after.where if after else 'host'})",
        "stays_on_fabric": stays,
        "layout_allows": allows,
        "why": why,
    }


class _Progress:
    """One tqdm bar per operation (on stderr), or nothing."""

    def __init__(self, enabled, prefix=""):
        self.enabled, self.prefix = enabled, prefix

    def bar(self, spec, total, unit):
        return tqdm(total=total, desc=f"{self.prefix}{spec.name:<17} {spec.where:<6}",
                    unit=unit, leave=True, disable=not self.enabled, dynamic_ncols=True)


def run_block(mapped, x16, fabric, backend="golden", progress=False, pe=None, label=""):
    """Run a :class:`MappedBlock` on FP16 input ``x16`` ``[batch, n_ctx, n_embd]``.

    ``fabric`` is ``(width, height)``; ``backend`` a name or backend object
    (:func:`select_backend`: its ``run(mapping, x16, w16, bar, label=)`` returns a
    :class:`GemmRun`, ``label`` being the layer's name); ``pe`` an optional
    :class:`gpt_mapping.layout.PEConfig`.
    Every GEMM is mapped (and validated) before anything runs. Returns a :class:`BlockRun`
    without checks; :func:`evaluate` adds them.
    """
    from .layout import GemmMapping, PEConfig
    cfg = mapped.config
    backend = select_backend(backend)
    if not isinstance(mapped, MappedBlock):
        raise TypeError(f"run_block needs a MappedBlock (see map_block), not "
                        f"{type(mapped).__name__}")
    x16 = np.asarray(x16)
    if x16.dtype != np.float16 or x16.shape != (cfg.batch, cfg.n_ctx, cfg.n_embd):
        raise ValueError(f"block input must be float16 [{cfg.batch}, {cfg.n_ctx}, "
                         f"{cfg.n_embd}], got {x16.dtype} {list(x16.shape)}")
    width, height = fabric
    from .redistribute import choose_block_layout
    mappings = {name: choose_block_layout(GemmMapping(tokens=cfg.tokens, features=layer.k,
                                                      outputs=layer.n, width=width,
                                                      height=height, pe=pe or PEConfig()),
                                          layer.w16)
                for name, layer in mapped.linears.items()}
    row_maps = _fabric_op_mappings(cfg, fabric, pe or PEConfig())
    att_layout, att_why = attention_placement(cfg, fabric, pe or PEConfig())
    prep_start = time.perf_counter()
    program = {"one_program": False,
               "why": f"the {backend.name} backend runs each operation on its own"}
    if hasattr(backend, "prepare_block"):
        with tqdm(total=0, desc=f"{label}block program (simulated cycles)", unit="cycle",
                  leave=True, disable=not progress, dynamic_ncols=True) as bar:
            program = backend.prepare_block(mapped, x16.reshape(cfg.tokens, cfg.n_embd),
                                            fabric, pe or PEConfig(), att_layout, bar)
    one_program = bool(program.get("one_program"))
    bars = _Progress(progress, label)
    ops = []
    start = prep_start

    def host(name, total, compute):
        spec = _SPECS[name]
        t0 = time.perf_counter()
        with bars.bar(spec, total, "query" if total > 1 else "op") as bar:
            out = compute(bar.update)
            bar.update(total - bar.n)
        flops = _host_flops(name, cfg)
        ops.append(OpRecord(spec, out, flops, flops, time.perf_counter() - t0))
        return out

    def gemm(name, a16):
        spec, layer, mapping = _SPECS[name], mapped.linears[name], mappings[name]
        t0 = time.perf_counter()
        with bars.bar(spec, cfg.tokens, "token") as bar:
            run = backend.run(mapping, a16, layer.w16, bar, label=f"{label}{name}")
            if bar.total is not None:
                bar.update(bar.total - bar.n)
        y16 = np.asarray(run.y16, dtype=np.float16)
        if y16.shape != (cfg.tokens, layer.n):
            raise RuntimeError(f"backend {backend.name} returned {name} output of shape "
                               f"{list(y16.shape)}, expected [{cfg.tokens}, {layer.n}]")
        run.y16 = y16
        nnz = layer.nnz
        info = {"K": layer.k, "N": layer.n, "nnz": nnz, "density": nnz / (layer.k * layer.n)}
        ops.append(OpRecord(spec, y16, 2 * cfg.tokens * nnz, 2 * cfg.tokens * layer.k * layer.n,
                            time.perf_counter() - t0, in16=a16, w16=layer.w16, gemm=run,
                            layer=info,
                            mapping=mapping.summary(),
                            residency=_residency(OPERATIONS.index(spec),
                                                 att_layout is not None, one_program)))
        return y16

    def fabric_op(name, op, a16, operand=None):
        spec = _SPECS[name]
        mapping = row_maps[a16.shape[1]]
        t0 = time.perf_counter()
        with bars.bar(spec, 1, "op") as bar:
            if not hasattr(backend, "fabric_op"):
                raise TypeError(f"backend {backend.name!r} has no fabric_op(): it cannot run "
                                f"{name} on the fabric")
            run = backend.fabric_op(op, mapping, a16, operand, eps=cfg.ln_eps, label=f"{label}{name}")
            bar.update(1 - bar.n)
        y16 = np.asarray(run.y16, dtype=np.float16)
        if y16.shape != a16.shape:
            raise RuntimeError(f"backend {backend.name} returned {name} output of shape "
                               f"{list(y16.shape)}, expected {list(a16.shape)}")
        run.y16 = y16
        flops = _host_flops(name, cfg)
        ops.append(OpRecord(spec, y16, flops, flops, time.perf_counter() - t0, in16=a16,
                            fabric_op=run, mapping=mapping.summary()))
        return y16

    def attention_op(name, op, qkv16, operand, shape):
        spec = FABRIC_ATTENTION[name]
        t0 = time.perf_counter()
        with bars.bar(spec, 1, "op") as bar:
            run = backend.fabric_op(op, att_layout, qkv16, operand, label=f"{label}{name}")
            bar.update(1 - bar.n)
        y16 = np.asarray(run.y16, dtype=np.float16)
        if y16.shape != shape:
            raise RuntimeError(f"backend {backend.name} returned {name} output of shape "
                               f"{list(y16.shape)}, expected {list(shape)}")
        run.y16 = y16
        flops = _host_flops(name, cfg)
        ops.append(OpRecord(spec, y16, flops, flops, time.perf_counter() - t0, in16=qkv16,
                            fabric_op=run, mapping=attention_summary(att_layout)))
        return y16

    lin = mapped.linears
    t, c = cfg.tokens, cfg.n_embd
    x = x16.reshape(t, c)
    gelu_op = GELU_KERNELS[cfg.gelu]
    h = fabric_op("ln_1", "layernorm", x, mapped.ln16("ln_1"))
    qkv = gemm("attn.c_attn", h)
    qkv = fabric_op("attn.c_attn.bias", "bias", qkv, lin["attn.c_attn"].b16)
    if att_layout is not None:
        probs = attention_op("attn.softmax", "attn_scores", qkv, None,
                             (cfg.batch, cfg.n_head, cfg.n_ctx, cfg.n_ctx))
        att = attention_op("attn.av", "attn_values", qkv, probs, (t, c))
    else:
        probs = host("attn.softmax", cfg.n_ctx,
                     lambda tick: attention_probs16(qkv, cfg, tick=tick))
        att = host("attn.av", cfg.n_ctx,
                   lambda tick: attention_values16(probs, qkv, cfg, tick=tick))
        for rec in ops[-2:]:
            rec.mapping = {"on_host_because": att_why}
    proj = gemm("attn.c_proj", att)
    proj = fabric_op("attn.c_proj.bias", "bias", proj, lin["attn.c_proj"].b16)
    x1 = fabric_op("residual_1", "residual", x, proj)
    h2 = fabric_op("ln_2", "layernorm", x1, mapped.ln16("ln_2"))
    up = gemm("mlp.c_fc", h2)
    up = fabric_op("mlp.c_fc.bias", "bias", up, lin["mlp.c_fc"].b16)
    g = fabric_op("mlp.gelu", gelu_op, up)
    down = gemm("mlp.c_proj", g)
    down = fabric_op("mlp.c_proj.bias", "bias", down, lin["mlp.c_proj"].b16)
    fabric_op("residual_2", "residual", x1, down)
    return BlockRun(cfg, (width, height), backend.name, backend.kind, mapped.sparsity, x16,
                    ops, time.perf_counter() - start, lanes=(pe or PEConfig()).lanes,
                    program=program)


def attention_placement(cfg, fabric, pe=None):
    """``(AttentionLayout, None)`` when the block's attention runs on the fabric, else
    ``(None, why)``: the layout's condition that fails (docs/attention.md section 1; the
    attention then runs on the host and the report says why)."""
    from .attention import attention_layout
    from .layout import MappingError
    try:
        return attention_layout(cfg.n_embd, cfg.n_head, cfg.n_ctx, cfg.batch, *fabric,
                                pe), None
    except MappingError as exc:
        return None, str(exc)


def attention_summary(lay):
    """The attention layout for the report."""
    from .attention import KV_COLOR
    return {"layout": "one head per column, keys and values streamed south row to row",
            "head_dim": lay.head_dim, "tokens_per_row": lay.tokens_per_row,
            "rows_per_sequence": lay.rows_per_sequence, "kv_color": KV_COLOR}


def _fabric_op_mappings(cfg, fabric, pe):
    """The activations' layouts of the non-GEMM fabric operations, ``{features: mapping}``
    (C, 3C, 4C), each validated before anything runs: every program of a distinct
    (tokens, features) tile is built, so a tile whose buffers or code do not fit stops the
    run with the tile named."""
    from .elementwise import elementwise_program
    from .rowops import layernorm_program, row_mapping
    width, height = fabric
    c = cfg.n_embd
    maps = {n: row_mapping(cfg.tokens, n, width, height, pe) for n in (c, 3 * c, 4 * c)}
    checks = {c: ("layernorm", "bias", "residual"), 3 * c: ("bias",),
              4 * c: ("bias", GELU_KERNELS[cfg.gelu])}
    for n, ops in checks.items():
        m = maps[n]
        rows = {int(t): y for y, t in enumerate(m.tokens_per_row) if t}.values()
        cols = {int(k): x for x, k in enumerate(m.features_per_column)}.values()
        for y in rows:
            for x in cols:
                for op in ops:
                    if op == "layernorm":
                        layernorm_program(m, x, y, cfg.ln_eps)
                    else:
                        elementwise_program(m, x, y, op)
    return maps


def torch_trace(mapped, x16):
    """Every intermediate of the torch float32 block (same pruned weights, same FP16 input),
    as float32 numpy arrays shaped like the pipeline's (``[T, features]``; softmax
    ``[B, H, n, n]``)."""
    cfg = mapped.config
    trace = {}
    with torch.no_grad():
        mapped.torch_block()(torch.from_numpy(f16_values(x16)), trace)
    out = {}
    for name, value in trace.items():
        value = value.numpy()
        out[name] = value if name == "attn.softmax" else value.reshape(cfg.tokens, -1)
    return out


def _errors(out16, ref):
    """Max |pipeline - torch| and that divided by max |torch| (NaN when non-finite)."""
    a = f16_values(out16).reshape(ref.shape).astype(np.float64)
    r = ref.astype(np.float64)
    with np.errstate(all="ignore"):
        diff = np.abs(a - r)
        if not (np.isfinite(a).all() and np.isfinite(r).all()):
            return math.nan, math.nan
        max_abs = float(diff.max()) if diff.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else (0.0 if max_abs == 0 else math.inf))


def evaluate(run, trace=None, golden=None, check_limit=CHECK_LIMIT, mapped=None):
    """Fill in each operation's checks: bit-exactness and error against torch.

    Against ``golden`` (the golden pipeline on the same weights and input) when given: every
    operation's FP16 output must match bit for bit. Without it (a golden run), fabric GEMMs
    up to ``check_limit`` multiply-adds are re-computed by :func:`spec_gemm_loop`; host
    operations are the golden model itself (``bit_exact`` None). ``trace`` is
    :func:`torch_trace`'s output (computed from ``mapped`` when omitted and given). Every
    GEMM is also compared alone with torch ``X @ W`` within :func:`golden.gemm.error_bound`.
    """
    if trace is None and mapped is not None:
        trace = torch_trace(mapped, run.x16)
    run.golden = golden
    for rec in run.ops:
        if golden is not None:
            ref = golden.op(rec.name)
            rec.bit_exact = bool(np.array_equal(bits(rec.out16), bits(ref.out16)))
            rec.bit_exact_vs = "golden pipeline"
        elif rec.gemm is not None:
            t, k = rec.in16.shape
            if t * k * rec.layer["N"] <= check_limit:
                # Each column group computes its outputs on its own W / G columns.
                width = (rec.mapping or {}).get("group_width", run.fabric[0])
                ref16 = spec_gemm_loop(rec.in16, rec.w16, width)
                rec.bit_exact = bool(np.array_equal(bits(rec.out16), bits(ref16)))
                rec.bit_exact_vs = "SPEC 7 loop reference"
            else:
                rec.bit_exact_vs = "not re-checked (too large for the loop reference)"
        else:
            rec.bit_exact_vs = "is the golden model"
        if trace is not None:
            rec.max_abs_err, rec.rel_err = _errors(rec.out16, trace[rec.name])
        if rec.gemm is not None:
            rec.torch_gemm_check = compare_to_torch(rec.out16, rec.in16, rec.w16,
                                                    run.fabric[0]).as_dict()
    return run


def run_gpt(block, x, fabric, backend="rtl", sparsity=0.0, progress=False, pe=None,
            check_limit=CHECK_LIMIT):
    """Map ``block`` (pruned to ``sparsity``), run it on input ``x`` (float16/float32
    ``[batch, n_ctx, n_embd]``) and check it: the one-call API of the CLI and the demo.

    With the RTL backend the golden pipeline runs too and every operation is compared bit
    for bit; every run is compared with the torch float32 block on the same pruned weights.
    Returns ``(run, mapped)``.
    """
    mapped = map_block(block, sparsity)
    x16 = to_f16(x)
    backend = select_backend(backend)
    run = run_block(mapped, x16, fabric, backend, progress, pe)
    golden = None
    if backend.name != "golden":
        golden = run_block(mapped, x16, fabric, GoldenBackend(), progress, pe, label="golden ")
    evaluate(run, torch_trace(mapped, x16), golden, check_limit, mapped)
    return run, mapped
