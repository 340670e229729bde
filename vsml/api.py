"""Python API: meta-train in-process, load a learned learning algorithm, run it on arrays.

    from vsml import api

    result = api.train(config_files=["configs/test.yaml"], overrides={"training.iterations": 4},
                       run_dir="runs/mine")
    algorithm = api.load(result.run_dir)              # or a checkpoint .npz
    logits = algorithm.run(inputs, labels)            # one episode: inputs [T, *shape], labels [T] -> logits [T, C]
    logits = algorithm.run_episodes(inputs, labels)   # E independent episodes: [E, T, *shape], [E, T] -> [E, T, C]
    curves = algorithm.evaluate("digits", episodes=8, length=100)   # {'loss', 'accuracy'}: [8, 100]

    api.pretrained_names()                           # the shipped meta-learned algorithms
    algorithm = api.pretrained("vsml-digits")        # one of them; .card: how it was made, its results

:func:`train` runs exactly what ``python3 launch.py`` runs (same configuration
layering and checks, same training loop, same run directory files), as one
process. Nothing here keeps state between calls: every call builds its own
configuration, learner and compiled functions, so several runs and loaded
algorithms can live side by side in one Python session.
"""

from __future__ import annotations

import copy
import os
import threading
from collections.abc import Iterable, Mapping

import numpy as np
import yaml

from vsml import config as cfg
from vsml.runs import TrainResult

# Float labels of one dimension fewer than one-hot are class indices given as floats.
_FLOAT_INDICES_HINT = "; class indices as floats? pass labels.astype(int)"


def _layer(config: dict, overrides, source: str) -> dict:
    """``config`` with ``overrides`` applied: a mapping of (dotted) keys to values, or ``key=value`` strings."""
    if not overrides:
        return config
    base = cfg.load_default()
    if isinstance(overrides, Mapping):
        return cfg.apply_layer(config, dict(overrides), base, source)
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        key, value = cfg.parse_override(text)
        config = cfg.apply_layer(config, {key: value}, base, source)
    return config


def build_config(
    config_files: Iterable = (), overrides: Mapping | Iterable[str] | None = None, base: dict | None = None
) -> dict:
    """The layered configuration: ``base`` (configs/default.yaml) < each file < ``overrides``.

    Raises ConfigError (a ValueError with one line) for an unknown key, a bad file or value.
    """
    config = cfg.build_config(config_files, (), base=base)
    return _layer(config, overrides, "overrides")


def train(
    config_files: Iterable = (), overrides: Mapping | Iterable[str] | None = None, run_dir=None, resume: bool = False
) -> TrainResult:
    """Meta-trains as ``python3 launch.py --config_files ... --config ...`` does, in this process.

    Args:
      config_files: YAML files layered in order on configs/default.yaml.
      overrides: ``{"training.population_size": 64, ...}`` (dotted or nested keys,
        Python values) or ``["training.population_size=64", ...]``; applied last.
      run_dir: where outputs go (default ``<logging.dir>/<date>-<time>-train-<dataset>``).
        Refused when it already holds a run, unless ``resume``.
      resume: continue the run in ``run_dir`` from its latest checkpoint with its
        saved configuration (``config_files`` / ``overrides`` layered on top), as
        ``launch.py --resume`` does.
    Returns:
      :class:`TrainResult`. Configuration problems raise a ValueError of one line
      before any data is loaded or anything is compiled.

    Ctrl-C (in the main thread) stops after the current generation with a
    checkpoint, as on the command line; a second Ctrl-C interrupts at once.
    ``mpi_split`` values resolve to rank 0's: this is one process.
    """
    from vsml import experiment, preparation  # noqa: PLC0415 — jax, only once called
    from vsml.comm import SingleProcessComm  # noqa: PLC0415
    from vsml.preemption import StopRequest  # noqa: PLC0415

    if resume and run_dir is None:
        raise ValueError("resume=True needs run_dir, the run directory to continue")
    resume_dir = run_dir if resume else None
    config = preparation.layered_config(config_files, overrides, resume_dir=resume_dir, resume_option="resume")
    if not resume and config["call"] != "train":
        raise ValueError(
            f"call: vsml.api.train needs call: train, got {config['call']!r}; use "
            f"vsml.api.load(...).evaluate(...) to evaluate"
        )
    prepared = preparation.prepare_run(
        config, SingleProcessComm(), run_dir=run_dir, resume_dir=resume_dir, resume_hint="resume=True"
    )
    stop = StopRequest(in_process=True)  # a second Ctrl-C interrupts; it never ends the caller's process
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        stop.install()
    try:
        resume_command = f"vsml.api.train(run_dir={str(prepared.run_dir)!r}, resume=True)"
        return experiment.train(
            prepared.config,
            SingleProcessComm(),
            prepared.run_dir,
            resume=prepared.resume,
            stop=stop,
            resume_command=resume_command,
        )
    finally:
        if in_main_thread:
            stop.uninstall()


class LearnedAlgorithm:
    """A meta-learned learning algorithm (or a hand-designed rule) with its meta-parameters.

    Attributes:
      config: the run's resolved configuration (rank 0).
      params: the meta-parameters (a pytree of jax arrays).
      step: the generation the checkpoint was written after.
      input_shape / num_classes: what a fixed-size learner was built for;
        ``None`` for VSML, which runs on any input size and class count.
      card: for a shipped algorithm (:func:`pretrained`), how it was made and
        what it scored (its ``NAME.yaml``); ``None`` otherwise.
    """

    card: dict | None = None

    def __init__(self, config: dict, learner, params, step: int, input_shape, num_classes):
        import jax  # noqa: PLC0415

        self.config = config
        self.learner = learner
        self.params = params
        self.step = step
        self.input_shape = input_shape
        self.num_classes = num_classes
        self._run = jax.jit(learner.run)  # one compiled program per input shape, owned by this object
        self._run_episodes = None  # jit(vmap(run)) over a leading episode axis, built on first use
        self._evaluators: dict = {}

    def __repr__(self) -> str:
        sizes = (
            "any input size and class count"
            if self.input_shape is None
            else f"inputs {list(self.input_shape)}, {self.num_classes} classes"
        )
        return f"LearnedAlgorithm({self.config['model']['type']}, step {self.step}, {sizes})"

    def run(self, inputs, labels, *, num_classes: int | None = None, seed: int = 0) -> np.ndarray:
        """Runs the learning algorithm through ONE episode; returns its online logits.

        At step t the algorithm predicts ``inputs[t]`` before it is shown
        ``labels[t]``, so ``logits[t]`` depends only on steps before t and on
        ``inputs[t]``. Inputs reach the learner as given: normalise them as the
        training data was (``dataset_standard``: zero mean, unit variance).

        ``[T, B, ...]`` is one episode of B streams that share the learner's
        state (the paper's batch, docs/DESIGN.md §3 and §4.5: VSML averages half
        of every synapse's state over B, so the B streams learn together, and
        accuracy depends on B). For B *independent* episodes use
        :meth:`run_episodes`.

        Args:
          inputs: ``[T, *input_shape]`` for one stream, ``[T, B, *input_shape]`` for B streams of one episode.
          labels: class indices ``[T]`` (``[T, B]``), or one-hot ``[T, C]`` (``[T, B, C]``) floats.
          num_classes: C for class indices (default: the largest label + 1, or the
            class count a fixed-size learner was built for).
          seed: the learner's inner randomness (VSML's initial states); the same seed
            gives the same logits.
        Returns:
          ``logits [T, C]`` (``[T, B, C]`` for B streams) as a NumPy float32 array.
        """
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        inputs, one_hot, streams = self._episode_arrays(inputs, labels, num_classes, lead="")
        logits = np.asarray(self._run(self.params, jax.random.PRNGKey(seed), jnp.asarray(inputs), jnp.asarray(one_hot)))
        return logits if streams else logits[:, 0]

    def run_episodes(self, inputs, labels, *, num_classes: int | None = None, seed: int = 0) -> np.ndarray:
        """Runs E independent episodes in parallel (one compiled program); returns their online logits.

        Episode e starts from the learner's initial state and sees only its own
        steps: ``run_episodes(x, y, seed=s)[e]`` equals ``run(x[e], y[e], seed=s,
        num_classes=C)`` (to float32 rounding), with the class count C shared by
        every episode. Nothing is shared between episodes, unlike the B streams
        of :meth:`run`'s ``[T, B, ...]``, which share the learner's state.

        Args:
          inputs: ``[E, T, *input_shape]``, or ``[E, T, B, *input_shape]`` for episodes of B shared-state streams.
          labels: class indices ``[E, T]`` (``[E, T, B]``), or one-hot ``[E, T, C]`` (``[E, T, B, C]``) floats.
          num_classes: C for class indices (default: the largest label of any episode + 1,
            or the class count a fixed-size learner was built for).
          seed: the learner's inner randomness, the same for every episode (as E calls of
            :meth:`run` with this seed).
        Returns:
          ``logits [E, T, C]`` (``[E, T, B, C]``) as a NumPy float32 array.
        """
        import jax  # noqa: PLC0415
        import jax.numpy as jnp  # noqa: PLC0415

        inputs, one_hot, streams = self._episode_arrays(inputs, labels, num_classes, lead="E, ")
        if self._run_episodes is None:
            self._run_episodes = jax.jit(jax.vmap(self.learner.run, in_axes=(None, None, 0, 0)))
        key = jax.random.PRNGKey(seed)
        logits = np.asarray(self._run_episodes(self.params, key, jnp.asarray(inputs), jnp.asarray(one_hot)))
        return logits if streams else logits[:, :, 0]

    def _episode_arrays(self, inputs, labels, num_classes: int | None, lead: str):
        """``(inputs [..., T, B, *shape], one_hot [..., T, B, C], streams)`` from what the caller gave.

        ``lead`` is ``""`` for one episode or ``"E, "`` for a leading episode axis;
        ``streams`` says whether the caller gave the B axis. ValueError (one line) for bad arrays.
        """
        extra = 1 if lead else 0
        labels = np.asarray(labels)
        inputs = np.asarray(inputs, dtype=np.float32)
        given = list(inputs.shape)
        if labels.dtype.kind in "iu":
            streams = labels.ndim == 2 + extra
            if labels.ndim not in (1 + extra, 2 + extra):
                raise ValueError(
                    f"labels: class indices must be [{lead}T] or [{lead}T, B], got shape {list(labels.shape)}"
                )
            if labels.size and labels.min() < 0:
                raise ValueError(f"labels: class indices must be >= 0, got {int(labels.min())}")
            classes = num_classes or self.num_classes or int(labels.max()) + 1
            if labels.size and labels.max() >= classes:
                raise ValueError(f"labels: class {int(labels.max())} does not fit num_classes={classes}")
            one_hot = np.eye(classes, dtype=np.float32)[labels]
        elif labels.dtype.kind == "f":
            streams = labels.ndim == 3 + extra
            if labels.ndim not in (2 + extra, 3 + extra):
                raise ValueError(
                    f"labels: one-hot labels must be [{lead}T, C] or [{lead}T, B, C], got shape "
                    f"{list(labels.shape)}{_FLOAT_INDICES_HINT if labels.ndim == 1 + extra else ''}"
                )
            one_hot = labels.astype(np.float32)
        else:
            raise ValueError(f"labels: give integer class indices or one-hot floats, got dtype {labels.dtype}")
        if not streams:
            inputs, one_hot = np.expand_dims(inputs, 1 + extra), np.expand_dims(one_hot, 1 + extra)
        if inputs.ndim < 2 + extra or inputs.shape[: 2 + extra] != one_hot.shape[: 2 + extra]:
            axes = f"{'the episodes E, ' if lead else ''}the steps T{' or the streams B' if streams else ''}"
            raise ValueError(f"inputs of shape {given} and labels of shape {list(labels.shape)} disagree on {axes}")
        if inputs.ndim < 3 + extra:
            raise ValueError(
                f"inputs: give [{lead}T, *input_shape] (or [{lead}T, B, *input_shape] with labels [{lead}T, B]), "
                f"got shape {given}"
            )
        return inputs, one_hot, streams

    def evaluate(
        self,
        dataset: str,
        episodes: int = 32,
        length: int = 100,
        *,
        subset: str = "test",
        batch_size: int = 1,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        """Online learning curves on ``episodes`` fresh episodes of ``dataset``.

        The episodes are sampled and preprocessed as in a run (the ``data``
        section of the run's config applies; ``dataset`` may be any dataset
        name or ``npz:PATH``) and depend only on ``seed`` (default: the run's
        ``evaluation.seed``), so the call is deterministic and matches
        ``call: evaluate`` with the same settings.

        Returns:
          ``{'loss': [episodes, length], 'accuracy': [episodes, length]}``: per
          episode and step, the cross-entropy and whether the online prediction
          was right (averaged over ``batch_size``).
        """
        from vsml import data, evaluation  # noqa: PLC0415
        from vsml.settings import run_settings  # noqa: PLC0415

        config = copy.deepcopy(self.config)
        config["evaluation"].update(
            datasets=[dataset],
            count=episodes,
            episode_length=length,
            subset=subset,
            batch_size=batch_size,
            seed=config["evaluation"]["seed"] if seed is None else seed,
        )
        settings = run_settings(config)  # one line naming evaluation.count / episode_length / ... for a bad argument
        cache_key = (dataset, episodes, length, subset, batch_size, settings.evaluation.seed)
        if cache_key not in self._evaluators:
            data.check_dataset_available(dataset, settings.data_settings, "dataset")
            task = evaluation.load_task(dataset, subset, settings.data_settings, length, batch_size)
            self._evaluators[cache_key] = evaluation.make_evaluator(
                self.learner, task, episodes, settings.evaluation.seed, rank=0
            )
        curves = self._evaluators[cache_key](self.params)
        return {key: np.asarray(value) for key, value in curves.items()}


def load(path, overrides: Mapping | Iterable[str] | None = None) -> LearnedAlgorithm:
    """The learned learning algorithm of a run directory (its latest checkpoint) or a checkpoint ``.npz``.

    The configuration is the one stored in the checkpoint, layered on today's
    defaults; ``overrides`` (as in :func:`train`) change it for what follows,
    e.g. ``{"data.dir": "/data/tfds"}`` or preprocessing for :meth:`LearnedAlgorithm.evaluate`.
    The model is always the checkpoint's: a model override that contradicts it
    is a ValueError of one line naming the key and both values.
    Fixed-size learners load their training dataset to learn its sizes.
    """
    import jax  # noqa: PLC0415

    from vsml import checkpoint, evaluation  # noqa: PLC0415
    from vsml.learners import build_learner  # noqa: PLC0415
    from vsml.run_checks import checkpoint_model  # noqa: PLC0415
    from vsml.settings import run_settings  # noqa: PLC0415

    file = checkpoint.resolve_path(os.fspath(path))
    arrays = checkpoint.load_arrays(file)
    if "config" not in arrays:
        raise checkpoint.CheckpointError(f"{file} is not a checkpoint of this project (no 'config')")
    saved = yaml.safe_load(str(arrays["config"]))
    base = cfg.load_default()
    config = _layer(
        cfg.apply_layer(copy.deepcopy(base), saved, base, f"the config saved in {file}"), overrides, "overrides"
    )
    config = checkpoint_model(config, saved, str(path))  # a model override that contradicts it: one line
    rank_config = cfg.resolve_for_rank(config, 0)
    settings = run_settings(rank_config)
    input_shape, num_classes = evaluation.trained_sizes(settings)
    learner = build_learner(settings.model, input_shape, num_classes)
    template = learner.init(jax.random.PRNGKey(settings.seed))
    restored = checkpoint.restore(file, template)
    params = jax.tree_util.tree_map(jax.numpy.asarray, restored["params"])
    return LearnedAlgorithm(rank_config, learner, params, restored["step"], input_shape, num_classes)


def pretrained_names() -> list[str]:
    """The pre-trained learning algorithms shipped with the package, for :func:`pretrained`."""
    from vsml import resources  # noqa: PLC0415

    return resources.pretrained_names()


def pretrained(name: str, overrides: Mapping | Iterable[str] | None = None) -> LearnedAlgorithm:
    """A shipped pre-trained learning algorithm, ready to run: ``pretrained("vsml-digits").run(x, y)``.

    Its ``card`` says how it was meta-trained (config, command, commit,
    machine) and its meta-test results; the same checkpoint is
    ``checkpoint.restore.path: pretrained:NAME`` for ``launch.py``.
    ValueError (one line, with the close names) for an unknown name.
    """
    from vsml import checkpoint, resources  # noqa: PLC0415

    algorithm = load(resources.pretrained_file(name), overrides)
    algorithm.card = checkpoint.load_card(resources.pretrained_card(name))
    return algorithm
