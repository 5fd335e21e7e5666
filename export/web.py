"""A static web page that classifies typed text in the browser with an exported ONNX file.

The page (export/web_page: index.html, app.mjs, clean.mjs) runs the file on ONNX Runtime Web's
WebAssembly backend and tokenizes with the model's own tokenizer.json through tokenizers.js
(the tokenizer of transformers.js, published on its own). The runtime's JS and WASM files come
from the npm packages pinned by the committed lockfile (export/web_runtime), installed once into
a local folder with `npm ci --ignore-scripts` and copied into the page at export time, so the
page works from any plain static file server, offline, with no CDN.

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

from bench.files import (
    FolderLock,
    first_line,
    replace_dir_atomic,
    staging_dir,
    write_json_atomic,
    write_text_atomic,
)
from bench.model_file import read_classifier_meta
from export.errors import ExportError

LOCK_DIR = Path(__file__).resolve().parent / "web_runtime"  # package.json + package-lock.json
LOCK_FILES = ("package.json", "package-lock.json")
WEB_PACKAGES = json.loads((LOCK_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]
NPM_SECONDS = 600
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


def runtime_complete(modules: Path) -> bool:
    """The pinned versions, and every file the page copies, are there (an install that was
    interrupted can leave a package.json without the files)."""
    return all(installed_version(modules, p) == v for p, v in WEB_PACKAGES.items()) and all(
        (modules / package / name).is_file()
        for package, files in RUNTIME_FILES.items()
        for name in files
    )


def web_runtime(folder: Path) -> Path:
    """`folder/node_modules` holding the pinned packages. The first time, `npm ci` installs
    them from the committed lockfile (export/web_runtime: exact versions and integrity
    hashes) with install scripts off, into a staging folder that is swapped in only once
    complete: an interrupted or failed install never leaves a cache that breaks later exports."""
    modules = folder / "node_modules"
    if runtime_complete(modules):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise ExportError(
            "--web needs npm (Node.js) once, to fetch "
            + ", ".join(f"{p}@{v}" for p, v in WEB_PACKAGES.items())
            + f" into {folder}"
        )
    with FolderLock(folder, "web runtime install"):
        if not runtime_complete(modules):  # another export may have installed it meanwhile
            _npm_ci(npm, folder, modules)
    return modules


def _npm_ci(npm: str, folder: Path, modules: Path) -> None:
    staging = staging_dir(modules)
    try:
        for name in LOCK_FILES:
            shutil.copy(LOCK_DIR / name, staging / name)
        command = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"]
        try:
            done = subprocess.run(
                command, cwd=staging, capture_output=True, text=True, timeout=NPM_SECONDS
            )
        except subprocess.TimeoutExpired:
            raise ExportError(
                f"npm ci of the web runtime did not finish within {NPM_SECONDS} s"
            ) from None
        if done.returncode != 0 or not runtime_complete(staging / "node_modules"):
            log = folder / "npm-error.log"
            write_text_atomic(log, done.stdout + done.stderr)
            lines = [line for line in done.stderr.splitlines() if "ERR" in line]
            raise ExportError(
                f"npm ci of the web runtime failed (exit {done.returncode}: "
                f"{first_line(chr(10).join(lines) or done.stderr or 'files missing')}); "
                f"npm's whole output is in {log}"
            )
        replace_dir_atomic(staging / "node_modules", modules)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_web_page(onnx_path: Path, out_dir: Path, runtime_folder: Path) -> Path:
    """Write the page for `onnx_path` (its tokenizer and edgebert.json beside it) into
    `out_dir`. The file is checked first, so a bad model is refused before npm runs;
    `runtime_folder` is where `web_runtime` keeps the npm packages."""
    if not onnx_path.is_file():
        raise ExportError(f"model not found: {onnx_path}")
    folder = onnx_path.parent
    if out_dir.resolve() == folder.resolve():  # the page's files would overwrite the model's
        raise ExportError("--web: write the page into a folder of its own, not the model's")
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
