"""The torch GPT block of gpt_mapping.model: configuration, seeded weights, state dicts."""

import math

import pytest
import torch
from torch.nn import functional as F

from gpt_mapping.model import (Block, GPTConfig, StateDictError, block_from_state_dict,
                               expected_shapes, init_block, load_block)

CFG = GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=2)


# --- configuration ----------------------------------------------------------------------------

def test_config_rejects_n_embd_not_divisible_by_n_head():
    with pytest.raises(ValueError, match=r"n_embd=30 is not divisible by n_head=4"):
        GPTConfig(n_embd=30, n_head=4, n_ctx=8)


@pytest.mark.parametrize("field, value, error", [
    ("n_ctx", 0, ValueError), ("batch", -1, ValueError), ("n_embd", 8.0, TypeError),
    ("n_head", True, TypeError), ("gelu", "relu", ValueError), ("ln_eps", 0.0, ValueError),
])
def test_config_names_the_bad_field(field, value, error):
    kwargs = {"n_embd": 32, "n_head": 4, "n_ctx": 8, field: value}
    with pytest.raises(error, match=field):
        GPTConfig(**kwargs)


def test_config_derived_sizes():
    assert CFG.head_dim == 8 and CFG.tokens == 16


# --- the block -------------------------------------------------------------------------------

def test_init_block_is_seeded():
    a, b, c = init_block(CFG, 1), init_block(CFG, 1), init_block(CFG, 2)
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
        assert not torch.equal(pa, pc), name


def test_parameter_names_and_shapes_are_nanogpt_block():
    shapes = {name: tuple(p.shape) for name, p in Block(CFG).named_parameters()}
    assert shapes == expected_shapes(CFG)
    assert shapes["attn.c_attn.weight"] == (3 * 32, 32)      # nn.Linear: [out, in]


def _reference_block(block, x):
    """The block written out with torch's fused causal attention (nanoGPT's flash path)."""
    cfg = block.config
    b, t, c = x.shape
    h = F.layer_norm(x, (c,), block.ln_1.weight, block.ln_1.bias, cfg.ln_eps)
    q, k, v = (h @ block.attn.c_attn.weight.T + block.attn.c_attn.bias).split(c, dim=2)
    heads = [z.view(b, t, cfg.n_head, c // cfg.n_head).transpose(1, 2) for z in (q, k, v)]
    y = F.scaled_dot_product_attention(*heads, is_causal=True)
    y = y.transpose(1, 2).reshape(b, t, c)
    x = x + y @ block.attn.c_proj.weight.T + block.attn.c_proj.bias
    h = F.layer_norm(x, (c,), block.ln_2.weight, block.ln_2.bias, cfg.ln_eps)
    g = F.gelu(h @ block.mlp.c_fc.weight.T + block.mlp.c_fc.bias,
               approximate="none" if cfg.gelu == "erf" else "tanh")
    return x + g @ block.mlp.c_proj.weight.T + block.mlp.c_proj.bias


@pytest.mark.parametrize("gelu", ["erf", "tanh"])
def test_block_matches_fused_attention_reference(gelu):
    cfg = GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=2, gelu=gelu)
    block = init_block(cfg, 3)
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trace = {}
        out = block(x, trace)
        torch.testing.assert_close(out, _reference_block(block, x), rtol=1e-5, atol=1e-5)
    assert set(trace) >= {"ln_1", "attn.c_attn", "attn.c_attn.bias", "attn.softmax", "attn.av",
                          "attn.c_proj", "residual_1", "mlp.gelu", "residual_2"}
    probs = trace["attn.softmax"]
    assert torch.all(probs.triu(diagonal=1) == 0)            # causal
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 8))
    torch.testing.assert_close(trace["attn.c_attn.bias"] - trace["attn.c_attn"],
                               block.attn.c_attn.bias.detach().expand(2, 8, 96))


def test_gelu_form_selects_nn_gelu_approximation():
    assert init_block(CFG).mlp.gelu.approximate == "none"
    tanh = GPTConfig(n_embd=32, n_head=4, n_ctx=8, gelu="tanh")
    assert init_block(tanh).mlp.gelu.approximate == "tanh"


def test_seeded_block_is_not_degenerate():
    """Attention must not be near-uniform and the block must change its input (see docs)."""
    block = init_block(CFG, 0)
    x = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(1))
    trace = {}
    with torch.no_grad():
        block(x, trace)
    last_row = trace["attn.softmax"][:, :, -1, :]
    assert float(last_row.max()) > 2.0 / 8
    assert float((trace["residual_2"] - x).abs().mean()) > 0.1


# --- state dicts -----------------------------------------------------------------------------

def test_state_dict_file_round_trip(tmp_path):
    block = init_block(CFG, 5)
    path = tmp_path / "block.pt"
    torch.save(block.state_dict(), path)
    loaded = load_block(path, CFG)
    for (name, a), b in zip(block.named_parameters(), loaded.parameters()):
        assert torch.equal(a, b), name


def test_nanogpt_checkpoint_with_prefix_mask_buffer_and_fp16(tmp_path):
    """A block cut out of a whole nanoGPT model: prefixed names, the causal-mask buffer
    ``attn.bias`` [1, 1, block_size, block_size], half-precision tensors, other keys."""
    block = init_block(CFG, 6)
    state = {f"transformer.h.0.{k}": v.half() for k, v in block.state_dict().items()}
    state["transformer.h.0.attn.bias"] = torch.ones(1, 1, 16, 16).tril()
    state["transformer.wte.weight"] = torch.zeros(10, 32)
    state["transformer.h.1.ln_1.weight"] = torch.zeros(32)
    path = tmp_path / "ckpt.pt"
    torch.save(state, path)
    loaded = load_block(path, CFG, prefix="transformer.h.0.")
    assert loaded.attn.c_attn.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.attn.c_attn.weight, block.attn.c_attn.weight,
                               rtol=1e-3, atol=1e-3)


def test_state_dict_errors_name_every_bad_tensor():
    state = dict(init_block(CFG).state_dict())
    del state["ln_2.bias"]
    state["mlp.c_fc.weight"] = torch.zeros(4 * 32, 16)
    state["attn.c_proj.weight"] = torch.zeros(32, 32, dtype=torch.int32)
    state["lm_head.weight"] = torch.zeros(7, 32)
    with pytest.raises(StateDictError) as info:
        block_from_state_dict(state, CFG)
    msg = str(info.value)
    assert "4 problems" in msg
    assert "missing tensor ln_2.bias: expected shape [32]" in msg
    assert "misshaped tensor mlp.c_fc.weight: expected shape [128, 32], got [128, 16]" in msg
    assert "attn.c_proj.weight has dtype torch.int32" in msg
    assert "unexpected tensor lm_head.weight: shape [7, 32]" in msg


def test_state_dict_of_another_width_says_so():
    state = init_block(GPTConfig(n_embd=64, n_head=4, n_ctx=8)).state_dict()
    with pytest.raises(StateDictError, match=r"n_embd=32 .*12 problems"):
        block_from_state_dict(state, CFG)


def test_state_dict_prefix_that_matches_nothing():
    with pytest.raises(StateDictError, match=r"no tensor name starts with prefix 'h\.3\.'"):
        block_from_state_dict(init_block(CFG).state_dict(), CFG, prefix="h.3.")


def test_mask_buffer_too_short_for_the_context_is_rejected():
    state = dict(init_block(CFG).state_dict())
    state["attn.bias"] = torch.ones(1, 1, 4, 4).tril()       # n_ctx is 8
    with pytest.raises(StateDictError, match=r"unexpected tensor attn.bias: shape \[1, 1, 4, 4\]"):
        block_from_state_dict(state, CFG)


def test_load_block_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        load_block(tmp_path / "nothere.pt", CFG)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(StateDictError, match="cannot read state dict file"):
        load_block(bad, CFG)
    with pytest.raises(StateDictError, match="must be a dict"):
        block_from_state_dict([1, 2], CFG)


def test_seeded_init_scale():
    """Linear weights N(0, 1/fan_in): the documented initialisation."""
    block = init_block(GPTConfig(n_embd=256, n_head=4, n_ctx=8), 0)
    std = float(block.mlp.c_proj.weight.std())
    assert abs(std - 1 / math.sqrt(4 * 256)) < 0.05 / math.sqrt(4 * 256)
