"""The PE's datapath: read stage, FP32 arithmetic, write-back, output buffers and tx.

Pipeline (docs/pe.md section 2), one issue per cycle from the tensor engine:

* **R** (read): the operands' raw lanes from the SRAM pair, the accumulator row, the
  fabric queue or the scalar, widened exactly to FP32; FMAX / FNEG / FMOV beside the FMA.
* **X, A, N**: the FP32 fused multiply-add of :class:`rtl.fp.FMAUnit` (4 lanes); the
  MOV/MAX/NEG results wait beside it, so that every operation writes back
  :data:`rtl.pe.ops.LATENCY` cycles after issue (in order, one write port).
* **W** (write-back): rounding to FP16 if the destination is, placement into the 64-bit
  word / the accumulator row / the issuing thread's output buffer.

Fabric output: every thread has a buffer of ``out_depth`` wavelets; tx sends, round-robin
over the threads whose head wavelet's color is ready, one wavelet per cycle.

Every operation is bit-exact with golden/fp.py (docs/pe.md section 2).
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from rtl.fp import (FP32, FMAUnit, f16_to_f32, f32_to_f16, fp_copysign, fp_max, fp_neg,
                    fp_rsqrt_estimate)
from rtl.link import LinkSignature
from rtl.pe import ops as O
from rtl.pe.iface import (READ_STAGE_FIELDS, AccWriteSignature, DatapathReport,
                          HazardSignature, IssueSignature, MemDataSignature,
                          OutBufferSignature, QueueDataSignature, SramWriteSignature,
                          issue_fields, thread_bits)
from rtl.pe.util import KIND, kind_is, lane_mask, round_robin, sig
from rtl.wavelet import Wavelet

__all__ = ["Datapath"]


class Datapath(wiring.Component):
    """Read stage, arithmetic, write-back, per-thread output buffers and tx.

    Parameters
    ----------
    params : rtl.pe.regs.PEParams

    Attributes
    ----------
    issue : In(IssueSignature)
        The engine's issue record (always accepted).
    mem_a, mem_b : In(MemDataSignature)
        The memory reads the issue stage addressed, in the read stage.
    fin_a, fin_b : In(QueueDataSignature)
        The fabric-queue wavelets the issue stage addressed, in the read stage.
    sram_wr : Out(SramWriteSignature)
    acc_wr : Out(AccWriteSignature)
        The write-back's writes.
    hazards : Out(HazardSignature)
        The writes in the pipeline and the write-back's banks, for the issue stage.
    outbuf : In(OutBufferSignature)
        Thread starts (their output buffers are emptied); the buffers' credits.
    tx : Out(LinkSignature)
        To the router's RAMP input; ``valid`` only for a color whose ``tx.ready`` bit is set.
    core_send : In(stream.Signature(Wavelet))
        The control core's ``send`` / ``sendc``. It shares tx with the output buffers: it
        goes when its color is ready and either no buffer holds a wavelet or the buffers
        sent last time both wanted (alternating); the buffers send nothing in that cycle.
    report : Out(DatapathReport)
    """

    def __init__(self, params):
        self._p = params
        super().__init__({
            "issue": In(IssueSignature(params)),
            "mem_a": In(MemDataSignature()),
            "mem_b": In(MemDataSignature()),
            "fin_a": In(QueueDataSignature(params.rx_depth)),
            "fin_b": In(QueueDataSignature(params.rx_depth)),
            "sram_wr": Out(SramWriteSignature()),
            "acc_wr": Out(AccWriteSignature()),
            "hazards": Out(HazardSignature(params)),
            "outbuf": In(OutBufferSignature(params)),
            "tx": Out(LinkSignature()),
            "core_send": In(stream.Signature(Wavelet)),
            "report": Out(DatapathReport()),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        T, D, OD = p.threads, p.rx_depth, p.out_depth
        TB = thread_bits(T)
        assert O.LATENCY == 1 + FMAUnit.latency == 4, "stages R, X, A, N, then W"

        # --- pipeline records: stage 1 (R) carries everything, stages 2..4 the write-back's
        # fields (narrow fields, no wide struct). Only "valid" is reset: every other field is
        # read under it.
        fields = issue_fields(p)
        stage = [None]
        for k in range(1, O.LATENCY + 1):
            stage.append({f: Signal(w, name=f"s{k}_{f}", reset_less=f != "valid")
                          for f, w in fields.items() if k == 1 or f not in READ_STAGE_FIELDS})
        s1, s4 = stage[1], stage[O.LATENCY]
        for f, reg in s1.items():
            m.d.sync += reg.eq(getattr(self.issue, f))
        for k in range(2, O.LATENCY + 1):
            for f, reg in stage[k].items():
                m.d.sync += reg.eq(stage[k - 1][f])
        hz = self.hazards
        for k, port in zip(range(1, O.LATENCY), hz.pending):
            st = stage[k]
            m.d.comb += [port.valid.eq(st["valid"]), port.w_valid.eq(st["w_valid"]),
                         port.w_space.eq(st["w_space"]), port.w_line.eq(st["w_line"]),
                         port.clear.eq(st["clear"]), port.clr_addr.eq(st["clr_addr"])]
        m.d.comb += [
            hz.wb_banks.eq(Mux(s4["valid"], s4["wmask"], 0)),
            hz.core_busy.eq(Cat(*[stage[k]["valid"] & stage[k]["core"]
                                  for k in range(1, O.LATENCY + 1)]).any()),
            self.report.pipeline_busy.eq(Cat(*[stage[k]["valid"]
                                               for k in range(1, O.LATENCY + 1)]).any()),
        ]

        # ================================ read stage (R) ====================================
        def operand_lanes(r, mem, fin):
            """Raw 32-bit lanes of operand r in stage R and whether they are FP16."""
            kind, is32, off = s1[f"{r}_kind"], s1[f"{r}_dtype"], s1[f"{r}_off"]
            dword = mem.sram
            mem16 = dword >> (off * 16)
            mem32 = Mux(off[0], dword[32:], dword[:32])
            acc_words = Array(mem.acc)
            ents = fin.entries
            lanes = []
            for i in range(4):
                lane = Signal(32, name=f"r_{r}_raw{i}")
                fin16 = ents[i].data if i < D else Const(0, 16)
                fin32 = (Cat(ents[2 * i].data, ents[2 * i + 1].data)
                         if 2 * i + 1 < D else Const(0, 32))
                with m.Switch(kind):
                    with m.Case(KIND["MEM"], KIND["FIFO"]):
                        m.d.comb += lane.eq(Mux(is32, mem32 if i == 0 else
                                                (dword[32:] if i == 1 else 0),
                                                mem16[16 * i:16 * i + 16]))
                    with m.Case(KIND["ACC"]):
                        m.d.comb += lane.eq(acc_words[(off + i)[:2]])
                    with m.Case(KIND["FIN"]):
                        m.d.comb += lane.eq(Mux(is32, fin32, fin16))
                    with m.Default():
                        m.d.comb += lane.eq(s1[f"{r}_value"])
                lanes.append(lane)
            is16 = ~is32 & (kind != KIND["ACC"])
            return lanes, is16

        raw_a, a16 = operand_lanes("a", self.mem_a, self.fin_a)
        raw_b, b16 = operand_lanes("b", self.mem_b, self.fin_b)

        def widen(lanes, is16, name):
            out = []
            for i, lane in enumerate(lanes):
                out.append(sig(m, Mux(is16, f16_to_f32(m, lane[:16]), lane), f"r_{name}{i}", 32))
            return out
        wa = widen(raw_a, a16, "wa")
        wb = widen(raw_b, b16, "wb")
        ws = sig(m, Mux(s1["s16"], f16_to_f32(m, s1["s_value"][:16]), s1["s_value"]), "r_ws",
                 32)

        # The FMA unit: dst = c + a * b with (a, b, c) = (b, s, a) for an operation with a
        # scalar (FMAC), (a, b, a) for the others (c unused by ADD / SUB / MUL).
        m.submodules.fma = fma = FMAUnit(FP32, FP32, lanes=O.LANES)
        r_op = s1["op"]
        r_scaled = O.op_where(r_op, lambda o: o.uses_s)
        m.d.comb += [
            fma.i.valid.eq(s1["valid"]), fma.o.ready.eq(1),
            fma.i.payload.op.as_value().eq(O.fma_op(r_op)),
        ]
        for i in range(O.LANES):
            m.d.comb += [
                fma.i.payload.a[i].eq(Mux(r_scaled, wb[i], wa[i])),
                fma.i.payload.b[i].eq(Mux(r_scaled, ws, wb[i])),
                fma.i.payload.c[i].eq(wa[i]),
            ]
        # The MOV / MAX / NEG path, delayed to the FMA's latency.
        raw1 = s1["raw"]
        alt_sel1 = O.op_where(r_op, lambda o: o.unit == O.Unit.ALT)
        alt_op = {info.alt: info.op for info in O.OPS.values() if info.unit == O.Unit.ALT}
        is_max = O.op_is(r_op, alt_op[O.Alt.MAX])
        is_min = O.op_is(r_op, alt_op[O.Alt.MIN])
        is_minmax = sig(m, is_max | is_min, "alt_minmax")
        is_neg = O.op_is(r_op, alt_op[O.Alt.NEG])
        is_cps = O.op_is(r_op, alt_op[O.Alt.CPSGN])
        is_rsqe = O.op_is(r_op, alt_op[O.Alt.RSQE])
        delays = range(2, 2 + FMAUnit.latency)
        alt = {k: [Signal(32, name=f"alt{k}_{i}", reset_less=True) for i in range(4)]
               for k in delays}
        alt_sel = {k: Signal(name=f"altsel{k}", reset_less=True) for k in delays}
        for i in range(4):
            mx = fp_max(m, FP32, wa[i], wb[i], minimum=is_min, when=is_minmax, idle=wa[i])
            ng = fp_neg(m, FP32, wa[i], when=is_neg, idle=wa[i])
            cs = fp_copysign(m, FP32, wa[i], wb[i], when=is_cps, idle=wa[i])
            rq = fp_rsqrt_estimate(m, wa[i], when=is_rsqe, idle=wa[i])
            v = Mux(is_minmax, mx, Mux(is_neg, ng, Mux(is_cps, cs, Mux(
                is_rsqe, rq, Mux(raw1, raw_a[i], wa[i])))))
            m.d.sync += alt[delays[0]][i].eq(v)
            for k in delays[1:]:
                m.d.sync += alt[k][i].eq(alt[k - 1][i])
        m.d.sync += alt_sel[delays[0]].eq(alt_sel1)
        for k in delays[1:]:
            m.d.sync += alt_sel[k].eq(alt_sel[k - 1])
        last = delays[-1]

        # ================================ write-back (W) ====================================
        res = [sig(m, Mux(alt_sel[last], alt[last][i], fma.o.payload.result[i]), f"w_res{i}", 32)
               for i in range(4)]
        # FP16 results: read only for an FP16 destination (the conversion only without raw).
        cvt16 = sig(m, s4["valid"] & ~s4["dst_dtype"] & ~s4["raw"], "w_cvt16")
        v16 = [sig(m, Mux(s4["raw"], res[i][:16], f32_to_f16(m, res[i], when=cvt16,
                                                             idle=res[i])), f"w_h{i}", 16)
               for i in range(4)]
        w_kind, w_addr, w_n = s4["dst_kind"], s4["dst_addr"], s4["n"]
        w_sram = s4["valid"] & kind_is(w_kind, "MEM", "FIFO")
        w_acc = s4["valid"] & (w_kind == KIND["ACC"])
        w_fout = s4["valid"] & (w_kind == KIND["FOUT"])
        w_is32 = s4["dst_dtype"]
        data16 = (Cat(*v16) << (w_addr[:2] * 16))[:64]
        en16 = lane_mask(w_n, w_addr[:2], 4)
        data32 = Mux(w_addr[1], Cat(Const(0, 32), res[0]), Cat(res[0], res[1]))
        en32w = lane_mask(w_n, w_addr[1], 2)
        en32 = Cat(en32w[0], en32w[0], en32w[1], en32w[1])
        w_data64 = sig(m, Mux(w_is32, data32, data16), "w_data64", 64,
                       when=w_sram, idle=Cat(res[0], res[1]))     # read only by SRAM writes
        w_en4 = sig(m, Mux(w_is32, en32, en16), "w_en4", 4)
        m.d.comb += [self.sram_wr.addr.eq(w_addr), self.sram_wr.data.eq(w_data64),
                     self.sram_wr.en.eq(Mux(w_sram, w_en4, 0))]
        w_clear = s4["valid"] & s4["clear"]
        c_addr = s4["clr_addr"]
        acc_off = Mux(w_clear, c_addr[:2], w_addr[:2])
        acc_en = sig(m, Mux(w_clear | w_acc, lane_mask(w_n, acc_off, 4), 0), "w_acc_en", 4)
        m.d.comb += [self.acc_wr.addr.eq(Mux(w_clear, c_addr, w_addr)),
                     self.acc_wr.en.eq(acc_en)]
        for j in range(4):
            m.d.comb += self.acc_wr.data[j].eq(Mux(w_clear, 0, Array(res)[(j - acc_off)[:2]]))

        # ================================ output buffers and tx =============================
        # Per-thread buffers of OD wavelets (data only; color, ctrl and index per thread).
        ob = self.outbuf
        th_credits = list(ob.credits)
        th_ocount = [Signal(range(OD + 1), name=f"th{t}_ocount") for t in range(T)]
        th_orp = [Signal(exact_log2(OD), name=f"th{t}_orp") for t in range(T)]
        th_owp = [Signal(exact_log2(OD), name=f"th{t}_owp") for t in range(T)]
        th_ocolor = [Signal(5, name=f"th{t}_ocolor") for t in range(T)]   # tx: reset
        # The zero filter (FP16 FOUT): the thread's flag and its element position so far.
        th_ofilt = [Signal(name=f"th{t}_ofilt") for t in range(T)]
        th_epos = [Signal(10, name=f"th{t}_epos") for t in range(T)]
        out_meta = data.StructLayout({"ctrl": 1, "index": 10})
        m.submodules.out_meta = out_meta_mem = memory.Memory(shape=out_meta, depth=T, init=[])
        out_meta_wr, out_meta_rd = out_meta_mem.write_port(), out_meta_mem.read_port(domain="comb")
        m.d.comb += [out_meta_wr.addr.eq(ob.slot), out_meta_wr.en.eq(ob.start),
                     out_meta_wr.data.ctrl.eq(ob.ctrl), out_meta_wr.data.index.eq(ob.index)]
        # Entries: the data and, for a filtering thread, the element's index.
        m.submodules.out_mem = out_mem = memory.Memory(shape=26, depth=T * OD, init=[])
        out_wr = [out_mem.write_port() for _ in range(4)]
        out_rd = out_mem.read_port(domain="comb")
        w_thread = s4["thread"]
        w_wp = Array(th_owp)[w_thread]
        w_waves = Mux(w_is32, w_n << 1, w_n)
        w_filt = sig(m, Array(th_ofilt)[w_thread] & ~w_is32, "w_filt", 1)
        w_epos = Array(th_epos)[w_thread]
        # A filtering thread keeps the non-zero lanes, packed in lane order.
        keep = [sig(m, (j < w_waves) & (~w_filt | (v16[j][:15] != 0)), f"w_keep{j}", 1,
                    when=w_fout, idle=th_ofilt[0]) for j in range(4)]
        offs = [Const(0, 3)]
        for j in range(1, 4):
            offs.append(sig(m, offs[-1] + keep[j - 1], f"w_off{j}", 3))
        w_pushed = sig(m, offs[3] + keep[3], "w_pushed", 3)
        for j in range(4):
            word = Mux(w_is32, res[j // 2][16 * (j % 2):16 * (j % 2) + 16], v16[j])
            m.d.comb += [
                out_wr[j].addr.eq(Cat((w_wp + offs[j])[:exact_log2(OD)], w_thread)),
                out_wr[j].data.eq(Cat(word, (w_epos + j)[:10])),
                out_wr[j].en.eq(w_fout & keep[j]),
            ]

        # The core's send: it goes when its color is ready and it is its turn or no buffer
        # holds a wavelet (from registers only: no loop through the buffers' choice).
        tx = self.tx
        cs = self.core_send
        buffered = Cat(*[th_ocount[t] != 0 for t in range(T)]).any()
        core_turn = Signal()
        core_go = sig(m, cs.valid & tx.ready.bit_select(cs.payload.color, 1)
                      & (core_turn | ~buffered), "core_tx_go", 1)
        with m.If(cs.valid):
            m.d.sync += core_turn.eq(~core_go)
        ready = Mux(core_go, 0, tx.ready)
        # The buffers: round-robin over threads whose buffer head's color may go.
        tx_cand = Cat(*[(th_ocount[t] != 0) & ready.bit_select(th_ocolor[t], 1)
                        for t in range(T)])
        tx_last = Signal(range(T))
        tx_any, tx_sel = round_robin(m, tx_cand, tx_last, T, "tx_sel")
        tx_sel = sig(m, tx_sel[:TB], "tx_sel")
        m.d.comb += [
            out_rd.addr.eq(Cat(Array(th_orp)[tx_sel], tx_sel)),
            out_meta_rd.addr.eq(tx_sel),
            cs.ready.eq(core_go),
            tx.valid.eq(tx_any | core_go),
            self.report.wavelets_out.eq(tx_any | core_go),
            self.report.tx_pending.eq(buffered | cs.valid),
        ]
        with m.If(core_go):
            m.d.comb += tx.payload.eq(cs.payload)
        with m.Else():
            m.d.comb += [
                tx.payload.data.eq(out_rd.data[:16]),
                tx.payload.index.eq(Mux(Array(th_ofilt)[tx_sel], out_rd.data[16:],
                                        out_meta_rd.data.index)),
                tx.payload.ctrl.eq(out_meta_rd.data.ctrl),
                tx.payload.color.eq(Array(th_ocolor)[tx_sel]),
            ]
        with m.If(tx_any):
            m.d.sync += tx_last.eq(tx_sel)
        # The issue of this cycle takes output credits; a launch empties its thread's buffer.
        i = self.issue
        i_fout = i.valid & (i.dst_kind == KIND["FOUT"])
        i_owave = Mux(i.dst_dtype, i.n << 1, i.n)
        for t in range(T):
            with m.If(ob.start & (ob.slot == t)):
                m.d.sync += [th_ocolor[t].eq(ob.color), th_ofilt[t].eq(ob.filter)]
        # One test first: most cycles move no output wavelet (Verilator keeps the If).
        with m.If(w_fout | tx_any | i_fout | ob.start):
            for t in range(T):
                here = w_fout & (w_thread == t)
                pushed = Mux(here, w_pushed, 0)
                # Credits come back when a wavelet is sent, or at once when filtered out.
                dropped = Mux(here, w_waves - w_pushed, 0)
                popped = tx_any & (tx_sel == t)
                issued = Mux(i_fout & (i.thread == t), i_owave, 0)
                with m.If(ob.start & (ob.slot == t)):
                    m.d.sync += [th_credits[t].eq(0), th_ocount[t].eq(0), th_orp[t].eq(0),
                                 th_owp[t].eq(0), th_epos[t].eq(0)]
                with m.Elif(here | popped | (issued != 0)):
                    m.d.sync += [
                        th_ocount[t].eq(th_ocount[t] + pushed - popped),
                        th_owp[t].eq(th_owp[t] + pushed),
                        th_orp[t].eq(th_orp[t] + popped),
                        th_credits[t].eq(th_credits[t] + issued - popped - dropped),
                        th_epos[t].eq(th_epos[t] + Mux(here, w_n, 0)),
                    ]
        return m
