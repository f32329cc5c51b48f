"""Round-trips an agent, a session, a message and a problem through a Python client generated
from openapi/openapi.json by openapi-python-client, against a live API.

Driven by `contract::a_generated_python_client_round_trips` (tests/tests/it/contract.rs), which
generates the client into a temporary directory and passes:

    python roundtrip.py <dir holding the generated package `turnstone_client`> <base URL> <API key>

Every response is parsed by the generated models, which reject what the contract does not allow
(a `null` where the schema says string, a missing required property): a contract that lies about
the server fails here. Exits non-zero on the first failure.
"""

import sys
import time

sys.path.insert(0, sys.argv[1])
base_url, api_key = sys.argv[2], sys.argv[3]

from turnstone_client import AuthenticatedClient  # noqa: E402
from turnstone_client.api.agents import archive_agent, create_agent, get_agent, list_agents  # noqa: E402
from turnstone_client.api.sessions import create_session, get_session, list_events, list_messages, post_message  # noqa: E402
from turnstone_client.api.system import get_problem_type  # noqa: E402
from turnstone_client.models import (  # noqa: E402
    Agent,
    AgentCreate,
    AgentList,
    ContentPart,
    ContentType,
    EventList,
    MessageAccepted,
    MessageCreate,
    MessageList,
    Problem,
    ProblemTypeDoc,
    Session,
    SessionCreate,
)


def check(condition, what):
    if not condition:
        raise SystemExit(f"roundtrip: {what}")


def ok(response, status, model):
    check(response.status_code == status, f"expected {status}, got {response.status_code}: {response.content!r}")
    check(isinstance(response.parsed, model), f"expected a {model.__name__}, got {response.parsed!r}")
    return response.parsed


client = AuthenticatedClient(base_url=base_url, token=api_key, raise_on_unexpected_status=True)

# An agent: created, read back (`model_id` and `archived_at` are null), listed.
created = ok(
    create_agent.sync_detailed(
        client=client,
        body=AgentCreate(name="roundtrip", system_prompt="Be brief.", capabilities=["math"], tags=["py"]),
        idempotency_key="roundtrip-agent-1",
    ),
    201,
    Agent,
)
check(created.id.startswith("agt_") and created.model_id is None and created.archived_at is None, f"new agent: {created}")
fetched = ok(get_agent.sync_detailed(created.id, client=client), 200, Agent)
check(fetched.to_dict() == created.to_dict(), f"read back {fetched} != created {created}")
listed = ok(list_agents.sync_detailed(client=client, tag="py"), 200, AgentList)
check([a.id for a in listed.data] == [created.id] and listed.next_cursor is None, f"listed: {listed}")

# A session with it (no title: `null`).
session = ok(create_session.sync_detailed(client=client, body=SessionCreate(agent_id=created.id)), 201, Session)
check(session.title is None and session.model_id is None and session.agent_id == created.id, f"session: {session}")

# A message, and the assistant's answer: user message then assistant message, both parsed.
accepted = ok(
    post_message.sync_detailed(
        session.id, client=client, body=MessageCreate(content=[ContentPart(type_=ContentType.TEXT, text="hello from python")])
    ),
    202,
    MessageAccepted,
)
deadline = time.monotonic() + 20
while True:
    messages = ok(list_messages.sync_detailed(session.id, client=client), 200, MessageList)
    if len(messages.data) >= 2:
        break
    check(time.monotonic() < deadline, f"no answer within 20 s: {messages}")
    time.sleep(0.05)
user, answer = messages.data[0], messages.data[1]
check(user.id == accepted.message_id and user.role == "user" and user.tool_calls is None, f"user message: {user}")
check(answer.role == "assistant" and answer.turn_id == accepted.turn_id, f"answer: {answer}")
check(messages.next_after_sequence is None, f"one page: {messages}")
events = ok(list_events.sync_detailed(session.id, client=client), 200, EventList)
check(events.data[0].type_ == "input.message" and events.data[0].turn_id == accepted.turn_id, f"events: {events}")
check(ok(get_session.sync_detailed(session.id, client=client), 200, Session).id == session.id, "session read back")

# A problem: parsed, with a `type` that leads to its description.
missing = ok(get_agent.sync_detailed("agt_" + "0" * 32, client=client), 404, Problem)
check(missing.code == "not_found" and missing.status == 404 and missing.type_ == "/problems/not_found", f"problem: {missing}")
bad = ok(get_agent.sync_detailed(session.id, client=client), 400, Problem)
check(bad.code == "invalid_id", f"wrong-kind id: {bad}")
doc = ok(get_problem_type.sync_detailed(missing.type_.rsplit("/", 1)[1], client=client), 200, ProblemTypeDoc)
check(doc.code == "not_found" and doc.status == 404 and doc.meaning, f"problem type: {doc}")

# Archiving sets `archived_at`.
archived = ok(archive_agent.sync_detailed(created.id, client=client), 200, Agent)
check(archived.archived_at is not None and archived.archived_at >= archived.created_at, f"archived: {archived}")

print("roundtrip: agent, session, message and problem parsed by the generated client")
