"""The labelling UI in a real headless browser (Debian's chromium, driven by Playwright) on the
server's real app: log in, label with the keyboard, correct, compare, and find it in the export."""

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from llmloop.feedback.export import export
from llmloop.feedback.store import ConversationFilter, FeedbackStore

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
KEY = "sk-ui-test"


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not found; run .ci/services.sh or `apt-get install chromium`")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@contextmanager
def running(app) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on a socket we bound first: the port is free by
    construction, and connections wait in the listen queue until uvicorn accepts them."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


@pytest.fixture
def site(make_app, make_record, tmp_path: Path):
    db_url = f"sqlite:///{tmp_path / 'llmloop.db'}"
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records(
        [
            make_record(
                5, prompt="<b>not bold</b>", output="<img src=x onerror=alert(1)>", created=50.0
            ),
            make_record(1, prompt="Capital of France?", output="Lyon", created=100.0),
            make_record(2, prompt="Capital of France?", output="Paris", created=200.0),
            make_record(3, prompt="What is 2+2?", output="5", created=300.0),
            make_record(4, prompt="Colour of the sky?", output="Blue", created=400.0),
        ]
    )
    with running(make_app(db_url, api_keys=(KEY,))) as base_url:
        yield base_url, store
    store.close()


def test_label_correct_compare_and_export(browser, site, tmp_path):
    from playwright.sync_api import expect

    base_url, store = site
    page = browser.new_page()
    page.goto(f"{base_url}/ui/")
    expect(page.locator("#login")).to_be_visible()  # the API said 401: ask for the key once
    page.fill("#api-key", KEY)
    page.click("#login-submit")
    expect(page.locator("#total")).to_have_text("5 conversations")
    # signed in by an HttpOnly session cookie: no script can read it, and it is not the key
    assert page.evaluate("document.cookie") == ""
    (cookie,) = page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["path"]) == ("llmloop_session", True, "/ui")
    assert KEY not in cookie["value"]
    # logged text is shown as text, never run as HTML
    expect(page.locator("#list li").last.locator(".prompt")).to_have_text("<b>not bold</b>")

    # newest first and opened: rate it +1 from the keyboard
    expect(page.locator("#answer")).to_have_text("Blue")
    page.keyboard.press("+")
    expect(page.locator("#current-rating")).to_have_text("+1")
    expect(page.locator("#list li").first.locator(".badge.up")).to_be_visible()

    # next: rate -1, write a correction, save with Ctrl+Enter
    page.keyboard.press("j")
    expect(page.locator("#answer")).to_have_text("5")
    page.keyboard.press("-")
    expect(page.locator("#current-rating")).to_have_text("−1")
    page.keyboard.press("e")
    expect(page.locator("#correction")).to_be_focused()
    page.keyboard.type("4")
    page.keyboard.press("Control+Enter")
    expect(page.locator("#history")).to_contain_text("corrected")

    # next: compare the two answers to the same prompt and pick the left one
    page.keyboard.press("Escape")  # leave the correction field
    page.keyboard.press("j")
    expect(page.locator("#answer")).to_have_text("Paris")
    page.keyboard.press("c")
    expect(page.locator("#compare-right")).to_have_text("Lyon")
    page.keyboard.press("1")
    expect(page.locator("#history")).to_contain_text("preferred over chatcmpl-00000001")

    # filters: search, rating, unlabelled
    page.fill("#q", "france")
    expect(page.locator("#total")).to_have_text("2 conversations")
    page.fill("#q", "")
    page.select_option("#rating", "-1")
    expect(page.locator("#list li")).to_have_count(1)
    page.select_option("#rating", "")
    page.check("#unlabelled")
    expect(page.locator("#list li")).to_have_count(1)  # only the <b> one is left

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    assert page.context.cookies() == []
    page.close()

    sft, dpo = tmp_path / "sft.jsonl", tmp_path / "dpo.jsonl"
    export(store, "sft", sft, ConversationFilter())
    export(store, "dpo", dpo, ConversationFilter())
    answers = {json.loads(line)["messages"][-1]["content"] for line in sft.open()}
    assert answers == {"Blue", "4"}
    pairs = {
        (row["chosen"][0]["content"], row["rejected"][0]["content"])
        for row in map(json.loads, dpo.open())
    }
    assert pairs == {("4", "5"), ("Paris", "Lyon")}


def test_pages_through_many_rows_with_the_keyboard(browser, make_app, make_record, tmp_path):
    from playwright.sync_api import expect

    db_url = f"sqlite:///{tmp_path / 'llmloop.db'}"
    store = FeedbackStore(db_url)
    store.migrate()
    store.insert_records([make_record(i, created=float(i)) for i in range(120)])
    with running(make_app(db_url)) as base_url:  # no keys: no login form
        page = browser.new_page()
        page.goto(f"{base_url}/ui/")
        expect(page.locator("#list li")).to_have_count(50)
        expect(page.locator("#page-info")).to_have_text("page 1")
        page.keyboard.press("n")
        expect(page.locator("#page-info")).to_have_text("page 2")
        expect(page.locator("#list li").first).to_contain_text("answer 69")
        page.keyboard.press("n")
        expect(page.locator("#list li")).to_have_count(20)
        expect(page.locator("#next-page")).to_be_disabled()
        page.keyboard.press("k")  # k on the first row goes back a page
        expect(page.locator("#page-info")).to_have_text("page 2")
        page.keyboard.press("p")
        expect(page.locator("#page-info")).to_have_text("page 1")
        expect(page.locator("#login")).to_be_hidden()
        page.close()
    store.close()
