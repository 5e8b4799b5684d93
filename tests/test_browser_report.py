"""The HTML run report opens in a real browser (headless Chromium) without errors.

Needs Debian's /usr/bin/chromium (``make test`` installs it); skipped without it.
"""
import os

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is not installed")

EXPECTED = {
    "fig-memory-map": ["tiles"],
    "fig-trace": ["compute", "sync", "exchange", "host"],
    "fig-liveness": ["not-always-live", "peak"],
    "fig-layer-cycles": ["compute", "exchange", "sync"],
    "fig-layer-memory": ["weight", "input", "activation", "temporary"],
}


@pytest.fixture(scope="module")
def ran():
    from simulator.config import RunConfig
    from simulator.run import run
    return run(RunConfig(model="mnist-mlp"))


@pytest.fixture(scope="module")
def compiled(ran):
    return ran.compiled


@pytest.fixture(scope="module")
def report_path(tmp_path_factory, ran):
    from viz.report_html import write_report
    path = tmp_path_factory.mktemp("report") / "mnist-mlp.html"
    write_report(ran, str(path), model="mnist-mlp")
    return path


@pytest.fixture(scope="module")
def page(report_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 900})
        errors, requests = [], []
        pg.on("console", lambda m: errors.append(f"console: {m.text}") if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        pg.on("request", lambda r: requests.append(r.url))
        pg.goto(report_path.as_uri(), wait_until="load")
        pg.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 5",
                             timeout=30_000)
        pg.errors, pg.requests = errors, requests
        yield pg
        browser.close()


def test_no_console_or_page_errors(page):
    page.wait_for_timeout(300)
    assert page.errors == []


def test_nothing_is_fetched_from_the_network(page):
    assert [u for u in page.requests if not u.startswith(("file:", "data:", "blob:"))] == []


def test_plotly_divs_hold_the_expected_traces(page):
    got = page.evaluate("""ids => Object.fromEntries(ids.map(id => {
        const d = document.getElementById(id);
        return [id, d && d.data ? d.data.map(t => t.name) : null];
    }))""", list(EXPECTED))
    for div, names in EXPECTED.items():
        assert got[div] is not None, f"no plotly figure in #{div}"
        assert set(names) <= set(got[div]), (div, got[div])


def test_figures_are_drawn(page):
    sizes = page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => {
        const r = d.getBoundingClientRect(); return [d.id, r.width, r.height,
        d.querySelectorAll('g.trace, g.hm, image').length];
    })""")
    assert len(sizes) == 5
    for div, w, h, marks in sizes:
        assert w > 300 and h > 200 and marks > 0, (div, w, h, marks)


def test_trace_bars_and_memory_map_in_the_browser(page, compiled):
    n_compute, n_cells = page.evaluate("""() => {
        const tr = document.getElementById('fig-trace');
        const comp = tr._fullData.find(t => t.name === 'compute');
        const mm = document.getElementById('fig-memory-map')._fullData[0];
        let cells = 0;
        for (const row of mm.z) for (const v of row) if (v !== null && !Number.isNaN(v)) cells++;
        return [comp._length, cells];
    }""")
    assert n_compute == compiled.sim.supersteps      # one compute bar per superstep
    assert n_cells == compiled.memory["per_tile"]["total"].size == 1472


def test_summary_and_graph_image_section(page):
    text = page.inner_text("#summary")
    assert "mnist-mlp" in text and "samples/s" in text and "fits" in text
    assert page.query_selector("#graph-image") or page.query_selector("#graph-image-note")
