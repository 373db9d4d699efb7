"""Small pure functions whose behavior the larger tests rely on."""

from __future__ import annotations

import time

from mock_server.server import share_of
from tokenstorm.client.monitor import Monitor, Sample


def test_max_num_seqs_is_split_over_workers():
    assert [share_of(10, 3, i) for i in range(3)] == [4, 3, 3]
    assert [share_of(0, 4, i) for i in range(4)] == [0, 0, 0, 0]  # unlimited stays unlimited
    assert sum(share_of(64, 5, i) for i in range(5)) == 64


def test_self_check_flags_a_busy_client():
    quiet = Monitor(samples=[Sample(time.time(), 20.0, 1.0, 5, i) for i in range(10)])
    assert quiet.summary()["distorted"] is False and quiet.summary()["warnings"] == []
    busy = Monitor(samples=[Sample(time.time(), 95.0, 2.0, 5, i) for i in range(10)])
    assert busy.summary()["distorted"] and "client CPU above 80%" in busy.summary()["warnings"][0]
    laggy = Monitor(samples=[Sample(time.time(), 30.0, 40.0 if i == 9 else 1.0, 5, i) for i in range(10)])
    assert any("event-loop lag p99" in w for w in laggy.summary()["warnings"])


def test_a_run_shorter_than_one_interval_still_has_a_sample():
    import gevent

    monitor = Monitor(interval_s=1.0)
    seen = []
    monitor.start(on_sample=seen.append)
    wall0, cpu0 = time.monotonic(), time.process_time()
    deadline = wall0 + 0.35
    while time.monotonic() < deadline:  # keep the CPU busy between the loop-lag probes
        gevent.sleep(0)
    used_pct = (time.process_time() - cpu0) / (time.monotonic() - wall0) * 100  # what the OS gave us
    monitor.stop()
    assert len(monitor.samples) == 1 and seen == monitor.samples
    sample = monitor.samples[0]
    # busy the whole time: near 100% on an idle machine, less when other processes take the cores
    assert sample.cpu_pct > min(30, used_pct / 2) and sample.loop_lag_ms >= 0, (sample, used_pct)
    assert monitor.summary()["samples"] == 1
