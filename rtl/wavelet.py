"""The 32-bit wavelet: the one packet format of the fabric (SPEC section 2).

The layout is defined once, as :class:`Wavelet`. The RTL uses it as a ``data.Struct``;
the Python packers below read the field offsets and widths from that same layout, so the
test benches, the golden routing model and the mapper can never disagree with the hardware
about where a field lives.
"""

from collections import namedtuple

import numpy as np
from amaranth.lib import data

__all__ = [
    "Wavelet", "WAVELET_BITS", "NUM_COLORS", "COLOR_BITS", "INDEX_BITS", "FIELDS",
    "pack", "unpack", "pack_array", "unpack_array", "WaveletFields",
]


class Wavelet(data.Struct):
    """One fabric packet: an FP16 value plus 16 bits of control.

    Fields, least significant first: ``data`` (FP16 value, half of an FP32 value or a
    command argument), ``index`` (sparse index or command operand), ``ctrl`` (0 data,
    1 control/command) and ``color`` (route / virtual channel, 0..23 valid on a link).
    """
    data:  16
    index: 10
    ctrl:  1
    color: 5


_LAYOUT = data.Layout.cast(Wavelet)

#: ``{field name: (offset, width)}`` derived from :class:`Wavelet`.
FIELDS = {name: (field.offset, field.width) for name, field in _LAYOUT}
WAVELET_BITS = _LAYOUT.size
COLOR_BITS = FIELDS["color"][1]
INDEX_BITS = FIELDS["index"][1]
#: Colors 0..NUM_COLORS-1 are routable; the rest of the 5-bit space is invalid on a link.
NUM_COLORS = 24

WaveletFields = namedtuple("WaveletFields", list(FIELDS))


def _check_field(name, value):
    width = FIELDS[name][1]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"wavelet field {name} must be an integer, not {value!r}")
    value = int(value)
    if not 0 <= value < (1 << width):
        raise ValueError(f"wavelet field {name}={value} does not fit in {width} bits")


def pack(data=0, index=0, ctrl=0, color=0):
    """Pack one wavelet's fields into its 32-bit word (a Python ``int``).

    Raises ``ValueError`` naming the field when a value does not fit. ``color`` is not
    restricted to 0..23 here, so that benches can build invalid traffic on purpose.
    """
    word = 0
    for name, value in (("data", data), ("index", index), ("ctrl", ctrl), ("color", color)):
        _check_field(name, value)
        word |= int(value) << FIELDS[name][0]
    return word


def unpack(word):
    """Split a 32-bit wavelet word into its fields (a :class:`WaveletFields`)."""
    if isinstance(word, bool) or not isinstance(word, (int, np.integer)):
        raise TypeError(f"wavelet word must be an integer, not {word!r}")
    word = int(word)
    if not 0 <= word < (1 << WAVELET_BITS):
        raise ValueError(f"wavelet word {word:#x} does not fit in {WAVELET_BITS} bits")
    return WaveletFields(**{name: (word >> off) & ((1 << width) - 1)
                            for name, (off, width) in FIELDS.items()})


def pack_array(data=0, index=0, ctrl=0, color=0):
    """Vectorised :func:`pack`: broadcast the field arrays and return ``uint32`` words.

    Raises ``ValueError`` naming the field when any element does not fit.
    """
    args = {"data": data, "index": index, "ctrl": ctrl, "color": color}
    try:
        arrays = np.broadcast_arrays(*(np.asarray(v) for v in args.values()))
    except ValueError:
        shapes = ", ".join(f"{k} {np.shape(v)}" for k, v in args.items())
        raise ValueError(f"wavelet fields do not broadcast together: {shapes}") from None
    word = np.zeros(arrays[0].shape, dtype=np.uint32)
    for (name, _), value in zip(args.items(), arrays):
        if value.dtype.kind not in "iub":
            raise TypeError(f"wavelet field {name} must be integers, got {value.dtype}")
        off, width = FIELDS[name]
        value = value.astype(np.int64)
        bad = (value < 0) | (value >= (1 << width))
        if bad.any():
            first = int(value[bad].flat[0])
            raise ValueError(f"wavelet field {name}={first} does not fit in {width} bits")
        word |= (value.astype(np.uint32) << np.uint32(off))
    return word


def unpack_array(words):
    """Vectorised :func:`unpack`: a :class:`WaveletFields` of ``uint32`` arrays."""
    words = np.asarray(words)
    if words.dtype.kind not in "iu":
        raise TypeError(f"wavelet words must be integers, got {words.dtype}")
    if words.size and (words.min() < 0 or int(words.max()) >= (1 << WAVELET_BITS)):
        bad = words[(words < 0) | (words >= (1 << WAVELET_BITS))].flat[0]
        raise ValueError(f"wavelet word {int(bad):#x} does not fit in {WAVELET_BITS} bits")
    words = words.astype(np.uint32)
    return WaveletFields(**{name: (words >> np.uint32(off)) & np.uint32((1 << width) - 1)
                            for name, (off, width) in FIELDS.items()})
