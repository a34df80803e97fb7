"""The fast functional model at scale: the GPT-2-small bench on a reduced size, and the
GPT-2-small mappings on the benchmark fabrics (validated without running)."""

import importlib.util
from pathlib import Path

import pytest

from gpt_mapping import gpt
from gpt_mapping.layout import GemmMapping, MappingError
from gpt_mapping.model import GPTConfig

BENCH = Path(__file__).resolve().parent.parent / "bench" / "gpt2_small.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("gpt2_small_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_on_a_reduced_block():
    """GPT-2 small's head size (64) and a quarter of its width and context, on a 16 x 16 and
    a tall 24 x 40 fabric, dense and 90 % sparse: the code path of bench/gpt2_small.py."""
    bench = _bench_module()
    config = GPTConfig(n_embd=192, n_head=3, n_ctx=256, batch=1)
    rows = bench.bench(config, fabrics=((16, 16), (24, 40)), sparsities=(0.0, 0.9))
    assert len(rows) == 4
    for row in rows:
        assert row["worst_op_rel_err"] <= gpt.TORCH_REL_TOL
        assert row["gemms_within_bound"]
        assert 0 < row["utilization"] <= 1
        assert set(row["cycles"]) == {"attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
    dense, sparse = rows[0], rows[2]
    assert dense["fabric"] == sparse["fabric"] == (16, 16)
    assert dense["speedup"] == 1.0 and sparse["speedup"] > 1.0
    # More PEs: fewer cycles, lower utilization; the bits may change with the width only.
    assert rows[1]["total_cycles"] < dense["total_cycles"]
    assert rows[1]["utilization"] < dense["utilization"]


@pytest.mark.parametrize("fabric", [(64, 64), (750, 994)])
def test_gpt2_small_maps_onto_the_benchmark_fabrics(fabric):
    cfg = GPTConfig(n_embd=768, n_head=12, n_ctx=1024, batch=1)
    for k, n in ((768, 2304), (768, 768), (768, 3072), (3072, 768)):
        mapping = GemmMapping(tokens=cfg.tokens, features=k, outputs=n, width=fabric[0],
                              height=fabric[1])
        assert mapping.tokens_per_row.max() <= 32


def test_gpt2_small_needs_enough_rows():
    with pytest.raises(MappingError, match="use a taller fabric"):
        GemmMapping(tokens=1024, features=768, outputs=2304, width=16, height=16)
