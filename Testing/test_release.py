"""Model weights as release assets (``FemurSegLib.release``), against a local HTTP server.

The server is a thread of the test on 127.0.0.1 (an ephemeral port), serving each file the way
a test asks: whole, cut off after half its bytes (the connection closes early while the header
announced the whole length), or altered. It stops itself after a bounded time.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from FemurSegLib import modelfolder, release
from FemurSegLib.errors import ModelError

REPO = Path(__file__).resolve().parents[1]
BUNDLED_CARD = REPO / "Resources" / "Models" / "femur-t1-coronal" / "model.json"

#: A proxy from the environment must not stand between the test and its server.
OPEN = urllib.request.build_opener(urllib.request.ProxyHandler({})).open

FILES = {f"fold_{k}.onnx": bytes([k]) * (3000 + 1000 * k) + b"graph" for k in range(2)}


def card_only_folder(root: Path) -> Path:
    """A model folder as a repository for the index keeps it: the card, no weights. The card is
    the bundled model's with two folds naming the test's files and their SHA-256."""
    card = json.loads(BUNDLED_CARD.read_text(encoding="utf-8"))
    card["folds"] = [{"fold": k, "onnx": name, "onnx_sha256": hashlib.sha256(data).hexdigest()}
                     for k, (name, data) in enumerate(FILES.items())]
    folder = root / "card-only" / card["name"]
    folder.mkdir(parents=True)
    (folder / "model.json").write_text(json.dumps(card), encoding="utf-8")
    return folder


class Server:
    """A bounded HTTP server thread: ``modes[name]`` is "whole", "truncated" or "altered"."""

    def __init__(self, seconds: float = 30.0):
        self.modes = {name: "whole" for name in FILES}
        self.requests = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                folder, _, name = self.path.rpartition("/")
                owner.requests.append(self.path)
                if folder != "/releases/download/v" or name not in FILES:
                    self.send_error(404, "Not Found")
                    return
                data = FILES[name]
                mode = owner.modes[name]
                body = data[:-1] + b"X" if mode == "altered" else data
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if mode == "truncated" else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.timeout = 0.1
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/releases/download/v"
        self._stop = threading.Event()
        deadline = time.monotonic() + seconds

        def serve():
            while not self._stop.is_set() and time.monotonic() < deadline:
                self.httpd.handle_request()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()
    assert not s.thread.is_alive()


def left_in(cache: Path) -> list:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


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
