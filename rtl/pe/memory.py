"""The PE's SRAM banks and accumulator cache with their ports (SPEC 4.1, 4.2; docs/pe.md 2).

SRAM: ``banks`` single-port 32-bit banks of ``sram_words / banks`` words; word ``w`` is in
bank ``w % banks``, so a 64-bit access (4 x FP16 or 2 x FP32) uses one bank pair. The
datapath reads two operands (a, b) and writes one result per cycle; whether they collide in
a bank is decided by the issue stage (the banks serialise the collision, docs/pe.md 2), so
the datapath's ports never arbitrate. The host has its own port on every bank (a
configuration path, not part of the datapath's budget).

The control core has one read port and one write port on every bank, shared by its
instruction fetch and its loads and stores (SPEC 4.5, docs/core.md). The datapath has the
banks first: a core access is granted only when its bank is not used by the datapath in
this cycle (``busy_banks``: the reads of the issue stage and the write-back); a load or store
goes before a fetch of the same bank. A denied access is retried by the core (counted as
``STALL_CORE_BANK``), so the core never changes the datapath's timing.

Accumulator cache: ``acc_words`` FP32 words in 4 lane columns (word ``w`` in column
``w % 4``, row ``w // 4``), read 4 words per operand, written by the write-back and
forwarded to a read in the same cycle.
"""

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.pe.core import FetchSignature, MemSignature
from rtl.pe.iface import (AccWriteSignature, MemDataSignature, MemReadSignature,
                          RegionSignature, SramWriteSignature)
from rtl.pe.util import sig
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
    core_fetch, core_mem : In(FetchSignature), In(MemSignature)
        The control core's instruction fetch and its loads / stores (word addresses).
    busy_banks : In(banks)
        Banks the datapath uses in this cycle (a core access to one of them is denied).
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
            "core_fetch": In(FetchSignature()),
            "core_mem": In(MemSignature()),
            "busy_banks": In(params.banks),
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
                          "hrd": mem.read_port(), "cwr": mem.write_port(),
                          "crd": mem.read_port()})
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

        self._core_ports(m, banks, row_bits)

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

    def _core_ports(self, m, banks, row_bits):
        """The core's fetch and load/store: grants (the datapath first, then a load/store,
        then the fetch), one read and one write port per bank, read data the next cycle."""
        B = self._p.banks
        fetch, mem, busy = self.core_fetch, self.core_mem, self.busy_banks
        active = fetch.en | mem.en

        def bank(addr):
            return addr[:row_bits]
        mem_ok = sig(m, mem.en & ~busy.bit_select(bank(mem.addr), 1), "core_mem_ok", 1)
        fetch_ok = sig(m, fetch.en & ~busy.bit_select(bank(fetch.addr), 1)
                       & ~(mem.en & (bank(mem.addr) == bank(fetch.addr))), "core_fetch_ok", 1)
        m.d.comb += [mem.grant.eq(mem_ok), fetch.grant.eq(fetch_ok)]
        load = mem_ok & ~mem.we
        fetch_bank = Signal(row_bits, reset_less=True)   # read only after a granted fetch
        mem_bank = Signal(row_bits, reset_less=True)     # ... after a granted load
        with m.If(active):
            m.d.sync += [fetch_bank.eq(bank(fetch.addr)), mem_bank.eq(bank(mem.addr))]
        for b in range(B):
            mine = bank(mem.addr) == b
            m.d.comb += [
                banks[b]["crd"].addr.eq(Mux(load & mine, mem.addr[row_bits:],
                                            fetch.addr[row_bits:])),
                banks[b]["crd"].en.eq((load & mine) | (fetch_ok & (bank(fetch.addr) == b))),
                banks[b]["cwr"].addr.eq(mem.addr[row_bits:]),
                banks[b]["cwr"].data.eq(mem.wdata),
                banks[b]["cwr"].en.eq(mem_ok & mem.we & mine),
            ]
        data = [banks[b]["crd"].data for b in range(B)]
        m.d.comb += [fetch.rdata.eq(Array(data)[fetch_bank]),
                     mem.rdata.eq(Array(data)[mem_bank])]
