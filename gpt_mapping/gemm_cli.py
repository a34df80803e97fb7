"""``python -m gpt_mapping gemm``: map, run and report one GEMM Y = X W on the fabric.

    python -m gpt_mapping gemm --x X.npy --w W.npy --fabric 4x4 --out Y.npy \\
        --report report.json [--backend golden|rtl] [--trace TIMELINE.json]

Steps: load and validate X [T, K] and W [K, N] (float16 ``.npy``), map them
(:func:`gpt_mapping.layout.map_gemm`, which fails with a message naming what does not fit),
count the streamed weights, run a backend, write Y (float16 [T, N]) and a JSON report.

Backends:

* ``golden``: :func:`golden.gemm.fabric_gemm` computes Y; the cycles are *predicted* by
  :mod:`gpt_mapping.perf_model` (the report says so in ``cycles_source``).
* ``rtl`` (the default): ``gpt_mapping.fabric_run.run_gemm_rtl(mapping, x16, w16,
  progress) -> (y16, measured_counters)`` runs the Verilator fabric; ``measured_counters``
  is a dict with at least ``cycles`` (and ``fmac_lane_ops`` when the PEs count them);
  ``progress`` is a tqdm bar. Y is checked bit for bit against the golden model.

``--trace FILE`` (rtl only) also writes the run's timeline, a trace-event JSON file for the
Perfetto UI (docs/timeline.md): the host's phases and, per PE, its tasks, micro-threads and
control core. The golden backend runs no hardware: ``--trace`` with it is an error.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from golden.gemm import compare_to_torch, fabric_gemm, fabric_gemm_reference
from gpt_mapping.layout import MappingError, map_gemm, parse_fabric
from gpt_mapping.perf_model import predict
from gpt_mapping.streams import nonzero_counts
from gpt_mapping.traces import check_trace_backend

__all__ = ["main", "build_parser", "run_gemm"]

BACKENDS = ("golden", "rtl")
#: Cross-check the vectorised golden model with the PE-by-PE loop up to this many MACs.
REFERENCE_LOOP_MAX_MACS = 200_000


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m gpt_mapping gemm",
        description="Map Y = X W onto the fabric, run it and write Y and a JSON report.")
    parser.add_argument("--x", required=True, type=Path, help="X [T, K] float16 .npy")
    parser.add_argument("--w", required=True, type=Path, help="W [K, N] float16 .npy")
    parser.add_argument("--fabric", required=True, help="WIDTHxHEIGHT, e.g. 4x4")
    parser.add_argument("--out", required=True, type=Path, help="Y [T, N] float16 .npy")
    parser.add_argument("--report", required=True, type=Path, help="JSON report")
    parser.add_argument("--backend", choices=BACKENDS, default="rtl",
                        help="rtl (default): the Verilator fabric; golden: the golden model "
                             "with predicted cycles")
    parser.add_argument("--trace", type=Path, metavar="FILE",
                        help="rtl backend: also write the run's timeline (trace-event JSON "
                             "for https://ui.perfetto.dev, docs/timeline.md)")
    parser.add_argument("--groups", type=int, default=1, metavar="G",
                        help="column groups: G groups of W / G columns, each with its own "
                             "copy of X and 1 / G of the outputs (SPEC 7; default 1, the "
                             "plain layout; the bits depend on W / G)")
    parser.add_argument("--interleave", type=int, default=1, metavar="I",
                        help="interleave the weight streams of I outputs (1, 2, 4, 8; "
                             "docs/gemm.md section 9): the same bits, the FMA latency hidden "
                             "(default 1: the plain layout)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _load(path, name):
    if not path.is_file():
        raise MappingError(f"{name}: no such file {path}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise MappingError(f"{name}: {path} is not a plain .npy array ({exc})") from None


def run_gemm(x16, w16, width, height, backend="golden", progress=True, pe=None, params=None,
             trace=None, interleave=1, groups=1):
    """Validate, map and run Y = X W on ``backend``; return ``(y16, report)``.

    The report is a JSON-ready dict (see docs/gemm.md, "The report"). ``trace``: a file for
    the run's timeline (rtl only; docs/timeline.md). ``interleave``: the mapping's
    interleaved outputs (SPEC 7; the bits are the same for every value). ``groups``: its
    column groups (SPEC 7; the bits are those of the group width W / G).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    check_trace_backend(trace, backend)
    mapping = map_gemm(x16, w16, width, height, pe=pe)
    if interleave != 1 or groups != 1:
        mapping = dataclasses.replace(mapping, interleave=interleave, groups=groups)
    nonzero = nonzero_counts(mapping, w16)
    estimate = predict(mapping, nonzero, params)
    tokens = mapping.tokens

    start = time.perf_counter()
    if backend == "golden":
        with tqdm(total=tokens, unit="token", desc="golden GEMM", disable=not progress,
                  leave=False) as bar:
            y16 = fabric_gemm(x16, w16, width, height, groups=groups, progress=bar.update)
        wall = time.perf_counter() - start
        golden = y16
        counters = {}
        cycles, cycles_source = estimate.cycles, "predicted"
        lane_ops = estimate.fmac_lane_ops
    else:
        # Imported here: the RTL backend brings the Verilator tool chain with it.
        from gpt_mapping.fabric_run import run_gemm_rtl
        with tqdm(total=None, unit="cycle", desc="RTL fabric", disable=not progress,
                  leave=False) as bar:
            traced = {} if trace is None else {"trace": trace}
            y16, counters = run_gemm_rtl(mapping, x16, w16, bar, **traced)
        wall = time.perf_counter() - start
        golden = fabric_gemm(x16, w16, width, height, groups=groups)
        cycles, cycles_source = int(counters["cycles"]), "measured"
        lane_ops = int(counters.get("fmac_lane_ops", estimate.fmac_lane_ops))

    y16 = np.asarray(y16)
    if y16.dtype != np.float16 or y16.shape != (tokens, mapping.outputs):
        raise MappingError(f"backend {backend!r} returned Y {y16.dtype} {y16.shape}, expected "
                           f"float16 {(tokens, mapping.outputs)}")
    bit_exact = bool(np.array_equal(y16.view(np.uint16), golden.view(np.uint16)))
    reference_loop = None
    if x16.size * w16.shape[1] <= REFERENCE_LOOP_MAX_MACS:
        reference = fabric_gemm_reference(x16, w16, width, height, groups=groups)
        reference_loop = bool(np.array_equal(y16.view(np.uint16), reference.view(np.uint16)))
    torch_check = compare_to_torch(y16, x16, w16, mapping.group_width)

    report = {
        "backend": backend,
        "cycles": cycles,
        "cycles_source": cycles_source,
        "predicted_cycles": estimate.cycles,
        "fmac_utilization": lane_ops / (mapping.pe.lanes * mapping.num_pes * cycles)
        if cycles else 0.0,
        "predicted_fmac_utilization": estimate.fmac_utilization,
        "fmac_lane_ops": lane_ops,
        "nonzero_weights": int(nonzero.sum()),
        "weight_density": float(nonzero.sum() / w16.size),
        "nonzero_weights_per_column": nonzero.sum(axis=1).tolist(),
        "stream_wavelets": int(nonzero.sum()) + mapping.group_width * mapping.outputs,
        "bit_exact_vs_golden": bit_exact,
        "bit_exact_vs_reference_loop": reference_loop,
        "max_abs_error_vs_torch_fp32": torch_check.max_abs_error,
        "torch_fp32_check": torch_check.as_dict(),
        "fabric": {"width": width, "height": height},
        "shape": {"T": int(tokens), "K": int(mapping.features), "N": int(mapping.outputs)},
        "mapping": mapping.summary(),
        "performance_model": estimate.as_dict(),
        "measured_counters": _jsonable(counters),
        "wall_seconds": wall,
        "cycles_per_second": cycles / wall if wall > 0 else None,
    }
    if trace is not None:
        report["trace"] = str(trace)
    if backend == "golden":
        report["note"] = ("golden backend: Y from golden.gemm.fabric_gemm (bit_exact_vs_golden "
                          "is true by construction); cycles and utilization are predicted by "
                          "gpt_mapping.perf_model, not measured")
    return y16, report


def _jsonable(value):
    """Counters from a backend as JSON: numpy scalars and arrays become Python values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv=None):
    """Entry point; returns the process exit code (0 ok, 1 result check failed, 2 bad input)."""
    args = build_parser().parse_args(argv)
    try:
        width, height = parse_fabric(args.fabric)
        x16, w16 = _load(args.x, "X"), _load(args.w, "W")
        backend = args.backend
        check_trace_backend(args.trace, backend)
        print(f"backend: {backend}")
        y16, report = run_gemm(x16, w16, width, height, backend=backend,
                               progress=not args.no_progress, trace=args.trace,
                               interleave=args.interleave, groups=args.groups)
    except MappingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, y16)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    check = report["torch_fp32_check"]
    print(f"Y {tuple(y16.shape)} -> {args.out}; report -> {args.report}")
    if args.trace is not None:
        print(f"timeline -> {args.trace} (open it in https://ui.perfetto.dev)")
    print(f"cycles {report['cycles']} ({report['cycles_source']}), FMAC utilization "
          f"{report['fmac_utilization']:.3f}, non-zero weights {report['nonzero_weights']}, "
          f"bit exact vs golden {report['bit_exact_vs_golden']}, max |err| vs torch fp32 "
          f"{report['max_abs_error_vs_torch_fp32']:.3g} (within bound: {check['ok']})")
    if not report["bit_exact_vs_golden"] or report["bit_exact_vs_reference_loop"] is False \
            or not check["ok"]:
        print("error: the result does not match the golden model or the torch tolerance",
              file=sys.stderr)
        return 1
    return 0
