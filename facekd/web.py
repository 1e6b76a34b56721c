"""`facekd web EXPORT_DIR`: serve the browser client (web_demo/) on localhost with one exported
ONNX artifact, its manifest, the golden faces and the YuNet detector.

Routes: ``/`` and ``/app.js``, ``/core.js`` (web_demo/), ``/ort/…`` (onnxruntime-web from
web_demo/node_modules, installed from the npm registry by ``npm ci --prefix web_demo``: nothing
comes from a CDN at run time), ``/model/manifest.json`` and ``/model/<file>`` (the artifact),
``/golden/…`` (the export's golden faces), ``/detector.onnx``.
"""
from __future__ import annotations

import functools
import http.server
import mimetypes
import threading
from pathlib import Path
from facekd.core.errors import FacekdError

WEB_ROOT = Path(__file__).resolve().parents[1] / "web_demo"
ORT_DIST = WEB_ROOT / "node_modules" / "onnxruntime-web" / "dist"
STATIC = {"/": "index.html", "/index.html": "index.html", "/app.js": "app.js", "/core.js": "core.js"}
NPM_HINT = "run `npm ci --prefix web_demo` (installs onnxruntime-web from the npm registry)"


class WebError(FacekdError, ValueError):
    """The client cannot be served; the message says what is missing and what to do."""


def _routes(export_dir: Path, artifact: str, detector: Path) -> tuple[dict[str, Path], Path]:
    if not ORT_DIST.is_dir():
        raise WebError(f"onnxruntime-web is not installed under {ORT_DIST}: {NPM_HINT}")
    folder = export_dir / artifact
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise WebError(f"no {manifest}: pass an export folder holding {artifact}/ (made by `facekd export`)")
    if not detector.is_file():
        raise WebError(f"face detector {detector} does not exist: pass --detector yunet.onnx")
    return {"model": folder, "golden": export_dir / "golden", "ort": ORT_DIST}, detector


def float_detector(path: Path) -> bytes:
    """The detector with weight-only DequantizeLinear nodes (YuNet int8bq: blockwise, opset 21)
    folded into float initializers: onnxruntime-web's wasm build refuses those blockwise nodes,
    and the float model computes exactly what the dequantised graph computes."""
    import onnx

    from facekd.training.onnx_graph import fold_dequantized_weights

    model = onnx.load(str(path))
    if not fold_dequantized_weights(model):
        return path.read_bytes()
    return model.SerializeToString()


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Maps the routes above onto files; everything else is 404."""

    def __init__(self, *args, folders: dict[str, Path], detector: Path, **kwargs):
        self.folders, self.detector = folders, detector
        super().__init__(*args, directory=str(WEB_ROOT), **kwargs)

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0].split("#", 1)[0]
        if path in STATIC:
            return str(WEB_ROOT / STATIC[path])
        if path == "/detector.onnx":
            return str(self.detector)  # a float copy made by make_server
        prefix, _, rest = path.lstrip("/").partition("/")
        root = self.folders.get(prefix)
        if root is None or not rest:
            return str(WEB_ROOT / "missing")
        target = (root / rest).resolve()
        return str(target) if target.is_relative_to(root.resolve()) else str(WEB_ROOT / "missing")

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # quiet: the CLI prints the URL once
        return


def _float_copy(detector: Path) -> Path:
    """The float detector, written once per detector file beside the web client (gitignored)."""
    from facekd.core.io import atomic_write_bytes, sha256_file

    target = WEB_ROOT / "node_modules" / ".facekd" / f"detector-{sha256_file(detector)[:16]}.onnx"
    if not target.is_file():
        atomic_write_bytes(target, float_detector(detector))
    return target


def make_server(export_dir: str | Path, detector: str | Path, artifact: str = "onnx-fp32",
                host: str = "127.0.0.1", port: int = 8000) -> http.server.ThreadingHTTPServer:
    folders, detector_path = _routes(Path(export_dir), artifact, Path(detector))
    detector_path = _float_copy(detector_path)
    mimetypes.add_type("application/wasm", ".wasm")
    mimetypes.add_type("text/javascript", ".mjs")
    handler = functools.partial(_Handler, folders=folders, detector=detector_path)
    return http.server.ThreadingHTTPServer((host, port), handler)


def serve_in_background(server: http.server.ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread
