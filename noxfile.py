"""The project's flows. Each session installs what it needs into its own environment.

    nox -s tests       everything CI runs: unit tests and the cocotb regression
    nox -s verilog     write the Verilog of every exported block under build/verilog
    nox -s regression  the cocotb benches alone
    nox -s sim         a mapped GEMM on the simulated fabric, with its report
    nox -s gpt         a mapped GPT layer on the simulated fabric, with its report
    nox -s lockstep    10,000 random programs on the RTL core in lockstep with the ISS
    nox -s nonlinear   exp, 1/x, 1/sqrt(x), GELU over every FP16 input, on the RTL PE
"""

import os

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_venv = "yes"
nox.options.default_venv_backend = "virtualenv"

PYTHON = "3.11"


def _install(session):
    # torch is pinned to the CPU wheel the machine's pip finds locally.
    session.install("-e", ".[test]")


def _workers():
    # Two workers for CI's two cores. Verilator builds are file-locked in runtime/sim.py, so a
    # worker that needs a model another is building waits for it and then reuses it;
    # work-stealing keeps both busy. (xdist's loadgroup does not group under pytest 9.)
    return os.environ.get("WSE_TEST_WORKERS", "2")


@nox.session(python=PYTHON)
def tests(session):
    """Unit tests of golden/ and gpt_mapping/ plus the whole cocotb regression."""
    _install(session)
    session.run("pytest", "-n", _workers(), "--dist", "worksteal", *session.posargs)


@nox.session(python=PYTHON)
def regression(session):
    """The cocotb benches alone (tests marked `rtl`)."""
    _install(session)
    session.run("pytest", "-m", "rtl", "-n", _workers(), "--dist", "worksteal",
                *session.posargs)


@nox.session(python=PYTHON)
def verilog(session):
    """Generate the Verilog of every exported block and print where it went."""
    _install(session)
    session.run("python", "-m", "rtl.top", *session.posargs)


@nox.session(python=PYTHON)
def sim(session):
    """Run a representative GEMM (dense and 90 % sparse) on the RTL fabric."""
    _install(session)
    session.run("python", "-m", "gpt_mapping.demo", "gemm", *session.posargs)


@nox.session(python=PYTHON)
def gpt(session):
    """A mapped GPT block on the RTL fabric (one fabric program, all 15 operations), dense
    and 90 % sparse, with its reports; then a two-block model: logits and greedy tokens."""
    _install(session)
    session.run("python", "-m", "gpt_mapping.demo", "gpt", *session.posargs)


@nox.session(python=PYTHON)
def lockstep(session):
    """10,000 constrained-random programs on the RTL core (in the PE) in lockstep with the
    ISS (tests/test_pe_core.py runs 500 of them); figures in docs/core.md."""
    _install(session)
    session.run("python", "bench/core_lockstep.py", "--count", "10000", "--jobs", _workers(),
                *session.posargs)


@nox.session(python=PYTHON)
def attention(session):
    """Causal attention on the RTL fabric over 30 layouts: bits against the golden model,
    FMACs against the unmasked pairs, traffic against the keys' routes, cycles against the
    cycle model (tests/test_attention.py runs six layouts); figures in docs/attention.md."""
    _install(session)
    session.run("python", "bench/attention.py", *session.posargs)


@nox.session(python=PYTHON)
def gemm_interleave(session):
    """Interleaved outputs on the RTL: the demo block's GEMMs and the benchmark GEMM with 1,
    2 and 4 outputs interleaved, dense and sparse (tests/test_gemm_interleave.py runs five
    cases); figures in docs/gemm.md section 9."""
    _install(session)
    session.run("python", "bench/gemm_interleave.py", *session.posargs)


@nox.session(python=PYTHON)
def gemm_groups(session):
    """Column groups on the RTL in the reduction-bound regime (16 x 16, 1 to 16 groups,
    dense and 90 % sparse) and GPT-2 small's block GEMMs on 750 x 994 with the mapper's
    layouts (tests/test_gemm_groups.py runs three RTL cases); figures in docs/gemm.md
    section 10."""
    _install(session)
    session.run("python", "bench/gemm_groups.py", *session.posargs)
    session.run("python", "bench/gpt2_wafer.py")


@nox.session(python=PYTHON)
def train(session):
    """A tiny character-level GPT trained on bench/data/tiny_corpus.txt (golden backend,
    torch's float32 model beside it, both loss curves in build/train/loss.png), one of its
    steps replayed on the RTL fabric and checked bit for bit; docs/training.md section 8."""
    _install(session)
    session.run("python", "bench/train_tiny.py", *session.posargs)


@nox.session(python=PYTHON)
def redistribute(session):
    """X moved into column groups on the RTL (13 layouts, 2 x 2 to 8 x 4, 2 to 8 groups)
    against the cycle model, every copy bit for bit (tests/test_redistribute.py runs
    three); figures in docs/gemm.md section 12."""
    _install(session)
    session.run("python", "bench/redistribute.py", *session.posargs)


@nox.session(python=PYTHON)
def perf_model_postfreeze(session):
    """The frozen performance model against the 64 GEMMs drawn after the freeze, each on
    its own fabric up to 8 x 8 (tests/test_perf_model.py keeps four live); figures in
    docs/gemm.md section 11."""
    _install(session)
    session.run("python", "bench/perf_model_sweep.py", "--set", "postfreeze", "--build",
                "own", *session.posargs)


@nox.session(python=PYTHON)
def zero_filter(session):
    """The zero filter at the sender: a PE-to-PE stream at 0 to 95 % zeros on the RTL
    (tests/test_zero_filter.py runs two cases); figures in docs/pe.md section 12."""
    _install(session)
    session.run("python", "bench/zero_filter.py", *session.posargs)


@nox.session(python=PYTHON)
def nonlinear(session):
    """exp, 1/x, 1/sqrt(x), GELU: accuracy over all 65,536 FP16 inputs and every input on
    the RTL PE bit for bit against the golden model (tests/test_nonlinear_rtl.py runs a
    sample); figures in docs/nonlinear.md."""
    _install(session)
    session.run("python", "bench/nonlinear.py", "--rtl", *session.posargs)
