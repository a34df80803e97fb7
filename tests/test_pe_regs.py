"""The PE's register map and encoders, its model, and a fast Amaranth-simulator smoke test."""

import numpy as np
import pytest
from amaranth.lib import data
from amaranth.sim import Simulator

from golden import fp
from rtl.pe.pe import PE, compact_memory_init
from rtl.pe.regs import (DSR, DSR_WAVELET, Counter, DType, ErrorCode, HostTrigger,
                         Kind, LaunchEntry, LaunchRequest, Reg, TensorOp, acc_addr,
                         counter_addr, decode_error, decode_fields, dsr_addr, encode_bind,
                         encode_dsr, encode_entry, encode_fields, encode_trigger, entry_addr,
                         reg_addr, task_addr)
from tb.pe_model import PEConfig, PEModel


def test_layout_sizes():
    assert data.Layout.cast(DSR).size == 256
    assert data.Layout.cast(LaunchEntry).size == 64
    assert data.Layout.cast(LaunchRequest).size <= 64
    assert data.Layout.cast(HostTrigger).size == 32


def test_dsr_roundtrip():
    words = encode_dsr(Kind.MEM, dtype=DType.FP32, base=0x1234, dims=[(16, 1), (3, -40)],
                       idx_stride=18, adv_step=-5, adv_count=7)
    assert len(words) == 8 and all(0 <= w < 1 << 32 for w in words)
    f = decode_fields(DSR, sum(w << (32 * i) for i, w in enumerate(words)))
    assert f["kind"] == Kind.MEM.value and f["dtype"] == DType.FP32.value
    assert (f["base"], f["idx_stride"], f["adv_step"], f["adv_count"]) == (0x1234, 18, -5, 7)
    assert [(f[f"dims.{i}.len"], f[f"dims.{i}.stride"]) for i in range(4)] == \
        [(16, 1), (3, -40), (1, 0), (1, 0)]


def test_entry_roundtrip():
    words = encode_entry(TensorOp.FMAC, 1, 1, 0, DSR_WAVELET, idx={"b"}, adv={"dst", "a"},
                         prio=3, clear_a=True, last=False)
    f = {name.removeprefix("launch."): v
         for name, v in decode_fields(LaunchEntry, words[0] | (words[1] << 32)).items()}
    assert f["op"] == TensorOp.FMAC.value and (f["dst"], f["a"], f["b"], f["s"]) == \
        (1, 1, 0, DSR_WAVELET)
    assert (f["idx"], f["adv"], f["prio"], f["clear_a"], f["last"]) == (4, 3, 3, 1, 0)


@pytest.mark.parametrize("kwargs,name", [
    (dict(kind=Kind.MEM, base=1 << 16), "base"),
    (dict(kind=Kind.MEM, dims=[(4096, 1)]), "dims.0.len"),
    (dict(kind=Kind.MEM, dims=[(4, 1 << 19)]), "dims.0.stride"),
    (dict(kind=Kind.FOUT, color=32), "color"),
])
def test_dsr_rejects_values_that_do_not_fit(kwargs, name):
    with pytest.raises(ValueError, match=name.replace(".", r"\.")):
        encode_dsr(**kwargs)


def test_encoders_reject_bad_arguments():
    with pytest.raises(ValueError, match="1 to 4"):
        encode_dsr(Kind.MEM, dims=[(1, 1)] * 5)
    with pytest.raises(ValueError, match="FP32"):
        encode_dsr(Kind.ACC, dtype=DType.FP16)
    with pytest.raises(ValueError, match="dst"):
        encode_entry(TensorOp.FMOV, 70, 0)
    with pytest.raises(TypeError, match="a must be a DSR id"):
        encode_entry(TensorOp.FMOV, 0, "x")
    with pytest.raises(ValueError, match="operand 'c'"):
        encode_entry(TensorOp.FMOV, 0, 1, idx={"c"})
    with pytest.raises(KeyError, match="nope"):
        encode_fields(DSR, nope=1)


def test_addresses_and_error_decoding():
    assert reg_addr(Reg.STATUS) == 0x20001
    assert dsr_addr(2, 7) == 0x20000 + 0x800 + 23
    assert entry_addr(3, 1) == 0x20000 + 0x400 + 7
    assert task_addr(5) == 0x20205 and acc_addr(9) == 0x21009
    assert counter_addr(Counter.FMAC_LANES) == 0x20011
    assert decode_error(0x0506) == (ErrorCode.BAD_OPERAND, 5)
    assert encode_bind(data_task=3, ctrl_base=4) == 3 | 1 << 5 | 4 << 6 | 1 << 11
    assert encode_trigger(2, index=5, data=7) == 7 | 5 << 16 | 2 << 26


@pytest.mark.parametrize("kwargs,error", [
    (dict(banks=6), ValueError), (dict(threads=3), ValueError), (dict(lanes=2), ValueError),
    (dict(rx_depth=3), ValueError), (dict(sram_words=1.5), TypeError),
])
def test_pe_parameter_checks(kwargs, error):
    with pytest.raises(error):
        PE(**kwargs)


def test_model_fmac_matches_golden():
    rng = np.random.default_rng(0)
    cfg = PEConfig()
    x = fp.f16_to_bits(rng.standard_normal(16))
    cfg.put_f16(0x40, x)
    cfg.dsr(0, Kind.MEM, base=0x40, dims=[(16, 1)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=0, dims=[(16, 1)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET)])
    model = PEModel(cfg)
    assert model.activate(0, data=0x3C00) == []
    assert np.array_equal(model.acc[:16], fp.fmac_mixed(np.zeros(16, np.uint32), x, 0x3C00))
    cfg.task(1, [dict(op=TensorOp.FMOV, dst=5, a=0)])
    assert PEModel(cfg).activate(1) == [ErrorCode.BAD_OPERAND]


def test_compact_memory_init():
    text = ("  reg [31:0] m [2:0];\n  initial begin\n    m[0] = 32'd0;\n    m[1] = 32'd0;\n"
            "    m[2] = 32'd0;\n  end\n")
    out = compact_memory_init(text)
    assert "for (init_i0 = 0; init_i0 < 3;" in out and "m[1]" not in out


def test_amaranth_smoke():
    """A small PE in Amaranth's simulator: host-triggered FMAC, then FMOV to FP32 SRAM."""
    dut = PE(sram_words=1024)
    rng = np.random.default_rng(1)
    x = fp.f16_to_bits(rng.standard_normal(8))
    cfg = PEConfig(sram_words=1024)
    cfg.put_f16(0x20, x)
    cfg.dsr(0, Kind.MEM, base=0x20, dims=[(8, 1)])
    cfg.dsr(1, Kind.ACC, dtype=DType.FP32, base=4, dims=[(8, 1)])
    cfg.dsr(2, Kind.MEM, dtype=DType.FP32, base=0x100, dims=[(8, 1)])
    cfg.task(0, [dict(op=TensorOp.FMAC, dst=1, a=1, b=0, s=DSR_WAVELET),
                 dict(op=TensorOp.FMOV, dst=2, a=1)])
    want = fp.fmac_mixed(np.zeros(8, np.uint32), x, 0x4000)
    result = {}

    async def bench(ctx):
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
        for addr, value in cfg.all_writes():
            await write(addr, value)
        await write(reg_addr(Reg.TRIGGER), encode_trigger(0, data=0x4000))
        for _ in range(100):
            await ctx.tick()
            if not ctx.get(dut.busy):
                break
        result["busy"] = ctx.get(dut.busy)
        result["y"] = [await read(0x80 + i) for i in range(8)]
        result["error"] = await read(reg_addr(Reg.ERROR))
        result["lanes"] = await read(counter_addr(Counter.FMAC_LANES))

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert result["busy"] == 0
    assert result["error"] == 0
    assert result["y"] == [int(v) for v in want]
    assert result["lanes"] == 8
