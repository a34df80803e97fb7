"""``python -m gpt_mapping gpt`` end to end (golden backend) and the ``gpt`` demo."""

import json

import matplotlib.image
import numpy as np
import pytest
import torch

from gpt_mapping import __main__ as entry
from gpt_mapping import gpt, gpt_cli
from gpt_mapping.model import GPTConfig, init_block

SMALL = ["--n-embd", "32", "--n-head", "2", "--n-ctx", "8", "--batch", "2", "--fabric", "4x4",
         "--backend", "golden"]


def test_cli_end_to_end_writes_output_report_and_pictures(tmp_path, capsys):
    cfg = GPTConfig(n_embd=32, n_head=2, n_ctx=8, batch=2)
    block = init_block(cfg, 7)
    torch.save(block.state_dict(), tmp_path / "block.pt")
    x = np.random.default_rng(3).standard_normal((2, 8, 32)).astype(np.float16)
    np.save(tmp_path / "x.npy", x)
    code = entry.main(["gpt", *SMALL, "--sparsity", "0.5", "--state-dict",
                       str(tmp_path / "block.pt"), "--input", str(tmp_path / "x.npy"),
                       "--out", str(tmp_path / "y.npy"), "--report", str(tmp_path / "r.json"),
                       "--plots", str(tmp_path / "plots"), "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "backend golden" in out
    assert "sparse speed-up" in out and "attn.softmax" in out

    # The output is the block's, as float32, and equals the API's result.
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and y.shape == (2, 8, 32)
    run, _ = gpt.run_gpt(block, x, (4, 4), "golden", 0.5)
    assert np.array_equal(y, run.out16.astype(np.float32))

    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["backend"] == "golden" and rep["cycles_kind"] == "predicted"
    assert rep["weights"].startswith("state dict") and rep["sparsity"] == 0.5
    assert rep["totals"]["all_within_tolerance"] is True
    assert rep["totals"]["bit_exact_all"] is True
    assert rep["sparse_speedup"]["dense_cycles_kind"] == "predicted"
    assert len(rep["operations"]) == len(gpt.OPERATIONS)

    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == sorted(rep["plots"][i].rsplit("/", 1)[-1]
                                            for i in range(8))
    assert {p.name.rsplit("_", 1)[-1] for p in pngs} == {"util.png", "links.png"}
    for png in pngs:
        image = matplotlib.image.imread(png)
        assert image.shape[0] >= 400 and image.shape[1] >= 600
        assert image[..., :3].std() > 0.05                         # not a blank canvas


def test_seeded_input_and_weights_by_default(tmp_path, capsys):
    args = [*SMALL, "--no-progress", "--report", str(tmp_path / "a.json")]
    assert gpt_cli.main(args) == 0
    assert gpt_cli.main([*args[:-1], str(tmp_path / "b.json")]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    for row_a, row_b in zip(a["operations"], b["operations"]):
        row_a.pop("wall_seconds"), row_b.pop("wall_seconds")
        assert row_a == row_b                                      # same seeds, same run
    assert "seeded (seed 0)" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--n-embd", "31"], "n_embd=31 is not divisible by n_head=2"),
    (["--fabric", "4by4"], "is not WIDTHxHEIGHT"),
    (["--sparsity", "1.0"], "--sparsity must be in [0, 1)"),
    (["--n-ctx", "80", "--fabric", "4x1"], "row 0 has T_y = 160 tokens"),
])
def test_bad_arguments_exit_2_naming_the_problem(extra, message, capsys):
    assert gpt_cli.main([*SMALL, *extra, "--no-progress"]) == 2
    assert message in capsys.readouterr().err


def test_bad_input_and_state_dict_files(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 16), np.float32))
    assert gpt_cli.main([*SMALL, "--input", str(tmp_path / "x.npy")]) == 2
    assert "expected [batch, n_ctx, n_embd] = [2, 8, 32]" in capsys.readouterr().err
    np.save(tmp_path / "x64.npy", np.zeros((2, 8, 32)))
    assert gpt_cli.main([*SMALL, "--input", str(tmp_path / "x64.npy")]) == 2
    assert "dtype float64, expected float32 or float16" in capsys.readouterr().err
    state = init_block(GPTConfig(n_embd=32, n_head=2, n_ctx=8)).state_dict()
    del state["mlp.c_fc.bias"]
    torch.save(state, tmp_path / "bad.pt")
    assert gpt_cli.main([*SMALL, "--state-dict", str(tmp_path / "bad.pt")]) == 2
    assert "missing tensor mlp.c_fc.bias: expected shape [128]" in capsys.readouterr().err


def test_demo_runs_dense_and_sparse_and_prints_the_speedup(tmp_path, capsys, monkeypatch):
    # The pictures are covered above; skipping them keeps this test fast.
    monkeypatch.setattr("gpt_mapping.plots.plot_run", lambda run, directory: [])
    from gpt_mapping import demo
    code = demo.main(["gpt", "--out-dir", str(tmp_path), "--no-progress", "--backend", "golden"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.count("GPT block n_embd=64 n_head=4 n_ctx=16 batch=2") == 2
    assert "== sparse speed-up (predicted cycles): all fabric operations" in out
    assert "the GEMMs alone" in out
    dense = json.loads((tmp_path / "dense" / "report.json").read_text())
    sparse = json.loads((tmp_path / "sparse90" / "report.json").read_text())
    assert dense["sparsity"] == 0.0 and sparse["sparsity"] == 0.9
    assert sparse["totals"]["fabric_cycles"] < dense["totals"]["fabric_cycles"]
    assert f"{dense['totals']['fabric_cycles']:,}" in out
    model = json.loads((tmp_path / "model" / "report.json").read_text())
    assert "GPT model n_layer=2 vocab=64 block_size=16" in out
    assert model["generated"]["matches_torch"] and len(model["generated"]["tokens"][0]) == 2
    assert np.load(tmp_path / "model" / "logits.npy").shape == (1, 8, 64)
