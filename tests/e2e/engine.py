"""The real Pulumi engine, driven the way a user drives it.

The Pulumi CLI (v3.274.1) and the pulumi-kubernetes plugin (4.25.0) are built from the Go module
proxy by hack/build-engine.sh; the tls and random plugins are the test doubles of tests/doubles
(their providers cannot be built here). `pulumi-language-python` cannot be built either, so the
Python Automation API serves the language runtime itself and runs the project's real
`__main__.py` as an inline program: the same SDK, engine and providers as `pulumi up` in the
project directory.

A `ProjectStack` lives in a project directory of its own that holds a copy of the project's
Pulumi.yaml and a `Pulumi.<stack>.yaml` written as a user writes it; the state is in a file
backend and the plugins in a PULUMI_HOME, both under a directory the caller owns.

Used by the e2e tests (tests/e2e/tenant.py) and by `make up` / `make down` (tests/e2e/local.py).
"""

from __future__ import annotations

import os
import runpy
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pulumi import automation as auto

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = "k8s-on-k8s"
PULUMI_VERSION = "v3.274.1"
KUBERNETES_PLUGIN_VERSION = "4.25.0"
DEFAULT_CACHE = Path("/var/cache/k8s-on-k8s")
PASSPHRASE = "k8s-on-k8s-e2e"  # protects the secrets of throwaway test stacks only


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("K8S_ON_K8S_CACHE") or DEFAULT_CACHE)


@dataclass(frozen=True)
class EngineBinaries:
    """Where hack/build-engine.sh put the CLI and the kubernetes plugin."""

    cli_root: Path  # the CLI is cli_root/bin/pulumi (the Automation API's layout)
    kubernetes_plugin: Path

    @classmethod
    def from_cache(cls, cache: Path | None = None) -> EngineBinaries:
        cache = cache or cache_dir()
        return cls(
            cli_root=cache / f"pulumi-{PULUMI_VERSION}",
            kubernetes_plugin=cache
            / f"pulumi-kubernetes-v{KUBERNETES_PLUGIN_VERSION}"
            / "bin"
            / "pulumi-resource-kubernetes",
        )

    @property
    def cli(self) -> Path:
        return self.cli_root / "bin" / "pulumi"

    def missing(self) -> list[str]:
        return [
            f"{path} (build it with `make engine`)"
            for path in (self.cli, self.kubernetes_plugin)
            if not os.access(path, os.X_OK)
        ]


def engine_environment(home: Path, backend: Path) -> dict[str, str]:
    """An offline engine: no update check, no plugin download, a local state backend."""
    return {
        "PULUMI_HOME": str(home),
        "PULUMI_BACKEND_URL": f"file://{backend}",
        "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        # Without it the CLI looks plugins up on the internet (outside DNS queries).
        "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
        "PULUMI_SKIP_CONFIRMATIONS": "true",
        "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        "PULUMI_DISABLE_CI_DETECTION": "true",
    }


def run_project_program() -> None:
    """The inline program: the project's own __main__.py, as `pulumi up` would run it."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    runpy.run_path(str(REPO_ROOT / "__main__.py"), run_name="__main__")


def declared_types(project_file: Path = REPO_ROOT / "Pulumi.yaml") -> dict[str, str]:
    """The type of every config key the project declares (string, integer, boolean)."""
    declared = yaml.safe_load(project_file.read_text())["config"]
    return {key: spec.get("type", "string") for key, spec in declared.items()}


def typed_value(value: object, declared_type: str) -> object:
    """A value as a user writes it in YAML for its declared type ("3" for an integer is 3)."""
    if declared_type == "integer" and isinstance(value, str):
        return int(value)
    if declared_type == "boolean" and isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"{value!r} is not a boolean")
        return value.lower() == "true"
    return value


def stack_config_document(
    config: Mapping[str, object], provider_config: Mapping[str, object] | None = None
) -> dict[str, Any]:
    """The `config:` block of Pulumi.<stack>.yaml: project keys prefixed, values as typed."""
    types = declared_types()
    block: dict[str, Any] = {
        f"{PROJECT}:{key}": typed_value(value, types.get(key, "string"))
        for key, value in config.items()
    }
    block.update({f"kubernetes:{key}": value for key, value in (provider_config or {}).items()})
    return block


@dataclass
class Operation:
    """One engine run: what it did and how long it took."""

    kind: str
    seconds: float
    changes: dict[str, int]
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)  # holds secrets
    # Every step but "same": resource name -> operation ("update", "replace", "create", ...).
    steps: dict[str, str] = field(default_factory=dict)
    # When each of those steps started and ended, in seconds since the run started (an end is
    # missing for a step whose outputs never came, as in a preview).
    step_times: dict[str, tuple[float, float | None]] = field(default_factory=dict)
    # The wall-clock time (epoch seconds) the step times count from.
    started_at: float = 0.0

    @property
    def changed(self) -> dict[str, int]:
        """The counts of steps that change something: not "same", nor the "read" of the
        stack's own last outputs (components/fixed_settings.py)."""
        return {op: n for op, n in self.changes.items() if op not in ("same", "read")}

    def named(self, *operations: str) -> set[str]:
        """Names of the resources that got one of these operations."""
        return {name for name, operation in self.steps.items() if operation in operations}


class StepRecorder:
    """Collects the engine's step events: which resource got which operation."""

    def __init__(self) -> None:
        self.steps: dict[str, str] = {}
        self.step_times: dict[str, tuple[float, float | None]] = {}
        self._started = time.monotonic()
        self.started_at = time.time()

    def __call__(self, event: auto.EngineEvent) -> None:
        now = time.monotonic() - self._started
        done = event.res_outputs_event
        if done is not None:
            name = done.metadata.urn.rsplit("::", 1)[-1]
            if name in self.step_times:
                self.step_times[name] = (self.step_times[name][0], now)
            return
        pre = event.resource_pre_event
        if pre is None or pre.metadata.op in (auto.OpType.SAME, auto.OpType.READ):
            return
        # A replacement shows as several steps (create-replacement, replace, delete-replaced):
        # "replace" wins over its parts.
        name = pre.metadata.urn.rsplit("::", 1)[-1]
        operation = _op_name(pre.metadata.op)
        if self.steps.get(name) != "replace":
            self.steps[name] = "replace" if "replace" in operation else operation
        self.step_times.setdefault(name, (now, None))


class ProjectStack:
    """One stack of this project in its own project directory, run by the real engine."""

    def __init__(
        self,
        name: str,
        work_dir: Path,
        *,
        binaries: EngineBinaries | None = None,
        extra_env: Mapping[str, str] | None = None,
        log: Callable[[str], None] = print,
    ) -> None:
        self.name = name
        self.work_dir = work_dir
        self.binaries = binaries or EngineBinaries.from_cache()
        self.project_dir = work_dir / "project"
        self.home = work_dir / "pulumi-home"
        self.backend = work_dir / "state"
        self.log_file = work_dir / "engine.log"
        self.env = {**engine_environment(self.home, self.backend), **(extra_env or {})}
        self.log = log
        self._stack: auto.Stack | None = None

    # -- set-up ---------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Project directory, plugins and the stack (idempotent)."""
        missing = self.binaries.missing()
        if missing:
            raise RuntimeError("the Pulumi engine is not built: " + ", ".join(missing))
        for directory in (self.project_dir, self.home, self.backend):
            directory.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / "Pulumi.yaml", self.project_dir / "Pulumi.yaml")
        self._install_plugins()
        self._stack = auto.create_or_select_stack(
            stack_name=self.name,
            project_name=PROJECT,
            program=run_project_program,
            opts=auto.LocalWorkspaceOptions(
                work_dir=str(self.project_dir),
                pulumi_home=str(self.home),
                env_vars=self.env,
                pulumi_command=auto.PulumiCommand(root=str(self.binaries.cli_root)),
            ),
        )

    def _install_plugins(self) -> None:
        from tests.doubles import install_doubles

        marker = self.home / "plugins" / f"resource-kubernetes-v{KUBERNETES_PLUGIN_VERSION}"
        if not marker.exists():
            self.cli(
                "plugin",
                "install",
                "resource",
                "kubernetes",
                KUBERNETES_PLUGIN_VERSION,
                "--file",
                str(self.binaries.kubernetes_plugin),
            )
        install_doubles(self.binaries.cli, self.home, Path(sys.executable), self.env)

    @property
    def stack(self) -> auto.Stack:
        if self._stack is None:
            self.prepare()
        assert self._stack is not None
        return self._stack

    @property
    def config_file(self) -> Path:
        return self.project_dir / f"Pulumi.{self.name}.yaml"

    def write_config(
        self, config: Mapping[str, object], provider_config: Mapping[str, object] | None = None
    ) -> None:
        """Pulumi.<stack>.yaml as a user writes it; the secrets salt of the stack is kept."""
        self.stack  # noqa: B018  # the stack exists, so its file holds the salt
        document = yaml.safe_load(self.config_file.read_text()) if self.config_file.exists() else {}
        document = document or {}
        document["config"] = stack_config_document(config, provider_config)
        self.config_file.write_text(yaml.safe_dump(document, sort_keys=False))

    # -- operations -----------------------------------------------------------------------------

    def _on_output(self, line: str) -> None:
        with self.log_file.open("a") as handle:
            handle.write(line + "\n")

    def _run(self, kind: str, **options: Any) -> tuple[Any, float, StepRecorder]:
        """One `pulumi <kind>` through the Automation API: its result, seconds and steps."""
        run: dict[str, Callable[..., Any]] = {
            "up": self.stack.up,
            "preview": self.stack.preview,
            "destroy": self.stack.destroy,
        }
        started = time.monotonic()
        self.log(f"pulumi {kind} ({self.name}) ...")
        steps = StepRecorder()
        try:
            result = run[kind](on_output=self._on_output, on_event=steps, color="never", **options)
        except auto.CommandError as error:
            raise EngineError(f"pulumi {kind}", error, self.log_file) from None
        return result, time.monotonic() - started, steps

    def _finish(
        self, kind: str, seconds: float, counts: Mapping[Any, int], **fields: Any
    ) -> Operation:
        changes = {_op_name(op): count for op, count in counts.items()}
        self.log(f"pulumi {kind} ({self.name}): {changes} in {seconds:.1f}s")
        return Operation(kind, seconds, changes, **fields)

    def up(self, **options: Any) -> Operation:
        result, seconds, steps = self._run("up", **options)
        outputs = {name: value.value for name, value in result.outputs.items()}
        counts = result.summary.resource_changes or {}
        return self._finish(
            "up",
            seconds,
            counts,
            outputs=outputs,
            steps=steps.steps,
            step_times=steps.step_times,
            started_at=steps.started_at,
        )

    def preview(self, **options: Any) -> Operation:
        result, seconds, steps = self._run("preview", **options)
        return self._finish("preview", seconds, result.change_summary or {}, steps=steps.steps)

    def destroy(self, **options: Any) -> Operation:
        result, seconds, steps = self._run("destroy", **options)
        counts = result.summary.resource_changes or {}
        return self._finish(
            "destroy", seconds, counts, steps=steps.steps, step_times=steps.step_times
        )

    def process_env(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """The plain CLI, as a user types it, in the project directory."""
        result = subprocess.run(
            [str(self.binaries.cli), *args],
            cwd=self.project_dir,
            env=self.process_env(),
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def output(self, name: str) -> str:
        """`pulumi stack output NAME --show-secrets`."""
        return self.cli("stack", "output", name, "--show-secrets", "--stack", self.name).stdout


def _op_name(kind: object) -> str:
    """ "same", "create", ...: summaries key by OpType (a str Enum) or by plain strings."""
    return str(getattr(kind, "value", kind))


class EngineError(AssertionError):
    """A failed engine run, with the tail of what the engine printed."""

    def __init__(self, what: str, error: auto.CommandError, log_file: Path) -> None:
        tail = "\n".join(log_file.read_text().splitlines()[-60:]) if log_file.exists() else ""
        super().__init__(f"{what} failed:\n{tail}\n{error}")
