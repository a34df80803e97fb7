"""The tensor engine: DSR file, launch stage, micro-threads, scheduler and issue (SPEC 4.3).

Stages (docs/pe.md sections 2, 6 to 8):

* **L0** accepts a :class:`rtl.pe.regs.LaunchRequest` from the launch stream and reads the
  DSRs it names. ``ready``: a thread slot is free (two while a launch is in L1) and the
  request does not read a DSR that the launch in L1 writes back.
* **L1** decodes every operand (kind, type, effective base, iteration constants, the
  resource range of the ordering rules), checks the whole tensor (the first failing check
  names the error; a failing launch is dropped before anything is written), computes the
  dependencies on older live operations, allocates the lowest free slot and writes the
  DSRs' hardware-updated word back (auto-advance, FIFO positions).
* **Scheduler**: per thread, has it work, are its dependencies done, is a full fabric
  vector queued, is there room in its output buffer; the highest priority then round-robin.
* **I** (issue): the chosen thread's group (lanes this cycle), the banks it touches, the
  bank-conflict and read-after-write checks against the datapath's pipeline, its next
  addresses; it addresses the memory and queue reads, pops the fabric inputs and hands
  the issue record to the datapath.

Per thread, what the scheduler checks every cycle is in flops; the iteration state and the
constants are in small memories indexed by thread, read only for the issuing thread. The
``core`` bit of a launch is kept per thread: :attr:`TensorEngine.core_ops_pending`.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import bits_for, exact_log2

from rtl.pe import ops as O
from rtl.pe.core import DsrSignature
from rtl.pe.iface import (EngineReport, HazardSignature, IssueSignature, LaunchStream,
                          MemReadSignature, OutBufferSignature, QueueOperandSignature,
                          RegionSignature, SchedulerLookupSignature, ThreadLaunched,
                          thread_bits)
from rtl.pe.regs import (DSR, DSR_NONE, DSR_WAVELET, DSR_WORDS, CfgRegion, DType, ErrorCode,
                         LaunchRequest, TensorOp, layout_fields, region)
from rtl.pe.util import KIND, kind_is, lowest, round_robin, sig, umin

__all__ = ["TensorEngine", "SPACE_NONE", "SPACE_SRAM", "SPACE_ACC", "SPACE_FIN",
           "SPACE_FOUT", "ROLES"]

# Resource spaces of the ordering (hazard) rules.
SPACE_NONE, SPACE_SRAM, SPACE_ACC, SPACE_FIN, SPACE_FOUT = range(5)

ROLES = ("dst", "a", "b")
_ITERATING = ("MEM", "ACC", "FIFO", "FOUT", "NULL")   # kinds with a shape / a length
_ADDRESSED = ("MEM", "ACC", "FIFO")                   # kinds with an address
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


class TensorEngine(wiring.Component):
    """DSR file, launch stage (L0, L1), micro-thread slots, scheduler and issue stage.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    launch : In(LaunchStream)
        Tensor-operation launches (from the :class:`rtl.pe.arbiter.LaunchArbiter`).
    core_ops_pending : Out(1)
        Some operation launched with ``core`` = 1 is in L1, in a thread slot, or still has
        writes in the datapath's pipeline (or such a launch is offered to L0): what the
        core's ``twait`` waits for.
    bound : In(num_colors)
        Bit c: color c is bound to a task (such a color is not a fabric input operand).
    dsr : In(RegionSignature)
        The host's port on the DSR file (region DSR of the address map).
    core_dsr : In(DsrSignature)
        The control core's DSR word reads and writes (``dsrr`` / ``dsrw``). Granted unless
        the host writes a DSR in the same cycle; ``busy`` when the DSR is named by a launch
        being accepted (L0), by the launch in L1 or by a live micro-thread: such a write is
        dropped and the core faults with ``DSR_BUSY``.
    bank_use : Out(banks)
        SRAM banks the issue stage reads in this cycle (the control core's accesses to them
        are denied).
    fin_a, fin_b : Out(QueueOperandSignature)
        Level lookup and pop of the issuing thread's fabric inputs.
    sched : Out(SchedulerLookupSignature)
        The scheduler's level lookups, per thread.
    mem_a, mem_b : Out(MemReadSignature)
        The addresses of the issuing thread's memory reads.
    issue : Out(IssueSignature)
        The issue record, to the datapath.
    hazards : In(HazardSignature)
        The datapath's pending writes and write-back banks.
    outbuf : Out(OutBufferSignature)
        Thread starts for the output buffers; their credits.
    report : Out(EngineReport)
        Counter events, the launch error, threads active.
    launched : Out(ThreadLaunched)
        The operation placed into a thread slot in this cycle, if any (the PE's debug port).
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "launch": In(LaunchStream),
            "core_ops_pending": Out(1),
            "bound": In(params.num_colors),
            "dsr": In(RegionSignature(region(CfgRegion.DSR, params))),
            "core_dsr": In(DsrSignature()),
            "bank_use": Out(params.banks),
            "fin_a": Out(QueueOperandSignature(params.rx_depth)),
            "fin_b": Out(QueueOperandSignature(params.rx_depth)),
            "sched": Out(SchedulerLookupSignature(params.threads)),
            "mem_a": Out(MemReadSignature()),
            "mem_b": Out(MemReadSignature()),
            "issue": Out(IssueSignature(params)),
            "hazards": In(HazardSignature(params)),
            "outbuf": Out(OutBufferSignature(params)),
            "report": Out(EngineReport(params)),
            "launched": Out(ThreadLaunched),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        T, D, OD, B = p.threads, p.rx_depth, p.out_depth, p.banks
        TB = thread_bits(T)
        row_bits = exact_log2(B)
        rep = self.report
        launch = self.launch
        launch_valid, launch_ready = launch.valid, launch.ready
        req = launch.payload

        # ================================ the DSR file ======================================
        # One memory per 32-bit word: the host's port, the reads of L0 (dst, a, b; s: words
        # 0 and 1) and the write-backs of word 7 at L1.
        dsr_mems = []
        for w in range(DSR_WORDS):
            mem = memory.Memory(shape=32, depth=p.num_dsrs, init=[])
            m.submodules[f"dsr_w{w}"] = mem
            dsr_mems.append(mem)
        dsr_wr_host = [mem.write_port() for mem in dsr_mems]
        dsr_rd_host = [mem.read_port() for mem in dsr_mems]
        dsr_wr_back = [dsr_mems[7].write_port() for _ in ROLES]
        dsr_rd = {r: [mem.read_port() for mem in dsr_mems] for r in ROLES}
        dsr_rd["s"] = [dsr_mems[0].read_port(), dsr_mems[1].read_port()]
        hd = self.dsr
        rd_word = Signal(range(DSR_WORDS))
        for w in range(DSR_WORDS):
            m.d.comb += [
                dsr_rd_host[w].addr.eq(hd.index), dsr_rd_host[w].en.eq(hd.re),
                dsr_wr_host[w].addr.eq(hd.index), dsr_wr_host[w].data.eq(hd.wdata),
                dsr_wr_host[w].en.eq(hd.we & (hd.word == w)),
            ]
        with m.If(hd.re):
            m.d.sync += rd_word.eq(hd.word)
        m.d.comb += hd.rdata.eq(Array([rp.data for rp in dsr_rd_host])[rd_word])
        dsr_wr_core = [mem.write_port() for mem in dsr_mems]
        dsr_rd_core = [mem.read_port() for mem in dsr_mems]

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
        th_core = Signal(T, reset_less=True)            # launched by the core (read if active)
        # The DSR ids a thread's launch named (dst, a, b, s): a core write to one is refused.
        th_ids = [Signal(4 * 6, name=f"th{t}_ids", reset_less=True) for t in range(T)]
        th_credits = list(self.outbuf.credits)
        th_k0dst = [Signal(12, name=f"th{t}_k0dst", reset_less=True) for t in range(T)]
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
        # Fixed at launch, read for the issuing thread only.
        sel_meta = data.StructLayout({"op": 4, "clear": 1})
        m.submodules.sel_meta = sel_meta_mem = memory.Memory(shape=sel_meta, depth=T, init=[])
        sel_meta_wr, sel_meta_rd = sel_meta_mem.write_port(), sel_meta_mem.read_port(domain="comb")
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
                                                     == getattr(req.launch, q)))
        # Both read only with launch_valid (see rtl.pe.util.sig).
        wb_hazard = sig(m, l1_valid & wb_hazard, "l0_wb_hazard", when=launch_valid,
                        idle=l1_valid)
        m.d.comb += launch_ready.eq(Mux(launch_valid, Mux(l1_valid, free_count >= 2,
                                                          free_count >= 1) & ~wb_hazard,
                                        l1_valid))
        for r in ROLES + ("s",):
            for rp in dsr_rd[r]:
                m.d.comb += [rp.addr.eq(getattr(req.launch, r)),
                             rp.en.eq(launch_valid & launch_ready)]
        m.d.sync += l1_valid.eq(launch_valid & launch_ready)
        with m.If(launch_valid & launch_ready):
            m.d.sync += l1_req.eq(req)

        op = l1_req.launch.op.as_value()
        op_uses_b = O.op_where(op, lambda o: o.uses_b)
        op_uses_s = O.op_where(op, lambda o: o.uses_s)
        op_bad = O.op_invalid(op)
        L = {}
        for i, r in enumerate(ROLES):
            L[r] = self._launch_role(m, r, i, _DSRWords([rp.data for rp in dsr_rd[r]]),
                                     getattr(l1_req.launch, r), l1_req, self.bound,
                                     need={"dst": Const(1), "a": Const(1), "b": op_uses_b}[r],
                                     valid=l1_valid, idle=l1_idle)
        # The scalar operand s (FMAC): a SCALAR DSR or the trigger wavelet.
        s_words = [rp.data for rp in dsr_rd["s"]]
        s_id = l1_req.launch.s
        s_wave = s_id == DSR_WAVELET
        s_kind = s_words[0][:3]
        s_bad = op_uses_s & ~s_wave & ((s_id >= p.num_dsrs) | (s_kind != KIND["SCALAR"]))
        s_value = Mux(s_wave, l1_req.data, s_words[1])
        s_16 = Mux(s_wave, 1, s_words[0][3] == DType.FP16.value)
        clear_bad = l1_req.launch.clear_a & ((L["a"]["kind"] != KIND["ACC"])
                                             | (L["dst"]["kind"] == KIND["ACC"]))

        # Error of this launch: the first failing check, in a fixed order.
        l1_err_code = Signal(5)
        l1_err_info = Signal(8)
        # Both sources on one fabric color: they would pop the same queue and read the same
        # wavelets (n of every 2n lost), so the launch is refused.
        fin_twice = op_uses_b & (L["a"]["kind"] == KIND["FIN"]) \
            & (L["b"]["kind"] == KIND["FIN"]) & (L["a"]["cur"][:5] == L["b"]["cur"][:5])
        checks = [(op_bad | s_bad | clear_bad | fin_twice, ErrorCode.BAD_OPERAND,
                   Mux(s_bad, s_id, Mux(clear_bad, l1_req.launch.a,
                                        Mux(fin_twice, l1_req.launch.b, 0x3F))))]
        # An operation whose FP32 result would be rounded again into an FP16 destination
        # (FMAC: two roundings, SPEC 6 wants one) is refused rather than silently inexact.
        unsupported16 = O.op_where(op, lambda o: not o.fp16_dst) \
            & (L["dst"]["dtype"] == DType.FP16.value)
        checks.append((unsupported16, ErrorCode.UNSUPPORTED, l1_req.launch.dst))
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
        m.d.comb += [rep.launch_error.valid.eq(l1_valid & (l1_err_code != 0)),
                     rep.launch_error.code.eq(l1_err_code),
                     rep.launch_error.info.eq(l1_err_info)]
        l1_go = sig(m, l1_valid & (l1_err_code == 0), "l1_go", 1)

        # Ordering: the new operation depends on every live older one it conflicts with.
        dep_new = Signal(T)
        key_lo = {r: sig(m, Mux(L[r]["space"] == SPACE_NONE, 0x7FFFF,
                                Cat(L[r]["lo"], L[r]["space"])), f"l1_{r}_klo", 19,
                         when=l1_valid, idle=l1_idle)
                  for r in ROLES}
        key_hi = {r: sig(m, Mux(L[r]["space"] == SPACE_NONE, 0,
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
        _, slot = lowest(m, free, T, "l1_slot")
        slot = sig(m, slot[:TB], "l1_slot")
        m.d.comb += rep.launches.eq(l1_go)
        # (0 in the cycles without a launch, so that the debug port changes only with it.)
        m.d.comb += [self.launched.valid.eq(l1_go), self.launched.slot.eq(Mux(l1_go, slot, 0)),
                     self.launched.op.eq(Mux(l1_go, l1_req.launch.op, 0)),
                     self.launched.core.eq(l1_go & l1_req.core)]
        meta_l1 = Signal(meta_layout)
        res_l1 = {r: Signal(res_layout, name=f"l1_{r}_res_l1") for r in ROLES}
        m.d.comb += meta_l1.prio.eq(l1_req.launch.prio)
        for r in ROLES:
            rm = getattr(meta_l1, r)
            m.d.comb += [rm.kind.eq(L[r]["kind"]), rm.dtype.eq(L[r]["dtype"]),
                         rm.color.eq(L[r]["cur"][:5]),
                         res_l1[r].lo.eq(key_lo[r]), res_l1[r].hi.eq(key_hi[r]),
                         res_l1[r].w.eq(L[r]["w"])]
        # Written to a thread's flops only at a launch (see rtl.pe.util.sig).
        meta_new = Signal(meta_layout)
        res_new = {r: Signal(res_layout, name=f"l1_{r}_res") for r in ROLES}
        m.d.comb += meta_new.eq(Mux(l1_valid, meta_l1, l1_idle))
        for r in ROLES:
            m.d.comb += res_new[r].eq(Mux(l1_valid, res_l1[r], l1_idle))
        ob = self.outbuf
        m.d.comb += [
            sel_meta_wr.addr.eq(slot), sel_meta_wr.en.eq(l1_go),
            sel_meta_wr.data.op.eq(op), sel_meta_wr.data.clear.eq(l1_req.launch.clear_a),
            ob.start.eq(l1_go), ob.slot.eq(slot), ob.color.eq(meta_new.dst.color),
            ob.ctrl.eq(L["dst"]["ctrl"]), ob.index.eq(L["dst"]["out_index"]),
            ob.filter.eq(L["dst"]["filter"]),
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
        sc = self.sched
        lookups = {"a": (sc.a_color, sc.a_level), "b": (sc.b_color, sc.b_level)}
        for t in range(T):
            work = sig(m, th_active[t] & ~th_done[t], f"th{t}_work")
            dep_ok = (th_dep[t] & th_active) == 0
            fin_ok = Const(1, 1)
            for r in ("a", "b"):
                kind = th[r]["kind"][t]
                is32 = th[r]["dtype"][t]
                # Wait for a full vector (or the rest of the dimension) before issuing.
                want = umin(th_k0dst[t], Mux(is32, D // 2, min(D, 4)))
                need = Mux(is32, want << 1, want)[:3]
                color, level = lookups[r]
                m.d.comb += color[t].eq(th[r]["color"][t])
                fin_ok = fin_ok & ((kind != KIND["FIN"]) | (level[t] >= need))
            o32 = th["dst"]["dtype"][t]
            owant = umin(th_k0dst[t], Mux(o32, 2, 4))
            oneed = Mux(o32, owant << 1, owant)
            fout_ok = (th["dst"]["kind"][t] != KIND["FOUT"]) | ((OD - th_credits[t]) >= oneed)
            # Read only with work: not evaluated by Verilator's model without (see sig).
            fin_ok = sig(m, fin_ok, f"th{t}_fin_ok", 1, when=work, idle=th_done[t])
            fout_ok = sig(m, fout_ok, f"th{t}_fout_ok", 1, when=work, idle=th_done[t])
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
        elig_hi = sig(m, elig & prio_hi, "i_elig_hi", T)
        elig_top = sig(m, Mux(elig_hi.any(), elig_hi, elig), "i_elig_top", T)
        elig_lo = sig(m, elig_top & prio_lo, "i_elig_lo", T)
        top_mask = Mux(elig_lo.any(), elig_lo, elig_top)
        rr_last = Signal(range(T))
        any_elig, sel = round_robin(m, top_mask, rr_last, T, "i_sel")
        sel = sig(m, sel[:TB], "i_sel")

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
                "kind": sig(m, kinds[r][sel], f"i_{r}_kind", 3),
                "dtype": sig(m, Array(th[r]["dtype"])[sel], f"i_{r}_dtype", 1),
                "cur": st_rd[r].data.cur,
                "k": [st_rd[r].data.k[i] for i in range(4)],
                "len": [c_rd[r, "len"].data[i] for i in range(4)],
                "jump": [c_rd[r, "jump"].data[i] for i in range(3)],
                "step0": ca.step0, "start": ca.start, "wrap_hi": cw.hi, "wrap_size": cw.size,
                "value": c_rd[r, "value"].data if (r, "value") in c_rd else Const(0, 32),
            }
        m.d.comb += c_rd["s"].addr.eq(sel)
        i_credits = sig(m, Array(th_credits)[sel], "i_credits", range(OD + 1))
        m.d.comb += sel_meta_rd.addr.eq(sel)
        i_op = sig(m, sel_meta_rd.data.op, "i_op", 4)
        i_clear = sig(m, sel_meta_rd.data.clear, "i_clear", 1)
        fin = {"a": self.fin_a, "b": self.fin_b}
        # Lanes each operand can supply or take this cycle.
        avail = {}
        for r in ROLES:
            o = I[r]
            kind, is32, cur, k0 = o["kind"], o["dtype"], o["cur"], o["k"][0]
            sram = kind_is(kind, "MEM", "FIFO")
            o["esz"] = esz = Mux(is32 & sram, 2, 1)
            o["unit"] = o["step0"] == esz
            to_end = Mux(sram & is32, 2 - cur[1], 4 - cur[:2])
            if r in fin:
                m.d.comb += fin[r].color.eq(cur[:5])
                qn = fin[r].level
            free_o = OD - i_credits
            to_wrap = (o["wrap_hi"] - cur)[:17]
            to_wrap = Mux(is32, to_wrap >> 1, to_wrap)
            av = Signal(3, name=f"i_avail_{r}")
            with m.If(kind == KIND["FIFO"]):
                m.d.comb += av.eq(umin(umin(k0, to_end), to_wrap))
            with m.Elif(kind_is(kind, *_ADDRESSED)):
                m.d.comb += av.eq(Mux(o["unit"], umin(k0, to_end), 1))
            if r in fin:
                with m.Elif(kind == KIND["FIN"]):
                    m.d.comb += av.eq(Mux(is32, umin(qn >> 1, 2), umin(qn, 4)))
            with m.Elif(kind == KIND["FOUT"]):
                m.d.comb += av.eq(umin(k0, Mux(is32, umin(free_o >> 1, 2), umin(free_o, 4))))
            with m.Elif(kind == KIND["NULL"]):
                m.d.comb += av.eq(umin(k0, 4))
            with m.Else():
                m.d.comb += av.eq(4)
            avail[r] = av
        i_n = sig(m, umin(avail["dst"], umin(avail["a"], avail["b"])), "i_n", 3)

        # SRAM banks touched by the reads (a, b) and the eventual write (dst).
        def banks_of(o, name):
            cur, is32 = o["cur"], o["dtype"]
            w0 = cur[1:]
            last_half = cur + Mux(o["unit"] & ~is32, i_n - 1, 0)
            wl = Mux(is32, w0 + Mux(o["unit"], i_n - 1, 0), last_half[1:])
            return sig(m, Mux(kind_is(o["kind"], "MEM", "FIFO"),
                              (Const(1, B) << w0[:row_bits]) | (Const(1, B) << wl[:row_bits]),
                              0), f"i_banks_{name}", B)
        mask_a, mask_b, mask_d = (banks_of(I[r], r) for r in ("a", "b", "dst"))

        hz = self.hazards
        same_line = I["a"]["cur"][2:] == I["b"]["cur"][2:]
        # Two reads of one single-port bank serialise: the first attempt stalls a cycle
        # ("paid"), the retry of the same thread then goes. A read of a bank the write-back
        # uses this cycle stalls until the write is done.
        conflict_ab = sig(m, (mask_a & mask_b).any() & ~same_line, "i_conflict_ab")
        conflict_wb = sig(m, ((mask_a | mask_b) & hz.wb_banks).any(), "i_conflict_wb")
        ab_paid = Signal()
        ab_paid_thread = Signal(TB, reset_less=True)     # read only under ab_paid
        bank_conflict = sig(m, conflict_wb | (conflict_ab & ~(ab_paid & (ab_paid_thread == sel))),
                            "i_bank_conflict", 1)
        # Read after write: a source line with a write still in the pipeline (the write of
        # this very cycle is forwarded by the accumulator cache, and blocks an SRAM bank).
        raw_terms = []
        for r in ("a", "b"):
            kind, cur = I[r]["kind"], I[r]["cur"]
            space = Mux(kind == KIND["ACC"], SPACE_ACC, SPACE_SRAM)
            for st in hz.pending:
                raw_terms.append(kind_is(kind, *_ADDRESSED) & st.valid & st.w_valid
                                 & (st.w_space == space) & (st.w_line == cur[2:]))
                raw_terms.append((kind == KIND["ACC"]) & st.valid & st.clear
                                 & (st.clr_addr[2:] == cur[2:]))
        raw_hit = sig(m, Cat(*raw_terms).any(), "i_raw_hit")
        i_go = sig(m, any_elig & ~bank_conflict & ~raw_hit, "i_go", 1)
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
            fifo_cur = Mux((kind == KIND["FIFO"]) & (nxt_cur >= o["wrap_hi"]),
                           nxt_cur - o["wrap_size"], nxt_cur)[:16]
            iterates = kind_is(kind, *_ITERATING)
            port = st_wr_issue[r]
            m.d.comb += [port.addr.eq(sel), port.en.eq(i_go),
                         port.data.cur.eq(Mux(kind_is(kind, *_ADDRESSED), fifo_cur, cur))]
            for i in range(4):
                m.d.comb += port.data.k[i].eq(Mux(iterates, nxt_k[i], k[i]))
            o["next_k0"] = nxt_k[0]
            o["wrapped"] = wrapped
        i_done = I["dst"]["wrapped"]
        with m.If(i_go):
            m.d.sync += rr_last.eq(sel)

        # The issuing thread's reads: memory addresses, pops of fabric inputs.
        m.d.comb += [self.mem_a.addr.eq(I["a"]["cur"]), self.mem_b.addr.eq(I["b"]["cur"])]
        for r, port in fin.items():
            o = I[r]
            m.d.comb += port.pop.eq(Mux(i_go & (o["kind"] == KIND["FIN"]),
                                        Mux(o["dtype"], i_n << 1, i_n), 0))
        # Counters of the datapath; a cycle with work and no issue is a stall of one cause.
        m.d.comb += [
            rep.busy.eq(i_go),
            rep.fmac_lanes.eq(Mux(i_go & O.op_is(i_op, TensorOp.FMAC), i_n, 0)),
        ]
        stall = has_work.any() & ~i_go
        no_cand = stall & ~any_elig
        m.d.comb += [
            rep.stall_bank.eq(stall & any_elig & bank_conflict),
            rep.stall_output.eq(no_cand & blk_out.any()),
            rep.stall_input.eq(no_cand & ~blk_out.any() & blk_in.any()),
            rep.stall_hazard.eq((stall & any_elig & ~bank_conflict)
                                | (no_cand & ~blk_out.any() & ~blk_in.any())),
        ]

        # The issue record entering the datapath's pipeline.
        d = I["dst"]
        dst_sram = kind_is(d["kind"], "MEM", "FIFO")
        dst_acc = d["kind"] == KIND["ACC"]
        rec = {
            "valid": i_go, "thread": sel, "n": i_n, "op": i_op,
            "core": th_core.bit_select(sel, 1),
            "dst_kind": d["kind"], "dst_dtype": d["dtype"], "dst_addr": d["cur"],
            "raw": O.op_is(i_op, TensorOp.FMOV) & (d["dtype"] == I["a"]["dtype"]),
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
            sram = kind_is(o["kind"], "MEM", "FIFO")
            rec.update({
                f"{r}_kind": o["kind"], f"{r}_dtype": o["dtype"],
                f"{r}_off": Mux(sram & o["dtype"], o["cur"][1], o["cur"][:2]),
                f"{r}_value": o["value"],
            })
        for name, value in rec.items():
            m.d.comb += getattr(self.issue, name).eq(value)

        # Thread bookkeeping: launch allocation, issue completion, retirement (as bit-vector
        # operations on all threads at once).
        sel_hot = sig(m, Mux(i_go, Const(1, T) << sel, 0), "i_sel_hot", T)
        slot_hot = sig(m, Mux(l1_go, Const(1, T) << slot, 0), "l1_slot_hot", T)
        is_fout = Cat(*[th["dst"]["kind"][t] == KIND["FOUT"] for t in range(T)])
        no_credit = Cat(*[th_credits[t] == 0 for t in range(T)])
        finishing = Mux(i_done, sel_hot, 0)
        retiring = (finishing & ~is_fout) | (th_done & no_credit)
        m.d.sync += [th_active.eq((th_active & ~retiring) | slot_hot),
                     th_done.eq((th_done | finishing) & ~slot_hot)]
        with m.If(l1_go):
            m.d.sync += th_core.eq((th_core & ~slot_hot) | Mux(l1_req.core, slot_hot, 0))
        for t in range(T):
            with m.If(sel_hot[t]):
                m.d.sync += th_k0dst[t].eq(I["dst"]["next_k0"])
            with m.If(slot_hot[t]):
                m.d.sync += [th_dep[t].eq(dep_new), th_k0dst[t].eq(L["dst"]["len"][0]),
                             th_meta[t].eq(meta_new),
                             th_ids[t].eq(Cat(l1_req.launch.dst, l1_req.launch.a,
                                              l1_req.launch.b, l1_req.launch.s))]
                for r in ROLES:
                    m.d.sync += th_res[r][t].eq(res_new[r])
            with m.Else():
                # A slot being reused: nobody depends on its previous occupant any more.
                m.d.sync += th_dep[t].eq(th_dep[t] & ~slot_hot)

        # Status; operations of the core still in flight (its ``twait``).
        m.d.comb += [rep.threads_active.eq(th_active), rep.launching.eq(l1_valid)]
        m.d.comb += self.core_ops_pending.eq(
            (launch_valid & req.core) | (l1_valid & l1_req.core)
            | (th_active & th_core).any() | hz.core_busy)
        m.d.comb += self.bank_use.eq(Mux(i_go, mask_a | mask_b, 0))
        self._core_dsr_port(m, dsr_wr_core, dsr_rd_core, th_active, th_ids, l1_valid, l1_req)
        return m

    def _core_dsr_port(self, m, wr, rd, th_active, th_ids, l1_valid, l1_req):
        """The core's DSR port: grant, the "in use" check, the write, the read (next cycle)."""
        cd, hd, launch = self.core_dsr, self.dsr, self.launch
        T = self._p.threads

        def names(launch_fields, ident):
            return Cat(*[getattr(launch_fields, r) == ident for r in ("dst", "a", "b", "s")]).any()
        live = [th_active[t] & Cat(*[th_ids[t][6 * i:6 * i + 6] == cd.id
                                     for i in range(4)]).any() for t in range(T)]
        in_use = ((launch.valid & launch.ready & names(launch.payload.launch, cd.id))
                  | (l1_valid & names(l1_req.launch, cd.id)) | Cat(*live).any())
        # Evaluated only while the core asks (rtl.pe.util.sig; any register as idle value).
        busy = sig(m, in_use, "core_dsr_busy", 1, when=cd.en, idle=th_active[0])
        grant = sig(m, cd.en & ~hd.we, "core_dsr_grant", 1)
        m.d.comb += [cd.grant.eq(grant), cd.busy.eq(busy & cd.we)]
        rd_word = Signal(range(DSR_WORDS), reset_less=True)   # read only after a granted read
        for w in range(DSR_WORDS):
            m.d.comb += [
                wr[w].addr.eq(cd.id), wr[w].data.eq(cd.wdata),
                wr[w].en.eq(grant & cd.we & ~busy & (cd.word == w)),
                rd[w].addr.eq(cd.id), rd[w].en.eq(grant & ~cd.we),
            ]
        with m.If(grant & ~cd.we):
            m.d.sync += rd_word.eq(cd.word)
        m.d.comb += cd.rdata.eq(Array([port.data for port in rd])[rd_word])

    # ---------------------------------------------------------------------------------------
    def _launch_role(self, m, role, index, dsr, ident, req, bound_any, need, valid, idle):
        """Decode one operand of a launch (stage L1): its kind and type, effective base,
        iteration constants, resource range for the ordering rules, errors and the DSR
        word to write back. Everything returned is meaningful only while ``valid`` (the
        named intermediate values are ``idle`` otherwise, see :func:`rtl.pe.util.sig`)."""
        p = self._p
        C = p.num_colors

        def lsig(value, name, shape=None):
            return sig(m, value, name, shape, when=valid, idle=idle)

        none = ident == DSR_NONE
        wave = ident == DSR_WAVELET
        badid = (ident >= p.num_dsrs) & ~none & ~wave
        kind = lsig(Mux(wave, KIND["SCALAR"], Mux(none | badid, KIND["NONE"], dsr.kind)),
                    f"l1_{role}_kind", 3)
        dtype = lsig(Mux(wave, 0, Mux(kind == KIND["ACC"], 1, dsr.dtype)), f"l1_{role}_dtype", 1)
        sram = kind_is(kind, "MEM", "FIFO")
        esz2 = sram & dtype
        fifo = kind == KIND["FIFO"]
        is_dst = role == "dst"
        base0, fsize, dpos, dcount = dsr.base, dsr.fifo_size, dsr.pos, dsr.count

        idx_on = req.launch.idx[index]
        # MEM / ACC: the index's field (index >> shift) & (2^width - 1), width 0 = all of it
        # (bits 0..3 and 4..7 of fifo_size, a FIFO-only field; regs.encode_dsr).
        idx_val = req.index >> dsr.fifo_size[0:4]
        idx_width = dsr.fifo_size[4:8]
        idx_val = Mux(idx_width == 0, idx_val,
                      idx_val & ((Const(1, 11) << idx_width) - 1)[:10])
        idx_off = Mux(idx_on, idx_val * dsr.idx_stride, 0)
        adv_off = Mux(kind_is(kind, "MEM", "ACC"), dpos * dsr.adv_step, 0)
        # FIFO position: the read position (source) or the write position (destination).
        wpos = dpos + dcount
        wpos = Mux(wpos >= fsize, wpos - fsize, wpos)
        fifo_pos = Mux(fifo, wpos if is_dst else dpos, 0)
        off_el = lsig(Mux(fifo, fifo_pos, idx_off + adv_off), f"l1_{role}_off", signed(40))
        base = lsig(base0 + Mux(esz2, off_el << 1, off_el), f"l1_{role}_base", signed(40))
        esz = Mux(esz2, 2, 1)

        lens = [dsr.dim(i, "len") for i in range(4)]
        strides = [lsig(Mux(esz2, dsr.dim(i, "stride") << 1, dsr.dim(i, "stride")),
                        f"l1_{role}_stride{i}", signed(22)) for i in range(4)]
        ext = [lsig((lens[i] - 1) * strides[i], f"l1_{role}_ext{i}", signed(40))
               for i in range(4)]
        size_addr = Mux(esz2, fsize << 1, fsize)
        neg = sum(Mux(e < 0, e, 0) for e in ext)
        pos = sum(Mux(e > 0, e, 0) for e in ext)
        lo = lsig(Mux(fifo, base0, base + neg), f"l1_{role}_lo", signed(40))
        hi = lsig(Mux(fifo, base0 + size_addr - 1, base + pos + esz - 1), f"l1_{role}_hi",
                  signed(40))
        jumps = [strides[1] - ext[0], strides[2] - ext[0] - ext[1],
                 strides[3] - ext[0] - ext[1] - ext[2]]
        color = dsr.color
        chan = kind_is(kind, "FIN", "FOUT")
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
            # FOUT's zero filter: bit 0 of the (FIFO-only) fifo_size field, FP16 streams.
            "filter": dsr.fifo_size[0] & (kind == KIND["FOUT"]) & ~dtype,
        }
        space = Signal(3, name=f"l1_{role}_space")
        with m.If(~need):
            m.d.comb += space.eq(SPACE_NONE)
        with m.Elif(sram):
            m.d.comb += space.eq(SPACE_SRAM)
        with m.Elif(kind == KIND["ACC"]):
            m.d.comb += space.eq(SPACE_ACC)
        with m.Elif(kind == KIND["FIN"]):
            m.d.comb += space.eq(SPACE_FIN)
        with m.Elif(kind == KIND["FOUT"]):
            m.d.comb += space.eq(SPACE_FOUT)
        out["space"] = space
        out["lo"] = lsig(Mux(chan, color, lo[:16]), f"l1_{role}_rlo", 16)
        out["hi"] = lsig(Mux(chan, color, hi[:16]), f"l1_{role}_rhi", 16)
        out["w"] = lsig(Const(1, 1) if is_dst else (
            (kind == KIND["FIN"]) | (req.launch.clear_a if role == "a" else 0)), f"l1_{role}_w", 1)

        if is_dst:
            kind_ok = kind_is(kind, "MEM", "ACC", "FOUT", "NULL", "FIFO")
        else:
            kind_ok = kind_is(kind, "MEM", "ACC", "FIN", "SCALAR", "FIFO")
        cidx = color[:max(1, bits_for(C - 1))]
        fin_bound = (kind == KIND["FIN"]) & (color < C) & bound_any.bit_select(cidx, 1)
        out["bad_operand"] = need & (badid | ~kind_ok | fin_bound)
        out["bad_color"] = need & chan & (color >= C)
        out["zero"] = need & kind_is(kind, *_ITERATING) & (
            Cat(*[length == 0 for length in lens]).any() | (fifo & (fsize == 0)))
        out["misaligned"] = need & esz2 & base[0]
        limit = Mux(sram, 2 * p.sram_words, p.acc_words)
        out["oob"] = need & kind_is(kind, "MEM", "FIFO", "ACC") & ((lo < 0) | (hi >= limit))
        length = lens[0]
        if is_dst:
            out["overflow"] = need & fifo & (dcount + length > fsize)
            out["underflow"] = Const(0, 1)
        else:
            out["overflow"] = Const(0, 1)
            out["underflow"] = need & fifo & (length > dcount)
        # Word 7 written back at launch: auto-advance position, FIFO read position and count.
        adv_on = req.launch.adv[index] & kind_is(kind, "MEM", "ACC")
        nxt = (dpos + 1)[:16]
        adv_pos = Mux((dsr.adv_count != 0) & (nxt == dsr.adv_count), 0, nxt)
        rpos = dpos + length
        rpos = Mux(rpos >= fsize, rpos - fsize, rpos)
        if is_dst:
            fifo_word = Cat(dpos, (dcount + length)[:16])
        else:
            fifo_word = Cat(rpos[:16], (dcount - length)[:16])
        out["wb"] = lsig(need & (adv_on | fifo), f"l1_{role}_wbn", 1)
        out["wb_word"] = Mux(fifo, fifo_word, Cat(adv_pos, dcount))
        return out
