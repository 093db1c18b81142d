"""One source of every default (issue 19): a profile builds the ``TrainConfig``, the ``train`` options are its fields.

* :meth:`Profile.train_settings <hybrid_utils.profiles.Profile.train_settings>` is the one mapping from a profile
  to a run; :meth:`TrainConfig.from_profile <hybrid_utils.config.TrainConfig.from_profile>` builds every profile's
  runs from it and ``TrainConfig``'s own defaults are the cpu profile's through it;
* the command line's options are ``TrainConfig``'s fields with the fields' defaults;
* the seed of a run has one default, :data:`hybrid_utils.profiles.DEFAULT_SEED`;
* no module that builds runs types a number for a run's setting (read from the source with :mod:`ast`).

The source check is a function of source text, and ``test_the_copy_check_sees_*`` feed it made-up offenders.
"""

from __future__ import annotations

import argparse
import ast
import os
from dataclasses import fields
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid_utils.config import METHOD_NAMES, PROTOCOLS, TrainConfig  # noqa: E402
from hybrid_utils.experiments import train_config  # noqa: E402
from hybrid_utils.profiles import (DEFAULT_PROFILE, DEFAULT_SEED, PAPER_FIELDS, PAPER_PROFILE, PROFILES,  # noqa: E402
                                   RUN_FIELDS, TUNED, Profile)
from hybrid_utils.study.cli_train import add_train_arguments, config_from_args  # noqa: E402

PACKAGE = Path(__file__).resolve().parent.parent / "hybrid_utils"


def parse(*argv: str) -> TrainConfig:
    return config_from_args(add_train_arguments(argparse.ArgumentParser()).parse_args(list(argv)))


# --------------------------------------------------------------------------- a profile builds the TrainConfig

@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_run_has_the_profile_settings(name):
    """Every field a profile sets reaches its runs unchanged (a None of the profile stays None, not the cpu's)."""
    profile = PROFILES[name]
    for method in METHOD_NAMES:
        for train_on in PROTOCOLS:
            settings = profile.train_settings(train_on, method)
            assert set(settings) == set(RUN_FIELDS)
            for config in (TrainConfig.from_profile(profile, method, train_on),
                           train_config(profile, method, train_on)):
                got = {key: getattr(config, key) for key in RUN_FIELDS}
                assert got == settings, (name, method, train_on)
                assert config.seed == profile.seeds[0]


def test_the_profile_settings_are_the_profile_fields():
    cpu = PROFILES["cpu-pretrained"]
    settings = cpu.train_settings("xquad-r", "adversarial")
    assert settings["model"] == cpu.models[0] and settings["lambda_max"] == cpu.lambda_max
    assert {key: settings[key] for key in TUNED} == cpu.training_defaults("xquad-r", "adversarial")
    assert settings["steps"] == 40 and settings["scale"] == 20.0  # the per-method choice, not the profile's field


def test_train_config_defaults_are_the_default_profile_through_the_same_mapping():
    """``TrainConfig()`` holds no numbers of its own: the fields a profile sets default to None, filled from the cpu
    profile's :meth:`train_settings` when the config is made."""
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    assert {key: defaults[key] for key in RUN_FIELDS} == dict.fromkeys(RUN_FIELDS)
    default = PROFILES[DEFAULT_PROFILE]
    for method in METHOD_NAMES:
        for train_on in PROTOCOLS:
            config = TrainConfig(method=method, train_on=train_on)
            assert {key: getattr(config, key) for key in RUN_FIELDS} == default.train_settings(train_on, method)
            assert config.to_dict() == TrainConfig.from_profile(default, method, train_on,
                                                                output_dir=config.output_dir).to_dict()


def test_a_changed_default_profile_changes_train_config(monkeypatch):
    """The defaults are read from the profile when a config is made, not copied at import time."""
    monkeypatch.setitem(PROFILES, DEFAULT_PROFILE, Profile(name=DEFAULT_PROFILE, steps=7, batch_size=4, alpha=0.25))
    config = TrainConfig()
    assert (config.steps, config.batch_size, config.alpha) == (7, 4, 0.25)
    assert parse().steps == 7


def test_other_model_or_trainable_starts_from_its_own_weights():
    """``reinit_top_layers`` left unset: the profile's only for the profile's own model and ``trainable``."""
    assert TrainConfig().reinit_top_layers == PROFILES[DEFAULT_PROFILE].reinit_top_layers == 2
    assert TrainConfig(model="xlm-roberta-base").reinit_top_layers == 0
    assert TrainConfig(trainable="full").reinit_top_layers == 0
    assert TrainConfig(num_trainable_layers=1).reinit_top_layers == 1
    assert parse("--paper").reinit_top_layers == 0 and parse("--model", "xlm-roberta-base").reinit_top_layers == 0


# --------------------------------------------------------------------------- the command line's options are the fields

def test_every_field_is_an_option_with_the_field_default():
    parser = add_train_arguments(argparse.ArgumentParser())
    actions = {action.dest: action for action in parser._actions}
    for field in fields(TrainConfig):
        assert field.name in actions, f"no option for TrainConfig.{field.name}"
        assert parser.get_default(field.name) == field.default, field.name
    assert parse().to_dict() == TrainConfig().to_dict()
    for train_on in PROTOCOLS:
        assert parse("--train-on", train_on).to_dict() == TrainConfig(train_on=train_on).to_dict()


@pytest.mark.parametrize("argv, field, value", [
    (["--steps", "7"], "steps", 7), (["--lr", "1e-5"], "learning_rate", 1e-5), (["--seed", "3"], "seed", 3),
    (["--model", "xlm-roberta-base"], "model", "xlm-roberta-base"), (["--output", "x"], "output_dir", "x"),
    (["--languages", "de", "en"], "languages", ("de", "en")), (["--weight-decay", "0.1"], "weight_decay", 0.1),
    (["--exclude-overlap-with", "none"], "exclude_overlap_with", None), (["--no-resume"], "resume", False),
    (["--bf16", "off"], "bf16", False), (["--no-prefix-cache"], "prefix_cache", False),
    (["--no-progress"], "show_progress", False), (["--keep-checkpoints"], "keep_checkpoints", True),
])
def test_an_option_sets_its_field(argv, field, value):
    assert getattr(parse(*argv), field) == value


def test_paper_takes_the_paper_profile_settings_and_explicit_options_win():
    paper = PROFILES[PAPER_PROFILE].train_settings("mlqa-r", "hybrid")
    config = parse("--paper")
    assert {key: getattr(config, key) for key in PAPER_FIELDS} == {key: paper[key] for key in PAPER_FIELDS}
    assert (config.learning_rate, config.batch_size, config.trainable) == (3e-5, 100, "full")
    explicit = parse("--paper", "--batch-size", "32", "--lr", "1e-5")
    assert (explicit.batch_size, explicit.learning_rate) == (32, 1e-5)
    assert config.steps == TrainConfig().steps  # --paper changes the paper's fields only


# --------------------------------------------------------------------------- one default seed

def test_a_run_without_a_seed_gets_the_default_seed():
    assert TrainConfig().seed == DEFAULT_SEED == parse().seed
    assert Profile(name="any").seeds[0] == DEFAULT_SEED
    for profile in PROFILES.values():
        assert train_config(profile, "hybrid", "mlqa-r").seed == profile.seeds[0] == DEFAULT_SEED


# --------------------------------------------------------------------------- no module copies a default

#: the settings of a training run: the fields a profile sets, and the seed
RUN_NAMES = set(RUN_FIELDS) | {"seed"}
#: the calls that make a run or its settings: a number in their keywords is a run's setting (elsewhere, ``alpha`` may
#: be a figure's transparency and ``batch_size`` an encoding's)
RUN_CALLS = {"TrainConfig", "from_profile", "from_dict", "train_config", "ensure_run", "train", "build_training_run",
             "replace", "get_profile", "Profile", "dict", "tune", "run_positive_control", "alpha_sweep"}
#: numbers for run settings that are not defaults, each with its reason: ``(module, function or target, name)``
ALLOWED = {
    # the settings the positive control searched: the committed results/positive_control.csv is keyed by their
    # names, so they are records that must not follow the profiles
    ("hybrid_utils.study.positive_control", "SETTINGS", "*"),
    # the dry run's measurement: a few real steps of a run, not a run's length
    ("hybrid_utils.study.plan", "measure_seconds", "steps"),
    # counts a sampler's batches, which are the same for every seed
    ("hybrid_utils.study.language_weighting", "weights_are_equivalent", "seed"),
    # the chapters' own draws (a figure of batch compositions), not a training run
    ("hybrid_utils.tutorial", "alpha_sweep", "seed"),
    # the batch size of encoding, not of training (the evaluate and benchmark commands)
    ("hybrid_utils.study.cli", "add_evaluate_parser", "batch_size"),
    ("hybrid_utils.study.cli", "add_benchmark_parser", "batch_size"),
    # the held-out split's seed and the positive control's seeds: named constants of their own roles
    ("hybrid_utils.config", "HOLDOUT_SEED", "*"),
    ("hybrid_utils.study.positive_control", "SEEDS", "*"),
}


def _is_number(node) -> bool:
    if isinstance(node, (ast.Tuple, ast.List)):
        return bool(node.elts) and all(_is_number(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _is_number(node.operand)
    return isinstance(node, ast.Constant) and type(node.value) in (int, float)


def _run_name(name: str) -> bool:
    """A run setting's name, or a module constant named after one (``STEPS``, ``DEFAULT_LEARNING_RATE``)."""
    return name in RUN_NAMES or (name.isupper() and any(key.upper() in name for key in RUN_NAMES))


def typed_run_settings(source: str) -> list[tuple[str, str, int]]:
    """``(function or assignment target, setting, line)`` for every number given to a run setting in ``source``.

    Looks at parameter defaults, the keywords of calls that make runs (:data:`RUN_CALLS`: ``TrainConfig(steps=240)``),
    ``add_argument(..., default=)`` of a ``--<setting>`` option, dict literals with a setting as key, and assignments to a setting or to a constant
    named after one; ``None`` and names (constants imported from :mod:`hybrid_utils.profiles`) are fine.
    """
    found = []

    def visit(node, where: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = args.posonlyargs + args.args
            pairs = list(zip(positional[len(positional) - len(args.defaults):], args.defaults))
            pairs += [(a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None]
            found.extend((node.name, a.arg, d.lineno) for a, d in pairs if a.arg in RUN_NAMES and _is_number(d))
            where = node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names and any(_run_name(n) for n in names) and _is_number(node.value):
                found.append((names[0], names[0], node.lineno))
            where = names[0] if names and where == "<module>" else where
        elif isinstance(node, ast.Call):
            callee = getattr(node.func, "id", getattr(node.func, "attr", None))
            found.extend((where, k.arg, k.lineno) for k in node.keywords
                         if callee in RUN_CALLS and k.arg in RUN_NAMES and _is_number(k.value))
            option = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            if isinstance(option, str) and option.startswith("--") and option[2:].replace("-", "_") in RUN_NAMES:
                found.extend((where, option[2:].replace("-", "_"), k.lineno) for k in node.keywords
                             if k.arg == "default" and _is_number(k.value))
        elif isinstance(node, ast.Dict):
            found.extend((where, key.value, value.lineno) for key, value in zip(node.keys, node.values)
                         if isinstance(key, ast.Constant) and key.value in RUN_NAMES and _is_number(value))
        for child in ast.iter_child_nodes(node):
            visit(child, where)

    visit(ast.parse(source), "<module>")
    return found


def run_modules() -> dict[str, Path]:
    """The modules that build or start training runs (and the command line), profiles.py aside."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if path.name != "profiles.py" and ("TrainConfig" in source or "ensure_run(" in source
                                           or "train_config(" in source or "add_argument(" in source):
            modules[name] = path
    return modules


def test_the_copy_check_sees_a_typed_default():
    source = ("STEPS = 240\n"
              "def tune(steps=200, learning_rate=None, batch=8):\n"
              "    return TrainConfig(learning_rate=3e-4, seed=42, **{'scale': 50.0})\n"
              "def cli(parser):\n"
              "    parser.add_argument('--lambda-max', type=float, default=0.3)\n"
              "    parser.add_argument('--top', default=5)\n"
              "    plt.plot([1], alpha=0.3)\n")
    assert sorted(typed_run_settings(source)) == sorted([
        ("STEPS", "STEPS", 1), ("tune", "steps", 2), ("tune", "learning_rate", 3), ("tune", "seed", 3),
        ("tune", "scale", 3), ("cli", "lambda_max", 5)])
    assert typed_run_settings("from .profiles import TUNING_STEPS\ndef tune(steps=TUNING_STEPS, seed=None):\n"
                              "    return TrainConfig(steps=steps)\n") == []


def test_the_copy_check_looks_at_the_modules_that_build_runs():
    modules = run_modules()
    for name in ("hybrid_utils.config", "hybrid_utils.experiments", "hybrid_utils.training",
                 "hybrid_utils.study.cli_train", "hybrid_utils.study.cli", "hybrid_utils.study.tuning",
                 "hybrid_utils.study.reproduce", "hybrid_utils.study.positive_control"):
        assert name in modules
    assert "hybrid_utils.profiles" not in modules


def test_no_module_outside_profiles_types_a_run_setting():
    offenders = [(name, where, setting, line) for name, path in run_modules().items()
                 for where, setting, line in typed_run_settings(path.read_text(encoding="utf-8"))
                 if (name, where, setting) not in ALLOWED and (name, where, "*") not in ALLOWED]
    assert not offenders, ("numbers for a run's settings outside hybrid_utils/profiles.py (a copy of a default: "
                           f"take it from the profile or TrainConfig): {offenders}")
