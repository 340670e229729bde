"""Types and ranges of configuration values, checked before anything expensive starts.

Types come from ``configs/default.yaml`` itself (a key whose default is an
integer takes integers, a boolean takes booleans, …), so a new key is
type-checked without touching this file; :data:`RULES` adds ranges and
choices. The choices of a key come from the code that implements them (the
learner and outer-loop registries, the loss types, fitness shapings,
normalisation modes, subsets, VSML state dtypes and node-perturbation kinds), so
they are listed once. Every problem is one line naming the key, what it must be
and what it got.

Rules that span several keys of one learner's section (VSML's ``layer_specs``
structure, ``output_idx < msg_size``, bfloat16 only with dense layers) live in
that learner's ``spec_from_config``, which ``check_config`` runs next; the
typed sections are built from the validated dict by :mod:`vsml.settings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from vsml.config import ConfigError, flatten, load_default
from vsml.data import NORMALIZATION_MODES, SUBSETS
from vsml.learners import LEARNER_TYPES
from vsml.learners.nodepert import PERTURBATIONS
from vsml.learners.vsml import STATE_DTYPES
from vsml.meta import OUTER_LOOPS
from vsml.meta.es import FITNESS_SHAPINGS
from vsml.meta.objective import LOSS_TYPES

Check = Callable[[Any], bool]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return (_is_int(value) or isinstance(value, float)) and math.isfinite(value)


def positive_int(value) -> bool:
    return _is_int(value) and value >= 1


def non_negative_int(value) -> bool:
    return _is_int(value) and value >= 0


def positive_number(value) -> bool:
    return _is_number(value) and value > 0


def non_negative_number(value) -> bool:
    return _is_number(value) and value >= 0


def unit_interval(value) -> bool:
    return _is_number(value) and 0 <= value <= 1


def below_one(value) -> bool:
    return _is_number(value) and 0 <= value < 1


def one_of(*choices) -> Check:
    check = lambda value: value in choices  # noqa: E731
    check.description = f"one of {', '.join(map(str, choices))}"
    return check


def optional(check: Check) -> Check:
    wrapped = lambda value: value is None or check(value)  # noqa: E731
    wrapped.description = f"null or {_describe(check)}"
    return wrapped


def auto_null_or_positive_int(value) -> bool:
    return value is None or value == "auto" or positive_int(value)


def switch_or_seed(value) -> bool:
    return isinstance(value, bool) or non_negative_int(value)


def shape(value) -> bool:
    return isinstance(value, list) and len(value) >= 1 and all(positive_int(v) for v in value)


def name_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def non_empty_str(value) -> bool:
    return isinstance(value, str) and bool(value)


_DESCRIPTIONS = {
    positive_int: "a positive integer",
    non_negative_int: "a non-negative integer",
    positive_number: "a positive finite number",
    non_negative_number: "a non-negative finite number",
    unit_interval: "a number in [0, 1]",
    below_one: "a number in [0, 1)",
    auto_null_or_positive_int: "auto, null or a positive integer",
    switch_or_seed: "true, false or an integer seed >= 0",
    shape: "a list of positive integers, e.g. [28, 28, 1]",
    name_list: "a list of names",
    non_empty_str: "a non-empty string",
}


def _describe(check: Check) -> str:
    return getattr(check, "description", None) or _DESCRIPTIONS.get(check, check.__name__)


RULES: dict[str, Check] = {
    "seed": non_negative_int,
    "call": one_of("train", "evaluate"),
    "summary.frequency": positive_int,
    "evaluation.frequency": positive_int,
    "evaluation.datasets": name_list,
    "evaluation.batch_size": positive_int,
    "evaluation.episode_length": positive_int,
    "evaluation.seed": non_negative_int,
    "evaluation.subset": one_of(*SUBSETS),
    "evaluation.count": positive_int,
    "checkpoint.frequency": positive_int,
    "checkpoint.keep": optional(positive_int),
    "checkpoint.restore.path": optional(non_empty_str),
    "checkpoint.restore.run_path": optional(non_empty_str),
    "checkpoint.restore.file_name": optional(non_empty_str),
    "training.iterations": non_negative_int,
    "training.dataset": non_empty_str,
    "training.batch_size": positive_int,
    "training.episode_length": positive_int,
    "training.population_size": positive_int,
    "training.loss_type": one_of(*LOSS_TYPES),
    "training.pairs_per_chunk": auto_null_or_positive_int,
    "data.dir": optional(non_empty_str),
    "data.preprocess.normalization_mode": one_of(*NORMALIZATION_MODES),
    "data.preprocess.rand_proj": switch_or_seed,
    "data.preprocess.shuffle": switch_or_seed,
    "optimizer.type": one_of(*OUTER_LOOPS),
    "optimizer.noise_std": positive_number,
    "optimizer.lr": positive_number,
    "optimizer.kwargs.b1": below_one,
    "optimizer.kwargs.b2": below_one,
    "optimizer.clip_gradnorm": non_negative_number,
    "optimizer.fitness_shaping": one_of(*FITNESS_SHAPINGS),
    "model.sub_rnn.msg_size": lambda v: _is_int(v) and v >= 2,
    "model.sub_rnn.slow_size": positive_int,
    "model.sub_rnn.init_rand_proportion": unit_interval,
    "model.sub_rnn.init_scale": positive_number,
    "model.vsml_rnn.num_micro_ticks": positive_int,
    "model.vsml_rnn.tanh_bound": positive_number,
    "model.vsml_rnn.output_idx": non_negative_int,
    "model.vsml_rnn.state_dtype": one_of(*STATE_DTYPES),
    "random_dataset.size": positive_int,
    "random_dataset.target_count": lambda v: _is_int(v) and v >= 2,
    "random_dataset.img_size": shape,
    "sum_dataset.input_size": shape,
    "runtime.compilation_cache": non_empty_str,
    "logging.wandb": one_of("offline", "online", "disabled"),
    "logging.dir": non_empty_str,
    "logging.tags": name_list,
    "logging.job_type": optional(non_empty_str),
    "logging.progress_seconds": non_negative_number,
}
for _learner in LEARNER_TYPES.values():  # every learner's section has a logit bound
    RULES[f"model.{_learner.section}.tanh_bound"] = positive_number
RULES.update(
    {
        "model.sgd.lr": positive_number,
        "model.nodepert.lr": positive_number,
        "model.nodepert.noise_std": positive_number,
        "model.nodepert.perturbation": one_of(*PERTURBATIONS),
    }
)
RULES.update(
    {
        f"model.{key}": positive_int
        for key in (  # the baselines' sizes and counts
            "meta_rnn.slow_size",
            "meta_rnn.num_micro_ticks",
            "sgd.num_layers",
            "sgd.hidden_size",
            "fwp.fast_size",
            "fw_memory.slow_size",
            "fw_memory.memory_size",
            "nodepert.num_layers",
            "nodepert.hidden_size",
        )
    }
)
# Keys checked as numbers accept integers and floats whatever their default's type (``clip: 1`` or ``1.0``).
NUMBER_RULES = (positive_number, non_negative_number, unit_interval, below_one)
# Rules that accept several types decide the type themselves.
TYPE_FREE_RULES = (*NUMBER_RULES, auto_null_or_positive_int, switch_or_seed)
_DESCRIPTIONS[RULES["model.sub_rnn.msg_size"]] = "an integer >= 2 (error and label slots)"
_DESCRIPTIONS[RULES["random_dataset.target_count"]] = "an integer >= 2"


def _type_matches(default, value) -> bool:
    """Whether ``value`` has the type the default value of its key implies."""
    if default is None or value is None:
        return True  # optional keys: their RULES entry (if any) decides
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return _is_int(value)
    if isinstance(default, float):
        return _is_number(value) or (isinstance(value, float) and not math.isfinite(value))
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, list):
        return isinstance(value, list)
    return True


def _type_name(default) -> str:
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "an integer"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a string"
    return "a list"


def validate(rank_config: dict, defaults: dict | None = None) -> None:
    """Raises ConfigError (one line) for the first ill-typed or out-of-range value.

    ``rank_config`` is one rank's resolved configuration (no ``mpi_split``).
    """
    flat_defaults = flatten(defaults if defaults is not None else load_default())
    values = flatten(rank_config)
    for key, value in values.items():
        default = flat_defaults.get(key)
        rule = RULES.get(key)
        if key in flat_defaults and rule not in TYPE_FREE_RULES and not _type_matches(default, value):
            raise ConfigError(f"{key}: must be {_type_name(default)}, got {value!r}")
        if rule is not None and not rule(value):
            raise ConfigError(f"{key}: must be {_describe(rule)}, got {value!r}")
    _check_cross_keys(rank_config)
    for name, stats in rank_config["data"]["preprocess"]["dataset_stats"].items():
        if not (isinstance(stats, dict) and _is_number(stats.get("mean")) and positive_number(stats.get("std"))):
            raise ConfigError(
                f"data.preprocess.dataset_stats.{name}: must be {{mean: number, std: positive number}}, got {stats!r}"
            )


def _check_cross_keys(config: dict) -> None:
    if config["evaluation"]["frequency"] % config["summary"]["frequency"]:
        raise ConfigError(
            f"evaluation.frequency ({config['evaluation']['frequency']}) must be a multiple of "
            f"summary.frequency ({config['summary']['frequency']})"
        )
