"""A tool-calling agent: ask, run the tools the model asks for, ask again, until it answers in text.

Each turn is an ordinary streamed request (one record, one ticket of --total-requests); the
tool calls are assembled from the stream's deltas and sent back with the scenario's
`agent.tool_result` as every tool's result. The loop (records, conversations-<worker>.csv, the
Locust CONV entry) is tokenstorm.loadgen.conversation's, shared with multi-turn users.
"""

from __future__ import annotations

from locust.exception import StopUser

from ..client.stream import StreamAccount
from .conversation import run_conversation
from .users import StreamingUser


class ToolAgentUser(StreamingUser):
    abstract = True

    def iteration(self) -> None:
        """One conversation (the base class's only Locust task calls it)."""
        session = self.session
        if session.scenario is None or session.scenario.spec.agent is None:
            raise StopUser()  # checked at start-up; see tool_agent.py
        agent = session.scenario.spec.agent
        if not session.quota.claim():
            raise StopUser()
        responses = session.scenario.spec.format == "openai-responses"
        counts = {"tool_calls": 0}

        def step(body: dict, account: StreamAccount, _turn: int) -> dict | str:
            calls = [account.tool_calls[i] for i in sorted(account.tool_calls)]
            if not calls:
                return "text"
            counts["tool_calls"] += len(calls)
            body = dict(body)
            if responses:  # the Responses API: the calls and their outputs are input items
                items = body["input"]
                items = items if isinstance(items, list) else [{"role": "user", "content": items}]
                body["input"] = items + [{"type": "function_call", "call_id": c["id"], "name": c["name"],
                                          "arguments": c["arguments"]} for c in calls] + [
                    {"type": "function_call_output", "call_id": c["id"], "output": agent.tool_result} for c in calls]
            else:
                body["messages"] = [*body.get("messages", []), {"role": "assistant", "content": None, "tool_calls": [
                    {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls]}] + [{"role": "tool", "tool_call_id": c["id"], "content": agent.tool_result}
                                         for c in calls]
            return body

        run_conversation(self, session.next_request(), step, agent.max_turns, "turn_limit", counts=counts)
