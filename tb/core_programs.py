"""Seeded constrained-random programs of the control core, for lockstep runs (ISS vs RTL).

:func:`generate_program` writes an assembly program that mixes every scalar instruction
(random registers and immediates, edge values included), loads and stores inside a data
region away from the code, forward branches over short blocks, bounded backward loops on a
counter register, ``jal``/``jalr`` calls of subroutines that return, ``li`` of random
constants, and a configurable share of PE instructions whose outcome is the same on every
correct implementation:

* tensor groups: the DSRs of one or two launches written with ``dsrw``, the launches
  (``t.<op>`` on MEM / ACC / SCALAR / wavelet operands, random modifiers in ``rm``), a few
  ALU instructions, ``twait``, then ``lw`` of the outputs and ``dsrr`` of the DSRs. Nothing
  touches a launched operation's DSRs or memory before the ``twait`` (the ISS completes
  tensor operations at launch; the RTL does not);
* ``dsrw`` / ``dsrr`` of DSRs outside tensor groups (no live operation uses them);
* ``csrr`` of ``ID`` and ``ERROR`` only (the other registers depend on timing);
* ``send`` / ``sendc``; ``recv`` of wavelets the program comes with (:attr:`inputs`);
* tasks: the program is a chain of segments; each but the last ends with ``tact`` of the
  next one's task (sometimes blocked and unblocked around it) and ``tend``, so exactly one
  activation is ever pending (the task order cannot matter); ``tblk``/``tunblk`` pairs.

Every program ends in ``halt`` and runs at most :attr:`GeneratedProgram.max_instructions`
instructions (a bound computed while generating). Register conventions: r1..r12 random work
(r12 also the scratch of DSR writes and call addresses), r13 the link, r14 the loop counter,
r15 the data base; tasks start with r1..r3 set from their wavelet.
"""

import random
from dataclasses import dataclass, field

import numpy as np

from rtl.pe.asm import assemble
from rtl.pe.isa import INSNS, Format
from rtl.pe.ops import OPS
from rtl.pe.regs import DSR_NONE, DSR_WAVELET, DSR_WORDS, DType, Kind, TensorOp, encode_dsr
from rtl.wavelet import NUM_COLORS
from tb.pe_cases import random_bits16

__all__ = ["GeneratedProgram", "generate_program", "generate_programs", "CODE_LIMIT",
           "DATA_BASE", "DATA_WORDS", "TENSOR_BASE", "TENSOR_SLOTS", "ACC_SLOTS"]

#: Code lives below this byte address.
CODE_LIMIT = 0x5000
#: Scalar data region (random initial words); r15 points to its middle.
DATA_BASE = 0x5000
DATA_WORDS = 256
#: Tensor region: TENSOR_SLOTS slots of 8 words (16 FP16 elements) each.
TENSOR_BASE = 0x6000
TENSOR_SLOTS = 16
SLOT_WORDS = 8
#: Accumulator-cache slots of 8 FP32 words.
ACC_SLOTS = 8

WORK = tuple(range(1, 13))       # registers random code may write
SCRATCH, LINK, COUNTER, BASE = 12, 13, 14, 15
DATA_POINTER = DATA_BASE + 2 * DATA_WORDS   # r15: offsets -0x200 .. 0x1fc reach the region

R_ALU = [i.mnemonic for i in INSNS if i.fmt == Format.R and i.alu is not None]
I_ALU = [i.mnemonic for i in INSNS if i.fmt == Format.I and i.alu is not None]
BRANCHES = [i.mnemonic for i in INSNS if i.branch is not None]
UNARY = tuple(op for op, info in OPS.items() if not info.uses_b)


@dataclass
class GeneratedProgram:
    """A generated program: ``source`` (assembly, code at 0), ``inputs`` (wavelets to queue
    per color before the start, for its ``recv`` s) and ``max_instructions`` (an upper
    bound of the instructions it retires)."""
    seed: int
    source: str
    inputs: dict = field(default_factory=dict)
    max_instructions: int = 0
    _program: object = field(default=None, repr=False, compare=False)

    def assemble(self):
        """The :class:`rtl.pe.asm.Program` of :attr:`source` (assembled once)."""
        if self._program is None:
            self._program = assemble(self.source)
        return self._program


class _Writer:
    """Collects lines and the instruction count of straight-line code."""

    def __init__(self, gen):
        self.gen = gen
        self.lines = []
        self.cost = 0

    def emit(self, text, cost=1):
        self.lines.append(f"        {text}")
        self.cost += cost

    def label(self, name):
        self.lines.append(f"{name}:")

    def extend(self, other):
        self.lines += other.lines
        self.cost += other.cost


class _Generator:
    def __init__(self, seed, length, pe_share, max_segments, num_dsrs, calls, loops):
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.seed, self.length, self.pe_share = seed, length, pe_share
        self.max_segments, self.num_dsrs = max_segments, num_dsrs
        self.use_calls, self.use_loops = calls, loops
        self.labels = 0
        self.inputs = {}
        self.subs = []          # (label, cost)

    def new_label(self, stem):
        self.labels += 1
        return f"{stem}{self.labels}"

    # --- values ------------------------------------------------------------------------------
    def imm18(self):
        rng = self.rng
        choice = rng.random()
        if choice < 0.4:
            return rng.randint(-16, 16)
        if choice < 0.6:
            return rng.choice([0, 1, -1, 31, 32, 33, 63, 0x7FF, -0x800, 131071, -131072,
                               0xFFFF, 0x8000, -0x8000])
        return rng.randint(-131072, 131071)

    def const32(self):
        rng = self.rng
        if rng.random() < 0.3:
            return rng.choice([0, 1, -1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0x12345FFF,
                               0xFFFFF800, 0x800, 0xFFF, 0x1000, 131071, 131072, -131072,
                               -131073, 0x0000FFFF, 0xFFFF0000])
        return rng.getrandbits(32)

    def reg(self, writable=False):
        return self.rng.choice(WORK) if writable else self.rng.randrange(16)

    def data_offset(self):
        return 4 * self.rng.randrange(-DATA_WORDS // 2, DATA_WORDS // 2)

    # --- scalar instructions -------------------------------------------------------------------
    def scalar(self, out, memory=True):
        """One random scalar instruction (or a short address computation + access)."""
        rng = self.rng
        kind = rng.random()
        rd = self.reg(writable=True)
        if kind < 0.30:
            out.emit(f"{rng.choice(R_ALU)} r{rd}, r{self.reg()}, r{self.reg()}")
        elif kind < 0.58:
            out.emit(f"{rng.choice(I_ALU)} r{rd}, r{self.reg()}, {self.imm18()}")
        elif kind < 0.64:
            out.emit(f"lui r{rd}, {rng.choice([0, 1, 0xFFFFF, 0x80000, rng.getrandbits(20)]):#x}")
        elif kind < 0.72:
            value = self.const32()
            out.emit(f"li r{rd}, {value:#x}" if value >= 0 else f"li r{rd}, {value}",
                     cost=2)
        elif kind < 0.86 and memory:
            self.load_store(out, rd)
        else:
            out.emit(f"add r{rd}, r{self.reg()}, r{self.reg()}")

    def load_store(self, out, rd):
        rng = self.rng
        total = self.data_offset()
        if rng.random() < 0.3:    # computed address: addi then an offset from it
            step = self.data_offset()
            out.emit(f"addi r{SCRATCH}, r{BASE}, {step}")
            base, offset = SCRATCH, total - step
            if rd == SCRATCH:
                rd = 1
        else:
            base, offset = BASE, total
        if rng.random() < 0.55:
            out.emit(f"lw r{rd}, {offset}(r{base})")
        else:
            out.emit(f"sw r{self.reg()}, {offset}(r{base})")

    def straight(self, out, count, memory=True, pe=False):
        for _ in range(count):
            if pe and self.rng.random() < self.pe_share:
                self.pe_item(out, top_level=False)
            else:
                self.scalar(out, memory)

    # --- control flow ----------------------------------------------------------------------------
    def forward_branch(self, out, pe=False):
        rng = self.rng
        skip = self.new_label("skip")
        rs1, rs2 = self.reg(), self.reg() if rng.random() < 0.8 else None
        rs2 = rs1 if rs2 is None else rs2
        out.emit(f"{rng.choice(BRANCHES)} r{rs1}, r{rs2}, {skip}")
        self.straight(out, rng.randint(0, 4), pe=pe)
        out.label(skip)

    def loop(self, out):
        rng = self.rng
        head = self.new_label("loop")
        count = rng.randint(1, 4)
        out.emit(f"li r{COUNTER}, {count}")
        body = _Writer(self)
        for _ in range(rng.randint(1, 5)):
            choice = rng.random()
            if choice < 0.15:
                self.forward_branch(body)
            elif choice < 0.30 and self.use_calls and self.subs:
                self.call(body)
            else:
                self.scalar(body)
        body.emit(f"addi r{COUNTER}, r{COUNTER}, -1")
        body.emit(f"bne r{COUNTER}, r0, {head}" if rng.random() < 0.7
                  else f"blt r0, r{COUNTER}, {head}")
        out.label(head)
        out.lines += body.lines
        out.cost += count * body.cost

    def call(self, out):
        label, cost = self.rng.choice(self.subs)
        if self.rng.random() < 0.5:
            out.emit(f"jal r{LINK}, {label}")
        else:
            out.emit(f"li r{SCRATCH}, {label}")
            out.emit(f"jalr r{LINK}, 0(r{SCRATCH})")
        out.cost += cost

    def subroutine(self):
        label = self.new_label("sub")
        body = _Writer(self)
        body.label(label)
        for _ in range(self.rng.randint(1, 6)):
            if self.rng.random() < 0.2:
                self.forward_branch(body)
            else:
                self.scalar(body)
        body.emit(f"jalr r0, 0(r{LINK})")
        self.subs.append((label, body.cost))
        return body

    # --- PE instructions -----------------------------------------------------------------------
    def pe_item(self, out, top_level):
        rng = self.rng
        choice = rng.random()
        if choice < 0.30 and top_level:
            self.tensor_group(out)
        elif choice < 0.42:
            out.emit(f"dsrw r{self.reg()}, {rng.randrange(self.num_dsrs)}, "
                     f"{rng.randrange(DSR_WORDS)}")
        elif choice < 0.54:
            out.emit(f"dsrr r{self.reg(True)}, {rng.randrange(self.num_dsrs)}, "
                     f"{rng.randrange(DSR_WORDS)}")
        elif choice < 0.64:
            out.emit(f"csrr r{self.reg(True)}, {rng.choice(['ID', 'ERROR'])}")
        elif choice < 0.76:
            out.emit(f"{rng.choice(['send', 'sendc'])} {rng.randrange(NUM_COLORS)}, "
                     f"r{self.reg()}, r{self.reg()}")
        elif choice < 0.88 and top_level:
            color = rng.randrange(NUM_COLORS)
            self.inputs.setdefault(color, []).append(
                (rng.getrandbits(16), rng.getrandbits(10), rng.getrandbits(1)))
            out.emit(f"recv r{self.reg(True)}, {color}")
        else:
            task = rng.randrange(8, 32)     # never a task of the chain
            out.emit(f"tblk {task}")
            self.straight(out, rng.randint(0, 2), memory=False)
            out.emit(f"tunblk {task}")

    def _fp16(self):
        return int(random_bits16(self.np_rng, 1)[0])

    def tensor_group(self, out):
        """Configure DSRs, launch one or two operations, twait, read the results."""
        rng = self.rng
        ids = rng.sample(range(self.num_dsrs), 8)
        mem_slots = rng.sample(range(TENSOR_SLOTS), 4)
        acc_slots = rng.sample(range(ACC_SLOTS), 3)
        launches, written = [], []
        for n_launch in range(rng.choice([1, 1, 2])):
            op = rng.choice(list(TensorOp))
            length = rng.randint(1, 8)
            dst_kind = (rng.choice(["MEM32", "ACC"]) if op == TensorOp.FMAC
                        else rng.choice(["MEM16", "MEM32", "ACC"]))
            dst = self.operand(out, ids.pop(), dst_kind, length,
                               mem_slots.pop() if dst_kind != "ACC" else acc_slots.pop())
            sources = []
            for _role in ("a", "b"):
                kind = rng.choice(["MEM16", "MEM32", "ACC", "MEM16", "WAVELET", "SCALAR"])
                if kind == "WAVELET":
                    sources.append((DSR_WAVELET, kind))
                    continue
                if written and rng.random() < 0.3:          # read the previous result
                    sources.append(written[-1])
                    continue
                slot = (rng.choice(mem_slots) if kind.startswith("MEM")
                        else rng.choice(acc_slots))
                ident = ids.pop()
                sources.append((self.operand(out, ident, kind, length, slot), kind))
            (a, a_kind), (b, b_kind) = sources
            if op in UNARY:
                b = DSR_NONE
            modifier, s_dsr = 0, None
            if rng.random() < 0.4:
                modifier |= rng.randrange(4)                           # prio
                modifier |= rng.randrange(8) << 5                      # adv mask
                # clear_a: an ACC source a, no ACC destination, no other ACC operand (a
                # cleared source must not overlap another operand, docs/pe.md section 8)
                if (a_kind == "ACC" and dst_kind != "ACC" and (b_kind != "ACC" or op in UNARY)
                        and rng.random() < 0.5):
                    modifier |= 1 << 8
                if op == TensorOp.FMAC and rng.random() < 0.5:
                    s_dsr = ids.pop()
                    self.operand(out, s_dsr, "SCALAR", 1, None)
                    modifier |= 1 << 9 | s_dsr << 10
            scalar = self._fp16() | (rng.getrandbits(16) << 16 if rng.random() < 0.3 else 0)
            rs = self.reg(True)
            out.emit(f"li r{rs}, {scalar:#x}", cost=2)
            rm = 0
            if modifier:
                rm = rng.choice([r for r in WORK if r != rs])
                out.emit(f"li r{rm}, {modifier:#x}")
            launches.append((op, dst, a, b, rs, rm))
            out.emit(f"t.{op.name.lower()} {dst}, {a}, {b}, r{rs}, r{rm}")
            written.append((dst, dst_kind))
        for _ in range(rng.randint(0, 3)):       # ALU work while the operations run
            out.emit(f"{rng.choice(R_ALU)} r{self.reg(True)}, r{self.reg()}, r{self.reg()}")
        out.emit("twait")
        for dst, dst_kind in written:
            if dst_kind.startswith("MEM"):
                base_word = self.dst_base[dst]
                for word in rng.sample(range(SLOT_WORDS), rng.randint(1, 3)):
                    out.emit(f"lw r{self.reg(True)}, {4 * (base_word + word)}(r0)")
            out.emit(f"dsrr r{self.reg(True)}, {dst}, 7")

    def operand(self, out, ident, kind, length, slot):
        """Write the 8 words of DSR ``ident`` (``dsrw``); returns ``ident``."""
        rng = self.rng
        if kind == "SCALAR":
            fp32 = rng.random() < 0.5
            value = (rng.getrandbits(32) & 0x3FFFFFFF if fp32 else self._fp16())
            words = encode_dsr(Kind.SCALAR, dtype=DType.FP32 if fp32 else DType.FP16,
                               value=value)
        elif kind == "ACC":
            words = encode_dsr(Kind.ACC, dtype=DType.FP32, base=slot * SLOT_WORDS,
                               dims=[(length, 1)])
        else:
            dtype = DType.FP32 if kind == "MEM32" else DType.FP16
            base_half = TENSOR_BASE // 2 + slot * 2 * SLOT_WORDS
            words = encode_dsr(Kind.MEM, dtype=dtype, base=base_half, dims=[(length, 1)])
            self.dst_base[ident] = TENSOR_BASE // 4 + slot * SLOT_WORDS
        for index, word in enumerate(words):
            if word == 0:
                out.emit(f"dsrw r0, {ident}, {index}")
            else:
                out.emit(f"li r{SCRATCH}, {word:#x}", cost=2)
                out.emit(f"dsrw r{SCRATCH}, {ident}, {index}")
        return ident

    # --- the program -----------------------------------------------------------------------------
    def block(self, out, items):
        rng = self.rng
        for _ in range(items):
            choice = rng.random()
            if choice < self.pe_share:
                self.pe_item(out, top_level=True)
            elif choice < self.pe_share + 0.10:
                self.forward_branch(out, pe=True)
            elif choice < self.pe_share + 0.17 and self.use_loops:
                self.loop(out)
            elif choice < self.pe_share + 0.24 and self.use_calls and self.subs:
                self.call(out)
            else:
                self.scalar(out)

    def program(self):
        rng = self.rng
        self.dst_base = {}
        subs = [self.subroutine() for _ in range(rng.randint(1, 3) if self.use_calls else 0)]
        segments = rng.randint(1, self.max_segments)
        tasks = rng.sample(range(8), segments - 1)
        head = [f"# generated by tb.core_programs, seed {self.seed}"]
        head += [f".task {task}, task{task}, {rng.randrange(4)}" for task in tasks]
        main = _Writer(self)
        main.emit(f"li r{BASE}, {DATA_POINTER:#x}")
        for index in range(segments):
            if index:
                main.label(f"task{tasks[index - 1]}")
            self.block(main, self.length)
            if index == segments - 1:
                main.emit("halt")
                continue
            nxt = tasks[index]
            wavelet = rng.getrandbits(32)
            main.emit(f"li r{SCRATCH}, {wavelet:#x}", cost=2)
            blocked = rng.random() < 0.3
            if blocked:
                main.emit(f"tblk {nxt}")
            main.emit(f"tact {nxt}, r{SCRATCH}")
            if blocked:
                main.emit(f"tunblk {nxt}")
            main.emit("tend")
        lines = head + main.lines
        for sub in subs:
            lines += sub.lines
        data = self.np_rng.integers(0, 1 << 32, DATA_WORDS, dtype=np.uint64)
        lines.append(f"        .org {DATA_BASE:#x}")
        lines += [f"        .word {', '.join(f'{int(w):#x}' for w in data[i:i + 8])}"
                  for i in range(0, DATA_WORDS, 8)]
        halves = random_bits16(self.np_rng, 2 * TENSOR_SLOTS * SLOT_WORDS).view(np.uint32)
        lines.append(f"        .org {TENSOR_BASE:#x}")
        lines += [f"        .word {', '.join(f'{int(w):#x}' for w in halves[i:i + 8])}"
                  for i in range(0, len(halves), 8)]
        # Upper bound: every straight instruction once per loop iteration, calls included.
        return "\n".join(lines) + "\n", main.cost


def generate_program(seed, length=40, pe_share=0.15, max_segments=3, num_dsrs=44,
                     calls=True, loops=True):
    """One random program (see the module docstring).

    Parameters
    ----------
    seed : int
        Everything follows from it.
    length : int
        Items per segment (an item is an instruction, a branch over a block, a loop, a call
        or a PE item).
    pe_share : float
        Probability that an item is a PE instruction (or a tensor group).
    max_segments : int
        The program is 1..max_segments task segments (``tact`` + ``tend`` between them).
    num_dsrs : int
        DSR ids used are below it.
    calls, loops : bool
        Allow subroutine calls / backward loops.
    """
    gen = _Generator(seed, length, pe_share, max_segments, num_dsrs, calls, loops)
    source, bound = gen.program()
    program = GeneratedProgram(seed, source, gen.inputs, bound)
    code_end = max((pc for pc in program.assemble().lines if pc < DATA_BASE), default=0)
    if code_end >= CODE_LIMIT:
        raise ValueError(f"seed {seed}: the code reaches {code_end:#x}, past {CODE_LIMIT:#x}; "
                         f"use a smaller length")
    return program


def generate_programs(count, seed=0, **options):
    """``count`` programs with seeds ``seed, seed + 1, ...`` (options of
    :func:`generate_program`)."""
    return [generate_program(seed + i, **options) for i in range(count)]
