"""The paper's TFDS datasets: where they live, preparing them, loading them into host arrays.

Where: ``data.dir`` if set, else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``
(TFDS's own default, so data prepared by ``tfds.load`` is found too).

Preparing (download + conversion) needs TensorFlow: TFDS encodes every image
with ``tf.image.encode_png``. :func:`prepare` holds an exclusive ``fcntl``
lock on ``<dir>/<name>.vsml.lock`` so that several ranks or jobs starting at
once prepare a dataset only once. It writes TFDS's ``array_record`` format,
which TFDS reads without TensorFlow, then decodes every split once into
``<dir>/vsml_arrays/<name>/<version>/<split>.npz`` (uint8 images, int32
labels): later loads are a plain ``numpy.load`` — seconds even for EMNIST's
700k examples, and no TensorFlow in the training process. Data prepared
elsewhere in TFDS's default ``tfrecord`` format is read through TensorFlow.

A dataset that is neither prepared nor downloadable (its download host does
not answer within a few seconds) is refused up front by
:func:`check_available` with one line naming the dataset, the directory
searched and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import importlib.util
import logging
import os
import socket
from pathlib import Path

import numpy as np
import tqdm

from vsml import environment
from vsml.data import stored
from vsml.data.base import DataSettings, Loaded, LoadOptions, NamedSource
from vsml.settings import DataSection, key_of

PROBE_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class TfdsDataset:
    tfds_name: str  # builder name (with config) in TFDS
    shape: tuple[int, int, int]  # [H, W, C] as loaded (omniglot: one of its 3 equal channels)
    num_classes: int
    host: str  # download host, probed before an automatic download
    port: int = 443


TFDS_SOURCES = {
    "mnist": TfdsDataset("mnist", (28, 28, 1), 10, "storage.googleapis.com"),
    "fashion_mnist": TfdsDataset(
        "fashion_mnist", (28, 28, 1), 10, "fashion-mnist.s3-website.eu-central-1.amazonaws.com", 80
    ),
    "kmnist": TfdsDataset("kmnist", (28, 28, 1), 10, "codh.rois.ac.jp", 80),
    "emnist": TfdsDataset("emnist/byclass", (28, 28, 1), 62, "biometrics.nist.gov"),
    "cifar10": TfdsDataset("cifar10", (32, 32, 3), 10, "www.cs.toronto.edu"),
    "svhn_cropped": TfdsDataset("svhn_cropped", (32, 32, 3), 10, "ufldl.stanford.edu", 80),
    "omniglot": TfdsDataset("omniglot", (105, 105, 1), 1623, "github.com"),
}


class DatasetUnavailable(ValueError):
    """A dataset that is not prepared here and cannot be downloaded now."""


def data_dir(configured: str | None = None) -> Path:
    """``configured`` (``data.dir``), else ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    chosen = configured or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return Path(os.path.expanduser(str(chosen)))


@contextlib.contextmanager
def _quiet_absl():
    """TFDS warns through absl about every unprepared folder it looks at; our one-line message says it better."""
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        absl_logger.setLevel(level)


def _builder(name: str, directory: Path):
    import tensorflow_datasets as tfds  # noqa: PLC0415 — heavy; only when a TFDS dataset is used

    with _quiet_absl():
        return tfds.builder(TFDS_SOURCES[name].tfds_name, data_dir=str(directory))


def _tfds_prepared(builder) -> bool:
    with _quiet_absl():
        return builder.is_prepared()


def _cache_dir(name: str, directory: Path, version: str) -> Path:
    return directory / "vsml_arrays" / TFDS_SOURCES[name].tfds_name / version


def _cache_file(name: str, directory: Path, version: str, split: str) -> Path:
    return _cache_dir(name, directory, version) / f"{split}.npz"


def _cached_versions(name: str, directory: Path) -> list[str]:
    root = directory / "vsml_arrays" / TFDS_SOURCES[name].tfds_name
    return sorted(p.parent.name for p in root.glob("*/train.npz")) if root.is_dir() else []


def is_prepared(name: str, directory: Path) -> bool:
    """Whether ``name`` can be loaded from ``directory`` without a download."""
    if _cached_versions(name, directory):
        return True
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False
    return _tfds_prepared(_builder(name, directory))


def downloadable(name: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the download host of ``name`` accepts a connection (one TCP connect, no retries)."""
    source = TFDS_SOURCES[name]
    try:
        with socket.create_connection((source.host, source.port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable_message(name: str, directory: Path, key: str = "dataset") -> str:
    return (
        f"{key}: '{name}' is a TFDS dataset that is not prepared in {directory} and cannot be "
        f"downloaded from here; "
        f"on a machine with internet run 'python3 -m vsml.data prepare {name} --data_dir DIR' and copy "
        f"DIR to {directory}, or point {key_of(DataSection, 'dir')} (or TFDS_DATA_DIR) at a directory that holds it"
    )


def _missing_packages(need_tensorflow: bool) -> list[str]:
    modules = ["tensorflow_datasets"] + (["tensorflow"] if need_tensorflow else [])
    return [m for m in modules if importlib.util.find_spec(m) is None]


def check_available(name: str, directory: Path, key: str = "dataset") -> None:
    """Raises :class:`DatasetUnavailable` (one line) unless ``name`` is prepared in ``directory`` or
    downloadable now."""
    if _cached_versions(name, directory):
        return
    missing = _missing_packages(need_tensorflow=False)
    if missing:
        raise DatasetUnavailable(
            f"{key}: '{name}' is a TFDS dataset that is not prepared in {directory}; "
            f"preparing it needs {', '.join(missing)}: "
            f"{environment.install_hint(environment.PREPARE_REQUIREMENTS)}, then "
            f"{environment.python_command()} -m vsml.data prepare {name} (or prepare it on "
            f"another machine and copy the directory; {key_of(DataSection, 'dir')} or TFDS_DATA_DIR point at it)"
        )
    if _tfds_prepared(_builder(name, directory)):
        return
    if not downloadable(name):
        raise DatasetUnavailable(unavailable_message(name, directory, key))
    missing = _missing_packages(need_tensorflow=True)
    if missing:
        raise DatasetUnavailable(
            f"{key}: '{name}' is not prepared in {directory}, and preparing it needs "
            f"{', '.join(missing)} (TFDS encodes images with TensorFlow): "
            f"{environment.install_hint(environment.PREPARE_REQUIREMENTS)}"
        )


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive ``fcntl.flock`` on ``path`` (created if needed); blocks until free."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _lock_path(name: str, directory: Path) -> Path:
    return directory / f"{TFDS_SOURCES[name].tfds_name.replace('/', '_')}.vsml.lock"


def _decode_split(builder, split: str, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """All examples of ``split``: ``images [N, H, W, channels]`` uint8, ``labels [N]`` int32."""
    file_format = str(builder.info.file_format).lower()
    if "array_record" in file_format:
        source = builder.as_data_source(split=split)
        images, labels = [], []
        for start in tqdm.tqdm(range(0, len(source), 1024), desc=f"decoding {builder.name} {split}", unit="k examples"):
            items = source.__getitems__(list(range(start, min(start + 1024, len(source)))))
            images.extend(item["image"][..., :channels] for item in items)
            labels.extend(int(item["label"]) for item in items)
        return np.stack(images).astype(np.uint8), np.asarray(labels, dtype=np.int32)
    import tensorflow as tf  # noqa: PLC0415 — tfrecord data can only be read through TensorFlow
    import tensorflow_datasets as tfds  # noqa: PLC0415

    tf.config.set_visible_devices([], "GPU")  # keep TensorFlow off the accelerators JAX uses
    images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return images[..., :channels].astype(np.uint8), labels.astype(np.int32)


def _write_npz(path: Path, **arrays) -> None:
    """Writes atomically: a crash never leaves a truncated cache that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _builder_splits(builder) -> list[str]:
    return [split for split in ("train", "test") if split in builder.info.splits]


def prepare(name: str, directory: Path, download: bool = True) -> Path:
    """Downloads (when needed) and prepares ``name`` in ``directory``; returns its array cache dir.

    Safe to call from several processes at once: one prepares, the others
    wait on the lock and then find it done.
    """
    with file_lock(_lock_path(name, directory)):
        versions = _cached_versions(name, directory)
        if versions:
            return _cache_dir(name, directory, versions[-1])
        builder = _builder(name, directory)
        if not _tfds_prepared(builder):
            if not download:
                raise DatasetUnavailable(unavailable_message(name, directory))
            import tensorflow_datasets as tfds  # noqa: PLC0415

            builder.download_and_prepare(
                file_format="array_record", download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        version = str(builder.info.version)
        channels = TFDS_SOURCES[name].shape[-1]
        # test first: train.npz marks a complete cache (see _cached_versions)
        for split in sorted(_builder_splits(builder), key=lambda s: s != "test"):
            images, labels = _decode_split(builder, split, channels)
            _write_npz(_cache_file(name, directory, version, split), images=images, labels=labels)
        return _cache_dir(name, directory, version)


@functools.lru_cache(maxsize=16)
def _load_cached(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as stored:
        return stored["images"], stored["labels"]


def load(name: str, subset: str, directory: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """``(images [N, H, W, C] uint8, labels [N] int32, num_classes)`` of one split in ``directory``,
    preparing it if needed."""
    versions = _cached_versions(name, directory)
    cache = _cache_dir(name, directory, versions[-1]) if versions else prepare(name, directory, downloadable(name))
    path = cache / f"{subset}.npz"
    if not path.is_file():
        raise ValueError(f"dataset '{name}' has no '{subset}' split in {cache}")
    images, labels = _load_cached(str(path))
    return images, labels, TFDS_SOURCES[name].num_classes


@dataclasses.dataclass(frozen=True)
class TfdsSource(NamedSource):
    """The paper's TFDS datasets (:data:`TFDS_SOURCES`): stored examples, sampled uniformly."""

    stored_classes = True

    def names(self) -> tuple[str, ...]:
        return tuple(TFDS_SOURCES)

    def check(self, name: str, settings: DataSettings, key: str) -> None:
        check_available(name, data_dir(settings.data.dir), key)

    def class_count(self, name: str, settings: DataSettings) -> int:
        return stored.class_count(settings, TFDS_SOURCES[name].num_classes)

    def example_shape(self, name: str, settings: DataSettings) -> tuple[int, ...]:
        return TFDS_SOURCES[name].shape

    def load(self, name: str, subset: str, settings: DataSettings, options: LoadOptions) -> Loaded:
        images, labels, classes = load(name, subset, data_dir(settings.data.dir))
        # Stored as uint8 on the device too: 4x less memory; scaled per episode.
        return stored.loaded_split(name, images, labels, classes, 1.0 / 255.0, options)

    def status(self, directory) -> tuple[str, list[tuple[str, str, str]]]:
        rows, data_command = [], environment.module_command("vsml.data")
        for name, source in TFDS_SOURCES.items():
            state = "prepared" if is_prepared(name, directory) else "missing"
            shape = "x".join(map(str, source.shape))
            rows.append((name, state, f"{shape}, {source.num_classes} classes; prepare: {data_command} prepare {name}"))
        return f"TFDS (in {directory})", rows


SOURCE = TfdsSource()
