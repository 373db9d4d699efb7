"""The conversation loop shared by the tool agent and response-conditioned multi-turn users.

A conversation is a series of turns; each turn is an ordinary streamed request (one record
with its conversation_id and 1-based turn, one ticket of --total-requests), and the next turn
is built from what the server actually answered. The conversation itself is a row of
conversations-<worker>.csv and a Locust entry of type CONV.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable

import gevent
from gevent import GreenletExit
from locust.exception import StopUser

from ..client.scenario import prompt_tokens
from ..client.stream import StreamAccount
from ..core.records import CLIENT_CANCELLED

Step = Callable[[dict, StreamAccount, int], "dict | str"]
"""(the body just sent, what its stream carried, the next turn's index) -> the next turn's body, or why
the conversation ends."""


def run_conversation(user, request, step: Step, max_turns: int, limit_reason: str = "turn_limit",
                     think_s: Callable[[], float] | None = None, counts: dict | None = None) -> None:
    """Run one conversation from `request` (its first ticket already claimed) and record it.

    `step` builds the next body from the answer, or says why it ends (e.g. "text"); `think_s`
    gives the pause before each next turn; `counts` holds extra columns that `step` updates."""
    session = user.session
    user.conversations_started = getattr(user, "conversations_started", 0) + 1
    conversation_id = f"{session.worker_id}-u{user.user_id}-c{user.conversations_started}"
    started, t0 = time.time(), time.monotonic()
    turns, ended_by, status = 0, limit_reason, "ok"
    counts = {} if counts is None else counts
    body = json.loads(request.body)
    try:
        while True:
            account = StreamAccount()
            record = user.send(request, account, conversation=(conversation_id, turns + 1))
            turns += 1
            if not record.ok:
                cancelled = record.error_type == CLIENT_CANCELLED
                ended_by, status = ("client_cancelled", "cancelled") if cancelled else ("error", "error")
                break
            body = step(body, account, turns + 1)
            if isinstance(body, str):
                ended_by = body
                break
            if turns >= max_turns:
                break
            if not session.quota.claim():
                ended_by = "quota"
                break
            if think_s is not None:
                pause = think_s()
                if pause > 0:
                    gevent.sleep(pause)
            request = dataclasses.replace(request, body=json.dumps(body).encode(), prompt_tokens=prompt_tokens(body))
    except GreenletExit:  # the run ended mid-conversation: its row still says what it reached
        ended_by, status = "run_end", "cancelled"
        raise
    except Exception:  # a bug of ours: the row must not say the conversation went well
        ended_by, status = "client_error", "error"
        raise
    finally:
        _write_row(user, request, conversation_id, started, t0, turns, counts, ended_by, status)


def _write_row(user, request, conversation_id: str, started: float, t0: float, turns: int, counts: dict,
               ended_by: str, status: str) -> None:
    session = user.session
    total_ms = round((time.monotonic() - t0) * 1000, 3)
    session.write_conversation({
        "conversation_id": conversation_id, "worker_id": session.worker_id, "user_id": user.user_id,
        "scenario": session.scenario_name, "t_start": round(started, 6), "turns": turns,
        "tool_calls": counts.get("tool_calls", 0), "ended_by": ended_by, "total_ms": total_ms, "status": status})
    session.environment.events.request.fire(request_type="CONV", name=request.label, response_time=total_ms,
                                            response_length=turns, exception=None, context={})


def multi_turn(user) -> None:
    """One response-conditioned conversation (the scenario's `conversation`): turn k+1 sends the
    history with the server's answers of turns 1..k and a new user message, after a think time."""
    session = user.session
    spec = session.scenario.spec.conversation
    if not session.quota.claim():
        raise StopUser()
    request = session.next_request()
    rng = getattr(user, "think_rng", None)
    if rng is None:
        rng = user.think_rng = random.Random(f"{session.scenario.spec.seed}:{session.worker_id}:{user.user_id}")
    think = spec.think_time_s

    def think_s() -> float:
        return max(0.0, rng.gauss(think.mean, think.stddev) if think.stddev else think.mean)

    def step(body: dict, account: StreamAccount, turn: int) -> dict:
        body = dict(body)
        body["messages"] = [*body.get("messages", []), {"role": "assistant", "content": account.text},
                            {"role": "user", "content": session.scenario.user_turn(turn)}]
        return body

    run_conversation(user, request, step, spec.turns, "turns", think_s)
