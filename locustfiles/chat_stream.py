"""Streaming chat completions at fixed concurrency: `locust -f locustfiles/chat_stream.py --host URL`.

Each Locust user sends one streaming request, reads the whole stream, records it and sends
the next at once, so users = concurrent streams. See `locust --help` (group "tokenstorm")
for the options; the README for the metric definitions.
"""

from tokenstorm.loadgen.session import install
from tokenstorm.loadgen.users import ChatStreamUser

install()

__all__ = ["ChatStreamUser"]
