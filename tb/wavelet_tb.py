"""cocotb bench: the Verilog view of the wavelet agrees with the Python packers.

The top is :class:`tb.wavelet_probe.WaveletProbe`: it views a 32-bit input word as a
:class:`rtl.wavelet.Wavelet` and drives each field onto its own output port, and rebuilds a
word from field inputs. Random words must round-trip through both directions.
"""

import random

import cocotb
from cocotb.triggers import Timer

from rtl.wavelet import pack, unpack
from runtime.sim import params


@cocotb.test()
async def fields_match_python_packers(dut):
    """Every field the hardware extracts equals rtl.wavelet.unpack of the same word."""
    rng = random.Random(params().get("seed", 1))
    for _ in range(params().get("count", 2000)):
        word = rng.getrandbits(32)
        fields = unpack(word)
        dut.word.value = word
        dut.in_data.value = fields.data
        dut.in_index.value = fields.index
        dut.in_ctrl.value = fields.ctrl
        dut.in_color.value = fields.color
        await Timer(1, unit="ns")
        got = (int(dut.data.value), int(dut.index.value), int(dut.ctrl.value),
               int(dut.color.value))
        assert got == tuple(fields), f"word {word:#010x}: hardware fields {got} != {fields}"
        assert int(dut.packed.value) == pack(*fields), \
            f"fields {fields}: hardware word {int(dut.packed.value):#010x} != {word:#010x}"
