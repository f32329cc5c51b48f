"""A full turn through the Python SDK against a live API (driven by the Rust test
sdk::the_python_sdk_runs_a_turn_and_streams_it): an agent and a session, two messages, the reply
streamed with stream_events across server-cycled connections, the messages read back, a resume
from an event id, and a problem raised as TurnstoneError.

    python test_turn.py <base URL> <API key>     (with sdk/python on sys.path)
"""

import sys

from turnstone_client import AuthenticatedClient
from turnstone_client.api.agents import create_agent, get_agent
from turnstone_client.api.sessions import create_session, list_messages, post_message
from turnstone_client.models import AgentCreate, ContentPart, ContentType, Event, MessageCreate, SessionCreate
from turnstone_events import Delta, TurnstoneError, stream_events, unwrap

base_url, api_key = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base_url, token=api_key)

agent = unwrap(create_agent.sync_detailed(client=client, body=AgentCreate(name="py-sdk", capabilities=["math"])))
session = unwrap(create_session.sync_detailed(client=client, body=SessionCreate(agent_id=agent.id)))


def say(text):
    body = MessageCreate(content=[ContentPart(type_=ContentType.TEXT, text=text)])
    return unwrap(post_message.sync_detailed(session.id, client=client, body=body))


first = say('!tool math {"expression":"6*7"}')
second = say("!sleep 1500 slow and steady")
events, completed = [], 0
for item in stream_events(client, session.id):
    if isinstance(item, Delta):
        continue
    assert isinstance(item, Event), item
    events.append(item)
    if item.type_ == "turn.completed":
        completed += 1
        if completed == 2:
            break

sequences = [e.sequence for e in events]
assert sequences == list(range(1, len(events) + 1)), f"every stored event once, in order: {sequences}"
answers = [e.data["message"]["content"][0]["text"] for e in events if e.type_ == "output.message.completed"]
assert answers == ["", "tool math returned: 42", "echo: !sleep 1500 slow and steady"], answers
assert [e.turn_id for e in events if e.type_ == "turn.completed"] == [first.turn_id, second.turn_id]

messages = unwrap(list_messages.sync_detailed(session.id, client=client))
assert len(messages.data) == 5, messages
assert [c.name for c in messages.data[1].tool_calls] == ["math"], messages.data[1]
assert messages.data[-1].content[0]["text"] == "echo: !sleep 1500 slow and steady"

resumed = next(e for e in stream_events(client, session.id, since_id=events[4].id) if isinstance(e, Event))
assert resumed.sequence == 6, resumed

try:
    unwrap(get_agent.sync_detailed("agt_" + "0" * 32, client=client))
    raise SystemExit("a missing agent raised nothing")
except TurnstoneError as e:
    assert (e.code, e.status) == ("not_found", 404), e
try:
    next(iter(stream_events(AuthenticatedClient(base_url=base_url, token="ts_live_wrong"), session.id)))
    raise SystemExit("a wrong key raised nothing")
except TurnstoneError as e:
    assert e.code == "unauthorized", e

print("sdk-python: a turn streamed across reconnects, messages read back, problems raised")
