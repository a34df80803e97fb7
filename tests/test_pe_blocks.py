"""The PE's blocks and their interfaces (rtl/pe/*.py), in the Amaranth simulator.

* out-of-range configuration writes: never aliased onto another register, ``BAD_CONFIG``
  (SPEC 10; issue 10, item 9; the host encoders' side is in test_pe_limits.py), and
  writes inside the map raising nothing;
* the launch arbiter (core first) and the core's launch path with ``core_ops_pending``;
* the table of tensor operations.
"""

import numpy as np
import pytest
from amaranth.lib.wiring import In, Out, connect, flipped
from amaranth.sim import Simulator

from golden import fp
from rtl.pe import regs as R
from rtl.pe.arbiter import LaunchArbiter
from rtl.pe.iface import LaunchStream
from rtl.pe.ops import OPS, Unit
from rtl.pe.pe import PE
from tb.pe_model import PEConfig, PEModel

SRAM_WORDS = 1024          # a small PE: quick to simulate, same register map otherwise


# --- helpers -----------------------------------------------------------------------------------

def _cfg_access(ctx, dut):
    """``write(addr, value)`` and ``read(addr)`` on the PE's configuration port."""
    async def write(addr, value):
        ctx.set(dut.cfg.addr, addr)
        ctx.set(dut.cfg.wdata, value)
        ctx.set(dut.cfg.we, 1)
        await ctx.tick()
        ctx.set(dut.cfg.we, 0)

    async def read(addr):
        ctx.set(dut.cfg.addr, addr)
        ctx.set(dut.cfg.re, 1)
        await ctx.tick()
        ctx.set(dut.cfg.re, 0)
        return ctx.get(dut.cfg.rdata)
    return write, read


def _simulate(dut, bench, clock=True):
    sim = Simulator(dut)
    if clock:
        sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


# --- the hardware never aliases an out-of-range configuration write (SPEC 10) --------------------

def _raw(region, index, word=0):
    """The cfg address of item ``index`` of a region, beyond any limit (for bad writes)."""
    base = {"task": R.TASK_BASE, "bind": R.BIND_BASE, "dsr": R.DSR_BASE,
            "entry": R.ENTRY_BASE, "acc": R.ACC_BASE}[region]
    words = {"dsr": R.DSR_WORDS, "entry": R.ENTRY_WORDS}.get(region, 1)
    return R.PE_REGS_BASE + base + words * index + word


#: name -> (setup writes, the bad write, reads that must be unchanged: {addr: value},
#: the CfgRegion named by BAD_CONFIG)
BAD_WRITES = {
    "task_addr(40)": ([(R.task_addr(8), R.encode_task(5))], (_raw("task", 40), 7),
                      {R.task_addr(8): 5, _raw("task", 40): 0}, "TASK"),
    "binding of color 37": ([(R.bind_addr(5), R.encode_bind(data_task=1))],
                            (_raw("bind", 37), R.encode_bind(data_task=2)),
                            {R.bind_addr(5): R.encode_bind(data_task=1)}, "BIND"),
    "DSR 44": ([(R.dsr_addr(43, 7), 0x1234)], (_raw("dsr", 44, 7), 0x5678),
               {R.dsr_addr(43, 7): 0x1234, _raw("dsr", 44, 7): 0}, "DSR"),
    "launch entry 64": ([(R.entry_addr(63, 1), 0x11)], (_raw("entry", 64, 1), 0x22),
                        {R.entry_addr(63, 1): 0x11, _raw("entry", 64, 1): 0}, "ENTRY"),
    "accumulator word 64": ([(R.acc_addr(63), 0x3F800000)], (_raw("acc", 64), 1),
                            {R.acc_addr(63): 0x3F800000, _raw("acc", 64): 0}, "ACC"),
    "SRAM word 1024": ([(SRAM_WORDS - 1, 0xABCD)], (SRAM_WORDS, 0x99),
                       {SRAM_WORDS - 1: 0xABCD, SRAM_WORDS: 0}, "SRAM"),
    "past the registers": ([], (R.PE_REGS_BASE + 0x2000, 1), {}, "ACC"),
    "between registers": ([], (R.reg_addr(R.Reg.COUNTER_CTRL) + 1, 1), {}, "COUNTER_CTRL"),
}


@pytest.fixture(scope="module")
def bad_write_results():
    """Every case of :data:`BAD_WRITES` on one simulated PE: what was read back."""
    dut = PE(sram_words=SRAM_WORDS)
    results = {}

    async def bench(ctx):
        write, read = _cfg_access(ctx, dut)
        for name, (setup, (addr, value), keep, _) in BAD_WRITES.items():
            for a, v in setup:
                await write(a, v)
            before = await read(R.reg_addr(R.Reg.ERROR))
            await write(addr, value)
            await ctx.tick()
            error = await read(R.reg_addr(R.Reg.ERROR))
            flags = await read(R.reg_addr(R.Reg.ERROR_FLAGS))
            kept = {a: await read(a) for a in keep}
            results[name] = {"before": before, "error": error, "flags": flags, "kept": kept,
                             "output": ctx.get(dut.error)}
            await write(R.reg_addr(R.Reg.ERROR), 0)
    _simulate(dut, bench)
    return results


@pytest.mark.parametrize("name", list(BAD_WRITES))
def test_out_of_range_config_write_is_refused(bad_write_results, name):
    got = bad_write_results[name]
    _, (addr, _), keep, region = BAD_WRITES[name]
    assert got["kept"] == keep, f"{name} (address {addr:#x}) landed on another register"
    assert got["before"] == 0, f"{name}: an error before the bad write"
    code, info = R.decode_error(got["error"])
    assert code == R.ErrorCode.BAD_CONFIG, f"{name}: ERROR code {code}"
    assert got["flags"] == 1 << R.ErrorCode.BAD_CONFIG.value, f"{name}: flags {got['flags']:#x}"
    assert info == R.CfgRegion[region], f"{name}: BAD_CONFIG info {info}, expected {region}"
    assert got["output"] == 1


def test_writes_inside_the_map_raise_nothing():
    """The last item of every region, the core's registers (a GPR written by the host reads
    back) and a binding of a color the PE does not have that binds nothing."""
    dut = PE(sram_words=SRAM_WORDS)
    p = dut.pe_params
    got = {}

    async def bench(ctx):
        write, read = _cfg_access(ctx, dut)
        for r in R.address_map(p):
            last = r.base + r.words * r.count - 1
            if r.region in (R.CfgRegion.STATUS, R.CfgRegion.TASK_CTRL,
                            R.CfgRegion.COUNTER_CTRL):
                continue                 # control registers: tested by the PE benches
            await write(last, 0)
        await write(R.reg_addr(R.Reg.CORE_CTRL), 1)
        await write(R.gpr_addr(15), 0x1234)
        await write(R.bind_addr(30), 0)
        got["error"] = await read(R.reg_addr(R.Reg.ERROR))
        got["flags"] = await read(R.reg_addr(R.Reg.ERROR_FLAGS))
        got["gpr"] = await read(R.gpr_addr(15))
        got["core_pc"] = await read(R.reg_addr(R.Reg.CORE_PC))
        got["id"] = await read(R.reg_addr(R.Reg.ID))
        got["status"] = await read(R.reg_addr(R.Reg.STATUS))
    _simulate(dut, bench)
    assert (got["error"], got["flags"]) == (0, 0)
    assert (got["gpr"], got["core_pc"]) == (0x1234, 0)
    assert got["id"] == p.id_word == dut.id_word
    status = R.decode_fields(R.Status, got["status"])
    assert not any(status.values()), status


# --- the launch arbiter --------------------------------------------------------------------------

def test_arbiter_gives_the_core_priority():
    dut = LaunchArbiter()
    req = {who: R.encode_fields(R.LaunchRequest, **{"launch.op": op, "launch.dst": d,
                                                    "core": int(who == "core")})
           for who, op, d in (("core", R.TensorOp.FADD, 1), ("task", R.TensorOp.FMUL, 2))}
    seen = []

    async def bench(ctx):
        ctx.set(dut.core.payload.as_value(), req["core"])
        ctx.set(dut.task.payload.as_value(), req["task"])
        for core_valid, task_valid, ready in ((0, 1, 1), (1, 1, 1), (1, 1, 0), (1, 0, 1),
                                              (0, 0, 1)):
            ctx.set(dut.core.valid, core_valid)
            ctx.set(dut.task.valid, task_valid)
            ctx.set(dut.out.ready, ready)
            seen.append((ctx.get(dut.out.valid), ctx.get(dut.out.payload.as_value()),
                         ctx.get(dut.core.ready), ctx.get(dut.task.ready)))
            await ctx.delay(1e-8)
    _simulate(dut, bench, clock=False)
    assert seen[0] == (1, req["task"], 1, 1)          # the task launcher alone: unchanged
    assert seen[1] == (1, req["core"], 1, 0)          # both: the core goes, the task waits
    assert seen[2] == (1, req["core"], 0, 0)          # engine not ready: both wait
    assert seen[3] == (1, req["core"], 1, 0)
    assert seen[4][0] == 0


class _PEWithCoreInput(PE):
    """The PE with the arbiter's core input and ``core_ops_pending`` brought out, as the
    control core will use them."""

    def _members(self):
        return {**super()._members(), "core_launch": In(LaunchStream),
                "core_ops_pending": Out(1)}

    def _attach_core(self, m, blocks):
        connect(m, flipped(self.core_launch), blocks["arbiter"].core)
        m.d.comb += [self.core_ops_pending.eq(blocks["engine"].core_ops_pending),
                     blocks["config"].core.rdata.eq(0), blocks["config"].gpr.rdata.eq(0)]


@pytest.mark.parametrize("core_bit", [1, 0])
def test_core_launch_and_core_ops_pending(core_bit):
    """An FMAC launched on the core input runs like a task's (result bit-exact) and
    ``core_ops_pending`` covers it from L0 to its last write-back, only with ``core`` = 1."""
    rng = np.random.default_rng(2)
    x = fp.f16_to_bits(rng.standard_normal(16))
    cfg = PEConfig(sram_words=SRAM_WORDS)
    cfg.put_f16(0x40, x)
    cfg.dsr(0, R.Kind.MEM, base=0x40, dims=[(16, 1)])
    cfg.dsr(1, R.Kind.ACC, dtype=R.DType.FP32, base=0, dims=[(16, 1)])
    weight = 0x3E00
    want = fp.fmac_mixed(np.zeros(16, np.uint32), x, weight)
    req = R.encode_fields(R.LaunchRequest, **{
        "launch.op": R.TensorOp.FMAC, "launch.dst": 1, "launch.a": 1, "launch.b": 0,
        "launch.s": R.DSR_WAVELET, "data": weight, "core": core_bit})
    dut = _PEWithCoreInput(sram_words=SRAM_WORDS)
    trace, got = [], {}

    async def bench(ctx):
        write, read = _cfg_access(ctx, dut)
        for addr, value in cfg.all_writes():
            await write(addr, value)
        ctx.set(dut.core_launch.payload.as_value(), req)
        ctx.set(dut.core_launch.valid, 1)
        for cycle in range(40):
            accepted = ctx.get(dut.core_launch.ready)
            trace.append((ctx.get(dut.core_launch.valid), accepted,
                          ctx.get(dut.core_ops_pending), ctx.get(dut.busy)))
            await ctx.tick()
            if accepted:
                ctx.set(dut.core_launch.valid, 0)
        got["acc"] = [await read(R.acc_addr(i)) for i in range(16)]
        got["error"] = await read(R.reg_addr(R.Reg.ERROR))
    _simulate(dut, bench)
    assert got["error"] == 0 and got["acc"] == [int(v) for v in want]
    accepted = [i for i, (v, r, _, _) in enumerate(trace) if v and r]
    assert accepted == [0], f"accepted in cycles {accepted}"
    pending = [i for i, (_, _, p, _) in enumerate(trace) if p]
    busy = [i for i, (_, _, _, b) in enumerate(trace) if b]
    if core_bit:
        # From the offer (L0) to the last write-back; busy starts in L1.
        assert pending == list(range(0, busy[-1] + 1)), (pending, busy)
    else:
        assert pending == [] and busy, "a task-style launch is not a core operation"


# --- the table of tensor operations ------------------------------------------------------------

def test_ops_table_matches_the_model():
    assert list(OPS) == list(R.TensorOp)
    assert {o for o, i in OPS.items() if i.uses_b} == {
        R.TensorOp.FADD, R.TensorOp.FSUB, R.TensorOp.FMUL, R.TensorOp.FMAC, R.TensorOp.FMAX,
        R.TensorOp.FMIN, R.TensorOp.FCPSGN}
    assert [o for o, i in OPS.items() if i.uses_s] == [R.TensorOp.FMAC]
    assert [o for o, i in OPS.items() if not i.fp16_dst] == [R.TensorOp.FMAC]
    assert all((i.unit == Unit.FMA) == (i.fma is not None) for i in OPS.values())
    assert {i.latency for i in OPS.values()} == {4} and {i.lanes for i in OPS.values()} == {4}
    # The model refuses an FMAC into FP16 from the same table.
    cfg = PEConfig()
    cfg.dsr(0, R.Kind.MEM, base=0, dims=[(4, 1)])
    cfg.dsr(1, R.Kind.MEM, base=0x100, dims=[(4, 1)])
    cfg.task(0, [dict(op=R.TensorOp.FMAC, dst=1, a=0, b=0, s=R.DSR_WAVELET)])
    assert PEModel(cfg).activate(0) == [R.ErrorCode.UNSUPPORTED]


def test_sig_refuses_an_idle_value_that_is_its_condition():
    """``sig(..., when=c, idle=c)`` is ``c & value``, which Verilator computes every cycle
    (the core's DSR-in-use check was written so and cost 254 host instructions per tile
    clock): the helper refuses it; another register as the idle value is the gated form.
    Also :func:`rtl.pe.util.packed`: fields at their offsets, the rest zero (as the
    layout's constant); unknown fields are refused."""
    from amaranth import Module, Signal
    from amaranth.lib import data
    from rtl.pe.util import packed, sig
    top = Module()
    en, other, value = Signal(), Signal(), Signal(4)
    with pytest.raises(ValueError, match="idle is the condition itself"):
        sig(top, value.any(), "bad", 1, when=en, idle=en)
    gated = sig(top, value.any(), "good", 1, when=en, idle=other)
    fields = {"busy": 1, "threads_active": 0xA5, "core_halted": 1}
    word = Signal(32)
    top.d.comb += word.eq(packed(R.Status, **fields))
    with pytest.raises(ValueError, match="not fields"):
        packed(R.Status, nonsense=1)
    got = {}

    async def bench(ctx):
        ctx.set(en, 1)
        ctx.set(value, 2)
        got["word"], got["gated"] = ctx.get(word), ctx.get(gated)
    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()
    assert got["word"] == data.Layout.cast(R.Status).const(fields).as_value().value
    assert got["gated"] == 1
