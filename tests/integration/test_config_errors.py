"""Bad configuration fails before training, with a message naming the key and what is allowed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from esper.app import build
from esper.config import ConfigError
from tests.conftest import CONF, ONE_EARLY_SEED, run_cli

CASES = [
    (
        ["trainer.max_epochs=-3"],
        r"trainer\.max_epochs=-3: Input should be greater than or equal to 1",
    ),
    (
        ["blueprints.allowed=[residual_mlp,nope]"],
        r"blueprints\.allowed\[1\]: unknown blueprint 'nope'; allowed: residual_mlp, residual_block, "
        r"low_rank, conv_residual, squeeze_excite",
    ),
    (
        ["model.sites=[blocks.0,blocks.7]"],
        r"model\.sites: 'blocks\.7' matches no module of MLP; modules: blocks, blocks\.0, .*"
        r"types: .*Linear",
    ),
    (["model.sites=[]"], r"model\.sites=\[\]: List should have at least 1 item"),
    (["model.sites=[head*x]"], r"model\.sites: 'head\*x' matches no module"),
    (["model.sites=[type:Conv2d]"], r"model\.sites: 'type:Conv2d' matches no module"),
    (
        ["seeds.fossilized=melt"],
        r"seeds\.fossilized='melt': Input should be 'train', 'freeze' or 'merge'",
    ),
    (["trainer.device=tpu"], r"trainer\.device='tpu': Input should be 'cpu' or 'cuda'"),
    (["policy.metric=speed"], r"policy: policy\.metric='speed'; allowed: val_accuracy, val_loss"),
    (["dataset.arms=1"], r"dataset: dataset\.arms=1 must be at least 2"),
    (["+dataset.nosie=0.1"], r"dataset: .*unexpected keyword argument 'nosie'"),
    (
        ["+blueprints.hparams.low_rank.width=3"],
        r"blueprints\.hparams\.low_rank\.width .*allowed: rank",
    ),
    (["model=cnn"], r"model: model=cnn needs image input \[C, H, W\]; the dataset gives \[2\]"),
    (
        ["blueprints=image"],
        r"blueprints\.allowed=\['conv_residual', 'depthwise_separable', 'squeeze_excite', "
        r"'group_norm_gate', 'bottleneck'\]: none fits the vector "
        r"activations .* blueprints that do: residual_mlp, residual_block, low_rank",
    ),
    (
        ["logger.mode=loud"],
        r"logger\.mode='loud': Input should be 'offline', 'online' or 'disabled'",
    ),
    (["seed=-1"], r"seed=-1: Input should be greater than or equal to 0"),
    # Issue 8, group 5: each was a traceback, a cryptic line or silently accepted.
    (["trainer.optimizer.lr=-0.01"], r"trainer\.optimizer\.lr=-0\.01: must be a number >= 0"),
    (["trainer.optimizer.lr=nan"], r"trainer\.optimizer\.lr=nan: must be a number >= 0"),
    (["trainer.optimizer.lr=abc"], r"trainer\.optimizer\.lr='abc': must be a number >= 0"),
    # a traceback mid-training before (Adam's step overflowed float32)
    (["trainer.optimizer.lr=1e38"], r"trainer\.optimizer\.lr=1e\+38: must be at most 1e\+30"),
    (["seeds.lr=1e38"], r"seeds\.lr=1e\+38: must be at most 1e\+30"),
    (["seeds.lr=inf"], r"seeds\.lr=inf: must be at most 1e\+30"),
    # adversarial case A72: inf trained, its first step made every weight NaN, and the
    # checkpoint of that epoch held them (a resume would have continued it)
    (["trainer.optimizer.lr=inf"], r"trainer\.optimizer\.lr=inf: must be at most 1e\+30"),
    (
        ["+trainer.optimizer.weight_decay=inf"],
        r"trainer\.optimizer\.weight_decay=inf: must be a finite number",
    ),
    (  # helper-found: trained, then blamed the host's learning rate
        [
            "+trainer.scheduler={_target_:torch.optim.lr_scheduler.ExponentialLR,"
            "_partial_:true,gamma:inf}"
        ],
        r"trainer\.scheduler\.gamma=inf: must be a finite number",
    ),
    (
        ["+trainer.optimizer.betas=[2.0,0.9]"],
        r"trainer\.optimizer: Invalid beta parameter at index 0: 2\.0",
    ),
    (["seed=4294967296"], r"seed=4294967296: Input should be less than or equal to 4294967295"),
    (["seed=1099511627776"], r"seed=1099511627776: Input should be less than or equal to"),
    (["model.hidden=abc"], r"model: model\.hidden='abc' must be a non-empty list of sizes >= 1"),
    (["model.hidden=[8,x]"], r"model: model\.hidden=\[8, 'x'\] must be a non-empty list"),
    (["dataset.batch_size=abc"], r"dataset: dataset\.batch_size='abc' must be an integer >= 1"),
    (["dataset.n=abc"], r"dataset: dataset\.n='abc' must be an integer >= 20"),
    (["dataset.noise=abc"], r"dataset: dataset\.noise='abc' must be a number >= 0"),
    (
        ["model.sites=[blocks.0,blocks.1,blocks.0]"],
        r"^invalid configuration:\n  model.sites lists 'blocks.0' more than once; allowed: each "
        r"site once \(a site holds one slot\)$",
    ),
    (["dataset.noise=inf"], r"dataset: dataset\.noise=inf must be a number >= 0, finite$"),
    (["dataset.turns=-inf"], r"dataset: dataset\.turns=-inf must be a number >= 0, finite$"),
    (["policy.max_in_flight=abc"], r"policy: policy\.max_in_flight='abc' must be an integer >= 1"),
    (["policy.warmup_epochs=-5"], r"policy: policy\.warmup_epochs=-5 must be at least 0"),
    (
        ["policy.max_seeds=-1"],
        r"policy: policy\.max_seeds=-1 must be at least 0 \(or null: no limit\)",
    ),
    (["policy.min_delta=abc"], r"policy: policy\.min_delta='abc' must be a number"),
    (
        ["policy=random", "policy.max_seeds=-1"],
        r"policy: policy\.max_seeds=-1 must be at least 0 \(or null: no limit\)",
    ),
    (
        ["policy=random", "policy.training_epochs=0"],
        r"policy: policy\.training_epochs=0 must be at least 1",
    ),
    (
        ["policy=random", "policy.germinate_probability=abc"],
        r"policy: policy\.germinate_probability='abc' must be a number in \[0, 1\]",
    ),
    (
        ["+sed=3"],
        r"sed=3: not a configuration key; allowed at the top level: name, seed, tags, "
        r"optimized_metric, param_cost, run_dir, paths, dataset, model, .*trainer",
    ),
    (
        ["model=transformer_tiny"],
        r"model: model=transformer_tiny needs token ids \(an integer tensor \[T\]\); "
        r"dataset=spirals gives float32 \[2\]",
    ),
    (
        ["dataset=pydoc_text"],
        r"model: model=mlp needs real-valued input \(a float tensor\); "
        r"dataset=pydoc_text gives token ids int64 \[64\]",
    ),
    (  # helper-found: exited 0 `stopped`, and its resume found no checkpoint
        ["trainer.stop_after_epoch=2", "trainer.checkpoint=false"],
        r"trainer\.stop_after_epoch=2 with trainer\.checkpoint=false: a stopped run continues "
        r"from its checkpoint; allowed: trainer\.checkpoint=true, or trainer\.max_epochs=3",
    ),
]


@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0]) for c in CASES])
def test_config_error_names_key_and_allowed_values(make_config, overrides, message) -> None:
    cfg = make_config("logger=none", *overrides)
    with pytest.raises(ConfigError, match=message):
        build(cfg)


@pytest.mark.slow
def test_run_py_exits_2_before_training_with_the_message(tmp_path: Path) -> None:
    result = run_cli(
        "trainer.max_epochs=-3",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
    )
    assert result.returncode == 2
    said = result.stderr[result.stderr.index("esper: invalid configuration:") :].rstrip()
    assert said.endswith("trainer.max_epochs=-3: Input should be greater than or equal to 1")
    assert not (tmp_path / "run" / "events.jsonl").exists(), "nothing was built"
    assert (tmp_path / "run" / "run.log").read_text().rstrip().endswith(said), "run.log says why"


def test_a_bad_value_from_the_environment_names_its_variable(tmp_path: Path) -> None:
    """helper-found: `WANDB_MODE=bogus python run.py` said `logger.mode='bogus'`, a key the
    user never wrote; the default logger takes its mode from WANDB_MODE."""
    result = run_cli(
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k"), "WANDB_MODE": "bogus"},
    )
    assert result.returncode == 2
    assert result.stderr.rstrip().endswith(
        "logger.mode='bogus' (from the environment variable WANDB_MODE): Input should be "
        "'offline', 'online' or 'disabled'"
    ), result.stderr[-2000:]
    assert not (tmp_path / "run" / "events.jsonl").exists(), "nothing was built"


@pytest.mark.slow
def test_unknown_group_option_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_cli("policy=smart", cwd=tmp_path)
    assert result.returncode != 0
    assert "Could not find 'policy/smart'" in result.stderr
    for option in ("heuristic", "none", "random"):
        assert option in result.stderr


DIRECTION = "hydra.sweeper.direction"
SWEEP_OBJECTIVE_CASES = [
    (  # trained every trial, failed each (a job returns one objective), exited 0
        ["hparams_search=optuna_growth", "hydra.sweeper.direction=[maximize,minimize]"],
        "hydra.sweeper.direction=['maximize', 'minimize']: a job returns one objective "
        "(optimized_metric=val_accuracy_at_cost); give one direction, maximize or minimize",
    ),
    (  # Optuna's sweeper minimizes unless told: it reported its least accurate trial
        ["hydra/sweeper=esper_optuna", "optimized_metric=val_accuracy"],
        "hydra.sweeper.direction=minimize with optimized_metric=val_accuracy would search for "
        "the worst model (Optuna's sweeper minimizes unless told); pass "
        "hydra.sweeper.direction=maximize",
    ),
    (
        ["hydra/sweeper=esper_optuna", "optimized_metric=val_loss", f"{DIRECTION}=maximize"],
        "hydra.sweeper.direction=maximize with optimized_metric=val_loss would search for the "
        "worst model (Optuna's sweeper minimizes unless told); pass "
        "hydra.sweeper.direction=minimize",
    ),
]


@pytest.mark.parametrize(
    ("overrides", "said"),
    SWEEP_OBJECTIVE_CASES,
    ids=["two-objectives", "minimize-an-accuracy", "maximize-a-loss"],
)
def test_a_sweep_objective_it_cannot_serve_is_refused_before_any_trial(
    tmp_path: Path, overrides, said
) -> None:
    """helper-found, each: the sweep trained its trials for nothing or for the wrong end."""
    pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    result = run_cli("-m", *overrides, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == f"esper: {said}"
    assert not (tmp_path / "sweep" / "0").exists(), "no trial ran"


@pytest.mark.parametrize(
    ("storage", "said"),
    [
        ("nosuch://x", "NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:nosuch"),
        ("sqlite:////no/such/dir/a.db", "OperationalError: (sqlite3.OperationalError) unable"),
        ("postgresql://me:secret@localhost:1/db", ""),  # shown as postgresql://me:***@...
    ],
    ids=["no-such-dialect", "no-such-directory", "a-password"],
)
def test_an_optuna_storage_that_cannot_be_opened_is_one_line(tmp_path: Path, storage, said):
    """helper-found: SQLAlchemy's traceback, exit 1, and the sweep's directory (claimed for
    its time-stamped name) left empty."""
    pytest.importorskip("optuna", reason="pip install -e '.[optuna]'")
    sweeper = ("hydra/sweeper=esper_optuna", f"{DIRECTION}=maximize")
    result = run_cli("-m", *sweeper, f"hydra.sweeper.storage={storage}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    shown = storage.replace(":secret@", ":***@")
    assert line.startswith(f"esper: hydra.sweeper.storage='{shown}' cannot be opened: {said}")
    assert "secret" not in result.stderr
    assert line.endswith("allowed: a database URL Optuna opens (sqlite:///optuna.db), or null")
    claimed_under = tmp_path / "outputs" / "multiruns"
    assert claimed_under.is_dir() and not list(claimed_under.glob("*/*")), "none left behind"


def test_a_sweep_inside_a_dict_value_is_one_line_before_hydra_composes(tmp_path: Path) -> None:
    """helper-found: `hydra.sweeper.params={policy.patience:range(1,3)}` ended in Hydra's
    `Unexpected type annotation: Set[str] ... object_type=RangeSweep` (its grammar reads the
    call as a sweep, which no dict value can hold)."""
    result = run_cli(
        "-m",
        "hparams_search=optuna_growth",
        "hydra.sweeper.params={policy.patience:range(1,3)}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "esper: hydra.sweeper.params={policy.patience:range(1,3)}: a sweep, range(1,3), inside "
        "a dict or list is not one Hydra can apply; give it as an argument of its own: "
        "policy.patience=range(1,3)"
    ]
    assert not (tmp_path / "sweep").exists(), "nothing was composed or written"


def test_a_flag_between_overrides_is_read_as_meant(tmp_path: Path) -> None:
    """helper-found: `run.py seed=3 -m debug=fast` was argparse's `unrecognized arguments:
    debug=fast` (it takes one run of overrides); the flags now go first."""
    result = run_cli(
        "seed=3",
        "-m",
        "debug=fast",
        "logger=none",
        "policy=none",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "sweep" / "0" / "summary.json").read_text())["seed"] == 3


@pytest.mark.parametrize("flag", ["--experimental-rerun", "--experimental-r"])
def test_hydras_rerun_is_one_line(tmp_path: Path, flag) -> None:
    """helper-found: `--experimental-rerun .hydra/config.pickle` ran the job without Hydra's
    run directory: a traceback (`Unsupported interpolation type hydra`)."""
    pickle = tmp_path / "config.pickle"
    pickle.write_bytes(b"")
    result = run_cli(flag, str(pickle), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines() == [
        "esper: --experimental-rerun: not supported (Hydra reruns a job without its run "
        "directory); run the job's overrides again (its .hydra/overrides.yaml), or continue it "
        "with trainer.resume=<its run directory> (simic.resume=, a policy training's)"
    ]


@pytest.mark.parametrize(
    ("arguments", "ordered"),
    [
        (["a=1", "--config-name", "train_policy", "b=2"], ["--config-name", "train_policy"]),
        (["a=1", "--cfg=job", "b=2"], ["--cfg=job"]),
        (["a=1", "--config-na", "x", "b=2"], ["--config-na", "x"]),  # argparse's abbreviation
        (["a=1", "--info", "config", "b=2"], ["--info", "config"]),
    ],
)
def test_flags_go_first_with_their_values(arguments, ordered) -> None:
    from esper.command_line import flags_first

    overrides = [a for a in arguments if "=" in a and not a.startswith("-")]
    assert flags_first(arguments) == [*ordered, *overrides]


@pytest.mark.parametrize(
    ("arguments", "ordered"),
    [
        (["a=1", "-cn"], ["a=1", "-cn"]),  # a value missing: argparse says so, as before
        # helper-found: `--info` in front took the first override as its value (rc 2)
        (["a=1", "--info"], ["a=1", "--info"]),
        (["a=1", "-i", "b=2"], ["a=1", "b=2", "-i"]),
        (["a=1", "--", "b=2", "-m"], ["a=1", "--", "b=2", "-m"]),  # `--` on: as written
    ],
)
def test_what_cannot_go_first_goes_last(arguments, ordered) -> None:
    from esper.command_line import flags_first

    assert flags_first(arguments) == ordered


@pytest.mark.parametrize(
    ("arguments", "key"),
    [
        (["a={b:{c:interval(0,1)}}"], ": a.b.c=interval(0,1)"),
        (["--config-name", "train_policy", "a=[1,choice(2,3)]"], ": KEY=choice(2,3)"),
    ],
)
def test_a_nested_sweep_is_named_with_the_key_it_sweeps(arguments, key) -> None:
    from esper.command_line import nested_sweep

    said = nested_sweep(arguments)
    assert said is not None and key in said and said.startswith(arguments[-1])


@pytest.mark.parametrize(
    "arguments",
    [
        ["a=choice(1,2)", "b=range(1,3)", "c=1,2"],  # sweeps of their own: Hydra's to run
        ["hydra.sweeper.params={policy.patience:'range(1,3)'}"],  # a string, as in the preset
        ["--config-name", "x={a:range(1,2)}"],  # a flag's value, not an override
        ["-p", "x={a:range(1,2)}"],  # helper-found: the values of -p, --package, ...
        ["--config-na", "x={a:range(1,2)}"],  # ... and of a long flag abbreviated
        ["a=b=[", "{"],  # Hydra's grammar: Hydra says what is wrong
    ],
)
def test_what_is_not_a_nested_sweep_is_left_to_hydra(arguments) -> None:
    from esper.command_line import nested_sweep

    assert nested_sweep(arguments) is None


def test_a_local_config_without_its_package_line_is_named(tmp_path: Path) -> None:
    """Without `# @package _global_` Hydra puts conf/local/default.yaml under `local:`, where
    nothing reads it: the run would silently ignore the machine's settings."""
    import shutil

    from tests.integration.test_config_tree import compose_job

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "local" / "default.yaml").write_text("paths:\n  data_dir: /data/datasets\n")
    cfg = compose_job(f"run_dir={tmp_path / 'run'}", "logger=none", conf=conf)
    with pytest.raises(
        ConfigError,
        match=r"local: conf/local/default\.yaml lacks its first line `# @package _global_`, so "
        r"its keys landed under `local:` and were not applied; add that line",
    ):
        build(cfg)


@pytest.mark.parametrize("text", ["", "# nothing here yet\n"])
def test_an_empty_local_config_sets_nothing_and_is_let_be(tmp_path: Path, text: str) -> None:
    """helper-found: an empty conf/local/default.yaml was refused as lacking its package line."""
    from tests.integration.test_config_tree import compose_job

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    (conf / "local" / "default.yaml").write_text(text)
    cfg = compose_job(f"run_dir={tmp_path / 'run'}", "logger=none", conf=conf)
    experiment = build(cfg)
    experiment.discard()
    assert experiment.trainer.model.slots, "built as without the file"


def test_a_local_config_that_is_not_yaml_is_one_line(tmp_path: Path) -> None:
    """helper-found: `paths: [` was Hydra's 97-line traceback ending in yaml's ParserError."""
    from esper.command_line import broken_local_config

    conf = tmp_path / "conf"
    (conf / "local").mkdir(parents=True)
    assert broken_local_config(conf) is None, "the file is optional"
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths: [\n")
    assert broken_local_config(conf) == (
        "conf/local/default.yaml: not valid YAML (expected the node content, but found "
        "'<stream end>' at line 3, column 1); fix it or remove it (it is optional; see "
        "conf/local/example.yaml.txt)"
    )
    (conf / "local" / "default.yaml").write_text("paths:\n  data_dir: /a\n  data_dir: /b\n")
    assert broken_local_config(conf) == (  # helper-found: Hydra's loader refuses it, a traceback
        "conf/local/default.yaml: not valid YAML (found duplicate key data_dir at line 3, "
        "column 3); fix it or remove it (it is optional; see conf/local/example.yaml.txt)"
    )
    (conf / "local" / "default.yaml").write_text("- a\n- b\n")
    assert broken_local_config(conf) == (
        "conf/local/default.yaml: holds a list, not keys; allowed: `key: value` lines under its "
        "first line `# @package _global_` (see conf/local/example.yaml.txt)"
    )
    (conf / "local" / "default.yaml").write_text("# @package _global_\npaths: {data_dir: /d}\n")
    assert broken_local_config(conf) is None


ONE_LINE_CASES = [
    ("+sed=3", "sed=3: not a configuration key"),
    ("trainer.optimizer.lr=abc", "trainer.optimizer.lr='abc': must be a number >= 0"),
    ("seed=4294967296", "seed=4294967296: Input should be less than or equal to 4294967295"),
    ("model=transformer_tiny", "model: model=transformer_tiny needs token ids"),
    ("policy.max_in_flight=abc", "policy: policy.max_in_flight='abc' must be an integer >= 1"),
    (
        "blueprints.hparams.residual_mlp.hidden=-1",
        "blueprints.hparams.residual_mlp.hidden=-1: blueprint 'residual_mlp' at shape [8]",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("override", "message"), ONE_LINE_CASES, ids=[c[0] for c in ONE_LINE_CASES]
)
def test_run_py_says_it_in_one_line_without_a_traceback(tmp_path: Path, override, message) -> None:
    result = run_cli(
        "logger=none",
        override,
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"ESPER_KERNEL_STORE": str(tmp_path / "k")},
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert message in lines[-1] and len(lines) <= 2, "the line (under 'invalid configuration:')"
    assert not (tmp_path / "run" / "events.jsonl").exists(), "nothing was built"


USER_DATA = "dataset=spirals", "~dataset", "+dataset._target_=tests.user_parts.dataset"
USER_HOST = "model=mlp", "~model", "+model._target_=tests.user_parts.Host", "+model.sites=[body]"
DATA_AND_HOST_CASES = [
    (
        "dataset",
        "nan_features",
        "the train split's x holds 42 NaN or infinite values; allowed: finite",
    ),
    ("dataset", "float64", "the train split's x is float64; allowed: float32 features, or int64"),
    ("dataset", "int32_labels", "labels are int32; allowed: int64 class indices in [0, num_cla"),
    ("dataset", "label_in_test_only", "the test split's labels hold 2, outside [0, num_classes=2)"),
    ("dataset", "one_class", "num_classes=1; allowed: an integer >= 2"),
    ("dataset", "empty_val", "the val split is empty"),
    ("dataset", "wrong_input_shape", "input_shape=[3], but the train split's x is [240, 2]"),
    ("dataset", "fewer_labels", "dataset: x has 400 rows but y has 300"),
    (  # helper-found: it was blamed on the host ("whose labels [B, 1] need logits [B, 1, 2]")
        "dataset",
        "column_labels",
        "the train split's labels are [240, 1] for x [240, 2]; allowed: one class index a row "
        "([240]: y.squeeze(-1) for [N, 1])",
    ),
    (  # helper-found: x [N, 1] passed as per-position labels, and was blamed on the host
        "dataset",
        "one_feature_column_labels",
        "the train split's labels are [240, 1] for x [240, 1]; allowed: one class index a row",
    ),
    (
        "dataset",
        "ndarray_features",
        "the train split's x is a numpy.ndarray; allowed: a torch tensor (torch.from_numpy",
    ),
    ("dataset", "features_in_a_graph", "the train split's x requires grad (it is part of an"),
    (
        "dataset",
        "uint8_features",
        "the val split's x is uint8; allowed: float32 features, or int64",
    ),
    ("model", "wide", "Host gives [B, 5] for dataset=mine, whose labels [B] need logits [B, 2]"),
    ("model", "unsqueezed", "Host gives [B, 1, 2] for dataset=mine, whose labels [B] need logits"),
    ("model", "tuple", "model: Host returns a tuple; allowed: one tensor of logits"),
    ("model", "frozen", "model: no parameter of Host requires a gradient"),
    ("model", "integer_body", "body: its output is int64, not floating point"),
    ("model", "softmax", "model: Host returns probabilities (each row >= 0, summing to 1); "),
    (
        "model",
        "softmax_over_batch",
        "model: Host returns a softmax over dimension 0, the batch (each column >= 0, summing "
        "to 1 over the rows); allowed: logits",
    ),
    (
        "model",
        "scaled_softmax",
        "model: Host returns scaled probabilities (each row >= 0, summing to 10); allowed: logits",
    ),
]


@pytest.mark.parametrize(
    ("part", "kind", "said"), DATA_AND_HOST_CASES, ids=[c[1] for c in DATA_AND_HOST_CASES]
)
def test_a_users_own_data_and_host_are_checked_before_training(make_config, part, kind, said):
    """helper-found: each trained into a torch traceback at the first step or the final test
    (int32 or out-of-range labels, a tuple, a frozen host), or completed with wrong numbers (an
    accuracy of 200 for a [B, 1, C] output; every step skipped for NaN features)."""
    cfg = make_config("logger=none", "policy=none", *USER_DATA, *USER_HOST, f"+{part}.kind={kind}")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert said in str(refused.value)


def test_a_site_in_a_frozen_part_of_the_host_holds_a_seed_that_trains(make_config) -> None:
    """helper-found: a site whose activation carries no gradient (a frozen, pretrained body)
    failed every run after its first epoch, with policy=none too (`retain_grad` in the
    observation). Its seed trains, and so does the head after it."""
    cfg = make_config(
        *ONE_EARLY_SEED, *USER_DATA, *USER_HOST, "+model.kind=frozen_body", "trainer.max_epochs=6"
    )
    experiment = build(cfg)
    frozen = {k: v.clone() for k, v in experiment.trainer.model.host.body.state_dict().items()}
    record = experiment.run()
    assert record.status == "completed", record.error
    (slot,) = experiment.trainer.model.iter_slots()
    assert slot.seed is not None and slot.state.value in ("TRAINING", "BLENDING"), slot.state
    born = [a for a in record.adaptations if a.to_state.value == "TRAINING"]
    assert born and born[0].slot == "body"
    body = experiment.trainer.model.host.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in frozen.items()), "the body stays frozen"


def test_a_host_factory_that_returns_no_module_is_named(make_config) -> None:
    host = ("model=mlp", "~model", "+model._target_=tests.user_parts.not_a_module")
    with pytest.raises(ConfigError, match=r"model: tests.user_parts.not_a_module returned a funct"):
        build(make_config("logger=none", "policy=none", *host, "+model.sites=[x]"))


@pytest.mark.parametrize("host", ["ok", "majority_class_start", "tiny_relu_start"])
def test_a_users_own_data_and_host_that_are_right_build(make_config, host) -> None:
    """majority_class_start (helper-found): a head starting from logits [1, 0] on every row,
    non-negative and summing to 1, was refused as returning probabilities."""
    parts = ("logger=none", "policy=none", *USER_DATA, *USER_HOST, f"+model.kind={host}")
    build(make_config(*parts)).discard()


def test_a_scheduler_that_cannot_be_built_is_named(make_config) -> None:
    cfg = make_config(
        "logger=none",
        "trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true}",
    )
    with pytest.raises(ConfigError, match=r"^trainer\.scheduler: .*step_size"):
        build(cfg)


@pytest.mark.parametrize("stop", [2, 5])
def test_a_stop_at_the_last_epoch_needs_no_checkpoint(make_config, stop) -> None:
    """helper-found: refused, with `max_epochs=3` (its own value) offered as the way out; a
    stop at the last epoch or after never stops the run."""
    settings = ("trainer.max_epochs=3", f"trainer.stop_after_epoch={stop}")
    build(make_config("logger=none", *settings, "trainer.checkpoint=false")).discard()


SCHEDULER = "trainer.scheduler={_target_:torch.optim.lr_scheduler.%s,_partial_:true,%s}"


@pytest.mark.parametrize(
    ("scheduler", "said"),
    [
        # helper-found: each a traceback after the first epoch, or a run at a negative rate
        (("StepLR", "step_size:0"), r"^trainer\.scheduler: at epoch 0: ZeroDivisionError"),
        (("CosineAnnealingLR", "T_max:0"), r"^trainer\.scheduler: at epoch 0: ZeroDivisionError"),
        (
            ("ExponentialLR", "gamma:-1"),
            r"^trainer\.scheduler: the learning rate becomes -0\.01 after epoch 0; allowed: a "
            r"schedule whose rate stays a number from 0 to 1e\+30, as trainer\.optimizer\.lr must be",
        ),
        (
            ("OneCycleLR", "max_lr:0.1,total_steps:5"),
            r"^trainer\.scheduler: at epoch 5: Tried to step 6 times",
        ),
        (  # second pass: 1e36 at epoch 36 was a `diverged` run blamed on the optimizer's lr
            ("ExponentialLR", "gamma:100000"),
            r"^trainer\.scheduler: the learning rate becomes 1e\+33 after epoch 6; allowed: a "
            r"schedule whose rate stays a number from 0 to 1e\+30",
        ),
        (
            ("ReduceLROnPlateau", "mode:max"),
            r"^trainer\.scheduler\.mode='max': ReduceLROnPlateau is stepped with the val loss; "
            r"allowed: min",
        ),
    ],
)
def test_a_scheduler_that_fails_within_the_run_is_named_before_training(
    make_config, scheduler, said
) -> None:
    cfg = make_config("logger=none", "trainer.max_epochs=8", SCHEDULER % scheduler)
    with pytest.raises(ConfigError, match=said):
        build(cfg)


def test_an_optimizer_stepped_as_the_trainer_steps_it_and_list_arguments(make_config) -> None:
    """Second pass: LBFGS's step needs a closure the trainer does not pass (blamed on the
    scheduler, or a traceback without one); a list `min_lr` reached ReduceLROnPlateau as a
    ListConfig and failed its first comparison."""
    with pytest.raises(ConfigError, match=r"^trainer\.optimizer: LBFGS\.step\(\) missing 1"):
        build(make_config("logger=none", "trainer.optimizer._target_=torch.optim.LBFGS"))
    floors = SCHEDULER % ("ReduceLROnPlateau", "patience:0,min_lr:[0.001]")
    build(make_config("logger=none", "trainer.max_epochs=4", floors)).discard()


def test_reduce_lr_on_plateau_steps_on_the_val_loss_with_seeds_joining(make_config) -> None:
    """helper-found: ReduceLROnPlateau, a common scheduler, was a traceback (`step() missing
    1 required positional argument: 'metrics'`) after the first epoch. It now watches the val
    loss, and its floor per group follows the seeds' groups as they join."""
    plateau = SCHEDULER % ("ReduceLROnPlateau", "patience:0,factor:0.5")
    cfg = make_config(
        "logger=none",
        "trainer.max_epochs=12",
        "policy.warmup_epochs=2",
        "policy.patience=1",
        "policy.min_delta=1.0",
        plateau,
    )
    experiment = build(cfg)
    record = experiment.run()
    assert record.status == "completed"
    assert any(a.to_state.value == "FOSSILIZED" for a in record.adaptations), "a seed joined"
    optimizer = experiment.trainer.optimization.optimizer
    scheduler = experiment.trainer.optimization.scheduler
    assert len(scheduler.min_lrs) == len(optimizer.param_groups) > 1
    assert optimizer.param_groups[0]["lr"] <= 0.01 * 0.5, "reduced on a plateau of the val loss"


def test_a_key_a_preset_set_for_another_choice_is_named_with_the_preset(tmp_path) -> None:
    """helper-found: `experiment=eval_digits_cnn model=mlp` said `MLP.__init__() got an
    unexpected keyword argument 'channels'`, a key the command line never named. Composed as
    run.py composes (Hydra's runtime set), the line names the preset and how to drop the key."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    conf = tmp_path / "conf"  # this project's tree, and a user's preset built on one of ours
    shutil.copytree(CONF, conf)
    (conf / "experiment" / "mine.yaml").write_text(
        "# @package _global_\ndefaults:\n  - eval_digits_cnn\n  - override /policy: random\n"
    )

    def refusal(*overrides: str) -> str:
        with initialize_config_dir(str(conf), version_base="1.3"):
            cfg = compose(
                "config", [*overrides, f"run_dir={tmp_path / 'run'}"], return_hydra_config=True
            )
            HydraConfig.instance().set_config(cfg)
            try:
                with pytest.raises(ConfigError) as refused:
                    build(cfg)
            finally:
                HydraConfig.instance().cfg = None  # type: ignore[assignment]
        return str(refused.value)

    unexpected = "model: MLP.__init__() got an unexpected keyword argument 'channels'"
    assert refusal("experiment=eval_digits_cnn", "model=mlp") == (
        f"{unexpected} (model.channels is set by experiment=eval_digits_cnn, and model=mlp does "
        "not take it; drop it with ~model.channels; it also chose dataset=digits, "
        "blueprints=image, logger=none)"
    )
    # helper-found: a preset that includes ours was not named; nor the groups a preset chose
    assert refusal("experiment=mine", "model=mlp", "blueprints=vector") == (
        f"{unexpected} (model.channels is set by experiment=mine, through "
        "experiment/eval_digits_cnn, and model=mlp does not take it; drop it with "
        "~model.channels; it also chose dataset=digits, logger=none, policy=random)"
    )
    assert refusal("model=mlp", "+model.channels=[4]") == unexpected, "the command line's own"
    # helper-found: these named the preset, though the command line set the value
    preset_and_own = ("experiment=eval_digits_cnn", "model=mlp")
    assert refusal(*preset_and_own, "model.channels=[3]") == unexpected
    assert refusal(*preset_and_own, "~model.channels", "+model.channels=[3]") == unexpected


def test_an_s3_endpoint_without_its_scheme_says_what_form_is_allowed(make_config) -> None:
    """helper-found: `storage.endpoint_url=127.0.0.1:9000` was botocore's `Invalid endpoint:
    127.0.0.1:9000`, which said neither what was wrong nor what form to write."""
    cfg = make_config("logger=none", "storage=s3", "storage.endpoint_url=127.0.0.1:9000")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert str(refused.value) == (
        "storage: storage.endpoint_url='127.0.0.1:9000'; allowed: a URL with its scheme, e.g. "
        "http://127.0.0.1:9000 or https://s3.example.com, or null for AWS's own"
    )


def test_a_missing_dataset_root_from_the_environment_names_its_variable(
    make_config, monkeypatch, tmp_path: Path
) -> None:
    """helper-found: ESPER_CIFAR_ROOT (which the preset prefers to paths.data_dir) was said as
    `dataset.root=...`, with no word of the variable that set it."""
    monkeypatch.setenv("ESPER_CIFAR_ROOT", str(tmp_path / "nowhere"))
    cfg = make_config("logger=none", "dataset=cifar10", "model=mlp")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert str(refused.value).startswith(
        f"dataset: dataset.root='{tmp_path / 'nowhere'}' (from the environment variable "
        "ESPER_CIFAR_ROOT): CIFAR-10 not found"
    )


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "ESPER_S3_BUCKET",
            "bad bucket!",
            "storage: storage.bucket='bad bucket!' (from the environment variable "
            "ESPER_S3_BUCKET); allowed: 1 to 255 letters, digits, '.', '-' and '_' (AWS itself: "
            "3 to 63 lowercase), or an access point's ARN",
        ),
        (
            "ESPER_S3_ENDPOINT_URL",
            "127.0.0.1:9000",
            "storage: storage.endpoint_url='127.0.0.1:9000' (from the environment variable "
            "ESPER_S3_ENDPOINT_URL); allowed: a URL with its scheme, e.g. http://127.0.0.1:9000 "
            "or https://s3.example.com, or null for AWS's own",
        ),
    ],
)
def test_a_bad_store_setting_from_the_environment_names_its_variable(
    make_config, monkeypatch, variable, value, said
) -> None:
    """helper-found: `ESPER_S3_BUCKET='bad bucket!'` was botocore's three lines, two of them
    regexes, blamed on `storage.bucket`, a key the user never wrote."""
    monkeypatch.setenv(variable, value)
    cfg = make_config("logger=none", "storage=s3")
    with pytest.raises(ConfigError) as refused:
        build(cfg)
    assert str(refused.value) == said


GROUPS = [p.name for p in CONF.iterdir() if p.is_dir()]


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (["trainer.max_epoch=3"], "'max_epoch' is not a key of trainer; allowed: max_epochs,"),
        (["-m", "trainer.max_epoch=1,2"], "'max_epoch' is not a key of trainer; allowed:"),
        (["seeds.gates.min_trainng=2"], "'min_trainng' is not a key of seeds.gates; allowed:"),
        (["sed=3"], "'sed' is not a configuration key; allowed at the top level: name, seed,"),
        (["traner.max_epochs=3"], "'traner' is not a configuration key; allowed at the top"),
        (["-cn", "train_policy", "simic.ppo.lrr=3"], "'lrr' is not a key of simic.ppo; allowed"),
        (["--config-name=train_policy", "simic.bogus=1"], "'bogus' is not a key of simic;"),
        (
            ["-cn", "train_policy", "simic.tasks.0.wieght=3"],
            "'wieght' is not a key of simic.tasks.0;",
        ),
        (  # helper-found: passed the check, then Hydra's five lines (train_policy composes no
            # trainer): an episode's settings go in simic.overrides
            ["-cn", "train_policy", "trainer.max_epochs=3"],
            "'trainer' is not a configuration key; allowed at the top level: name, run_dir, "
            "paths, logger, simic; and the groups local; an episode's run settings go in "
            "simic.overrides=[...]",
        ),
    ],
)
def test_an_override_of_a_key_the_schema_has_not_is_one_line(arguments, said) -> None:
    """helper-found: Hydra's five lines ("Could not override 'trainer.max_epoch'. To append to
    your config use +trainer.max_epoch=3 ... object_type=dict") advised a `+` that the schema
    then refused all the same."""
    from esper.command_line import unknown_key

    line = unknown_key(arguments, GROUPS)
    assert line is not None and said in line, line
    assert line.startswith(arguments[-1] + ": ") and "\n" not in line


@pytest.mark.parametrize(
    "arguments",
    [
        ["experiment=spirals_growth", "trainer.max_epochs=3", "seed=1"],
        ["trainer.optimizer.lr=0.1", "dataset.n_samples=100", "logger.project=x"],
        ["+trainer.bogus=1", "~trainer.scheduler", "++tags=[a]", "model.sites=[body]"],
        ["hydra.run.dir=x", "hydra/launcher=joblib", "policy=gnn", "policy.patience=2"],
        ["--config-dir", "elsewhere", "mine.key=1"],
        ["-cn", "someone_elses", "their.key=1"],
        ["hydra.searchpath=[file://x]", "mygroup=option"],
        ["-cn", "train_policy", "simic.ppo.lr=0.1", "logger=none", "paths.data_dir=x"],
        ["-cn", "train_policy", "simic.tasks.1.weight=3"],  # spelt out in the yaml (helper-found)
        # helper-found: a list's index was taken for a key of its items
        ["-cn", "train_policy", "simic.tasks.0.weight=3.0", "simic.tasks.1.variants=[[a]]"],
        ["model.sites.0=body"],
    ],
)
def test_what_the_schema_has_or_leaves_open_is_left_to_hydra(arguments) -> None:
    from esper.command_line import unknown_key

    assert unknown_key(arguments, GROUPS) is None


def test_run_py_says_an_unknown_key_in_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("trainer.max_epoch=3", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "esper: trainer.max_epoch=3: 'max_epoch' is not a key of trainer; allowed: "
        "max_epochs, device, optimizer, scheduler, progress, quiet, checkpoint, resume, "
        "stop_after_epoch, max_nonfinite_steps, strategy, overwrite"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ["--cfg", "job", "-m", "seed=0,1"],
            "--cfg, --multirun: one at a time (Hydra runs one mode); --cfg job prints the "
            "configuration a run composes, -m sweeps",
        ),
        (
            ["--info", "-m"],
            "--info, --multirun: one at a time (Hydra runs one mode); --cfg job prints the "
            "configuration a run composes, -m sweeps",
        ),
        (
            ["hparams_search=heuristic_patience", "debug=fast"],
            "hparams_search=heuristic_patience: a search is a sweep; run it with -m (python "
            "run.py -m hparams_search=heuristic_patience ...), or --cfg job to see what one "
            "trial composes",
        ),
        (
            ["experiment=eval_spirals_narrow", "seed=1", "experiment=spirals_growth"],
            "experiment=eval_spirals_narrow experiment=spirals_growth: experiment given 2 "
            "times; presets do not combine (the last would win, the others dropped without "
            "a word): give one, or sweep them with -m experiment=a,b",
        ),
    ],
)
def test_a_combination_hydra_would_run_otherwise_is_one_line(arguments, said) -> None:
    """helper-found: `--cfg job -m` was Hydra's ValueError traceback; `hparams_search=X`
    without -m ran one ordinary run; a second `experiment=` dropped the first silently."""
    from esper.command_line import conflicting_choices, flags_first

    assert conflicting_choices(flags_first(arguments), GROUPS) == said


@pytest.mark.parametrize(
    "arguments",
    [
        ["-m", "hparams_search=heuristic_patience"],
        ["--cfg", "job", "hparams_search=heuristic_patience"],
        ["experiment=spirals_growth", "seed=0", "seed=1"],  # a key twice: Hydra's last wins
        ["-m", "experiment=eval_spirals_narrow,spirals_growth"],
        ["+experiment=spirals_growth"],
        ["policy=none", "~policy"],  # a test of a run without a policy
        ["hparams_search=heuristic_patience", "hydra.mode=MULTIRUN"],  # -m by another name
        ["~hparams_search"],
        ["hparams_search=null"],
        ["logger=none", "seed=1", "logger=wandb"],  # a base set, then the test's own: Hydra's rule
    ],
)
def test_what_runs_as_meant_is_left_to_hydra(arguments) -> None:
    from esper.command_line import conflicting_choices, flags_first

    assert conflicting_choices(flags_first(arguments), GROUPS) is None


def test_run_py_says_a_search_without_m_in_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli(
        "hparams_search=heuristic_patience", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("esper: hparams_search=heuristic_patience: a search is a sweep; run it with -m")
    )
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("epochs", "warned"), [(5, True), (6, False)])
def test_a_heuristic_that_cannot_germinate_within_the_run_is_said(
    make_config, caplog: pytest.LogCaptureFixture, epochs: int, warned: bool
) -> None:
    """helper-found: `hparams_search=heuristic_patience debug=fast` ran 18 jobs of identical
    results and no adaptation without a word: its first plateau came after the last epoch."""
    import logging

    cfg = make_config("logger=none", "policy=heuristic", f"trainer.max_epochs={epochs}")
    with caplog.at_level(logging.WARNING, logger="esper.app"):
        build(cfg).discard()
    said = (
        "the policy cannot germinate before epoch 5 (policy.warmup_epochs=5, policy.patience=3) "
        f"and the run ends after trainer.max_epochs={epochs}: no seed will germinate"
    )
    assert (said in caplog.text) is warned


def test_a_paths_key_nothing_reads_is_warned_of(make_config, caplog, tmp_path: Path) -> None:
    """helper-found: `paths: {data_dri: ...}` in conf/local was accepted and ignored. A
    warning, not a refusal: references hide where a search of the text does not look."""
    import logging

    with caplog.at_level(logging.WARNING, logger="esper.app"):
        build(make_config("logger=none", "+paths.data_dri=/data", run_dir=tmp_path / "a")).discard()
    assert (
        "paths.data_dri: not a key Esper reads (root_dir, data_dir, output_dir, "
        "kernel_store_dir), and nothing in the configuration seems to refer to it (as "
        "${paths.data_dri}); a misspelling?"
    ) in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="esper.app"):
        # keys of one's own that the configuration reads, as `paths` is open for
        mine = ("+paths.mine=tagged", "tags=[${paths.mine}]")
        build(make_config("logger=none", *mine, run_dir=tmp_path / "b")).discard()
        relative = ("+paths.scratch=/s", "paths.data_dir=${.scratch}/data")
        build(make_config("logger=none", *relative, run_dir=tmp_path / "c")).discard()
    assert "a misspelling?" not in caplog.text


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (
            ["dataset.batch_sise=3"],
            "dataset.batch_sise=3: 'batch_sise' is not a key of dataset (dataset=spirals); "
            "allowed: n, arms, turns, noise, data_seed, val_fraction, test_fraction, "
            "batch_size, split_seed, loader_seed",
        ),
        (
            ["-m", "policy.patince=1,2"],
            "policy.patince=1,2: 'patince' is not a key of policy (policy=heuristic); allowed: "
            "patience, min_delta, warmup_epochs, training_epochs, threshold, metric, "
            "max_in_flight, max_seeds",
        ),
        (
            ["policy=random", "policy.patience=2"],
            "policy.patience=2: 'patience' is not a key of policy (policy=random); allowed: "
            "seed, germinate_probability, fossilize_probability, training_epochs, "
            "max_in_flight, max_seeds",
        ),
        (
            ["--config-name", "config", "policy=gnn_growth", "policy.maxx=2"],
            "policy.maxx=2: 'maxx' is not a key of policy (policy=gnn_growth); allowed: "
            "checkpoint, seed, hidden, layers, greedy, max_in_flight, lifecycle, "
            "training_epochs, threshold, max_seeds, scatter_backend",
        ),
        (  # the preset chose the host
            ["experiment=eval_digits_cnn", "model.chanels=[4,8]"],
            "model.chanels=[4,8]: 'chanels' is not a key of model (model=cnn); allowed: "
            "channels, sites",
        ),
    ],
)
def test_a_key_no_option_of_its_group_has_is_one_line(arguments, said) -> None:
    """helper-found: `dataset.batch_sise=3` was Hydra's six lines advising a `+`."""
    from esper.command_line import flags_first, unknown_option_key

    assert unknown_option_key(flags_first(arguments), CONF) == said


@pytest.mark.parametrize(
    "arguments",
    [
        ["policy.patience=2", "dataset.batch_size=3"],
        ["+policy.foo=1"],  # added: the policy's own check names it
        ["policy.foo=1", "+policy.foo=2"],
        ["experiment=eval_digits_cnn", "model.channels=[4,8]"],
        ["-m", "policy=random,heuristic", "policy.patience=2"],  # a sweep of options: Hydra's
        ["-cn", "train_policy", "dataset.whatever=1"],
        ["model.hidden=[4]", "model.sites=[blocks.0]"],
        ["policy=gnn_growth", "policy.max_in_flight=2"],  # gnn's, through its defaults list
    ],
)
def test_a_key_some_option_has_is_left_to_hydra(arguments) -> None:
    from esper.command_line import flags_first, unknown_option_key

    assert unknown_option_key(flags_first(arguments), CONF) is None


def test_run_py_says_a_key_no_option_has_in_one_line_and_exits_2(tmp_path: Path) -> None:
    result = run_cli("policy.patince=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "esper: policy.patince=2: 'patince' is not a key of policy (policy=heuristic); allowed: "
        "patience, min_delta, warmup_epochs, training_epochs, threshold, metric, "
        "max_in_flight, max_seeds"
    ]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("environment", "refused"),
    [
        ({"RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "x"}, True),
        ({"RANK": "0", "WORLD_SIZE": "1"}, False),  # one replica (Kubeflow sets these): no ranks
        ({}, False),
    ],
)
def test_a_sweep_is_refused_under_torchrun_alone(environment, refused) -> None:
    from esper.command_line import flags_first, sweep_under_torchrun

    said = sweep_under_torchrun(flags_first(["-m", "seed=0,1"]), environment)
    assert (said is not None) is refused
    assert sweep_under_torchrun(flags_first(["seed=0"]), environment) is None
