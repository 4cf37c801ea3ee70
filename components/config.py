"""The stack's configuration: read once at the edge, validated, turned into frozen settings.

`parse_settings` is pure (a mapping of raw strings in, settings or one `ConfigError` out), so
every rule is tested without the Pulumi runtime. `load_settings` is the only place that calls
`pulumi.Config`; components receive the typed settings and never read config themselves.

`parse_settings` composes one small parser per section (`parse_identity`, `parse_images`,
`parse_network`, `parse_exposure`, `parse_etcd`, `parse_api_server`, ...), each returning a
frozen dataclass; `ControlPlaneSettings` holds their fields side by side.
"""

from __future__ import annotations

import enum
import fnmatch
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from components.common.endpoints import API_SERVER_PORT, HTTPS_PORT, https_url
from components.common.versions import (
    DEFAULT_RELEASE,
    KubernetesRelease,
    find_release,
    supported_versions,
)

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

PROJECT = "k8s-on-k8s"

ETCD_MEMBER_COUNTS = (1, 3)
NODE_PORT_RANGE = (30000, 32767)
# Object names get suffixes such as "-controller-manager-kubeconfig"; keep room within 63.
CLUSTER_NAME_MAX_LENGTH = 30

# Every key with its default. Pulumi.yaml declares the same keys and defaults; the defaults
# live here too because the mock runtime does not apply Pulumi.yaml's.
DEFAULTS: dict[str, str] = {
    "clusterName": "kubernetes",
    "namespace": "k8s-tenant",
    "apiHost": "kubernetes.example.com",
    "kubernetesVersion": DEFAULT_RELEASE.version,
    "exposure": "ingress",
    "ingressClassName": "nginx",
    "loadBalancerIP": "",
    "nodePort": "31443",
    "apiServerReplicas": "2",
    "controllerManagerReplicas": "2",
    "schedulerReplicas": "2",
    "etcdReplicas": "3",
    "etcdStorageSize": "4Gi",
    "etcdStorageClass": "",
    "serviceCidr": "10.96.0.0/12",
    "podCidr": "10.244.0.0/16",
    "clusterDomain": "cluster.local",
    "infraClusterDomain": "cluster.local",
    "imageRegistry": "registry.k8s.io",
    "imageDigests": "",
    "etcdCpuRequest": "100m",
    "etcdMemoryRequest": "256Mi",
    "apiServerCpuRequest": "250m",
    "apiServerMemoryRequest": "512Mi",
    "controllerManagerCpuRequest": "100m",
    "controllerManagerMemoryRequest": "128Mi",
    "schedulerCpuRequest": "50m",
    "schedulerMemoryRequest": "64Mi",
    "apiAdvertiseAddress": "",
    "apiProxyImage": "",
    "apiProxyAddress": "172.20.0.1",
    "bootstrapTokenTtl": "24h",
    "certificateValidityHours": "8760",
    "certificateRenewalHours": "720",
    "coreDns": "true",
    "konnectivity": "false",
    "konnectivityNodePort": "31132",
    "kubeProxy": "true",
    "adminAccess": "true",
    "secretsEncryptionKeys": "key1",
    "apiServerEgressCidrs": "",
    "ingressControllerNamespaces": "ingress-nginx",
    "ingressControllerCidrs": "",
    "apiServerExtraArgs": "",
    "controllerManagerExtraArgs": "",
    "schedulerExtraArgs": "",
    "etcdExtraArgs": "",
    "konnectivityServerExtraArgs": "",
    "suspended": "false",
}

DEFAULT_IMAGE_REGISTRY = "registry.k8s.io"
# The API proxy's image: HAProxy from its official repository, or `haproxy` under a mirror
# given as imageRegistry (registry.k8s.io itself does not carry it).
API_PROXY_IMAGE_NAME = "haproxy"
API_PROXY_IMAGE_TAG = "3.2-alpine"
PUBLIC_API_PROXY_IMAGE = f"docker.io/library/{API_PROXY_IMAGE_NAME}:{API_PROXY_IMAGE_TAG}"
# The images taken from imageRegistry, by the name imageDigests pins them with.
REGISTRY_IMAGES = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "coredns/coredns",
    "kas-network-proxy/proxy-server",
    "kas-network-proxy/proxy-agent",
)

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^(\d+(\.\d+)?)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_REGISTRY = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*$")
# An image reference: repository path (optionally with a registry host and port), then a tag
# and/or a digest.
_IMAGE = re.compile(
    r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:\d{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)*"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
)


# A component's extraArgs: (flag name without dashes, value), sorted by name.
ExtraArgs = tuple[tuple[str, str], ...]


class ConfigError(ValueError):
    """Bad stack configuration: raised before any resource is registered."""


@dataclass(frozen=True)
class ResourceRequests:
    cpu: str
    memory: str


class ExposureMode(enum.StrEnum):
    """The `exposure` setting; each member is its config value (so str() and f-strings give it)."""

    INGRESS = "ingress"
    LOAD_BALANCER = "loadBalancer"
    NODE_PORT = "nodePort"


@dataclass(frozen=True)
class ExposureSettings:
    """How clients outside the infrastructure cluster reach the API; the component that
    publishes it is `Exposure` (components/host/exposure.py)."""

    mode: ExposureMode
    host: str  # DNS name or IP that clients use to reach the API
    ingress_class_name: str
    load_balancer_ip: str | None
    node_port: int

    @property
    def port(self) -> int:
        """The port clients dial from outside the infrastructure cluster."""
        match self.mode:
            case ExposureMode.INGRESS:
                return HTTPS_PORT
            case ExposureMode.NODE_PORT:
                return self.node_port
            case ExposureMode.LOAD_BALANCER:
                return API_SERVER_PORT

    @property
    def endpoint(self) -> str:
        host = (
            self.load_balancer_ip
            if self.mode is ExposureMode.LOAD_BALANCER and self.load_balancer_ip
            else self.host
        )
        return https_url(host, self.port)


@dataclass(frozen=True)
class ControlPlaneSettings:
    """Every setting, flat: the fields of the sections below (IdentitySection, ImageSection,
    ...) side by side, so components read `settings.etcd_replicas` whatever section parsed it."""

    cluster_name: str
    namespace: str
    release: KubernetesRelease
    exposure: ExposureSettings
    api_server_replicas: int
    controller_manager_replicas: int
    scheduler_replicas: int
    etcd_replicas: int
    etcd_storage_size: str
    etcd_storage_class: str | None
    service_cidr: str
    pod_cidr: str
    cluster_domain: str
    infra_cluster_domain: str
    image_registry: str
    # Digests pinned per image of REGISTRY_IMAGES (name -> "sha256:..."); the tag stays readable.
    image_digests: tuple[tuple[str, str], ...]
    etcd_resources: ResourceRequests
    api_server_resources: ResourceRequests
    controller_manager_resources: ResourceRequests
    scheduler_resources: ResourceRequests
    # The IP and port that nodes reach the API at, which `kubernetes.default` points to with
    # nodePort and loadBalancer exposure; None with ingress (SNI routing needs a host name).
    node_api_address: str | None
    node_api_port: int
    # The API proxy behind `kubernetes.default` with ingress exposure: its image, and
    # the address it listens at on every node (the Service's endpoint).
    api_proxy_image: str
    api_proxy_address: str
    # Lifetime of a node bootstrap token (kubeadm's --ttl); 0: tokens never expire.
    bootstrap_token_ttl_seconds: int
    core_dns: bool
    kube_proxy: bool
    # The `kubeconfig` output's identity is bound to cluster-admin; false revokes it.
    admin_access: bool
    # Names of the keys that encrypt Secrets at rest: the first writes, every one reads.
    encryption_keys: tuple[str, ...]
    konnectivity: bool
    konnectivity_node_port: int  # where agents reach the proxy-server with nodePort exposure
    # Leaf certificates (CAs live 10 years): lifetime, and the window before the end in which a
    # `pulumi up` issues a new one. A window as long as the lifetime makes every leaf due.
    certificate_validity_hours: int = 8760
    certificate_renewal_hours: int = 720
    # NetworkPolicy: where the apiservers may open connections beyond etcd and DNS (the
    # tenant's nodes, webhooks), and who reaches them with ingress exposure besides the node.
    api_server_egress_cidrs: tuple[str, ...] = ()
    ingress_controller_namespaces: tuple[str, ...] = ("ingress-nginx",)
    ingress_controller_cidrs: tuple[str, ...] = ()
    # kubeadm-style extraArgs per component, merged over the managed flags (with_extra_args).
    api_server_extra_args: ExtraArgs = ()
    controller_manager_extra_args: ExtraArgs = ()
    scheduler_extra_args: ExtraArgs = ()
    etcd_extra_args: ExtraArgs = ()
    konnectivity_server_extra_args: ExtraArgs = ()
    # Sleep: every control-plane workload at zero replicas, its data, certificates and tokens
    # kept; false wakes it up with the same state.
    suspended: bool = False

    def running(self, replicas: int) -> int:
        """The replicas a control-plane workload runs now: none while suspended."""
        return 0 if self.suspended else replicas

    @property
    def cluster_dns_ip(self) -> str:
        """The tenth address of the service range, where kubeadm puts the DNS Service."""
        return str(ipaddress.ip_network(self.service_cidr)[10])

    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the service range: the ClusterIP of `kubernetes.default`."""
        return str(ipaddress.ip_network(self.service_cidr)[1])

    def image(self, name: str, tag: str | None = None) -> str:
        """`name` from imageRegistry at `tag` (the release by default), pinned by digest when
        imageDigests names it."""
        reference = f"{self.image_registry}/{name}:{tag or self.release.version}"
        digest = dict(self.image_digests).get(name)
        return f"{reference}@{digest}" if digest else reference


@dataclass(frozen=True)
class InfraProviderSettings:
    """Which infrastructure cluster to use: pulumi-kubernetes' own `kubernetes:` settings."""

    kubeconfig: Any  # pulumi.Output[str] (a secret: it may hold credentials) or None
    context: str | None


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_dns_name(value: str) -> bool:
    if not value or len(value) > 253:
        return False
    return all(_DNS_LABEL.match(label) for label in value.split("."))


def quantity_is_positive(value: str) -> bool:
    match = _QUANTITY.match(value)
    return match is not None and float(match.group(1)) > 0


T = TypeVar("T")


class Collector:
    """Gathers every problem so one run reports all of them in one message."""

    def __init__(self, raw: Mapping[str, Any]) -> None:
        unknown = sorted(set(raw) - set(DEFAULTS))
        self.values = {key: _text(raw.get(key, default)) for key, default in DEFAULTS.items()}
        self.errors: list[str] = [
            f"{PROJECT}:{key} is not a known setting; known keys: {', '.join(sorted(DEFAULTS))}"
            for key in unknown
        ]

    def fail(self, key: str, allowed: str) -> None:
        self.errors.append(f"{PROJECT}:{key} = {self.values[key]!r} is invalid; allowed: {allowed}")

    def refuse(self, key: str, problem: str) -> None:
        self.errors.append(f"{PROJECT}:{key} {problem}")

    def check(self, key: str, parse: Callable[[str], T | None], allowed: str, fallback: T) -> T:
        try:
            parsed = parse(self.values[key])
        except ValueError:
            parsed = None
        if parsed is None:
            self.fail(key, allowed)
            return fallback
        return parsed


def _text(value: Any) -> str:
    """A raw value as Pulumi passes it: a string; a structured value (a map set with `pulumi
    config set --path`, or given as one in a test) arrives as its JSON."""
    if isinstance(value, Mapping | list):
        return json.dumps(value, sort_keys=True)
    return str(value).strip()


def _duration_seconds(value: str) -> int | None:
    """A Go-style duration of hours, minutes and seconds ("24h", "1h30m", "90s"), or "0"."""
    if value == "0":
        return 0
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", value)
    if not value or match is None:
        return None
    hours, minutes, seconds = (int(part or 0) for part in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    return total if total > 0 else None


def _empty_or(accepts: Callable[[str], bool]) -> Callable[[str], str | None]:
    """An optional setting: empty, or a value `accepts` takes."""
    return lambda value: value if value == "" or accepts(value) else None


def _has_tag_or_digest(image: str) -> bool:
    """A pinned reference: a digest, or a tag after the last path segment (not a port)."""
    return "@" in image or ":" in image.rsplit("/", 1)[-1]


def _image_digests(value: str) -> tuple[tuple[str, str], ...] | None:
    """`name=sha256:<hex>,…` for images of REGISTRY_IMAGES, each named at most once."""
    if not value:
        return ()
    pairs = []
    for item in value.split(","):
        name, _, digest = item.strip().partition("=")
        if name not in REGISTRY_IMAGES or not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            return None
        pairs.append((name, digest))
    names = [name for name, _ in pairs]
    return tuple(sorted(pairs)) if len(set(names)) == len(names) else None


def _key_names(value: str) -> tuple[str, ...] | None:
    names = tuple(name.strip() for name in value.split(","))
    valid = all(len(name) <= 20 and _DNS_LABEL.match(name) for name in names)
    return names if valid and len(set(names)) == len(names) else None


def _list_of(item: Callable[[str], str | None]) -> Callable[[str], tuple[str, ...] | None]:
    """A comma-separated list (empty: none) of distinct items that `item` accepts."""

    def parse(value: str) -> tuple[str, ...] | None:
        if not value:
            return ()
        items = [item(part.strip()) for part in value.split(",")]
        if any(parsed is None for parsed in items) or len(set(items)) != len(items):
            return None
        return tuple(parsed for parsed in items if parsed is not None)

    return parse


def _cidr(value: str) -> str | None:
    return str(ipaddress.ip_network(value, strict=True))


def _positive_int(value: str) -> int | None:
    number = int(value)
    return number if number > 0 else None


def _dns_label(max_length: int) -> Callable[[str], str | None]:
    return lambda value: value if len(value) <= max_length and _DNS_LABEL.match(value) else None


def _quantity(value: str) -> str | None:
    return value if quantity_is_positive(value) else None


def _endpoint_ip(value: str) -> str | None:
    """An address the apiserver takes as an endpoint (it refuses these special ranges)."""
    ip = ipaddress.ip_address(value)
    special = ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast
    return None if special else str(ip)


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    return ipaddress.ip_network(value, strict=True)


def _dns_name(value: str) -> str | None:
    return value if is_dns_name(value) else None


# --- extraArgs -----------------------------------------------------------------------------
# kubeadm's escape hatch: per component, flags (name without dashes -> string value) merged over
# the managed ones. A user value replaces the managed value of the same flag, a new flag comes
# after the managed ones (by name). The flags below stay the program's: each names what the
# program's PKI, wiring or security rests on. A pattern is a flag name, or a prefix ending in *.

_FLAG_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ADMISSION_PLUGIN = "NodeRestriction"

_SERVING = "the apiserver serves and trusts the certificates of the program's PKI, mounted there"
_SERVICE_ACCOUNTS = "service-account tokens are signed and checked with the program's key pair"
_AUTHORIZATION = "Node,RBAC authorization is what the program's RBAC objects and nodes rely on"
_FRONT_PROXY = "aggregated APIs trust the front-proxy client certificate of the program's PKI"
_COMPONENT_IDENTITY = (
    "the component reaches and trusts the apiserver with the kubeconfig and CA the program "
    "issues and mounts"
)
_SIGNING = "the cluster CA of the program's PKI signs and roots every certificate in the cluster"
_PROBED = "the kubelet's probes and the program's Services reach the component there"
_ETCD_TLS = (
    "clients and peers authenticate each other by mutual TLS with the program's certificates"
)
_ETCD_MEMBERS = (
    "members find each other and keep their data by these, derived from etcdReplicas and "
    "the StatefulSet's volumes"
)

_TUNNEL = "the apiserver reaches its sidecar on the unix socket only, as the egress selector says"
_AGENT_AUTH = (
    "agents authenticate with kube-system/konnectivity-agent tokens, reviewed with the "
    "sidecar's kubeconfig"
)

PROTECTED_FLAGS: dict[str, dict[str, str]] = {
    "apiServerExtraArgs": {
        "client-ca-file": _SERVING,
        "tls-cert-file": _SERVING,
        "tls-private-key-file": _SERVING,
        "service-account-*": _SERVICE_ACCOUNTS,
        "etcd-*": "the apiserver reaches its etcd members by mutual TLS with the program's "
        "certificates",
        "encryption-provider-config": "Secrets at rest are encrypted with the keys of "
        "secretsEncryptionKeys",
        "authorization-*": _AUTHORIZATION,
        "anonymous-auth": "the kubelet's probes reach /livez and /readyz anonymously",
        "kubelet-client-*": "the apiserver authenticates to kubelets with the program's client "
        "certificate",
        "requestheader-*": _FRONT_PROXY,
        "proxy-client-*": _FRONT_PROXY,
        "enable-bootstrap-token-auth": "nodes join with the bootstrap token the program issues",
        "secure-port": _PROBED,
        "service-cluster-ip-range": "it is serviceCidr, fixed once the cluster exists",
        "egress-selector-config-file": "it is the konnectivity setting",
        "endpoint-reconciler-type": "the program decides where kubernetes.default leads",
        "audit-policy-file": "every request is audited (metadata only) to the container's log",
        "audit-log-path": "every request is audited (metadata only) to the container's log",
    },
    "controllerManagerExtraArgs": {
        "kubeconfig": _COMPONENT_IDENTITY,
        "authentication-kubeconfig": _COMPONENT_IDENTITY,
        "authorization-kubeconfig": _COMPONENT_IDENTITY,
        "client-ca-file": _COMPONENT_IDENTITY,
        "requestheader-*": _FRONT_PROXY,
        "service-account-private-key-file": _SERVICE_ACCOUNTS,
        "use-service-account-credentials": "each controller acts with its own service "
        "account, bound to its own RBAC role",
        "root-ca-file": _SIGNING,
        "cluster-signing-*": _SIGNING,
        "bind-address": _PROBED,
        "secure-port": _PROBED,
        "cert-dir": "the only writable directory is the pod's emptyDir",
        "cluster-name": "it is clusterName, fixed once the cluster exists",
        "cluster-cidr": "it is podCidr, fixed once the cluster exists",
        "service-cluster-ip-range": "it is serviceCidr, fixed once the cluster exists",
    },
    "schedulerExtraArgs": {
        "kubeconfig": _COMPONENT_IDENTITY,
        "authentication-kubeconfig": _COMPONENT_IDENTITY,
        "authorization-kubeconfig": _COMPONENT_IDENTITY,
        "bind-address": _PROBED,
        "secure-port": _PROBED,
        "cert-dir": "the only writable directory is the pod's emptyDir",
    },
    "etcdExtraArgs": {
        "cert-file": _ETCD_TLS,
        "key-file": _ETCD_TLS,
        "trusted-ca-file": _ETCD_TLS,
        "client-cert-auth": _ETCD_TLS,
        "auto-tls": _ETCD_TLS,
        "peer-*": _ETCD_TLS,
        "name": _ETCD_MEMBERS,
        "data-dir": _ETCD_MEMBERS,
        "wal-dir": _ETCD_MEMBERS,
        "initial-cluster*": _ETCD_MEMBERS,
        "initial-advertise-peer-urls": _ETCD_MEMBERS,
        "advertise-client-urls": _ETCD_MEMBERS,
        "listen-client-urls": _ETCD_MEMBERS,
        "listen-peer-urls": _ETCD_MEMBERS,
        "listen-metrics-urls": "the kubelet's probes reach the member there",
    },
    "konnectivityServerExtraArgs": {
        "mode": _TUNNEL,
        "uds-name": _TUNNEL,
        "delete-existing-uds-file": _TUNNEL,
        "server-port": _TUNNEL,
        "server-ca-cert": _TUNNEL,
        "server-cert": _TUNNEL,
        "server-key": _TUNNEL,
        "agent-port": _PROBED,
        "admin-port": _PROBED,
        "health-port": _PROBED,
        "cluster-*": "agents check the apiserver's certificate of the program's PKI there",
        "agent-namespace": _AGENT_AUTH,
        "agent-service-account": _AGENT_AUTH,
        "authentication-audience": _AGENT_AUTH,
        "kubeconfig": _AGENT_AUTH,
        "server-id": "each apiserver pod's sidecar is one server, counted by apiServerReplicas",
        "server-count": "each apiserver pod's sidecar is one server, counted by apiServerReplicas",
    },
}


def protection(key: str, name: str, value: str) -> str | None:
    """Why `key` may not set the flag `name` to `value`; None if it may."""
    for pattern, why in PROTECTED_FLAGS[key].items():
        if fnmatch.fnmatchcase(name, pattern):
            return why
    plugins = [plugin.strip() for plugin in value.split(",")]
    if key == "apiServerExtraArgs" and (
        (name == "enable-admission-plugins" and _ADMISSION_PLUGIN not in plugins)
        or (name == "disable-admission-plugins" and _ADMISSION_PLUGIN in plugins)
    ):
        return (
            f"{_ADMISSION_PLUGIN} keeps each kubelet to its own Node and pods; the list may "
            f"add plugins but must keep {_ADMISSION_PLUGIN} enabled"
        )
    return None


def parse_extra_args(c: Collector, key: str) -> ExtraArgs:
    """`key`'s flags: a JSON object of flag names to string values (empty: none), every flag
    name well-formed and none protected."""
    if not c.values[key]:
        return ()
    try:
        document = json.loads(c.values[key])
    except ValueError:
        document = None
    if not isinstance(document, dict):
        c.fail(
            key,
            "empty, or a JSON object of flag names to string values, as kubeadm's extraArgs, "
            'such as {"v": "2"}',
        )
        return ()
    flags: list[tuple[str, str]] = []
    for name, value in sorted(document.items()):
        if not _FLAG_NAME.match(name):
            c.refuse(
                key,
                f"flag {name!r} is invalid; allowed: a flag name without leading dashes, of "
                "lowercase letters, digits and '-', such as audit-log-maxage",
            )
        elif not isinstance(value, str):
            c.refuse(
                key,
                f"flag {name!r} = {json.dumps(value)} is invalid; allowed: a string, such as "
                '"2" (quote numbers and booleans)',
            )
        elif (why := protection(key, name, value)) is not None:
            c.refuse(key, f"cannot set --{name}={value}, a flag the program manages: {why}")
        else:
            flags.append((name, value))
    return tuple(flags)


def with_extra_args(command: list[str], extra_args: ExtraArgs) -> list[str]:
    """`command` (the binary, then --name=value flags) with `extra_args` merged in: a flag
    already there takes the extra value in its place, the others follow in name order."""
    extra = dict(extra_args)
    merged = []
    for arg in command:
        name, has_value, _ = arg.removeprefix("--").partition("=")
        if arg.startswith("--") and has_value and name in extra:
            arg = f"--{name}={extra.pop(name)}"
        merged.append(arg)
    return merged + [f"--{name}={value}" for name, value in sorted(extra.items())]


# --- the sections ---------------------------------------------------------------------------
# One small parser per section of the config, each returning its frozen dataclass. A parser
# records every problem in the collector and carries on with a fallback value, so one run
# names every bad key; `parse_settings` raises before anything uses the fallbacks. A section's
# field names are ControlPlaneSettings' own: the settings are the sections laid side by side.


@dataclass(frozen=True)
class IdentitySection:
    """Where the control plane lives: what names every object, and the namespace's cluster."""

    cluster_name: str
    namespace: str
    infra_cluster_domain: str


def parse_identity(c: Collector) -> IdentitySection:
    return IdentitySection(
        cluster_name=c.check(
            "clusterName",
            _dns_label(CLUSTER_NAME_MAX_LENGTH),
            "a DNS label (lowercase letters, digits, '-') of at most "
            f"{CLUSTER_NAME_MAX_LENGTH} chars",
            "x",
        ),
        namespace=c.check("namespace", _dns_label(63), "a DNS label of at most 63 characters", "x"),
        infra_cluster_domain=c.check(
            "infraClusterDomain",
            _dns_name,
            "the infrastructure cluster's DNS domain, such as cluster.local",
            "x",
        ),
    )


@dataclass(frozen=True)
class ImageSection:
    """The release and where every image comes from."""

    release: KubernetesRelease
    image_registry: str
    # Digests pinned per image of REGISTRY_IMAGES (name -> "sha256:..."); the tag stays readable.
    image_digests: tuple[tuple[str, str], ...]
    api_proxy_image: str


def parse_images(c: Collector) -> ImageSection:
    release = c.check(
        "kubernetesVersion",
        find_release,
        "one of " + ", ".join(supported_versions()) + " (or another patch of those minors)",
        DEFAULT_RELEASE,
    )
    registry = c.check(
        "imageRegistry",
        lambda value: value if _REGISTRY.match(value) else None,
        "a registry host with optional port and path, without tag or scheme",
        "x",
    )
    no_digests: tuple[tuple[str, str], ...] = ()
    digests = c.check(
        "imageDigests",
        _image_digests,
        "empty or comma-separated name=sha256:<64 hex digits> pairs, names among "
        + ", ".join(REGISTRY_IMAGES),
        no_digests,
    )
    proxy_image = c.check(
        "apiProxyImage",
        _empty_or(lambda value: bool(_IMAGE.match(value)) and _has_tag_or_digest(value)),
        "empty (HAProxy from imageRegistry when that is a mirror, else from Docker Hub) or an "
        "image reference with a tag or digest, such as haproxy:3.2-alpine",
        "x",
    )
    if not proxy_image:
        proxy_image = (
            PUBLIC_API_PROXY_IMAGE
            if registry == DEFAULT_IMAGE_REGISTRY
            else f"{registry}/{API_PROXY_IMAGE_NAME}:{API_PROXY_IMAGE_TAG}"
        )
    return ImageSection(release, registry, digests, proxy_image)


@dataclass(frozen=True)
class NetworkSection:
    """The tenant's address ranges and DNS domain, and the node-local proxy's address."""

    service_cidr: str
    pod_cidr: str
    cluster_domain: str
    # The address the API proxy behind `kubernetes.default` (ingress exposure) listens at on
    # every node: the Service's endpoint.
    api_proxy_address: str


def parse_network(c: Collector) -> NetworkSection:
    service_cidr = c.check(
        "serviceCidr", _network, "a CIDR such as 10.96.0.0/12 (host bits zero)", None
    )
    if service_cidr is not None and service_cidr.num_addresses > 2**20:
        c.fail("serviceCidr", "a range of at most 2^20 addresses (/12 or longer for IPv4)")
        service_cidr = None
    pod_cidr = c.check("podCidr", _network, "a CIDR such as 10.244.0.0/16 (host bits zero)", None)
    if service_cidr is not None and pod_cidr is not None and service_cidr.overlaps(pod_cidr):
        c.fail("podCidr", f"a range that does not overlap serviceCidr {service_cidr}")
    proxy_address = c.check(
        "apiProxyAddress",
        _endpoint_ip,
        "an IP address that is not unspecified, loopback, link-local or multicast (Kubernetes "
        "refuses those as endpoints), such as 172.20.0.1",
        "",
    )
    for key, network in (("serviceCidr", service_cidr), ("podCidr", pod_cidr)):
        if proxy_address and network and ipaddress.ip_address(proxy_address) in network:
            c.fail("apiProxyAddress", f"an address outside {key} {network}")
    return NetworkSection(
        service_cidr=str(service_cidr or ""),
        pod_cidr=str(pod_cidr or ""),
        cluster_domain=c.check(
            "clusterDomain", _dns_name, "a DNS domain such as cluster.local", "x"
        ),
        api_proxy_address=proxy_address,
    )


@dataclass(frozen=True)
class ExposureSection:
    """How clients outside reach the API, and where the tenant's nodes reach it."""

    exposure: ExposureSettings
    # The IP and port that nodes reach the API at, which `kubernetes.default` points to with
    # nodePort and loadBalancer exposure; None with ingress (SNI routing needs a host name).
    node_api_address: str | None
    node_api_port: int


def parse_exposure(c: Collector) -> ExposureSection:
    mode = c.check(
        "exposure",
        ExposureMode,
        " | ".join(member.value for member in ExposureMode),
        ExposureMode.INGRESS,
    )
    host = c.check(
        "apiHost",
        lambda value: value if is_dns_name(value) or is_ip(value) else None,
        "a DNS name such as api.example.com (lowercase, no scheme, port or wildcard) or an IP",
        "x",
    )
    if mode is ExposureMode.INGRESS and is_ip(host):
        c.fail(
            "apiHost",
            "a DNS name when exposure is ingress: the ingress routes TLS by server name, and "
            "clients send none for an IP",
        )
    low, high = NODE_PORT_RANGE
    exposure = ExposureSettings(
        mode=mode,
        host=host,
        ingress_class_name=c.check(
            "ingressClassName", _dns_label(63), "an IngressClass name (a DNS label)", "x"
        ),
        load_balancer_ip=c.check(
            "loadBalancerIP",
            _empty_or(is_ip),
            "empty (the load balancer picks) or an IPv4/IPv6 address",
            "",
        )
        or None,
        node_port=c.check(
            "nodePort",
            lambda value: int(value) if low <= int(value) <= high else None,
            f"an integer from {low} to {high} (the default NodePort range)",
            low,
        ),
    )
    advertise = c.check(
        "apiAdvertiseAddress",
        _empty_or(is_ip),
        "empty (derived from apiHost or loadBalancerIP) or the IP nodes reach the API at",
        "",
    )
    node_api_address = None
    if mode is not ExposureMode.INGRESS:
        node_api_address = (
            advertise
            or (exposure.load_balancer_ip if mode is ExposureMode.LOAD_BALANCER else "")
            or (host if is_ip(host) else "")
            or None
        )
        if node_api_address is None:
            c.fail(
                "apiAdvertiseAddress",
                f"an IP when exposure is {mode} and apiHost is a DNS name: in-cluster clients "
                "reach kubernetes.default through it",
            )
    # Nodes dial the API at the port clients outside do.
    return ExposureSection(exposure, node_api_address, node_api_port=exposure.port)


@dataclass(frozen=True)
class EtcdSection:
    etcd_replicas: int
    etcd_storage_size: str
    etcd_storage_class: str | None
    etcd_resources: ResourceRequests
    etcd_extra_args: ExtraArgs


def parse_etcd(c: Collector) -> EtcdSection:
    return EtcdSection(
        etcd_replicas=c.check(
            "etcdReplicas",
            lambda value: int(value) if int(value) in ETCD_MEMBER_COUNTS else None,
            " or ".join(str(n) for n in ETCD_MEMBER_COUNTS)
            + " (etcd needs an odd member count for quorum)",
            1,
        ),
        etcd_storage_size=c.check(
            "etcdStorageSize", _quantity, "a positive Kubernetes quantity such as 4Gi", "1Gi"
        ),
        etcd_storage_class=c.check(
            "etcdStorageClass",
            _empty_or(is_dns_name),
            "empty (the cluster's default StorageClass) or a StorageClass name",
            "",
        )
        or None,
        etcd_resources=_requests(c, "etcd"),
        etcd_extra_args=parse_extra_args(c, "etcdExtraArgs"),
    )


@dataclass(frozen=True)
class ApiServerSection:
    api_server_replicas: int
    api_server_resources: ResourceRequests
    # Names of the keys that encrypt Secrets at rest: the first writes, every one reads.
    encryption_keys: tuple[str, ...]
    api_server_extra_args: ExtraArgs


def parse_api_server(c: Collector) -> ApiServerSection:
    first_key: tuple[str, ...] = ("key1",)
    return ApiServerSection(
        api_server_replicas=_replicas(c, "apiServerReplicas"),
        api_server_resources=_requests(c, "apiServer"),
        encryption_keys=c.check(
            "secretsEncryptionKeys",
            _key_names,
            "one or more distinct key names (lowercase letters, digits, '-'; at most 20 "
            "characters), comma-separated, the one that writes first, such as key1 or key2,key1",
            first_key,
        ),
        api_server_extra_args=parse_extra_args(c, "apiServerExtraArgs"),
    )


@dataclass(frozen=True)
class ControllerManagerSection:
    controller_manager_replicas: int
    controller_manager_resources: ResourceRequests
    controller_manager_extra_args: ExtraArgs


def parse_controller_manager(c: Collector) -> ControllerManagerSection:
    return ControllerManagerSection(
        controller_manager_replicas=_replicas(c, "controllerManagerReplicas"),
        controller_manager_resources=_requests(c, "controllerManager"),
        controller_manager_extra_args=parse_extra_args(c, "controllerManagerExtraArgs"),
    )


@dataclass(frozen=True)
class SchedulerSection:
    scheduler_replicas: int
    scheduler_resources: ResourceRequests
    scheduler_extra_args: ExtraArgs


def parse_scheduler(c: Collector) -> SchedulerSection:
    return SchedulerSection(
        scheduler_replicas=_replicas(c, "schedulerReplicas"),
        scheduler_resources=_requests(c, "scheduler"),
        scheduler_extra_args=parse_extra_args(c, "schedulerExtraArgs"),
    )


@dataclass(frozen=True)
class NetworkPolicySection:
    """Where the apiservers may open connections beyond etcd and DNS (the tenant's nodes,
    webhooks), and who reaches them with ingress exposure besides the node."""

    api_server_egress_cidrs: tuple[str, ...]
    ingress_controller_namespaces: tuple[str, ...]
    ingress_controller_cidrs: tuple[str, ...]


def parse_network_policies(c: Collector) -> NetworkPolicySection:
    none: tuple[str, ...] = ()
    cidr_list = (
        "empty or distinct comma-separated CIDRs with host bits zero, such as "
        "10.250.0.0/24,192.0.2.10/32"
    )
    return NetworkPolicySection(
        api_server_egress_cidrs=c.check("apiServerEgressCidrs", _list_of(_cidr), cidr_list, none),
        ingress_controller_namespaces=c.check(
            "ingressControllerNamespaces",
            _list_of(_dns_label(63)),
            "empty or distinct comma-separated namespace names, such as ingress-nginx",
            none,
        ),
        ingress_controller_cidrs=c.check(
            "ingressControllerCidrs", _list_of(_cidr), cidr_list, none
        ),
    )


@dataclass(frozen=True)
class PkiSection:
    """Leaf certificates (CAs live 10 years): lifetime, and the window before the end in which
    a `pulumi up` issues a new one. A window as long as the lifetime makes every leaf due."""

    certificate_validity_hours: int
    certificate_renewal_hours: int


def parse_pki(c: Collector) -> PkiSection:
    validity = c.check(
        "certificateValidityHours", _positive_int, "a whole number of hours of at least 1", 1
    )
    renewal = c.check(
        "certificateRenewalHours",
        lambda value: int(value) if 0 <= int(value) <= validity else None,
        f"a whole number of hours from 0 to certificateValidityHours ({validity})",
        0,
    )
    return PkiSection(validity, renewal)


@dataclass(frozen=True)
class AddOnSection:
    """What runs inside the tenant cluster besides node joining, and Konnectivity."""

    core_dns: bool
    kube_proxy: bool
    # The `kubeconfig` output's identity is bound to cluster-admin; false revokes it.
    admin_access: bool
    konnectivity: bool
    konnectivity_node_port: int  # where agents reach the proxy-server with nodePort exposure
    konnectivity_server_extra_args: ExtraArgs


def parse_add_ons(c: Collector, exposure: ExposureSettings) -> AddOnSection:
    konnectivity = _boolean(c, "konnectivity")
    if konnectivity and exposure.mode is ExposureMode.INGRESS:
        c.fail(
            "konnectivity",
            "false with exposure ingress (SNI passthrough routes port 443 only); use "
            "loadBalancer or nodePort for konnectivity",
        )
    low, high = NODE_PORT_RANGE
    node_port = c.check(
        "konnectivityNodePort",
        lambda value: (
            int(value) if low <= int(value) <= high and int(value) != exposure.node_port else None
        ),
        f"an integer from {low} to {high}, other than nodePort",
        low,
    )
    server_extra_args = parse_extra_args(c, "konnectivityServerExtraArgs")
    if server_extra_args and not konnectivity:
        c.fail("konnectivityServerExtraArgs", "empty while konnectivity is false")
    return AddOnSection(
        core_dns=_boolean(c, "coreDns"),
        kube_proxy=_boolean(c, "kubeProxy"),
        admin_access=_boolean(c, "adminAccess"),
        konnectivity=konnectivity,
        konnectivity_node_port=node_port,
        konnectivity_server_extra_args=server_extra_args,
    )


@dataclass(frozen=True)
class WorkerSection:
    """How nodes join: lifetime of a bootstrap token (kubeadm's --ttl); 0: never expires."""

    bootstrap_token_ttl_seconds: int


def parse_workers(c: Collector) -> WorkerSection:
    return WorkerSection(
        c.check(
            "bootstrapTokenTtl",
            _duration_seconds,
            "a duration such as 24h, 1h30m or 90s (hours, minutes, seconds), or 0 for tokens "
            "that never expire",
            0,
        )
    )


@dataclass(frozen=True)
class LifecycleSection:
    """Sleep and wake: `suspended` scales etcd, the apiservers, controller-managers and
    schedulers to zero and keeps everything they need to come back as they were."""

    suspended: bool


def parse_lifecycle(c: Collector) -> LifecycleSection:
    return LifecycleSection(suspended=_boolean(c, "suspended"))


def _replicas(c: Collector, key: str) -> int:
    return c.check(key, _positive_int, "a whole number of at least 1", 1)


def _requests(c: Collector, component: str) -> ResourceRequests:
    return ResourceRequests(
        cpu=c.check(
            f"{component}CpuRequest", _quantity, "a positive CPU quantity such as 250m", "1"
        ),
        memory=c.check(
            f"{component}MemoryRequest", _quantity, "a positive memory quantity such as 256Mi", "1"
        ),
    )


def _boolean(c: Collector, key: str) -> bool:
    return c.check(
        key, lambda value: {"true": True, "false": False}.get(value.lower()), "true or false", False
    )


def settings_of(*sections: DataclassInstance) -> ControlPlaneSettings:
    """The settings with the fields of every section; each field comes from exactly one."""
    values: dict[str, Any] = {}
    for section in sections:
        for field in fields(section):
            if field.name in values:
                raise TypeError(f"{field.name} is in two sections")
            values[field.name] = getattr(section, field.name)
    return ControlPlaneSettings(**values)


def parse_settings(raw: Mapping[str, Any]) -> ControlPlaneSettings:
    """Validate raw config values (strings, as Pulumi stores them) into settings.

    Raises one ConfigError that names every bad key, its value and what is allowed.
    """
    c = Collector(raw)
    exposure = parse_exposure(c)
    sections = (
        parse_identity(c),
        parse_images(c),
        parse_network(c),
        exposure,
        parse_etcd(c),
        parse_api_server(c),
        parse_controller_manager(c),
        parse_scheduler(c),
        parse_network_policies(c),
        parse_pki(c),
        parse_add_ons(c, exposure.exposure),
        parse_workers(c),
        parse_lifecycle(c),
    )
    if c.errors:
        raise ConfigError("invalid stack configuration:\n  " + "\n  ".join(c.errors))
    return settings_of(*sections)


def load_settings() -> tuple[ControlPlaneSettings, InfraProviderSettings]:
    """Read the stack's config (the program's only config access).

    Every `k8s-on-k8s:` key set on the stack is passed on, so a misspelt key is an error
    instead of a silently ignored setting.
    """
    import pulumi
    from pulumi.runtime.config import CONFIG, get_config_env

    prefix = f"{PROJECT}:"
    stack_config = {**get_config_env(), **CONFIG.get()}
    raw = {
        key[len(prefix) :]: value for key, value in stack_config.items() if key.startswith(prefix)
    }
    settings = parse_settings(raw)
    kubernetes_config = pulumi.Config("kubernetes")
    provider = InfraProviderSettings(
        # Read as a secret whether or not it was set with --secret: it may hold credentials.
        kubeconfig=kubernetes_config.get_secret("kubeconfig")
        if kubernetes_config.get("kubeconfig")
        else None,
        context=kubernetes_config.get("context") or None,
    )
    return settings, provider
