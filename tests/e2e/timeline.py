"""What the infrastructure cluster did while an update ran, printed when a request failed.

A refused connection during a rollout has few possible causes, and each leaves a trace:
- a REJECT rule fired (kube-proxy's "has no endpoints", kube-router's policy default): its
  packet counter in `iptables-save -c` went up;
- a connection reached a pod that no longer listened: the EndpointSlices still listed it as
  ready when the request failed, or the rig's kube-proxy took long to program a change;
- a connection was not translated at all (a NodePort with no rule answers with the node's own
  refusal): conntrack saw it leave with itself as the reply's source.
`UpdateTimeline` keeps them all: the REJECT counters before and after, every EndpointSlice and
pod change in the namespace with the time it was seen (to the millisecond, like the load's
failures), how long kube-proxy's slowest endpoint change and sync took meanwhile, and
conntrack's events for the loads' ports (where each connection was sent), printed around each
failure.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from components.common.endpoints import KUBE_PROXY_METRICS_PORT
from tests.e2e.load import wall_clock

_COUNTED_RULE = re.compile(r"^\[(\d+):\d+\] (-A .*-j REJECT.*)$")


def reject_counters(iptables_save: str, table: str) -> dict[str, int]:
    """Packets per REJECT rule in the output of `iptables-save -c -t <table>`."""
    counters: dict[str, int] = {}
    for line in iptables_save.splitlines():
        match = _COUNTED_RULE.match(line)
        if match:
            counters[f"{table} {match.group(2)}"] = int(match.group(1))
    return counters


def counter_increases(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The rules whose counter went up (a rule new since `before` counts from zero)."""
    return {
        rule: packets - before.get(rule, 0)
        for rule, packets in after.items()
        if packets > before.get(rule, 0)
    }


# kube-proxy's histograms of how long an endpoint change took to reach the rules, and one sync.
KUBE_PROXY_METRICS_URL = f"http://127.0.0.1:{KUBE_PROXY_METRICS_PORT}/metrics"
KUBE_PROXY_HISTOGRAMS = (
    "kubeproxy_network_programming_duration_seconds",
    "kubeproxy_sync_full_proxy_rules_duration_seconds",
    "kubeproxy_sync_partial_proxy_rules_duration_seconds",
)
_BUCKET = re.compile(r'^(\w+)_bucket\{(?:[^}]*,)?le="([^"]+)"[^}]*\} (\S+)$')


def histogram_buckets(metrics: str) -> dict[str, dict[float, float]]:
    """Cumulative bucket counts by upper bound, for KUBE_PROXY_HISTOGRAMS."""
    buckets: dict[str, dict[float, float]] = {}
    for line in metrics.splitlines():
        match = _BUCKET.match(line)
        if match and match.group(1) in KUBE_PROXY_HISTOGRAMS:
            name, bound, count = match.groups()
            buckets.setdefault(name, {})[float(bound)] = float(count)
    return buckets


def slowest_since(before: Mapping[float, float], after: Mapping[float, float]) -> float | None:
    """The smallest bucket bound that holds every observation made between the two readings
    (None: nothing observed; inf: beyond the last bound)."""
    new = {bound: after[bound] - before.get(bound, 0.0) for bound in after}
    total = new.get(math.inf, max(new.values(), default=0.0))
    if not total:
        return None
    return min(bound for bound, count in new.items() if count >= total)


def _read_kube_proxy_histograms() -> dict[str, dict[float, float]]:
    try:
        with urllib.request.urlopen(KUBE_PROXY_METRICS_URL, timeout=5) as response:
            return histogram_buckets(response.read().decode())
    except OSError:
        return {}


def _read_reject_counters() -> dict[str, int]:
    counters: dict[str, int] = {}
    for table in ("filter", "nat"):
        saved = subprocess.run(
            ["iptables-save", "-c", "-t", table], capture_output=True, text=True, check=True
        )
        counters |= reject_counters(saved.stdout, table)
    return counters


# `conntrack -E -o timestamp` lines: "[<epoch seconds>]\t [NEW] tcp ...".
_CONNTRACK_EVENT = re.compile(r"^\[(\d+(?:\.\d+)?)\]\s*(.*)$")


def conntrack_events_near(
    lines: Sequence[str], moments: Sequence[float], *, before: float = 1.0, after: float = 0.3
) -> list[str]:
    """The conntrack events from `before` seconds ahead of each moment (epoch seconds) to
    `after` seconds past it, in order, each once."""
    near = []
    for line in lines:
        match = _CONNTRACK_EVENT.match(line)
        if not match:
            continue
        at = float(match.group(1))
        if any(moment - before <= at <= moment + after for moment in moments):
            near.append(line)
    return near


def describe_event(event: dict[str, Any]) -> str:
    """One line for a watch event of a pod or an EndpointSlice: what a refusal depends on."""
    kind, obj = event.get("type", "?"), event.get("object", {})
    name = obj.get("metadata", {}).get("name", "?")
    if obj.get("kind") == "EndpointSlice":
        endpoints = []
        for endpoint in obj.get("endpoints") or []:
            conditions = endpoint.get("conditions", {})
            states = "/".join(str(conditions.get(c)) for c in ("ready", "serving", "terminating"))
            endpoints.append(f"{(endpoint.get('addresses') or ['?'])[0]}={states}")
        return f"{kind} slice {name}: {' '.join(endpoints) or 'no endpoints'}"
    status = obj.get("status", {})
    containers = " ".join(
        f"{c.get('name')}:ready={c.get('ready')}" for c in status.get("containerStatuses") or []
    )
    deleting = obj.get("metadata", {}).get("deletionTimestamp")
    return f"{kind} pod {name} {status.get('podIP')} deleting={deleting} {containers}"


class _Recorder:
    """A command in the background whose output `_read` keeps in `lines`."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.lines: list[str] = []
        self._process = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self._thread = threading.Thread(target=self._read, name="timeline", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        self.lines.extend(line.rstrip() for line in self._process.stdout)

    def stop(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._thread.join(timeout=10)


class _Watch(_Recorder):
    """`kubectl get --watch -o json` in the background, every event kept as one line with the
    time it arrived."""

    def _read(self) -> None:
        assert self._process.stdout is not None
        # One JSON document per event: on one line, or indented over several.
        buffered = ""
        for line in self._process.stdout:
            buffered += line
            try:
                event = json.loads(buffered)
            except json.JSONDecodeError:
                if line.startswith(("error", "Error")):  # kubectl gave up: keep why
                    self.lines.append(f"{wall_clock()} {buffered.strip()[:300]}")
                    buffered = ""
                continue
            buffered = ""
            self.lines.append(f"{wall_clock()} {describe_event(event)}")
        if buffered.strip():
            self.lines.append(f"{wall_clock()} {buffered.strip()[:300]}")


class UpdateTimeline:
    """`with UpdateTimeline(kubectl, kubeconfig, namespace, ports) as timeline: ...`, then
    `timeline.report(failure_moments)`; `ports`: the TCP ports the loads connect to."""

    def __init__(
        self, kubectl: Path, kubeconfig: Path, namespace: str, ports: Iterable[int] = ()
    ) -> None:
        self._base = [str(kubectl), f"--kubeconfig={kubeconfig}", "-n", namespace]
        self._ports = sorted(set(ports))
        self._watches: list[_Watch] = []
        self._conntrack: list[_Recorder] = []
        self._before: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._histograms: dict[str, dict[float, float]] = {}
        # Per kube-proxy histogram: the bound its slowest observation meanwhile stayed under.
        self.kube_proxy_slowest: dict[str, float | None] = {}

    def __enter__(self) -> UpdateTimeline:
        self._before = _read_reject_counters()
        self._histograms = _read_kube_proxy_histograms()
        for kind in ("endpointslices", "pods"):
            argv = [*self._base, "get", kind, "--watch", "--output-watch-events", "-o", "json"]
            self._watches.append(_Watch(argv))
        for port in self._ports:
            events = ["conntrack", "-E", "-e", "NEW,DESTROY", "-o", "timestamp", "-p", "tcp"]
            self._conntrack.append(_Recorder([*events, "--orig-port-dst", str(port)]))
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for recorder in [*self._watches, *self._conntrack]:
            recorder.stop()
        self.rejected = counter_increases(self._before, _read_reject_counters())
        after = _read_kube_proxy_histograms()
        self.kube_proxy_slowest = {
            name: slowest_since(self._histograms.get(name, {}), buckets)
            for name, buckets in after.items()
        }

    def conntrack_near(
        self, failure_moments: Sequence[float], *, before: float = 1.0, after: float = 0.3
    ) -> list[str]:
        """conntrack's events for the loads' ports around the moments requests failed (epoch
        seconds): the reply's source says where each connection was sent."""
        tracked = sorted(line for recorder in self._conntrack for line in recorder.lines)
        return conntrack_events_near(tracked, failure_moments, before=before, after=after)

    def report(self, failure_moments: Sequence[float] = ()) -> str:
        lines = sorted(line for watch in self._watches for line in watch.lines)
        near = self.conntrack_near(failure_moments)
        rejected = [f"  {packets} packets: {rule}" for rule, packets in self.rejected.items()]
        slowest = [
            f"  {name}: at most {bound} s" for name, bound in self.kube_proxy_slowest.items()
        ]
        return "\n".join(
            [
                "REJECT rules that fired during the update:",
                *(rejected or ["  none"]),
                "The rig's kube-proxy meanwhile (histogram bounds):",
                *(slowest or ["  no metrics"]),
                "EndpointSlices and pods of the namespace, as seen:",
                *lines,
                f"conntrack, ports {self._ports}, from 1 s before to 0.3 s after each failure"
                " (reply src = where the connection was sent):",
                *(near or ["  none"]),
            ]
        )
