"""What this stack's last `pulumi up` exported, read before anything is registered.

Some decisions depend on the last deployment: whether a setting changed (components/
fixed_settings.py) and whether the node bootstrap token is due for renewal (components/
node_join.py). Both read the stack's own outputs through a reference to the stack itself. A
stack that was never deployed, or was destroyed, has none.
"""

from __future__ import annotations

from typing import Any


def last_deployed_outputs(*names: str) -> dict[str, Any]:
    """The named outputs of this stack's last `pulumi up` (absent names are left out).

    Waits for the answers, so a caller decides before any resource is registered (a stack
    reference is a read: it changes nothing)."""
    import pulumi
    from pulumi.runtime.sync_await import _sync_await

    own_stack = f"{pulumi.get_organization()}/{pulumi.get_project()}/{pulumi.get_stack()}"
    reference = pulumi.StackReference(own_stack)
    found: dict[str, Any] = {}
    for name in names:
        value = _sync_await(reference.get_output_details(name)).value
        if value is None:
            # A secret output's value is in `secret_value`; these outputs are plain.
            continue
        found[name] = value
    return found
