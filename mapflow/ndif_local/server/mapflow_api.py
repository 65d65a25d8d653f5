"""NDIF's API behind a token check (loaded by the local stack's gunicorn as ``mapflow_api:app``, not by mapflow).

NDIF authenticates keys against a Postgres accounts database; without one (the local stack) every request is let
through. Here every HTTP request and websocket must carry the stack's token in NDIF's own ``ndif-api-key`` header
(the header nnsight's client sends its API key in), compared in constant time; the token is read once, at start,
from the 0600 file ``ndif up`` wrote (``$MAPFLOW_NDIF_TOKEN_FILE``). Only ``/ping`` (liveness, no data) is open.
"""

import hmac
import json
import os
from pathlib import Path

from ndif.services.api.app import app as ndif_app

_TOKEN = Path(os.environ["MAPFLOW_NDIF_TOKEN_FILE"]).read_text().strip().encode()
if not _TOKEN:
    raise RuntimeError(f"the API token file {os.environ['MAPFLOW_NDIF_TOKEN_FILE']} is empty")
OPEN_PATHS = {"/ping"}
REFUSAL = json.dumps(
    {
        "detail": "this NDIF server requires its API token in the ndif-api-key header (the mapflow "
        "client sends a local stack's token itself; else pass --ndif-api-key)"
    }
).encode()


def _authorized(scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"ndif-api-key":
            return hmac.compare_digest(value, _TOKEN)
    return False


async def app(scope, receive, send):
    if scope["type"] in ("http", "websocket") and scope.get("path") not in OPEN_PATHS and not _authorized(scope):
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(REFUSAL)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": REFUSAL})
        return
    await ndif_app(scope, receive, send)
