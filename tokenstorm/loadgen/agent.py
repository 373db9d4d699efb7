"""A tool-calling agent: ask, run the tools the model asks for, ask again, until it answers in text.

Each turn is an ordinary streamed request (one record, one ticket of --total-requests); the
tool calls are assembled from the stream's deltas and sent back with the scenario's
`agent.tool_result` as every tool's result. The conversation itself is a row of
conversations-<worker>.csv (turns, tool calls, how it ended, total time) and a Locust entry
of type CONV.
"""

from __future__ import annotations

import dataclasses
import json
import time

from locust import task
from locust.exception import StopUser

from ..client.scenario import prompt_tokens
from ..client.stream import StreamAccount
from .users import StreamingUser


class ToolAgentUser(StreamingUser):
    abstract = True

    @task
    def converse(self) -> None:
        session = self.session
        if session.scenario is None or session.scenario.spec.agent is None:
            raise StopUser()  # checked at start-up; see tool_agent.py
        agent = session.scenario.spec.agent
        if not session.quota.claim():
            raise StopUser()
        request = session.next_request()
        body = json.loads(request.body)
        messages = list(body.get("messages") or [])
        responses = session.scenario.spec.format == "openai-responses"
        started, t0 = time.time(), time.monotonic()
        turns = calls_made = 0
        ended_by, status = "turn_limit", "ok"
        while True:
            account = StreamAccount()
            record = self.send(request, account)
            turns += 1
            if not record.ok:
                ended_by, status = "error", "error"
                break
            calls = [account.tool_calls[i] for i in sorted(account.tool_calls)]
            if not calls:
                ended_by = "text"
                break
            if turns >= agent.max_turns:
                break
            if not session.quota.claim():
                ended_by = "quota"
                break
            calls_made += len(calls)
            if responses:  # the Responses API: the calls and their outputs are input items
                items = body["input"]
                items = items if isinstance(items, list) else [{"role": "user", "content": items}]
                body["input"] = items + [{"type": "function_call", "call_id": c["id"], "name": c["name"],
                                          "arguments": c["arguments"]} for c in calls] + [
                    {"type": "function_call_output", "call_id": c["id"], "output": agent.tool_result} for c in calls]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls]})
                messages += [{"role": "tool", "tool_call_id": c["id"], "content": agent.tool_result} for c in calls]
                body["messages"] = messages
            request = dataclasses.replace(request, body=json.dumps(body).encode(), prompt_tokens=prompt_tokens(body))
        total_ms = round((time.monotonic() - t0) * 1000, 3)
        session.write_conversation({
            "conversation_id": f"{session.worker_id}-c{self.user_id}-{int(started * 1000)}",
            "worker_id": session.worker_id, "user_id": self.user_id, "scenario": session.scenario_name,
            "t_start": round(started, 6), "turns": turns, "tool_calls": calls_made, "ended_by": ended_by,
            "total_ms": total_ms, "status": status})
        session.environment.events.request.fire(request_type="CONV", name=request.label, response_time=total_ms,
                                            response_length=turns, exception=None, context={})
