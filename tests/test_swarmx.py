"""SwarmX (gpt_mapping/swarmx.py): the fixed gradient tree, golden against a Dask cluster
bit for bit, S = 1, 2, 4 systems within tolerance of one torch model on the whole batch,
and the errors a user can meet."""

import time

import numpy as np
import pytest
import torch

from gpt_mapping import swarmx as SX
from gpt_mapping.memoryx import MemoryX, SGDConfig

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore::ResourceWarning",
                                        "ignore::pytest.PytestUnraisableExceptionWarning")


def test_tree_levels_and_golden_order():
    assert SX.tree_levels(1) == []
    assert SX.tree_levels(4) == [[(0, 1), (2, 3)], [(0, 1)]]
    assert SX.tree_levels(5) == [[(0, 1), (2, 3), (4, None)], [(0, 1), (2, None)], [(0, 1)]]
    rng = np.random.default_rng(0)
    g = [{"w": (rng.standard_normal(64) * 10.0 ** rng.integers(-3, 3)).astype(np.float32)}
         for _ in range(3)]
    want = ((g[0]["w"] + g[1]["w"]) + g[2]["w"]) / np.float32(3)
    assert np.array_equal(SX.tree_reduce(g)["w"].view(np.uint32), want.view(np.uint32))
    other = ((g[1]["w"] + g[2]["w"]) + g[0]["w"]) / np.float32(3)
    assert not np.array_equal(other, want)            # the order is part of the model
    with pytest.raises(ValueError, match="system 1 sent gradients for"):
        SX.tree_reduce([{"w": 1}, {"v": 1}])


def _problem(rows=32, k=16, n=8, seed=0):
    rng = np.random.default_rng(seed)
    x16 = rng.standard_normal((rows, k)).astype(np.float16)
    targets = rng.integers(0, n, rows)
    w = (rng.standard_normal((k, n)) / 4).astype(np.float32)
    b = np.zeros(n, np.float32)
    return x16, targets, w, b


def _torch_grads(x16, targets, w, b):
    """One model on the whole batch (float32, from the same FP16 weights)."""
    tw = torch.tensor(w.astype(np.float16).astype(np.float32), requires_grad=True)
    tb = torch.tensor(b.astype(np.float16).astype(np.float32), requires_grad=True)
    loss = torch.nn.functional.cross_entropy(torch.tensor(x16.astype(np.float32)) @ tw + tb,
                                             torch.tensor(targets))
    loss.backward()
    return loss.item(), tw.grad.numpy(), tb.grad.numpy()


@pytest.fixture(scope="module")
def client():
    c, cluster = SX.connect(workers=2)
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize("systems", [1, 2, 4])
def test_data_parallel_step_on_dask_is_the_golden_tree(client, systems):
    x16, targets, w, b = _problem()
    local = MemoryX({"w": w, "b": b}, SGDConfig(lr=0.5))
    remote = MemoryX({"w": w, "b": b}, SGDConfig(lr=0.5))
    loss_l, grads_l, _ = SX.data_parallel_step(local, x16, targets, systems, 2, 2)
    loss_r, grads_r, pids = SX.data_parallel_step(remote, x16, targets, systems, 2, 2,
                                                  client=client)
    assert loss_l == loss_r
    for name in ("w", "b"):
        assert np.array_equal(grads_l[name].view(np.uint32), grads_r[name].view(np.uint32))
        assert np.array_equal(local.params[name].view(np.uint32),
                              remote.params[name].view(np.uint32))
    if systems >= 2:
        assert len(set(pids)) >= 2                 # at least two worker processes
    # within tolerance of one torch model on the whole batch: the fabric rounds the logits
    # and their gradient to FP16 (a relative 2^-11 each), the rest is FP32
    loss_t, gw, gb = _torch_grads(x16, targets, w, b)
    assert loss_l == pytest.approx(loss_t, rel=4e-3)
    for got, want in ((grads_l["w"], gw), (grads_l["b"], gb)):
        assert np.abs(got - want).max() <= 4e-3 * np.abs(want).max()


def test_the_split_changes_only_the_rounding():
    """1, 2 and 4 systems see the same batch: their gradients agree to the FP16 rounding of
    the slices' gradients, not bit for bit (each slice's mean is scaled by its own rows)."""
    x16, targets, w, b = _problem()
    g = {}
    for s in (1, 2, 4):
        mx = MemoryX({"w": w, "b": b}, SGDConfig(lr=0.1))
        _, g[s], _ = SX.data_parallel_step(mx, x16, targets, s, 2, 2)
    for s in (2, 4):
        assert np.abs(g[s]["w"] - g[1]["w"]).max() <= 2e-3 * np.abs(g[1]["w"]).max()


@pytest.mark.rtl
def test_one_system_on_the_rtl_is_the_golden_system():
    x16, targets, w, b = _problem(rows=16, k=8, n=8)
    w16, b16 = w.astype(np.float16), b.astype(np.float16)
    gold = SX.system_step(x16, targets, w16, b16, 2, 2, "golden")
    rtl = SX.system_step(x16, targets, w16, b16, 2, 2, "rtl")
    assert gold["loss"]["loss"] == rtl["loss"]["loss"]
    for name in ("w", "b"):
        assert np.array_equal(gold["grads"][name].view(np.uint32),
                              rtl["grads"][name].view(np.uint32))


def test_bad_input_is_named_quickly():
    x16, targets, w, b = _problem(rows=30)
    mx = MemoryX({"w": w, "b": b}, SGDConfig())
    with pytest.raises(ValueError, match="--systems 4 does not divide the batch of 30 rows"):
        SX.data_parallel_step(mx, x16, targets, 4, 2, 2)
    start = time.monotonic()
    with pytest.raises(ConnectionError, match="no Dask scheduler answers at "
                                              "tcp://127.0.0.1:9"):
        SX.connect("tcp://127.0.0.1:9", timeout=2)
    assert time.monotonic() - start < 30


def test_bandwidth_model():
    m = SX.SwarmXModel(link_bytes_per_s=150e9, link_latency_s=5e-6, chunk_bytes=1 << 20)
    one = m.step_seconds(1, 124e6, 1000, 64)
    hop = 5e-6 + (1 << 20) / 150e9
    assert one["tree"] == pytest.approx(2 * hop)             # down from and up to MemoryX
    assert one["transfer"] == pytest.approx(6 * 124e6 / 150e9)
    four = m.step_seconds(4, 124e6, 1000, 64)
    assert four["compute"] == pytest.approx(one["compute"] / 4)
    assert four["tree"] == pytest.approx(2 * 3 * hop)        # two levels and MemoryX
    assert four["total"] == pytest.approx(max(four["compute"], four["transfer"]) + 6 * hop)
    with pytest.raises(ValueError, match="3 systems do not divide 64 rows"):
        m.step_seconds(3, 1, 1, 64)
