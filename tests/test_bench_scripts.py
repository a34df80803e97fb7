"""The bench/ scripts' command lines and case lists, without simulating anything."""

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from gpt_mapping.layout import map_gemm

ROOT = Path(__file__).resolve().parent.parent


def _load_bench(name):
    """Import bench/<name>.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sweep():
    return _load_bench("perf_model_sweep")


SET_SIZES = {"calib": 12, "grid1": 54, "grid2": 54, "grid4": 54, "gpt_test": 8, "gpt_demo": 8,
             "postfreeze": 64, "postfreeze1": 64}
#: Sets run with ``--build own`` (fabrics up to 8 x 8), not in the default build's corner.
OWN_BUILD = {"postfreeze", "postfreeze1"}


def test_perf_model_sweep_has_the_documented_sets(sweep):
    assert set(sweep.CASE_SETS) == set(SET_SIZES)


@pytest.mark.parametrize("set_name", SET_SIZES)
def test_perf_model_sweep_cases_map_onto_their_fabric(sweep, set_name):
    cases = sweep.list_cases(set_name)
    assert len(cases) == SET_SIZES[set_name]
    assert len({c.name for c in cases}) == len(cases), "case names must be unique"
    build_width, build_height = sweep.DEFAULT_BUILD
    for case in cases:
        assert case.set_name == set_name and case.name.startswith(f"{set_name}/")
        mapping = case.mapping()
        assert mapping == replace(map_gemm(case.x16, case.w16, case.width, case.height),
                                  groups=case.groups, interleave=case.interleave)
        assert (mapping.tokens, mapping.features, mapping.outputs) == case.shape
        if set_name in OWN_BUILD:
            assert case.width <= 8 and case.height <= 8, case.name
        else:
            assert case.width <= build_width and case.height <= build_height, case.name


@pytest.mark.parametrize("set_name, width, height", [("grid1", 1, 1), ("grid2", 2, 2),
                                                      ("grid4", 4, 4)])
def test_perf_model_sweep_grid_covers_tokens_per_pe(sweep, set_name, width, height):
    cases = sweep.list_cases(set_name)
    assert {(c.width, c.height) for c in cases} == {(width, height)}
    tokens = sorted({sweep.tokens_per_pe(c.mapping()) for c in cases})
    assert tokens == list(sweep.SWEEP_TOKENS_PER_PE)
    features = sorted({int(c.mapping().features_per_column.max()) for c in cases})
    assert features == sorted(k for k, _ in sweep.SWEEP_FEATURES_PER_COLUMN)
    assert sorted({c.sparsity for c in cases}) == list(sweep.SWEEP_SPARSITIES)


def test_perf_model_sweep_calibration_matches_its_table(sweep):
    shapes = [(c.shape, (c.width, c.height), c.sparsity, c.seed)
              for c in sweep.list_cases("calib")]
    assert shapes == [tuple(row) for row in sweep.CALIBRATION_GEMMS]


def test_perf_model_sweep_unknown_set_is_named(sweep):
    with pytest.raises(ValueError, match="'grid3'"):
        sweep.list_cases("grid3")


def test_perf_model_sweep_list_runs_nothing(sweep, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpt_mapping.fabric_run", None)   # no RTL reachable
    assert sweep.main(["--set", "grid2", "--set", "calib", "--match", "/s0.9/", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 18 + 2                 # grid2: 18 at 90 %, calib: two
    assert all("/s0.9/" in line and "predicted" in line for line in lines)


@pytest.mark.parametrize("argv", [["--set", "grid3"], ["--build", "4by5"],
                                  ["--set", "calib", "--build", "2x2"]])
def test_perf_model_sweep_rejects_bad_arguments(sweep, argv, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpt_mapping.fabric_run", None)   # no RTL reachable
    with pytest.raises(SystemExit) as exit_info:
        sweep.main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_perf_model_sweep_summary(sweep):
    records = [{"set": "s", "name": f"s/{i}", "ok": True, "model_error": e}
               for i, e in enumerate([0.05, -0.12, 0.10, 0.02])]
    records.append({"set": "s", "name": "s/stalled", "ok": False, "error": "stalled"})
    summary = sweep.summarize(records)
    assert summary["count"] == 5 and summary["failed"] == 1 and summary["measured"] == 4
    assert summary["within_10_percent"] == 3
    assert summary["worst_error"] == -0.12 and summary["worst_case"] == "s/1"
    assert summary["mean_abs_error"] == pytest.approx(0.0725)
    assert "1 FAILED" in sweep.format_summary("s", summary)


def test_tile_cost_refuses_no_core_with_code_reductions(capsys):
    """A PE without a core cannot run code tasks: the bench says so before measuring."""
    tile_cost = _load_bench("tile_cost")
    with pytest.raises(SystemExit) as exc:
        tile_cost.main(["--variant", "no-core"])
    assert exc.value.code == 2
    assert "--variant no-core needs --reductions list" in capsys.readouterr().err


def test_nonlinear_bench_golden_table(tmp_path, capsys):
    """bench/nonlinear.py without --rtl: the accuracy table of every kernel, JSON included."""
    import json
    bench = _load_bench("nonlinear")
    out = tmp_path / "nl.json"
    assert bench.main(["--kernels", "exp,rsqrt", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "exp" in text and "rsqrt" in text
    rows = json.loads(out.read_text())["kernels"]
    assert set(rows) == {"exp", "rsqrt"} and rows["rsqrt"]["correctly_rounded"] == 1.0
    with pytest.raises(KeyError, match="no kernel 'erf'"):
        bench.main(["--kernels", "erf"])


def test_redistribute_bench_cases_are_layouts_the_fabric_can_reach():
    """bench/redistribute.py: one tuning case (the demo's layout), the rest checks, every
    one a grouped layout the redistribution supports."""
    from gpt_mapping import redistribute as RD
    from gpt_mapping.layout import GemmMapping
    bench = _load_bench("redistribute")
    roles = [c[0] for c in bench.CASES]
    assert roles.count("tune") == 1 and roles.count("check") >= 10
    for _, w, h, t, k, n, g in bench.CASES:
        m = GemmMapping(tokens=t, features=k, outputs=n, width=w, height=h, groups=g)
        assert g > 1 and RD.redistributable(m) is None, (w, h, t, k, g)
    assert bench.CASES[0][1:] == (4, 4, 32, 64, 64, 4)      # REDISTRIBUTE_FIXED's source
