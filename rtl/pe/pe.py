"""The processing element: banked SRAM, accumulator cache, tensor engine, tasks (SPEC 4.1-4.4, 4.6).

Block diagram (one clock domain)::

    rx ──> per-color queues ──┬──> task launcher ──LaunchRequest──> launch stage (L0, L1)
                              │      (bindings, task table,             │ DSR file
                              │       launch entries)                   v
                              │                               micro-thread slots (8)
                              │                                         │ scheduler: priority,
                              └──── fabric-input operands <── issue (I) ┘ then round-robin
                                                               │
        SRAM banks (8 x 32 bit) / accumulator cache / scalars ─┤ R: operands, widen to FP32
                                                               │ X, A, N: FP32 FMA x 4 lanes
                                          write-back (W) <─────┘  (MOV/MAX/NEG beside it)
                                    SRAM / acc cache / out buffers ──> tx

``docs/pe.md`` is the reference: register map, DSR encoding, the launch interface, the
hazard rules, the GEMM recipe, counters and error codes. The register map and encoders are
in :mod:`rtl.pe.regs`.

Simulation speed is a design goal (the PE is instantiated many times in the fabric): every
value evaluated per cycle is at most 64 bits wide (memories are split by word, lane or
field), per-thread state that only the issuing thread needs lives in memories indexed by
thread, and per-color state is looked up through packed bit vectors. Values read only under
a condition are multiplexed against a register (``_sig(..., when=, idle=)``) so that
Verilator's model skips them in the other cycles, and state read only under a reset flag has
no reset of its own (docs/pe.md, section 12).
"""

import re

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, ceil_log2, exact_log2

from rtl.fp import FP32, FMAUnit, FPOp, f16_to_f32, f32_to_f16, fp_max, fp_neg
from rtl.link import CfgSignature, LinkSignature
from rtl.pe.regs import (CFG_BITS, COUNTER_BASE, DSR, DSR_NONE, DSR_WAVELET, DSR_WORDS,
                         MAX_DSRS, MAX_ENTRIES, MAX_TASKS, ColorBind, Counter, DType, ErrorCode,
                         HostTrigger, Kind, LaunchEntry, LaunchRequest, Reg, TaskEntry, TensorOp,
                         IdWord, encode_fields, layout_fields)
from rtl.wavelet import NUM_COLORS

__all__ = ["PE", "pe_verilog", "compact_memory_init",
           "SPACE_SRAM", "SPACE_ACC", "SPACE_FIN", "SPACE_FOUT"]

# Resource spaces of the ordering (hazard) rules.
SPACE_NONE, SPACE_SRAM, SPACE_ACC, SPACE_FIN, SPACE_FOUT = range(5)

ROLES = ("dst", "a", "b")
_K = {k.name: k.value for k in Kind}
_OP = {o.name: o.value for o in TensorOp}
_ITERATING = ("MEM", "ACC", "FIFO", "FOUT", "NULL")   # kinds with a shape / a length
_ADDRESSED = ("MEM", "ACC", "FIFO")                   # kinds with an address
QW = 27                                               # queued wavelet: data, index, ctrl
_DSR_FIELDS = layout_fields(DSR)

# Per-thread constants, one memory per group (all <= 64 bits), written at launch.
_CONST_GROUPS = {
    "len": data.ArrayLayout(12, 4),                        # dimension lengths
    "jump": data.ArrayLayout(16, 3),                       # last of dim i-1 -> next of dim i
    "addr": data.StructLayout({"step0": 16, "start": 16}),  # innermost step, first address
    "wrap": data.StructLayout({"hi": 17, "size": 17}),     # FIFO: end of buffer, its size
    "value": 32,                                           # SCALAR: the value
}
# Per-thread iteration state: address and remaining counts per dimension.
_STATE = data.StructLayout({"cur": 16, "k": data.ArrayLayout(12, 4)})


def _is(kind, *names):
    """``kind`` (a raw 3-bit value) is one of the named :class:`Kind` members."""
    out = Const(0, 1)
    for name in names:
        out = out | (kind == _K[name])
    return out


def _min(a, b):
    return Mux(a < b, a, b)


def _sig(m, value, name, shape=None, when=None, idle=None):
    """A named signal driven by ``value`` (so that the expression is built once).

    With ``when``: ``value`` while ``when`` is high, else ``idle``, a value of no meaning
    (read from a register, not a constant: Verilator keeps such a multiplexer a C++
    conditional, so its model does not compute ``value`` in the cycles without ``when``;
    with a constant it would compute ``value`` and mask it)."""
    sig = Signal(shape if shape is not None else value.shape(), name=name)
    m.d.comb += sig.eq(value if when is None else Mux(when, value, idle))
    return sig


def _lowest(m, mask, width, name):
    """(any, index of the lowest set bit, 0 if none) of ``mask``, as signals.

    A halving tree (is the lower half empty?), log2(width) steps, rather than a priority
    chain of ``width`` multiplexers: far fewer operations in Verilator's model."""
    mask = _sig(m, mask, f"{name}_mask", width)
    any_ = _sig(m, mask.any(), f"{name}_any")
    half = 1 << max(0, ceil_log2(width) - 1)
    value, bits = mask, []
    while half >= 1:
        low = value[:half]
        empty = low == 0
        bits.append(empty)
        value = Mux(empty, value[half:2 * half], low)
        half //= 2
    index = Mux(any_, Cat(*reversed(bits)), 0) if bits else Const(0, 1)
    return any_, _sig(m, index, f"{name}_index", range(max(width, 2)))


def _round_robin(m, mask, last, width, name):
    """Lowest set bit of ``mask`` above ``last``, else the lowest set bit (round-robin)."""
    mask = _sig(m, mask, f"{name}_req", width)
    after = (~((Const(2, 2) << last) - 1))[:width]          # bits last + 1 .. width - 1
    hit_after, first_after = _lowest(m, mask & after, width, f"{name}_after")
    hit, first = _lowest(m, mask, width, f"{name}_all")
    return hit, _sig(m, Mux(hit_after, first_after, first), f"{name}_pick",
                     range(max(width, 2)))


def _lane_mask(n, offset, width):
    """``((1 << n) - 1) << offset`` limited to ``width`` bits, for n in 0..4."""
    ones = Array([Const((1 << i) - 1, 4) for i in range(5)])[n]
    return (ones << offset)[:width]


class _DSRWords:
    """Field access to a DSR given as its 32-bit words (no field straddles a word)."""

    def __init__(self, words):
        self._words = words

    def __getattr__(self, name):
        return self.field(name)

    def field(self, name):
        off, width, sgn = _DSR_FIELDS[name]
        value = self._words[off // 32][off % 32:off % 32 + width]
        return value.as_signed() if sgn else value

    def dim(self, i, name):
        return self.field(f"dims.{i}.{name}")


class PE(wiring.Component):
    """A processing element of the fabric (SPEC sections 4.1 to 4.4 and 4.6).

    Parameters
    ----------
    sram_words : int
        SRAM size in 32-bit words (default 12288 = 48 KiB).
    banks : int
        Number of single-port 32-bit SRAM banks, a power of two >= 2; word ``w`` lives in
        bank ``w % banks``, so a 64-bit access uses one bank pair.
    acc_words : int
        Accumulator cache size in FP32 words, a multiple of 4 (default 64 = 256 B).
    num_dsrs : int
        Data-structure registers (at most 62).
    threads : int
        Micro-thread slots: tensor operations in flight (2, 4, 8 or 16).
    lanes : int
        FP16 lanes of the datapath (4; FP32 operands from SRAM run 2 lanes).
    num_colors : int
        Fabric colors (24).
    num_tasks, num_entries : int
        Size of the task table and of the launch-entry table.
    rx_depth : int
        Depth of each per-color input queue (2 or 4).
    out_depth : int
        Wavelets buffered per micro-thread for fabric output (4 or 8).

    Attributes
    ----------
    rx : In(LinkSignature)
        From the router's RAMP output. ``rx.ready`` is per color, from registered queue state.
    tx : Out(LinkSignature)
        To the router's RAMP input; ``valid`` only for a color whose ``tx.ready`` bit is set.
    cfg : In(CfgSignature(18))
        Host configuration and readback; SRAM at 0, registers at ``PE_REGS_BASE``.
    error : Out(1)
        Sticky: some error was raised (code in the ERROR register).
    busy : Out(1)
        An operation in flight, a task pending or a wavelet queued.
    """

    def __init__(self, *, sram_words=12288, banks=8, acc_words=64, num_dsrs=44, threads=8,
                 lanes=4, num_colors=NUM_COLORS, num_tasks=MAX_TASKS, num_entries=MAX_ENTRIES,
                 rx_depth=4, out_depth=8):
        def check(name, value, ok, what):
            if not isinstance(value, int) or isinstance(value, bool):
                self._MustUse__silence = True      # a rejected PE is not an unused design
                raise TypeError(f"{name} must be an int, not {value!r}")
            if not ok(value):
                self._MustUse__silence = True
                raise ValueError(f"{name}={value}: {what}")
        check("banks", banks, lambda v: v >= 2 and v & (v - 1) == 0, "must be a power of 2 >= 2")
        check("sram_words", sram_words, lambda v: v % banks == 0 and 0 < v <= 32768,
              "must be a multiple of banks and at most 32768")
        check("acc_words", acc_words, lambda v: 4 <= v <= 4096 and v % 4 == 0,
              "must be a multiple of 4 in 4..4096")
        check("num_dsrs", num_dsrs, lambda v: 1 <= v <= MAX_DSRS, f"must be 1..{MAX_DSRS}")
        check("threads", threads, lambda v: v in (2, 4, 8, 16), "must be 2, 4, 8 or 16")
        check("lanes", lanes, lambda v: v == 4, "the datapath is 64 bits: 4 FP16 lanes")
        check("num_colors", num_colors, lambda v: 1 <= v <= NUM_COLORS,
              f"must be 1..{NUM_COLORS}")
        check("num_tasks", num_tasks, lambda v: 1 <= v <= MAX_TASKS, f"must be 1..{MAX_TASKS}")
        check("num_entries", num_entries, lambda v: 1 <= v <= MAX_ENTRIES,
              f"must be 1..{MAX_ENTRIES}")
        check("rx_depth", rx_depth, lambda v: v in (2, 4), "must be 2 or 4")
        check("out_depth", out_depth, lambda v: v in (4, 8), "must be 4 or 8")
        self._p = dict(sram_words=sram_words, banks=banks, acc_words=acc_words,
                       num_dsrs=num_dsrs, threads=threads, lanes=lanes, num_colors=num_colors,
                       num_tasks=num_tasks, num_entries=num_entries, rx_depth=rx_depth,
                       out_depth=out_depth)
        super().__init__({
            "rx": In(LinkSignature()),
            "tx": Out(LinkSignature()),
            "cfg": In(CfgSignature(CFG_BITS)),
            "error": Out(1),
            "busy": Out(1),
        })

    @property
    def params(self):
        """The constructor parameters, as a dict."""
        return dict(self._p)

    @property
    def id_word(self):
        """Value of the read-only ID register (layout in docs/pe.md)."""
        p = self._p
        return encode_fields(IdWord, num_dsrs=p["num_dsrs"],
                             log2_banks=exact_log2(p["banks"]), threads_m1=p["threads"] - 1,
                             sram_div512=p["sram_words"] // 512,
                             acc_div4_m1=p["acc_words"] // 4 - 1)

    # ---------------------------------------------------------------------------------------
    def elaborate(self, platform):
        m = Module()
        p = self._p
        T, C, D, OD = p["threads"], p["num_colors"], p["rx_depth"], p["out_depth"]
        B = p["banks"]
        PAIRS = B // 2
        BANK_ROWS = p["sram_words"] // B
        ACC_ROWS = p["acc_words"] // 4
        NT = p["num_tasks"]
        TB = max(1, ceil_log2(T))
        CB = max(1, bits_for(C - 1))          # bits of a color index into per-color tables
        row_bits = exact_log2(B)

        # ================================ counters and errors ===============================
        counters = [Signal(32, name=f"ctr_{c.name.lower()}") for c in Counter]
        ctr_inc = {c: Signal(4, name=f"ctr_inc_{c.name.lower()}") for c in Counter}
        fmac_seen = Signal()
        ctr_clear = Signal()
        err_code = Signal(5)
        err_info = Signal(8)
        err_flags = Signal(32)
        err_sources = []          # (valid, code, info, from_inputs), in priority order

        def raise_error(valid, code, info, from_inputs=False):
            """``from_inputs``: ``valid`` depends on the PE's inputs (rx, cfg), not only on
            its registers (the others are merged apart, outside Verilator's input region)."""
            err_sources.append((valid, code, info, from_inputs))

        # ================================ per-color rx queues ===============================
        # D slot memories (one wavelet each per color); count/head per color in flops.
        q_rd = {port: [] for port in ("a", "b", "l")}
        q_wr = []
        for s in range(D):
            mem = memory.Memory(shape=QW, depth=C, init=[])
            m.submodules[f"q_slot{s}"] = mem
            q_wr.append(mem.write_port())
            for port in q_rd:
                q_rd[port].append(mem.read_port())
        # Count and head of each color's queue live in a memory, written at the colors of
        # this cycle's events (a push from rx, pops by the engine's operands a and b and by
        # the launcher); two bit vectors (full, non-empty) give every color at once.
        QS = data.StructLayout({"count": 3, "head": exact_log2(D)})
        m.submodules.q_state = q_state = memory.Memory(shape=QS, depth=C, init=[])
        q_full = Signal(C)
        q_nonempty = Signal(C)

        def q_read(color, name):
            """The (count, head) of ``color``'s queue, read combinationally."""
            rp = q_state.read_port(domain="comb")
            m.d.comb += rp.addr.eq(color[:CB])
            return rp.data

        def queue_entries(port, head):
            """The D queued wavelets read by ``port``, oldest first."""
            datas = [rp.data for rp in q_rd[port]]
            return [Array(datas)[(head + j)[:exact_log2(D)]] for j in range(D)]

        pop_a_color, pop_a_n = Signal(5), Signal(range(D + 1))
        pop_b_color, pop_b_n = Signal(5), Signal(range(D + 1))
        pop_l_color, pop_l = Signal(5), Signal()

        rx = self.rx
        rx_color = rx.payload.color
        cidx = rx_color[:CB]
        rx_take = _sig(m, rx.valid & (rx_color < C) & ~q_full.bit_select(cidx, 1), "rx_take", 1)
        rx_bad = rx.valid & (rx_color >= C)
        m.d.comb += rx.ready.eq(~q_full)
        raise_error(rx_bad, ErrorCode.BAD_COLOR, rx_color, from_inputs=True)
        m.d.comb += ctr_inc[Counter.WAVELETS_IN].eq(rx_take)
        events = [(rx_take, rx_color, 1, 0), (pop_a_n != 0, pop_a_color, pop_a_n, pop_a_n),
                  (pop_b_n != 0, pop_b_color, pop_b_n, pop_b_n),
                  (pop_l, pop_l_color, pop_l, pop_l)]
        full_next, nonempty_next = q_full, q_nonempty
        rx_slot = None
        for e, (valid, color, _, _) in enumerate(events):
            st = q_read(color, f"q_ev{e}")
            if e == 0:
                rx_slot = _sig(m, (st.head + st.count)[:exact_log2(D)], "rx_slot",
                               range(D))
            inc = sum(Mux(v & (c == color), 1, 0) for v, c, _, _ in events[:1])
            dec = sum(Mux(v & (c == color), n, 0) for v, c, n, _ in events[1:])
            hd = sum(Mux(v & (c == color), h, 0) for v, c, _, h in events[1:])
            new_count = _sig(m, st.count + inc - dec, f"q_ev{e}_count", 3)
            wp = q_state.write_port()
            m.d.comb += [wp.addr.eq(color[:CB]), wp.en.eq(valid),
                         wp.data.count.eq(new_count), wp.data.head.eq(st.head + hd)]
            bit = Const(1, C) << color[:CB]
            full_next = Mux(valid, (full_next & ~bit) | Mux(new_count == D, bit, 0), full_next)
            nonempty_next = Mux(valid, (nonempty_next & ~bit) | Mux(new_count != 0, bit, 0),
                                nonempty_next)
        m.d.sync += [q_full.eq(full_next), q_nonempty.eq(nonempty_next)]
        for sl in range(D):
            m.d.comb += [
                q_wr[sl].addr.eq(cidx),
                q_wr[sl].data.eq(Cat(rx.payload.data, rx.payload.index, rx.payload.ctrl)),
                q_wr[sl].en.eq(rx_take & (rx_slot == sl)),
            ]

        # ================================ configuration tables ==============================
        m.submodules.bind_mem = bind_mem = memory.Memory(shape=ColorBind, depth=C, init=[])
        bind_wr = bind_mem.write_port()
        bind_rd_host = bind_mem.read_port()
        bind_rd = bind_mem.read_port(domain="comb")
        bound_any = Signal(C)           # bit c: color c has a data or control binding
        m.submodules.task_mem = task_mem = memory.Memory(shape=TaskEntry, depth=NT, init=[])
        task_wr = task_mem.write_port()
        task_rd_host = task_mem.read_port()
        task_rd = task_mem.read_port(domain="comb")
        blocked = Signal(NT)
        parked = Signal(C + 1)
        unpark = Signal()

        m.submodules.entry_mem = entry_mem = memory.Memory(
            shape=64, depth=p["num_entries"], init=[])
        entry_wr = entry_mem.write_port(granularity=32)
        entry_rd_host = entry_mem.read_port()
        entry_rd = entry_mem.read_port(domain="comb")

        # The DSR file: one memory per 32-bit word.
        dsr_mems = []
        for w in range(DSR_WORDS):
            mem = memory.Memory(shape=32, depth=p["num_dsrs"], init=[])
            m.submodules[f"dsr_w{w}"] = mem
            dsr_mems.append(mem)
        dsr_wr_host = [mem.write_port() for mem in dsr_mems]
        dsr_rd_host = [mem.read_port() for mem in dsr_mems]
        dsr_wr_back = [dsr_mems[7].write_port() for _ in ROLES]
        dsr_rd = {r: [mem.read_port() for mem in dsr_mems] for r in ROLES}
        dsr_rd["s"] = [dsr_mems[0].read_port(), dsr_mems[1].read_port()]

        # ================================ the task launcher =================================
        # An activation pops the head wavelet of a bound color (or takes the host trigger),
        # then issues the task's launch entries, one LaunchRequest per accepted cycle.
        launch_valid = Signal()
        launch_ready = Signal()
        launch = Signal(LaunchRequest)

        trig_valid = Signal()
        trig = Signal(HostTrigger, reset_less=True)      # read only under trig_valid

        SRC = C + 1                  # colors, then the host trigger
        k_state = Signal(2)          # 0 idle, 1 decode, 2 launch
        k_src = Signal(range(SRC))
        k_last_src = Signal(range(SRC))
        k_ptr = Signal(6)
        k_data = Signal(16, reset_less=True)             # read only in state 2
        k_index = Signal(10, reset_less=True)
        cand = Cat(q_nonempty & bound_any, trig_valid) & ~parked
        k_pick_any, k_pick = _round_robin(m, cand, k_last_src, SRC, "k_pick")
        for rp in q_rd["l"]:
            m.d.comb += rp.addr.eq(k_pick)

        # DECODE: the head wavelet of the chosen source and its task.
        k_head = queue_entries("l", q_read(k_src, "k_q").head)[0]
        k_is_trig = k_src == C
        k_w_data = Mux(k_is_trig, trig.data, k_head[0:16])
        k_w_index = Mux(k_is_trig, trig.index, k_head[16:26])
        k_w_ctrl = Mux(k_is_trig, 0, k_head[26])
        m.d.comb += bind_rd.addr.eq(k_src[:CB])
        k_bind = bind_rd.data
        # A wavelet whose kind (data / control) has no binding on its color waits parked.
        k_unbound = ~k_is_trig & Mux(k_w_ctrl, ~k_bind.ctrl_en, ~k_bind.data_en)
        k_task_wide = _sig(m, Mux(k_is_trig, trig.task,
                                  Mux(k_w_ctrl, k_bind.ctrl_base + k_w_index,
                                      k_bind.data_task)), "k_task_wide", 11)
        k_task_bad = k_task_wide >= NT
        k_task = k_task_wide[:max(1, bits_for(NT - 1))]
        k_blocked = blocked.bit_select(k_task, 1)
        m.d.comb += task_rd.addr.eq(k_task)

        entry = data.View(LaunchEntry, entry_rd.data)
        m.d.comb += entry_rd.addr.eq(k_ptr)
        m.d.comb += [
            launch.launch.eq(entry.launch), launch.data.eq(k_data), launch.index.eq(k_index),
        ]
        k_pop = Signal()
        m.d.comb += [pop_l.eq(k_pop & ~k_is_trig), pop_l_color.eq(k_src)]
        k_can_pick = (k_state == 0) | ((k_state == 2) & launch_ready & entry.last)
        with m.If(k_can_pick):
            with m.If(k_pick_any):
                m.d.sync += [k_src.eq(k_pick), k_last_src.eq(k_pick), k_state.eq(1)]
            with m.Else():
                m.d.sync += k_state.eq(0)
        with m.If(k_state == 1):
            with m.If(k_task_bad):
                m.d.comb += k_pop.eq(1)
                m.d.sync += k_state.eq(0)
            with m.Elif(k_blocked | k_unbound):
                m.d.sync += [parked.bit_select(k_src, 1).eq(1), k_state.eq(0)]
            with m.Else():
                m.d.comb += [k_pop.eq(1), ctr_inc[Counter.TASKS].eq(1)]
                m.d.sync += [k_data.eq(k_w_data), k_index.eq(k_w_index),
                             k_ptr.eq(task_rd.data.entry), k_state.eq(2)]
        raise_error((k_state == 1) & k_task_bad, ErrorCode.BAD_TASK, k_task_wide[:8])
        with m.If(k_state == 2):
            m.d.comb += launch_valid.eq(1)
            with m.If(launch_ready & ~entry.last):
                m.d.sync += k_ptr.eq(k_ptr + 1)
        with m.If(k_pop & k_is_trig):
            m.d.sync += trig_valid.eq(0)
        with m.If(unpark):
            m.d.sync += parked.eq(0)

        # ================================ micro-thread state ================================
        # Flops: what the scheduler checks for every thread each cycle, and what is fixed at
        # launch. Memories indexed by thread: the iteration state and the constants, which
        # only the issuing thread needs.
        th_active = Signal(T)
        th_done = Signal(T)
        # What is written at launch and read only for active threads needs no reset (a reset
        # register's next state depends on the rst input, so Verilator evaluates it in the
        # input-combinational region too, twice per clock).
        th_dep = [Signal(T, name=f"th{t}_dep", reset_less=True) for t in range(T)]
        th_credits = [Signal(range(OD + 1), name=f"th{t}_credits") for t in range(T)]
        th_ocount = [Signal(range(OD + 1), name=f"th{t}_ocount") for t in range(T)]
        th_orp = [Signal(exact_log2(OD), name=f"th{t}_orp") for t in range(T)]
        th_owp = [Signal(exact_log2(OD), name=f"th{t}_owp") for t in range(T)]
        th_k0dst = [Signal(12, name=f"th{t}_k0dst", reset_less=True) for t in range(T)]
        th_ocolor = [Signal(5, name=f"th{t}_ocolor") for t in range(T)]   # tx: reset as before
        role_meta = data.StructLayout({"kind": 3, "dtype": 1, "color": 5})
        meta_layout = data.StructLayout({"prio": 2, "dst": role_meta, "a": role_meta,
                                         "b": role_meta})
        # A resource as a key range: (space << 16 | address), so that one pair of compares
        # tests "same space and overlapping"; an unused operand has an empty range.
        res_layout = data.StructLayout({"lo": 19, "hi": 19, "w": 1})
        th_meta = [Signal(meta_layout, name=f"th{t}_meta", reset_less=True) for t in range(T)]
        th_res = {r: [Signal(res_layout, name=f"th{t}_{r}_res", reset_less=True)
                      for t in range(T)] for r in ROLES}
        th_prio = [th_meta[t].prio for t in range(T)]
        th = {}
        for r in ROLES:
            th[r] = {f: [getattr(getattr(th_meta[t], r), f) for t in range(T)]
                     for f in ("kind", "dtype", "color")}
            th[r].update({f: [getattr(th_res[r][t], f) for t in range(T)]
                          for f in ("lo", "hi", "w")})
        # Fixed at launch, read for the issuing thread / the thread sending on tx only.
        sel_meta = data.StructLayout({"op": 4, "clear": 1})
        out_meta = data.StructLayout({"ctrl": 1, "index": 10})
        m.submodules.sel_meta = sel_meta_mem = memory.Memory(shape=sel_meta, depth=T, init=[])
        m.submodules.out_meta = out_meta_mem = memory.Memory(shape=out_meta, depth=T, init=[])
        sel_meta_wr, sel_meta_rd = sel_meta_mem.write_port(), sel_meta_mem.read_port(domain="comb")
        out_meta_wr, out_meta_rd = out_meta_mem.write_port(), out_meta_mem.read_port(domain="comb")
        st_wr_issue, st_wr_launch, st_rd = {}, {}, {}
        c_wr, c_rd = {}, {}
        for r in ROLES:
            mem = memory.Memory(shape=_STATE, depth=T, init=[])
            m.submodules[f"state_{r}"] = mem
            st_wr_issue[r], st_wr_launch[r] = mem.write_port(), mem.write_port()
            st_rd[r] = mem.read_port(domain="comb")
            for g, shape in _CONST_GROUPS.items():
                if g == "value" and r == "dst":
                    continue
                mem = memory.Memory(shape=shape, depth=T, init=[])
                m.submodules[f"const_{r}_{g}"] = mem
                c_wr[r, g] = mem.write_port()
                c_rd[r, g] = mem.read_port(domain="comb")
        m.submodules.const_s = s_mem = memory.Memory(shape=33, depth=T, init=[])
        c_wr["s"] = s_mem.write_port()
        c_rd["s"] = s_mem.read_port(domain="comb")

        # ================================ launch stage ======================================
        # L0: accept a LaunchRequest, read its DSRs. L1: decode, check, order, allocate.
        l1_valid = Signal()
        l1_req = Signal(LaunchRequest, reset_less=True)   # read only under l1_valid
        l1_idle = l1_req.as_value()          # what L1's decoded values are without a launch
        free = ~th_active
        free_count = sum(free[t] for t in range(T))
        # A launch reading a DSR that the launch in L1 writes back waits a cycle.
        l1_wb = {r: Signal(name=f"l1_{r}_wb") for r in ROLES}
        wb_hazard = Const(0, 1)
        for r in ROLES:
            for q in ROLES + ("s",):
                wb_hazard = wb_hazard | (l1_wb[r] & (getattr(l1_req.launch, r)
                                                     == getattr(launch.launch, q)))
        # Both read only with launch_valid (see _sig).
        wb_hazard = _sig(m, l1_valid & wb_hazard, "l0_wb_hazard", when=launch_valid,
                         idle=l1_valid)
        m.d.comb += launch_ready.eq(Mux(launch_valid, Mux(l1_valid, free_count >= 2,
                                                          free_count >= 1) & ~wb_hazard,
                                        l1_valid))
        for r in ROLES + ("s",):
            for rp in dsr_rd[r]:
                m.d.comb += [rp.addr.eq(getattr(launch.launch, r)),
                             rp.en.eq(launch_valid & launch_ready)]
        m.d.sync += l1_valid.eq(launch_valid & launch_ready)
        with m.If(launch_valid & launch_ready):
            m.d.sync += l1_req.eq(launch)

        op = l1_req.launch.op.as_value()
        op_uses_b = ((op == _OP["FADD"]) | (op == _OP["FSUB"]) | (op == _OP["FMUL"])
                     | (op == _OP["FMAC"]) | (op == _OP["FMAX"]))
        op_uses_s = op == _OP["FMAC"]
        op_bad = op > _OP["FNEG"]
        L = {}
        for i, r in enumerate(ROLES):
            L[r] = self._launch_role(m, r, i, _DSRWords([rp.data for rp in dsr_rd[r]]),
                                     getattr(l1_req.launch, r), l1_req, bound_any,
                                     need={"dst": Const(1), "a": Const(1), "b": op_uses_b}[r],
                                     valid=l1_valid, idle=l1_idle)
        # The scalar operand s (FMAC): a SCALAR DSR or the trigger wavelet.
        s_words = [rp.data for rp in dsr_rd["s"]]
        s_id = l1_req.launch.s
        s_wave = s_id == DSR_WAVELET
        s_kind = s_words[0][:3]
        s_bad = op_uses_s & ~s_wave & ((s_id >= p["num_dsrs"]) | (s_kind != _K["SCALAR"]))
        s_value = Mux(s_wave, l1_req.data, s_words[1])
        s_16 = Mux(s_wave, 1, s_words[0][3] == DType.FP16.value)
        clear_bad = l1_req.launch.clear_a & ((L["a"]["kind"] != _K["ACC"])
                                      | (L["dst"]["kind"] == _K["ACC"]))

        # Error of this launch: the first failing check, in a fixed order.
        l1_err_code = Signal(5)
        l1_err_info = Signal(8)
        # Both sources on one fabric color: they would pop the same queue and read the same
        # wavelets (n of every 2n lost), so the launch is refused.
        fin_twice = op_uses_b & (L["a"]["kind"] == _K["FIN"]) & (L["b"]["kind"] == _K["FIN"]) \
            & (L["a"]["cur"][:5] == L["b"]["cur"][:5])
        checks = [(op_bad | s_bad | clear_bad | fin_twice, ErrorCode.BAD_OPERAND,
                   Mux(s_bad, s_id, Mux(clear_bad, l1_req.launch.a, Mux(fin_twice, l1_req.launch.b, 0x3F))))]
        # The datapath rounds an FMAC to FP32 first: into FP16 that would be two roundings
        # (SPEC 6 wants one), so such a launch is refused rather than silently inexact.
        fmac16 = op_uses_s & (L["dst"]["dtype"] == DType.FP16.value)
        checks.append((fmac16, ErrorCode.UNSUPPORTED, l1_req.launch.dst))
        for key, code in (("bad_operand", ErrorCode.BAD_OPERAND),
                          ("bad_color", ErrorCode.BAD_COLOR),
                          ("zero", ErrorCode.ZERO_LENGTH), ("misaligned", ErrorCode.MISALIGNED),
                          ("oob", ErrorCode.OUT_OF_BOUNDS),
                          ("overflow", ErrorCode.FIFO_OVERFLOW),
                          ("underflow", ErrorCode.FIFO_UNDERFLOW)):
            for r in ROLES:
                checks.append((L[r][key], code, getattr(l1_req.launch, r)))
        err_code_sel, err_info_sel = Const(0, 5), Const(0, 8)
        for valid, code, info in reversed(checks):
            err_code_sel = Mux(valid, code, err_code_sel)
            err_info_sel = Mux(valid, info, err_info_sel)
        m.d.comb += [l1_err_code.eq(Mux(l1_valid, err_code_sel, l1_idle)),
                     l1_err_info.eq(Mux(l1_valid, err_info_sel, l1_idle))]
        l1_error = l1_valid & (l1_err_code != 0)
        raise_error(l1_error, l1_err_code, l1_err_info)
        l1_go = _sig(m, l1_valid & (l1_err_code == 0), "l1_go", 1)

        # Ordering: the new operation depends on every live older one it conflicts with.
        dep_new = Signal(T)
        key_lo = {r: _sig(m, Mux(L[r]["space"] == SPACE_NONE, 0x7FFFF,
                                 Cat(L[r]["lo"], L[r]["space"])), f"l1_{r}_klo", 19,
                          when=l1_valid, idle=l1_idle)
                  for r in ROLES}
        key_hi = {r: _sig(m, Mux(L[r]["space"] == SPACE_NONE, 0,
                                 Cat(L[r]["hi"], L[r]["space"])), f"l1_{r}_khi", 19,
                          when=l1_valid, idle=l1_idle)
                  for r in ROLES}
        dep_terms = []
        for t in range(T):
            terms = []
            for r in ROLES:
                for q in ROLES:
                    overlap = ((key_lo[r] <= th[q]["hi"][t]) & (th[q]["lo"][t] <= key_hi[r]))
                    if r == "dst" or q == "dst":      # a destination always writes
                        terms.append(overlap)
                    else:
                        terms.append(overlap & (L[r]["w"] | th[q]["w"][t]))
            dep_terms.append(th_active[t] & Cat(*terms).any())
        m.d.comb += dep_new.eq(Mux(l1_valid, Cat(*dep_terms), l1_idle))
        _, slot = _lowest(m, free, T, "l1_slot")
        slot = _sig(m, slot[:TB], "l1_slot")
        m.d.comb += ctr_inc[Counter.LAUNCHES].eq(l1_go)
        meta_l1 = Signal(meta_layout)
        res_l1 = {r: Signal(res_layout, name=f"l1_{r}_res_l1") for r in ROLES}
        m.d.comb += meta_l1.prio.eq(l1_req.launch.prio)
        for r in ROLES:
            rm = getattr(meta_l1, r)
            m.d.comb += [rm.kind.eq(L[r]["kind"]), rm.dtype.eq(L[r]["dtype"]),
                         rm.color.eq(L[r]["cur"][:5]),
                         res_l1[r].lo.eq(key_lo[r]), res_l1[r].hi.eq(key_hi[r]),
                         res_l1[r].w.eq(L[r]["w"])]
        # Written to a thread's flops only at a launch (see _sig for the multiplexer).
        meta_new = Signal(meta_layout)
        res_new = {r: Signal(res_layout, name=f"l1_{r}_res") for r in ROLES}
        m.d.comb += meta_new.eq(Mux(l1_valid, meta_l1, l1_idle))
        for r in ROLES:
            m.d.comb += res_new[r].eq(Mux(l1_valid, res_l1[r], l1_idle))
        m.d.comb += [
            sel_meta_wr.addr.eq(slot), sel_meta_wr.en.eq(l1_go),
            sel_meta_wr.data.op.eq(op), sel_meta_wr.data.clear.eq(l1_req.launch.clear_a),
            out_meta_wr.addr.eq(slot), out_meta_wr.en.eq(l1_go),
            out_meta_wr.data.ctrl.eq(L["dst"]["ctrl"]),
            out_meta_wr.data.index.eq(L["dst"]["out_index"]),
        ]

        for r in ROLES:
            init = st_wr_launch[r]
            m.d.comb += [init.addr.eq(slot), init.en.eq(l1_go), init.data.cur.eq(L[r]["cur"])]
            for i in range(4):
                m.d.comb += init.data.k[i].eq(L[r]["len"][i])
            values = {"len": Cat(*L[r]["len"]), "jump": Cat(*L[r]["jump"]),
                      "addr": Cat(L[r]["step0"], L[r]["start"]),
                      "wrap": Cat(L[r]["wrap_hi"], L[r]["wrap_size"]), "value": L[r]["value"]}
            for g in _CONST_GROUPS:
                if (r, g) in c_wr:
                    port = c_wr[r, g]
                    m.d.comb += [port.addr.eq(slot), port.en.eq(l1_go),
                                 port.data.eq(values[g])]
        m.d.comb += [c_wr["s"].addr.eq(slot), c_wr["s"].en.eq(l1_go),
                     c_wr["s"].data.eq(Cat(s_value, s_16))]
        # Write-back of the DSRs' hardware-updated word 7 (auto-advance, FIFO positions).
        for i, r in enumerate(ROLES):
            port = dsr_wr_back[i]
            m.d.comb += [
                l1_wb[r].eq(l1_valid & L[r]["wb"]),
                port.addr.eq(getattr(l1_req.launch, r)),
                port.data.eq(L[r]["wb_word"]),
                port.en.eq(l1_go & L[r]["wb"]),
            ]

        # ================================ scheduler =========================================
        kinds = {r: Array(th[r]["kind"]) for r in ROLES}
        elig = Signal(T)
        blk_in = Signal(T)
        blk_out = Signal(T)
        has_work = Signal(T)
        for t in range(T):
            work = _sig(m, th_active[t] & ~th_done[t], f"th{t}_work")
            dep_ok = (th_dep[t] & th_active) == 0
            fin_ok = Const(1, 1)
            for r in ("a", "b"):
                kind = th[r]["kind"][t]
                is32 = th[r]["dtype"][t]
                # Wait for a full vector (or the rest of the dimension) before issuing.
                want = _min(th_k0dst[t], Mux(is32, D // 2, min(D, 4)))
                need = Mux(is32, want << 1, want)[:3]
                level = q_read(th[r]["color"][t], f"q_th{t}_{r}").count
                fin_ok = fin_ok & ((kind != _K["FIN"]) | (level >= need))
            o32 = th["dst"]["dtype"][t]
            owant = _min(th_k0dst[t], Mux(o32, 2, 4))
            oneed = Mux(o32, owant << 1, owant)
            fout_ok = (th["dst"]["kind"][t] != _K["FOUT"]) | ((OD - th_credits[t]) >= oneed)
            # Read only with work: not evaluated by Verilator's model without (see _sig).
            fin_ok = _sig(m, fin_ok, f"th{t}_fin_ok", 1, when=work, idle=th_done[t])
            fout_ok = _sig(m, fout_ok, f"th{t}_fout_ok", 1, when=work, idle=th_done[t])
            m.d.comb += [
                has_work[t].eq(work),
                elig[t].eq(work & dep_ok & fin_ok & fout_ok),
                blk_in[t].eq(work & ~fin_ok),
                blk_out[t].eq(work & ~fout_ok),
            ]
        # The eligible threads of the highest priority present: keep those with the high
        # priority bit if any, then of these those with the low bit if any.
        prio_hi = Cat(*[th_prio[t][1] for t in range(T)])
        prio_lo = Cat(*[th_prio[t][0] for t in range(T)])
        elig_hi = _sig(m, elig & prio_hi, "i_elig_hi", T)
        elig_top = _sig(m, Mux(elig_hi.any(), elig_hi, elig), "i_elig_top", T)
        elig_lo = _sig(m, elig_top & prio_lo, "i_elig_lo", T)
        top_mask = Mux(elig_lo.any(), elig_lo, elig_top)
        rr_last = Signal(range(T))
        any_elig, sel = _round_robin(m, top_mask, rr_last, T, "i_sel")
        sel = _sig(m, sel[:TB], "i_sel")

        # ================================ issue (I) =========================================
        I = {}
        for r in ROLES:
            m.d.comb += st_rd[r].addr.eq(sel)
            for g in _CONST_GROUPS:
                if (r, g) in c_rd:
                    m.d.comb += c_rd[r, g].addr.eq(sel)
            cw = c_rd[r, "wrap"].data
            ca = c_rd[r, "addr"].data
            I[r] = {
                "kind": _sig(m, kinds[r][sel], f"i_{r}_kind", 3),
                "dtype": _sig(m, Array(th[r]["dtype"])[sel], f"i_{r}_dtype", 1),
                "cur": st_rd[r].data.cur,
                "k": [st_rd[r].data.k[i] for i in range(4)],
                "len": [c_rd[r, "len"].data[i] for i in range(4)],
                "jump": [c_rd[r, "jump"].data[i] for i in range(3)],
                "step0": ca.step0, "start": ca.start, "wrap_hi": cw.hi, "wrap_size": cw.size,
                "value": c_rd[r, "value"].data if (r, "value") in c_rd else Const(0, 32),
            }
        m.d.comb += c_rd["s"].addr.eq(sel)
        i_credits = _sig(m, Array(th_credits)[sel], "i_credits", range(OD + 1))
        m.d.comb += sel_meta_rd.addr.eq(sel)
        i_op = _sig(m, sel_meta_rd.data.op, "i_op", 4)
        i_clear = _sig(m, sel_meta_rd.data.clear, "i_clear", 1)
        # Lanes each operand can supply or take this cycle.
        avail = {}
        for r in ROLES:
            o = I[r]
            kind, is32, cur, k0 = o["kind"], o["dtype"], o["cur"], o["k"][0]
            sram = _is(kind, "MEM", "FIFO")
            o["esz"] = esz = Mux(is32 & sram, 2, 1)
            o["unit"] = o["step0"] == esz
            to_end = Mux(sram & is32, 2 - cur[1], 4 - cur[:2])
            qst = q_read(cur[:5], f"q_i_{r}")
            qn = qst.count
            o["qhead"] = qst.head
            free_o = OD - i_credits
            to_wrap = (o["wrap_hi"] - cur)[:17]
            to_wrap = Mux(is32, to_wrap >> 1, to_wrap)
            av = Signal(3, name=f"i_avail_{r}")
            with m.If(kind == _K["FIFO"]):
                m.d.comb += av.eq(_min(_min(k0, to_end), to_wrap))
            with m.Elif(_is(kind, *_ADDRESSED)):
                m.d.comb += av.eq(Mux(o["unit"], _min(k0, to_end), 1))
            with m.Elif(kind == _K["FIN"]):
                m.d.comb += av.eq(Mux(is32, _min(qn >> 1, 2), _min(qn, 4)))
            with m.Elif(kind == _K["FOUT"]):
                m.d.comb += av.eq(_min(k0, Mux(is32, _min(free_o >> 1, 2), _min(free_o, 4))))
            with m.Elif(kind == _K["NULL"]):
                m.d.comb += av.eq(_min(k0, 4))
            with m.Else():
                m.d.comb += av.eq(4)
            avail[r] = av
        i_n = _sig(m, _min(avail["dst"], _min(avail["a"], avail["b"])), "i_n", 3)

        # SRAM banks touched by the reads (a, b) and the eventual write (dst).
        def banks_of(o, name):
            cur, is32 = o["cur"], o["dtype"]
            w0 = cur[1:]
            last_half = cur + Mux(o["unit"] & ~is32, i_n - 1, 0)
            wl = Mux(is32, w0 + Mux(o["unit"], i_n - 1, 0), last_half[1:])
            return _sig(m, Mux(_is(o["kind"], "MEM", "FIFO"),
                               (Const(1, B) << w0[:row_bits]) | (Const(1, B) << wl[:row_bits]),
                               0), f"i_banks_{name}", B)
        mask_a, mask_b, mask_d = (banks_of(I[r], r) for r in ("a", "b", "dst"))

        # Pipeline records: stage 1 carries everything the read stage needs, stages 2..4
        # what the write-back needs (narrow fields, no wide struct).
        WB_FIELDS = {"valid": 1, "thread": TB, "n": 3, "dst_kind": 3, "dst_dtype": 1,
                     "dst_addr": 16, "raw": 1, "wmask": B, "clear": 1, "clr_addr": 16,
                     "w_valid": 1, "w_space": 3, "w_line": 14}
        R_FIELDS = {"op": 4, "s_value": 32, "s16": 1}
        for r in ("a", "b"):
            R_FIELDS.update({f"{r}_kind": 3, f"{r}_dtype": 1, f"{r}_off": 2,
                             f"{r}_pair": max(1, exact_log2(PAIRS)),
                             f"{r}_head": exact_log2(D), f"{r}_value": 32})
        stage = [None]
        for k in range(1, 5):
            fields = dict(WB_FIELDS, **(R_FIELDS if k == 1 else {}))
            # Only "valid" is reset: every other field is read under it.
            stage.append({f: Signal(w, name=f"s{k}_{f}", reset_less=f != "valid")
                          for f, w in fields.items()})
        s1, s4 = stage[1], stage[4]

        same_line = I["a"]["cur"][2:] == I["b"]["cur"][2:]
        wb_mask = Mux(s4["valid"], s4["wmask"], 0)
        # Two reads of one single-port bank serialise: the first attempt stalls a cycle
        # ("paid"), the retry of the same thread then goes. A read of a bank the write-back
        # uses this cycle stalls until the write is done.
        conflict_ab = _sig(m, (mask_a & mask_b).any() & ~same_line, "i_conflict_ab")
        conflict_wb = _sig(m, ((mask_a | mask_b) & wb_mask).any(), "i_conflict_wb")
        ab_paid = Signal()
        ab_paid_thread = Signal(TB, reset_less=True)     # read only under ab_paid
        bank_conflict = _sig(m, conflict_wb | (conflict_ab & ~(ab_paid & (ab_paid_thread == sel))),
                             "i_bank_conflict", 1)
        # Read after write: a source line with a write still in the pipeline (the write of
        # this very cycle is forwarded by the accumulator cache, and blocks an SRAM bank).
        raw_terms = []
        for r in ("a", "b"):
            kind, cur = I[r]["kind"], I[r]["cur"]
            space = Mux(kind == _K["ACC"], SPACE_ACC, SPACE_SRAM)
            for st in stage[1:4]:
                raw_terms.append(_is(kind, *_ADDRESSED) & st["valid"] & st["w_valid"]
                                 & (st["w_space"] == space) & (st["w_line"] == cur[2:]))
                raw_terms.append((kind == _K["ACC"]) & st["valid"] & st["clear"]
                                 & (st["clr_addr"][2:] == cur[2:]))
        raw_hit = _sig(m, Cat(*raw_terms).any(), "i_raw_hit")
        i_go = _sig(m, any_elig & ~bank_conflict & ~raw_hit, "i_go", 1)
        m.d.sync += [ab_paid.eq(any_elig & conflict_ab & ~i_go), ab_paid_thread.eq(sel)]

        # Next state of each operand: advance by i_n elements through up to 4 dimensions.
        for r in ROLES:
            o = I[r]
            kind, cur, k = o["kind"], o["cur"], o["k"]
            n = i_n
            within = (cur + Mux(o["unit"], Mux(o["esz"] == 2, n << 1, n), o["step0"]))[:16]
            last = (cur + Mux(o["unit"] & (n > 1),
                              Mux(o["esz"] == 2, (n - 1) << 1, n - 1), 0))[:16]
            nxt_cur = Signal(16, name=f"i_next_{r}_cur")
            nxt_k = [Signal(12, name=f"i_next_{r}_k{i}") for i in range(4)]
            wrapped = Signal(name=f"i_wrapped_{r}")
            m.d.comb += [nxt_k[i].eq(k[i]) for i in range(4)]
            with m.If(k[0] > n):
                m.d.comb += [nxt_k[0].eq(k[0] - n), nxt_cur.eq(within)]
            with m.Else():
                m.d.comb += nxt_k[0].eq(o["len"][0])
                with m.If(k[1] > 1):
                    m.d.comb += [nxt_k[1].eq(k[1] - 1), nxt_cur.eq(last + o["jump"][0])]
                with m.Else():
                    m.d.comb += nxt_k[1].eq(o["len"][1])
                    with m.If(k[2] > 1):
                        m.d.comb += [nxt_k[2].eq(k[2] - 1), nxt_cur.eq(last + o["jump"][1])]
                    with m.Else():
                        m.d.comb += nxt_k[2].eq(o["len"][2])
                        with m.If(k[3] > 1):
                            m.d.comb += [nxt_k[3].eq(k[3] - 1),
                                         nxt_cur.eq(last + o["jump"][2])]
                        with m.Else():
                            m.d.comb += [nxt_k[3].eq(o["len"][3]), nxt_cur.eq(o["start"]),
                                         wrapped.eq(1)]
            fifo_cur = Mux((kind == _K["FIFO"]) & (nxt_cur >= o["wrap_hi"]),
                           nxt_cur - o["wrap_size"], nxt_cur)[:16]
            iterates = _is(kind, *_ITERATING)
            port = st_wr_issue[r]
            m.d.comb += [port.addr.eq(sel), port.en.eq(i_go),
                         port.data.cur.eq(Mux(_is(kind, *_ADDRESSED), fifo_cur, cur))]
            for i in range(4):
                m.d.comb += port.data.k[i].eq(Mux(iterates, nxt_k[i], k[i]))
            o["next_k0"] = nxt_k[0]
            o["wrapped"] = wrapped
        i_done = I["dst"]["wrapped"]
        i_fout = I["dst"]["kind"] == _K["FOUT"]
        i_owave = Mux(I["dst"]["dtype"], i_n << 1, i_n)
        with m.If(i_go):
            m.d.sync += rr_last.eq(sel)

        # Pops of fabric inputs.
        for r, (pc, pn) in (("a", (pop_a_color, pop_a_n)), ("b", (pop_b_color, pop_b_n))):
            o = I[r]
            m.d.comb += [pc.eq(o["cur"][:5]),
                         pn.eq(Mux(i_go & (o["kind"] == _K["FIN"]),
                                   Mux(o["dtype"], i_n << 1, i_n), 0))]
        # Counters of the datapath; a cycle with work and no issue is a stall of one cause.
        m.d.comb += [
            ctr_inc[Counter.BUSY].eq(i_go),
            ctr_inc[Counter.FMAC_LANES].eq(Mux(i_go & (i_op == _OP["FMAC"]), i_n, 0)),
        ]
        stall = has_work.any() & ~i_go
        no_cand = stall & ~any_elig
        m.d.comb += [
            ctr_inc[Counter.STALL_BANK].eq(stall & any_elig & bank_conflict),
            ctr_inc[Counter.STALL_OUTPUT].eq(no_cand & blk_out.any()),
            ctr_inc[Counter.STALL_INPUT].eq(no_cand & ~blk_out.any() & blk_in.any()),
            ctr_inc[Counter.STALL_HAZARD].eq((stall & any_elig & ~bank_conflict)
                                             | (no_cand & ~blk_out.any() & ~blk_in.any())),
        ]

        # The issue record entering the pipeline.
        d = I["dst"]
        dst_sram = _is(d["kind"], "MEM", "FIFO")
        dst_acc = d["kind"] == _K["ACC"]
        rec = {
            "valid": i_go, "thread": sel, "n": i_n, "op": i_op,
            "dst_kind": d["kind"], "dst_dtype": d["dtype"], "dst_addr": d["cur"],
            "raw": (i_op == _OP["FMOV"]) & (d["dtype"] == I["a"]["dtype"]),
            "wmask": mask_d, "clear": i_clear, "clr_addr": I["a"]["cur"],
            # The destination's pending write; a clear_a adds a second one, of the
            # accumulator line at clr_addr (the destination is then SRAM or a stream).
            "w_valid": dst_sram | dst_acc,
            "w_space": Mux(dst_sram, SPACE_SRAM, SPACE_ACC),
            "w_line": d["cur"][2:],
            "s_value": c_rd["s"].data[:32], "s16": c_rd["s"].data[32],
        }
        for r in ("a", "b"):
            o = I[r]
            sram = _is(o["kind"], "MEM", "FIFO")
            rec.update({
                f"{r}_kind": o["kind"], f"{r}_dtype": o["dtype"],
                f"{r}_off": Mux(sram & o["dtype"], o["cur"][1], o["cur"][:2]),
                f"{r}_pair": o["cur"][2:2 + exact_log2(PAIRS)] if PAIRS > 1 else Const(0, 1),
                f"{r}_head": o["qhead"],
                f"{r}_value": o["value"],
            })
        for f, sig in s1.items():
            m.d.sync += sig.eq(rec[f])
        for k in range(2, 5):
            for f, sig in stage[k].items():
                m.d.sync += sig.eq(stage[k - 1][f])

        # Thread bookkeeping: launch allocation, issue completion, retirement (as bit-vector
        # operations on all threads at once).
        sel_hot = _sig(m, Mux(i_go, Const(1, T) << sel, 0), "i_sel_hot", T)
        slot_hot = _sig(m, Mux(l1_go, Const(1, T) << slot, 0), "l1_slot_hot", T)
        is_fout = Cat(*[th["dst"]["kind"][t] == _K["FOUT"] for t in range(T)])
        no_credit = Cat(*[th_credits[t] == 0 for t in range(T)])
        finishing = Mux(i_done, sel_hot, 0)
        retiring = (finishing & ~is_fout) | (th_done & no_credit)
        m.d.sync += [th_active.eq((th_active & ~retiring) | slot_hot),
                     th_done.eq((th_done | finishing) & ~slot_hot)]
        for t in range(T):
            with m.If(sel_hot[t]):
                m.d.sync += th_k0dst[t].eq(I["dst"]["next_k0"])
            with m.If(slot_hot[t]):
                m.d.sync += [th_dep[t].eq(dep_new), th_k0dst[t].eq(L["dst"]["len"][0]),
                             th_meta[t].eq(meta_new), th_ocolor[t].eq(meta_new.dst.color)]
                for r in ROLES:
                    m.d.sync += th_res[r][t].eq(res_new[r])
            with m.Else():
                # A slot being reused: nobody depends on its previous occupant any more.
                m.d.sync += th_dep[t].eq(th_dep[t] & ~slot_hot)

        # ================================ SRAM, accumulator cache ===========================
        banks = []
        for b in range(B):
            mem = memory.Memory(shape=32, depth=BANK_ROWS, init=[])
            m.submodules[f"bank{b}"] = mem
            banks.append({"wr": mem.write_port(granularity=16), "rd_a": mem.read_port(),
                          "rd_b": mem.read_port(), "hwr": mem.write_port(granularity=16),
                          "hrd": mem.read_port()})
        for b in range(B):
            m.d.comb += [banks[b]["rd_a"].addr.eq(I["a"]["cur"][1 + row_bits:]),
                         banks[b]["rd_b"].addr.eq(I["b"]["cur"][1 + row_bits:])]
        # Accumulator cache: 4 lane columns (word w in column w % 4, row w // 4), reads
        # forwarded from the write-back of the same cycle.
        acc = []
        for j in range(4):
            mem = memory.Memory(shape=32, depth=ACC_ROWS, init=[])
            m.submodules[f"acc{j}"] = mem
            wr = mem.write_port()
            acc.append({"wr": wr, "rd_a": mem.read_port(transparent_for=(wr,)),
                         "rd_b": mem.read_port(transparent_for=(wr,)),
                         "hwr": mem.write_port(), "hrd": mem.read_port()})
            m.d.comb += [acc[j]["rd_a"].addr.eq(I["a"]["cur"][2:]),
                         acc[j]["rd_b"].addr.eq(I["b"]["cur"][2:])]
        for port in ("a", "b"):
            for rp in q_rd[port]:
                m.d.comb += rp.addr.eq(I[port]["cur"][:5])

        # ================================ read stage (R) ====================================
        def operand_lanes(r):
            """Raw 32-bit lanes of operand r in stage R and whether they are FP16."""
            kind, is32, off = s1[f"{r}_kind"], s1[f"{r}_dtype"], s1[f"{r}_off"]
            port = f"rd_{r}"
            dword = _sig(m, Array([Cat(banks[2 * q][port].data, banks[2 * q + 1][port].data)
                                   for q in range(PAIRS)])[s1[f"{r}_pair"]], f"r_{r}_dword", 64)
            mem16 = dword >> (off * 16)
            mem32 = Mux(off[0], dword[32:], dword[:32])
            acc_words = Array([acc[j][port].data for j in range(4)])
            ents = queue_entries(r, s1[f"{r}_head"])
            lanes = []
            for i in range(4):
                lane = Signal(32, name=f"r_{r}_raw{i}")
                fin16 = ents[i][:16] if i < D else Const(0, 16)
                fin32 = (Cat(ents[2 * i][:16], ents[2 * i + 1][:16])
                         if 2 * i + 1 < D else Const(0, 32))
                with m.Switch(kind):
                    with m.Case(_K["MEM"], _K["FIFO"]):
                        m.d.comb += lane.eq(Mux(is32, mem32 if i == 0 else
                                                (dword[32:] if i == 1 else 0),
                                                mem16[16 * i:16 * i + 16]))
                    with m.Case(_K["ACC"]):
                        m.d.comb += lane.eq(acc_words[(off + i)[:2]])
                    with m.Case(_K["FIN"]):
                        m.d.comb += lane.eq(Mux(is32, fin32, fin16))
                    with m.Default():
                        m.d.comb += lane.eq(s1[f"{r}_value"])
                lanes.append(lane)
            is16 = ~is32 & (kind != _K["ACC"])
            return lanes, is16

        raw_a, a16 = operand_lanes("a")
        raw_b, b16 = operand_lanes("b")

        def widen(lanes, is16, name):
            out = []
            for i, lane in enumerate(lanes):
                out.append(_sig(m, Mux(is16, f16_to_f32(m, lane[:16]), lane), f"r_{name}{i}", 32))
            return out
        wa = widen(raw_a, a16, "wa")
        wb = widen(raw_b, b16, "wb")
        ws = _sig(m, Mux(s1["s16"], f16_to_f32(m, s1["s_value"][:16]), s1["s_value"]), "r_ws",
                  32)

        m.submodules.fma = fma = FMAUnit(FP32, FP32, lanes=4)
        r_op = s1["op"]
        is_fmac = r_op == _OP["FMAC"]
        m.d.comb += [
            fma.i.valid.eq(s1["valid"]), fma.o.ready.eq(1),
            fma.i.payload.op.as_value().eq(
                Mux(is_fmac, FPOp.FMA.value,
                    Mux(r_op == _OP["FMUL"], FPOp.MUL.value,
                        Mux(r_op == _OP["FSUB"], FPOp.SUB.value, FPOp.ADD.value)))),
        ]
        for i in range(4):
            m.d.comb += [
                fma.i.payload.a[i].eq(Mux(is_fmac, wb[i], wa[i])),
                fma.i.payload.b[i].eq(Mux(is_fmac, ws, wb[i])),
                fma.i.payload.c[i].eq(wa[i]),
            ]
        raw1 = s1["raw"]
        alt_sel1 = (r_op == _OP["FMOV"]) | (r_op == _OP["FMAX"]) | (r_op == _OP["FNEG"])
        alt = {k: [Signal(32, name=f"alt{k}_{i}", reset_less=True) for i in range(4)]
               for k in (2, 3, 4)}
        alt_sel = {k: Signal(name=f"altsel{k}", reset_less=True) for k in (2, 3, 4)}
        for i in range(4):
            mx = fp_max(m, FP32, wa[i], wb[i], when=r_op == _OP["FMAX"], idle=wa[i])
            ng = fp_neg(m, FP32, wa[i], when=r_op == _OP["FNEG"], idle=wa[i])
            v = Mux(r_op == _OP["FMAX"], mx, Mux(r_op == _OP["FNEG"], ng,
                                                   Mux(raw1, raw_a[i], wa[i])))
            m.d.sync += [alt[2][i].eq(v), alt[3][i].eq(alt[2][i]), alt[4][i].eq(alt[3][i])]
        m.d.sync += [alt_sel[2].eq(alt_sel1), alt_sel[3].eq(alt_sel[2]),
                     alt_sel[4].eq(alt_sel[3])]
        assert FMAUnit.latency == 3, "the write-back stage assumes an FMA latency of 3"

        # ================================ write-back (W) ====================================
        res = [_sig(m, Mux(alt_sel[4], alt[4][i], fma.o.payload.result[i]), f"w_res{i}", 32)
               for i in range(4)]
        # FP16 results: read only for an FP16 destination (the conversion only without raw).
        cvt16 = _sig(m, s4["valid"] & ~s4["dst_dtype"] & ~s4["raw"], "w_cvt16")
        v16 = [_sig(m, Mux(s4["raw"], res[i][:16], f32_to_f16(m, res[i], when=cvt16,
                                                               idle=res[i])), f"w_h{i}", 16)
               for i in range(4)]
        w_kind, w_addr, w_n = s4["dst_kind"], s4["dst_addr"], s4["n"]
        w_sram = s4["valid"] & _is(w_kind, "MEM", "FIFO")
        w_acc = s4["valid"] & (w_kind == _K["ACC"])
        w_fout = s4["valid"] & (w_kind == _K["FOUT"])
        w_is32 = s4["dst_dtype"]
        data16 = (Cat(*v16) << (w_addr[:2] * 16))[:64]
        en16 = _lane_mask(w_n, w_addr[:2], 4)
        data32 = Mux(w_addr[1], Cat(Const(0, 32), res[0]), Cat(res[0], res[1]))
        en32w = _lane_mask(w_n, w_addr[1], 2)
        en32 = Cat(en32w[0], en32w[0], en32w[1], en32w[1])
        w_data64 = _sig(m, Mux(w_is32, data32, data16), "w_data64", 64,
                        when=w_sram, idle=Cat(res[0], res[1]))     # read only by SRAM writes
        w_en4 = _sig(m, Mux(w_is32, en32, en16), "w_en4", 4)
        w_pair = w_addr[2:2 + exact_log2(PAIRS)] if PAIRS > 1 else Const(0, 1)
        w_row = w_addr[1 + row_bits:]
        for b in range(B):
            half = b % 2
            m.d.comb += [
                banks[b]["wr"].addr.eq(w_row),
                banks[b]["wr"].data.eq(w_data64[32 * half:32 * half + 32]),
                banks[b]["wr"].en.eq(Mux(w_sram & (w_pair == b // 2),
                                         w_en4[2 * half:2 * half + 2], 0)),
            ]
        w_clear = s4["valid"] & s4["clear"]
        c_addr = s4["clr_addr"]
        acc_off = Mux(w_clear, c_addr[:2], w_addr[:2])
        acc_en = _sig(m, Mux(w_clear | w_acc, _lane_mask(w_n, acc_off, 4), 0), "w_acc_en", 4)
        for j in range(4):
            m.d.comb += [
                acc[j]["wr"].addr.eq(Mux(w_clear, c_addr[2:], w_addr[2:])),
                acc[j]["wr"].data.eq(Mux(w_clear, 0, Array(res)[(j - acc_off)[:2]])),
                acc[j]["wr"].en.eq(acc_en[j]),
            ]

        # Fabric output: per-thread buffers of OD wavelets (data only; color etc. per thread).
        m.submodules.out_mem = out_mem = memory.Memory(shape=16, depth=T * OD, init=[])
        out_wr = [out_mem.write_port() for _ in range(4)]
        out_rd = out_mem.read_port(domain="comb")
        w_thread = s4["thread"]
        w_wp = Array(th_owp)[w_thread]
        w_waves = Mux(w_is32, w_n << 1, w_n)
        for j in range(4):
            word = Mux(w_is32, res[j // 2][16 * (j % 2):16 * (j % 2) + 16], v16[j])
            m.d.comb += [
                out_wr[j].addr.eq(Cat((w_wp + j)[:exact_log2(OD)], w_thread)),
                out_wr[j].data.eq(word),
                out_wr[j].en.eq(w_fout & (j < w_waves)),
            ]

        # tx: round-robin over threads whose buffer head's color may go.
        tx = self.tx
        tx_cand = Cat(*[(th_ocount[t] != 0) & tx.ready.bit_select(th_ocolor[t], 1)
                        for t in range(T)])
        tx_last = Signal(range(T))
        tx_any, tx_sel = _round_robin(m, tx_cand, tx_last, T, "tx_sel")
        tx_sel = _sig(m, tx_sel[:TB], "tx_sel")
        m.d.comb += [
            out_rd.addr.eq(Cat(Array(th_orp)[tx_sel], tx_sel)),
            tx.valid.eq(tx_any),
            tx.payload.data.eq(out_rd.data),
            out_meta_rd.addr.eq(tx_sel),
            tx.payload.index.eq(out_meta_rd.data.index),
            tx.payload.ctrl.eq(out_meta_rd.data.ctrl),
            tx.payload.color.eq(Array(th_ocolor)[tx_sel]),
            ctr_inc[Counter.WAVELETS_OUT].eq(tx_any),
        ]
        with m.If(tx_any):
            m.d.sync += tx_last.eq(tx_sel)
        # One test first: most cycles move no output wavelet (Verilator keeps the If).
        with m.If(w_fout | tx_any | (i_go & i_fout) | l1_go):
            for t in range(T):
                pushed = Mux(w_fout & (w_thread == t), w_waves, 0)
                popped = tx_any & (tx_sel == t)
                issued = Mux(i_go & i_fout & (sel == t), i_owave, 0)
                with m.If(l1_go & (slot == t)):
                    m.d.sync += [th_credits[t].eq(0), th_ocount[t].eq(0), th_orp[t].eq(0),
                                 th_owp[t].eq(0)]
                with m.Elif((pushed != 0) | popped | (issued != 0)):
                    m.d.sync += [
                        th_ocount[t].eq(th_ocount[t] + pushed - popped),
                        th_owp[t].eq(th_owp[t] + pushed),
                        th_orp[t].eq(th_orp[t] + popped),
                        th_credits[t].eq(th_credits[t] + issued - popped),
                    ]

        # ================================ configuration port ================================
        cfg = self.cfg
        c_regs = cfg.addr[17] & (cfg.addr[13:17] == 0)
        c_off = cfg.addr[:13]
        c_sram = ~cfg.addr[17] & (cfg.addr[:17] < p["sram_words"])
        c_acc = c_regs & c_off[12] & (c_off[:12] < p["acc_words"])
        c_dsr = c_regs & ~c_off[12] & c_off[11] & (c_off[3:11] < p["num_dsrs"])
        c_entry = c_regs & (c_off[10:13] == 1) & (c_off[1:10] < p["num_entries"])
        c_task = c_regs & (c_off[9:13] == 1)
        c_bind = c_regs & (c_off[8:13] == 1)
        c_ctrl = c_regs & (c_off[8:13] == 0)
        c_word = cfg.addr[:17]
        c_bank = c_word[:row_bits]
        for b in range(B):
            m.d.comb += [
                banks[b]["hrd"].addr.eq(c_word[row_bits:]),
                banks[b]["hrd"].en.eq(cfg.re & c_sram),
                banks[b]["hwr"].addr.eq(c_word[row_bits:]), banks[b]["hwr"].data.eq(cfg.wdata),
                banks[b]["hwr"].en.eq(Mux(cfg.we & c_sram & (c_bank == b), 0b11, 0)),
            ]
        for j in range(4):
            m.d.comb += [
                acc[j]["hrd"].addr.eq(c_off[2:12]), acc[j]["hrd"].en.eq(cfg.re & c_acc),
                acc[j]["hwr"].addr.eq(c_off[2:12]), acc[j]["hwr"].data.eq(cfg.wdata),
                acc[j]["hwr"].en.eq(cfg.we & c_acc & (c_off[:2] == j)),
            ]
        for w in range(DSR_WORDS):
            m.d.comb += [
                dsr_rd_host[w].addr.eq(c_off[3:11]), dsr_rd_host[w].en.eq(cfg.re & c_dsr),
                dsr_wr_host[w].addr.eq(c_off[3:11]), dsr_wr_host[w].data.eq(cfg.wdata),
                dsr_wr_host[w].en.eq(cfg.we & c_dsr & (c_off[:3] == w)),
            ]
        m.d.comb += [
            entry_rd_host.addr.eq(c_off[1:10]), entry_rd_host.en.eq(cfg.re & c_entry),
            entry_wr.addr.eq(c_off[1:10]), entry_wr.data.eq(Cat(cfg.wdata, cfg.wdata)),
            entry_wr.en.eq(Mux(cfg.we & c_entry, Const(1, 2) << c_off[0], 0)),
        ]
        c_reg = c_off[:8]
        status = Signal(32)
        busy = Signal()
        wbind = data.View(ColorBind, cfg.wdata)
        m.d.comb += [bind_wr.addr.eq(c_off[:CB]), bind_wr.data.eq(cfg.wdata),
                     bind_wr.en.eq(cfg.we & c_bind & (c_off[:5] < C)),
                     bind_rd_host.addr.eq(c_off[:CB]), bind_rd_host.en.eq(cfg.re & c_bind)]
        with m.If(cfg.we & c_bind):
            with m.If(c_off[:5] < C):
                m.d.sync += bound_any.bit_select(c_off[:CB], 1).eq(wbind.data_en | wbind.ctrl_en)
            m.d.comb += unpark.eq(1)
        raise_error(cfg.we & c_bind & (c_off[:5] >= C) & (wbind.data_en | wbind.ctrl_en),
                    ErrorCode.BAD_COLOR, c_off[:5], from_inputs=True)
        m.d.comb += [task_wr.addr.eq(c_off[:max(1, bits_for(NT - 1))]),
                     task_wr.data.eq(cfg.wdata),
                     task_wr.en.eq(cfg.we & c_task & (c_off[:5] < NT)),
                     task_rd_host.addr.eq(c_off[:max(1, bits_for(NT - 1))]),
                     task_rd_host.en.eq(cfg.re & c_task)]
        trig_overrun = cfg.we & c_ctrl & (c_reg == Reg.TRIGGER) & trig_valid
        raise_error(trig_overrun, ErrorCode.TRIGGER_OVERRUN, 0, from_inputs=True)
        with m.If(cfg.we & c_ctrl):
            with m.Switch(c_reg):
                with m.Case(Reg.TRIGGER):
                    with m.If(~trig_valid):
                        m.d.sync += [trig_valid.eq(1), trig.eq(cfg.wdata)]
                with m.Case(Reg.BLOCKED):
                    m.d.sync += blocked.eq(cfg.wdata[:NT])
                    m.d.comb += unpark.eq(1)
                with m.Case(Reg.BLOCK_SET):
                    m.d.sync += blocked.eq(blocked | cfg.wdata[:NT])
                with m.Case(Reg.BLOCK_CLR):
                    m.d.sync += blocked.eq(blocked & ~cfg.wdata[:NT])
                    m.d.comb += unpark.eq(1)
                with m.Case(Reg.COUNTER_CTRL):
                    m.d.comb += ctr_clear.eq(cfg.wdata[0])

        # Reads: memories answer one cycle later; registers are captured at the read.
        rd_sel = Signal(3)
        rd_word = Signal(3)
        rd_bank = Signal(row_bits)
        rd_reg = Signal(32)
        with m.If(cfg.re):
            m.d.sync += [rd_word.eq(c_off[:3]), rd_bank.eq(c_bank),
                         rd_sel.eq(Mux(c_sram, 1, Mux(c_acc, 2, Mux(c_dsr, 3, Mux(
                             c_entry, 4, Mux(c_bind & (c_off[:5] < C), 5,
                                             Mux(c_task & (c_off[:5] < NT), 6, 0)))))))]
            reg_val = Signal(32)
            with m.If(c_ctrl):
                with m.Switch(c_reg):
                    with m.Case(Reg.ID):
                        m.d.comb += reg_val.eq(self.id_word)
                    with m.Case(Reg.STATUS):
                        m.d.comb += reg_val.eq(status)
                    with m.Case(Reg.ERROR):
                        m.d.comb += reg_val.eq(Cat(err_code, Const(0, 3), err_info))
                    with m.Case(Reg.ERROR_FLAGS):
                        m.d.comb += reg_val.eq(err_flags)
                    with m.Case(Reg.BLOCKED):
                        m.d.comb += reg_val.eq(blocked)
                    for c in Counter:
                        with m.Case(COUNTER_BASE + c.value):
                            m.d.comb += reg_val.eq(counters[c.value])
            m.d.sync += rd_reg.eq(reg_val)
        sram_rd = Array([banks[b]["hrd"].data for b in range(B)])[rd_bank]
        acc_rd = Array([acc[j]["hrd"].data for j in range(4)])[rd_word[:2]]
        dsr_rd_w = Array([rp.data for rp in dsr_rd_host])[rd_word]
        entry_rd_w = Mux(rd_word[0], entry_rd_host.data[32:], entry_rd_host.data[:32])
        m.d.comb += cfg.rdata.eq(Array([rd_reg, sram_rd, acc_rd, dsr_rd_w, entry_rd_w,
                                        bind_rd_host.data.as_value(), task_rd_host.data.as_value(),
                                        rd_reg])[rd_sel])

        # ================================ errors, counters, status ==========================
        # The first error source raised, in priority order. Runs of sources that depend on
        # registers only are merged first into named signals: Verilator then evaluates them
        # once per clock, not also in its input region (twice per cycle).
        def first_raised(sources, name):
            code, info = Const(0, 5), Const(0, 8)
            for valid, c, i, _ in reversed(sources):
                code, info = Mux(valid, c, code), Mux(valid, i, info)
            return (_sig(m, Cat(*[s[0] for s in sources]).any(), f"{name}_valid"),
                    _sig(m, code, f"{name}_code", 5), _sig(m, info, f"{name}_info", 8))
        groups, run = [], []
        for source in err_sources + [None]:
            if source is None or source[3]:
                if run:
                    groups.append(first_raised(run, f"err_int{len(groups)}") + (False,))
                    run = []
                if source is not None:
                    groups.append(source)
            else:
                run.append(source)
        e_valid, e_code, e_info = first_raised(groups, "err_first")

        def flags_of(sources):
            terms = {c.value: [] for c in ErrorCode if c != ErrorCode.NONE}
            for valid, code, info, _ in sources:
                if isinstance(code, ErrorCode):
                    terms[code.value].append(valid)
                else:
                    for value in terms:
                        terms[value].append(valid & (code == value))
            return Cat(*[Cat(*terms[v]).any() if terms.get(v) else Const(0, 1)
                         for v in range(32)])
        flags_int = _sig(m, flags_of([s for s in err_sources if not s[3]]), "err_flags_int", 32)
        flags_now = _sig(m, flags_int | flags_of([s for s in err_sources if s[3]]),
                         "flags_now", 32)
        with m.If(e_valid):
            m.d.sync += err_flags.eq(err_flags | flags_now)
            with m.If(err_code == 0):
                m.d.sync += [err_code.eq(e_code), err_info.eq(e_info)]
        m.d.comb += ctr_inc[Counter.ERRORS].eq(e_valid)
        with m.If(cfg.we & c_ctrl & (c_reg == Reg.ERROR)):
            m.d.sync += [err_code.eq(0), err_info.eq(0), err_flags.eq(0)]
        with m.If(cfg.we & c_ctrl & (c_reg == Reg.ERROR_FLAGS)):
            m.d.sync += err_flags.eq((err_flags | flags_now) & ~cfg.wdata)
        m.d.comb += self.error.eq((err_code != 0) | (err_flags != 0))

        cycles = counters[Counter.CYCLES]
        m.d.comb += ctr_inc[Counter.CYCLES].eq(1)
        for c in Counter:
            if c in (Counter.FMAC_FIRST, Counter.FMAC_LAST):
                continue
            m.d.sync += counters[c].eq(counters[c] + ctr_inc[c])
        with m.If(ctr_inc[Counter.FMAC_LANES] != 0):
            m.d.sync += [counters[Counter.FMAC_LAST].eq(cycles), fmac_seen.eq(1)]
            with m.If(~fmac_seen):
                m.d.sync += counters[Counter.FMAC_FIRST].eq(cycles)
        with m.If(ctr_clear):
            m.d.sync += [c.eq(0) for c in counters] + [fmac_seen.eq(0)]

        pending_q = q_nonempty.any()
        pending_o = Cat(*[th_ocount[t] != 0 for t in range(T)]).any()
        m.d.comb += [
            busy.eq(th_active.any() | l1_valid | (k_state != 0) | trig_valid | pending_q
                    | s1["valid"] | stage[2]["valid"] | stage[3]["valid"] | s4["valid"]
                    | pending_o),
            self.busy.eq(busy),
            status.eq(Cat(busy, self.error, k_state != 0, trig_valid, Const(0, 4),
                          Cat(th_active, Const(0, 8))[:8], pending_q, pending_o)),
        ]
        return m

    # ---------------------------------------------------------------------------------------
    def _launch_role(self, m, role, index, dsr, ident, req, bound_any, need, valid, idle):
        """Decode one operand of a launch (stage L1): its kind and type, effective base,
        iteration constants, resource range for the ordering rules, errors and the DSR
        word to write back. Everything returned is meaningful only while ``valid`` (the
        named intermediate values are ``idle`` otherwise, see :func:`_sig`)."""
        p = self._p
        C = p["num_colors"]

        def sig(value, name, shape=None):
            return _sig(m, value, name, shape, when=valid, idle=idle)

        none = ident == DSR_NONE
        wave = ident == DSR_WAVELET
        badid = (ident >= p["num_dsrs"]) & ~none & ~wave
        kind = sig(Mux(wave, _K["SCALAR"], Mux(none | badid, _K["NONE"], dsr.kind)),
                   f"l1_{role}_kind", 3)
        dtype = sig(Mux(wave, 0, Mux(kind == _K["ACC"], 1, dsr.dtype)), f"l1_{role}_dtype", 1)
        sram = _is(kind, "MEM", "FIFO")
        esz2 = sram & dtype
        fifo = kind == _K["FIFO"]
        is_dst = role == "dst"
        base0, fsize, dpos, dcount = dsr.base, dsr.fifo_size, dsr.pos, dsr.count

        idx_on = req.launch.idx[index]
        idx_off = Mux(idx_on, req.index * dsr.idx_stride, 0)
        adv_off = Mux(_is(kind, "MEM", "ACC"), dpos * dsr.adv_step, 0)
        # FIFO position: the read position (source) or the write position (destination).
        wpos = dpos + dcount
        wpos = Mux(wpos >= fsize, wpos - fsize, wpos)
        fifo_pos = Mux(fifo, wpos if is_dst else dpos, 0)
        off_el = sig(Mux(fifo, fifo_pos, idx_off + adv_off), f"l1_{role}_off", signed(40))
        base = sig(base0 + Mux(esz2, off_el << 1, off_el), f"l1_{role}_base", signed(40))
        esz = Mux(esz2, 2, 1)

        lens = [dsr.dim(i, "len") for i in range(4)]
        strides = [sig(Mux(esz2, dsr.dim(i, "stride") << 1, dsr.dim(i, "stride")),
                       f"l1_{role}_stride{i}", signed(22)) for i in range(4)]
        ext = [sig((lens[i] - 1) * strides[i], f"l1_{role}_ext{i}", signed(40))
               for i in range(4)]
        size_addr = Mux(esz2, fsize << 1, fsize)
        neg = sum(Mux(e < 0, e, 0) for e in ext)
        pos = sum(Mux(e > 0, e, 0) for e in ext)
        lo = sig(Mux(fifo, base0, base + neg), f"l1_{role}_lo", signed(40))
        hi = sig(Mux(fifo, base0 + size_addr - 1, base + pos + esz - 1), f"l1_{role}_hi",
                 signed(40))
        jumps = [strides[1] - ext[0], strides[2] - ext[0] - ext[1],
                 strides[3] - ext[0] - ext[1] - ext[2]]
        color = dsr.color
        chan = _is(kind, "FIN", "FOUT")
        out = {
            "kind": kind, "dtype": dtype, "len": lens,
            "step0": Mux(fifo, esz, strides[0])[:16],
            "jump": [j[:16] for j in jumps],
            "start": base[:16],
            "wrap_hi": Mux(fifo, base0 + size_addr, 0x1FFFF)[:17],
            "wrap_size": size_addr[:17],
            "value": Mux(wave, req.data, Cat(dsr.base, dsr.idx_stride)),
            "cur": Mux(chan, color, base[:16]),
            "ctrl": dsr.ctrl, "out_index": dsr.out_index,
        }
        space = Signal(3, name=f"l1_{role}_space")
        with m.If(~need):
            m.d.comb += space.eq(SPACE_NONE)
        with m.Elif(sram):
            m.d.comb += space.eq(SPACE_SRAM)
        with m.Elif(kind == _K["ACC"]):
            m.d.comb += space.eq(SPACE_ACC)
        with m.Elif(kind == _K["FIN"]):
            m.d.comb += space.eq(SPACE_FIN)
        with m.Elif(kind == _K["FOUT"]):
            m.d.comb += space.eq(SPACE_FOUT)
        out["space"] = space
        out["lo"] = sig(Mux(chan, color, lo[:16]), f"l1_{role}_rlo", 16)
        out["hi"] = sig(Mux(chan, color, hi[:16]), f"l1_{role}_rhi", 16)
        out["w"] = sig(Const(1, 1) if is_dst else (
            (kind == _K["FIN"]) | (req.launch.clear_a if role == "a" else 0)), f"l1_{role}_w", 1)

        if is_dst:
            kind_ok = _is(kind, "MEM", "ACC", "FOUT", "NULL", "FIFO")
        else:
            kind_ok = _is(kind, "MEM", "ACC", "FIN", "SCALAR", "FIFO")
        cidx = color[:max(1, bits_for(C - 1))]
        fin_bound = (kind == _K["FIN"]) & (color < C) & bound_any.bit_select(cidx, 1)
        out["bad_operand"] = need & (badid | ~kind_ok | fin_bound)
        out["bad_color"] = need & chan & (color >= C)
        out["zero"] = need & _is(kind, *_ITERATING) & (
            Cat(*[length == 0 for length in lens]).any() | (fifo & (fsize == 0)))
        out["misaligned"] = need & esz2 & base[0]
        limit = Mux(sram, 2 * p["sram_words"], p["acc_words"])
        out["oob"] = need & _is(kind, "MEM", "FIFO", "ACC") & ((lo < 0) | (hi >= limit))
        length = lens[0]
        if is_dst:
            out["overflow"] = need & fifo & (dcount + length > fsize)
            out["underflow"] = Const(0, 1)
        else:
            out["overflow"] = Const(0, 1)
            out["underflow"] = need & fifo & (length > dcount)
        # Word 7 written back at launch: auto-advance position, FIFO read position and count.
        adv_on = req.launch.adv[index] & _is(kind, "MEM", "ACC")
        nxt = (dpos + 1)[:16]
        adv_pos = Mux((dsr.adv_count != 0) & (nxt == dsr.adv_count), 0, nxt)
        rpos = dpos + length
        rpos = Mux(rpos >= fsize, rpos - fsize, rpos)
        if is_dst:
            fifo_word = Cat(dpos, (dcount + length)[:16])
        else:
            fifo_word = Cat(rpos[:16], (dcount - length)[:16])
        out["wb"] = sig(need & (adv_on | fifo), f"l1_{role}_wbn", 1)
        out["wb_word"] = Mux(fifo, fifo_word, Cat(adv_pos, dcount))
        return out


_INIT_BLOCK = re.compile(r"  initial begin\n((?:    [^\n\[]+\[\d+\] = \d+'[dhb]0+;\n)+)  end\n")


def compact_memory_init(verilog):
    """Replace the word-by-word zero initialisation Amaranth writes for each memory by a
    loop: same semantics, a fraction of the lines (and of Verilator's build time)."""
    count = 0

    def replace(match):
        nonlocal count
        lines = match.group(1).splitlines()
        names = {line.strip().split("[", 1)[0] for line in lines}
        if len(names) != 1:
            return match.group(0)
        name = names.pop()
        width = lines[0].split("= ", 1)[1].split("'", 1)[0]
        var = f"init_i{count}"
        count += 1
        return (f"  integer {var};\n  initial begin\n"
                f"    for ({var} = 0; {var} < {len(lines)}; {var} = {var} + 1)\n"
                f"      {name}[{var}] = {width}'d0;\n  end\n")
    return _INIT_BLOCK.sub(replace, verilog)


def pe_verilog(name="pe", **params):
    """Verilog of a :class:`PE` (module ``name``), with compact memory initialisation."""
    from rtl.export import to_verilog
    return compact_memory_init(to_verilog(PE(**params), name))
