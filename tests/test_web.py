"""The browser client in a real headless Chromium (Debian's, driven by Playwright): embeddings
computed in the page match Python's, a model whose sha256 differs is refused, and people enrolled
from real photos, or from Chromium's fake camera playing a real photo, are recognised with
detection and alignment done in the page. Screenshots are kept in ``FACEKD_TEST_ARTIFACTS``
(default ``build/test-artifacts/``)."""
from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facekd.cli import main
from tests.conftest import required_resource_missing

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ZOO_STUDENT = REPO / "zoo" / "sface-derived-k60" / "student.pt"


@pytest.fixture(scope="module")
def launch():
    """Start Debian's Chromium headless with extra command-line flags (Playwright cannot download
    browsers here); every browser started is closed at the end of the module."""
    from facekd.web import ORT_DIST, NPM_HINT

    if not CHROMIUM.is_file():
        required_resource_missing(f"no {CHROMIUM}: apt-get install chromium (scripts/system-deps.sh)")
    if not ORT_DIST.is_dir():
        required_resource_missing(f"onnxruntime-web missing: {NPM_HINT}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        started = []

        def start(*flags: str):
            started.append(playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", *flags]))
            return started[-1]

        yield start
        for chromium in started:
            chromium.close()


@pytest.fixture(scope="module")
def browser(launch):
    return launch()


def keep_screenshot(page, name: str) -> Path:
    """Save a screenshot of ``page`` as a test artifact (FACEKD_TEST_ARTIFACTS, default build/test-artifacts/)."""
    from facekd.core.io import atomic_write_bytes

    folder = Path(os.environ.get("FACEKD_TEST_ARTIFACTS") or REPO / "build" / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(folder / name, page.screenshot(full_page=True))


def write_y4m(path: Path, rgb: np.ndarray, frames: int = 10) -> Path:
    """A YUV4MPEG2 (4:2:0) video of ``frames`` copies of one RGB image, as Chromium's
    ``--use-file-for-fake-video-capture`` plays it (looped)."""
    import cv2

    height, width = rgb.shape[:2]
    even = np.ascontiguousarray(rgb[: height - height % 2, : width - width % 2])
    planes = cv2.cvtColor(even, cv2.COLOR_RGB2YUV_I420)  # Y, then U, then V: one 4:2:0 frame
    header = f"YUV4MPEG2 W{even.shape[1]} H{even.shape[0]} F10:1 Ip A1:1 C420jpeg\n".encode()
    path.write_bytes(header + b"".join(b"FRAME\n" + planes.tobytes() for _ in range(frames)))
    return path


@pytest.fixture(scope="module")
def export_dir(facekd_home, tmp_path_factory):
    """The zoo student exported to onnx-fp32 with golden faces (real val faces)."""
    out = tmp_path_factory.mktemp("web") / "export"
    assert main(["--quiet", "export", str(ZOO_STUDENT), "--formats", "onnx-fp32", "--out", str(out),
                 "--data", str(facekd_home), "--teacher", str(facekd_home / "models/sface/sface_fp32.onnx"),
                 "--set", "export.teacher=false"]) == 0
    return out


def open_page(browser, export_dir: Path, detector: Path):
    from facekd.web import make_server, serve_in_background

    server = make_server(export_dir, detector, port=0)
    serve_in_background(server)
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
    return server, page, page.evaluate("window.facekd.ready")


def data_url(path: Path) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def page(browser, export_dir, facekd_home):
    server, page, ready = open_page(browser, export_dir, facekd_home / "models/yunet/yunet_2023mar_int8bq.onnx")
    assert ready is True, ready
    yield page
    page.close()
    server.shutdown()


def test_page_embeddings_match_python_on_the_golden_faces(page, export_dir):
    golden = json.loads((export_dir / "golden" / "golden.json").read_text())
    faces = [item for item in golden["items"] if item["image"].startswith("face_") and "resize" not in item["image"]]
    assert len(faces) == 8
    for item in faces:
        ours = np.asarray(page.evaluate("url => window.facekd.embedAligned(url)", f"/golden/{item['image']}"))
        assert float(ours @ np.asarray(item["embedding"])) >= 0.999, item["image"]


def test_page_shows_the_verified_sha256_and_the_threshold(page, export_dir):
    manifest = json.loads((export_dir / "onnx-fp32" / "manifest.json").read_text())
    status = page.inner_text("#status")
    assert manifest["sha256"] in status and "matches the manifest" in status
    assert page.evaluate("window.facekd.manifest().threshold") == pytest.approx(manifest["threshold"])


def test_page_identifies_at_the_operating_point_like_python_and_java(page, export_dir):
    """The page's rule on the export's identification fixture (real val faces, 100 people enrolled):
    the threshold and every decision agree with Python's, and strangers stay within the FPIR."""
    fixture = json.loads((export_dir / "golden" / "identification.json").read_text())
    assert fixture["expected"]["strangers_borderline"] >= 0 and fixture["expected"]["mated_borderline"] >= 0
    checked = page.evaluate("f => window.facekd.checkIdentificationFixture(f)", fixture)
    assert checked["problems"] == []
    assert checked["threshold"] == pytest.approx(fixture["expected"]["threshold"], abs=1e-12)
    from scipy.stats import binom  # "at most the FPIR" on finite strangers: not significantly above it (5 %)

    assert checked["strangersMatched"] <= binom.ppf(0.95, checked["strangers"], fixture["fpir"])
    assert checked["matedFound"] > 0.8 * checked["mated"]
    assert page.evaluate("window.facekd.policy().warning") is None


def test_a_model_whose_sha256_differs_is_refused(browser, export_dir, facekd_home, tmp_path):
    tampered = tmp_path / "export"
    shutil.copytree(export_dir, tampered)
    with open(tampered / "onnx-fp32" / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    server, page, ready = open_page(browser, tampered, facekd_home / "models/yunet/yunet_2023mar_int8bq.onnx")
    try:
        assert "refusing to run it" in ready["error"]
        assert page.inner_text("#status").startswith("cannot use this model")
    finally:
        page.close()
        server.shutdown()


def test_people_enrolled_from_photos_are_recognised_in_the_page(page, facekd_home):
    from facekd.training.align import FaceAligner
    from facekd.training.checkpoint import load_student
    from facekd.core.data import load_rgb_file
    from facekd.training.evaluate import student_embed_fn

    people = sorted(p for p in (facekd_home / "data/lfw/raw_sample").iterdir() if len(list(p.glob("*.jpg"))) >= 2)[:6]
    assert len(people) == 6
    for person in people:
        first = sorted(person.glob("*.jpg"))[0]
        assert page.evaluate("([n, u]) => window.facekd.enrolUrl(n, u)", [person.name, data_url(first)])["enrolled"]
    for person in people:
        second = sorted(person.glob("*.jpg"))[1]
        result = page.evaluate("url => window.facekd.identifyUrl(url)", data_url(second))
        assert result["matched"] and result["name"] == person.name, (person.name, result)
        assert set(result["times"]) == {"detect", "align", "embed"}
    cells = page.inner_text("#latency").split()
    assert all(float(value) >= 0 for value in cells[-4:])  # detect, align, embed, match shown
    # detection and alignment in the page agree with facekd/training/align.py (OpenCV YuNet + warpAffine)
    aligner = FaceAligner(facekd_home / "models/yunet/yunet_2023mar_int8bq.onnx")
    model, spec, _ = load_student(ZOO_STUDENT)
    embed = student_embed_fn(model, spec)
    for person in people[:3]:
        photo = sorted(person.glob("*.jpg"))[0]
        ours = page.evaluate("url => window.facekd.embedPhotoUrl(url)", data_url(photo))
        image = load_rgb_file(photo)
        theirs = aligner.detect_largest(image)
        assert np.abs(np.asarray(ours["landmarks"]) - theirs).max() < 2.0
        python = embed(np.stack([aligner.align(image)]))[0]
        # OpenCV runs YuNet at the photo's own size padded to 32 (256×256 here), the page at its
        # fixed 640×640: landmarks differ by a fraction of a pixel, embeddings by cos ≈ 0.987
        assert float(np.asarray(ours["embedding"]) @ (python / np.linalg.norm(python))) >= 0.97


def _click_and_read(page, button: str, result: str) -> str:
    """Click a camera button and wait for the page to write its outcome into ``#result``."""
    page.evaluate("id => { document.getElementById(id).textContent = ''; }", result)
    page.click(f"#{button}")
    page.wait_for_function("id => document.getElementById(id).textContent.length > 0", arg=result, timeout=120_000)
    return page.inner_text(f"#{result}")


def test_people_enrolled_from_the_camera_are_recognised(launch, export_dir, facekd_home, tmp_path):
    from facekd.web import make_server, serve_in_background
    from facekd.core.data import load_rgb_file

    people = sorted(p for p in (facekd_home / "data/lfw/raw_sample").iterdir() if len(list(p.glob("*.jpg"))) >= 2)
    person, others = people[6], people[7:10]
    photos = sorted(person.glob("*.jpg"))
    video = write_y4m(tmp_path / "camera.y4m", load_rgb_file(photos[0]))
    chromium = launch("--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                      f"--use-file-for-fake-video-capture={video}")
    server = make_server(export_dir, facekd_home / "models/yunet/yunet_2023mar_int8bq.onnx", port=0)
    serve_in_background(server)
    page = chromium.new_page()
    try:
        page.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        assert page.evaluate("window.facekd.ready") is True
        for other in others:  # a gallery without the person in front of the camera
            photo = data_url(sorted(other.glob("*.jpg"))[0])
            assert page.evaluate("([n, u]) => window.facekd.enrolUrl(n, u)", [other.name, photo])["enrolled"]
        unknown = _click_and_read(page, "identify-camera", "identify-result")
        assert unknown.startswith("unknown (best "), unknown
        assert page.evaluate("[document.getElementById('camera').videoWidth, document.getElementById('camera').hidden]") \
            == [250, False]

        assert _click_and_read(page, "enrol-camera", "enrol-result") == "a person needs a non-empty name"
        page.fill("#name", person.name)
        assert _click_and_read(page, "enrol-camera", "enrol-result") == f"enrolled {person.name}"
        assert person.name in page.inner_text("#gallery")
        # the camera template recognises the person's other photo, and the camera frame itself
        result = page.evaluate("url => window.facekd.identifyUrl(url)", data_url(photos[1]))
        assert result["matched"] and result["name"] == person.name, result
        known = _click_and_read(page, "identify-camera", "identify-result")
        assert known.startswith(f"{person.name} (cosine "), known
        assert float(known.split("cosine ")[1].rstrip(")")) >= 0.99  # the same frame, decoded again
        keep_screenshot(page, "web-camera.png")
    finally:
        page.close()
        server.shutdown()
