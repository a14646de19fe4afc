"""The benchmark's probe: in each worker pool process, the number of tasks finished, when the
first one started and when the last one finished.

Each pool process writes these into its own small memory-mapped file (PID.probe in the folder
named by JOBWATCH_BENCH_PROBE_DIR) on every task: a memory store, no system call, about a
microsecond, the same in every mode. The benchmark reads the files while the worker runs, so it
sees the exact moment the N-th task has finished, with no broker or database in between.
"""

import mmap
import os
import struct
import time
from pathlib import Path

from celery import signals
from django.apps import AppConfig

PROBE_DIR_VARIABLE = "JOBWATCH_BENCH_PROBE_DIR"
# first task started, last task finished (time.time() of this machine), tasks finished
LAYOUT = struct.Struct("<ddq")


class BenchmarksConfig(AppConfig):
    name = "benchmarks"
    verbose_name = "Jobwatch benchmarks"

    def ready(self):
        directory = os.environ.get(PROBE_DIR_VARIABLE)
        if directory:
            probe = PoolProcessProbe(Path(directory))
            signals.task_prerun.connect(probe.task_started, weak=False, dispatch_uid="benchmarks.probe.started")
            signals.task_postrun.connect(probe.task_finished, weak=False, dispatch_uid="benchmarks.probe.finished")


class PoolProcessProbe:
    def __init__(self, directory):
        self.directory = directory
        self.pid = None

    def _open(self):
        # Lazily, in the pool process itself: each forked child gets a file of its own.
        self.pid = os.getpid()
        self.first_started = 0.0
        self.finished = 0
        path = self.directory / f"{self.pid}.probe"
        with path.open("w+b") as file:
            file.truncate(LAYOUT.size)
            self.memory = mmap.mmap(file.fileno(), LAYOUT.size)

    def task_started(self, **signal_arguments):
        if self.pid != os.getpid():
            self._open()
        if not self.first_started:
            self.first_started = time.time()

    def task_finished(self, **signal_arguments):
        self.finished += 1
        LAYOUT.pack_into(self.memory, 0, self.first_started, time.time(), self.finished)


def read_probes(directory):
    """[(first_started, last_finished, finished)] of every pool process that ran a task."""
    probes = []
    for path in sorted(Path(directory).glob("*.probe")):
        data = path.read_bytes()
        if len(data) == LAYOUT.size:
            probes.append(LAYOUT.unpack(data))
    return probes
