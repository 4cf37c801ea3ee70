"""Run the real Pulumi program under Pulumi's mock runtime, with real keys and certificates.

The mocks stand in for the Pulumi engine and the providers only:
- pulumi-tls: keys, CSRs and certificates are made with `cryptography`, with the inputs the
  provider would use (subject, SANs, usages, validity), so tests check real chains.
- pulumi-random: real random bytes and strings.
- pulumi-kubernetes: an object's outputs are its inputs (what the API server would store).
The tls and random outputs come from tests/doubles/crypto.py, the code of the test-double
provider plugins that the real engine launches (tests/doubles).

Like the engine's state, a `MockState` shared between runs keeps a resource's outputs while
its inputs stay the same, so a second run sees the keys of the first.
"""

from __future__ import annotations

import copy
import json
import os
import runpy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.rpc import UNKNOWN
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from tests.doubles.crypto import RESOURCES, provider_outputs

PROJECT = "k8s-on-k8s"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(REPO_ROOT, "__main__.py")

SECRET_SIGNATURE = "4dabf18193072939515e22adb298388d"  # Pulumi's wire marker of a secret


@dataclass
class RegisteredResource:
    type: str
    name: str
    inputs: dict[str, Any]  # with secrets unwrapped
    provider: str | None
    secret_paths: set[str]  # dotted paths of the inputs that arrived as secrets


def unwrap_secrets(value: Any, path: str = "", found: set[str] | None = None) -> Any:
    """Plain values from Pulumi's wire form, noting where secrets were."""
    found = found if found is not None else set()
    if isinstance(value, dict):
        if value.get(SECRET_SIGNATURE) == "1b47061264138c4ac30d75fd1eb44270":
            found.add(path)
            return unwrap_secrets(value.get("value"), path, found)
        return {k: unwrap_secrets(v, f"{path}.{k}" if path else k, found) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v, f"{path}[{i}]", found) for i, v in enumerate(value)]
    return value


@dataclass
class MockState:
    """What the engine would keep between two `pulumi up` runs: outputs by resource."""

    outputs: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(default_factory=dict)
    # The stack's outputs after the last run: what a reference to the stack itself reads.
    stack_outputs: dict[str, Any] = field(default_factory=dict)


class RealCryptoMocks(pulumi.runtime.Mocks):
    """Records every registered resource; answers like the engine with the given state."""

    def __init__(self, state: MockState | None = None, *, preview: bool = False) -> None:
        self.state = state if state is not None else MockState()
        self.resources: list[RegisteredResource] = []
        # As in `pulumi preview`: what a provider computes on create is unknown until then.
        self.preview = preview

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        secret_paths: set[str] = set()
        inputs = unwrap_secrets(copy.deepcopy(dict(args.inputs)), found=secret_paths)
        self.resources.append(
            RegisteredResource(args.typ, args.name, inputs, args.provider, secret_paths)
        )
        if args.typ == "pulumi:pulumi:StackReference":
            outputs = copy.deepcopy(self.state.stack_outputs)
            return args.name, {"name": args.name, "outputs": outputs, "secretOutputNames": []}
        key = (args.typ, args.name)
        fingerprint = json.dumps(inputs, sort_keys=True, default=str)
        known = self.state.outputs.get(key)
        if known is not None and known[0] == fingerprint:
            return f"{args.name}-id", copy.deepcopy(known[1])
        if self.preview:
            spec = RESOURCES.get(args.typ)
            computed = spec.outputs - spec.inputs if spec is not None else frozenset()
            return f"{args.name}-id", {**inputs, **{key: UNKNOWN for key in computed}}
        outputs = provider_outputs(args.typ, inputs)
        self.state.outputs[key] = (fingerprint, copy.deepcopy(outputs))
        return f"{args.name}-id", outputs

    def call(
        self, args: pulumi.runtime.MockCallArgs
    ) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


@dataclass
class ProgramRun:
    resources: list[RegisteredResource]
    outputs: dict[str, Any]
    secret_outputs: set[str]

    def of_type(self, resource_type: str) -> list[RegisteredResource]:
        return [r for r in self.resources if r.type == resource_type]

    def named(self, name: str) -> RegisteredResource:
        matches = [r for r in self.resources if r.name == name]
        if len(matches) != 1:
            raise KeyError(f"{len(matches)} resources named {name!r}")
        return matches[0]

    def objects_through(self, provider_name: str) -> list[RegisteredResource]:
        """Kubernetes objects sent through the provider of that name."""
        marker = f"pulumi:providers:kubernetes::{provider_name}::"
        return [r for r in self.kubernetes_objects() if r.provider and marker in r.provider]

    def kubernetes_objects(self) -> list[RegisteredResource]:
        return [
            r
            for r in self.resources
            if r.type.startswith("kubernetes:") and "providers" not in r.type
        ]


def run_program(
    config: Mapping[str, Any] | None = None,
    *,
    state: MockState | None = None,
    mocks: RealCryptoMocks | None = None,
    stack: str = "test",
    program: str = PROGRAM,
    preview: bool = False,
) -> ProgramRun:
    """Run __main__.py once under the mocks with `config` (keys without the project prefix).

    Pass `mocks` to look at what was registered even when the program fails.
    """
    mocks = mocks if mocks is not None else RealCryptoMocks(state, preview=preview)
    runtime_settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview)
    pulumi.runtime.set_all_config({f"{PROJECT}:{k}": str(v) for k, v in (config or {}).items()})
    resolved: dict[str, Any] = {}
    secret_outputs: set[str] = set()

    async def resolve_exports() -> None:
        root = runtime_settings.get_root_resource()
        exports = getattr(root, "outputs", {})
        for name, value in exports.items():
            output = pulumi.Output.from_input(value)
            resolved[name] = await output.future()
            if await output.is_secret():
                secret_outputs.add(name)

    def program_then_exports() -> Any:
        runpy.run_path(program, run_name="__main__")
        return resolve_exports()

    _sync_await(run_pulumi_func(program_then_exports))
    if not preview:
        mocks.state.stack_outputs = copy.deepcopy(resolved)
    return ProgramRun(mocks.resources, resolved, secret_outputs)
