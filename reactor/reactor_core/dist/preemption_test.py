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
