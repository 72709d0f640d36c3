"""Importing a model library's classes without running its package `__init__` (which may
download weights or import a training stack): the compat modules of AudioSR and msst
register the package as a bare module with a search path, then import the one file needed."""
from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path


def register_bare_package(name: str, folder: Path) -> None:
    """Register `name` as a package whose folder is `folder`, without running its __init__
    (nothing happens if `name` is imported already). It gets a module spec, so that
    importlib.util.find_spec(name), the stages' cheap "is it installed" check, still answers
    afterwards."""
    if name in sys.modules:
        return
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(folder)]
    pkg.__file__ = str(folder / "__init__.py")
    pkg.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    pkg.__spec__.submodule_search_locations = [str(folder)]
    sys.modules[name] = pkg
