"""The review app in a real browser: headless Chromium (the distribution's package) driven by Selenium reviews two
cases, one with the keyboard and one with the mouse (a corrected box drawn on the image), the server is killed
and started again, and every judgement is in the database and in the export.

Needs `chromium` and `chromedriver` (Debian: `apt-get install -y chromium chromium-driver`; `CI=true bash
scripts/setup.sh test` installs them) and the `review` + `test` extras. Outside CI the test skips when they are
missing; in CI it fails. Set HF_MEDDIFF_REVIEW_SCREENSHOT=docs/review_app.png to save the screenshot of the README.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

INSTALL = (
    "install Chromium and its driver (Debian/Ubuntu: `apt-get update && apt-get install -y chromium "
    "chromium-driver`; or `CI=true bash scripts/setup.sh test`) and the extras (`pip install -e .[test]`)"
)


def _missing(reason: str):
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason}: the CI set-up should have installed it; {INSTALL}.")
    pytest.skip(f"{reason}; to run this test, {INSTALL}.")


def _browser_paths() -> tuple[str, str]:
    browser = next(
        (p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None
    )
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        _missing("no headless Chromium / chromedriver on PATH")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(args: list[str], port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "NO_PROXY": "127.0.0.1"}
    with open(log, "ab") as handle:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "hf_meddiff.cli", "review", *args, "--port", str(port)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(
                f"the review server exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return proc
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the review server did not answer within 60 s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def review_inputs(tmp_path_factory):
    """A saved MedPhantom dataset and the predictions.jsonl of an evaluation of it (task reasoning): grounded
    answers whose boxes are shifted from the reference ones and whose answer is wrong on every second case."""
    from hf_meddiff.evaluation import make_medphantom, save_canonical
    from hf_meddiff.formatting import BOX_PATTERN, format_reasoning

    root = tmp_path_factory.mktemp("review")
    ds = make_medphantom(60, seed=0)
    save_canonical(ds, root / "data")
    test = ds.filter(lambda s: s == "test", input_columns="split").select_columns(
        ["id", "answer", "rationale", "boxes"]
    )
    with open(root / "predictions.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(test):
            rationale = BOX_PATTERN.sub(
                lambda m: "<box>[{},{},{},{}]</box>".format(*(min(int(g) + 40, 999) for g in m.groups())),
                row["rationale"],
            )
            answer = row["answer"] if i % 2 == 0 else ("A" if row["answer"] != "A" else "B")
            entry = {"task": "reasoning", "id": row["id"], "prediction": format_reasoning(answer, rationale)}
            f.write(json.dumps({**entry, "answer": row["answer"], "score": float(i % 2 == 0)}) + "\n")
    first_two = [r for r in test][:2]
    assert all(r["boxes"] for r in first_two), "the fixture needs boxes in the first two test cases"
    return root, [r["id"] for r in test]


@pytest.mark.slow
def test_two_cases_reviewed_in_chromium_survive_a_server_kill_and_reach_the_export(review_inputs, tmp_path):
    browser, driver_path = _browser_paths()
    try:
        import gradio  # noqa: F401
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as err:
        _missing(f"{err.name} is not installed")

    from hf_meddiff.review import ReviewStore, load_review_dataset
    from hf_meddiff.review.command import main as review_main

    root, ids = review_inputs
    db = tmp_path / "reviews.sqlite"
    port = _free_port()
    args = ["--predictions", str(root / "predictions.jsonl"), "--data", str(root / "data"), "--split", "test"]
    args += ["--max-samples", "3", "--reviewer", "ana", "--db", str(db)]
    log = tmp_path / "server.log"
    server = _start_server(args, port, log)

    options = Options()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    chrome = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        wait = WebDriverWait(chrome, 20)

        def progress_says(text: str):
            wait.until(
                lambda d: text in d.find_element(By.ID, "progress").text, f"progress never said {text!r}"
            )

        def checked(element_id: str) -> list[str]:
            return [
                i.get_attribute("value")
                for i in chrome.find_elements(By.CSS_SELECTOR, f"#{element_id} input[type=radio]")
                if i.is_selected()
            ]

        # upload routes are closed
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/gradio_api/upload", data=b"x", method="POST"
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 403

        chrome.get(f"http://127.0.0.1:{port}/")
        progress_says("Case 1 of 3")
        body = chrome.find_element(By.TAG_NAME, "body")

        # case 1, keyboard only: correct, reasoning 4, every box correct, Enter
        body.send_keys("c")
        body.send_keys("4")
        body.send_keys("g")
        wait.until(lambda d: checked("answer-verdict") == ["correct"] and checked("reasoning-score") == ["4"])
        wait.until(lambda d: checked("box-verdict-1") == ["correct"])
        body.send_keys(Keys.ENTER)
        progress_says("Case 2 of 3")
        wait.until(lambda d: "Saved judgement" in d.find_element(By.ID, "status").text)

        # case 2, mouse: incorrect, reasoning 2, box 1 in the wrong place, a corrected box drawn, a comment
        chrome.find_element(By.CSS_SELECTOR, "#answer-verdict input[value=incorrect]").click()
        chrome.find_element(By.CSS_SELECTOR, "#reasoning-score input[value='2']").click()
        chrome.find_element(By.CSS_SELECTOR, "#box-verdict-1 input[value='wrong place']").click()
        chrome.find_element(By.CSS_SELECTOR, "#show-reference input").click()
        wait.until(lambda d: d.find_element(By.ID, "reference").is_displayed())
        image = chrome.find_element(By.CSS_SELECTOR, "#case-image img")
        width, height = image.size["width"], image.size["height"]
        ActionChains(chrome).move_to_element_with_offset(image, -width // 5, -height // 5).click().perform()
        wait.until(lambda d: "First corner" in d.find_element(By.ID, "corrected-boxes").text)
        ActionChains(chrome).move_to_element_with_offset(image, width // 10, height // 10).click().perform()
        wait.until(lambda d: "fix 1:" in d.find_element(By.ID, "corrected-boxes").text)
        chrome.find_element(By.CSS_SELECTOR, "#comment textarea").send_keys("box sits too low")
        time.sleep(0.5)  # the comment reaches the app on input
        screenshot = os.environ.get("HF_MEDDIFF_REVIEW_SCREENSHOT")
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            chrome.set_window_size(1400, 1200)
            chrome.execute_script("window.scrollTo(0, 0)")
            time.sleep(0.5)
            chrome.save_screenshot(screenshot)
        chrome.find_element(By.ID, "save-next").click()
        progress_says("Case 3 of 3")

        # a crash: the server is killed, then started again on the same database
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=10)
        server = _start_server(args, port, log)
        chrome.get(f"http://127.0.0.1:{port}/")
        progress_says("reviewed by ana: 2 of 3")
        progress_says("Case 3 of 3")
    finally:
        chrome.quit()
        server.kill()
        server.wait(timeout=10)

    reviews = {r["case_id"]: r for r in ReviewStore(db).latest_reviews()}
    assert set(reviews) == set(ids[:2])
    first, second = reviews[ids[0]], reviews[ids[1]]
    assert (first["reviewer"], first["answer_verdict"], first["reasoning_score"]) == ("ana", "correct", 4)
    assert first["box_verdicts"] and all(v["verdict"] == "correct" for v in first["box_verdicts"])
    assert (second["answer_verdict"], second["reasoning_score"], second["comment"]) == (
        "incorrect",
        2,
        "box sits too low",
    )
    assert second["box_verdicts"][0]["verdict"] == "wrong place"
    (drawn,) = second["corrected_boxes"]
    x0, y0, x1, y1 = drawn["bbox"]
    assert drawn["for_box"] == 1 and x0 < 500 < x1 and y0 < 500 < y1, drawn  # around the image centre
    assert 150 < x1 - x0 < 450 and 150 < y1 - y0 < 450, drawn

    out = tmp_path / "export"
    assert review_main(["export", "--db", str(db), "--output-dir", str(out)]) == 0
    exported = load_review_dataset(out)
    assert sorted(exported["id"]) == sorted(ids[:2])
    row = exported.filter(lambda i: i == ids[1], input_columns="id")[0]
    assert (
        row["corrected_boxes"][0]["bbox"] == drawn["bbox"]
        and {"label": drawn["label"], "bbox": drawn["bbox"]} in row["boxes"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy_as_judged"] == 0.5 and summary["mean_reasoning_score"] == 3.0
    assert summary["corrected_box_iou"] is not None and summary["num_reviews"] == 2
