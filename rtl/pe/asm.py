"""Assembler and disassembler of the control core, derived from :mod:`rtl.pe.isa`.

Nothing here lists instructions: mnemonics, formats, operand syntax and immediate ranges
come from :data:`rtl.pe.isa.INSNS`, :data:`~rtl.pe.isa.TENSOR_MNEMONICS`,
:data:`~rtl.pe.isa.IMM_RANGES` and :data:`~rtl.pe.isa.IMM_OPERANDS`; this module only knows
how each *kind* of operand is written (:data:`OPERAND_KINDS`).

Syntax (SPEC 4.5; ``docs/core.md`` has the full description)::

    # a comment runs to the end of the line
    .equ   BUF, 0x8000          # a constant, usable wherever a number is
    .task  3, handler, 1        # task table entry: task 3 is code at `handler`, priority 1
    start: li   r1, 0x12345FFF  # pseudo: lui + addi
           lw   r2, 4(r1)       # byte offsets
           beq  r1, r2, start   # labels (word offsets from the branch), `.+8`, or 0x40
           t.fmac 1, 1, 2, r3   # tensor launch: dst, a, b DSR ids, rs [, rm]
           halt
    data:  .word 0xDEADBEEF, -1
           .org 0x100           # move forward to a byte address (zero fill)

Registers ``r0``..``r15`` (``r0`` reads as zero); numbers decimal or ``0x`` hex, with an
optional sign; mnemonics and registers are case-insensitive, symbols are not. Symbols (labels
and ``.equ`` constants) share one name space; a label's value is its byte address.

:func:`assemble` returns a :class:`Program`; errors raise :class:`AssemblyError` naming the
line and the offending token. :func:`disassemble` turns one word back into text, and for
every valid word ``assemble(disassemble(w)).words == [w]``.
"""

import re
from dataclasses import dataclass, field

from rtl.pe.isa import (BY_MNEMONIC, CSR_SPACE, DSR_IDS, IMM_OPERANDS, IMM_RANGES, PC_BITS,
                        PSEUDO_DSRS, TENSOR_MNEMONICS, TENSOR_OPERANDS, Format, decode, encode)
from rtl.pe.regs import COUNTER_BASE, MAX_TASKS, Counter, Reg, encode_task

__all__ = ["AssemblyError", "Program", "assemble", "disassemble", "disassemble_words",
           "listing", "OPERAND_KINDS", "CSR_NAMES", "CSR_BY_NUMBER", "li_expansion",
           "parse_number"]

#: Byte addresses a program may occupy (the core's PC width).
ADDRESS_LIMIT = 1 << PC_BITS

_NUMBER = re.compile(r"^[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)$")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_REGISTER = re.compile(r"^[rR]([0-9]+)$")
_MEM = re.compile(r"^(.*)\(\s*([^()]*?)\s*\)$")
_LABEL_DEF = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*:")
_RELATIVE = re.compile(r"^\.\s*(?:([+-])\s*(\S+))?$")


def _csr_names():
    names = {reg.name: int(reg) for reg in Reg if int(reg) < CSR_SPACE}
    for counter in Counter:
        if counter.name in names:
            raise AssertionError(f"counter {counter.name} has the name of a register")
        names[counter.name] = COUNTER_BASE + int(counter)
    if len(set(names.values())) != len(names):
        raise AssertionError("two CSR names share a number")
    return names


#: ``csrr`` operand names: the members of :class:`rtl.pe.regs.Reg` below ``CSR_SPACE`` and
#: the :class:`rtl.pe.regs.Counter` members by their bare names (``CYCLES`` is
#: ``COUNTER_BASE + Counter.CYCLES``); matched case-insensitively.
CSR_NAMES = _csr_names()
CSR_BY_NUMBER = {number: name for name, number in CSR_NAMES.items()}


class AssemblyError(ValueError):
    """An assembly error: ``line`` (1-based, or ``None``), ``token`` and ``reason``; the
    message reads ``line 3: 'r16': no register r16 (r0..r15)``."""

    def __init__(self, line, token, reason):
        self.line, self.token, self.reason = line, token, reason
        where = f"line {line}: " if line is not None else ""
        super().__init__(f"{where}{token!r}: {reason}")


@dataclass
class Program:
    """An assembled program.

    Attributes
    ----------
    base : int
        Byte address of ``words[0]``.
    words : list of int
        The image, one 32-bit word per 4 bytes (``.org`` gaps are zero words).
    labels : dict
        Label name -> byte address.
    constants : dict
        ``.equ`` name -> value.
    lines : dict
        Byte address -> 1-based source line that produced the word there.
    tasks : dict
        ``.task`` entries: task id -> ``(byte address, priority)``; the loader writes them
        into the task table (``TASK[t]``, :func:`rtl.pe.regs.encode_task`).
    source : list of str
        The source lines.
    """
    base: int
    words: list
    labels: dict = field(default_factory=dict)
    constants: dict = field(default_factory=dict)
    lines: dict = field(default_factory=dict)
    tasks: dict = field(default_factory=dict)
    source: list = field(default_factory=list)

    @property
    def end(self):
        """Byte address just after the last word."""
        return self.base + 4 * len(self.words)

    def word_at(self, pc):
        """The word at byte address ``pc`` (``KeyError`` outside the program)."""
        if pc % 4 or not self.base <= pc < self.end:
            raise KeyError(f"no word of the program at {pc:#x}")
        return self.words[(pc - self.base) // 4]

    def line_of(self, pc):
        """``(line number, source text)`` of the word at ``pc``, or ``None``."""
        line = self.lines.get(pc)
        if line is None:
            return None
        return line, self.source[line - 1].strip() if line <= len(self.source) else ""

    def task_words(self):
        """``{task: TaskEntry word}`` of the ``.task`` entries."""
        return {task: encode_task(pc=pc, prio=prio) for task, (pc, prio) in self.tasks.items()}


# --- numbers and symbols --------------------------------------------------------------------

def parse_number(token):
    """The ``int`` of a decimal or ``0x`` hex literal (optional sign), or ``None``."""
    token = token.strip()
    if not _NUMBER.match(token):
        return None
    return int(token, 0) if not re.match(r"^[+-]?0[0-9]", token) else int(token, 10)


class _Context:
    """Symbols and the current line, shared by the operand parsers."""

    def __init__(self):
        self.symbols = {}
        self.labels = {}
        self.line = None
        self.final = False       # pass 2: every symbol must be defined

    def error(self, token, reason):
        return AssemblyError(self.line, token, reason)

    def value(self, token, what="symbol"):
        """A number or a symbol; in pass 1 an unknown symbol gives ``None``."""
        token = token.strip()
        number = parse_number(token)
        if number is not None:
            return number
        if not _SYMBOL.match(token):
            raise self.error(token, "not a number or a symbol" if token else "empty operand")
        if token in self.symbols:
            return self.symbols[token]
        if self.final:
            raise self.error(token, f"undefined {what}")
        return None

    def ranged(self, token, lo, hi, what):
        value = self.value(token)
        if value is not None and not lo <= value <= hi:
            raise self.error(token, f"{what} out of range {lo}..{hi}")
        return value

    def register(self, token):
        token = token.strip()
        match = _REGISTER.match(token)
        if not match:
            raise self.error(token, "not a register (r0..r15)")
        number = int(match.group(1))
        if number > 15 or (len(match.group(1)) > 1 and match.group(1)[0] == "0"):
            raise self.error(token, f"no register {token.lower()} (r0..r15)")
        return number


# --- operand kinds --------------------------------------------------------------------------
# Each kind: parse(ctx, token, insn, pc) -> {field or packed operand: value} (values may be
# None in pass 1), and show(fields, insn, pc, packed) -> text.

def _parse_reg(kind):
    def parse(ctx, token, insn, pc):
        return {kind: ctx.register(token)}
    return parse


def _show_reg(kind):
    return lambda f, insn, pc, packed: f"r{f[kind]}"


def _parse_imm(ctx, token, insn, pc):
    lo, hi = IMM_RANGES[insn.fmt]
    return {"imm": ctx.ranged(token, lo, hi, "immediate")}


def _show_imm(f, insn, pc, packed):
    return f"{f['imm']:#x}" if insn.fmt == Format.U else str(f["imm"])


def _parse_mem(ctx, token, insn, pc):
    match = _MEM.match(token.strip())
    if not match:
        raise ctx.error(token, "not a memory operand imm(rs1)")
    offset = match.group(1).strip() or "0"
    lo, hi = IMM_RANGES[insn.fmt]
    return {"imm": ctx.ranged(offset, lo, hi, "offset"), "rs1": ctx.register(match.group(2))}


def _show_mem(f, insn, pc, packed):
    return f"{f['imm']}(r{f['rs1']})"


def _parse_label(ctx, token, insn, pc):
    token = token.strip()
    rel = _RELATIVE.match(token)
    if rel:
        if rel.group(1) is None:
            offset = 0
        else:
            amount = parse_number(rel.group(2))
            if amount is None:
                raise ctx.error(token, "a relative target is . or .+N / .-N (N bytes)")
            offset = amount if rel.group(1) == "+" else -amount
        target = pc + offset
    else:
        target = ctx.value(token, "label")
        if target is None:
            return {"imm": None}
        offset = target - pc
    if offset % 4:
        raise ctx.error(token, f"branch target {target:#x} is not a multiple of 4"
                        if target >= 0 else f"branch offset {offset} is not a multiple of 4")
    lo, hi = IMM_RANGES[insn.fmt]
    if not lo <= offset // 4 <= hi:
        raise ctx.error(token, f"branch offset {offset // 4} words out of range {lo}..{hi}")
    return {"imm": offset // 4}


def _show_label(f, insn, pc, packed):
    offset = 4 * f["imm"]
    if pc is not None and pc + offset >= 0:
        return f"{pc + offset:#x}"
    return f".{offset:+d}"


def _parse_packed(kind, what, names=None):
    count = IMM_OPERANDS[kind][1]

    def parse(ctx, token, insn, pc):
        if names is not None and token.strip().upper() in names:
            return {kind: names[token.strip().upper()]}
        try:
            return {kind: ctx.ranged(token, 0, count - 1, what)}
        except AssemblyError as exc:
            if names is not None and "undefined" in exc.reason:
                raise ctx.error(token, f"no {what} {token.strip()!r} (a number 0..{count - 1} "
                                       f"or a name: {', '.join(names)})") from None
            raise
    return parse


def _show_packed(kind):
    if kind == "csr":
        return lambda f, insn, pc, packed: CSR_BY_NUMBER.get(packed["csr"],
                                                            f"{packed['csr']:#x}")
    return lambda f, insn, pc, packed: str(packed[kind])


def _parse_dsr(kind):
    def parse(ctx, token, insn, pc):
        word = token.strip().lower()
        if word == "-":
            word = "none"
        if word in PSEUDO_DSRS:
            return {kind: PSEUDO_DSRS[word]}
        return {kind: ctx.ranged(token, 0, DSR_IDS - 1, "DSR id")}
    return parse


_PSEUDO_DSR_NAMES = {value: name for name, value in PSEUDO_DSRS.items()}


def _show_dsr(kind):
    return lambda f, insn, pc, packed: _PSEUDO_DSR_NAMES.get(f[kind], str(f[kind]))


#: How each operand kind of :attr:`rtl.pe.isa.Insn.operands` is written:
#: kind -> (parser, printer).
OPERAND_KINDS = {
    "rd": (_parse_reg("rd"), _show_reg("rd")),
    "rs1": (_parse_reg("rs1"), _show_reg("rs1")),
    "rs2": (_parse_reg("rs2"), _show_reg("rs2")),
    "imm": (_parse_imm, _show_imm),
    "mem": (_parse_mem, _show_mem),
    "label": (_parse_label, _show_label),
    "dsr": (_parse_packed("dsr", "DSR id"), _show_packed("dsr")),
    "word": (_parse_packed("word", "DSR word"), _show_packed("word")),
    "color": (_parse_packed("color", "color"), _show_packed("color")),
    "task": (_parse_packed("task", "task"), _show_packed("task")),
    "csr": (_parse_packed("csr", "CSR", CSR_NAMES), _show_packed("csr")),
    "dst": (_parse_dsr("dst"), _show_dsr("dst")),
    "a": (_parse_dsr("a"), _show_dsr("a")),
    "b": (_parse_dsr("b"), _show_dsr("b")),
    "rs": (_parse_reg("rs"), _show_reg("rs")),
    "rm": (_parse_reg("rm"), _show_reg("rm")),
}

_TENSOR_KINDS = tuple(o.strip() for o in TENSOR_OPERANDS.split(","))
#: Tensor-launch operands that may be left out (they default to r0).
_TENSOR_OPTIONAL = 2


# --- the assembler --------------------------------------------------------------------------

def li_expansion(value):
    """The instructions of ``li rd, value``: ``[("addi", lo)]`` or ``[("lui", hi)]`` /
    ``[("lui", hi), ("addi", lo)]`` (see :data:`rtl.pe.isa.PSEUDOS`). ``value`` in
    -2^31..2^32-1, read as a 32-bit two's-complement number."""
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"li value {value} out of range -2^31..2^32-1")
    value &= 0xFFFFFFFF
    signed32 = value - (1 << 32) if value >> 31 else value
    lo_min, lo_max = IMM_RANGES[Format.I]
    if lo_min <= signed32 <= lo_max:
        return [("addi", signed32)]
    hi = ((value + 0x800) >> 12) & 0xFFFFF
    lo = (value - (hi << 12)) & 0xFFFFFFFF
    lo = lo - (1 << 32) if lo >> 31 else lo
    assert -2048 <= lo <= 2047
    return [("lui", hi)] if lo == 0 else [("lui", hi), ("addi", lo)]


def _split_operands(text, ctx):
    if not text.strip():
        return []
    tokens = [t.strip() for t in text.split(",")]
    for i, token in enumerate(tokens):
        if not token:
            raise ctx.error(text.strip(), f"operand {i + 1} is empty")
    return tokens


@dataclass
class _Item:
    """One source statement after pass 1."""
    line: int
    pc: int
    mnemonic: str
    operands: list
    size: int          # words
    text: str


def _check_count(ctx, mnemonic, operands, syntax, lo, hi=None):
    hi = lo if hi is None else hi
    if not lo <= len(operands) <= hi:
        want = f"{lo}" if lo == hi else f"{lo} to {hi}"
        raise ctx.error(f"{mnemonic} {', '.join(operands)}".strip(),
                        f"{mnemonic} takes {want} operand{'s' if hi != 1 else ''} "
                        f"({syntax or 'none'}), got {len(operands)}")


def _encode_insn(ctx, insn, operands, pc):
    kinds = insn.operand_list
    _check_count(ctx, insn.mnemonic, operands, insn.operands, len(kinds))
    fields, packed = {}, {}
    for kind, token in zip(kinds, operands):
        values = OPERAND_KINDS[kind][0](ctx, token, insn, pc)
        for name, value in values.items():
            (packed if name in IMM_OPERANDS else fields)[name] = value
    if not ctx.final:
        return None
    if packed:
        fields["imm"] = insn.pack_imm(**packed)
    return encode(insn, **fields)


def _encode_tensor(ctx, mnemonic, operands, pc):
    kinds = _TENSOR_KINDS
    _check_count(ctx, mnemonic, operands, TENSOR_OPERANDS, len(kinds) - _TENSOR_OPTIONAL,
                 len(kinds))
    fields = {}
    for kind, token in zip(kinds, operands):
        fields.update(OPERAND_KINDS[kind][0](ctx, token, None, pc))
    if not ctx.final:
        return None
    return encode(mnemonic, **fields)


def _encode_pseudo(ctx, mnemonic, operands, pc, size):
    """Words of a pseudo-instruction (``None`` entries in pass 1)."""
    if mnemonic == "nop":
        _check_count(ctx, mnemonic, operands, "", 0)
        return [encode("addi", rd=0, rs1=0, imm=0)]
    if mnemonic == "mv":
        _check_count(ctx, mnemonic, operands, "rd, rs", 2)
        rd, rs = ctx.register(operands[0]), ctx.register(operands[1])
        return [encode("addi", rd=rd, rs1=rs, imm=0)]
    # li
    _check_count(ctx, mnemonic, operands, "rd, value", 2)
    rd = ctx.register(operands[0])
    value = ctx.ranged(operands[1], -(1 << 31), (1 << 32) - 1, "li value")
    if value is None:
        return [None]   # a symbol defined below: an address (fits one addi), checked in pass 2
    parts = li_expansion(value)
    if size is not None and len(parts) != size:
        raise ctx.error(operands[1], f"li of a symbol defined below it must fit "
                                     f"{IMM_RANGES[Format.I][0]}..{IMM_RANGES[Format.I][1]} "
                                     f"(define it above the li)")
    words = []
    for op, imm in parts:
        if op == "lui":
            words.append(encode("lui", rd=rd, imm=imm))
        else:
            words.append(encode("addi", rd=rd, rs1=rd if words else 0, imm=imm))
    return words


_PSEUDO_MNEMONICS = ("li", "mv", "nop")


def assemble(text, base=0):
    """Assemble ``text`` into a :class:`Program` whose first word is at byte address
    ``base`` (a multiple of 4).

    Raises
    ------
    AssemblyError
        Naming the line and the offending token: an unknown mnemonic or register, a value
        out of range (never truncated), an undefined or duplicate symbol, a branch target
        out of reach, an ``.org`` that goes backwards.
    """
    if base % 4 or not 0 <= base < ADDRESS_LIMIT:
        raise AssemblyError(None, str(base), "base must be a multiple of 4 in "
                                             f"0..{ADDRESS_LIMIT - 4:#x}")
    ctx = _Context()
    source = text.splitlines()
    items, tasks = [], []
    pc = base
    # Pass 1: labels, constants and the size of every statement.
    for number, raw in enumerate(source, start=1):
        ctx.line = number
        body = raw.split("#", 1)[0].strip()
        while True:
            match = _LABEL_DEF.match(body)
            if not match:
                break
            name = match.group(1)
            if name in ctx.symbols:
                raise ctx.error(name, "symbol defined twice")
            ctx.symbols[name] = ctx.labels[name] = pc
            body = body[match.end():].strip()
        if not body:
            continue
        parts = body.split(None, 1)
        mnemonic = parts[0]
        operands = _split_operands(parts[1] if len(parts) > 1 else "", ctx)
        lower = mnemonic.lower()
        if lower == ".equ":
            _check_count(ctx, lower, operands, "name, value", 2)
            name = operands[0]
            if not _SYMBOL.match(name):
                raise ctx.error(name, "not a symbol name")
            if name in ctx.symbols:
                raise ctx.error(name, "symbol defined twice")
            value = ctx.value(operands[1])
            if value is None:
                raise ctx.error(operands[1], ".equ needs a number or a symbol defined above it")
            ctx.symbols[name] = value
            continue
        if lower == ".org":
            _check_count(ctx, lower, operands, "address", 1)
            address = ctx.value(operands[0])
            if address is None:
                raise ctx.error(operands[0], ".org needs a number or a symbol defined above it")
            if address % 4:
                raise ctx.error(operands[0], ".org address is not a multiple of 4")
            if address < pc:
                raise ctx.error(operands[0], f".org goes backwards (already at {pc:#x})")
            if address > ADDRESS_LIMIT:
                raise ctx.error(operands[0], f".org passes the end of the address space "
                                             f"({ADDRESS_LIMIT:#x})")
            items.append(_Item(number, pc, ".org", operands, (address - pc) // 4, raw))
            pc = address
            continue
        if lower == ".task":
            _check_count(ctx, lower, operands, "task, label, prio", 3)
            tasks.append((number, operands))
            continue
        if lower == ".word":
            if not operands:
                raise ctx.error(body, ".word takes one or more values")
            for token in operands:
                ctx.ranged(token, -(1 << 31), (1 << 32) - 1, ".word value")
            size = len(operands)
        elif lower in _PSEUDO_MNEMONICS:
            size = len(_encode_pseudo(ctx, lower, operands, pc, None))
        elif lower in BY_MNEMONIC:
            _encode_insn(ctx, BY_MNEMONIC[lower], operands, pc)
            size = 1
        elif lower in TENSOR_MNEMONICS:
            _encode_tensor(ctx, lower, operands, pc)
            size = 1
        else:
            raise ctx.error(mnemonic, "unknown instruction or directive")
        items.append(_Item(number, pc, lower, operands, size, raw))
        pc += 4 * size
        if pc > ADDRESS_LIMIT:
            raise ctx.error(mnemonic, f"the program passes the end of the address space "
                                      f"({ADDRESS_LIMIT:#x})")

    # Pass 2: encode with every symbol known.
    ctx.final = True
    words, lines = [], {}
    for item in items:
        ctx.line = item.line
        if item.mnemonic == ".org":
            new = [0] * item.size
        elif item.mnemonic == ".word":
            new = [ctx.value(t) & 0xFFFFFFFF for t in item.operands]
        elif item.mnemonic in _PSEUDO_MNEMONICS:
            new = _encode_pseudo(ctx, item.mnemonic, item.operands, item.pc, item.size)
        elif item.mnemonic in BY_MNEMONIC:
            new = [_encode_insn(ctx, BY_MNEMONIC[item.mnemonic], item.operands, item.pc)]
        else:
            new = [_encode_tensor(ctx, item.mnemonic, item.operands, item.pc)]
        assert len(new) == item.size, (item, new)
        if item.mnemonic != ".org":
            for i in range(len(new)):
                lines[item.pc + 4 * i] = item.line
        words += new

    program_tasks = {}
    for number, (task_tok, label_tok, prio_tok) in tasks:
        ctx.line = number
        task = ctx.ranged(task_tok, 0, MAX_TASKS - 1, "task")
        if task in program_tasks:
            raise ctx.error(task_tok, "task defined twice")
        address = ctx.value(label_tok, "label")
        if address % 4 or not 0 <= address < ADDRESS_LIMIT:
            raise ctx.error(label_tok, f"task address {address:#x} is not a multiple of 4 "
                                       f"in 0..{ADDRESS_LIMIT - 4:#x}")
        prio = ctx.ranged(prio_tok, 0, 3, "priority")
        program_tasks[task] = (address, prio)

    constants = {k: v for k, v in ctx.symbols.items() if k not in ctx.labels}
    return Program(base, words, dict(ctx.labels), constants, lines, program_tasks, source)


# --- the disassembler -----------------------------------------------------------------------

def _pseudo_alias(insn, fields):
    if insn.mnemonic != "addi":
        return None
    rd, rs1, imm = fields["rd"], fields["rs1"], fields["imm"]
    if rd == rs1 == imm == 0:
        return "nop"
    if rs1 == 0:
        return f"li r{rd}, {imm}"
    if imm == 0:
        return f"mv r{rd}, r{rs1}"
    return None


def disassemble(word, pc=None, pseudo=True):
    """Assembly text of one instruction word, or ``None`` if the word is not an
    instruction (:func:`rtl.pe.isa.decode`).

    Parameters
    ----------
    word : int
    pc : int, optional
        The word's byte address: branch and ``jal`` targets are then absolute addresses
        (``0x40``); without it they are relative (``.+8``, ``.-4``).
    pseudo : bool
        Show ``addi`` as ``nop``, ``li`` or ``mv`` where it is one.
    """
    decoded = decode(word)
    if decoded is None:
        return None
    insn, fields = decoded
    if isinstance(insn, str):   # tensor launch
        shown = [OPERAND_KINDS[k][1](fields, None, pc, None) for k in _TENSOR_KINDS]
        while len(shown) > len(_TENSOR_KINDS) - _TENSOR_OPTIONAL and shown[-1] == "r0":
            shown.pop()
        return f"{insn} {', '.join(shown)}"
    if pseudo:
        alias = _pseudo_alias(insn, fields)
        if alias:
            return alias
    packed = insn.split_imm(fields["imm"]) if insn.imm_operands else None
    shown = [OPERAND_KINDS[k][1](fields, insn, pc, packed) for k in insn.operand_list]
    return f"{insn.mnemonic} {', '.join(shown)}".strip()


def disassemble_words(words, base=0):
    """Text that :func:`assemble` turns back into ``words`` at ``base``: one line per word,
    absolute branch targets, ``.word`` for words that are not instructions."""
    lines = [f".org {base:#x}"] if base else []
    for i, word in enumerate(words):
        text = disassemble(word, pc=base + 4 * i)
        lines.append(text if text is not None else f".word {int(word):#010x}")
    return "\n".join(lines) + "\n"


def listing(program):
    """A human-readable listing of a :class:`Program`: address, word, disassembly, source."""
    rows = []
    for i, word in enumerate(program.words):
        pc = program.base + 4 * i
        text = disassemble(word, pc=pc) or "(not an instruction)"
        src = program.line_of(pc)
        rows.append(f"{pc:#07x}  {word:08x}  {text:32}" + (f"  # {src[0]}: {src[1]}" if src
                                                             else ""))
    return "\n".join(rows) + "\n"

