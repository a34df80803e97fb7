"""rtl/pe/isa.py: the documented table is the generated one; packed immediates; encode and
decode agree with the layouts."""

import random
import re

import pytest
from amaranth.lib import data

from rtl.pe import isa
from rtl.pe.isa import (BY_MNEMONIC, FORMATS, IMM_OPERANDS, INSNS, decode, encode,
                        field_values, isa_table_markdown)
from runtime.sim import ROOT

BEGIN = re.compile(r"<!-- isa-table:begin[^>]*-->\n")
END = "<!-- isa-table:end -->"


def test_docs_table_is_the_generated_one():
    text = (ROOT / "docs" / "core.md").read_text()
    start = BEGIN.search(text)
    assert start, "docs/core.md has no isa-table:begin marker"
    end = text.index(END, start.end())
    assert text[start.end():end] == isa_table_markdown(), \
        "docs/core.md's ISA table is stale: paste the output of python -m rtl.pe.isa"


def test_every_instruction_is_in_the_table():
    table = isa_table_markdown()
    for insn in INSNS:
        assert f"| `{insn.mnemonic}` |" in table
    for mnemonic in isa.TENSOR_MNEMONICS:
        assert f"| `{mnemonic}` |" in table
    assert len({i.opcode for i in INSNS}) == len(INSNS)


def test_packed_immediates():
    dsrw, send, csrr, tact = (BY_MNEMONIC[m] for m in ("dsrw", "send", "csrr", "tact"))
    assert dsrw.imm_operands == ("dsr", "word")
    assert dsrw.pack_imm(dsr=43, word=7) == 43 << 3 | 7
    assert dsrw.split_imm(43 << 3 | 7) == {"dsr": 43, "word": 7}
    assert dsrw.split_imm(64 << 3) is None and dsrw.split_imm(-1) is None
    assert send.split_imm(23) == {"color": 23} and send.split_imm(24) is None
    assert csrr.split_imm(0xFF) == {"csr": 0xFF} and csrr.split_imm(0x100) is None
    assert tact.split_imm(31) == {"task": 31} and tact.split_imm(32) is None
    with pytest.raises(ValueError, match="dsr=64 out of range 0..63"):
        dsrw.pack_imm(dsr=64, word=0)
    with pytest.raises(ValueError, match="operand 'word' missing"):
        dsrw.pack_imm(dsr=1)
    assert IMM_OPERANDS["color"][1] == 24


def test_decode_rejects_out_of_range_packings():
    for mnemonic, bad_imm in (("dsrr", 0x200), ("recv", 30), ("tblk", 40), ("csrr", 0x1FF)):
        insn = BY_MNEMONIC[mnemonic]
        assert decode(encode(insn, imm=bad_imm)) is None, mnemonic
        good = insn.pack_imm(**{k: 1 for k in insn.imm_operands})
        assert decode(encode(insn, imm=good))[0] is insn


def test_encode_and_field_values_follow_the_layouts():
    """The cached field tables give what the amaranth layouts say."""
    rng = random.Random(3)
    for fmt, layout in FORMATS.items():
        fields = list(data.Layout.cast(layout))
        for _ in range(200):
            word = rng.getrandbits(32)
            values = field_values(fmt, word)
            for name, fld in fields:
                raw = (word >> fld.offset) & ((1 << fld.width) - 1)
                assert values[name] & ((1 << fld.width) - 1) == raw
    for insn in INSNS:
        values = field_values(insn.fmt, rng.getrandbits(32))
        del values["opcode"]
        word = encode(insn, **values)
        assert field_values(insn.fmt, word) == {**values, "opcode": insn.opcode.value}
    with pytest.raises(ValueError, match="field imm=131072 does not fit in 18 signed bits"):
        encode("addi", rd=1, rs1=1, imm=131072)
    with pytest.raises(ValueError, match="format R has no field 'imm'"):
        encode("add", imm=1)
