"""Streaming chat users driven by the scenario's `stages` (ramps, steps, open-loop rates):
`locust -f locustfiles/staged.py --scenario FILE --headless ...` (see tokenstorm/loadgen/shape.py)."""

from tokenstorm.loadgen.session import install
from tokenstorm.loadgen.shape import ScenarioStages
from tokenstorm.loadgen.users import ChatStreamUser

install(require_stages=True)

__all__ = ["ChatStreamUser", "ScenarioStages"]
