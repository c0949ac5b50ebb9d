"""Model weights as release assets (``FemurSegLib.release``), against a local HTTP server.

The server is a thread of the test on 127.0.0.1 (an ephemeral port), serving each file the way
a test asks: whole, cut off after half its bytes (the connection closes early while the header
announced the whole length), or altered. It stops itself after a bounded time.
"""

from __future__ import annotations

import json
import time

import pytest

from FemurSegLib import modelfolder, release
from FemurSegLib.errors import Cancelled, ModelError
from release_helpers import BUNDLED_CARD, FILES, OPEN, Server, card_only_folder, left_in


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()
    assert not s.thread.is_alive()


def test_release_url_and_the_card_files():
    card = json.loads(BUNDLED_CARD.read_text(encoding="utf-8"))
    assert release.REPOSITORY_URL == "https://github.com/OWNER/SlicerFemurSeg"
    assert release.release_url(card) == ("https://github.com/OWNER/SlicerFemurSeg/releases/"
                                         f"download/femur-t1-coronal-{card['version']}")
    files = release.card_files(card)
    assert [name for name, _ in files] == [f["onnx"] for f in card["folds"]]
    assert [digest for _, digest in files] == [f["onnx_sha256"] for f in card["folds"]]
    both = release.card_files(card, "all")
    assert len(both) == 2 * len(card["folds"]) and both[1][0] == card["folds"][0]["weights"]


def test_download_once_into_the_cache(server, tmp_path):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    path = release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN)
    assert path == cache / "femur-t1-coronal"
    assert left_in(cache) == ["femur-t1-coronal"]
    assert sorted(p.name for p in path.iterdir()) == ["fold_0.onnx", "fold_1.onnx", "model.json"]
    model = modelfolder.load_model(path, need="onnx")  # every file matches the card
    assert [f.onnx.read_bytes() for f in model.folds] == list(FILES.values())
    assert server.requests == ["/releases/download/v/fold_0.onnx",
                               "/releases/download/v/fold_1.onnx"]
    # Downloaded once: the verified copy is used, the server is not asked again.
    assert release.download_model(source, base_url=server.url, cache_dir=cache,
                                  opener=OPEN) == path
    assert len(server.requests) == 2


@pytest.mark.parametrize("cache_exists", [False, True])
def test_truncated_download_is_refused_and_leaves_nothing(server, tmp_path, cache_exists):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    if cache_exists:
        cache.mkdir()
    server.modes["fold_1.onnx"] = "truncated"
    size = len(FILES["fold_1.onnx"])
    with pytest.raises(ModelError) as caught:
        release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN)
    assert str(caught.value) == (
        f"download of fold_1.onnx from {server.url}/fold_1.onnx was truncated ({size // 2} of "
        f"{size} bytes); nothing was installed: check the connection and retry")
    assert left_in(cache) == []
    assert cache.exists() == cache_exists  # a cache folder made for the download goes too


def test_checksum_mismatch_is_refused_and_leaves_nothing(server, tmp_path):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "other-model").mkdir()  # what else is in the cache stays
    server.modes["fold_0.onnx"] = "altered"
    with pytest.raises(ModelError) as caught:
        release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN)
    assert str(caught.value) == (
        f"fold_0.onnx downloaded from {server.url}/fold_0.onnx fails its SHA-256 check (the "
        "model card names another file); nothing was installed")
    assert left_in(cache) == ["other-model"]
    assert server.requests == ["/releases/download/v/fold_0.onnx"]  # stopped at the first


def test_missing_asset_is_one_line(server, tmp_path):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(ModelError) as caught:
        release.download_model(source, base_url=server.url + "/gone", cache_dir=cache,
                               opener=OPEN)
    assert str(caught.value) == (f"cannot download fold_0.onnx from {server.url}/gone/"
                                 "fold_0.onnx: HTTP 404 Not Found")
    assert left_in(cache) == []


def test_a_cached_copy_that_fails_its_check_is_refused_not_replaced(server, tmp_path):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN)
    damaged = cache / "femur-t1-coronal" / "fold_1.onnx"
    damaged.write_bytes(b"not the graph")
    with pytest.raises(ModelError, match=r"^the model cache holds .*femur-t1-coronal, which fails "
                                         r"its check \(model femur-t1-coronal: fold_1\.onnx fails "
                                         r"its SHA-256 check .*\): remove that folder and retry$"):
        release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN)
    assert damaged.read_bytes() == b"not the graph"
    assert len(server.requests) == 2  # nothing downloaded again


def test_needs_download_only_for_a_folder_with_its_card_alone(tmp_path):
    source = card_only_folder(tmp_path)
    assert release.needs_download(source) is True
    assert release.needs_download(source, "weights") is False  # the test card names no .pt
    (source / "fold_0.onnx").write_bytes(FILES["fold_0.onnx"])
    assert release.needs_download(source) is False  # partly there: loading names what is missing
    assert release.needs_download(BUNDLED_CARD.parent) is False  # the bundled model has its files
    assert release.needs_download(tmp_path / "nowhere") is False
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "model.json").write_text("{}")
    assert release.needs_download(tmp_path / "bad") is False  # loading says what is wrong


def test_cancelled_download_leaves_nothing(server, tmp_path):
    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    checks = []
    with pytest.raises(Cancelled, match="^model download cancelled$"):
        release.download_model(source, base_url=server.url, cache_dir=cache, opener=OPEN,
                               is_cancelled=lambda: checks.append(1) or len(checks) > 1)
    assert left_in(cache) == []


def test_model_download_in_a_thread_is_polled(server, tmp_path):
    """What the panel polls from its timer (FemurSegMRMLLib.models.ModelDownload)."""
    from FemurSegMRMLLib.models import ModelDownload

    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    download = ModelDownload(str(source), base_url=server.url, cache_dir=cache, opener=OPEN)
    deadline = time.monotonic() + 30
    while download.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert download.poll() == str(cache / "femur-t1-coronal")
    modelfolder.load_model(cache / "femur-t1-coronal")
    # A failure comes out of poll() as the download's one-line error.
    server.modes["fold_0.onnx"] = "altered"
    other = ModelDownload(str(source), base_url=server.url, cache_dir=tmp_path / "cache2",
                          opener=OPEN)
    other._thread.join(timeout=30)
    with pytest.raises(ModelError, match=r"^fold_0\.onnx downloaded from .* fails its SHA-256 "):
        other.poll()
    assert left_in(tmp_path / "cache2") == []


def test_model_download_cancel_stops_it_and_leaves_nothing(server, tmp_path):
    from FemurSegMRMLLib.models import ModelDownload

    source = card_only_folder(tmp_path)
    cache = tmp_path / "cache"
    server.modes["fold_0.onnx"] = "slow"  # about 2 s
    download = ModelDownload(str(source), base_url=server.url, cache_dir=cache, opener=OPEN)
    deadline = time.monotonic() + 30
    while not server.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    assert download.poll() is None  # still downloading
    start = time.monotonic()
    download.cancel()
    assert time.monotonic() - start < 2.0 and not download._thread.is_alive()
    with pytest.raises(Cancelled, match="^model download cancelled$"):
        download.poll()
    assert left_in(cache) == []
