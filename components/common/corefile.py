"""The one Corefile builder: the program's CoreDNS add-on (components/tenant/addons.py) and the
e2e rig's DNS server (tests/e2e/infra) both call it with their own parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from components.common.endpoints import DNS_PORT

REVERSE_ZONES = ("in-addr.arpa", "ip6.arpa")
METRICS_ADDRESS = ":9153"  # CoreDNS's prometheus plugin, as kubeadm's addon has it


@dataclass(frozen=True)
class IngressWildcard:
    """Every name under `domain` is an A record of `address`, as a wildcard record of a real
    ingress set-up would be."""

    domain: str
    address: str


def corefile(
    *,
    cluster_domain: str,
    upstream: str | None,
    ttl: int = 30,
    bind: str | None = None,
    kubeconfig: str | None = None,
    health_address: str | None = None,
    ready_address: str | None = None,
    ingress: IngressWildcard | None = None,
) -> str:
    """CoreDNS's configuration: the cluster's names (and reverse zones) from the Kubernetes API,
    answered and cached for `ttl` seconds.

    With an `upstream` (a resolv.conf path or addresses), kubeadm's dns addon: one root server
    block, other names forwarded there, with metrics, loop detection, reload and load balancing.
    Without one, nothing is forwarded: the cluster zones, the `ingress` wildcard if any, and
    NXDOMAIN for every other name. `bind` restricts every server block to that address;
    `kubeconfig` reaches the API from outside a pod; the health and ready plugins listen on
    their given addresses (CoreDNS's defaults otherwise, health with kubeadm's lameduck).
    """
    bound = [f"bind {bind}"] if bind is not None else []
    probes = [
        f"health {health_address}" if health_address is not None else "health",
        f"ready {ready_address}" if ready_address is not None else "ready",
    ]
    if upstream is not None:
        probes[0] = _block(probes[0], ["lameduck 5s"])
    kubernetes = _block(
        f"kubernetes {cluster_domain} {' '.join(REVERSE_ZONES)}",
        [
            *([f"kubeconfig {kubeconfig}"] if kubeconfig is not None else []),
            "pods insecure",
            *([f"fallthrough {' '.join(REVERSE_ZONES)}"] if upstream is not None else []),
            f"ttl {ttl}",
        ],
    )
    if upstream is not None:
        root = [
            *bound,
            "errors",
            *probes,
            kubernetes,
            f"prometheus {METRICS_ADDRESS}",
            _block(f"forward . {upstream}", ["max_concurrent 1000"]),
            _block(
                f"cache {ttl}",
                [f"disable success {cluster_domain}", f"disable denial {cluster_domain}"],
            ),
            "loop",
            "reload",
            "loadbalance",
        ]
        return _server(["."], root)
    servers = [
        _server(
            [cluster_domain, *REVERSE_ZONES],
            [*bound, "errors", *probes, kubernetes, f"cache {ttl}"],
        )
    ]
    if ingress is not None:
        servers.append(
            _server(
                [ingress.domain],
                [
                    *bound,
                    "errors",
                    _block(
                        f"template IN A {ingress.domain}",
                        [f'answer "{{{{ .Name }}}} {ttl} IN A {ingress.address}"'],
                    ),
                    "# Other types (AAAA, ...): the name exists, without records of that type.",
                    _block(f"template ANY ANY {ingress.domain}", ["rcode NOERROR"]),
                ],
            )
        )
    servers.append(
        _server(["."], [*bound, "errors", _block("template ANY ANY", ["rcode NXDOMAIN"])])
    )
    return "".join(servers)


def _block(head: str, lines: Sequence[str]) -> str:
    """`head { ... }` with its lines indented one level."""
    body = "".join(f"    {line}\n" for line in "\n".join(lines).splitlines())
    return f"{head} {{\n{body}}}"


def _server(zones: Sequence[str], plugins: Sequence[str]) -> str:
    return _block(" ".join(f"{zone}:{DNS_PORT}" for zone in zones), plugins) + "\n"
