"""broker/service.py sets the process's garbage collector once the daemon has started: start-up
objects frozen out of the collector's sight, young collections rarer. Run in a child process,
since the collector is the whole process's."""
from __future__ import annotations

import subprocess
import sys

CHILD = """
import gc
from manifold.broker.service import GC_YOUNG_THRESHOLD, tune_garbage_collector
before = gc.get_threshold()
tune_garbage_collector()
after = gc.get_threshold()
assert after == (GC_YOUNG_THRESHOLD,) + before[1:], (before, after)
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()
assert gc.isenabled()
# a reference cycle made afterwards is still collected
class Node:
    pass
import weakref
a, b = Node(), Node()
a.other, b.other = b, a
probe = weakref.ref(a)
del a, b
gc.collect()
assert probe() is None
print("ok")
"""


def test_the_daemon_freezes_start_up_objects_and_raises_the_young_threshold():
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


def test_only_the_daemon_entry_point_tunes_the_collector():
    """Service.start (used by tests embedding the broker) leaves the collector alone; the
    daemon's run_until_signal tunes it after start-up."""
    import inspect

    from manifold.broker.service import Service
    assert "tune_garbage_collector" not in inspect.getsource(Service.start)
    source = inspect.getsource(Service.run_until_signal)
    assert source.index("await self.start()") < source.index("tune_garbage_collector()")
