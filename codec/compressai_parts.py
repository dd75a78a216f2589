"""Import compressai without running the subpackages the codec never uses.

compressai 1.2.8's package __init__ imports all of its subpackages, among them its datasets and
point-cloud models with torch_geometric: about 2 s of a CLI call's ~3.4 s of imports
(README, Precision and speed), for nothing the codec runs. Importing this module before
compressai is first imported builds the compressai package by hand, as importlib's own import
would, but with every subpackage already bound to a lazy module: compressai's __init__ finds
them and does not run them, and each one runs when a name it defines is first looked up. The
codec's own imports (compressai.ans, entropy_models, layers, models.utils) so load only what
they need; a program that goes on to use compressai.zoo or compressai.datasets gets them as
usual, only later.

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


_LOAD_LOCK = threading.RLock()  # one module loads at a time; another thread's lookup waits
_LOADING: set[str] = set()


class _LazyModule(types.ModuleType):
    """Runs its module on the first lookup of a name the module object lacks.

    Not importlib.util.LazyLoader's module, which loads on any attribute access, __file__
    included: inspect.getmodule probes every module in sys.modules for __file__ (torch does that
    while compressai's __init__ runs), and the subpackages would then load half-way through it.
    """

    def __getattr__(self, name: str):
        with _LOAD_LOCK:
            key = self.__spec__.name
            if type(self) is _LazyModule and key not in _LOADING:  # else: the load in progress
                _LOADING.add(key)  # looks up a name it has not defined yet, as in any import
                try:
                    self.__spec__.loader.exec_module(self)
                    self.__class__ = types.ModuleType
                finally:
                    _LOADING.discard(key)
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
