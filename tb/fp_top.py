"""Regression tops holding FP units, wide, so that one cycle carries many test vectors.

Each unit is instantiated with :data:`LANES` lanes (many more than the PE's 4) so that one
cycle carries many test vectors: the regression's throughput is set by Python's cost per
cycle, not per vector. The lane count does not change a lane's logic.
"""

from amaranth import Module, Shape
from amaranth.lib import data, wiring

from rtl.fp import FP16, FP32, F16ToF32, F32ToF16, FMAUnit, MaxUnit, NegUnit

__all__ = ["LANES", "TAG_WIDTH", "UNITS", "FPRegressionTop", "payload_fields"]

LANES = 8
TAG_WIDTH = 16

#: unit name -> factory(lanes, tag_width)
UNITS = {
    "fma_mixed":  lambda n, t: FMAUnit(FP16, FP32, n, t),
    "fma_fp32":   lambda n, t: FMAUnit(FP32, FP32, n, t),
    "fma_fp16":   lambda n, t: FMAUnit(FP16, FP16, n, t),
    "max_fp16":   lambda n, t: MaxUnit(FP16, n, t),
    "max_fp32":   lambda n, t: MaxUnit(FP32, n, t),
    "neg_fp16":   lambda n, t: NegUnit(FP16, n, t),
    "neg_fp32":   lambda n, t: NegUnit(FP32, n, t),
    "f16_to_f32": lambda n, t: F16ToF32(n, t),
    "f32_to_f16": lambda n, t: F32ToF16(n, t),
}


class FPRegressionTop(wiring.Component):
    """FP units side by side; unit ``u``'s streams are the ports ``u_i`` and ``u_o``.

    ``units`` names the units to include (all by default); the regression builds one top
    per unit so that the builds are cached, and run, independently.
    """

    def __init__(self, units=None, lanes=LANES, tag_width=TAG_WIDTH):
        names = list(UNITS) if units is None else list(units)
        for name in names:
            if name not in UNITS:
                raise ValueError(f"unknown FP unit {name!r}; known: {', '.join(UNITS)}")
        self._units = {name: UNITS[name](lanes, tag_width) for name in names}
        members = {}
        for name, unit in self._units.items():
            members[f"{name}_i"] = unit.signature.members["i"]
            members[f"{name}_o"] = unit.signature.members["o"]
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        for name, unit in self._units.items():
            m.submodules[name] = unit
            wiring.connect(m, wiring.flipped(getattr(self, f"{name}_i")), unit.i)
            wiring.connect(m, unit.o, wiring.flipped(getattr(self, f"{name}_o")))
        return m


def payload_fields(unit_name, port, lanes=LANES, tag_width=TAG_WIDTH):
    """``{field: (offset, element width, element count)}`` of a unit's stream payload.

    Derived from the unit's own layout, so the bench packs exactly what the RTL expects.
    """
    unit = UNITS[unit_name](lanes, tag_width)
    layout = data.Layout.cast(unit.signature.members[port].signature.members["payload"].shape)
    fields = {}
    for name, field in layout:
        shape = field.shape
        if isinstance(shape, data.ArrayLayout):
            fields[name] = (field.offset, Shape.cast(shape.elem_shape).width, shape.length)
        else:
            fields[name] = (field.offset, field.width, 1)
    return fields
