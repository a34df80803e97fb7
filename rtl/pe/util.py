"""Small hardware helpers shared by the PE's blocks (named signals, lowest-bit and round-robin
selection, kind tests).

Simulation speed is a design goal of the PE (docs/pe.md, section 12): the helpers here build
the shapes that Verilator's model evaluates cheaply (a multiplexer against a register for a
value read only under a condition, a halving tree for a lowest set bit).
"""

from amaranth import Array, Cat, Const, Mux, Shape, Signal, Value
from amaranth.lib import data
from amaranth.utils import ceil_log2

from rtl.pe.regs import Kind

__all__ = ["KIND", "sig", "kind_is", "umin", "lowest", "round_robin", "lane_mask",
           "packed"]

#: Raw values of the :class:`rtl.pe.regs.Kind` members, by name.
KIND = {k.name: k.value for k in Kind}


def kind_is(kind, *names):
    """``kind`` (a raw 3-bit value) is one of the named :class:`Kind` members."""
    out = Const(0, 1)
    for name in names:
        out = out | (kind == KIND[name])
    return out


def umin(a, b):
    """The smaller of two unsigned values."""
    return Mux(a < b, a, b)


def sig(m, value, name, shape=None, when=None, idle=None):
    """A named signal driven by ``value`` (so that the expression is built once).

    With ``when``: ``value`` while ``when`` is high, else ``idle``, a value of no meaning
    (read from a register, not a constant: Verilator keeps such a multiplexer a C++
    conditional, so its model does not compute ``value`` in the cycles without ``when``;
    with a constant it would compute ``value`` and mask it). ``idle`` may not be ``when``
    itself: ``Mux(c, value, c)`` is ``c & value``, which Verilator computes in full."""
    if when is not None and idle is when:
        raise ValueError(f"sig {name!r}: idle is the condition itself (Mux(c, x, c) is "
                         f"c & x, evaluated every cycle); write the AND, or idle on a register")
    out = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.comb += out.eq(value if when is None else Mux(when, value, idle))
    return out


def lowest(m, mask, width, name):
    """(any, index of the lowest set bit, 0 if none) of ``mask``, as signals.

    A halving tree (is the lower half empty?), log2(width) steps, rather than a priority
    chain of ``width`` multiplexers: far fewer operations in Verilator's model."""
    mask = sig(m, mask, f"{name}_mask", width)
    any_ = sig(m, mask.any(), f"{name}_any")
    half = 1 << max(0, ceil_log2(width) - 1)
    value, bits = mask, []
    while half >= 1:
        low = value[:half]
        empty = low == 0
        bits.append(empty)
        value = Mux(empty, value[half:2 * half], low)
        half //= 2
    index = Mux(any_, Cat(*reversed(bits)), 0) if bits else Const(0, 1)
    return any_, sig(m, index, f"{name}_index", range(max(width, 2)))


def round_robin(m, mask, last, width, name):
    """Lowest set bit of ``mask`` above ``last``, else the lowest set bit (round-robin)."""
    mask = sig(m, mask, f"{name}_req", width)
    after = (~((Const(2, 2) << last) - 1))[:width]          # bits last + 1 .. width - 1
    hit_after, first_after = lowest(m, mask & after, width, f"{name}_after")
    hit, first = lowest(m, mask, width, f"{name}_all")
    return hit, sig(m, Mux(hit_after, first_after, first), f"{name}_pick",
                    range(max(width, 2)))


def lane_mask(n, offset, width):
    """``((1 << n) - 1) << offset`` limited to ``width`` bits, for n in 0..4."""
    ones = Array([Const((1 << i) - 1, 4) for i in range(5)])[n]
    return (ones << offset)[:width]


def packed(layout, **values):
    """The value of a ``layout`` (an ``amaranth.lib.data`` layout or struct) whose fields are
    ``values`` (the others zero), as an expression rather than a signal: a signal of the
    layout is assembled every cycle, an expression only where it is used."""
    layout = data.Layout.cast(layout)
    unknown = set(values) - {name for name, _ in layout}
    if unknown:
        raise ValueError(f"{sorted(unknown)} are not fields of {layout!r}")
    parts, at = [], 0
    for name, field in sorted(layout, key=lambda item: item[1].offset):
        width = Shape.cast(field.shape).width
        if field.offset > at:
            parts.append(Const(0, field.offset - at))
        parts.append(Value.cast(values[name])[:width] if name in values else Const(0, width))
        at = field.offset + width
    if layout.size > at:
        parts.append(Const(0, layout.size - at))
    return Cat(*parts)

