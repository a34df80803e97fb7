"""Training a whole nanoGPT model (gpt_mapping/train.py, gpt_mapping/train_cli.py): one step
against torch autograd, the RTL step bit for bit the golden one, the command line (loss
curve beside torch's, SwarmX on a LocalCluster, the saved weights, the report) and its
errors."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from gpt_mapping import train_cli
from gpt_mapping.model import GPTConfig, init_gpt
from gpt_mapping.train import train_step

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")

TEXT = ("weights stream in from memoryx for every layer and the gradients stream back out "
        "of the north edge, where memoryx updates them; ") * 12


def _tiny(n_layer=2):
    cfg = GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=1)
    model = init_gpt(cfg, n_layer, 40, seed=1, block_size=16)
    seq = np.random.default_rng(0).integers(0, 40, (2, 9))
    return model, seq[:, :8], seq[:, 1:]


def test_one_step_against_torch_autograd():
    """Every parameter's gradient within 4e-3 of its largest value of torch autograd's
    (measured at most 2.2e-3), the loss within 1e-3 (relative)."""
    model, tokens, targets = _tiny()
    res = train_step(model, tokens, targets, (4, 4), "golden")
    m = model.with_context(8, 2).requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(m(torch.from_numpy(tokens)).reshape(-1, 40),
                                             torch.from_numpy(targets).reshape(-1))
    loss.backward()
    assert res.loss == pytest.approx(loss.item(), rel=1e-3)
    names = [n for n, _ in m.named_parameters()]
    assert list(res.grads) == names
    for name, p in m.named_parameters():
        want = p.grad.numpy()
        assert np.abs(res.grads[name] - want).max() <= 4e-3 * np.abs(want).max(), name
    where = {r.name: r.where for r in res.rows}
    assert where["lm_head"] == where["h.1.mlp.c_fc"] == "fabric"
    assert where["ln_f"] == where["embedding"] == where["loss"] == "host"


@pytest.mark.rtl
@pytest.mark.slow
def test_a_step_on_the_rtl_is_the_golden_step():
    """One training step with the forward pass and every linear layer's backward on the RTL
    fabric: the loss and every gradient bit for bit the golden step's."""
    model, tokens, targets = _tiny(n_layer=1)
    gold = train_step(model, tokens, targets, (4, 4), "golden")
    rtl = train_step(model, tokens, targets, (4, 4), "rtl")
    assert gold.loss == rtl.loss
    for name, g in gold.grads.items():
        assert np.array_equal(g.view(np.uint32), rtl.grads[name].view(np.uint32)), name
    assert rtl.backward_cycles > 0 and rtl.forward_cycles > 0


def _cli(tmp_path, *extra):
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    return train_cli.main(["--n-layer", "1", "--n-embd", "32", "--n-head", "4", "--n-ctx",
                           "8", "--text", str(text), "--fabric", "4x4", "--no-progress",
                           *extra])


def test_train_command_follows_torch(tmp_path, capsys):
    rep, out = tmp_path / "r.json", tmp_path / "state.pt"
    code = _cli(tmp_path, "--steps", "8", "--batch", "2", "--lr", "3e-3", "--report",
                str(rep), "--out", str(out), "--plots", str(tmp_path / "plots"),
                "--compare-torch")
    assert code == 0, capsys.readouterr().err
    r = json.loads(rep.read_text())
    loss, ref = np.array(r["loss"]), np.array(r["torch_loss"])
    assert len(loss) == 8 and loss[-1] < loss[0]
    assert np.abs(loss - ref).max() <= 2e-3 * ref.max()      # measured 1.3e-4 over 30
    state = torch.load(out)
    assert "transformer.h.0.attn.c_attn.weight" in state and "lm_head.weight" in state
    assert all(v.dtype == torch.float32 for v in state.values())
    assert (tmp_path / "plots" / "loss.png").stat().st_size > 0
    assert r["steps"][0]["where"]["lm_head"] == "fabric"


@pytest.mark.parametrize("systems", [2, 4])
def test_train_command_on_several_systems(tmp_path, capsys, systems):
    """--systems S: the batch split over S systems on the two worker processes of a
    LocalCluster, the tree on Dask: the same loss as the golden tree computed here, within
    tolerance of one torch model on the whole batch over two steps."""
    from gpt_mapping import swarmx as SX
    rep = tmp_path / "r.json"
    assert _cli(tmp_path, "--steps", "2", "--batch", "4", "--systems", str(systems),
                "--report", str(rep), "--compare-torch") == 0, capsys.readouterr().err
    r = json.loads(rep.read_text())
    assert len(set(r["steps"][0]["pids"])) == 2
    loss, ref = np.array(r["loss"]), np.array(r["torch_loss"])
    assert np.abs(loss - ref).max() <= 2e-3 * ref.max()
    step = r["steps"][0]
    assert {row["where"] for row in step["backward"]} == {"fabric", "host"}
    assert step["update"]["where"] == "host (MemoryX)"
    assert any(row["name"] == "lm_head" and row["cycles"] > 0 for row in step["forward"])
    args = train_cli.build_parser().parse_args(["--n-embd", "32", "--n-head", "4",
                                                "--n-ctx", "8", "--text",
                                                str(tmp_path / "text.txt")])
    data, vocab, _ = train_cli.load_data(args, None)
    cfg = GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=4 // systems)
    model = init_gpt(cfg, 1, vocab, seed=0)
    rows = data[:4]
    per = 4 // systems
    parts = [train_cli._system(model, rows[i:i + per, :-1], rows[i:i + per, 1:], (4, 4),
                               "golden") for i in range(0, 4, per)]
    assert r["loss"][0] == float(SX.tree_reduce([p["loss"] for p in parts])["loss"])


@pytest.mark.parametrize("extra, message", [
    (["--systems", "3", "--batch", "4"], "--systems 3 does not divide --batch 4"),
    (["--steps", "100", "--batch", "4"], "needs 400 sequences; the data has"),
    (["--systems", "2", "--batch", "2", "--scheduler", "tcp://127.0.0.1:9"],
     "no Dask scheduler answers at tcp://127.0.0.1:9"),
    (["--backend", "rtl", "--vocab", "30"], "lm_head's 30 outputs do not split evenly"),
])
def test_bad_input_is_named_before_the_first_step(tmp_path, capsys, extra, message):
    assert _cli(tmp_path, *extra) == 2
    assert message in capsys.readouterr().err


def test_bad_data_is_named(tmp_path, capsys):
    data = np.zeros((4, 9), np.int64)
    data[2, 5] = 50
    np.save(tmp_path / "d.npy", data)
    base = ["--n-embd", "32", "--n-head", "4", "--n-ctx", "8", "--no-progress"]
    assert train_cli.main(base + ["--data", str(tmp_path / "d.npy"), "--vocab", "40"]) == 2
    assert "token 50 at sequence 2, position 5 is outside the vocabulary of 40" in \
        capsys.readouterr().err
    (tmp_path / "short.txt").write_text("abc")
    assert train_cli.main(base + ["--text", str(tmp_path / "short.txt")]) == 2
    assert "has 3 characters, shorter than one sequence of n_ctx + 1 = 9" in \
        capsys.readouterr().err


def test_command_is_listed():
    out = subprocess.run([sys.executable, "-m", "gpt_mapping"], capture_output=True,
                         text=True)
    assert "train" in out.stdout


def test_state_dict_in_and_out(tmp_path, capsys):
    """--state-dict loads a nanoGPT model (checked against the config); the same weights as
    the seeded run give the same first loss, and --out writes what --state-dict reads."""
    args = train_cli.build_parser().parse_args(["--n-embd", "32", "--n-head", "4",
                                                "--n-ctx", "8", "--text",
                                                str(tmp_path / "text.txt")])
    (tmp_path / "text.txt").write_text(TEXT)
    _, vocab, _ = train_cli.load_data(args, None)
    model = init_gpt(GPTConfig(n_embd=32, n_head=4, n_ctx=8, batch=2), 1, vocab, seed=0)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert _cli(tmp_path, "--steps", "1", "--batch", "2", "--report", str(a), "--out",
                str(tmp_path / "out.pt")) == 0
    assert _cli(tmp_path, "--steps", "1", "--batch", "2", "--report", str(b),
                "--state-dict", str(tmp_path / "m.pt")) == 0, capsys.readouterr().err
    assert json.loads(a.read_text())["loss"] == json.loads(b.read_text())["loss"]
    assert _cli(tmp_path, "--steps", "1", "--batch", "2", "--state-dict",
                str(tmp_path / "out.pt")) == 0
    bad = {k: v for k, v in model.state_dict().items() if "ln_f" not in k}
    torch.save(bad, tmp_path / "bad.pt")
    assert _cli(tmp_path, "--steps", "1", "--batch", "2", "--state-dict",
                str(tmp_path / "bad.pt")) == 2
    assert "ln_f" in capsys.readouterr().err
