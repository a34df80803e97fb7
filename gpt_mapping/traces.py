"""The timelines of ``--trace FILE``: from the hardware's records to trace-event tracks.

Two sources (docs/timeline.md):

* the PE's debug port (:class:`rtl.pe.iface.PEDebug`), recorded per tile by the fabric's tile
  model (:mod:`runtime.tile_model`) or per cycle by the one-PE bench (:mod:`runtime.pe_core_tb`):
  :func:`add_pe` turns one PE's records into its tracks;
* the control core's retire trace (RTL or ISS): :func:`add_instructions`.

:class:`FabricTrace` collects traced fabric simulations (one per GEMM of ``gpt``, one for a
chain of GEMMs) and lays them end to end on one timeline, with the host's phases.

Tracks of a PE (process ``PE (x, y)``):

``tasks``
    Launch-list tasks, from the cycle the launcher took the activation to the cycle the
    last micro-thread of the launches it made for that task retired, or to the start of the
    next launch-list task if that comes first (the launcher moves on while the operations
    run: ``args.finished`` is the cycle the last one retired; a task that launched nothing
    lasts one cycle). Launches of the launcher belong to the latest launch-list task that
    started at least :data:`LAUNCH_LATENCY` cycles before them (the earliest its first
    launch can reach a thread slot, so the rule is exact).
``core``
    Code tasks, from the cycle the launcher handed them to the core to the retirement of
    their ``tend`` (or of their last instruction when the core stopped: ``halt``, a fault;
    never past the next code task's start); ``args.retired``: the instructions they retired.
``thread t``
    Micro-thread slot t: each operation from the cycle it holds the slot to its retirement,
    named by its op (``FMAC``), with the task that launched it in ``args``.
counters ``micro-threads`` and ``retired instructions``
    Slots holding an operation; instructions the core retired so far.
``errors``
    An instant where the sticky error bit rose.
"""

import numpy as np

from gpt_mapping.layout import MappingError
from gpt_mapping.timeline import Timeline
from rtl.pe.asm import disassemble
from rtl.pe.iface import PEDebug
from rtl.pe.regs import TensorOp, layout_fields

__all__ = ["decode_debug", "add_pe", "add_instructions", "FabricTrace", "PEActivity",
           "LAUNCH_LATENCY", "REGISTER_DELAY", "check_trace_backend"]

#: Cycles from a task's start (the launcher takes its activation) to the earliest cycle one
#: of its launches can go into a thread slot: the launch entry is offered in the next cycle
#: and accepted at the earliest there (L0), and placed one cycle later (L1).
LAUNCH_LATENCY = 2
#: The debug port is registered: the value recorded in cycle n tells about cycle n - 1.
REGISTER_DELAY = 1
#: A code task's ``tend`` ends it in the core's M stage and retires one cycle later (W): its
#: span ends after that retirement.
TEND_RETIRES = 2

_FIELDS = layout_fields(PEDebug)


def check_trace_backend(trace, backend):
    """``--trace`` records the hardware: raise :class:`gpt_mapping.layout.MappingError`
    naming a backend that runs none (``gemm`` and ``gpt``)."""
    if trace is not None and backend != "rtl":
        raise MappingError(f"--trace needs the rtl backend: the {backend} backend runs no "
                           f"hardware, so there is no timeline to record")


def decode_debug(values):
    """The fields of :class:`rtl.pe.iface.PEDebug` words: ``{dotted name: int64 array}``."""
    values = np.asarray(values, dtype=np.uint64)
    return {name: ((values >> np.uint64(off)) & np.uint64((1 << width) - 1)).astype(np.int64)
            for name, (off, width, _) in _FIELDS.items()}


class PEActivity:
    """What :func:`add_pe` found in one PE's records (for reports and tests).

    ``tasks``: ``[{"task", "code", "begin", "end", "operations", "retired"}]`` in start
    order (launch-list tasks also ``finished``); ``operations``: ``[{"slot", "op", "core", "task", "begin", "end"}]``;
    ``max_threads``: the most slots held at once; ``retired``: instructions retired;
    ``errors``: cycles the error bit rose; ``first`` / ``last``: the cycles of the first
    and last event (None without events).
    """

    def __init__(self):
        self.tasks, self.operations, self.errors = [], [], []
        self.max_threads, self.retired = 0, 0
        self.first = self.last = None


def add_pe(tl, pid, cycles, values, *, end=None, task_names=None, offset=0):
    """Add one PE's tracks to process ``pid`` of Timeline ``tl``.

    Parameters
    ----------
    cycles, values : arrays
        The PE's debug records: the port held ``values[i]`` from cycle ``cycles[i]`` on,
        already on the PE's own cycle axis (the register delay taken off).
    end : int, optional
        The cycle the recording stopped at (closes what is still open); default: the last
        record's cycle + 1.
    task_names : dict, optional
        ``{task id: name}`` for the slices (default ``task <id>``).
    offset : int
        Added to every cycle written (to lay several simulations end to end).

    Returns
    -------
    PEActivity
    """
    act = PEActivity()
    cycles = np.asarray(cycles, dtype=np.int64)
    if not len(cycles):
        return act
    f = decode_debug(values)
    names = task_names or {}
    end = int(cycles[-1]) + 1 if end is None else int(end)
    list_tasks, code_task, ending, pending, live = [], None, None, {}, {}
    prev_threads, prev_error, prev_running = 0, 0, 0
    first_list = 0                   # list_tasks before this index cannot own a new launch

    def task_name(task):
        return names.get(task["task"], f"task {task['task']}")

    def close_code(cycle):
        nonlocal code_task
        if code_task is not None:      # (a halt stops the core before it retires)
            code_task["end"] = max(cycle, code_task["_last"] + 1)
            code_task = None

    def retire(task, cycle):
        task["retired"] += 1
        task["_last"] = cycle

    for i, c in enumerate(cycles.tolist()):
        if f["start.valid"][i]:
            task = {"task": int(f["start.task"][i]), "code": bool(f["start.code"][i]),
                    "begin": c, "end": None, "operations": 0, "retired": 0, "_ops": [],
                    "_last": c}
            act.tasks.append(task)
            if task["code"]:
                close_code(c)              # (the core takes one code task at a time)
                if ending is not None:
                    ending["end"] = min(ending["end"], c)
                code_task = task
            else:
                list_tasks.append(task)
        if f["launch.valid"][i]:
            core = bool(f["launch.core"][i])
            if core:
                owner = code_task or next((t for t in reversed(act.tasks) if t["code"]), None)
            else:
                while (first_list + 1 < len(list_tasks)
                       and list_tasks[first_list + 1]["begin"] <= c - LAUNCH_LATENCY):
                    first_list += 1
                owner = (list_tasks[first_list] if list_tasks
                         and list_tasks[first_list]["begin"] <= c - LAUNCH_LATENCY else None)
            op = {"slot": int(f["launch.slot"][i]), "op": _op_name(f["launch.op"][i]),
                  "core": core, "task": owner, "launch": c, "begin": None, "end": None}
            act.operations.append(op)
            pending[op["slot"]] = op
            if owner is not None:
                owner["operations"] += 1
                owner["_ops"].append(op)
        threads = int(f["threads"][i])
        if threads != prev_threads:
            rose, fell = threads & ~prev_threads, prev_threads & ~threads
            for slot in _bits(fell):
                op = live.pop(slot, None)
                if op is not None:
                    op["end"] = c
            for slot in _bits(rose):
                op = pending.pop(slot, None)
                if op is None:      # held before the records began: an unnamed operation
                    op = {"slot": slot, "op": "operation", "core": False, "task": None,
                          "launch": None, "begin": None, "end": None}
                    act.operations.append(op)
                op["begin"] = c
                live[slot] = op
            tl.counter(pid, "micro-threads", c + offset, active=bin(threads).count("1"))
            act.max_threads = max(act.max_threads, bin(threads).count("1"))
            prev_threads = threads
        if f["retired"][i]:
            act.retired += 1
            if ending is not None and c < ending["_retires_by"]:
                retire(ending, c)          # its tend, one stage after the end (M to W)
            elif code_task is not None:
                retire(code_task, c)
            tl.counter(pid, "retired instructions", c + offset, retired=act.retired)
        if f["core_done"][i]:
            # tend ends the task in M (this cycle) and retires in W (the next one).
            ending = code_task
            close_code(c + TEND_RETIRES)
            if ending is not None:
                ending["_retires_by"] = c + TEND_RETIRES
        running = int(f["core_running"][i])
        if prev_running and not running:
            close_code(c)
        prev_running = running
        error = int(f["error"][i])
        if error and not prev_error:
            act.errors.append(c)
            tl.instant(pid, tl.thread(pid, "errors", 90), "PE error", c + offset)
        prev_error = error

    close_code(end)
    for op in act.operations:
        if op["begin"] is None:            # launched, but the records ended first
            op["begin"] = op["launch"] + 1
        if op["end"] is None:
            op["end"] = end
    for task, after in zip(list_tasks, list_tasks[1:] + [None]):
        ends = [op["end"] for op in task["_ops"]]
        task["finished"] = max(ends) if ends else task["begin"] + 1
        task["end"] = task["finished"] if after is None else min(task["finished"],
                                                                 after["begin"])

    # Slices: launch-list tasks, code tasks, operations.
    for task in act.tasks:
        args = {"task": task["task"], "operations": task["operations"]}
        if task["code"]:
            args["retired"] = task["retired"]
            tl.slice(pid, tl.thread(pid, "core", 20), task_name(task), task["begin"] + offset,
                     task["end"] + offset, kind="code task", **args)
            continue
        tl.slice(pid, tl.thread(pid, "tasks", 10), task_name(task), task["begin"] + offset,
                 task["end"] + offset, kind="launch-list task",
                 ops=" ".join(op["op"] for op in task["_ops"]),
                 finished=task["finished"] + offset, **args)
    for op in sorted(act.operations, key=lambda o: (o["slot"], o["begin"])):
        owner = op["task"]
        tl.slice(pid, tl.thread(pid, f"thread {op['slot']}", 30 + op["slot"]), op["op"],
                 op["begin"] + offset, op["end"] + offset,
                 task=task_name(owner) if owner else "unknown",
                 task_id=owner["task"] if owner else None,
                 launched_by="core" if op["core"] else "launcher")
    for task in act.tasks:
        for key in ("_ops", "_last", "_retires_by"):
            task.pop(key, None)
    for op in act.operations:
        op["task"] = op["task"]["task"] if op["task"] else None
    act.first, act.last = int(cycles[0]), int(cycles[-1])
    return act


def add_instructions(tl, pid, retires, *, offset=0, track="instructions"):
    """Every retired instruction as a one-cycle slice named by its disassembly.

    ``retires``: ``[(cycle, pc, word, rd, value)]`` (the core's retire trace). ``args``
    hold ``pc`` (hex), ``word`` (hex), ``rd`` and ``value`` (unsigned).
    """
    tid = tl.thread(pid, track, 5)
    for cycle, pc, word, rd, value in retires:
        text = disassemble(int(word), pc=int(pc)) or f".word {int(word):#010x}"
        tl.slice(pid, tid, text, int(cycle) + offset, int(cycle) + offset + 1,
                 pc=f"{int(pc):#06x}", word=f"{int(word):#010x}", rd=int(rd),
                 value=int(value) & 0xFFFFFFFF)
    return len(retires)


def _op_name(code):
    try:
        return TensorOp(int(code)).name
    except ValueError:
        return f"op {int(code)}"


def _bits(mask):
    return [b for b in range(mask.bit_length()) if mask >> b & 1]


class FabricTrace:
    """The timeline of traced fabric simulations, laid end to end (``--trace FILE``).

    Each :meth:`add_job` is one simulation (a job of :mod:`runtime.fabric_host`): its cycles
    start where the previous job's ended. Process ``host`` shows each step (``load``,
    ``run``, ``readback``) and, on track ``measured``, each GEMM's measured cycles; every
    PE that did anything gets its process ``PE (x, y)`` (:func:`add_pe`).

    ``jobs``: per job ``{"label", "offset", "end", "gemms": [{"name", "begin", "end",
    "cycles"}], "pes": {(x, y): PEActivity}}`` (cycles on the timeline's axis).
    """

    def __init__(self, title="fabric"):
        self.timeline = Timeline(title)
        self.timeline.metadata["cycles"] = (
            "clock cycles of the fabric simulation from its start; a later simulation (the "
            "next GEMM of a gpt block) starts where the previous one ended")
        self.offset = 0
        self.jobs = []
        self._host = self.timeline.process("host", sort_index=0)

    def add_job(self, result, steps, *, label="", task_names=None, width=None,
                height=None, args=None):
        """Add a finished traced job.

        Parameters
        ----------
        result : runtime.fabric_host.JobResult
            With ``trace`` (the job ran with ``trace=True``).
        steps : list of (index, name, phase)
            The job's steps to show: the step index, its name on the timeline and its
            phase (``"load"``, ``"run"``, ``"readback"``).
        label : str
            Prefix of the step names (``gpt``: the GEMM's layer name).
        task_names : dict, optional
            ``{task id: name}`` for the PEs' task slices.
        width, height : int, optional
            Only the PEs of this corner (default: every tile with records).
        args : dict, optional
            More ``args`` on the job's run slices.
        """
        if result.trace is None:
            raise ValueError("the job ran without trace=True: it has no trace records")
        tl, host, off = self.timeline, self._host, self.offset
        prefix = f"{label}: " if label else ""
        phases = tl.thread(host, "phases", 1)
        measured = tl.thread(host, "measured", 2)
        job = {"label": label, "offset": off, "gemms": [], "pes": {}}
        last = 0
        for index, name, phase in steps:
            begin, stop = result.spans[index]
            last = max(last, stop)
            tl.slice(host, phases, f"{prefix}{name}", begin + off, stop + off, phase=phase)
            if index in result.runs:
                run = result.runs[index]
                origin = result.origins[index]
                tl.slice(host, measured, f"{prefix}{name} ({run.cycles} cycles measured)",
                         origin + off, origin + run.cycles + off, cycles=int(run.cycles),
                         **(args or {}))
                job["gemms"].append({"name": f"{prefix}{name}", "begin": origin + off,
                                     "end": origin + run.cycles + off,
                                     "cycles": int(run.cycles)})
        keys = sorted((k for k in result.trace if isinstance(k, tuple)),
                      key=lambda k: (k[1], k[0]))
        for x, y in keys:
            if (width is not None and x >= width) or (height is not None and y >= height):
                continue
            rec = result.trace[x, y]
            pid = tl.process(f"PE ({x}, {y})", sort_index=1 + y * 1000 + x)
            job["pes"][x, y] = add_pe(tl, pid, rec["cycle"].astype(np.int64) - REGISTER_DELAY,
                                      rec["value"], end=last, task_names=task_names,
                                      offset=off)
        job["end"] = last + off
        self.offset = job["end"]
        self.jobs.append(job)
        return job

    def write(self, path):
        """Write the timeline (trace-event JSON); returns the path."""
        return self.timeline.write(path)
