"""Hand-written companions to the generated Python client (`turnstone_client`, written by
scripts/sdk from openapi/openapi.json with openapi-python-client): `stream_events`, a reader of a
session's event stream that resumes where it left off (generators do not do SSE), and
`TurnstoneError`, the problem+json answers of the API as an exception (`unwrap`).

    from turnstone_client import AuthenticatedClient
    from turnstone_events import stream_events, unwrap

    client = AuthenticatedClient(base_url=url, token=key)
    for item in stream_events(client, session_id):
        if isinstance(item, Delta): print(item.text, end="")
        elif item.type == "turn.completed": break
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import httpx

from turnstone_client import AuthenticatedClient
from turnstone_client.models import Event, Problem

__all__ = ["Delta", "TurnstoneError", "stream_events", "unwrap"]


class TurnstoneError(Exception):
    """An error the API answered with: its RFC 9457 problem (match on `code`, which is stable)."""

    def __init__(self, problem: Problem):
        super().__init__(f"{problem.code} ({problem.status}): {problem.detail}")
        self.problem = problem
        self.code = problem.code
        self.status = problem.status


def unwrap(response):
    """The parsed body of a generated `*_detailed` call, or its problem raised as TurnstoneError."""
    if isinstance(response.parsed, Problem):
        raise TurnstoneError(response.parsed)
    if int(response.status_code) >= 400 or response.parsed is None and int(response.status_code) != 204:
        raise TurnstoneError(_problem(int(response.status_code), response.content))
    return response.parsed


def _problem(status: int, body: bytes) -> Problem:
    try:
        return Problem.from_dict(json.loads(body))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        return Problem(type_="about:blank", title="", status=status, detail=text, code=f"http_{status}")


@dataclass
class Delta:
    """A live token delta (`output.message.delta`): not stored, no id; lost while reconnecting."""

    turn_id: str
    iteration: int
    text: str


def stream_events(
    client: AuthenticatedClient,
    session_id: str,
    since_id: Optional[str] = None,
    heartbeat_secs: float = 15.0,
) -> Iterator[Union[Event, Delta]]:
    """Yields a session's stored events (generated `Event` models) once each, in order, and live
    deltas while connected, from `GET /v1/sessions/{id}/sse`.

    Reconnects after `disconnecting` (waiting its `retry_ms`), a dropped connection, or a read
    silent for twice the heartbeat, sending `Last-Event-ID`: the id of the last stored event
    yielded. A problem answer (a revoked key, no such session) raises TurnstoneError.
    """
    last_id = since_id
    pause = 0.0
    failures = 0
    http = client.get_httpx_client()
    timeout = httpx.Timeout(10.0, read=2 * heartbeat_secs)
    while True:
        if pause:
            time.sleep(pause)
            pause = 0.0
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        try:
            with http.stream("GET", f"/v1/sessions/{session_id}/sse", headers=headers, timeout=timeout) as response:
                if response.status_code != 200:
                    raise TurnstoneError(_problem(response.status_code, response.read()))
                failures = 0
                event, event_id, data = "", "", []
                for line in response.iter_lines():
                    if line == "":
                        frame, event, event_id, data = (event, event_id, data), "", "", []
                        kind, fid, lines = frame
                        if not lines:
                            continue
                        payload = json.loads("\n".join(lines))
                        if kind == "disconnecting":
                            pause = payload.get("retry_ms", 1000) / 1000
                            break
                        if kind == "output.message.delta":
                            yield Delta(payload["turn_id"], payload["data"]["iteration"], payload["data"]["delta"])
                        elif fid:
                            last_id = fid
                            yield Event.from_dict(payload)
                        continue
                    if line.startswith(":"):
                        continue  # heartbeat
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        event = value
                    elif field == "id":
                        event_id = value
                    elif field == "data":
                        data.append(value)
        except (httpx.TransportError, httpx.StreamError):
            # Dropped, refused or silent: reconnect, backing off while it keeps failing.
            failures += 1
            pause = min(0.25 * 2 ** min(failures, 5), 5.0) if failures > 1 else 0.0
