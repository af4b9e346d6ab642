"""A thousand mutated quickstart recipes through `hf-finetune train`, then finished-run commands on damaged,
foreign and unwritable folders, each in its own process.

The large run of the fuzz test in tests/test_fuzz.py: the same mutants (tests/fuzzing.py) and the same
invariant (trained with a complete run.json; refused with `error: ...` and no traceback; stopped on a
non-finite loss; no token leaked), on `--count` seeds. Each recipe runs in a child process with a
wall-clock limit (`--timeout`), so a hang or a crash is one failure and the run goes on.

    python benchmarks/fuzz_recipes.py                    # 1,000 recipes and 200 finished-run cases, seed 0
    python benchmarks/fuzz_recipes.py --count 100 --workers 2
    python benchmarks/fuzz_recipes.py --count 0 --finished-count 300   # the finished-run pass alone
    python benchmarks/fuzz_recipes.py --only 0-17 0-242  # re-run given seeds (printed with failures)
    python benchmarks/fuzz_recipes.py --show 0-17        # print a seed's recipe and exit
    python benchmarks/fuzz_recipes.py --only suite-9 --huge 1000000   # a seed of tests/test_fuzz.py

Isolation: `--isolation fork` (default) imports hf-finetune and its libraries once, then forks one
child per recipe, each in its own session (its process group is killed at the time limit); this saves
the ~10 s import of torch/transformers per recipe. `--isolation exec` starts a fresh interpreter per
recipe (`python -c "...main(['train', RECIPE])"`), exactly as a user would, at that cost.

The finished-run pass (`--finished-count`, default a fifth of `--count`; tests/fuzzing.py's second pass):
predict, evaluate, export, ensemble, rank and a distilled run, each on a copy of a tiny finished run that
may be damaged or foreign, writing where it may not, with a token shape in an argument; its seeds are
`f-SEED-i` (`--only f-0-12` re-runs one).

Prints counts per outcome (trained or ran / refused, exit 2 / non-finite, exit 1 / failures) per pass,
time, and each distinct failure with its seeds and the first lines of its stderr; writes everything,
recipes of failures included, to benchmarks/results/fuzz_recipes.json (not committed).
"""

from __future__ import annotations

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests.*, from a checkout
from tests.helpers.isolation import isolate_hub  # noqa: E402

# Before any Hugging Face import, as in tests/conftest.py: no recipe can reach (or wait for) the
# network or touch the machine's cache.
_CACHE = isolate_hub("hf-finetune-fuzz-cache-")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fuzzing, from a checkout

from tests import fuzzing  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "fuzz_recipes.json"
CHILD_CODE = "import sys; from hf_finetune.cli import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Case:
    """One recipe (or finished-run command) of the run: where it lives and, once finished, what it did."""

    index: int
    seed: str
    folder: Path
    mutant: fuzzing.Mutant | fuzzing.FinishedCase
    started: float = 0.0
    pid: int = 0
    process: subprocess.Popen | None = None
    before: dict[str, Any] | None = None  # a finished-run case: its run folders before the command

    @property
    def recipe(self) -> Path:
        return self.folder / "recipe.yaml"

    @property
    def work(self) -> Path:
        return self.folder / "work"

    @property
    def finished(self) -> bool:
        return isinstance(self.mutant, fuzzing.FinishedCase)

    @property
    def argv(self) -> list[str]:
        return list(self.mutant.argv) if self.finished else ["train", str(self.recipe)]


def _child(case: Case) -> None:
    """In the forked child: run `main` in the case's folder with stdout/stderr going to files; never returns."""
    code = fuzzing.ESCAPED_EXIT
    try:
        os.setsid()  # its own process group: the parent kills it, and whatever it started, at the limit
        for fd, name in ((1, "stdout.txt"), (2, "stderr.txt")):
            os.dup2(os.open(case.folder / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
        os.chdir(case.work)
        from hf_finetune.cli import main

        code = main(case.argv)
    except BaseException:  # noqa: B036 - an exception escaping main is exactly what is looked for
        traceback.print_exc()
        code = fuzzing.ESCAPED_EXIT
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code if isinstance(code, int) and 0 <= code < 256 else fuzzing.ESCAPED_EXIT)


def preimport() -> None:
    """Imports, once, what every child would import: the libraries and all of hf-finetune's modules.

    By module walk rather than by name, so that a module renamed inside hf_finetune is still covered;
    one that fails to import here fails in the child too, where it is judged.
    """
    import importlib
    import pkgutil

    for name in ("torch", "transformers.trainer", "transformers.models.bert.modeling_bert", "datasets", "timm",
                 "evaluate", "accelerate", "sklearn.metrics", "matplotlib.pyplot", "safetensors.torch"):
        importlib.import_module(name)
    import hf_finetune

    for module in pkgutil.walk_packages(hf_finetune.__path__, "hf_finetune."):
        if module.name.endswith("__main__"):
            continue  # an entry point: importing it would run it
        try:
            importlib.import_module(module.name)
        except Exception:
            continue  # judged in the child, where it fails again


def start(case: Case, isolation: str, finished: fuzzing.FinishedAssets) -> None:
    if case.finished:
        case.before = fuzzing.prepare_finished_case(case.mutant, case.work, finished)
    else:
        case.work.mkdir(parents=True)
        case.recipe.write_text(case.mutant.text, encoding="utf-8")
    case.started = time.monotonic()
    if isolation == "exec":
        with open(case.folder / "stdout.txt", "wb") as out, open(case.folder / "stderr.txt", "wb") as err:
            case.process = subprocess.Popen([sys.executable, "-c", CHILD_CODE, *case.argv], cwd=case.work,
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
        case.pid = case.process.pid
        return
    sys.stdout.flush()
    sys.stderr.flush()  # or the child would write the parent's buffered lines into its own files
    pid = os.fork()
    if pid == 0:
        _child(case)
    case.pid = pid


def poll(case: Case) -> int | None:
    """The case's exit code (negative: killed by that signal), or None while it runs."""
    if case.process is not None:
        return case.process.poll()
    pid, status = os.waitpid(case.pid, os.WNOHANG)
    return os.waitstatus_to_exitcode(status) if pid else None


def kill(case: Case) -> None:
    try:
        os.killpg(case.pid, signal.SIGKILL)  # the child's own group (setsid / start_new_session)
    except ProcessLookupError:
        pass
    if case.process is not None:
        case.process.wait()
    else:
        os.waitpid(case.pid, 0)


def finish(case: Case, code: int | None, timed_out: bool, keep: bool) -> dict[str, Any]:
    """Judges a finished case and returns its record; removes its folder unless it failed (or `keep`)."""
    read = lambda name: (case.folder / name).read_text(encoding="utf-8", errors="replace")  # noqa: E731
    result = fuzzing.RunResult(None if timed_out else code, read("stdout.txt"), read("stderr.txt"),
                               timed_out=timed_out, seconds=time.monotonic() - case.started)
    if case.finished:
        verdict = fuzzing.judge_finished(case.mutant, result, case.work, case.before or {})
    else:
        verdict = fuzzing.judge(case.mutant, result, case.work)
    record: dict[str, Any] = {"index": case.index, "seed": case.seed, "task": case.mutant.task,
                              "pass": "finished" if case.finished else "train", "outcome": verdict.outcome,
                              "command": case.mutant.command if case.finished else "train",
                              "exit_code": code, "seconds": round(result.seconds, 2),
                              "mutations": case.mutant.mutations, "problems": verdict.problems}
    error = next((line for line in result.stderr.splitlines() if line.startswith("error: ")), None)
    if error is not None:
        record["error"] = error[:400]  # what refused it: the share of each reason shows what the fuzzer reaches
    if verdict.outcome == fuzzing.FAILURE:
        record["recipe"] = case.mutant.text
        record["stderr_tail"] = result.stderr.strip().splitlines()[-25:]
        record["signature"] = signature(verdict, result)
    if verdict.outcome != fuzzing.FAILURE and not keep:
        shutil.rmtree(case.folder, ignore_errors=True)
    return record


def signature(verdict: fuzzing.Verdict, result: fuzzing.RunResult) -> str:
    """What tells one failure from another: the problem, and for a traceback its exception type and the
    function that raised it (not the message, which holds the recipe's own values)."""
    problems = "; ".join(re.sub(r"(into|main:) .*", r"\1 ...", p) for p in verdict.problems)
    lines = result.stderr.strip().splitlines()
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', result.stderr)
    if frames and lines:
        path, function = frames[-1]
        return f"{problems} | {lines[-1].split(':')[0][:80]} in {Path(path).name}:{function}"
    return problems


def run_all(cases: list[Case], workers: int, timeout: float, isolation: str, keep: bool,
            finished: fuzzing.FinishedAssets) -> list[dict[str, Any]]:
    pending, running, records = list(cases), [], []
    while pending or running:
        while pending and len(running) < workers:
            case = pending.pop(0)
            start(case, isolation, finished)
            running.append(case)
        time.sleep(0.05)
        for case in list(running):
            code = poll(case)
            timed_out = code is None and time.monotonic() - case.started > timeout
            if code is None and not timed_out:
                continue
            if timed_out:
                kill(case)
            running.remove(case)
            record = finish(case, code, timed_out, keep)
            records.append(record)
            mark = {fuzzing.TRAINED: ".", fuzzing.RAN: ".", fuzzing.REFUSED: "r",
                    fuzzing.NON_FINITE: "n"}.get(record["outcome"], "F")
            print(mark, end="" if len(records) % 50 else f" {len(records)}\n", flush=True)
    print(flush=True)
    return sorted(records, key=lambda r: r["index"])


def summarize(records: list[dict[str, Any]], setup_s: float, seconds: float,
              args: argparse.Namespace) -> dict[str, Any]:
    """Prints the counts per outcome, the time and each distinct failure; returns the JSON report."""
    counts = Counter(r["outcome"] for r in records)
    per_outcome = defaultdict(list)
    for r in records:
        per_outcome[r["outcome"]].append(r["seconds"])
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["outcome"] == fuzzing.FAILURE:
            groups[r["signature"]].append(r)
    n = len(records)
    print(f"\n== fuzz_recipes: {n} cases (seed {args.seed}, {args.workers} worker(s), {args.isolation}, "
          f"timeout {args.timeout:g}s) ==")
    passes = (("train", "mutated quickstart recipes through `hf-finetune train`",
               ((fuzzing.TRAINED, "trained (exit 0, run.json complete)"),
                (fuzzing.REFUSED, "refused (exit 2, error: ..., no traceback)"),
                (fuzzing.NON_FINITE, "non-finite loss (exit 1)"), (fuzzing.FAILURE, "failures"))),
              ("finished", "finished-run commands on damaged, foreign and unwritable folders",
               ((fuzzing.RAN, "ran (exit 0, nothing to refuse)"),
                (fuzzing.REFUSED, "refused (exit 2, error: ..., no traceback)"), (fuzzing.FAILURE, "failures"))))
    by_pass: dict[str, Any] = {}
    for name, title, outcomes in passes:
        mine = [r for r in records if r.get("pass", "train") == name]
        if not mine:
            continue
        counts_here = Counter(r["outcome"] for r in mine)
        by_pass[name] = dict(counts_here)
        print(f"  {len(mine)} {title}:")
        for outcome, label in outcomes:
            times = [r["seconds"] for r in mine if r["outcome"] == outcome]
            mean = f"mean {sum(times) / len(times):.1f}s" if times else ""
            print(f"    {label:<44} {counts_here.get(outcome, 0):>5}  "
                  f"({100 * counts_here.get(outcome, 0) / len(mine):.1f}%)  {mean}")
        if name == "finished":
            commands = Counter((r["command"], r["outcome"]) for r in mine)
            print("    per command (ran / refused): " + ", ".join(
                f"{c} {commands.get((c, fuzzing.RAN), 0)}/{commands.get((c, fuzzing.REFUSED), 0)}"
                for c, _ in fuzzing.FINISHED_COMMANDS))
    per_recipe = seconds / max(n, 1)
    print(f"  wall time {setup_s + seconds:.0f}s ({setup_s:.0f}s setup, then {per_recipe:.2f}s per recipe); "
          f"1,000 recipes: about {(setup_s + per_recipe * 1000) / 60:.0f} min")
    for i, (sig, rs) in enumerate(sorted(groups.items(), key=lambda kv: -len(kv[1])), 1):
        first = rs[0]
        print(f"\n  failure {i}: {len(rs)} recipe(s): {', '.join(r['seed'] for r in rs[:10])}"
              f"{' ...' if len(rs) > 10 else ''}\n    {sig}\n    {'; '.join(first['problems'])}\n"
              f"    mutations of {first['seed']}: {'; '.join(first['mutations'])}")
        for line in first["stderr_tail"][-6:]:
            print(f"    | {line[:300]}")
        huge = f" --huge {args.huge}" if args.huge != 10**9 else ""
        print(f"    re-run: python benchmarks/fuzz_recipes.py --only {first['seed']}{huge}")
    return {"benchmark": "fuzz_recipes", "date": dt.date.today().isoformat(),
            "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": f"{os.cpu_count()} CPU cores", "count": n, "setup_seconds": round(setup_s, 1),
            "seconds": round(seconds, 1), "seconds_per_recipe": round(per_recipe, 2),
            "outcomes": dict(counts), "outcomes_per_pass": by_pass, "distinct_failures": len(groups),
            "failures": {sig: [r["seed"] for r in rs] for sig, rs in groups.items()}, "records": records}


def make_case(index: int, seed: str, root: Path, assets: fuzzing.Assets, finished: fuzzing.FinishedAssets,
              huge: int) -> Case:
    """The case of `seed`: a mutated recipe, or for an `f-` seed a finished-run command."""
    folder = root / "cases" / f"{index:05d}"
    if seed.startswith("f-"):
        return Case(index, seed, folder, fuzzing.make_finished_case(seed.removeprefix("f-"), finished))
    return Case(index, seed, folder, fuzzing.make_mutant(seed, assets, huge))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000, help="recipes to run (default 1000)")
    parser.add_argument("--finished-count", type=int, default=None,
                        help="finished-run command cases to run after them (default: a fifth of --count)")
    parser.add_argument("--seed", type=int, default=0, help="seeds are SEED-0 .. SEED-(COUNT-1) (default 0)")
    parser.add_argument("--only", nargs="+", metavar="SEED", help="run these seeds instead (e.g. 0-17 suite-3)")
    parser.add_argument("--show", metavar="SEED", help="print the recipe of SEED and exit")
    parser.add_argument("--workers", type=int, default=1, help="recipes at a time (default 1)")
    parser.add_argument("--timeout", type=float, default=120, help="seconds per recipe before it counts as a hang")
    parser.add_argument("--isolation", choices=["fork", "exec"], default="fork",
                        help="fork a pre-imported process per recipe (default) or start a fresh interpreter")
    parser.add_argument("--huge", type=int, default=10**9,
                        help="the huge number of range mutations (default 1e9; tests/test_fuzz.py uses 1e6)")
    parser.add_argument("--keep", action="store_true", help="keep every case folder, not only the failures'")
    parser.add_argument("--write-assets", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.write_assets:  # in a child process, so the parent never runs torch before it forks
        assets = fuzzing.write_assets(args.write_assets)
        fuzzing.write_finished_assets(Path(args.write_assets) / "finished", assets)
        shutil.rmtree(_CACHE, ignore_errors=True)  # this process's own Hub cache (isolate_hub)
        return 0
    root = Path(tempfile.mkdtemp(prefix="hf-finetune-fuzz-"))
    assets = fuzzing.assets_in(root / "assets")
    finished = fuzzing.finished_assets_in(root / "assets" / "finished", assets)
    if args.show:  # the paths are those a run would write; nothing is written
        print(make_case(0, args.show, root, assets, finished, args.huge).mutant.text, end="")
        shutil.rmtree(root)
        shutil.rmtree(_CACHE, ignore_errors=True)
        return 0
    started = time.monotonic()
    subprocess.run([sys.executable, __file__, "--write-assets", str(root / "assets")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    finished_count = args.count // 5 if args.finished_count is None else args.finished_count
    seeds = args.only or ([f"{args.seed}-{i}" for i in range(args.count)]
                          + [f"f-{args.seed}-{i}" for i in range(finished_count)])
    cases = [make_case(i, seed, root, assets, finished, args.huge) for i, seed in enumerate(seeds)]
    if args.isolation == "fork":
        preimport()
    setup_s = time.monotonic() - started
    print(f"{len(cases)} recipes in {root / 'cases'} (assets and imports ready after {setup_s:.0f}s); "
          ". trained, r refused, n non-finite, F failure", flush=True)
    records = run_all(cases, args.workers, args.timeout, args.isolation, args.keep, finished)
    report = summarize(records, setup_s, time.monotonic() - started - setup_s, args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    print(f"\nwrote {RESULTS}")
    if args.keep or report["distinct_failures"]:
        print(f"cases kept under {root / 'cases'} (recipe.yaml, stdout.txt, stderr.txt and the run's folder)")
    else:
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(_CACHE, ignore_errors=True)
    return 1 if report["distinct_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
