"""`edgebert serve --log-predictions FILE`: what the served model answered, for monitoring.

One JSON line per classified text: time, a SHA-256 of the text (or the text itself with
`--log-texts`, when the traffic may be kept), label and score. Bounded: the file rotates at
`max_bytes` and keeps `backups` old files (FILE.1, FILE.2, ...), so a server that runs for
months does not fill its disk. `read_traffic` reads the rotated files too, oldest first.
The files are private (mode 0600: they describe users' traffic), never written through a
symbolic link, and take any string (ASCII-escaped JSON).
"""

from __future__ import annotations

import hashlib
import json
import logging
import logging.handlers
import os
import time
from pathlib import Path

from bench.files import open_no_follow
from compress.errors import EdgebertError

MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3


class PrivateRotatingHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose every file is opened with mode 0600 and never through a link."""

    def _open(self):
        fd = open_no_follow(Path(self.baseFilename), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # a file that was already there, made by someone else's umask
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class TrafficLog:
    def __init__(
        self,
        path: Path,
        keep_texts: bool = False,
        max_bytes: int = MAX_BYTES,
        backups: int = BACKUPS,
    ):
        try:
            handler = PrivateRotatingHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
        except OSError as exc:
            raise EdgebertError(f"--log-predictions: cannot write {path}: {exc.strerror}") from None
        handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.Logger(f"edgebert.traffic.{path}")  # unregistered: no propagation
        self.logger.addHandler(handler)
        self.keep_texts = keep_texts

    def record(self, results: list[dict]) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for result in results:
            if "label" not in result:
                continue  # token taggers: no single label to watch
            text = result["text"]
            entry = {"time": now}
            if self.keep_texts:
                entry["text"] = text
            else:
                digest = hashlib.sha256(text.encode("utf-8", "surrogatepass"))
                entry["text_sha256"] = digest.hexdigest()
            entry |= {"label": result["label"], "score": result["score"]}
            self.logger.info(json.dumps(entry, ensure_ascii=True))

    def close(self) -> None:
        for handler in self.logger.handlers:
            handler.close()


def read_traffic(path: Path) -> list[dict]:
    """Every logged answer, oldest first (rotated files FILE.N ... FILE.1, then FILE)."""
    rotated = [p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()]
    rotated.sort(key=lambda p: -int(p.suffix[1:]))  # FILE.3, FILE.2, FILE.1
    files = rotated + ([path] if path.is_file() else [])
    if not files:
        raise EdgebertError(f"--traffic: file not found: {path}")
    entries = []
    for file in files:
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                raise EdgebertError(f"{file}:{number}: not a traffic log line") from None
            if not isinstance(entry, dict) or not isinstance(entry.get("label"), str):
                raise EdgebertError(
                    f"{file}:{number}: a traffic log line needs 'label' and 'score'"
                )
            if not isinstance(entry.get("score"), (int, float)):
                raise EdgebertError(
                    f"{file}:{number}: a traffic log line needs 'label' and 'score'"
                )
            entries.append(entry)
    return entries
