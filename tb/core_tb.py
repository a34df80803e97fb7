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
from cocotb.triggers import ClockCycles

from rtl.pe import isa
from rtl.pe.core import TaskOp
from rtl.pe.regs import DSR_WAVELET, ErrorCode, TensorOp, encode_fields
from rtl.wavelet import pack
from tb.core_driver import ANY, CoreHost, Prog, check_trace
from tb.core_top import Region, csr_value
from runtime.sim import params

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


# --- forwarding and the load-use interlock ------------------------------------------------------

def _gap(p, distance):
    for _ in range(distance - 1):
        p.nop()


@cocotb.test()
async def forwarding(dut):
    """Every forwarding path at distance 1, 2, 3 (M -> X, W -> X, W -> D) after ALU results
    and after each late result (lw, dsrr, csrr, recv); the load-use interlock's penalty."""
    host = await _host(dut)
    data = [0x11111111 * (i + 1) for i in range(8)]
    await host.write([(Region.SRAM, DATA // 4 + i, v) for i, v in enumerate(data)])
    await host.write([(Region.DSR, 8 * 3 + 1, 0xD5D5D5D5)])
    await host.queue_recv(2, [0xAAAA0001, 0xAAAA0002, 0xAAAA0003])
    p = Prog()
    p.li(10, DATA)
    pairs = {}          # name -> (producer pc, consumer pc)
    k = 0
    for dist in (1, 2, 3):
        for port in ("rs1", "rs2"):
            k += 1
            v = 100 * dist + k
            prod = p.op("addi", rd=4, rs1=0, imm=v, value=v)
            _gap(p, dist)
            fields = dict(rs1=4, rs2=0) if port == "rs1" else dict(rs1=0, rs2=4)
            cons = p.op("add", rd=5, value=v, **fields)
            pairs[f"alu_d{dist}_{port}"] = (prod, cons)
            prod = p.op("lw", rd=4, rs1=10, imm=4 * (k % 8), value=data[k % 8])
            _gap(p, dist)
            cons = p.op("sub" if port == "rs1" else "add", rd=5, value=data[k % 8], **fields)
            pairs[f"load_d{dist}_{port}"] = (prod, cons)
        # Store data and store address from the instruction `dist` before.
        p.op("addi", rd=4, rs1=0, imm=0x5A0 + dist, value=0x5A0 + dist)
        _gap(p, dist)
        p.op("sw", rs2=4, rs1=10, imm=64 + 4 * dist, value=0x5A0 + dist)
        p.op("addi", rd=11, rs1=10, imm=128 + 4 * dist, value=DATA + 128 + 4 * dist)
        _gap(p, dist)
        p.op("sw", rs2=4, rs1=11, imm=0, value=0x5A0 + dist)
        p.op("lw", rd=12, rs1=11, imm=0, value=0x5A0 + dist)        # store -> load
        # A load feeding a store's data and a branch's operands.
        p.op("lw", rd=4, rs1=10, imm=0, value=data[0])
        _gap(p, dist)
        p.op("sw", rs2=4, rs1=10, imm=192 + 4 * dist, value=data[0])
        p.op("addi", rd=13, rs1=0, imm=7, value=7)
        _gap(p, dist)
        p.op("bne", rs1=13, rs2=0, label=f"ok{dist}")
        p.op("addi", rd=14, rs1=0, imm=1, value=1, expect=False)
        p.label(f"ok{dist}")
        # The other late results: dsrr, csrr, recv, each used right behind (rs1 and rs2).
        prod = p.op("dsrr", rd=4, imm=3 << 3 | 1, value=0xD5D5D5D5)
        _gap(p, dist)
        cons = p.op("xor", rd=5, rs1=0, rs2=4, value=0xD5D5D5D5)
        pairs[f"dsrr_d{dist}"] = (prod, cons)
        prod = p.op("csrr", rd=4, imm=0x31, value=csr_value(0x31))
        _gap(p, dist)
        cons = p.op("or", rd=5, rs1=4, rs2=0, value=csr_value(0x31))
        pairs[f"csrr_d{dist}"] = (prod, cons)
        w = 0xAAAA0000 + dist
        prod = p.op("recv", rd=4, imm=2, value=w)
        _gap(p, dist)
        cons = p.op("add", rd=5, rs1=4, rs2=4, value=(2 * w) & MASK)
        pairs[f"recv_d{dist}"] = (prod, cons)
    # Two producers in flight: the younger one wins.
    p.op("addi", rd=4, rs1=0, imm=1, value=1)
    p.op("addi", rd=4, rs1=0, imm=2, value=2)
    p.op("add", rd=5, rs1=4, rs2=4, value=4)
    p.op("lw", rd=4, rs1=10, imm=4, value=data[1])
    p.op("addi", rd=4, rs1=4, imm=1, value=data[1] + 1)
    p.op("add", rd=5, rs1=4, rs2=0, value=data[1] + 1)
    # A launch's rs and rm forwarded from the two instructions before it.
    rs_value = pack(data=0x3C00, index=0x2A5)
    p.li(6, rs_value)
    p.op("addi", rd=7, rs1=0, imm=encode_fields(isa.LaunchModifier, prio=3), value=3)
    p.op("t.fmul", dst=1, a=2, b=3, rs=6, rm=7)
    p.op("halt")
    await host.run_program(p, budget=4000)
    await _no_error(host, "forwarding")
    trace = await host.trace()
    check_trace(trace, p.trace(), "forwarding")
    stored = await host.sram([(DATA + o) // 4 for o in (68, 72, 76, 132, 136, 140, 196, 200,
                                                       204)])
    assert stored == [0x5A1, 0x5A2, 0x5A3, 0x5A1, 0x5A2, 0x5A3] + [data[0]] * 3, \
        f"forwarding: stored words {[hex(v) for v in stored]}"
    launches = await host.launches()
    assert len(launches) == 1 and launches[0]["data"] == 0x3C00 and \
        launches[0]["index"] == 0x2A5 and launches[0]["launch.prio"] == 3, \
        f"forwarding: launch {launches}"
    stamp = {r.pc: r.cycle for r in trace}
    penalty = {}
    for name, (prod, cons) in pairs.items():
        distance = (cons - prod) // 4
        penalty[name] = stamp[cons] - stamp[prod] - distance
    for name, bubbles in penalty.items():
        late = not name.startswith("alu")
        want = 1 if late and name.endswith(("d1", "d1_rs1", "d1_rs2")) else 0
        assert bubbles == want, f"forwarding: {name}: {bubbles} bubbles, expected {want}"
    _report("forwarding", {"load_use_bubbles": penalty["load_d1_rs1"],
                           "alu_d1_bubbles": penalty["alu_d1_rs1"]})


# --- branches and jumps -------------------------------------------------------------------------

#: (branch, rs1, rs2, taken) -- written by hand.
BRANCH_CASES = [
    ("beq", 5, 5, True), ("beq", 5, 6, False), ("beq", 0x80000000, 0, False),
    ("bne", 5, 6, True), ("bne", 5, 5, False),
    ("blt", 0x80000000, 0, True), ("blt", 0, 0x80000000, False), ("blt", 0xFFFFFFFF, 1, True),
    ("blt", 7, 7, False),
    ("bge", 0, 0x80000000, True), ("bge", 0x80000000, 0, False), ("bge", 7, 7, True),
    ("bge", 0xFFFFFFFF, 0xFFFFFFFE, True),
    ("bltu", 0, 0x80000000, True), ("bltu", 0x80000000, 0, False),
    ("bltu", 1, 0xFFFFFFFF, True), ("bltu", 7, 7, False),
    ("bgeu", 0x80000000, 0, True), ("bgeu", 0, 0x80000000, False), ("bgeu", 7, 7, True),
    ("bgeu", 0xFFFFFFFF, 1, True),
]


@cocotb.test()
async def branches(dut):
    """Every branch taken / not taken at the edges; jal/jalr link values; back-to-back
    branches; a branch to the next instruction; the taken-branch and jal penalties."""
    host = await _host(dut)
    p = Prog()
    branch_pcs = []
    for i, (mnemonic, a, b, taken) in enumerate(BRANCH_CASES):
        p.li(4, a)
        p.li(5, b)
        pc = p.op(mnemonic, rs1=4, rs2=5, label=f"t{i}")
        p.op("addi", rd=6, rs1=0, imm=1, value=1, expect=not taken)
        p.op("addi", rd=6, rs1=0, imm=2, value=2, expect=not taken)
        p.label(f"t{i}")
        p.op("addi", rd=7, rs1=0, imm=i, value=i)
        branch_pcs.append((pc, taken))
    # A branch to the next instruction; back-to-back branches (not taken, then taken).
    p.op("beq", rs1=0, rs2=0, label="next")
    p.label("next")
    p.op("addi", rd=8, rs1=0, imm=1, value=1)
    p.op("bne", rs1=0, rs2=0, label="never")
    p.op("beq", rs1=0, rs2=0, label="b2")
    p.op("addi", rd=8, rs1=0, imm=2, value=2, expect=False)
    p.label("never")
    p.op("addi", rd=8, rs1=0, imm=3, value=3, expect=False)
    p.label("b2")
    p.op("beq", rs1=0, rs2=0, label="b3")            # taken right after a taken one
    p.op("addi", rd=8, rs1=0, imm=4, value=4, expect=False)
    p.label("b3")
    p.op("addi", rd=8, rs1=0, imm=5, value=5)
    p.op("halt")
    straight = p.trace()
    # jal / jalr (after the halt, reached through their own start).
    p.label("calls")
    jal_pc = p.op("jal", rd=8, label="fn", expect=False)
    ret = p.op("addi", rd=6, rs1=0, imm=33, expect=False)
    end_jump = p.op("jal", rd=0, label="end", expect=False)
    p.label("fn")
    p.op("addi", rd=7, rs1=0, imm=44, expect=False)
    jalr_pc = p.op("jalr", rd=9, rs1=8, imm=0, expect=False)
    p.label("end")
    p.op("addi", rd=10, rs1=0, imm=p.pc + 20, expect=False)       # -> "far" + 8
    jalr2 = p.op("jalr", rd=11, rs1=10, imm=-8, expect=False)     # rs1 forwarded, imm < 0
    p.op("halt", expect=False)
    p.label("far")
    p.op("halt", expect=False)
    await host.run_program(p, budget=4000)
    await _no_error(host, "branches")
    trace = await host.trace()
    check_trace(trace, straight, "branches")
    stamp = {r.pc: r.cycle for r in trace}
    for pc, taken in branch_pcs:
        following = (pc + 12) if taken else (pc + 4)
        gap = stamp[following] - stamp[pc]
        assert gap == (4 if taken else 1), \
            f"branches: pc {pc:#x}: the next record {gap} cycles later (taken={taken})"
    penalty_taken = stamp[p.at("b3")] - stamp[p.at("b2")] - 1

    # jal / jalr: link values, the targets, the jal penalty.
    await host.pulse("restart")
    await host.start_task(p.at("calls"))
    await host.run_until(lambda: host.stopped(), 500)
    await _no_error(host, "jal/jalr")
    end = p.at("end")
    want = [p.record(jal_pc, 8, jal_pc + 4), p.record(p.at("fn"), 7, 44),
            p.record(jalr_pc, 9, jalr_pc + 4), p.record(ret, 6, 33),
            p.record(end_jump, 0, 0), p.record(end, 10, end + 20),
            p.record(jalr2, 11, jalr2 + 4), p.record(p.at("far"))]
    trace = (await host.trace())[len(straight):]
    check_trace(trace, want, "jal/jalr")
    stamp = {r.pc: r.cycle for r in trace}
    penalty_jal = stamp[p.at("fn")] - stamp[jal_pc] - 1
    penalty_jalr = stamp[ret] - stamp[jalr_pc] - 1
    assert (penalty_taken, penalty_jal, penalty_jalr) == (3, 2, 3), \
        f"branches: penalties taken {penalty_taken}, jal {penalty_jal}, jalr {penalty_jalr}"
    _report("branches", {"taken_branch_bubbles": penalty_taken, "jal_bubbles": penalty_jal,
                         "jalr_bubbles": penalty_jalr})


@cocotb.test()
async def branch_shadow(dut):
    """A taken branch (and a jal) over every side-effect instruction: none of them happens,
    and words that would fault in the shadow do not."""
    host = await _host(dut)
    await host.write([(Region.SRAM, DATA // 4, 0x600D), (Region.DSR, 8 * 2, 0xD0)])
    await host.queue_recv(1, [0x11])
    p = Prog()
    p.li(10, DATA)
    p.li(4, 0xBAD)
    for kind in ("beq", "jal"):
        if kind == "beq":
            p.op("beq", rs1=0, rs2=0, label=f"over_{kind}")
        else:
            p.op("jal", rd=0, label=f"over_{kind}")
        p.op("sw", rs2=4, rs1=10, imm=0, expect=False)
        p.op("t.fmov", dst=1, a=2, b=3, rs=4, rm=0, expect=False)
        p.op("send", rs1=4, rs2=4, imm=1, expect=False)
        p.op("dsrw", rs1=4, imm=2 << 3, expect=False)
        p.op("recv", rd=5, imm=1, expect=False)
        p.op("tact", rs1=4, imm=3, expect=False)
        p.op("tblk", imm=3, expect=False)
        p.op("halt", expect=False)
        p.word(0)                                        # illegal
        p.op("lw", rd=5, rs1=10, imm=2, expect=False)    # misaligned
        p.label(f"over_{kind}")
    p.op("recv", rd=6, imm=1, value=0x11)               # the queued word is still there
    p.op("halt")
    await host.run_program(p, budget=1000)
    await _no_error(host, "branch shadow")
    check_trace(await host.trace(), p.trace(), "branch shadow")
    assert await host.sram([DATA // 4]) == [0x600D], "branch shadow: the sw happened"
    assert await host.read([(Region.DSR, 16)]) == [0xD0], "branch shadow: the dsrw happened"
    for region in (Region.LAUNCH, Region.SEND, Region.TASK):
        entries = await host.log(region)
        assert not entries, f"branch shadow: {region.name} log {entries}"


# --- loads and stores ---------------------------------------------------------------------------

@cocotb.test()
async def memory(dut):
    """Stores and loads at bank boundaries (8 banks: words 7/8, 15/16), with negative
    offsets, and at the last SRAM word."""
    host = await _host(dut)
    p = Prog()
    p.li(10, DATA)
    addresses = [DATA + 4 * w for w in (0, 7, 8, 15, 16, 23, 24)] + [SRAM_BYTES - 4]
    for i, addr in enumerate(addresses):
        p.li(11, addr + 8)
        p.li(4, 0xC0DE0000 + i)
        p.op("sw", rs2=4, rs1=11, imm=-8, value=0xC0DE0000 + i)
    for i, addr in enumerate(addresses):
        p.li(11, addr)
        p.op("lw", rd=5, rs1=11, imm=0, value=0xC0DE0000 + i)
    p.op("sw", rs2=0, rs1=10, imm=4 * 7, value=0)                 # stores r0
    p.op("lw", rd=6, rs1=10, imm=4 * 7, value=0)
    p.op("halt")
    await host.run_program(p, budget=3000)
    await _no_error(host, "memory")
    check_trace(await host.trace(), p.trace(), "memory")
    got = await host.sram([a // 4 for a in addresses])
    want = [0xC0DE0000, 0] + [0xC0DE0000 + i for i in range(2, len(addresses))]
    assert got == want, f"memory: SRAM {[hex(v) for v in got]}"


# --- PE side effects ----------------------------------------------------------------------------

@cocotb.test()
async def pe_ports(dut):
    """launch (every op, every modifier), dsrw/dsrr, csrr, send/sendc, recv, tact/tblk/
    tunblk, checked against the harness's logs."""
    host = await _host(dut)
    await host.write([(Region.DSR, 8 * 43 + 7, 0x43430707)])
    await host.queue_recv(5, [pack(1, 2, 0, 5), pack(3, 4, 1, 5)])
    await host.queue_recv(23, [0x2323])
    p = Prog()
    wave = pack(data=0xBEEF, index=0x3FF, ctrl=1, color=9)
    p.li(4, wave)
    mod = encode_fields(isa.LaunchModifier, prio=2, idx=0b101, adv=0b010, clear_a=1,
                        s_dsr=1, s=7)
    p.li(5, mod)
    p.op("t.fmac", dst=1, a=2, b=3, rs=4, rm=5)
    for op in TensorOp:
        p.op(f"t.{op.name.lower()}", dst=10 + op.value, a=20, b=30, rs=4, rm=0)
    p.li(6, 0x76543210)
    p.op("dsrw", rs1=6, imm=5 << 3 | 3)
    p.op("dsrr", rd=7, imm=5 << 3 | 3, value=0x76543210)
    p.op("dsrr", rd=7, imm=43 << 3 | 7, value=0x43430707)
    p.op("csrr", rd=8, imm=0x31, value=csr_value(0x31))
    p.op("csrr", rd=8, imm=0xFF, value=csr_value(0xFF))
    p.op("csrr", rd=8, imm=0, value=csr_value(0))
    p.li(9, 0x12345)
    p.op("send", rs1=4, rs2=9, imm=3)
    p.op("sendc", rs1=9, rs2=4, imm=23)
    p.op("recv", rd=11, imm=5, value=pack(1, 2, 0, 5))
    p.op("recv", rd=11, imm=5, value=pack(3, 4, 1, 5))
    p.op("recv", rd=12, imm=23, value=0x2323)
    p.op("tact", rs1=4, imm=4)
    p.op("tblk", imm=31)
    p.op("tunblk", imm=0)
    p.op("halt")
    await host.run_program(p, budget=2000)
    await _no_error(host, "pe ports")
    check_trace(await host.trace(), p.trace(), "pe ports")
    launches = await host.launches()
    want = [dict(op=TensorOp.FMAC, dst=1, a=2, b=3, s=7, prio=2, idx=0b101, adv=0b010,
                 clear_a=1)]
    want += [dict(op=op, dst=10 + op.value, a=20, b=30, s=DSR_WAVELET, prio=0, idx=0,
                  adv=0, clear_a=0) for op in TensorOp]
    assert len(launches) == len(want), f"pe ports: {len(launches)} launches"
    for got, exp in zip(launches, want):
        for name, value in exp.items():
            value = getattr(value, "value", value)
            assert got[f"launch.{name}"] == value, \
                f"pe ports: launch {exp}: {name} = {got[f'launch.{name}']}"
        assert (got["data"], got["index"], got["core"]) == (0xBEEF, 0x3FF, 1), \
            f"pe ports: launch data/index/core {got}"
    assert (await host.read([(Region.DSR, 8 * 5 + 3)])) == [0x76543210], "pe ports: dsrw"
    sends = [e["word"] for e in await host.log(Region.SEND)]
    assert sends == [pack(0xBEEF, 0x345, 0, 3), pack(0x2345, wave & 0x3FF, 1, 23)], \
        f"pe ports: sends {[hex(s) for s in sends]}"
    tasks = [(e["op_task"] & 3, e["op_task"] >> 2, e["arg"])
             for e in await host.log(Region.TASK)]
    assert tasks == [(TaskOp.ACTIVATE.value, 4, wave), (TaskOp.BLOCK.value, 31, 0),
                     (TaskOp.UNBLOCK.value, 0, 0)], f"pe ports: task controls {tasks}"


# --- stalls on every port -----------------------------------------------------------------------

def _mixed_program(iterations=6):
    """A loop through every port: lw/sw, launch, dsrw/dsrr, csrr, send, recv, tact."""
    p = Prog()
    p.li(10, DATA)
    p.li(4, 0)
    p.li(5, iterations)
    p.li(7, 0)
    p.label("loop")
    p.op("lw", rd=6, rs1=10, imm=0)
    p.op("add", rd=7, rs1=7, rs2=6)
    p.op("sw", rs2=7, rs1=10, imm=256)
    p.op("t.fadd", dst=1, a=2, b=3, rs=7, rm=4)
    p.op("send", rs1=7, rs2=4, imm=1)
    p.op("dsrw", rs1=7, imm=2 << 3 | 5)
    p.op("dsrr", rd=8, imm=2 << 3 | 5)
    p.op("add", rd=9, rs1=8, rs2=8)
    p.op("csrr", rd=9, imm=0x10)
    p.op("recv", rd=11, imm=4)
    p.op("tact", rs1=11, imm=3)
    p.op("xor", rd=12, rs1=11, rs2=9)
    p.op("addi", rd=10, rs1=10, imm=4)
    p.op("addi", rd=4, rs1=4, imm=1)
    p.op("blt", rs1=4, rs2=5, label="loop")
    p.op("twait")
    p.op("halt")
    return p


async def _run_mixed(host, p, iterations):
    await host.write([(Region.SRAM, DATA // 4 + i, 0x1000 * (i + 1) + i)
                      for i in range(iterations)])
    await host.queue_recv(4, [pack(i, i, 0, 4) for i in range(iterations)])
    start = int(host.dut.cycle.value)
    await host.run_program(p, budget=20000)
    cycles = int(host.dut.cycle.value) - start
    await _no_error(host, "stalls")
    trace = [(r.pc, r.word, r.rd, r.value) for r in await host.trace()]
    logs = {r.name: [{k: v for k, v in e.items() if k != "cycle"}
                     for e in await host.log(r)]
            for r in (Region.LAUNCH, Region.SEND, Region.TASK)}
    stored = await host.sram([DATA // 4 + 64 + i for i in range(iterations)])
    regs = await host.gprs()
    return trace, logs, stored, regs, cycles


@cocotb.test()
async def stalls(dut):
    """The mixed program with random bank denials and port stalls (tb_params rate_bank,
    rate_port, seed) gives the trace, logs, memory and registers of the run without."""
    p = params()
    iterations = 6
    prog = _mixed_program(iterations)
    host = CoreHost(dut)
    await host.reset()
    ref = await _run_mixed(host, prog, iterations)
    rates = (p.get("rate_bank", 6), p.get("rate_port", 6))
    await host.reset(rate_bank=rates[0], rate_port=rates[1], seed=p.get("seed", 1))
    got = await _run_mixed(host, prog, iterations)
    stall_cycles = int(dut.stall_bank_count.value)
    for name, a, b in zip(("trace", "logs", "stored words", "registers"), got, ref):
        assert a == b, f"stalls {rates}: the {name} differ from the run without stalls"
    assert len(ref[0]) == 4 + 15 * iterations + 2, f"stalls: {len(ref[0])} retired"
    assert got[4] > ref[4] and stall_cycles > 0, \
        f"stalls: {got[4]} cycles with stalls vs {ref[4]} without, {stall_cycles} bank waits"
    _report("stalls", {"rates": rates, "cycles": got[4], "cycles_no_stall": ref[4],
                       "stall_bank_cycles": stall_cycles})


# --- tasks ----------------------------------------------------------------------------------------

REDUCE_PC = 0x200


def _reduce_task():
    """The GEMM reduction command as a code task: two launches from the wavelet and tend."""
    p = Prog(REDUCE_PC)
    p.op("t.fmov", dst=1, a=2, b=DSR_WAVELET, rs=3, rm=0)
    p.op("t.fadd", dst=4, a=5, b=6, rs=3, rm=0)
    p.op("tend")
    return p


@cocotb.test()
async def tasks(dut):
    """Task start registers (r1, r2, r3), tend/done, back-to-back starts, the latencies of
    the reduction task, halt and restart (registers kept)."""
    host = await _host(dut)
    # A task that reports its start registers, and one that keeps a value for the next.
    a = Prog(0x100)
    a.op("add", rd=6, rs1=1, rs2=0, value=ANY)
    a.op("add", rd=7, rs1=2, rs2=0, value=ANY)
    a.op("add", rd=8, rs1=3, rs2=0, value=ANY)
    a.op("addi", rd=12, rs1=12, imm=1, value=ANY)
    a.op("tend")
    await host.load(a.words(), a.base)
    wave = pack(data=0xBEEF, index=0x2A5, ctrl=1, color=7)
    await host.start_task(a.base, task=9, wavelet=wave)
    await host.run_until(lambda: int(dut.done_count.value) == 1, 200)
    assert host.status()["task"] == 9 and not host.status()["running"], \
        f"tasks: status after tend {host.status()}"
    trace = await host.trace()
    assert [r.value for r in trace[:3]] == [0xBEEF, 0x2A5, wave], \
        f"tasks: start registers {[hex(r.value) for r in trace[:3]]}"

    # Back to back: three reduction tasks queued at once.
    r = _reduce_task()
    await host.load(r.words(), r.base)
    base = len(await host.log(Region.STARTS))
    waves = [pack(data=0x3C00 + i, index=i + 1, ctrl=1, color=2) for i in range(3)]
    for i, w in enumerate(waves):
        await host.start_task(r.base, task=20 + i, wavelet=w)
    await host.run_until(lambda: int(dut.done_count.value) == 4, 300)
    starts = (await host.log(Region.STARTS))[base:]
    dones = (await host.log(Region.DONES))[1:]
    launches = await host.launches()
    trace = (await host.trace())[5:]
    assert len(starts) == 3 and len(dones) == 3 and len(launches) == 6 and len(trace) == 9, \
        f"tasks: {len(starts)} starts, {len(dones)} dones, {len(launches)} launches, " \
        f"{len(trace)} retired"
    for i, w in enumerate(waves):
        for j, op in enumerate((TensorOp.FMOV, TensorOp.FADD)):
            got = launches[2 * i + j]
            assert (got["launch.op"], got["data"], got["index"]) == \
                (op.value, 0x3C00 + i, i + 1), f"tasks: launch {2 * i + j}: {got}"
        assert (starts[i]["task_pc"] & 31) == 20 + i, f"tasks: start {i}: {starts[i]}"
    check_trace(trace[:3], r.trace(), "reduction task")
    s0 = starts[0]["cycle"]
    figures = {
        "start_to_first_x": trace[0].cycle - 2 - s0,     # X is 2 cycles before W (trace)
        "start_to_first_launch": launches[0]["cycle"] - s0,
        "start_to_second_launch": launches[1]["cycle"] - s0,
        "start_to_done": dones[0]["cycle"] - s0,
        "done_to_next_start": starts[1]["cycle"] - dones[0]["cycle"],
        "task_period": starts[2]["cycle"] - starts[1]["cycle"],
    }
    assert figures == {"start_to_first_x": 3, "start_to_first_launch": 4,
                       "start_to_second_launch": 5, "start_to_done": 6,
                       "done_to_next_start": 0, "task_period": 6}, f"tasks: {figures}"
    _report("tasks", figures)

    # halt: the core stops and takes no start until restarted; registers are kept.
    h = Prog(0x300)
    h.op("addi", rd=12, rs1=12, imm=100, value=101)
    h.op("halt")
    await host.load(h.words(), h.base)
    await host.start_task(h.base, task=1)
    await host.run_until(host.stopped, 200)
    halted_pc = int(dut.pc.value)
    await host.start_task(a.base, task=2, wavelet=wave)
    await ClockCycles(dut.clk, 40)
    assert int(dut.start_pending.value) == 1 and host.status()["halted"], \
        f"tasks: a halted core took a start ({host.status()})"
    assert halted_pc == h.pc - 4, f"tasks: pc after halt {halted_pc:#x}"
    await host.pulse("restart")
    await host.run_until(lambda: int(dut.done_count.value) == 5, 200)
    regs = await host.gprs()
    assert regs[12] == 102, f"tasks: r12 = {regs[12]} after halt, restart and a task"


# --- twait ----------------------------------------------------------------------------------------

@cocotb.test()
async def twait(dut):
    """twait waits while ops_pending is high: for a launch's latency (op_latency) and for
    the ops_pending input; status.waiting shows it."""
    host = await _host(dut, op_latency=20)
    p = Prog()
    p.op("t.fmov", dst=1, a=2, b=3, rs=0, rm=0)
    p.op("twait")
    after = p.op("addi", rd=6, rs1=0, imm=1, value=1)
    p.op("halt")
    await host.run_program(p, budget=200)
    await _no_error(host, "twait")
    trace = await host.trace()
    check_trace(trace, p.trace(), "twait")
    launch = (await host.launches())[0]["cycle"]
    assert trace[2].pc == after and trace[2].cycle - launch >= 20, \
        f"twait: the instruction after twait retired {trace[2].cycle - launch} cycles " \
        f"after the launch (latency 20)"
    # The ops_pending input (a tensor op launched earlier is still live).
    await host.pulse("restart")
    q = Prog(0x100)
    q.op("twait")
    q.op("addi", rd=6, rs1=0, imm=2, value=2)
    q.op("halt")
    await host.load(q.words(), q.base)
    dut.ops_pending.value = 1
    await host.start_task(q.base)
    await ClockCycles(dut.clk, 50)
    assert int(dut.trace_count.value) == 4 and host.status()["waiting"], \
        f"twait: ran past twait with ops_pending high ({int(dut.trace_count.value)} " \
        f"retired, status {host.status()})"
    dut.ops_pending.value = 0
    await host.run_until(host.stopped, 100)
    await _no_error(host, "twait")
    check_trace((await host.trace())[4:], q.trace(), "twait on ops_pending")


# --- faults ---------------------------------------------------------------------------------------

def _fault_cases():
    """(name, program, setup writes/inputs, code, info, faulting pc, start pc or None).

    Every program retires the instructions before the fault (their records are expected)
    and has instructions with side effects after it that must not happen."""
    cases = []

    def case(name, build, code, info, setup=None, start=None):
        p = Prog(0x800)
        p.li(10, DATA)
        p.op("addi", rd=4, rs1=0, imm=0x77, value=0x77)
        fault_pc = build(p)
        p.op("sw", rs2=4, rs1=10, imm=0, expect=False)       # must not happen
        p.op("send", rs1=4, rs2=4, imm=0, expect=False)
        p.op("halt", expect=False)
        cases.append((name, p, setup or {}, code, info, fault_pc, start))

    E = ErrorCode
    LW, SW, JALR, CSRR = (isa.Opcode[n].value for n in ("LW", "SW", "JALR", "CSRR"))
    case("zero word", lambda p: p.word(0), E.ILLEGAL_INSTRUCTION, 0)
    case("unused opcode", lambda p: p.word(0x0B << 26), E.ILLEGAL_INSTRUCTION, 0x0B)
    case("undefined tensor op", lambda p: p.word(0x3F << 26), E.ILLEGAL_INSTRUCTION, 0x3F)
    case("R with nonzero zero field",
         lambda p: p.word(isa.encode("add", rd=1, rs1=2, rs2=3) | 1),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.ADD.value)
    case("halt with an operand", lambda p: p.word(isa.encode("halt") | (1 << 22)),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.HALT.value)
    case("lw misaligned", lambda p: p.op("lw", rd=5, rs1=10, imm=2, expect=False),
         E.CORE_MISALIGNED, LW)
    case("sw misaligned", lambda p: p.op("sw", rs2=4, rs1=10, imm=-1, expect=False),
         E.CORE_MISALIGNED, SW)
    case("lw past the SRAM", lambda p: (p.li(11, SRAM_BYTES),
                                        p.op("lw", rd=5, rs1=11, imm=0, expect=False))[1],
         E.CORE_ADDRESS, LW)
    case("sw below 0", lambda p: p.op("sw", rs2=4, rs1=0, imm=-4, expect=False),
         E.CORE_ADDRESS, SW)
    case("jalr misaligned", lambda p: p.op("jalr", rd=5, rs1=10, imm=2, expect=False),
         E.CORE_MISALIGNED, JALR)
    case("csrr 0x100", lambda p: p.op("csrr", rd=5, imm=0x100, expect=False),
         E.ILLEGAL_INSTRUCTION, CSRR)
    case("dsrr of DSR 44", lambda p: p.op("dsrr", rd=5, imm=44 << 3, expect=False),
         E.BAD_OPERAND, 44)
    case("dsrw of a busy DSR", lambda p: p.op("dsrw", rs1=4, imm=5 << 3 | 1, expect=False),
         E.DSR_BUSY, 5, setup={"dsr_busy": 1 << 5})
    case("recv of a bound color", lambda p: p.op("recv", rd=5, imm=2, expect=False),
         E.BAD_OPERAND, 2, setup={"recv_bound": 1 << 2})
    # Operands beyond the encoding (isa.IMM_OPERANDS) make the word not an instruction; the
    # info byte is the opcode. (BAD_COLOR / BAD_TASK are for operands inside the encoding
    # but beyond a PE with fewer colors or tasks than the encoding's 24 / 32.)
    case("recv of color 24", lambda p: p.op("recv", rd=5, imm=24, expect=False),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.RECV.value)
    case("send on color 31", lambda p: p.op("sendc", rs1=4, rs2=4, imm=31, expect=False),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.SENDC.value)
    case("tact of task 32", lambda p: p.op("tact", rs1=4, imm=32, expect=False),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.TACT.value)
    case("tblk of task -1", lambda p: p.op("tblk", imm=-1, expect=False),
         E.ILLEGAL_INSTRUCTION, isa.Opcode.TBLK.value)
    case("jal past the SRAM",
         lambda p: (p.op("jal", rd=5, imm=(SRAM_BYTES - p.pc) // 4, value=p.pc + 4),
                    SRAM_BYTES)[1], E.CORE_ADDRESS, 0)
    return cases


@cocotb.test()
async def faults(dut):
    """Every fault: its code and info on `error` (once), the pc it reports, the
    instructions before it retired and none after it (no side effect); restart leaves the
    fault with the registers kept. Then: a task start at a misaligned pc, a run off the
    end of the SRAM, and faults that must not be taken (after tend, in a branch shadow)."""
    host = await _host(dut)
    retired = 0
    errors_seen = 0
    for name, p, setup, code, info, fault_pc, start in _fault_cases():
        await host.write([(Region.SRAM, DATA // 4, 0x5AFE)])
        for signal, value in setup.items():
            getattr(dut, signal).value = value
        await host.run_program(p, budget=500)
        for signal in setup:
            getattr(dut, signal).value = 0
        status = host.status()
        assert status["fault"] and not status["running"], f"{name}: status {status}"
        errors = (await host.errors())[errors_seen:]
        assert [(c, i) for c, i, _ in errors] == [(code.value, info)], \
            f"{name}: errors {[(ErrorCode(c), i) for c, i, _ in errors]}, expected " \
            f"{(code, info)}"
        assert int(dut.pc.value) == fault_pc, \
            f"{name}: pc {int(dut.pc.value):#x}, expected {fault_pc:#x}"
        trace = (await host.trace())[retired:]
        check_trace(trace, p.trace(), name)
        assert await host.sram([DATA // 4]) == [0x5AFE], f"{name}: the sw after it happened"
        assert not await host.log(Region.SEND), f"{name}: the send after it happened"
        retired += len(trace)
        errors_seen += 1
        await host.pulse("restart")
        assert not host.stopped(), f"{name}: still stopped after restart"
    regs = await host.gprs()
    assert regs[4] == 0x77 and regs[5] != 0 and regs[10] == DATA, \
        f"faults: registers after restarts {[hex(r) for r in regs]}"

    # A task start at a misaligned pc; running off the end of the SRAM.
    await host.start_task(0x802)
    await host.run_until(host.stopped, 100)
    errors = (await host.errors())[errors_seen:]
    assert [(c, i) for c, i, _ in errors] == [(ErrorCode.CORE_MISALIGNED.value, 0)] and \
        int(dut.pc.value) == 0x802, f"misaligned start: {errors}, pc {int(dut.pc.value):#x}"
    await host.pulse("restart")
    errors_seen += 1
    end = Prog(SRAM_BYTES - 8)
    end.op("addi", rd=6, rs1=0, imm=6, value=6)
    end.op("addi", rd=6, rs1=6, imm=1, value=7)
    await host.run_program(end, budget=100)
    errors = (await host.errors())[errors_seen:]
    assert [(c, i) for c, i, _ in errors] == [(ErrorCode.CORE_ADDRESS.value, 0)] and \
        int(dut.pc.value) == SRAM_BYTES, \
        f"off the end: {errors}, pc {int(dut.pc.value):#x}"
    check_trace((await host.trace())[retired:], end.trace(), "off the end")
    retired += 2
    await host.pulse("restart")
    errors_seen += 1

    # Not taken: words after tend, and in the shadow of a taken branch, that would fault.
    t = Prog(0x900)
    t.op("beq", rs1=0, rs2=0, label="skip")
    t.word(0)
    t.op("lw", rd=5, rs1=0, imm=1, expect=False)
    t.label("skip")
    t.op("tend")
    t.word(0)
    t.op("csrr", rd=5, imm=0x200, expect=False)
    await host.run_program(t, budget=100)
    assert len(await host.errors()) == errors_seen and not host.stopped(), \
        f"faults: a flushed instruction faulted: {await host.errors()}"
    check_trace((await host.trace())[retired:], t.trace(), "flushed faults")


# --- CPI ------------------------------------------------------------------------------------------

@cocotb.test()
async def cpi(dut):
    """Straight-line code retires one instruction per cycle (a chain of dependent ALU ops,
    so every one uses the M -> X forward); a loop's iteration costs its instructions plus
    the taken-branch penalty."""
    host = await _host(dut)
    n = 200
    p = Prog()
    for i in range(n):
        p.op("addi", rd=4, rs1=4, imm=1, value=i + 1)
    p.li(5, 10)
    p.label("loop")
    p.op("addi", rd=6, rs1=6, imm=1, expect=False)
    p.op("bne", rs1=6, rs2=5, label="loop", expect=False)
    p.op("halt", expect=False)
    await host.run_program(p, budget=2000)
    await _no_error(host, "cpi")
    trace = await host.trace()
    check_trace(trace[:n], p.trace()[:n], "cpi")
    cycles = trace[n - 1].cycle - trace[0].cycle + 1
    cpi_value = cycles / n
    loop = [r for r in trace if r.pc == p.at("loop")]
    per_iteration = (loop[-1].cycle - loop[0].cycle) / (len(loop) - 1)
    assert cpi_value == 1.0 and per_iteration == 2 + 3, \
        f"cpi: {cpi_value} on straight-line code, {per_iteration} cycles per 2-insn loop"
    _report("cpi", {"straight_line_cpi": cpi_value, "loop_cycles_per_iteration":
                    per_iteration, "instructions": n})
