"""A static web page that classifies typed text in the browser with an exported ONNX file.

The page (export/web_page: index.html, app.mjs, clean.mjs) runs the file on ONNX Runtime Web's
WebAssembly backend and tokenizes with the model's own tokenizer.json through tokenizers.js
(the tokenizer of transformers.js, published on its own). The runtime's JS and WASM files come
from the npm packages pinned here, installed once into a local folder and copied into the page
at export time, so the page works from any plain static file server, offline, with no CDN.

    DIR/index.html, app.mjs, clean.mjs   the page; clean.mjs ports the model's cleaning steps
    DIR/<model>.onnx                     the shipped file, unchanged
    DIR/tokenizer.json, tokenizer_config.json, edgebert.json (labels, cleaning, max length),
        config.json (so `edgebert predict` and bench open the page's own file as well)
    DIR/page.json                        which file to load, the runtime versions
    DIR/runtime/                         ORT Web (SIMD WebAssembly) and tokenizers.js
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from bench.files import first_line, read_classifier_meta, write_json_atomic, write_text_atomic
from export.errors import ExportError

WEB_PACKAGES = {"onnxruntime-web": "1.30.0", "@huggingface/tokenizers": "0.2.0"}
RUNTIME_FILES = {
    "onnxruntime-web": (
        "dist/ort.wasm.min.mjs",
        "dist/ort-wasm-simd-threaded.mjs",
        "dist/ort-wasm-simd-threaded.wasm",
    ),
    "@huggingface/tokenizers": ("dist/tokenizers.min.mjs",),
}
PAGE_DIR = Path(__file__).resolve().parent / "web_page"
PAGE_FILES = ("index.html", "app.mjs", "clean.mjs")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# The cleaning steps clean.mjs ports, read from its CLEANERS table (a test checks them against
# bench.cleaning, which export may not import).
BROWSER_CLEAN_STEPS = frozenset(
    re.findall(r"^  (\w+): ", (PAGE_DIR / "clean.mjs").read_text(encoding="utf-8"), re.M)
)


def installed_version(modules: Path, package: str) -> str | None:
    try:
        manifest = json.loads((modules / package / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("version")


def web_runtime(folder: Path) -> Path:
    """`folder/node_modules` holding the pinned packages; `npm install` fills it the first time
    (from the npm registry, the one network a package manager may use)."""
    modules = folder / "node_modules"
    if all(installed_version(modules, p) == v for p, v in WEB_PACKAGES.items()):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise ExportError(
            "--web needs npm (Node.js) once, to fetch "
            + ", ".join(f"{p}@{v}" for p, v in WEB_PACKAGES.items())
            + f" into {folder}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    specs = [f"{p}@{v}" for p, v in WEB_PACKAGES.items()]
    done = subprocess.run(
        [npm, "install", "--prefix", str(folder), "--no-audit", "--no-fund", *specs],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ExportError(f"npm install {' '.join(specs)} failed ({first_line(done.stderr)})")
    return modules


def write_web_page(onnx_path: Path, out_dir: Path, runtime_folder: Path) -> Path:
    """Write the page for `onnx_path` (its tokenizer and edgebert.json beside it) into
    `out_dir`. The file is checked first, so a bad model is refused before npm runs;
    `runtime_folder` is where `web_runtime` keeps the npm packages."""
    if not onnx_path.is_file():
        raise ExportError(f"model not found: {onnx_path}")
    folder = onnx_path.parent
    meta = read_classifier_meta(folder)
    missing = [n for n in TOKENIZER_FILES if not (folder / n).is_file()]
    if missing or not meta.get("labels"):
        raise ExportError(
            f"{onnx_path}: a web page needs {', '.join(TOKENIZER_FILES)} and the label names "
            "(edgebert.json or config.json) beside the .onnx file"
        )
    unported = [s for s in meta["clean"] if s not in BROWSER_CLEAN_STEPS]
    if unported:
        raise ExportError(f"{onnx_path}: cleaning step '{unported[0]}' has no browser version")
    modules = web_runtime(runtime_folder)
    runtime = out_dir / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    for package, files in RUNTIME_FILES.items():
        for name in files:
            shutil.copy(modules / package / name, runtime / Path(name).name)
    for name in PAGE_FILES:
        shutil.copy(PAGE_DIR / name, out_dir / name)
    for name in TOKENIZER_FILES:
        shutil.copy(folder / name, out_dir / name)
    if (folder / "config.json").is_file():  # so predict and bench open the page's file too
        shutil.copy(folder / "config.json", out_dir / "config.json")
    shutil.copy(onnx_path, out_dir / onnx_path.name)
    write_json_atomic(out_dir / "edgebert.json", meta)
    versions = {p: installed_version(modules, p) for p in WEB_PACKAGES}
    write_json_atomic(out_dir / "page.json", {"model": onnx_path.name, "runtime": versions})
    write_text_atomic(out_dir / "README.md", _readme(out_dir))
    return out_dir


def _readme(out_dir: Path) -> str:
    return f"""# Browser classifier (written by `edgebert export --web`)

Serve this folder with any static file server and open the page, for example:

    python -m http.server 8000 --directory {out_dir.resolve()}
    # then open http://localhost:8000/

Everything the page loads is in this folder. It runs single-threaded WebAssembly (SIMD) on a
plain server; a server that sends `Cross-Origin-Opener-Policy: same-origin` and
`Cross-Origin-Embedder-Policy: require-corp` lets ONNX Runtime Web use up to 4 threads.
Scripts on the page can call `await edgebert.classify(["text", ...])`.
"""
