"""Tests for vsml.config: layering, dotted keys, overrides, array/grid tasks, mpi_split."""

import copy

import pytest
import yaml

from vsml import config as C
from vsml import sweeps

# A small hand-written base so expectations do not depend on default.yaml's values.
BASE = {
    "seed": 42,
    "training": {"population_size": 1024, "batch_size": 1, "dataset": "mnist"},
    "data": {
        "filter_classes": None,
        "preprocess": {
            "resize": None,
            "rand_proj": False,
            "shuffle": False,
            "dataset_stats": {"mnist": {"mean": 0.1307, "std": 0.3081}},
        },
    },
    "optimizer": {"lr": 0.025, "kwargs": {"b1": 0.9, "b2": 0.999}},
    "model": {
        "sub_rnn": {"msg_size": 8, "slow_size": 16},
        "vsml_rnn": {"layer_specs": [{"type": "dense"}], "tanh_bound": 100},
    },
}


def build(*args, **kwargs):
    kwargs.setdefault("base", BASE)
    kwargs.setdefault("environ", {})
    return C.build_config(*args, **kwargs)


def write(tmp_path, name, doc):
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def with_changes(changes):
    """BASE with the given {dotted.key: value} changes, built by hand."""
    out = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    return out


# ---------------------------------------------------------------- default file


def test_default_file_loads_and_has_the_documented_keys():
    cfg = C.load_default()
    assert C.DEFAULT_CONFIG_PATH.name == "default.yaml"
    assert C.get(cfg, "training.population_size") == 1024
    assert C.get(cfg, "optimizer.kwargs.b1") == 0.9
    assert C.get(cfg, "model.vsml_rnn.layer_specs") == [{"type": "dense"}]
    # The real default builds with a real override (keys checked against it).
    built = C.build_config(overrides=["training.population_size=8"], environ={})
    assert built["training"]["population_size"] == 8
    assert built["seed"] == cfg["seed"]


# ---------------------------------------------------------------- layering


def test_no_layers_returns_an_equal_copy_of_the_base():
    cfg = build()
    assert cfg == BASE
    cfg["training"]["population_size"] = 1
    assert BASE["training"]["population_size"] == 1024


def test_layer_order_default_files_array_task_overrides(tmp_path):
    f1 = write(tmp_path, "a.yaml", {"seed": 1, "training": {"batch_size": 2, "dataset": "f1"}})
    f2 = write(tmp_path, "b.yaml", {"seed": 2, "training.dataset": "f2"})
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 3}, {"seed": 30, "optimizer.lr": 0.5}]})
    cfg = build([f1, f2], overrides=["optimizer.lr=0.1"], array_file=arr, task=2)
    assert cfg == with_changes(
        {
            "seed": 30,  # array task beats both files
            "training.batch_size": 2,  # only f1 sets it
            "training.dataset": "f2",  # later file wins
            "optimizer.lr": 0.1,  # override beats the array task
        }
    )


def test_dotted_and_nested_keys_are_equivalent(tmp_path):
    dotted = write(tmp_path, "d.yaml", {"training.population_size": 8, "model.sub_rnn.msg_size": 4})
    nested = write(tmp_path, "n.yaml", {"training": {"population_size": 8}, "model": {"sub_rnn": {"msg_size": 4}}})
    mixed = write(tmp_path, "m.yaml", {"training": {"population_size": 8}, "model.sub_rnn": {"msg_size": 4}})
    expected = with_changes({"training.population_size": 8, "model.sub_rnn.msg_size": 4})
    assert build([dotted]) == expected
    assert build([nested]) == expected
    assert build([mixed]) == expected
    assert build(overrides=["model.sub_rnn={msg_size: 4}", "training={population_size: 8}"]) == expected


def test_section_merges_and_leaf_list_is_replaced(tmp_path):
    cfg = build(overrides=["model.vsml_rnn={layer_specs: [{type: conv}, {type: dense}]}"])
    assert cfg["model"]["vsml_rnn"] == {"layer_specs": [{"type": "conv"}, {"type": "dense"}], "tanh_bound": 100}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("seed=7", 7),
        ("seed=-3", -3),
        ("seed=0.5", 0.5),
        ("seed=1e-3", 0.001),  # PyYAML alone would give the string '1e-3'
        ("seed=[1,2]", [1, 2]),
        ("seed=null", None),
        ("seed=", None),
        ("seed=true", True),
        ("seed=False", False),
        ("seed=hello", "hello"),
        ("seed='5'", "5"),
        ("seed=a=b", "a=b"),  # only the first '=' separates key and value
    ],
)
def test_override_values_are_parsed_as_yaml(text, expected):
    value = build(overrides=[text])["seed"]
    assert value == expected
    assert type(value) is type(expected)


def test_override_without_equals_is_an_error():
    with pytest.raises(C.ConfigError, match="key=value"):
        build(overrides=["training.population_size"])


# ---------------------------------------------------------------- key checking


def test_unknown_override_key_names_the_closest_key():
    with pytest.raises(C.ConfigError) as err:
        build(overrides=["training.populaton_size=8"])
    msg = str(err.value)
    assert "'training.populaton_size'" in msg
    assert "did you mean 'training.population_size'" in msg
    assert "--config" in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    "wrong, meant",
    [
        ("trainng.population_size", "training.population_size"),  # typo in the section
        ("model.msg_size", "model.sub_rnn.msg_size"),  # right name, wrong section
        ("population_size", "training.population_size"),
    ],
)
def test_unknown_key_suggestions(wrong, meant):
    with pytest.raises(C.ConfigError, match=f"did you mean '{meant}'"):
        build(overrides=[f"{wrong}=1"])


def test_unknown_key_in_a_file_names_the_file_and_closest_key(tmp_path):
    path = write(tmp_path, "typo.yaml", {"training": {"populaton_size": 8}})
    with pytest.raises(C.ConfigError) as err:
        build([path])
    assert "typo.yaml" in str(err.value)
    assert "training.population_size" in str(err.value)


def test_unknown_key_in_an_array_task_names_the_task(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 1}, {"training.populaton_size": 8}]})
    assert build(array_file=arr, task=1)["seed"] == 1  # only the chosen task is applied
    with pytest.raises(C.ConfigError) as err:
        build(array_file=arr, task=2)
    assert "arr.yaml" in str(err.value) and "task 2" in str(err.value)
    assert "training.population_size" in str(err.value)


def test_key_below_a_leaf_is_unknown():
    with pytest.raises(C.ConfigError, match="unknown config key 'seed.foo'"):
        build(overrides=["seed.foo=1"])


def test_section_replaced_by_scalar_is_an_error():
    with pytest.raises(C.ConfigError, match="'training' .*section"):
        build(overrides=["training=5"])
    # An open sub-tree's root is still a section.
    with pytest.raises(C.ConfigError, match="optimizer.kwargs"):
        build(overrides=["optimizer.kwargs=5"])


def test_open_subtrees_accept_new_keys(tmp_path):
    path = write(
        tmp_path,
        "open.yaml",
        {
            "optimizer.kwargs.eps": 1.0e-8,
            "data.preprocess.dataset_stats": {"mydata": {"mean": 0.5, "std": 0.25}},
        },
    )
    cfg = build([path], overrides=["data.preprocess.dataset_stats.mnist.extra=1"])
    assert cfg["optimizer"]["kwargs"] == {"b1": 0.9, "b2": 0.999, "eps": 1e-8}
    assert cfg["data"]["preprocess"]["dataset_stats"] == {
        "mnist": {"mean": 0.1307, "std": 0.3081, "extra": 1},
        "mydata": {"mean": 0.5, "std": 0.25},
    }
    # ...but the sections around them stay closed.
    with pytest.raises(C.ConfigError, match="optimizer.lrr"):
        build(overrides=["optimizer.lrr=1"])


# ---------------------------------------------------------------- files


def test_missing_config_file(tmp_path):
    with pytest.raises(C.ConfigError, match="config file '.*nope.yaml' not found$"):  # nothing like it anywhere
        build([tmp_path / "nope.yaml"])


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("quickstrat.yaml", "quickstart.yaml"),  # a typo, in the file's own folder
        ("quickstart", "quickstart.yaml"),  # the suffix left off
        ("Quickstart.yaml", "quickstart.yaml"),
    ],
)
def test_a_missing_config_file_names_the_similar_one_in_its_folder(tmp_path, monkeypatch, typed, meant):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    write(tmp_path / "mine", meant, "seed: 1\n")
    with pytest.raises(
        C.ConfigError, match=f"config file 'mine/{typed}' not found \\(did you mean 'mine/{meant}'\\?\\)$"
    ):
        build([f"mine/{typed}"])


def test_a_missing_config_file_names_the_similar_one_in_the_configs_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shipped = sorted(path.name for path in C.CONFIGS_DIR.glob("*.yaml"))
    assert "quickstart.yaml" in shipped
    # run from elsewhere: the shipped file is named by a path that works from here
    with pytest.raises(
        C.ConfigError, match=r"config file 'quickstrat.yaml' not found \(did you mean '(.*)'\?\)"
    ) as err:
        build(["quickstrat.yaml"])
    suggested = err.value.args[0].split("did you mean '")[1].split("'")[0]
    assert (tmp_path / suggested).resolve() == (C.CONFIGS_DIR / "quickstart.yaml").resolve()


def test_a_missing_array_file_names_the_similar_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sweeps").mkdir()
    write(tmp_path / "sweeps", "learning_rates.yaml", "array:\n  - seed: 1\n")
    with pytest.raises(
        C.ConfigError,
        match=r"array file 'sweeps/learning_rate.yaml' not found \(did you mean 'sweeps/learning_rates.yaml'\?\)$",
    ):
        C.build_config(array_file="sweeps/learning_rate.yaml", task=1)
    shipped = C.CONFIGS_DIR / "array" / "datasets.yaml"
    assert shipped.is_file()
    with pytest.raises(
        C.ConfigError, match=r"array file 'dataset.yaml' not found \(did you mean '.*datasets.yaml'\?\)$"
    ):
        C.build_config(array_file="dataset.yaml", task=1)


def test_malformed_yaml_mentions_the_line(tmp_path):
    path = write(tmp_path, "bad.yaml", "seed: 1\ntraining:\n  batch_size: [1, 2\nmodel: 3\n")
    with pytest.raises(C.ConfigError) as err:
        C.load_yaml_file(path)
    msg = str(err.value)
    assert "bad.yaml" in msg and "line 4" in msg
    assert "\n" not in msg


def test_file_that_is_not_a_mapping(tmp_path):
    with pytest.raises(C.ConfigError, match="mapping"):
        C.load_yaml_file(write(tmp_path, "list.yaml", "- 1\n- 2\n"))
    assert C.load_yaml_file(write(tmp_path, "empty.yaml", "")) == {}


# ---------------------------------------------------------------- array files


def test_array_task_from_task_argument_and_from_slurm_env(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}, {"seed": 20}, {"seed": 30}]})
    assert build(array_file=arr, task=1)["seed"] == 10
    assert build(array_file=arr, environ={"SLURM_ARRAY_TASK_ID": "3"})["seed"] == 30
    # --task wins over the environment.
    assert build(array_file=arr, task=2, environ={"SLURM_ARRAY_TASK_ID": "3"})["seed"] == 20


def test_array_without_task_names_both_ways_to_pick_one(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}]})
    with pytest.raises(C.ConfigError) as err:
        build(array_file=arr)
    assert "--task" in str(err.value) and "SLURM_ARRAY_TASK_ID" in str(err.value)


@pytest.mark.parametrize("task", [0, 4, -1])
def test_array_task_out_of_range_gives_the_count(tmp_path, task):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}, {"seed": 20}, {"seed": 30}]})
    with pytest.raises(C.ConfigError, match="3 tasks"):
        build(array_file=arr, task=task)


def test_task_without_array_is_an_error():
    with pytest.raises(C.ConfigError, match="--array"):
        build(task=1)


def _original_grid_order(lengths, number):
    """The original release's rule for task ``number`` (1-based): the first axis varies fastest."""
    n, picks = number - 1, []
    for length in lengths:
        picks.append(n % length)
        n //= length
    return picks


def test_grid_is_the_product_of_axes_first_axis_fastest():
    seeds, datasets = [1, 2], ["a", "b", "c"]
    doc = {"grid": [[{"seed": s} for s in seeds], [{"training.dataset": d} for d in datasets]]}
    tasks = [task.config for task in sweeps.sweep_tasks(doc)]
    assert len(tasks) == 6
    for number, task in enumerate(tasks, start=1):
        seed, dataset = _original_grid_order([2, 3], number)
        assert task == {"seed": seeds[seed], "training": {"dataset": datasets[dataset]}}
    assert tasks[1] == {"seed": 2, "training": {"dataset": "a"}}  # task 2: the first axis moved on


def test_grid_shorthand_and_zipped_keys(tmp_path):
    arr = write(
        tmp_path,
        "grid.yaml",
        {
            "grid": [
                {"training.dataset": ["mnist", "fashion_mnist"]},
                {"seed": [1, 2, 3], "optimizer.lr": [0.1, 0.2, 0.3]},  # zipped, not crossed
            ]
        },
    )
    doc = C.load_yaml_file(arr)
    assert len(sweeps.sweep_tasks(doc)) == 6
    cfg = build(array_file=arr, task=4)  # n = 3: dataset 3 % 2 = 1, zip entry 3 // 2 = 1
    assert cfg == with_changes({"training.dataset": "fashion_mnist", "seed": 2, "optimizer.lr": 0.2})


def test_grid_shorthand_with_unequal_lists_is_an_error():
    with pytest.raises(C.ConfigError, match="length"):
        sweeps.sweep_tasks({"grid": [{"seed": [1, 2], "optimizer.lr": [0.1]}]})


def test_later_grid_axis_overrides_earlier_one_for_the_same_key():
    tasks = sweeps.sweep_tasks(
        {"grid": [[{"training": {"dataset": "x", "batch_size": 4}}], [{"training.dataset": "y"}]]}
    )
    assert [task.config for task in tasks] == [{"training": {"dataset": "y", "batch_size": 4}}]


@pytest.mark.parametrize("doc", [{}, {"array": [{}], "grid": [[{}]]}, {"tasks": [{}]}])
def test_array_file_needs_exactly_one_of_array_and_grid(doc):
    with pytest.raises(C.ConfigError):
        sweeps.sweep_tasks(doc)


def test_array_file_base_is_applied_before_the_task(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"base": {"seed": 5, "training.batch_size": 7}, "array": [{"seed": 6}]})
    cfg = build(array_file=arr, task=1)
    assert cfg == with_changes({"seed": 6, "training.batch_size": 7})


# ---------------------------------------------------------------- mpi_split


def test_mpi_split_on_a_leaf_with_repeat():
    cfg = build(overrides=["seed={mpi_split: [0, 1], mpi_repeat: 2}"])
    seeds = [C.resolve_for_rank(cfg, rank)["seed"] for rank in range(6)]
    assert seeds == [0, 0, 1, 1, 0, 0]
    # Without mpi_repeat every rank steps to the next option.
    cfg = build(overrides=["seed.mpi_split=[a, b, c]"])
    assert [C.resolve_for_rank(cfg, r)["seed"] for r in range(4)] == ["a", "b", "c", "a"]


def test_mpi_split_on_a_section_then_an_override_inside_it(tmp_path):
    path = write(
        tmp_path,
        "split.yaml",
        {
            "data.preprocess": {"mpi_split": [{"rand_proj": True}, {"rand_proj": False, "shuffle": True}]},
        },
    )
    cfg = build([path], overrides=["data.preprocess.resize=14"])
    stats = BASE["data"]["preprocess"]["dataset_stats"]
    rank0 = {"resize": 14, "rand_proj": True, "shuffle": False, "dataset_stats": stats}
    rank1 = {"resize": 14, "rand_proj": False, "shuffle": True, "dataset_stats": stats}
    assert C.resolve_for_rank(cfg, 0)["data"]["preprocess"] == rank0
    assert C.resolve_for_rank(cfg, 1)["data"]["preprocess"] == rank1
    assert C.resolve_for_rank(cfg, 2)["data"]["preprocess"] == rank0
    # Everything outside the split is the same for every rank.
    assert C.resolve_for_rank(cfg, 1)["training"] == BASE["training"]


def test_mpi_split_options_are_key_checked():
    with pytest.raises(C.ConfigError, match="did you mean 'data.preprocess.rand_proj'"):
        build(overrides=["data.preprocess={mpi_split: [{rand_prj: true}, {}]}"])


def test_later_layer_setting_the_whole_key_replaces_the_split():
    cfg = build(overrides=["seed={mpi_split: [1, 2]}", "seed=9"])
    assert cfg["seed"] == 9
    cfg = build(
        overrides=[
            "data.preprocess={mpi_split: [{resize: 7}, {resize: 8}]}",
            "data.preprocess={mpi_split: [{shuffle: true}]}",
        ]
    )
    # The new split's options start from the base value, not from the old options.
    assert C.resolve_for_rank(cfg, 1)["data"]["preprocess"]["resize"] is None
    assert C.resolve_for_rank(cfg, 1)["data"]["preprocess"]["shuffle"] is True


def test_nested_mpi_split_is_resolved():
    cfg = build(overrides=["training={mpi_split: [{batch_size: {mpi_split: [1, 2]}}, {batch_size: 3}]}"])
    assert [C.resolve_for_rank(cfg, r)["training"]["batch_size"] for r in range(4)] == [1, 3, 1, 3]


def test_build_keeps_splits_unresolved_and_they_survive_yaml(tmp_path):
    cfg = build(overrides=["optimizer.lr={mpi_split: [0.1, 0.2], mpi_repeat: 3}"])
    assert cfg["optimizer"]["lr"] == {"mpi_split": [0.1, 0.2], "mpi_repeat": 3}
    # A saved config can be used as the base of a later build and resolved there.
    saved = yaml.safe_load(C.to_yaml(cfg))
    again = C.build_config(base=saved, overrides=["seed=1"], environ={})
    assert C.resolve_for_rank(again, 3)["optimizer"]["lr"] == 0.2


@pytest.mark.parametrize(
    "spec",
    [
        "{mpi_split: []}",
        "{mpi_split: 3}",
        "{mpi_split: [1], mpi_repeat: 0}",
        "{mpi_split: [1], mpi_repeat: 1.5}",
        "{mpi_split: [1], other: 2}",
    ],
)
def test_bad_mpi_split_specs(spec):
    with pytest.raises(C.ConfigError, match="seed"):
        build(overrides=[f"seed={spec}"])


def test_resolve_for_rank_does_not_mutate_its_input():
    cfg = build(
        overrides=[
            "data.preprocess={mpi_split: [{resize: 7}, {resize: 8}]}",
            "model.vsml_rnn.layer_specs={mpi_split: [[{type: dense}], [{type: conv}]]}",
        ]
    )
    before = copy.deepcopy(cfg)
    resolved = C.resolve_for_rank(cfg, 1)
    resolved["model"]["vsml_rnn"]["layer_specs"][0]["type"] = "changed"
    resolved["training"]["batch_size"] = 99
    assert cfg == before


# ---------------------------------------------------------------- helpers


def test_get_and_flatten():
    assert C.get(BASE, "model.sub_rnn.msg_size") == 8
    assert C.get(BASE, "training") == BASE["training"]
    with pytest.raises(C.ConfigError, match="training.population_size"):
        C.get(BASE, "training.populaton_size")
    flat = C.flatten({"a": 1, "b": {"c": [1, 2], "d": {"e": None}}})
    assert flat == {"a": 1, "b.c": [1, 2], "b.d.e": None}


def test_flatten_output_is_a_valid_layer(tmp_path):
    cfg = build(overrides=["seed={mpi_split: [1, 2], mpi_repeat: 2}", "training.batch_size=3"])
    flat = C.flatten(cfg)
    assert flat["seed.mpi_split"] == [1, 2] and flat["seed.mpi_repeat"] == 2
    assert build([write(tmp_path, "flat.yaml", flat)]) == cfg
    # Also as one override per key: mpi_repeat then adjusts the split just set.
    assert (
        build(overrides=[f"{k}={yaml.safe_dump(v, default_flow_style=True).strip()}" for k, v in flat.items()]) == cfg
    )


def test_mpi_repeat_without_split_is_an_error():
    with pytest.raises(C.ConfigError, match="mpi_repeat for 'seed'"):
        build(overrides=["seed.mpi_repeat=2"])


def test_to_yaml_round_trip():
    cfg = build(
        overrides=[
            "optimizer.lr=1e-10",
            "seed={mpi_split: [1, 2]}",
            "data.filter_classes=[0, 1]",
            "training.dataset='123'",
        ]
    )
    text = C.to_yaml(cfg)
    assert yaml.safe_load(text) == cfg
    assert text.index("seed") < text.index("training")  # key order kept
    assert yaml.safe_load(C.to_yaml(C.load_default())) == C.load_default()


def test_single_path_and_single_override_are_accepted(tmp_path):
    path = write(tmp_path, "one.yaml", {"seed": 3})
    assert build(str(path), overrides="training.batch_size=2") == with_changes({"seed": 3, "training.batch_size": 2})


def test_non_integer_slurm_task_is_an_error(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}]})
    with pytest.raises(C.ConfigError, match="not an integer"):
        build(array_file=arr, environ={"SLURM_ARRAY_TASK_ID": "x"})


# ---------------------------------------------------------------- the original release's sweep format


def test_original_entries_nested_or_dotted_with_tags_and_config_files(tmp_path):
    layer = write(tmp_path, "layer.yaml", {"training": {"batch_size": 3, "dataset": "from_file"}})
    arr = write(
        tmp_path,
        "arr.yaml",
        {
            "array": [
                {"config": {"training": {"dataset": "x"}}, "tags": ["first"]},
                {"config": {"training.dataset": "y", "seed": 7}, "tags": ["second", "b"], "config_files": [str(layer)]},
                {"seed": 9},  # our plain override mapping, in the same list
                {"tags": ["only-tags"]},
            ]
        },
    )
    assert build(array_file=arr, task=1) == {**with_changes({"training.dataset": "x"}), "logging": {"tags": ["first"]}}
    # The task's config_files come after the command's files and before the task's overrides.
    second = build(array_file=arr, task=2, tags=["cli", "b"])
    assert second == {
        **with_changes({"training.dataset": "y", "training.batch_size": 3, "seed": 7}),
        "logging": {"tags": ["second", "b", "cli"]},
    }
    assert build(array_file=arr, task=3) == with_changes({"seed": 9})
    assert build(array_file=arr, task=4)["logging"] == {"tags": ["only-tags"]}


def test_original_grid_entries_concatenate_tags_and_files_in_axis_order(tmp_path):
    one = write(tmp_path, "one.yaml", {"seed": 1})
    two = write(tmp_path, "two.yaml", {"seed": 2, "training.batch_size": 5})
    doc = {
        "grid": [
            [
                {"config": {"training": {"dataset": "a"}}, "tags": ["a"], "config_files": [str(one)]},
                {"config": {"training": {"dataset": "b"}}, "tags": ["b"]},
            ],
            [{"config_files": [str(two)], "tags": ["two"]}, {"config": {"seed": 3}, "tags": ["three"]}],
        ]
    }
    tasks = sweeps.sweep_tasks(doc)
    assert [t.tags for t in tasks] == [("a", "two"), ("b", "two"), ("a", "three"), ("b", "three")]
    assert tasks[0].config_files == (str(one), str(two)) and tasks[3].config_files == ()
    arr = write(tmp_path, "grid.yaml", doc)
    # task 1: one.yaml then two.yaml (the later file wins on seed)
    assert build(array_file=arr, task=1) == {
        **with_changes({"training.dataset": "a", "seed": 2, "training.batch_size": 5}),
        "logging": {"tags": ["a", "two"]},
    }
    assert build(array_file=arr, task=3)["seed"] == 3  # the task's overrides come after its files


def test_unknown_entry_key_names_the_allowed_ones():
    with pytest.raises(C.ConfigError) as err:
        sweeps.sweep_tasks({"array": [{"config": {"seed": 1}, "tag": ["x"]}]})
    message = str(err.value)
    assert "'tag'" in message and "config, tags, config_files" in message and "task 1" in message
    assert "\n" not in message
    with pytest.raises(C.ConfigError, match="axis 2 .* unknown entry key 'confg'"):
        sweeps.sweep_tasks({"grid": [[{"seed": 1}], [{"confg": {"seed": 2}, "tags": ["t"]}]]})


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"config": [1, 2]}, "'config' of task 1"),
        ({"tags": [1]}, "'tags' of task 1"),
        ({"config_files": {"a": 1}}, "'config_files' of task 1"),
    ],
)
def test_badly_typed_entry_fields_are_named(entry, match):
    with pytest.raises(C.ConfigError, match=match):
        sweeps.sweep_tasks({"array": [entry]})


def test_subset_maps_array_task_n_to_entry_subset_n_minus_1(tmp_path):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}, {"seed": 20}, {"seed": 30}, {"seed": 40}]})
    assert build(array_file=arr, subset=[3, 0], task=1)["seed"] == 40
    assert build(array_file=arr, subset=[3, 0], environ={"SLURM_ARRAY_TASK_ID": "2"})["seed"] == 10
    grid = write(
        tmp_path,
        "grid.yaml",
        {"grid": [[{"seed": 1}, {"seed": 2}], [{"training.dataset": "a"}, {"training.dataset": "b"}]]},
    )
    assert build(array_file=grid, subset=[2], task=1) == with_changes({"seed": 1, "training.dataset": "b"})


@pytest.mark.parametrize(
    "subset, task, match",
    [
        ([4], 1, r"--subset index 4 is out of range: array file .* has 4 tasks \(0-based indices 0..3\)"),
        ([-1], 1, "--subset index -1 is out of range"),
        ([0, 1], 3, r"task 3 is out of range: --subset .* has 2 entries"),
    ],
)
def test_subset_out_of_range_is_one_line(tmp_path, subset, task, match):
    arr = write(tmp_path, "arr.yaml", {"array": [{"seed": 10}, {"seed": 20}, {"seed": 30}, {"seed": 40}]})
    with pytest.raises(C.ConfigError, match=match) as err:
        build(array_file=arr, subset=subset, task=task)
    assert "\n" not in str(err.value)


def test_subset_without_array_is_an_error():
    with pytest.raises(C.ConfigError, match="--subset needs an --array"):
        build(subset=[0])


def test_tags_accumulate_once_each_and_job_type_is_set():
    base = {**BASE, "logging": {"tags": [], "job_type": None}}
    config = build(base=base, overrides=["logging.tags=[a, b]"], tags=["b", "c"], job_type="eval")
    assert config["logging"] == {"tags": ["a", "b", "c"], "job_type": "eval"}
    assert base["logging"] == {"tags": [], "job_type": None}  # input not mutated
