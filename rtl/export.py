"""Verilog export: each distinct block converted once and instantiated by name.

Amaranth writes one Verilog module per elaborated instance, so a fabric elaborated as one
design grows with its size. Blocks that repeat (the router, the tile) are instead converted
alone under a fixed module name, and the tops that place them use ``Instance`` by that name;
:func:`concat` joins the pieces into one source file.
"""

from amaranth.back import verilog

__all__ = ["to_verilog", "concat"]


def to_verilog(component, name, **kwargs):
    """Convert one ``wiring.Component`` to Verilog with module name ``name``."""
    return verilog.convert(component, name=name, emit_src=False, **kwargs)


def concat(*sources):
    """Join Verilog sources, keeping the first definition of every module name."""
    seen = set()
    out = []
    for text in sources:
        # Split at module boundaries; the yosys writer emits one module per block.
        chunks = text.split("\nmodule ")
        head, rest = chunks[0], chunks[1:]
        if head.strip():
            out.append(head)
        for chunk in rest:
            name = chunk.split("(", 1)[0].split()[0].strip()
            if name in seen:
                continue
            seen.add(name)
            out.append("module " + chunk)
    return "\n".join(out)
