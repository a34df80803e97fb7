"""Directed test programs of the control core, with expectations written by hand.

Each :class:`CoreCase` is an assembly program (code at byte address 0, run from reset) and
what it must leave behind: every non-zero register (the others must be 0), memory words,
how it stops (``halt``, a fault with its code and PC, or an idle core), and for some the
retired-instruction count and the cycle count of the pipeline's design targets (6 stages:
``5 + retired + bubbles``; a taken branch or ``jalr`` 3 bubbles, ``jal`` 2, a load-use 1).
Nothing here is computed by the ISS: ``tests/test_iss.py`` checks the ISS against these
values, and the RTL core will be checked on the same table.

The table covers every instruction and the edges of issue 10: wrap-around, shift amounts
0/31/above 31, signed vs unsigned compares and branches at 0x80000000 / 0x7FFFFFFF /
0xFFFFFFFF, link values, ``li`` with a negative low part, bank boundaries and the last SRAM
word, misaligned and out-of-range accesses and jumps, undefined words, back-to-back branches,
a branch to the next instruction, forwarding distances 1..4 after ALU ops and loads, ``r0``.

Data addresses: code from 0; data at 0x400 (tensor cases) and 0x8000 (scalar cases); the
SRAM is 12288 words (0x0..0xBFFC, 8 banks: word w in bank w % 8).
"""

from dataclasses import dataclass, field

from rtl.pe.regs import ErrorCode, TensorOp

__all__ = ["CoreCase", "CASES", "ILLEGAL_WORDS", "SRAM_BYTES", "case_by_name"]

SRAM_BYTES = 12288 * 4


@dataclass(frozen=True)
class CoreCase:
    """One directed program and its hand-written expectations.

    Attributes
    ----------
    name, what : str
        Identifier and a one-line description.
    source : str
        Assembly text (code placed at byte address 0, started from reset at 0).
    regs : dict
        Register -> expected unsigned value; every register not named must be 0.
    mem : dict
        Byte address -> expected word.
    stop : str
        ``"halt"``, ``"fault"`` or ``"idle"`` (``tend`` with no task left).
    fault : ErrorCode
        The fault's code when ``stop == "fault"``.
    pc : int
        The PC it stops at: the ``halt``, the faulting instruction or fetch, the ``tend``.
    retired, cycles : int
        Optional: instructions retired, cycles of the design-target pipeline.
    inputs : dict
        Color -> wavelets ``(data, index, ctrl)`` queued before the start.
    outputs : dict
        Color -> wavelets ``(data, index, ctrl)`` the program must send.
    binds : dict
        Color -> ``{"data_task", "ctrl_base", "prio"}`` bindings set before the start.
    """
    name: str
    what: str
    source: str
    regs: dict
    mem: dict = field(default_factory=dict)
    stop: str = "halt"
    fault: ErrorCode = None
    pc: int = None
    retired: int = None
    cycles: int = None
    inputs: dict = field(default_factory=dict)
    outputs: dict = field(default_factory=dict)
    binds: dict = field(default_factory=dict)

    def mismatches(self, regs, read_word, stop, pc, fault=None, retired=None, cycles=None,
                   outputs=None):
        """Differences between a run and the expectations, as readable strings.

        ``regs``: the 16 register values; ``read_word(byte_address)``: a memory reader;
        ``stop``, ``pc``, ``fault`` (an ErrorCode or None), ``retired``, ``cycles``,
        ``outputs`` as the run reports them (``None``: not checked)."""
        out = []
        for r in range(16):
            want = self.regs.get(r, 0)
            if regs[r] != want:
                out.append(f"r{r} = {regs[r]:#010x}, expected {want:#010x}")
        for address, want in sorted(self.mem.items()):
            got = read_word(address)
            if got != want:
                out.append(f"word at {address:#x} = {got:#010x}, expected {want:#010x}")
        if stop != self.stop:
            out.append(f"stopped by {stop}, expected {self.stop}")
        if self.pc is not None and pc != self.pc:
            out.append(f"stopped at PC {pc:#x}, expected {self.pc:#x}")
        if self.stop == "fault" and fault != self.fault:
            out.append(f"fault {getattr(fault, 'name', fault)}, expected {self.fault.name}")
        if self.retired is not None and retired is not None and retired != self.retired:
            out.append(f"retired {retired}, expected {self.retired}")
        if self.cycles is not None and cycles is not None and cycles != self.cycles:
            out.append(f"{cycles} cycles, expected {self.cycles}")
        if outputs is not None:
            got = {c: list(v) for c, v in outputs.items() if v}
            if got != self.outputs:
                out.append(f"sent {got}, expected {self.outputs}")
        return out


def _fault(name, what, source, code, pc, regs=None, **kw):
    return CoreCase(name, what, source, regs or {}, stop="fault", fault=code, pc=pc, **kw)


M = ErrorCode.CORE_MISALIGNED
A = ErrorCode.CORE_ADDRESS
ILL = ErrorCode.ILLEGAL_INSTRUCTION

#: Words that are not instructions, each with why (encodings worked out by hand from the
#: formats of rtl/pe/isa.py).
ILLEGAL_WORDS = {
    0x00000000: "opcode 0 (reserved: zero memory is not code)",
    0x2C000000: "opcode 0x0B (unused)",
    0x3C000000: "opcode 0x0F (unused)",
    0x40000000: "opcode 0x10 (unused)",
    0x98000000: "opcode 0x26 (unused)",
    0x0448C001: "add r1, r2, r3 with bit 0 of its zero field set",
    0x68100000: "lui with bit 20 (its zero field) set",
    0x30400000: "twait with rd = 1",
    0x9C040000: "csrr with rs1 = 1",
    0x9C000100: "csrr of offset 0x100 (outside the register region it reads)",
    0xA0000200: "dsrw with imm 0x200 (DSR id 64)",
    0xA8000018: "send on color 24",
    0xB4000020: "tact of task 32",
    0xB803FFFF: "tblk with a negative immediate",
    0xC0000000 | (len(TensorOp) << 26): f"tensor launch of op {len(TensorOp)} (undefined)",
    0xFC000000: "tensor launch of op 15 (undefined)",
}

_DSR_SETUP = """
.equ A, 1
.equ B, 2
.equ Y, 3
      addi r1, r0, 1          # word 0: kind MEM, FP16
      dsrw r1, A, 0
      dsrw r1, B, 0
      dsrw r1, Y, 0
      li   r2, 0x200          # word 1: base (FP16 element 0x200 = byte 0x400)
      dsrw r2, A, 1
      li   r2, 0x204          # byte 0x408
      dsrw r2, B, 1
      li   r2, 0x208          # byte 0x410
      dsrw r2, Y, 1
      li   r3, 0x1004         # word 2: dims[0] = (len 4, stride 1)
      dsrw r3, A, 2
      dsrw r3, B, 2
      dsrw r3, Y, 2
      addi r4, r0, 1          # words 3..5: dims[1..3] = (len 1, stride 0)
      dsrw r4, A, 3
      dsrw r4, A, 4
      dsrw r4, A, 5
      dsrw r4, B, 3
      dsrw r4, B, 4
      dsrw r4, B, 5
      dsrw r4, Y, 3
      dsrw r4, Y, 4
      dsrw r4, Y, 5
"""
# a = [1, 2, 3, 4], b = [0.5, 0.5, -1, 8] (FP16), at bytes 0x400 and 0x408.
_TENSOR_DATA = """
      .org 0x400
      .word 0x40003C00, 0x44004200, 0x38003800, 0x4800BC00
"""
_SETUP_REGS = {1: 1, 2: 0x208, 3: 0x1004, 4: 1}
_TENSOR_INPUT_MEM = {0x400: 0x40003C00, 0x404: 0x44004200, 0x408: 0x38003800,
                     0x40C: 0x4800BC00}

CASES = [
    CoreCase(
        "add_sub_wrap", "add, sub, addi wrap modulo 2^32; addi's extreme immediates",
        """
        li   r1, 0xFFFFFFFF
        addi r2, r0, 1
        add  r3, r1, r2
        sub  r4, r0, r2
        li   r5, 0x7FFFFFFF
        add  r6, r5, r2
        sub  r7, r6, r2
        addi r8, r1, 1
        addi r9, r0, -1
        addi r10, r5, 131071
        addi r11, r0, -131072
        sub  r12, r6, r5
        add  r13, r6, r6
        halt
        """,
        {1: 0xFFFFFFFF, 2: 1, 3: 0, 4: 0xFFFFFFFF, 5: 0x7FFFFFFF, 6: 0x80000000,
         7: 0x7FFFFFFF, 8: 0, 9: 0xFFFFFFFF, 10: 0x8001FFFE, 11: 0xFFFE0000, 12: 1, 13: 0},
        pc=0x38, retired=15, cycles=20),
    CoreCase(
        "logic", "and/or/xor and their immediate forms (immediates sign-extended)",
        """
        li   r1, 0x0F0F0F0F
        andi r2, r1, -1
        andi r3, r1, 0xFF
        ori  r4, r0, -256
        xori r5, r1, -1
        li   r6, 0x00FF00FF
        and  r7, r1, r6
        or   r8, r1, r6
        xor  r9, r1, r6
        andi r10, r1, -131072
        ori  r11, r0, 131071
        xori r12, r6, 0x1234
        halt
        """,
        {1: 0x0F0F0F0F, 2: 0x0F0F0F0F, 3: 0x0F, 4: 0xFFFFFF00, 5: 0xF0F0F0F0,
         6: 0x00FF00FF, 7: 0x000F000F, 8: 0x0FFF0FFF, 9: 0x0FF00FF0, 10: 0x0F0E0000,
         11: 0x1FFFF, 12: 0x00FF12CB},
        retired=15, cycles=20),
    CoreCase(
        "shift_register", "sll/srl/sra by 0, 31, 32, 33 and 0xFFFFFFFF (low 5 bits)",
        """
        li   r1, 0x80000001
        addi r2, r0, 31
        addi r3, r0, 32
        addi r4, r0, 33
        addi r5, r0, -1
        sll  r6, r1, r0
        sll  r7, r1, r2
        srl  r8, r1, r2
        sra  r9, r1, r2
        sll  r10, r1, r3
        srl  r11, r1, r4
        sra  r12, r1, r4
        sra  r13, r1, r5
        slli r14, r1, 0
        srli r15, r1, 63
        halt
        """,
        {1: 0x80000001, 2: 31, 3: 32, 4: 33, 5: 0xFFFFFFFF, 6: 0x80000001, 7: 0x80000000,
         8: 1, 9: 0xFFFFFFFF, 10: 0x80000001, 11: 0x40000000, 12: 0xC0000000,
         13: 0xFFFFFFFF, 14: 0x80000001, 15: 1},
        retired=17, cycles=22),
    CoreCase(
        "shift_immediate", "slli/srli/srai by 0, 31, 32, 33, -1 and 131071 (low 5 bits)",
        """
        li   r1, 0x80000001
        slli r2, r1, 31
        srai r3, r1, 31
        srli r4, r1, 32
        srai r5, r1, 33
        slli r6, r1, 33
        srli r7, r1, -1
        srai r8, r1, 0
        li   r9, 0x7FFFFFFF
        srai r10, r9, 31
        sra  r11, r9, r0
        srli r12, r1, 131071
        halt
        """,
        {1: 0x80000001, 2: 0x80000000, 3: 0xFFFFFFFF, 4: 0x80000001, 5: 0xC0000000,
         6: 0x00000002, 7: 1, 8: 0x80000001, 9: 0x7FFFFFFF, 10: 0, 11: 0x7FFFFFFF, 12: 1},
        retired=15),
    CoreCase(
        "compare", "slt/sltu/slti/sltiu at 0x80000000, 0x7FFFFFFF, 0xFFFFFFFF",
        """
        li    r1, 0x80000000
        li    r2, 0x7FFFFFFF
        li    r3, 0xFFFFFFFF
        slt   r4, r1, r2
        sltu  r5, r1, r2
        slt   r6, r3, r0
        sltu  r7, r3, r0
        slt   r8, r2, r1
        sltu  r9, r2, r1
        slti  r10, r3, 0
        sltiu r11, r2, -1
        sltiu r12, r3, -1
        slti  r13, r1, -131072
        sltiu r14, r0, 1
        slt   r15, r1, r1
        halt
        """,
        {1: 0x80000000, 2: 0x7FFFFFFF, 3: 0xFFFFFFFF, 4: 1, 5: 0, 6: 1, 7: 0, 8: 0, 9: 1,
         10: 1, 11: 1, 12: 0, 13: 1, 14: 1, 15: 0},
        retired=17, cycles=22),
    CoreCase(
        "branch_signed_unsigned",
        "every branch taken and not taken at 0x80000000 / 0x7FFFFFFF / 0xFFFFFFFF: r10 "
        "collects the not-taken tests, r11 counts that each target is exact",
        """
        li   r1, 0x80000000
        li   r2, 0x7FFFFFFF
        li   r3, 0xFFFFFFFF
        blt  r1, r2, t0
        ori  r10, r10, 0x1
t0:     addi r11, r11, 1
        bltu r1, r2, t1
        ori  r10, r10, 0x2
t1:     addi r11, r11, 1
        bge  r1, r2, t2
        ori  r10, r10, 0x4
t2:     addi r11, r11, 1
        bgeu r1, r2, t3
        ori  r10, r10, 0x8
t3:     addi r11, r11, 1
        blt  r3, r0, t4
        ori  r10, r10, 0x10
t4:     addi r11, r11, 1
        bltu r3, r0, t5
        ori  r10, r10, 0x20
t5:     addi r11, r11, 1
        bge  r0, r3, t6
        ori  r10, r10, 0x40
t6:     addi r11, r11, 1
        bgeu r0, r3, t7
        ori  r10, r10, 0x80
t7:     addi r11, r11, 1
        beq  r3, r3, t8
        ori  r10, r10, 0x100
t8:     addi r11, r11, 1
        bne  r3, r3, t9
        ori  r10, r10, 0x200
t9:     addi r11, r11, 1
        beq  r1, r2, t10
        ori  r10, r10, 0x400
t10:    addi r11, r11, 1
        bne  r1, r2, t11
        ori  r10, r10, 0x800
t11:    addi r11, r11, 1
        bge  r1, r1, t12
        ori  r10, r10, 0x1000
t12:    addi r11, r11, 1
        bgeu r3, r3, t13
        ori  r10, r10, 0x2000
t13:    addi r11, r11, 1
        blt  r2, r2, t14
        ori  r10, r10, 0x4000
t14:    addi r11, r11, 1
        bltu r2, r1, t15
        ori  r10, r10, 0x8000
t15:    addi r11, r11, 1
        blt  r2, r1, t16
        ori  r10, r10, 0x10000
t16:    addi r11, r11, 1
        halt
        """,
        {1: 0x80000000, 2: 0x7FFFFFFF, 3: 0xFFFFFFFF, 10: 0x146A6, 11: 17},
        retired=47, cycles=79),
    CoreCase(
        "jal_jalr_links", "link values of jal/jalr, a jalr with an offset into a function, "
                          "jalr whose rd is its rs1, jal r0",
        """
        jal  r5, f1             # 0x00
        addi r1, r1, 1          # 0x04
        li   r6, f2             # 0x08
        jalr r7, 0(r6)          # 0x0c
        addi r2, r2, 1          # 0x10
        jalr r7, 4(r6)          # 0x14: enters f2 at its second instruction
        addi r3, r3, 1          # 0x18
        li   r9, f3             # 0x1c
        jalr r9, 0(r9)          # 0x20: target from the old r9, link into r9
        jal  r0, done           # 0x24
        addi r15, r15, 1        # 0x28 (skipped)
done:   halt                    # 0x2c
f1:     addi r4, r0, 7          # 0x30
        jalr r0, 0(r5)          # 0x34
f2:     addi r12, r12, 1        # 0x38
        addi r13, r13, 1        # 0x3c
        jalr r0, 0(r7)          # 0x40
f3:     addi r11, r0, 5         # 0x44
        jalr r0, 0(r9)          # 0x48
        """,
        {1: 1, 2: 1, 3: 1, 4: 7, 5: 0x4, 6: 0x38, 7: 0x18, 9: 0x24, 11: 5, 12: 1, 13: 2},
        pc=0x2c, retired=20, cycles=50),
    CoreCase(
        "jalr_negative_offset", "jalr with a negative byte offset",
        """
        li   r2, 16             # 0x00
        jalr r1, -4(r2)         # 0x04: to 0x0c
        halt                    # 0x08
        addi r3, r0, 9          # 0x0c
        jalr r0, 0(r1)          # 0x10
        """,
        {1: 8, 2: 16, 3: 9}, pc=0x8, retired=5, cycles=16),
    CoreCase(
        "li_values", "li: one addi, lui alone, lui + addi with negative and positive low "
                     "parts at the edges of the 12-bit and 18-bit ranges",
        """
        li r1, 0x12345FFF
        li r2, 0x80000000
        li r3, -1
        li r4, 0xFFFFF800
        li r5, 131071
        li r6, -131072
        li r7, 131072
        li r8, 0x7FFFFFFF
        li r9, 0xFFFFFFFF
        li r10, -2147483648
        li r11, 0x800
        li r12, 0x12345800
        li r13, 0xFFFDF7FF
        li r14, 0x000207FF
        li r15, 0x00020800
        halt
        """,
        {1: 0x12345FFF, 2: 0x80000000, 3: 0xFFFFFFFF, 4: 0xFFFFF800, 5: 0x1FFFF,
         6: 0xFFFE0000, 7: 0x20000, 8: 0x7FFFFFFF, 9: 0xFFFFFFFF, 10: 0x80000000, 11: 0x800,
         12: 0x12345800, 13: 0xFFFDF7FF, 14: 0x207FF, 15: 0x20800},
        pc=0x54, retired=22, cycles=27),
    CoreCase(
        "lui", "lui of the largest, smallest and unit immediates",
        """
        lui r1, 0xFFFFF
        lui r2, 0
        lui r3, 1
        lui r4, 0x80000
        halt
        """,
        {1: 0xFFFFF000, 3: 0x1000, 4: 0x80000000}, retired=5, cycles=10),
    CoreCase(
        "load_store_banks",
        "words 7 and 8 (banks 7 and 0), the same boundary in the data region, the last two "
        "SRAM words; a store then a load of the same word",
        """
        jal  r0, start          # 0x00
        .org 28
        .word 0xA5A5A5A5        # word 7 (bank 7)
        .word 0x5A5A5A5A        # word 8 (bank 0)
start:  lw   r1, 28(r0)
        lw   r2, 32(r0)
        addi r3, r0, 28
        lw   r4, 4(r3)
        sw   r2, 0(r3)
        sw   r1, 4(r3)
        lw   r5, 0(r3)
        lw   r6, 4(r3)
        li   r7, 0xBFFC         # the last word of the SRAM
        li   r8, 0x12345678
        sw   r8, 0(r7)
        lw   r9, 0(r7)
        sw   r8, -4(r7)
        lw   r10, 49144(r0)
        li   r11, 0x8000
        sw   r1, 0x1C(r11)      # word 8199, bank 7
        sw   r2, 0x20(r11)      # word 8200, bank 0
        lw   r12, 0x1C(r11)
        lw   r13, 0x20(r11)
        halt
        """,
        {1: 0xA5A5A5A5, 2: 0x5A5A5A5A, 3: 28, 4: 0x5A5A5A5A, 5: 0x5A5A5A5A, 6: 0xA5A5A5A5,
         7: 0xBFFC, 8: 0x12345678, 9: 0x12345678, 10: 0x12345678, 11: 0x8000,
         12: 0xA5A5A5A5, 13: 0x5A5A5A5A},
        mem={28: 0x5A5A5A5A, 32: 0xA5A5A5A5, 0xBFF8: 0x12345678, 0xBFFC: 0x12345678,
             0x801C: 0xA5A5A5A5, 0x8020: 0x5A5A5A5A},
        retired=22, cycles=29),
    _fault("lw_misaligned", "lw of byte address 2", """
        addi r1, r0, 2
        lw   r2, 0(r1)
        """, M, 0x4, {1: 2}, retired=1),
    _fault("lw_misaligned_offset", "lw whose offset makes the address odd", """
        lw   r2, 0x8001(r0)
        """, M, 0x0, retired=0),
    _fault("lw_out_of_range", "lw of the first byte address past the SRAM", """
        li   r1, 0xC000
        lw   r2, 0(r1)
        """, A, 0x4, {1: 0xC000}),
    _fault("lw_negative", "lw of address -4 (0xFFFFFFFC)", """
        lw   r1, -4(r0)
        """, A, 0x0),
    _fault("sw_misaligned", "sw of byte address 0x8002: nothing is written", """
        li   r1, 0x8002
        sw   r1, 0(r1)
        """, M, 0x4, {1: 0x8002}, mem={0x8000: 0, 0x8004: 0}),
    _fault("sw_out_of_range", "sw one word past the last", """
        li   r1, 0xBFFC
        sw   r1, 4(r1)
        """, A, 0x4, {1: 0xBFFC}),
    _fault("sw_misaligned_and_out_of_range", "both wrong: the alignment is reported", """
        li   r1, 0xC001
        sw   r1, 0(r1)
        """, M, 0x4, {1: 0xC001}),
    _fault("jalr_misaligned", "jalr to byte address 6: faults, rd not written", """
        addi r1, r0, 6
        jalr r2, 0(r1)
        """, M, 0x4, {1: 6}, retired=1),
    _fault("jalr_misaligned_offset", "jalr whose offset makes the target odd", """
        jalr r2, 2(r0)
        """, M, 0x0),
    _fault("jalr_outside", "jalr past the SRAM retires (link written), the fetch faults", """
        li   r1, 0xC000
        jalr r2, 0(r1)
        """, A, 0xC000, {1: 0xC000, 2: 8}, retired=2),
    _fault("jal_outside", "jal to byte address 0x10000 (outside the SRAM)", """
        jal  r3, 0x10000
        """, A, 0x10000, {3: 4}, retired=1),
    _fault("branch_below_zero", "a taken branch to address -4", """
        addi r1, r0, 1
        beq  r0, r0, .-8
        """, A, 0xFFFFFFFC, {1: 1}, retired=2),
    _fault("run_into_zeros", "no halt: the next word is zero, not an instruction", """
        addi r1, r0, 5
        """, ILL, 0x4, {1: 5}, retired=1),
    _fault("end_of_sram", "the last SRAM word executes, then the fetch past it faults", """
        jal  r0, last
        .org 0xBFFC
last:   addi r1, r0, 1
        """, A, 0xC000, {1: 1}, retired=2),
    _fault("illegal_after_code", "an undefined word after an instruction", """
        addi r1, r0, 1
        .word 0x2C000000
        """, ILL, 0x4, {1: 1}, retired=1),
    CoreCase(
        "back_to_back_branches", "taken branch onto a taken branch, a not-taken branch then "
                                 "a taken one, a branch on the register written just before",
        """
        beq  r0, r0, l1         # 0x00 taken
        addi r1, r0, 1          # 0x04 skipped
l1:     beq  r0, r0, l2         # 0x08 taken
        addi r2, r0, 2          # 0x0c skipped
l2:     bne  r0, r0, l3         # 0x10 not taken
        beq  r0, r0, l3         # 0x14 taken
        addi r3, r0, 3          # 0x18 skipped
l3:     addi r4, r0, 4          # 0x1c
        blt  r0, r4, l4         # 0x20 taken
        addi r5, r0, 5          # 0x24 skipped
l4:     halt                    # 0x28
        """,
        {4: 4}, pc=0x28, retired=7, cycles=24),
    CoreCase(
        "branch_to_next", "taken branch, jal and jalr whose target is the next instruction",
        """
        addi r1, r0, 1          # 0x00
        beq  r1, r1, n1         # 0x04
n1:     addi r2, r1, 1          # 0x08
        jal  r3, n2             # 0x0c
n2:     addi r4, r0, 4          # 0x10
        li   r5, n3             # 0x14
        jalr r6, 0(r5)          # 0x18
n3:     halt                    # 0x1c
        """,
        {1: 1, 2: 2, 3: 0x10, 4: 4, 5: 0x1c, 6: 0x1c}, retired=8, cycles=21),
    CoreCase(
        "forward_alu", "an ALU result used at distance 1, 2, 3, 4, chained, as store data "
                       "and as a store address",
        """
        addi r1, r0, 5
        add  r2, r1, r1         # distance 1
        addi r3, r0, 7
        nop
        add  r4, r3, r3         # distance 2
        addi r5, r0, 9
        nop
        nop
        add  r6, r5, r5         # distance 3
        addi r7, r0, 11
        nop
        nop
        nop
        add  r8, r7, r7         # distance 4
        add  r9, r8, r2
        sub  r10, r9, r8
        sw   r10, 0x8000(r0)    # store data at distance 1
        addi r11, r0, 0x8004
        sw   r11, 0(r11)        # store address at distance 1
        halt
        """,
        {1: 5, 2: 10, 3: 7, 4: 14, 5: 9, 6: 18, 7: 11, 8: 22, 9: 32, 10: 10, 11: 0x8004},
        mem={0x8000: 10, 0x8004: 0x8004}, retired=20, cycles=25),
    CoreCase(
        "forward_load", "a loaded value used at distance 1 (load-use), 2, 3, 4, as store "
                        "data, as an address and by a branch",
        """
        li   r1, 0x8000
        addi r2, r0, 100
        sw   r2, 0(r1)
        addi r3, r0, 200
        sw   r3, 4(r1)
        lw   r4, 0(r1)
        add  r5, r4, r4         # distance 1: one bubble
        lw   r6, 4(r1)
        nop
        add  r7, r6, r6         # distance 2
        lw   r8, 0(r1)
        nop
        nop
        add  r9, r8, r8         # distance 3
        lw   r10, 4(r1)
        nop
        nop
        nop
        add  r11, r10, r10      # distance 4
        lw   r12, 0(r1)
        sw   r12, 8(r1)         # store data, distance 1: one bubble
        sw   r1, 12(r1)
        lw   r13, 12(r1)
        lw   r14, 4(r13)        # address, distance 1: one bubble
        lw   r15, 0(r1)
        beq  r15, r2, ok        # branch, distance 1: one bubble; taken
        addi r15, r0, 0
ok:     halt
        """,
        {1: 0x8000, 2: 100, 3: 200, 4: 100, 5: 200, 6: 200, 7: 400, 8: 100, 9: 200,
         10: 200, 11: 400, 12: 100, 13: 0x8000, 14: 200, 15: 100},
        mem={0x8000: 100, 0x8004: 200, 0x8008: 100, 0x800C: 0x8000},
        retired=27, cycles=39),
    CoreCase(
        "r0_never_written", "every kind of write to r0 is discarded; sw r0 stores 0",
        """
        addi r1, r0, 5
        add  r0, r1, r1
        addi r0, r0, 7
        lui  r0, 0x12345
        li   r2, 0x8000
        sw   r1, 0(r2)
        sw   r1, 4(r2)
        lw   r0, 0(r2)
        jal  r0, next
next:   slt  r0, r0, r1
        csrr r0, ID
        dsrr r0, 0, 0
        li   r5, after
        jalr r0, 0(r5)
after:  add  r3, r0, r0
        sw   r0, 4(r2)
        halt
        """,
        {1: 5, 2: 0x8000, 5: 0x38},
        mem={0x8000: 5, 0x8004: 0}, retired=17),
    CoreCase(
        "csrr", "csrr of ID (the default PE's parameters), ERROR, CORE_STATUS, CORE_PC",
        """
        csrr r1, ID
        csrr r2, ERROR
        csrr r3, CORE_STATUS
        csrr r4, CORE_PC
        csrr r5, 0x0
        halt
        """,
        # ID: num_dsrs 44 | log2 banks 3 << 6 | (threads - 1) 7 << 9 | 12288 / 512 = 24 << 13
        # | (64 / 4 - 1) 15 << 20; CORE_STATUS: running (bit 0), task 0.
        {1: 0xF30EEC, 3: 1, 4: 0xC, 5: 0xF30EEC}, retired=6),
    CoreCase(
        "dsrw_dsrr", "dsrw then dsrr of the first and last DSR and word 7",
        """
        li   r1, 0x12345678
        dsrw r1, 43, 7
        dsrr r2, 43, 7
        dsrw r1, 0, 0
        dsrr r3, 0, 0
        dsrr r4, 0, 1
        li   r5, -1
        dsrw r5, 5, 3
        dsrr r6, 5, 3
        halt
        """,
        {1: 0x12345678, 2: 0x12345678, 3: 0x12345678, 5: 0xFFFFFFFF, 6: 0xFFFFFFFF}),
    _fault("dsrw_beyond_num_dsrs", "dsrw of DSR 44 (the PE has 44: ids 0..43)", """
        addi r1, r0, 3
        dsrw r1, 44, 0
        """, ErrorCode.BAD_OPERAND, 0x4, {1: 3}, retired=1),
    _fault("dsrr_beyond_num_dsrs", "dsrr of DSR 63 (DSR_WAVELET is not a register)", """
        dsrr r1, 63, 7
        """, ErrorCode.BAD_OPERAND, 0x0, retired=0),
    _fault("recv_bound_color", "recv of a color bound to a task", """
        recv r1, 4
        """, ErrorCode.BAD_OPERAND, 0x0, binds={4: {"data_task": 1, "ctrl_base": None,
                                                   "prio": 0}}),
    CoreCase(
        "send", "send and sendc: data = rs1[15:0], index = rs2[9:0]",
        """
        li    r1, 0x3C00
        li    r2, 0x3FF
        send  5, r1, r2
        li    r3, 0x12345678
        sendc 23, r3, r3
        halt
        """,
        {1: 0x3C00, 2: 0x3FF, 3: 0x12345678},
        outputs={5: [(0x3C00, 0x3FF, 0)], 23: [(0x5678, 0x278, 1)]}),
    CoreCase(
        "recv", "recv returns the whole wavelet word (color field included)",
        """
        recv r1, 3
        recv r2, 3
        halt
        """,
        {1: 0x18071234, 2: 0x1FFFBEEF},
        inputs={3: [(0x1234, 7, 0), (0xBEEF, 0x3FF, 1)]}),
    CoreCase(
        "tasks_priority", "tact of three tasks, tend runs them by priority then task id; "
                          "each starts with r1 = data, r2 = index, r3 = the word",
        """
        .task 2, t2, 0
        .task 5, t5, 1
        .task 7, t7, 1
        li   r4, 0x0ABC1234
        tact 2, r4
        tact 7, r0
        tact 5, r4
        tend
t5:     slli r14, r14, 4
        ori  r14, r14, 5
        mv   r11, r1
        mv   r12, r2
        mv   r13, r3
        tend
t7:     slli r14, r14, 4
        ori  r14, r14, 7
        add  r15, r1, r3
        tend
t2:     slli r14, r14, 4
        ori  r14, r14, 2
        mv   r5, r1
        mv   r6, r2
        mv   r7, r3
        halt
        """,
        {1: 0x1234, 2: 0x2BC, 3: 0x0ABC1234, 4: 0x0ABC1234, 5: 0x1234, 6: 0x2BC,
         7: 0x0ABC1234, 11: 0x1234, 12: 0x2BC, 13: 0x0ABC1234, 14: 0x572},
        retired=22),
    CoreCase(
        "tasks_block", "a blocked task waits; tunblk lets it run at the next tend",
        """
        .task 1, t1, 3
        .task 4, t4, 0
        tblk 1
        csrr r8, BLOCKED
        tact 1, r0
        tact 4, r0
        tend
t4:     slli r14, r14, 4
        ori  r14, r14, 4
        tunblk 1
        csrr r9, BLOCKED
        tend
t1:     slli r14, r14, 4
        ori  r14, r14, 1
        halt
        """,
        {8: 2, 14: 0x41}),
    CoreCase(
        "tasks_from_wavelets", "a data and a control wavelet on a bound color start their "
                               "tasks (ctrl_base + index) with the task-start registers",
        """
        .task 6, t6, 0
        .task 10, t10, 0
        tend
t6:     mv   r5, r1
        mv   r6, r2
        mv   r7, r3
        tend
t10:    mv   r8, r1
        mv   r9, r2
        mv   r10, r3
        halt
        """,
        {1: 0x2222, 2: 2, 3: 0x24022222, 5: 0x1111, 6: 5, 7: 0x20051111, 8: 0x2222, 9: 2,
         10: 0x24022222},
        inputs={4: [(0x1111, 5, 0), (0x2222, 2, 1)]},
        binds={4: {"data_task": 6, "ctrl_base": 8, "prio": 0}}),
    CoreCase(
        "tend_idle", "tend with no task left: the core goes idle at the tend",
        """
        addi r1, r0, 1
        tend
        """,
        {1: 1}, stop="idle", pc=0x4, retired=2),
    CoreCase(
        "tensor_add_move", "DSRs written with dsrw; t.fadd and t.fmov (b = none) on FP16 "
                           "MEM tensors; twait; the results loaded",
        _DSR_SETUP + """
        t.fadd Y, A, B
        twait
        lw   r5, 0x410(r0)
        lw   r6, 0x414(r0)
        t.fmov Y, B, none
        twait
        lw   r7, 0x410(r0)
        lw   r8, 0x414(r0)
        csrr r9, ERROR
        halt
        """ + _TENSOR_DATA,
        # a + b = [1.5, 2.5, 2, 12]; then y = b = [0.5, 0.5, -1, 8]
        {**_SETUP_REGS, 5: 0x41003E00, 6: 0x4A004000, 7: 0x38003800, 8: 0x4800BC00},
        mem={**_TENSOR_INPUT_MEM, 0x410: 0x38003800, 0x414: 0x4800BC00}),
    CoreCase(
        "tensor_ops", "t.fsub, t.fmul, t.fmax, t.fneg (b = -) on FP16 MEM tensors",
        _DSR_SETUP + """
        t.fsub Y, A, B
        twait
        lw   r5, 0x410(r0)
        lw   r6, 0x414(r0)
        t.fmul Y, A, B
        twait
        lw   r7, 0x410(r0)
        lw   r8, 0x414(r0)
        t.fmax Y, A, B
        twait
        lw   r9, 0x410(r0)
        lw   r10, 0x414(r0)
        t.fneg Y, A, -
        twait
        lw   r11, 0x410(r0)
        lw   r12, 0x414(r0)
        halt
        """ + _TENSOR_DATA,
        # a - b = [0.5, 1.5, 4, -4]; a * b = [0.5, 1, -3, 32]; max = [1, 2, 3, 8];
        # -a = [-1, -2, -3, -4]
        {**_SETUP_REGS, 5: 0x3E003800, 6: 0xC4004400, 7: 0x3C003800, 8: 0x5000C200,
         9: 0x40003C00, 10: 0x48004200, 11: 0xC000BC00, 12: 0xC400C200},
        mem={**_TENSOR_INPUT_MEM, 0x410: 0xC000BC00, 0x414: 0xC400C200}),
    CoreCase(
        "tensor_min_sign_seed", "t.fmin, t.fcpsgn and t.frsqe (b = -) on FP16 MEM tensors",
        _DSR_SETUP + """
        t.fmin Y, A, B
        twait
        lw   r5, 0x410(r0)
        lw   r6, 0x414(r0)
        t.fcpsgn Y, A, B
        twait
        lw   r7, 0x410(r0)
        lw   r8, 0x414(r0)
        t.frsqe Y, A, -
        twait
        lw   r9, 0x410(r0)
        lw   r10, 0x414(r0)
        halt
        """ + _TENSOR_DATA,
        # min(a, b) = [0.5, 0.5, -1, 4]; |a| with b's sign = [1, 2, -3, 4];
        # the estimate of 1/sqrt(a): FP32 bits 0x5F3759DF - (a >> 1) = 0x3F7759DF (0.9662),
        # 0x3F3759DF (0.7163), 0x3F1759DF (0.5912), 0x3EF759DF (0.4831), rounded to FP16
        {**_SETUP_REGS, 5: 0x38003800, 6: 0x4400BC00, 7: 0x40003C00, 8: 0x4400C200,
         9: 0x39BB3BBB, 10: 0x37BB38BB},
        mem={**_TENSOR_INPUT_MEM, 0x410: 0x39BB3BBB, 0x414: 0x37BB38BB}),
    CoreCase(
        "tensor_fmac_acc", "t.fmac into the accumulator cache with the scalar from rs "
                           "(2.0), then t.fmov of the FP32 accumulators to an FP32 tensor",
        _DSR_SETUP + """
        addi r5, r0, 0xA        # DSR 4: ACC, FP32, base 0, dims (4, 1)
        dsrw r5, 4, 0
        dsrw r0, 4, 1
        dsrw r3, 4, 2
        dsrw r4, 4, 3
        dsrw r4, 4, 4
        dsrw r4, 4, 5
        addi r6, r0, 9          # DSR 5: MEM, FP32, base FP16 element 0x20C (byte 0x418)
        dsrw r6, 5, 0
        li   r7, 0x20C
        dsrw r7, 5, 1
        dsrw r3, 5, 2
        dsrw r4, 5, 3
        dsrw r4, 5, 4
        dsrw r4, 5, 5
        li   r10, 0x4000        # the scalar: FP16 2.0 in the data field
        t.fmac 4, 4, A, r10
        t.fmov 5, 4, none
        twait
        lw   r11, 0x418(r0)
        lw   r12, 0x41C(r0)
        lw   r13, 0x420(r0)
        lw   r14, 0x424(r0)
        halt
        """ + _TENSOR_DATA,
        # acc = 0 + a * 2 = [2, 4, 6, 8] (FP32)
        {**_SETUP_REGS, 5: 0xA, 6: 9, 7: 0x20C, 10: 0x4000, 11: 0x40000000, 12: 0x40800000,
         13: 0x40C00000, 14: 0x41000000},
        mem={0x418: 0x40000000, 0x41C: 0x40800000, 0x420: 0x40C00000, 0x424: 0x41000000}),
    CoreCase(
        "tensor_modifier_advance", "rm = LaunchModifier with adv = {dst}: the destination "
                                   "advances by adv_step per launch and wraps at adv_count",
        _DSR_SETUP + """
        li   r5, 0x200001       # Y word 0: MEM, FP16, adv_count 2
        dsrw r5, Y, 0
        addi r6, r0, 4          # Y word 6: adv_step 4 elements
        dsrw r6, Y, 6
        addi r12, r0, 0x20      # LaunchModifier: adv = {dst} (bits 7..5 = 0b001)
        t.fmov Y, A, none, r0, r12
        twait
        dsrr r7, Y, 7
        t.fmov Y, B, none, r0, r12
        twait
        dsrr r8, Y, 7
        lw   r9, 0x410(r0)
        lw   r10, 0x414(r0)
        lw   r11, 0x418(r0)
        lw   r13, 0x41C(r0)
        halt
        """ + _TENSOR_DATA,
        {**_SETUP_REGS, 5: 0x200001, 6: 4, 7: 1, 8: 0, 9: 0x40003C00, 10: 0x44004200,
         11: 0x38003800, 12: 0x20, 13: 0x4800BC00}),
]

CASES += [
    _fault(f"illegal_{word:08x}", f"undefined word: {why}", f".word {word:#010x}", ILL, 0x0)
    for word, why in ILLEGAL_WORDS.items()
]


def case_by_name(name):
    """The :class:`CoreCase` called ``name``."""
    for case in CASES:
        if case.name == name:
            return case
    raise KeyError(f"no core case {name!r}")
