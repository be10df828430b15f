"""``workbench review``: a real server (the CLI in a subprocess), real Chromium (Debian's, through Selenium and
Debian's chromedriver), a real MLflow store. Blinding, tokens, traversal, bad requests, two reviewers at once by
keyboard, a reload, a killed server, the summary."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest

from tests.helpers.review import BASE_LABEL, MODEL_LABEL, Server, make_eval_folder

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"


def _request(url: str, data=None, method: str | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"} if data is not None else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def _vote(link: str, item: str, answer: str = "left", criteria=None) -> tuple[int, dict]:
    status, body, _ = _request(link + "api/vote", json.dumps(
        {"item": item, "answer": answer, "criteria": criteria if criteria is not None else {"0": "tie"}}).encode(), "POST")
    return status, json.loads(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    folder = make_eval_folder(root)
    server = Server(str(folder), "--out", str(root / "review-out"), "--reviewers", "alice,bob,carol")
    yield {"server": server, "folder": folder, "out": root / "review-out"}
    server.stop()


def test_tokens_traversal_and_bad_requests(served):
    server, link = served["server"], served["server"].links["carol"]
    root = server.root
    for path in ("/", "/api/next", "/static/review.js", "/video/x", "/results.json"):
        status, body, _ = _request(root + path)
        assert status == 401 and "token" in json.loads(body)["error"]
    for path in ("/r/wrongtoken/", "/r/wrongtoken/api/next", "/r/wrongtoken/static/review.js", "/r/x/video/abc"):
        status, body, _ = _request(root + path)
        assert status == 403 and "token" in json.loads(body)["error"]
    for path in ("video/../../results.json", "video/..%2F..%2Fresults.json", "video/%2e%2e%2fvideos%2f000-seed0.mp4",
                 "static/../session.py", "static/..%2Fapp.py", "static/review.html", "static/%2Fetc%2Fpasswd",
                 "video/000-seed0.mp4", "videos/000-seed0.mp4", "review.json", "votes.sqlite"):
        status, body, _ = _request(link + path)
        assert status == 404, path
        assert "error" in json.loads(body)
    item = json.loads(_request(link + "api/next")[1])["item"]
    for data, code in ((b"not json", 400), (b"[1, 2]", 400), (b'{"item": "nope", "answer": "left"}', 404),
                       (json.dumps({"item": item, "answer": "better"}).encode(), 400),
                       (json.dumps({"item": item, "answer": "left"}).encode(), 400),  # the criterion unanswered
                       (json.dumps({"item": item, "answer": "left", "criteria": {"0": "up"}}).encode(), 400)):
        status, body, headers = _request(link + "api/vote", data, "POST")
        assert status == code and "error" in json.loads(body) and "Traceback" not in body.decode(), data
    assert _vote(link, item)[0] == 200
    status, body = _vote(link, item)
    assert status == 409 and "already" in body["error"]
    assert _request(link + "api/vote")[0] in (404, 405)  # GET on the vote endpoint


IDENTITY = [BASE_LABEL, MODEL_LABEL, "miniature", "finetune", "fine-tuned", "fine_tuned", "base", "secret",
            "videos_base", "eval-secret-folder", "seed0", "seed1", "000-", ".mp4", "last.ckpt", "review-out",
            "results.json", "checkpoint"]


def _crawl(link: str) -> dict[str, bytes]:
    """Every URL a reviewer's page references, and what the API answers (next item, a vote's answer)."""
    seen: dict[str, bytes] = {}
    todo = [link, link + "api/next"]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        if url.endswith("/api/vote"):  # the page's other API call: a vote, and the answer with the next item
            item = json.loads(_request(link + "api/next")[1])["item"]
            status, body, _ = _request(url, json.dumps({"item": item, "answer": "tie",
                                                        "criteria": {"0": "tie"}}).encode(), "POST")
        else:
            status, body, _ = _request(url)
        assert status == 200, url
        seen[url] = body
        text = body.decode("utf-8", "replace")
        for ref in re.findall(r'(?:src|href)="([^"#]+)"', text) + re.findall(r'"(video/[0-9a-f]+)"', text):
            todo.append(urllib.parse.urljoin(link, ref))
        for ref in re.findall(r'"((?:api|static|video)/[A-Za-z0-9._/-]+)"', text):
            todo.append(urllib.parse.urljoin(link, ref))
    return seen


def test_crawl_of_the_page_finds_no_model_identity(served):
    link = served["server"].links["carol"]
    seen = _crawl(link)
    kinds = {"html": 0, "js": 0, "css": 0, "api": 0, "video": 0}
    for url, body in seen.items():
        kinds["video" if "/video/" in url else "api" if "/api/" in url else "js" if url.endswith(".js")
              else "css" if url.endswith(".css") else "html"] += 1
        lower = body.lower()
        for word in IDENTITY:
            assert word.lower().encode() not in lower, (url, word)
    assert kinds["html"] == 1 and kinds["js"] == 1 and kinds["css"] == 1 and kinds["api"] == 2 and kinds["video"] >= 2
    # the URLs themselves are opaque too
    assert not any(w.lower() in u.lower() for u in seen for w in IDENTITY)
    # two reviewers see the same pair under different ids; the same reviewer sees stable ones
    alice = json.loads(_request(served["server"].links["alice"] + "api/next")[1])
    carol = json.loads(_request(link + "api/next")[1])
    assert alice["item"] != carol["item"] and alice["left"] != carol["left"]


def _chrome():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,760",
                "--autoplay-policy=no-user-gesture-required", "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture(scope="module")
def chromium():
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail("Chromium and chromedriver are needed in CI (.ci/run installs them: apt-get install chromium "
                        "chromium-driver)")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    return CHROMIUM


@pytest.mark.browser
def test_two_reviewers_vote_by_keyboard_at_once_one_reloads(served, chromium, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    keys = {"left": Keys.ARROW_LEFT, "right": Keys.ARROW_RIGHT, "tie": Keys.ARROW_DOWN}
    plans = {"alice": ["left", "right", "tie", "right", "right", "left"],
             "bob": ["right", "right", "left", "tie", "right", "right"]}
    cast: dict[str, list[str]] = {"alice": [], "bob": []}
    errors = []

    def session(name: str) -> None:
        driver = _chrome()
        try:
            wait = WebDriverWait(driver, 20, poll_frequency=0.05)
            driver.get(served["server"].links[name])

            def item():
                return driver.execute_script("return document.body.dataset.item || null")

            wait.until(lambda d: item())
            for k, answer in enumerate(plans[name]):
                shown = item()
                n = driver.execute_script("return document.body.dataset.n")
                assert driver.find_element("id", "progress").text == f"{k + 1} of 6"
                if name == "alice" and k == 0:
                    wait.until(lambda d: d.execute_script(
                        "return document.getElementById('left').readyState >= 2 && "
                        "document.getElementById('right').readyState >= 2"))
                    driver.save_screenshot(str(tmp_path / "review-page.png"))
                if name == "bob" and k == 3:  # reload midway: the same item comes back
                    driver.refresh()
                    wait.until(lambda d: item())
                    assert item() == shown and driver.find_element("id", "progress").text == "4 of 6"
                # no click: the keys go to the page as soon as it is loaded
                ActionChains(driver).send_keys(keys[answer]).perform()  # overall
                wait.until(lambda d: "follows the prompt" in d.find_element("id", "question").text)
                ActionChains(driver).send_keys(Keys.ARROW_DOWN).perform()  # the criterion: tie
                wait.until(lambda d: item() != shown)
                cast[name].append(answer)
                assert n != driver.execute_script("return document.body.dataset.n") or item() == "done"
            assert item() == "done" and driver.find_element("id", "progress").text == "6 of 6"
            assert not driver.find_element("id", "error").is_displayed()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            errors.append(f"{name}: {e!r}")
        finally:
            driver.quit()

    threads = [threading.Thread(target=session, args=(name,)) for name in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert cast == plans
    if os.environ.get("REVIEW_SCREENSHOT"):
        shutil.copyfile(tmp_path / "review-page.png", os.environ["REVIEW_SCREENSHOT"])

    out = served["out"]
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "review", "summary", str(out), "--no-mlflow"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    log = [json.loads(line) for line in (out / "votes.jsonl").read_text().splitlines()]
    for name, answers in plans.items():
        assert summary["per_reviewer"][name] == 6
        mine = [v for v in log if v["reviewer"] == name]
        assert sorted(v["answer"] for v in mine) == sorted(answers)  # exactly the keys pressed
        assert all(v["criteria"] == {"follows the prompt": "tie"} for v in mine)
        assert all(v["winner"] == {"left": v["left_model"], "right": "B" if v["left_model"] == "A" else "A",
                                   "tie": "tie"}[v["answer"]] for v in mine)
    assert summary["votes"] == len(log) == 12 + summary["per_reviewer"]["carol"]
    assert summary["agreement"]["items_seen_by_several"] == 6
    assert summary["wins"]["first"] + summary["wins"]["second"] + summary["ties"] == summary["votes"]


def test_killed_server_loses_no_vote_and_summary_logs_to_mlflow(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("eval")).info.run_id
    folder = make_eval_folder(tmp_path, run_id=run_id, tracking_uri=uri, criteria=())
    out = tmp_path / "review"
    server = Server(str(folder), "--out", str(out), "--reviewers", "dana")
    link = server.links["dana"]
    acknowledged = []
    try:
        for answer in ("left", "right", "tie"):
            state = json.loads(_request(link + "api/next")[1])
            status, body = _vote(link, state["item"], answer, criteria={})
            assert status == 200
            acknowledged.append(state["item"])
        waiting = json.loads(_request(link + "api/next")[1])
    finally:
        server.kill()  # SIGKILL: no shutdown, no flush
    again = Server(str(folder), "--out", str(out), "--reviewers", "dana")
    try:
        assert again.links["dana"] == link.replace(server.root, again.root)  # the link stays valid
        assert "(3 of 6 done)" in "".join(again.output)
        state = json.loads(_request(again.links["dana"] + "api/next")[1])
        assert state["item"] == waiting["item"] and state["n"] == 4  # resumes where dana was
        status, body = _vote(again.links["dana"], acknowledged[0], "left", criteria={})
        assert status == 409
    finally:
        again.stop()
    r = subprocess.run([sys.executable, "-m", "workbench.cli", "review", "summary", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["votes"] == 3 and summary["first"]["run_id"] == run_id
    run = client.get_run(run_id)
    assert run.data.metrics["review/votes"] == 3
    assert run.data.metrics["review/win_rate"] == pytest.approx(summary["win_rate"])
    assert run.data.tags["workbench.review.summary"] == str((out / "summary.json").resolve())
    names = {a.path for a in client.list_artifacts(run_id, "review")}
    assert {"review/summary.json", "review/summary.md", "review/votes.jsonl", "review/per_prompt.json"} <= names


def test_user_mistakes_end_in_one_line(tmp_path):
    folder = make_eval_folder(tmp_path)
    one = subprocess.run([sys.executable, "-m", "workbench.cli", "review", "serve", str(tmp_path / "nope"), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=60)
    two = subprocess.run([sys.executable, "-m", "workbench.cli", "review", "summary", str(tmp_path / "empty")],
                         capture_output=True, text=True, timeout=60)
    (folder / "results.json").write_text("{")
    three = subprocess.run([sys.executable, "-m", "workbench.cli", "review", "serve", str(folder), "--out",
                            str(tmp_path / "o2")], capture_output=True, text=True, timeout=60)
    for r, words in ((one, "no such evaluation folder"), (two, "no review here"), (three, "results.json")):
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and words in r.stderr and "Traceback" not in r.stderr
