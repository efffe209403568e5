"""The architecture registry: one `ArchitectureSpec` per supported `model_type` (no torch needed).

Adding an architecture: a module here with its adapter and `SPEC`, listed in `_MODULES`, plus its tests.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from onnx_tokprune.architectures.base import ArchitectureSpec, ConfigFields
from onnx_tokprune.errors import CheckpointError

_MODULES = ("albert", "bert", "distilbert", "electra", "roberta", "xlm_roberta")
ARCHITECTURES: dict[str, ArchitectureSpec] = {
    spec.model_type: spec for spec in (import_module(f"{__name__}.{name}").SPEC for name in _MODULES)
}


def supported() -> tuple[str, ...]:
    return tuple(sorted(ARCHITECTURES))


def spec_for(config: Any, where: str = "the checkpoint") -> ArchitectureSpec:
    """The spec of a model_type, an HF config object or a config dict; CheckpointError (listing the
    supported ones) for any other architecture."""
    model_type = config if isinstance(config, str) or config is None else (
        config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    )
    spec = ARCHITECTURES.get(model_type) if isinstance(model_type, str) else None
    if spec is None:
        raise CheckpointError(f"{where}: architecture {model_type!r} is not supported (supported: {', '.join(supported())})")
    if spec.check is not None and not isinstance(config, str):
        spec.check(config, where)
    return spec


def num_layers(config: Any, where: str = "the checkpoint") -> int:
    """The encoder layers of an HF config object or dict (by its architecture's field name)."""
    return spec_for(config, where).fields.get(config, "layers")


__all__ = ["ARCHITECTURES", "ArchitectureSpec", "ConfigFields", "num_layers", "spec_for", "supported"]
