"""Virtual GPUs in front of a real, CPU-only Xinference, so the daemon's GPU paths (placement,
vLLM arguments, one load per GPU, learning from memory failures) run against the real server.

An HTTP proxy on a loopback port forwards every request to the server unchanged, except:

- ``GET /status``: each worker also reports ``gpu-0 .. gpu-N`` with the sizes given (what a GPU
  worker's ``/status`` looks like), used memory = ``used_gib`` + what the proxy's launches claim;
- ``POST /v1/models``: ``gpu_idx`` and ``n_gpu`` are taken out (the CPU worker has no GPU to
  give), remembered per uid, and every other argument reaches the engine as the daemon sent it;
- ``GET /v1/models/instances``: each replica of such a launch shows the ``gpu_idx`` it asked for.

With the fake vLLM engine (tests/harness/fake_vllm) on the server, a ``model_engine = "vLLM"``
model then launches, records its engine arguments and fails with a scripted engine message: the
"engine's message injected where no GPU exists" of issue 9.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GiB = 1024**3
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class VirtualGpuProxy:
    def __init__(
        self, target: str, *, gpus_gib: tuple[float, ...] = (47.5,), used_gib: float = 0.5
    ):
        self.target = target.rstrip("/")
        self.gpus_gib = gpus_gib
        self.used_gib = used_gib
        self.placed: dict[str, list[int]] = {}  # uid -> the gpu_idx its launch asked for
        self.launches: list[dict[str, Any]] = []  # every launch body as the daemon sent it
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:  # base signature
                del format, args

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _relay(self, method: str) -> None:
                body = self._body()
                path = self.path
                if method == "POST" and path.split("?")[0] == "/v1/models" and body:
                    body = outer._launch(body)
                code, headers, answer = outer._forward(method, path, body, dict(self.headers))
                if method == "GET" and code == 200:
                    answer = outer._rewrite(path.split("?")[0], answer)
                self.send_response(code)
                for key, value in headers.items():
                    if key.lower() not in _HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def do_GET(self) -> None:
                self._relay("GET")

            def do_POST(self) -> None:
                self._relay("POST")

            def do_DELETE(self) -> None:
                self._relay("DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> VirtualGpuProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _forward(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        clean = {k: v for k, v in headers.items() if k.lower() not in _HOP}
        request = urllib.request.Request(  # noqa: S310  # loopback to the server the test started
            self.target + path, data=body or None, method=method, headers=clean
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=600) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, dict(exc.headers), exc.read()

    def _launch(self, body: bytes) -> bytes:
        doc = json.loads(body)
        with self._lock:
            self.launches.append(dict(doc))
            gpus = doc.pop("gpu_idx", None)
            doc.pop("n_gpu", None)
            doc.pop("worker_ip", None)  # xinference-local ignores it anyway
            if gpus is not None:
                self.placed[str(doc.get("model_uid"))] = list(gpus)
        return json.dumps(doc).encode()

    def _rewrite(self, path: str, answer: bytes) -> bytes:
        try:
            doc = json.loads(answer)
        except ValueError:
            return answer
        if path == "/status":
            for info in (doc.get("workers") or {}).values():
                status = info.setdefault("status", {})
                for i, size in enumerate(self.gpus_gib):
                    total = round(size * GiB)
                    used = round(self.used_gib * GiB)
                    status[f"gpu-{i}"] = {
                        "name": "Virtual GPU (tests/harness/gpu_proxy.py)",
                        "mem_total": total,
                        "mem_used": used,
                        "mem_free": total - used,
                        "gpu_util": 0,
                    }
        elif path == "/v1/models/instances" and isinstance(doc, list):
            with self._lock:
                for item in doc:
                    gpus = self.placed.get(str(item.get("model_uid")))
                    for replica in item.get("replica_statuses") or []:
                        if gpus is not None:
                            replica["gpu_idx"] = gpus
        else:
            return answer
        return json.dumps(doc).encode()
