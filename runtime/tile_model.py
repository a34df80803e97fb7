"""The fabric's tiles in simulation: one Verilated tile model per instance, driven through DPI.

Why not Verilator's hierarchical blocks
---------------------------------------
A hierarchical block is compiled once and called through a generic wrapper that treats every
output as a combinational function of every input. In a mesh every tile's outputs feed its
neighbours' inputs, so Verilator sees one big combinational loop and re-evaluates whole tiles
until nothing changes: about ten evaluations of every tile per clock cycle (measured with
``perf probe`` on the 4 x 4 fabric). Flattening the design instead specialises the tile's
code per instance (187 s to build the 4 x 4 fabric, and slower still: 8.8k cycles/s).

The link contract
-----------------
The tile's real dependence is narrow (:mod:`rtl.link`): its stop bits (``in_*.ready``), its
configuration chain output and its status outputs come from registers only; its outgoing
``valid`` and ``payload`` depend on registers and on the downstream stop bits
(``out_*.ready``) only. This wrapper tells Verilator exactly that, with three DPI calls:

* ``clock``, on the rising edge: evaluate the tile with ``clk`` high and report the
  registered outputs (they become flip-flops of the wrapper);
* ``ready``, whenever the downstream stop bits change or the tile was clocked: set them,
  evaluate, report ``valid`` and ``payload``;
* ``inputs``, whenever any other input changes (incoming wavelets, the configuration chain,
  reset): set them and evaluate; nothing is reported.

Verilator can then order the whole fabric with no loop: stop bits (registers) -> every
tile's ``ready`` call -> wavelets -> every tile's ``inputs`` call. About three evaluations
per tile per cycle. The contract is checked on every call, not assumed: after ``ready``, the
registered outputs must be unchanged; after ``inputs``, every output must be unchanged (only
inputs changed since the model's previous evaluation). A tile that breaks it stops the
simulation with a message naming the tile, the output and the call; tests make a tile that
breaks it on purpose (``tests/test_tile_model.py``).

Cycle behaviour is the RTL's, bit for bit: the same tile Verilog, evaluated with the same
inputs before every rising edge.

Recording the PE's debug port
-----------------------------
With the plusarg ``+wse_tile_trace=FILE`` on the simulator's command line
(:func:`trace_plusargs`), every tile records its :data:`TRACED_PORT` (the PE's ``dbg``,
:class:`rtl.pe.iface.PEDebug`) natively, on the ``clock`` call: ``(cycle, value)`` whenever
the value changed or holds a one-cycle event (:data:`rtl.pe.iface.DEBUG_PULSES`), ``cycle``
counting the tile's clock calls from 0. The records are written to the file when the
simulation ends (a ``final`` block) or whenever a tile has buffered
:data:`TRACE_CHUNK` of them; :func:`read_trace` reads the file back. Without the plusarg
the wrapper only counts cycles: an untraced run pays one test per tile per cycle. (A plusarg
rather than an environment variable: cocotb's runner lets the caller's environment override
the one it is given, so a stray variable could trace every run.)
"""

import fcntl
import hashlib
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from runtime import sim

__all__ = ["TilePort", "tile_ports", "module_header", "wrapper_verilog", "wrapper_cpp",
           "tile_library", "TileLibrary", "TRACED_PORT", "TRACE_PLUSARG", "trace_plusargs",
           "read_trace", "clock_index"]

#: Changes whenever the generated wrapper changes (part of every cache key).
WRAPPER_VERSION = 3

#: The tile output that the wrapper records when tracing (the PE's debug port).
TRACED_PORT = "pe_dbg"
#: The simulator plusarg naming the trace file (``+wse_tile_trace=FILE``); without it,
#: nothing is recorded.
TRACE_PLUSARG = "wse_tile_trace"
#: Records a tile buffers before it appends them to the trace file.
TRACE_CHUNK = 1 << 20

#: Prefix of the tile model's C++ classes.
PREFIX = "Vtile"

_READY_IN = re.compile(r"out_[nesw]__ready")
_LINK_OUT = re.compile(r"out_[nesw]__(valid|payload)")


@dataclass(frozen=True)
class TilePort:
    """One port of the tile module (besides ``clk``).

    ``group``: ``"ready"`` (downstream stop bits), ``"inputs"`` (every other input),
    ``"link"`` (outgoing ``valid``/``payload``) or ``"registered"`` (every other output).
    """
    name: str
    width: int
    direction: str
    group: str

    @property
    def c_name(self):
        """The member name Verilator gives this port in the model's C++ class."""
        return self.name.replace("__", "___05F")

    @property
    def sv_type(self):
        if self.width == 1:
            return "bit"
        if self.width <= 32:
            return "int unsigned"
        if self.width <= 64:
            return "longint unsigned"
        raise ValueError(f"tile port {self.name} is {self.width} bits wide; the DPI wrapper "
                         f"passes at most 64")

    @property
    def c_type(self):
        return {"bit": "svBit", "int unsigned": "unsigned int",
                "longint unsigned": "unsigned long long"}[self.sv_type]


def tile_ports():
    """The tile's ports, from :func:`rtl.tile.tile_signature`, each with its group."""
    from amaranth.hdl import Value
    from amaranth.lib.wiring import In
    from rtl.tile import tile_signature
    sig = tile_signature()
    ports = [TilePort("rst", 1, "in", "inputs")]
    for path, member, value in sig.flatten(sig.create()):
        name = "__".join(str(part) for part in path)
        width = len(Value.cast(value))
        if member.flow == In:
            group = "ready" if _READY_IN.fullmatch(name) else "inputs"
            ports.append(TilePort(name, width, "in", group))
        else:
            group = "link" if _LINK_OUT.fullmatch(name) else "registered"
            ports.append(TilePort(name, width, "out", group))
    return ports


def module_header(module, ports, net="logic"):
    """``module <module> (`` with ``clk`` and every port of ``ports`` declared, ``);``."""
    decls = [f"    input {net} clk"]
    for p in ports:
        width = f"[{p.width - 1}:0] " if p.width > 1 else ""
        decls.append(f"    {'input' if p.direction == 'in' else 'output'} {net} {width}{p.name}")
    return f"module {module} (\n" + ",\n".join(decls) + "\n);"


def _sv_bits(port):
    """The part-select that narrows a DPI value to ``port`` (none for a 1-bit ``bit``)."""
    return f"[{port.width - 1}:0]" if port.width > 1 else ""


def _groups(ports):
    return {g: [p for p in ports if p.group == g]
            for g in ("ready", "inputs", "link", "registered")}


def wrapper_verilog(module="tile", ports=None):
    """SystemVerilog module ``module``, port-compatible with the tile, calling the model.

    ``wse_tile_link`` and ``wse_tile_inputs`` are declared ``pure`` so that Verilator
    evaluates them only when their arguments change (an impure call in combinational logic
    is re-run at every evaluation of the model, twice per clock cycle and more);
    ``wse_tile_inputs`` returns a token that the clock call takes, which orders it before
    the rising edge.
    """
    ports = ports or tile_ports()
    group = _groups(ports)
    lines = [f"// Generated by runtime/tile_model.py (wrapper version {WRAPPER_VERSION}): the tile "
             f"as a Verilated model behind DPI.",
             module_header(module, ports)]

    def formals(ports, direction):
        return "".join(f", {direction} {p.sv_type} {p.name}" for p in ports)

    def actuals(ports, prefix=""):
        return "".join(f", {prefix}{p.name}" for p in ports)
    lines += [
        '    import "DPI-C" function chandle wse_tile_new(input string scope, '
        'input string trace);',
        '    import "DPI-C" function void wse_tile_clock(input chandle tile, '
        f'input int unsigned inputs_seen{formals(group["registered"], "output")});',
        '    import "DPI-C" pure function longint unsigned wse_tile_link(input chandle tile, '
        f'input int unsigned stamp{formals(group["ready"], "input")}, input int unsigned which);',
        '    import "DPI-C" pure function int unsigned wse_tile_inputs(input chandle tile'
        f'{formals(group["inputs"], "input")});',
        '    import "DPI-C" function void wse_tile_final(input chandle tile);',
        "    chandle handle;",
        "    string trace;",
        "    int unsigned stamp;",
        "    int unsigned inputs_seen;",
    ]
    lines += [f"    {p.sv_type} dpi_{p.name};" for p in group["registered"]]
    lines += [f"    longint unsigned dpi_{p.name};" for p in group["link"]]
    lines += [
        "    initial begin",
        f'        if (!$value$plusargs("{TRACE_PLUSARG}=%s", trace)) trace = "";',
        '        handle = wse_tile_new($sformatf("%m"), trace);',
        "        stamp = 0;",
        "    end",
        "    // The end of the simulation: the tile writes what it recorded (when tracing).",
        "    final wse_tile_final(handle);",
        "    // Every input but the stop bits: set and evaluated; it changes no output (checked).",
        f"    assign inputs_seen = wse_tile_inputs(handle{actuals(group['inputs'])});",
        "    // Registered outputs: flip-flops of the wrapper, loaded at the rising edge.",
        "    always @(posedge clk) begin",
        f"        wse_tile_clock(handle, inputs_seen{actuals(group['registered'], 'dpi_')});",
    ]
    lines += [f"        {p.name} <= dpi_{p.name}{_sv_bits(p)};" for p in group["registered"]]
    lines += [
        "        stamp <= stamp + 1;",
        "    end",
        "    // Outgoing wavelets: from the tile's state (stamp) and the downstream stop bits.",
    ]
    for index, p in enumerate(group["link"]):
        lines.append(f"    assign dpi_{p.name} = wse_tile_link(handle, stamp"
                     f"{actuals(group['ready'])}, {index});")
        lines.append(f"    assign {p.name} = dpi_{p.name}[{p.width - 1}:0];")
    lines.append("endmodule")
    return "\n".join(lines) + "\n"


def wrapper_cpp(ports=None):
    """The C++ side of :func:`wrapper_verilog`: DPI functions over ``Vtile`` instances."""
    ports = ports or tile_ports()
    group = _groups(ports)
    outputs = group["registered"] + group["link"]

    def params(ports, pointer):
        return "".join(f", {p.c_type}{'*' if pointer else ''} {p.name}" for p in ports)

    def compare(ports):
        return "\n".join(
            f'    if (now.{p.name} != t->seen.{p.name}) contract_error(t, "{p.name}", call);'
            for p in ports)

    def differs(ports):
        return " || ".join(f"t->model.{p.c_name} != {p.name}" for p in ports) or "false"
    fields = "\n".join(f"    unsigned long long {p.name};" for p in outputs)
    take = "\n".join(f"    s.{p.name} = m.{p.c_name};" for p in outputs)
    report = "\n".join(f"    *{p.name} = t->model.{p.c_name};" for p in group["registered"])
    assign = {g: "\n".join(f"    t->model.{p.c_name} = {p.name};" for p in group[g])
              for g in ("ready", "inputs")}
    link_cases = "\n".join(f"        case {i}: return t->model.{p.c_name};"
                           for i, p in enumerate(group["link"]))
    from rtl.pe.iface import DEBUG_PULSE_MASK
    traced = next((p for p in outputs if p.name == TRACED_PORT), None)
    record = "" if traced is None else f"""\
    if (t->tracing) {{
        const unsigned long long value = t->model.{traced.c_name};
        if (value != t->traced || (value & {DEBUG_PULSE_MASK:#x}ull)) {{
            t->records.push_back(Record{{t->cycle, value}});
            if (t->records.size() >= {TRACE_CHUNK}) write_records(t);
        }}
        t->traced = value;
    }}
"""
    return f"""\
// Generated by runtime/tile_model.py (wrapper version {WRAPPER_VERSION}): DPI functions that
// evaluate one Verilated tile per fabric instance (see the module's docstring).
#include "{PREFIX}.h"
#include "Vtop__Dpi.h"
#include "verilated.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {{

struct Outputs {{
{fields}
}};

// One record of the traced port: its value from clock call 'cycle' on.
struct Record {{
    unsigned long long cycle;
    unsigned long long value;
}};

struct Tile {{
    explicit Tile(const char* scope) : model{{scope}}, name{{scope}} {{}}
    {PREFIX} model;
    std::string name;
    bool high = false;          // the model's last evaluation saw clk = 1
    unsigned int stamp = ~0u;   // the clock stamp of the last 'ready' evaluation
    Outputs seen{{}};             // the outputs after the model's last evaluation
    bool tracing = false;       // +{TRACE_PLUSARG}= was given: record {TRACED_PORT}
    unsigned long long cycle = 0;   // clock calls so far
    unsigned long long traced = 0;  // {TRACED_PORT} at the last clock call
    std::vector<Record> records;
}};

// The trace file (nullptr: not tracing), opened by the first tile with a path.
FILE* trace_file(const char* path = nullptr) {{
    static FILE* file = nullptr;
    static bool opened = false;
    if (!opened && path) {{
        opened = true;
        if (*path) {{
            file = std::fopen(path, "wb");
            if (!file) {{
                std::fprintf(stderr, "%%Error: cannot write the tile trace file %s\\n", path);
                std::abort();
            }}
        }}
    }}
    return file;
}}

// Append a tile's records: a line "tile <scope> <count>", then the records (16 bytes each).
void write_records(Tile* t) {{
    FILE* file = trace_file();
    if (!file || t->records.empty()) return;
    std::fprintf(file, "tile %s %zu\\n", t->name.c_str(), t->records.size());
    std::fwrite(t->records.data(), sizeof(Record), t->records.size(), file);
    std::fflush(file);
    t->records.clear();
}}

Outputs snapshot(const {PREFIX}& m) {{
    Outputs s;
{take}
    return s;
}}

[[noreturn]] void contract_error(const Tile* t, const char* output, const char* call) {{
    std::fprintf(stderr,
                 "%%Error: tile %s: output %s changed when only its '%s' inputs changed: "
                 "the tile breaks the link contract that its fast model relies on "
                 "(rtl/link.py, runtime/tile_model.py)\\n", t->name.c_str(), output, call);
    std::fflush(stderr);
    std::abort();
}}

// Evaluate with clk low after new inputs of one group, and check what may not change.
void evaluate(Tile* t, const char* call, bool link_may_change) {{
    t->model.clk = 0;
    t->model.eval();
    t->high = false;
    const Outputs now = snapshot(t->model);
{compare(group["registered"])}
    if (!link_may_change) {{
{compare(group["link"])}
    }}
    t->seen = now;
}}

}}  // namespace

extern "C" void* wse_tile_new(const char* scope, const char* trace) {{
    Tile* t = new Tile(scope);
    t->model.clk = 0;
    t->model.eval();
    t->seen = snapshot(t->model);
    t->tracing = trace_file(trace) != nullptr;
    return t;
}}

extern "C" void wse_tile_final(void* handle) {{
    Tile* t = static_cast<Tile*>(handle);
    if (t && t->tracing) write_records(t);
}}

extern "C" void wse_tile_clock(void* handle, unsigned int inputs_seen{params(group["registered"], True)}) {{
    (void)inputs_seen;  // only orders the 'inputs' call before the edge
    Tile* t = static_cast<Tile*>(handle);
    if (t->high) {{  // two edges with no evaluation between: let the model see clk fall
        t->model.clk = 0;
        t->model.eval();
    }}
    t->model.clk = 1;
    t->model.eval();
    t->high = true;
    t->seen = snapshot(t->model);
{report}
{record}    ++t->cycle;
}}

extern "C" unsigned long long wse_tile_link(void* handle, unsigned int stamp{params(group["ready"], False)}, unsigned int which) {{
    Tile* t = static_cast<Tile*>(handle);
    if (!t) return 0;
    if (stamp != t->stamp || {differs(group["ready"])}) {{
{assign["ready"]}
        evaluate(t, "ready", true);
        t->stamp = stamp;
    }}
    switch (which) {{
{link_cases}
        default: return 0;
    }}
}}

extern "C" unsigned int wse_tile_inputs(void* handle{params(group["inputs"], False)}) {{
    Tile* t = static_cast<Tile*>(handle);
    if (!t) return 0;
    if ({differs(group["inputs"])}) {{
{assign["inputs"]}
        evaluate(t, "inputs", false);
    }}
    return 0;
}}
"""


@dataclass(frozen=True)
class TileLibrary:
    """A compiled tile model: the folder holding ``Vtile.h``, the archive and the wrapper."""
    folder: Path
    build_seconds: float
    cached: bool

    @property
    def archive(self):
        return self.folder / f"{PREFIX}__ALL.a"

    @property
    def wrapper(self):
        return self.folder / "tile_dpi.cpp"

    def verilator_args(self):
        """Arguments that add the model and its DPI wrapper to a top-level build."""
        return [str(self.wrapper), str(self.archive), "-CFLAGS", f"-I{self.folder}"]


def tile_library(tile_verilog, module="tile"):
    """Verilate and compile ``tile_verilog`` (top ``module``) once, cached by its hash."""
    root = sim.setup_verilator()
    key = hashlib.sha256("\0".join([module, tile_verilog, sim.tool_versions(), sim.OPT_FAST,
                                    str(WRAPPER_VERSION)]).encode()).hexdigest()[:16]
    folder = sim.BUILD_ROOT / "sim" / f"{module}-model-{key}"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = folder / "BUILT"
    with open(folder / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.exists():
            return TileLibrary(folder, float(stamp.read_text() or 0), True)
        start = time.monotonic()
        source = folder / f"{module}.v"
        source.write_text(tile_verilog)
        log = folder / "build.log"
        verilate = [str(root / "bin" / "verilator"), "-cc", "-Mdir", str(folder),
                    "--top-module", module, "--prefix", PREFIX, *sim.VERILATOR_FLAGS,
                    str(source)]
        make = ["make", "-j", str(sim.build_jobs()), "-C", str(folder), "-f",
                f"{PREFIX}.mk", "VM_TRACE=0", "CFG_CXXFLAGS_PCH_I=-include",
                f"OPT_FAST={sim.OPT_FAST}", f"{PREFIX}__ALL.a"]
        with open(log, "w") as out:
            for cmd in (verilate, make):
                out.write("$ " + " ".join(cmd) + "\n")
                out.flush()
                try:
                    subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=True,
                                   cwd=folder)
                except subprocess.CalledProcessError as exc:
                    tail = "\n".join(log.read_text().splitlines()[-40:])
                    raise RuntimeError(f"building the tile model failed (log {log}):\n"
                                       f"{tail}") from exc
        (folder / "tile_dpi.cpp").write_text(wrapper_cpp())
        seconds = time.monotonic() - start
        stamp.write_text(f"{seconds:.3f}")
        return TileLibrary(folder, seconds, False)


def trace_plusargs(path):
    """The simulator arguments that make every tile record its debug port into ``path``."""
    return [f"+{TRACE_PLUSARG}={Path(path).resolve()}"]


def clock_index(time, clock_start, period):
    """The tile's clock-call count (a record's ``cycle``) of the last rising edge at or
    before simulation time ``time``, for a clock started high at ``clock_start`` with
    ``period`` (cocotb's ``Clock``: the first call is at ``clock_start``, number 0; all three
    in one unit). How a bench puts its own moments on the trace's cycle axis."""
    return int((time - clock_start) // period)


_RECORD = [("cycle", "<u8"), ("value", "<u8")]
_TILE_SCOPE = re.compile(r"(?:^|\.)tile_(\d+)_(\d+)$")


def read_trace(path):
    """The records of a trace file written by the wrapper (:func:`trace_plusargs`).

    Returns ``{(x, y): numpy structured array of (cycle, value)}`` in cycle order, ``x, y``
    from the fabric top's instance names ``tile_<x>_<y>`` (any other scope is keyed by its
    name). ``cycle`` counts clock calls from 0; ``value`` is the traced port's value from
    that cycle on.
    """
    import numpy as np
    data = Path(path).read_bytes()
    chunks, pos = {}, 0
    size = np.dtype(_RECORD).itemsize
    while pos < len(data):
        end = data.index(b"\n", pos)
        tag, scope, count = data[pos:end].decode().split(" ")
        if tag != "tile":
            raise ValueError(f"{path}: not a tile trace (at byte {pos}: {tag!r})")
        count = int(count)
        records = np.frombuffer(data, dtype=_RECORD, count=count, offset=end + 1)
        match = _TILE_SCOPE.search(scope)
        key = (int(match.group(1)), int(match.group(2))) if match else scope
        chunks.setdefault(key, []).append(records)
        pos = end + 1 + count * size
    return {key: np.concatenate(parts) for key, parts in chunks.items()}
