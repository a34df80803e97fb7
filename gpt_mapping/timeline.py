"""Timelines of runs as Chrome / Perfetto trace-event JSON (the ``--trace FILE`` option).

The file opens in the Perfetto UI (https://ui.perfetto.dev, "Open trace file") and in
``chrome://tracing``. One *process* per PE (named ``PE (x, y)``), inside it one *track* per
kind of activity: the tasks, each micro-thread slot, the control core; counters (micro-thread
occupancy) are counter tracks of the same process. Time is in clock cycles: the JSON's
``ts``/``dur`` are microseconds, and one cycle is written as one microsecond, so the UI's
"1 us" reads "1 cycle".

The format is the Trace Event Format's JSON object form: ``{"traceEvents": [...]}`` with
complete events (``ph: "X"``), instant events (``"i"``), counter events (``"C"``) and metadata
(``"M"``: process and thread names and sort order).
"""

import json
from pathlib import Path

__all__ = ["Timeline", "CYCLE_US"]

#: Microseconds of trace time per clock cycle.
CYCLE_US = 1.0


class Timeline:
    """A trace-event timeline under construction.

    Parameters
    ----------
    title : str
        Written to ``otherData.title`` (shown by the Perfetto UI's "info" page).

    Attributes
    ----------
    metadata : dict
        More ``otherData`` entries (what the cycles are, where the run came from).
    """

    def __init__(self, title=""):
        self.title = str(title)
        self.metadata = {}
        self._events = []
        self._processes = {}
        self._threads = {}

    # --- tracks -----------------------------------------------------------------------------
    def process(self, name, sort_index=None):
        """The process id of ``name`` (created on first use, in order)."""
        if name not in self._processes:
            pid = len(self._processes) + 1
            self._processes[name] = pid
            self._meta("process_name", pid, 0, name=name)
            self._meta("process_sort_index", pid, 0,
                       sort_index=pid if sort_index is None else int(sort_index))
        return self._processes[name]

    def thread(self, pid, name, sort_index=None):
        """The thread (track) id of ``name`` inside process ``pid``."""
        key = (pid, name)
        if key not in self._threads:
            tid = sum(1 for p, _ in self._threads if p == pid) + 1
            self._threads[key] = tid
            self._meta("thread_name", pid, tid, name=name)
            self._meta("thread_sort_index", pid, tid,
                       sort_index=tid if sort_index is None else int(sort_index))
        return self._threads[key]

    def _meta(self, kind, pid, tid, **args):
        self._events.append({"name": kind, "ph": "M", "pid": pid, "tid": tid, "args": args})

    # --- events -----------------------------------------------------------------------------
    def slice(self, pid, tid, name, begin, end, **args):
        """A complete event from cycle ``begin`` to cycle ``end`` (exclusive, ``end >=
        begin``; a zero-length slice is widened to one cycle so that it stays visible)."""
        begin, end = int(begin), int(end)
        if end < begin:
            raise ValueError(f"slice {name!r} ends at cycle {end}, before it begins ({begin})")
        event = {"name": str(name), "ph": "X", "pid": pid, "tid": tid,
                 "ts": begin * CYCLE_US, "dur": max(end - begin, 1) * CYCLE_US}
        if args:
            event["args"] = _plain(args)
        self._events.append(event)

    def instant(self, pid, tid, name, cycle, **args):
        """An instant event at ``cycle`` on track ``tid``."""
        event = {"name": str(name), "ph": "i", "s": "t", "pid": pid, "tid": tid,
                 "ts": int(cycle) * CYCLE_US}
        if args:
            event["args"] = _plain(args)
        self._events.append(event)

    def counter(self, pid, name, cycle, **series):
        """Counter ``name`` of process ``pid`` takes the values ``series`` from ``cycle`` on."""
        if not series:
            raise ValueError(f"counter {name!r} needs at least one series value")
        self._events.append({"name": str(name), "ph": "C", "pid": pid, "tid": 0,
                             "ts": int(cycle) * CYCLE_US, "args": _plain(series)})

    # --- output -----------------------------------------------------------------------------
    @property
    def events(self):
        """The trace events written so far (metadata included), a copy."""
        return list(self._events)

    def as_dict(self):
        """The JSON object of the trace."""
        return {"traceEvents": list(self._events), "displayTimeUnit": "ns",
                "otherData": {**_plain(self.metadata), "title": self.title,
                              "time_unit": "1 us = 1 clock cycle"}}

    def write(self, path):
        """Write the trace to ``path`` (folders created); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            json.dump(self.as_dict(), out, separators=(",", ":"))
            out.write("\n")
        return path


def _plain(values):
    """JSON-able copies of argument values (numpy scalars to Python numbers)."""
    out = {}
    for key, value in values.items():
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):
            value = value.item()
        out[str(key)] = value
    return out
