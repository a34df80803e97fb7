"""Verilator simulation speed of the FP units (and of the PE that holds them).

    python bench/fp_speed.py [--units fma_fp32 fma_mixed ...] [--pe] [--baseline REV]
                             [--cycles 200000] [--repeat 3] [--callgrind]

Each unit (4 lanes, the PE's width) is exported behind a register on its input payload (in
the PE its inputs come from registers too) and built by Verilator with a native C++ harness
(no cocotb, no Python per cycle) that feeds a valid transfer every cycle from a pool of
4096 pre-computed random transfers (mostly normal numbers of nearby exponents, so products
and addends overlap and cancel; 10 % subnormals, some zeros, infinities, NaNs and random
bits; 70 % FMA) and keeps ``o.ready`` high, so every lane works every cycle. Per target:

* simulated cycles per second of process CPU time (waits for a core on the shared machine
  do not count; the wall-clock rate is reported too), the median of ``--repeat`` runs;
  still noisy (other jobs share the caches): read medians and ratios;
* with ``--callgrind``, host instructions per simulated cycle, counted by valgrind
  (``(Ir(2n) - Ir(n)) / n``: immune to the load of the machine), and the same over the
  floor, ``neg_fp32`` (a unit with nearly no logic: harness and Verilator's scheduling);
* Verilog lines, and the values wider than 64 bits (stream payloads aside) declared in the
  Verilog and in Verilator's C++ (``VlWide``, multi-word: the slow kind);
* a checksum of every output transfer: two revisions that agree on it computed the same
  results for the whole pool.

``--pe`` adds the PE (``rtl.pe.pe.pe_verilog()``) with the FMAC stimulus of
``bench/pe_native_main.cpp`` (an FP16 x scalar FMAC into the accumulators, re-triggered
every 4000 cycles), busy speed only. ``--baseline REV`` also builds everything with
``rtl/fp.py`` as it is in git revision ``REV`` (the rest of the tree as it is) and prints
the before/after ratios; runs of the two alternate, so the load hits both alike.

Builds are cached in ``build/bench/fp_speed/<name>-<hash of the Verilog>/``; results go to
``build/bench/fp_speed.json``. Figures are recorded in docs/fp_units.md.
"""

import argparse
import hashlib
import importlib.util
import json
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUT_DIR = ROOT / "build" / "bench" / "fp_speed"
LANES = 4
POOL = 4096          # distinct input transfers, replayed in a loop
PE_RETRIGGER = 4000  # as bench/pe_native_main.cpp

#: unit name -> (factory(rtl.fp module), input format name, output format name)
UNITS = {
    "fma_fp32": (lambda fp: fp.FMAUnit(fp.FP32, fp.FP32, LANES), "FP32", "FP32"),
    "fma_mixed": (lambda fp: fp.FMAUnit(fp.FP16, fp.FP32, LANES), "FP16", "FP32"),
    "fma_fp16": (lambda fp: fp.FMAUnit(fp.FP16, fp.FP16, LANES), "FP16", "FP16"),
    "f16_to_f32": (lambda fp: fp.F16ToF32(LANES), "FP16", "FP32"),
    "f32_to_f16": (lambda fp: fp.F32ToF16(LANES), "FP32", "FP16"),
    # Nearly no logic: the floor (harness, Verilator's scheduling) under the others.
    "neg_fp32": (lambda fp: fp.NegUnit(fp.FP32, LANES), "FP32", "FP32"),
}


# --- loading rtl/fp.py from a git revision ---------------------------------------------------

def use_fp_revision(rev):
    """Make ``import rtl.fp`` give ``rtl/fp.py`` of git revision ``rev`` (in this process)."""
    source = subprocess.run(["git", "show", f"{rev}:rtl/fp.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    import rtl
    spec = importlib.util.spec_from_loader("rtl.fp", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(ROOT / "rtl" / "fp.py")
    sys.modules["rtl.fp"] = module
    exec(compile(source, f"{rev}:rtl/fp.py", "exec"), module.__dict__)
    rtl.fp = module


def emit_verilog(name, rev=None):
    """Verilog text of unit ``name`` (or ``"pe"``) with ``rtl/fp.py`` of ``rev`` (None: the
    working tree). A revision is loaded in a child process, so this one stays clean."""
    if rev is not None:
        return subprocess.run([sys.executable, __file__, "--emit", name, "--rev", rev],
                              cwd=ROOT, check=True, capture_output=True, text=True).stdout
    if name == "pe":
        from rtl.pe.pe import pe_verilog
        return pe_verilog()
    from rtl import fp
    from rtl.export import to_verilog
    return to_verilog(registered_inputs(UNITS[name][0](fp)), "fpu")


def registered_inputs(unit):
    """``unit`` behind a register on its input payload, ``o.ready`` high.

    In the PE the units' inputs come from registers, so all of their logic is evaluated once
    per clock edge; driven straight from the harness, the input-side logic would be in
    Verilator's input-combinational region, which every ``eval()`` (two per cycle) re-runs.
    Ports: ``payload`` and ``valid`` in (registered), ``result`` and ``result_valid`` out.
    """
    from amaranth import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    payload_shape = unit.signature.members["i"].signature.members["payload"].shape
    result_shape = unit.signature.members["o"].signature.members["payload"].shape

    class Top(wiring.Component):
        payload: In(payload_shape)
        valid: In(1)
        result: Out(result_shape)
        result_valid: Out(1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.unit = unit
            payload = Signal(payload_shape, name="payload_reg")
            valid = Signal(name="valid_reg")
            m.d.sync += [payload.eq(self.payload), valid.eq(self.valid)]
            m.d.comb += [
                unit.i.payload.eq(payload), unit.i.valid.eq(valid), unit.o.ready.eq(1),
                self.result.eq(unit.o.payload), self.result_valid.eq(unit.o.valid),
            ]
            return m

    return Top()


# --- stimulus ---------------------------------------------------------------------------------

def random_operand(rng, fmt, centre=0):
    """Raw bits: mostly normal numbers with exponents near ``centre`` (so products and
    addends overlap and the whole datapath works), some subnormals, specials, any bits."""
    width, man, bias = fmt["width"], fmt["man"], fmt["bias"]
    emax = (1 << fmt["exp"]) - 1
    r = rng.random()
    sign = rng.getrandbits(1)
    if r < 0.80:
        efield = min(max(bias + centre + rng.randint(-12, 12), 1), emax - 1)
        bits = (efield << man) | rng.getrandbits(man)
    elif r < 0.90:
        bits = rng.getrandbits(man)                        # subnormal (or zero)
    elif r < 0.95:
        bits = rng.choice([0, emax << man, (emax << man) | (1 << (man - 1)), 1])
    else:
        return rng.getrandbits(width)
    return (sign << (width - 1)) | bits


FORMATS = {"FP16": {"width": 16, "exp": 5, "man": 10, "bias": 15},
           "FP32": {"width": 32, "exp": 8, "man": 23, "bias": 127}}


def payload_pool(name, seed=1):
    """``POOL`` input payloads of unit ``name`` as 32-bit words, and the word counts."""
    from amaranth import Shape
    from amaranth.lib import data
    from rtl import fp
    unit = UNITS[name][0](fp)
    unit._MustUse__silence = True      # only its layouts are needed
    fi, fo = FORMATS[UNITS[name][1]], FORMATS[UNITS[name][2]]
    layout = data.Layout.cast(unit.signature.members["i"].signature.members["payload"].shape)
    out_layout = data.Layout.cast(unit.signature.members["o"].signature.members["payload"].shape)
    fields = {field_name: field for field_name, field in layout}
    rng = random.Random(seed)
    words = []
    in_words = (layout.size + 31) // 32
    for _ in range(POOL):
        value = 0
        centre = rng.randint(-20, 20)
        for field_name, field in fields.items():
            if field_name == "op":
                part = 0 if rng.random() < 0.7 else rng.randint(1, 3)
            elif field_name == "tag":
                part = 0
            else:
                elem_width = Shape.cast(field.shape.elem_shape).width
                fmt = fo if field_name == "c" else fi
                part = 0
                for lane in range(field.shape.length):
                    # c near a*b: exponent 2*centre (the product's), so some cancel.
                    x = random_operand(rng, fmt, 2 * centre if field_name == "c" else centre)
                    part |= x << (lane * elem_width)
            value |= part << field.offset
        words += [(value >> (32 * w)) & 0xFFFFFFFF for w in range(in_words)]
    return words, layout.size, out_layout.size


# --- C++ harnesses ----------------------------------------------------------------------------

def _port_assign(port, width, src):
    """C++ statement setting input ``port`` (``width`` bits) from the words at ``src``."""
    if width <= 32:
        return f"top->{port} = {src}[0];"
    if width <= 64:
        return f"top->{port} = (uint64_t){src}[0] | ((uint64_t){src}[1] << 32);"
    return f"for (int w = 0; w < {(width + 31) // 32}; w++) top->{port}[w] = {src}[w];"


def _port_hash(port, width):
    if width <= 64:
        return f"sum = sum * 1000003u ^ (uint64_t)top->{port};"
    return (f"for (int w = 0; w < {(width + 31) // 32}; w++) "
            f"sum = sum * 1000003u ^ top->{port}[w];")


UNIT_MAIN = r"""// Generated by bench/fp_speed.py: a valid transfer of pool operands every cycle.
#include "Vfpu.h"
#include "verilated.h"
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <ctime>

// CPU time of this process: a loaded machine's waits for a core do not count.
static double cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
    long cycles = atol(argv[1]);
    std::vector<uint32_t> pool;
    FILE* f = fopen(argv[2], "rb");
    uint32_t w;
    while (fread(&w, 4, 1, f) == 1) pool.push_back(w);
    fclose(f);
    const size_t in_words = IN_WORDS, entries = pool.size() / in_words;
    Vfpu* top = new Vfpu;
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; tick(); tick(); top->rst = 0;
    top->valid = 1;
    uint64_t sum = 0;
    double cpu0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; i++) {
        const uint32_t* src = &pool[(i % entries) * in_words];
        SET_INPUT
        tick();
        if (top->result_valid) { HASH_OUTPUT }
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu = cpu_seconds() - cpu0;
    printf("{\"cycles_per_s\": %.0f, \"cycles_per_wall_s\": %.0f, \"checksum\": \"%016llx\"}\n",
           cycles / cpu, cycles / s, (unsigned long long)sum);
    delete top;
    return 0;
}
"""

PE_MAIN = r"""// Generated by bench/fp_speed.py: the FMAC stimulus of bench/pe_native_main.cpp,
// with separate idle and busy cycle counts (argv: idle busy cfg-file).
#include "Vpe.h"
#include "verilated.h"
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <vector>

#include <ctime>

// CPU time of this process: a loaded machine's waits for a core do not count.
static double cpu_seconds() {
    timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

int main(int argc, char** argv) {
    long idle = atol(argv[1]), cycles = atol(argv[2]);
    std::vector<std::pair<unsigned, unsigned>> writes;
    FILE* f = fopen(argv[3], "r");
    unsigned a, v;
    while (fscanf(f, "%u %u", &a, &v) == 2) writes.push_back({a, v});
    fclose(f);
    Vpe* top = new Vpe;
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); };
    top->rst = 1; tick(); tick(); top->rst = 0;
    top->tx___05Fready = 0xFFFFFF;
    for (long i = 0; i < idle; i++) tick();
    for (auto& w : writes) {
        top->cfg___05Faddr = w.first; top->cfg___05Fwdata = w.second; top->cfg___05Fwe = 1; tick();
    }
    top->cfg___05Fwe = 0;
    long busy_cycles = 0;
    double cpu0 = cpu_seconds();
    auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < cycles; i++) {
        if (i % RETRIGGER == 0) {
            top->cfg___05Faddr = writes.back().first; top->cfg___05Fwdata = writes.back().second;
            top->cfg___05Fwe = 1;
        } else {
            top->cfg___05Fwe = 0;
        }
        tick();
        busy_cycles += top->busy;
    }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double cpu = cpu_seconds() - cpu0;
    printf("{\"cycles_per_s\": %.0f, \"cycles_per_wall_s\": %.0f, \"busy_fraction\": %.3f}\n",
           cycles / cpu, cycles / s, (double)busy_cycles / cycles);
    delete top;
    return 0;
}
"""


def pe_config_file(path):
    """The configuration writes of bench/pe_bench.py's native run (FMAC, trigger last)."""
    from rtl.pe.regs import DSR_WAVELET, DType, Kind, Reg, TensorOp, encode_trigger, reg_addr
    from tb.pe_model import PEConfig
    cfg = PEConfig()
    cfg.dsr(0, Kind.MEM, dtype=DType.FP16, base=0, dims=[(4095, 1), (4, 0)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(64, 1), (256, 0)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET)])
    writes = cfg.all_writes() + [(reg_addr(Reg.TRIGGER), encode_trigger(0, data=0x3C00))]
    path.write_text("".join(f"{a} {v}\n" for a, v in writes))


def build(name, verilog, top, main_source):
    """Verilate ``verilog`` (top module ``top``) with the C++ harness ``main_source``, as
    bench/pe_bench.py builds the PE's native harness; cached by the hash of both. Returns
    the executable and the seconds its build took."""
    from runtime import sim
    key = hashlib.sha256("\0".join([verilog, main_source, sim.OPT_FAST]).encode()).hexdigest()
    work = OUT_DIR / f"{name}-{key[:12]}"
    exe = work / "obj" / f"V{top}"
    if (work / "BUILT").exists():
        return exe, float((work / "BUILT").read_text())
    work.mkdir(parents=True, exist_ok=True)
    (work / f"{top}.v").write_text(verilog)
    (work / "main.cpp").write_text(main_source)
    root = sim.setup_verilator()
    cmd = [str(root / "bin" / "verilator"), "--cc", f"{top}.v", "--top-module", top, "--exe",
           "main.cpp", "--build", "-j", "2", "-O3", "--x-assign", "fast", "--x-initial",
           "fast", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-MAKEFLAGS",
           f"CFG_CXXFLAGS_PCH_I=-include OPT_FAST={sim.OPT_FAST}", "-Mdir", "obj"]
    start = time.monotonic()
    with open(work / "build.log", "w") as log:
        try:
            subprocess.run(cmd, cwd=work, check=True, stdout=log, stderr=subprocess.STDOUT)
        except subprocess.CalledProcessError as exc:
            tail = "\n".join((work / "build.log").read_text().splitlines()[-30:])
            raise RuntimeError(f"Verilator build of {name} failed (log "
                               f"{work / 'build.log'}):\n{tail}") from exc
    seconds = time.monotonic() - start
    (work / "BUILT").write_text(f"{seconds:.1f}")
    return exe, seconds


def wide_lines(lines, pattern=None):
    """The declarations wider than 64 bits in Verilog (or, with ``pattern``, the lines of
    Verilator's C++ that match it), leaving out the stream payloads (wide by nature, not
    computed on)."""
    wide = re.compile(pattern and re.escape(pattern)
                      or r"\[(6[5-9]|[7-9][0-9]|[1-9][0-9]{2,}):0\]")
    return [line for line in lines if wide.search(line)
            and not re.search(r"payload|result", line)]


class Target:
    """One executable to measure: a unit or the PE, from one revision of rtl/fp.py."""

    def __init__(self, name, rev):
        self.name, self.rev = name, rev
        verilog = emit_verilog(name, rev)
        self.verilog_lines = verilog.count("\n")
        self.wide_signals = len(wide_lines(verilog.splitlines()))
        label = f"{name}-{'worktree' if rev is None else rev}"
        if name == "pe":
            self.exe, self.build_seconds = build("pe", verilog, "pe",
                                                 PE_MAIN.replace("RETRIGGER",
                                                                 str(PE_RETRIGGER)))
            self.data = self.exe.parent.parent / "cfg.txt"
            pe_config_file(self.data)
        else:
            words, in_bits, out_bits = payload_pool(name)
            main = (UNIT_MAIN.replace("IN_WORDS", str((in_bits + 31) // 32))
                    .replace("SET_INPUT", _port_assign("payload", in_bits, "src"))
                    .replace("HASH_OUTPUT", _port_hash("result", out_bits)))
            self.exe, self.build_seconds = build(name, verilog, "fpu", main)
            self.data = self.exe.parent.parent / "pool.bin"
            self.data.write_bytes(b"".join(w.to_bytes(4, "little") for w in words))
        model = [path for path in self.exe.parent.glob("V*___024root*")
                 if path.suffix in (".h", ".cpp") and "Slow" not in path.name]
        self.wide_variables = len(wide_lines(
            [line for path in model for line in path.read_text().splitlines()
             if re.match(r"\s*VlWide<\d+>/\*\d+:0\*/ \w+;", line)], "VlWide<"))
        print(f"built {label}: {self.verilog_lines} lines of Verilog, {self.wide_signals} "
              f"signals and {self.wide_variables} Verilator variables wider than 64 bits "
              f"(stream payloads aside), build {self.build_seconds:.0f} s", flush=True)
        self.rates, self.wall_rates = [], []
        self.checksum = None
        self.instructions_per_cycle = None

    def args(self, cycles):
        if self.name == "pe":
            return [str(self.exe), "0", str(cycles), str(self.data)]
        return [str(self.exe), str(cycles), str(self.data)]

    def run(self, cycles):
        out = json.loads(subprocess.run(self.args(cycles), check=True, capture_output=True,
                                        text=True).stdout)
        self.rates.append(out["cycles_per_s"])
        self.wall_rates.append(out["cycles_per_wall_s"])
        if "checksum" in out:
            self.checksum = out["checksum"]
        return out

    def callgrind(self, cycles):
        """Host instructions per simulated cycle: ``(Ir(2 n) - Ir(n)) / n``."""
        counts = []
        for n in (cycles, 2 * cycles):
            err = subprocess.run(["valgrind", "--tool=callgrind",
                                  "--callgrind-out-file=/dev/null", *self.args(n)],
                                 check=True, capture_output=True, text=True).stderr
            counts.append(int(re.search(r"Collected : (\d+)", err).group(1)))
        self.instructions_per_cycle = (counts[1] - counts[0]) / cycles
        return self.instructions_per_cycle

    def summary(self):
        return {"verilog_lines": self.verilog_lines, "wide_signals": self.wide_signals,
                "wide_variables": self.wide_variables,
                "build_seconds": self.build_seconds, "cycles_per_s": self.rates,
                "median_cycles_per_s": statistics.median(self.rates),
                "cycles_per_wall_s": self.wall_rates,
                "median_cycles_per_wall_s": statistics.median(self.wall_rates),
                "instructions_per_cycle": self.instructions_per_cycle,
                "checksum": self.checksum}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", nargs="+", default=list(UNITS), choices=list(UNITS))
    parser.add_argument("--pe", action="store_true", help="also measure the PE")
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure rtl/fp.py of git revision REV, and compare")
    parser.add_argument("--cycles", type=int, default=200_000,
                        help="simulated cycles per run (the PE: busy cycles)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per target (median)")
    parser.add_argument("--callgrind", action="store_true",
                        help="count host instructions per cycle with valgrind")
    parser.add_argument("--callgrind-cycles", type=int, default=20_000)
    parser.add_argument("--emit", help=argparse.SUPPRESS)   # child: print one Verilog
    parser.add_argument("--rev", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.emit:
        if args.rev:
            use_fp_revision(args.rev)
        sys.stdout.write(emit_verilog(args.emit))
        return

    names = list(args.units) + (["pe"] if args.pe else [])
    revs = ([args.baseline] if args.baseline else []) + [None]
    targets = {(name, rev): Target(name, rev) for name in names for rev in revs}
    for rep in range(args.repeat):          # alternate, so that load hits every target alike
        for (name, rev), target in targets.items():
            cycles = args.cycles // 4 if name == "pe" else args.cycles
            target.run(cycles)
    if args.callgrind:
        for (name, rev), target in targets.items():
            target.callgrind(args.callgrind_cycles // (4 if name == "pe" else 1))

    results = {f"{name}@{rev or 'worktree'}": t.summary() for (name, rev), t in targets.items()}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR.parent / "fp_speed.json").write_text(json.dumps(results, indent=2))

    print(f"\nmedian of {args.repeat} runs; {LANES} lanes, a valid transfer every cycle")
    header = ("| target | revision | Verilog lines | > 64-bit signals (Verilog / C++) | "
              "cycles/s (CPU) | cycles/s (wall) |")
    rule = "|---|---|---|---|---|---|"
    if args.callgrind:
        header += " instructions / cycle | over the floor (neg_fp32) |"
        rule += "---|---|"
    print(header + "\n" + rule)
    for (name, rev), t in targets.items():
        row = (f"| {name} | {rev or 'working tree'} | {t.verilog_lines} | "
               f"{t.wide_signals} / {t.wide_variables} | {statistics.median(t.rates):,.0f} | "
               f"{statistics.median(t.wall_rates):,.0f} |")
        if args.callgrind:
            floor = targets.get(("neg_fp32", rev))
            over = ("-" if floor is None or name == "pe"
                    else f"{t.instructions_per_cycle - floor.instructions_per_cycle:,.0f}")
            row += f" {t.instructions_per_cycle:,.0f} | {over} |"
        print(row)
    if args.baseline:
        print("\n| target | speed-up (cycles per CPU second) | instructions ratio | "
              "same results |")
        print("|---|---|---|---|")
        for name in names:
            before, after = targets[(name, args.baseline)], targets[(name, None)]
            speed = statistics.median(after.rates) / statistics.median(before.rates)
            instr = "-"
            if args.callgrind:
                instr = f"{before.instructions_per_cycle / after.instructions_per_cycle:.2f} x"
                floors = [targets.get(("neg_fp32", r)) for r in (args.baseline, None)]
                if name not in ("pe", "neg_fp32") and all(floors):
                    over = [t.instructions_per_cycle - f.instructions_per_cycle
                            for t, f in zip((before, after), floors)]
                    instr += f" ({over[0] / over[1]:.2f} x over the floor)"
            same = "-" if name == "pe" else ("yes" if before.checksum == after.checksum
                                              else "NO")
            print(f"| {name} | {speed:.2f} x | {instr} | {same} |")
    print(f"\nwrote {OUT_DIR.parent / 'fp_speed.json'}")


if __name__ == "__main__":
    main()
