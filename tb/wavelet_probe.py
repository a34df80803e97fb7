"""A tiny top that shows the Verilog view of the wavelet (used by tb/wavelet_tb.py)."""

from amaranth import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from rtl.wavelet import Wavelet

__all__ = ["WaveletProbe"]


class WaveletProbe(wiring.Component):
    """Views a word as a Wavelet, and builds a Wavelet from separate field inputs."""
    word: In(Wavelet)
    data: Out(16)
    index: Out(10)
    ctrl: Out(1)
    color: Out(5)
    in_data: In(16)
    in_index: In(10)
    in_ctrl: In(1)
    in_color: In(5)
    packed: Out(Wavelet)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.data.eq(self.word.data), self.index.eq(self.word.index),
            self.ctrl.eq(self.word.ctrl), self.color.eq(self.word.color),
            self.packed.data.eq(self.in_data), self.packed.index.eq(self.in_index),
            self.packed.ctrl.eq(self.in_ctrl), self.packed.color.eq(self.in_color),
        ]
        return m
