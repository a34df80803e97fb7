"""The PE's SRAM banks and accumulator cache with their ports (SPEC 4.1, 4.2; docs/pe.md 2).

SRAM: ``banks`` single-port 32-bit banks of ``sram_words / banks`` words; word ``w`` is in
bank ``w % banks``, so a 64-bit access (4 x FP16 or 2 x FP32) uses one bank pair. The
datapath reads two operands (a, b) and writes one result per cycle; whether they collide in
a bank is decided by the issue stage (the banks serialise the collision, docs/pe.md 2), so
the ports here never arbitrate. The host has its own port on every bank (a configuration
path, not part of the datapath's budget).

Accumulator cache: ``acc_words`` FP32 words in 4 lane columns (word ``w`` in column
``w % 4``, row ``w // 4``), read 4 words per operand, written by the write-back and
forwarded to a read in the same cycle.
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.pe.iface import (AccWriteSignature, MemDataSignature, MemReadSignature,
                          RegionSignature, SramWriteSignature)
from rtl.pe.regs import CfgRegion, region

__all__ = ["PEMemory"]


class PEMemory(wiring.Component):
    """SRAM banks and the accumulator cache.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    a, b : In(MemReadSignature)
        The datapath's operand reads, addressed in the issue stage.
    a_data, b_data : Out(MemDataSignature)
        Their data in the read stage (the bank pair and the accumulator row).
    sram_wr : In(SramWriteSignature)
        The write-back's SRAM write.
    acc_wr : In(AccWriteSignature)
        The write-back's accumulator-cache write (forwarded to a and b).
    sram, acc : In(RegionSignature)
        The host's configuration ports (regions SRAM and ACC of the address map).
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "a": In(MemReadSignature()),
            "b": In(MemReadSignature()),
            "a_data": Out(MemDataSignature()),
            "b_data": Out(MemDataSignature()),
            "sram_wr": In(SramWriteSignature()),
            "acc_wr": In(AccWriteSignature()),
            "sram": In(RegionSignature(region(CfgRegion.SRAM, params))),
            "acc": In(RegionSignature(region(CfgRegion.ACC, params))),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        B = p.banks
        PAIRS = B // 2
        PB = exact_log2(PAIRS) if PAIRS > 1 else 0
        row_bits = exact_log2(B)
        rows = p.sram_words // B
        acc_rows = p.acc_words // 4

        # --- SRAM banks ---------------------------------------------------------------------
        banks = []
        for b in range(B):
            mem = memory.Memory(shape=32, depth=rows, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append({"wr": mem.write_port(granularity=16), "rd_a": mem.read_port(),
                          "rd_b": mem.read_port(), "hwr": mem.write_port(granularity=16),
                          "hrd": mem.read_port()})
        for name, port, out in (("a", self.a, self.a_data), ("b", self.b, self.b_data)):
            # The pair the address falls in, registered with the read (read only under the
            # operand's kind in the read stage).
            pair = Signal(max(1, PB), name=f"{name}_pair", reset_less=True)
            if PB:
                m.d.sync += pair.eq(port.addr[2:2 + PB])
            for b in range(B):
                m.d.comb += banks[b][f"rd_{name}"].addr.eq(port.addr[1 + row_bits:])
            m.d.comb += out.sram.eq(Array([Cat(banks[2 * q][f"rd_{name}"].data,
                                               banks[2 * q + 1][f"rd_{name}"].data)
                                           for q in range(PAIRS)])[pair])
        wr = self.sram_wr
        w_pair = wr.addr[2:2 + PB] if PB else 0
        for b in range(B):
            half = b % 2
            m.d.comb += [
                banks[b]["wr"].addr.eq(wr.addr[1 + row_bits:]),
                banks[b]["wr"].data.eq(wr.data[32 * half:32 * half + 32]),
                banks[b]["wr"].en.eq(Mux(w_pair == b // 2, wr.en[2 * half:2 * half + 2], 0)),
            ]

        # --- accumulator cache --------------------------------------------------------------
        acc = []
        for j in range(4):
            mem = memory.Memory(shape=32, depth=acc_rows, init=[])
            m.submodules[f"acc{j}"] = mem
            wp = mem.write_port()
            acc.append({"wr": wp, "rd_a": mem.read_port(transparent_for=(wp,)),
                        "rd_b": mem.read_port(transparent_for=(wp,)),
                        "hwr": mem.write_port(), "hrd": mem.read_port()})
            for name, port, out in (("a", self.a, self.a_data), ("b", self.b, self.b_data)):
                m.d.comb += [acc[j][f"rd_{name}"].addr.eq(port.addr[2:]),
                             out.acc[j].eq(acc[j][f"rd_{name}"].data)]
            m.d.comb += [
                acc[j]["wr"].addr.eq(self.acc_wr.addr[2:]),
                acc[j]["wr"].data.eq(self.acc_wr.data[j]),
                acc[j]["wr"].en.eq(self.acc_wr.en[j]),
            ]

        # --- the host's ports ---------------------------------------------------------------
        hs = self.sram
        bank = hs.index[:row_bits]
        rd_bank = Signal(row_bits)
        for b in range(B):
            m.d.comb += [
                banks[b]["hrd"].addr.eq(hs.index[row_bits:]),
                banks[b]["hrd"].en.eq(hs.re),
                banks[b]["hwr"].addr.eq(hs.index[row_bits:]),
                banks[b]["hwr"].data.eq(hs.wdata),
                banks[b]["hwr"].en.eq(Mux(hs.we & (bank == b), 0b11, 0)),
            ]
        with m.If(hs.re):
            m.d.sync += rd_bank.eq(bank)
        m.d.comb += hs.rdata.eq(Array([banks[b]["hrd"].data for b in range(B)])[rd_bank])

        ha = self.acc
        rd_col = Signal(2)
        for j in range(4):
            m.d.comb += [
                acc[j]["hrd"].addr.eq(ha.index[2:]), acc[j]["hrd"].en.eq(ha.re),
                acc[j]["hwr"].addr.eq(ha.index[2:]), acc[j]["hwr"].data.eq(ha.wdata),
                acc[j]["hwr"].en.eq(ha.we & (ha.index[:2] == j)),
            ]
        with m.If(ha.re):
            m.d.sync += rd_col.eq(ha.index[:2])
        m.d.comb += ha.rdata.eq(Array([acc[j]["hrd"].data for j in range(4)])[rd_col])
        return m
