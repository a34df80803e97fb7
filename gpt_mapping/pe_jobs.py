"""The GEMM recipe of one column position as a job for a one-PE bench.

:func:`gemm_role_jobs` maps a small random GEMM (gpt_mapping.layout.map_gemm) and, for every
column position x of the row, writes down what the PE at x receives (its program from
:func:`gpt_mapping.fabric_run.pe_program`, its X tile, the column's weight stream, the partial
sums from the west and the row's results from the east) and what it must send and store,
from the golden chain ``s_x = s_{x-1} + P_x``. ``tb/pe_tb.py``'s ``gemm_roles`` plays the jobs
on the PE with the bench as the neighbours (tests/test_pe.py, bench/pe_bench.py), so that the
bench itself imports no mapper. Every value is a JSON-ready int or list.
"""

import numpy as np

from golden import fp
from gpt_mapping.fabric_run import pe_program, placements
from gpt_mapping.layout import map_gemm
from gpt_mapping.streams import column_stream
from rtl.pe.regs import acc_addr

__all__ = ["gemm_role_jobs"]


def _random_bits16(rng, n):
    """Moderate normal FP16 values: tb/pe_cases.random_bits16 with ``special=0`` (the same
    draws from ``rng``, so the jobs are the ones the bench always ran)."""
    vals = fp.f16_to_bits(rng.standard_normal(n) * np.exp2(rng.integers(-6, 7, n)))
    rng.random(n)                         # random_bits16's draw for its special classes
    return vals.astype(np.uint16)


def gemm_role_jobs(seed=7, T=16, K=48, N=6, W=3, sparsities=(0.0, 0.7)):
    """Jobs for tb/pe_tb.py's ``gemm_roles``: for every column position x of a W-wide row,
    the mapper's PE program (gpt_mapping.fabric_run.pe_program) and X tile, the column's
    weight stream, what the neighbours send, and what the PE must send and store, from the
    golden chain ``s_x = s_{x-1} + P_x`` (zero weights skipped)."""
    rng = np.random.default_rng(seed)
    jobs = []
    for sparsity in sparsities:
        x16 = _random_bits16(rng, T * K).reshape(T, K).view(np.float16)
        w16 = _random_bits16(rng, K * N).reshape(K, N)
        w16[rng.random((K, N)) < sparsity] = 0
        w16 = w16.view(np.float16)
        mapping = map_gemm(x16, w16, W, 1)
        sums = []
        for x in range(W):
            kr = mapping.feature_range(x)
            part = np.zeros((N, T), dtype=np.uint32)
            for n in range(N):
                for k in range(kr.start, kr.stop):
                    wbits = w16.view(np.uint16)[k, n]
                    if wbits & 0x7FFF:
                        part[n] = fp.fmac_mixed(part[n], x16.view(np.uint16)[:, k], wbits)
            sums.append(part if x == 0 else fp.add32(sums[-1], part))
        final16 = fp.f32_to_f16(sums[W - 1])                       # [N, T_y]
        colors = mapping.colors
        for x in range(W):
            place = placements([mapping])[0][x, 0]
            t_y, t_pad = int(mapping.tokens_per_row[0]), mapping.t_pad(0)
            writes = [(acc_addr(i), 0) for i in range(64)]
            for addr, words in pe_program(mapping, x, 0, place):
                writes += [(addr + i, int(w)) for i, w in enumerate(words)]
            tile = mapping.x_tile(x16, x, 0).reshape(-1).view("<u4")
            writes += [(place.x_base // 4 + i, int(w)) for i, w in enumerate(tile)]
            nr = mapping.output_range(x)
            jobs.append({
                "name": f"GEMM column {x} of {W} (sparsity {sparsity})", "x": x, "width": W,
                "sparsity": sparsity, "outputs": N,
                "colors": {"weight": colors.weight, "reduce": colors.reduce,
                           "result": colors.result},
                "writes": writes,
                "weight": [int(wd) for wd in column_stream(mapping, w16, x)],
                "reduce_in": [(int(h), 0, 0) for n in range(N)
                              for h in sums[x - 1][n].view(np.uint16)] if x > 0 else [],
                "result_in": [(int(h), 0, 0) for n in range(N) for h in final16[n]]
                if x < W - 1 else [],
                "east_words": ([int(v) for n in range(N) for v in sums[x][n]]
                               if x < W - 1 else None),
                "west_results": [int(v) for v in final16.ravel()] if x == W - 1 else None,
                "y_words": ([place.y_base // 4, len(nr) * t_pad // 2] if len(nr) else None),
                "t_pad": t_pad, "t_y": t_y,
                "y": final16[nr.start:nr.stop].tolist() if len(nr) else [],
            })
    return jobs
