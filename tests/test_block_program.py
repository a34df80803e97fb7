"""One fabric program per block (gpt_mapping/block_program.py): where every operation's
input and output lie, what stops a block from running as one program, and on the RTL the
block in one simulation bit for bit against the golden pipeline and against the same block
run one operation at a time."""

import numpy as np
import pytest

from gpt_mapping import block_program, gpt, report
from gpt_mapping.layout import FP16_BYTES, MappingError, PEConfig
from gpt_mapping.model import GPTConfig, init_block
from gpt_mapping.redistribute import predict_redistribute_cycles as gemm_moves

CFG = GPTConfig(n_embd=16, n_head=2, n_ctx=4, batch=2)
FABRIC = (2, 2)


def _plan(cfg=CFG, fabric=FABRIC):
    mapped = gpt.map_block(init_block(cfg, 0), 0.0)
    pe = PEConfig()
    lay, why = gpt.attention_placement(cfg, fabric, pe)
    return block_program.plan(mapped, fabric, pe, lay), mapped


def test_every_operation_reads_where_the_previous_one_wrote():
    prog, _ = _plan()
    steps = prog.steps
    # A GEMM in column groups is preceded by the move of its X into them (its own step,
    # its cycles counted in the GEMM's row); here the mapper groups the first three.
    moves = [s for s in steps if s.kind == "redistribute"]
    assert [s.name for s in moves] == [f"{n}.redistribute" for n in
                                       ("attn.c_attn", "attn.c_proj", "mlp.c_fc")]
    assert [s.name for s in steps if s.kind != "redistribute"] == \
        [op.name for op in gpt.OPERATIONS]
    for st in moves:
        gemm = steps[steps.index(st) + 1]
        assert gemm.name + ".redistribute" == st.name and gemm.mapping.groups == 2
        assert gemm.base == st.out_base and gemm.mapping.pe.data_base == st.out_base
        # the plain X stays below its copy, which holds all K (2 x the plain piece)
        assert st.out_base - st.base == (gemm.mapping.features // 2) * 4 * FP16_BYTES
        assert st.predicted == gemm_moves(gemm.mapping)
    assert steps[0].base == PEConfig().data_base == prog.input_base
    for before, after in zip(steps, steps[1:]):
        if after.name == "attn.av":            # P V reads the QKV the scores read
            assert after.base == before.base
        else:
            assert after.base == before.out_base, (before.name, after.name)
    assert prog.output_base == steps[-1].out_base
    # Every output lies right after its input (the SPEC 7 rule), so the addresses only grow
    # and the block input and x1 stay intact for the residual adds.
    tp, c = 4, CFG.n_embd
    res1 = next(s for s in steps if s.name == "residual_1")
    res2 = next(s for s in steps if s.name == "residual_2")
    src = {s.name: s for s in steps}
    x1 = src["residual_1"].out_base
    assert x1 < min(s.out_base for s in steps[steps.index(res1) + 1:])
    assert res1.base > prog.input_base and res2.base > x1
    # The QKV GEMM's weight columns are ordered head by head.
    d = c // CFG.n_head
    assert list(prog.perm[:3 * d]) == [*range(0, d), *range(c, c + d), *range(2 * c, 2 * c + d)]
    assert res1.out_base - res1.base == (c // 2) * tp * FP16_BYTES


def test_a_block_whose_attention_runs_on_the_host_is_not_one_program():
    cfg = GPTConfig(n_embd=16, n_head=4, n_ctx=4, batch=2)         # 4 heads on 2 columns
    mapped = gpt.map_block(init_block(cfg, 0), 0.0)
    lay, why = gpt.attention_placement(cfg, FABRIC, PEConfig())
    assert lay is None and "one head per column" in why
    with pytest.raises(MappingError, match="needs the attention on the fabric"):
        block_program.plan(mapped, FABRIC, PEConfig(), lay)


def test_rows_of_one_padded_size_are_one_program_and_of_two_are_not():
    # 5 tokens on 2 rows (2 and 3, both T_pad 4): one program, the attention's output
    # where every row's tiles put it; 9 tokens (4 and 5: T_pad 4 and 8): refused, named.
    prog, _ = _plan(GPTConfig(n_embd=16, n_head=2, n_ctx=5, batch=1))
    att = next(s for s in prog.steps if s.name == "attn.av")
    assert att.out_base == max(att.out.y_base(0, y) for y in range(2))
    mapped = gpt.map_block(init_block(GPTConfig(n_embd=16, n_head=2, n_ctx=9, batch=1), 0), 0.0)
    lay, _ = gpt.attention_placement(mapped.config, FABRIC, PEConfig())
    assert lay is not None                       # the attention itself takes uneven rows
    with pytest.raises(MappingError, match=r"same padded tokens \(T_pad\) on every row "
                                           r"with tokens; the split gives \[8\] features, "
                                           r"T_pad \[4, 8\]"):
        block_program.plan(mapped, FABRIC, PEConfig(), lay)


def test_golden_backend_reports_one_run_per_operation():
    run, _ = gpt.run_gpt(init_block(CFG, 0), gpt.random_input(CFG, 1), FABRIC, "golden")
    assert run.program == {"one_program": False,
                           "why": "the golden backend runs each operation on its own"}
    text = report.format_report(report.build_report(run))
    assert "fabric program: one fabric run per operation" in text


@pytest.mark.rtl
@pytest.mark.slow
def test_the_block_as_one_fabric_program_matches_the_runs_one_by_one(tmp_path):
    block, x = init_block(CFG, 0), gpt.random_input(CFG, 1)
    one, _ = gpt.run_gpt(block, x, FABRIC, "rtl")
    each, _ = gpt.run_gpt(block, x, FABRIC, gpt.RtlBackend(one_program=False))
    assert one.program["one_program"] and not each.program["one_program"]
    assert all(rec.bit_exact for rec in one.ops), [r.name for r in one.ops if not r.bit_exact]
    for a, b in zip(one.ops, each.ops):
        assert np.array_equal(gpt.bits(a.out16), gpt.bits(b.out16)), a.name
        ca = (a.gemm or a.fabric_op).cycles
        cb = (b.gemm or b.fabric_op).cycles
        if a.name.startswith("residual"):
            # Its operand is the resident residual stream, on the bank pair of X and Y.
            assert ca > cb
        else:
            assert ca == cb, (a.name, ca, cb)
    rep = report.build_report(one)
    prog = rep["fabric_program"]
    assert prog["compute"] == rep["totals"]["fabric_cycles"]
    assert min(prog["load"], prog["programs"], prog["readback"], prog["verification"]) > 0
    assert rep["totals"]["activations_stay_on_fabric"] == list(gpt.LINEAR_LAYERS)
    assert "fabric program: one for the block" in report.format_report(rep)
    # Pictures: the GEMMs' two each, and the busy fraction of every other class.
    from gpt_mapping import plots
    names = sorted(p.name for p in plots.plot_run(one, tmp_path))
    assert len(names) == 8 + len(plots.OP_CLASSES)
    assert [n for n in names if n.endswith("_busy.png")] == [
        "5_layernorm_busy.png", "6_bias_adds_busy.png", "7_residual_adds_busy.png",
        "8_gelu_busy.png", "9_attention_busy.png"]
    for row in rep["operations"]:
        measured = row["fabric_cycles"]
        predicted = (row["gemm"] if "gemm" in row else row["fabric_op"])["predicted_cycles"]
        assert abs(predicted - measured) <= 0.10 * measured, (row["name"], predicted, measured)


def test_the_model_program_chains_the_blocks_and_names_what_stops_it():
    from gpt_mapping.model import init_gpt
    model = init_gpt(CFG, 2, 32, seed=1)
    blocks = [gpt.map_block(b, 0.0) for b in model.transformer.h]
    pe = PEConfig()
    lay, _ = gpt.attention_placement(CFG, FABRIC, pe)
    ln16 = tuple(np.zeros(CFG.n_embd, np.float16) for _ in range(2))
    prog = block_program.plan_model(blocks, ln16, np.zeros((16, 32), np.float16), FABRIC,
                                    pe, lay, 1e-5)
    names = [s.name for s in prog.steps if s.kind != "redistribute"]
    assert names[:2] == ["h.0.ln_1", "h.0.attn.c_attn"] and names[-2:] == ["ln_f", "lm_head"]
    assert len(names) == 2 * 15 + 2
    first_1 = [s.name for s in prog.steps].index("h.1.ln_1")
    assert prog.steps[first_1].base == prog.steps[first_1 - 1].out_base  # block 1 reads block 0
    with pytest.raises(MappingError, match=r"the same 31 features on every column"):
        block_program.plan_model(blocks, ln16, np.zeros((16, 31), np.float16), FABRIC, pe,
                                 lay, 1e-5)
