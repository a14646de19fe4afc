"""Several programs run as one, the way honcho and foreman do: each child's output goes to one
stream, every line prefixed with the child's name; if one dies the others are stopped; stopping
is SIGTERM, a grace period, then SIGKILL.

Each child gets its own process group. Ctrl-C in the terminal then reaches only the supervisor,
which stops the children in its own way, and a child's own children (the Celery worker's pool
processes) can be killed with it.
"""

import os
import signal
import subprocess
import sys
import threading
import time

# ANSI colours for the name column, as honcho does, when the output is a terminal.
COLOURS = [36, 33, 32, 35, 34, 31]


class Child:
    def __init__(self, name, argv, process):
        self.name = name
        self.argv = argv
        self.process = process
        self.pump = None
        self.hide = None  # a predicate on output lines: true drops the line

    @property
    def running(self):
        return self.process.poll() is None

    def terminate(self):
        if self.running:
            self.process.terminate()

    def kill_group(self):
        """SIGKILL whatever is left in the child's process group, grandchildren included."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Supervisor:
    def __init__(self, name, output=None, cwd=None, env=None):
        self.name = name
        self.output = output or sys.stdout
        self.cwd = cwd
        self.env = env
        self.children = []
        self._write_lock = threading.Lock()
        self._colour = hasattr(self.output, "isatty") and self.output.isatty()
        self.name_width = 8  # fits the demo's names, so the columns line up from the first line

    def start(self, name, argv, hide=None):
        """Start a program; `hide(line)` true drops a line of its output (None: print them all)."""
        process = subprocess.Popen(
            argv, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        child = Child(name, argv, process)
        child.hide = hide
        self.name_width = max(self.name_width, len(name))
        colour_index = len(self.children)
        self.children.append(child)
        child.pump = threading.Thread(
            target=self._pump_output, args=(child, colour_index), name=f"output-{name}", daemon=True
        )
        child.pump.start()
        return child

    def first_to_exit(self):
        return next((child for child in self.children if not child.running), None)

    def stop_all(self, grace=10.0, hurry=lambda: False):
        """SIGTERM every child, wait up to `grace` seconds (less if `hurry()` turns true), then
        SIGKILL what remains. Returns the names of the children that had to be killed."""
        for child in reversed(self.children):
            child.terminate()
        deadline = time.monotonic() + grace
        while any(child.running for child in self.children) and time.monotonic() < deadline and not hurry():
            time.sleep(0.1)
        killed = [child.name for child in self.children if child.running]
        # Every group, not only the children still running: one that exited may have left its own
        # children behind (a worker's pool processes), and they would keep the demo's ports and files.
        for child in self.children:
            child.kill_group()
        for child in self.children:
            child.process.wait()
            child.pump.join(timeout=2.0)
        return killed

    def say(self, message):
        self._write(self.name, message, colour_index=None)

    def _pump_output(self, child, colour_index):
        for raw in iter(child.process.stdout.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            if child.hide is None or not child.hide(line):
                self._write(child.name, line, colour_index)
        child.process.stdout.close()

    def _write(self, name, line, colour_index):
        label = f"{name:<{self.name_width}} |"
        if self._colour:
            code = 1 if colour_index is None else COLOURS[colour_index % len(COLOURS)]
            label = f"\033[{code}m{label}\033[0m"
        with self._write_lock:
            self.output.write(f"{label} {line}\n")
            self.output.flush()
