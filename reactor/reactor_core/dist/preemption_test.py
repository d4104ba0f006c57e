"""PreemptionWatcher: SIGTERM to ourselves, and a fake GCE metadata server that flips to TRUE."""

import os
import signal
import sys
import time

import pytest

from reactor_core.dist.preemption import EXIT_PREEMPTED, PreemptionWatcher
from reactor_core.gcp.fake_metadata import SPOT_VM, FakeMetadataServer


def test_sigterm_sets_flag_and_handler_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatcher(poll_metadata=False) as watcher:
        assert not watcher.should_stop(0)
        os.kill(os.getpid(), signal.SIGTERM)
        assert watcher.wait(5.0)
        assert watcher.triggered and watcher.reason == "signal SIGTERM"
        assert watcher.should_stop(1)
        assert watcher.should_stop(2)  # stays stopped
    assert signal.getsignal(signal.SIGTERM) is before


def test_metadata_server_notice():
    with FakeMetadataServer(SPOT_VM) as server:
        with PreemptionWatcher(signals=(), poll_metadata=True, metadata_host=server.host, poll_interval_s=0.05) as w:
            time.sleep(0.3)
            assert not w.triggered
            assert any(p.endswith("instance/preempted") for p in server.requests)
            server.set("instance/preempted", "TRUE")
            assert w.wait(5.0)
            assert "instance/preempted=TRUE" in w.reason
            assert w.should_stop(7)


def test_metadata_server_down_is_not_a_preemption():
    with PreemptionWatcher(signals=(), poll_metadata=True, metadata_host="127.0.0.1:9", poll_interval_s=0.05) as w:
        time.sleep(0.3)
        assert not w.triggered


def test_metadata_polling_defaults_to_on_gce(monkeypatch):
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    assert PreemptionWatcher(signals=()).poll_metadata
    monkeypatch.delenv("GCE_METADATA_HOST")
    monkeypatch.setattr("reactor_core.env.DMI_PRODUCT_NAME", "/nonexistent")
    assert not PreemptionWatcher(signals=()).poll_metadata


def test_checks_only_every_n_steps():
    watcher = PreemptionWatcher(signals=(), poll_metadata=False, sync_every_steps=4)
    watcher.trigger("test")
    assert [watcher.should_stop(s) for s in (1, 2, 3, 4, 5)] == [False, False, False, True, True]


def test_exit_code_is_documented_sigterm_code():
    assert EXIT_PREEMPTED == 128 + signal.SIGTERM
    with pytest.raises(ValueError, match="sync_every_steps"):
        PreemptionWatcher(sync_every_steps=0)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


class _NonReentrantStream:
    """Like sys.stderr's BufferedWriter: a write that starts inside another write fails."""

    def __init__(self, on_write=None):
        self.lines, self.busy, self.on_write = [], False, on_write

    def write(self, text):
        if self.busy:
            raise RuntimeError("reentrant call inside the stream")
        self.busy = True
        try:
            if self.on_write is not None:
                on_write, self.on_write = self.on_write, None
                on_write()  # a SIGTERM lands in the middle of this write
            self.lines.append(text)
        finally:
            self.busy = False

    def flush(self):
        pass


def test_sigterm_during_a_log_write_does_not_break_logging():
    import logging

    errors = []
    stream = _NonReentrantStream(on_write=lambda: os.kill(os.getpid(), signal.SIGTERM))
    handler = logging.StreamHandler(stream)
    handler.handleError = lambda record: errors.append(sys.exc_info()[1])
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with PreemptionWatcher(poll_metadata=False) as watcher:
            logging.getLogger("reactor_core.train").info("checkpoint: saving step %d to %s", 6, "/tmp/x")
            assert watcher.triggered
            assert watcher.should_stop(6)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    assert errors == []
    text = "".join(stream.lines)
    assert "checkpoint: saving step 6 to /tmp/x" in text
    assert text.count("Preemption notice: signal SIGTERM") == 1, text
