"""The search page in headless Chromium: type a query, get a grid of product images with titles, scores and
Modal Adaptation weights; every result image really decoded (naturalWidth > 0); a screenshot PNG written.

Needs Debian's ``chromium`` and ``chromium-driver`` (installed by ``make test``); skips with the reason when the
binaries are absent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest

from pipelines import embed_index
from pipelines.serve import register_zero_shot
from vitrine.config import DataConfig, IndexConfig, IndexJob, TrackingConfig

pytestmark = pytest.mark.ray
PORT = 8132
URL = f"http://127.0.0.1:{PORT}"
CHROMIUM = os.environ.get("VITRINE_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("VITRINE_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium through chromedriver, with a fresh profile."""
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"no Chromium at {CHROMIUM} / chromedriver at {CHROMEDRIVER}: "
                    "apt-get install -y chromium chromium-driver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(120)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory, sample_catalog):
    """The zero-shot model over 48 real sample products (with images), served on PORT."""
    import ray
    from ray import serve

    from deployments.search_app import SearchAppArgs, build_app

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=4, include_dashboard=False, configure_logging=False, log_to_driver=False)
    work = tmp_path_factory.mktemp("browser")
    catalog = work / "catalog.parquet"
    table = pq.read_table(sample_catalog).slice(0, 48)
    pq.write_table(table, catalog)
    tracking = TrackingConfig(experiment="browser", model_name="browser-model")
    version = register_zero_shot(work, tracking, alias="champion")
    embed_index.run_in_process(IndexJob(workdir=str(work), model_uri=f"models:/browser-model/{version}",
                                        data=DataConfig(catalog=str(catalog)), tracking=tracking,
                                        index=IndexConfig(factory="Flat")))
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    serve.run(build_app(SearchAppArgs(model_uri="models:/browser-model@champion", workdir=str(work),
                                      tracking_uri=mlflow.get_tracking_uri(), poll_interval_s=0)),
              name="vitrine-browser", route_prefix="/")
    yield {"table": table, "version": version, "work": work}
    serve.shutdown()
    ray.shutdown()
    mlflow.set_tracking_uri(None)


def test_search_page_shows_result_images(site, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{URL}/")
    box = WebDriverWait(browser, 60).until(ec.presence_of_element_located((By.ID, "q")))
    WebDriverWait(browser, 60).until(lambda d: "browser-model" in d.find_element(By.ID, "model").text)
    title = site["table"].column("title")[3].as_py()
    box.clear()
    box.send_keys(title, Keys.ENTER)
    WebDriverWait(browser, 120).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) >= 10)
    loaded = """return Array.from(document.querySelectorAll('.result img'))
                .every(img => img.complete && img.naturalWidth > 0);"""
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(loaded))
    cards = browser.find_elements(By.CSS_SELECTOR, ".result")
    widths = browser.execute_script("return Array.from(document.querySelectorAll('.result img'))"
                                    ".map(img => img.naturalWidth);")
    assert len(widths) == len(cards) >= 10 and min(widths) > 0  # every sample product has an image
    ids = [c.get_attribute("data-product-id") for c in cards]
    assert site["table"].column("product_id")[3].as_py() in ids
    first = cards[0].text
    assert "score" in first and "title" in first and "image" in first  # scores and modal weights shown
    status = browser.find_element(By.ID, "status").text
    assert f"v{site['version']}" in status and "results" in status
    shot = tmp_path / "search_page.png"
    assert browser.save_screenshot(str(shot))
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    keep = os.environ.get("VITRINE_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / shot.name)


def test_page_reports_a_bad_query(site, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{URL}/?q=%07bell&k=5")
    WebDriverWait(browser, 60).until(lambda d: "search failed" in d.find_element(By.ID, "status").text)
    assert "control" in browser.find_element(By.ID, "status").text
