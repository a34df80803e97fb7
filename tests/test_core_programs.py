"""The constrained-random program generator (tb/core_programs.py) through the ISS: 1,000
programs halt without fault within their bound, keep their constraints, and together reach
every opcode."""

from collections import Counter

import numpy as np

from golden.iss import ISS
from rtl.pe.asm import CSR_NAMES
from rtl.pe.isa import INSNS, TENSOR_MNEMONICS, Cls, decode
from tb.core_programs import (CODE_LIMIT, DATA_BASE, DATA_WORDS, TENSOR_BASE, TENSOR_SLOTS,
                              generate_program, generate_programs)

PROGRAMS = 1000


def run_generated(generated, launches=None):
    """Run on a fresh ISS; ``launches`` (a list) collects ``(pc, dst, a, b, s)`` of every
    tensor launch (``s``: the SCALAR DSR of the modifier, or None)."""
    program = generated.assemble()
    iss = ISS()
    if launches is not None:
        launch = iss.launch

        def recording_launch(op, dst, a, b, scalar_word, modifier_word, pc=0, word=None):
            s_dsr = modifier_word >> 9 & 1   # LaunchModifier: s_dsr bit 9, s bits 15..10
            launches.append((pc, dst, a, b, modifier_word >> 10 & 63 if s_dsr else None))
            return launch(op, dst, a, b, scalar_word, modifier_word, pc, word)
        iss.launch = recording_launch
    iss.load(program)
    for color, wavelets in generated.inputs.items():
        for wavelet in wavelets:
            iss.push_input(color, *wavelet)
    iss.start(0)
    return iss, program, iss.run(max_instructions=generated.max_instructions + 1)


def _mnemonic(word):
    insn = decode(word)[0]
    return insn if isinstance(insn, str) else insn.mnemonic


def test_generator_is_seeded():
    assert generate_program(7).source == generate_program(7).source
    assert generate_program(7).source != generate_program(8).source
    assert [p.seed for p in generate_programs(3, seed=40)] == [40, 41, 42]


def test_thousand_programs_halt_and_cover_every_opcode():
    retired = Counter()
    total = 0
    allowed_while_live = {i.mnemonic for i in INSNS if i.cls in (Cls.ALU, Cls.LUI)}
    allowed_while_live |= set(TENSOR_MNEMONICS)
    readable = {CSR_NAMES["ID"], CSR_NAMES["ERROR"]}
    for generated in generate_programs(PROGRAMS, seed=1000):
        launches = []
        iss, program, result = run_generated(generated, launches)
        seed = generated.seed
        assert result.halted, f"seed {seed}: {result.stop} at {result.pc:#x} {result.fault}"
        assert result.retired <= generated.max_instructions, seed
        assert not iss.errors, f"seed {seed}: {iss.errors}"
        # No store reached the code or anything outside the data and tensor regions.
        code_words = CODE_LIMIT // 4
        image = np.zeros(code_words, dtype=np.uint32)
        image[:min(len(program.words), code_words)] = program.words[:code_words]
        assert np.array_equal(iss.mem[:code_words], image), seed
        tensor_end = TENSOR_BASE // 4 + TENSOR_SLOTS * 8
        assert not iss.mem[tensor_end:].any(), seed
        assert not iss.mem[DATA_BASE // 4 + DATA_WORDS:TENSOR_BASE // 4].any(), seed
        live = set()            # DSRs of the operations launched since the last twait
        by_pc = iter(launches)
        for record in iss.trace:
            mnemonic = _mnemonic(record.word)
            retired[mnemonic] += 1
            if mnemonic.startswith("t."):
                pc, *dsrs = next(by_pc)
                assert pc == record.pc
                live |= {d for d in dsrs if d is not None and d < 62}
            elif mnemonic == "twait":
                live = set()
            elif live:   # between a launch and its twait: nothing that touches its state
                if mnemonic in ("dsrw", "dsrr"):
                    dsr = decode(record.word)[1]["imm"] >> 3
                    assert dsr not in live, (seed, hex(record.pc), mnemonic, dsr)
                else:
                    assert mnemonic in allowed_while_live, (seed, hex(record.pc), mnemonic)
            if mnemonic == "csrr":
                assert decode(record.word)[1]["imm"] in readable, (seed, hex(record.pc))
        total += result.retired
    every = {i.mnemonic for i in INSNS} | set(TENSOR_MNEMONICS)
    assert every <= set(retired), f"opcodes never retired: {sorted(every - set(retired))}"
    least = min(retired[m] for m in every)
    assert least >= 50, retired.most_common()[-5:]
    assert total > 100_000


def test_without_pe_share_only_the_task_chain_uses_pe_instructions():
    pe = {i.mnemonic for i in INSNS if i.cls not in (Cls.ALU, Cls.LUI, Cls.LOAD, Cls.STORE,
                                                     Cls.BRANCH, Cls.JAL, Cls.JALR, Cls.HALT)}
    for seed in range(20):
        generated = generate_program(seed, pe_share=0.0, max_segments=1)
        iss, _, result = run_generated(generated)
        assert result.halted
        assert not {_mnemonic(r.word) for r in iss.trace} & (pe | set(TENSOR_MNEMONICS))
        assert not generated.inputs


def test_options_switch_calls_and_loops_off():
    for seed in range(20):
        generated = generate_program(seed, calls=False, loops=False, max_segments=1)
        iss, _, result = run_generated(generated)
        assert result.halted
        used = {_mnemonic(r.word) for r in iss.trace}
        assert "jalr" not in used and "jal" not in used
        # No backward branch was taken: PCs only increase.
        pcs = [r.pc for r in iss.trace]
        assert pcs == sorted(pcs), seed
