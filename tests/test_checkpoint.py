"""Checkpoints: plain .npz, exact round trip, atomic writes, clear errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vsml import api, checkpoint
from vsml.meta import MetaState
from vsml.meta.slicing import base_keys


def _state():
    params = {"forward": [{"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}]}
    opt = optax.adam(0.1)
    opt_state = opt.init(params)
    _, opt_state = opt.update(jax.tree_util.tree_map(jnp.ones_like, params), opt_state, params)
    return params, opt_state


def _meta_state(params, opt_state, step=7):
    rng = {"noise": jnp.array([1, 2], jnp.uint32), "data": jnp.array([3, 4], jnp.uint32)}
    return MetaState(params=params, opt_state=opt_state, generation=step, rng=rng)


def _save(run_dir, params, opt_state, step=7, **kwargs):
    state = _meta_state(params, opt_state, step)
    return checkpoint.save(run_dir, state, wall_time=12.5, config_yaml="seed: 1\n", **kwargs)


def test_plain_npz_layout(tmp_path):
    params, opt_state = _state()
    path = _save(tmp_path, params, opt_state)
    with np.load(path, allow_pickle=False) as data:
        names = set(data.files)
        np.testing.assert_array_equal(data["params/forward/0/w"], np.arange(6.0).reshape(2, 3))
        assert int(data["step"]) == 7 and str(data["config"]) == "seed: 1\n"
        np.testing.assert_array_equal(data["rng/noise"], [1, 2])
    assert {"params/forward/0/b", "opt_state/0/mu/forward/0/w", "opt_state/0/count"} <= names
    # the layout of every file written before states became generic: nothing else, nothing renamed
    assert names - {name for name in names if name.startswith(("params/", "opt_state/"))} == {
        "step", "rng/noise", "rng/data", "wall_time", "config"
    }  # fmt: skip


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
    restored, path, problems = checkpoint.restore_latest(tmp_path, _meta_state(params, opt_state, 0))
    assert path.name == "checkpoint.prev.npz" and restored["state"].generation == 4
    assert len(problems) == 1 and "checkpoint.npz" in problems[0]


def test_no_readable_checkpoint_names_every_problem(tmp_path):
    (tmp_path / "checkpoint.npz").write_bytes(b"junk")
    with pytest.raises(checkpoint.CheckpointError, match="no readable checkpoint.*cannot read"):
        checkpoint.restore_latest(tmp_path, {"params": {"w": jnp.zeros(2)}})


def test_digest_tells_parameters_apart():
    params, _ = _state()
    same = jax.tree_util.tree_map(lambda x: x + 0, params)
    other = jax.tree_util.tree_map(lambda x: x.at[0].add(1e-7) if x.ndim == 1 else x, params)
    assert checkpoint.digest(params) == checkpoint.digest(same)
    assert checkpoint.digest(params) != checkpoint.digest(other)


@chex.dataclass
class _LoopState:
    """An outer loop's own state type: fields no other loop has (per-particle carries, a phase)."""

    params: dict
    generation: int
    carries: dict
    phase: int
    rng: jax.Array


def test_any_loop_state_round_trips_by_its_key_paths(tmp_path):
    """A state type the checkpoint module has never seen is saved leaf by leaf and restored into its template."""
    state = _LoopState(
        params={"w": jnp.arange(4.0)},
        generation=9,
        carries={"h": jnp.arange(6, dtype=jnp.float32).reshape(3, 2), "t": jnp.array([1, 2, 3], jnp.int32)},
        phase=2,
        rng=jax.random.PRNGKey(5),
    )
    checkpoint.save(tmp_path, state, wall_time=3.0, config_yaml="{}")
    with np.load(tmp_path / "checkpoint.npz") as data:
        assert set(data.files) == {"params/w", "step", "carries/h", "carries/t", "phase", "rng", "wall_time", "config"}
    template = jax.tree_util.tree_map(jnp.zeros_like, state).replace(generation=0, phase=0)
    restored = checkpoint.restore_state(tmp_path, template)
    got = restored["state"]
    assert type(got) is _LoopState and got.generation == 9 and got.phase == 2 and isinstance(got.generation, int)
    for want, have in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(got)):
        np.testing.assert_array_equal(np.asarray(have), np.asarray(want))
        assert np.asarray(have).dtype == np.asarray(want).dtype
    assert restored["wall_time"] == 3.0
    # a template asking for a field the file lacks (another loop's checkpoint) is refused by name
    other = _LoopState(params=state.params, generation=0, carries={"c": jnp.zeros(2)}, phase=0, rng=state.rng)
    with pytest.raises(checkpoint.CheckpointError, match="no 'carries/c'.*outer loop"):
        checkpoint.restore_state(tmp_path, other)


@pytest.mark.parametrize("name", ["vsml-digits", "vsml-mnist14"])
def test_shipped_checkpoints_resume_into_the_es_state(name):
    """Files written before states became generic hold an ES state: they restore into ``init``'s template."""
    file = checkpoint.resolve_path(f"pretrained:{name}")
    with np.load(file) as data:
        params = {k[len("params/") :]: data[k] for k in data.files if k.startswith("params/")}
        step, noise = int(data["step"]), data["rng/noise"]
    template_params = jax.tree_util.tree_map(jnp.zeros_like, api.pretrained(name).params)
    opt = optax.adam(1e-3)  # the shipped runs' optimiser: Adam without clipping (opt_state/0/mu/...)
    template = MetaState(params=template_params, opt_state=opt.init(template_params), generation=0, rng=base_keys(0))
    restored = checkpoint.restore_state(file, template)["state"]
    assert restored.generation == step
    np.testing.assert_array_equal(np.asarray(restored.rng["noise"]), noise)
    flat = checkpoint.flatten_tree("params", restored.params)
    assert flat.keys() == {f"params/{k}" for k in params}
    for key, value in params.items():
        np.testing.assert_array_equal(flat[f"params/{key}"], value)
