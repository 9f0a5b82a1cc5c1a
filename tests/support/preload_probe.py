"""Run in a child process (it must import nothing of the project itself): what that child
found already imported when it started, and who its parent is."""

from __future__ import annotations

import os
import sys


def report(queue, module: str) -> None:
    queue.put({"imported": module in sys.modules, "parent": os.getppid()})
