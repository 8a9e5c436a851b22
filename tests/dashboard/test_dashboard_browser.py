"""The dashboard and the API docs in a real headless Chromium against a running `sagan up`."""

from __future__ import annotations

import time

from browserkit import FINISHED, open_page
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from store import jobs
from store.db import session_scope
from store.metrics import write_metrics, write_protocol
from store.settings import Settings

# Per series of the uPlot instance that draws a chart: [label, points that are not null].
SERIES = """
const u = window.sagan && window.sagan.charts[arguments[0]];
if (!u) return null;
return u.series.slice(1).map((s, i) => [s.label, u.data[i + 1].filter((v) => v != null).length]);
"""
# Every <img> on the page: its source, loaded with pixels or not (a broken one has width 0).
IMAGES = """
return [...document.images].map((i) => ({
  src: i.getAttribute("src") || "", ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth,
  path: i.dataset.path || "", box: i.parentElement.id || i.parentElement.className}));
"""
IMAGE = """
const i = document.querySelector(arguments[0]);
return i && {ok: i.complete && i.naturalWidth > 0, width: i.naturalWidth, path: i.dataset.path};
"""
SET_RANGE = """
const s = document.getElementById(arguments[0]);
s.value = arguments[1];
s.dispatchEvent(new Event("input"));
"""
TEXTS = "return [...document.querySelectorAll(arguments[0])].map((e) => e.textContent)"
COUNT = "return document.querySelectorAll(arguments[0]).length"
RESOURCES = "return performance.getEntriesByType('resource').map((e) => e.name)"
FETCH_TEXT = """
const auth = {Authorization: "Bearer " + localStorage.getItem("sagan-token")};
return fetch(arguments[0], {headers: auth}).then((r) => r.text());
"""


def wait(driver, predicate, timeout: float = 60, what: str = ""):  # noqa: ANN001, ANN201
    return WebDriverWait(driver, timeout, poll_frequency=0.25).until(predicate, message=what)


def js(driver, script: str, *args):  # noqa: ANN001, ANN201
    return driver.execute_script(script, *args)


def chart(driver, key: str) -> dict[str, int]:  # noqa: ANN001
    return dict(js(driver, SERIES, key) or [])


def image(driver, selector: str) -> dict:  # noqa: ANN001
    return js(driver, IMAGE, selector) or {}


def text(driver, selector: str) -> str | None:  # noqa: ANN001
    found = js(driver, TEXTS, selector)
    return found[0] if found else None


def shown_step(driver) -> int | None:  # noqa: ANN001
    step = js(driver, "return document.getElementById('job-step')?.dataset.step")
    return None if step is None else int(step)


def left_the_server(base: str, urls: list[str]) -> list[str]:
    """The URLs not on the test server (blob: and data: URLs stay in the page)."""
    return [u for u in urls if not u.startswith((base + "/", "blob:", "data:"))]


def test_api_docs_render_from_the_service_alone(dashboard_service, browser, shoot):
    base = dashboard_service.base
    browser.get(f"{base}/docs")
    wait(browser, lambda d: js(d, COUNT, ".swagger-ui .opblock") >= 10, 60, "Swagger UI")
    assert js(browser, "return typeof SwaggerUIBundle") == "function"  # the vendored script ran
    paths = js(browser, TEXTS, ".opblock-summary-path")
    assert "/jobs/{job_id}/metrics" in [p.replace("\u200b", "") for p in paths], paths
    resources = js(browser, RESOURCES)
    assert f"{base}/static/vendor/swagger-ui-bundle.js" in resources, resources
    assert f"{base}/openapi.json" in resources, resources
    assert not left_the_server(base, resources), resources
    shoot("api-docs-swagger")

    browser.get(f"{base}/redoc")
    operations = "[data-section-id*='operation/']"
    wait(browser, lambda d: js(d, COUNT, operations) >= 10, 90, "ReDoc")
    resources = js(browser, RESOURCES)
    assert f"{base}/static/vendor/redoc.standalone.js" in resources, resources
    assert not left_the_server(base, resources), resources
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors  # none on either page (a CSP violation would be one)
    shoot("api-docs-redoc")


def test_a_finished_job_page_draws_curves_samples_and_attention(dashboard_service, browser, shoot):
    svc, job = dashboard_service, dashboard_service.finished
    svc.wait_finished()
    series = svc.client.get(f"/jobs/{job}/metrics").json()["series"]
    logged = FINISHED["steps"] // FINISHED["log_every"]
    assert len(series["d_loss"]) == len(series["g_loss"]) == logged
    open_page(browser, svc.base, f"job={job}")

    # The jobs list shows the finished job; its page says where it ended.
    row = f"tr[data-id='{job}'] .state"
    wait(browser, lambda d: text(d, row) == "succeeded", 90, "the job's row")
    wait(browser, lambda d: shown_step(d) == 40, 90, "the job's step")
    assert "step 40/40" in browser.find_element(By.ID, "job-step").text

    # Losses on one plot with every logged point (uPlot's own data); other metrics on theirs.
    want = {"d_loss": logged, "g_loss": logged}
    wait(browser, lambda d: chart(d, "losses") == want, 90, f"losses: {chart(browser, 'losses')}")
    charts = js(browser, "return Object.keys(window.sagan.charts)")
    assert {"losses", "d_outputs", "gammas", "speed"} <= set(charts), charts
    assert js(browser, COUNT, "[data-chart=losses] canvas") == 1
    ticks = js(browser, "return window.sagan.charts.losses.axes.map((a) => a._values.length)")
    assert len(ticks) == 2 and min(ticks) >= 2, ticks  # an x and a y axis with tick labels

    # Hover: the legend shows the values under the cursor (step, d_loss, g_loss).
    over = browser.find_element(By.CSS_SELECTOR, "[data-chart=losses] .u-over")
    ActionChains(browser).move_to_element_with_offset(over, 40, 10).perform()
    legend = "[data-chart=losses] .u-legend .u-value"
    values = wait(browser, lambda d: [v for v in js(d, TEXTS, legend) if v not in ("", "--")], 90)
    assert len(values) == 3, values

    # Smoothing: the same steps, smoothed values.
    raw = js(browser, "return window.sagan.charts.losses.data[1].slice()")
    js(browser, SET_RANGE, "smoothing", "0.8")
    smoothed = wait(
        browser,
        lambda d: (v := js(d, "return window.sagan.charts.losses.data[1]")) != raw and v,
        10,
        "smoothed curves",
    )
    assert len(smoothed) == len(raw) and abs(smoothed[0] - raw[0]) < 1e-9
    assert "smoothed 0.8" in text(browser, "[data-chart=losses] .u-title")
    js(browser, SET_RANGE, "smoothing", "0")

    # The job's grids over training (one every 10 steps), newest first shown, any one chosen.
    grids = svc.client.get(f"/jobs/{job}/samples").json()["items"]
    assert [g["step"] for g in grids] == [10, 20, 30, 40]
    wait(browser, lambda d: image(d, "#grid-box img").get("ok"), 90, "the grid")
    assert image(browser, "#grid-box img")["path"].endswith("/samples/40")
    assert browser.find_element(By.ID, "grid-step").get_attribute("max") == "3"
    js(browser, SET_RANGE, "grid-step", "0")
    first = lambda d: image(d, "#grid-box img").get("path", "").endswith("/samples/10")  # noqa: E731
    wait(browser, first, 90, "the first grid")

    # 16 samples of a class (seeds 0..15), each its own image.
    def tiles(d):  # noqa: ANN001, ANN202
        found = [i for i in js(d, IMAGES) if i["box"].startswith("tile")]
        return len(found) == 16 and all(i["ok"] for i in found) and found

    shown = wait(browser, tiles, 60, "16 samples")
    assert all(t["width"] == 32 for t in shown), shown
    assert [t["path"].rsplit("seed=", 1)[1] for t in shown] == [str(i) for i in range(16)]
    # Before a click the attention slot is a placeholder, never an image.
    assert not browser.find_elements(By.CSS_SELECTOR, "#attn-box img")
    assert browser.find_element(By.CSS_SELECTOR, "#attn-box .placeholder").is_displayed()

    # A click on any sample (the 6th: seed 5) shows where that pixel attends.
    tile = browser.find_elements(By.CSS_SELECTOR, "#tiles .tile")[5]
    ActionChains(browser).move_to_element_with_offset(tile, 10, -19).click().perform()
    wait(browser, lambda d: image(d, "#attn-box img").get("ok"), 60, "the attention map")
    path = image(browser, "#attn-box img")["path"]
    assert "class=0&seed=5&x=20&y=7" in path, path  # (46, 17) of 72 px: 32 px * 46/72, 32 * 17/72
    caption = browser.find_element(By.ID, "attn-caption").text
    assert "seed 5" in caption and "pixel (20, 7)" in caption, caption
    assert browser.find_element(By.ID, "attn-scale").is_displayed()
    assert "chosen" in tile.get_attribute("class")

    # It follows the class and the seed.
    Select(browser.find_element(By.ID, "cls")).select_by_value("3")
    attn = lambda q: lambda d: q in image(d, "#attn-box img").get("path", "")  # noqa: E731
    wait(browser, attn("class=3&seed=5&x=20&y=7"), 60, "attention of class 3")
    seed = browser.find_element(By.ID, "seed")
    seed.clear()
    seed.send_keys("100")
    js(browser, "document.getElementById('seed').dispatchEvent(new Event('change'))")
    wait(browser, attn("class=3&seed=105&x=20&y=7"), 60, "attention of seed 105")
    wait(browser, lambda d: (t := tiles(d)) and t[0]["path"].endswith("seed=100"), 60, "seed 100")

    # Config, events, the CSV and checkpoint links.
    config = browser.find_element(By.ID, "config").text
    assert "batch_size 8" in config and "sample_every 10" in config, config
    assert "succeeded" in browser.find_element(By.ID, "events").text
    csv_link = browser.find_element(By.ID, "csv-link").get_attribute("href")
    assert csv_link == f"{svc.base}/jobs/{job}/metrics?format=csv"
    assert js(browser, FETCH_TEXT, csv_link).startswith("name,step,value\n")
    checkpoint = browser.find_element(By.CSS_SELECTOR, ".checkpoint-link").get_attribute("href")
    model = svc.client.get(f"/jobs/{job}").json()["latest_model_id"]
    assert checkpoint == f"{svc.base}/models/{model}/checkpoint"

    # No broken image anywhere: every <img> has a source and pixels.
    images = js(browser, IMAGES)
    assert len(images) == 18 and all(i["ok"] and i["src"].startswith("blob:") for i in images)
    shoot("finished-job")

    # Polling a finished job costs a 304: the metrics ETag goes back as If-None-Match.
    wait(browser, lambda d: js(d, "return window.sagan.stats.metrics304") >= 1, 90, "a 304")


def test_two_jobs_overlaid(dashboard_service, browser, shoot):
    svc = dashboard_service
    svc.wait_finished()
    open_page(browser, svc.base, f"job={svc.finished}")
    wait(browser, lambda d: chart(d, "losses"), 90, "the losses chart")
    checkbox = f"tr[data-id='{svc.other}'] input.compare"
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, checkbox), 90)[0].click()
    a, b = svc.finished[:8], svc.other[:8]
    want = {f"{a} d_loss": 20, f"{a} g_loss": 20, f"{b} d_loss": 10, f"{b} g_loss": 10}
    wait(browser, lambda d: chart(d, "losses") == want, 90, f"overlay: {chart(browser, 'losses')}")
    assert chart(browser, "speed") == {f"{a} images_per_s": 20, f"{b} images_per_s": 10}
    assert f"compare={svc.other}" in browser.current_url
    assert b in browser.find_element(By.ID, "compare-note").text
    shoot("two-jobs-overlaid")

    # The overlay is in the page's link: opening it again shows both.
    open_page(browser, svc.base, f"job={svc.finished}&compare={svc.other}")
    wait(browser, lambda d: chart(d, "losses") == want, 90, "the overlay from the link")


def test_a_running_job_page_updates_itself(dashboard_service, browser, shoot):
    svc = dashboard_service
    svc.wait_finished()  # the worker is free: the new job starts at once
    config = {**FINISHED, "steps": 400, "seed": 2}
    job = svc.client.post("/jobs", json={"kind": "train", "config": config}).json()["id"]
    open_page(browser, svc.base, f"job={job}")

    seen: list[tuple[str, int, int, int]] = []  # (state, step, d_loss points, grids) as shown

    def advanced(d) -> bool:  # noqa: ANN001
        state, step = text(d, "#job-state"), shown_step(d)
        if state is None or step is None:
            return False
        grids = (
            js(d, COUNT, "#grid-box img")
            and int(d.find_element(By.ID, "grid-step").get_attribute("max")) + 1
        )
        seen.append((state, step, chart(d, "losses").get("d_loss", 0), grids))
        running = [s for s in seen if s[0] == "running" and s[1] > 0]
        return (
            len({s[1] for s in running}) >= 3  # the step moved twice
            and running[-1][2] > running[0][2]  # the curves grew
            and running[-1][3] >= 2  # a new grid came
        )

    wait(browser, advanced, 150, f"the page to follow the run: {seen[-3:]}")  # no click
    assert image(browser, "#grid-box img")["ok"]
    assert js(browser, "return window.sagan.stats.metrics200") >= 3
    shoot("running-job")

    # Cancel from the page: the state it shows follows to the end.
    browser.find_element(By.ID, "cancel").click()
    cancelled = lambda d: text(d, "#job-state") == "cancelled"  # noqa: E731
    wait(browser, cancelled, 120, "cancelled on the page")
    final = svc.client.get(f"/jobs/{job}").json()
    assert final["state"] == "cancelled" and seen[0][1] < final["step"] < 400
    wait(browser, lambda d: shown_step(d) == final["step"], 90, "the final step")
    assert all(i["ok"] for i in js(browser, IMAGES))


def _tiny_zip(classes: dict[str, int]) -> bytes:
    import io
    import zipfile

    from PIL import Image

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for c, (name, n) in enumerate(classes.items()):
            for i in range(n):
                png = io.BytesIO()
                Image.new("RGB", (12, 10), (60 * c, 10 * i, 200)).save(png, "PNG")
                z.writestr(f"{name}/{i}.png", png.getvalue())
    return buf.getvalue()


def test_stored_datasets_are_listed_and_offered_in_the_start_form(
    dashboard_service, browser, shoot
):
    svc = dashboard_service
    r = svc.client.post(
        "/datasets", params={"name": "blobs", "resolution": 32}, content=_tiny_zip({"a": 4, "b": 3})
    )
    assert r.status_code == 201, r.text
    dataset = r.json()
    open_page(browser, svc.base)
    row = f"#datasets tr.dataset[data-id='{dataset['id']}']"
    wait(browser, lambda d: js(d, COUNT, row) == 1, 60, "the dataset's row")
    # The embedded worker packs it; the row and the start form follow without a reload.
    option = f"#stored-datasets option[value='{dataset['id']}']"
    wait(browser, lambda d: js(d, COUNT, option) == 1, 240, "the ready dataset in the start form")
    assert text(browser, f"{row} td:nth-child(2)") == "ready"
    assert "7" in text(browser, f"{row} td:nth-child(3)")  # 7 images in 2 classes
    Select(browser.find_element(By.ID, "dataset-select")).select_by_value(dataset["id"])
    # What the service will choose for the fields left empty, and why, before the job starts.
    note = "#defaults-note"
    # The whole prefix: digits' note ("1,797 images at 32 px") holds "7 images at 32 px" too.
    ours = "will use preset tiny: CPU workers, 7 images at 32 px"
    wait(browser, lambda d: (text(d, note) or "").startswith(ours), 30, "the defaults")
    Select(browser.find_element(By.NAME, "preset")).select_by_visible_text("paper")
    wait(browser, lambda d: text(d, note) == "preset paper (yours)", 30, "an explicit preset")
    shoot("datasets")


def test_a_warning_is_a_badge_scores_show_their_protocol_and_models_their_aliases(
    dashboard_service, browser, shoot
):
    """What a worker writes (sagan_core.collapse's warning, an evaluation's score and protocol),
    put in the service's own database here: no Inception weights and no collapsing run needed."""
    svc = dashboard_service
    svc.wait_finished()
    job = svc.other
    warning = "not learning: class 3 ('3'): 20 near-identical samples (variety 0.05 of real)"
    protocol = {
        "metrics": ["fid"], "feature_extractor": "torch-fidelity inception-v3-compat",
        "weights_sha256": "6726825d0af5f729", "generated": 5000, "generator": "G_ema",
        "truncation": None, "seed": 0, "resolution": 32, "resizer": "bilinear to 299x299",
        "reference": {"dataset": "digits", "key": "digits-r32-train", "split": "train",
                      "count": 1797},
    }  # fmt: skip
    with session_scope(Settings(data_dir=svc.data_dir)) as session:
        jobs.add_event(session, job, jobs.WARNING, warning)
        write_metrics(session, job, [("fid", 20, 31.25)])
        write_protocol(session, job, 20, protocol)
    latest = svc.client.get(f"/jobs/{job}").json()["latest_model_id"]
    assert svc.client.put(f"/models/{latest}/aliases/shown-here").status_code == 200
    open_page(browser, svc.base, f"job={job}")
    badge = f"tr[data-id='{job}'] .badge.warn"
    wait(browser, lambda d: js(d, COUNT, badge) == 1, 60, "the warning badge")
    assert js(browser, f'return document.querySelector("{badge}").title') == warning
    wait(browser, lambda d: text(d, "#job-warning") == warning, 60, "the warning on the page")
    row = "#scores-table tr"
    wait(browser, lambda d: js(d, COUNT, row) == 1, 60, "the scores table")
    cells = js(browser, TEXTS, f"{row} td")
    assert cells[:2] == ["step 20", "FID 31.25"]
    assert "5,000 generated (G_ema, seed 0)" in cells[2] and "1,797 train images" in cells[2]
    assert "6726825d0af5f729" in cells[2]
    title = "const u = window.sagan.charts.fid; return u && u.root.querySelector('.u-title')"
    title += ".textContent"
    wait(browser, lambda d: "5,000 generated" in (js(d, title) or ""), 60, "the FID chart's count")
    # The model's aliases beside it in the samples explorer
    wait(browser, lambda d: "@shown-here" in "".join(js(d, TEXTS, "#model option")), 60, "alias")
    shoot("scores")


def test_a_sweep_page_sorts_its_trials_overlays_their_objective_and_scatters_parameters(
    dashboard_service, browser, shoot
):
    svc = dashboard_service
    spec = {
        "name": "lr-on-page",
        "base": {**FINISHED, "steps": 20, "checkpoint_every": 10, "sample_every": 0},
        "space": {"lr_g": {"choice": [1e-3, 1e-7]}},
        "sampler": "grid",
        "parallel": 2,
        "objective": "variety",
        "prune": {"every": 10, "min_steps": 10, "reduction": 2},
    }
    r = svc.client.post("/sweeps", json=spec)
    assert r.status_code == 201, r.text
    sweep_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while (sweep := svc.client.get(f"/sweeps/{sweep_id}").json())["state"] == "running":
        assert time.monotonic() < deadline, sweep
        time.sleep(0.5)
    assert sweep["state"] == "succeeded", sweep
    trials = svc.client.get(f"/sweeps/{sweep_id}/trials").json()["items"]

    open_page(browser, svc.base)
    # Linked from the jobs list: a trial's badge opens its sweep.
    link = f"tr[data-id='{trials[0]['job_id']}'] a.sweep-link"
    wait(browser, lambda d: js(d, COUNT, link) == 1, 60, "the trial badge")
    browser.find_element(By.CSS_SELECTOR, link).click()
    wait(browser, lambda d: text(d, "#sweep-state") == "succeeded", 60, "the sweep page")
    assert "lr-on-page" in text(browser, "#sweep-head h2")
    assert f"best: trial {sweep['best_trial']}" in text(browser, "#sweep-best")
    wait(browser, lambda d: js(d, COUNT, "#trials tbody tr") == 2, 30, "the trial rows")
    scored = sorted(
        (float(f"{t['objective']:.4g}") for t in trials if t["objective"] is not None), reverse=True
    )  # as the page shows them: four significant digits

    def objectives() -> list[float]:
        return [float(v) for v in js(browser, TEXTS, "#trials td.objective") if v]

    assert objectives() == scored  # maximize: the best first
    assert js(browser, TEXTS, "#trials tr.best td")[0].startswith(str(sweep["best_trial"]))
    header = "#trials th[data-col='objective']"
    browser.find_element(By.CSS_SELECTOR, header).click()
    wait(browser, lambda d: objectives() == sorted(scored), 10, "sorted the other way")

    wait(browser, lambda d: chart(d, "sweep-objective"), 30, "the objective chart")
    curves = chart(browser, "sweep-objective")
    assert len(curves) == 2 and all(n >= 1 for n in curves.values()), curves
    pruned = [t["number"] for t in trials if t["state"] == "pruned"]
    assert sorted(k for k in curves if "(pruned)" in k) == [f"trial {n} (pruned)" for n in pruned]
    scatter = chart(browser, "scatter-lr_g")
    assert list(scatter.values()) == [len(scored)], scatter
    shoot("sweep")
