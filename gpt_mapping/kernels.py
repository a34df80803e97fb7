"""Element-wise kernels (golden/nonlinear.py) compiled into PE code tasks.

:func:`compile_kernel` lays a :class:`golden.nonlinear.Kernel` out in one PE: its code from
SRAM byte 0, then the FP16 input ``x``, the FP16 output ``y`` and the FP32 temporaries, each
``n`` elements, each a MEM DSR the host configures; two SCALAR DSRs (``K_AB`` for a constant
``a`` or ``b``, ``K_S`` for FMAC's scalar) whose value word the code writes before the launch
that reads it. Each step becomes one ``t.<op>`` followed by ``twait`` (every step reads the
previous one's result, and a constant DSR may be rewritten only when no launch uses it); the
code ends with ``tend``, so it runs as a code task started by a wavelet or by the host.

The RTL runs exactly the steps golden/nonlinear.py executes, so its output is bit-exact with
:func:`golden.nonlinear.run` (tests/test_nonlinear_rtl.py; docs/nonlinear.md).
"""

from dataclasses import dataclass

from golden.nonlinear import Const, Kernel, kernel as named_kernel
from rtl.pe.asm import assemble
from rtl.pe.isa import LaunchModifier
from rtl.pe.regs import LEN_BITS, DType, Kind, PEParams, dsr_addr, encode_dsr

__all__ = ["KernelProgram", "compile_kernel", "MAX_ELEMENTS"]

#: Elements per launch: one tensor dimension.
MAX_ELEMENTS = (1 << LEN_BITS) - 1
_ALIGN = 64          # buffer bases in FP16 elements (FP32 buffers need even ones)


@dataclass
class KernelProgram:
    """A kernel laid out in one PE for ``n`` elements."""
    kernel: Kernel
    n: int
    program: object              #: the assembled rtl.pe.asm.Program (code at byte 0)
    source: str                  #: its assembly text
    bases: dict                  #: buffer -> base, in FP16 elements
    dsrs: dict                   #: buffer (and "K_AB", "K_S") -> DSR id
    config: list                 #: (PE cfg address, word): the DSRs the host writes

    @property
    def x_byte(self):
        return 2 * self.bases["x"]

    @property
    def y_byte(self):
        return 2 * self.bases["y"]

    def input_words(self, x16):
        """(SRAM word address, word) writes that put the FP16 bits ``x16`` into ``x``."""
        x16 = [int(v) for v in x16]
        if len(x16) != self.n:
            raise ValueError(f"{self.kernel.name}: {len(x16)} inputs for a program of "
                             f"{self.n} elements")
        if len(x16) % 2:
            x16.append(0)
        word0 = self.bases["x"] // 2
        return [(word0 + i, x16[2 * i] | (x16[2 * i + 1] << 16))
                for i in range(len(x16) // 2)]

    def output_range(self):
        """(byte address, words) of ``y`` for the read-back."""
        return self.y_byte, (self.n + 1) // 2

    @staticmethod
    def unpack(words, n):
        """FP16 bits of the first ``n`` elements from read-back words."""
        out = []
        for w in words:
            out += [w & 0xFFFF, w >> 16]
        return out[:n]


def _round_up(v, m):
    return (v + m - 1) // m * m


def compile_kernel(kern, n, *, pe=None):
    """Compile ``kern`` (a :class:`Kernel` or its name) for vectors of ``n`` elements on the
    PE ``pe`` (default: the fabric's PE). Errors name the kernel and what does not fit."""
    if isinstance(kern, str):
        kern = named_kernel(kern)
    pe = pe or PEParams()
    if not 1 <= n <= MAX_ELEMENTS:
        raise ValueError(f"{kern.name}: n = {n}: a vector is 1..{MAX_ELEMENTS} elements "
                         f"(one tensor dimension)")
    names = list(kern.buffers)
    dsrs = {b: i for i, b in enumerate(names)}
    dsrs["K_AB"], dsrs["K_S"] = len(names), len(names) + 1
    if len(names) + 2 > pe.num_dsrs:
        raise ValueError(f"{kern.name}: {len(names)} buffers and 2 constants need "
                         f"{len(names) + 2} DSRs; the PE has {pe.num_dsrs}")
    rm_s = LaunchModifier.const({"s_dsr": 1, "s": dsrs["K_S"]}).as_bits()

    def operand(o, loaded):
        if o is None:
            return "-", []
        if isinstance(o, Const):
            if loaded.get("K_AB") == o.bits:
                return str(dsrs["K_AB"]), []
            loaded["K_AB"] = o.bits
            return str(dsrs["K_AB"]), [f"li r5, {o.bits:#x}", f"dsrw r5, {dsrs['K_AB']}, 1"]
        return str(dsrs[o]), []

    lines = [f"# {kern.name}: {kern.doc}" if kern.doc else f"# {kern.name}",
             f"li r7, {rm_s:#x}          # rm: FMAC scalar from DSR {dsrs['K_S']}"]
    loaded = {}
    for i, st in enumerate(kern.steps):
        a, pre_a = operand(st.a, loaded)
        b, pre_b = operand(st.b, loaded)
        lines += pre_a + pre_b
        rm = "r0"
        if st.s is not None:
            if loaded.get("K_S") != st.s.bits:
                loaded["K_S"] = st.s.bits
                lines += [f"li r6, {st.s.bits:#x}", f"dsrw r6, {dsrs['K_S']}, 1"]
            rm = "r7"
        lines += [f"t.{st.op.name.lower()} {dsrs[st.dst]}, {a}, {b}, r0, {rm}"
                  f"    # {i}: {st.text()}", "twait"]
    lines.append("tend")
    source = "\n".join(lines) + "\n"
    program = assemble(source)

    # Data after the code: x, y, then the temporaries.
    bases, at = {}, _round_up(2 * len(program.words), _ALIGN)
    for b in names:
        bases[b] = at
        size = n * (2 if kern.buffers[b] == DType.FP32 else 1)
        at = _round_up(at + size, _ALIGN)
    halves = 2 * pe.sram_words
    if at > halves:
        raise ValueError(f"{kern.name}: n = {n} needs {at} FP16 elements of SRAM (code "
                         f"{2 * len(program.words)}, {len(names)} buffers); the PE has "
                         f"{halves}")
    config = []
    for b in names:
        words = encode_dsr(Kind.MEM, dtype=kern.buffers[b], base=bases[b], dims=((n, 1),))
        config += [(dsr_addr(dsrs[b], w, pe=pe), v) for w, v in enumerate(words)]
    for k in ("K_AB", "K_S"):
        words = encode_dsr(Kind.SCALAR, dtype=DType.FP32, value=0)
        config += [(dsr_addr(dsrs[k], w, pe=pe), v) for w, v in enumerate(words)]
    return KernelProgram(kern, n, program, source, bases, dsrs, config)

