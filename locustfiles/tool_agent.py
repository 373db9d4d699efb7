"""Tool-calling agents: `locust -f locustfiles/tool_agent.py --scenario configs/scenarios/tool-agent.yaml`.

Each user runs conversations: the model asks for tools, the user sends the results back, until
the model answers in text or the scenario's agent.max_turns. Every turn is a record; every
conversation a row of conversations-<worker>.csv.
"""

from tokenstorm.loadgen.agent import ToolAgentUser
from tokenstorm.loadgen.session import install

install(require_agent=True)


class AgentUser(ToolAgentUser):
    pass
