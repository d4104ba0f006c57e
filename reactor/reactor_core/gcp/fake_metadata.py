"""A real HTTP server on loopback that answers like the GCE metadata server (tests only).

    with FakeMetadataServer(SPOT_VM) as server:
        monkeypatch.setenv("GCE_METADATA_HOST", server.host)
        server.set("instance/preempted", "TRUE")
"""

from __future__ import annotations

import http.server
import threading

# What a spot e2-standard-8 answers (paths under computeMetadata/v1/).
SPOT_VM = {
    "instance/name": "reactor-train-1",
    "instance/zone": "projects/123/zones/us-central1-a",
    "instance/machine-type": "projects/123/machineTypes/e2-standard-8",
    "project/project-id": "ironcliw-test",
    "instance/scheduling/provisioning-model": "SPOT",
    "instance/scheduling/preemptible": "TRUE",
    "instance/preempted": "FALSE",
}
ON_DEMAND_VM = {
    **SPOT_VM,
    "instance/scheduling/provisioning-model": "STANDARD",
    "instance/scheduling/preemptible": "FALSE",
}


class FakeMetadataServer:
    def __init__(self, values: dict[str, str] | None = None):
        self.values = dict(values or {})
        self.requests: list[str] = []
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                path = self.path.split("?", 1)[0]
                prefix = "/computeMetadata/v1/"
                with lock:
                    outer.requests.append(path)
                    value = outer.values.get(path[len(prefix) :]) if path.startswith(prefix) else None
                if self.headers.get("Metadata-Flavor") != "Google":
                    return self._reply(403, "Missing Metadata-Flavor:Google header.")
                if value is None:
                    return self._reply(404, "Not found")
                self._reply(200, value)

            def _reply(self, code, body):
                data = body.encode()
                self.send_response(code)
                self.send_header("Metadata-Flavor", "Google")
                self.send_header("Content-Type", "application/text")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        """What GCE_METADATA_HOST should be: host:port, no scheme."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def set(self, path: str, value: str) -> None:
        self.values[path] = value

    def start(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeMetadataServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
