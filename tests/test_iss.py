"""The instruction-set simulator (golden/iss.py) against the hand-written directed table
(tb/core_cases.py), plus its trace, cycle model, tasks, tensor launches and stalls."""

import dataclasses

import numpy as np
import pytest

from golden.iss import (ISS, CoreBlocked, CoreFault, CycleModel, Retire, pack_retire,
                        unpack_retire)
from rtl.pe.asm import assemble
from rtl.pe.isa import BY_MNEMONIC, Cls, decode
from rtl.pe.regs import DType, ErrorCode, Kind, TensorOp, encode_dsr
from tb.core_cases import CASES, case_by_name
from tb.pe_model import PEConfig


def run_case(case, **iss_args):
    """Run a directed case on a fresh ISS; returns ``(iss, RunResult)``."""
    iss = ISS(**iss_args)
    iss.load(assemble(case.source))
    for color, bind in case.binds.items():
        iss.bind(color, **bind)
    for color, wavelets in case.inputs.items():
        for wavelet in wavelets:
            iss.push_input(color, *wavelet)
    iss.start(0)
    result = iss.run(max_instructions=100_000)
    return iss, result


def mismatches(case, iss, result):
    fault = result.fault.code if result.fault else None
    return case.mismatches(iss.regs, lambda a: iss.read_words(a, 1)[0], result.stop,
                           result.pc, fault, result.retired, result.cycles, iss.outputs)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_directed_case(case):
    iss, result = run_case(case)
    assert not mismatches(case, iss, result), f"{case.name}: {case.what}"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_trace_records(case):
    """One record per retired instruction, as RetireRecord defines it: rd = 0 and value = 0
    when no register is written (or r0), except sw (the stored word); never r0 written."""
    iss, result = run_case(case)
    assert len(iss.trace) == result.retired
    for record in iss.trace:
        insn = decode(record.word)[0]
        assert iss.regs[0] == 0
        if isinstance(insn, str) or not insn.writes_rd or record.rd == 0:
            assert record.rd == 0
            if not (not isinstance(insn, str) and insn.cls == Cls.STORE):
                assert record.value == 0, (hex(record.pc), insn)
        else:
            assert record.rd == decode(record.word)[1]["rd"]
        assert unpack_retire(pack_retire(record)) == record


def test_checker_catches_wrong_expectations():
    """The case checker is not vacuous: a wrong register, word, stop or cycle count shows."""
    case = case_by_name("forward_load")
    iss, result = run_case(case)
    for change in ({"regs": {**case.regs, 7: 401}}, {"regs": {**case.regs, 3: 0}},
                   {"mem": {0x8008: 99}}, {"stop": "fault"}, {"cycles": 38},
                   {"retired": 26}, {"pc": 0}):
        wrong = dataclasses.replace(case, **change)
        assert mismatches(wrong, iss, result), change


def test_store_trace_reports_the_word():
    iss, _ = run_case(case_by_name("forward_alu"))
    stores = [r for r in iss.trace if decode(r.word)[0] is BY_MNEMONIC["sw"]]
    assert [(r.rd, r.value) for r in stores] == [(0, 10), (0, 0x8004)]


def test_retire_record_fields_follow_the_layout():
    assert Retire._fields == ("pc", "word", "rd", "value")
    record = Retire(pc=0x1FFFC, word=0xDEADBEEF, rd=15, value=0x80000001)
    bits = pack_retire(record)
    assert bits & 0x1FFFF == 0x1FFFC and (bits >> 17) & 0xFFFFFFFF == 0xDEADBEEF
    assert (bits >> 49) & 0xF == 15 and bits >> 53 == 0x80000001


def test_cycle_model_is_parametric():
    """The design targets are parameters: doubling the load-use cost adds one cycle per
    load-use of forward_load (4), a 4-bubble branch adds one per taken branch (1)."""
    case = case_by_name("forward_load")
    assert run_case(case)[1].cycles == 39
    assert run_case(case, timing=CycleModel(load_use=2))[1].cycles == 43
    assert run_case(case, timing=CycleModel(taken_branch=4))[1].cycles == 40
    assert run_case(case_by_name("jal_jalr_links"),
                    timing=CycleModel(jal=0, jalr=0, stages=1))[1].cycles == 20


def test_task_order_is_configurable():
    """prio_then_age runs the two priority-1 tasks in activation order (7 before 5)."""
    case = case_by_name("tasks_priority")
    iss, _ = run_case(case)
    assert iss.regs[14] == 0x572
    iss, _ = run_case(case, task_order="prio_then_age")
    assert iss.regs[14] == 0x752
    iss, _ = run_case(case, task_order=lambda a: a.task)   # a custom key: by id only
    assert iss.regs[14] == 0x2      # task 2 runs first, and it halts


def _started(source, **kw):
    iss = ISS(**kw)
    iss.load(assemble(source))
    iss.start(0)
    return iss


def test_recv_blocks_until_input_arrives():
    iss = _started("addi r1, r0, 1\nrecv r2, 3\nhalt")
    iss.step()
    with pytest.raises(CoreBlocked, match=r"recv at PC 0x0004 \(`recv r2, 3`\): no wavelet "
                                          r"queued on color 3"):
        iss.step()
    assert iss.pc == 4 and iss.retired == 1
    iss.push_input(3, 0x55, 2)
    assert iss.step() == Retire(4, assemble("recv r2, 3").words[0], 2, 0x18020055)
    assert iss.run().halted


def test_inputs_given_at_construction():
    iss = ISS(inputs={7: [(0x1234, 1, 0)]})
    iss.load(assemble("recv r1, 7\nhalt"))
    iss.start(0)
    assert iss.run().halted and iss.regs[1] == 0x38011234   # color 7 << 27 | 1 << 16


def test_operands_beyond_the_pe_parameters_fault():
    """Encodable but beyond this PE: a DSR id >= num_dsrs, a color >= num_colors, a task
    >= num_tasks are faults naming the operand."""
    for source, params, code, what in (
            ("dsrw r1, 16, 0", {"num_dsrs": 16}, ErrorCode.BAD_OPERAND, "no DSR 16"),
            ("send 8, r1, r2", {"num_colors": 8}, ErrorCode.BAD_COLOR, "no color 8"),
            ("recv r1, 9", {"num_colors": 8}, ErrorCode.BAD_COLOR, "no color 9"),
            ("tact 20, r1", {"num_tasks": 16}, ErrorCode.BAD_TASK, "no task 20"),
            ("tunblk 16", {"num_tasks": 16}, ErrorCode.BAD_TASK, "no task 16")):
        iss = _started(source + "\nhalt", **params)
        with pytest.raises(CoreFault, match=f"{code.name} at PC 0x0000 .*: {what}"):
            iss.step()
        assert iss.state == "fault" and iss.read_csr(2) == code.value


def test_fin_operand_short_of_wavelets_blocks_and_consumes_nothing():
    config = PEConfig()
    config.dsr(1, Kind.MEM, base=0x100, dims=[(4, 1)])
    config.dsr(2, Kind.FIN, color=5, dims=[(4, 1)])
    iss = ISS(config=config)
    iss.load(assemble("t.fmov 1, 2, none\nhalt"))
    iss.start(0)
    for value in (0x3C00, 0x4000, 0x4200):
        iss.push_input(5, value)
    with pytest.raises(CoreBlocked, match="too few wavelets"):
        iss.step()
    assert len(iss.model.fin[5]) == 3
    iss.push_input(5, 0x4400)
    assert iss.run().halted
    assert iss.read_words(0x200, 2) == [0x40003C00, 0x44004200]


def test_tensor_launch_errors_do_not_stop_the_core():
    """An FMAC into an FP16 tensor is refused (UNSUPPORTED), recorded in ERROR; the core
    goes on; the destination is untouched."""
    config = PEConfig()
    config.dsr(1, Kind.MEM, base=0x100, dims=[(2, 1)])
    config.put_f16(0x100, [0x1111, 0x2222])
    iss = ISS(config=config)
    iss.load(assemble("t.fmac 1, 1, 1, r0\ncsrr r1, ERROR\ncsrr r2, ERROR_FLAGS\nhalt"))
    iss.start(0)
    assert iss.run().halted
    assert iss.regs[1] == ErrorCode.UNSUPPORTED.value
    assert iss.regs[2] == 1 << ErrorCode.UNSUPPORTED.value
    assert iss.read_words(0x200, 1) == [0x22221111]
    assert [e[0] for e in iss.errors] == [ErrorCode.UNSUPPORTED]


def test_launch_modifier_scalar_from_a_dsr_and_index_offset():
    """rm: s_dsr takes the FMAC scalar from a SCALAR DSR; idx = {b} adds index x idx_stride
    to b's base; rs's index field (bits 25..16) is the index."""
    config = PEConfig()
    config.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(2, 1)])
    config.dsr(2, Kind.MEM, base=0x100, dims=[(2, 1)], idx_stride=2)
    config.dsr(3, Kind.SCALAR, value=0x4200)                       # 3.0
    config.put_f16(0x100, [0x3C00, 0x3C00, 0x4000, 0x4400])        # [1, 1, 2, 4]
    iss = ISS(config=config)
    # LaunchModifier: idx = {b} (bit 2 of the mask at bits 4..2 -> 0x10), s_dsr (bit 9),
    # s = 3 (bits 15..10).
    modifier = 0x10 | 1 << 9 | 3 << 10
    iss.load(assemble(f"li r2, {modifier}\nli r1, 0x10000\nt.fmac 1, 1, 2, r1, r2\nhalt"))
    iss.start(0)
    assert iss.run().halted
    assert list(iss.model.acc[:2]) == [0x40C00000, 0x41400000]     # [6.0, 12.0]


def test_self_modifying_code_runs_the_new_word():
    """The decode cache is keyed by the word, not the address: a stored instruction runs
    (in program order; the RTL may need distance between the store and the fetch, so
    lockstep programs never store into code)."""
    source = """
        li   r1, 0x44C00007     # 0x00, 0x04: the word of addi r3, r0, 7
        sw   r1, 0x20(r0)       # 0x08: overwrite the instruction at 0x20
        nop
        nop
        nop
        nop
        nop
        addi r3, r0, 1          # 0x20, replaced before it runs
        halt
    """
    iss = _started(source)
    assert assemble("addi r3, r0, 7").words == [0x44C00007]
    assert iss.run().halted and iss.regs[3] == 7


def test_budget_stops_with_the_pc():
    iss = _started("loop: addi r1, r1, 1\nbeq r0, r0, loop")
    result = iss.run(max_instructions=5)
    assert (result.stop, result.pc, result.retired, iss.regs[1]) == ("budget", 4, 5, 3)
    result = iss.run(max_cycles=100)
    assert result.stop == "budget" and result.cycles >= 100 and not result.halted


def test_step_after_halt_and_fault():
    iss = _started("halt")
    iss.step()
    with pytest.raises(RuntimeError, match="halted at PC 0x0"):
        iss.step()
    iss = _started(".word 0")
    with pytest.raises(CoreFault, match=r"ILLEGAL_INSTRUCTION at PC 0x0000 \(word "
                                        r"0x00000000, not an instruction\)") as info:
        iss.step()
    assert info.value.code == ErrorCode.ILLEGAL_INSTRUCTION and info.value.word == 0
    assert iss.read_csr(2) == ErrorCode.ILLEGAL_INSTRUCTION.value
    assert iss.run().stop == "fault"


def test_launch_list_task_runs_beside_the_core():
    """tact of a launch-list task (TaskEntry.code = 0) runs its launch entries at once."""
    config = PEConfig()
    config.dsr(1, Kind.MEM, base=0x100, dims=[(2, 1)])
    config.dsr(2, Kind.MEM, base=0x104, dims=[(2, 1)])
    config.put_f16(0x100, [0x3C00, 0xC000])
    config.task(9, [dict(op=TensorOp.FNEG, dst=2, a=1)])
    iss = ISS(config=config)
    iss.load(assemble("tact 9, r0\nhalt"))
    iss.start(0)
    assert iss.run().halted
    assert iss.read_words(0x208, 1) == [0x4000BC00]


def test_id_register_follows_the_parameters():
    iss = _started("csrr r1, ID\nhalt", sram_words=4096, num_dsrs=16, acc_words=128,
                   banks=4, threads=4)
    iss.run()
    # 16 | log2(4) = 2 << 6 | 3 << 9 | 4096 / 512 = 8 << 13 | (128 / 4 - 1) = 31 << 20
    assert iss.regs[1] == 16 | 2 << 6 | 3 << 9 | 8 << 13 | 31 << 20


def test_load_refuses_a_program_larger_than_the_sram():
    iss = ISS(sram_words=512)
    with pytest.raises(ValueError, match="past the SRAM"):
        iss.load(assemble(".org 0x800\nhalt"))


def test_sram_is_the_tensor_engines_memory():
    """Stores by the core are what the tensor engine reads, FP16 element h being half
    h & 1 of word h >> 1 (little-endian)."""
    iss = ISS()
    iss.mem[0x80] = 0x4000BC00
    assert list(iss.model.sram[0x100:0x102]) == [0xBC00, 0x4000]
    assert iss.model.sram.dtype == np.uint16


def test_dsrw_writes_what_encode_dsr_defines():
    """The tensor cases' DSR words written by hand agree with the encoder."""
    words = encode_dsr(Kind.MEM, base=0x200, dims=[(4, 1)])
    assert words == [1, 0x200, 0x1004, 1, 1, 1, 0, 0]
    assert encode_dsr(Kind.ACC, dtype=DType.FP32, dims=[(4, 1)])[0] == 0xA
    assert encode_dsr(Kind.MEM, dtype=DType.FP32, base=0x20C, dims=[(4, 1)])[:2] == [9, 0x20C]
    assert encode_dsr(Kind.MEM, base=0x208, dims=[(4, 1)], adv_step=4, adv_count=2)[0] == \
        0x200001
