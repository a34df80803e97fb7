"""cocotb bench of the fabric top (:mod:`rtl.fabric`): plays a job of :mod:`runtime.fabric_host`.

No Python runs per cycle. Memories are written and read element by element over VPI
(no clock cycles); the bench then waits on the top's ``cfg_idle`` / ``done`` / ``stalled``
outputs with a timer per chunk of cycles, refilling the weight-stream memories and writing
the progress file between chunks. Parameters (:func:`runtime.sim.params`): ``folder`` (the job's
``job.json``/``job.npz``; results go there as ``result.json``/``result.npz``) and
``stream_depth``.

Every step's result carries ``span``: the cycles it began and ended at, on the axis of the
tile model's trace records (:func:`runtime.tile_model.clock_index`: clock edges since the clock
started); a run step also its ``origin``, the trace cycle of the fabric's run cycle 0.
"""

import json
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import _GPISetAction
from cocotb.triggers import ClockCycles, FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time

from runtime import sim
from runtime.tile_model import clock_index

PERIOD_NS = 10
_DEPOSIT = _GPISetAction.DEPOSIT.value


class HostMemoryPort:
    """Element access to one of the top's host memories through raw VPI handles (the
    cocotb handle objects cost ~30 us per element write; a raw handle ~2 us)."""

    def __init__(self, instance):
        self._array = instance.mem._handle
        self._cells = {}

    def _cell(self, index):
        cell = self._cells.get(index)
        if cell is None:
            cell = self._cells[index] = self._array.get_handle_by_index(index)
        return cell

    def write(self, start, words):
        for i, word in enumerate(words.tolist(), start):
            self._cell(i).set_signal_val_int(_DEPOSIT, word)

    def read(self, start, count):
        return np.array([self._cell(i).get_signal_val_long() & 0xFFFFFFFF
                         for i in range(start, start + count)], dtype=np.uint32)


class FabricHost:
    """The bench: plays configuration and run steps on the fabric top."""

    def __init__(self, dut, folder, stream_depth):
        self.dut = dut
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "job.json").read_text())
        self.arrays = np.load(self.folder / "job.npz")
        self.width, self.height = self.meta["width"], self.meta["height"]
        self.stream_depth = stream_depth
        self.cfg_mem = [HostMemoryPort(getattr(dut, f"cfg_{y}")) for y in range(self.height)]
        self.resp_mem = [HostMemoryPort(getattr(dut, f"resp_{y}")) for y in range(self.height)]
        self.stream_mem = [HostMemoryPort(getattr(dut, f"stream_{x}"))
                           for x in range(self.width)]
        self.north_mem = [HostMemoryPort(getattr(dut, f"north_{x}"))
                          for x in range(self.width)]
        self.results = {}
        self.out = {"steps": []}
        self.started = time.perf_counter()
        self.clock_start = 0

    def now(self):
        """The current cycle on the trace records' axis (the last clock edge so far)."""
        return clock_index(get_sim_time("ns"), self.clock_start, PERIOD_NS)

    def sig(self, name):
        return getattr(self.dut, name)

    async def cycles(self, n):
        await Timer(n * PERIOD_NS, unit="ns")

    async def restart(self, name):
        """Give ``name`` (a start input) a rising edge that the fabric sees: the writes
        happen at falling clock edges, so each level is sampled by a rising edge whatever
        the phase the bench was at (the fabric registers these inputs once more)."""
        await FallingEdge(self.dut.clk)
        self.sig(name).value = 0
        await FallingEdge(self.dut.clk)
        await FallingEdge(self.dut.clk)
        self.sig(name).value = 1
        await FallingEdge(self.dut.clk)

    def progress(self, step, name, cycles, expect):
        path = self.folder / "progress.json"
        tmp = self.folder / "progress.tmp"
        tmp.write_text(json.dumps({"step": step, "name": name, "cycles": int(cycles),
                                   "expect_cycles": int(expect)}))
        tmp.replace(path)

    async def reset(self):
        dut = self.dut
        self.clock_start = get_sim_time("ns")
        Clock(dut.clk, PERIOD_NS, unit="ns").start()
        for name in ("start", "streams_complete", "cfg_start", "watchdog_limit"):
            self.sig(name).value = 0
        for x in range(self.width):
            self.sig(f"stream_len__{x}").value = 0
        for y in range(self.height):
            self.sig(f"cfg_len__{y}").value = 0
        dut.rst.value = 1
        await ClockCycles(dut.clk, 3)
        dut.rst.value = 0
        await ClockCycles(dut.clk, 2)

    async def configure(self, index, meta, key):
        """Play a configuration step; return its per-row answers."""
        answers = [[] for _ in range(self.height)]
        for c in range(meta["chunks"]):
            lengths = []
            for y in range(self.height):
                words = self.arrays[f"{key}_c{c}_r{y}"]
                self.cfg_mem[y].write(0, words)
                self.sig(f"cfg_len__{y}").value = len(words)
                lengths.append(len(words))
            await self.restart("cfg_start")
            await self.cycles(2)
            # The sequencers need max(lengths) cycles plus the chain's latency.
            await self.cycles(max(lengths) + 2 * self.width)
            while not int(self.sig("cfg_idle").value):
                await First(RisingEdge(self.sig("cfg_idle")), Timer(1000 * PERIOD_NS, "ns"))
            for y in range(self.height):
                count = int(self.sig(f"resp_count__{y}").value)
                if count:
                    answers[y].append(self.resp_mem[y].read(0, count))
            self.sig("cfg_start").value = 0
        if int(self.sig("resp_unfilled").value):
            raise AssertionError(f"configuration step {meta['name']!r}: a read named a tile "
                                 f"outside the fabric (resp_unfilled)")
        rows = [np.concatenate(a) if a else np.zeros(0, dtype=np.uint32) for a in answers]
        for y, (got, want) in enumerate(zip(rows, meta["reads"])):
            if len(got) != want:
                raise AssertionError(f"configuration step {meta['name']!r}: row {y} answered "
                                     f"{len(got)} reads of {want}: {got.tolist()[:64]}")
        return rows

    async def run(self, index, meta):
        """Play a run step; return (stats dict, stopped)."""
        dut = self.dut
        streams = [self.arrays[f"s{index}_x{x}"] for x in range(self.width)]
        written = [0] * self.width
        depth = self.stream_depth

        def refill():
            for x, words in enumerate(streams):
                injected = int(self.sig(f"stream_ptr__{x}").value) if self.sig(
                    "running").value else 0
                room = depth - (written[x] - injected)
                n = min(room, len(words) - written[x])
                if n <= 0:
                    continue
                start = written[x] % depth
                first = min(n, depth - start)
                self.stream_mem[x].write(start, words[written[x]:written[x] + first])
                if n > first:
                    self.stream_mem[x].write(0, words[written[x] + first:written[x] + n])
                written[x] += n
                self.sig(f"stream_len__{x}").value = written[x]
            return all(w == len(s) for w, s in zip(written, streams))

        await FallingEdge(dut.clk)
        self.sig("start").value = 0
        await ClockCycles(dut.clk, 2)
        complete = refill()
        self.sig("streams_complete").value = int(complete)
        self.sig("watchdog_limit").value = meta["watchdog"]
        await self.restart("start")
        wall = time.perf_counter()
        cpu = time.process_time()
        budget, expect = meta["budget"], meta["expect_cycles"]
        # Chunks: ~1/50 of the expected run for the progress bar, and short enough that a
        # stream longer than its memory is refilled before it runs dry.
        chunk = max(2000, min(expect // 50, 200_000))
        if not complete:
            chunk = min(chunk, depth // 2)
        timed_out = False
        await self.cycles(2)
        # Run cycle r is the cycle after the clock edge at which run_cycles became r (it
        # counts every cycle until done, which takes more than these cycles).
        origin = self.now() - int(dut.run_cycles.value)
        while True:
            if int(dut.done.value) or int(dut.stalled.value):
                break
            cycles = int(dut.run_cycles.value)
            if cycles >= budget:
                timed_out = True
                break
            step = min(chunk, budget - cycles)
            await First(RisingEdge(dut.done), RisingEdge(dut.stalled),
                        Timer(step * PERIOD_NS, "ns"))
            await self.cycles(1)
            if not complete:
                complete = refill()
                self.sig("streams_complete").value = int(complete)
            self.progress(index, meta["name"], int(dut.run_cycles.value), expect)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        stats = {
            "name": meta["name"],
            "cycles": int(dut.last_active.value) + 1,
            "run_cycles": int(dut.run_cycles.value),
            "last_active": int(dut.last_active.value),
            "activity": int(dut.activity.value),
            "done": bool(int(dut.done.value)),
            "stalled": bool(int(dut.stalled.value)),
            "timed_out": timed_out,
            "stream_words": [int(len(s)) for s in streams],
            "stream_injected": [int(self.sig(f"stream_ptr__{x}").value)
                                for x in range(self.width)],
            "north_count": [int(self.sig(f"north_count__{x}").value)
                            for x in range(self.width)],
            "edge_count": int(dut.edge_count.value),
            "edge_first": int(dut.edge_first.value),
            "edge_first_link": int(dut.edge_first_link.value),
            "pe_busy": int(dut.pe_busy.value),
            "pe_error": int(dut.pe_error.value),
            "wall_seconds": wall,
            "cpu_seconds": cpu,
        }
        self.progress(index, meta["name"], stats["run_cycles"], expect)
        return stats, origin, not stats["done"]

    async def play(self):
        await self.reset()
        arrays_out = {}
        stopped = None
        for i, meta in enumerate(self.meta["steps"]):
            begin = self.now()
            if meta["kind"] == "config":
                rows = await self.configure(i, meta, f"s{i}")
                for y, words in enumerate(rows):
                    arrays_out[f"s{i}_r{y}"] = words
                self.out["steps"].append({"kind": "config", "name": meta["name"],
                                          "span": [begin, self.now()]})
            else:
                stats, origin, stuck = await self.run(i, meta)
                # MemoryX's gradient ports: what each column sent off the north edge
                for x, count in enumerate(stats["north_count"]):
                    arrays_out[f"s{i}_n{x}"] = self.north_mem[x].read(
                        0, min(count, self.stream_depth))
                self.out["steps"].append({"kind": "run", "name": meta["name"],
                                          "stats": stats, "span": [begin, self.now()],
                                          "origin": origin})
                if stuck:
                    stopped = i
                    break
        if stopped is not None:
            diag = self.meta["diagnosis"]
            rows = await self.configure(len(self.meta["steps"]), diag,
                                        f"s{len(self.meta['steps'])}")
            for y, words in enumerate(rows):
                arrays_out[f"diag_r{y}"] = words
        self.out["stopped"] = stopped
        self.out["total_seconds"] = time.perf_counter() - self.started
        np.savez(self.folder / "result.npz", **arrays_out)
        (self.folder / "result.json").write_text(json.dumps(self.out, indent=1))


@cocotb.test()
async def play_job(dut):
    """Play the job in ``folder``; its results are files, checked by the caller."""
    params = sim.params()
    host = FabricHost(dut, params["folder"], params["stream_depth"])
    await host.play()
