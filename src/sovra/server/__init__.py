"""sovra's server: REST (/api/v1), OpenAI-compatible (/v1) API, health and metrics.

`create_app(config)` builds the FastAPI app; `serve_command` runs it under uvicorn.
"""

from sovra.server.app import create_app
from sovra.server.settings import ServerSettings

__all__ = ["ServerSettings", "create_app"]
