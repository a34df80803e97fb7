"""A whole nanoGPT model on the fabric: embeddings, ``n_layer`` blocks, ``ln_f``, ``lm_head``.

:func:`run_model` runs :class:`gpt_mapping.model.GPT` on integer tokens ``[batch, n]``:

* ``embedding`` (host): ``round16(wte[token] + wpe[position])`` in float32 (the gather is a
  host operation, reported as such);
* every block through :func:`gpt_mapping.gpt.run_block` (its operations named
  ``h.<i>.<operation>``: 13 on the fabric, the attention on the host);
* ``ln_f`` (fabric): the LayerNorm of gpt_mapping/rowops.py, FP16 scale and shift;
* ``lm_head`` (fabric): the GEMM ``[T, C] x [C, V]`` (no bias; never pruned: it is tied to
  ``wte`` in nanoGPT), whose FP16 outputs are the logits.

Every mapping (the blocks', ``ln_f``'s, ``lm_head``'s) is validated before anything runs.
The result is a :class:`gpt_mapping.gpt.BlockRun` holding all the operations in order, so
:func:`gpt_mapping.gpt.evaluate` and :mod:`gpt_mapping.report` check and report it as a
block: bit for bit against the golden pipeline (RTL backend), against the torch float32
model (:func:`torch_trace`) within the same tolerance.

:func:`generate` decodes greedily: it re-runs the whole prefix for every new token (no KV
cache on the fabric yet), the argmax of the last position's logits (first index on ties).
"""

import time

import numpy as np
import torch
from tqdm import tqdm

from . import gpt
from .gpt import (BlockRun, GoldenBackend, OpRecord, OpSpec, f16_values, map_block,
                  round_f32_to_f16, select_backend)
from .layout import GemmMapping, PEConfig
from .redistribute import choose_block_layout, predict_redistribute_cycles
from .model import GPT

__all__ = ["check_tokens", "check_generate", "run_model", "torch_trace", "run_gpt_model",
           "generate", "torch_generate", "logits", "predict_model_cycles"]


def check_tokens(tokens, model):
    """Integer token ids ``[batch, n]`` as int64, checked against the model's vocabulary and
    block size; a ``ValueError`` names the offending value."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {arr.dtype}")
    if arr.ndim != 2 or 0 in arr.shape:
        raise ValueError(f"tokens must be [batch, n_ctx] with both >= 1, got shape "
                         f"{list(arr.shape)}")
    bad = np.argwhere((arr < 0) | (arr >= model.vocab))
    if len(bad):
        b, t = (int(v) for v in bad[0])
        raise ValueError(f"token {int(arr[b, t])} at [{b}, {t}] is outside the vocabulary "
                         f"of {model.vocab}")
    if arr.shape[1] > model.block_size:
        raise ValueError(f"{arr.shape[1]} tokens per sequence, more than the model's "
                         f"{model.block_size} positions (transformer.wpe)")
    return arr.astype(np.int64)


def _spec(name, where, what, layout):
    return OpSpec(name, where, what, layout)


def _prefixed(rec, prefix):
    spec = rec.spec
    rec.spec = OpSpec(f"{prefix}{spec.name}", spec.where, spec.what, spec.layout)
    return rec


def run_model(model, tokens, fabric, backend="golden", sparsity=0.0, progress=False, pe=None,
              label=""):
    """Run ``model`` (:class:`GPT`) on ``tokens`` ``[batch, n]``: a :class:`BlockRun` of
    every operation (``embedding``, ``h.<i>.*``, ``ln_f``, ``lm_head``), unchecked
    (:func:`run_gpt_model` adds the checks). ``sparsity`` prunes every block's linear layers
    (:func:`gpt_mapping.gpt.map_block`)."""
    if not isinstance(model, GPT):
        raise TypeError(f"run_model needs a gpt_mapping.model.GPT, not {type(model).__name__}")
    tokens = check_tokens(tokens, model)
    batch, n = tokens.shape
    model = model.with_context(n, batch)
    cfg = model.config
    backend = select_backend(backend)
    pe = pe or PEConfig()
    width, height = fabric
    t, c, v = cfg.tokens, cfg.n_embd, model.vocab
    # Validate every mapping before anything runs.
    from .rowops import layernorm_program, row_mapping
    head_map = GemmMapping(tokens=t, features=c, outputs=v, width=width, height=height, pe=pe)
    ln_map = row_mapping(t, c, width, height, pe)
    for y in {int(k): y for y, k in enumerate(ln_map.tokens_per_row) if k}.values():
        for x in {int(k): x for x, k in enumerate(ln_map.features_per_column)}.values():
            layernorm_program(ln_map, x, y, cfg.ln_eps)
    gpt._fabric_op_mappings(cfg, fabric, pe)
    for name, layer in map_block(model.transformer.h[0], sparsity).linears.items():
        GemmMapping(tokens=t, features=layer.k, outputs=layer.n, width=width, height=height,
                    pe=pe)
    blocks = [map_block(b, sparsity) for b in model.transformer.h]
    head_w16 = np.ascontiguousarray(round_f32_to_f16(
        model.lm_head.weight.detach().numpy().astype(np.float32).T))
    head_map = choose_block_layout(head_map, head_w16)
    ln_f16 = tuple(round_f32_to_f16(p.detach().numpy().astype(np.float32))
                   for p in (model.transformer.ln_f.weight, model.transformer.ln_f.bias))

    start = time.perf_counter()
    ops = []
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = model.embed(torch.from_numpy(tokens)).numpy().reshape(t, c)
    x16 = round_f32_to_f16(emb.astype(np.float32))
    ops.append(OpRecord(_spec("embedding", "host", "token + position embedding gather (wte, "
                                                   "wpe)", "gather"),
                        x16, t * c, t * c, time.perf_counter() - t0))
    model_program = None
    if hasattr(backend, "prepare_model"):
        att_layout, _ = gpt.attention_placement(cfg, fabric, pe)
        with tqdm(total=0, desc=f"{label}model program (simulated cycles)", unit="cycle",
                  leave=True, disable=not progress, dynamic_ncols=True) as bar:
            model_program = backend.prepare_model(blocks, x16, ln_f16, head_w16, fabric, pe,
                                                  att_layout, cfg.ln_eps, bar)
    try:
        return _run_model_ops(model, blocks, x16, ops, fabric, backend, progress, pe, label,
                              ln_map, ln_f16, head_map, head_w16, model_program, start,
                              sparsity)
    finally:
        if hasattr(backend, "end_model"):
            backend.end_model()


def _run_model_ops(model, blocks, x16, ops, fabric, backend, progress, pe, label, ln_map,
                   ln_f16, head_map, head_w16, model_program, start, sparsity):
    """The blocks, ``ln_f`` and ``lm_head`` of :func:`run_model` (results from the model's
    one fabric program when the backend ran it)."""
    cfg = model.config
    batch, n = cfg.batch, cfg.n_ctx
    t, c, v = cfg.tokens, cfg.n_embd, model.vocab
    width, height = fabric
    stays = bool(model_program and model_program.get("one_program"))
    programs = []
    for i, mapped in enumerate(blocks):
        run = gpt.run_block(mapped, x16.reshape(batch, n, c), fabric, backend, progress, pe,
                            label=f"{label}h.{i}.")
        ops += [_prefixed(rec, f"h.{i}.") for rec in run.ops]
        programs.append(run.program or {})
        x16 = run.ops[-1].out16
    t0 = time.perf_counter()
    ln = backend.fabric_op("layernorm", ln_map, x16, ln_f16, eps=cfg.ln_eps, label="ln_f")
    h16 = np.asarray(ln.y16, dtype=np.float16)
    ln.y16 = h16
    ops.append(OpRecord(_spec("ln_f", "fabric", "final LayerNorm", "row-reduction"), h16,
                        8 * t * c, 8 * t * c, time.perf_counter() - t0, in16=x16, fabric_op=ln,
                        mapping=ln_map.summary()))
    t0 = time.perf_counter()
    bar = _Bar()
    head = backend.run(head_map, h16, head_w16, bar, label="lm_head")
    head.y16 = np.asarray(head.y16, dtype=np.float16)
    nnz = int(np.count_nonzero(head_w16.view(np.uint16) & 0x7FFF))
    ops.append(OpRecord(_spec("lm_head", "fabric", "logits (GEMM, no bias)", "gemm"),
                        head.y16, 2 * t * nnz, 2 * t * c * v, time.perf_counter() - t0,
                        in16=h16, w16=head_w16, gemm=head,
                        layer={"K": c, "N": v, "nnz": nnz, "density": nnz / (c * v)},
                        mapping=head_map.summary(),
                        residency={"input": ("fabric (produced by ln_f)" if stays else
                                             "host (read back after ln_f on the fabric)"),
                                   "output": "read back to the host (the logits)",
                                   "stays_on_fabric": stays, "layout_allows": True,
                                   "why": "the model's output"}))
    if model_program and model_program.get("one_program"):
        program = dict(model_program)
    else:
        one = all(p.get("one_program") for p in programs)
        program = {"one_program": one,
                   "why": ("each block is one fabric program (ln_f and lm_head their own "
                           "runs)" if one else programs[0].get("why")),
                   "blocks": programs}
        if model_program:
            program["why"] += f"; {model_program['why']}"
        if one:
            for key in ("load", "programs", "readback", "verification", "compute"):
                program[key] = int(sum(p[key] for p in programs))
    return BlockRun(cfg, (width, height), backend.name, backend.kind, float(sparsity),
                    ops[0].out16.reshape(batch, n, c), ops, time.perf_counter() - start,
                    lanes=pe.lanes, program=program)


class _Bar:
    """A tqdm-like sink for the lm_head GEMM (its progress is the run's, not drawn)."""
    total = None
    n = 0

    def reset(self, total=None):
        self.total, self.n = total, 0

    def update(self, k=1):
        self.n += k


def logits(run):
    """The logits of a model run, float32 ``[batch, n, vocab]`` (exact values of the FP16
    outputs of ``lm_head``)."""
    rec = run.op("lm_head")
    b, n = run.config.batch, run.config.n_ctx
    return f16_values(rec.out16).reshape(b, n, -1).astype(np.float32)


def torch_trace(model, tokens):
    """The torch float32 model's intermediates, ``[T, features]`` (softmax
    ``[B, H, n, n]``), under the run's operation names."""
    tokens = check_tokens(tokens, model)
    trace = {}
    with torch.no_grad():
        model(torch.from_numpy(tokens), trace)
    t = tokens.size
    return {name: (v.numpy() if name.endswith("attn.softmax") else v.numpy().reshape(t, -1))
            for name, v in trace.items()}


def run_gpt_model(model, tokens, fabric, backend="rtl", sparsity=0.0, progress=False,
                  pe=None):
    """:func:`run_model` and its checks: with the RTL backend the golden pipeline runs too
    and every operation is compared bit for bit; every run is compared with the torch
    float32 model (``evaluate``'s tolerance). The torch reference has the same pruned
    weights. Returns the checked :class:`BlockRun`."""
    backend = select_backend(backend)
    run = run_model(model, tokens, fabric, backend, sparsity, progress, pe)
    golden = None
    if backend.name != "golden":
        golden = run_model(model, tokens, fabric, GoldenBackend(), sparsity, progress, pe,
                           label="golden ")
    reference = _pruned(model, sparsity)
    gpt.evaluate(run, torch_trace(reference, tokens), golden)
    return run


def _pruned(model, sparsity):
    """The torch model with every block's linear layers pruned as the fabric runs them."""
    if not sparsity:
        return model
    other = model.with_context(model.config.n_ctx, model.config.batch)
    for block in other.transformer.h:
        mapped = map_block(block, sparsity)
        block.load_state_dict(mapped.torch_block().state_dict())
    return other


def generate(model, tokens, steps, fabric, backend="golden", sparsity=0.0, pe=None):
    """Greedy decoding on the fabric: ``steps`` new tokens after ``tokens`` [batch, n], the
    whole prefix re-run for each (no KV cache). Returns int64 ``[batch, steps]``."""
    tokens = check_tokens(tokens, model)
    check_generate(tokens, steps, model)
    out = []
    cur = tokens
    for _ in range(steps):
        run = run_model(model, cur, fabric, backend, sparsity, pe=pe)
        nxt = np.argmax(logits(run)[:, -1, :], axis=-1).astype(np.int64)
        out.append(nxt)
        cur = np.concatenate([cur, nxt[:, None]], axis=1)
    return np.stack(out, axis=1) if out else np.zeros((tokens.shape[0], 0), np.int64)


def check_generate(tokens, steps, model):
    """``steps`` greedy tokens after ``tokens`` fit the model's positions: the last new
    token is not run through the model, so the longest prefix is ``n + steps - 1``."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise ValueError(f"--generate must be an int >= 0, got {steps!r}")
    n = np.asarray(tokens).shape[1]
    if steps and n + steps - 1 > model.block_size:
        raise ValueError(f"--generate {steps}: a prefix of {n} + {steps} - 1 tokens exceeds "
                         f"the model's {model.block_size} positions (transformer.wpe)")


def predict_model_cycles(model, tokens, fabric, sparsity=0.0, pe=None):
    """Predicted fabric cycles ``{gemm name: cycles}`` of every GEMM of the model run on
    ``tokens`` (``h.<i>.<layer>`` and ``lm_head``), its blocks pruned to ``sparsity``: the
    dense baseline of a sparse run's speed-up."""
    from .perf_model import predict_from_weights
    tokens = check_tokens(tokens, model)
    model = model.with_context(tokens.shape[1], tokens.shape[0])
    out = {}
    for i, block in enumerate(model.transformer.h):
        out.update({f"h.{i}.{k}": v for k, v in
                    gpt.predict_block_cycles(block, fabric, sparsity, pe).items()})
    cfg, (width, height) = model.config, fabric
    head_w16 = round_f32_to_f16(model.lm_head.weight.detach().numpy().astype(np.float32).T)
    mapping = choose_block_layout(GemmMapping(tokens=cfg.tokens, features=cfg.n_embd,
                                              outputs=model.vocab, width=width,
                                              height=height, pe=pe or PEConfig()), head_w16)
    out["lm_head"] = int(predict_from_weights(mapping, head_w16).cycles) + \
        predict_redistribute_cycles(mapping)
    return out


def torch_generate(model, tokens, steps, sparsity=0.0):
    """Greedy decoding with the torch float32 model (same pruned weights): the reference
    of :func:`generate`."""
    tokens = check_tokens(tokens, model)
    ref = _pruned(model, sparsity)
    cur = torch.from_numpy(tokens)
    out = []
    with torch.no_grad():
        for _ in range(steps):
            nxt = ref(cur)[:, -1, :].argmax(dim=-1)
            out.append(nxt.numpy())
            cur = torch.cat([cur, nxt[:, None]], dim=1)
    return np.stack(out, axis=1).astype(np.int64) if out else \
        np.zeros((tokens.shape[0], 0), np.int64)
