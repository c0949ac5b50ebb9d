"""A model folder that holds only its card, and a local HTTP server with its release assets
(``Testing/test_release.py``, the panel's download in ``Testing/test_slicer_widget.py``)."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
import urllib.request
from pathlib import Path

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
    """A bounded HTTP server thread: ``modes[name]`` is "whole", "truncated", "altered" or
    "slow"."""

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
                if mode == "slow":  # 100 bytes every 50 ms, as over a poor connection
                    for start in range(0, len(body), 100):
                        if owner._stop.is_set():
                            break
                        self.wfile.write(body[start:start + 100])
                        self.wfile.flush()
                        time.sleep(0.05)
                else:
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


def left_in(cache: Path) -> list:
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []
