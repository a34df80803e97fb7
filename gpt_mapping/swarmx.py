"""SwarmX: data parallelism over S systems (SPEC section 11; docs/training.md section 6).

Each system runs the same layer on its own slice of the batch; SwarmX broadcasts the
weights down a tree to every system and reduces their gradients up the same tree, then
MemoryX updates once. The tree (design choice) is binary over the systems in index order:
level 0 pairs systems (0, 1), (2, 3), ...; each level pairs the previous level's results
the same way, an odd one out going up unchanged; every pair's sum is one FP32 addition,
lower index first (``s = a + b``). At the root the sum is divided by S (one FP32 division):
each system's gradient is that of the mean loss over its slice, so with equal slices the
root holds the gradient of the mean over the whole batch. :func:`tree_reduce` is the golden
model; :func:`reduce_on` runs the same tree as tasks of a Dask distributed cluster, one
task per pair, and must agree with it bit for bit.

What a system computes here is one linear layer's step (:func:`system_step`): logits
``Y = X W + b`` as the fabric computes them (FP16), the mean cross-entropy of its slice, and
``dW``, ``db`` in the fixed order of golden/training.py, on the golden model or the RTL
fabric (gpt_mapping/backward.py). The GPT block's backward is not built yet.
"""

import math

import numpy as np

__all__ = ["tree_levels", "tree_reduce", "reduce_on", "system_step", "data_parallel_step",
           "SwarmXModel", "run_systems", "connect", "reduce_results"]


def tree_levels(systems):
    """The tree's pairs: a list of levels, each a list of ``(a, b)`` indices into the
    previous level's results (``b`` None: ``a`` goes up alone)."""
    if not isinstance(systems, int) or systems < 1:
        raise ValueError(f"systems = {systems!r}: at least 1")
    levels, n = [], systems
    while n > 1:
        level = [(i, i + 1 if i + 1 < n else None) for i in range(0, n, 2)]
        levels.append(level)
        n = len(level)
    return levels


def _add(a, b):
    with np.errstate(all="ignore"):
        return {k: (np.asarray(a[k], np.float32) + np.asarray(b[k], np.float32))
                for k in a}


def _scale(total, systems):
    with np.errstate(all="ignore"):
        return {k: np.asarray(v, np.float32) / np.float32(systems) for k, v in total.items()}


def tree_reduce(grads):
    """The golden tree: ``grads`` a list (system order) of ``{name: FP32 array}``; returns
    their tree sum divided by S."""
    if not grads:
        raise ValueError("no systems' gradients to reduce")
    names = list(grads[0])
    for s, g in enumerate(grads):
        if list(g) != names:
            raise ValueError(f"system {s} sent gradients for {sorted(g)}, system 0 for "
                             f"{sorted(names)}")
    cur = list(grads)
    for level in tree_levels(len(grads)):
        cur = [cur[a] if b is None else _add(cur[a], cur[b]) for a, b in level]
    return _scale(cur[0], len(grads))


def reduce_on(client, futures):
    """The same tree on a Dask ``client``: ``futures`` (system order) of gradient dicts;
    each pair's sum is a task (on the worker that holds one of its inputs, as Dask places
    it), the division by S the last. Returns the root's dict."""
    cur = list(futures)
    for level in tree_levels(len(futures)):
        cur = [cur[a] if b is None else client.submit(_add, cur[a], cur[b], pure=False)
               for a, b in level]
    return client.submit(_scale, cur[0], len(futures), pure=False).result()


def reduce_results(results, futures=None, client=None):
    """The systems' ``{"grads", "loss"}`` results reduced up the tree: ``(grads, loss)``;
    on ``client`` from the results' ``futures`` (the tree's tasks where the results are),
    else locally (:func:`tree_reduce`)."""
    if client is None:
        return (tree_reduce([r["grads"] for r in results]),
                tree_reduce([r["loss"] for r in results])["loss"])
    part = {key: [client.submit(lambda r, key=key: r[key], f, pure=False) for f in futures]
            for key in ("grads", "loss")}
    return reduce_on(client, part["grads"]), reduce_on(client, part["loss"])["loss"]


def system_step(x16, targets, w16, b16, width, height, backend="golden"):
    """One system's forward and backward of the layer ``logits = X W + b`` on its slice:
    ``{"loss": float, "grads": {"w": dW, "b": db}, "pid": ...}``."""
    import os
    from golden import training as TR
    from golden.block import add_bias16
    from golden.gemm import fabric_gemm
    if backend == "rtl":
        from gpt_mapping.backward import run_bias_gradient_rtl, run_weight_gradient_rtl
        from gpt_mapping.fabric_run import run_gemm_rtl
        from gpt_mapping.layout import GemmMapping
        m = GemmMapping(tokens=x16.shape[0], features=x16.shape[1], outputs=w16.shape[1],
                        width=width, height=height)
        y16, _ = run_gemm_rtl(m, x16, w16)
    elif backend == "golden":
        y16 = fabric_gemm(x16, w16, width, height)
    else:
        raise ValueError(f"backend {backend!r}: golden or rtl")
    logits16 = add_bias16(y16, b16)
    ce = TR.cross_entropy(logits16, targets)
    if backend == "rtl":
        dw, _ = run_weight_gradient_rtl(x16, ce.dlogits16, width, height)
        db, _ = run_bias_gradient_rtl(ce.dlogits16, width, height)
    else:
        dw = TR.weight_gradient(x16, ce.dlogits16, height)
        db = TR.bias_gradient(ce.dlogits16, height)
    return {"loss": {"loss": np.float32(ce.loss)}, "grads": {"w": dw, "b": db},
            "pid": os.getpid()}


def _slices(rows, systems):
    if not isinstance(systems, int) or systems < 1:
        raise ValueError(f"--systems {systems!r}: at least 1")
    if rows % systems:
        raise ValueError(f"--systems {systems} does not divide the batch of {rows} rows")
    per = rows // systems
    return [slice(s * per, (s + 1) * per) for s in range(systems)]


def run_systems(x16, targets, w16, b16, systems, width, height, backend="golden",
                client=None):
    """Every system's :func:`system_step` on its slice: locally in order, or as tasks of
    ``client`` spread round-robin over its workers. Returns the results (system order)
    and, with a client, their futures."""
    parts = _slices(x16.shape[0], systems)
    if client is None:
        return [system_step(x16[p], targets[p], w16, b16, width, height, backend)
                for p in parts], None
    workers = sorted(client.scheduler_info()["workers"])
    futures = [client.submit(system_step, x16[p], targets[p], w16, b16, width, height,
                             backend, workers=[workers[s % len(workers)]], pure=False)
               for s, p in enumerate(parts)]
    return client.gather(futures), futures


def data_parallel_step(memoryx, x16, targets, systems, width, height, backend="golden",
                       client=None):
    """One training step of the layer ``logits = X W + b`` held by ``memoryx`` (parameters
    ``"w"`` [K, N] and ``"b"`` [N]) over S systems: the FP16 weights broadcast, each system's
    slice forward and backward, the losses and gradients reduced up the tree (on ``client``
    when given, else locally), one MemoryX update. Returns ``(loss, grads, pids)``: the
    batch's mean loss (the tree's, FP32), the reduced gradients, the worker processes that
    ran the systems."""
    w16, b16 = (memoryx.fp16()[k] for k in ("w", "b"))
    results, futures = run_systems(x16, targets, w16, b16, systems, width, height, backend,
                                   client)
    grads, loss = reduce_results(results, futures, client)
    memoryx.update(grads)
    return float(loss), grads, [r["pid"] for r in results]


class SwarmXModel:
    """The bandwidth model of the tree (docs/training.md section 6; the figures are
    assumptions, not measurements). Every system has one link of ``link_bytes_per_s`` to
    its tree parent (the root's parent is MemoryX). Weights stream down (FP16, 2 bytes a
    parameter) and gradients up (FP32, 4 bytes) in chunks of ``chunk_bytes``, the tree
    forwarding each chunk as it arrives (cut-through, the SwarmX reduction adding a chunk
    as it passes), while the fabric computes on what has arrived: a step takes the larger
    of the slowest system's compute on its B / S rows and the link's ``6 P`` bytes, plus,
    for each of the ``ceil(log2 S)`` levels and the link to MemoryX, one hop's latency and
    one chunk's serialisation, plus MemoryX's update."""

    def __init__(self, link_bytes_per_s=150e9, link_latency_s=5e-6, clock_hz=1.1e9,
                 chunk_bytes=1 << 20):
        self.link = float(link_bytes_per_s)
        self.latency = float(link_latency_s)
        self.clock = float(clock_hz)
        self.chunk = float(chunk_bytes)

    def levels(self, systems):
        return math.ceil(math.log2(systems)) if systems > 1 else 0

    def step_seconds(self, systems, params, compute_cycles_per_row, rows,
                     update_seconds=0.0):
        """Predicted step time: ``{"compute", "transfer", "tree", "update", "total"}``
        seconds for ``systems`` systems, ``params`` parameters, ``rows`` rows in the batch
        and a system's fabric cycles per row of its slice."""
        if rows % systems:
            raise ValueError(f"{systems} systems do not divide {rows} rows")
        compute = compute_cycles_per_row * (rows // systems) / self.clock
        transfer = 6 * params / self.link
        hops = self.levels(systems) + 1
        tree = 2 * hops * (self.latency + self.chunk / self.link)
        total = max(compute, transfer) + tree + update_seconds
        return {"compute": compute, "transfer": transfer, "tree": tree,
                "update": update_seconds, "total": total}


def connect(address=None, workers=2, timeout=10):
    """A Dask client: on a new ``LocalCluster`` of ``workers`` processes (one thread
    each) by default, or on the scheduler at ``address`` (``tcp://host:port``); an address
    that does not answer raises ``ConnectionError`` naming it within ``timeout`` seconds.
    Returns ``(client, cluster or None)``; close both when done."""
    from distributed import Client, LocalCluster
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", scheduler_port=0)
        return Client(cluster), cluster
    try:
        return Client(address, timeout=timeout), None
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"no Dask scheduler answers at {address} within {timeout} s "
                              f"({type(exc).__name__})") from None
