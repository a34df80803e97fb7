"""Wall time of the fast models at GPT-2 sizes (the figures of docs/gemm.md section 8).

    python bench/model_speed.py [--repeat 3]

Three figures, each the median of ``--repeat`` runs (the machine is shared: read ratios
and medians, not single runs):

* ``golden.gemm.fabric_gemm`` of a GPT-2-small MLP GEMM (T = 1024, K = 768, N = 3072, 50 %
  zeros) on 750 x 994 PEs;
* ``gpt_mapping.perf_model.predict`` of the same GEMM, dense;
* ``bench/gpt2_small.py``'s code path on a reduced block (n_embd 192, 3 heads, 256 tokens)
  on 16 x 16 and 24 x 40, dense and 90 % sparse.

The tests check what these produce (bits, cycles); they assert no time.
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from golden.gemm import fabric_gemm  # noqa: E402
from gpt_mapping.layout import GemmMapping  # noqa: E402
from gpt_mapping.model import GPTConfig  # noqa: E402
from gpt_mapping.perf_model import predict  # noqa: E402


def _gpt2_gemm_operands(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1024, 768)).astype(np.float16)
    w = (rng.standard_normal((768, 3072)) * 0.05).astype(np.float16)
    w[rng.random(w.shape) < 0.5] = 0.0
    return x, w


def _gpt2_small_bench():
    spec = importlib.util.spec_from_file_location("gpt2_small_bench",
                                                  ROOT / "bench" / "gpt2_small.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def measurements():
    """``{name: callable}`` of the timed runs."""
    x, w = _gpt2_gemm_operands()
    mapping = GemmMapping(tokens=1024, features=768, outputs=3072, width=750, height=994)
    dense = np.tile(mapping.features_per_column[:, None], (1, mapping.outputs))
    bench = _gpt2_small_bench()
    config = GPTConfig(n_embd=192, n_head=3, n_ctx=256, batch=1)
    return {
        "fabric_gemm 1024x768x3072 on 750x994": lambda: fabric_gemm(x, w, 750, 994),
        "perf_model.predict 1024x768x3072 on 750x994": lambda: predict(mapping, dense),
        "gpt2_small bench, reduced block, 2 fabrics x 2 sparsities":
            lambda: bench.bench(config, fabrics=((16, 16), (24, 40)), sparsities=(0.0, 0.9)),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for name, run in measurements().items():
        times = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        print(f"{name}: median {statistics.median(times):.2f} s "
              f"(runs {', '.join(f'{t:.2f}' for t in times)})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
