"""The status page in a real headless browser (Debian chromium + chromedriver via Selenium), and its
authentication over plain HTTP. The screenshot is taken into a temporary folder; the committed
tests/serve/artifacts/status_page.png is only replaced when ``INGEST_UPDATE_ARTIFACTS=1``."""
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.common import run_events
from tests.support.obs_helpers import DAY, Server, degrade, get, write_docs

TOKEN = "page-token-5b2d-status"
CFG = {"serve": {"tokens": {TOKEN: "alice", "other-token-9-mallory": "mallory"}}}
ARTIFACT = Path(__file__).parent / "artifacts" / "status_page.png"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") \
    or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def seeded(embedder):
    """Two sources with a week of healthy history; today finance-share's files were replaced by
    image-only PDFs and empty files, hr-share has one flagged document all along."""
    from ingest.obs import quality
    from ingest.pipeline.document import Pipeline
    from ingest.stores.sqlite import SQLiteStore

    d = Path(tempfile.mkdtemp(prefix="ingest-page-", dir="/tmp"))
    os.chmod(d, 0o755)
    store = SQLiteStore(d / "index.db")
    p = Pipeline(store, embedder)
    fin, hr = d / "finance-share", d / "hr-share"
    fin_files = write_docs(fin, 4, "fin")
    write_docs(hr, 3, "hr")
    (hr / "scan.txt").write_text("Scanned memo " + "ab\ufffdcd efgh ij" * 30)  # ~4% replacement chars
    for root in (fin, hr):
        run_events(p, root)
    now = time.time()
    for days in range(6, 0, -1):
        quality.snapshot(store, now=now - days * DAY)
    degrade(fin_files)
    run_events(p, fin)
    yield {"store": store, "dir": d, "fin": f"folder:{fin}", "hr": f"folder:{hr}"}
    store.close()
    shutil.rmtree(d, ignore_errors=True)


def test_status_page_needs_a_token_and_is_read_only(seeded):
    with Server(seeded["store"].path, {**CFG, "serve": {**CFG["serve"], "status": {"principals": ["alice"]}}}) as s:
        status, headers, body = get(s.url + "/")
        assert status == 401 and 'name=token' in body and seeded["fin"] not in body
        assert get(s.url + "/", "not-a-token")[0] == 401
        assert get(s.url + "/", "other-token-9-mallory")[0] == 403  # not in [serve.status] principals
        status, headers, body = get(s.url + "/", TOKEN)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in headers["Content-Security-Policy"]
        assert "<script" not in body and "http://" not in body and "https://" not in body  # nothing external
        assert seeded["fin"] in body and "signed in as alice" in body
        import urllib.request

        req = urllib.request.Request(s.url + "/", data=b"x=1", method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        assert e.value.code == 405


def _driver():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        msg = f"the browser test needs Debian chromium and chromium-driver ({CHROMIUM}, {CHROMEDRIVER})"
        from tests.support.ci import missing

        missing(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1500,1000", "--hide-scrollbars"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.mark.slow
def test_status_page_in_a_headless_browser_shows_the_seeded_state_and_charts(seeded):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    fin, hr = seeded["fin"], seeded["hr"]
    driver = _driver()
    try:
        with Server(seeded["store"].path, CFG) as s:
            driver.get(s.url + "/")
            box = WebDriverWait(driver, 20).until(EC.presence_of_element_located((By.ID, "token")))
            box.send_keys(TOKEN)
            driver.find_element(By.ID, "signin").click()
            WebDriverWait(driver, 30).until(EC.presence_of_element_located((By.CSS_SELECTOR, "tr.source")))
            assert "signed in as alice" in driver.find_element(By.TAG_NAME, "header").text

            alerts = driver.find_elements(By.CSS_SELECTOR, "div.alert")
            assert {a.get_attribute("data-source") for a in alerts} == {fin}  # hr-share raised nothing
            texts = [a.text for a in alerts]
            assert any(t.startswith(f"share-empty for source {fin} rose from 0% to 100% since") for t in texts), texts

            rows = {r.get_attribute("data-source"): r for r in driver.find_elements(By.CSS_SELECTOR, "tr.source")}
            assert set(rows) == {fin, hr}
            assert "4 quarantined" in rows[fin].text and "4 indexed" in rows[hr].text

            chart = rows[fin].find_element(By.CSS_SELECTOR, "svg.spark[data-measure='share-empty']")
            line = chart.find_element(By.TAG_NAME, "polyline")
            points = [tuple(map(float, p.split(","))) for p in line.get_attribute("points").split()]
            assert len(points) == 7  # six days of history and today
            assert points[-1][1] < points[0][1]  # today's value is drawn higher (SVG y grows downward)
            bbox = driver.execute_script("const b = arguments[0].getBBox(); return [b.width, b.height];", line)
            assert bbox[0] > 100 and bbox[1] > 10, bbox  # the browser laid the chart out
            assert chart.size["width"] > 100 and chart.size["height"] > 20
            flagged = rows[hr].find_element(By.CSS_SELECTOR, "svg.spark[data-measure='share-flagged']")
            assert flagged.find_element(By.CSS_SELECTOR, "title").get_attribute("textContent").endswith("25%")

            bad = driver.find_elements(By.CSS_SELECTOR, "tr.quarantined")
            assert len(bad) == 4 and sum("empty-file" in r.text for r in bad) == 3
            assert all("finance-share" in r.text for r in bad)
            lanes = driver.find_element(By.ID, "lanes").find_element(By.XPATH, "following-sibling::table").text
            assert "bulk" in lanes and "interactive" in lanes
            # nothing was fetched besides the page itself (no external assets)
            assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0

            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(1500, max(800, height + 200))  # the window includes some browser chrome
            shot = Path(tempfile.mkdtemp(prefix="status-page-")) / ARTIFACT.name
            assert driver.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
        if os.environ.get("INGEST_UPDATE_ARTIFACTS") == "1":
            shutil.copyfile(shot, ARTIFACT)
        shutil.rmtree(shot.parent)
    finally:
        driver.quit()
