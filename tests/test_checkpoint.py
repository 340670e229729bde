"""Checkpoints: plain .npz, exact round trip, atomic writes, clear errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsml import checkpoint


def _state():
    params = {"forward": [{"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}]}
    opt = optax.adam(0.1)
    opt_state = opt.init(params)
    _, opt_state = opt.update(jax.tree_util.tree_map(jnp.ones_like, params), opt_state, params)
    return params, opt_state


def _save(run_dir, params, opt_state, step=7, **kwargs):
    return checkpoint.save(
        run_dir,
        params=params,
        opt_state=opt_state,
        step=step,
        rng={"noise": np.array([1, 2], np.uint32), "data": np.array([3, 4], np.uint32)},
        wall_time=12.5,
        config_yaml="seed: 1\n",
        **kwargs,
    )


def test_plain_npz_layout(tmp_path):
    params, opt_state = _state()
    path = _save(tmp_path, params, opt_state)
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        np.testing.assert_array_equal(data["params/forward/0/w"], np.arange(6.0).reshape(2, 3))
        assert int(data["step"]) == 7 and str(data["config"]) == "seed: 1\n"
        np.testing.assert_array_equal(data["rng/noise"], [1, 2])
    assert {"params/forward/0/b", "opt_state/0/mu/forward/0/w", "opt_state/0/count"} <= names


def test_round_trip_restores_every_leaf(tmp_path):
    params, opt_state = _state()
    _save(tmp_path, params, opt_state)
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    template_opt = optax.adam(0.1).init(zeros)
    restored = checkpoint.restore(tmp_path, zeros, template_opt)
    for got, want in zip(jax.tree_util.tree_leaves(restored["params"]), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    for got, want in zip(jax.tree_util.tree_leaves(restored["opt_state"]), jax.tree_util.tree_leaves(opt_state)):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert restored["step"] == 7 and restored["wall_time"] == 12.5


def test_with_step_keeps_a_numbered_copy(tmp_path):
    params, opt_state = _state()
    _save(tmp_path, params, opt_state, step=3, with_step=True)
    _save(tmp_path, params, opt_state, step=5, with_step=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-3.npz",
        "checkpoint-5.npz",
        "checkpoint.npz",
        "checkpoint.prev.npz",
    ]
    assert checkpoint.restore(tmp_path / "checkpoint-3.npz", params)["step"] == 3


def test_failed_write_leaves_previous_checkpoint(tmp_path, monkeypatch):
    params, opt_state = _state()
    _save(tmp_path, params, opt_state, step=1)

    def broken_savez(handle, **arrays):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        _save(tmp_path, params, opt_state, step=2)
    monkeypatch.undo()
    assert checkpoint.restore(tmp_path, params)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.npz", "checkpoint.prev.npz"]  # no temp file


def test_mismatched_template_and_bad_files_give_clear_errors(tmp_path):
    params, opt_state = _state()
    _save(tmp_path, params, opt_state)
    with pytest.raises(checkpoint.CheckpointError, match="shape"):
        checkpoint.restore(tmp_path, {"forward": [{"w": jnp.zeros((3, 3)), "b": jnp.ones(3)}]})
    with pytest.raises(checkpoint.CheckpointError, match="different model"):
        checkpoint.restore(tmp_path, {"other": jnp.zeros(2)})
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint"):
        checkpoint.restore(tmp_path / "missing", params)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(checkpoint.CheckpointError, match="cannot read"):
        checkpoint.restore(tmp_path / "junk.npz", params)


def test_keep_prunes_old_step_checkpoints(tmp_path):
    params, opt_state = _state()
    for step in (2, 4, 6, 8):
        _save(tmp_path, params, opt_state, step=step, with_step=True, keep=2)
    assert [step for step, _ in checkpoint.step_checkpoints(tmp_path)] == [8, 6]


@pytest.mark.parametrize("damage", ["truncate", "foreign"])
def test_unreadable_latest_falls_back_to_previous(tmp_path, damage):
    params, opt_state = _state()
    _save(tmp_path, params, opt_state, step=4)
    _save(tmp_path, params, opt_state, step=6)
    latest = tmp_path / "checkpoint.npz"
    if damage == "truncate":
        latest.write_bytes(latest.read_bytes()[:200])
    else:
        np.savez(latest, something=np.zeros(3))
    with pytest.raises(checkpoint.CheckpointError):
        checkpoint.restore(latest, params)
    restored, path, problems = checkpoint.restore_latest(tmp_path, params)
    assert path.name == "checkpoint.prev.npz" and restored["step"] == 4
    assert len(problems) == 1 and "checkpoint.npz" in problems[0]


def test_no_readable_checkpoint_names_every_problem(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*cannot read"):
        checkpoint.restore_latest(tmp_path, {"w": jnp.zeros(2)})


def test_digest_tells_parameters_apart():
    params, _ = _state()
    same = jax.tree_util.tree_map(lambda x: x + 0, params)
    other = jax.tree_util.tree_map(lambda x: x.at[0].add(1e-7) if x.ndim == 1 else x, params)
    assert checkpoint.digest(params) == checkpoint.digest(same)
    assert checkpoint.digest(params) != checkpoint.digest(other)
