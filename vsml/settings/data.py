"""The data sections: ``data.*`` and the procedural and few-shot dataset sections (docs/DESIGN.md §7)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType

from vsml.settings.fields import (
    NAME_LIST,
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    POSITIVE_NUMBER,
    SWITCH_OR_SEED,
    Rule,
    _is_number,
    as_shape,
    at_least,
    entries,
    one_of,
    one_of_names_in,
    section,
    setting,
    shape,
)

_DATASET_STATS = Rule(
    lambda v: isinstance(v, Mapping) and _is_number(v.get("mean")) and POSITIVE_NUMBER.check(v.get("std")),
    "{mean: number, std: positive number}",
)
_WEIGHTS = Rule(
    lambda v: isinstance(v, (list, tuple)) and bool(v) and all(POSITIVE_NUMBER.check(w) for w in v),
    "a list of positive numbers, one per dataset",
)
_CLASS_LIST = Rule(
    lambda v: (
        isinstance(v, (list, tuple)) and bool(v) and all(NON_NEGATIVE_INT.check(c) for c in v) and len(set(v)) == len(v)
    ),
    "a list of distinct class indices",
)
NPZ_STATS = ("auto", "global", "per_feature")
_STATS = {
    "mnist": (0.1307, 0.3081),
    "fashion_mnist": (0.2860, 0.3530),
    "kmnist": (0.1918, 0.3483),
    "emnist": (0.1739, 0.3319),
    "cifar10": (0.4734, 0.2516),
    "svhn_cropped": (0.4514, 0.1993),
    "omniglot": (0.9221, 0.2681),
    "random": (0.0, 1.0),
    "sum": (0.0, 1.0),
    "mnist_offline": (0.1307, 0.3081),
    "digits": (0.3053, 0.3760),
}


def _stats_table(value) -> Mapping[str, tuple[float, float]]:
    return MappingProxyType({name: (float(s["mean"]), float(s["std"])) for name, s in value.items()})


def _switch_or_seed(value) -> bool | int:
    return value if isinstance(value, bool) else int(value)


@dataclasses.dataclass(frozen=True)
class PadSettings:
    """``data.preprocess.pad``: zero padding to a common size (``configs/pad.yaml``)."""

    input: tuple[int, ...] | None = setting(
        None, "zero-pad inputs to this shape, at least the data's in every axis (configs/pad.yaml: [28, 28, 1])",
        shape(), as_shape,
    )  # fmt: skip
    output: tuple[int] | None = setting(
        None, "one-hot width, at least the class count (an int or a 1-list; configs/pad.yaml: 62)",
        shape(1), as_shape,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class PreprocessSettings:
    """``data.preprocess``: the common preprocessing (§7.2)."""

    normalization_mode: str = setting(
        "dataset_standard", "§7.2 step 2", one_of_names_in("vsml.data", "NORMALIZATION_MODES")
    )
    dataset_stats: Mapping[str, tuple[float, float]] = setting(
        _STATS,
        "mean and std of [0, 1] pixel values per dataset, for dataset_standard; open: add entries for new datasets",
        entries(others=_DATASET_STATS),
        _stats_table,
    )
    npz_stats: str = setting(
        "auto",
        "what dataset_standard uses for npz:PATH data and the tables (wine, breast_cancer, iris), from the training split: per_feature (each input's own "
        "mean and std; a constant input is only centred), global (one mean and std of every value, as for the "
        "shipped image sets) or auto (per_feature for vectors [N, D], global for images: features of a table "
        "have their own units, pixels share one; docs/datasets.md)",
        one_of(*NPZ_STATS),
    )
    pad: PadSettings = section(PadSettings)
    resize: tuple[int, int] | None = setting(
        None, "bilinear resize at load to [H, W] (on the device for procedural sets)", shape(2), as_shape
    )
    rand_proj: bool | int = setting(
        False, "fixed random projection of the flattened input (§7.2 step 5); true: seed from `seed`",
        SWITCH_OR_SEED, _switch_or_seed,
    )  # fmt: skip
    shuffle: bool | int = setting(
        False, "fixed pixel permutation (§7.2 step 4); true: seed from `seed`", SWITCH_OR_SEED, _switch_or_seed
    )


@dataclasses.dataclass(frozen=True)
class EpisodeAugmentSettings:
    """``data.episode_augment``: transforms drawn afresh for every training episode from its key (§7.2)."""

    rand_proj: bool = setting(
        False, "a new Glorot-uniform projection of the flattened input per training episode (§7.2 step 5b)"
    )
    shuffle: bool = setting(False, "a new pixel permutation per training episode (§7.2 step 5a)")
    permute_labels: bool = setting(False, "a new permutation of the classes per training episode (§7.2 step 6)")

    @property
    def any(self) -> bool:
        """Whether any transform is on."""
        return self.rand_proj or self.shuffle or self.permute_labels


@dataclasses.dataclass(frozen=True)
class MixtureSettings:
    """``data.mixture``: the datasets of ``training.dataset: mixture``, one drawn per training episode (§7.2)."""

    datasets: tuple[str, ...] = setting(
        (), "the datasets meta-training draws from (configs/general.yaml: [digits, wine, breast_cancer])", NAME_LIST
    )
    weights: tuple[float, ...] | None = setting(
        None, "each dataset's relative chance per episode, in the order of datasets (null: equal)", _WEIGHTS,
        lambda v: None if v is None else tuple(float(w) for w in v),
    )  # fmt: skip
    width: int | None = setting(
        None, "the common input width D the datasets' flattened inputs are projected (episode_augment.rand_proj) "
        "or zero-padded to (null: the widest dataset's)", POSITIVE_INT,
    )  # fmt: skip


@dataclasses.dataclass(frozen=True)
class DataSection:
    """``data``: where datasets live, which classes, how they are preprocessed."""

    shuffle_buffer_size: int = setting(
        10000, "accepted for the original release's files and not used: episodes draw from memory"
    )
    filter_classes: tuple[int, ...] | None = setting(
        None, "keep these classes of a stored dataset, relabelled 0..k-1 in list order", _CLASS_LIST, as_shape
    )
    dir: str | None = setting(None, "where TFDS datasets live (else $TFDS_DATA_DIR, else ~/tensorflow_datasets)")
    preprocess: PreprocessSettings = section(PreprocessSettings)
    episode_augment: EpisodeAugmentSettings = section(EpisodeAugmentSettings)
    mixture: MixtureSettings = section(MixtureSettings)


@dataclasses.dataclass(frozen=True)
class RandomDatasetSettings:
    """``random_dataset``: episodes that memorise random labels of a fixed pool of random images."""

    size: int = setting(20, "images in an episode's pool", POSITIVE_INT)
    target_count: int = setting(10, "classes", at_least(2))
    img_size: tuple[int, ...] = setting((28, 28, 1), "shape of one image", shape(), as_shape)


@dataclasses.dataclass(frozen=True)
class SumDatasetSettings:
    """``sum_dataset``: is the sum of the inputs >= 0."""

    input_size: tuple[int, ...] = setting((28, 28, 1), "shape of one input", shape(), as_shape)


@dataclasses.dataclass(frozen=True)
class FewShotSettings:
    """``<name>_dataset`` of a few-shot source (``omniglot_fewshot_dataset``): N-way episodes."""

    num_classes: int = setting(5, "N of N-way episodes (at most the split's classes, checked at load)", POSITIVE_INT)
    resize: tuple[int, int] | None = setting(
        None, "resize before data.preprocess.resize (configs/omniglot_fewshot.yaml: [28, 28])", shape(2), as_shape
    )
    rotate: bool = setting(False, "rotate each example by a random multiple of 90 degrees (square images only)")
    test_last: bool = setting(False, "the last step queries a held-out example; T = 1 + a multiple of N")


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """What a data source and the common preprocessing read: the sections above and ``seed``
    (``RunSettings.data_settings``; its fields are named as in ``RunSettings``)."""

    seed: int = 42  # rand_proj / shuffle ``true`` derive theirs
    data: DataSection = dataclasses.field(default_factory=DataSection)
    random_dataset: RandomDatasetSettings = dataclasses.field(default_factory=RandomDatasetSettings)
    sum_dataset: SumDatasetSettings = dataclasses.field(default_factory=SumDatasetSettings)
    omniglot_fewshot_dataset: FewShotSettings = dataclasses.field(default_factory=FewShotSettings)

    def fewshot(self, source: str) -> FewShotSettings:
        """The section of the few-shot source called ``source``."""
        return getattr(self, f"{source}_dataset")
