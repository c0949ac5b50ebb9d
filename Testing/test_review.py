"""``femurseg review`` (FemurSeg/FemurSegReview): the session's checks and saves, the safety
rules of the server, and the page in a real (headless) Chromium.

The session tests need only the core. The server tests need the ``[review]`` extra
(trame-slicer); the browser tests also need Debian's ``chromium`` and Playwright's Python
package (which drives the system Chromium; it cannot download browsers here). Each skips with
its reason when what it needs is absent. Servers bind 127.0.0.1 (or another loopback address)
on a free port, stop when their test ends (and by themselves after 120 s without a browser),
and every wait has a time-out.
"""

from __future__ import annotations

import contextlib

import importlib.util
import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from FemurSegLib import images, postprocess, writers
from FemurSegLib.errors import InputError, OutputExistsError
from FemurSegLib.phantom import make_phantom
from FemurSegLib.segments import LEFT_FEMUR_COLOR, RIGHT_FEMUR_COLOR, femur_segments

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "FemurSeg"))
from FemurSegReview import session as review_session  # noqa: E402

HAVE_TRAME = importlib.util.find_spec("trame_slicer") is not None
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None
needs_review = pytest.mark.skipif(not HAVE_TRAME, reason="needs the [review] extra "
                                  "(pip install 'femurseg[review]'): trame-slicer is missing")
needs_browser = pytest.mark.skipif(
    not (HAVE_TRAME and CHROMIUM and HAVE_PLAYWRIGHT),
    reason="needs the [review] extra, Debian's chromium (apt-get install chromium) and "
           "Playwright's Python package (pip install playwright)")

SPLIT = femur_segments(True)
#: The coronal slices the test probability map makes uncertain (LIP: coronal = array axis 0).
MOST_UNCERTAIN, HALF_UNCERTAIN = 14, 12


# ----------------------------------------------------------------------------------------------
# fixtures: a small phantom, its segmentation and a probability map with known uncertain slices


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    folder = tmp_path_factory.mktemp("review")
    ph = make_phantom(seed=0, size=(192, 192, 24), spacing=(1.822, 1.822, 8.667))
    image_path = folder / "hip.nii.gz"
    sitk.WriteImage(ph.image, str(image_path))
    labels, _ = postprocess.split_femurs(sitk.GetArrayFromImage(ph.femur) > 0, ph.image)
    seg_path = folder / "hip.seg.nrrd"
    writers.write_seg_nrrd(images.array_to_image(labels, ph.image), SPLIT, seg_path)
    prob = np.where(labels > 0, 0.97, 0.0).astype(np.float32)
    prob[MOST_UNCERTAIN][labels[MOST_UNCERTAIN] > 0] = 0.6      # every femur voxel uncertain
    half = np.flatnonzero(labels[HALF_UNCERTAIN].ravel() > 0)
    plane = prob[HALF_UNCERTAIN].ravel()
    plane[half[::2]] = 0.4                                      # every other one uncertain
    prob[HALF_UNCERTAIN] = plane.reshape(prob[HALF_UNCERTAIN].shape)
    prob_path = folder / "hip_prob.nii.gz"
    sitk.WriteImage(images.array_to_image(prob, ph.image), str(prob_path))
    return {"folder": folder, "image": image_path, "seg": seg_path, "prob": prob_path,
            "labels": labels, "grid": ph.image,
            "half_share": len(half[::2]) / len(half)}


def snapshot(folder: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# ----------------------------------------------------------------------------------------------
# the session: checks before the server starts, and saving


def test_session_lists_the_slices_to_check(case, tmp_path):
    s = review_session.open_session(case["image"], case["seg"], output_dir=tmp_path / "out",
                                    probabilities=case["prob"])
    assert s.coronal_array_axis == 0 and s.slice_letter == "k"
    got = [(c.index, round(c.uncertain_share, 4)) for c in s.slices_to_check()]
    assert got == [(MOST_UNCERTAIN, 1.0), (HALF_UNCERTAIN, round(case["half_share"], 4))]
    assert [sp.name for sp in s.segments] == ["Right femur", "Left femur"]
    assert [sp.terminology for sp in s.segments] == [sp.terminology for sp in SPLIT]
    assert not (tmp_path / "out").exists()  # nothing written before a save


def test_session_save_keeps_names_colours_terminology_and_grid(case, tmp_path):
    s = review_session.open_session(case["image"], case["seg"], output_dir=tmp_path / "out")
    edited = case["labels"].copy()
    edited[MOST_UNCERTAIN, 5:9, 5:9] = 2  # 16 voxels of "Left femur"
    written = s.save(edited)
    target = tmp_path / "out" / "hip.seg.nrrd"
    assert sorted(p.name for p in written) == ["Left_femur.stl", "Right_femur.stl",
                                               "hip.seg.nrrd", "volumes.json"]
    saved = sitk.ReadImage(str(target))
    assert images.grid_mismatch(saved, case["grid"]) == ""
    assert np.array_equal(sitk.GetArrayFromImage(saved), edited)
    segs = slicerio.read_segmentation(str(target), skip_voxels=True)["segments"]
    assert [(x["name"], x["labelValue"], x["color"], x["terminology"]) for x in segs] == \
        [(sp.name, sp.value, list(sp.color), sp.terminology) for sp in SPLIT]
    volumes = json.loads((tmp_path / "out" / "volumes.json").read_text())
    assert volumes["segments"][1]["voxel_count"] == int((edited == 2).sum())
    # a second save of the same session replaces its own files; nothing else appears
    edited[MOST_UNCERTAIN, 5:9, 5:9] = 0
    before = set(snapshot(tmp_path))
    s.save(edited)
    assert set(snapshot(tmp_path)) == before
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(target))), edited)


def test_session_save_drops_the_surface_of_an_emptied_segment(case, tmp_path):
    s = review_session.open_session(case["image"], case["seg"], output_dir=tmp_path / "out")
    s.save(case["labels"])
    emptied = np.where(case["labels"] == 2, 0, case["labels"]).astype(np.uint8)
    s.save(emptied)
    assert sorted(p.name for p in (tmp_path / "out" / "stl").iterdir()) == ["Right_femur.stl"]


def test_session_refuses_another_grid(case, tmp_path):
    other = sitk.Image(case["grid"].GetSize(), sitk.sitkUInt8)
    other.CopyInformation(case["grid"])
    other.SetOrigin(tuple(o + 2.0 for o in case["grid"].GetOrigin()))
    bad = tmp_path / "shifted.seg.nrrd"
    writers.write_seg_nrrd(other, SPLIT, bad)
    with pytest.raises(InputError) as err:
        review_session.open_session(case["image"], bad, output_dir=tmp_path / "out")
    assert str(err.value).startswith("segmentation shifted.seg.nrrd is not on the image grid: "
                                     "origin ")


@pytest.mark.parametrize("content, message", [
    (b"not a nrrd file at all\n", "cannot read segmentation broken.seg.nrrd: "),
    (b"NRRD0004\ntype: uchar\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n\n\x00", None),
])
def test_session_refuses_a_broken_segmentation(case, tmp_path, content, message):
    bad = tmp_path / "broken.seg.nrrd"
    bad.write_bytes(content)
    with pytest.raises(InputError) as err:
        review_session.open_session(case["image"], bad, output_dir=tmp_path / "out")
    text = str(err.value)
    assert "\n" not in text and "broken.seg.nrrd" in text
    if message:
        assert text.startswith(message)


def test_session_never_saves_over_the_original_unless_asked(case, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    original = folder / "hip.seg.nrrd"
    shutil.copy(case["seg"], original)
    with pytest.raises(OutputExistsError) as err:
        review_session.open_session(case["image"], original, output_dir=folder)
    assert str(err.value) == (f"saving would replace the original {original} (choose another "
                              "--output folder, or --overwrite)")
    s = review_session.open_session(case["image"], original, output_dir=folder, overwrite=True)
    assert s.targets["segmentation"] == original


def test_session_refuses_existing_outputs(case, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "volumes.json").write_text("{}")
    with pytest.raises(OutputExistsError) as err:
        review_session.open_session(case["image"], case["seg"], output_dir=tmp_path / "out")
    assert str(err.value) == (f"output exists: {tmp_path / 'out' / 'volumes.json'} (use "
                              "--overwrite to replace it)")


def test_default_output_folder_is_beside_the_segmentation(case):
    s = review_session.open_session(case["image"], case["seg"])
    assert s.output_dir == case["seg"].parent / "hip_review"


# ----------------------------------------------------------------------------------------------
# the command line: one error line before any server


def _review_registered() -> bool:
    from FemurSegLib import cli

    return any(getattr(r, "__module__", "") == "FemurSegReview.command"
               for r in cli._added_commands())


needs_command = pytest.mark.skipif(not _review_registered(), reason="the femurseg.commands "
                                   "entry point of femurseg review is not installed (reinstall "
                                   "the project: pip install -e .)")


@needs_command
@pytest.mark.parametrize("which, message", [
    ("shifted", "error: segmentation shifted.seg.nrrd is not on the image grid: origin "),
    ("missing", "error: segmentation not found: "),
    ("notseg", "error: segmentation must be a .seg.nrrd file: hip.nii.gz"),
])
def test_cli_bad_segmentation_is_one_error_line(case, tmp_path, capsys, which, message):
    from FemurSegLib import cli

    if which == "shifted":
        other = sitk.Image(case["grid"].GetSize(), sitk.sitkUInt8)
        other.CopyInformation(case["grid"])
        other.SetOrigin(tuple(o + 2.0 for o in case["grid"].GetOrigin()))
        seg = tmp_path / "shifted.seg.nrrd"
        writers.write_seg_nrrd(other, SPLIT, seg)
    elif which == "missing":
        seg = tmp_path / "gone.seg.nrrd"
    else:
        seg = case["image"]
    code = cli.main(["review", str(case["image"]), str(seg), "--no-browser",
                     "-o", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(message), err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------
# the server (subprocess) and its safety rules


class Review:
    """``femurseg review`` in a subprocess; the address comes from its first output line."""

    def __init__(self, args, *, cwd: Path):
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO / "FemurSeg"), str(REPO), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "FemurSegLib.cli", "review", *map(str, args),
             "--no-browser", "--port", "0", "--idle-timeout", "120"],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.lines: "queue.Queue[str]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self.wait_for(r"(http://\S+)", 90.0).group(1)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise AssertionError(f"femurseg review ended with {self.proc.returncode}")
                continue
            found = re.search(pattern, line)
            if found:
                return found
        raise AssertionError(f"no line matching {pattern!r} within {seconds} s")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)


def fetch(url: str, headers=None):
    """(status, headers, body) of a GET, errors included; never follows redirects."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(request, timeout=15) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def served(case, tmp_path):
    review = Review([case["image"], case["seg"], "--probabilities", case["prob"],
                     "-o", tmp_path / "out"], cwd=tmp_path)
    yield review
    review.stop()


@pytest.mark.slow
@needs_review
@needs_command
def test_server_binds_localhost_and_serves_no_data_file(served, case):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", served.url)
    status, _, body = fetch(served.url + "index.html")
    assert status == 200 and b"<html" in body.lower()
    # another Host header (DNS rebinding onto 127.0.0.1) is refused
    assert fetch(served.url + "index.html", {"Host": "attacker.example"})[0] == 403
    # the image, the segmentation and the probability map are never served, by any path
    data = {p.read_bytes() for p in (case["image"], case["seg"], case["prob"])}
    for name in (case["image"].name, case["seg"].name, case["prob"].name):
        for path in (name, f"../{name}", f"%2e%2e/{name}", f"..%2f{name}",
                     f"{case['folder'].name}/{name}", str(case["folder"] / name).lstrip("/"),
                     f"trame_slicer_2.0.0/../../{name}"):
            status, _, body = fetch(served.url + path)
            assert body not in data, path
            assert status in (403, 404), (path, status)


@pytest.mark.slow
@needs_review
@needs_command
def test_other_host_needs_the_one_time_token(case, tmp_path):
    review = Review([case["image"], case["seg"], "-o", tmp_path / "out", "--host",
                     "127.0.0.2"], cwd=tmp_path)
    try:
        found = re.fullmatch(r"(http://127\.0\.0\.2:\d+/)\?token=([\w-]{20,})", review.url)
        assert found, review.url
        base, token = found.groups()
        assert fetch(base)[0] == 403
        assert fetch(base + "index.html")[0] == 403
        assert fetch(base + "ws")[0] == 403
        assert fetch(base + "index.html?token=" + "x" * len(token))[0] == 403
        status, headers, body = fetch(base + "index.html?token=" + token)
        assert status == 200 and b"<html" in body.lower()
        cookie = headers["Set-Cookie"].split(";")[0]
        assert cookie == f"femurseg_review_token={token}"
        assert fetch(base + "index.html", {"Cookie": cookie})[0] == 200
        assert fetch(base + "index.html", {"Cookie": "femurseg_review_token=nope"})[0] == 403
    finally:
        review.stop()
    # a second start prints another token
    again = Review([case["image"], case["seg"], "-o", tmp_path / "out2", "--host",
                    "127.0.0.2"], cwd=tmp_path)
    try:
        assert again.url.split("token=")[1] != token
    finally:
        again.stop()


# ----------------------------------------------------------------------------------------------
# the page in headless Chromium: views drawn, paint and erase strokes, undo/redo, save


def colour_pixels(png: bytes, rgb, hue_tolerance: float = 15.0) -> np.ndarray:
    """(row, column) of the clearly coloured pixels of a PNG whose hue is within
    ``hue_tolerance`` degrees of ``rgb``'s (0..1): the views arrive as lossy images, blended
    with the grey image where a segment is filled."""
    import colorsys

    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255.0
    top, low = pixels.max(axis=2), pixels.min(axis=2)
    chroma = top - low
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        hue = np.where(top == r, (g - b) / chroma % 6,
                       np.where(top == g, (b - r) / chroma + 2, (r - g) / chroma + 4)) * 60.0
    target = colorsys.rgb_to_hsv(*rgb)[0] * 360.0
    distance = np.abs((hue - target + 180.0) % 360.0 - 180.0)
    return np.argwhere((chroma > 0.25) & (top > 0.3) & (distance < hue_tolerance))


def drag(page, box, start, end, steps: int = 12):
    page.mouse.move(box["x"] + start[0], box["y"] + start[1])
    page.mouse.down()
    for n in range(1, steps + 1):
        f = n / steps
        page.mouse.move(box["x"] + start[0] + f * (end[0] - start[0]),
                        box["y"] + start[1] + f * (end[1] - start[1]))
        time.sleep(0.05)
    page.mouse.up()
    time.sleep(1.0)


def settled_screenshot(locator, seconds: float = 60.0, least: float = 4.0) -> bytes:
    """A screenshot of ``locator`` once the views have settled: at least ``least`` seconds after
    the call (the views are fitted after connecting, up to 3 s, and redrawn), then until two
    screenshots half a second apart are the same (a busy machine redraws late), at most
    ``seconds``; the last one either way, for the assertions to judge."""
    time.sleep(least)
    deadline = time.monotonic() + seconds
    shot = locator.screenshot()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        again = locator.screenshot()
        if again == shot:
            return again
        shot = again
    return shot


def choose(page, button: str) -> None:
    """Click an effect button and wait until the server has taken it (the button shows it)."""
    page.click(button)
    page.wait_for_selector(f"{button}.v-btn--active")
    time.sleep(0.5)


def saved_labels(path: Path, grid: sitk.Image) -> np.ndarray:
    image = sitk.ReadImage(str(path))
    assert images.grid_mismatch(image, grid) == ""
    return sitk.GetArrayFromImage(image)


@contextlib.contextmanager
def chromium_page(url: str):
    """A page of headless system Chromium (Playwright) at ``url``, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"],
                                    timeout=60_000)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(60_000)
            page.goto(url)
            yield page
        finally:
            browser.close()


def wait_text(page, selector: str, pattern: str, seconds: float = 60.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        text = page.inner_text(selector)
        if re.search(pattern, text):
            return text
        time.sleep(0.25)
    raise AssertionError(f"{selector} never matched {pattern!r}: {page.inner_text(selector)!r}")


@pytest.mark.slow
@needs_browser
@needs_command
def test_page_draws_edits_and_saves(served, case, tmp_path):
    out = tmp_path / "out"
    shots = tmp_path / "shots"  # the test's own screenshots (kept for a failing run)
    shots.mkdir()
    before = snapshot(tmp_path)
    original = case["labels"]
    with chromium_page(served.url) as page:
        page.wait_for_selector("#views img.image-display-area")
        items = page.locator("#slices-to-check .slice-item")
        items.first.wait_for()
        assert [t.split("\n")[0] for t in items.all_inner_texts()] == [
            f"k = {MOST_UNCERTAIN}", f"k = {HALF_UNCERTAIN}"]
        items.first.click()
        views = page.locator("#views")
        shot = settled_screenshot(views)
        assert len(colour_pixels(shot, RIGHT_FEMUR_COLOR)) > 200
        assert len(colour_pixels(shot, LEFT_FEMUR_COLOR)) > 200
        grey = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
            io.BytesIO(shot)).convert("L"), dtype=float)
        assert grey.std() > 20  # not blank

        coronal = page.locator(".remote-controlled-area").first
        box = coronal.bounding_box()
        coronal_png = coronal.screenshot(path=str(shots / "coronal.png"))
        views.screenshot(path=str(shots / "views.png"))
        right = colour_pixels(coronal_png, RIGHT_FEMUR_COLOR)
        left = colour_pixels(coronal_png, LEFT_FEMUR_COLOR)
        assert len(right) > 20 and len(left) > 20, "both femurs in the coronal view"
        r_y, r_x = right.mean(axis=0)
        l_y, l_x = left.mean(axis=0)
        assert r_x < l_x  # radiological view: the patient's right on the screen's left
        # paint "Right femur" between the femurs, then erase across the right femur
        choose(page, "#effect-paint")
        mid = (r_x + l_x) / 2.0
        drag(page, box, (mid - 15, r_y), (mid + 15, r_y))
        choose(page, "#effect-erase")
        drag(page, box, (r_x - 6, r_y), (r_x + 6, r_y))
        choose(page, "#effect-none")
        page.click("#undo")                      # the erase undone ...
        page.wait_for_selector("#redo:not([disabled])")
        page.click("#save")
        wait_text(page, "#save-status", r"saved 4 files")
        first = saved_labels(out / "hip.seg.nrrd", case["grid"])
        page.click("#redo")                      # ... and done again
        page.wait_for_selector("#redo[disabled]")  # the server has redone it
        page.click("#save")
        wait_text(page, "#save-status", r"saved 4 files.*")
        deadline = time.monotonic() + 30
        while (time.monotonic() < deadline and
               np.array_equal(saved_labels(out / "hip.seg.nrrd", case["grid"]), first)):
            time.sleep(0.25)
        second = saved_labels(out / "hip.seg.nrrd", case["grid"])
        views.screenshot(path=str(shots / "views-saved.png"))

    def changed_slices(a, b):
        return sorted(set(np.argwhere(a != b)[:, 0].tolist()))

    # the first save: only the paint stroke, in the slice jumped to, between the femurs
    added = (first == 1) & (original == 0)
    assert changed_slices(original, first) == [MOST_UNCERTAIN]
    assert added.sum() > 10 and not ((first == 0) & (original > 0)).any()
    cols = np.argwhere(added)[:, 2]
    right_cols = np.argwhere(original[MOST_UNCERTAIN] == 1)[:, 1]
    left_cols = np.argwhere(original[MOST_UNCERTAIN] == 2)[:, 1]
    assert right_cols.max() < cols.min() and cols.max() < left_cols.min()
    # the second save: the erase is back, taken from the right femur only, in the same slice
    removed = (second == 0) & (original > 0)
    assert changed_slices(original, second) == [MOST_UNCERTAIN]
    assert removed.sum() > 3 and set(np.unique(original[removed])) == {1}
    assert np.array_equal(second[added], first[added])
    # nothing was written outside the output folder
    new = {p for p in set(snapshot(tmp_path)) - set(before) if shots not in p.parents}
    assert new and all(out in p.parents for p in new), sorted(new)
    assert sorted(p.relative_to(out).as_posix() for p in new) == [
        "hip.seg.nrrd", "stl/Left_femur.stl", "stl/Right_femur.stl", "volumes.json"]
    # the saved file opens in Slicer (slicer-core) on the image's grid
    slicer_checks(out / "hip.seg.nrrd", case["image"], second)


def slicer_checks(seg_path: Path, image_path: Path, expected: np.ndarray) -> None:
    try:
        import slicer
    except ImportError:
        pytest.skip("needs the slicer-core wheel for the Slicer read-back")
    from FemurSegMRMLLib import scene as scene_nodes
    from FemurSegMRMLLib import volumes

    scene = slicer.vtkMRMLScene()
    volume = volumes.image_to_volume_node(sitk.ReadImage(str(image_path)), scene, "hip")
    node = scene_nodes.load_segmentation(seg_path, scene, volume, closed_surface=False)
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Right femur", "Left femur"]
    spacing = np.prod(sitk.ReadImage(str(image_path)).GetSpacing())
    for value, sid in ((1, "Right_femur"), (2, "Left_femur")):
        assert scene_nodes.segment_voxel_volume_mm3(node, sid) == pytest.approx(
            (expected == value).sum() * spacing, rel=1e-6)


@pytest.mark.slow
@needs_browser
@needs_command
def test_page_runs_the_model_with_progress(case, tmp_path):
    """Without SEGMENTATION the page runs the bundled model (the `femurseg segment` path)."""

    from FemurSegLib.inference import Segmenter
    from FemurSegLib.modelfolder import find_model
    from FemurSegLib.plausibility import warning_line
    from FemurSegLib.uncertainty import slices_to_check

    review = Review([case["image"], "-o", tmp_path / "out"], cwd=tmp_path)
    try:
        with chromium_page(review.url) as page:
            page.wait_for_selector("#run-model")
            assert page.is_disabled("#save")
            page.click("#run-model")
            page.wait_for_selector("#model-progress")
            wait_text(page, "#model-progress-text", r"^done \(100%\)$", 300.0)
            page.wait_for_selector("#run-model", state="detached")
            slices = [t.split("\n")[0] for t in
                      page.locator("#slices-to-check .slice-item").all_inner_texts()]
            warnings = page.locator(".review-warning").all_inner_texts()
            page.click("#save")
            wait_text(page, "#save-status", r"saved \d+ files")
    finally:
        review.stop()
    segmenter = Segmenter.from_folder(find_model(None))
    image = sitk.ReadImage(str(case["image"]))
    result = segmenter.segment(image, keep_passes=True)
    problems, cause = segmenter.plausibility(image, result)
    expected = sitk.GetArrayFromImage(result.labelmap)
    saved = saved_labels(tmp_path / "out" / "hip.seg.nrrd", case["grid"])
    assert np.mean(saved == expected) > 0.999 and (saved > 0).sum() > 1000
    assert warnings == ([warning_line("hip.nii.gz", problems, cause)] if problems else [])
    # the bundled model runs flip TTA on the CPU: where its two passes disagree counts too
    assert result.flipped_probability is not None
    want = slices_to_check(sitk.GetArrayFromImage(result.probability), 0,
                           plain=result.plain_probability, flipped=result.flipped_probability,
                           threshold=result.threshold)
    assert slices == [f"k = {s.index}" for s in want] and slices


# ----------------------------------------------------------------------------------------------
# the app in this process (no browser): Slicer's smoothing, the export, the model-run warning


@pytest.fixture
def app_on(case, tmp_path):
    from FemurSegReview.server import ReviewApp

    def make(seg=True, **kwargs):
        s = review_session.open_session(case["image"], case["seg"] if seg else None,
                                        output_dir=tmp_path / "out",
                                        probabilities=case["prob"] if seg else None)
        return ReviewApp(s, **kwargs)
    return make


@pytest.mark.slow
@needs_review
def test_app_exports_the_segmentation_unchanged_and_smooths(app_on, case, tmp_path):
    spiky = case["labels"].copy()
    spiky[MOST_UNCERTAIN, 3, 3] = 1          # one stray voxel far from the femurs
    seg = tmp_path / "spiky.seg.nrrd"
    writers.write_seg_nrrd(images.array_to_image(spiky, case["grid"]), SPLIT, seg)
    app = app_on()
    assert np.array_equal(app.edited_labels(), case["labels"])  # Slicer's read, then export
    app.session.segmentation_path = seg
    app._load_segmentation(seg)
    assert np.array_equal(app.edited_labels(), spiky)
    app.select_segment("Right_femur")
    app.smooth_segment()                     # Slicer's Smoothing effect, median 3 mm
    smoothed = app.edited_labels()
    assert smoothed[MOST_UNCERTAIN, 3, 3] == 0
    assert np.array_equal(smoothed == 2, spiky == 2)  # the other segment is untouched
    assert app.state.can_undo
    app.undo()
    assert np.array_equal(app.edited_labels(), spiky)
    app.redo()
    assert np.array_equal(app.edited_labels(), smoothed)
    app.jump_to_slice(MOST_UNCERTAIN)
    assert app.state.current_slice == MOST_UNCERTAIN


class FakeSegmenter:
    """A segmenter whose result is the phantom's femurs and whose plausibility check fails."""

    def __init__(self, labels, grid):
        self.labels, self.grid = labels, grid

    def segment(self, image, progress=lambda f, m: None, keep_passes=False):
        from FemurSegLib.inference import Result

        for f in (0.0, 0.5, 1.0):
            progress(f, "network")
        labelmap = images.array_to_image(self.labels, self.grid)
        prob = images.array_to_image((self.labels > 0).astype(np.float32) * 0.7, self.grid)
        return Result(labelmap=labelmap, probability=prob, segments=SPLIT, split=True,
                      threshold=0.5)

    def plausibility(self, image, result):
        return ["Left femur volume 0.1 ml is far outside the training range"], "not a T1 scan"


@pytest.mark.slow
@needs_review
def test_app_model_run_shows_the_plausibility_warning(app_on, case):
    import asyncio

    from FemurSegLib.plausibility import warning_line

    fake = FakeSegmenter(case["labels"], case["grid"])
    app = app_on(seg=False, segmenter_factory=lambda: fake)
    assert app.state.can_run_model and not app.state.has_segmentation

    async def run():
        await app.run_model()
        await asyncio.sleep(0.1)  # the progress callbacks queued from the worker thread
    asyncio.run(run())
    assert app.state.warnings == [warning_line("hip.nii.gz", *fake.plausibility(None, None))]
    assert app.state.progress == 100 and app.state.progress_text == "done"
    assert app.state.has_segmentation and not app.state.can_run_model
    assert np.array_equal(app.edited_labels(), case["labels"])
    # every femur voxel at 0.7 is uncertain: the slices with femur, as listed by the core
    assert [s["index"] for s in app.state.slices] == sorted(
        set(np.argwhere(case["labels"] > 0)[:, 0].tolist()))[:10]
