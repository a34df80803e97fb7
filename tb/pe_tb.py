"""cocotb benches of the processing element (top ``pe`` = :class:`rtl.pe.pe.PE`).

Every check is bit-exact against :class:`tb.pe_model.PEModel` (golden/fp.py arithmetic):

* ``tensor_ops``: the covering set of :func:`tb.pe_cases.op_cases` -- every operation with
  every operand kind, FP16 and FP32, strides, 1D..4D, index-offset mode; results read back.
* ``op_chains``: tasks of several launches over overlapping tensors (random chains of
  :func:`tb.pe_cases.chain_cases` after the directed ones), activated by wavelets, so that
  micro-threads run concurrently under the ordering rules; the model runs them in order.
* ``weight_stream``: a SPEC 7 weight stream into a PE holding X[T, K]; accumulators against
  the sequential FP32 sums, FMAC-lane utilization from the counters (reported).
* ``gemm_column``: the single-column GEMM recipe (commands, read-and-clear, rotating
  accumulator buffers, auto-advancing Y) against the golden sums rounded to FP16.
* ``overlap``: a reduction (fabric in + accumulators -> fabric out) runs as a second
  micro-thread while FMACs continue; both progress in the same window.
* ``backpressure``: concurrent streams with rx gaps and random per-color tx stalls.
* ``tasks``: blocking and unblocking, command dispatch, one blocked color not blocking another.
* ``errors``: every error code, each provoked, with memory outside the tensors untouched.
"""

import json

import numpy as np

import cocotb

from golden import fp
from rtl.pe.regs import (DSR_WAVELET, Counter, DType, ErrorCode, Kind, Reg, TensorOp, acc_addr,
                         bind_addr, counter_addr, decode_error, dsr_addr, encode_trigger,
                         reg_addr)
from tb.pe_cases import (OpCase, chain_cases, clear_restart_case, clear_then_reuse_case,
                         mixed_fmac_reference, op_cases, random_bits16, random_bits32)
from runtime.pe_driver import PEBench
from tb.pe_model import PEConfig, PEModel
from runtime.sim import params

SRAM_WORDS = 12288


def _report(name, values):
    """Append measured figures to the JSON file named by the runner (if any)."""
    path = params().get("report")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"test": name, **values}) + "\n")


async def _bench(dut, **kw):
    p = params()
    # bench_seed: the idle / back-pressure pattern alone (the cases keep "seed").
    bench = PEBench(dut, seed=p.get("bench_seed", p.get("seed", 1)), **kw)
    await bench.start()
    return bench


async def _check_no_error(bench, what):
    word = await bench.read_reg(Reg.ERROR)
    code, info = decode_error(word)
    assert code == ErrorCode.NONE, f"{what}: the PE raised {code} (info {info})"


async def _clear_errors(bench):
    await bench.write([(reg_addr(Reg.ERROR), 0)])


def _sram_words(model, first, count):
    return model.sram.view(np.uint32)[first:first + count]


async def _compare_case(bench, case):
    m = case.model
    for first, count in case.windows:
        got = np.array(await bench.read(range(first, first + count)), dtype=np.uint32)
        want = _sram_words(m, first, count)
        bad = np.flatnonzero(got != want)
        assert not len(bad), (
            f"{case.describe()}: SRAM word {first + bad[0]:#x} is {got[bad[0]]:#010x}, "
            f"expected {want[bad[0]]:#010x} ({len(bad)} words differ)")
    if case.acc_window:
        got = np.array(await bench.read([acc_addr(i) for i in range(len(m.acc))]),
                       dtype=np.uint32)
        bad = np.flatnonzero(got != m.acc)
        assert not len(bad), (f"{case.describe()}: acc[{bad[0]}] = {got[bad[0]]:#010x}, "
                              f"expected {m.acc[bad[0]]:#010x} ({len(bad)} differ)")
    for ident in case.fifo_dsrs:
        got = (await bench.read([dsr_addr(ident, 7)]))[0]
        assert got == m.dsr_words[ident][7], (
            f"{case.describe()}: DSR {ident} word 7 = {got:#x}, "
            f"expected {m.dsr_words[ident][7]:#x}")
    for color, want in m.fout.items():
        got = [(d, i, c) for d, i, c, _ in bench.tx_got.pop(color, [])]
        assert got == want, (f"{case.describe()}: color {color} sent {len(got)} wavelets, "
                             f"expected {len(want)}; first difference at "
                             f"{next((k for k, (g, w) in enumerate(zip(got, want)) if g != w), min(len(got), len(want)))}")
    assert not bench.tx_got, f"{case.describe()}: unexpected wavelets {dict(bench.tx_got)}"


@cocotb.test()
async def tensor_ops(dut):
    """Every operation on every operand kind against the model, read back bit for bit."""
    p = params()
    bench = await _bench(dut, idle=p.get("idle", 0.2), stall=p.get("stall", 0.2))
    cases = op_cases(seed=p.get("seed", 1), rounds=p.get("rounds", 1))
    if "only" in p:                     # a subset by case number (debugging)
        cases = [cases[k] for k in p["only"]]
    if "plans" in p:                    # explicit cases: [op name, {role: kind}, n, seed]
        cases = [OpCase(f"plan{i}", TensorOp[op], kinds, n, seed)
                 for i, (op, kinds, n, seed) in enumerate(p["plans"])]
    await _run_cases(dut, bench, cases, keep_going=p.get("keep_going", False))


async def _run_cases(dut, bench, cases, keep_going=False):
    """Run cases (OpCase, ChainCase, TaskCase) one after the other, each checked bit for bit
    against its model. ``keep_going`` (for seed sweeps): report every failing case at the
    end instead of stopping at the first; the PE is not reset between cases, so a case that
    leaves a thread stuck may disturb the ones after it."""
    failures = []
    for case in cases:
        try:
            await bench.write(case.cfg.all_writes())
            for color, wavelets in case.fabric_in.items():
                bench.send(color, wavelets)
            if case.trigger is not None:
                data, index = case.trigger
                await bench.write([(reg_addr(Reg.TRIGGER),
                                    encode_trigger(0, index=index, data=data))])
            await bench.run_until_idle(budget=4000, what=case.describe())
            await _check_no_error(bench, case.describe())
            await _compare_case(bench, case)
        except AssertionError as exc:
            if not keep_going:
                raise
            failures.append(str(exc).splitlines()[0])
            dut._log.error(failures[-1])
            # Start the next case from a clean PE: drop what is queued, clear the error.
            bench.rx_q.clear()
            await bench.run(200)
            bench.tx_got.clear()
            await _clear_errors(bench)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + \
        "\n".join(failures)
    dut._log.info(f"{len(cases)} cases bit-exact in {bench.cycle} cycles")


def directed_task_cases():
    """Directed multi-launch cases, each the reproduction of a bug found by op_chains."""
    return [clear_then_reuse_case(seed) for seed in (1, 2)] + [clear_restart_case()]


@cocotb.test()
async def op_chains(dut):
    """Tasks of several launches over overlapping tensors, activated by wavelets: the
    micro-threads run them concurrently, the result must equal the model's launch order."""
    p = params()
    bench = await _bench(dut, idle=p.get("idle", 0.2), stall=p.get("stall", 0.2))
    cases = chain_cases(seed=p.get("seed", 1), count=p.get("count", 40))
    if "only" in p:
        cases = [cases[k] for k in p["only"]]
    if p.get("directed", True):
        cases = directed_task_cases() + cases
    await _run_cases(dut, bench, cases, keep_going=p.get("keep_going", False))


# --- weight streaming ------------------------------------------------------------------------

def _axpy_config(T, K, rng, nbuf=4, sparse=0.0):
    """A PE holding X[T, K] (T_pad tokens per feature) with the FMAC task bound to color 1."""
    t_pad = (T + 3) // 4 * 4
    cfg = PEConfig(SRAM_WORDS)
    cfg.put_acc(0, np.zeros(64, dtype=np.uint32))
    x = np.zeros((t_pad, K), dtype=np.uint16)
    x[:T] = random_bits16(rng, T * K, special=0.0).reshape(T, K)
    XB = 0x100
    cfg.put_f16(XB, x.T)                                # feature-major, tokens contiguous
    D_X, D_ACC = 0, 1
    cfg.dsr(D_X, Kind.MEM, dtype=DType.FP16, base=XB, dims=[(t_pad, 1)], idx_stride=t_pad)
    cfg.dsr(D_ACC, Kind.ACC, dtype=DType.FP32, base=0, dims=[(t_pad, 1)], adv_step=t_pad,
            adv_count=nbuf)
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=D_ACC, a=D_ACC, b=D_X, s=DSR_WAVELET,
                      idx={"b"})])
    cfg.bind(1, data_task=0)
    return cfg, x, t_pad


async def _weight_stream(bench, T, K, rng, what):
    cfg, x, t_pad = _axpy_config(T, K, rng)
    w = random_bits16(rng, K, special=0.0)
    await bench.write(cfg.all_writes())
    await bench.write([(reg_addr(Reg.COUNTER_CTRL), 1)])
    bench.send(1, [(int(w[k]), k, 0) for k in range(K)])
    await bench.run_until_idle(budget=100 * K + 1000, what=what)
    await _check_no_error(bench, what)
    got = np.array(await bench.read([acc_addr(i) for i in range(t_pad)]), dtype=np.uint32)
    want = mixed_fmac_reference(x, [(k, w[k]) for k in range(K)])
    assert np.array_equal(got, want), (
        f"{what}: accumulators differ at tokens {np.flatnonzero(got != want)[:8]}")
    ctr = await bench.counters()
    window = ctr["FMAC_LAST"] - ctr["FMAC_FIRST"] + 1
    util = ctr["FMAC_LANES"] / (4 * window)
    assert ctr["FMAC_LANES"] == t_pad * K
    return util, ctr, window


@cocotb.test()
async def weight_stream(dut):
    """X[T, K] resident, K weight wavelets: exact FP32 sums; lane utilization reported."""
    p = params()
    rng = np.random.default_rng(p.get("seed", 1))
    bench = await _bench(dut, idle=0.0, stall=0.0)
    results = {}
    for T in p.get("tokens", [4, 8, 16, 32]):
        K = p.get("features", 64)
        util, ctr, window = await _weight_stream(bench, T, K, rng, f"AXPY T={T}")
        results[T] = util
        dut._log.info(f"weight stream T={T} K={K}: FMAC lanes busy {100 * util:.1f}% of the "
                      f"{window} cycles from the first to the last FMAC; stalls: input "
                      f"{ctr['STALL_INPUT']}, output {ctr['STALL_OUTPUT']}, bank "
                      f"{ctr['STALL_BANK']}, hazard {ctr['STALL_HAZARD']}")
        _report("weight_stream", {"tokens": T, "features": K, "utilization": util,
                                  "window": window, **ctr})
    if 16 in results:
        assert results[16] >= 0.95, f"T=16: FMAC lanes busy {100 * results[16]:.1f}% < 95%"


# --- the GEMM recipe on one PE (single column) -------------------------------------------------

def gemm_single_column(T, K, N, rng, sparsity=0.0, nbuf=4):
    """Config and weight stream of the single-column recipe (see docs/pe.md), and the
    expected Y (FP16, laid out like X)."""
    t_pad = (T + 3) // 4 * 4
    cfg, x, _ = _axpy_config(T, K, rng, nbuf=nbuf)
    YB = 0x2000
    D_Y = 2
    cfg.dsr(D_Y, Kind.MEM, dtype=DType.FP16, base=YB, dims=[(t_pad, 1)], adv_step=t_pad,
            adv_count=N)
    # Command 0 on color 1: Y[:, n] = f16(acc), clearing the accumulators, advancing both.
    cfg.task(1, [dict(op=TensorOp.FMOV, dst=D_Y, a=1, clear_a=True, adv={"dst", "a"},
                      prio=1)])
    cfg.bind(1, data_task=0, ctrl_base=1)
    w = random_bits16(rng, K * N, special=0.0).reshape(K, N)
    w[rng.random((K, N)) < sparsity] = 0
    stream = []
    y = np.zeros((t_pad, N), dtype=np.uint16)
    for n in range(N):
        nz = [k for k in range(K) if w[k, n] != 0]
        stream += [(int(w[k, n]), k, 0) for k in nz]
        stream.append((0, 0, 1))
        y[:, n] = fp.f32_to_f16(mixed_fmac_reference(x, [(k, w[k, n]) for k in nz]))
    return cfg, stream, y, t_pad, YB


@cocotb.test()
async def gemm_column(dut):
    """Single-column GEMM: weights, commands, read-and-clear, rotating buffers, Y in SRAM."""
    p = params()
    rng = np.random.default_rng(p.get("seed", 2))
    bench = await _bench(dut, idle=0.1)
    for T, K, N, sparsity in ((16, 24, 6, 0.0), (12, 16, 9, 0.5), (5, 8, 5, 0.0)):
        what = f"single-column GEMM T={T} K={K} N={N} sparsity={sparsity}"
        cfg, stream, y, t_pad, YB = gemm_single_column(T, K, N, rng, sparsity)
        await bench.write(cfg.all_writes())
        bench.send(1, stream)
        await bench.run_until_idle(budget=100 * len(stream) + 2000, what=what)
        await _check_no_error(bench, what)
        words = await bench.read(range(YB // 2, YB // 2 + t_pad * N // 2))
        got = np.array(words, dtype=np.uint32).view(np.uint16).reshape(N, t_pad).T
        assert np.array_equal(got[:T], y[:T]), (
            f"{what}: Y differs at (token, n) {np.argwhere(got[:T] != y[:T])[:5].tolist()}")
        acc = await bench.read([acc_addr(i) for i in range(64)])
        assert not any(acc), f"{what}: accumulators not cleared after the reductions"


# --- overlap of a reduction with FMACs ----------------------------------------------------------

@cocotb.test()
async def overlap(dut):
    """A middle-column reduction (FIN + acc -> FOUT, FP32) runs beside the FMACs of n+1."""
    p = params()
    rng = np.random.default_rng(p.get("seed", 3))
    bench = await _bench(dut, idle=0.0, stall=0.1)
    T, K, N = 16, 48, 3
    cfg, x, t_pad = _axpy_config(T, K, rng)
    RED = 5
    D_IN, D_OUT = 3, 4
    cfg.dsr(D_IN, Kind.FIN, dtype=DType.FP32, color=RED)
    cfg.dsr(D_OUT, Kind.FOUT, dtype=DType.FP32, color=RED, dims=[(t_pad, 1)])
    cfg.task(1, [dict(op=TensorOp.FADD, dst=D_OUT, a=D_IN, b=1, clear_a=False, prio=1,
                      adv={"b"})])
    cfg.bind(1, data_task=0, ctrl_base=1)
    w = random_bits16(rng, K * N, special=0.0).reshape(K, N)
    partial = random_bits32(rng, t_pad * N, special=0.0).reshape(N, t_pad)
    stream = []
    want = []
    for n in range(N):
        stream += [(int(w[k, n]), k, 0) for k in range(K)] + [(0, 0, 1)]
        acc = mixed_fmac_reference(x, [(k, w[k, n]) for k in range(K)])
        want += list(fp.add32(partial[n], acc))
    # Reduction accumulators are not cleared here (clear_a needs a non-acc destination and
    # this one streams out): every buffer is used once.
    await bench.write(cfg.all_writes())
    await bench.write([(reg_addr(Reg.COUNTER_CTRL), 1)])
    bench.send(1, stream)
    # Every 4 cycles, read FMAC_LANES (a cfg read does not disturb the datapath).
    sinks = {}

    def sample(b):
        if b.cycle % 4 == 0 and not b.cfg_q:
            sinks[b.cycle] = []
            b.cfg_q.append(("r", counter_addr(Counter.FMAC_LANES), sinks[b.cycle]))
    bench.hooks.append(sample)
    # The partial sums from the west arrive slowly, while the weights of n+1 stream.
    sent_partial = 0
    start = bench.cycle
    while bench.cycle - start < 20000:
        await bench.step()
        if sent_partial < N and bench.cycle - start > 700 * (sent_partial + 1) - 400:
            halves = partial[sent_partial].view(np.uint16)
            bench.send(RED, [(int(h), 0, 0) for h in halves])
            sent_partial += 1
        if sent_partial == N and not bench.rx_q and not int(dut.busy.value):
            break
    bench.hooks.clear()
    await bench.run_until_idle(what="overlap")
    await _check_no_error(bench, "overlap")
    got = bench.tx_got.pop(RED)
    words = [got[2 * i][0] | (got[2 * i + 1][0] << 16) for i in range(len(got) // 2)]
    assert words == [int(v) for v in want], "overlap: reduction results differ"
    samples = sorted((c, v[0]) for c, v in sinks.items() if v)
    # In the window where the reduction of n = 0 sends its results, FMACs (of n = 1) run.
    first, last = got[0][3], got[2 * t_pad - 1][3]
    before = max((v for c, v in samples if c <= first), default=0)
    after = min((v for c, v in samples if c >= last), default=0)
    lanes = after - before
    window = last - first + 1
    dut._log.info(f"overlap: reduction of n=0 sent {2 * t_pad} wavelets in cycles "
                  f"{first}..{last} ({window} cycles); FMAC lanes in that window: {lanes} "
                  f"({100 * lanes / (4 * window):.0f}% of the lanes)")
    _report("overlap", {"window": window, "fmac_lanes": lanes})
    assert lanes >= 2 * window, "overlap: the FMACs did not progress during the reduction"


# --- back-pressure ----------------------------------------------------------------------------

@cocotb.test()
async def backpressure(dut):
    """Concurrent fabric streams with rx gaps and tx stalls: nothing lost or duplicated."""
    p = params()
    rng = np.random.default_rng(p.get("seed", 4))
    bench = await _bench(dut)
    for idle, stall in ((0.3, 0.5), (0.0, 0.8), (0.6, 0.0)):
        bench.idle, bench.stall = idle, stall
        cfg = PEConfig(SRAM_WORDS)
        # Three streams: FP16 copy, FP32 negate, FP16 -> FP32 conversion; launched 3 times.
        specs = [(DType.FP16, DType.FP16, TensorOp.FMOV, 2, 12),
                 (DType.FP32, DType.FP32, TensorOp.FNEG, 3, 13),
                 (DType.FP16, DType.FP32, TensorOp.FMOV, 4, 14)]
        inputs = {}
        n = 37
        for i, (ti, to, op, cin, cout) in enumerate(specs):
            cfg.dsr(2 * i, Kind.FIN, dtype=ti, color=cin)
            cfg.dsr(2 * i + 1, Kind.FOUT, dtype=to, color=cout, dims=[(n, 1)], out_index=i)
            cfg.task(i, [dict(op=op, dst=2 * i + 1, a=2 * i)])
            gen = random_bits32 if ti == DType.FP32 else random_bits16
            vals = gen(rng, 3 * n)
            halves = vals.view(np.uint16) if ti == DType.FP32 else vals
            inputs[cin] = [(int(h), 0, 0) for h in halves]
        model = PEModel(cfg, fabric_in=inputs)
        await bench.write(cfg.all_writes())
        for cin, wl in inputs.items():
            bench.send(cin, wl)
        for rep in range(3):
            for i in range(3):
                model.activate(i)
                await bench.write([(reg_addr(Reg.TRIGGER), encode_trigger(i))])
                while int((await bench.read([reg_addr(Reg.STATUS)]))[0]) & 8:
                    pass                     # the host trigger is still pending
        await bench.run_until_idle(budget=20000, what=f"backpressure idle={idle} stall={stall}")
        await _check_no_error(bench, "backpressure")
        for color, want in model.fout.items():
            got = [(d, i, c) for d, i, c, _ in bench.tx_got.pop(color, [])]
            assert got == want, (f"backpressure idle={idle} stall={stall}: color {color} "
                                 f"{len(got)} wavelets, expected {len(want)}")


# --- tasks: blocking, dispatch ------------------------------------------------------------------

@cocotb.test()
async def tasks(dut):
    """Blocked tasks hold their color's wavelets without blocking other colors; unblock runs
    them; commands dispatch to ctrl_base + code."""
    rng = np.random.default_rng(5)
    bench = await _bench(dut)
    cfg = PEConfig(SRAM_WORDS)
    x = random_bits16(rng, 8, special=0.0)
    cfg.put_f16(0x40, x)
    cfg.dsr(0, Kind.MEM, base=0x40, dims=[(8, 1)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(8, 1)])
    cfg.dsr(2, Kind.ACC, dtype=DType.FP32, base=8, dims=[(8, 1)])
    cfg.dsr(3, Kind.MEM, dtype=DType.FP32, base=0x100, dims=[(8, 1)])
    cfg.dsr(4, Kind.MEM, dtype=DType.FP32, base=0x120, dims=[(8, 1)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET)])
    cfg.task(1, [dict(op=TensorOp.FMAC, dst=2, a=2, b=0, s=DSR_WAVELET)])
    cfg.task(2, [dict(op=TensorOp.FMOV, dst=3, a=1)])        # command 0 on color 6
    cfg.task(3, [dict(op=TensorOp.FMOV, dst=4, a=2)])        # command 1 on color 6
    cfg.bind(6, data_task=0, ctrl_base=2)
    cfg.bind(7, data_task=1)
    await bench.write(cfg.all_writes())
    await bench.write([(reg_addr(Reg.BLOCK_SET), 1 << 0)])
    w6 = random_bits16(rng, 3, special=0.0)
    w7 = random_bits16(rng, 3, special=0.0)
    bench.send(6, [(int(v), 0, 0) for v in w6] + [(0, 0, 1), (0, 1, 1)])
    bench.send(7, [(int(v), 0, 0) for v in w7])
    await bench.run(200)
    acc = np.array(await bench.read([acc_addr(i) for i in range(16)]), dtype=np.uint32)
    assert not acc[:8].any(), "a blocked task ran"
    want7 = np.zeros(8, np.uint32)
    for v in w7:
        want7 = fp.fmac_mixed(want7, x, v)
    assert np.array_equal(acc[8:], want7), "color 7 was blocked by the blocked task of color 6"
    assert int(dut.busy.value), "busy must stay high while a wavelet waits for a blocked task"
    await bench.write([(reg_addr(Reg.BLOCK_CLR), 1 << 0)])
    await bench.run_until_idle(what="after unblock")
    want6 = np.zeros(8, np.uint32)
    for v in w6:
        want6 = fp.fmac_mixed(want6, x, v)
    got3 = np.array(await bench.read(range(0x80, 0x88)), dtype=np.uint32)
    got4 = np.array(await bench.read(range(0x90, 0x98)), dtype=np.uint32)
    assert np.array_equal(got3, want6), "command 0 result"
    assert np.array_equal(got4, want7), "command 1 result"
    await _check_no_error(bench, "tasks")


# --- errors -------------------------------------------------------------------------------------

ERROR_CASES = [
    "oob_sram", "oob_acc", "zero_length", "misaligned", "bind_bad_color", "fout_bad_color",
    "rx_bad_color", "bad_task", "bad_operand", "fifo_overflow", "fifo_underflow",
    "trigger_overrun", "fmac_fp16_dst", "fin_twice",
]


@cocotb.test()
async def errors(dut):
    """Every error flag, each provoked: sticky code, flag bit, and nothing written."""
    bench = await _bench(dut)
    rng = np.random.default_rng(6)
    guard = random_bits16(rng, 64, special=0.0)
    for name in ERROR_CASES:
        cfg = PEConfig(SRAM_WORDS)
        cfg.put_f16(0x400, guard)                      # the source of every launch below
        cfg.put_f16(2 * SRAM_WORDS - 64, guard)        # words at the end of the SRAM
        cfg.dsr(0, Kind.MEM, base=0x400, dims=[(16, 1)])
        after = []
        sends = {}
        code = None
        if name == "oob_sram":
            code = ErrorCode.OUT_OF_BOUNDS
            cfg.dsr(1, Kind.MEM, base=2 * SRAM_WORDS - 8, dims=[(16, 1)])
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "oob_acc":
            code = ErrorCode.OUT_OF_BOUNDS
            cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=60, dims=[(2, 1), (2, 4)])
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "zero_length":
            code = ErrorCode.ZERO_LENGTH
            cfg.dsr(1, Kind.MEM, base=0x800, dims=[(4, 1), (0, 4)])
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "misaligned":
            code = ErrorCode.MISALIGNED
            cfg.dsr(1, Kind.MEM, dtype=DType.FP32, base=0x801, dims=[(16, 1)])
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "bind_bad_color":
            code = ErrorCode.BAD_COLOR
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=0, a=0)])
            after = [(bind_addr(30), 1 << 5)]   # data_en for color 30
        elif name == "fout_bad_color":
            code = ErrorCode.BAD_COLOR
            cfg.dsr(1, Kind.FOUT, dtype=DType.FP16, color=27, dims=[(16, 1)],
                    check_color=False)          # a color the PE does not have
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "rx_bad_color":
            code = ErrorCode.BAD_COLOR
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=0, a=0)])
            sends = {29: [(1, 2, 0)]}
        elif name == "bad_task":
            code = ErrorCode.BAD_TASK
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=0, a=0)])
            cfg.bind(8, ctrl_base=30)
            sends = {8: [(0, 5, 1)]}               # command 5 -> task 35
        elif name == "bad_operand":
            code = ErrorCode.BAD_OPERAND
            cfg.dsr(1, Kind.FIN, dtype=DType.FP16, color=3)
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])   # a fabric input as dst
        elif name == "fifo_overflow":
            code = ErrorCode.FIFO_OVERFLOW
            cfg.dsr(1, Kind.FIFO, base=0x800, dims=[(16, 1)], fifo_size=20, count=8)
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=1, a=0)])
        elif name == "fifo_underflow":
            code = ErrorCode.FIFO_UNDERFLOW
            cfg.dsr(1, Kind.FIFO, base=0x800, dims=[(16, 1)], fifo_size=20, count=8)
            cfg.dsr(2, Kind.MEM, base=0x800 + 64, dims=[(16, 1)])
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=2, a=1)])
        elif name == "fmac_fp16_dst":
            code = ErrorCode.UNSUPPORTED
            cfg.dsr(1, Kind.MEM, base=0x800, dims=[(16, 1)])
            cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=0, b=0, s=DSR_WAVELET)])
        elif name == "fin_twice":
            code = ErrorCode.BAD_OPERAND
            cfg.dsr(1, Kind.FIN, dtype=DType.FP16, color=3)
            cfg.dsr(2, Kind.MEM, base=0x800, dims=[(16, 1)])
            cfg.task(0, [dict(op=TensorOp.FADD, dst=2, a=1, b=1)])   # one color as a and b
        elif name == "trigger_overrun":
            code = ErrorCode.TRIGGER_OVERRUN
            cfg.bind(8, data_task=0)
            cfg.task(0, [dict(op=TensorOp.FMOV, dst=0, a=0)])
            cfg.task(1, [dict(op=TensorOp.FMOV, dst=0, a=0)])
            after = [(reg_addr(Reg.BLOCK_SET), 1), (reg_addr(Reg.TRIGGER), encode_trigger(0)),
                     (reg_addr(Reg.TRIGGER), encode_trigger(0))]
        background = random_bits16(rng, 0x100, special=0.0)
        cfg.put_f16(0x800, background)
        await bench.write(cfg.all_writes())
        await bench.write(after)
        for color, wl in sends.items():
            bench.send(color, wl)
        if name not in ("bind_bad_color", "rx_bad_color", "bad_task", "trigger_overrun"):
            await bench.write([(reg_addr(Reg.TRIGGER), encode_trigger(0))])
        if name == "trigger_overrun":
            await bench.run(20)
            await bench.write([(reg_addr(Reg.BLOCKED), 0)])
        await bench.run_until_idle(budget=2000, what=f"error case {name}")
        got_code, info = decode_error(await bench.read_reg(Reg.ERROR))
        flags = await bench.read_reg(Reg.ERROR_FLAGS)
        assert got_code == code, f"{name}: ERROR code {got_code}, expected {code}"
        assert flags == 1 << code.value, f"{name}: ERROR_FLAGS {flags:#x}"
        assert int(dut.error.value) == 1, f"{name}: the error output is low"
        words = np.array(await bench.read(range(0x400, 0x480)), dtype=np.uint32)
        assert np.array_equal(words, background.view(np.uint32)), \
            f"{name}: memory changed by a rejected launch"
        words = np.array(await bench.read(range(0x200, 0x220)), dtype=np.uint32)
        assert np.array_equal(words, guard.view(np.uint32)), f"{name}: the source changed"
        tail = np.array(await bench.read(range(SRAM_WORDS - 32, SRAM_WORDS)), dtype=np.uint32)
        assert np.array_equal(tail, guard.view(np.uint32)), f"{name}: the SRAM end changed"
        assert not bench.tx_got, f"{name}: wavelets were sent"
        await _clear_errors(bench)
        await bench.run(2)
        assert int(dut.error.value) == 0, f"{name}: the error output stays high after clear"
        dut._log.info(f"error {name}: code {code.name}, info {info}")


# --- the mapper's GEMM recipe, one column position at a time ------------------------------------

async def _run_gemm_job(bench, job):
    """Play one column position of the mapper's GEMM recipe (a job of tests/test_pe.py, built
    from gpt_mapping.fabric_run.pe_program, so that this bench imports no mapper): the PE
    program and X tile, the column's weight stream, the bench as the neighbours (partial
    sums from the west, the row's results from the east), then the checks."""
    name, colors = job["name"], job["colors"]
    await bench.write([tuple(w) for w in job["writes"]])
    await bench.write([(reg_addr(Reg.COUNTER_CTRL), 1)])
    bench.send(colors["weight"], job["weight"])
    if job["reduce_in"]:
        bench.send(colors["reduce"], [tuple(w) for w in job["reduce_in"]])
    if job["result_in"]:
        bench.send(colors["result"], [tuple(w) for w in job["result_in"]])
    await bench.run_until_idle(budget=50000, what=name)
    await _check_no_error(bench, name)
    if job["east_words"] is not None:
        got = bench.tx_got.pop(colors["reduce"])
        words = [got[2 * i][0] | (got[2 * i + 1][0] << 16) for i in range(len(got) // 2)]
        assert words == job["east_words"], f"{name}: partial sums sent east differ"
    else:
        got = [d for d, _, _, _ in bench.tx_got.pop(colors["result"])]
        assert got == job["west_results"], f"{name}: results sent west differ"
    assert not bench.tx_got, f"{name}: unexpected wavelets {list(bench.tx_got)}"
    if job["y_words"]:
        start, count = job["y_words"]
        words = await bench.read(range(start, start + count))
        t_pad, t_y = job["t_pad"], job["t_y"]
        got = np.array(words, dtype=np.uint32).view(np.uint16).reshape(-1, t_pad)[:, :t_y]
        assert got.tolist() == job["y"], f"{name}: Y differs"
    return await bench.counters()


@cocotb.test()
async def gemm_roles(dut):
    """The mapper's PE program for every column position of a row (west, middle, east; owner
    or not; the jobs of tests/test_pe.py), with the bench as the neighbours: bit-exact
    partial sums, results and Y; the datapath cycles a reduction costs besides the FMACs are
    reported."""
    p = params()
    with open(p["jobs"]) as f:
        jobs = json.load(f)
    bench = await _bench(dut, idle=0.1, stall=0.2)
    for job in jobs:
        ctr = await _run_gemm_job(bench, job)
        fmac_issues = ctr["FMAC_LANES"] // 4
        extra = (ctr["BUSY"] - fmac_issues) / job["outputs"]
        dut._log.info(f"{job['name']}: {ctr['FMAC_LANES']} FMAC lanes, {extra:.1f} other "
                      f"datapath cycles per output")
        _report("gemm_roles", {"column": job["x"], "width": job["width"],
                               "sparsity": job["sparsity"],
                               "reduction_cycles_per_output": extra, **ctr})
