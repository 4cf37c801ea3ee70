"""Test doubles of pulumi-tls and pulumi-random that the real Pulumi engine launches.

The real provider plugins cannot be built here, so these stand in for them with real keys,
certificates and random values (crypto.py, shared with the mock runtime of tests/harness.py).
`install_doubles` installs them into a PULUMI_HOME under the versions the SDKs ask for.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Plugin name -> (version the SDK asks for, module serving it).
DOUBLES = {
    "tls": ("5.6.2", "tests.doubles.tls_provider"),
    "random": ("4.21.4", "tests.doubles.random_provider"),
}


def wrapper_script(python: Path, module: str, repo_root: Path = REPO_ROOT) -> str:
    """A plugin executable: the engine runs it with its own address as the argument."""
    return (
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(repo_root))}\n"
        "export PYTHONPATH\n"
        f'exec {shlex.quote(str(python))} -m {module} "$@"\n'
    )


def install_doubles(pulumi: Path, pulumi_home: Path, python: Path, env: Mapping[str, str]) -> None:
    """Install the tls and random doubles as resource plugins into `pulumi_home`.

    `python` must have pulumi and cryptography (the project's .venv/bin/python); it is used as
    given, not resolved, so a virtualenv's interpreter keeps its packages. The wrappers are
    written under `pulumi_home/double-plugins`, then `pulumi plugin install --file` copies
    them into the plugin cache (with the given environment, PULUMI_HOME set to `pulumi_home`).
    """
    run_env = {**env, "PULUMI_HOME": str(pulumi_home)}
    for name, (version, module) in DOUBLES.items():
        directory = pulumi_home / "double-plugins" / name
        directory.mkdir(parents=True, exist_ok=True)
        wrapper = directory / f"pulumi-resource-{name}"
        wrapper.write_text(wrapper_script(python, module))
        wrapper.chmod(0o755)
        done = subprocess.run(
            [
                os.fspath(pulumi),
                "plugin",
                "install",
                "resource",
                name,
                version,
                "--file",
                os.fspath(wrapper),
                "--reinstall",
            ],
            env=run_env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"pulumi plugin install resource {name} {version} failed "
                f"({done.returncode}):\n{done.stdout}{done.stderr}"
            )
