"""End-to-end tests of the web page at GET /, in a real headless Chromium against the real app.

The app is started by the test on a free port (``python -m imgapi serve``), on the tiny traced networks of
``tests/conftest.py`` (``real_weights``: ``tiny_weights`` and a tiny ``real`` model) so that it is quick and needs
no trained weights; set
``PAGE_TEST_REAL_WEIGHTS=1`` to serve the repository's ``weights/`` instead, or ``IMGAPI_PAGE_URL`` to point the
tests at a server that is already running. Chromium is Debian's (``.ci/install-chromium.sh``), driven by
PyPI ``playwright``; ``playwright install`` is never needed. Screenshots at desktop (1280x800) and phone
(390x844) widths are written to ``artifacts/screenshots/`` for a person to look at.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from imgapi.config import DEFAULT_SR_MODEL

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-test.txt)")

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# What the page assumes when /health reports no limits (DEFAULT_LIMITS in imgapi/static/app.js).
PAGE_DEFAULT_LIMITS = {"max_upload_bytes": 4 * 1024 * 1024, "max_upscale_pixels": 512 * 512,
                       "max_stylize_pixels": 4096 * 4096}
# The policy a deployment may put in front of the page: no inline script or style, no eval.
CSP = ("default-src 'self'; img-src 'self' data: blob:; connect-src 'self' https:; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'self'")
RESULT_TIMEOUT_MS = 180_000  # CPU inference on a shared machine, first request also loads the weights
sync_api.expect.set_options(timeout=15_000)  # the CI machine's CPUs are shared with training jobs


# ---------------------------------------------------------------- server and browser

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str, timeout: float = 5.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as res:
        return json.loads(res.read())


def _get_json_or_error(url: str) -> dict:
    """The JSON body of a GET, also when it is an error answer (the API's errors are JSON too)."""
    try:
        return _get_json(url)
    except urllib.error.HTTPError as err:
        return json.loads(err.read() or b"{}")


@pytest.fixture(scope="module")
def base_url(request, tmp_path_factory):
    """URL of a running app (trailing slash); started here unless IMGAPI_PAGE_URL names one."""
    if os.environ.get("IMGAPI_PAGE_URL"):
        yield os.environ["IMGAPI_PAGE_URL"].rstrip("/") + "/"
        return
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_BUCKET", "RESULT_BUCKET", "PORT", "HOST")}
    env.update(TORCH_THREADS="1", PYTHONUNBUFFERED="1")
    if os.environ.get("PAGE_TEST_REAL_WEIGHTS") != "1":
        env["WEIGHTS_DIR"] = str(request.getfixturevalue("real_weights"))
    python = REPO / ".venv" / "bin" / "python"
    port = _free_port()
    log_path = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(python if python.exists() else sys.executable), "-m", "imgapi", "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode} before serving /health:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            try:
                _get_json(url + "health", timeout=2)
                break
            except urllib.error.HTTPError:
                break  # serving, though not healthy: the page has to show that, and the tests will say why
            except (urllib.error.URLError, OSError, ValueError):
                if time.monotonic() > deadline:
                    pytest.fail(f"the app did not answer /health within 180 s:\n"
                                f"{log_path.read_text(errors='replace')[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        message = f"Chromium not found at {CHROMIUM}: run .ci/install-chromium.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def _with_csp(route):
    """Serves the page under the restrictive CSP (unless the app sends its own), so a violation shows up here."""
    response = route.fetch()
    headers = dict(response.headers)
    headers.setdefault("content-security-policy", CSP)
    route.fulfill(response=response, headers=headers)


def _open(browser, base_url, viewport=DESKTOP, **kwargs):
    context = browser.new_context(viewport=viewport, accept_downloads=True, **kwargs)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text else None)
    page.route(base_url, _with_csp)
    page.goto(base_url)
    # Ready once /health and /styles have been asked (the status dot leaves "Connecting…").
    page.wait_for_function("() => document.getElementById('api-state').dataset.state !== undefined")
    return context, page, errors


@pytest.fixture
def desktop(browser, base_url):
    context, page, errors = _open(browser, base_url)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
def phone(browser, base_url):
    context, page, errors = _open(browser, base_url, viewport=PHONE, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    yield page
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def limits(base_url) -> dict:
    reported = _get_json_or_error(base_url + "health").get("limits") or {}
    return {k: reported.get(k) or v for k, v in PAGE_DEFAULT_LIMITS.items()}


# ---------------------------------------------------------------- images and page helpers

def _photo(path: Path, size=(24, 16)) -> Path:
    """A small landscape-like PNG: sky gradient, sun, hills; enough structure to see what a model did."""
    w, h = size
    im = Image.new("RGB", size)
    px = im.load()
    for y in range(h):
        for x in range(w):
            t = y / max(1, h - 1)
            px[x, y] = (int(90 + 120 * t), int(150 + 60 * t), int(235 - 40 * t))
    d = ImageDraw.Draw(im)
    d.ellipse([w * 0.62, h * 0.12, w * 0.82, h * 0.12 + w * 0.2], fill=(255, 214, 90))
    d.polygon([(0, h), (0, h * 0.7), (w * 0.3, h * 0.45), (w * 0.6, h * 0.72), (w * 0.85, h * 0.55), (w, h * 0.68),
               (w, h)], fill=(46, 125, 70))
    d.rectangle([w * 0.2, h * 0.62, w * 0.32, h * 0.8], fill=(150, 60, 40))
    im.save(path)
    return path


def _painting(path: Path, size=(40, 30)) -> Path:
    """A small "painting": bold diagonal yellow and blue strokes and a red wedge, unlike the photo's colours."""
    w, h = size
    im = Image.new("RGB", size, (20, 40, 120))
    d = ImageDraw.Draw(im)
    for x in range(-h, w, 6):
        d.line([(x, h), (x + h, 0)], fill=(240, 200, 40), width=2)
    d.polygon([(0, 0), (w * 0.5, 0), (0, h * 0.6)], fill=(200, 40, 40))
    im.save(path)
    return path


def _wait_done(page):
    """Waits for the result or an error box; fails with the page's error message if it was an error."""
    page.wait_for_function(
        "() => document.getElementById('frame').dataset.result === 'ready' || !document.getElementById('error').hidden",
        timeout=RESULT_TIMEOUT_MS)
    if page.locator("#error").is_visible():
        pytest.fail(f"the page shows an error: {page.locator('#error').inner_text()}")


def _natural_size(page, selector="#after-img") -> tuple[int, int]:
    return tuple(page.eval_on_selector(selector, "i => [i.naturalWidth, i.naturalHeight]"))


def _safe(name: str) -> str:
    """The page's file-name sanitiser (safePart in app.js), for ASCII names."""
    return re.sub(r"^[._]+|[._]+$", "", re.sub(r"_+", "_", re.sub(r"[^\w.-]+", "_", name)))


def _screenshot(page, name: str, full_page=False):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=full_page)


def _requests_to(page, *paths) -> list:
    seen = []
    page.on("request", lambda r: seen.append(r.url) if r.method == "POST" and r.url.rstrip("/").endswith(paths)
            else None)
    return seen


# ---------------------------------------------------------------- tests

def test_upscale_shows_4x_result_compares_and_downloads_png(desktop, tmp_path):
    page = desktop
    _screenshot(page, "desktop-start.png")
    src = _photo(tmp_path / "photo.png", (24, 16))
    page.set_input_files("#file-input", str(src))
    sync_api.expect(page.locator("#source-meta")).to_contain_text("24 × 16 px")
    sync_api.expect(page.locator("#before-img")).to_be_visible()
    # The default model's controls (real: the denoise field) make the settings taller than the window: clicking
    # the button scrolls the page (the sticky stage with it) before any result. Scroll first, so that the
    # stage's box is compared from just before the request to after its result.
    page.locator("#run-button").scroll_into_view_if_needed()
    stage_before = page.locator("#stage").bounding_box()

    sync_api.expect(page.locator("#run-button")).to_have_text("Upscale 4×")
    page.click("#run-button")
    _wait_done(page)

    assert _natural_size(page) == (96, 64)
    assert page.locator("#stage").bounding_box() == stage_before, "the stage moved or resized when the result came"
    sync_api.expect(page.locator("#meta-size")).to_contain_text("96 × 64 px")
    sync_api.expect(page.locator("#meta-model")).to_contain_text(DEFAULT_SR_MODEL)  # none picked: the default
    sync_api.expect(page.locator("#meta-time")).to_contain_text(" s")

    # Before/after slider: both layers are drawn in the same box; the keyboard moves the split.
    assert page.locator("#before-img").bounding_box() == page.locator("#after-img").bounding_box()
    page.focus("#compare")
    page.keyboard.press("Home")
    assert page.eval_on_selector("#after-img", "i => i.style.clipPath") == "inset(0px 0px 0px 0%)"
    page.keyboard.press("End")
    assert page.eval_on_selector("#after-img", "i => i.style.clipPath") == "inset(0px 0px 0px 100%)"
    box = page.locator("#frame").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] / 2)
    assert float(page.input_value("#compare")) == pytest.approx(30, abs=2)
    page.mouse.click(box["x"] + box["width"] * 0.5, box["y"] + box["height"] / 2)
    _screenshot(page, "desktop-upscale.png")
    page.click("#zoom button[data-zoom='1']")  # 100%: one result pixel per CSS pixel
    assert page.locator("#frame").bounding_box()["width"] == pytest.approx(96, abs=1)
    page.click("#zoom button[data-zoom='fit']")
    assert page.locator("#frame").bounding_box() == box

    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == f"photo_x4_{DEFAULT_SR_MODEL}.png"
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    with Image.open(saved) as im:
        assert im.format == "PNG"
        assert im.size == (96, 64)


def test_upscale_scale_and_model_choice(desktop, tmp_path):
    page = desktop
    page.set_input_files("#file-input", str(_photo(tmp_path / "holiday pic.png", (24, 16))))
    page.check("input[name=model][value=srresnet]", force=True)
    page.click("label[for=scale-2]")
    sync_api.expect(page.locator("#run-button")).to_have_text("Upscale 2×")
    page.click("#run-button")
    _wait_done(page)
    assert _natural_size(page) == (48, 32)
    sync_api.expect(page.locator("#meta-model")).to_contain_text("srresnet")
    assert page.get_attribute("#download", "download") == "holiday_pic_x2_srresnet.png"


def test_real_photo_model_sends_its_denoise_level_and_the_control_shows_for_it_only(desktop, base_url, tmp_path):
    if "real" not in (_get_json_or_error(base_url + "health").get("models") or {}):
        pytest.skip("the server's weights have no real model (PAGE_TEST_REAL_WEIGHTS or IMGAPI_PAGE_URL)")
    page = desktop
    page.set_input_files("#file-input", str(_photo(tmp_path / "phone shot.png", (24, 16))))
    sync_api.expect(page.locator("#model-hint")).to_contain_text("JPEG")
    sync_api.expect(page.locator("#denoise-field")).to_be_visible()  # real, the default
    page.check("input[name=model][value=srgan]", force=True)
    sync_api.expect(page.locator("#denoise-field")).to_be_hidden()
    page.check("input[name=model][value=real]", force=True)
    sync_api.expect(page.locator("#denoise-field")).to_be_visible()
    sync_api.expect(page.get_by_role("checkbox", name="Auto")).to_be_checked()
    sync_api.expect(page.locator("#denoise")).to_be_disabled()  # the slider counts only with Auto off
    page.uncheck("#denoise-auto")
    sync_api.expect(page.locator("#denoise")).to_be_enabled()
    page.focus("#denoise")
    for _ in range(4):  # 0.5 by default, steps of 0.05
        page.keyboard.press("ArrowLeft")
    sync_api.expect(page.locator("#denoise-out")).to_have_text("0.30")
    _screenshot(page, "desktop-upscale-real.png")

    held = []  # the first request is held, so that the busy state can be read
    page.route("**/upscale", lambda route: held.append(route))
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/upscale")) as sent:
        page.click("#run-button")
    fields = _form_fields(sent.value.post_data_buffer)
    assert (fields["model"], fields["denoise"], fields["scale"]) == ("real", "0.30", "4"), fields
    sync_api.expect(page.locator("#busy-text")).to_have_text("Upscaling 4× with Real photo, denoise 0.30…")
    page.click("#busy-cancel")
    page.unroute("**/upscale")
    for route in held:
        try:
            route.abort()
        except Exception:  # the browser already dropped the cancelled request
            pass

    page.click("#run-button")
    _wait_done(page)
    assert _natural_size(page) == (96, 64)
    sync_api.expect(page.locator("#meta-model")).to_contain_text("real · 4×")
    sync_api.expect(page.locator("#meta-model")).to_contain_text("denoise 0.30 (set)")
    assert page.get_attribute("#download", "download") == "phone_shot_x4_real.png"

    page.check("input[name=model][value=srgan]", force=True)
    sync_api.expect(page.locator("#denoise-field")).to_be_hidden()
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/upscale")) as sent:
        page.click("#run-button")
    fields = _form_fields(sent.value.post_data_buffer)
    assert fields["model"] == "srgan" and "denoise" not in fields, fields
    _wait_done(page)


def test_stylize_with_a_style_chosen_from_the_gallery(desktop, base_url, tmp_path):
    # A /styles that errors (or lists nothing, from this test's own server with its weights) is a failure:
    # the gallery is what this test checks, and a skip would pass with it broken.
    try:
        styles = _get_json(base_url + "styles")["styles"]
    except urllib.error.HTTPError as err:
        pytest.fail(f"GET /styles answered {err.code}: {err.read()[:500]!r}")
    if not styles and os.environ.get("IMGAPI_PAGE_URL"):
        pytest.skip("GET /styles lists no styles on the server IMGAPI_PAGE_URL names: nothing to stylize with")
    assert styles, "GET /styles lists no styles, though the server was started with weights that have some"
    page = desktop
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (96, 64))))
    page.click("label[for=task-stylize]")
    cards = page.locator(".style-card")
    sync_api.expect(cards).to_have_count(len(styles))
    for card, style in zip(cards.all(), styles):  # every card shows its title, artist and licence
        sync_api.expect(card).to_contain_text(style.get("title") or style["name"])
        if style.get("artist"):
            sync_api.expect(card).to_contain_text(style["artist"])
        if style.get("licence"):
            sync_api.expect(card).to_contain_text(style["licence"])
    chosen = styles[-1]
    cards.nth(len(styles) - 1).click()
    assert page.is_checked(f".style-card input[value={json.dumps(chosen['name'])}]")
    page.focus("#strength")
    for _ in range(4):
        page.keyboard.press("ArrowLeft")
    sync_api.expect(page.locator("#strength-out")).to_have_text("80%")
    page.select_option("#max-side", "768")
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/stylize")) as sent:
        page.click("#run-button")
    body = sent.value.post_data_buffer
    for field, value in (("style", chosen["name"]), ("strength", "0.80"), ("max_side", "768")):
        assert f'name="{field}"\r\n\r\n{value}\r\n'.encode() in body, f"{field}={value} was not sent"
    _wait_done(page)

    assert _natural_size(page) == (96, 64)
    sync_api.expect(page.locator("#meta-model")).to_contain_text(chosen.get("title") or chosen["name"])
    sync_api.expect(page.locator("#meta-model")).to_contain_text("80%")
    _screenshot(page, "desktop-stylize.png")
    with page.expect_download() as info:
        page.click("#download")
    download = info.value
    assert download.suggested_filename == f"photo_{_safe(chosen['name'])}.png"
    saved = tmp_path / "styled.png"
    download.save_as(saved)
    with Image.open(saved) as im:
        assert im.format == "PNG" and im.size == (96, 64)


def test_an_image_can_be_dropped_or_pasted(desktop, tmp_path):
    page = desktop
    png = _photo(tmp_path / "dropped.png", (30, 20)).read_bytes()
    send = """([event, b64, name]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, { type: "image/png" }));
        const target = event === "paste" ? document : document.getElementById("dropzone");
        const ev = event === "paste"
            ? new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })
            : new DragEvent(event, { dataTransfer: data, bubbles: true, cancelable: true });
        target.dispatchEvent(ev);
    }"""
    b64 = base64.b64encode(png).decode()
    page.evaluate(send, ["dragenter", b64, "dropped.png"])
    sync_api.expect(page.locator(".drop-overlay")).to_be_visible()
    page.evaluate(send, ["drop", b64, "dropped.png"])
    sync_api.expect(page.locator(".drop-overlay")).to_be_hidden()
    sync_api.expect(page.locator("#source-name")).to_have_text("dropped.png")
    sync_api.expect(page.locator("#source-meta")).to_contain_text("30 × 20 px")
    page.evaluate(send, ["paste", b64, "image.png"])  # what a browser calls a pasted screenshot
    sync_api.expect(page.locator("#source-name")).to_have_text("pasted.png")
    sync_api.expect(page.locator("#run-button")).to_be_enabled()


def test_oversize_file_and_too_many_pixels_are_refused_before_sending(desktop, limits, tmp_path):
    page = desktop
    posts = _requests_to(page, "/upscale", "/stylize")

    max_bytes = limits["max_upload_bytes"]
    big = tmp_path / "huge.png"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, "PNG")
    big.write_bytes(buf.getvalue() + b"\0" * (max_bytes + 1 - len(buf.getvalue())))
    page.set_input_files("#file-input", str(big))
    notice = page.locator("#source-notice")
    sync_api.expect(notice).to_be_visible()
    sync_api.expect(notice).to_contain_text(f"{max_bytes:,} bytes")
    sync_api.expect(page.locator("#run-button")).to_be_disabled()
    page.click("#source-fix")  # the offered smaller copy is made in the browser and fits
    sync_api.expect(notice).to_be_hidden()
    sync_api.expect(page.locator("#source-meta")).to_contain_text("8 × 8 px")
    sync_api.expect(page.locator("#run-button")).to_be_enabled()

    max_px = limits["max_upscale_pixels"]
    side = math.isqrt(max_px) + 1
    wide = tmp_path / "wide.png"
    Image.new("RGB", (side, side), (20, 90, 160)).save(wide)
    page.set_input_files("#file-input", str(wide))
    sync_api.expect(notice).to_be_hidden()
    limit_notice = page.locator("#limit-notice")
    sync_api.expect(limit_notice).to_be_visible()
    sync_api.expect(limit_notice).to_contain_text(f"{max_px:,} pixels")
    sync_api.expect(page.locator("#run-button")).to_be_disabled()
    _screenshot(page, "desktop-too-many-pixels.png")

    page.click("#shrink-button")  # the offered fix works and leaves the page ready to run
    sync_api.expect(limit_notice).to_be_hidden()
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    w, h = (int(v.replace(",", "")) for v in
            re.search(r"([\d,]+) × ([\d,]+) px", page.inner_text("#source-meta")).groups())
    assert w * h <= max_px
    assert posts == [], f"the page sent {posts} although the input was over the limits"


def test_server_errors_are_shown_as_their_message_and_the_page_recovers(desktop, tmp_path):
    page = desktop
    message = "The srgan weights could not be loaded (checksum mismatch). This is temporary: try again in a minute."
    page.route("**/upscale", lambda route: route.fulfill(
        status=503, content_type="application/json",
        body=json.dumps({"error": {"code": "model_unavailable", "message": message}})))
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    page.click("#run-button")
    sync_api.expect(page.locator("#error")).to_be_visible()
    sync_api.expect(page.locator("#error-message")).to_have_text(message)
    sync_api.expect(page.locator("#error-title")).to_contain_text("503")
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    _screenshot(page, "desktop-error.png")

    page.unroute("**/upscale")
    page.click("#error-retry")
    _wait_done(page)
    assert _natural_size(page) == (96, 64)
    sync_api.expect(page.locator("#error")).to_be_hidden()

    # A file the browser cannot preview goes to the server, whose refusal is shown as its own message.
    fake = tmp_path / "scan.tif"
    fake.write_bytes(b"II*\0" + b"this is not really a TIFF" * 10)
    page.set_input_files("#file-input", str(fake))
    page.click("#run-button")
    sync_api.expect(page.locator("#error")).to_be_visible(timeout=60_000)
    sync_api.expect(page.locator("#error-title")).to_contain_text("415")
    assert page.inner_text("#error-message").strip(), "the server's message is missing"
    sync_api.expect(page.locator("#run-button")).to_be_enabled()


@pytest.mark.parametrize("status, gateway_message", [(500, "Internal Server Error"), (429, "Too Many Requests")])
def test_api_gateway_throttling_is_shown_as_busy_retry(desktop, tmp_path, status, gateway_message):
    """API Gateway's own answers when the function or the stage is throttled ({"message": ...}, no API error
    shape) read as "busy, retry", with the Retry button, not as an unexplained failure (issue 14, item 8)."""
    page = desktop
    page.route("**/upscale", lambda route: route.fulfill(
        status=status, content_type="application/json", body=json.dumps({"message": gateway_message})))
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    page.click("#run-button")
    sync_api.expect(page.locator("#error")).to_be_visible()
    message = page.inner_text("#error-message")
    assert "busy" in message and "Retry in a few seconds" in message, message
    sync_api.expect(page.locator("#error-title")).to_contain_text(f"{status} busy")
    sync_api.expect(page.locator("#error-retry")).to_be_visible()

    page.unroute("**/upscale")
    page.click("#error-retry")
    _wait_done(page)
    sync_api.expect(page.locator("#error")).to_be_hidden()


def test_a_large_result_given_by_url_is_shown_and_downloaded(desktop, base_url, tmp_path):
    """With a result bucket the API answers {"url", "expires_in"} instead of "image" (docs/api.md)."""
    page = desktop
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 100, 50)).save(buf, "PNG")
    result_url = base_url + "fake-bucket/results/abc.png?X-Amz-Expires=900&X-Amz-Signature=0f"
    page.route("**/fake-bucket/**", lambda route: route.fulfill(status=200, content_type="image/png",
                                                                 body=buf.getvalue()))
    page.route("**/upscale", lambda route: route.fulfill(status=200, content_type="application/json", body=json.dumps(
        {"url": result_url, "expires_in": 900, "width": 96, "height": 64, "model": DEFAULT_SR_MODEL,
         "denoise": 0.1, "denoise_source": "auto", "jpeg_quality": None, "sha256": "0123456789ab",
         "elapsed_ms": 1234})))
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    page.click("#run-button")
    _wait_done(page)
    assert _natural_size(page) == (96, 64)
    sync_api.expect(page.locator("#status")).to_contain_text("expires in 15 min")
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename == f"photo_x4_{DEFAULT_SR_MODEL}.png"  # none picked: the default
    saved = tmp_path / "from-url.png"
    info.value.save_as(saved)
    assert saved.read_bytes() == buf.getvalue()


def test_busy_state_shows_elapsed_time_and_can_be_cancelled(desktop, tmp_path):
    page = desktop
    held = []
    page.route("**/upscale", lambda route: held.append(route))  # never answered: stays busy
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    page.click("#run-button")
    sync_api.expect(page.locator("#busy")).to_be_visible()
    sync_api.expect(page.locator("#run-button")).to_be_disabled()
    sync_api.expect(page.locator("#busy-time")).to_have_text(re.compile(r"^[1-9]\d*\.\d s$"), timeout=5_000)
    _screenshot(page, "desktop-busy.png")
    page.click("#cancel-button")
    sync_api.expect(page.locator("#busy")).to_be_hidden()
    sync_api.expect(page.locator("#status")).to_contain_text("Cancelled")
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    sync_api.expect(page.locator("#error")).to_be_hidden()
    for route in held:
        try:
            route.abort()
        except Exception:  # the browser already dropped the cancelled request
            pass


def test_controls_are_labelled_and_reachable_by_keyboard(desktop, tmp_path):
    page = desktop
    role = page.get_by_role
    sync_api.expect(role("button", name="Choose an image file")).to_be_visible()
    sync_api.expect(role("radio", name="Upscale")).to_be_checked()
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    reached = []
    page.focus("#file-input")
    sync_api.expect(page.locator("#dropzone")).to_have_css("box-shadow", re.compile(r"rgba?\("))
    for _ in range(12):
        page.keyboard.press("Tab")
        reached.append(page.evaluate("document.activeElement.id || document.activeElement.name"))
    for expected in ("task-upscale", "model", "scale-4", "run-button"):
        assert expected in reached, f"Tab never reached {expected}: {reached}"
    page.keyboard.press("Shift+Tab")  # back from the run button to the scale group
    page.focus("#scale-4")
    page.keyboard.press("ArrowLeft")  # radio groups move with the arrow keys
    assert page.is_checked("#scale-3")
    page.focus("#run-button")
    sync_api.expect(page.locator("#run-button")).to_have_text("Upscale 3×")

    page.focus("#task-upscale")
    page.keyboard.press("ArrowRight")
    sync_api.expect(role("radio", name="Stylize")).to_be_checked()
    sync_api.expect(role("slider", name="Strength")).to_be_visible()
    sync_api.expect(role("checkbox", name="Preserve colours")).to_be_visible()
    sync_api.expect(page.locator("#upscale-options")).to_be_hidden()


def test_api_base_url_is_configurable_and_remembered(browser, base_url, tmp_path):
    api = "https://api.example.test/prod/"
    calls = []

    def fake_api(route):
        path = route.request.url[len(api):].split("?")[0]
        calls.append(path)
        body = {"health": {"status": "ok", "models": {}, "limits": {"max_upload_bytes": 1000}},
                "styles": {"styles": []}}.get(path, {"error": {"code": "not_here", "message": f"fake API: {path}"}})
        route.fulfill(status=200 if path in ("health", "styles") else 404, content_type="application/json",
                      headers={"access-control-allow-origin": "*"}, body=json.dumps(body))

    context = browser.new_context(viewport=DESKTOP)
    context.route(api + "**", fake_api)
    page = context.new_page()
    page.route(base_url, _with_csp)
    page.goto(base_url + "?api=" + urllib.parse.quote(api, safe=""))
    sync_api.expect(page.locator("#api-base-label")).to_have_text(api)
    sync_api.expect(page.locator("#limits-hint")).to_contain_text("1.0\u00a0KB")  # the configured API's limits
    sync_api.expect(page.locator("#gallery-msg")).to_contain_text("no styles")
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png")))
    page.click("#run-button")
    sync_api.expect(page.locator("#error-message")).to_have_text("fake API: upscale")
    assert {"health", "styles", "upscale"} <= set(calls)

    page.goto(base_url)  # remembered without the query parameter
    sync_api.expect(page.locator("#api-base-label")).to_have_text(api)
    page.click("#settings summary")
    page.click("#api-reset")
    sync_api.expect(page.locator("#api-base-label")).to_have_text("same origin")
    page.goto(base_url)
    sync_api.expect(page.locator("#api-base-label")).to_have_text("same origin")
    context.close()


def test_phone_width_layout(phone, tmp_path):
    page = phone
    _screenshot(page, "phone-start.png", full_page=True)
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (48, 32))))
    page.click("#run-button")
    _wait_done(page)
    assert _natural_size(page) == (192, 128)
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], "horizontal scrolling at phone width"
    for selector in ("#run-button", "#download", "#stage", "#meta-size"):
        box = page.locator(selector).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"], f"{selector} is cut off"
    _screenshot(page, "phone-upscale.png", full_page=True)
    page.click("label[for=task-stylize]")
    _screenshot(page, "phone-stylize.png", full_page=True)


# ---------------------------------------------------------------- "Your own painting" (any painting as a style)

def _named_styles(base_url) -> list:
    styles = _get_json(base_url + "styles")["styles"]
    if not styles:
        pytest.skip("GET /styles lists no named style to switch back to")
    return styles


def _form_fields(body: bytes) -> dict:
    """{field name: filename or value} of a multipart body, as the page sent it."""
    out = {}
    for part in body.split(b"\r\n--"):
        m = re.search(rb'name="([^"]+)"(?:; filename="([^"]*)")?\r\n(?:[^\r\n]+\r\n)*\r\n', part)
        if m:
            out[m.group(1).decode()] = (m.group(2) if m.group(2) is not None
                                        else part[m.end():].split(b"\r\n", 1)[0]).decode()
    return out


def _stylize_sent(page) -> dict:
    """Clicks the run button; the fields of the POST /stylize it sent."""
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/stylize")) as sent:
        page.click("#run-button")
    return _form_fields(sent.value.post_data_buffer)


def test_own_painting_is_shown_sent_as_style_image_and_names_the_download(desktop, base_url, tmp_path):
    page = desktop
    named = _named_styles(base_url)[0]
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (96, 64))))
    page.click("label[for=task-stylize]")
    tile = page.locator("#own-card")
    sync_api.expect(tile).to_be_visible()
    sync_api.expect(page.get_by_role("radio", name="Your own painting")).not_to_be_checked()

    painting = _painting(tmp_path / "Water Lilies (1906).png", (40, 30))
    page.set_input_files("#painting-input", str(painting))
    sync_api.expect(page.locator("#painting-thumb")).to_be_visible()
    page.wait_for_function("() => document.getElementById('painting-thumb').naturalWidth > 0")
    assert _natural_size(page, "#painting-thumb") == (40, 30)
    sync_api.expect(page.locator("#painting-name")).to_have_text(painting.name)
    sync_api.expect(page.locator("#style-own")).to_be_checked()
    sync_api.expect(page.locator("#painting-notice")).to_be_hidden()
    sync_api.expect(page.locator("#run-button")).to_be_enabled()

    fields = _stylize_sent(page)
    assert fields.get("style_image") == painting.name and "style" not in fields, fields
    assert fields.get("image") == "photo.png"
    _wait_done(page)
    assert _natural_size(page) == (96, 64)
    sync_api.expect(page.locator("#meta-model")).to_contain_text(painting.name)
    assert page.get_attribute("#meta-model", "title") == "universal"
    _screenshot(page, "desktop-own-painting.png")
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename == f"photo_{_safe(painting.stem)}.png" == "photo_Water_Lilies_1906.png"
    saved = tmp_path / "own.png"
    info.value.save_as(saved)
    with Image.open(saved) as im:
        assert im.format == "PNG" and im.size == (96, 64)

    # Back to a named style: the field style is sent again, without the painting, and names the download.
    page.check(f".style-card input[value={json.dumps(named['name'])}]", force=True)
    sync_api.expect(page.locator("#style-own")).not_to_be_checked()
    fields = _stylize_sent(page)
    assert fields.get("style") == named["name"] and "style_image" not in fields, fields
    _wait_done(page)
    # The link is renamed when the new result is shown: expect() waits for it, as it waits for the result.
    sync_api.expect(page.locator("#download")).to_have_attribute("download", f"photo_{_safe(named['name'])}.png")
    # ... and the painting is still on its tile, one click away.
    sync_api.expect(page.locator("#painting-thumb")).to_be_visible()
    page.click("#own-card")
    assert _stylize_sent(page).get("style_image") == painting.name
    _wait_done(page)


def test_a_bad_painting_shows_the_apis_415_in_place_and_the_page_stays_usable(desktop, base_url, tmp_path):
    page = desktop
    named = _named_styles(base_url)[0]
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (48, 32))))
    page.click("label[for=task-stylize]")
    fake = tmp_path / "not-a-painting.png"
    fake.write_text("this is a text file, not a painting\n" * 20)
    page.set_input_files("#painting-input", str(fake))
    # The browser cannot show it; the API is the judge, so it is sent, and the tile says so.
    sync_api.expect(page.locator("#painting-notice")).to_contain_text("could not show")
    sync_api.expect(page.locator("#painting-thumb")).to_be_hidden()
    sync_api.expect(page.locator("#style-own")).to_be_checked()
    assert _stylize_sent(page).get("style_image") == fake.name

    sync_api.expect(page.locator("#error")).to_be_visible(timeout=60_000)
    sync_api.expect(page.locator("#error-title")).to_contain_text("415")
    message = page.inner_text("#error-message")
    assert message.startswith("style_image: "), message  # the API's own words, which name the field
    sync_api.expect(page.locator("#own-card")).to_have_attribute("data-state", "error")
    sync_api.expect(page.locator("#painting-name")).to_contain_text("refused")
    sync_api.expect(page.locator("#painting-notice")).to_be_hidden()  # "could not show" is answered now
    assert page.get_attribute("#painting-input", "aria-invalid") == "true"
    sync_api.expect(page.locator("#busy")).to_be_hidden()
    sync_api.expect(page.locator("#run-button")).to_be_disabled()  # the same painting would be refused again
    sync_api.expect(page.locator("#run-hint")).to_contain_text("could not use this painting")
    _screenshot(page, "desktop-bad-painting.png")

    # A named style works at once ...
    page.check(f".style-card input[value={json.dumps(named['name'])}]", force=True)
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    fields = _stylize_sent(page)
    assert fields.get("style") == named["name"] and "style_image" not in fields, fields
    _wait_done(page)
    assert _natural_size(page) == (48, 32)
    # ... and so does a good painting, which clears the tile's error.
    page.set_input_files("#painting-input", str(_painting(tmp_path / "good.png")))
    sync_api.expect(page.locator("#own-card")).to_have_attribute("data-state", "filled")
    sync_api.expect(page.locator("#painting-notice")).to_be_hidden()
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    assert _stylize_sent(page).get("style_image") == "good.png"
    _wait_done(page)


def test_a_painting_can_be_dropped_on_the_tile_or_pasted_into_it(desktop, tmp_path):
    page = desktop
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (48, 32))))
    page.click("label[for=task-stylize]")
    b64 = base64.b64encode(_painting(tmp_path / "p.png", (40, 30)).read_bytes()).decode()
    send = """([event, b64, name, selector]) => {
        const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const data = new DataTransfer();
        data.items.add(new File([bytes], name, { type: "image/png" }));
        const target = selector ? document.querySelector(selector) : document.activeElement;
        const ev = event === "paste"
            ? new ClipboardEvent("paste", { clipboardData: data, bubbles: true, cancelable: true })
            : new DragEvent(event, { dataTransfer: data, bubbles: true, cancelable: true });
        target.dispatchEvent(ev);
    }"""
    page.evaluate(send, ["dragenter", b64, "dropped painting.png", "#own-card .own-thumb"])
    page.evaluate(send, ["dragover", b64, "dropped painting.png", "#own-card .own-thumb"])
    sync_api.expect(page.locator(".own-overlay")).to_be_visible()
    sync_api.expect(page.locator(".drop-overlay")).to_be_hidden()  # not the photo's drop zone
    page.evaluate(send, ["drop", b64, "dropped painting.png", "#own-card .own-thumb"])
    sync_api.expect(page.locator(".own-overlay")).to_be_hidden()
    sync_api.expect(page.locator("#painting-name")).to_have_text("dropped painting.png")
    sync_api.expect(page.locator("#painting-thumb")).to_be_visible()
    sync_api.expect(page.locator("#source-name")).to_have_text("photo.png")  # the photo is unchanged

    # Pasted with the tile focused, a clipboard image is the painting; with the focus elsewhere, the photo.
    page.focus("#style-own")
    page.evaluate(send, ["paste", b64, "image.png", None])
    sync_api.expect(page.locator("#painting-name")).to_have_text("painting.png")
    sync_api.expect(page.locator("#source-name")).to_have_text("photo.png")
    page.focus("#run-button")
    page.evaluate(send, ["paste", b64, "image.png", None])
    sync_api.expect(page.locator("#source-name")).to_have_text("pasted.png")
    sync_api.expect(page.locator("#painting-name")).to_have_text("painting.png")
    sync_api.expect(page.locator("#style-own")).to_be_checked()
    assert _stylize_sent(page).get("style_image") == "painting.png"
    _wait_done(page)
    assert page.get_attribute("#download", "download") == "pasted_painting.png"


def test_the_painting_tile_is_labelled_and_opens_its_picker_by_mouse_and_keyboard(desktop, tmp_path):
    page = desktop
    # Playwright intercepts file choosers while a listener is on, and turns that on and off asynchronously:
    # one listener for the whole test keeps it on, so no chooser slips past expect_file_chooser.
    page.on("filechooser", lambda chooser: None)
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (48, 32))))
    page.click("label[for=task-stylize]")
    sync_api.expect(page.get_by_role("radio", name="Your own painting")).to_be_visible()
    sync_api.expect(page.get_by_role("button", name="Choose a painting file")).to_be_attached()
    sync_api.expect(page.locator("#run-button")).to_be_enabled()  # a named style is chosen by default

    with page.expect_file_chooser() as chooser:  # a click on the empty tile opens the picker
        page.click("#own-card")
    sync_api.expect(page.locator("#style-own")).to_be_checked()
    sync_api.expect(page.locator("#run-button")).to_be_disabled()  # chosen, but no painting yet
    sync_api.expect(page.locator("#run-hint")).to_contain_text("Your own painting")
    chooser.value.set_files(str(_painting(tmp_path / "first.png")))
    sync_api.expect(page.locator("#painting-name")).to_have_text("first.png")
    sync_api.expect(page.locator("#run-button")).to_be_enabled()

    # Keyboard: arrows move through the styles as a radio group; Enter on the tile picks another painting.
    page.focus("#style-own")
    page.keyboard.press("ArrowRight")
    sync_api.expect(page.locator("#style-own")).not_to_be_checked()
    page.keyboard.press("ArrowLeft")
    sync_api.expect(page.locator("#style-own")).to_be_checked()
    with page.expect_file_chooser() as chooser:
        page.keyboard.press("Enter")
    chooser.value.set_files(str(_painting(tmp_path / "second.png")))
    sync_api.expect(page.locator("#painting-name")).to_have_text("second.png")
    page.keyboard.press("Tab")  # from the tile's radio to its picker, which shows its focus on the tile
    assert page.evaluate("document.activeElement.id") == "painting-input"
    sync_api.expect(page.locator("#own-card .own-card-body")).to_have_css("box-shadow", re.compile(r"rgba?\("))


def test_photo_and_painting_too_large_together_for_the_gateway_offer_a_smaller_copy(browser, base_url, tmp_path):
    """A deployment that caps its responses (Lambda, API Gateway: 6 MB) caps a request too, base64 included: a
    photo and a painting sent together must fit it. Here the cap is made small through /health's limits."""
    health = _get_json(base_url + "health")
    cap = 40_000
    health["limits"].update(max_response_bytes=cap, result_bucket=True)
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.route("**/health", lambda route: route.fulfill(status=200, content_type="application/json",
                                                         body=json.dumps(health)))
    page.route(base_url, _with_csp)
    page.goto(base_url)
    page.wait_for_function("() => document.getElementById('api-state').dataset.state === 'ok'")
    page.set_input_files("#file-input", str(_photo(tmp_path / "photo.png", (48, 32))))
    page.click("label[for=task-stylize]")
    noise = Image.frombytes("RGB", (120, 120), os.urandom(120 * 120 * 3))
    painting = tmp_path / "noisy.png"
    noise.save(painting)
    assert painting.stat().st_size * 4 / 3 > cap
    page.set_input_files("#painting-input", str(painting))
    notice = page.locator("#painting-notice")
    sync_api.expect(notice).to_be_visible()
    sync_api.expect(notice).to_contain_text(f"{cap:,} bytes")
    sync_api.expect(page.locator("#run-button")).to_be_disabled()
    page.click("#painting-fix")
    sync_api.expect(notice).to_be_hidden()
    sync_api.expect(page.locator("#run-button")).to_be_enabled()
    sent = page.evaluate("() => document.getElementById('painting-name').title")
    assert sent.startswith("noisy."), sent  # the copy keeps the painting's name for the download
    fields = _stylize_sent(page)
    assert fields["style_image"].startswith("noisy."), fields
    _wait_done(page)
    assert page.get_attribute("#download", "download") == "photo_noisy.png"
    context.close()
