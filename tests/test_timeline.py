"""The trace-event writer of ``--trace`` (gpt_mapping/timeline.py)."""

import json

import numpy as np
import pytest

from gpt_mapping.timeline import CYCLE_US, Timeline


def test_tracks_are_named_once_and_numbered_per_process():
    tl = Timeline("t")
    a, b = tl.process("PE (0, 0)"), tl.process("PE (1, 0)")
    assert (a, b) == (1, 2) and tl.process("PE (0, 0)") == a
    assert tl.thread(a, "tasks") == 1 and tl.thread(a, "thread 0") == 2
    assert tl.thread(b, "tasks") == 1 and tl.thread(a, "tasks") == 1
    names = [(e["pid"], e["tid"], e["args"]["name"]) for e in tl.events
             if e["name"] in ("process_name", "thread_name")]
    assert names == [(1, 0, "PE (0, 0)"), (2, 0, "PE (1, 0)"), (1, 1, "tasks"),
                     (1, 2, "thread 0"), (2, 1, "tasks")]


def test_events_in_cycles(tmp_path):
    tl = Timeline("run")
    pid = tl.process("PE (0, 0)")
    tid = tl.thread(pid, "thread 3")
    tl.slice(pid, tid, "FMAC", 10, 14, op="FMAC", core=np.int64(1))
    tl.slice(pid, tid, "FMOV", 20, 20)                 # widened to one cycle
    tl.instant(pid, tid, "retire", 30, pc=0x40)
    tl.counter(pid, "micro-threads", 12, active=np.int32(3))
    path = tl.write(tmp_path / "sub" / "trace.json")
    doc = json.loads(path.read_text())
    assert doc["otherData"]["time_unit"] == "1 us = 1 clock cycle"
    events = [e for e in doc["traceEvents"] if e["ph"] != "M"]
    assert events[0] == {"name": "FMAC", "ph": "X", "pid": 1, "tid": 1, "ts": 10 * CYCLE_US,
                         "dur": 4 * CYCLE_US, "args": {"op": "FMAC", "core": 1}}
    assert events[1]["dur"] == 1 * CYCLE_US
    assert events[2]["ph"] == "i" and events[2]["args"] == {"pc": 64}
    assert events[3] == {"name": "micro-threads", "ph": "C", "pid": 1, "tid": 0,
                         "ts": 12 * CYCLE_US, "args": {"active": 3}}


def test_bad_events_are_named():
    tl = Timeline()
    pid = tl.process("p")
    with pytest.raises(ValueError, match="slice 'x' ends at cycle 3, before it begins"):
        tl.slice(pid, tl.thread(pid, "t"), "x", 5, 3)
    with pytest.raises(ValueError, match="counter 'c' needs"):
        tl.counter(pid, "c", 0)


def test_metadata_goes_to_other_data():
    tl = Timeline("core")
    tl.metadata["cycles"] = "the ISS's cycle model"
    tl.metadata["retired"] = np.int64(7)
    other = tl.as_dict()["otherData"]
    assert other == {"cycles": "the ISS's cycle model", "retired": 7, "title": "core",
                     "time_unit": "1 us = 1 clock cycle"}
