"""Training from sparse annotations: split, sampling, augmentation, losses, the loop.

>>> from volseg.train import TrainConfig, train
>>> cfg = TrainConfig(classes=("background", "mito"))        # doctest: +SKIP
>>> train(cfg, image="img.ome.zarr", labels="img.ome.zarr/labels/annotation",
...       output_dir="run")                                   # doctest: +SKIP

Modules
-------
config
    :class:`TrainConfig` (one strict schema for ``volseg train`` and the stage).
data
    Leak-free z split (:func:`plan_split`), :class:`Region` (lazy or in memory),
    patch extraction with mirrored context, normalisation statistics.
sampling
    Class-balanced, capped anchor probabilities and the :class:`AnchorSampler`.
augment
    Flips, in-plane 90° rotations, gamma / contrast / brightness / noise.
losses
    CE, weighted CE, focal, Dice, BCE + Dice, Tversky and weighted sums; exact ignore.
evaluate
    Whole-array prediction for validation, confusion matrices and F1 / IoU.
loop
    :func:`fit` (objective-agnostic: the hook for pre-training objectives) and
    :func:`train` (config -> ``model.safetensors`` + ``training/metrics.csv`` +
    ``training/curve.png``).

Centre-voxel networks train on dense blocks: one sample is an output block of
``patch_size`` voxels with its ``R - 1`` halo, and every annotated voxel in it is a
loss term (unannotated ones are masked by the ignore id), so one forward pass yields
many labelled outputs.
"""

from volseg.train.config import TrainConfig, load_train_config
from volseg.train.loop import FitResult, fit, train

__all__ = ["FitResult", "TrainConfig", "fit", "load_train_config", "train"]
