"""Meta-training really meta-learns: a short ES run on ``sum`` lowers the meta-loss."""

from __future__ import annotations

import numpy as np

from vsml import experiment
from vsml.comm import SingleProcessComm
from vsml.config import build_config
from vsml.runlog import read_metrics


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
