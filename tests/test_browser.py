"""The UIs in a real browser: Debian's headless Chromium, driven by Playwright, against uvicorn
serving the embedded default (SQLite, in-process workers, WebSockets) on a free port.

Screenshots of each UI go to test-artifacts/. Without chromium or the playwright package the
tests skip with a reason; under CI=true that is a failure.
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from PIL import Image

from processing.imaging import formats
from project.serving import UVICORN_FLAGS
from tests import images
from tests.services import IN_CI
from tests.stack import announced_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
IPHONE_CONTEXT = {
    "viewport": {"width": 390, "height": 844},
    "user_agent": IPHONE,
    "is_mobile": True,
    "has_touch": True,
}
STAFF = ("staff", "a-long-test-password-1")
SERVICE_VARIABLES = ("DATABASE_URL", "BROKER_URL", "REDIS_URL", "AWS_STORAGE_BUCKET_NAME")
WAIT_MS = 20_000
LITE_PAGE_BUDGET_BYTES = 6 * 1024  # everything a first visit downloads, headers included


def require_browser() -> None:
    """Skip without Chromium or Playwright; under CI that is a failure."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if not os.access(CHROMIUM, os.X_OK):
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if not missing:
        return
    reason = "needs " + " and ".join(missing)
    if IN_CI:
        pytest.fail(f"CI=true and the browser tests can't run: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Server:
    url: str
    var_dir: Path
    has_websocket: bool

    def api(self, path: str) -> dict:
        return httpx.get(f"{self.url}{path}", timeout=10).json()

    def wait_for_job(self, job_id: str, status: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.api(f"/api/v1/jobs/{job_id}")
            if job["status"] == status:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not reach {status}: {job}")


def embedded_site(var_dir: Path) -> dict[str, str]:
    """The environment of a server of the embedded default in `var_dir`, migrated, with its static
    files and a staff user."""
    env = {name: value for name, value in os.environ.items() if name not in SERVICE_VARIABLES}
    # No retries, so that the admin test's job fails at once instead of after backoffs.
    env.update(DARKROOM_VAR_DIR=str(var_dir), JOB_MAX_RETRIES="0", LOG_LEVEL="WARNING")
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "--noinput"], ["collectstatic", "--noinput"]):
        subprocess.run([*manage, *command, "-v", "0"], env=env, cwd=ROOT, check=True, timeout=120)
    staff = ["createsuperuser", "--noinput", "--username", STAFF[0], "--email", "staff@example.com"]
    subprocess.run(
        [*manage, *staff], env={**env, "DJANGO_SUPERUSER_PASSWORD": STAFF[1]}, cwd=ROOT, check=True
    )
    return env


def start_server(env: dict[str, str], var_dir: Path, port: int = 0) -> tuple[subprocess.Popen, int]:
    """uvicorn on `port` (0: one the kernel picks), answering; the process and its port."""
    command = [sys.executable, "-m", "uvicorn", "project.asgi:application", "--host", "127.0.0.1"]
    command += ["--port", str(port), *UVICORN_FLAGS]  # as every gateway serves WebSockets
    log_path = var_dir / "server.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
    port = announced_port(log_path, process, start)
    wait_until_live(f"http://127.0.0.1:{port}", process)
    return process, port


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    var_dir = tmp_path_factory.mktemp("browser")
    process, port = start_server(embedded_site(var_dir), var_dir)
    try:
        yield Server(f"http://127.0.0.1:{port}", var_dir, websocket_answers(port))
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_until_live(url: str, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError(f"the server at {url} did not come up")


def websocket_answers(port: int) -> bool:
    """Whether WS /ws/jobs/ serves the job stream (so the pages must use it, not polling)."""
    from websockets.sync.client import connect

    try:
        with connect(f"ws://127.0.0.1:{port}/ws/jobs/", open_timeout=3) as socket:
            return json.loads(socket.recv(timeout=3)).get("type") == "jobs.state"
    except Exception:
        return False


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page_errors():
    """JavaScript errors on the pages of a test: there must be none."""
    errors = []
    yield errors
    assert errors == []


def open_page(browser, page_errors, **context_options):
    context = browser.new_context(**context_options)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    return page


def image_file(name: str, seed: int, size=(240, 160)) -> dict:
    """A PNG of noise, different for every seed and run, so that no earlier result is reused."""
    pixels = images.noise(*size, seed=seed + time.time_ns() % 1_000_000)
    return {"name": name, "mimeType": "image/png", "buffer": images.png_bytes(pixels)}


def downloaded_image(download) -> Image.Image:
    image = Image.open(io.BytesIO(Path(download.path()).read_bytes()))
    image.load()
    return image


def ui_of(page) -> str:
    return page.get_attribute("body", "data-ui")


# --- Desktop ---------------------------------------------------------------------------------


def test_desktop_batch_of_three_completes_live_and_downloads_an_image(server, browser, page_errors):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    assert ui_of(page) == "desktop"
    page.wait_for_selector("body[data-ready]")
    page.evaluate("window.notReloaded = true")

    page.set_input_files("#images", [image_file(f"photo-{n}.png", n) for n in range(3)])
    page.select_option("#service", "grayscale")
    assert not page.is_visible("#param-runs")  # a benchmark's knob, under "Advanced"
    page.click("summary:text('Advanced')")
    page.fill("#param-runs", "3")
    page.click("[data-submit]")

    page.wait_for_function("document.querySelectorAll('.jobs li[data-status=completed]').length === 3")
    assert page.evaluate("window.notReloaded") is True
    assert page.locator(".jobs li h3").all_inner_texts() == ["photo-2.png", "photo-1.png", "photo-0.png"]
    if server.has_websocket:
        assert page.get_attribute("[data-job-list]", "data-transport") == "websocket"
    page.wait_for_function("[...document.querySelectorAll('.preview img')].every(i => i.complete)")
    page.wait_for_selector(".jobs li .metrics:has-text('Queue wait')")

    with page.expect_download() as download:
        page.locator(".jobs li", has_text="photo-0.png").get_by_role("link", name="Download").click()
    result = downloaded_image(download.value)
    assert result.size == (240, 160) and result.mode == "L"
    page.screenshot(path=ARTIFACTS / "desktop.png", full_page=True)


def test_desktop_shows_the_blurhash_until_the_result_loads_and_auto_gives_chromium_its_best_format(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    held = []  # the result's preview, held until the placeholder has been seen
    page.route("**/api/v1/preview/**", lambda route: held.append(route))
    downloads = []
    page.on("request", lambda request: "/api/v1/download/" in request.url and downloads.append(request.url))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready]")

    page.set_input_files("#images", [image_file("auto.png", 40)])
    page.select_option("#service", "blur")
    page.select_option("#param-format", "auto")
    page.click("[data-submit]")

    placeholder = page.locator(".jobs li[data-status=completed] .after canvas.placeholder")
    placeholder.wait_for()
    centre_alpha = "c => c.getContext('2d').getImageData(c.width >> 1, c.height >> 1, 1, 1).data[3]"
    assert placeholder.evaluate(centre_alpha) == 255  # painted, not blank
    while not held:
        page.wait_for_timeout(50)  # the browser asks for the result once the card is drawn
    for route in held:
        route.continue_()
    placeholder.wait_for(state="detached")

    assert page.evaluate("document.querySelector('.after img').naturalWidth") == 240  # never enlarged
    assert "size=640" in held[0].request.url and downloads == []  # a box-sized preview, not the result
    job_id = page.get_attribute(".jobs li[data-status=completed]", "data-job-id")
    job = page.evaluate(f"fetch('/api/v1/jobs/{job_id}').then(r => r.json())")
    # The first of format=auto's choices this Chromium shows (its own probe; JPEG XL since version 14x).
    shown = page.evaluate("Darkroom.imageTypes")
    best = next(name for name in formats.MODERN_FORMATS if f"image/{name}" in shown)
    assert best in ("jxl", "avif")  # a Chromium of any version shows at least AVIF
    assert (job["result"]["format"], job["result"]["fallback_format"]) == (best, "jpeg")
    page.screenshot(path=ARTIFACTS / "desktop-auto.png", full_page=True)


def test_a_running_job_shows_a_working_bar_until_its_first_step_then_how_far_it_has_got(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    sockets = []

    def serve(socket):  # this test's events, in its order, on the page's live socket
        sockets.append(socket)
        socket.send(json.dumps({"type": "jobs.state", "jobs": []}))

    page.route_web_socket("**/ws/**", serve)
    page.goto(server.url)
    page.wait_for_selector("[data-job-list][data-transport=websocket]", state="attached")
    job = {
        "job_id": "00000000-0000-4000-8000-000000000001",
        "service": "resize",
        "created_at": "2030-01-01T00:00:00Z",
        "job_url": "/api/v1/jobs/00000000-0000-4000-8000-000000000001",
        "result": None,
        "error": None,
    }
    bar = page.locator(f".jobs li[data-job-id='{job['job_id']}'] progress")

    def send(event: str, status: str, progress: float) -> None:
        sockets[0].send(json.dumps({"type": event, "job": {**job, "status": status, "progress": progress}}))

    send("job.processing", "processing", 0)
    bar.wait_for()
    working = "b => [b.matches(':indeterminate'), b.classList.contains('is-working')]"
    assert bar.evaluate(working) == [True, True]  # no step yet: the whole bar shows work going on
    bar.screenshot(path=ARTIFACTS / "progress-working.png", animations="disabled")
    send("job.progress", "processing", 0.4)
    page.wait_for_function("document.querySelector('.jobs li progress').value === 40")
    assert bar.evaluate(working) == [False, True]
    bar.screenshot(path=ARTIFACTS / "progress-40.png", animations="disabled")
    send("job.completed", "completed", 1)
    page.wait_for_function("document.querySelector('.jobs li progress').value === 100")
    assert "is-working" not in bar.get_attribute("class")


def test_desktop_falls_back_to_polling_when_the_websocket_is_refused(server, browser, page_errors):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    page.route_web_socket("**/ws/**", lambda socket: socket.close())
    long_polls = []
    page.on("request", lambda request: "?wait=" in request.url and long_polls.append(request.url))
    page.goto(server.url)
    page.wait_for_selector("[data-job-list][data-transport=polling]", state="attached")

    page.set_input_files("#images", [image_file("polled.png", 10)])
    page.select_option("#service", "analyze")
    page.click("[data-submit]")

    card = page.locator(".jobs li", has_text="polled.png")
    card.and_(page.locator("[data-status=completed]")).wait_for()
    assert "Brightness" in card.inner_text()
    job_id = page.locator(".jobs li", has_text="polled.png").get_attribute("data-job-id")
    assert any(f"/jobs/{job_id}?wait=" in url for url in long_polls), long_polls  # answered at its end


def test_a_page_recovers_when_its_server_is_killed_and_started_again(browser, page_errors, tmp_path):
    """As when a deploy restarts every gateway: the page polls while the server is gone, then
    reconnects (with backoff) to the new one and is live again."""
    env = embedded_site(tmp_path)
    process, port = start_server(env, tmp_path)
    try:
        page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
        page.goto(f"http://127.0.0.1:{port}")
        page.wait_for_selector("[data-job-list][data-transport=websocket]", state="attached")

        process.kill()
        process.wait(timeout=30)
        page.wait_for_selector("[data-job-list][data-transport=polling]", state="attached")
        process, _ = start_server(env, tmp_path, port)
        page.wait_for_selector("[data-job-list][data-transport=websocket]", state="attached", timeout=90_000)

        page.set_input_files("#images", [image_file("after-restart.png", 11)])
        page.select_option("#service", "grayscale")
        page.click("[data-submit]")
        page.locator(".jobs li", has_text="after-restart.png").and_(
            page.locator("[data-status=completed]")
        ).wait_for()
        assert page.get_attribute("[data-job-list]", "data-transport") == "websocket"
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_desktop_says_whether_an_animation_kept_its_frames(server, browser, page_errors):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("body[data-ready]")
    animation = {"mimeType": "image/gif", "buffer": images.animated_bytes("GIF")}

    for name, format in (("kept.gif", "gif"), ("first.gif", "jpeg")):
        page.set_input_files("#images", [{"name": name, **animation}])
        page.select_option("#service", "resize")
        page.fill("#param-width", "24")
        page.select_option("#param-format", format)
        page.click("[data-submit]")
        page.locator(".jobs li[data-status=completed]", has_text=name).wait_for()

    said = {
        name: page.locator(".jobs li", has_text=name).locator("[data-frames]").inner_text()
        for name in ("kept.gif", "first.gif")
    }
    assert said["kept.gif"] == "Animated: 4 frames."
    assert said["first.gif"] == (
        "Only the first frame was kept: JPEG holds one frame; format=gif or format=webp keeps them all "
        "(the upload has 4 frames)."
    )
    page.screenshot(path=ARTIFACTS / "desktop-animation.png", full_page=True)

    phone = open_page(browser, page_errors, **IPHONE_CONTEXT)
    phone.goto(server.url)
    phone.wait_for_selector("body[data-ready]")
    phone.set_input_files("#library", {"name": "first.gif", **animation})
    phone.select_option("#service", "resize")
    phone.click(".options summary")
    phone.fill("#param-width", "24")
    phone.select_option("#param-format", "png")
    phone.click("[data-submit]")
    card = phone.locator(".jobs li[data-status=completed]", has_text="first.gif")
    assert (
        card.locator("[data-frames]")
        .inner_text()
        .startswith("Only the first frame was kept: PNG holds one frame")
    )


# --- Mobile ----------------------------------------------------------------------------------


def test_mobile_ui_on_an_iphone_shows_the_result_reduced_with_its_format_and_size(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, **IPHONE_CONTEXT, device_scale_factor=2)
    downloads = []
    page.on("request", lambda request: "/api/v1/download/" in request.url and downloads.append(request.url))
    page.goto(server.url)
    assert ui_of(page) == "mobile"
    assert page.get_attribute("#camera", "capture") == "environment"
    page.wait_for_selector("body[data-ready]")

    photo = images.photo(2000, 1500, seed=time.time_ns() % 1_000_000)
    page.set_input_files(
        "#camera", {"name": "IMG_0001.jpg", "mimeType": "image/jpeg", "buffer": images.jpeg_bytes(photo)}
    )
    page.select_option("#service", "sobel")
    page.click("[data-submit]")

    card = page.locator(".jobs li[data-status=completed]", has_text="IMG_0001.jpg")
    card.wait_for()
    shown = card.locator(".preview img")
    page.wait_for_function("document.querySelector('.jobs li .preview img').naturalWidth > 0")
    assert shown.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [1280, 960]  # reduced for the screen
    job_url = f"/api/v1/jobs/{card.get_attribute('data-job-id')}"
    result_bytes = page.evaluate(f"fetch('{job_url}').then(r => r.json())")["result"]["bytes"]
    facts = re.fullmatch(r"JPEG · 2000 × 1500 px · (\d+) KB", card.locator(".result-facts").inner_text())
    assert facts and int(facts.group(1)) == pytest.approx(result_bytes / 1024, abs=1)
    assert card.locator(".preview canvas.placeholder").count() == 0  # the preview has replaced it
    assert downloads == []  # nothing of the full result until Download is tapped
    page.screenshot(path=ARTIFACTS / "mobile.png", full_page=True)


def test_mobile_ui_chosen_while_saving_data_fills_in_a_byte_budget(server, browser, page_errors):
    page = open_page(browser, page_errors, **IPHONE_CONTEXT, extra_http_headers={"Save-Data": "on"})
    page.goto(server.url + "/?ui=mobile")
    assert ui_of(page) == "mobile"
    page.wait_for_selector("body[data-ready]")

    page.select_option("#service", "thumbnail")
    assert page.input_value("#param-max_bytes") == "150000"


# --- Lite, with JavaScript off ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "path", "headers"),
    [("save-data", "/", {"Save-Data": "on"}), ("bandwidth-low", "/?bandwidth=low", {})],
)
def test_low_bandwidth_gets_the_lite_ui_which_works_without_javascript(
    server, browser, page_errors, how, path, headers
):
    page = open_page(
        browser,
        page_errors,
        viewport={"width": 800, "height": 700},
        java_script_enabled=False,
        extra_http_headers=headers,
    )
    responses = []
    page.on("response", lambda response: responses.append(response))
    page.goto(server.url + path)
    assert ui_of(page) == "lite"
    weight = sum(
        r.request.sizes()["responseBodySize"] + r.request.sizes()["responseHeadersSize"] for r in responses
    )
    print(f"lite page ({how}): {len(responses)} requests, {weight} bytes transferred")
    assert weight < LITE_PAGE_BUDGET_BYTES
    page.screenshot(path=ARTIFACTS / f"lite-{how}.png", full_page=True)

    page.set_input_files("#image", image_file("slow-link.png", 30))
    page.click("text=Upload and process")
    page.wait_for_selector("[data-status=completed]")  # the page reloads itself until then
    assert page.get_attribute("img.preview", "src").startswith("data:image/webp;base64,")
    page.screenshot(path=ARTIFACTS / f"lite-status-{how}.png", full_page=True)

    with page.expect_download() as download:
        page.click("text=Download the result")
    assert downloaded_image(download.value).size == (240, 160)


def test_the_lite_form_changes_operation_without_a_reload_and_keeps_the_chosen_file(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 800, "height": 900}, java_script_enabled=False)
    page.goto(server.url + "/?ui=lite")
    page.set_input_files("#image", image_file("kept.png", 50))
    assert not page.is_visible("#f-rotate-angle")
    page.select_option("#service", "rotate")  # the page's CSS shows rotate's options: no reload

    page.fill("#f-rotate-angle", "90")
    assert not page.is_visible("#f-grayscale-threads") and page.is_visible("#f-output-format")
    page.screenshot(path=ARTIFACTS / "lite-rotate.png", full_page=True)
    page.click("text=Upload and process")
    page.wait_for_selector("[data-status=completed]")
    with page.expect_download() as download:
        page.click("text=Download the result")
    assert downloaded_image(download.value).size == (160, 240)  # the file chosen first, turned


def test_the_lite_form_sends_a_chosen_preset_without_javascript(server, browser, page_errors):
    page = open_page(browser, page_errors, viewport={"width": 800, "height": 900}, java_script_enabled=False)
    page.goto(server.url + "/?ui=lite")
    page.set_input_files("#image", image_file("lite-preset.png", 51, size=(400, 300)))
    assert page.is_visible("#f-output-format")
    page.select_option("#preset", "avatar")  # the page's CSS puts the operation's options away
    assert not page.is_visible("#f-output-format") and not page.is_visible("#s-grayscale")

    page.click("text=Upload and process")
    page.wait_for_selector("[data-status=completed]")
    job_id = re.search(r"/jobs/([0-9a-f-]+)/", page.url).group(1)
    job = page.context.request.get(f"{server.url}/api/v1/jobs/{job_id}").json()  # the session's job
    result = job["result"]
    assert (job["preset"], result["format"], result["width"], result["height"]) == (
        "avatar",
        "webp",
        256,
        256,
    )


# --- The admin --------------------------------------------------------------------------------


def test_staff_filter_failed_jobs_and_retry_one_which_completes(server, browser, page_errors):
    job_id = failed_by_storage(server)

    page = open_page(browser, page_errors, viewport={"width": 1600, "height": 900})
    page.goto(f"{server.url}/admin/login/?next=/admin/processing/job/")
    page.fill("#id_username", STAFF[0])
    page.fill("#id_password", STAFF[1])
    page.click("input[type=submit]")
    page.click("#changelist-filter a:text-is('failed')")
    page.wait_for_url("**status__exact=failed**")

    page.check(f"input[name=_selected_action][value='{job_id}']")
    page.screenshot(path=ARTIFACTS / "admin-failed.png", full_page=True)
    page.select_option("select[name=action]", "retry_failed")
    page.click("button[name=index]")
    page.wait_for_selector("text=Retried 1 job(s)")

    assert server.wait_for_job(job_id, "completed")["error"] is None
    page.goto(f"{server.url}/admin/processing/job/?q={job_id}")
    page.wait_for_selector(f"img[src*='{job_id}/thumbnail/output']")
    page.wait_for_function(
        "[...document.querySelectorAll('#result_list img')].every(i => i.naturalWidth > 0)"
    )
    page.screenshot(path=ARTIFACTS / "admin.png", full_page=True)


def failed_by_storage(server) -> str:
    """A job that fails with processing_error because storage refuses its result, then is fixed.

    A plain file where the results folder belongs makes every result write fail, as a broken
    volume would; once it is moved away, the job's input is as good as ever.
    """
    results = server.var_dir / "media" / "results"
    aside = results.with_name("results-aside")
    if results.exists():
        results.rename(aside)
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text("not a folder")
    try:
        files = {"image": ("doomed.png", images.png_bytes(images.noise(64, 48, seed=time.time_ns() % 10**6)))}
        accepted = httpx.post(f"{server.url}/api/v1/process/grayscale", files=files, timeout=10).json()
        failed = server.wait_for_job(accepted["job_id"], "failed")
        assert failed["error"]["code"] == "processing_error"
    finally:
        results.unlink()
        if aside.exists():
            aside.rename(results)
    return accepted["job_id"]


@pytest.fixture(scope="module", autouse=True)
def clean_artifacts():
    """Screenshots of this run only."""
    for old in ARTIFACTS.glob("*.png") if ARTIFACTS.exists() else ():
        old.unlink()
    yield
    shutil.rmtree(ARTIFACTS / "downloads", ignore_errors=True)


# --- The API docs -------------------------------------------------------------------------------


def test_the_api_docs_linked_from_the_header_render_with_no_request_to_another_host(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    own_host = urlparse(server.url).netloc
    elsewhere = []

    def offline(route):  # as on a machine without the internet: only the server itself answers
        if urlparse(route.request.url).netloc == own_host:
            return route.continue_()
        elsewhere.append(route.request.url)
        return route.abort("internetdisconnected")

    page.route("**/*", offline)
    page.goto(server.url)
    page.click(".masthead >> text=API docs")
    page.locator(".swagger-ui .opblock-summary-path", has_text="/api/v1/process/{service}").wait_for()
    assert page.title() == "Darkroom API"
    page.screenshot(path=ARTIFACTS / "api-docs.png")
    assert elsewhere == []


# --- Recipes and presets ---------------------------------------------------------------------------


def job_of(page, card) -> dict:
    return page.evaluate(f"fetch('/api/v1/jobs/{card.get_attribute('data-job-id')}').then(r => r.json())")


def add_step(page, service: str) -> None:
    page.select_option("#add-step", service)
    page.click("[data-add-step]")


def step_titles(page) -> list[str]:
    return page.locator(".steps li legend").all_inner_texts()


def test_desktop_builds_a_recipe_moves_and_removes_steps_and_the_job_runs_its_chain(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#images", [image_file("recipe.png", 60)])

    page.click("label[for=mode-recipe]")
    assert page.is_hidden("#service")  # the one-operation picker gives way to the recipe
    add_step(page, "grayscale")
    add_step(page, "resize")
    page.locator(".steps li", has_text="Resize").locator("input[name=width]").fill("120")
    page.get_by_role("button", name="Move step 2 (resize) up").click()
    assert step_titles(page) == ["Step 1: Resize", "Step 2: Grayscale"]
    assert page.get_by_role("button", name="Move step 1 (resize) up").is_disabled()
    add_step(page, "blur")
    page.get_by_role("button", name="Remove step 3 (blur)").click()
    assert step_titles(page) == ["Step 1: Resize", "Step 2: Grayscale"]
    page.select_option("#output-format", "png")
    page.click("[data-submit]")

    card = page.locator(".jobs li[data-status=completed]", has_text="recipe.png")
    card.wait_for()
    job = job_of(page, card)
    assert job["service"] == "steps"
    chain = job["parameters"]["steps"]
    assert [step["service"] for step in chain] == ["resize", "grayscale"]
    assert chain[0]["parameters"]["width"] == 120 and job["parameters"]["format"] == "png"
    assert (job["result"]["format"], job["result"]["width"], job["result"]["height"]) == ("png", 120, 80)
    page.screenshot(path=ARTIFACTS / "desktop-recipe.png", full_page=True)


def test_desktop_shows_the_servers_refusal_naming_the_step_and_marks_its_field(server, browser, page_errors):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    page.goto(server.url)
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#images", [image_file("refused.png", 61)])

    page.click("label[for=mode-recipe]")
    add_step(page, "grayscale")
    add_step(page, "blur")
    radius = page.locator(".steps li", has_text="Blur").locator("input[name=radius]")
    radius.fill("500")  # the page leaves the check to the server, which says which step
    page.click("[data-submit]")

    alert = page.locator("[data-form-error]")
    alert.locator("text=steps[1] (blur)").wait_for()
    assert radius.get_attribute("aria-invalid") == "true"
    assert page.locator(".jobs li[data-job-id]").count() == 0


def test_a_batch_with_a_one_step_recipe_left_after_a_removal_makes_that_services_jobs(
    server, browser, page_errors
):
    page = open_page(browser, page_errors, viewport={"width": 1280, "height": 900})
    posts = []
    page.on("request", lambda request: request.method == "POST" and posts.append(urlparse(request.url).path))
    page.goto(server.url)
    page.wait_for_selector("body[data-ready]")
    page.set_input_files("#images", [image_file(f"one-step-{n}.png", 62 + n) for n in range(2)])

    page.click("label[for=mode-recipe]")
    add_step(page, "rotate")
    add_step(page, "grayscale")
    page.get_by_role("button", name="Remove step 1 (rotate)").click()
    assert step_titles(page) == ["Step 1: Grayscale"]
    page.click("[data-submit]")  # two images: one batch, the recipe in place of a service

    page.wait_for_function("document.querySelectorAll('.jobs li[data-status=completed]').length === 2")
    for card in page.locator(".jobs li[data-status=completed]").all():
        job = job_of(page, card)
        assert (job["service"], job["result"]["width"], job["result"]["height"]) == ("grayscale", 240, 160)
    assert posts == ["/api/v1/jobs/batch"]


def test_mobile_steps_have_touch_sized_buttons_and_a_preset_chosen_runs(server, browser, page_errors):
    page = open_page(browser, page_errors, **IPHONE_CONTEXT)
    page.goto(server.url)
    assert ui_of(page) == "mobile"
    page.wait_for_selector("body[data-ready]")

    page.tap("label[for=mode-recipe]")
    add_step(page, "resize")
    for button in page.locator(".steps li .step-actions button").all():
        assert button.bounding_box()["height"] >= 44  # a comfortable touch target, no dragging

    page.tap("label[for=mode-preset]")
    page.wait_for_selector("#preset option[value=small]", state="attached")
    page.select_option("#preset", "small")
    assert "thumbnail" in page.inner_text("[data-preset-description]")
    page.set_input_files("#library", image_file("preset.png", 63))
    page.tap("[data-submit]")

    card = page.locator(".jobs li[data-status=completed]", has_text="preset.png")
    card.wait_for()
    job = job_of(page, card)
    assert job["preset"] == "small"
    assert job["result"]["width"] <= 640
    page.screenshot(path=ARTIFACTS / "mobile-preset.png", full_page=True)
