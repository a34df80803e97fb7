"""Generators of processing-element test cases, shared by the cocotb benches and pytest.

A :class:`OpCase` is one tensor operation with every operand placed: SRAM regions filled with
random values (and random background around strided tensors, so that stray writes show), the
accumulator cache preset, fabric streams to send, and the :class:`tb.pe_model.PEModel` that
says what the PE must produce. :func:`op_cases` enumerates a covering set: every operation
with every source kind, every destination kind, FP16 and FP32, unit and non-unit strides,
1D to 4D shapes (negative strides too) and index-offset mode.
"""

import random

import numpy as np

from golden import fp
from rtl.pe.regs import DSR_NONE, DSR_WAVELET, DType, Kind, TensorOp
from tb.pe_model import PEConfig, PEModel

__all__ = ["OpCase", "op_cases", "SRC_KINDS", "DST_KINDS", "random_bits16", "random_bits32",
           "mixed_fmac_reference", "SRAM_WORDS", "ACC_WORDS"]

SRAM_WORDS = 12288
ACC_WORDS = 64

SRC_KINDS = ["MEM16", "MEM32", "ACC", "FIN16", "FIN32", "SCALAR16", "SCALAR32", "WAVELET",
             "FIFO16", "FIFO32"]
DST_KINDS = ["MEM16", "MEM32", "ACC", "FOUT16", "FOUT32", "NULL", "FIFO16", "FIFO32"]
BINARY = (TensorOp.FADD, TensorOp.FSUB, TensorOp.FMUL, TensorOp.FMAC, TensorOp.FMAX)

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

    def _place(self, role, kind):
        rng, cfg, n = self.rng, self.cfg, self.n
        ident = DSR_ID[role]
        if kind == "WAVELET":
            self.entry[role] = DSR_WAVELET
            return
        is32 = kind.endswith("32") or kind == "ACC"
        dtype = DType.FP32 if is32 else DType.FP16
        gen = random_bits32 if is32 else random_bits16
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
                    out_index=int(rng.integers(1024)), ctrl=int(rng.integers(2)))
        elif kind == "NULL":
            cfg.dsr(ident, Kind.NULL, dims=_factor_dims(rng, n))
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
                plans.append({"dst": dst})
            for plan in plans:
                kinds = {}
                kinds["dst"] = plan.get("dst", rng.choice(["MEM16", "MEM32", "ACC", "FOUT16"]))
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

