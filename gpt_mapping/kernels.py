"""Element-wise kernels (golden/nonlinear.py) compiled into PE code tasks.

:func:`compile_kernel` lays a :class:`golden.nonlinear.Kernel` out in one PE: its code from
SRAM byte 0, then the FP16 input ``x``, the FP16 output ``y`` and the FP32 temporaries, each
``n`` elements, each a MEM DSR the host configures, and a SCALAR DSR per distinct constant.
Each step becomes one ``t.<op>`` launch and nothing else (``li`` of the modifier register
before an FMAC whose scalar DSR differs from the last one's): the tensor engine orders
dependent operations itself (docs/pe.md section 8: a launch that reads or writes what a live
older one writes waits for it, element group by element group), so the launches run ahead
of the datapath and the micro-threads chain back to back. One ``twait`` at the end (the last
step has written ``y``), then ``tend``: the code runs as a code task started by a wavelet or
by the host.

The RTL runs exactly the steps golden/nonlinear.py executes, so its output is bit-exact with
:func:`golden.nonlinear.run` (tests/test_nonlinear_rtl.py; docs/nonlinear.md).
"""

from dataclasses import dataclass

import numpy as np

from golden.nonlinear import Const, Kernel, kernel as named_kernel
from rtl.pe.asm import assemble
from rtl.pe.isa import LaunchModifier
from rtl.pe.regs import LEN_BITS, DType, ErrorCode, Kind, PEParams, dsr_addr, encode_dsr

__all__ = ["KernelProgram", "compile_kernel", "EmbeddedKernel", "embed_kernel", "allocate", "predict_cycles", "KERNEL_OVERHEAD",
           "MAX_ELEMENTS", "KernelRun", "run_kernels_on_pe",
           "run_kernel_on_pe"]

#: Elements per launch: one tensor dimension.
MAX_ELEMENTS = (1 << LEN_BITS) - 1
_ALIGN = 64          # the first buffer's base, in FP16 elements


@dataclass
class KernelProgram:
    """A kernel laid out in one PE for ``n`` elements."""
    kernel: Kernel
    n: int
    program: object              #: the assembled rtl.pe.asm.Program (code at byte 0)
    source: str                  #: its assembly text
    bases: dict                  #: buffer -> base, in FP16 elements
    dsrs: dict                   #: buffer (and "const <value>") -> DSR id
    config: list                 #: (PE cfg address, word): the DSRs the host writes
    steps: list                  #: the kernel's steps on the PE's buffers (see allocate)
    types: dict                  #: the PE's buffers -> DType (see allocate)

    def input_words(self, x16):
        """(SRAM word address, word) writes that put the FP16 bits ``x16`` into ``x``."""
        x16 = np.asarray(x16, dtype=np.uint16).ravel()
        if len(x16) != self.n:
            raise ValueError(f"{self.kernel.name}: {len(x16)} inputs for a program of "
                             f"{self.n} elements")
        words = np.zeros(2 * ((self.n + 1) // 2), dtype=np.uint16)
        words[:self.n] = x16
        word0 = self.bases["x"] // 2
        return [(word0 + i, int(w)) for i, w in enumerate(words.view("<u4"))]

    def output_range(self):
        """(byte address, words) of ``y`` for the read-back."""
        return 2 * self.bases["y"], (self.n + 1) // 2

    def unpack(self, words):
        """FP16 bits of ``y`` from its read-back words."""
        return np.asarray(words, dtype="<u4").view(np.uint16)[:self.n]


def _round_up(v, m):
    return (v + m - 1) // m * m


def _vector_sources(st):
    return [o for o in (st.a, st.b) if o is not None and not isinstance(o, Const)]


def allocate(kern, banks=8):
    """Rename ``kern``'s buffers so that no step meets an SRAM bank conflict in its steady
    state: every step writes a fresh value (no step writes a buffer it reads), and the value
    goes to an FP32 buffer whose bank pair (``base`` in words mod ``banks``, in pairs) differs
    from the pairs of the step's sources and of the values it will later be read beside.

    Why (docs/pe.md section 4.1): an FP32 operation reads two words of each source and writes
    two words of its destination per issue, the write 4 issues after the read, so a source
    and a destination on one bank pair collide in every cycle, as in-place steps always do;
    two sources on one pair collide too. With ``banks / 2`` pairs and at most three vector
    operands per step, distinct pairs exist. ``x`` and ``y`` (FP16, one word per issue) keep
    their buffers. The renaming changes no value: each step computes what it computed.

    Returns ``(steps, buffers, pairs)``: the renamed steps, ``{buffer: DType}`` and
    ``{buffer: bank pair}``.
    """
    npairs = banks // 2
    steps = kern.steps
    if any(st.dst == "y" for st in steps[:-1]) or steps[-1].dst != "y":
        raise ValueError(f"{kern.name}: only the last step may write y")
    # Values: one per step (its result); the operands name the values they read.
    values = [f"v{i}" for i in range(len(steps) - 1)] + ["y"]
    current = {"x": "x"}
    uses = {}                          # value -> step indices reading it
    reads = []
    for i, st in enumerate(steps):
        srcs = []
        for o in _vector_sources(st):
            if o not in current:
                raise ValueError(f"{kern.name}: step {i} reads {o!r} before it is written")
            srcs.append(current[o])
            uses.setdefault(current[o], []).append(i)
        reads.append(srcs)
        current[st.dst] = values[i]
    last_use = {v: max(idx) for v, idx in uses.items()}
    pairs = {"x": 0, "y": 1}
    holder = {}                        # physical FP32 buffer -> the value it holds
    phys = {"x": "x", "y": "y"}        # value -> physical buffer
    buffers = {"x": DType.FP16, "y": DType.FP16}
    new_steps = []
    for i, st in enumerate(steps):
        src_vals, value = reads[i], values[i]
        if value != "y":
            avoid = {pairs[phys[v]] for v in src_vals}
            # ...and the pairs of the values this one is read beside later.
            for j in uses.get(value, []):
                avoid |= {pairs[phys[v]] for v in reads[j] if v != value and v in phys}
            free = [b for b, held in holder.items() if last_use.get(held, -1) < i]
            choice = next((b for b in free if pairs[b] not in avoid), None)
            if choice is None:
                choice = f"t{len(holder)}"
                wanted = [p for p in range(npairs) if p not in avoid] or [0]
                pairs[choice] = wanted[len(holder) % len(wanted)]
                buffers[choice] = DType.FP32
            holder[choice] = value
            phys[value] = choice
        ops = iter(phys[v] for v in src_vals)
        a = st.a if isinstance(st.a, Const) else next(ops)
        b = st.b if st.b is None or isinstance(st.b, Const) else next(ops)
        new_steps.append(type(st)(st.op, phys[value], a, b, st.s))
    return new_steps, buffers, pairs


@dataclass
class EmbeddedKernel:
    """A kernel's launches placed inside a larger PE program (:func:`embed_kernel`)."""
    lines: list                  #: assembly lines (the launches, no ``twait``/``tend``)
    bases: dict                  #: the kernel's own buffers -> base, in FP16 elements
    dsrs: dict                   #: buffer (and "const <value>") -> DSR id
    config: list                 #: (PE cfg address, word): the DSRs of its own buffers
    steps: list                  #: the kernel's steps on the PE's buffers (see allocate)
    types: dict                  #: the PE's buffers -> DType
    end: int                     #: first FP16 element after its buffers
    next_dsr: int                #: first DSR id it left free


def embed_kernel(kern, n, *, at, first_dsr, x_dsr=None, y_dsr=None, pe=None, rm_reg="r7",
                 grid=None):
    """The launches of ``kern`` on ``n`` elements, for a PE program that holds other code:
    its buffers from FP16 element ``at`` on (each base on its bank pair, as
    :func:`allocate` chose), its DSRs from id ``first_dsr`` on, the FMAC modifiers loaded
    into ``rm_reg``. ``x_dsr`` / ``y_dsr``: DSRs the caller already configured for the input
    and the output (n FP16 elements each); then the kernel allocates no buffer for them.
    ``grid``: the DSR dimensions ``[(len, stride), ...]`` of every buffer (default
    ``[(n, 1)]``; a contiguous 2-D grid lets ``n`` exceed one dimension's limit); the
    product of the lengths must be ``n`` and each buffer holds ``n`` contiguous elements."""
    if isinstance(kern, str):
        kern = named_kernel(kern)
    pe = pe or PEParams()
    grid = [(n, 1)] if grid is None else [tuple(d) for d in grid]
    if int(np.prod([d[0] for d in grid])) != n or any(
            not 1 <= d[0] <= MAX_ELEMENTS for d in grid):
        raise ValueError(f"{kern.name}: n = {n} elements on the grid {grid}: every "
                         f"dimension is 1..{MAX_ELEMENTS} elements and their product is n")
    steps, buffer_types, pairs = allocate(kern, pe.banks)
    given = {b: d for b, d in (("x", x_dsr), ("y", y_dsr)) if d is not None}
    own = [b for b in buffer_types if b not in given]
    consts = kern.constants()
    dsrs = dict(given)
    dsrs.update({b: first_dsr + i for i, b in enumerate(own)})
    const_dsr = {c.bits: first_dsr + len(own) + i for i, c in enumerate(consts)}
    next_dsr = first_dsr + len(own) + len(consts)
    if next_dsr > pe.num_dsrs:
        raise ValueError(f"{kern.name}: {len(own)} buffers and {len(consts)} constants "
                         f"need DSRs {first_dsr}..{next_dsr - 1}; the PE has {pe.num_dsrs}")

    def operand(o):
        if o is None:
            return "-"
        return str(const_dsr[o.bits] if isinstance(o, Const) else dsrs[o])

    lines = []
    rm_loaded = None
    for i, st in enumerate(steps):
        rm = "r0"
        if st.s is not None:
            value = LaunchModifier.const({"s_dsr": 1, "s": const_dsr[st.s.bits]}).as_bits()
            if value != rm_loaded:
                lines.append(f"li {rm_reg}, {value:#x}          # rm: FMAC scalar from DSR "
                             f"{const_dsr[st.s.bits]} ({st.s})")
                rm_loaded = value
            rm = rm_reg
        lines.append(f"t.{st.op.name.lower()} {dsrs[st.dst]}, {operand(st.a)}, "
                     f"{operand(st.b)}, r0, {rm}    # {kern.name} {i}: {st.text()}")
    # Buffers: each base on its bank pair.
    bases = {}
    span = 2 * pe.banks                # FP16 elements per round of the banks
    for b in own:
        at = _round_up(at, span) + 4 * pairs[b]
        bases[b] = at
        at += n * (2 if buffer_types[b] == DType.FP32 else 1)
    config = []
    for b in own:
        words = encode_dsr(Kind.MEM, dtype=buffer_types[b], base=bases[b], dims=grid)
        config += [(dsr_addr(dsrs[b], w, pe=pe), v) for w, v in enumerate(words)]
    for c in consts:
        words = encode_dsr(Kind.SCALAR, dtype=DType.FP32, value=c.bits)
        config += [(dsr_addr(const_dsr[c.bits], w, pe=pe), v) for w, v in enumerate(words)]
    dsrs.update({f"const {c}": const_dsr[c.bits] for c in consts})
    return EmbeddedKernel(lines, bases, dsrs, config, steps, buffer_types, at, next_dsr)


def compile_kernel(kern, n, *, pe=None):
    """Compile ``kern`` (a :class:`Kernel` or its name) for vectors of ``n`` elements on the
    PE ``pe`` (default: the fabric's PE). Errors name the kernel and what does not fit."""
    if isinstance(kern, str):
        kern = named_kernel(kern)
    pe = pe or PEParams()
    # The code's length does not depend on where the data goes: lay it out once to size it.
    probe = embed_kernel(kern, n, at=0, first_dsr=0, pe=pe)
    head = [f"# {kern.name}: {kern.doc}" if kern.doc else f"# {kern.name}"]
    tail = ["twait                   # the last step has written y", "tend"]
    code_words = len(assemble("\n".join(head + probe.lines + tail) + "\n").words)
    emb = embed_kernel(kern, n, at=_round_up(2 * code_words, _ALIGN), first_dsr=0, pe=pe)
    source = "\n".join(head + emb.lines + tail) + "\n"
    program = assemble(source)
    halves = 2 * pe.sram_words
    if emb.end > halves:
        raise ValueError(f"{kern.name}: n = {n} needs {emb.end} FP16 elements of SRAM (code "
                         f"{2 * len(program.words)}, {len(emb.bases)} buffers); the PE has "
                         f"{halves}")
    return KernelProgram(kern, n, program, source, emb.bases, emb.dsrs, emb.config,
                         emb.steps, emb.types)


# --- the cycle model ---------------------------------------------------------------------------

#: Cycles of the code task outside the steps' issues: the core's first fetch and launch,
#: the engine's L0/L1 before the first issue, the last write-back, ``twait`` and ``tend``.
#: The one constant the model takes from a measurement (exp at n = 512: 5,244 cycles
#: measured, 5,233 from the issue model; docs/nonlinear.md section 6); every other term is
#: the datapath's structure, and the model is checked on the other kernels and sizes.
KERNEL_OVERHEAD = 11
#: Cycles from an issue to its write-back (rtl.pe.ops.LATENCY).
_WB_LATENCY = 4


def predict_cycles(kp, banks=8, overhead=KERNEL_OVERHEAD):
    """Cycles the code task of :class:`KernelProgram` ``kp`` runs (the PE's ``CORE_ACTIVE``
    count, from its start to its ``tend``), from a cycle-by-cycle model
    of the tensor engine's issue: the steps issue back to back, one element group per cycle
    (2 FP32 lanes when an SRAM operand or the destination is FP32, else 4 FP16 lanes); an
    issue stalls a cycle when a source's bank is being written by the write-back (4 cycles
    after its issue), and once when its two sources hit one bank on different words
    (docs/pe.md sections 4.1 and 7)."""
    types = kp.types

    def words(buf, first, lanes):
        if buf is None or isinstance(buf, Const):
            return ()
        base = kp.bases[buf]
        if types[buf] == DType.FP32:
            lo, hi = base + 2 * first, base + 2 * (first + lanes) - 1
        else:
            lo, hi = base + first, base + first + lanes - 1
        return tuple(range(lo // 2, hi // 2 + 1))

    writes = {}                      # cycle -> banks the write-back uses
    cycle = 0
    for st in kp.steps:
        bufs = [o for o in (st.dst, st.a, st.b) if isinstance(o, str)]
        lanes = 2 if any(types[b] == DType.FP32 for b in bufs) else 4
        for first in range(0, kp.n, lanes):
            width = min(lanes, kp.n - first)
            ra, rb = words(st.a, first, width), words(st.b, first, width)
            reads = {w % banks for w in ra + rb}
            while reads & writes.get(cycle, set()):
                cycle += 1
            if {w % banks for w in ra} & {w % banks for w in rb} and set(ra) != set(rb):
                cycle += 1
            writes[cycle + _WB_LATENCY] = {w % banks for w in words(st.dst, first, width)}
            cycle += 1
    return cycle + overhead


# --- running on the RTL ------------------------------------------------------------------------

@dataclass
class KernelRun:
    """The FP16 outputs and, per chunk, the cycles the code task ran (``CORE_ACTIVE``: from
    its start to its ``tend``) and the PE's counters (``{Counter name: value}``)."""
    y16: np.ndarray
    cycles: list
    counters: list
    n: int
    steps: int


def run_kernels_on_pe(inputs, *, n=512, timeout=None):
    """``{name: KernelRun}`` for ``inputs`` = ``{kernel name: FP16 bits}``, computed by the
    PE's code task on the RTL (one Verilator run of the default PE for every chunk of every
    input), ``n`` elements per task run (the last chunk of each input shorter)."""
    from runtime.pe_core_run import program_job, run_on_pe   # the Verilator tool chain

    plan, jobs = [], []
    for name, x16 in inputs.items():
        x16 = np.asarray(x16, dtype=np.uint16).ravel()
        for i in range(0, len(x16), n):
            chunk = x16[i:i + n]
            kp = compile_kernel(name, len(chunk))
            budget = 40 * len(kp.kernel.steps) * (len(chunk) + 16) + 10_000
            plan.append((name, kp, chunk))
            # (the host's writes of the chunk precede the start: not the task's cycles)
            jobs.append(program_job(kp.program, writes=kp.config + kp.input_words(chunk),
                                    mem=[kp.output_range()], max_cycles=budget))
    runs = run_on_pe(jobs, timeout=timeout)
    out = {name: ([], [], []) for name in inputs}
    for (name, kp, chunk), run in zip(plan, runs):
        code = run.error[0]
        if run.stopped != "idle" or (isinstance(code, ErrorCode) and code != ErrorCode.NONE):
            raise RuntimeError(f"kernel {name}: the PE stopped with {run.stopped!r} at PC "
                               f"{run.pc:#x}, error {run.error}")
        start, _ = kp.output_range()
        out[name][0].extend(kp.unpack(run.mem[start]).tolist())
        out[name][1].append(run.counters["CORE_ACTIVE"])
        out[name][2].append(run.counters)
    return {name: KernelRun(np.array(ys, dtype=np.uint16), cycles, counters, n,
                            len(named_kernel(name).steps))
            for name, (ys, cycles, counters) in out.items()}


def run_kernel_on_pe(name, x16, *, n=512, timeout=None):
    """:func:`run_kernels_on_pe` for one kernel."""
    return run_kernels_on_pe({name: x16}, n=n, timeout=timeout)[name]
