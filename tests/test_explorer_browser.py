"""The explorer in a real browser: controls change the views, bad input gives a message, the app lives on.

The Dash server runs in a thread of this process on a free loopback port; headless
Debian Chromium is driven by Playwright. mnist-mlp keeps every compile under a second.
"""
import os
import socket
import threading

import pytest

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's /usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")

WAIT_MS = 60_000          # one compile in a cold worker process is a few seconds; bounded anyway
LAUNCH = dict(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                               "--disable-component-update", "--disable-sync"])


@pytest.fixture(scope="module")
def server():
    from werkzeug.serving import make_server

    from viz.explorer import make_app
    app = make_app(default_model="mnist-mlp", poll_ms=250)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = make_server("127.0.0.1", port, app.server, threaded=True)
    th = threading.Thread(target=srv.serve_forever, name="explorer-test-server", daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{port}/", app
    finally:
        srv.shutdown()
        th.join(timeout=10)
        app.jobs.shutdown()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(**LAUNCH)
        try:
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(WAIT_MS)
            pg.goto(server[0])
            yield pg
        finally:
            browser.close()


def _figure(page, gid):
    """Data and title of the Plotly graph in ``#gid`` as the browser holds them."""
    return page.evaluate(
        """gid => { const gd = document.querySelector('#' + gid + ' .js-plotly-plot');
                    if (!gd || !gd.data) return null;
                    const title = gd.layout && gd.layout.title ? (gd.layout.title.text || '') : '';
                    return {title: title, n: gd.data.length,
                            data: JSON.stringify(gd.data.map(t => [t.name, t.x, t.y, t.base, t.z]))}; }""", gid)


def _set(page, cid, value):
    page.fill(f"#{cid}", str(value))
    page.press(f"#{cid}", "Enter")


def _summary(page):
    return page.inner_text("#status-summary")


def test_controls_change_the_views_and_bad_input_is_reported(page, server):
    url, app = server
    page.wait_for_selector("#fit-badge")
    assert page.inner_text("#fit-badge") == "FITS"
    assert "mnist-mlp" in _summary(page) and "batch 1 " in _summary(page)
    page.wait_for_function("() => { const gd = document.querySelector('#fig-trace .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length > 0; }")
    trace0, mem0 = _figure(page, "fig-trace"), _figure(page, "fig-memory")
    thr0 = page.inner_text("#kpi-throughput")
    assert trace0["n"] >= 3 and mem0["n"] >= 1

    # the trade-off mini-sweep fills in (7 points around the current setting)
    page.wait_for_function("() => { const gd = document.querySelector('#fig-tradeoff .js-plotly-plot');"
                           " return gd && gd.data && gd.data.length >= 2 && gd.data[0].x.length >= 5; }")

    # a bigger batch: new throughput, new trace
    _set(page, "batch", 16)
    page.wait_for_function("() => document.querySelector('#status-summary') &&"
                           " document.querySelector('#status-summary').innerText.includes('batch 16 ')")
    page.wait_for_function("t => { const gd = document.querySelector('#fig-trace .js-plotly-plot');"
                           " return gd && gd.layout.title.text !== t; }", arg=trace0["title"])
    assert _figure(page, "fig-trace")["data"] != trace0["data"]
    assert page.inner_text("#kpi-throughput") != thr0

    # less SRAM per tile: out of memory, shown with the worst tiles
    _set(page, "sram", 2)
    page.wait_for_function("() => { const b = document.querySelector('#fit-badge');"
                           " return b && b.innerText === 'OUT OF MEMORY'; }")
    assert _figure(page, "fig-memory")["data"] != mem0["data"]
    assert "Out of memory on tile" in page.inner_text("#status")

    # an impossible chip: a message in the page, not a dead app
    _set(page, "tiles", 0)
    page.wait_for_selector("#error-message")
    assert "tiles" in page.inner_text("#error-message")

    # a broken ONNX upload: a message too
    page.set_input_files("#upload input[type=file]", files=[
        {"name": "broken.onnx", "mimeType": "application/octet-stream", "buffer": b"this is not a protobuf"}])
    page.wait_for_selector("#upload-msg .msg-error")
    assert "broken.onnx" in page.inner_text("#upload-msg")

    # the app is alive: a valid setting compiles again
    _set(page, "sram", 624)
    _set(page, "tiles", 736)
    page.wait_for_function("() => { const s = document.querySelector('#status-summary');"
                           " return s && s.innerText.includes('736 tiles'); }")
    assert page.inner_text("#fit-badge") == "FITS"

    # going back to a setting seen before is served from the cache
    _set(page, "tiles", 1472)
    page.wait_for_function("() => { const s = document.querySelector('#status-summary');"
                           " return s && s.innerText.includes('1,472 tiles'); }")
    assert "from the cache" in page.inner_text("#status")
    assert "batch 16 " in _summary(page)


def _wait_title(page, gid, words):
    page.wait_for_function("([gid, w]) => { const gd = document.querySelector('#' + gid + ' .js-plotly-plot');"
                           " return gd && gd.layout && gd.layout.title && gd.layout.title.text.includes(w); }",
                           arg=[gid, words])


def test_chip_mode_control_switches_the_views(page, server):
    """chips=2: spread (one graph), then each multichip mode; the views follow; an impossible one says why."""
    page.wait_for_selector("#fit-badge")
    _set(page, "batch", 8)
    # one chip: the control is there but has nothing to choose
    _set(page, "ipus", 1)
    page.wait_for_function("() => document.querySelector('#chip-mode input[value=pipeline]').disabled")
    _set(page, "ipus", 2)
    page.wait_for_function("() => !document.querySelector('#chip-mode input[value=pipeline]').disabled")
    page.wait_for_function("() => { const s = document.querySelector('#status-summary');"
                           " return s && s.innerText.includes('× 2') && s.innerText.includes('batch 8 '); }")
    _wait_title(page, "fig-trace", "Execution trace")
    spread_trace, spread_mem = _figure(page, "fig-trace"), _figure(page, "fig-memory")

    seen = {}
    for mode, words in (("pipeline", "pipeline bubble"), ("shard", "fit per chip"),
                        ("replicate", "replicas of a stage")):
        page.click(f"#chip-mode input[value='{mode}']")
        page.wait_for_function("m => { const s = document.querySelector('#status-summary');"
                               " return s && s.innerText.includes(m + ':'); }", arg=mode)
        _wait_title(page, "fig-trace", f"per chip ({mode})")
        _wait_title(page, "fig-memory", "Tile memory per stage")
        assert words in page.inner_text("#status").lower()
        assert "vertices" in page.inner_text("#kpi-graph") and "edges" in page.inner_text("#stage-table")
        seen[mode] = (_figure(page, "fig-trace"), _figure(page, "fig-memory"), _figure(page, "fig-liveness"))
        assert "Liveness per stage" in seen[mode][2]["title"]
    assert seen["pipeline"][0]["data"] != spread_trace["data"] and seen["pipeline"][1]["data"] != spread_mem["data"]
    assert seen["pipeline"][0]["data"] != seen["shard"][0]["data"]
    assert seen["replicate"][1]["n"] == 1 and seen["shard"][1]["n"] == 2      # one tile grid per stage

    # replicas that do not divide the chips: a message in the page, then a good setting again
    page.click("#chip-mode input[value='pipeline+replicate']")
    _set(page, "replicas", 3)
    page.wait_for_function("() => { const e = document.querySelector('#status #error-message');"
                           " return e && e.innerText.includes('replicas'); }")
    _set(page, "ipus", 4)
    page.fill("#replicas", "")
    page.press("#replicas", "Enter")
    page.wait_for_function("() => { const s = document.querySelector('#status-summary');"
                           " return s && s.innerText.includes('pipeline+replicate:'); }")
    assert page.inner_text("#fit-badge") == "FITS"

    # back to spread: the one-graph views return
    page.click("#chip-mode input[value='spread']")
    _wait_title(page, "fig-trace", "Execution trace<br>")
    assert "Tile memory per stage" not in _figure(page, "fig-memory")["title"]
