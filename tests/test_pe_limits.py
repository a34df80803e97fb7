"""The PE's address map and the host encoders' checks of ids against the PE (SPEC 10;
issue 10, item 9): every DSR, task, launch-entry and color id the host writes is one the PE
has, and every error names the value and the limit."""

import pytest

from gpt_mapping import fabric_run
from gpt_mapping.layout import GemmMapping
from rtl.pe import isa
from rtl.pe import regs as R
from tb.pe_model import PEConfig


# --- the address map -----------------------------------------------------------------------------

def test_address_map_is_the_documented_one():
    regions = {r.region: r for r in R.address_map()}
    assert regions[R.CfgRegion.SRAM].base == 0 and regions[R.CfgRegion.SRAM].count == 12288
    assert regions[R.CfgRegion.DSR].base == R.PE_REGS_BASE + R.DSR_BASE
    assert regions[R.CfgRegion.DSR].words == R.DSR_WORDS == 8
    assert regions[R.CfgRegion.DSR].count == 44
    assert regions[R.CfgRegion.ENTRY].words == R.ENTRY_WORDS
    assert regions[R.CfgRegion.COUNTER].count == len(R.Counter)
    assert regions[R.CfgRegion.CORE].base == R.reg_addr(R.Reg.CORE_CTRL)
    assert regions[R.CfgRegion.CORE].count == 3
    assert regions[R.CfgRegion.GPR].base == R.gpr_addr(0) and R.GPR_COUNT == isa.NUM_GPRS
    assert regions[R.CfgRegion.BIND].ids == 32 and regions[R.CfgRegion.BIND].count == 24
    small = R.PEParams(num_dsrs=8, num_tasks=16, acc_words=16)
    assert R.region(R.CfgRegion.DSR, small).count == 8
    assert R.region(R.CfgRegion.TASK, small).count == 16
    assert R.region(R.CfgRegion.ACC, small).end == R.acc_addr(16)
    ends = [(r.base, r.end) for r in R.address_map(R.MAX_PE)]
    assert all(a_end <= b_base for (_, a_end), (b_base, _) in zip(ends, ends[1:]))


def test_address_helpers_follow_the_map():
    assert R.dsr_addr(43, 7, pe=R.PEParams()) == R.PE_REGS_BASE + R.DSR_BASE + 8 * 43 + 7
    assert R.task_addr(31, pe=R.PEParams()) == R.PE_REGS_BASE + R.TASK_BASE + 31
    assert R.bind_addr(30) == R.PE_REGS_BASE + R.BIND_BASE + 30   # any 5-bit color, no PE


# --- host encoders reject ids the PE does not have (SPEC 10) -------------------------------------

PE_DEFAULT = R.PEParams()


@pytest.mark.parametrize("call,value,limit", [
    (lambda: R.encode_entry(R.TensorOp.FMOV, 44, 0, pe=PE_DEFAULT), "dst=44", "44 DSRs"),
    (lambda: R.encode_entry(R.TensorOp.FMOV, 0, 8, pe=R.PEParams(num_dsrs=8)), "a=8",
     "8 DSRs"),
    (lambda: R.encode_entry(R.TensorOp.FMAC, 0, 0, 1, 50, pe=PE_DEFAULT), "s=50", "44 DSRs"),
    (lambda: R.encode_task(64, pe=PE_DEFAULT), "entry=64", "64 launch entries"),
    (lambda: R.encode_task(16, pe=R.PEParams(num_entries=16)), "entry=16",
     "16 launch entries"),
    (lambda: R.encode_task(pc=0xC000, pe=PE_DEFAULT), "pc=0xc000", "0xc000 bytes"),
    (lambda: R.encode_bind(data_task=32, pe=PE_DEFAULT), "data_task=32", "32 tasks"),
    (lambda: R.encode_bind(ctrl_base=8, pe=R.PEParams(num_tasks=8)), "ctrl_base=8", "8 tasks"),
    (lambda: R.encode_trigger(40, pe=PE_DEFAULT), "task=40", "32 tasks"),
    (lambda: R.encode_dsr(R.Kind.FOUT, color=24, pe=PE_DEFAULT), "color=24", "24 colors"),
    (lambda: R.task_addr(40, pe=PE_DEFAULT), "task 40", "32 tasks"),
    (lambda: R.task_addr(40), "task 40", "32 tasks"),
    (lambda: R.dsr_addr(44, pe=PE_DEFAULT), "DSR 44", "44 DSRs"),
    (lambda: R.dsr_addr(62), "DSR 62", "62 DSRs"),
    (lambda: R.entry_addr(64, pe=PE_DEFAULT), "launch entry 64", "64 launch entries"),
    (lambda: R.bind_addr(24, pe=PE_DEFAULT), "color 24", "24 colors"),
    (lambda: R.bind_addr(32), "color 32", "32 colors"),
    (lambda: R.acc_addr(64, pe=PE_DEFAULT), "accumulator word 64", "64 accumulator words"),
    (lambda: R.gpr_addr(16), "general-purpose register 16", "16 general-purpose registers"),
])
def test_encoders_reject_ids_out_of_range(call, value, limit):
    with pytest.raises(ValueError) as info:
        call()
    assert value in str(info.value) and limit in str(info.value), str(info.value)


def test_encoders_accept_the_last_id_and_the_pseudo_operands():
    assert R.encode_entry(R.TensorOp.FMOV, 43, R.DSR_WAVELET, pe=PE_DEFAULT)
    assert R.encode_entry(R.TensorOp.FMOV, R.DSR_NONE, pe=R.PEParams(num_dsrs=1))
    assert R.encode_task(63, pe=PE_DEFAULT) == 63
    assert R.encode_bind(data_task=31, ctrl_base=31, pe=PE_DEFAULT)
    assert R.dsr_addr(61, 7) == R.PE_REGS_BASE + R.DSR_BASE + 8 * 61 + 7


def test_pe_config_checks_ids_against_its_pe():
    cfg = PEConfig(pe=R.PEParams(num_dsrs=4, num_tasks=4, num_colors=8))
    with pytest.raises(ValueError, match="DSR 4 is out of range: the PE has 4 DSRs"):
        cfg.dsr(4, R.Kind.MEM, base=0, dims=[(4, 1)])
    with pytest.raises(ValueError, match="dst=5 is not a DSR id: the PE has 4 DSRs"):
        cfg.task(0, [dict(op=R.TensorOp.FMOV, dst=5, a=0)])
    with pytest.raises(ValueError, match="task 4 is out of range: the PE has 4 tasks"):
        cfg.task(4, [dict(op=R.TensorOp.FMOV, dst=0, a=1)])
    with pytest.raises(ValueError, match="color 8 is out of range: the PE has 8 colors"):
        cfg.bind(8, data_task=0)
    with pytest.raises(ValueError, match="ctrl_base=4 is out of range"):
        cfg.bind(3, ctrl_base=4)
    with pytest.raises(ValueError, match="FIN color=9 is out of range: the PE has 8 colors"):
        cfg.dsr(0, R.Kind.FIN, color=9)
    cfg.dsr(0, R.Kind.FOUT, color=9, dims=[(4, 1)], check_color=False)   # on purpose


def test_pe_config_writes_task_words_with_encode_task():
    cfg = PEConfig()
    cfg.task(0, [dict(op=R.TensorOp.FMOV, dst=0, a=1)])
    cfg.task(3, [dict(op=R.TensorOp.FMOV, dst=1, a=0)])
    writes = dict(cfg.writes)
    assert writes[R.task_addr(3)] == R.encode_task(1)
    fields = R.decode_fields(R.TaskEntry, writes[R.task_addr(3)])
    assert (fields["entry"], fields["code"]) == (1, 0)


def test_gemm_program_ids_are_checked_against_the_pe(monkeypatch):
    m = GemmMapping(tokens=16, features=32, outputs=8, width=2, height=1)
    place = fabric_run.placements([m])[0]
    program = dict(fabric_run.pe_program(m, 0, 0, place[0, 0]))
    assert program[R.task_addr(fabric_run.TASKS["fmac"])] == \
        [R.encode_task(fabric_run.ENTRIES["fmac"])]
    # The reduction commands are code tasks of the control core, below the GEMM's data.
    final = R.decode_fields(R.TaskEntry, program[R.task_addr(fabric_run.TASKS["final"])][0])
    assert final["code"] == 1 and final["pc"] % 4 == 0 and final["pc"] < m.pe.data_base
    assert fabric_run.pe_params(m) == R.PEParams()
    monkeypatch.setitem(fabric_run.DSR_IDS, "null", 44)      # the PE has 44 DSRs
    with pytest.raises(ValueError,
                       match="44 (is not a DSR id|is out of range): the PE has 44 DSRs"):
        fabric_run.pe_program(m, 0, 0, place[0, 0])
