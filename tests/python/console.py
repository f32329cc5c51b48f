"""Walks the operator console in headless Chromium (Playwright, launched with the system's
Chromium) against a live stack, and fails on any JavaScript error, any failed request the flow
did not provoke, and any page without its main heading. Run by `tests/tests/it/console.rs`.

Usage: console.py BASE_URL API_KEY OPERATOR_TOKEN BIG_SESSION_ID ARTIFACT_DIR
Environment: TURNSTONE_CHROMIUM (default /usr/bin/chromium); TURNSTONE_CONSOLE_MCP_URL and
TURNSTONE_CONSOLE_MCP_TOKEN: a live MCP server (tests/src/mcp_server.rs) and the bearer token it wants.
Prints one line `FIRST_SCREEN_MS {...}` with the 10,000-event session's first-screen times.
"""

import json
import os
import re
import sys
import time
import urllib.request

from playwright.sync_api import expect, sync_playwright

BASE, KEY, OPERATOR, BIG, ARTIFACTS = sys.argv[1:6]
CHROMIUM = os.environ.get("TURNSTONE_CHROMIUM", "/usr/bin/chromium")
MCP_URL = os.environ["TURNSTONE_CONSOLE_MCP_URL"]
MCP_TOKEN = os.environ["TURNSTONE_CONSOLE_MCP_TOKEN"]
os.makedirs(ARTIFACTS, exist_ok=True)
expect.set_options(timeout=15_000)


class Guard:
    """Records what went wrong in the page; provoked failures are declared before they happen."""

    def __init__(self, page):
        self.problems = []
        self.allowed = []  # (url regex, status)
        self.allowed_console = []  # text regex
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("console", self.on_console)
        page.on("response", self.on_response)
        page.on("requestfailed", self.on_failed)

    def allow(self, url_pattern, status):
        self.allowed.append((re.compile(url_pattern), status))

    def provoked(self, url, status):
        return any(p.search(url) and s == status for p, s in self.allowed)

    def on_console(self, msg):
        if msg.type != "error":
            return
        url = (msg.location or {}).get("url", "")
        failed = re.search(r"status of (\d+)", msg.text)
        if failed and self.provoked(url, int(failed.group(1))):
            return
        if any(re.search(p, msg.text) for p in self.allowed_console):
            return
        self.problems.append(f"console error: {msg.text} ({url})")

    def on_response(self, resp):
        if resp.status >= 400 and not self.provoked(resp.url, resp.status):
            self.problems.append(f"failed request: {resp.request.method} {resp.url} -> {resp.status}")

    def on_failed(self, req):
        # Leaving a page aborts its event stream, and any read still in flight (the sessions
        # list polls), on purpose: an aborted GET is the page moving on, not a failure.
        if req.method == "GET" and "ABORTED" in (req.failure or ""):
            return
        self.problems.append(f"request failed: {req.method} {req.url}: {req.failure}")


# Sessions the walk drives; if it fails, their event logs are printed (what the server sent).
WATCHED = []


# What the walk's own API posts answered, printed with the logs on failure.
POSTED = []


def dump_events():
    for line in POSTED:
        print(f"posted: {line}", file=sys.stderr)
    for sid in WATCHED:
        req = urllib.request.Request(f"{BASE}/v1/sessions/{sid}", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            print(f"session {sid}: {resp.read().decode()[:400]}", file=sys.stderr)
        req = urllib.request.Request(f"{BASE}/v1/sessions/{sid}/events?limit=1000", headers={"Authorization": f"Bearer {KEY}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            events = json.load(resp)["data"]
        print(f"events of {sid}:", file=sys.stderr)
        for e in events:
            print(f"  #{e['sequence']} {e['ts']} {e['type']} turn={e.get('turn_id')} {json.dumps(e['data'])[:160]}", file=sys.stderr)


def heading(page, text):
    """Every page has one main heading; this one must read `text`."""
    h1 = page.locator("main h1")
    expect(h1).to_have_count(1)
    expect(h1).to_have_text(text)


def nav(page, name):
    """Follows a link of the main navigation."""
    page.locator("#nav").get_by_role("link", name=name, exact=True).click()


def shot(page, name):
    page.screenshot(path=os.path.join(ARTIFACTS, f"{name}.png"), full_page=True)


def first_screen_ms(page, path, selector):
    """Milliseconds from navigation start until `selector` is on screen."""
    page.goto(BASE + path)
    handle = page.wait_for_function(
        f"() => document.querySelector({json.dumps(selector)}) ? performance.now() : null", polling="raf", timeout=15_000
    )
    return round(handle.json_value())


def main():
    timings = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        page = context.new_page()
        guard = Guard(page)

        # The page is served under a strict policy, and the browser enforces it.
        resp = page.goto(BASE + "/console")
        csp = resp.headers.get("content-security-policy", "")
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp, csp
        heading(page, "Sign in")
        guard.allowed_console.append(r"Content Security Policy")
        blocked = page.evaluate(
            """() => new Promise((resolve) => {
                 document.addEventListener('securitypolicyviolation', (e) => resolve(e.violatedDirective), { once: true });
                 const s = document.createElement('script');
                 s.textContent = 'window.__inline = true';
                 document.head.append(s);
               })"""
        )
        assert blocked.startswith("script-src"), blocked
        assert page.evaluate("() => window.__inline === undefined"), "an inline script ran"
        guard.allowed_console.clear()
        shot(page, "sign-in")

        # Sign in with the keyboard: the key field has focus, Enter submits.
        expect(page.get_by_label("Key or token")).to_be_focused()
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
        heading(page, "Sessions")
        assert page.evaluate("() => !location.href.includes('ts_')"), "the key is in the URL"

        # Create an agent with a capability picked from the registry (its tool schema is shown).
        nav(page, "Agents")
        heading(page, "Agents")
        page.get_by_role("link", name="New agent").click()
        heading(page, "New agent")
        page.get_by_label("Name", exact=True).fill("console agent")
        page.get_by_label("System prompt").fill("You are terse.")
        page.locator("#cap-math").check()
        page.locator("#cap-files").check()
        page.locator(".capability", has_text="math").locator("summary").click()
        expect(page.locator(".capability", has_text="math").locator("pre.json")).to_contain_text("expression")
        shot(page, "agent-new")
        page.get_by_role("button", name="Create agent").click()
        heading(page, "console agent")

        # Start a session and talk to it: the reply streams in as deltas, then completes.
        nav(page, "Sessions")
        heading(page, "Sessions")
        page.get_by_label("Agent", exact=True).first.select_option(label="console agent")
        page.get_by_label("Title").fill("console session")
        page.get_by_role("button", name="Start session").click()
        heading(page, "console session")
        expect(page.locator("dd", has_text="live")).to_be_visible()
        session_url = page.url
        WATCHED.append(session_url.rsplit("/", 1)[1])
        page.evaluate(
            """() => new MutationObserver(() => {
                 const live = document.querySelector('.bubble.live');
                 if (live && !live.hidden && live.textContent) window.__sawDelta = true;
               }).observe(document.querySelector('main'), { subtree: true, childList: true, characterData: true, attributes: true })"""
        )
        text = "hello from the console, streamed back to us in several chunks of live tokens"
        page.get_by_role("textbox", name="Message").fill(text)
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.user", has_text=text)).to_be_visible()
        expect(page.locator(".bubble.assistant:not(.live)", has_text="echo: " + text)).to_be_visible()
        assert page.evaluate("() => window.__sawDelta === true"), "no live delta was shown"
        expect(page.locator("dd .badge")).to_have_text("idle")

        # A tool call shows as a call and its result; the turn goes on to its answer.
        page.get_by_role("textbox", name="Message").fill('!tool math {"expression":"6*7"}')
        page.keyboard.press("Control+Enter")
        expect(page.locator(".bubble.tool", has_text="42").first).to_be_visible()
        expect(page.locator(".bubble.assistant:not(.live)", has_text="tool math returned: 42")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        shot(page, "session-chat")

        # After a reload the chat, read back from the stored events, shows the same lines.
        live_lines = page.locator("ol.chat .bubble").all_inner_texts()
        page.reload()
        heading(page, "console session")
        expect(page.locator(".bubble.tool", has_text="→ math")).to_have_count(1)
        expect(page.locator("ol.chat .bubble")).to_have_count(len(live_lines))
        assert page.locator("ol.chat .bubble").all_inner_texts() == live_lines, "the reloaded chat differs from the live one"

        # Cancel a running turn. The session is idle first: "Cancel turn" cancels the turn that
        # runs, and a message sent while the previous turn still ran would queue behind it.
        page.get_by_role("textbox", name="Message").fill("!sleep 20000")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.user", has_text="!sleep 20000")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("running")
        page.get_by_role("button", name="Cancel turn").click()
        expect(page.locator(".bubble.system", has_text="turn cancelled")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        expect(page.get_by_role("button", name="Cancel turn")).to_be_disabled()

        # The events timeline: filter by type, inspect one event.
        page.get_by_role("link", name="Events").click()
        expect(page.locator("table.events tbody tr").first).to_be_visible()
        page.get_by_label("Types").fill("turn.completed")
        page.get_by_role("button", name="Apply").click()
        rows = page.locator("table.events tbody tr")
        expect(rows).to_have_count(2)
        for i in range(2):
            expect(rows.nth(i).locator("td").nth(1)).to_have_text("turn.completed")
        rows.first.locator("summary").click()
        expect(rows.first.locator("pre.json")).to_contain_text('"usage"')
        shot(page, "session-events")

        # A deep link survives a reload (filter included).
        page.reload()
        heading(page, "console session")
        expect(page.locator("table.events tbody tr")).to_have_count(2)
        expect(page.get_by_label("Types")).to_have_value("turn.completed")

        # The timeline is live: a new turn's events append to the newest page.
        page.get_by_label("Types").fill("")
        page.get_by_role("button", name="Apply").click()
        expect(page.locator("table.events tbody tr").first).to_be_visible()
        before = page.locator("table.events tbody tr").count()
        page.goto(session_url)
        page.get_by_role("textbox", name="Message").fill("one more")
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.assistant:not(.live)", has_text="echo: one more")).to_be_visible()
        page.get_by_role("link", name="Events").click()
        expect(page.locator("table.events tbody tr")).to_have_count(before + 7)

        # Files: upload one and see it listed; the agent writes another, which appears live; view
        # it, download it (fetched with the key in a header, handed over as a Blob URL); delete.
        page.get_by_role("link", name="Files").click()
        expect(page.get_by_text("No files in /.")).to_be_visible()
        page.get_by_label("File", exact=True).set_input_files(
            files=[{"name": "upload.txt", "mimeType": "text/plain", "buffer": b"uploaded from the console\n"}]
        )
        page.get_by_role("button", name="Upload", exact=True).click()
        expect(page.get_by_role("button", name="View /upload.txt")).to_be_visible()
        # Uploading onto an existing file without "Replace" is refused, with the problem shown.
        guard.allow(r"/files/content\?path=%2Fupload\.txt$", 412)
        page.get_by_label("File", exact=True).set_input_files(files=[{"name": "upload.txt", "mimeType": "text/plain", "buffer": b"again"}])
        page.get_by_role("button", name="Upload", exact=True).click()
        expect(page.locator("#problem .code")).to_have_text("precondition_failed")
        session_id = session_url.rsplit("/", 1)[1]
        wrote = page.request.post(
            f"{BASE}/v1/sessions/{session_id}/messages",
            headers={"Authorization": f"Bearer {KEY}"},
            data={"content": [{"type": "text", "text": '!tool write_file {"path":"/notes/a.md","content":"hi"}'}]},
        )
        assert wrote.status == 202, wrote.status
        page.get_by_role("link", name="notes/").click()
        expect(page).to_have_url(re.compile(r"/files\?dir=%2Fnotes$"))
        page.get_by_role("button", name="View /notes/a.md").click()
        expect(page.locator("pre.file")).to_have_text("hi")
        with page.expect_download() as downloading:
            page.get_by_role("button", name="Download /notes/a.md").first.click()
        assert downloading.value.suggested_filename == "a.md", downloading.value.suggested_filename
        with open(downloading.value.path(), encoding="utf-8") as f:
            assert f.read() == "hi", "the download is the file"
        shot(page, "session-files")
        page.get_by_role("link", name="/", exact=True).click()
        page.get_by_role("button", name="Delete /upload.txt").click()
        page.get_by_role("button", name="Confirm delete /upload.txt").click()
        expect(page.get_by_role("button", name="View /upload.txt")).to_have_count(0)
        expect(page.get_by_role("link", name="notes/")).to_be_visible()

        # Key-value: set a key (JSON value, TTL), see its JSON, delete it.
        page.get_by_role("link", name="Key-value").click()
        expect(page.get_by_text("No keys.")).to_be_visible()
        page.get_by_label("Key", exact=True).fill("console:greeting")
        page.get_by_label("Value (JSON)").fill('{"hello": "world"}')
        page.get_by_label("TTL (seconds)").fill("3600")
        page.get_by_role("button", name="Set key").click()
        key_row = page.locator("table.kv tbody tr", has_text="console:greeting")
        expect(key_row.locator("td").nth(2)).to_have_text("1")
        key_row.locator("summary").click()
        expect(key_row.locator("pre.json")).to_contain_text('"hello": "world"')
        shot(page, "session-kv")
        key_row.get_by_role("button", name="Delete console:greeting").click()
        key_row.get_by_role("button", name="Confirm delete console:greeting").click()
        expect(page.get_by_text("No keys.")).to_be_visible()

        # Pending: a call held for approval is listed with its arguments and deadline; approving
        # it runs the call and the turn completes.
        auth = {"Authorization": f"Bearer {KEY}"}
        agent = page.request.post(f"{BASE}/v1/agents", headers=auth, data={"name": "approver", "capabilities": ["math"], "tool_policies": {"math": "ask"}})
        assert agent.status == 201, agent.status
        held = page.request.post(f"{BASE}/v1/sessions", headers=auth, data={"agent_id": agent.json()["id"], "title": "pending session"})
        assert held.status == 201, held.status
        held_id = held.json()["id"]
        WATCHED.append(held_id)
        asked = page.request.post(
            f"{BASE}/v1/sessions/{held_id}/messages", headers=auth, data={"content": [{"type": "text", "text": '!tool math {"expression":"6*7"}'}]}
        )
        assert asked.status == 202, asked.status
        page.goto(f"{BASE}/console/sessions/{held_id}/pending")
        heading(page, "pending session")
        item = page.locator("article.pending")
        expect(item).to_have_count(1)
        expect(item.locator("pre.json")).to_contain_text('"expression": "6*7"')
        expect(item.locator("time")).to_have_count(1)
        expect(page.get_by_label("Reason (for a denial)")).to_be_visible()
        page.set_viewport_size({"width": 390, "height": 844})
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the pending tab is {width} px wide at 390"
        shot(page, "session-pending-390")
        page.set_viewport_size({"width": 1280, "height": 860})
        page.get_by_role("button", name="Approve math").click()
        expect(page.get_by_text("Nothing is pending.")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        page.goto(f"{BASE}/console/sessions/{held_id}/events?types=tool.completed")
        ran = page.locator("table.events tbody tr")
        expect(ran).to_have_count(1)
        ran.locator("summary").click()
        expect(ran.locator("pre.json")).to_contain_text('"result": "42"')

        # MCP servers: add one with a header (its value is never shown back), refresh it and see
        # its tools; an unreachable one answers its refresh with a problem; disable, enable, delete.
        nav(page, "MCP servers")
        heading(page, "MCP servers")
        expect(page.get_by_text("No MCP servers yet.")).to_be_visible()
        page.get_by_label("Name", exact=True).fill("tools")
        page.get_by_label("URL", exact=True).fill(MCP_URL)
        page.get_by_role("button", name="Add header").click()
        page.get_by_label("Header 1 name").fill("Authorization")
        page.get_by_label("Header 1 value").fill(f"Bearer {MCP_TOKEN}")
        page.get_by_role("button", name="Add server").click()
        servers = page.locator("table[aria-label='MCP servers'] tbody tr")
        tools_row = servers.filter(has=page.get_by_role("link", name="tools", exact=True))
        expect(tools_row.locator(".badge")).to_have_text("active")
        expect(tools_row.locator("td").nth(3)).to_have_text("Authorization")
        page.get_by_role("button", name="Refresh tools").click()
        expect(page.locator(".notice")).to_have_text("tools: 5 tools fetched.")
        page.get_by_label("Name", exact=True).fill("down")
        page.get_by_label("URL", exact=True).fill("http://127.0.0.1:9/mcp")
        page.get_by_role("button", name="Add server").click()
        expect(servers).to_have_count(2)
        guard.allow(r"/v1/mcp-servers/mcp_[0-9a-f]{32}/refresh$", 502)
        page.get_by_role("button", name="Refresh down").click()
        expect(page.locator("#problem .code")).to_have_text("mcp_unreachable")
        expect(page.locator("#problem .detail")).not_to_be_empty()
        shot(page, "mcp-servers")
        page.get_by_role("button", name="Delete down").click()
        page.get_by_role("button", name="Delete down").click()
        expect(servers).to_have_count(1)
        page.get_by_role("button", name="Disable tools").click()
        expect(tools_row.locator(".badge")).to_have_text("disabled")
        page.get_by_role("button", name="Enable tools").click()
        expect(tools_row.locator(".badge")).to_have_text("active")
        assert MCP_TOKEN not in page.content(), "an MCP header value is shown"
        page.get_by_role("link", name="tools", exact=True).click()
        heading(page, "tools")
        echo = page.locator("tr", has_text="mcp__tools__echo")
        expect(echo).to_contain_text("Echoes its text.")
        echo.locator("summary").click()
        expect(echo.locator("pre.json")).to_contain_text('"required": [')
        expect(echo.locator("code[title]")).to_have_attribute("title", re.compile(r"^[0-9a-f]{64}$"))
        expect(page.locator("tr[data-tool]")).to_have_count(5)
        assert MCP_TOKEN not in page.content(), "an MCP header value is shown"
        shot(page, "mcp-server")

        # The agent editor: the MCP server beside the registry's capabilities, a tool policy, a
        # client tool. A client tool named like a capability tool is refused, with the problem shown.
        nav(page, "Agents")
        page.get_by_role("link", name="New agent").click()
        heading(page, "New agent")
        page.get_by_label("Name", exact=True).fill("tools agent")
        page.locator("#cap-math").check()
        page.locator("#cap-mcp-tools").check()
        page.locator(".capability", has_text="mcp:").locator("summary").click()
        expect(page.locator(".capability", has_text="mcp:").locator(".tool", has_text="mcp__tools__echo")).to_be_visible()
        page.get_by_role("button", name="Add policy").click()
        page.get_by_label("Tool pattern").fill("math")
        page.get_by_label("Policy", exact=True).select_option("ask")
        page.get_by_role("button", name="Add policy").click()
        page.get_by_label("Tool pattern").nth(1).fill("mcp__tools__*")
        page.get_by_label("Policy", exact=True).nth(1).select_option("auto")
        page.get_by_role("button", name="Add client tool").click()
        page.get_by_label("Tool name").fill("math")
        page.get_by_label("Description", exact=True).fill("Looks a word up in the client's dictionary.")
        page.get_by_label("Parameters (JSON Schema)").fill('{"type": "object", "properties": {"word": {"type": "string"}}}')
        page.get_by_label("Timeout (seconds)", exact=True).fill("120")
        page.get_by_label("Approval timeout (seconds)").fill("600")
        guard.allow(r"/v1/agents$", 400)
        page.get_by_role("button", name="Create agent").click()
        expect(page.locator("#problem .code")).to_have_text("tool_name_conflict")
        expect(page.locator("#problem .detail")).to_contain_text("capability tool")
        page.get_by_label("Tool name").fill("lookup")
        shot(page, "agent-editor")
        page.get_by_role("button", name="Create agent").click()
        heading(page, "tools agent")
        expect(page.get_by_role("status")).to_have_text("Saved.")
        page.reload()
        heading(page, "tools agent")
        expect(page.get_by_label("Tool pattern")).to_have_count(2)
        expect(page.get_by_label("Tool pattern").first).to_have_value("math")
        expect(page.get_by_label("Policy", exact=True).first).to_have_value("ask")
        expect(page.get_by_label("Tool name")).to_have_value("lookup")
        expect(page.get_by_label("Timeout (seconds)", exact=True)).to_have_value("120")
        expect(page.get_by_label("Approval timeout (seconds)")).to_have_value("600")
        expect(page.locator("#cap-mcp-tools")).to_be_checked()
        tools_agent = page.url.rsplit("/", 1)[1]

        # A session of that agent: an MCP tool runs (policy auto); a held math call is denied from
        # the Pending tab; a client tool call gets its result there, and the turn finishes.
        tools_session = page.request.post(f"{BASE}/v1/sessions", headers=auth, data={"agent_id": tools_agent, "title": "tools session"})
        assert tools_session.status == 201, tools_session.status
        tools_session = tools_session.json()["id"]
        WATCHED.append(tools_session)
        page.goto(f"{BASE}/console/sessions/{tools_session}")
        heading(page, "tools session")
        expect(page.locator("dd", has_text="live")).to_be_visible()
        page.get_by_role("textbox", name="Message").fill('!tool mcp__tools__echo {"text":"hello over mcp"}')
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.tool", has_text='← mcp__tools__echo: "hello over mcp"')).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        page.get_by_role("textbox", name="Message").fill('!tool math {"expression":"2+2"}')
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.tool", has_text="waiting for an approval: math")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("waiting")
        page.get_by_role("link", name="Pending").click()
        expect(page.locator("article.pending")).to_have_count(1)
        page.get_by_label("Reason (for a denial)").fill("not today")
        page.get_by_role("button", name="Deny math").click()
        expect(page.get_by_text("Nothing is pending.")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        page.get_by_role("link", name="Events").click()
        page.get_by_label("Types").fill("tool.approval_resolved,tool.completed")
        page.get_by_role("button", name="Apply").click()
        denial = page.locator("table.events tbody tr", has_text="tool.approval_resolved")
        expect(denial).to_have_count(1)
        denial.locator("summary").click()
        expect(denial.locator("pre.json")).to_contain_text('"decision": "deny"')
        expect(denial.locator("pre.json")).to_contain_text('"reason": "not today"')
        shot(page, "session-denied")
        page.get_by_role("link", name="Chat").click()
        page.get_by_role("textbox", name="Message").fill('!tool lookup {"word":"turnstone"}')
        page.get_by_role("button", name="Send").click()
        expect(page.locator(".bubble.tool", has_text="waiting for the client: lookup")).to_be_visible()
        page.get_by_role("link", name="Pending").click()
        call = page.locator("article.pending", has_text="client tool call")
        expect(call).to_have_count(1)
        expect(call.locator("pre.json")).to_contain_text('"word": "turnstone"')
        call.get_by_label("Result", exact=True).fill("a stone that turns")
        shot(page, "session-client-tool")
        call.get_by_role("button", name="Submit result").click()
        expect(page.get_by_text("Nothing is pending.")).to_be_visible()
        expect(page.locator("dd .badge")).to_have_text("idle")
        page.get_by_role("link", name="Chat").click()
        expect(page.locator(".bubble.assistant", has_text="tool lookup returned: a stone that turns")).to_be_visible()
        # The whole conversation, read back from the log: every tool line the live view showed.
        for line in [
            '← mcp__tools__echo: "hello over mcp"',
            "waiting for an approval: math",
            "✗ denied",
            "waiting for the client: lookup",
            '← lookup: "a stone that turns" (by client)',
        ]:
            expect(page.locator(".bubble.tool", has_text=line)).to_have_count(1)
        shot(page, "session-tools-chat")

        # An error shows the problem's code and detail.
        missing = "ses_" + "0" * 31 + "1"
        guard.allow(re.escape(f"/v1/sessions/{missing}"), 404)
        page.goto(f"{BASE}/console/sessions/{missing}")
        expect(page.locator("#problem .code")).to_have_text("not_found")
        expect(page.locator("#problem .detail")).to_contain_text("session not found")
        heading(page, "This page could not be shown")
        shot(page, "error")

        # A session of 10,000 events opens at once (the newest page, then live).
        timings["events"] = first_screen_ms(page, f"/console/sessions/{BIG}/events", "table.events tbody tr")
        expect(page.locator("table.events tbody tr")).to_have_count(200)
        expect(page.locator("table.events tbody tr").last.locator("td").first).to_have_text("10000")
        shot(page, "events-10000")
        page.get_by_role("button", name="Oldest").click()
        expect(page.locator("table.events tbody tr").first.locator("td").first).to_have_text("1")
        timings["chat"] = first_screen_ms(page, f"/console/sessions/{BIG}", "form.composer")
        timings["sessions"] = first_screen_ms(page, "/console/sessions", "tbody tr")

        # The sessions list follows statuses live: another client starts a turn, the row shows it.
        row = page.locator("tr", has_text="console session")
        expect(row.locator(".badge")).to_have_text("idle")
        posted = page.request.post(
            f"{BASE}/v1/sessions/{session_id}/messages",
            headers={"Authorization": f"Bearer {KEY}"},
            data={"content": [{"type": "text", "text": "!sleep 20000"}]},
        )
        assert posted.status == 202, posted.status
        POSTED.append(f"{session_id} !sleep 20000 -> {posted.status} {posted.text()}")
        expect(row.locator(".badge")).to_have_text("running")
        cancelled = page.request.post(f"{BASE}/v1/sessions/{session_id}/cancel", headers={"Authorization": f"Bearer {KEY}"})
        assert cancelled.status in (200, 202), cancelled.status
        expect(row.locator(".badge")).to_have_text("idle")
        page.get_by_label("Status").select_option("idle")
        expect(page).to_have_url(re.compile(r"status=idle"))
        expect(page.locator("tbody tr .badge").first).to_have_text("idle")
        shot(page, "sessions")

        # Providers and models; API keys (a new key is shown once).
        nav(page, "Providers & models")
        heading(page, "Providers and models")
        expect(page.locator("table[aria-label=Providers] tbody tr")).to_have_count(1)
        page.get_by_label("Name", exact=True).fill("second")
        page.get_by_label("Base URL", exact=True).fill("http://127.0.0.1:9/v1")
        page.get_by_label("API key", exact=True).fill("sk-console-secret")
        page.get_by_role("button", name="Add provider").click()
        second = page.locator("table[aria-label=Providers] tbody tr", has_text="second")
        expect(second).to_contain_text("set")
        page.get_by_label("Provider", exact=True).select_option(label="second")
        page.get_by_label("Model name", exact=True).fill("second-model")
        page.get_by_role("button", name="Add model").click()
        expect(page.locator("table[aria-label=Models] tbody tr", has_text="second-model")).to_contain_text("second")
        assert "sk-console-secret" not in page.content(), "a provider key is shown"
        shot(page, "providers")
        nav(page, "API keys")
        heading(page, "API keys")
        page.get_by_label("Name", exact=True).fill("ci")
        page.get_by_role("button", name="Create key").click()
        expect(page.locator(".notice code.secret")).to_contain_text("ts_")
        shot(page, "keys")

        # 390 px wide: nothing overflows sideways, the session still works.
        page.set_viewport_size({"width": 390, "height": 844})
        session_path = session_url[len(BASE):]
        # Each page is left only once it has loaded (leaving earlier aborts its reads).
        for path, title, ready in [
            ("/console/sessions", "Sessions", "tbody tr"),
            (session_path + "/files?dir=/notes", "console session", "table.files tbody tr"),
            (session_path + "/kv", "console session", "text=No keys."),
            (session_path, "console session", "form.composer"),
            ("/console/mcp-servers", "MCP servers", "tbody tr"),
            (f"/console/agents/{tools_agent}", "tools agent", "fieldset.client-tool"),
        ]:
            page.goto(BASE + path)
            heading(page, title)
            expect(page.locator(ready).first).to_be_visible()
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{path} is {width} px wide at 390"
        shot(page, "session-390")
        page.set_viewport_size({"width": 1280, "height": 860})

        # Sign out: the key is gone from the tab.
        page.get_by_role("button", name="Sign out").click()
        heading(page, "Sign in")
        assert page.evaluate("() => sessionStorage.length") == 0

        # The operator: organisations and their quotas.
        page.get_by_label("Key or token").fill(OPERATOR)
        page.get_by_label("the operator token").check()
        page.get_by_role("button", name="Sign in").click()
        heading(page, "Organisations")
        page.get_by_label("Name", exact=True).fill("console org")
        page.get_by_role("button", name="Create organisation").click()
        heading(page, "console org")
        page.get_by_label("Max agents").fill("7")
        page.get_by_role("button", name="Save").click()
        expect(page.get_by_label("Max agents")).to_have_value("7")
        nav(page, "Organisations")
        expect(page.locator("tr", has_text="console org")).to_contain_text("7")
        shot(page, "operator")
        page.get_by_role("button", name="Sign out").click()
        heading(page, "Sign in")

        browser.close()
        print("FIRST_SCREEN_MS " + json.dumps(timings), flush=True)
        if guard.problems:
            print("\n".join(guard.problems), file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except Exception:
        dump_events()
        raise
