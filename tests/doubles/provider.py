"""A provider plugin for the real Pulumi engine, over the resource types of tests/doubles/crypto.

The engine talks to it through `pulumi.provider.experimental`'s gRPC server: Check fills the
schema's defaults, Diff compares the inputs only (the old state mixes inputs and outputs),
Create makes real keys, certificates and random values, Read and Update keep the state (a
certificate's `readyForRenewal` recomputed), Delete has nothing to do.

Values cross the boundary as `PropertyValue`s; inside they are plain Python, and secretness is
kept per top-level property: an input that arrived secret stays secret in the state, and the
outputs the real provider marks secret are secret.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from pulumi.provider.experimental.property_value import Computed, PropertyValue
from pulumi.provider.experimental.provider import (
    CheckFailure,
    CheckRequest,
    CheckResponse,
    ConfigureRequest,
    ConfigureResponse,
    CreateRequest,
    CreateResponse,
    DeleteRequest,
    DiffRequest,
    DiffResponse,
    GetSchemaRequest,
    GetSchemaResponse,
    PropertyDiff,
    PropertyDiffKind,
    Provider,
    ReadRequest,
    ReadResponse,
    UpdateRequest,
    UpdateResponse,
)
from pulumi.runtime import rpc

from tests.doubles import crypto


class _Unknown:
    """A value the engine does not know yet (a preview's computed value)."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()

# On the wire an unknown is this string. The SDK's PropertyValue reads it as a plain string and
# cannot marshal its own Computed (pulumi 3.272), so the doubles map both ways themselves.
WIRE_UNKNOWN = rpc.UNKNOWN


def to_plain(value: PropertyValue) -> Any:
    """Plain Python from a PropertyValue: numbers that are whole become ints, secrets unwrapped."""
    inner = value.value
    if isinstance(inner, Computed) or inner == WIRE_UNKNOWN:
        return UNKNOWN
    if isinstance(inner, bool) or inner is None or isinstance(inner, str):
        return inner
    if isinstance(inner, float):
        return int(inner) if inner.is_integer() else inner
    if isinstance(inner, Mapping):
        return {k: to_plain(v) for k, v in inner.items()}
    if isinstance(inner, Sequence):
        return [to_plain(cast(PropertyValue, v)) for v in inner]
    raise TypeError(f"the test doubles take no {type(inner).__name__} values")


def from_plain(value: Any, secret: bool = False) -> PropertyValue:
    """A PropertyValue from plain Python (numbers as floats, as on the wire)."""
    result: PropertyValue
    if value is UNKNOWN:
        result = PropertyValue(WIRE_UNKNOWN)
    elif value is None or isinstance(value, bool | str | float):
        result = PropertyValue(value)
    elif isinstance(value, int):
        result = PropertyValue(float(value))
    elif isinstance(value, Mapping):
        result = PropertyValue({k: from_plain(v) for k, v in value.items()})
    elif isinstance(value, Sequence):
        result = PropertyValue([from_plain(v) for v in value])
    else:
        raise TypeError(f"the test doubles make no {type(value).__name__} values")
    return result.with_secret(secret) if secret else result


def plain_map(values: Mapping[str, PropertyValue]) -> tuple[dict[str, Any], set[str]]:
    """The plain values of a property map and the keys that hold a secret."""
    return (
        {k: to_plain(v) for k, v in values.items()},
        {k for k, v in values.items() if v.contains_secret()},
    )


def property_map(
    values: Mapping[str, Any], secret_keys: set[str] | frozenset[str]
) -> dict[str, PropertyValue]:
    return {k: from_plain(v, k in secret_keys) for k, v in values.items()}


def contains_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def _same(old: Any, new: Any) -> bool:
    """Equal as the provider sees it: None and a missing value alike, 2048 == 2048.0."""
    if contains_unknown(new):
        return False
    return bool(old == new)


class DoubleProvider(Provider):
    """The resource types of one package (`tls` or `random`) from crypto.RESOURCES."""

    def __init__(
        self,
        package: str,
        version: str,
        now: Callable[[], datetime.datetime] | None = None,
    ) -> None:
        self.package = package
        self.version = version
        self.specs = {
            token: spec
            for token, spec in crypto.RESOURCES.items()
            if token.startswith(f"{package}:")
        }
        self.now = now or crypto.utcnow  # the clock, replaceable in tests

    def _spec(self, resource_type: str) -> crypto.ResourceSpec:
        # The SDK passes the URN's qualified type: the parents' types, then "$" and the own.
        spec = self.specs.get(resource_type.rsplit("$", 1)[-1])
        if spec is None:
            raise ValueError(f"the {self.package} test double has no resource type {resource_type}")
        return spec

    async def get_schema(self, request: GetSchemaRequest) -> GetSchemaResponse:
        return GetSchemaResponse(json.dumps({"name": self.package, "version": self.version}))

    async def configure(self, request: ConfigureRequest) -> ConfigureResponse:
        # Secrets in and out, previews; no resource references or output values.
        return ConfigureResponse(
            accept_secrets=True,
            supports_preview=True,
            accept_resources=False,
            accept_outputs=False,
        )

    async def check(self, request: CheckRequest) -> CheckResponse:
        spec = self._spec(request.type)
        news, secret_keys = plain_map(request.new_inputs)
        checked = crypto.with_defaults(spec, news)
        failures = crypto.validate(spec, checked)  # an unknown value passes
        return CheckResponse(
            inputs=property_map(checked, secret_keys | (spec.secrets & checked.keys())),
            failures=[CheckFailure(f.property, f.reason) for f in failures] or None,
        )

    def _changed_inputs(
        self,
        spec: crypto.ResourceSpec,
        olds: Mapping[str, Any],
        news: Mapping[str, Any],
        ignore: Sequence[str],
    ) -> list[str]:
        # Only inputs count: the old state holds outputs too. Write-only inputs are not in the
        # state; their version inputs stand for them.
        old_inputs = crypto.with_defaults(spec, {k: v for k, v in olds.items() if k in spec.inputs})
        return sorted(
            key
            for key in spec.inputs - spec.write_only
            if key not in ignore and not _same(old_inputs.get(key), news.get(key))
        )

    def _ready_for_renewal(self, spec: crypto.ResourceSpec, values: Mapping[str, Any]) -> bool:
        end = values.get("validityEndTime")
        hours = values.get("earlyRenewalHours") or 0
        if not spec.renews or not isinstance(end, str) or contains_unknown(hours):
            return False
        return crypto.ready_for_renewal(end, hours, self.now())

    async def diff(self, request: DiffRequest) -> DiffResponse:
        spec = self._spec(request.type)
        olds, _ = plain_map(request.old_state)
        news, _ = plain_map(request.new_inputs)
        changed = self._changed_inputs(spec, olds, news, request.ignore_changes)
        replaces = [key for key in changed if key not in spec.updatable]
        detailed = {
            key: PropertyDiff(
                PropertyDiffKind.UPDATE_REPLACE if key in replaces else PropertyDiffKind.UPDATE,
                True,
            )
            for key in changed
        }
        # terraform-provider-tls' ModifyPlan: the old certificate's end against the new
        # earlyRenewalHours; due means replace.
        if self._ready_for_renewal(
            spec, {**olds, "earlyRenewalHours": news.get("earlyRenewalHours")}
        ):
            replaces.append("readyForRenewal")
            detailed["readyForRenewal"] = PropertyDiff(PropertyDiffKind.UPDATE_REPLACE, False)
        diffs = sorted(detailed)
        return DiffResponse(
            changes=bool(diffs),
            replaces=replaces,
            diffs=diffs,
            detailed_diff=detailed,
            delete_before_replace=False,
        )

    async def create(self, request: CreateRequest) -> CreateResponse:
        spec = self._spec(request.type)
        inputs, secret_keys = plain_map(request.properties)
        stored = {k: v for k, v in inputs.items() if k not in spec.write_only}
        secret_keys |= spec.secrets
        if request.preview:
            computed: dict[str, Any] = dict.fromkeys(spec.outputs, UNKNOWN)
            early, validity = inputs.get("earlyRenewalHours"), inputs.get("validityPeriodHours")
            if isinstance(early, int | float) and isinstance(validity, int | float):
                # Due from its start when the early renewal is no shorter than the validity.
                computed["readyForRenewal"] = early >= validity
            return CreateResponse(None, property_map({**stored, **computed}, secret_keys))
        resource_id, computed = spec.create(inputs)
        if spec.renews:
            computed["readyForRenewal"] = self._ready_for_renewal(spec, {**inputs, **computed})
        return CreateResponse(resource_id, property_map({**stored, **computed}, secret_keys))

    async def read(self, request: ReadRequest) -> ReadResponse:
        spec = self._spec(request.type)
        state, secret_keys = plain_map(request.properties)
        if spec.renews and "validityEndTime" in state:
            state["readyForRenewal"] = self._ready_for_renewal(spec, state)
        inputs = request.inputs or {k: v for k, v in request.properties.items() if k in spec.inputs}
        return ReadResponse(
            request.resource_id, property_map(state, secret_keys | spec.secrets), inputs
        )

    async def update(self, request: UpdateRequest) -> UpdateResponse:
        # Only an updatable input (a certificate's earlyRenewalHours) gets here: the new inputs
        # over the old state.
        spec = self._spec(request.type)
        olds, old_secrets = plain_map(request.olds)
        news, new_secrets = plain_map(request.news)
        state = {**olds, **{k: v for k, v in news.items() if k not in spec.write_only}}
        if spec.renews and not request.preview:
            state["readyForRenewal"] = self._ready_for_renewal(spec, state)
        return UpdateResponse(property_map(state, old_secrets | new_secrets | spec.secrets))

    async def delete(self, request: DeleteRequest) -> None:
        return None  # keys, certificates and random values exist only in the state
