"""Import compressai without the subpackages the codec never runs.

compressai 1.2.8's package __init__ imports all of its subpackages, among them its datasets and
point-cloud models with torch_geometric: about 2 s of a CLI call's ~3.4 s of imports
(README, Precision and speed), for none of what the codec uses (ans, entropy_models, layers,
ops). Importing this module before compressai is first imported builds the compressai package
by hand, as importlib's own import would, but with those subpackages already bound to lazy
modules: compressai's __init__ finds them and does not run them, and each one runs when a
name it defines is first looked up. A program that goes on to use
compressai.zoo or compressai.datasets gets them as usual, only later.

Import it before any `compressai` import: where compressai is already imported it does nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types
from pathlib import Path

# The subpackages compressai/__init__ imports: all of them, so that its rANS coder alone
# (compressai.ans, an extension module) imports without torch.
LAZY = ("datasets", "entropy_models", "latent_codecs", "layers", "losses", "models", "ops",
        "optimizers", "registry", "transforms", "typing", "zoo")


_LOAD_LOCK = threading.RLock()


class _LazyModule(types.ModuleType):
    """Runs its module on the first lookup of a name the module object lacks.

    Not importlib.util.LazyLoader's module, which loads on any attribute access, __file__
    included: inspect.getmodule probes every module in sys.modules for __file__ (torch does that
    while compressai's __init__ runs), and the subpackages would then load half-way through it.
    """

    def __getattr__(self, name: str):
        with _LOAD_LOCK:
            if type(self) is _LazyModule:
                self.__class__ = types.ModuleType
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    self.__class__ = _LazyModule
                    raise
        return object.__getattribute__(self, name)


def _lazy_submodule(package, root: Path, name: str) -> None:
    init = root / name / "__init__.py"
    if not init.is_file():  # another compressai layout: leave that subpackage to its __init__
        return
    spec = importlib.util.spec_from_file_location(f"{package.__name__}.{name}", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _LazyModule
    sys.modules[spec.name] = module
    # Bound on the package before its __init__ runs: `from compressai import zoo` there then
    # takes the attribute instead of importing the submodule, which would touch it and load it.
    setattr(package, name, module)


def _import_compressai() -> None:
    if "compressai" in sys.modules:
        return
    spec = importlib.util.find_spec("compressai")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # not installed: the caller's own import says so
    package = importlib.util.module_from_spec(spec)
    root = Path(next(iter(spec.submodule_search_locations)))
    for name in LAZY:
        _lazy_submodule(package, root, name)
    sys.modules["compressai"] = package
    try:
        spec.loader.exec_module(package)
    except BaseException:
        for name in ("compressai", *(f"compressai.{n}" for n in LAZY)):
            sys.modules.pop(name, None)
        raise


_import_compressai()
