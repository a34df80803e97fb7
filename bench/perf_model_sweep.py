"""Accuracy of the performance model against the RTL fabric (figures in docs/gemm.md section 6).

    python bench/perf_model_sweep.py                          # the calibration set
    python bench/perf_model_sweep.py --set calib --set grid2 --json sweep.json
    python bench/perf_model_sweep.py --set grid4 --match /s0.9/  # only the 90 % sparse ones
    python bench/perf_model_sweep.py --set all --list         # the cases, nothing simulated

Every GEMM of the chosen sets runs on the Verilator fabric
(:func:`gpt_mapping.fabric_run.run_gemm_rtl`, by default on the north-west corner of the
4 x 5 build, as the calibration was measured) and is predicted by
:func:`gpt_mapping.perf_model.predict` from its mapping and non-zero weight counts. Printed per
GEMM: shape, fabric, sparsity, tokens per PE (T_y of the critical row), measured and predicted
cycles and the error (predicted - measured) / measured; per set: how many GEMMs, how many
within 10 %, the range and the worst error and the mean absolute error.

The sets (:data:`CASE_SETS`):

- ``calib``: docs/fabric.md's calibration GEMMs (12, seeds 0 and 1);
- ``grid1``, ``grid2``, ``grid4``: the small-T_y sweep on 1 x 1, 2 x 2 and 4 x 4 (54 each):
  T_y in {1, 2, 3, 4, 5, 8} tokens per PE, K_x in {2, 8, 24} features per column (N = 16,
  16, 12), dense, 50 % and 90 % zero weights, seed 1;
- ``gpt_test``, ``gpt_demo``: the four linear layers of the GPT block of
  ``tests/test_gpt_rtl.py`` (n_embd 16, 2 x 2) and of ``python -m gpt_mapping.demo gpt``
  (n_embd 64, 4 x 4), dense and 90 % sparse (8 each; X is random, only W's zeros matter to
  the timing);
- ``postfreeze``: 64 GEMMs drawn by a seeded generator (:func:`postfreeze_cases`) after the
  model was frozen (:data:`FROZEN_MODEL_SHA256`): fabrics up to 8 x 8, T, K, N, column
  groups, interleave and sparsity at random; run it with ``--build own``;
- ``postfreeze1``: round 1 of it (another seed, drawn after the first freeze, whose
  findings changed which interleaves the mapper takes);
- ``all``: all of them (~250 GEMMs).

Accuracy is reported, not asserted (``tests/test_perf_model.py`` holds the thresholds): the
exit status is 1 only if a run failed (Y not bit exact against the golden model, or the fabric
stalled or reported an error), 2 for bad arguments.
"""

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpt_mapping.demo import make_gemm_operands  # noqa: E402
from gpt_mapping.layout import GemmMapping, map_gemm, parse_fabric  # noqa: E402
from gpt_mapping.perf_model import interleave_validated, predict  # noqa: E402
from gpt_mapping.streams import nonzero_counts  # noqa: E402

#: The build the calibration figures were measured on; every case fits in its corner.
DEFAULT_BUILD = (4, 5)

#: |error| at or below this counts as "within" in the summaries.
GOOD_ERROR = 0.10


@dataclass(frozen=True, eq=False)
class SweepCase:
    """One GEMM of a set: its operands and the fabric it is mapped on."""

    set_name: str
    name: str
    x16: np.ndarray = field(repr=False)
    w16: np.ndarray = field(repr=False)
    width: int
    height: int
    sparsity: float
    seed: int
    groups: int = 1
    interleave: int = 1

    @property
    def shape(self):
        """(T, K, N)."""
        return self.x16.shape[0], self.x16.shape[1], self.w16.shape[1]

    def mapping(self):
        """The :class:`GemmMapping` of this GEMM on its ``width`` x ``height`` fabric."""
        m = map_gemm(self.x16, self.w16, self.width, self.height)
        if self.groups != 1 or self.interleave != 1:
            m = dataclasses.replace(m, groups=self.groups, interleave=self.interleave)
        return m


def _gemm_case(set_name, tokens, features, outputs, fabric, sparsity, seed):
    x16, w16 = make_gemm_operands(tokens, features, outputs, sparsity, seed)
    width, height = fabric
    name = (f"{set_name}/{tokens}x{features}x{outputs}@{width}x{height}"
            f"/s{sparsity}/seed{seed}")
    return SweepCase(set_name, name, x16, w16, width, height, sparsity, seed)


#: docs/fabric.md's calibration GEMMs: ((T, K, N), (W, H), sparsity, seed).
CALIBRATION_GEMMS = [
    ((64, 512, 64), (4, 4), 0.0, 0), ((64, 512, 64), (4, 4), 0.9, 0),
    ((64, 128, 32), (4, 4), 0.0, 1), ((64, 128, 32), (4, 4), 0.9, 1),
    ((16, 64, 16), (1, 1), 0.0, 1), ((16, 64, 16), (1, 1), 0.8, 1),
    ((13, 37, 29), (3, 5), 0.3, 1), ((64, 16, 32), (4, 4), 0.0, 1),
    ((32, 96, 24), (3, 2), 0.5, 1), ((20, 200, 8), (4, 1), 0.0, 1),
    ((8, 64, 16), (4, 2), 0.0, 1), ((4, 3, 2), (1, 1), 0.0, 1),
]

#: The small-T_y sweep: tokens per PE, (features per column, outputs), fractions of zeros.
SWEEP_TOKENS_PER_PE = (1, 2, 3, 4, 5, 8)
SWEEP_FEATURES_PER_COLUMN = ((2, 16), (8, 16), (24, 12))
SWEEP_SPARSITIES = (0.0, 0.5, 0.9)
SWEEP_SEED = 1


def calibration_cases():
    """docs/fabric.md's calibration GEMMs (12)."""
    return [_gemm_case("calib", *shape, fabric, sparsity, seed)
            for shape, fabric, sparsity, seed in CALIBRATION_GEMMS]


def small_t_y_cases(set_name, width, height):
    """The small-T_y sweep on a ``width`` x ``height`` fabric (54 GEMMs): T = T_y * H,
    K = K_x * W."""
    return [_gemm_case(set_name, t_y * height, k_x * width, outputs, (width, height),
                       sparsity, SWEEP_SEED)
            for t_y in SWEEP_TOKENS_PER_PE
            for k_x, outputs in SWEEP_FEATURES_PER_COLUMN
            for sparsity in SWEEP_SPARSITIES]


def gpt_block_cases(set_name, n_embd, n_head, n_ctx, batch, fabric, seed=0):
    """The four linear layers of a seeded GPT block, dense and 90 % sparse (8 GEMMs).

    X is random float16 of the layer's input shape: the timing depends only on the shapes and
    on which weights are zero.
    """
    from gpt_mapping import gpt
    from gpt_mapping.model import GPTConfig, init_block
    config = GPTConfig(n_embd=n_embd, n_head=n_head, n_ctx=n_ctx, batch=batch)
    width, height = fabric
    cases = []
    for sparsity in (0.0, 0.9):
        mapped = gpt.map_block(init_block(config, seed), sparsity)
        rng = np.random.default_rng(seed)
        for layer_name, layer in mapped.linears.items():
            w16 = layer.w16
            x16 = rng.standard_normal((config.tokens, w16.shape[0])).astype(np.float16)
            name = f"{set_name}/{layer_name}@{width}x{height}/s{sparsity}/seed{seed}"
            cases.append(SweepCase(set_name, name, x16, w16, width, height, sparsity, seed))
    return cases


#: sha256 of gpt_mapping/perf_model.py when the model was frozen (docs/gemm.md section 11):
#: the post-freeze set was drawn after it; the bench says when the model is no longer it.
#: Round 1 (set ``postfreeze1``) found the model off by up to +67 % on interleaves of one
#: group of buffers, which the mapper then stopped choosing (perf_model.interleave_validated):
#: the model was frozen again and round 2 (``postfreeze``) drawn with a new seed.
FROZEN_MODEL_SHA256 = "98da615320e4bf7a0682ba990a892dbffafa37ccd2a8f3a748eaddcf4a306b18"
FROZEN_MODEL_SHA256_ROUND1 = "82fcebc2e9d43e7255f529490b2b9366a84d62a3264494310286f9599c2e3312"
#: The post-freeze generator: its seeds (round 2, round 1), size and fabrics (one build each).
POSTFREEZE_SEED = 20261204
POSTFREEZE_SEED_ROUND1 = 20261203
POSTFREEZE_COUNT = 64
POSTFREEZE_FABRICS = ((2, 2), (4, 4), (8, 8), (8, 2), (2, 8), (4, 2), (6, 3), (8, 4),
                      (3, 5), (1, 4))
POSTFREEZE_SPARSITIES = (0.0, 0.0, 0.5, 0.75, 0.9, 0.95)
#: Predicted cycles above this are drawn again (the set must run in minutes).
POSTFREEZE_MAX_CYCLES = 8000


def model_sha256():
    """sha256 of the performance model's source as it is now."""
    from gpt_mapping import perf_model
    return hashlib.sha256(Path(perf_model.__file__).read_bytes()).hexdigest()


def postfreeze_cases(count=POSTFREEZE_COUNT, seed=POSTFREEZE_SEED, round1=False):
    """``count`` GEMMs from a seeded generator: a fabric of :data:`POSTFREEZE_FABRICS`,
    2..16 tokens per PE (rows uneven), column groups a random divisor of the width, 2..48
    features per column of a group, 4..48 outputs, an interleave of 1, 2 or 4 among those
    the mapper may choose (whole groups hiding the FMA latency), a fraction of zeros of
    :data:`POSTFREEZE_SPARSITIES`; drawn again when the mapping does not fit or the
    prediction is above :data:`POSTFREEZE_MAX_CYCLES`."""
    from gpt_mapping.layout import MappingError
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        width, height = POSTFREEZE_FABRICS[rng.integers(len(POSTFREEZE_FABRICS))]
        tokens = int(rng.integers(2 * height, 16 * height + 1))
        outputs = int(rng.integers(4, 49))
        groups = int(rng.choice([g for g in range(1, width + 1)
                                 if width % g == 0 and g <= outputs]))
        features = int(rng.integers(2, 49)) * (width // groups)
        sparsity = float(rng.choice(POSTFREEZE_SPARSITIES))
        interleave = int(rng.choice((1, 2, 4)))
        case_seed = int(rng.integers(1 << 30))
        t_pad = -(-(-(-tokens // height)) // 4) * 4
        if round1 and interleave > 1 and interleave * (t_pad // 4) < 4:
            interleave = 1
        set_name = "postfreeze1" if round1 else "postfreeze"
        case = _gemm_case(set_name, tokens, features, outputs, (width, height),
                          sparsity, case_seed)
        case = dataclasses.replace(
            case, groups=groups, interleave=interleave,
            name=f"{case.name}/G{groups}/I{interleave}")
        try:
            mapping = case.mapping()
        except MappingError:
            continue
        if not round1 and not interleave_validated(mapping, interleave):
            case = dataclasses.replace(case, interleave=1,
                                       name=case.name.replace(f"/I{interleave}", "/I1"))
            mapping = case.mapping()
        if predict(mapping, nonzero_counts(mapping, case.w16)).cycles > POSTFREEZE_MAX_CYCLES:
            continue
        cases.append(case)
    return cases


#: Set name -> (what it is, a function returning its cases).
CASE_SETS = {
    "calib": ("docs/fabric.md's calibration GEMMs", calibration_cases),
    "grid1": ("small-T_y sweep on 1 x 1", lambda: small_t_y_cases("grid1", 1, 1)),
    "grid2": ("small-T_y sweep on 2 x 2", lambda: small_t_y_cases("grid2", 2, 2)),
    "grid4": ("small-T_y sweep on 4 x 4", lambda: small_t_y_cases("grid4", 4, 4)),
    "gpt_test": ("GPT block of tests/test_gpt_rtl.py, 2 x 2",
                 lambda: gpt_block_cases("gpt_test", 16, 2, 4, 2, (2, 2))),
    "gpt_demo": ("GPT block of the demo, 4 x 4",
                 lambda: gpt_block_cases("gpt_demo", 64, 4, 16, 2, (4, 4))),
    "postfreeze": ("seeded GEMMs drawn after the model was frozen, up to 8 x 8 (round 2)",
                   postfreeze_cases),
    "postfreeze1": ("round 1 of the post-freeze set (the model of its freeze, "
                    "FROZEN_MODEL_SHA256_ROUND1)",
                    lambda: postfreeze_cases(seed=POSTFREEZE_SEED_ROUND1, round1=True)),
}


def list_cases(set_name):
    """The cases of one of :data:`CASE_SETS`, in the order they run."""
    if set_name not in CASE_SETS:
        raise ValueError(f"unknown case set {set_name!r}; the sets are "
                         f"{', '.join(CASE_SETS)} and 'all'")
    return CASE_SETS[set_name][1]()


def tokens_per_pe(mapping: GemmMapping):
    """T_y of the critical row (the most tokens of any row)."""
    return int(mapping.tokens_per_row.max())


def run_case(case, build=None):
    """Run one case on the RTL fabric and predict it; a dict of its figures.

    ``build``: (width, height) of the fabric build, the case on its north-west corner
    (default: the case's own fabric). A run that stalls or reports an error is returned with
    ``ok`` False and the reason in ``error``, not raised.
    """
    from golden.gemm import fabric_gemm
    from gpt_mapping.fabric_run import run_gemm_rtl
    from runtime.fabric_host import FabricRunError

    mapping = case.mapping()
    nonzero = nonzero_counts(mapping, case.w16)
    predicted = predict(mapping, nonzero).cycles
    t, k, n = case.shape
    record = {
        "set": case.set_name, "name": case.name, "shape": [t, k, n],
        "fabric": [case.width, case.height],
        "build": list(build or (case.width, case.height)),
        "sparsity": case.sparsity, "seed": case.seed,
        "groups": case.groups, "interleave": case.interleave,
        "tokens_per_pe": tokens_per_pe(mapping),
        "nonzero_weights": int(nonzero.sum()),
        "predicted_cycles": int(predicted),
    }
    start = time.perf_counter()
    try:
        y16, counters = run_gemm_rtl(mapping, case.x16, case.w16, fabric=build)
    except FabricRunError as error:
        record.update(ok=False, error=f"{type(error).__name__}: {error}",
                      wall_seconds=time.perf_counter() - start)
        return record
    golden = fabric_gemm(case.x16, case.w16, case.width, case.height, groups=case.groups)
    bit_exact = bool(np.array_equal(y16.view(np.uint16), golden.view(np.uint16)))
    cycles = int(counters["cycles"])
    record.update(
        ok=bit_exact, error=None if bit_exact else "Y not bit exact against golden.gemm",
        cycles=cycles, model_error=(predicted - cycles) / cycles,
        wall_seconds=time.perf_counter() - start)
    return record


def summarize(records):
    """Per-set accuracy of the model over the records that ran: a dict."""
    ran = [r for r in records if "model_error" in r]
    errors = np.array([r["model_error"] for r in ran])
    summary = {"count": len(records), "failed": sum(not r["ok"] for r in records)}
    if len(ran):
        worst = int(np.argmax(np.abs(errors)))
        summary.update(
            measured=len(ran),
            within_10_percent=int((np.abs(errors) <= GOOD_ERROR).sum()),
            min_error=float(errors.min()), max_error=float(errors.max()),
            worst_error=float(errors[worst]), worst_case=ran[worst]["name"],
            mean_abs_error=float(np.abs(errors).mean()))
    return summary


def format_case(record):
    """One line of the per-case table."""
    t, k, n = record["shape"]
    w, h = record["fabric"]
    layout = f"{record.get('groups', 1)}/{record.get('interleave', 1)}"
    head = (f"{record['set']:8s} {f'{t}x{k}x{n}':>11s} {f'{w}x{h}':>4s} {layout:>4s} "
            f"{100 * record['sparsity']:3.0f} % {record['tokens_per_pe']:4d}")
    if "cycles" not in record:
        return f"{head} {'-':>8s} {record['predicted_cycles']:9d}        FAILED: {record['error']}"
    line = (f"{head} {record['cycles']:8d} {record['predicted_cycles']:9d} "
            f"{100 * record['model_error']:+6.1f} %")
    return line if record["ok"] else f"{line}  FAILED: {record['error']}"


CASE_HEADER = (f"{'set':8s} {'T x K x N':>11s} {'WxH':>4s} {'G/I':>4s} zeros {'T_y':>4s} {'measured':>8s} "
               f"{'predicted':>9s}  error")


def format_summary(set_name, summary):
    """One line of the per-set summary."""
    if "measured" not in summary:
        return f"{set_name:8s} {summary['count']:3d} GEMMs, all failed"
    failed = f", {summary['failed']} FAILED" if summary["failed"] else ""
    return (f"{set_name:8s} {summary['count']:3d} GEMMs: {summary['within_10_percent']:3d} "
            f"within 10 %, error {100 * summary['min_error']:+.1f} .. "
            f"{100 * summary['max_error']:+.1f} %, worst {100 * summary['worst_error']:+.1f} %"
            f" ({summary['worst_case']}), mean |error| "
            f"{100 * summary['mean_abs_error']:.1f} %{failed}")


def parse_build(text):
    """``--build``: "WxH", or "own" for each GEMM's own fabric size (None)."""
    return None if text == "own" else parse_fabric(text)


def main(argv=None):
    """Run the sets; the exit status (0, or 1 if a run failed)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", dest="sets", action="append",
                        choices=[*CASE_SETS, "all"], metavar="NAME",
                        help=f"case set, repeatable: {', '.join(CASE_SETS)} or all "
                             f"(default: calib)")
    parser.add_argument("--match", help="only the cases whose name contains this")
    parser.add_argument("--build", type=parse_build, default=DEFAULT_BUILD,
                        help="fabric build WxH to run on (each GEMM on its north-west "
                             "corner), or 'own' for a build of each GEMM's own size "
                             "(default: 4x5)")
    parser.add_argument("--list", action="store_true",
                        help="list the cases and their predictions, simulate nothing")
    parser.add_argument("--json", type=Path, help="write the records and summaries here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    set_names = args.sets or ["calib"]
    if "all" in set_names:
        set_names = list(CASE_SETS)
    set_names = list(dict.fromkeys(set_names))
    cases = [c for s in set_names for c in list_cases(s)
             if args.match is None or args.match in c.name]
    if args.list:
        for case in cases:
            mapping = case.mapping()
            predicted = predict(mapping, nonzero_counts(mapping, case.w16)).cycles
            print(f"{case.name}: T_y {tokens_per_pe(mapping)}, predicted {predicted} cycles")
        return 0
    if args.build is not None:
        bw, bh = args.build
        too_big = [c.name for c in cases if c.width > bw or c.height > bh]
        if too_big:
            parser.error(f"--build {bw}x{bh} is smaller than the fabric of {too_big[0]}")

    frozen = model_sha256() == FROZEN_MODEL_SHA256
    print(f"performance model: {'the frozen one' if frozen else 'CHANGED since the freeze'}"
          f" (sha256 {model_sha256()[:12]})")
    records = []
    print(CASE_HEADER)
    with tqdm(total=len(cases), unit="GEMM", disable=args.no_progress, leave=False) as bar:
        for case in cases:
            bar.set_description(case.name)
            record = run_case(case, args.build)
            records.append(record)
            tqdm.write(format_case(record))
            bar.update(1)
    summaries = {s: summarize([r for r in records if r["set"] == s]) for s in set_names}
    summaries = {s: v for s, v in summaries.items() if v["count"]}
    print()
    for set_name, summary in summaries.items():
        print(format_summary(set_name, summary))
    if args.json:
        args.json.write_text(json.dumps({"build": args.build and list(args.build),
                                         "model_frozen": frozen,
                                         "model_sha256": model_sha256(),
                                         "cases": records, "summaries": summaries},
                                        indent=2) + "\n")
    return 0 if all(r["ok"] for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
