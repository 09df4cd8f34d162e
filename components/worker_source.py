"""Modules of the worker package that the program reads by path: they import only
the standard library, so the program needs none of the worker's dependencies."""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

#: The worker package's source, which the image is built from.
WORKER_PACKAGE = Path(__file__).resolve().parent.parent / "worker/workqueue"


@functools.cache
def load_worker_module(stem: str) -> ModuleType:
    """worker/workqueue/<stem>.py, loaded once by path.

    Raises:
        FileNotFoundError: the worker package has no such module.
    """
    path = WORKER_PACKAGE / f"{stem}.py"
    spec = importlib.util.spec_from_file_location(f"workqueue_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Registered under its own name, not `workqueue.<stem>`: dataclasses look their
    # module up in sys.modules, and the worker's package is not imported here.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
