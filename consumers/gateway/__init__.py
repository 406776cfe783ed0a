"""``routeyard gateway``: an OpenAI-compatible HTTP front door to the pipeline (Starlette + uvicorn).

Reading order: server.py (composition) -> app.py (endpoints) -> turns.py (request -> event ->
answer) -> replies.py (the reply topic and decisions) -> streaming.py (SSE) -> wire.py (OpenAI shapes).
"""

from routeyard.consumers.gateway.server import run_gateway

__all__ = ["run_gateway"]
