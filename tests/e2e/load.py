"""A client that keeps sending requests to the tenant API while an update runs.

Every request opens its own TLS connection (so each one is routed afresh, through whatever
Service, NodePort or ingress the URL names), is sent once and never retried; a request that does
not come back `200` within the timeout counts as failed, with its reason kept.
"""

from __future__ import annotations

import http.client
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit


@dataclass
class LoadReport:
    sent: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    # When the first failures happened, in seconds since the load started, and why.
    first_failures: list[tuple[float, str]] = field(default_factory=list)
    # The same moments in epoch seconds, to find them in other records (conntrack's).
    failure_moments: list[float] = field(default_factory=list)

    def as_figure(self) -> dict[str, Any]:
        figure: dict[str, Any] = {
            "requests sent": self.sent,
            "requests failed": self.failed,
            "seconds": round(self.seconds, 1),
        }
        if self.errors:
            figure["errors"] = dict(self.errors.most_common(5))
            figure["first failures (s, why)"] = [
                [round(at, 2), why] for at, why in self.first_failures
            ]
        return figure


def wall_clock() -> str:
    """Local time to the millisecond, to place a failure among other events."""
    now = time.time()
    return time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}"


def request_once(url: str, context: ssl.SSLContext, timeout: float) -> str | None:
    """One GET; None when it answered 200, else why not."""
    parts = urlsplit(url)
    connection = http.client.HTTPSConnection(
        parts.hostname or "", parts.port or 443, context=context, timeout=timeout
    )
    try:
        connection.request("GET", parts.path or "/")
        response = connection.getresponse()
        response.read()
        return None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, http.client.HTTPException) as error:
        return f"{type(error).__name__}: {error}"[:160]
    finally:
        connection.close()


class _Poller:
    """A daemon thread that runs `_run` between `with` entry and exit; `_stop` ends it."""

    name = "poller"

    def __init__(self, join_timeout: float) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._join_timeout = join_timeout
        self._started = 0.0

    def _run(self) -> None:
        raise NotImplementedError

    def _start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def _end(self) -> float:
        self._stop.set()
        self._thread.join(timeout=self._join_timeout)
        return time.monotonic() - self._started

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._end()


class RequestLoad(_Poller):
    """`with RequestLoad(url, context) as load: ...` then `load.report`."""

    name = "request-load"

    def __init__(
        self,
        url: str,
        context: ssl.SSLContext,
        *,
        interval: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(join_timeout=timeout + 5)
        self.url = url
        self.context = context
        self.interval = interval
        self.timeout = timeout
        self.report = LoadReport()

    def _run(self) -> None:
        while not self._stop.is_set():
            error = request_once(self.url, self.context, self.timeout)
            self.report.sent += 1
            if error is not None:
                self.report.failed += 1
                self.report.errors[error] += 1
                if len(self.report.first_failures) < 5:
                    at = time.monotonic() - self._started
                    self.report.first_failures.append((at, f"{wall_clock()} {error}"))
                    self.report.failure_moments.append(time.time())
            self._stop.wait(self.interval)

    def __enter__(self) -> RequestLoad:
        # The target must answer before the update starts, or the figure means nothing.
        error = request_once(self.url, self.context, self.timeout)
        if error is not None:
            raise AssertionError(f"{self.url} does not answer before the update: {error}")
        self._start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.report.seconds = self._end()


class FirstAnswer(_Poller):
    """Times how long after its start a URL first answers 200 (polling, for a figure only).

    Used while `pulumi up` creates the cluster, before its CA exists: the poll does not verify
    the server, and nothing is sent but an anonymous GET of a health endpoint."""

    name = "first-answer"

    def __init__(self, url: str, interval: float = 0.5) -> None:
        super().__init__(join_timeout=5)
        self.url = url
        self.interval = interval
        self.seconds: float | None = None

    def _run(self) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        while not self._stop.is_set():
            if request_once(self.url, context, timeout=2) is None:
                self.seconds = time.monotonic() - self._started
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> FirstAnswer:
        self._start()
        return self
