"""The pulumi-random 4.21.4 test double: `python -m tests.doubles.random_provider ENGINE_ADDRESS`.

Prints the port it serves on to stdout (all the engine reads there); logs go to stderr.
"""

from __future__ import annotations

import sys

from pulumi.provider.experimental.server import main

from tests.doubles.provider import DoubleProvider

NAME = "random"
VERSION = "4.21.4"  # what pulumi_random's pulumi-plugin.json asks the engine for

if __name__ == "__main__":
    main(sys.argv[1:], VERSION, DoubleProvider(NAME, VERSION))
