"""The configuration decoder of the PE, derived from the address map (docs/pe.md section 3).

Every select, item index and word number is computed from :func:`rtl.pe.regs.address_map`
(each region's first address, words per item and item count, from the PE's parameters):
no address bit is written here by hand. Each region is handed to the block behind it as a
:class:`rtl.pe.iface.RegionSignature`; the decoder multiplexes their read data.

A write to an address that no region decodes (past a region's last item, between regions,
past the register space) is ignored (it never lands on another register) and raises
``BAD_CONFIG``; its info byte is the :class:`rtl.pe.regs.CfgRegion` at or below the address
(for ``task_addr(40)`` on a PE with 32 tasks: ``TASK``). Reads of such addresses return 0.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.link import CfgSignature
from rtl.pe.iface import ConfigReport, RegionSignature
from rtl.pe.regs import CFG_BITS, CfgRegion, address_map
from rtl.pe.util import sig

__all__ = ["ConfigDecoder", "decode_region"]


def decode_region(addr, region):
    """``(sel, item, word)`` of ``region`` for the cfg address ``addr`` (Amaranth values):
    ``sel`` is high for an address of one of its ``ids`` items. Compares only the bits that
    vary: the region lies in one aligned block of 2**k addresses, whose number is compared
    whole, then the offset inside it against the region's ends where they are not the
    block's."""
    lo, hi = region.base, region.end
    k = 0
    while lo >> k != (hi - 1) >> k:
        k += 1
    block = lo >> k << k
    first, last = lo - block, hi - block
    terms = []
    if k < len(addr):
        terms.append(addr[k:] == lo >> k)
    rel = addr[:k] if k else Const(0, 1)
    if first:
        terms.append(rel >= first)
    if last < 1 << k:
        terms.append(rel < last)
    sel = Const(1, 1)
    if terms:
        sel = terms[0]
        for term in terms[1:]:
            sel = sel & term
    offset = (rel - first)[:max(k, 1)] if first else rel
    wb = exact_log2(region.words)
    return sel, offset[wb:] if wb else offset, offset[:wb] if wb else Const(0, 1)


class ConfigDecoder(wiring.Component):
    """Decodes the host's configuration port into the regions of the address map.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    cfg : In(CfgSignature(CFG_BITS))
        The host's port (SRAM at 0, registers at ``PE_REGS_BASE``).
    sram, status, task_ctrl, counter_ctrl, counter, core, gpr, bind, task, entry, dsr, acc
        : Out(RegionSignature)
        One port per region (:class:`rtl.pe.regs.CfgRegion`, lower case). ``core`` and
        ``gpr`` (CORE_CTRL / CORE_STATUS / CORE_PC and the general-purpose registers) are
        decoded for the control core; until it is attached their read data is 0.
    report : Out(ConfigReport)
        ``BAD_CONFIG``.
    """

    def __init__(self, params):
        self._map = address_map(params)
        members = {"cfg": In(CfgSignature(CFG_BITS))}
        for r in self._map:
            members[r.region.name.lower()] = Out(RegionSignature(r))
        members["report"] = Out(ConfigReport())
        super().__init__(members)

    @property
    def address_map(self):
        """The regions decoded (:func:`rtl.pe.regs.address_map` of the PE's parameters)."""
        return self._map

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        addr = cfg.addr
        sels, backed, rdata = [], [], []
        rd_sel = Signal(range(len(self._map) + 1))
        # The regions' selects are evaluated only in a cycle with an access (``sel`` means
        # nothing without ``we`` or ``re``; rtl.pe.util.sig).
        access = cfg.we | cfg.re
        for r in self._map:
            port = getattr(self, r.region.name.lower())
            sel, item, word = decode_region(addr, r)
            sel = sig(m, sel, f"{r.region.name.lower()}_sel", 1, when=access, idle=rd_sel[0])
            m.d.comb += [port.sel.eq(sel), port.index.eq(item), port.we.eq(cfg.we & sel),
                         port.re.eq(cfg.re & sel), port.wdata.eq(cfg.wdata)]
            if r.words > 1:
                m.d.comb += port.word.eq(word)
            sels.append(sel)
            # Items count .. ids - 1 (BIND only) are decoded for their owner but read as 0.
            backed.append(sel & (item < r.count) if r.count < r.ids else sel)
            rdata.append(port.rdata)

        # Reads: the region of the last read selects its block's answer (0: none).
        which = Const(0, rd_sel.shape())
        for i, b in reversed(list(enumerate(backed))):
            which = Mux(b, i + 1, which)
        with m.If(cfg.re):
            m.d.sync += rd_sel.eq(which)
        m.d.comb += cfg.rdata.eq(Array([Const(0, 32)] + rdata)[rd_sel])

        # A write that no region decodes: BAD_CONFIG, naming the region at or below it.
        bad = sig(m, cfg.we & ~Cat(*sels).any(), "bad_config", 1)
        below = Const(CfgRegion.NONE.value, 8)
        for r in self._map:
            below = Mux(addr >= r.base, r.region.value, below) if r.base else \
                Const(r.region.value, 8)
        err = self.report.config_error
        m.d.comb += [err.valid.eq(bad),
                     err.info.eq(sig(m, below, "bad_config_info", 8, when=bad, idle=rd_sel))]
        return m
