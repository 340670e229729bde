"""Datasets: sources, preprocessing and on-device episode sampling (DESIGN §7).

``load_dataset(name, subset, config)`` returns ``(DataSpec, arrays)``; the
arrays are device arrays (empty for procedural datasets without rand_proj /
shuffle) to pass into jitted functions together with :func:`sample_episode`.

Sources: offline arrays shipped inside installed packages (``digits``,
``mnist_offline``), the paper's TFDS datasets (:mod:`vsml.data.tfds_source`),
procedural ``random`` / ``sum``, ``omniglot_fewshot`` (N-way episodes of
TFDS Omniglot), and a user's own ``npz:PATH`` (:mod:`vsml.data.npz_source`). Where each preprocessing step runs: :mod:`vsml.data.preprocess`.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from vsml.data import npz_source, preprocess, tfds_source
from vsml.data.episodes import DataSpec, normalize, sample_episode
from vsml.data.sources import ARRAY_SOURCES, load_array_source
from vsml.data.tfds_source import TFDS_SOURCES, DatasetUnavailable

PROCEDURAL = ("random", "sum")
FEWSHOT = {"omniglot_fewshot": "omniglot"}   # few-shot dataset -> the TFDS source it draws from
TFDS_NAMES = tuple(TFDS_SOURCES)
NORMALIZATION_MODES = ("dataset_standard", "standard", "identity")
SUBSETS = ("train", "test")

__all__ = ["DataSpec", "DatasetUnavailable", "available_datasets", "check_dataset_available", "class_count",
           "check_dataset_name", "load_dataset", "normalize", "sample_episode"]


def available_datasets() -> tuple[str, ...]:
    return (*ARRAY_SOURCES, *TFDS_SOURCES, *PROCEDURAL, *FEWSHOT)


def check_dataset_name(name: str, key: str) -> None:
    """Raises ValueError naming config key ``key`` when ``name`` is not a dataset."""
    if npz_source.is_npz(name):
        return
    if not isinstance(name, str) or name not in available_datasets():
        raise ValueError(f"{key}: unknown dataset {name!r}; valid: {', '.join(available_datasets())}, "
                         f"or npz:PATH for your own data")


def class_count(name: str, config: dict) -> int | None:
    """How many classes an episode of ``name`` draws from (chance accuracy is 1 / this); None if unknown.

    ``config`` is one rank's resolved config: ``data.filter_classes``, the
    procedural and few-shot sections decide; ``pad.output`` does not (padded
    classes never occur).
    """
    if name == "sum":
        return 2
    if name == "random":
        return int(config["random_dataset"]["target_count"])
    if name in FEWSHOT:
        return int(config[f"{name}_dataset"]["num_classes"])
    keep = config["data"].get("filter_classes")
    if keep:
        return len(keep)
    if npz_source.is_npz(name):
        try:
            return npz_source.check(name).num_classes
        except ValueError:
            return None
    if name in ARRAY_SOURCES:
        return ARRAY_SOURCES[name][1]
    return TFDS_SOURCES[name].num_classes if name in TFDS_SOURCES else None


def check_dataset_available(name: str, config: dict, key: str = "dataset") -> None:
    """Start-up check (before compiling): ``name`` is known, and a TFDS dataset is prepared or downloadable.

    Also validates the preprocessing keys of ``config`` (the rank's resolved
    config). Raises ValueError with one line naming the dataset or key and the fix.
    """
    check_dataset_name(name, key)
    _preprocess_options(name, config)
    if npz_source.is_npz(name):
        data = npz_source.check(name, key)
        if config["data"]["preprocess"].get("resize") is not None and len(data.train_images.shape) != 4:
            raise ValueError(f"data.preprocess.resize: needs image inputs [N, H, W(, C)]; '{name}' holds "
                             f"vectors of shape {list(data.train_images.shape[1:])}")
        return
    source = FEWSHOT.get(name, name)
    if source in TFDS_SOURCES:
        tfds_source.check_available(source, config, key)


def _preprocess_options(name: str, config: dict) -> dict:
    """The validated ``data.preprocess`` / ``data.filter_classes`` settings for dataset ``name``."""
    pre = config["data"]["preprocess"]
    mode = pre["normalization_mode"]
    if mode not in NORMALIZATION_MODES:
        raise ValueError(f"data.preprocess.normalization_mode: '{mode}' is not one of "
                         f"{', '.join(NORMALIZATION_MODES)}")
    pad = pre.get("pad") or {}
    options = dict(
        mode=mode,
        resize=preprocess.parse_shape(pre.get("resize"), "data.preprocess.resize", 2),
        pad_input=preprocess.parse_shape(pad.get("input"), "data.preprocess.pad.input"),
        pad_output=preprocess.parse_shape(pad.get("output"), "data.preprocess.pad.output", 1),
        shuffle_seed=preprocess.transform_seed(pre.get("shuffle", False), "data.preprocess.shuffle",
                                               config["seed"], name),
        proj_seed=preprocess.transform_seed(pre.get("rand_proj", False), "data.preprocess.rand_proj",
                                            config["seed"], name),
        keep=preprocess.filter_class_list(config["data"].get("filter_classes")),
    )
    if options["keep"] is not None and (name in PROCEDURAL or name in FEWSHOT):
        raise ValueError(f"data.filter_classes: applies to stored datasets, not to '{name}'")
    return options


def _stats(name: str, config: dict) -> tuple[float, float]:
    if npz_source.is_npz(name):  # from the file's training split
        data = npz_source.check(name)
        return data.mean, data.std
    table = config["data"]["preprocess"]["dataset_stats"]
    stats = table.get(name) or table.get(FEWSHOT.get(name, ""), {"mean": 0.0, "std": 1.0})
    return float(stats["mean"]), float(stats["std"])


def _fewshot_arrays(name: str, subset: str, config: dict):
    """Host arrays of a few-shot source: ``images [M, H, W, C]`` and ``by_class [K, S]`` int32."""
    cfg = config[f"{name}_dataset"]
    images, labels, _ = tfds_source.load(FEWSHOT[name], subset, config)
    scale = 1.0 / 255.0
    size = preprocess.parse_shape(cfg.get("resize"), f"{name}_dataset.resize", 2)
    if size is not None:
        images, scale = preprocess.resize_images(images, size, scale), 1.0
    classes, counts = np.unique(labels, return_counts=True)
    way = int(cfg["num_classes"])
    if way > len(classes):
        raise ValueError(f"{name}_dataset.num_classes: {way} exceeds the {len(classes)} classes of the "
                         f"'{subset}' split")
    order = np.argsort(labels, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    by_class = order[starts[:, None] + np.arange(counts.min())[None, :]].astype(np.int32)
    return images, by_class, way, scale, bool(cfg["rotate"]), bool(cfg["test_last"])


def load_dataset(name: str, subset: str, config: dict):
    """Loads dataset ``name`` (split ``subset``) once into device memory.

    Args:
      config: the rank's resolved config (reads ``seed``, ``data.*`` and the
        ``random_dataset`` / ``sum_dataset`` / ``omniglot_fewshot_dataset`` sections).
    Returns:
      ``(DataSpec, arrays)``.
    """
    check_dataset_name(name, "dataset")
    if subset not in SUBSETS:
        raise ValueError(f"evaluation.subset: '{subset}' is not one of {', '.join(SUBSETS)}")
    opts = _preprocess_options(name, config)
    mean, std = _stats(name, config)
    arrays, extra = {}, {}
    if name == "random":
        cfg = config["random_dataset"]
        kind, base, classes = "random", tuple(cfg["img_size"]), int(cfg["target_count"])
        extra = dict(random_set_size=int(cfg["size"]))
    elif name == "sum":
        kind, base, classes = "sum", tuple(config["sum_dataset"]["input_size"]), 2
    elif name in FEWSHOT:
        images, by_class, classes, scale, rotate, test_last = _fewshot_arrays(name, subset, config)
        if opts["resize"] is not None:
            images, scale = preprocess.resize_images(images, opts["resize"], scale), 1.0
        if rotate and images.shape[1] != images.shape[2]:
            raise ValueError(f"{name}_dataset.rotate: needs square images, got {images.shape[1:3]}")
        kind, base = "fewshot", tuple(images.shape[1:])
        arrays = {"images": jnp.asarray(images), "by_class": jnp.asarray(by_class)}
        extra = dict(scale=scale, rotate=rotate, test_last=test_last)
    else:
        if npz_source.is_npz(name):
            images, labels, stored = npz_source.load(name, subset)
            classes, scale = stored.num_classes, stored.scale
        elif name in TFDS_SOURCES:
            images, labels, classes = tfds_source.load(name, subset, config)
            scale = 1.0 / 255.0   # stored as uint8 on the device too: 4x less memory; scaled per episode
        else:
            images, labels, classes = load_array_source(name, subset)
            scale = 1.0
        if opts["keep"] is not None:
            images, labels = preprocess.filter_classes(images, labels, opts["keep"], classes)
            classes = len(opts["keep"])
        if opts["resize"] is not None:
            if images.ndim != 4:
                raise ValueError(f"data.preprocess.resize: needs image inputs [N, H, W(, C)]; '{name}' holds "
                                 f"vectors of shape {list(images.shape[1:])}")
            images, scale = preprocess.resize_images(images, opts["resize"], scale), 1.0
        kind, base = "array", tuple(images.shape[1:])
        arrays = {"images": jnp.asarray(images), "labels": jnp.asarray(labels)}
        extra = dict(scale=scale)
    generated = base
    if kind in PROCEDURAL and opts["resize"] is not None:
        if len(base) != 3:
            raise ValueError(f"data.preprocess.resize: needs [H, W, C] inputs; '{name}' has shape {list(base)}")
        base = (*opts["resize"], base[-1])
    input_shape = _padded(base, opts["pad_input"])
    width = _padded((classes,), opts["pad_output"])[0]
    dim = int(np.prod(input_shape))
    if opts["shuffle_seed"] is not None:
        arrays["permutation"] = jnp.asarray(preprocess.permutation(dim, opts["shuffle_seed"]))
    if opts["proj_seed"] is not None:
        arrays["projection"] = jnp.asarray(preprocess.projection_matrix(dim, opts["proj_seed"]))
    spec = DataSpec(name=name, kind=kind, input_shape=input_shape, num_classes=width,
                    normalization_mode=opts["mode"], mean=mean, std=std, base_shape=base,
                    data_classes=classes, generated_shape=generated,
                    resize=opts["resize"] if kind in PROCEDURAL else None, pad_input=opts["pad_input"],
                    shuffle=opts["shuffle_seed"] is not None, rand_proj=opts["proj_seed"] is not None, **extra)
    return spec, arrays


def _padded(shape: tuple[int, ...], target: tuple[int, ...] | None) -> tuple[int, ...]:
    """``target`` after checking it can hold ``shape`` (None keeps ``shape``)."""
    if target is None:
        return tuple(shape)
    key = "data.preprocess.pad.output" if len(shape) == 1 else "data.preprocess.pad.input"
    if len(target) != len(shape) or any(t < s for s, t in zip(shape, target)):
        raise ValueError(f"{key}: {list(target)} cannot hold the data's shape {list(shape)}; "
                         f"give a shape at least that large in every axis")
    return tuple(target)
