"""Networks, the registry by name, the model spec and pickle-free model files.

>>> from volseg.models import ModelSpec, Normalization, build_model, save_model, load_model
>>> spec = ModelSpec(architecture="unet3d", params={"widths": [8, 16]},
...                  classes=("background", "mito"), patch_size=(16, 32, 32),
...                  normalization=Normalization(mode="meanstd", mean=120.0, std=30.0))
>>> spec.kind
'3d'
>>> module = build_model(spec)

``save_model(module, spec, "model.safetensors")`` writes the weights as safetensors
with the spec JSON in the metadata; ``load_model(path)`` returns ``(module, spec)`` in
eval mode on the CPU and never unpickles.

Pre-training hook: every network exposes its output layer so that another head and
objective can be trained on the same backbone (for :class:`CentreVoxelNet`,
``module.features(x)`` and ``module.head``); :func:`volseg.train.loop.fit` takes the
objective as a plain callable, see :mod:`volseg.train`.
"""

from volseg.models.centre_voxel import CentreVoxelNet, layer_plan
from volseg.models.files import FORMAT_VERSION, load_model, read_spec, save_model
from volseg.models.registry import (
    Architecture,
    available_architectures,
    build_model,
    get_architecture,
    register_architecture,
)
from volseg.models.spec import ModelSpec, Normalization

__all__ = [
    "FORMAT_VERSION",
    "Architecture",
    "CentreVoxelNet",
    "ModelSpec",
    "Normalization",
    "available_architectures",
    "build_model",
    "get_architecture",
    "layer_plan",
    "load_model",
    "read_spec",
    "register_architecture",
    "save_model",
]
