"""The control core inside the real PE (Verilator): the directed programs of tb/core_cases.py
against their hand-written expectations, tasks as code beside the launch-list fast path,
and the core's errors as PE errors.

Every job runs in one simulator process (``runtime.pe_core_run.run_on_pe``) on the cached build
of the default PE; each test looks at its own jobs' results.
"""

import functools
import os

import pytest

from rtl.pe import regs as R
from rtl.pe.asm import assemble
from rtl.pe.isa import PC_BITS
from tb.core_cases import CASES
from runtime.pe_core_run import program_job, run_on_pe

pytestmark = pytest.mark.rtl

#: SRAM the directed cases use (code, the tensor and the scalar data areas, the last word):
#: cleared before every job, since the SRAM keeps its contents across a PE reset.
SCRUB = [(0, 256), (0x400, 256), (0x8000, 256), (0xBFFC, 1)]
PC_MASK = (1 << PC_BITS) - 1
ONE16 = 0x3C00           # FP16 1.0
W_COLOR, CODE_COLOR = 2, 4


def _case_job(case):
    return program_job(assemble(case.source), binds=case.binds, inputs=case.inputs,
                       mem=[(a, 1) for a in sorted(case.mem)], zero=SCRUB,
                       max_cycles=20_000)


def _dsr(ident, kind, **fields):
    return [(R.dsr_addr(ident, w), v) for w, v in enumerate(R.encode_dsr(kind, **fields))]


def _fast_path_axpy(weights):
    """Configuration of a launch-list FMAC task on color W_COLOR (the GEMM's fast path):
    acc[0:16] += X[:, index] * w, X = 16 tokens x 8 features of 1.0 at halfword 0x1000."""
    writes = [(0x800 + i, ONE16 | ONE16 << 16) for i in range(64)]        # X, 128 halves
    writes += _dsr(0, R.Kind.ACC, dtype=R.DType.FP32, dims=((16, 1),))
    writes += _dsr(1, R.Kind.MEM, base=0x1000, dims=((16, 1),), idx_stride=16)
    writes += [(R.entry_addr(0, w), v) for w, v in enumerate(
        R.encode_entry(R.TensorOp.FMAC, 0, 0, 1, R.DSR_WAVELET, idx=("b",)))]
    writes.append((R.task_addr(1), R.encode_task(0)))
    inputs = {W_COLOR: [(ONE16, k % 8, 0) for k in range(weights)]}
    return writes, inputs


#: A code task (bound to CODE_COLOR) that runs while the fast path streams: it reads the
#: FMAC lane counter, copies 64 FP16 values with a tensor op of its own, waits for it, reads
#: the counter again and stores both.
OVERLAP = """
        .task 3, copy, 0
        tend
copy:   csrr r5, FMAC_LANES
        t.fmov 3, 2, -
        twait
        csrr r6, FMAC_LANES
        sw   r5, 0x400(r0)
        sw   r6, 0x404(r0)
        halt
"""

#: A code task that launches a long copy and ends without waiting; a second code task,
#: started by the next wavelet while the copy is still in flight, reads STATUS. (The first
#: one's color has the higher priority, so it goes first whatever order the two arrive in.)
IN_FLIGHT = """
        .task 3, first, 0
        .task 4, second, 0
        tend
first:  t.fmov 3, 2, -
        tend
second: csrr r7, STATUS
        twait
        csrr r8, STATUS
        halt
"""

#: A code task that writes the DSR its own live tensor op uses: DSR_BUSY.
DSR_BUSY = """
        t.fmov 3, 2, -
        li   r1, 5
        dsrw r1, 3, 1
        halt
"""

#: Instruction fetches beside a datapath that streams SRAM reads: the fetches of the loop
#: share banks with the copy's reads, so some wait (STALL_CORE_BANK) and the result is right.
BANK_STALLS = """
        t.fmov 3, 2, -
        li   r2, 200
loop:   addi r3, r3, 3
        addi r2, r2, -1
        bne  r2, r0, loop
        twait
        halt
"""


def _copy_dsrs(length):
    # DSR 2: a source of `length` FP16 values at byte 0x4000, DSR 3: the destination at 0x8000.
    return (_dsr(2, R.Kind.MEM, base=0x2000, dims=((length, 1),))
            + _dsr(3, R.Kind.MEM, base=0x4000, dims=((length, 1),)))


def _special_jobs():
    fast_writes, fast_inputs = _fast_path_axpy(64)
    src = [(0x1000 + i, (0x4000 + 2 * i) | (0x4000 + 2 * i + 1) << 16) for i in range(32)]
    jobs = {
        "overlap": program_job(
            assemble(OVERLAP), zero=SCRUB,
            writes=fast_writes + _copy_dsrs(64) + src
            + [(R.bind_addr(W_COLOR), R.encode_bind(data_task=1)),
               (R.bind_addr(CODE_COLOR), R.encode_bind(data_task=3))],
            inputs={**fast_inputs, CODE_COLOR: [(0x55, 9, 0)]},
            mem=[(0x400, 2), (0x8000, 32)]),
        "in_flight": program_job(
            assemble(IN_FLIGHT), zero=SCRUB,
            writes=_copy_dsrs(2048) + [(R.bind_addr(CODE_COLOR),
                                        R.encode_bind(data_task=3, prio=1)),
                                       (R.bind_addr(5), R.encode_bind(data_task=4))],
            inputs={CODE_COLOR: [(1, 0, 0)], 5: [(2, 0, 0)]}),
        "dsr_busy": program_job(assemble(DSR_BUSY), zero=SCRUB, writes=_copy_dsrs(2048)),
        "bank_stalls": program_job(assemble(BANK_STALLS), zero=SCRUB,
                                   writes=_copy_dsrs(4000) + src, mem=[(0x8000, 32)]),
    }
    return jobs


@functools.lru_cache(maxsize=None)
def _runs():
    special = _special_jobs()
    jobs = [_case_job(c) for c in CASES] + list(special.values())
    results = run_on_pe(jobs, timeout=1200)
    cases = dict(zip((c.name for c in CASES), results))
    return cases, dict(zip(special, results[len(CASES):]))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_directed_case_on_the_pe(case):
    """The hand-written expectations (registers, memory, how and where it stops, the fault,
    the retired count, the wavelets sent) hold for the RTL core in the PE. CORE_PC holds
    17 bits (the SRAM's byte addresses): a PC beyond is compared in those bits."""
    run = _runs()[0][case.name]
    pc = case.pc if case.pc is not None and run.pc == case.pc & PC_MASK else run.pc
    problems = case.mismatches(run.regs, run.read_word, run.stopped, pc, run.fault,
                               run.retired, None, run.outputs)
    assert not problems, f"{case.name} ({case.what}): " + "; ".join(problems)
    assert run.retired == len(run.trace), "one trace record per retired instruction"
    if case.stop == "fault":
        assert run.error[0] == case.fault, "the core's fault is the PE's ERROR"


def test_code_task_overlaps_the_fast_path():
    """A wavelet-triggered code task runs while launch-list FMACs stream on another color:
    the FMAC lane counter moves between the task's two reads, its own copy is right, and
    the fast path's 64 weights all ran."""
    run = _runs()[1]["overlap"]
    assert run.stopped == "halt", run
    before, after = run.mem[0x400]
    assert after > before, f"no FMAC issued while the code task ran ({before} -> {after})"
    assert run.mem[0x8000] == [(0x4000 + 2 * i) | (0x4000 + 2 * i + 1) << 16
                               for i in range(32)]
    assert run.counters["TASKS"] == 1 + 64 + 1       # start, 64 FMAC tasks, the code task
    assert run.error == (R.ErrorCode.NONE, 0)


def test_task_started_while_tensor_ops_are_in_flight():
    """The second code task starts (and reads STATUS) while the first one's copy is still
    running: STATUS shows a live micro-thread, and none after its twait."""
    run = _runs()[1]["in_flight"]
    assert run.stopped == "halt", run
    during = R.decode_fields(R.Status, run.regs[7])
    after = R.decode_fields(R.Status, run.regs[8])
    assert during["threads_active"] != 0 and during["core_running"] == 1
    assert after["threads_active"] == 0


def test_dsr_write_of_a_live_operand_is_a_named_error():
    run = _runs()[1]["dsr_busy"]
    assert run.stopped == "fault" and run.fault == R.ErrorCode.DSR_BUSY
    assert run.error == (R.ErrorCode.DSR_BUSY, 3), "info names the DSR"
    assert run.pc == 0x8, "CORE_PC names the dsrw"


def test_core_waits_for_banks_the_datapath_uses():
    """Fetches collide with a long copy's SRAM reads: some wait (STALL_CORE_BANK counts
    them), the loop's result and the copy are still right."""
    run = _runs()[1]["bank_stalls"]
    assert run.stopped == "halt", run
    assert run.regs[3] == 600
    assert run.counters["STALL_CORE_BANK"] > 0
    assert run.mem[0x8000] == [(0x4000 + 2 * i) | (0x4000 + 2 * i + 1) << 16
                               for i in range(32)]


# --- lockstep with the ISS -------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_directed_case_in_lockstep_with_the_iss(case):
    """The same program on the ISS: the same retire trace, record for record, and the same
    registers and wavelets sent."""
    from tb.lockstep import first_difference, iss_run
    run = _runs()[0][case.name]
    iss, _ = iss_run(assemble(case.source), binds=case.binds, inputs=case.inputs)
    difference = first_difference([r[1:] for r in run.trace], iss.trace)
    assert difference is None, f"{case.name}: {difference}"
    assert run.regs == iss.regs


#: Random programs in lockstep in the regression (``nox -s lockstep`` runs 10,000).
LOCKSTEP_PROGRAMS = int(os.environ.get("WSE_LOCKSTEP_PROGRAMS", "500"))


def test_random_programs_in_lockstep_with_the_iss():
    from tb.lockstep import run_lockstep
    count, retired, mismatches = run_lockstep(range(LOCKSTEP_PROGRAMS), batch=250)
    assert not mismatches, f"{len(mismatches)} of {count} programs differ; first:\n" \
                           f"{mismatches[0]}"
    assert count == LOCKSTEP_PROGRAMS and retired > 100 * count


def test_lockstep_checker_names_the_first_difference():
    """A planted difference (one retired value changed, one record dropped) is reported at
    its position with the PC, the disassembled instruction and both values."""
    from tb.lockstep import first_difference
    run = _runs()[0]["forward_alu"]
    trace = [r[1:] for r in run.trace]
    assert first_difference(trace, trace) is None
    planted = list(trace)
    i = 5
    pc, word, rd, value = planted[i]
    planted[i] = (pc, word, rd, value ^ 0x10)
    message = first_difference(planted, trace)
    assert message.startswith(f"retired instruction #{i} differs at PC {pc:#06x}")
    assert f"RTL: PC {pc:#06x}" in message and f"{value ^ 0x10:#010x}" in message
    assert f"ISS: PC {pc:#06x}" in message and f"{value:#010x}" in message
    assert "retired before it" in message
    assert "the RTL retired" in first_difference(trace[:-1], trace)
