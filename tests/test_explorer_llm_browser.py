"""The explorer's LLM mode in a real browser: the expert-parallel modes of a mixture of experts.

As tests/test_explorer_browser.py: the Dash server in a thread of this process on a free
loopback port, headless Debian Chromium driven by Playwright. mixtral-tiny (2 layers, 4
experts) keeps each point (prefill + decode steps, compiled and simulated) to about a second.
"""
import os
import socket
import threading

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's /usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")

WAIT_MS = 90_000
LAUNCH = dict(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync"])


@pytest.fixture(scope="module")
def page():
    from werkzeug.serving import make_server

    from viz.explorer.jobs import Jobs
    from viz.explorer.llm import llm_point, make_llm_app
    app = make_llm_app(Jobs(workers=1, kind="thread", fn=llm_point), default_model="mixtral-tiny",
                       defaults={"batch": 4, "prompt_len": 16, "new_tokens": 4}, poll_ms=250)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = make_server("127.0.0.1", port, app.server, threaded=True)
    th = threading.Thread(target=srv.serve_forever, name="explorer-llm-test-server", daemon=True)
    th.start()
    try:
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(**LAUNCH)
            try:
                pg = browser.new_page(viewport={"width": 1400, "height": 1000})
                pg.set_default_timeout(WAIT_MS)
                pg.goto(f"http://127.0.0.1:{port}/")
                yield pg
            finally:
                browser.close()
    finally:
        srv.shutdown()
        th.join(timeout=10)
        app.jobs.shutdown()


def _set(page, cid, value):
    page.fill(f"#{cid}", str(value))
    page.press(f"#{cid}", "Enter")


def _summary_has(page, words):
    page.wait_for_function("w => { const s = document.querySelector('#status-summary');"
                           " return s && s.innerText.includes(w); }", arg=words)


def test_expert_modes_show_experts_all_to_alls_and_errors(page):
    _summary_has(page, "mixtral-tiny · batch 4")
    assert "one chip" in page.inner_text("#status-summary")

    # expert parallel over 2 chips: the card names the experts per chip and the all-to-alls
    _set(page, "llm-chips", 2)
    page.click("#llm-mode input[value='expert']")
    _summary_has(page, "expert-parallel 2: 2 of 4 experts")
    assert page.inner_text("#fit-badge") == "FITS"
    assert page.inner_text("#kpi-all-to-all").endswith("s")
    # the chips chart has the current point at once, with the all-to-alls' part of a token
    page.wait_for_function("() => { const gd = document.querySelector('#llm-fig-chips .js-plotly-plot');"
                           " return gd && gd.data && gd.data.some(t => t.name === 'all-to-alls per token (ms)'); }")

    # pipeline + expert: 2 stages of 2 chips
    _set(page, "llm-chips", 4)
    page.click("#llm-mode input[value='pipeline+expert']")
    _summary_has(page, "2 stages, expert-parallel 2")

    # a degree that does not divide the chips: a message naming the control, then a good one again
    _set(page, "llm-ep", 3)
    page.wait_for_function("() => { const e = document.querySelector('#llm-status #error-message');"
                           " return e && e.innerText.includes('expert_parallel: 3 chips per group'); }")
    _set(page, "llm-ep", 4)
    _summary_has(page, "expert-parallel 4: 1 of 4 experts")
    assert "% of a decode step" in page.inner_text("#llm-status")
