"""Generators of processing-element test cases, shared by the cocotb benches and pytest.

A :class:`OpCase` is one tensor operation with every operand placed: SRAM regions filled with
random values (and random background around strided tensors, so that stray writes show), the
accumulator cache preset, fabric streams to send, and the :class:`tb.pe_model.PEModel` that
says what the PE must produce. :func:`op_cases` enumerates a covering set: every operation
with every source kind, every destination kind, FP16 and FP32, unit and non-unit strides,
1D to 4D shapes (negative strides too) and index-offset mode.

:func:`chain_cases` makes :class:`ChainCase` s: a task of up to four launches over a small
shared pool of tensors, activated one to three times by wavelets, so that operations overlap
in the micro-threads (ordering rules, pending writes, bank conflicts, read-and-clear,
auto-advance, FIFO producer and consumer, fabric streams) while the model runs them in launch
order. :class:`TaskCase` s are the directed multi-launch cases (reproductions of bugs).
"""

import random

import numpy as np

from golden import fp
from rtl.pe.ops import OPS
from rtl.pe.regs import DSR_NONE, DSR_WAVELET, DType, ErrorCode, Kind, TensorOp
from tb.pe_model import PEConfig, PEModel, PEModelError, _decode_dsr

__all__ = ["OpCase", "op_cases", "ChainCase", "chain_cases", "TaskCase",
           "clear_then_reuse_case", "clear_restart_case", "SRC_KINDS", "DST_KINDS",
           "random_bits16", "random_bits32", "mixed_fmac_reference", "SRAM_WORDS", "ACC_WORDS"]

SRAM_WORDS = 12288
ACC_WORDS = 64

SRC_KINDS = ["MEM16", "MEM32", "ACC", "FIN16", "FIN32", "SCALAR16", "SCALAR32", "WAVELET",
             "FIFO16", "FIFO32"]
DST_KINDS = ["MEM16", "MEM32", "ACC", "FOUT16", "FOUT32", "FOUTZ16", "NULL", "FIFO16",
             "FIFO32"]
BINARY = tuple(op for op, info in OPS.items() if info.uses_b)

# SRAM regions (FP16 addresses) and accumulator-cache regions (words) per role.
SRAM_REGION = {"a": 0x0000, "b": 0x0800, "dst": 0x1000}
SRAM_REGION_SIZE = 0x0800
ACC_REGION = {"a": 0, "b": 16, "dst": 32}
ACC_REGION_SIZE = {"a": 16, "b": 16, "dst": 32}
COLOR = {"a": 3, "b": 4, "dst": 9}
DSR_ID = {"dst": 0, "a": 1, "b": 2, "s": 3}


def random_bits16(rng, n, special=0.1):
    """FP16 bits: mostly moderate normal values, some special classes."""
    vals = fp.f16_to_bits(rng.standard_normal(n) * np.exp2(rng.integers(-6, 7, n)))
    mask = rng.random(n) < special
    vals[mask] = rng.choice(fp.special_values16(), mask.sum())
    return vals.astype(np.uint16)


def random_bits32(rng, n, special=0.1):
    """FP32 bits: mostly moderate normal values, some special classes."""
    vals = fp.f32_to_bits(rng.standard_normal(n) * np.exp2(rng.integers(-10, 11, n)))
    mask = rng.random(n) < special
    vals[mask] = rng.choice(fp.special_values32(), mask.sum())
    return vals.astype(np.uint32)


def _factor(rng, n, ndims):
    """Random lengths with product n (n has enough small factors)."""
    lens = [1] * ndims
    rest = n
    for i in range(ndims - 1):
        divs = [d for d in range(1, rest + 1) if rest % d == 0 and d <= 6]
        lens[i] = int(rng.choice(divs))
        rest //= lens[i]
    lens[-1] = rest
    rng.shuffle(lens)
    return [int(x) for x in lens]


def _layout(rng, n, ndims, room, allow_neg=True, dense=False):
    """A non-overlapping layout of n elements: (offset of the first element, dims, span).

    ``dims`` lists (length, stride) innermost-iteration first; memory order is a random
    permutation of the dimensions with random padding, some strides may be negative.
    ``span`` is the number of element slots the tensor covers; ``room`` bounds it.
    """
    for _ in range(50):
        lens = _factor(rng, n, ndims)
        order = list(rng.permutation(ndims))
        strides = [0] * ndims
        cur = 1
        for d in order:
            strides[d] = cur
            pad = 0 if dense else int(rng.choice([0, 0, 1, 2]))
            cur *= lens[d] + pad
        span = cur
        if span > room:
            continue
        first = 0
        if allow_neg and not dense and rng.random() < 0.3:
            d = int(rng.integers(ndims))
            if lens[d] > 1:
                first += (lens[d] - 1) * strides[d]
                strides[d] = -strides[d]
        return first, list(zip(lens, strides)), span
    return 0, [(n, 1)], n


def _addresses(first, dims):
    addrs = np.array([first])
    for length, stride in dims:
        addrs = (addrs[None, :] + np.arange(length)[:, None] * stride).ravel()
    return addrs


class OpCase:
    """One tensor operation, fully placed, with its expected results (see module doc)."""

    def __init__(self, name, op, kinds, n, seed):
        self.name = name
        self.op = op
        self.kinds = kinds
        self.n = n
        rng = np.random.default_rng(seed)
        self.rng = rng
        cfg = PEConfig(SRAM_WORDS, ACC_WORDS)
        self.cfg = cfg
        self.fabric_in = {}
        self.windows = []          # (first word, count) of SRAM to read back
        self.acc_window = False
        self.fifo_dsrs = []
        self.data = int(random_bits16(rng, 1, special=0.0)[0])
        self.index = 0
        self.entry = {"op": op, "dst": DSR_ID["dst"], "a": DSR_ID["a"], "b": DSR_NONE,
                      "s": DSR_NONE, "prio": int(rng.integers(4)), "idx": set()}
        uses_acc = any(k == "ACC" for k in kinds.values())
        if uses_acc:
            cfg.put_acc(0, random_bits32(rng, ACC_WORDS))
            self.acc_window = True
        for role in ("a", "b", "dst"):
            if role not in kinds:
                continue
            if role != "a" and role != "dst":
                self.entry["b"] = DSR_ID["b"]
            self._place(role, kinds[role])
        if op == TensorOp.FMAC:
            if kinds.get("s") == "WAVELET":
                self.entry["s"] = DSR_WAVELET
            else:
                is32 = kinds.get("s") == "SCALAR32"
                val = (random_bits32 if is32 else random_bits16)(rng, 1, special=0.0)[0]
                cfg.dsr(DSR_ID["s"], Kind.SCALAR, dtype=DType.FP32 if is32 else DType.FP16,
                        value=int(val))
                self.entry["s"] = DSR_ID["s"]
        cfg.task(0, [self.entry])
        self.model = PEModel(cfg, fabric_in=self.fabric_in)
        errors = self.model.activate(0, self.data, self.index)
        assert not errors, f"{name}: the case itself is invalid: {errors}"
        self.trigger = (self.data, self.index)     # a host trigger of task 0

    def _place(self, role, kind):
        rng, cfg, n = self.rng, self.cfg, self.n
        ident = DSR_ID[role]
        if kind == "WAVELET":
            self.entry[role] = DSR_WAVELET
            return
        is32 = kind.endswith("32") or kind == "ACC"
        dtype = DType.FP32 if is32 else DType.FP16
        gen = random_bits32 if is32 else random_bits16
        if self.kinds.get("dst") == "FOUTZ16" and role != "dst":
            # The zero filter drops +-0: half the sources' elements are zeros (signed).
            def gen(rng, n, special=0.1, base_gen=gen):
                vals = base_gen(rng, n, special)
                zero = rng.random(n) < 0.5
                vals[zero] = np.where(rng.random(int(zero.sum())) < 0.5, 0,
                                      0x8000 if base_gen is random_bits16 else 0x80000000)
                return vals
        if kind.startswith("SCALAR"):
            cfg.dsr(ident, Kind.SCALAR, dtype=dtype, value=int(gen(rng, 1, special=0.0)[0]))
        elif kind.startswith("FIN"):
            vals = gen(rng, n)
            halves = vals.view(np.uint16) if is32 else vals
            self.fabric_in[COLOR[role]] = [(int(h), int(rng.integers(1024)), 0)
                                           for h in halves]
            cfg.dsr(ident, Kind.FIN, dtype=dtype, color=COLOR[role])
        elif kind.startswith("FOUT"):
            cfg.dsr(ident, Kind.FOUT, dtype=dtype, color=COLOR[role], dims=[(n, 1)],
                    out_index=int(rng.integers(1024)), ctrl=int(rng.integers(2)),
                    filter_zeros=kind == "FOUTZ16")
        elif kind == "NULL":
            # An FMAC into an FP16 destination is refused (UNSUPPORTED), NULL included.
            cfg.dsr(ident, Kind.NULL, dims=_factor_dims(rng, n),
                    dtype=DType.FP32 if self.op == TensorOp.FMAC else DType.FP16)
        elif kind == "ACC":
            room = ACC_REGION_SIZE[role]
            first, dims, span = _layout(rng, n, int(rng.integers(1, 5)), room)
            base = ACC_REGION[role] + int(rng.integers(0, room - span + 1)) + first
            cfg.dsr(ident, Kind.ACC, dtype=DType.FP32, base=base, dims=dims)
        elif kind.startswith("FIFO"):
            esz = 2 if is32 else 1
            size = n + int(rng.integers(0, 9))
            pos = int(rng.integers(0, size))
            region = SRAM_REGION[role] + 0x100
            if role == "dst":
                count = int(rng.integers(0, size - n + 1))
            else:
                count = n + int(rng.integers(0, size - n + 1))
            background = gen(rng, size)
            cfg.put_f16(region, background.view(np.uint16) if is32 else background)
            cfg.dsr(ident, Kind.FIFO, dtype=dtype, base=region, dims=[(n, 1)],
                    fifo_size=size, pos=pos, count=count)
            self.fifo_dsrs.append(ident)
            if role == "dst":
                self.windows.append((region // 2, size * esz // 2))
        else:  # MEM16 / MEM32
            esz = 2 if is32 else 1
            room = SRAM_REGION_SIZE // esz // 4
            ndims = int(rng.integers(1, 5))
            first, dims, span = _layout(rng, n, ndims, room)
            offset = int(rng.integers(0, 8))
            idx_stride = 0
            index = 0
            if rng.random() < 0.5 and (span + offset) * 4 <= SRAM_REGION_SIZE // esz:
                idx_stride = span + offset
                self.entry["idx"].add(role)
                self.index = self.index or int(rng.integers(1, 4))
                index = self.index
            region = SRAM_REGION[role]
            base = region + (offset + first) * esz
            # Background: every slot up to the tensor's end plus a margin, so that strided
            # gaps and the words around the tensor are known (stray writes show).
            slots = offset + span + index * idx_stride + 8
            background = gen(rng, slots)
            cfg.put_f16(region, background.view(np.uint16) if is32 else background)
            cfg.dsr(ident, Kind.MEM, dtype=dtype, base=base, dims=dims, idx_stride=idx_stride)
            if role == "dst":
                self.windows.append((region // 2, slots * esz // 2))

    def describe(self):
        return f"{self.name}: {self.op.name} " + " ".join(
            f"{r}={k}" for r, k in self.kinds.items()) + f" n={self.n}"


def _factor_dims(rng, n):
    lens = _factor(rng, n, int(rng.integers(1, 5)))
    return [(length, 1) for length in lens]


def op_cases(seed=1, rounds=1):
    """The covering set of tensor-operation cases (see module docstring)."""
    rng = random.Random(seed)
    cases = []
    sizes = [24, 16, 12, 32, 8, 18, 20, 36]
    k = 0
    for _ in range(rounds):
        for op in TensorOp:
            binary = op in BINARY
            plans = []
            for src in SRC_KINDS:
                plans.append({"a": src})
                if binary:
                    plans.append({"b": src})
            for dst in DST_KINDS:
                if op == TensorOp.FMAC and dst.endswith("16"):
                    continue   # refused by the PE (UNSUPPORTED): see the errors bench
                plans.append({"dst": dst})
            for plan in plans:
                kinds = {}
                dst_choices = (["MEM32", "ACC"] if op == TensorOp.FMAC
                               else ["MEM16", "MEM32", "ACC", "FOUT16"])
                kinds["dst"] = plan.get("dst", rng.choice(dst_choices))
                kinds["a"] = plan.get("a", rng.choice(["MEM16", "MEM32", "ACC", "FIN16"]))
                if binary:
                    kinds["b"] = plan.get("b", rng.choice(["MEM16", "MEM32", "ACC",
                                                           "SCALAR16", "FIN32"]))
                if op == TensorOp.FMAC:
                    kinds["s"] = rng.choice(["WAVELET", "SCALAR16", "SCALAR32"])
                # Two fabric inputs of one op must be distinct colors (they are); an
                # all-scalar operation still needs an iterating destination (it has one).
                n = rng.choice(sizes)
                if "ACC" in kinds.values():
                    n = rng.choice([16, 12, 8, 6])
                cases.append(OpCase(f"case{k}", op, kinds, n, seed * 100003 + k))
                k += 1
    return cases


def mixed_fmac_reference(x_cols, weights):
    """Sequential FP32 sums acc = fmac_mixed(acc, x[:, k], w[k]) for k in order."""
    acc = np.zeros(x_cols.shape[0], dtype=np.uint32)
    for k, w in weights:
        acc = fp.fmac_mixed(acc, x_cols[:, k], np.uint16(w))
    return acc



# --- chains: several launches in flight, overlapping operands ---------------------------------

CHAIN_POOL = 0x0000            # FP16 address of the shared SRAM pool of the MEM tensors
CHAIN_POOL_SIZE = 0x100        # halfwords (128 words): tensors overlap often
CHAIN_REACH = 0x200            # index offsets and auto-advance reach this far: background
CHAIN_FIFO = 0x0200            # FIFO buffer
CHAIN_TRIGGER_COLOR = 1        # data wavelets on it activate task 0
CHAIN_FIN = {DType.FP16: 3, DType.FP32: 4}
CHAIN_FOUT = {DType.FP16: 9, DType.FP32: 10}


class _ChainModel(PEModel):
    """The reference, refusing the launches whose result the PE leaves open: a destination
    (or a cleared source) overlapping another operand of the same launch other than in
    place (the PE reads and writes group by group), and tensors reaching outside the SRAM
    the case initialises."""

    def launch(self, e, data=0, index=0):
        ops = {}
        for role in ("dst", "a", "b"):
            ident = e[role]
            if ident in (DSR_NONE, DSR_WAVELET) or ident not in self.dsr_words:
                continue
            try:
                ops[role] = self._operand(role, ident, e, data, index, True)
            except PEModelError:
                return super().launch(e, data, index)   # the model raises the error
        if e["op"] not in BINARY:
            ops.pop("b", None)

        def cells(o):
            if o is None or "addrs" not in o:
                return None
            esz = 2 if (o["kind"] != Kind.ACC and o["dtype"] == DType.FP32) else 1
            space = "acc" if o["kind"] == Kind.ACC else "sram"
            return {(space, a + j) for a in o["addrs"] for j in range(esz)}

        for o in ops.values():
            if o["kind"] == Kind.MEM and max(o["addrs"]) + 1 >= CHAIN_REACH:
                raise PEModelError(ErrorCode.NONE, "outside the background")
        writers = ["dst"] + (["a"] if e["clear_a"] else [])
        for w in writers:
            for r in ("dst", "a", "b"):
                if r == w or r not in ops or w not in ops:
                    continue
                cw, cr = cells(ops[w]), cells(ops[r])
                if not cw or not cr or not (cw & cr):
                    continue
                same = (ops[w].get("addrs") == ops[r].get("addrs")
                        and ops[w]["dtype"] == ops[r]["dtype"]
                        and ops[w]["kind"] == ops[r]["kind"]
                        and ops[w]["length"] == ops["dst"]["length"] and w == "dst")
                if not same:
                    raise PEModelError(ErrorCode.NONE, f"{w} overlaps {r}")
        return super().launch(e, data, index)


class ChainCase:
    """A task of several launches over a shared pool of tensors, activated a few times by
    wavelets: the launches overlap in the micro-threads (ordering rules, bank conflicts,
    pending writes, auto-advance, FIFO producer and consumer), the model runs them one after
    the other. Random until the model accepts every launch."""

    def __init__(self, name, seed):
        self.name = name
        for attempt in range(200):
            if self._try(np.random.default_rng([seed, attempt])):
                return
        raise RuntimeError(f"{name}: no valid chain found")

    def _try(self, rng):
        cfg = PEConfig(SRAM_WORDS, ACC_WORDS)
        cfg.put_f16(CHAIN_POOL, random_bits16(rng, CHAIN_REACH))
        cfg.put_acc(0, random_bits32(rng, ACC_WORDS))
        mems, accs = [], []
        ident = 0
        for _ in range(6):                                  # MEM tensors in the pool
            dtype = DType(int(rng.integers(2)))
            esz = 2 if dtype == DType.FP32 else 1
            n = int(rng.choice([1, 2, 3, 4, 5, 6, 8, 12, 16, 24]))
            first, dims, span = _layout(rng, n, int(rng.integers(1, 4)),
                                        CHAIN_POOL_SIZE // esz // 2)
            adv = {}
            if rng.random() < 0.3:
                adv = dict(adv_step=int(rng.integers(1, 9)), adv_count=int(rng.integers(0, 4)))
            idx_stride = int(rng.integers(0, 9)) if rng.random() < 0.3 else 0
            split = {}
            if idx_stride and rng.random() < 0.5:       # a field of the index (interleave)
                split = dict(idx_shift=int(rng.integers(0, 4)), idx_width=int(rng.integers(0, 4)))
            start = int(rng.integers(0, CHAIN_POOL_SIZE // esz - span + 1))
            cfg.dsr(ident, Kind.MEM, dtype=dtype, base=CHAIN_POOL + (start + first) * esz,
                    dims=dims, idx_stride=idx_stride, **adv, **split)
            mems.append(ident)
            ident += 1
        for _ in range(3):                                  # accumulator-cache tensors
            n = int(rng.choice([1, 2, 4, 6, 8, 12, 16]))
            first, dims, span = _layout(rng, n, int(rng.integers(1, 3)), 32)
            adv = {}
            if rng.random() < 0.3:
                adv = dict(adv_step=int(rng.choice([4, 8, 16])), adv_count=2)
            start = int(rng.integers(0, 32 - span + 1))
            if rng.random() < 0.3:                      # the accumulator slot of the index
                adv.update(idx_stride=int(rng.choice([2, 4, 8])),
                           idx_width=int(rng.integers(1, 3)))
            cfg.dsr(ident, Kind.ACC, dtype=DType.FP32, base=start + first, dims=dims, **adv)
            accs.append(ident)
            ident += 1
        fifo_dtype = DType(int(rng.integers(2)))
        fifo_size = int(rng.integers(8, 33))
        fifo_bg = (random_bits32 if fifo_dtype == DType.FP32 else random_bits16)(rng, fifo_size)
        cfg.put_f16(CHAIN_FIFO, fifo_bg.view(np.uint16) if fifo_dtype == DType.FP32 else fifo_bg)
        fifo = cfg.dsr(ident, Kind.FIFO, dtype=fifo_dtype, base=CHAIN_FIFO,
                       dims=[(int(rng.integers(1, 9)), 1)], fifo_size=fifo_size,
                       pos=int(rng.integers(fifo_size)), count=int(rng.integers(fifo_size + 1)))
        ident += 1
        fins = {}
        for dt, color in CHAIN_FIN.items():
            fins[dt] = cfg.dsr(ident, Kind.FIN, dtype=dt, color=color)
            ident += 1
        fouts = {}
        for dt, color in CHAIN_FOUT.items():
            fouts[dt] = cfg.dsr(ident, Kind.FOUT, dtype=dt, color=color,
                                dims=[(int(rng.choice([1, 3, 4, 8, 12])), 1)],
                                out_index=int(rng.integers(1024)), ctrl=int(rng.integers(2)))
            ident += 1
        null = cfg.dsr(ident, Kind.NULL, dtype=DType.FP32, dims=[(int(rng.integers(1, 13)), 1)])
        ident += 1
        scalars = []
        for dt in DType:
            gen = random_bits32 if dt == DType.FP32 else random_bits16
            scalars.append(cfg.dsr(ident, Kind.SCALAR, dtype=dt,
                                   value=int(gen(rng, 1, special=0.0)[0])))
            ident += 1
        dst_pool = mems + accs + [fifo, fouts[DType.FP16], fouts[DType.FP32], null]
        src_pool = mems + accs + [fifo, fins[DType.FP16], fins[DType.FP32]] + scalars \
            + [DSR_WAVELET]
        entries = []
        for _ in range(int(rng.integers(1, 5))):
            op = TensorOp(int(rng.integers(len(TensorOp))))
            dst = int(rng.choice(dst_pool))
            if op == TensorOp.FMAC:
                dst = int(rng.choice([d for d in dst_pool if d in accs or d == null
                                      or d == fouts[DType.FP32]
                                      or _decode_dsr(cfg.dsrs[d])["dtype"] == DType.FP32]))
            a = int(rng.choice(src_pool))
            b = int(rng.choice(src_pool)) if op in BINARY else DSR_NONE
            s = int(rng.choice(scalars + [DSR_WAVELET])) if op == TensorOp.FMAC else DSR_NONE
            roles = [r for r, d in (("dst", dst), ("a", a), ("b", b)) if d in mems + accs]
            entries.append(dict(
                op=op, dst=dst, a=a, b=b, s=s, prio=int(rng.integers(4)),
                idx={r for r in roles if rng.random() < 0.4},
                adv={r for r in roles if rng.random() < 0.3},
                clear_a=bool(a in accs and dst not in accs and rng.random() < 0.4)))
        cfg.task(0, entries)
        cfg.bind(CHAIN_TRIGGER_COLOR, data_task=0)
        supply = {color: [(int(h), int(rng.integers(1024)), 0)
                          for h in random_bits16(rng, 400)]
                  for color in CHAIN_FIN.values()}
        model = _ChainModel(cfg, fabric_in=supply)
        triggers = [(int(random_bits16(rng, 1, special=0.0)[0]), int(rng.integers(4)), 0)
                    for _ in range(int(rng.integers(1, 4)))]
        for data, index, _ in triggers:
            if model.wavelet(CHAIN_TRIGGER_COLOR, data, index):
                return False
        self.cfg, self.model, self.entries = cfg, model, entries
        self.fabric_in = {c: supply[c][:400 - len(model.fin[c])] for c in supply}
        self.fabric_in = {c: w for c, w in self.fabric_in.items() if w}
        self.fabric_in[CHAIN_TRIGGER_COLOR] = triggers
        self.windows = [(CHAIN_POOL // 2, CHAIN_REACH // 2),
                        (CHAIN_FIFO // 2, (fifo_size * (2 if fifo_dtype == DType.FP32 else 1)
                                           + 1) // 2)]
        self.fifo_dsrs = sorted(cfg.dsrs)   # word 7 of every DSR: positions, occupancy
        self.acc_window = True
        self.trigger = None                 # activated by the wavelets on its color
        return True

    def describe(self):
        ops = "; ".join(f"{e['op'].name} {e['dst']}<-{e['a']},{e['b']}" for e in self.entries)
        return f"{self.name} ({len(self.fabric_in[CHAIN_TRIGGER_COLOR])} activations: {ops})"


class TaskCase:
    """A directed case: a configured PE whose task 0 is activated by ``triggers`` (wavelets
    ``(data, index, 0)`` on ``CHAIN_TRIGGER_COLOR``); the model runs the launches in order.
    ``windows`` are the SRAM (first word, count) ranges to compare."""

    def __init__(self, name, cfg, triggers, windows, fabric_in=None, what=""):
        self.name, self.cfg, self.windows, self.what = name, cfg, windows, what
        cfg.bind(CHAIN_TRIGGER_COLOR, data_task=0)
        self.model = PEModel(cfg, fabric_in={c: list(w) for c, w in (fabric_in or {}).items()})
        for data, index in triggers:
            errors = self.model.wavelet(CHAIN_TRIGGER_COLOR, data, index)
            assert not errors, f"{name}: the case itself is invalid: {errors}"
        self.fabric_in = dict(fabric_in or {})
        self.fabric_in[CHAIN_TRIGGER_COLOR] = [(d, i, 0) for d, i in triggers]
        self.acc_window = True
        self.fifo_dsrs = sorted(cfg.dsrs)
        self.trigger = None

    def describe(self):
        return f"{self.name} ({self.what})"


def clear_then_reuse_case(seed=1):
    """Read-and-clear into SRAM (``FMOV y = acc``, ``clear_a``, as the single-column GEMM
    stores an output), then at once the next output's FMACs into the same accumulators.
    The FMACs must start from zeros: the clear's pending write-backs are accumulator-cache
    writes although the destination is SRAM (the bug was to record them as SRAM writes,
    so the FMACs read the accumulators before they were cleared)."""
    rng = np.random.default_rng(seed)
    cfg = PEConfig(SRAM_WORDS, ACC_WORDS)
    cfg.put_acc(0, random_bits32(rng, ACC_WORDS, special=0.0))
    X, Y = 0x100, 0x200
    cfg.put_f16(X, random_bits16(rng, 16, special=0.0))
    cfg.put_f16(Y, random_bits16(rng, 16, special=0.0))
    acc = cfg.dsr(0, Kind.ACC, dtype=DType.FP32, base=8, dims=[(8, 1)])
    y = cfg.dsr(1, Kind.MEM, dtype=DType.FP16, base=Y, dims=[(8, 1)], adv_step=8,
                adv_count=2)
    x = cfg.dsr(2, Kind.MEM, dtype=DType.FP16, base=X, dims=[(8, 1)], idx_stride=8)
    cfg.task(0, [dict(op=TensorOp.FMOV, dst=y, a=acc, clear_a=True, adv={"dst"}, prio=1),
                 dict(op=TensorOp.FMAC, dst=acc, a=acc, b=x, s=DSR_WAVELET, idx={"b"})])
    weights = random_bits16(rng, 2, special=0.0)
    triggers = [(int(weights[0]), 0), (int(weights[1]), 1)]
    return TaskCase(f"clear_then_reuse{seed}", cfg, triggers, windows=[(X // 2, 8), (Y // 2, 8)],
                    what="FMOV y = acc with clear_a, then FMAC acc += x * w, twice")


def clear_restart_case(seed=3):
    """Read-and-clear of accumulators shorter than the destination: the source restarts
    and, zeroed as it was read, gives +0 the second time (the model used to read the
    whole source before clearing it)."""
    rng = np.random.default_rng(seed)
    cfg = PEConfig(SRAM_WORDS, ACC_WORDS)
    cfg.put_acc(0, random_bits32(rng, ACC_WORDS, special=0.0))
    acc = cfg.dsr(0, Kind.ACC, dtype=DType.FP32, base=4, dims=[(2, 1), (2, 4)])
    out = cfg.dsr(1, Kind.FOUT, dtype=DType.FP32, color=CHAIN_FOUT[DType.FP32],
                  dims=[(12, 1)])
    cfg.task(0, [dict(op=TensorOp.FNEG, dst=out, a=acc, clear_a=True)])
    return TaskCase("clear_restart", cfg, [(0, 0)], windows=[],
                    what="FNEG out[12] = -acc[4], clear_a: -0 after the first 4")


def chain_cases(seed=1, count=40):
    """``count`` random :class:`ChainCase` s."""
    return [ChainCase(f"chain{k}", seed * 100003 + k) for k in range(count)]
