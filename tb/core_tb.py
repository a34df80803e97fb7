"""cocotb benches of the control core on its standalone harness (:mod:`tb.core_top`).

Directed, table-driven tests with hand-written expected results; every retired instruction's
trace record is checked where the table gives it:

* ``alu``: every ALU instruction with its edges (wrap-around, shifts by 0 / 31 / above 31,
  signed vs unsigned compares at 0x80000000, immediates sign-extended, lui + addi with a
  negative low part, writes to r0).
* ``forwarding``: every forwarding path (distance 1, 2, 3 after ALU ops and after each
  late-result instruction, into rs1, rs2, store data, branch operands, a launch's rs/rm),
  the load-use interlock and its penalty.
* ``branches``: every branch taken and not taken at the signed/unsigned edges, jal/jalr
  link values, back-to-back branches, a branch to the next instruction, a taken branch over
  side-effect instructions (none of them happens), the taken-branch penalty.
* ``memory``: loads and stores at bank boundaries and the last SRAM word.
* ``pe_ports``: launch (with every modifier), dsrw/dsrr, csrr, send/sendc, recv, tact/tblk/
  tunblk against the harness's logs.
* ``stalls``: one program mixing every port under random bank denials and port stalls
  (``seed``): the same trace and logs as without stalls.
* ``tasks``: task start registers, tend/done, back-to-back tasks, restart after halt;
  the latencies of the GEMM's reduction task ``t.fmov; t.fadd; tend``.
* ``twait``: waits for ops_pending (and for a launch's own latency).
* ``faults``: every fault with its code, info and pc; faults are precise (older
  instructions retire, younger ones have no effect; a flushed instruction never faults).
* ``cpi``: CPI of straight-line code, from the trace's cycle stamps.

Measured figures go to the JSON-lines file named by ``tb_params["report"]`` (if any).
"""

import json

import cocotb

from rtl.pe import isa
from rtl.pe.core import TaskOp
from rtl.pe.regs import DSR_WAVELET, ErrorCode, TensorOp, encode_fields
from rtl.wavelet import pack
from tb.core_driver import ANY, CoreHost, Prog, Rec, check_trace, mnemonic_of
from tb.core_top import Region, csr_value
from tb.sim import params

SRAM_WORDS = 12288
SRAM_BYTES = 4 * SRAM_WORDS
MASK = 0xFFFFFFFF
DATA = 0x4000          # byte address of the tests' data (code is at 0)


def _report(name, values):
    path = params().get("report")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, **values}) + "\n")


async def _host(dut, **kw):
    p = params()
    host = CoreHost(dut)
    await host.reset(rate_bank=p.get("rate_bank", kw.pop("rate_bank", 0)),
                     rate_port=p.get("rate_port", kw.pop("rate_port", 0)),
                     seed=p.get("seed", 1), **kw)
    return host


async def _no_error(host, what):
    errors = await host.errors()
    assert not errors, f"{what}: the core faulted: {[(ErrorCode(c), i) for c, i, _ in errors]}"
    assert host.status()["halted"], f"{what}: the core did not halt ({host.status()})"


def _s32(v):
    v &= MASK
    return v - (1 << 32) if v >> 31 else v


# --- ALU ----------------------------------------------------------------------------------------

#: (mnemonic, rs1 value, rs2 value or immediate, expected rd) -- written by hand.
ALU_CASES = [
    ("add", 0x7FFFFFFF, 1, 0x80000000),
    ("add", 0xFFFFFFFF, 1, 0),                      # wraps
    ("add", 0x80000000, 0x80000000, 0),
    ("sub", 0, 1, 0xFFFFFFFF),
    ("sub", 0x80000000, 1, 0x7FFFFFFF),
    ("sub", 5, 5, 0),
    ("and", 0xF0F0F0F0, 0x0FF00FF0, 0x00F000F0),
    ("or", 0xF0F0F0F0, 0x0FF00FF0, 0xFFF0FFF0),
    ("xor", 0xF0F0F0F0, 0x0FF00FF0, 0xFF00FF00),
    ("sll", 1, 0, 1),
    ("sll", 1, 31, 0x80000000),
    ("sll", 1, 32, 1),                              # low 5 bits of the amount
    ("sll", 3, 33, 6),
    ("sll", 0x12345678, 0xFFFFFFFF, 0),             # by 31
    ("srl", 0x80000000, 0, 0x80000000),
    ("srl", 0x80000000, 31, 1),
    ("srl", 0x80000000, 32, 0x80000000),
    ("srl", 0xFFFFFFFF, 36, 0x0FFFFFFF),
    ("sra", 0x80000000, 0, 0x80000000),
    ("sra", 0x80000000, 1, 0xC0000000),
    ("sra", 0x80000000, 31, 0xFFFFFFFF),
    ("sra", 0x40000000, 30, 1),
    ("sra", 0x80000000, 63, 0xFFFFFFFF),
    ("slt", 0x80000000, 0, 1),
    ("slt", 0, 0x80000000, 0),
    ("slt", 0xFFFFFFFF, 1, 1),
    ("slt", 7, 7, 0),
    ("sltu", 0x80000000, 0, 0),
    ("sltu", 0, 0x80000000, 1),
    ("sltu", 0xFFFFFFFF, 1, 0),
    ("sltu", 7, 7, 0),
    ("addi", 5, -3, 2),
    ("addi", 0xFFFFFFFF, 1, 0),
    ("addi", 0, 131071, 131071),
    ("addi", 0, -131072, 0xFFFE0000),
    ("addi", 0x7FFFFFFF, 1, 0x80000000),
    ("andi", 0x12345678, -16, 0x12345670),          # imm sign-extended
    ("andi", 0x12345678, 0xFF, 0x78),
    ("ori", 0, -1, 0xFFFFFFFF),
    ("ori", 0x80000000, 1, 0x80000001),
    ("xori", 0x12345678, -1, 0xEDCBA987),
    ("slli", 1, 0, 1),
    ("slli", 1, 31, 0x80000000),
    ("slli", 5, 33, 10),
    ("srli", 0x80000000, 31, 1),
    ("srli", 0x80000000, 0, 0x80000000),
    ("srli", 0xF0000000, 36, 0x0F000000),
    ("srai", 0x80000000, 31, 0xFFFFFFFF),
    ("srai", 0x80000000, 4, 0xF8000000),
    ("srai", 0x70000000, 32, 0x70000000),
    ("slti", 0x80000000, 0, 1),
    ("slti", 5, -1, 0),
    ("slti", 0xFFFFFFFE, -1, 1),
    ("sltiu", 5, -1, 1),                            # -1 is 0xFFFFFFFF unsigned
    ("sltiu", 0x80000000, 0, 0),
    ("sltiu", 0, 1, 1),
]


@cocotb.test()
async def alu(dut):
    """Every ALU case in one straight-line program; every record checked."""
    host = await _host(dut)
    p = Prog()
    for mnemonic, a, b, want in ALU_CASES:
        insn = isa.BY_MNEMONIC[mnemonic]
        p.li(4, a)
        if "imm" in insn.operand_list:
            p.op(mnemonic, rd=6, rs1=4, imm=b, value=want)
        else:
            p.li(5, b)
            p.op(mnemonic, rd=6, rs1=4, rs2=5, value=want)
    # lui and lui + addi with a negative low part (li 0x12345FFF = lui 0x12346; addi -1).
    p.op("lui", rd=7, imm=0xFFFFF, value=0xFFFFF000)
    p.op("lui", rd=7, imm=0x12346, value=0x12346000)
    p.op("addi", rd=7, rs1=7, imm=-1, value=0x12345FFF)
    p.op("lui", rd=8, imm=0x80000, value=0x80000000)
    p.op("addi", rd=8, rs1=8, imm=-2048, value=0x7FFFF800)
    # Writes to r0 are dropped; r0 reads as 0.
    p.li(4, 0x1234)
    p.op("add", rd=0, rs1=4, rs2=4)
    p.op("addi", rd=0, rs1=4, imm=5)
    p.op("add", rd=9, rs1=0, rs2=4, value=0x1234)
    p.op("lui", rd=0, imm=0x1)
    p.op("or", rd=10, rs1=0, rs2=0, value=0)
    p.op("halt")
    await host.run_program(p, budget=3000)
    await _no_error(host, "alu")
    check_trace(await host.trace(), p.trace(), "alu")
    regs = await host.gprs()
    assert regs[0] == 0 and regs[9] == 0x1234 and regs[7] == 0x12345FFF, \
        f"alu: registers after the program: {[hex(r) for r in regs]}"
