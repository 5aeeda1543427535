"""The test-only worker module of test_faults.py (hooks/pyspark_fault_hook.py), without a
cluster: exactly one task over all processes stops, says its pid, and waits until released;
every other task goes straight on. No Spark session is started."""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path

import pytest

pytestmark = pytest.mark.cluster

HOOK = Path(__file__).resolve().parent / "hooks" / "pyspark_fault_hook.py"


@pytest.fixture
def hook(monkeypatch):
    spec = importlib.util.spec_from_file_location("pyspark_fault_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls = []
    monkeypatch.setattr(module, "_worker_main", lambda i, o: calls.append((i, o)))
    return module, calls


def test_without_the_variable_every_task_runs_unchanged(hook, monkeypatch, tmp_path):
    module, calls = hook
    monkeypatch.delenv("FAULT_HOOK_DIR", raising=False)
    module.main("in", "out")
    assert calls == [("in", "out")] and list(tmp_path.iterdir()) == []


def test_first_task_stops_until_released_and_the_others_go_on(hook, monkeypatch, tmp_path):
    module, calls = hook
    monkeypatch.setenv("FAULT_HOOK_DIR", str(tmp_path))
    first = threading.Thread(target=module.main, args=("in-1", "out-1"))
    first.start()
    # The claim is taken before "ready" is written; wait for the pid, as the test does.
    ready = tmp_path / "ready"
    stop = threading.Event()
    while not ready.exists():
        assert first.is_alive(), "the first task returned without stopping"
        stop.wait(0.01)
    assert ready.read_text(encoding="utf-8") == str(os.getpid())
    module.main("in-2", "out-2")  # a second task (another process in Spark): no stop
    assert calls == [("in-2", "out-2")] and first.is_alive()
    (tmp_path / "release").touch()
    first.join()
    assert calls == [("in-2", "out-2"), ("in-1", "out-1")]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["claimed", "ready", "release"]
