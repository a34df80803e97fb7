"""The assembler and disassembler (rtl/pe/asm.py) against hand-worked encodings, the
error messages, and the round trip assemble(disassemble(w)) == w over every opcode."""

import random

import pytest
from amaranth.lib import data

from rtl.pe import isa
from rtl.pe.asm import (CSR_NAMES, AssemblyError, assemble, disassemble, disassemble_words,
                        li_expansion, listing)
from rtl.pe.isa import FORMATS, INSNS, TENSOR_MNEMONICS, Format, decode
from tb.core_cases import CASES, ILLEGAL_WORDS
from runtime.sim import ROOT

# Encodings worked out by hand from the formats in rtl/pe/isa.py's docstring:
# opcode << 26 | rd/rs2 << 22 | rs1 << 18 | (rs2 << 14 | imm18).
HAND_ENCODED = [
    ("add r1, r2, r3", 0x0448C000),      # 0x01 << 26 | 1 << 22 | 2 << 18 | 3 << 14
    ("sub r15, r14, r13", 0x0BFB4000),   # 0x02 << 26 | 15 << 22 | 14 << 18 | 13 << 14
    ("sltu r0, r0, r15", 0x2803C000),    # 0x0A << 26 | 15 << 14
    ("addi r1, r1, -1", 0x4447FFFF),     # 0x11 << 26 | 1 << 22 | 1 << 18 | 0x3FFFF
    ("addi r2, r0, 131071", 0x4481FFFF),
    ("xori r3, r4, -131072", 0x50D20000),   # 0x14 << 26 | 3 << 22 | 4 << 18 | 0x20000
    ("lui r1, 0x12346", 0x68412346),     # 0x1A << 26 | 1 << 22 | 0x12346
    ("lui r15, 0xFFFFF", 0x6BCFFFFF),
    ("lw r6, 4(r1)", 0x6D840004),        # 0x1B << 26 | 6 << 22 | 1 << 18 | 4
    ("sw r6, -8(r2)", 0x718BFFF8),       # 0x1C << 26 | rs2 6 << 22 | rs1 2 << 18 | 0x3FFF8
    ("jalr r0, 0(r7)", 0x781C0000),      # 0x1E << 26 | 7 << 18
    ("halt", 0x38000000),                # 0x0E << 26
    ("twait", 0x30000000),
    ("tend", 0x34000000),
    ("csrr r8, CYCLES", 0x9E000010),     # 0x27 << 26 | 8 << 22 | COUNTER_BASE 0x10
    ("csrr r8, counter_ctrl", 0x9E000008),
    ("dsrw r1, 43, 7", 0xA004015F),      # 0x28 << 26 | 1 << 18 | (43 << 3 | 7)
    ("dsrr r2, 1, 0", 0xA4800008),       # 0x29 << 26 | 2 << 22 | 1 << 3
    ("send 23, r1, r2", 0xA8840017),     # 0x2A << 26 | rs2 2 << 22 | rs1 1 << 18 | 23
    ("sendc 0, r3, r4", 0xAD0C0000),     # 0x2B << 26 | 4 << 22 | 3 << 18
    ("recv r5, 3", 0xB1400003),          # 0x2C << 26 | 5 << 22 | 3
    ("tact 31, r9", 0xB424001F),         # 0x2D << 26 | 9 << 18 | 31
    ("tblk 4", 0xB8000004),
    ("tunblk 4", 0xBC000004),
    # 0b11 << 30 | op << 26 | dst << 20 | a << 14 | b << 8 | rs << 4 | rm
    ("t.fmac 1, 1, 2, r3", 0xD0104230),
    ("t.fmov 1, wavelet, -, r3, r4", 0xC01FFE34),
    ("t.fneg 63, 62, 0, r15, r15", 0xDBFF80FF),
]


@pytest.mark.parametrize("text, word", HAND_ENCODED, ids=[t for t, _ in HAND_ENCODED])
def test_hand_encoded(text, word):
    assert assemble(text).words == [word]


def test_branch_and_jal_offsets_count_words_from_the_branch():
    program = assemble("""
    top:  nop
          beq r1, r2, top       # at 4: offset -1 word
          bne r1, r2, ahead     # at 8: offset +2 words
          nop
    ahead: jal r5, top          # at 0x10: offset -4 words
          blt r1, r2, .+8       # at 0x14: offset +2 words
          bgeu r1, r2, 0x0      # at 0x18: absolute target 0: offset -6 words
    """)
    assert program.words[1] == 0x8087FFFF   # 0x20 << 26 | rs2 2 << 22 | rs1 1 << 18 | -1
    assert program.words[2] == 0x84840002   # 0x21 << 26 | ... | 2
    assert program.words[4] == 0x757FFFFC   # 0x1D << 26 | 5 << 22 | (-4 & 0x3FFFFF)
    assert program.words[5] == 0x88840002   # 0x22 << 26 | ... | 2
    assert program.words[6] == 0x9487FFFA   # 0x25 << 26 | ... | -6
    assert program.labels == {"top": 0, "ahead": 0x10}


LI_HAND = [
    (0x12345FFF, [0x68412346, 0x4447FFFF]),   # lui r1, 0x12346; addi r1, r1, -1
    (0x80000000, [0x68480000]),               # lui r1, 0x80000 (low part 0: no addi)
    (-1, [0x4443FFFF]),                        # addi r1, r0, -1
    (0xFFFFFFFF, [0x4443FFFF]),                # the same 32 bits
    (0xFFFFF800, [0x4443F800]),                # addi r1, r0, -2048
    (131071, [0x4441FFFF]),
    (-131072, [0x44420000]),
    (131072, [0x68400020]),                    # lui r1, 0x20
    (0x12345800, [0x68412346, 0x4447F800]),    # lui 0x12346; addi -2048
    (0x000207FF, [0x68400020, 0x444407FF]),    # lui 0x20; addi 2047
]


@pytest.mark.parametrize("value, words", LI_HAND, ids=[hex(v & 0xFFFFFFFF) for v, _ in LI_HAND])
def test_li_expansion(value, words):
    assert assemble(f"li r1, {value}").words == words
    total = 0
    for op, imm in li_expansion(value):
        total = (imm << 12) if op == "lui" else (total + imm)
    assert total & 0xFFFFFFFF == value & 0xFFFFFFFF


def test_pseudos_and_directives():
    program = assemble("""
    .equ BUF, 0x8000
    .equ DSR_X, 5
    .task 3, handler, 2
          nop                 # 0x00
          mv   r1, r2         # 0x04
          li   r3, BUF        # 0x08
          dsrw r1, DSR_X, 1   # 0x0c
          li   r4, handler    # 0x10: a label defined below, one addi
    handler: halt             # 0x14
    table: .word 0xDEADBEEF, -1, handler
          .org 0x40
    last: .word BUF
    """, base=0)
    assert program.words[:6] == [0x44000000, 0x44480000, 0x44C08000, 0xA0040029,
                                 0x45000014, 0x38000000]
    assert program.words[6:9] == [0xDEADBEEF, 0xFFFFFFFF, 0x14]
    assert program.words[9:16] == [0] * 7 and program.words[16] == 0x8000
    assert program.labels == {"handler": 0x14, "table": 0x18, "last": 0x40}
    assert program.constants == {"BUF": 0x8000, "DSR_X": 5}
    assert program.tasks == {3: (0x14, 2)}
    assert program.lines[0x14] == 10 and program.lines[0x20] == 11 and 0x24 not in program.lines
    assert program.line_of(0x8) == (7, "li   r3, BUF        # 0x08")
    assert program.end == 0x44


def test_base_address():
    program = assemble("loop: beq r0, r0, loop\n jal r1, loop", base=0x100)
    assert program.base == 0x100 and program.labels["loop"] == 0x100
    assert program.words == [0x80000000, 0x747FFFFF]


ERRORS = [
    ("add r16, r1, r2", 1, "r16", "no register r16 (r0..r15)"),
    ("nop\nnop\nbeq r1, r2, loop2", 3, "loop2", "undefined label"),
    ("addi r1, r1, 300000", 1, "300000", "immediate out of range -131072..131071"),
    ("addi r1, r1, -131073", 1, "-131073", "immediate out of range -131072..131071"),
    ("lui r1, 0x100000", 1, "0x100000", "immediate out of range 0..1048575"),
    ("lui r1, -1", 1, "-1", "immediate out of range 0..1048575"),
    ("lw r1, 200000(r2)", 1, "200000", "offset out of range -131072..131071"),
    ("lw r1, 4(r20)", 1, "r20", "no register r20 (r0..r15)"),
    ("lw r1, r2", 1, "r2", "not a memory operand imm(rs1)"),
    ("add r1, r2", 1, "add r1, r2", "add takes 3 operands (rd, rs1, rs2), got 2"),
    ("halt r1", 1, "halt r1", "halt takes 0 operands (none), got 1"),
    ("frob r1", 1, "frob", "unknown instruction or directive"),
    ("add r1, r2, 5", 1, "5", "not a register (r0..r15)"),
    ("li r1, 0x100000000", 1, "0x100000000", "li value out of range"),
    ("li r1, -2147483649", 1, "-2147483649", "li value out of range"),
    ("send 24, r1, r2", 1, "24", "color out of range 0..23"),
    ("recv r1, -1", 1, "-1", "color out of range 0..23"),
    ("tact 32, r1", 1, "32", "task out of range 0..31"),
    ("dsrw r1, 64, 0", 1, "64", "DSR id out of range 0..63"),
    ("dsrr r1, 3, 8", 1, "8", "DSR word out of range 0..7"),
    ("csrr r1, 0x100", 1, "0x100", "CSR out of range 0..255"),
    ("csrr r1, CYCLE", 1, "CYCLE", "no CSR 'CYCLE'"),
    ("t.fadd 64, 1, 2", 1, "64", "DSR id out of range 0..63"),
    ("t.fadd 1, 2", 1, "t.fadd 1, 2", "t.fadd takes 3 to 5 operands"),
    ("t.frob 1, 2, 3", 1, "t.frob", "unknown instruction or directive"),
    ("x: nop\nx: nop", 2, "x", "symbol defined twice"),
    ("beq r1, r2, .+2", 1, ".+2", "not a multiple of 4"),
    ("beq r1, r2, 0x80000", 1, "0x80000", "branch offset 131072 words out of range"),
    (".org 8\n.org 4", 2, "4", ".org goes backwards (already at 0x8)"),
    (".org 6", 1, "6", ".org address is not a multiple of 4"),
    (".equ N, later\nlater: nop", 1, "later", ".equ needs a number or a symbol defined above"),
    (".word", 1, ".word", ".word takes one or more values"),
    (".word 0x100000000", 1, "0x100000000", ".word value out of range"),
    ("li r1, big\n.equ big, 0x12345678", 1, "big", "li of a symbol defined below it"),
    ("add r1,, r2", 1, "r1,, r2", "operand 2 is empty"),
    ("addi r1, r1, 12abc", 1, "12abc", "not a number or a symbol"),
    (".task 1, nowhere, 0", 1, "nowhere", "undefined label"),
    (".task 1, x, 4\nx: halt", 1, "4", "priority out of range 0..3"),
]


@pytest.mark.parametrize("source, line, token, reason", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_line_and_token(source, line, token, reason):
    with pytest.raises(AssemblyError) as info:
        assemble(source)
    err = info.value
    assert (err.line, err.token) == (line, token), str(err)
    assert reason in err.reason, str(err)
    assert str(err).startswith(f"line {line}: {token!r}: ")


def test_error_message_format():
    with pytest.raises(AssemblyError, match=r"^line 3: 'r16': no register r16 \(r0\.\.r15\)$"):
        assemble("nop\nnop\nadd r16, r1, r2")


def test_csr_names():
    """Reg members below 0x100 by name, counters by their bare names."""
    assert CSR_NAMES["ID"] == 0 and CSR_NAMES["ERROR"] == 2 and CSR_NAMES["CORE_PC"] == 0x32
    assert CSR_NAMES["CYCLES"] == 0x10 and CSR_NAMES["CORE_RETIRED"] == 0x1E
    assert "BIND" not in CSR_NAMES
    assert disassemble(assemble("csrr r1, core_status").words[0]) == "csrr r1, CORE_STATUS"
    assert disassemble(assemble("csrr r1, 0x45").words[0]) == "csrr r1, 0x45"


@pytest.mark.parametrize("word, why", ILLEGAL_WORDS.items(),
                         ids=[f"{w:08x}" for w in ILLEGAL_WORDS])
def test_illegal_words_do_not_disassemble(word, why):
    assert decode(word) is None, why
    assert disassemble(word) is None


def test_disassembly_text():
    assert disassemble(0x8087FFFF) == "beq r1, r2, .-4"
    assert disassemble(0x8087FFFF, pc=0x40) == "beq r1, r2, 0x3c"
    assert disassemble(0x757FFFFC, pc=0x10) == "jal r5, 0x0"
    assert disassemble(0x4447FFFF) == "addi r1, r1, -1"
    assert disassemble(0x44000000) == "nop" and disassemble(0x44000000, pseudo=False) == \
        "addi r0, r0, 0"
    assert disassemble(0x44480000) == "mv r1, r2"
    assert disassemble(0x4443FFFF) == "li r1, -1"
    assert disassemble(0xD0104230) == "t.fmac 1, 1, 2, r3"
    assert disassemble(0xC01FFE34) == "t.fmov 1, wavelet, none, r3, r4"
    assert disassemble(0xC0104000) == "t.fmov 1, 1, 0"


def _random_word(rng, fmt, fixed, insn=None):
    """A word of format ``fmt`` with random fields (zero fields mostly zero, packed
    immediates mostly in range) and ``fixed`` fields."""
    word = 0
    for name, fld in data.Layout.cast(FORMATS[fmt]):
        width = fld.width
        if name in fixed:
            value = fixed[name]
        elif name in ("zero", "_pad") or (insn is not None and name in insn.zero):
            value = rng.getrandbits(width) if rng.random() < 0.1 else 0
        elif name == "imm" and insn is not None and insn.imm_operands and rng.random() < 0.8:
            packed = {k: rng.randrange(isa.IMM_OPERANDS[k][1]) for k in insn.imm_operands}
            value = insn.pack_imm(**packed)
        else:
            value = rng.getrandbits(width)
            if rng.random() < 0.2:   # extremes of the field
                value = rng.choice([0, 1, (1 << width) - 1, 1 << (width - 1),
                                    (1 << (width - 1)) - 1])
        word |= (value & ((1 << width) - 1)) << fld.offset
    return word


def _roundtrip(word, rng):
    text = disassemble(word)
    assert text is not None
    assert assemble(text).words == [word], (hex(word), text)
    pc = 4 * rng.randrange(1 << 15)
    text_pc = disassemble(word, pc=pc)
    assert assemble(text_pc, base=pc).words == [word], (hex(word), text_pc, hex(pc))
    assert assemble(disassemble(word, pseudo=False)).words == [word]


def test_roundtrip_every_opcode_random_fields():
    """For every instruction of the table and every tensor op, 300 random words: each that
    decodes re-assembles from its disassembly (absolute and relative targets) to itself."""
    rng = random.Random(10)
    for insn in INSNS:
        valid = 0
        for _ in range(300):
            word = _random_word(rng, insn.fmt, {"opcode": insn.opcode.value}, insn)
            if decode(word) is None:
                continue
            valid += 1
            _roundtrip(word, rng)
        assert valid >= 150, f"{insn.mnemonic}: only {valid} valid random words"
    for mnemonic, op in TENSOR_MNEMONICS.items():
        for _ in range(300):
            word = _random_word(rng, Format.T, {"major": isa.TENSOR_MAJOR, "op": op.value})
            assert decode(word)[0] == mnemonic
            _roundtrip(word, rng)


def test_roundtrip_random_words():
    """200k uniformly random words: every one that decodes round-trips, and every
    instruction without packed operands or wide zero fields is met (the others are too rare
    among random words: the test above covers them)."""
    rng = random.Random(11)
    seen = set()
    for _ in range(200_000):
        word = rng.getrandbits(32)
        decoded = decode(word)
        if decoded is None:
            assert disassemble(word) is None
            continue
        insn = decoded[0]
        seen.add(insn if isinstance(insn, str) else insn.mnemonic)
        text = disassemble(word)
        assert assemble(text).words == [word], (hex(word), text)
    common = {i.mnemonic for i in INSNS if not i.imm_operands and i.fmt != Format.R
              and not set(i.zero) - {"zero"}} | set(TENSOR_MNEMONICS)
    assert len(common) > 20 and common <= seen, common - seen


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_programs_roundtrip(case):
    """Every directed program assembles, and its disassembly assembles to the same image."""
    program = assemble(case.source)
    text = disassemble_words(program.words, program.base)
    assert assemble(text).words == program.words
    assert len(listing(program).splitlines()) == len(program.words)


def test_cases_cover_every_instruction():
    used = set()
    for case in CASES:
        for word in assemble(case.source).words:
            decoded = decode(word)
            if decoded is not None:
                insn = decoded[0]
                used.add(insn if isinstance(insn, str) else insn.mnemonic)
    every = {i.mnemonic for i in INSNS} | set(TENSOR_MNEMONICS)
    assert every <= used, sorted(every - used)


def test_docs_syntax_example_assembles():
    """The example of docs/core.md section 2 is a valid program."""
    text = (ROOT / "docs" / "core.md").read_text()
    section = text[text.index("## 2. Assembly syntax"):]
    example = section.split("```")[1]
    program = assemble(example)
    assert program.tasks == {3: (program.labels["handler"], 1)}
    assert program.words[:2] == [0x68412346, 0x4447FFFF]
