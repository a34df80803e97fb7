"""The whole nanoGPT model on the fabric (gpt_mapping/gpt_model.py): embeddings, blocks,
ln_f and lm_head; logits against torch float32, greedy decoding against torch's, the
state dict's and the tokens' errors, the command line; a small model on the RTL fabric
bit for bit against the golden pipeline."""

import json

import numpy as np
import pytest
import torch

from gpt_mapping import gpt_cli, gpt_model, report
from gpt_mapping.model import GPTConfig, StateDictError, gpt_from_state_dict, init_gpt

CFG = GPTConfig(n_embd=16, n_head=2, n_ctx=2, batch=2)
FABRIC = (2, 2)
VOCAB = 32
TOKENS = np.array([[2, 6], [17, 30]])


@pytest.fixture(scope="module")
def model():
    return init_gpt(CFG, 2, VOCAB, seed=3, block_size=8)


@pytest.fixture(scope="module")
def golden_run(model):
    return gpt_model.run_gpt_model(model, TOKENS, FABRIC, "golden")


def test_operations_in_order_and_where_they_run(golden_run):
    names = [rec.name for rec in golden_run.ops]
    assert names[0] == "embedding" and names[-2:] == ["ln_f", "lm_head"]
    assert names[1] == "h.0.ln_1" and names[-3] == "h.1.residual_2"
    assert len(names) == 1 + 2 * 15 + 2
    where = {rec.name: rec.where for rec in golden_run.ops}
    assert where["embedding"] == "host" and where["ln_f"] == where["lm_head"] == "fabric"
    assert [n for n, w in where.items() if w == "host"] == ["embedding"]


def test_logits_match_torch_float32(model, golden_run):
    ours = gpt_model.logits(golden_run)
    with torch.no_grad():
        ref = model.with_context(2, 2)(torch.from_numpy(TOKENS)).numpy()
    assert ours.shape == ref.shape == (2, 2, VOCAB)
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel < 4e-3, f"logits relative error {rel:.2e} vs torch float32"
    assert all(rec.within_tolerance for rec in golden_run.ops)
    gemms = [rec for rec in golden_run.ops if rec.gemm is not None]
    assert len(gemms) == 9 and all(rec.bit_exact for rec in gemms)   # vs the SPEC 7 loops


def test_torch_trace_ends_in_the_models_logits(model):
    trace = gpt_model.torch_trace(model, TOKENS)
    with torch.no_grad():
        ref = model(torch.from_numpy(TOKENS)).numpy()
    assert np.array_equal(trace["lm_head"], ref.reshape(4, VOCAB))
    assert trace["h.1.attn.softmax"].shape == (2, 2, 2, 2)


def test_greedy_generation_matches_torch(model):
    ours = gpt_model.generate(model, TOKENS, 4, FABRIC, "golden")
    theirs = gpt_model.torch_generate(model, TOKENS, 4)
    assert ours.shape == (2, 4) and ours.dtype == np.int64
    assert np.array_equal(ours, theirs), (ours, theirs)
    assert gpt_model.generate(model, TOKENS, 0, FABRIC).shape == (2, 0)


def test_sparse_model_runs_against_the_pruned_torch_model(model):
    run = gpt_model.run_gpt_model(model, TOKENS, FABRIC, "golden", sparsity=0.5)
    assert all(rec.within_tolerance for rec in run.ops)
    lm = run.op("lm_head")
    assert lm.layer["density"] == 1.0                    # lm_head is never pruned
    assert run.op("h.0.mlp.c_fc").layer["density"] == pytest.approx(0.5, abs=0.01)
    dense = gpt_model.predict_model_cycles(model, TOKENS, FABRIC)
    assert set(dense) == {rec.name for rec in run.gemms}
    sp = report.build_report(run, dense=dense)["sparse_speedup"]
    assert sp["speedup"] > 1.0 and sp["per_gemm"]["lm_head"] == pytest.approx(1.0)


@pytest.mark.parametrize("tokens, message", [
    ([[2, 32]], "token 32 at [0, 1] is outside the vocabulary of 32"),
    ([[-1, 3]], "token -1 at [0, 0]"),
    ([[0.5, 1.0]], "integer ids"),
    ([1, 2], "[batch, n_ctx]"),
    ([list(range(9))], "more than the model's 8 positions"),
])
def test_bad_tokens_are_named(model, tokens, message):
    with pytest.raises(ValueError, match=None) as exc:
        gpt_model.run_model(model, np.array(tokens), FABRIC)
    assert message in str(exc.value)


def test_generation_past_the_positions_is_refused(model):
    with pytest.raises(ValueError, match=r"prefix of 2 \+ 8 - 1 tokens exceeds"):
        gpt_model.generate(model, TOKENS, 8, FABRIC)
    gpt_model.check_generate(TOKENS, 7, model)           # 2 + 7 - 1 = 8 fits


def test_state_dict_round_trip_and_its_errors(model):
    sd = model.state_dict()
    again = gpt_from_state_dict(dict(sd), CFG, 2, VOCAB)
    assert again.block_size == 8
    with torch.no_grad():
        assert torch.equal(again(torch.from_numpy(TOKENS)), model(torch.from_numpy(TOKENS)))
    broken = dict(sd)
    del broken["transformer.h.1.mlp.c_fc.weight"]
    with pytest.raises(StateDictError, match=r"missing tensor transformer\.h\.1\.mlp\.c_fc"
                                             r"\.weight: expected shape \[64, 16\]"):
        gpt_from_state_dict(broken, CFG, 2, VOCAB)
    with pytest.raises(StateDictError, match=r"transformer\.wte\.weight \(vocabulary size\): "
                                             r"expected shape \[50, 16\], got \[32, 16\]"):
        gpt_from_state_dict(dict(sd), CFG, 2, 50)
    with pytest.raises(StateDictError, match=r"unexpected tensor transformer\.h\.1\.attn"):
        gpt_from_state_dict(dict(sd), CFG, 1, VOCAB)
    with pytest.raises(StateDictError, match="fewer than the 9 tokens"):
        gpt_from_state_dict(dict(sd), GPTConfig(n_embd=16, n_head=2, n_ctx=9), 2, VOCAB)


def test_cli_whole_model_writes_logits_and_generation(tmp_path, model, capsys):
    torch.save(model.state_dict(), tmp_path / "gpt.pt")
    np.save(tmp_path / "tokens.npy", TOKENS)
    code = gpt_cli.main([
        "--n-embd", "16", "--n-head", "2", "--n-ctx", "2", "--batch", "2", "--fabric", "2x2",
        "--n-layer", "2", "--vocab", str(VOCAB), "--state-dict", str(tmp_path / "gpt.pt"),
        "--tokens", str(tmp_path / "tokens.npy"), "--generate", "3", "--backend", "golden",
        "--no-progress", "--out", str(tmp_path / "logits.npy"),
        "--report", str(tmp_path / "report.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "GPT model n_layer=2 vocab=32 block_size=8" in out
    assert "greedy generation (3 tokens, golden" in out
    logits = np.load(tmp_path / "logits.npy")
    with torch.no_grad():
        ref = model(torch.from_numpy(TOKENS)).numpy()
    assert logits.shape == (2, 2, VOCAB)
    assert np.abs(logits - ref).max() / np.abs(ref).max() < 4e-3
    rep = json.loads((tmp_path / "report.json").read_text())
    assert rep["model"]["n_layer"] == 2 and rep["model"]["tokens"] == TOKENS.tolist()
    gen = rep["generated"]
    assert gen["matches_torch"] and gen["tokens"] == gen["torch_tokens"]
    assert gen["tokens"] == gpt_model.torch_generate(model, TOKENS, 3).tolist()


@pytest.mark.parametrize("extra, message", [
    (["--vocab", "32"], "--vocab needs --n-layer"),
    (["--generate", "2"], "--generate needs --n-layer"),
    (["--n-layer", "2"], "--n-layer needs --vocab"),
    (["--n-layer", "0", "--vocab", "4"], "--n-layer must be >= 1"),
    (["--n-layer", "1", "--vocab", "4", "--block-prefix", "transformer.h.0."],
     "--block-prefix is for one block"),
    (["--n-layer", "1", "--vocab", "4", "--generate", "5"], "exceeds the model's 2 positions"),
])
def test_cli_bad_model_arguments_exit_2(extra, message, capsys):
    code = gpt_cli.main(["--n-embd", "16", "--n-head", "2", "--n-ctx", "2", "--fabric", "2x2",
                         "--backend", "golden", "--no-progress", *extra])
    assert code == 2
    assert message in capsys.readouterr().err


def test_cli_tokens_file_errors(tmp_path, capsys):
    base = ["--n-embd", "16", "--n-head", "2", "--n-ctx", "2", "--batch", "2", "--fabric",
            "2x2", "--n-layer", "1", "--vocab", "8", "--backend", "golden", "--no-progress"]
    np.save(tmp_path / "wide.npy", np.zeros((2, 3), np.int64))
    np.save(tmp_path / "float.npy", np.zeros((2, 2), np.float32))
    np.save(tmp_path / "big.npy", np.array([[1, 2], [3, 8]]))
    for name, message in (("wide.npy", "shape [2, 3], expected [batch, n_ctx] = [2, 2]"),
                          ("float.npy", "expected integer token ids"),
                          ("big.npy", "token 8 at [1, 1] is outside the vocabulary of 8"),
                          ("none.npy", "tokens: no such file")):
        assert gpt_cli.main([*base, "--tokens", str(tmp_path / name)]) == 2
        assert message in capsys.readouterr().err


@pytest.mark.rtl
@pytest.mark.slow
def test_small_model_on_the_rtl_fabric_is_bit_exact_and_decodes_like_torch(model):
    run = gpt_model.run_gpt_model(model, TOKENS, FABRIC, "rtl")
    assert run.backend == "rtl"
    fabric = [rec for rec in run.ops if rec.where == "fabric"]
    assert len(fabric) == 2 * 15 + 2
    bad = [rec.name for rec in fabric if rec.bit_exact is not True]
    assert not bad, f"not bit-exact against the golden pipeline: {bad}"
    assert all(rec.within_tolerance for rec in run.ops)
    rep = report.build_report(run)
    assert rep["cycles_kind"] == "measured" and rep["totals"]["bit_exact_all"] is True
    # The whole model is one fabric program: embedding output in, logits out.
    assert run.program["one_program"] and run.program["scope"] == "model"
    assert "lm_head" in rep["totals"]["activations_stay_on_fabric"]
    assert "fabric program: one for the model" in report.format_report(rep)
    ours = gpt_model.generate(model, TOKENS, 2, FABRIC, "rtl")
    assert np.array_equal(ours, gpt_model.torch_generate(model, TOKENS, 2))
