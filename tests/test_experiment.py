"""Meta-training really meta-learns: a short ES run on ``sum`` lowers the meta-loss."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from tests.conftest import TINY
from vsml import evaluation, experiment
from vsml.comm import SingleProcessComm
from vsml.config import build_config
from vsml.learners import build_learner
from vsml.runlog import read_metrics
from vsml.settings import run_settings


def test_short_es_meta_training_on_sum_lowers_meta_loss(tmp_path):
    config = build_config(
        overrides=[
            # Two inputs keep each generation at milliseconds; the learner still has to
            # discover, from the error feedback, which output each input sign maps to.
            "training.dataset=sum",
            "sum_dataset.input_size=[2]",
            "training.episode_length=20",
            "training.population_size=32",
            "training.iterations=400",
            "optimizer.lr=0.1",
            "evaluation.datasets=[sum]",
            "evaluation.episode_length=20",
            "evaluation.frequency=400",
            "summary.frequency=1",
            "checkpoint.frequency=400",
            "model.sub_rnn.msg_size=4",
            "model.sub_rnn.slow_size=4",
            "logging.wandb=disabled",
        ]
    )
    result = experiment.train(config, SingleProcessComm(), tmp_path)
    assert result.state.generation == 400 and result.stopped_by is None
    losses = np.array([row["meta_loss"] for row in read_metrics(tmp_path)])
    assert len(losses) == 400
    # Without inner learning VSML's outputs are symmetric, so it starts at chance (ln 2 ~ 0.693)
    # and can only get below it by learning within the episode.
    assert abs(losses[:20].mean() - np.log(2)) < 0.01
    assert losses[-50:].mean() < np.log(2) - 0.05


class _Rank(SingleProcessComm):
    """Rank ``rank`` of ``size``, for building one rank's evaluators in this process (no collective is called)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


@pytest.mark.parametrize("ranks", [2, 3, 7])
def test_meta_test_episodes_are_the_same_on_any_number_of_ranks(ranks):
    """The ranks' shares of evaluation.count episodes, concatenated as rank 0 gathers them, are one
    process's episodes: every index once, in order, with bit-identical curves (7 ranks: some have none)."""
    config = build_config(["configs/test.yaml"], overrides=[*TINY, "evaluation.count=5"])
    settings = run_settings(config)
    task = evaluation.load_task("digits", "test", settings.data_settings, 12, 1)
    learner = build_learner(settings.model, task.spec.input_shape, task.spec.num_classes)
    params = learner.init(jax.random.PRNGKey(3))

    def curves(rank, size):
        comm = _Rank(rank, size)
        evaluate = evaluation.build_evaluators(learner, settings, comm)["digits"]
        return {key: np.asarray(value) for key, value in evaluate(params).items()}

    one = curves(0, 1)
    assert one["accuracy"].shape == (5, 12)
    sizes = [len(evaluation.episode_slice(5, rank, ranks)) for rank in range(ranks)]
    assert sum(sizes) == 5 and max(sizes) - min(sizes) <= 1  # an even split
    shares = [curves(rank, ranks) for rank in range(ranks)]
    for key in ("loss", "accuracy"):
        np.testing.assert_array_equal(np.concatenate([share[key] for share in shares]), one[key])
    assert len({tuple(row) for row in one["loss"]}) == 5  # five different episodes, not one repeated
