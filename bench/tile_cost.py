"""Host instructions inside the tiles' Verilated model for the 4 x 4 GEMM bench (callgrind).

    python bench/tile_cost.py                       # this tree, dense + 90 % sparse
    python bench/tile_cost.py --variant no-core     # the PE without its control core
    python bench/tile_cost.py --reductions list     # reductions as launch-list tasks
    python bench/tile_cost.py --variant gated-clock # the core on a gated clock

Runs ``bench/gemm_fabric.py`` (T = 64, K = 512, N = 64 on 4 x 4, dense and 90 % zero
weights) under ``valgrind --tool=callgrind``, collecting only inside
``Vtile___024root___eval`` (the tiles' model: every tile evaluation, configuration and
readback included; the wrapper, the DPI calls and Python are not counted), and prints the
instructions of each run beside its fabric cycles and its bit-exact verdict. The counts
are deterministic: the load of the shared machine does not change them, so two revisions
or variants compare exactly. Figures are recorded in docs/pe.md section 12 and
docs/core_pipeline.md section 7.

``--variant no-core`` builds the tile from a PE whose control core is not attached (its
ports tied off, so that Verilator removes the PE's side of them too): the difference to the
default variant, both with ``--reductions list`` (a PE without a core cannot run code
tasks), is what an idle core costs the fabric's simulation. ``--variant gated-clock`` puts
the core on a clock gated by its ``wake`` output (same cycles; measured slower). The
variants exist only here: the product has the core, on the PE's clock.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVAL = "Vtile___024root___eval(Vtile___024root*)"


def _gate_core_clock(pe):
    """The ``gated-clock`` variant: the core in a clock domain of its own, the PE's clock
    gated by ``Core.wake`` sampled on the falling edge (a clock-gating cell's latch), with
    an asynchronous reset (it needs no edge). Same cycles; measured slower (docs/pe.md
    section 12), so the product does not do it."""
    from amaranth import ClockDomain, ClockSignal, DomainRenamer, ResetSignal, Signal
    core_class = pe.Core
    built = []

    def renamed_core(**params):
        core = core_class(**params)
        built.append(core)
        return DomainRenamer("core")(core)
    attach = pe.PE._attach_core

    def attach_gated(self, m, blocks):
        attach(self, m, blocks)
        core = built.pop()
        m.domains.core = ClockDomain("core", async_reset=True, local=True)
        m.domains.core_gate = ClockDomain("core_gate", clk_edge="neg", reset_less=True,
                                          local=True)
        enabled = Signal()
        m.d.core_gate += enabled.eq(core.wake)
        m.d.comb += [ClockSignal("core_gate").eq(ClockSignal()),
                     ClockSignal("core").eq(ClockSignal() & enabled),
                     ResetSignal("core").eq(ResetSignal())]
    pe.Core = renamed_core
    pe.PE._attach_core = attach_gated


def _child(variant, reductions):
    """Inside valgrind: run the GEMM bench (the PE as built, or a variant)."""
    if variant != "core":
        from rtl import fabric
        from rtl.pe import pe
        if variant == "no-core":
            pe.PE._attach_core = lambda self, m, blocks: None
        else:
            _gate_core_clock(pe)
        # The converted tile is cached by the hash of the RTL sources: tell this one apart.
        source_digest = fabric._source_digest
        fabric._source_digest = lambda *args: (source_digest(*args), variant)
    sys.path.insert(0, str(ROOT / "bench"))
    import gemm_fabric
    gemm_fabric.main(["--no-progress", "--reductions", reductions])


def measure(variant, reductions, keep=None):
    """``[(label, instructions, fabric cycles, bit exact)]`` of the dense and the sparse run
    (with ``keep``, a folder: the callgrind files are written there, for
    ``callgrind_annotate``)."""
    env = dict(os.environ)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", variant,
           "--reductions", reductions]
    # Build (and check) outside valgrind first: the build's compilers are not measured.
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    runs = re.findall(r"sparsity (\S+):\s+(\d+) cycles.*bit exact (\w+)", out)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = scratch if keep is None else str(keep)
        Path(tmp).mkdir(parents=True, exist_ok=True)
        for old in Path(tmp).glob("cg.*"):
            old.unlink()
        subprocess.run(["valgrind", "--tool=callgrind", "--trace-children=yes",
                        "--collect-atstart=no", f"--toggle-collect={EVAL}",
                        f"--callgrind-out-file={tmp}/cg.%p", *cmd],
                       check=True, capture_output=True, text=True, env=env)
        counts = []
        for path in sorted(Path(tmp).glob("cg.*"), key=lambda p: int(p.suffix[1:])):
            text = path.read_text(errors="replace")
            total = int(re.search(r"^summary: (\d+)", text, re.M).group(1))
            if total:
                counts.append((total, text))
    if len(counts) != len(runs):
        raise RuntimeError(f"expected {len(runs)} measured processes, found {len(counts)}")
    result = []
    for (sparsity, cycles, exact), (total, _) in zip(runs, counts):
        result.append((f"sparsity {sparsity}", total, int(cycles), exact == "True"))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("core", "no-core", "gated-clock"),
                        default="core")
    parser.add_argument("--reductions", choices=("code", "list"), default="code")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep the callgrind files in DIR (build the tile model with "
                             "WSE_VERILATOR_OPT='-O2 -g' to annotate them by line)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.reductions)
        return
    if args.variant == "no-core" and args.reductions == "code":
        parser.error("--variant no-core needs --reductions list (no core: no code tasks)")
    print(f"variant {args.variant}, reductions {args.reductions}")
    for label, total, cycles, exact in measure(args.variant, args.reductions, args.keep):
        print(f"{label}: {total:,} instructions in the tiles' model, {cycles:,} fabric cycles "
              f"(bit exact {exact})")


if __name__ == "__main__":
    main()
