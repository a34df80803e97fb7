"""The fabric link and the configuration bus: the two contracts every block shares.

Link (one direction of a router port, or a RAMP between router and PE)
----------------------------------------------------------------------
Forward: ``valid`` and ``payload`` (a :class:`rtl.wavelet.Wavelet`). Backward: ``ready``,
one bit per color (per-color stop bits, SPEC 3.3). A wavelet transfers in a cycle where
``valid`` is high and either ``ready[payload.color]`` is high or the color is invalid
(>= NUM_COLORS: the receiver always accepts those, to drop and count them). A sender only
raises ``valid`` for a wavelet whose color is ready, so one stalled color never blocks another.
``ready`` must be driven from the receiver's registered state (never combinationally from
its own ``valid``), so chains of links have no combinational loop; a receiver with a
2-deep buffer per color sustains one wavelet per cycle on a single flow.

Configuration bus (SPEC section 5)
----------------------------------
A word-addressed register/memory port: ``addr``, ``wdata``, ``we``, ``re`` from the host
side; ``rdata`` is valid in the cycle after ``re`` (fixed latency 1) and held until the next
read. Writes take effect at the clock edge. The tile address map is :class:`TileRegion`.
"""

import enum

from amaranth import unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.wavelet import NUM_COLORS, Wavelet

__all__ = ["LinkSignature", "CfgSignature", "CFG_ADDR_BITS", "TileRegion", "link_accepts"]


class LinkSignature(wiring.Signature):
    """One direction of a fabric link with per-color stop bits, seen from the sender."""

    def __init__(self):
        super().__init__({
            "valid":   Out(1),
            "payload": Out(Wavelet),
            "ready":   In(NUM_COLORS),
        })


def link_accepts(link):
    """Amaranth expression: the wavelet on ``link`` transfers this cycle."""
    color = link.payload.color
    return link.valid & ((color >= NUM_COLORS) | link.ready.bit_select(color, 1))


#: Word address width of the configuration bus inside a tile.
CFG_ADDR_BITS = 20


class CfgSignature(wiring.Signature):
    """Configuration and readback port of a block, seen from the host (initiator) side."""

    def __init__(self, addr_bits=CFG_ADDR_BITS):
        if not isinstance(addr_bits, int) or addr_bits <= 0:
            raise TypeError(f"addr_bits must be a positive int, not {addr_bits!r}")
        super().__init__({
            "addr":   Out(unsigned(addr_bits)),
            "wdata":  Out(32),
            "we":     Out(1),
            "re":     Out(1),
            "rdata":  In(32),
        })


class TileRegion(enum.IntEnum):
    """Base word addresses of the blocks inside a tile's configuration space.

    ``PE_SRAM``: the PE's SRAM, one 32-bit word per address. ``ROUTER``: the router's
    route table and counters (its own map is in ``rtl/router.py``). ``PE_REGS``: the PE's
    descriptors, task table, control, counters and error registers (map in ``rtl/pe/``).
    """
    PE_SRAM = 0x00000
    ROUTER  = 0x40000
    PE_REGS = 0x80000
    #: Size of each region in words.
    SIZE    = 0x40000
