"""Export the Verilog of every distinct hardware block (`nox -s verilog`).

Each block is converted once under its own module name; repeated blocks (router, tile) are
instantiated by name from the tops that place them, so no file grows with the fabric.
"""

import argparse
import time
from pathlib import Path

from rtl.export import to_verilog

__all__ = ["BLOCKS", "export_all"]


def _fp_blocks():
    from rtl.fp import FP16, FP32, F16ToF32, F32ToF16, FMAUnit, MaxUnit, NegUnit
    return {
        "fma_mixed": lambda: FMAUnit(FP16, FP32, lanes=4),
        "fma_fp32": lambda: FMAUnit(FP32, FP32, lanes=2),
        "fma_fp16": lambda: FMAUnit(FP16, FP16, lanes=4),
        "max_fp16": lambda: MaxUnit(FP16, lanes=4),
        "max_fp32": lambda: MaxUnit(FP32, lanes=2),
        "neg_fp16": lambda: NegUnit(FP16, lanes=4),
        "neg_fp32": lambda: NegUnit(FP32, lanes=2),
        "f16_to_f32": lambda: F16ToF32(lanes=4),
        "f32_to_f16": lambda: F32ToF16(lanes=2),
    }


def _fabric_blocks():
    from rtl.router import Router
    # The router is converted once as module "router"; meshes and the fabric place it by
    # name (rtl/mesh.py), so no mesh-sized file is written here.
    return {
        "router": lambda: Router(),
    }


def _tile_blocks():
    from rtl.fabric import DEFAULT_DEPTHS, Fabric, HostMemory, host_memory_kinds
    from rtl.tile import TILE_MODULE, Tile
    # The tile (one router + one PE inside) is converted once as module "tile"; the fabric
    # top places it by name, so "fabric" here is the 4 x 4 top's wiring only (it also places
    # the host memories below by name).
    blocks = {TILE_MODULE: lambda: Tile(), "fabric": lambda: Fabric(4, 4)}
    for name, (depth, writable) in host_memory_kinds(**DEFAULT_DEPTHS).items():
        blocks[name] = lambda depth=depth, writable=writable: HostMemory(depth, writable)
    return blocks


#: name -> function returning {module name: component factory}; extended as blocks land.
BLOCKS = [_fp_blocks, _fabric_blocks, _tile_blocks]


def export_all(out_dir):
    """Write ``<name>.v`` for every block under ``out_dir``; return ``{name: (path, lines)}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for group in BLOCKS:
        for name, factory in group().items():
            text = to_verilog(factory(), name)
            path = out_dir / f"{name}.v"
            path.write_text(text)
            written[name] = (path, text.count("\n"))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="build/verilog", help="output folder")
    args = parser.parse_args(argv)
    start = time.monotonic()
    written = export_all(args.out)
    for name, (path, lines) in written.items():
        print(f"{name:24s} {lines:8d} lines  {path}")
    print(f"wrote {len(written)} blocks to {Path(args.out).resolve()} "
          f"in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
