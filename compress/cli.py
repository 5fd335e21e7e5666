"""The `edgebert` command line. Errors are one line on stderr and a non-zero exit.

Exit codes: 0 ok, 1 usage error from the argument parser, 2 bad input (recipe, data, model),
3 internal error (a bug: rerun with --debug for the traceback), 130 interrupted.

Each command imports its machinery when it runs, not when this module loads: `edgebert predict`
and `serve` on an .onnx/.ort file must start without torch (edge boards, cold starts), and
`--help` must be instant. These are deferred loads, not cycle dodges: nothing below imports
this module.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from bench.files import FolderLock, first_line, is_disk_full
from bench.options import DEFAULTS as BENCH
from bench.options import BenchOptions, name_models
from compress import __version__
from compress.errors import USER_ERRORS, EdgebertError
from compress.models.names import cache_dir, resolve_model
from compress.serving.limits import ServeLimits
from compress.serving.traffic_log import TrafficLog, read_traffic
from export.options import QUANTIZE_MODES, ExportOptions

EXPORT = ExportOptions()

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Fine-tune, compress, export and benchmark BERT-family text classifiers.",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"edgebert {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """edgebert: one recipe in, a small fast ONNX classifier and its benchmark out."""


def find_recipe(spec: str) -> Path:
    """A recipe path, or the name of a shipped recipe (`quickstart`)."""
    path = Path(spec)
    if path.exists() or path.suffix in (".yaml", ".yml"):
        return path
    shipped = resources.files("recipes") / f"{spec}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise EdgebertError(f"recipe not found: {spec} (neither a file nor a shipped recipe name)")


LIMITS = ServeLimits()  # `edgebert serve` option defaults


@app.command()
def run(
    recipe: Optional[str] = typer.Argument(None, help="recipe YAML, or a shipped recipe name"),
    set_: list[str] = typer.Option([], "--set", help="override a field: key.path=value"),
    out: Path = typer.Option(Path("runs"), "--out", help="parent folder of the run directory"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="exact run directory to use"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --run-dir"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue a killed run"),
    dry_run: bool = typer.Option(False, "--dry-run", help="validate recipe and data, then stop"),
    until: Optional[str] = typer.Option(
        None, "--until", help="stop after this stage; --resume continues (e.g. on another machine)"
    ),
    nproc: int = typer.Option(
        1, "--nproc", min=1, max=64, help="data-parallel processes (torchrun)"
    ),
) -> None:
    """Run a recipe end to end and write a run directory (or resume one)."""
    from compress.data.task_data import load_task_data
    from compress.engine.recipe import load_recipe
    from compress.engine.runner import RESOLVED_RECIPE, run_recipe
    from compress.training import distributed

    if nproc > 1 and not distributed.active():
        if resume is not None or dry_run:
            raise EdgebertError("--nproc: resume and dry runs use one process; drop --nproc")
        if recipe is None:
            raise EdgebertError("give a RECIPE (a YAML file or a shipped recipe name)")
        # Bad recipes and unsplittable runs fail here, once, before any process starts.
        distributed.check_splittable(load_recipe(find_recipe(recipe), set_), nproc)
        argv = _without_option(sys.argv[1:], "--nproc")
        code, stopped = distributed.relaunch(nproc, argv)
        if stopped:  # the ranks saved their checkpoints and said how to resume
            raise KeyboardInterrupt
        if code:
            raise EdgebertError(f"--nproc {nproc}: a training process failed (exit {code})")
        return

    if resume is not None:
        if recipe is not None or set_ or run_dir is not None:
            raise EdgebertError(
                "--resume takes the recipe from the run directory: give no "
                "RECIPE, --set or --run-dir with it"
            )
        if not (resume / RESOLVED_RECIPE).is_file():
            raise EdgebertError(f"{resume}: not a run directory (no {RESOLVED_RECIPE})")
        parsed = load_recipe(resume / RESOLVED_RECIPE)
        run_recipe(parsed, out, run_dir=resume, resume=True, until=until)
        typer.echo(str(resume))
        return
    if recipe is None:
        raise EdgebertError("give a RECIPE (a YAML file or a shipped recipe name) or --resume")
    parsed = load_recipe(find_recipe(recipe), set_)
    if dry_run:
        data = load_task_data(parsed.data, parsed.seed, parsed.task)
        typer.echo(
            f"recipe ok: {len(parsed.stages)} stages; data: {len(data.train)} train"
            + (f" ({data.augmented_rows} augmented)" if data.augmented_rows else "")
            + ", "
            f"{len(data.validation)} validation, {len(data.test) if data.test else 0} test rows, "
            f"labels {data.label_names}"
        )
        return
    if parsed.search is not None:
        if run_dir is not None or until is not None:
            raise EdgebertError(
                "--run-dir/--until: a search writes one whole run per trial; use --out"
            )
        root, summary = _search(parsed, find_recipe(recipe), set_, out)
        typer.echo((root / summary).read_text(encoding="utf-8"), err=True)
        typer.echo(str(root))
        return
    made = run_recipe(parsed, out, run_dir=run_dir, overwrite=overwrite, until=until)
    if distributed.is_main():
        typer.echo(str(made.root))


@app.command()
def predict(
    model_dir: Path = typer.Argument(..., help="a saved model directory, .onnx or .ort file"),
    text: Optional[str] = typer.Argument(None, help="text to classify"),
    file: Optional[Path] = typer.Option(None, "--file", help="a .txt (one per line) or .jsonl"),
) -> None:
    """Classify text; prints one JSON object per text."""
    from compress.serving.predict import Predictor, read_texts

    if (text is None) == (file is None):
        raise EdgebertError("give either a text or --file, not both or neither")
    texts = read_texts(file) if file else [text or ""]
    predictor = Predictor(model_dir)
    for result in predictor.predict(texts):
        typer.echo(json.dumps(result, ensure_ascii=False))
    for warning in predictor.warnings:
        typer.echo(f"warning: {warning}", err=True)


@app.command()
def explain(
    model: Path = typer.Argument(..., help="a saved model directory, .onnx or .ort file"),
    text: Optional[str] = typer.Argument(None, help="text to explain"),
    file: Optional[Path] = typer.Option(None, "--file", help="a .txt (one per line) or .jsonl"),
    method: str = typer.Option(
        "auto",
        "--method",
        help="auto (directory: integrated_gradients, file: occlusion), "
        "integrated_gradients or occlusion",
    ),
    html: Optional[Path] = typer.Option(None, "--html", help="also write a self-contained page"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per text, no colour"),
) -> None:
    """Which words made the model choose its label (coloured, or JSON; --html for a page)."""
    from compress.serving.explain import Occlusion, explain_text, open_explained_model, write_html
    from compress.serving.predict import read_texts

    if (text is None) == (file is None):
        raise EdgebertError("give either a text or --file, not both or neither")
    if method not in ("auto", "integrated_gradients", "occlusion"):
        raise EdgebertError(
            f"--method: '{method}' is not one of auto, integrated_gradients, occlusion"
        )
    predictor = open_explained_model(model)
    if method == "occlusion" or (method == "auto" and not model.is_dir()):
        scorer = Occlusion(predictor.runner)
    elif not model.is_dir():
        raise EdgebertError("--method: integrated gradients needs a PyTorch model directory")
    else:
        from compress.serving.explain_ig import IntegratedGradients

        scorer = IntegratedGradients(predictor.runner, model)
    explanations = [
        explain_text(predictor, scorer, t) for t in (read_texts(file) if file else [text])
    ]
    console = Console(highlight=False, soft_wrap=True)
    for explanation in explanations:
        if as_json:
            typer.echo(json.dumps(explanation.as_dict(), ensure_ascii=False))
        else:
            console.print(explanation.rich())
    if html is not None:
        write_html(html, explanations, model)
        typer.echo(f"explanations: {html}", err=True)


@app.command()
def monitor(
    model: Path = typer.Argument(..., help="the shipped model (directory, .onnx or .ort)"),
    reference: Path = typer.Option(..., "--reference", help="its bench report.json"),
    reference_model: Optional[str] = typer.Option(
        None, "--reference-model", help="the model's name in the report (default: by path)"
    ),
    feedback: Optional[Path] = typer.Option(
        None, "--feedback", help="newly labelled rows (JSONL/CSV text + label)"
    ),
    traffic: Optional[Path] = typer.Option(
        None, "--traffic", help="the log of `serve --log-predictions`"
    ),
    max_drop: float = typer.Option(0.02, "--max-drop", min=0, max=1, help="score drop alarm"),
    max_psi: float = typer.Option(0.2, "--max-psi", min=0, help="drift alarm (PSI)"),
    out: Path = typer.Option(Path("monitor"), "--out", help="folder for monitor.json/.md"),
    retrain_recipe: Optional[Path] = typer.Option(
        None, "--retrain", help="on an alarm, run this recipe with the feedback added"
    ),
) -> None:
    """Compare the model now (feedback, traffic) with its bench report; exit 1 on an alarm."""
    from compress.data.splits import read_split
    from compress.engine.retrain import retrain
    from compress.serving.monitor import (
        Thresholds,
        Verdict,
        check_feedback,
        check_traffic,
        load_reference,
    )
    from compress.serving.predict import Predictor

    if feedback is None and traffic is None:
        raise EdgebertError("give --feedback and/or --traffic to compare with the reference")
    if retrain_recipe is not None and feedback is None:
        raise EdgebertError("--retrain adds the --feedback rows to the recipe: give --feedback")
    served = read_traffic(traffic) if traffic is not None else None  # bad lines: before work
    name, ref = load_reference(reference, model, reference_model)
    verdict = Verdict({"report": str(reference), "model": name, "dataset": ref.dataset, "n": ref.n})
    limits = Thresholds(max_drop, max_psi)
    if feedback is not None:
        predictor = Predictor(model)
        rows = read_split(feedback, ref.labels, lambda text: text)  # predict cleans
        index = {label: i for i, label in enumerate(ref.labels)}
        predicted = [index[r["label"]] for r in predictor.predict(rows.texts)]
        check_feedback(verdict, ref, rows.labels, predicted, limits)
    if served is not None:
        check_traffic(verdict, ref, served, limits)
    if verdict.alarms and retrain_recipe is not None:
        verdict.checks["retrain"] = retrain(retrain_recipe, feedback, out, model)
    verdict.write(out)
    typer.echo(verdict.markdown())
    if verdict.alarms:
        raise typer.Exit(1)


@app.command()
def serve(
    model: Path = typer.Argument(..., help="a saved model directory, .onnx or .ort file"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    max_batch: int = typer.Option(LIMITS.max_batch, "--max-batch", min=1, help="texts per call"),
    max_wait_ms: float = typer.Option(
        LIMITS.max_wait_ms, "--max-wait-ms", min=0, help="batching window"
    ),
    max_queue: int = typer.Option(
        LIMITS.max_queue, "--max-queue", min=0, help="texts waiting (0: ~1 s of work); then 503"
    ),
    deadline_ms: float = typer.Option(
        LIMITS.deadline_ms, "--deadline-ms", min=1, help="answer by then or 504"
    ),
    max_body_bytes: int = typer.Option(LIMITS.max_body_bytes, "--max-body-bytes", min=64),
    body_seconds: float = typer.Option(
        LIMITS.body_seconds, "--body-seconds", min=0.1, help="receive a body by then or 408"
    ),
    max_connections: int = typer.Option(
        LIMITS.max_connections, "--max-connections", min=1, help="open connections; then 503"
    ),
    max_chars: int = typer.Option(LIMITS.max_chars, "--max-chars", min=1),
    drain_seconds: float = typer.Option(LIMITS.drain_seconds, "--drain-seconds", min=0),
    log_predictions: Optional[Path] = typer.Option(
        None, "--log-predictions", help="log every answer (JSON lines, rotating) for monitor"
    ),
    log_texts: bool = typer.Option(
        False, "--log-texts", help="log the texts themselves, not only their SHA-256"
    ),
    docs: bool = typer.Option(
        False, "--docs", help="also serve the API pages /docs, /openapi.json"
    ),
) -> None:
    """Serve /predict, /health, /live, /ready and /metrics (Prometheus) over HTTP."""
    from compress.serving.serve import serve as run_server

    limits = ServeLimits(
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        max_queue=max_queue,
        deadline_ms=deadline_ms,
        max_body_bytes=max_body_bytes,
        body_seconds=body_seconds,
        max_connections=max_connections,
        max_chars=max_chars,
        drain_seconds=drain_seconds,
    )
    typer.echo(
        f"serving {model} on http://{host}:{port} "
        "(POST /predict, GET /health /live /ready /metrics)",
        err=True,
    )
    traffic = TrafficLog(log_predictions, log_texts) if log_predictions else None
    run_server(model, host, port, limits, traffic, docs)


@app.command()
def loadtest(
    url: str = typer.Argument("http://127.0.0.1:8000", help="a loopback edgebert server"),
    file: Path = typer.Option(..., "--file", help="texts to send (.txt or .jsonl)"),
    seconds: float = typer.Option(10.0, "--seconds", min=0.1, max=600),
    concurrency: int = typer.Option(8, "--concurrency", min=1, max=256),
) -> None:
    """Load-test a running server for a bounded time; prints requests/s and p50/p99 (JSON)."""
    from compress.serving.loadtest import load_test
    from compress.serving.predict import read_texts

    typer.echo(json.dumps(load_test(url, read_texts(file), seconds, concurrency)))


def _search(parsed, path: Path, set_: list[str], out: Path) -> tuple[Path, str]:
    """A recipe's search: an accuracy budget (`target:`) or a plain one; (its folder, the file
    to show)."""
    from compress.engine.runner import is_run_dir, run_recipe

    if parsed.target is not None:
        from compress.engine.budget import run_budget

        def run_trial(trial, folder, **how):
            return run_recipe(trial, out, run_dir=folder, resume=is_run_dir(folder), **how)

        return run_budget(path, set_, out, run_trial), "summary.txt"
    from compress.engine.search import run_search

    def run_one(trial, folder):
        return run_recipe(trial, out, run_dir=folder, resume=is_run_dir(folder))

    return run_search(path, set_, out, run_one), "summary.md"


def _without_option(argv: list[str], name: str) -> list[str]:
    """argv less `name VALUE` / `name=VALUE` (to relaunch the same command under torchrun)."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == name:
            skip = True
        elif not item.startswith(name + "="):
            out.append(item)
    return out


def _parse_list(value: str, what: str, cast=int) -> list:
    try:
        return [cast(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise EdgebertError(f"{what}: expected a comma-separated list, got {value!r}") from None


def _clean_steps_of(model: Path) -> list[str]:
    """The cleaning a model was trained with (its edgebert.json, beside an ONNX file too; the
    model file's own default when it has none)."""
    from bench.model_file import read_model_file

    folder = model if model.is_dir() else model.parent
    return read_model_file(folder).clean


def _eval_texts(
    dataset: Optional[str], split: str, texts_file: Optional[Path], clean_steps: list[str]
):
    """(texts, labels or None, label) from a staged data set, a text file, or the shipped sample,
    cleaned the way the model was trained."""
    from bench.cleaning import make_cleaner
    from compress.data.splits import find_split_file, read_label_names, read_split, resolve_dataset
    from compress.serving.predict import read_texts

    if texts_file is not None:
        return read_texts(texts_file), None, str(texts_file)
    folder = resolve_dataset(dataset or "sst2-sample")
    path = find_split_file(folder, split)
    if path is None:
        raise EdgebertError(f"dataset '{folder.name}' has no '{split}' split")
    rows = read_split(path, read_label_names(folder / "labels.json"), make_cleaner(clean_steps))
    return rows.texts, rows.labels, f"{folder.name} {split}"


def _export_options(
    modes: list[str], ort: bool, openvino: bool, rows: int, agreement: float
) -> ExportOptions:
    unknown = [m for m in modes if m not in QUANTIZE_MODES]
    if unknown:
        raise EdgebertError(
            f"--quantize: quantize mode '{unknown[0]}': use one of {', '.join(QUANTIZE_MODES)}"
        )
    return ExportOptions(
        quantize=modes,
        formats=["onnx"] + ["ort"] * ort + ["openvino"] * openvino,
        parity=EXPORT.parity.model_copy(update={"rows": rows, "min_label_agreement": agreement}),
    )


@app.command("export")
def export_command(
    model_dir: Path = typer.Argument(
        ...,
        help="a saved classifier directory (or, with --triton or --web only, an exported .onnx)",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="output directory"),
    quantize: str = typer.Option("", "--quantize", help="comma list: dynamic,static"),
    ort: bool = typer.Option(False, "--ort", help="also write the ORT mobile .ort file"),
    openvino: bool = typer.Option(False, "--openvino", help="also write the OpenVINO IR"),
    texts: Optional[Path] = typer.Option(None, "--texts", help="parity/calibration texts file"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="parity texts from a staged set"),
    parity_rows: int = typer.Option(EXPORT.parity.rows, "--parity-rows", min=1),
    min_label_agreement: float = typer.Option(
        EXPORT.parity.min_label_agreement, "--min-label-agreement", min=0, max=1
    ),
    triton: Optional[Path] = typer.Option(
        None, "--triton", help="also write a Triton model repository of the shipped file here"
    ),
    triton_name: str = typer.Option("classifier", "--triton-name", help="Triton model name"),
    web: Optional[Path] = typer.Option(
        None, "--web", help="also write a static browser page that runs the shipped file here"
    ),
    report: Optional[Path] = typer.Option(
        None, "--report", help="bench report.json: its batch sizes become Triton's preferred ones"
    ),
    static_shape: Optional[str] = typer.Option(
        None,
        "--static-shape",
        help="also write the shipped file with fixed input shapes BATCHxSEQ (e.g. 1x64), for "
        "NNAPI, Core ML and QNN",
    ),
    text_input: bool = typer.Option(
        False,
        "--text-input",
        help="also write the shipped file with its tokenizer inside (one string in; needs "
        "onnxruntime-extensions, docs/shipping.md)",
    ),
    app_cleans: bool = typer.Option(
        False,
        "--app-cleans",
        help="with --text-input: leave every cleaning step to the app (needed for steps with "
        "no in-graph op, e.g. nfkc)",
    ),
) -> None:
    """Export a classifier to ONNX (+ fused graph, INT8, .ort) and check parity; optionally
    package the shipped file as a Triton model repository or a browser page, or write it with
    fixed input shapes for phone accelerators."""
    from export.pipeline import export_model
    from export.static_shape import parse_static_shape

    shape = parse_static_shape(static_shape) if static_shape else None
    if app_cleans and not text_input:
        raise EdgebertError("--app-cleans: only with --text-input")
    if model_dir.suffix == ".onnx":
        if (triton is None and web is None and shape is None and not text_input) or out:
            raise EdgebertError(ONNX_PACKAGING)
        _package(model_dir, triton, triton_name, report, web)
        if shape is not None or text_input:
            rows, _, _ = _eval_texts(dataset, "validation", texts, _clean_steps_of(model_dir))
            _derived_files(model_dir, shape, text_input, app_cleans, ort, rows[:parity_rows])
        return
    if out is None:
        raise EdgebertError("--out: give the output directory of the export")
    options = _export_options(
        _parse_list(quantize, "--quantize", str), ort, openvino, parity_rows, min_label_agreement
    )
    parity_texts, _, _ = _eval_texts(dataset, "validation", texts, _clean_steps_of(model_dir))
    with FolderLock(out, "export"):  # two exports into one folder would mix their files
        result = export_model(
            model_dir, out, parity_texts, options, log=lambda m: typer.echo(m, err=True)
        )
    for name, path in result.files.items():
        typer.echo(f"{name}\t{result.sizes[name] / 1e6:.1f} MB\t{path}")
    if result.failures:
        raise EdgebertError("; ".join(result.failures))
    shipped = [v for v in ("static_int8", "dynamic_int8", "fp32") if v in result.files][0]
    _package(result.files[shipped], triton, triton_name, report, web)
    _derived_files(
        result.files[shipped], shape, text_input, app_cleans, ort, parity_texts[:parity_rows]
    )


ONNX_PACKAGING = (
    "an .onnx MODEL is only packaged: give --triton DIR, --web DIR, --static-shape BATCHxSEQ or "
    "--text-input, not --out"
)


def _derived_files(
    onnx_path: Path,
    shape: tuple[int, int] | None,
    text_input: bool,
    app_cleans: bool,
    ort: bool,
    parity_texts: list[str],
) -> None:
    """The shipped file's fixed-shape and text-in copies, as asked, each checked against it."""
    if shape is not None:
        _write_static(onnx_path, shape, parity_texts)
    if text_input:
        _write_text_input(onnx_path, app_cleans, parity_texts, ort)


def _write_text_input(
    onnx_path: Path, app_cleans: bool, parity_texts: list[str], ort: bool
) -> None:
    """The text-in copy of the shipped file, checked against it on the same texts (and, with
    --ort, its .ort file too)."""
    from export.text_input import text_input_model, text_input_ort, text_parity

    target = onnx_path.with_name(f"{onnx_path.stem}_text.onnx")
    written, left = text_input_model(onnx_path, target, app_cleans)
    try:
        parity = text_parity(onnx_path, written, parity_texts)
    except USER_ERRORS:
        written.unlink()  # a file that failed its check is not left beside the shipped one
        raise
    typer.echo(f"text_input\t{written.stat().st_size / 1e6:.1f} MB\t{written}")
    typer.echo(
        f"text input: {parity['rows']} rows against {onnx_path.name}, max |dlogit| "
        f"{parity['max_abs_diff']:.2e}, labels agree {parity['label_agreement']:.2%}"
        + (f"; the app cleans first: {', '.join(left)}" if left else ""),
        err=True,
    )
    if ort:
        mobile = text_input_ort(written)
        text_parity(onnx_path, mobile, parity_texts)
        typer.echo(f"text_input_ort\t{mobile.stat().st_size / 1e6:.1f} MB\t{mobile}")


def _write_static(onnx_path: Path, shape: tuple[int, int], parity_texts: list[str]) -> None:
    """The fixed-shape copy of the shipped file, checked against it at that shape."""
    from export.static_shape import MOBILE_PROVIDERS, static_parity, write_static_shape

    static = write_static_shape(onnx_path, *shape)
    parity = static_parity(onnx_path, static, parity_texts)
    label = f"{shape[0]}x{shape[1]}"
    typer.echo(f"static_{label}\t{static.stat().st_size / 1e6:.1f} MB\t{static}")
    typer.echo(
        f"static shape {label} (for {MOBILE_PROVIDERS}): {parity['rows']} rows against "
        f"{onnx_path.name}, max |dlogit| {parity['max_abs_diff']:.2e}, labels agree "
        f"{parity['label_agreement']:.2%}",
        err=True,
    )


def _package(
    onnx_path: Path,
    triton: Optional[Path],
    triton_name: str,
    report: Optional[Path],
    web: Optional[Path],
) -> None:
    """Package the shipped file as a Triton repository and/or a browser page, as asked."""
    from export.triton import preferred_batch_sizes, write_triton_repository
    from export.web import write_web_page

    if triton is not None:
        with FolderLock(triton, "export"):
            write_triton_repository(onnx_path, triton, triton_name, preferred_batch_sizes(report))
        typer.echo(f"triton\t{onnx_path.name}\t{triton}")
    if web is not None:
        with FolderLock(web, "export"):
            write_web_page(onnx_path, web, cache_dir() / "web")
        typer.echo(f"web\t{onnx_path.name}\t{web}")


def _csv(values: list[int]) -> str:
    return ",".join(str(v) for v in values)


@app.command("bench")
def bench_command(
    models: list[str] = typer.Argument(..., help="model paths, optionally NAME=PATH"),
    batch: str = typer.Option(_csv(BENCH.batch_sizes), "--batch", help="batch sizes, comma list"),
    seq: str = typer.Option(_csv(BENCH.seq_lengths), "--seq", help="sequence lengths, comma list"),
    threads: int = typer.Option(BENCH.threads, "--threads", min=1),
    provider: str = typer.Option(BENCH.provider, "--provider", help="cpu or cuda"),
    dataset: Optional[str] = typer.Option(None, "--dataset", help="staged set for accuracy"),
    split: str = typer.Option("validation", "--split"),
    texts: Optional[Path] = typer.Option(None, "--texts", help="unlabelled texts (no accuracy)"),
    baseline: Optional[str] = typer.Option(
        BENCH.baseline, "--baseline", help="name to compute ratios to"
    ),
    min_seconds: float = typer.Option(BENCH.min_seconds, "--min-seconds", min=0.01),
    runtime: str = typer.Option(
        BENCH.runtime,
        "--runtime",
        help="runtime settings for all models, e.g. spinning=off,io_binding=on or "
        "engine=openvino (every key: docs/cli.md)",
    ),
    variant: list[str] = typer.Option(
        [], "--variant", help="NAME=MODEL:SETTINGS, a model again under other ORT settings"
    ),
    classic: str = typer.Option(
        "",
        "--classic",
        help="classic baselines trained on --dataset's train split: tfidf_lr,tfidf_nb, "
        "model2vec,fasttext (the last two: pip install 'edgebert\\[peers]')",
    ),
    model2vec_base: Optional[str] = typer.Option(
        None, "--model2vec-base", help="encoder the model2vec row distils (a name or directory)"
    ),
    traffic_batch: int = typer.Option(
        BENCH.traffic_batch_size,
        "--traffic-batch",
        min=0,
        help="batch of the end-to-end pass (0: skip)",
    ),
    out: Path = typer.Option(Path("bench-report"), "--out", help="report directory"),
) -> None:
    """Benchmark models side by side; writes report.json, report.md and report.html."""
    from bench.report import write_reports
    from bench.runner import run_benchmark
    from compress.stages.bench import run_stage_rows

    named = name_models(models)
    options = BenchOptions.parse(
        batch_sizes=_parse_list(batch, "--batch"),
        seq_lengths=_parse_list(seq, "--seq"),
        threads=threads,
        provider=provider,
        baseline=baseline,
        min_seconds=min_seconds,
        runtime=runtime,
        runtime_variants=_variants(variant),
        traffic_batch_size=traffic_batch or None,
        classic=_parse_list(classic, "--classic", str),
        model2vec_base=str(resolve_model(model2vec_base)) if model2vec_base else None,
    )
    clean_steps = _clean_steps_of(next(iter(named.values())))
    eval_texts, labels, label = _eval_texts(dataset, split, texts, clean_steps)
    train = None
    if options.classic:
        if dataset is None:  # without it the train rows would silently be the shipped sample's
            raise EdgebertError("--classic: give --dataset; its train split trains the baselines")
        train_texts, train_labels, _ = _eval_texts(dataset, "train", None, clean_steps)
        train = (train_texts, train_labels)
    ledger, teacher = run_stage_rows(list(named.values()), split, labels)
    report = run_benchmark(
        named,
        eval_texts,
        labels,
        dataset=label,
        options=options,
        train=train,
        stages=ledger,
        teacher_predictions=teacher,
    )
    paths = write_reports(report, out)
    typer.echo(paths["markdown"].read_text(encoding="utf-8"))
    typer.echo(f"reports: {out}")


def _variants(specs: list[str]) -> dict[str, str]:
    """`--variant NEW=MODEL:key=value,...` -> {NEW: "MODEL:key=value,..."}."""
    variants = {}
    for spec in specs:
        name, eq, rest = spec.partition("=")
        if not eq or not rest:
            raise EdgebertError(f"--variant '{spec}': expected NEW_NAME=MODEL_NAME:key=value,...")
        variants[name] = rest
    return variants


@app.command()
def schema(out: Optional[Path] = typer.Option(None, "--out", help="write to a file")) -> None:
    """Print the JSON Schema of the recipe format."""
    from compress.engine.recipe import recipe_json_schema

    text = json.dumps(recipe_json_schema(), indent=2)
    if out:
        out.write_text(text + "\n", encoding="utf-8")
    else:
        typer.echo(text)


@app.command()
def docs(out: Path = typer.Argument(Path("docs"), help="folder for recipes.md and cli.md")) -> None:
    """Write docs/recipes.md (from the recipe schema) and docs/cli.md (from these commands)."""
    from bench.files import write_text_atomic
    from compress.engine.docs import cli_markdown, recipe_markdown
    from compress.engine.recipe import recipe_json_schema

    write_text_atomic(out / "recipes.md", recipe_markdown(recipe_json_schema()))
    write_text_atomic(out / "cli.md", cli_markdown(typer.main.get_command(app)))
    typer.echo(f"{out / 'recipes.md'}\n{out / 'cli.md'}")


def main() -> None:
    debug = "--debug" in sys.argv
    try:
        app(prog_name="edgebert")
    except USER_ERRORS as exc:
        if debug:
            raise
        print(f"edgebert: error: {first_line(exc, 600)}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("edgebert: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug, not bad input; still no traceback by default
        if debug:
            raise
        if is_disk_full(exc):
            print(f"edgebert: error: disk full: {first_line(exc, 300)}", file=sys.stderr)
            sys.exit(2)
        print(
            f"edgebert: internal error: {type(exc).__name__}: {first_line(exc, 600)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(3)


if __name__ == "__main__":
    main()
