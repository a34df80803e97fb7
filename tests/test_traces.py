"""Timelines of ``--trace`` (gpt_mapping/traces.py): the PE's debug records to tracks, and
the ``gemm``, ``gpt`` and ``core`` commands writing them (on the RTL: the 4 x 5 fabric build
of tests/test_fabric.py, the 2 x 2 of tests/test_gpt_rtl.py, the PE of tests/test_pe.py)."""

import json

import numpy as np
import pytest

from gpt_mapping import core_cli, gemm_cli, gpt_cli
from gpt_mapping.demo import make_gemm_operands
from gpt_mapping.timeline import Timeline
from gpt_mapping.traces import LAUNCH_LATENCY, add_pe, decode_debug
from rtl.pe.iface import PEDebug
from rtl.pe.regs import TensorOp, encode_fields

FABRIC = (4, 5)          # the build of tests/test_fabric.py


def word(**fields):
    """A PEDebug word from dotted field names (``start_valid`` for ``start.valid``)."""
    return encode_fields(PEDebug, **{k.replace("_", ".", 1) if k.startswith(("start_",
                                     "launch_")) else k: v for k, v in fields.items()})


def slices(tl, pid):
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in tl.events
             if e["name"] == "thread_name"}
    return [(names[pid, e["tid"]], e["name"], e["ts"], e["ts"] + e["dur"], e.get("args", {}))
            for e in tl.events if e["ph"] == "X" and e["pid"] == pid]


# --- records to tracks (no simulation) ---------------------------------------------------------

def test_debug_words_decode_field_by_field():
    w = word(start_valid=1, start_code=1, start_task=9, launch_valid=1, launch_slot=5,
             launch_op=TensorOp.FADD.value, launch_core=1, core_done=1, core_running=1,
             retired=1, error=1, threads=0x8001)
    f = decode_debug([w, 0])
    assert {k: int(v[0]) for k, v in f.items()} == {
        "start.valid": 1, "start.code": 1, "start.task": 9, "launch.valid": 1,
        "launch.slot": 5, "launch.op": TensorOp.FADD.value, "launch.core": 1, "core_done": 1,
        "core_running": 1, "retired": 1, "error": 1, "threads": 0x8001}
    assert all(int(v[1]) == 0 for v in f.values())


def test_tasks_threads_and_the_core_from_records():
    """Two launch-list tasks whose operations overlap, a code task with a launch and three
    retired instructions, an error: the tracks and the attribution of every launch (a task
    ends at the next one's start or when its operations are done)."""
    L = LAUNCH_LATENCY
    recs = [
        (10, word(start_valid=1, start_task=0)),                            # list task A
        (10 + L, word(launch_valid=1, launch_slot=0, launch_op=4)),         # A's FMAC
        (11 + L, word(start_valid=1, start_task=0, threads=1)),             # list task B
        (12 + L, word(threads=1)),
        # A launch one cycle after B started is still A's (B's cannot be there yet).
        (12 + L, word(launch_valid=1, launch_slot=1, launch_op=4, threads=1)),
        (13 + L, word(threads=3)),
        (14 + L, word(launch_valid=1, launch_slot=2, launch_op=0, threads=3)),   # B's FMOV
        (15 + L, word(threads=7)),
        (20, word(threads=6)),                                              # A's first done
        (21, word(start_valid=1, start_code=1, start_task=3, threads=6)),   # code task
        (22, word(core_running=1, retired=1, threads=6)),
        (23, word(core_running=1, retired=1, launch_valid=1, launch_slot=0, launch_op=1,
                  launch_core=1, threads=6)),
        (24, word(core_running=1, core_done=1, threads=7)),                 # tend in M
        (25, word(retired=1, threads=7)),                                   # tend in W
        (26, word(threads=5)),                                              # A's second done
        (30, word(threads=1, error=1)),                                     # B's done
        (33, word(threads=0, error=1)),                                     # the FADD done
    ]
    tl = Timeline()
    pid = tl.process("PE (0, 0)")
    act = add_pe(tl, pid, [c for c, _ in recs], [v for _, v in recs],
                 task_names={0: "fmac", 3: "partial sum"})
    assert [(t["task"], t["code"], t["begin"], t["end"], t["operations"], t["retired"])
            for t in act.tasks] == [(0, False, 10, 13, 2, 0), (0, False, 13, 30, 1, 0),
                                    (3, True, 21, 26, 1, 3)]
    assert [t.get("finished") for t in act.tasks] == [26, 30, None]
    assert [(o["slot"], o["op"], o["task"], o["begin"], o["end"]) for o in act.operations] == [
        (0, "FMAC", 0, 13, 20), (1, "FMAC", 0, 15, 26), (2, "FMOV", 0, 17, 30),
        (0, "FADD", 3, 24, 33)]
    assert act.max_threads == 3 and act.retired == 3 and act.errors == [30]
    got = slices(tl, pid)
    assert ("tasks", "fmac", 10, 13, {"kind": "launch-list task", "ops": "FMAC FMAC",
                                      "finished": 26, "task": 0, "operations": 2}) in got
    assert ("tasks", "fmac", 13, 30, {"kind": "launch-list task", "ops": "FMOV",
                                      "finished": 30, "task": 0, "operations": 1}) in got
    assert ("core", "partial sum", 21, 26, {"kind": "code task", "task": 3,
                                            "operations": 1, "retired": 3}) in got
    assert ("thread 0", "FADD", 24, 33, {"task": "partial sum", "task_id": 3,
                                         "launched_by": "core"}) in got
    counters = [(e["name"], e["ts"], e["args"]) for e in tl.events if e["ph"] == "C"]
    assert ("retired instructions", 25, {"retired": 3}) in counters
    assert max(a["active"] for n, _, a in counters if n == "micro-threads") == 3
    assert [(e["name"], e["ts"]) for e in tl.events if e["ph"] == "i"] == [("PE error", 30)]


def test_the_nesting_check_can_fail():
    bad = {"traceEvents": [{"ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 5, "name": "a"},
                           {"ph": "X", "pid": 1, "tid": 1, "ts": 3, "dur": 5, "name": "b"}]}
    with pytest.raises(AssertionError):
        assert_tracks_nest(bad)
    bad["traceEvents"][1]["tid"] = 2
    assert_tracks_nest(bad)


def test_offsets_and_a_run_cut_short():
    """``offset`` moves every event; what the records leave open ends at ``end``."""
    tl = Timeline()
    pid = tl.process("p")
    recs = [(5, word(start_valid=1, start_task=1)),
            (7, word(launch_valid=1, launch_slot=3, launch_op=4)),
            (8, word(threads=8))]
    act = add_pe(tl, pid, [c for c, _ in recs], [v for _, v in recs], end=50, offset=1000)
    assert act.tasks[0]["end"] == 50 and act.operations[0]["end"] == 50
    assert sorted((t, b, e) for t, _, b, e, _ in slices(tl, pid)) == [
        ("tasks", 1005, 1050), ("thread 3", 1008, 1050)]


# --- the commands without hardware ------------------------------------------------------------

def test_trace_needs_hardware(tmp_path, capsys):
    """The golden backends run no hardware: --trace names the backend and writes nothing."""
    x16, w16 = make_gemm_operands(8, 12, 4, seed=1)
    np.save(tmp_path / "X.npy", x16)
    np.save(tmp_path / "W.npy", w16)
    trace = tmp_path / "t.json"
    code = gemm_cli.main(["--x", str(tmp_path / "X.npy"), "--w", str(tmp_path / "W.npy"),
                          "--fabric", "2x1", "--out", str(tmp_path / "Y.npy"), "--report",
                          str(tmp_path / "r.json"), "--backend", "golden", "--no-progress",
                          "--trace", str(trace)])
    assert code == 2
    assert ("error: --trace needs the rtl backend: the golden backend runs no hardware"
            in capsys.readouterr().err)
    code = gpt_cli.main(["--n-embd", "16", "--n-head", "2", "--n-ctx", "4", "--fabric", "2x2",
                         "--backend", "golden", "--no-progress", "--trace", str(trace)])
    assert code == 2
    assert "--trace needs the rtl backend: the golden backend" in capsys.readouterr().err
    assert not trace.exists() and not (tmp_path / "Y.npy").exists()


LOOP = """
        li   r1, 5
        li   r2, 0x8000
loop:   addi r3, r3, 2
        addi r1, r1, -1
        bne  r1, r0, loop
        sw   r3, 0(r2)
        halt
"""


def _core_trace(tmp_path, backend):
    prog = tmp_path / "loop.s"
    prog.write_text(LOOP)
    out, trace = tmp_path / f"{backend}.json", tmp_path / f"{backend}-trace.json"
    assert core_cli.main([str(prog), "--backend", backend, "--json", str(out),
                          "--trace", str(trace)]) == 0
    return json.loads(out.read_text()), json.loads(trace.read_text())


def assert_tracks_nest(doc):
    """What the Perfetto UI needs of complete events: on one track, two slices are disjoint
    or one holds the other (else the UI draws them wrongly); every event has a time."""
    tracks = {}
    for e in doc["traceEvents"]:
        assert e["ph"] in "XCiM", e
        if e["ph"] != "M":
            assert e["ts"] >= 0 and isinstance(e["pid"], int), e
        if e["ph"] == "X":
            assert e["dur"] >= 1, e
            tracks.setdefault((e["pid"], e["tid"]), []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in tracks.values():
        spans.sort(key=lambda s: (s[0], -s[1]))
        open_ = []
        for begin, end in spans:
            while open_ and open_[-1] <= begin:
                open_.pop()
            assert not open_ or end <= open_[-1], (begin, end, open_)
            open_.append(end)


def _instructions(doc):
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"]
              if e["name"] == "thread_name"}
    return [e for e in doc["traceEvents"]
            if e["ph"] == "X" and tracks[e["pid"], e["tid"]] == "instructions"]


def test_core_trace_on_the_iss_has_every_retired_instruction(tmp_path):
    report, doc = _core_trace(tmp_path, "iss")
    assert_tracks_nest(doc)
    ins = _instructions(doc)
    assert len(ins) == report["retired"] == 2 + 3 * 5 + 2
    assert "ISS's cycle model" in doc["otherData"]["cycles"]
    assert doc["otherData"]["retired"] == report["retired"]
    # On the cycle model's axis, in program order, the halt in the last cycle.
    assert [e["ts"] for e in ins] == sorted(e["ts"] for e in ins)
    assert ins[-1]["name"] == "halt" and ins[-1]["ts"] + ins[-1]["dur"] == report["cycles"]
    assert ins[2]["name"] == "addi r3, r3, 2" and ins[2]["args"] == {
        "pc": "0x0008", "word": ins[2]["args"]["word"], "rd": 3, "value": 2}
    assert ins[-2]["args"]["value"] == 10 and ins[-2]["name"] == "sw r3, 0(r2)"


# --- on the RTL ---------------------------------------------------------------------------------

@pytest.mark.rtl
def test_core_trace_on_the_rtl_has_every_retired_instruction(tmp_path):
    report, doc = _core_trace(tmp_path, "rtl")
    assert_tracks_nest(doc)
    ins = _instructions(doc)
    assert len(ins) == report["retired"] == 2 + 3 * 5 + 2
    assert [e["name"] for e in ins] == [e["name"] for e in _instructions(
        _core_trace(tmp_path, "iss")[1])]
    counters = [e for e in doc["traceEvents"] if e["name"] == "retired instructions"]
    # The debug port's retirements are the trace port's, cycle for cycle.
    assert [e["ts"] for e in counters] == [e["ts"] for e in ins]
    assert counters[-1]["args"]["retired"] == report["retired"]
    code = [e for e in doc["traceEvents"] if e["ph"] == "X"
            and e.get("args", {}).get("kind") == "code task"]
    assert len(code) == 1 and code[0]["args"]["retired"] == report["retired"]
    assert code[0]["ts"] < ins[0]["ts"] and ins[-1]["ts"] < code[0]["ts"] + code[0]["dur"]


def _pe_events(doc):
    """{PE name: (slices by track name, counters)} of a trace document."""
    procs = {e["pid"]: e["args"]["name"] for e in doc["traceEvents"]
             if e["name"] == "process_name"}
    tracks = {(e["pid"], e["tid"]): e["args"]["name"] for e in doc["traceEvents"]
              if e["name"] == "thread_name"}
    out = {}
    for e in doc["traceEvents"]:
        name = procs.get(e["pid"], "")
        if not name.startswith("PE (") or e["ph"] not in "XC":
            continue
        sl, cn = out.setdefault(name, ({}, []))
        if e["ph"] == "X":
            sl.setdefault(tracks[e["pid"], e["tid"]], []).append(e)
        else:
            cn.append(e)
    return out


@pytest.mark.rtl
@pytest.mark.xdist_group("fabric_4x5")
def test_gemm_trace_matches_the_run(tmp_path, capsys):
    """``gemm --trace`` on the RTL: valid JSON; per PE, one task per weight it took and per
    reduction command, every operation it launched, never more live threads than slots,
    everything inside the measured run; the same cycles and Y as untraced."""
    from gpt_mapping.fabric_run import TASK_NAMES, run_gemm_rtl
    from gpt_mapping.layout import map_gemm
    from gpt_mapping.streams import nonzero_counts
    x16, w16 = make_gemm_operands(12, 30, 5, sparsity=0.4, seed=13)
    m = map_gemm(x16, w16, *FABRIC)
    y_plain, plain = run_gemm_rtl(m, x16, w16, fabric=FABRIC)
    np.save(tmp_path / "X.npy", x16)
    np.save(tmp_path / "W.npy", w16)
    trace = tmp_path / "timeline.json"
    code = gemm_cli.main(["--x", str(tmp_path / "X.npy"), "--w", str(tmp_path / "W.npy"),
                          "--fabric", "4x5", "--out", str(tmp_path / "Y.npy"), "--report",
                          str(tmp_path / "r.json"), "--no-progress", "--trace", str(trace)])
    assert code == 0
    assert f"timeline -> {trace}" in capsys.readouterr().out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["cycles"] == plain["cycles"] and report["trace"] == str(trace)
    assert np.array_equal(np.load(tmp_path / "Y.npy").view(np.uint16),
                          y_plain.view(np.uint16))
    doc = json.loads(trace.read_text())
    assert_tracks_nest(doc)
    measured = [e for e in doc["traceEvents"] if e["ph"] == "X" and e["pid"] == 1
                and "cycles measured" in e["name"]]
    assert len(measured) == 1 and measured[0]["dur"] == report["cycles"]
    begin, end = measured[0]["ts"], measured[0]["ts"] + measured[0]["dur"]
    counters = report["measured_counters"]
    nnz = nonzero_counts(m, w16)                    # [W, N]: weights streamed per column
    pes = _pe_events(doc)
    rows = [y for y in range(m.height) if m.tokens_per_row[y]]
    assert sorted(pes) == sorted(f"PE ({x}, {y})" for y in rows for x in range(m.width))
    for y in rows:
        for x in range(m.width):
            sl, cn = pes[f"PE ({x}, {y})"]
            tasks = sl.get("tasks", [])
            code_tasks = sl.get("core", [])
            names = [e["name"] for e in tasks + code_tasks]
            assert names.count("fmac") == int(nnz[x].sum()), (x, y)
            reductions = names.count("partial sum") + names.count("final sum")
            assert reductions == m.outputs and len(code_tasks) == m.outputs, (x, y)
            assert names.count("final sum") == int(m.outputs_per_column[x]), (x, y)
            assert len(names) == counters["pe_tasks"][y][x]
            ops = [e for k, v in sl.items() if k.startswith("thread ") for e in v]
            assert len(ops) == counters["pe_launches"][y][x]
            assert {e["args"]["task"] for e in ops} <= set(TASK_NAMES.values())
            retired = [c["args"]["retired"] for c in cn if c["name"] == "retired instructions"]
            assert retired and retired[-1] == sum(e["args"]["retired"] for e in code_tasks)
            live = [c["args"]["active"] for c in cn if c["name"] == "micro-threads"]
            assert live and max(live) <= 8 and live[-1] == 0
            for e in [e for v in sl.values() for e in v] + cn:
                assert begin <= e["ts"] and e["ts"] + e.get("dur", 0) <= end, (x, y, e)
            assert all(e["ts"] < e["args"]["finished"] <= end for e in tasks)


@pytest.mark.rtl
@pytest.mark.slow
def test_gpt_trace_lays_the_fabric_operations_end_to_end(tmp_path, capsys):
    """``gpt --trace`` (the 2 x 2 block of tests/test_gpt_rtl.py): each fabric operation's
    measured span is its reported cycles, one after the other, every PE event inside one of
    them, the host operations marked between."""
    trace, rep = tmp_path / "gpt.json", tmp_path / "report.json"
    code = gpt_cli.main(["--n-embd", "16", "--n-head", "2", "--n-ctx", "4", "--batch", "2",
                         "--fabric", "2x2", "--no-progress", "--report", str(rep),
                         "--trace", str(trace)])
    assert code == 0, capsys.readouterr().err
    report = json.loads(rep.read_text())
    gemms = [(r["name"], r["fabric_cycles"]) for r in report["operations"]
             if r["where"] == "fabric"]
    doc = json.loads(trace.read_text())
    assert_tracks_nest(doc)
    host = [e for e in doc["traceEvents"] if e["pid"] == 1 and e["ph"] in "Xi"]
    measured = [e for e in host if e["ph"] == "X" and "cycles measured" in e["name"]]
    # A GEMM in column groups first moves its X into them (its own run, ".redistribute");
    # the GEMM's row counts both.
    folded, moves = [], 0
    for e in measured:
        name = e["name"].split(":")[0]
        if name.endswith(".redistribute"):
            moves += e["dur"]
            continue
        folded.append((name, e["dur"] + moves))
        moves = 0
    assert folded == gemms
    spans = [(e["ts"], e["ts"] + e["dur"]) for e in measured]
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    own_spans = [sp for sp, e in zip(spans, measured)
                 if not e["name"].split(":")[0].endswith(".redistribute")]
    host_ops = [r["name"] for r in report["operations"] if r["where"] == "host"]
    assert [e["name"] for e in host if e["ph"] == "i"] == host_ops
    pes = _pe_events(doc)
    assert sorted(pes) == ["PE (0, 0)", "PE (0, 1)", "PE (1, 0)", "PE (1, 1)"]
    for name, (sl, cn) in pes.items():
        events = [e for v in sl.values() for e in v] + cn
        for e in events:
            assert any(b <= e["ts"] and e["ts"] + e.get("dur", 0) <= f for b, f in spans), \
                (name, e)
        # Every GEMM ran reductions (code tasks) on every PE, and so did LayerNorm and GELU.
        coded = [span for span, (op, _) in zip(own_spans, gemms)
                 if op.startswith(("attn.c_", "mlp.c_", "ln_", "mlp.gelu"))
                 and not op.endswith(".bias")]
        assert len(coded) == 7
        for b, f in coded:
            assert any(b <= e["ts"] < f for e in sl["core"]), (name, b)
