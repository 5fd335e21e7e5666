"""`edgebert monitor`: is the shipped model still doing the job its bench report says it does?

Two checks against the model's row in a bench report (the reference):
- **feedback** (newly labelled rows): accuracy and macro-F1 now, and the difference from the
  reference with a 95% interval. The rows are not the report's rows, so the interval is
  unpaired: the feedback's bootstrap interval widened by the reference's own sampling error
  (normal approximation from its row count).
- **traffic** (`serve --log-predictions`): the share of each predicted label and of each
  confidence bin against the same shares on the reference split, as a population stability
  index (PSI).
A check crossing its threshold is an alarm; `monitor` writes `monitor.json` and `monitor.md`
and exits 1 when there is one (2 stays for bad input), so a cron job or CI step can act on it.
With `--retrain RECIPE` an alarm also runs the recipe with the feedback added to its training
rows (`compress.engine.retrain`: serving imports no training code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.files import write_json_atomic, write_text_atomic
from bench.metrics import population_stability
from bench.paired import bootstrap_intervals
from bench.probabilities import confidence_shares, label_shares
from bench.report import interval_text
from bench.schema import Accuracy, BenchReport
from compress.errors import EdgebertError


@dataclass
class Thresholds:
    max_drop: float = 0.02  # accuracy or macro-F1 lost against the reference, as a fraction
    max_psi: float = 0.2  # label or confidence drift


@dataclass
class Verdict:
    reference: dict
    checks: dict = field(default_factory=dict)
    alarms: list[str] = field(default_factory=list)

    def write(self, folder: Path) -> None:
        body = {"reference": self.reference, "checks": self.checks, "alarms": self.alarms}
        write_json_atomic(folder / "monitor.json", body)
        write_text_atomic(folder / "monitor.md", self.markdown())

    def markdown(self) -> str:
        lines = [
            f"# Monitor: {self.reference['model']}",
            "",
            f"Reference: {self.reference['report']} ({self.reference['dataset']}, "
            f"{self.reference['n']} rows)",
            "",
            "| check | now | reference | difference (95% CI) or PSI | alarm |",
            "|---|---:|---:|---:|---|",
        ]
        for name, check in self.checks.items():
            if name == "retrain":
                continue
            if "difference" in check:
                low, high = check["difference_ci"]
                detail = f"{check['difference']:+.4f} ({low:+.4f} to {high:+.4f})"
                now, ref = f"{check['now']:.4f}", f"{check['reference']:.4f}"
            else:
                detail, now, ref = f"{check['psi']:.3f}", "", ""
            lines.append(
                f"| {name} | {now} | {ref} | {detail} | {'yes' if check['alarm'] else ''} |"
            )
        lines += ["", "Alarms: " + ("; ".join(self.alarms) if self.alarms else "none"), ""]
        if "retrain" in self.checks:
            run = self.checks["retrain"]
            diff = run["new_minus_old"]
            accuracy = interval_text(diff["accuracy_diff"], diff["accuracy_ci"])
            macro_f1 = interval_text(diff["macro_f1_diff"], diff["macro_f1_ci"])
            lines += [
                f"Retrained with the feedback: {run['run_dir']}. New minus old on "
                f"{run['validation_rows']} validation rows, in points: accuracy {accuracy}, "
                f"macro-F1 {macro_f1}.",
                "",
            ]
        return "\n".join(lines)


def load_reference(report: Path, model: Path, name: str | None) -> tuple[str, Accuracy]:
    """The report's row of this model: by `name`, by path, or the report's only model."""
    try:
        parsed = BenchReport.model_validate_json(report.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EdgebertError(f"--reference: {report}: not a bench report ({exc})") from None
    rows = [m for m in parsed.models if m.accuracy is not None]
    chosen = (
        [m for m in rows if m.name == name]
        if name
        else [m for m in rows if Path(m.path).resolve() == model.resolve()]
    )
    if not chosen and not name and len(rows) == 1:
        chosen = rows
    if len(chosen) != 1 or chosen[0].accuracy.label_shares is None:
        names = ", ".join(m.name for m in rows)
        raise EdgebertError(
            f"--reference: {report} has no scored row for {name or model} with label shares "
            f"(rows: {names}); name one with --reference-model"
        )
    return chosen[0].name, chosen[0].accuracy


def check_feedback(verdict: Verdict, ref: Accuracy, labels: list[int], predicted, limits) -> None:
    scores = bootstrap_intervals(labels, predicted, len(ref.labels))
    for metric in ("accuracy", "macro_f1"):
        now, before = scores[metric], getattr(ref, metric)
        low, high = scores[f"{metric}_ci"]
        widen = 1.96 * math.sqrt(before * (1 - before) / ref.n)
        half_low, half_high = math.hypot(now - low, widen), math.hypot(high - now, widen)
        difference = now - before
        alarm = difference < -limits.max_drop and difference + half_high < 0
        verdict.checks[f"feedback {metric}"] = {
            "now": now,
            "reference": before,
            "difference": difference,
            "difference_ci": [difference - half_low, difference + half_high],
            "rows": len(labels),
            "alarm": bool(alarm),
        }
        if alarm:
            verdict.alarms.append(
                f"feedback {metric} {now:.4f} is {-difference:.4f} under the reference "
                f"{before:.4f} (more than {limits.max_drop}, outside the noise)"
            )


def check_traffic(verdict: Verdict, ref: Accuracy, entries: list[dict], limits) -> None:
    if not entries:
        raise EdgebertError("--traffic: the log has no classified texts")
    known = {name: i for i, name in enumerate(ref.labels)}
    unknown = {e["label"] for e in entries} - set(known)
    if unknown:
        raise EdgebertError(f"--traffic: labels {sorted(unknown)} are not the model's")
    shares = label_shares([known[e["label"]] for e in entries], ref.labels)
    current = {
        "labels": (list(shares.values()), [ref.label_shares[n] for n in ref.labels]),
        "confidence": (
            confidence_shares(np.asarray([e["score"] for e in entries])),
            ref.confidence_shares,
        ),
    }
    for kind, (now, before) in current.items():
        psi = population_stability(before, now)
        alarm = psi > limits.max_psi
        verdict.checks[f"traffic {kind}"] = {
            "psi": psi,
            "now": now,
            "reference": before,
            "rows": len(entries),
            "alarm": bool(alarm),
        }
        if alarm:
            verdict.alarms.append(f"traffic {kind} drifted: PSI {psi:.3f} > {limits.max_psi}")
