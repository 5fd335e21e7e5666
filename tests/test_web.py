"""`edgebert export --web`: the shipped INT8 file classifies in headless Chromium, served from
loopback by a plain static file server, as ONNX Runtime does in Python: the same cleaned text,
the same token ids, the same labels."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from bench.cleaning import CLEANERS, make_cleaner
from bench.model_file import write_model_meta
from bench.runtime import open_model
from bench.tokenizer import FastTokenizer
from compress.models.names import cache_dir
from export.web import BROWSER_CLEAN_STEPS, WEB_PACKAGES, installed_version
from tests.browser import CHROMIUM, classify_in_page, open_page, serve_folder
from tests.conftest import integer_dot_products, sample_rows

CLEAN = list(CLEANERS)  # every step the browser ports, in the library's order
TRICKY = [
    "@United flight AA12 was &amp; still is late&#33; see https://t.co/xyz www.delays.com",
    "ｆｕｌｌ－ｗｉｄｔｈ ﬁne\u200bprint\tand\nlines <b>bold</b> &lt;not a tag&gt; &amp",
    "email me@example.com or @user_1 @über_fan (@x) caf\u00e9 \u00ad soft\u2060hyphen  ",
    "İstanbul ΣΊΣΥΦΟΣ straße \u202e reversed \U0001f600 emoji",
]
TEXTS = TRICKY + [r["text"] for r in sample_rows("validation", 200, seed=5)]
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")
needs_runtime = pytest.mark.skipif(
    shutil.which("npm") is None
    and not all(installed_version(cache_dir() / "web" / "node_modules", p) for p in WEB_PACKAGES),
    reason="no npm to fetch the page's runtime, and no runtime fetched before",
)


def test_every_python_cleaning_step_but_lemmatize_has_a_browser_version():
    assert set(BROWSER_CLEAN_STEPS) == set(CLEANERS)


@pytest.fixture(scope="module")
def web_page(varied_model_dir, tmp_path_factory):
    """The varied tiny BERT, trained-on-cleaned-text metadata added, exported with --web."""
    import sys

    from compress.cli import main

    root = tmp_path_factory.mktemp("web")
    model_dir = root / "model"
    shutil.copytree(varied_model_dir, model_dir)
    labels = ["negative", "positive"]
    write_model_meta(model_dir, {"labels": labels, "clean": CLEAN, "max_length": 32})
    texts = root / "texts.txt"
    texts.write_text("\n".join(TEXTS[4:]) + "\n")
    argv = ["edgebert", "export", str(model_dir), "--out", str(root / "onnx"), "--quantize",
            "dynamic", "--texts", str(texts), "--min-label-agreement", "0", "--web",
            str(root / "page")]  # fmt: skip
    old, sys.argv = sys.argv, argv
    try:
        main()
    except SystemExit as exc:
        assert not exc.code, exc.code
    finally:
        sys.argv = old
    return root / "onnx" / "model_dynamic_int8.onnx", root / "page"


@needs_runtime
def test_page_holds_every_file_it_loads(web_page):
    shipped, page = web_page
    assert (page / shipped.name).read_bytes() == shipped.read_bytes()
    names = {p.relative_to(page).as_posix() for p in page.rglob("*") if p.is_file()}
    assert {"index.html", "app.mjs", "clean.mjs", "page.json", "tokenizer.json"} <= names
    assert "runtime/ort-wasm-simd-threaded.wasm" in names
    scripts = " ".join((page / n).read_text() for n in ("index.html", "app.mjs", "clean.mjs"))
    assert not re.search(r"https?://\w", scripts)  # no CDN: nothing loads from elsewhere


@needs_browser
@needs_runtime
def test_browser_reads_and_labels_like_onnx_runtime_in_python(web_page):
    shipped, page = web_page
    reference = open_model(shipped)
    tokenizer = FastTokenizer(shipped.parent)
    clean = make_cleaner(CLEAN)
    python_ids = tokenizer([clean(t) for t in TEXTS], max_length=32)["input_ids"]
    # Batch 1 on both sides: dynamic INT8 picks activation scales per call, so a row's logits
    # depend on the batch it rides in (on this random model, labels move on 4% of rows).
    python_logits = reference.logits([clean(t) for t in TEXTS], batch_size=1)
    with serve_folder(page) as url, open_page(url) as browser:
        assert browser.evaluate("t => edgebert.clean(t)", TRICKY) == [clean(t) for t in TRICKY]
        page_ids = browser.evaluate("t => edgebert.tokenize(t)", TEXTS)
        settings, results = classify_in_page(browser, TEXTS)
        browser.fill("#text", TEXTS[0])
        browser.click("#classify")
        shown = browser.wait_for_selector("#label").inner_text()
    assert settings["threads"] == 1 and settings["simd"] and not settings["cross_origin_isolated"]
    assert page_ids == python_ids
    labels = np.array([r["index"] for r in results])
    python_labels = python_logits.argmax(-1)
    assert 0 < python_labels.sum() < len(TEXTS)  # labels vary, so agreement can fail
    if integer_dot_products():
        assert (labels == python_labels).mean() >= 0.995
        assert np.abs(np.array([r["logits"] for r in results]) - python_logits).max() < 1e-4
    else:  # Python's ORT saturates int8 sums on AVX2 alone; WebAssembly's kernels do not
        assert (labels == python_labels).mean() >= 0.9  # 0.94 measured on an AVX2-only EPYC
    assert shown == results[0]["label"]


@needs_browser
@needs_runtime
def test_cross_origin_isolated_server_gives_the_page_threads(web_page):
    _, page = web_page
    with serve_folder(page, isolated=True) as url, open_page(url) as browser:
        settings, results = classify_in_page(browser, TEXTS[:8])
    assert settings["cross_origin_isolated"] and settings["threads"] > 1
    assert len(results) == 8


@needs_runtime
def test_lemmatized_model_is_refused_with_the_step(web_page, tmp_path, run_cli):
    shipped, _ = web_page
    folder = tmp_path / "onnx"
    shutil.copytree(shipped.parent, folder)
    write_model_meta(folder, {"labels": ["negative", "positive"], "clean": ["lemmatize:en"]})
    code, _, err = run_cli("export", folder / shipped.name, "--web", tmp_path / "page")
    assert code == 2 and "cleaning step 'lemmatize:en' has no browser version" in err, err


@needs_runtime
def test_missing_npm_is_one_line(web_page, tmp_path, run_cli, monkeypatch):
    shipped, _ = web_page
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("export.web.shutil.which", lambda name: None)
    code, _, err = run_cli("export", shipped, "--web", tmp_path / "page")
    assert code == 2 and "--web needs npm" in err and "onnxruntime-web@" in err, err
    assert "Traceback" not in err


def test_a_missing_model_is_refused_before_npm_runs(tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv("EDGEBERT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("export.web.shutil.which", lambda name: None)
    code, _, err = run_cli("export", tmp_path / "none.onnx", "--web", tmp_path / "page")
    assert code == 2 and f"model not found: {tmp_path / 'none.onnx'}" in err, err
    assert not (tmp_path / "cache").exists()


FAKE_NPM = """#!/bin/sh
echo "$@" >> "$NPM_CALLS"
if [ "$NPM_FAIL" = 1 ]; then
  echo "npm ERR! code ECONNRESET" >&2; echo "npm ERR! network aborted" >&2; exit 1
fi
for spec in "onnxruntime-web:1.30.0:ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm" \\
            "@huggingface/tokenizers:0.2.0:tokenizers.min.mjs"; do
  name=${spec%%:*}; rest=${spec#*:}; version=${rest%%:*}; files=${rest#*:}
  mkdir -p "node_modules/$name/dist"
  echo "{\\"version\\": \\"$version\\"}" > "node_modules/$name/package.json"
  for f in $files; do echo x > "node_modules/$name/dist/$f"; done
done
"""


def test_npm_runs_from_the_lockfile_without_scripts_and_a_failed_install_breaks_nothing(
    tmp_path, monkeypatch
):
    """`npm ci --ignore-scripts` from the committed lockfile; a failure is one line naming
    npm's log and leaves no cache behind; an interrupted install (files missing) is redone."""
    from export.errors import ExportError
    from export.web import web_runtime

    npm = tmp_path / "npm"
    npm.write_text(FAKE_NPM)
    npm.chmod(0o755)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("NPM_CALLS", str(calls))
    monkeypatch.setattr("export.web.shutil.which", lambda name: str(npm))
    folder = tmp_path / "cache"
    monkeypatch.setenv("NPM_FAIL", "1")
    with pytest.raises(ExportError) as failed:
        web_runtime(folder)
    message = str(failed.value)
    assert message.startswith("npm ci of the web runtime failed (exit 1: npm ERR! code ECONNRESET")
    assert message.endswith(f"npm's whole output is in {folder / 'npm-error.log'}")
    assert "network aborted" in (folder / "npm-error.log").read_text()
    assert not (folder / "node_modules").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".node_modules.new-")]
    monkeypatch.setenv("NPM_FAIL", "0")
    modules = web_runtime(folder)
    assert (modules / "onnxruntime-web" / "dist" / "ort-wasm-simd-threaded.wasm").is_file()
    assert calls.read_text().splitlines() == ["ci --ignore-scripts --no-audit --no-fund"] * 2
    (modules / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").unlink()  # interrupted copy
    web_runtime(folder)
    assert (modules / "onnxruntime-web" / "dist" / "ort.wasm.min.mjs").is_file()
    assert len(calls.read_text().splitlines()) == 3
    web_runtime(folder)  # complete now: npm is not run again
    assert len(calls.read_text().splitlines()) == 3


@needs_browser
@needs_runtime
def test_a_label_named_like_markup_shows_as_text_and_runs_nothing(web_page, tmp_path):
    """Label names come from the model's files: the page puts them in with textContent, so a
    label such as `<img src=x onerror=...>` shows as text and runs no script."""
    _, page = web_page
    hostile = tmp_path / "page"
    shutil.copytree(page, hostile)
    meta = json.loads((hostile / "edgebert.json").read_text())
    evil = '<img src=x onerror="window.pwned=1">'
    meta["labels"] = [evil, evil + " 2"]
    (hostile / "edgebert.json").write_text(json.dumps(meta))
    with serve_folder(hostile) as url, open_page(url) as browser:
        browser.fill("#text", TEXTS[0])
        browser.click("#classify")
        shown = browser.wait_for_selector("#label").inner_text()
        rows = browser.eval_on_selector_all(
            ".row span:first-child", "s => s.map(e => e.textContent)"
        )
        pwned = browser.evaluate("() => window.pwned === undefined")
        images = browser.evaluate("() => document.querySelectorAll('#result img').length")
    assert shown in meta["labels"] and rows == meta["labels"]
    assert pwned and images == 0
