"""The report of a mapped GPT block run: one row per operation, totals, sparse speed-up.

:func:`build_report` turns a checked :class:`gpt_mapping.gpt.BlockRun` into a JSON-ready
dict; :func:`format_report` renders the same content as a text table. Every operation says
where it ran (fabric or host); fabric cycles, utilization and link counts say whether they
were measured (RTL counters) or predicted (perf model); bit-exactness names its reference.
"""

import json
import math

import numpy as np

from .gpt import TORCH_REL_TOL

__all__ = ["build_report", "format_report", "write_report", "speedup", "sparse_speedup"]

PRECISION = {
    "activations": "FP16 between every two operations (RNE); block input rounded once",
    "weights": "linear weights pruned (if sparse), then FP16 (RNE); W = weight.T",
    "fabric_gemm": "FP32 accumulation in SPEC 7 order, one rounding to FP16 per output",
    "fabric_ops": "LayerNorm, bias, residual, GELU: the PE operations of golden/fabric_ops.py "
                  "(FP32 arithmetic, each result rounded once; row sums in the fixed order "
                  "of docs/rowops.md; rsqrt and GELU the kernels of docs/nonlinear.md)",
    "host_ops": "attention (softmax, P V): float32 numpy in a fixed order (sums in index "
                "order, no fused multiply-add), one rounding to FP16 per operation; exp in "
                "float64 rounded to float32",
    "biases_and_layernorm": "FP16 (RNE from the float32 parameters), streamed to the fabric "
                            "with their layer and applied there",
    "torch_reference": "torch float32 block with the same (pruned) weights on the same FP16 "
                       "input; errors accumulate along the pipeline",
}


def _num(value):
    """JSON-safe float (NaN/inf as strings)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else str(value)


def _op_row(rec, lanes_pes):
    row = {
        "name": rec.name,
        "where": rec.where,
        "what": rec.spec.what,
        "shape": list(rec.out16.shape),
        "flops": int(rec.flops),
        "dense_flops": int(rec.dense_flops),
        "fabric_cycles": None,
        "cycles_kind": None,
        "fmac_utilization": None,
        "utilization": None,
        "bit_exact": rec.bit_exact,
        "bit_exact_vs": rec.bit_exact_vs,
        "max_abs_err_vs_torch": _num(rec.max_abs_err),
        "rel_err_vs_torch": _num(rec.rel_err),
        "within_tolerance": rec.within_tolerance,
        "wall_seconds": round(rec.seconds, 6),
    }
    if rec.gemm is not None:
        g = rec.gemm
        row.update({
            "fabric_cycles": int(g.cycles),
            "cycles_kind": g.kind,
            "fmac_utilization": _num(g.fmac_lane_ops / (lanes_pes * g.cycles) if g.cycles else 0),
            "utilization": _num(g.fmac_lane_ops / (lanes_pes * g.cycles) if g.cycles else 0),
            "gemm": {
                **rec.layer,
                "input_shape": list(rec.in16.shape),
                "fmac_lane_ops": int(g.fmac_lane_ops),
                "predicted_cycles": (int(g.details["predicted_cycles"])
                                     if "predicted_cycles" in g.details else None),
                "wavelets_per_port": dict(zip(("N", "E", "S", "W", "RAMP"),
                                              (int(v) for v in g.links.sum(axis=(0, 1))))),
                "util_min_max": [_num(g.util.min()), _num(g.util.max())],
                "util_kind": g.util_kind,
                "links_kind": g.links_kind,
                "torch_gemm_check": rec.torch_gemm_check,
                "redistribute": _redistribute(g),
                "mapping": rec.mapping,
                "residency": rec.residency,
                "backend_details": g.details,
            },
        })
    elif rec.fabric_op is not None:
        f = rec.fabric_op
        row.update({
            "fabric_cycles": int(f.cycles),
            "cycles_kind": f.kind,
            "utilization": _num(f.busy_fraction()),
            "fabric_op": {
                "predicted_cycles": int(f.predicted_cycles),
                "busy_fraction": _num(f.busy_fraction()),
                "mapping": rec.mapping,
                "backend_details": f.details,
            },
        })
    elif rec.mapping:
        row["mapping"] = rec.mapping          # a host operation: why it is not on the fabric
    return row


def speedup(dense_cycles, sparse_cycles):
    """Dense over sparse fabric cycles (None when either is missing or zero)."""
    if not dense_cycles or not sparse_cycles:
        return None
    return dense_cycles / sparse_cycles


def _redistribute(gemm):
    """The cycles of moving the GEMM's X into its column groups, counted in its cycles
    (gpt_mapping/redistribute.py): ``{"cycles", "predicted_cycles", "kind"}``, or None for
    a plain layout."""
    moves = (gemm.details.get("counters") or {}).get("redistribute")
    if moves is not None:
        return {"cycles": int(moves["cycles"]),
                "predicted_cycles": int(moves["predicted_cycles"]), "kind": "measured"}
    predicted = gemm.details.get("redistribute_cycles")
    if predicted:
        return {"cycles": int(predicted), "predicted_cycles": int(predicted),
                "kind": "predicted"}
    return None


def _predicted_cycles(gemm):
    """The perf model's cycles of one GEMM of a run (its own cycles on the golden backend,
    the prediction carried next to the counters on the RTL), or None."""
    if gemm.kind == "predicted":
        return int(gemm.cycles)
    value = gemm.details.get("predicted_cycles")
    return None if value is None else int(value)


def sparse_speedup(run, dense):
    """The ``sparse_speedup`` entry of a sparse run's report: dense over sparse fabric cycles,
    both of the same kind.

    ``dense`` is the dense :class:`BlockRun` or ``{gemm name: predicted cycles}``. When the
    dense run and this run have cycles of one kind (both measured on the RTL, or both
    predicted), those are divided (``basis`` = their kind). Otherwise, a measured sparse run
    against a predicted dense figure, the speed-up is the model's: predicted dense over the
    perf model's prediction for this sparse run (``basis`` = ``"predicted"``), and the
    measured sparse cycles are given beside it, never divided by a predicted figure.
    """
    gemms = run.gemms
    if hasattr(dense, "gemms"):
        dense_cycles = {rec.name: int(rec.gemm.cycles) for rec in dense.gemms}
        dense_kind = dense.kind
        dense_predicted = {rec.name: _predicted_cycles(rec.gemm) for rec in dense.gemms}
    else:
        dense_cycles = {name: int(v) for name, v in dict(dense).items()}
        dense_kind = "predicted"
        dense_predicted = dense_cycles
    if dense_kind == run.kind:
        basis = run.kind
        sparse_cycles = {rec.name: int(rec.gemm.cycles) for rec in gemms}
    else:
        basis = "predicted"
        dense_cycles = dense_predicted
        sparse_cycles = {rec.name: _predicted_cycles(rec.gemm) for rec in gemms}
    names = [rec.name for rec in gemms]
    complete = all(dense_cycles.get(n) is not None and sparse_cycles.get(n) is not None
                   for n in names)
    dense_total = sum(dense_cycles[n] for n in names) if complete else None
    sparse_total = sum(sparse_cycles[n] for n in names) if complete else None
    entry = {
        "basis": basis,
        "dense_fabric_cycles": dense_total,
        "dense_cycles_kind": basis,
        "sparse_fabric_cycles": sparse_total,
        "sparse_cycles_kind": basis,
        "speedup": _num(speedup(dense_total, sparse_total)),
        "per_gemm": {n: _num(speedup(dense_cycles.get(n), sparse_cycles.get(n)))
                     for n in names},
        "note": "fabric GEMM cycles only; host operations are not timed in cycles",
    }
    if basis != run.kind:
        entry["sparse_measured_fabric_cycles"] = int(sum(rec.gemm.cycles for rec in gemms))
        entry["note"] += ("; no measured dense run: the speed-up is the perf model's "
                          "(predicted dense / predicted sparse), the measured sparse cycles "
                          "are given beside it")
    return entry


def build_report(run, dense=None, plots=()):
    """The JSON-ready report of a checked run.

    ``dense`` gives the sparse speed-up of a sparse run: either the dense :class:`BlockRun`
    or ``{gemm name: predicted cycles}`` of the dense weights
    (:func:`gpt_mapping.gpt.predict_block_cycles`). The two sides of the ratio are always of
    one kind (:func:`sparse_speedup`): measured over measured when both runs were measured,
    else the perf model's prediction for both. ``plots`` lists the picture files.
    """
    cfg = run.config
    width, height = run.fabric
    gemms = run.gemms
    lanes_pes = run.lanes * width * height
    rows = [_op_row(rec, lanes_pes) for rec in run.ops]
    gemm_cycles = sum(rec.gemm.cycles for rec in gemms)
    other_cycles = sum(rec.fabric_op.cycles for rec in run.fabric_ops)
    cycles = gemm_cycles + other_cycles
    lane_ops = sum(rec.gemm.fmac_lane_ops for rec in gemms)
    exact = [rec.bit_exact for rec in run.ops if rec.bit_exact is not None]
    out = run.ops[-1]
    report = {
        "config": cfg.as_dict(),
        "tokens": cfg.tokens,
        "fabric": {"width": width, "height": height, "pes": width * height},
        "backend": run.backend,
        "cycles_kind": run.kind,
        "sparsity": run.sparsity,
        "precision": PRECISION,
        "where": {
            "fabric": [rec.name for rec in run.ops if rec.where == "fabric"],
            "host": [rec.name for rec in run.ops if rec.where == "host"],
        },
        "operations": rows,
        "totals": {
            "flops": int(sum(rec.flops for rec in run.ops)),
            "fabric_flops": int(sum(rec.flops for rec in run.ops if rec.where == "fabric")),
            "host_flops": int(sum(rec.flops for rec in run.ops if rec.where == "host")),
            "fabric_cycles": int(cycles),
            "gemm_cycles": int(gemm_cycles),
            "non_gemm_cycles": int(other_cycles),
            "non_gemm_share": _num(other_cycles / cycles if cycles else 0),
            "cycles_kind": run.kind,
            "fabric_fmac_utilization": _num(lane_ops / (lanes_pes * cycles) if cycles else 0),
            "gemm_fmac_utilization": _num(lane_ops / (lanes_pes * gemm_cycles)
                                          if gemm_cycles else 0),
            "bit_exact_checked": len(exact),
            "bit_exact_all": all(exact) if exact else None,
            "bit_exact_vs": sorted({rec.bit_exact_vs for rec in run.ops if rec.bit_exact_vs}),
            "gemms_within_torch_bound": all(rec.torch_gemm_check["ok"] for rec in gemms)
            if all(rec.torch_gemm_check for rec in gemms) else None,
            "torch_rel_tolerance": TORCH_REL_TOL,
            "all_within_tolerance": all(rec.within_tolerance for rec in run.ops)
            if all(rec.within_tolerance is not None for rec in run.ops) else None,
            "output_max_abs_err_vs_torch": _num(out.max_abs_err),
            "output_rel_err_vs_torch": _num(out.rel_err),
            "activations_stay_on_fabric": [rec.name for rec in gemms
                                           if rec.residency["stays_on_fabric"]],
            "wall_seconds": round(run.seconds, 4),
        },
        "sparse_speedup": None,
        "fabric_program": _program(run.program),
        "plots": [str(p) for p in plots],
    }
    if dense is not None:
        report["sparse_speedup"] = sparse_speedup(run, dense)
    return report


def _program(program):
    """How the fabric ran the block (:attr:`gpt_mapping.gpt.BlockRun.program`), JSON-ready."""
    if program is None:
        return None
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in program.items()}


def _program_line(program):
    if not program:
        return None
    if not program.get("one_program"):
        return f"fabric program: one fabric run per operation ({program.get('why')})"
    return (f"fabric program: one for the {program.get('scope', 'block')}, activations "
            f"resident from input to output; "
            f"configuration path: input load {program['load']:,} cycles (with the routes and "
            f"the first operation's program), the other operations' programs "
            f"{program['programs']:,}, output readback {program['readback']:,}; verification "
            f"reads of every operation's output {program['verification']:,} (not part of "
            f"the block); compute {program['compute']:,}")


def _fmt_count(value):
    if value is None:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return str(int(value))


def _fmt_err(value):
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return f"{value:.2e}"


def format_report(report):
    """The report as a text table a person reads in a terminal."""
    cfg, fab = report["config"], report["fabric"]
    model = report.get("model")
    what = "GPT block" if not model else (
        f"GPT model n_layer={model['n_layer']} vocab={model['vocab']} "
        f"block_size={model['block_size']},")
    lines = [
        f"{what} n_embd={cfg['n_embd']} n_head={cfg['n_head']} n_ctx={cfg['n_ctx']} "
        f"batch={cfg['batch']} (T={report['tokens']} tokens), GELU {cfg['gelu']}, "
        f"sparsity {report['sparsity']:.0%}",
        f"fabric {fab['width']} x {fab['height']} PEs, backend {report['backend']} "
        f"(fabric cycles {report['cycles_kind']})",
        "",
    ]
    nw = max([18] + [len(row["name"]) for row in report["operations"]])
    header = (f"{'operation':<{nw}} {'where':<6} {'shape':<16} {'FLOPs':>7} {'cycles':>12} "
              f"{'util':>6} {'bit-exact':<10} {'max|err|':>9} {'rel err':>9}")
    lines += [header, "-" * len(header)]
    for row in report["operations"]:
        cycles = "-"
        if row["fabric_cycles"] is not None:
            cycles = f"{row['fabric_cycles']:,}{'p' if row['cycles_kind'] == 'predicted' else 'm'}"
        util = row["utilization"]
        util = "-" if not isinstance(util, float) else f"{util:.1%}"
        exact = {True: "yes", False: "NO", None: "ref"}[row["bit_exact"]]
        if row["bit_exact"] is None and row["where"] == "fabric" \
                and row["bit_exact_vs"] != "is the golden model":
            exact = "unchecked"
        shape = "x".join(str(s) for s in row["shape"])
        lines.append(f"{row['name']:<{nw}} {row['where']:<6} {shape:<16} "
                     f"{_fmt_count(row['flops']):>7} {cycles:>12} {util:>6} {exact:<10} "
                     f"{_fmt_err(row['max_abs_err_vs_torch']):>9} "
                     f"{_fmt_err(row['rel_err_vs_torch']):>9}")
    tot = report["totals"]
    util = tot["fabric_fmac_utilization"]
    util = f"{util:.1%}" if isinstance(util, float) else str(util)
    kind = "p" if tot["cycles_kind"] == "predicted" else "m"
    lines += [
        "-" * len(header),
        f"{'total':<{nw}} {'':<6} {'':<16} {_fmt_count(tot['flops']):>7} "
        f"{tot['fabric_cycles']:>11,}{kind} {util:>6}",
        "",
        f"cycles: p = predicted by the perf model, m = measured on the RTL. "
        f"bit-exact vs: {'; '.join(tot['bit_exact_vs'])} (ref = the operation is the "
        f"golden model itself).",
        f"on the fabric: {', '.join(report['where']['fabric'])}",
        f"on the host (golden model, numpy): {', '.join(report['where']['host']) or 'none'}",
        f"util: FMAC lane utilization for the GEMMs, datapath busy fraction for the other "
        f"fabric operations (measured runs); non-GEMM fabric operations: "
        f"{tot['non_gemm_cycles']:,} of {tot['fabric_cycles']:,} cycles "
        f"({tot['non_gemm_share']:.1%})",
        "biases and LayerNorm parameters: FP16, streamed with their layer, applied on the "
        "fabric",
    ]
    line = _program_line(report.get("fabric_program"))
    if line:
        lines.append(line)
    why = sorted({row["mapping"]["on_host_because"] for row in report["operations"]
                  if isinstance(row.get("mapping"), dict)
                  and "on_host_because" in row["mapping"]})
    for reason in why:
        lines.append(f"attention on the host because: {reason}")
    layouts = []
    for row in report["operations"]:
        gemm = row.get("gemm")
        if not isinstance(gemm, dict) or "mapping" not in gemm:
            continue
        text = (f"{row['name']} G {gemm['mapping'].get('groups', 1)} "
                f"I {gemm['mapping'].get('interleave', 1)}")
        moves = gemm.get("redistribute")
        if moves:
            text += (f" (X moved into the groups in {moves['cycles']:,}"
                     f"{'m' if moves['kind'] == 'measured' else 'p'} cycles, predicted "
                     f"{moves['predicted_cycles']:,})")
        layouts.append(text)
    if layouts:
        lines.append("GEMM layouts, column groups G and outputs interleaved I (chosen by the "
                     "perf model counting the moves, docs/gemm.md sections 9, 10 and 12; "
                     "G > 1: the fabric first copies X into the groups, and the GEMM's "
                     "cycles include that copy): " + ", ".join(layouts))
    stay = tot["activations_stay_on_fabric"]
    lines.append("activations between operations: " + (
        f"stay on the fabric for {', '.join(stay)}" if stay else
        "read back to the host after every operation (one fabric run per operation; the "
        + ("layout would keep them in place from one operation to the next)"
           if not any(n.endswith(("attn.softmax", "attn.av")) for n in report["where"]["host"])
           else "layout would keep them in place except around the attention's host "
                "operations)")))
    verdict = {True: "pass", False: "FAIL", None: "none made"}
    lines.append(f"{'block output' if not model else 'logits'} vs torch float32: max |err| "
                 f"{_fmt_err(tot['output_max_abs_err_vs_torch'])}, relative "
                 f"{_fmt_err(tot['output_rel_err_vs_torch'])} (rel err = max|err| / max|torch|"
                 f"; tolerance {tot['torch_rel_tolerance']:g} for every operation: "
                 f"{verdict[tot['all_within_tolerance']]}); GEMMs alone within the golden.gemm "
                 f"error bound: {verdict[tot['gemms_within_torch_bound']]}; bit-exact checks: "
                 f"{verdict[tot['bit_exact_all']]}")
    sp = report.get("sparse_speedup")
    if sp and sp["speedup"] is not None:
        line = (f"sparse speed-up (fabric GEMM cycles, {sp['basis']}): {sp['speedup']:.2f}x = dense "
                f"{sp['dense_fabric_cycles']:,} ({sp['dense_cycles_kind']}) / sparse "
                f"{sp['sparse_fabric_cycles']:,} ({sp['sparse_cycles_kind']})")
        if "sparse_measured_fabric_cycles" in sp:
            line += (f"; perf model's figure, measured sparse "
                     f"{sp['sparse_measured_fabric_cycles']:,} (no measured dense run)")
        lines.append(line)
    gen = report.get("generated")
    if gen:
        lines.append(f"greedy generation ({gen['steps']} tokens, {gen['backend']}; the whole "
                     f"prefix re-run for each): {gen['tokens']}; torch float32: "
                     f"{gen['torch_tokens']} ({'same' if gen['matches_torch'] else 'DIFFERENT'})")
    if report["plots"]:
        lines.append(f"plots: {len(report['plots'])} PNG files in "
                     f"{_common_dir(report['plots'])}")
    return "\n".join(lines)


def _common_dir(paths):
    import os
    return os.path.dirname(os.path.commonprefix([str(p) for p in paths])) or "."


def write_report(report, path):
    """Write the report as JSON (indent 2)."""
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(report, fh, indent=2, default=_json_default)
        fh.write("\n")


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return _num(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to the JSON report")
