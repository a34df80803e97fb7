"""The command line: ``python -m gpt_mapping gemm``, its report, its errors, the RTL backend
plug-in point and ``python -m gpt_mapping.demo``."""

import json
import subprocess
import sys
import types

import numpy as np
import pytest

from golden.gemm import fabric_gemm
from gpt_mapping import __main__ as cli_main
from gpt_mapping import demo, gemm_cli
from runtime.sim import ROOT

REPORT_KEYS = {"cycles", "fmac_utilization", "nonzero_weights", "bit_exact_vs_golden",
               "max_abs_error_vs_torch_fp32", "fabric", "backend", "predicted_cycles",
               "wall_seconds", "cycles_per_second"}


@pytest.fixture
def operands(tmp_path):
    x16, w16 = demo.make_gemm_operands(tokens=12, features=40, outputs=9, sparsity=0.5, seed=3)
    np.save(tmp_path / "X.npy", x16)
    np.save(tmp_path / "W.npy", w16)
    return tmp_path, x16, w16


def cli_args(path, fabric="3x2", x="X.npy", w="W.npy"):
    return ["--x", str(path / x), "--w", str(path / w), "--fabric", fabric,
            "--out", str(path / "out" / "Y.npy"), "--report", str(path / "out" / "r.json"),
            "--no-progress"]


def test_gemm_golden_writes_y_and_report(operands, capsys):
    path, x16, w16 = operands
    assert gemm_cli.main(cli_args(path) + ["--backend", "golden"]) == 0
    out = capsys.readouterr().out
    assert "backend: golden" in out
    y16 = np.load(path / "out" / "Y.npy")
    assert y16.dtype == np.float16 and y16.shape == (12, 9)
    assert np.array_equal(y16.view(np.uint16), fabric_gemm(x16, w16, 3, 2).view(np.uint16))
    report = json.loads((path / "out" / "r.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["backend"] == "golden" and report["cycles_source"] == "predicted"
    assert report["cycles"] == report["predicted_cycles"] > 0
    assert report["fabric"] == {"width": 3, "height": 2}
    assert report["nonzero_weights"] == int((w16 != 0).sum())
    assert report["bit_exact_vs_golden"] is True
    assert report["bit_exact_vs_reference_loop"] is True
    assert report["torch_fp32_check"]["ok"] is True
    assert 0 < report["fmac_utilization"] <= 1
    assert "not measured" in report["note"]


def test_module_entry_point(operands):
    path, _, _ = operands
    run = subprocess.run([sys.executable, "-W", "error", "-m", "gpt_mapping", "gemm",
                          *cli_args(path, fabric="2x2"), "--backend", "golden"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "backend: golden" in run.stdout
    assert json.loads((path / "out" / "r.json").read_text())["fabric"]["width"] == 2


@pytest.mark.parametrize("case,message", [
    ("x_float32", "error: X must be float16, got float32 with shape (12, 40)"),
    ("w_shape", "error: X [T, K] and W [K, N] disagree on K: X has shape (12, 40), W has shape "
                "(39, 9)"),
    ("fabric_zero", "error: fabric of zero size: '0x2'"),
    ("missing", "error: X: no such file"),
    ("index", "error: column 0 holds K_x = 1040 features"),
    ("memory", "error: row 0 has T_y = 40 tokens per PE (T_pad 40): 2 accumulator buffers"),
])
def test_bad_input_is_named(operands, capsys, case, message):
    path, x16, w16 = operands
    args = cli_args(path)
    if case == "x_float32":
        np.save(path / "X32.npy", x16.astype(np.float32))
        args = cli_args(path, x="X32.npy")
    elif case == "w_shape":
        np.save(path / "W39.npy", w16[:39])
        args = cli_args(path, w="W39.npy")
    elif case == "fabric_zero":
        args = cli_args(path, fabric="0x2")
    elif case == "missing":
        args = cli_args(path, x="nope.npy")
    elif case == "index":
        np.save(path / "Xwide.npy", np.ones((4, 1040), dtype=np.float16))
        np.save(path / "Wwide.npy", np.ones((1040, 2), dtype=np.float16))
        args = cli_args(path, fabric="1x1", x="Xwide.npy", w="Wwide.npy")
    elif case == "memory":
        np.save(path / "Xlong.npy", np.ones((40, 40), dtype=np.float16))
        args = cli_args(path, fabric="1x1", x="Xlong.npy")
    code = gemm_cli.main(args + ["--backend", "golden"])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert not (path / "out" / "Y.npy").exists()


def test_rtl_backend_is_plugged_in_and_checked(operands, capsys, monkeypatch):
    path, x16, w16 = operands
    calls = []

    def run_gemm_rtl(mapping, x, w, progress):
        calls.append((mapping.width, mapping.height))
        progress.reset(total=100)
        progress.update(100)
        return fabric_gemm(x, w, mapping.width, mapping.height), {"cycles": np.int64(1234),
                                                                  "fmac_lane_ops": 4936}

    fake = types.ModuleType("gpt_mapping.fabric_run")
    fake.run_gemm_rtl = run_gemm_rtl
    monkeypatch.setitem(sys.modules, "gpt_mapping.fabric_run", fake)
    assert gemm_cli.main(cli_args(path)) == 0
    assert "backend: rtl" in capsys.readouterr().out
    assert calls == [(3, 2)]
    report = json.loads((path / "out" / "r.json").read_text())
    assert report["backend"] == "rtl" and report["cycles_source"] == "measured"
    assert report["cycles"] == 1234 and report["predicted_cycles"] != 1234
    assert report["fmac_utilization"] == pytest.approx(4936 / (4 * 6 * 1234))
    assert report["measured_counters"] == {"cycles": 1234, "fmac_lane_ops": 4936}
    assert report["bit_exact_vs_golden"] is True

    # A wrong answer from the RTL is reported and fails the command.
    fake.run_gemm_rtl = lambda mapping, x, w, progress: (
        np.zeros((12, 9), dtype=np.float16), {"cycles": 5})
    assert gemm_cli.main(cli_args(path)) == 1
    assert "does not match" in capsys.readouterr().err
    assert json.loads((path / "out" / "r.json").read_text())["bit_exact_vs_golden"] is False


def test_broken_rtl_backend_is_not_hidden(operands, monkeypatch):
    path, _, _ = operands
    broken = types.ModuleType("gpt_mapping.fabric_run")     # no run_gemm_rtl
    monkeypatch.setitem(sys.modules, "gpt_mapping.fabric_run", broken)
    with pytest.raises(ImportError, match="run_gemm_rtl"):
        gemm_cli.main(cli_args(path))


def test_dispatcher(capsys, monkeypatch):
    assert cli_main.main(["--help"]) == 0
    assert "gemm" in capsys.readouterr().out
    assert cli_main.main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err
    seen = []
    fake = types.ModuleType("gpt_mapping.gpt_cli")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "gpt_mapping.gpt_cli", fake)
    assert cli_main.main(["gpt", "--config", "tiny"]) == 0
    assert seen == [["--config", "tiny"]]


def test_demo_gemm_runs_dense_and_sparse(tmp_path, capsys):
    code = demo.main(["gemm", "--out-dir", str(tmp_path), "--shape", "16,64,8",
                      "--fabric", "2x2", "--no-progress", "--backend", "golden"])
    out = capsys.readouterr().out
    assert code == 0
    dense = json.loads((tmp_path / "dense" / "report.json").read_text())
    sparse = json.loads((tmp_path / "sparse90" / "report.json").read_text())
    assert sparse["nonzero_weights"] < 0.2 * dense["nonzero_weights"]
    assert sparse["cycles"] < dense["cycles"]
    assert "sparse90" in out and "summary" in out


def test_demo_dispatch_points(capsys, monkeypatch):
    assert set(demo.DEMOS) >= {"gemm", "gpt"}
    assert demo.main(["nope"]) == 2
