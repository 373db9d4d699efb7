"""Ramps and stages from the scenario file, as a Locust LoadTestShape.

    stages:
      - {duration_s: 30, users: 8, spawn_rate: 4}          # closed loop: 8 concurrent streams
      - {duration_s: 60, users: 32}
      - {duration_s: 60, users: 64, rate: 20}              # open loop: 20 req/s, at most 64 in flight

A stage with `rate` makes the run open-loop: the arrival schedule follows the stages' rates
(a stage without one sends nothing), and `users` is the cap on streams in flight. The run
ends after the last stage.
"""

from __future__ import annotations

import time

from locust import LoadTestShape

from .session import session_of


class ScenarioStages(LoadTestShape):
    def tick(self):
        session = session_of(self.runner.environment)
        if session is None or session.scenario is None:
            return None
        stages = session.scenario.spec.stages
        open_loop = bool(session.settings.arrival_stages)
        if open_loop:  # stages follow the arrival schedule, which starts a moment after the test
            loop = session.open_loop
            start = session.environment.parsed_options.arrival_start or (loop.start if loop else 0)
            elapsed = max(0.0, time.time() - start) if start else 0.0
        else:
            elapsed = self.get_run_time()
        for stage in stages:
            if elapsed < stage.duration_s:
                return stage.users, stage.spawn_rate or max(1.0, float(stage.users))
            elapsed -= stage.duration_s
        if open_loop:  # the end of the schedule ends the run, once its last requests are done
            return stages[-1].users, stages[-1].spawn_rate or max(1.0, float(stages[-1].users))
        return None
