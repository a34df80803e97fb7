"""Pictures of a mapped run: FMAC utilization per PE and wavelets per link, as PNG files.

The plot functions take plain arrays, so the same code draws predicted figures (golden
backend: from the mapping, the streams and the perf model) and measured ones (RTL backend:
from the counters of :func:`gpt_mapping.fabric_run.run_gemm_rtl`):

- :func:`plot_utilization`: ``util[H, W]`` (fraction of the PE's FMAC lane-slots used),
- :func:`plot_link_wavelets`: ``links[H, W, 5]`` (wavelets out of router ports N, E, S, W,
  RAMP).

Rows are drawn top to bottom from the north edge (row 0, where the weights enter), columns
left to right, as the fabric is laid out. Matplotlib runs on the Agg backend (no display).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

__all__ = ["PORTS", "plot_utilization", "plot_link_wavelets", "plot_run"]

PORTS = ("N", "E", "S", "W", "RAMP")
_PORT_MEANING = {"N": "north out", "E": "east out", "S": "south out", "W": "west out",
                 "RAMP": "to the PE"}
#: Fabrics up to this many PEs get their numbers written in the cells.
ANNOTATE_MAX_PES = 64


def _check(array, ndim, name):
    arr = np.asarray(array)
    if arr.ndim != ndim or 0 in arr.shape:
        raise ValueError(f"{name} must be a non-empty {ndim}-D array, got shape {arr.shape}")
    return arr


def _fabric_axes(ax, height, width):
    ax.set_xlabel("column x")
    ax.set_ylabel("row y (0 = north edge)")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=16, integer=True))


def _annotate(ax, values, fmt, vmax):
    height, width = values.shape
    if height * width > ANNOTATE_MAX_PES:
        return
    for y in range(height):
        for x in range(width):
            v = values[y, x]
            dark = vmax > 0 and v > 0.6 * vmax
            ax.text(x, y, fmt(v), ha="center", va="center", fontsize=8,
                    color="black" if dark else "white")


def _interpolation(height, width):
    """Nearest for fabrics that fit the pixels; antialiased when PEs outnumber pixels."""
    return "nearest" if height * width <= 256 * 256 else "antialiased"


def _short(v):
    v = float(v)
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:.0f}"


def plot_utilization(util, title, path, label="FMAC utilization (% of lane-cycles)"):
    """Heat map of FMAC utilization per PE, ``util[H, W]`` in 0..1; writes ``path`` (PNG).
    ``label``: the colour bar's (another per-PE fraction, e.g. the datapath's busy cycles)."""
    util = _check(util, 2, "util").astype(float)
    height, width = util.shape
    # Fixed layout (no constrained layout: it doubles the drawing time).
    fig = plt.figure(figsize=(7.5, 6.0))
    ax = fig.add_axes([0.11, 0.09, 0.70, 0.68])
    cax = fig.add_axes([0.84, 0.09, 0.03, 0.68])
    vmax = max(1e-9, float(np.nanmax(util)))
    image = ax.imshow(util * 100, cmap="viridis", vmin=0, vmax=vmax * 100,
                      interpolation=_interpolation(height, width), aspect="auto")
    fig.colorbar(image, cax=cax, label=label)
    _fabric_axes(ax, height, width)
    _annotate(ax, util * 100, lambda v: f"{v:.1f}", vmax * 100)
    mean = float(np.nanmean(util))
    fig.suptitle(f"{title}\nper PE: mean {mean:.1%}, min {np.nanmin(util):.1%}, "
                 f"max {vmax:.1%}", fontsize=9, y=0.985, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_link_wavelets(links, title, path):
    """Heat maps of wavelets per router output port, ``links[H, W, 5]`` (N, E, S, W, RAMP),
    one panel per port on a shared colour scale; writes ``path`` (PNG)."""
    links = _check(links, 3, "links")
    if links.shape[2] != len(PORTS):
        raise ValueError(f"links must be [H, W, {len(PORTS)}] (ports {', '.join(PORTS)}), "
                         f"got shape {links.shape}")
    links = links.astype(float)
    height, width = links.shape[:2]
    fig = plt.figure(figsize=(16.0, 4.2))
    left, right, gap = 0.05, 0.90, 0.012
    panel = (right - left - gap * (len(PORTS) - 1)) / len(PORTS)
    vmax = max(1.0, float(links.max()))
    for i, port in enumerate(PORTS):
        ax = fig.add_axes([left + i * (panel + gap), 0.13, panel, 0.62])
        image = ax.imshow(links[:, :, i], cmap="magma", vmin=0, vmax=vmax,
                          interpolation=_interpolation(height, width), aspect="auto")
        ax.set_title(f"{port} ({_PORT_MEANING[port]})\ntotal {_short(links[:, :, i].sum())}",
                     fontsize=9)
        ax.set_xlabel("column x")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        if i == 0:
            ax.set_ylabel("row y (0 = north edge)")
        else:
            ax.tick_params(labelleft=False)
        if height * width <= 16:
            _annotate(ax, links[:, :, i], _short, vmax)
    cax = fig.add_axes([0.925, 0.13, 0.012, 0.62])
    fig.colorbar(image, cax=cax, label="wavelets out of the port")
    fig.suptitle(title, fontsize=10, y=0.98, va="top")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_run(run, directory):
    """Both pictures for every fabric GEMM of a :class:`gpt_mapping.gpt.BlockRun`.

    Files: ``<i>_<gemm>_util.png`` and ``<i>_<gemm>_links.png`` in ``directory`` (created).
    Titles say whether the numbers are predicted (golden backend) or measured (RTL). For a
    measured run, also one picture per class of the other fabric operations
    (:data:`OP_CLASSES`): every PE's datapath busy cycles over the class's cycles,
    ``<n>_<class>_busy.png``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    width, height = run.fabric
    sparse = f", {run.sparsity:.0%} sparse" if run.sparsity else ""
    paths = []
    for i, rec in enumerate(run.gemms, start=1):
        g = rec.gemm
        stem = f"{i}_{rec.name.replace('.', '_')}"
        what = (f"{rec.name}: [{rec.in16.shape[0]}x{rec.layer['K']}] x "
                f"[{rec.layer['K']}x{rec.layer['N']}]{sparse}\non {width} x {height} PEs, "
                f"{g.cycles:,} cycles ({g.kind})")
        paths.append(plot_utilization(
            g.util, f"FMAC utilization per PE ({g.util_kind.upper()})\n{what}",
            directory / f"{stem}_util.png"))
        paths.append(plot_link_wavelets(
            g.links, f"Wavelets per link ({g.links_kind.upper()}): "
                     f"{what.replace(chr(10), ' ')}",
            directory / f"{stem}_links.png"))
    ops = [rec for rec in run.fabric_ops if rec.fabric_op.busy is not None]
    for j, (cls, match) in enumerate(OP_CLASSES.items(), start=len(run.gemms) + 1):
        recs = [rec for rec in ops if match(rec.name.rsplit(".", 1)[-1])]
        if not recs:
            continue
        busy = sum(np.asarray(rec.fabric_op.busy, dtype=float) for rec in recs)
        cycles = sum(rec.fabric_op.cycles for rec in recs)
        names = ", ".join(rec.name for rec in recs)
        paths.append(plot_utilization(
            busy / max(cycles, 1),
            f"Datapath busy per PE (MEASURED): {cls}{sparse}\n{names} on {width} x {height} "
            f"PEs, {cycles:,} cycles", directory / f"{j}_{cls.replace(' ', '_')}_busy.png",
            label="datapath busy (% of cycles)"))
    return paths


#: The classes of the non-GEMM fabric operations pictured by :func:`plot_run` (a test on
#: the last part of the operation's name: ``ln_1``, ``bias``, ``residual_2``, ``gelu``,
#: ``softmax``, ``av``).
OP_CLASSES = {
    "layernorm": lambda n: n.startswith("ln"),
    "bias adds": lambda n: n == "bias",
    "residual adds": lambda n: n.startswith("residual"),
    "gelu": lambda n: n == "gelu",
    "attention": lambda n: n in ("softmax", "av"),
}
