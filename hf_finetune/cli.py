"""`hf-finetune`: train, check and inspect recipes from the command line.

    hf-finetune train RECIPE [dotted.key=value ...] [--resume]
    hf-finetune check RECIPE [dotted.key=value ...]
    hf-finetune fields
    hf-finetune predict OUTPUT_DIR [INPUTS...] [--file FILE] [--text TEXT] [--top-k K] [--output FILE]
    hf-finetune evaluate OUTPUT_DIR [--data FILE_OR_FOLDER_OR_DATASET] [--split NAME] [--output-dir DIR]
    hf-finetune push OUTPUT_DIR [--repo-id OWNER/NAME] [--no-private] [--revision BRANCH]
    hf-finetune rank RECIPE [dotted.key=value ...] [--candidates A B ...] [--by logme|knn|probe|hscore|finetune]
    hf-finetune tune RECIPE [dotted.key=value ...] [--trials N] [--timeout 30m]
    hf-finetune export OUTPUT_DIR --format onnx [--opset N] [--output-dir DIR] [--external-data]
    hf-finetune ensemble OUT_DIR RUN_DIR RUN_DIR ... [--method logits|soup|greedy-soup] [--weights uniform|validation]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from hf_finetune.errors import UserError, redact, refuse_tokens

logger = logging.getLogger("hf_finetune")

EXIT_USER_ERROR = 2


def _add_recipe_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="path to a YAML recipe")
    parser.add_argument(
        "overrides", nargs="*", default=[], metavar="dotted.key=value",
        help="override recipe keys, values parsed as YAML (e.g. training.learning_rate=3e-5)",
    )


class _CommandParser(argparse.ArgumentParser):
    """A command's parser. predict's INPUTS may be empty (--file/--text), and argparse then takes none of
    those given after a flag (`predict RUN --onnx "a text"`) and leaves them over: they are inputs, in order."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extra = super().parse_known_args(args, namespace)
        if extra and hasattr(namespace, "inputs"):
            namespace.inputs = [*namespace.inputs, *(item for item in extra if item == "-" or not item.startswith("-"))]
            extra = [item for item in extra if item != "-" and item.startswith("-")]
        return namespace, extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-finetune", description="Fine-tune text and vision backbones from one YAML recipe."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser)

    train = sub.add_parser("train", help="validate a recipe, then fine-tune and write the output folder")
    _add_recipe_args(train)
    train.add_argument("--resume", action="store_true",
                       help="continue from the latest complete checkpoint in <output.dir>/checkpoints")

    check = sub.add_parser("check", help="validate a recipe and its data, model and metrics, without training")
    _add_recipe_args(check)
    check.add_argument("--schema-only", action="store_true",
                       help="validate the recipe file only: no data, model or metric look-ups")

    fields = sub.add_parser("fields", help="list every recipe key with its type, default and meaning")
    fields.add_argument("--markdown", action="store_true", help="as the Markdown table in README.md")

    predict = sub.add_parser("predict", help="label texts or images with a finished run's model")
    predict.add_argument("output_dir", metavar="OUTPUT_DIR", help="a finished run's output folder")
    predict.add_argument("inputs", nargs="*", metavar="INPUTS",
                         help="texts, or .txt/.csv/.tsv/.jsonl/.json/.parquet files (text models); image files "
                              "or folders (image models); '-' reads lines from standard input. An input is a "
                              "file when one of that name exists or it looks like a path (a known extension, or "
                              "a separator without spaces); --file and --text settle it")
    predict.add_argument("--file", dest="explicit", action=_Tagged, metavar="FILE",
                         help="an input that is a file (or, for image models, a folder); repeatable; read after INPUTS")
    predict.add_argument("--text", dest="explicit", action=_Tagged, metavar="TEXT",
                         help="an input that is a text, whatever files exist; repeatable; read after INPUTS")
    predict.add_argument("--top-k", type=_positive, default=1, help="labels shown per input, best first (default 1)")
    predict.add_argument("--batch-size", type=_positive, default=32, help="inputs per forward pass (default 32)")
    predict.add_argument("--column", help="column of csv/jsonl/parquet inputs (default: the run's text or image column)")
    predict.add_argument("--output", metavar="FILE", help="also write the predictions to FILE (.jsonl or .csv; "
                         "a segmentation run: a folder of mask PNGs)")
    predict.add_argument("--overlay", action="store_true",
                         help="segmentation: with --output, also write each mask blended on its image")
    predict.add_argument("--onnx", action="store_true",
                         help="run the exported model (OUTPUT_DIR/onnx/model.onnx, from hf-finetune export) in ONNX "
                              "Runtime instead of PyTorch")
    predict.add_argument("--onnx-model", metavar="MODEL.onnx", help="with --onnx: an exported model elsewhere")

    evaluate = sub.add_parser("evaluate", help="score a finished run's model on another split or new labelled data")
    evaluate.add_argument("output_dir", metavar="OUTPUT_DIR", help="a finished run's output folder")
    evaluate.add_argument("--data", help="a csv/tsv/json/jsonl/parquet file, an image folder, a saved dataset folder "
                                         "or a Hub dataset id (default: the run's own data)")
    evaluate.add_argument("--split", help="split to score (default: the run's test split; for --data, its only "
                                          "split, else 'test')")
    evaluate.add_argument("--column", help="input column of the data (default: the run's text or image column)")
    evaluate.add_argument("--label-column", help="label column of the data (default: the run's)")
    evaluate.add_argument("--name", help="names the files: evaluation-NAME.json (default: from the data and split)")
    evaluate.add_argument("--output-dir", dest="output_dir_out", metavar="DIR",
                          help="where to write (default: OUTPUT_DIR)")
    evaluate.add_argument("--batch-size", type=_positive, default=32, help="rows per forward pass (default 32)")

    push = sub.add_parser("push", help="upload a finished run's output folder to the Hugging Face Hub")
    push.add_argument("output_dir", metavar="OUTPUT_DIR", help="a finished run's output folder")
    push.add_argument("--repo-id", help="owner/name, or name under your account (default: the run's hub.repo_id)")
    push.add_argument("--private", action=argparse.BooleanOptionalAction, default=None,
                      help="create the repository private, or public with --no-private (default: the run's "
                           "hub.private, true unless set); an existing repository keeps its visibility")
    push.add_argument("--revision", metavar="BRANCH", help="branch to push to (default: the run's hub.revision, else main)")

    rank = sub.add_parser("rank", help="score candidate backbones on frozen features (LogME, k-NN, linear probe) "
                                       "before fine-tuning")
    _add_recipe_args(rank)
    rank.add_argument("--candidates", nargs="+", metavar="MODEL",
                      help="backbones to rank: model.name values, or YAML mappings such as "
                           "'{name: NAME, pretrained: false}' (default: the recipe's rank.candidates)")
    rank.add_argument("--by", choices=["logme", "knn", "probe", "hscore", "finetune"], help="score that orders the table "
                                                                                 "(default: rank.by, logme)")
    rank.add_argument("--hscore", action="store_true", help="also compute the H-score")
    rank.add_argument("--output-dir", dest="rank_output_dir", metavar="DIR",
                      help="where rank.json and rank.png go (default: rank.output_dir, else <output.dir>-rank)")
    tune = sub.add_parser("tune", help="hyperparameter search on Optuna: trials of the recipe, the best model kept")
    _add_recipe_args(tune)
    tune.add_argument("--trials", type=_positive, help="trials in the study in all (default: search.trials, 20); "
                                                       "running the command again continues the study up to it")
    tune.add_argument("--timeout", metavar="DURATION",
                      help="wall time of this command: 90s, 30m, 2h (default: search.timeout, none); no trial "
                           "starts after it")
    export = sub.add_parser("export", help="export a finished run's model to ONNX, checked with ONNX Runtime")
    export.add_argument("output_dir", metavar="OUTPUT_DIR", help="a finished run's output folder")
    export.add_argument("--format", choices=["onnx"], required=True, help="export format (onnx)")
    export.add_argument("--opset", type=_positive, help="ONNX opset version (default: the exporter's)")
    export.add_argument("--output-dir", dest="output_dir_out", metavar="DIR",
                        help="where to write model.onnx and labels.json (default: OUTPUT_DIR/onnx)")
    export.add_argument("--external-data", action=argparse.BooleanOptionalAction, default=None,
                        help="weights in model.onnx.data beside the graph (default: when they exceed 2 GB)")
    ensemble = sub.add_parser("ensemble", help="combine finished runs: a logit ensemble, or a (greedy) model soup")
    ensemble.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (new or empty)")
    ensemble.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished runs with the same labels")
    ensemble.add_argument("--method", choices=["logits", "soup", "greedy-soup"], default="logits",
                          help="logits: average the runs' probabilities (any backbones); soup: average the weights "
                               "of runs of one backbone; greedy-soup: add runs best-validation-first while "
                               "validation improves (default logits)")
    ensemble.add_argument("--weights", choices=["uniform", "validation"], default="uniform",
                          help="logits: equal weights, or proportional to each run's validation score (default uniform)")
    ensemble.add_argument("--metric", help="validation metric that ranks and weighs the runs (default: the first "
                                           "run's selection metric, training.metric_for_best_model)")
    ensemble.add_argument("--data", help="labelled data to score the runs on instead of the first run's splits, as "
                                         "evaluate --data takes it: its splits named validation and test (a single "
                                         "file of another name is validation); needed when the runs carved their "
                                         "validation from train differently")
    ensemble.add_argument("--overwrite", action="store_true", help="replace an earlier result in OUT_DIR")
    ensemble.add_argument("--batch-size", type=_positive, default=32, help="rows per forward pass (default 32)")
    return parser


class _Tagged(argparse.Action):
    """Collects repeatable options into one list of (option, value), in command-line order."""

    def __call__(self, parser, namespace, values, option_string=None):
        tagged = list(getattr(namespace, self.dest, None) or [])
        tagged.append((option_string.lstrip("-"), values))
        setattr(namespace, self.dest, tagged)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from hf_finetune import run_recipe
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.recipe import load_recipe

    run_recipe(load_recipe(args.recipe, args.overrides, checks=RECIPE_CHECKS), resume=args.resume)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides, checks=RECIPE_CHECKS)
    from hf_finetune.preflight import check_output_folder
    from hf_finetune.training.arguments import check_training_arguments

    check_training_arguments(recipe)  # the combinations TrainingArguments itself refuses
    check_output_folder(recipe)  # what train would refuse about the folder as it is now
    if args.schema_only:
        sys.stdout.write(f"# {args.recipe}: valid recipe (data, model and metrics not checked). Resolved recipe:\n")
    else:
        from hf_finetune.preflight import format_report, preflight

        report = preflight(recipe)
        sys.stdout.write(f"# {args.recipe}: valid. Pre-flight:\n{format_report(report)}# Resolved recipe:\n")
    sys.stdout.write(recipe.to_yaml())
    return 0


def cmd_fields(args: argparse.Namespace) -> int:
    from hf_finetune.recipe import field_reference, markdown_reference

    if args.markdown:
        sys.stdout.write(markdown_reference())
        return 0
    rows = field_reference()
    width = max(len(r[0]) for r in rows)
    for key, type_name, default, description in rows:
        sys.stdout.write(f"{key:<{width}}  {type_name}  (default: {default})\n{'':<{width}}  {description}\n")
    return 0


def _quiet_loading() -> None:
    import datasets
    import transformers

    # Progress bars for loading weights and reading a few rows would drown the answers.
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def cmd_predict(args: argparse.Namespace) -> int:
    from hf_finetune.finished.predict import load_predictor, read_inputs, records_for

    _quiet_loading()
    if args.onnx or args.onnx_model:
        from hf_finetune.finished.export import load_onnx_predictor

        predictor = load_onnx_predictor(args.output_dir, args.onnx_model)
    else:
        predictor = load_predictor(args.output_dir)
    items = read_inputs(predictor, args.inputs, column=args.column, explicit=args.explicit)
    records = records_for(predictor)  # top-k classes, or entities with their offsets: the task's kind
    predictions = records.predict(predictor, items, batch_size=args.batch_size, top_k=args.top_k)
    if args.overlay and (not args.output or records.write.__name__ != "write_masks"):
        raise UserError("--overlay: draws predicted masks on their images; it needs a segmentation run and --output")
    if args.output:  # first, so the file is complete even when the reader of stdout stops early
        records.write(args.output, items, predictions, **({"overlay": True} if args.overlay else {}))
        logger.info("Wrote %d predictions to %s", len(items), args.output)
    for item, top in zip(items, predictions, strict=True):
        sys.stdout.write(records.format_line(item, top) + "\n")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from hf_finetune.finished.evaluate import evaluate_output, format_evaluation

    _quiet_loading()
    evaluation = evaluate_output(args.output_dir, args.data, args.split, column=args.column,
                                 label_column=args.label_column, name=args.name, output_dir=args.output_dir_out,
                                 batch_size=args.batch_size)
    sys.stdout.write(format_evaluation(evaluation))
    logger.info("Wrote %s", ", ".join(str(f) for f in evaluation.files))
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from hf_finetune.finished.push import NOTHING_TO_PUSH, push_output
    from hf_finetune.outputs import read_finished_run

    settings = read_finished_run(args.output_dir, NOTHING_TO_PUSH).recipe.get("hub") or {}
    repo_id = args.repo_id or settings.get("repo_id")
    if not repo_id:
        raise UserError("--repo-id: say which Hub repository to push to (owner/name); the run's recipe names none")
    private = args.private if args.private is not None else settings.get("private", True)
    revision = args.revision or settings.get("revision")
    url = push_output(args.output_dir, repo_id, private=private, revision=revision)
    sys.stdout.write(f"{url}\n")
    return 0


def cmd_rank(args: argparse.Namespace) -> int:
    import yaml

    from hf_finetune.capability_checks import RECIPE_CHECKS
    from hf_finetune.rank import rank
    from hf_finetune.rank.report import format_table
    from hf_finetune.recipe import load_recipe

    overrides = list(args.overrides)
    overrides += [f"rank.by={args.by}"] if args.by else []
    overrides += ["rank.hscore=true"] if args.hscore else []
    recipe = load_recipe(args.recipe, overrides, checks=RECIPE_CHECKS)
    candidates = None
    if args.candidates:
        candidates = [yaml.safe_load(c) if c.lstrip().startswith("{") else c for c in args.candidates]
    _quiet_loading()
    result = rank(recipe, candidates, output_dir=args.rank_output_dir)
    sys.stdout.write(format_table(result.record))
    logger.info("Wrote %s and %s", result.output_dir / "rank.json", result.output_dir / "rank.png")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from hf_finetune.search.tune import NoTrialCompleted, tune

    result = tune(args.recipe, args.overrides, trials=args.trials, timeout=args.timeout)
    if result is None:  # a process other than the first: the first reports
        return 0
    failed = result.none_completed()
    if failed:  # the search ran, and has no result to show: not a success
        raise NoTrialCompleted(failed)
    if result.best_dir is not None:
        sys.stdout.write(f"{result.best_dir}\n")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from hf_finetune.finished.export import export_onnx, format_result

    _quiet_loading()
    result = export_onnx(args.output_dir, opset=args.opset, output_dir=args.output_dir_out,
                         external_data=args.external_data)
    sys.stdout.write(format_result(result))
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    _quiet_loading()
    if args.method == "logits":
        from hf_finetune.combine.ensemble import build_ensemble

        result = build_ensemble(args.out_dir, args.run_dirs, weights=args.weights, metric=args.metric,
                                overwrite=args.overwrite, batch_size=args.batch_size, data=args.data)
    else:
        if args.weights != "uniform":
            raise UserError("--weights: only applies to --method logits (a soup weighs its ingredients equally)")
        from hf_finetune.combine.soup import build_soup

        result = build_soup(args.out_dir, args.run_dirs, method=args.method, metric=args.metric,
                            overwrite=args.overwrite, batch_size=args.batch_size, data=args.data)
    from hf_finetune.combine.card import scores_table

    sys.stdout.write(scores_table(args.method, result.metrics) + "\n")
    logger.info("Wrote %s", result.output_dir)
    return 0


COMMANDS = {"train": cmd_train, "check": cmd_check, "fields": cmd_fields, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "push": cmd_push, "rank": cmd_rank, "tune": cmd_tune,
            "export": cmd_export, "ensemble": cmd_ensemble}


def _named_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[tuple[str, object]]:
    """The command's arguments as (the name a message gives them, value): OUTPUT_DIR, --name, ...

    Recipe overrides are left to the recipe's own check, which names their key paths.
    """
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]
    named, seen = [], {"help", "overrides"}
    for action in sub._actions:
        if action.dest in seen or not hasattr(args, action.dest):
            continue
        seen.add(action.dest)
        name = action.option_strings[0] if action.option_strings else (action.metavar or action.dest.upper())
        value = getattr(args, action.dest)
        if action.dest == "explicit":  # predict --file / --text: (option, value) pairs
            named += [(f"--{option}", item) for option, item in value or []]
        elif value is not None:
            named.append((name, value))
    return named


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `hf-finetune` command; returns the process exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Overrides may come after flags (`train r.yaml --resume a.b=1`); argparse leaves those over.
    unknown = [item for item in extra if item.startswith("-") or "=" not in item]
    if unknown or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    from hf_finetune.logs import configure_logging

    configure_logging(verbose=args.verbose)
    try:
        refuse_tokens(_named_arguments(parser, args))
        return COMMANDS[args.command](args)
    except UserError as exc:
        sys.stderr.write(f"error: {redact(str(exc))}\n")
        # 2 by default; TrainingAborted says 1 or 128+signal, PushError 3 (trained, not pushed).
        return getattr(exc, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`hf-finetune predict ... | head`): stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
