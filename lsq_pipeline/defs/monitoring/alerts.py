"""Alerts: who has been told what, so each problem is announced once, repeated at most once per cool-down, and
closed with one "resolved" message; and the notifiers (the log always, a JSON webhook when configured).

The book lives in `data/monitoring/alerts.json` (written atomically after every change): a restart of Dagster, or
a reset of the sensor, does not resend what was sent, and the web monitor can list the recent alerts.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lsq.config import AlertSettings
from lsq.paths import atomic_write_text

log = logging.getLogger(__name__)  # the process log: the terminal of `make run` / the daemon's output

RANK: dict[str, int] = {"WARN": 1, "ERROR": 2}
RECENT = 200  # alerts kept in the book for display


@dataclass(frozen=True)
class Alert:
    key: str  # what the alert is about: "account_state/deviation/sim_alpha", "run/window_job"
    state: str  # firing | resolved
    severity: str  # WARN | ERROR | RESOLVED
    title: str
    text: str
    time_ms: int
    account: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"[{self.severity}] {self.title}: {self.text}"

    def payload(self) -> dict[str, Any]:
        """The webhook body. `text` alone is what Slack (incoming webhooks) shows."""
        return asdict(self)


@dataclass
class Entry:
    open: bool = False  # announced and not yet resolved
    severity: str | None = None  # of the last announcement
    sent_ms: int | None = None  # of the last announcement (the cool-down counts from here)


class AlertBook:
    def __init__(self, path: Path, entries: dict[str, Entry], recent: list[dict[str, Any]]) -> None:
        self.path = path
        self.entries = entries
        self.recent = recent

    @classmethod
    def load(cls, path: Path) -> AlertBook:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(path, {}, [])
        entries = {k: Entry(**v) for k, v in raw.get("entries", {}).items()}
        return cls(path, entries, list(raw.get("recent", [])))

    def save(self) -> None:
        body = {"entries": {k: asdict(v) for k, v in sorted(self.entries.items())}, "recent": self.recent[-RECENT:]}
        atomic_write_text(self.path, json.dumps(body, indent=1))

    def _sent(self, alert: Alert) -> Alert:
        self.recent.append(alert.payload())
        return alert

    def observe(
        self, key: str, severity: str | None, now_ms: int, cooldown_ms: float, title: str, text: str, **extra: Any
    ) -> Alert | None:
        """The alert to send for `key` now failing at `severity` (None: passing), or None. A failure is
        announced once; again only if it got worse, or after the cool-down since the last announcement (a check
        that flaps stays quiet). A passing check closes an announced failure with one "resolved"."""
        entry = self.entries.setdefault(key, Entry())
        if severity is None:
            if not entry.open:
                return None
            entry.open = False
            return self._sent(Alert(key, "resolved", "RESOLVED", f"resolved: {title}", text, now_ms, **extra))
        worse = entry.open and RANK[severity] > RANK.get(entry.severity or "", 0)
        cooled = entry.sent_ms is None or now_ms - entry.sent_ms >= cooldown_ms
        if not worse and (entry.open or not cooled):
            return None
        entry.open, entry.severity, entry.sent_ms = True, severity, now_ms
        return self._sent(Alert(key, "firing", severity, title, text, now_ms, **extra))

    def event(self, key: str, now_ms: int, cooldown_ms: float, title: str, text: str, **extra: Any) -> Alert | None:
        """A one-off failure (a failed run): announced unless one of `key` was within the cool-down."""
        entry = self.entries.setdefault(key, Entry())
        if entry.sent_ms is not None and now_ms - entry.sent_ms < cooldown_ms:
            return None
        entry.severity, entry.sent_ms = "ERROR", now_ms
        return self._sent(Alert(key, "firing", "ERROR", title, text, now_ms, **extra))


def notify(alert: Alert, settings: AlertSettings) -> None:
    """Log the alert; POST it to the webhook if one is configured (stdlib urllib: one small POST needs no client
    library). A webhook failure is logged, never with its URL (it may hold a token), and does not stop the others."""
    line = alert.line()
    log.log(logging.INFO if alert.state == "resolved" else logging.WARNING, "%s", line)
    if settings.webhook_url is None:
        return
    request = urllib.request.Request(
        settings.webhook_url.get_secret_value(),
        data=json.dumps(alert.payload()).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_seconds) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        log.error("alert webhook refused %s: HTTP %s", alert.key, exc.code)
    except OSError as exc:  # URLError, a timeout, a refused connection
        log.error("alert webhook failed for %s: %s", alert.key, type(exc).__name__)
