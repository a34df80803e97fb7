"""Host side of the fabric: configuration programs, jobs, running them on a Verilator build,
and the watchdog's diagnosis.

The fabric top (:mod:`rtl.fabric`) is driven through memories that the bench fills over VPI,
so no Python runs per cycle. A run is described by a :class:`Job`, a list of steps that
:mod:`runtime.fabric_tb` plays in order:

* a *configuration* step plays a :class:`ConfigProgram` (one word list per row, loaded into
  the rows' sequencer memories in chunks; all rows in parallel) and collects the answers of
  its reads;
* a *run* step loads the weight streams into the north-edge memories (refilling them while
  the run goes on if a stream is longer than the memory), starts the fabric and waits for
  ``done`` in large chunks of cycles, with a cycle budget and the hardware no-progress
  detector; if either fires, the bench plays the job's *diagnosis* program (reads of every
  router's queues and error registers and every PE's status) and stops.

:func:`run_job` writes the job to files, runs the bench in a Verilator build (cached by
:mod:`runtime.sim`), reports progress from the file the bench updates between chunks, and
returns a :class:`JobResult`. :func:`diagnose` turns the diagnosis answers into a message
that names the tile (x, y), the port and the color where progress stopped.
"""

import itertools
import json
import os
import shutil
import tempfile
import threading
from collections import namedtuple
from pathlib import Path

import numpy as np

from rtl.fabric import CfgCommandOp, encode_command
from rtl.pe import regs as pe_regs
from rtl.router import Port, RouterErrorStatus, RouterReg, counter_addr, mask_ports
from rtl.tile import BROADCAST_X, pe_tile_addr, router_tile_addr

__all__ = ["ConfigProgram", "ReadTicket", "Job", "JobResult", "RunStats", "FabricRunError",
           "FabricStallError", "run_job", "diagnosis_program", "diagnose", "BENCH_MODULE",
           "MAX_BURST"]

#: The cocotb module that plays jobs.
BENCH_MODULE = "runtime.fabric_tb"
#: Longest burst a program emits in one command (bursts are split so chunks stay small).
MAX_BURST = 1024


class FabricRunError(RuntimeError):
    """A fabric run that did not finish correctly; the message says where and why."""


class FabricStallError(FabricRunError):
    """The watchdog stopped a run: no progress, or the cycle budget was exhausted."""

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report or {}


class ReadTicket(namedtuple("ReadTicket", "row start count")):
    """Where the answers of one read command land: row ``row``, answers
    ``start .. start + count - 1`` of that row's program."""

    def take(self, answers):
        """The answers of this read (``uint32`` array) from a step's per-row answers."""
        return np.asarray(answers[self.row][self.start:self.start + self.count],
                          dtype=np.uint32)


class ConfigProgram:
    """Per-row configuration programs for the fabric's row sequencers.

    Commands address tile (x, y) of a ``width`` x ``height`` fabric; ``x`` may be
    :data:`rtl.tile.BROADCAST_X` for writes (every tile of the row). Addresses are tile
    configuration addresses (:func:`rtl.tile.pe_tile_addr`, :func:`rtl.tile.router_tile_addr`).
    """

    def __init__(self, width, height):
        if width < 1 or height < 1:
            raise ValueError(f"fabric size {width} x {height} must be at least 1 x 1")
        self.width, self.height = width, height
        self._rows = [[] for _ in range(height)]     # [(words uint32 array, reads)]
        self._reads = [0] * height

    def _check(self, x, y, write):
        if not 0 <= y < self.height:
            raise ValueError(f"row {y} is outside the {self.width} x {self.height} fabric")
        if x == BROADCAST_X:
            if not write:
                raise ValueError("a read cannot be broadcast to every tile of a row")
        elif not 0 <= x < self.width:
            raise ValueError(f"tile ({x}, {y}) is outside the {self.width} x {self.height} "
                             f"fabric")

    def write(self, x, y, addr, value):
        """Write one word."""
        self._check(x, y, True)
        self._rows[y].append((np.array([encode_command(CfgCommandOp.WRITE, x, addr),
                                        int(value) & 0xFFFFFFFF], dtype=np.uint32), 0))

    def write_block(self, x, y, addr, words):
        """Write consecutive words from ``addr`` (bursts: one cycle per word)."""
        self._check(x, y, True)
        words = np.asarray(words)
        if words.dtype.kind not in "iu":
            raise TypeError(f"configuration words must be integers, not {words.dtype}")
        words = words.astype(np.uint32).reshape(-1)
        for off in range(0, len(words), MAX_BURST):
            part = words[off:off + MAX_BURST]
            if len(part) == 1:
                self.write(x, y, addr + off, part[0])
                continue
            head = np.array([encode_command(CfgCommandOp.WRITE_BURST, x, addr + off),
                             len(part)], dtype=np.uint32)
            self._rows[y].append((np.concatenate([head, part]), 0))

    def write_all(self, y, addr, value):
        """Write one word in every tile of row ``y`` (a broadcast)."""
        self.write(BROADCAST_X, y, addr, value)

    def read(self, x, y, addr, count=1):
        """Read ``count`` consecutive words; returns the :class:`ReadTicket` of the answers."""
        self._check(x, y, False)
        if count < 1:
            raise ValueError(f"read count must be >= 1, not {count}")
        ticket = ReadTicket(y, self._reads[y], count)
        for off in range(0, count, MAX_BURST):
            n = min(MAX_BURST, count - off)
            if n == 1:
                words = [encode_command(CfgCommandOp.READ, x, addr + off)]
            else:
                words = [encode_command(CfgCommandOp.READ_BURST, x, addr + off), n]
            self._rows[y].append((np.array(words, dtype=np.uint32), n))
        self._reads[y] += count
        return ticket

    # Convenience for the two blocks of a tile.
    def pe_write(self, x, y, pe_addr, value):
        self.write(x, y, pe_tile_addr(pe_addr), value)

    def pe_write_block(self, x, y, pe_addr, words):
        self.write_block(x, y, pe_tile_addr(pe_addr), words)

    def pe_read(self, x, y, pe_addr, count=1):
        return self.read(x, y, pe_tile_addr(pe_addr), count)

    def router_write(self, x, y, reg, value):
        self.write(x, y, router_tile_addr(reg), value)

    def router_read(self, x, y, reg, count=1):
        return self.read(x, y, router_tile_addr(reg), count)

    @property
    def words(self):
        """Program words per row."""
        return [sum(len(w) for w, _ in row) for row in self._rows]

    @property
    def reads(self):
        """Answers per row."""
        return list(self._reads)

    def cycles(self):
        """Cycles the sequencers need (rows run in parallel; one word per cycle)."""
        return max(self.words) if self.height else 0

    def chunks(self, cfg_depth, resp_depth):
        """Split the rows at command boundaries into chunks that fit the sequencer memory
        (``cfg_depth`` words) and the answer memory (``resp_depth`` answers).

        Returns a list of chunks; each chunk is a list of per-row ``uint32`` arrays.
        """
        per_row = []
        for row in self._rows:
            parts, cur, cur_words, cur_reads = [], [], 0, 0
            for words, reads in row:
                if len(words) > cfg_depth or reads > resp_depth:
                    raise ValueError(f"a command of {len(words)} words does not fit the "
                                     f"{cfg_depth}-word sequencer memory")
                if cur and (cur_words + len(words) > cfg_depth
                            or cur_reads + reads > resp_depth):
                    parts.append(np.concatenate(cur))
                    cur, cur_words, cur_reads = [], 0, 0
                cur.append(words)
                cur_words += len(words)
                cur_reads += reads
            if cur:
                parts.append(np.concatenate(cur))
            per_row.append(parts)
        count = max((len(p) for p in per_row), default=0)
        empty = np.zeros(0, dtype=np.uint32)
        return [[p[i] if i < len(p) else empty for p in per_row] for i in range(count)]


class RunStats(namedtuple("RunStats", "name cycles run_cycles last_active activity done "
                          "stalled timed_out stream_words stream_injected north_count "
                          "edge_count edge_first edge_first_link pe_busy pe_error "
                          "wall_seconds cpu_seconds north", defaults=(None,))):
    """What the fabric top reports about one run step (see :mod:`rtl.fabric`).

    ``cycles`` is the run's measured length, ``last_active + 1``: from the first cycle the
    injectors could send to the last cycle in which a PE was busy or a wavelet moved.
    ``wall_seconds`` / ``cpu_seconds``: the simulator process's wall and CPU time from the
    start to ``done`` (the CPU figure does not depend on what else the machine runs).
    ``north_count[x]``: the wavelets column x sent off the north edge (MemoryX's gradient
    port, SPEC 11); ``north[x]``: those words (uint32, in arrival order; only the first
    ``stream_depth`` are kept, see :meth:`north_words`).
    """

    def north_words(self, column, stream_depth):
        """Column ``column``'s north-edge wavelets (uint32); raises ``RuntimeError`` naming
        the column when more arrived than its capture memory holds."""
        count = self.north_count[column]
        if count > stream_depth:
            raise RuntimeError(f"column {column} sent {count} wavelets off the north edge in "
                               f"run {self.name!r}; its capture memory holds {stream_depth}")
        return self.north[column]


class Job:
    """Steps for :mod:`runtime.fabric_tb`: configuration programs and runs, played in order.

    Parameters
    ----------
    width, height : int
        The size of the fabric build the job runs on.
    """

    def __init__(self, width, height):
        self.width, self.height = width, height
        self.steps = []
        self.diagnosis = diagnosis_program(width, height)

    def configure(self, program, name="config"):
        """Append a configuration step; returns its index (answers: ``result.answers[i]``)."""
        if (program.width, program.height) != (self.width, self.height):
            raise ValueError(f"program for {program.width} x {program.height}, job for "
                             f"{self.width} x {self.height}")
        self.steps.append({"kind": "config", "name": name, "program": program})
        return len(self.steps) - 1

    def run(self, streams, *, budget, watchdog=5000, name="run", expect_cycles=None):
        """Append a run step with one ``uint32`` stream per column; returns its index.

        ``budget``: the most cycles the run may take; ``watchdog``: cycles without any
        movement after which the run is stopped as stuck; ``expect_cycles``: for progress.
        """
        if len(streams) != self.width:
            raise ValueError(f"{len(streams)} streams for a fabric {self.width} columns wide")
        streams = [np.asarray(s, dtype=np.uint32).reshape(-1) for s in streams]
        if budget < 1 or watchdog < 1:
            raise ValueError(f"budget ({budget}) and watchdog ({watchdog}) must be >= 1")
        self.steps.append({"kind": "run", "name": name, "streams": streams,
                           "budget": int(budget), "watchdog": int(watchdog),
                           "expect_cycles": int(expect_cycles or budget)})
        return len(self.steps) - 1

    def save(self, folder, cfg_depth, resp_depth):
        """Write ``job.json`` and ``job.npz`` into ``folder`` for the bench."""
        folder = Path(folder)
        arrays, steps = {}, []
        for i, step in enumerate(self.steps + [{"kind": "config", "name": "diagnosis",
                                                "program": self.diagnosis}]):
            meta = {"kind": step["kind"], "name": step["name"]}
            if step["kind"] == "config":
                chunks = step["program"].chunks(cfg_depth, resp_depth)
                meta["chunks"] = len(chunks)
                meta["reads"] = step["program"].reads
                for c, rows in enumerate(chunks):
                    for y, words in enumerate(rows):
                        arrays[f"s{i}_c{c}_r{y}"] = words
            else:
                for x, words in enumerate(step["streams"]):
                    arrays[f"s{i}_x{x}"] = words
                meta.update({k: step[k] for k in ("budget", "watchdog", "expect_cycles")})
            steps.append(meta)
        np.savez(folder / "job.npz", **arrays)
        (folder / "job.json").write_text(json.dumps({
            "width": self.width, "height": self.height, "steps": steps[:-1],
            "diagnosis": steps[-1]}, indent=1))


class JobResult:
    """What a job produced: per step, the answers (config) or :class:`RunStats` (run).

    ``answers[i]``: list of per-row ``uint32`` arrays of configuration step i.
    ``runs[i]``: :class:`RunStats` of run step i. ``stopped``: index of the run step the
    watchdog stopped (None if every step ran), with ``diagnosis`` its per-row answers.
    ``spans[i]``: ``(begin, end)`` cycles of step i on the axis of the tile model's trace
    records (:func:`runtime.tile_model.clock_index`); ``origins[i]``: for run step i, the trace
    cycle of its run cycle 0 (so its measured cycles are ``origins[i] .. origins[i] +
    runs[i].cycles``). ``trace``: the tile model's records (:func:`runtime.tile_model.read_trace`)
    when the job ran traced, else None.
    """

    def __init__(self, folder, job):
        folder = Path(folder)
        meta = json.loads((folder / "result.json").read_text())
        data = np.load(folder / "result.npz")
        self.folder = folder
        self.answers, self.runs, self.spans, self.origins = {}, {}, {}, {}
        self.trace = None
        for i, step in enumerate(meta["steps"]):
            self.spans[i] = tuple(step["span"])
            if step["kind"] == "config":
                self.answers[i] = [data[f"s{i}_r{y}"] for y in range(job.height)]
            else:
                north = [data[f"s{i}_n{x}"] for x in range(job.width)]
                self.runs[i] = RunStats(**step["stats"], north=north)
                self.origins[i] = step["origin"]
        self.stopped = meta.get("stopped")
        self.diagnosis = None
        if self.stopped is not None:
            self.diagnosis = [data[f"diag_r{y}"] for y in range(job.height)]
        self.total_seconds = meta.get("total_seconds")


_run_counter = itertools.count()


def run_job(build, job, *, cfg_depth, resp_depth, stream_depth, progress=None,
            timeout=None, keep=None, trace=False):
    """Play ``job`` on ``build`` (a :class:`runtime.sim.SimBuild` of the fabric top).

    Parameters
    ----------
    cfg_depth, resp_depth, stream_depth : int
        The fabric's memory sizes (:class:`rtl.fabric.Fabric`).
    progress : callable, optional
        ``progress(step_name, cycles, expect_cycles)``, called from this thread while the
        bench runs (from the progress file it writes between chunks of cycles).
    timeout : float, optional
        Wall-clock limit of the simulator process in seconds.
    keep : bool, optional
        Keep the job's files and the simulator's log even when the run went well
        (they are always kept when it did not).
    trace : bool
        Record every tile's debug port (a build with the DPI tile model,
        :mod:`runtime.tile_model`); the records are the result's ``trace``.

    Returns
    -------
    JobResult
    """
    from runtime import sim
    folder = Path(tempfile.mkdtemp(prefix="fabric-job-", dir=_job_root(build))).resolve()
    job.save(folder, cfg_depth, resp_depth)
    params = {"folder": str(folder), "stream_depth": stream_depth}
    name = f"job-{os.getpid()}-{next(_run_counter)}"
    error = []
    plusargs = []
    if trace:
        from runtime.tile_model import trace_plusargs
        plusargs = trace_plusargs(folder / "tiles.trace")

    def target():
        try:
            sim.run(build, BENCH_MODULE, tb_params=params, timeout=timeout, name=name,
                    plusargs=plusargs)
        except BaseException as exc:          # re-raised in the caller's thread
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    progress_file = folder / "progress.json"
    seen = None
    while thread.is_alive():
        thread.join(0.25)
        if progress is not None and progress_file.exists():
            try:
                state = json.loads(progress_file.read_text())
            except (ValueError, OSError):
                continue
            key = (state.get("step"), state.get("cycles"))
            if key != seen:
                seen = key
                progress(state.get("name"), state.get("cycles", 0),
                         state.get("expect_cycles", 0))
    if error:
        raise error[0]
    result = JobResult(folder, job)
    if trace:
        from runtime.tile_model import read_trace
        path = folder / "tiles.trace"
        if not path.exists():
            raise FabricRunError(f"the traced job wrote no trace file {path}: is the build "
                                 f"a DPI tile model (runtime/tile_model.py)?")
        result.trace = read_trace(path)
    if not keep and result.stopped is None:
        # Job files and the simulator's run folder are kept only for runs that went wrong.
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(Path(build.build_dir) / "runs" / name, ignore_errors=True)
    return result


def _job_root(build):
    root = Path(build.build_dir) / "jobs"
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- watchdog diagnosis ----------------------------------------------------------------------

_PE_STATUS_WORDS = 3     # STATUS, ERROR, ERROR_FLAGS (consecutive registers)


def diagnosis_program(width, height):
    """Reads of where traffic is held: every router's QUEUED bitmaps and error registers,
    every PE's STATUS and ERROR registers. Returns a :class:`ConfigProgram` whose tickets
    are kept on it as ``program.tickets[(x, y)]``."""
    program = ConfigProgram(width, height)
    program.tickets = {}
    for y in range(height):
        for x in range(width):
            program.tickets[x, y] = {
                "queued": program.router_read(x, y, counter_addr(RouterReg.QUEUED, Port.N),
                                              len(Port)),
                "router_err": program.router_read(x, y, RouterReg.ERR_STATUS, 2),
                "pe": program.pe_read(x, y, pe_regs.reg_addr(pe_regs.Reg.STATUS),
                                      _PE_STATUS_WORDS),
            }
    return program


def _decode_struct(layout, word):
    return pe_regs.decode_fields(layout, int(word))


def _colors(bitmap):
    return [c for c in range(32) if bitmap >> c & 1]


def diagnose(job, answers, routes=None):
    """Explain where a stopped run's traffic is held.

    Parameters
    ----------
    job : Job
    answers : per-row answers of the job's diagnosis program
    routes : callable ``(x, y, in_port, color) -> mask``, optional
        The route tables as configured, to find the queue whose consumer stopped.

    Returns
    -------
    (message, report)
        ``report`` has ``stuck`` (``[{x, y, port, color, to}]``: router input queues that
        hold wavelets), ``blocked_at`` (the first queue whose next hop is the tile's PE or
        an edge: where progress stopped), ``router_errors``, ``pe_errors``, ``pe_status``.
    """
    program = job.diagnosis
    stuck, router_errors, pe_errors, pe_status = [], [], [], {}
    for (x, y), tickets in sorted(program.tickets.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        queued = tickets["queued"].take(answers)
        for port in Port:
            for color in _colors(int(queued[port])):
                to = None
                if routes is not None:
                    to = [p.name for p in mask_ports(routes(x, y, port, color))]
                stuck.append({"x": x, "y": y, "port": port.name, "color": color, "to": to})
        err_status, err_count = tickets["router_err"].take(answers)
        status = _decode_struct(RouterErrorStatus, err_status)
        if status["error"]:
            router_errors.append({
                "x": x, "y": y, "port": Port(status["port"]).name, "color": status["color"],
                "invalid_color": bool(status["invalid_color"]), "count": int(err_count)})
        pe_stat, pe_err, pe_flags = tickets["pe"].take(answers)
        st = _decode_struct(pe_regs.Status, pe_stat)
        pe_status[x, y] = st
        code, info = pe_regs.decode_error(int(pe_err))
        if int(pe_err) & 0x1F or int(pe_flags):
            pe_errors.append({"x": x, "y": y,
                              "code": code.name if hasattr(code, "name") else int(code),
                              "info": info, "flags": int(pe_flags)})

    lines = []
    # Where progress stopped: a queue whose next hop is a PE that takes nothing at all
    # (input queued, no operation in flight, launcher idle: no task bound to the color, or
    # the task blocked) or that raised an error; else a queue whose next hop is a PE; else
    # the first queue (without route information, any queue).
    errored = {(e["x"], e["y"]) for e in pe_errors}

    def rank(entry):
        st = pe_status[entry["x"], entry["y"]]
        to_pe = entry["to"] is None or "RAMP" in entry["to"]
        idle = st["rx_pending"] and not st["threads_active"] and not st["launcher_busy"]
        if to_pe and (entry["x"], entry["y"]) in errored:
            return 0
        if to_pe and idle:
            return 1
        return 2 if to_pe else 3

    blocked = min(stuck, key=rank) if stuck else None

    def queue_text(entry):
        x, y, c = entry["x"], entry["y"], entry["color"]
        st = pe_status[x, y]
        return (f"wavelets of color {c} wait in tile ({x}, {y})'s router {entry['port']} "
                f"input queue" + (f" (routed to {'+'.join(entry['to'])})" if entry["to"] else "")
                + f"; its PE is {'busy' if st['busy'] else 'idle'} with "
                  f"{bin(st['threads_active']).count('1')} tensor operations in flight"
                + (", input queued" if st["rx_pending"] else "")
                + (", output pending" if st["tx_pending"] else "")
                + (" and takes no wavelet (is a task bound to the color, and not blocked?)"
                   if rank(entry) == 1 else ""))

    # The first line says where progress stopped: bad traffic a router dropped (a wrong
    # route or color loses wavelets that a PE then waits for), else a PE error, else the
    # queue whose consumer stopped.
    for e in router_errors:
        why = "an invalid color" if e["invalid_color"] else "an empty route"
        head = "progress stopped at" if not lines else "also at"
        lines.append(f"{head} tile ({e['x']}, {e['y']}), color {e['color']}: its router "
                     f"dropped {e['count']} wavelet(s) of color {e['color']} arriving on "
                     f"port {e['port']} ({why})")
    for e in pe_errors:
        head = "progress stopped at" if not lines else "also at"
        lines.append(f"{head} tile ({e['x']}, {e['y']}): PE error {e['code']} (info "
                     f"{e['info']}, flags {e['flags']:#x})")
    if blocked is not None:
        if lines:
            lines.append("traffic held: " + queue_text(blocked))
        else:
            lines.append(f"progress stopped at tile ({blocked['x']}, {blocked['y']}), color "
                         f"{blocked['color']}: " + queue_text(blocked))
    others = [e for e in stuck if e is not blocked]
    if others:
        shown = ", ".join(f"({e['x']}, {e['y']}) {e['port']} color {e['color']}"
                          for e in others[:8])
        more = f" and {len(others) - 8} more" if len(others) > 8 else ""
        lines.append(f"other queues holding wavelets: {shown}{more}")
    if not lines:
        waiting = [(x, y) for (x, y), st in sorted(pe_status.items()) if st["busy"]]
        if waiting:
            x, y = waiting[0]
            lines.append(f"progress stopped at tile ({x}, {y}): nothing is queued in any "
                         f"router; PE(s) {waiting[:8]} are busy waiting for input")
        else:
            lines.append("nothing is queued and no PE is busy (the streams did not finish?)")
    report = {"stuck": stuck, "blocked_at": blocked, "router_errors": router_errors,
              "pe_errors": pe_errors,
              "pe_status": {f"{x},{y}": st for (x, y), st in pe_status.items()}}
    return "; ".join(lines), report

