"""Does `hf-finetune rank` order backbones the way fine-tuning them does? And how much sooner does it answer?

    python benchmarks/rank.py --task digits --rows 300 --seeds 2     # EfficientNet-Lite0/1/2, a weaker
                                                                     # pretrained CNN, a random-init Lite0
    python benchmarks/rank.py --task bbc          # all-MiniLM-L6-v2 + a random-init BERT of its shape, BBC 16/class

Each task ranks its candidates twice:
    frozen    `hf-finetune rank` at its defaults (LogME, k-NN, probe, H-score on frozen features; fresh
              feature cache, so the time includes every extraction)
    finetune  `rank.by: finetune` (every candidate fine-tuned with successive halving in rank.budget full
              runs and ordered by validation; no frozen scores at its defaults). With a shortlist or
              rank.frozen_scores it reads the features the frozen pass cached, and its time is that pass's
              plus its own. `--rank-set budget=2 shortlist=4` changes its settings
then fine-tunes every candidate with the same recipe (`hf_finetune.train`) as the ground truth, and
reports for each score, and for the fine-tuning mode's order, the weighted Kendall tau
(scipy.stats.weightedtau, hyperbolic weights on rank, as the LogME paper uses) against the fine-tuned
test accuracy (and test macro-F1), and the time of each mode against fine-tuning every candidate once.
Each ranking's tau is also given as its table declares it (`declared_positions`): the candidates it
calls tied with its winner share the winner's place, and a frozen table's untrained candidates (flagged,
never its winner) follow its pretrained ones. The strict taus read the bare order.
Few-label fine-tuning is itself noisy (a few points of accuracy between seeds): `--seeds N` fine-tunes
each candidate N times and compares with the mean.

By default everything runs as a user would: each candidate at its own input size (full resolution:
224, 240 and 260 px for Lite0/1/2; the digits are 32 px originals) and the recipe's data-aware
training defaults (epochs, evaluation every epoch, the best epoch kept). `--image-size` and
`--epochs` give the short settings of the first measurement (every candidate at one size; a fixed
number of epochs without evaluation), which fit 100 rows in minutes on 2 CPU cores.
Ranking and fine-tuning see exactly the same preprocessing, so the comparison is fair.

With two candidates (bbc), tau is +1 or -1: it only says whether the pair is ordered right.
Results are merged into benchmarks/results/rank.json under "<task>-<rows>". `--reuse-truth` takes the
fine-tuned ground truth from the previous run of the same settings there (to re-measure `rank` alone
after a change to it: the ground truth does not depend on rank's code).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import real_assets
import yaml
from common import REPO, machine

RESULTS = REPO / "benchmarks" / "results" / "rank.json"
SCORES = ("logme", "knn", "probe", "hscore")
logger = logging.getLogger("rank-bench")


def weighted_tau(scores: list[float], truth: list[float]) -> float:
    from scipy.stats import weightedtau

    return float(weightedtau(scores, truth).statistic)


def declared_positions(order: list[str], tied: list[str], untrained_last: bool) -> dict[str, float]:
    """Each candidate's place in what a ranking's table tells its reader (higher is better): `order` best first,
    the candidates it calls tied with its winner at the winner's place (a tie is a claim that the order among
    them is not known, so the tau counts their pairs as neither right nor wrong), and, for a frozen ranking
    (`untrained_last`), untrained candidates after the pretrained ones: the table flags them and never names one
    the winner (rank.frozen_winner), while it keeps the scores' order."""
    if untrained_last:
        order = [n for n in order if not n.endswith("(random init)")] + [
            n for n in order if n.endswith("(random init)")]
    place = {n: float(len(order) - i) for i, n in enumerate(order)}
    winner = order[0]
    for name in tied:
        place[name] = place[winner]
    return place


def resized(source: Path, size: int, work: Path) -> Path:
    """A copy of a timm Hub-layout folder whose data config asks for `size` px inputs."""
    target = work / f"{source.name}-{size}px"
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    config["pretrained_cfg"]["input_size"] = [3, size, size]
    config["pretrained_cfg"].pop("test_input_size", None)
    (target / "config.json").write_text(json.dumps(config, indent=2))
    return target


def training_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe's training section: its data-aware defaults, or --epochs without evaluation."""
    if args.epochs is None:
        return {"per_device_eval_batch_size": 64}
    return {"num_train_epochs": args.epochs, "eval_strategy": "no", "save_strategy": "no",
            "load_best_model_at_end": False, "per_device_eval_batch_size": 64}


def digits_task(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    folder = real_assets.digits_folder(per_class=args.rows // 10)
    models = [real_assets.efficientnet_lite_dir(n) for n in (0, 1, 2)] + [real_assets.mobilenetv2_dir()]
    if args.image_size:
        models = [resized(m, args.image_size, work) for m in models]
    candidates = [{"name": str(m)} for m in models] + [{"name": str(models[0]), "pretrained": False}]
    recipe = {"task": "image-classification", "model": {"name": str(models[0])},
              "data": {"image_folder": str(folder), "cache_dir": str(work / "cache")},
              "training": training_settings(args)}
    return recipe, candidates


def bbc_task(work: Path, args: argparse.Namespace) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    files = real_assets.bbc_news("few", per_class=args.rows // 5)
    minilm = str(real_assets.minilm_dir())
    candidates = [{"name": minilm}, {"name": minilm, "pretrained": False}]
    recipe = {"task": "text-classification", "model": {"name": minilm},
              "data": {"files": {k: str(v) for k, v in files.items()}, "cache_dir": str(work / "cache")},
              "preprocessing": {"max_length": args.max_length},
              "training": training_settings(args)}
    return recipe, candidates


def label_of(candidate: dict[str, Any]) -> str:
    """The name rank gives the candidate ("(random init)" marks an untrained one)."""
    return candidate["name"] if candidate.get("pretrained", True) else f"{candidate['name']} (random init)"


def fine_tune(recipe: dict[str, Any], candidate: dict[str, Any], out: Path, seeds: int) -> dict[str, Any]:
    """Fine-tunes one candidate with seeds 42, 43, ...; test and validation figures are means over seeds."""
    import numpy as np

    import hf_finetune

    runs, times = [], []
    for seed in range(42, 42 + seeds):
        started = time.perf_counter()
        training = {**recipe["training"], "seed": seed}
        result = hf_finetune.train({**recipe, "model": candidate, "training": training,
                                    "output": {"dir": str(out), "overwrite": True}})
        times.append(time.perf_counter() - started)
        runs.append(result.metrics)
    out_record: dict[str, Any] = {"wall_s": sum(times), "wall_s_per_seed": times, "seeds": seeds}
    for split in ("validation", "test"):
        out_record[split] = {k: float(np.mean([m[split][k] for m in runs])) for k in ("accuracy", "f1")}
        out_record[f"{split}_per_seed"] = [{k: m[split][k] for k in ("accuracy", "f1")} for m in runs]
    out_record["epochs"], out_record["steps"] = runs[0]["train"]["epochs"], runs[0]["train"]["steps"]
    return out_record


def rank_pass(recipe: dict[str, Any], candidates: list[dict[str, Any]], work: Path, name: str,
              settings: dict[str, Any]) -> tuple[Any, float]:
    from hf_finetune.rank import rank
    from hf_finetune.rank.report import format_table
    from hf_finetune.recipe import validate_recipe

    # The frozen pass scores H-score too, for its row of the table. The fine-tuning mode runs as a user's
    # `rank.by: finetune` does: hscore there would read every candidate's frozen features (e73b60e), which the
    # 2026-12-06 07:44 and 08:12 runs did, 85 s and 146 s of their 363 s and 541 s.
    extra = {} if settings.get("by") == "finetune" else {"hscore": True}
    validated = validate_recipe({**recipe, "rank": {**extra, **settings},
                                 "output": {"dir": str(work / "out")}}, source=f"benchmarks/rank.py:{name}")
    started = time.perf_counter()
    ranked = rank(validated, candidates)
    seconds = time.perf_counter() - started
    print(format_table(ranked.record), flush=True)
    return ranked, seconds


def run_task(name: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"rank-{name}-"))
    try:
        recipe, candidates = (digits_task if name == "digits" else bbc_task)(work, args)
        frozen, rank_s = rank_pass(recipe, candidates, work, name, {})
        by_finetune, finetune_mode_s = None, None
        if "finetune" in args.modes:
            mode = {"by": "finetune", **args.rank_set}
            by_finetune, own_s = rank_pass(recipe, candidates, work, name, mode)
            # Where the mode scores on frozen features too (a shortlist, rank.frozen_scores), it read them from the
            # frozen pass's cache, so that pass's time is part of its own.
            from hf_finetune.recipe.schema import RankSpec
            from hf_finetune.recipe.sections.rank import scores_frozen

            finetune_mode_s = own_s + (rank_s if scores_frozen(RankSpec(**mode)) else 0.0)
        tuned = {}
        for index, candidate in enumerate(candidates):
            label = label_of(candidate)
            if args.reuse_truth:  # the same candidate, data and settings, fine-tuned before
                if label not in args.previous:  # --image-size copies live in a new temporary folder each run
                    raise SystemExit(f"--reuse-truth: no earlier fine-tuning of {label} in results/rank.json")
                tuned[label] = args.previous[label]
                continue
            tuned[label] = fine_tune(recipe, candidate, work / f"ft{index}", args.seeds)
            logger.info("fine-tuned %s: test accuracy %.3f F1 %.3f in %.0fs", label, tuned[label]["test"]["accuracy"],
                        tuned[label]["test"]["f1"], tuned[label]["wall_s"])
        rows = {r["name"]: r for r in frozen.rows}
        names = list(tuned)
        truth = {metric: [tuned[n]["test"][metric] for n in names] for metric in ("accuracy", "f1")}
        taus = {score: {metric: weighted_tau([rows[n]["scores"][score] for n in names], truth[metric])
                        for metric in truth} for score in SCORES}
        # The frozen ranking as its table declares it (by its rank.by score, LogME by default): the strict taus
        # above read the scores' own order, which puts a flagged untrained network where its score falls.
        frozen_by = frozen.record["by"]
        frozen_place = declared_positions([r["name"] for r in frozen.rows], [t["name"] for t in frozen.tied], True)
        # One seed's fine-tuning of every candidate: what a user would otherwise spend to choose.
        finetune_all_s = sum(t["wall_s_per_seed"][0] for t in tuned.values())
        result: dict[str, Any] = {
            "settings": {k: getattr(args, k) for k in ("rows", "image_size", "epochs", "max_length", "seeds")},
            "finetune_mode_settings": args.rank_set,
            "candidates": {n: {"scores": rows[n]["scores"], "spread": rows[n]["spread"], "dim": rows[n]["dim"],
                               "extraction_s": rows[n]["extraction_s"], "fine_tuned": tuned[n]} for n in names},
            "weighted_tau": taus, "frozen_by": frozen_by,
            "declared_weighted_tau": {metric: weighted_tau([frozen_place[n] for n in names], truth[metric])
                                      for metric in truth},
            "rank_s": rank_s, "finetune_all_s": finetune_all_s,
            "time_ratio": rank_s / finetune_all_s, "winner": frozen.winner, "tied": [t["name"] for t in frozen.tied],
            "best_fine_tuned": max(names, key=lambda n: tuned[n]["test"]["accuracy"])}
        if by_finetune is not None:
            order = [r["name"] for r in by_finetune.rows]  # best first: the mode's ranking
            position = [float(len(order) - order.index(n)) for n in names]
            declared = declared_positions(order, [t["name"] for t in by_finetune.tied], False)
            result["finetune_mode"] = {
                "order": order, "winner": by_finetune.winner, "seconds": finetune_mode_s,
                "time_ratio": finetune_mode_s / finetune_all_s,
                "entries": {r["name"]: r.get("finetune") for r in by_finetune.rows},
                "weighted_tau": {metric: weighted_tau(position, truth[metric]) for metric in truth},
                "tied": [t["name"] for t in by_finetune.tied],
                "declared_weighted_tau": {metric: weighted_tau([declared[n] for n in names], truth[metric])
                                          for metric in truth},
                "random_above_pretrained": any(
                    order.index(n) < order.index(m) for n in names if n.endswith("(random init)")
                    for m in names if not m.endswith("(random init)"))}
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def summarize(name: str, result: dict[str, Any]) -> str:
    short = {n: Path(n.split(" ")[0]).name + (" (random init)" if n.endswith("(random init)") else "")
             for n in result["candidates"]}
    mode = result.get("finetune_mode")
    lines = [f"## {name}", "candidate | LogME | k-NN acc | probe acc | H-score | fine-tuned test acc (per seed) | F1 "
             "| fine-tune s | by-finetune position"]
    for n, c in result["candidates"].items():
        s, t = c["scores"], c["fine_tuned"]
        seeds = " / ".join(f"{r['accuracy']:.3f}" for r in t["test_per_seed"])
        place = str(mode["order"].index(n) + 1) if mode else "-"
        lines.append(f"{short[n]} | {s['logme']:.4f} | {s['knn']:.3f} | {s['probe']:.3f} | {s['hscore']:.2f} | "
                     f"{t['test']['accuracy']:.3f} ({seeds}) | {t['test']['f1']:.3f} | {t['wall_s']:.0f} | {place}")
    for score, tau in result["weighted_tau"].items():
        lines.append(f"weighted tau {score:8s} vs test accuracy {tau['accuracy']:+.3f}, vs test F1 {tau['f1']:+.3f}")
    if mode:
        tau = mode["weighted_tau"]
        lines.append(f"weighted tau finetune vs test accuracy {tau['accuracy']:+.3f}, vs test F1 {tau['f1']:+.3f}; "
                     f"random init above a pretrained network: {mode['random_above_pretrained']}")
    lines.append("as the tables declare it (ties with the winner as ties; a frozen table's untrained candidates "
                 "after its pretrained ones):")
    tau = result["declared_weighted_tau"]
    lines.append(f"  weighted tau frozen by {result['frozen_by']} vs test accuracy {tau['accuracy']:+.3f}, "
                 f"vs test F1 {tau['f1']:+.3f}")
    if mode:
        tau = mode["declared_weighted_tau"]
        lines.append(f"  weighted tau finetune vs test accuracy {tau['accuracy']:+.3f}, vs test F1 {tau['f1']:+.3f}"
                     + (f" (tied with the winner: {', '.join(short[t] for t in mode['tied'])})" if mode["tied"] else ""))
        lines.append(f"by-finetune mode {mode['seconds']:.0f}s vs fine-tuning all once "
                     f"{result['finetune_all_s']:.0f}s: ratio {mode['time_ratio']:.2f}; winner {short[mode['winner']]}")
    lines.append(f"frozen ranking {result['rank_s']:.0f}s vs fine-tuning all once {result['finetune_all_s']:.0f}s: "
                 f"ratio {result['time_ratio']:.3f}; rank winner {short[result['winner']]}"
                 + (f" (tied with {', '.join(short[t] for t in result['tied'])})" if result["tied"] else "")
                 + f", best fine-tuned {short[result['best_fine_tuned']]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["digits", "bbc"], required=True)
    parser.add_argument("--rows", type=int, default=None, help="training rows, the same number per class "
                                                               "(digits 300 of 10 classes, bbc 80 of 5)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="digits: every candidate at this input size (px); default: each its own")
    parser.add_argument("--epochs", type=float, default=None,
                        help="fixed epochs without evaluation; default: the recipe's data-aware training")
    parser.add_argument("--max-length", type=int, default=128, help="bbc: max tokens")
    parser.add_argument("--seeds", type=int, default=1, help="fine-tune each candidate with this many seeds "
                                                               "(42, 43, ...) and compare with the mean accuracy")
    parser.add_argument("--modes", nargs="+", choices=["frozen", "finetune"], default=["frozen", "finetune"],
                        help="finetune: also rank with rank.by finetune (the frozen pass always runs)")
    parser.add_argument("--rank-set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="rank settings of the finetune mode, e.g. budget=2 shortlist=4 (values read as YAML)")
    parser.add_argument("--reuse-truth", action="store_true",
                        help="take the fine-tuned ground truth from the last run with the same settings in "
                             "results/rank.json (to re-measure rank alone after a change to it)")
    args = parser.parse_args()
    args.rank_set = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.rank_set)}
    if args.rows is None:
        args.rows = 300 if args.task == "digits" else 80
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    record = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = f"{args.task}-{args.rows}" + (f"-{args.image_size}px" if args.image_size else "")
    args.previous = {}
    if args.reuse_truth:
        before = record.get("tasks", {}).get(key)
        settings = {k: getattr(args, k) for k in ("rows", "image_size", "epochs", "max_length", "seeds")}
        if not before or before["settings"] != settings:
            raise SystemExit(f"--reuse-truth: results/rank.json has no {key} run with the settings {settings}")
        args.previous = {n: c["fine_tuned"] for n, c in before["candidates"].items()}
        args.truth_from = before["date"]
    result = run_task(args.task, args)
    if args.reuse_truth:
        result["truth_from"] = args.truth_from
    record["machine"] = machine()
    record.setdefault("tasks", {})[key] = {**result, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2, default=float) + "\n")
    print(summarize(key, result), flush=True)


if __name__ == "__main__":
    main()
