"""MedDiff: a discrete-diffusion multimodal model in transformers' house style.

Importing this package is cheap: it imports neither transformers nor its own model code. The public names load on
first access, and MedDiff registers with the transformers Auto classes (`AutoConfig`, `AutoModel`,
`AutoModelForMaskedLM`, `AutoProcessor`, `AutoImageProcessor`) as soon as transformers imports each of them
(right away for those already imported), so `AutoModel.from_pretrained(folder)` resolves `model_type: "meddiff"`
without this package paying for transformers, torch or diffusers up front. Saved folders also carry `auto_map` and
the module files (`register_for_auto_class`), so they load with `trust_remote_code=True` where hf_meddiff is not
installed.
"""

from __future__ import annotations

import copyreg
import importlib
import importlib.abc
import logging
import sys
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

logger = logging.getLogger(__name__)

# public name -> submodule that defines it
_LAZY: dict[str, str] = {
    "MEDDIFF_PRESETS": "configuration_meddiff",
    "MEDDIFF_TASKS": "configuration_meddiff",
    "MedDiffConfig": "configuration_meddiff",
    "MedDiffCache": "modeling_meddiff",
    "MedDiffForMaskedDiffusion": "modeling_meddiff",
    "MedDiffMaskedDiffusionOutput": "modeling_meddiff",
    "MedDiffModel": "modeling_meddiff",
    "MedDiffPreTrainedModel": "modeling_meddiff",
    "WINDOW_PRESETS": "medical_image_meddiff",
    "MedDiffImageProcessor": "image_processing_meddiff",
    "dicom_to_array": "medical_image_meddiff",
    "load_medical_image": "medical_image_meddiff",
    "nifti_to_array": "medical_image_meddiff",
    "MedDiffImageTokenizer": "image_tokenizer_meddiff",
    "MedDiffProcessor": "processing_meddiff",
}

__all__ = [
    "MEDDIFF_PRESETS",
    "MEDDIFF_TASKS",
    "WINDOW_PRESETS",
    "MedDiffCache",
    "MedDiffConfig",
    "MedDiffForMaskedDiffusion",
    "MedDiffImageProcessor",
    "MedDiffImageTokenizer",
    "MedDiffMaskedDiffusionOutput",
    "MedDiffModel",
    "MedDiffPreTrainedModel",
    "MedDiffProcessor",
    "dicom_to_array",
    "load_medical_image",
    "nifti_to_array",
]

if TYPE_CHECKING:  # pragma: no cover
    from .configuration_meddiff import MEDDIFF_PRESETS, MEDDIFF_TASKS, MedDiffConfig
    from .image_processing_meddiff import MedDiffImageProcessor
    from .image_tokenizer_meddiff import MedDiffImageTokenizer
    from .medical_image_meddiff import WINDOW_PRESETS, dicom_to_array, load_medical_image, nifti_to_array
    from .modeling_meddiff import (
        MedDiffCache,
        MedDiffForMaskedDiffusion,
        MedDiffMaskedDiffusionOutput,
        MedDiffModel,
        MedDiffPreTrainedModel,
    )
    from .processing_meddiff import MedDiffProcessor


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# --- Registration ---------------------------------------------------------------------------------------------
# Each transformers Auto module gets MedDiff right after it is imported (by whoever imports it first): the config and
# image processor classes themselves (light modules), and for the model and processor classes, until their modules
# are imported, a stand-in that imports the real class on first use. Nothing registers while one of our modules is
# half-way through its import (it may be what imported the Auto module); that waits until it finishes.


class _LazyClass(type):
    """A stand-in for class `__name__` of module `__module__`: attribute access and calls go to the real class,
    importing its module then."""

    def _real(cls) -> type:
        return _load_class(cls.__module__, cls.__name__)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return getattr(cls._real(), name)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __instancecheck__(cls, obj: Any) -> bool:
        return isinstance(obj, cls._real())

    def __subclasscheck__(cls, subclass: type) -> bool:
        return issubclass(subclass, cls._real())


def _load_class(module: str, name: str) -> type:
    return getattr(importlib.import_module(module), name)


# a pickled stand-in (transformers' Auto mappings pickle their registrations) loads as the real class
copyreg.pickle(_LazyClass, lambda cls: (_load_class, (cls.__module__, cls.__name__)))


def _class(module: str, name: str, **attributes: Any) -> type:
    """Class `name` of our `module`: the real one once the module is imported, else a `_LazyClass` stand-in."""
    full_name = f"{__name__}.{module}"
    loaded = sys.modules.get(full_name)
    if loaded is not None and full_name not in _importing and hasattr(loaded, name):
        return getattr(loaded, name)
    return _LazyClass(name, (), {"__module__": full_name, "__qualname__": name, **attributes})


def _register_config() -> None:
    from transformers import AutoConfig

    from .configuration_meddiff import MedDiffConfig

    AutoConfig.register(MedDiffConfig.model_type, MedDiffConfig, exist_ok=True)


def _register_models() -> None:
    from transformers import AutoModel, AutoModelForMaskedLM

    from .configuration_meddiff import MedDiffConfig

    for auto_class, name in (
        (AutoModel, "MedDiffModel"),
        (AutoModelForMaskedLM, "MedDiffForMaskedDiffusion"),
    ):
        auto_class.register(
            MedDiffConfig, _class("modeling_meddiff", name, config_class=MedDiffConfig), exist_ok=True
        )


def _register_image_processor() -> None:
    from transformers import AutoImageProcessor

    from .configuration_meddiff import MedDiffConfig
    from .image_processing_meddiff import MedDiffImageProcessor

    AutoImageProcessor.register(
        MedDiffConfig, image_processor_classes={"pil": MedDiffImageProcessor}, exist_ok=True
    )


def _register_processor() -> None:
    from transformers import AutoProcessor

    from .configuration_meddiff import MedDiffConfig

    AutoProcessor.register(MedDiffConfig, _class("processing_meddiff", "MedDiffProcessor"), exist_ok=True)


# transformers Auto module -> its registration
_AUTO_REGISTRATIONS: dict[str, Callable[[], None]] = {
    "transformers.models.auto.configuration_auto": _register_config,
    "transformers.models.auto.modeling_auto": _register_models,
    "transformers.models.auto.image_processing_auto": _register_image_processor,
    "transformers.models.auto.processing_auto": _register_processor,
}
# our module -> the Auto module whose registration then swaps the stand-ins for the real classes
_REAL_CLASSES_OF = {
    "modeling_meddiff": "transformers.models.auto.modeling_auto",
    "processing_meddiff": "transformers.models.auto.processing_auto",
}

_importing: set[str] = set()  # our modules being executed right now
_deferred: list[Callable[[], None]] = []  # registrations waiting for those imports to finish


def _after_auto_module(module: ModuleType) -> None:
    _deferred.append(_AUTO_REGISTRATIONS[module.__name__])
    _run_deferred()


def _after_own_module(module: ModuleType) -> None:
    name = module.__name__.rsplit(".", 1)[-1]
    # saved folders carry `auto_map` and the module files (the processors register themselves)
    if name == "configuration_meddiff":
        module.MedDiffConfig.register_for_auto_class("AutoConfig")
    elif name == "modeling_meddiff":
        module.MedDiffModel.register_for_auto_class("AutoModel")
        module.MedDiffForMaskedDiffusion.register_for_auto_class("AutoModelForMaskedLM")
    if _REAL_CLASSES_OF.get(name) in sys.modules:
        _deferred.append(_AUTO_REGISTRATIONS[_REAL_CLASSES_OF[name]])
    _run_deferred()


def _run_deferred() -> None:
    while _deferred and not _importing:
        register = _deferred.pop(0)
        try:
            register()
        except Exception as err:  # noqa: BLE001 - a failed registration must not break the importer's import
            logger.warning("MedDiff: %s failed: %s", register.__name__, err)


class _CallbackLoader(importlib.abc.Loader):
    """Wraps a module's loader: executes the module, then `callback(module)`."""

    def __init__(self, loader: Any, callback: Callable[[ModuleType], None]):
        self.loader, self.callback = loader, callback

    def create_module(self, spec: Any) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        _importing.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            _importing.discard(module.__name__)
        self.callback(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_resource_reader, ... of the wrapped loader
        if name == "loader":
            raise AttributeError(name)
        return getattr(self.loader, name)


class _AfterImportFinder(importlib.abc.MetaPathFinder):
    """Finds our submodules and the transformers Auto modules with the other finders, and wraps their loaders in a
    `_CallbackLoader` (each Auto module once)."""

    def __init__(self, auto_modules: set[str]):
        self.auto_modules = auto_modules

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.startswith(f"{__name__}."):
            callback = _after_own_module
        elif name in self.auto_modules:
            callback = _after_auto_module
        else:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            self.auto_modules.discard(name)
            spec.loader = _CallbackLoader(spec.loader, callback)
        return spec


def _install() -> None:
    """Hooks our submodules and the Auto modules not imported yet; registers with those transformers imported."""
    if not any(type(finder).__name__ == "_AfterImportFinder" for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImportFinder({n for n in _AUTO_REGISTRATIONS if n not in sys.modules}))
    for name in _AUTO_REGISTRATIONS:
        if name in sys.modules:
            _after_auto_module(sys.modules[name])


_install()
