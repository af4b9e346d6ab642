"""Regenerates the small offline example data and tiny backbones used by the quickstart recipes.

    python examples/make_examples.py

Writes (all committed to the repository, so the quickstart needs no network):
  examples/data/reviews/{train,validation,test}.csv   synthetic movie reviews, 3 sentiment classes
  examples/data/ratings/{train,validation,test}.csv   the same reviews with a rating from -4 to 4 (regression)
  examples/data/patterns/{train,validation,test}/<class>/*.png   horizontal/vertical stripes, checks
  examples/data/ner/{train,validation,test}.conll   synthetic tagged sentences: people, places, organisations
  examples/data/aspects/{train,validation,test}.csv  synthetic reviews tagged with the aspects they judge
                                                     (0 to 3 of 8, joined by '|'): multi-label, on tiny-bert
  examples/models/tiny-bert/     a BERT encoder (hidden 64, 2 layers) with a WordPiece tokenizer
  examples/models/tiny-bert-ner/ the same over the tagged sentences' words, some split into word pieces
  examples/models/tiny-resnet/   timm's test_resnet in timm's Hub layout

The backbones are randomly initialised: they stand in for Hub checkpoints so the whole pipeline can
run offline in seconds. Real recipes (recipes/bert_sentiment.yaml, recipes/resnet50_beans.yaml)
fine-tune real pretrained models.
"""

from __future__ import annotations

import csv
import random
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parent

POSITIVE = ("wonderful brilliant moving delightful superb charming gripping heartfelt stunning excellent "
            "memorable funny beautiful clever touching").split()
NEGATIVE = ("dull boring awful tedious clumsy predictable bland messy lifeless forgettable shallow painful "
            "annoying weak confusing").split()
SUBJECTS = ["the movie", "this film", "the acting", "the story", "the soundtrack", "the ending", "the cast",
            "the script", "the cinematography", "the dialogue", "the pacing", "the plot"]
OPENERS = ["", "honestly,", "overall,", "i think", "to be fair,", "in my opinion,", "sadly,", "frankly,"]
NEUTRAL = ["it was fine", "it was okay", "an average evening at the cinema", "neither great nor terrible",
           "watchable but unremarkable", "a competent if ordinary effort", "nothing special either way",
           "some scenes work and some do not"]
INTENSIFIERS = ["", "", "really", "quite", "very", "truly", "rather"]


def _clause(adjectives: list[str], rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} was {rng.choice(INTENSIFIERS)} {rng.choice(adjectives)}".replace("  ", " ")


def _one_sided(own: list[str], opposite: list[str], denial_tail: str, rng: random.Random) -> str:
    """A clearly positive (or negative) body: one or two clauses, sometimes denying the opposite."""
    body = _clause(own, rng)
    if rng.random() < 0.4:
        body += f" and {_clause(own, rng)}"
    if rng.random() < 0.15:
        body += f", {rng.choice(SUBJECTS)} was not {rng.choice(opposite)} {denial_tail}"
    return body


def review(label: str, rng: random.Random) -> str:
    """One synthetic review; 'neutral' mixes praise with complaint or says it was average."""
    opener = rng.choice(OPENERS)
    if label == "positive":
        body = _one_sided(POSITIVE, NEGATIVE, "at all", rng)
    elif label == "negative":
        body = _one_sided(NEGATIVE, POSITIVE, "either", rng)
    elif rng.random() < 0.5:
        body = rng.choice(NEUTRAL)
    else:
        good, bad = _clause(POSITIVE, rng), _clause(NEGATIVE, rng)
        body = f"{good} but {bad}" if rng.random() < 0.5 else f"{bad} but {good}"
    text = f"{opener} {body}.".strip()
    return text[0].upper() + text[1:]


def write_reviews(out: Path, sizes: dict[str, int], seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    labels = ["negative", "neutral", "positive"]
    words: set[str] = set()
    out.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "label"])
            writer.writeheader()
            for _ in range(n):
                label = rng.choice(labels)
                text = review(label, rng)
                words.update(text.lower().replace(",", " , ").replace(".", " . ").split())
                writer.writerow({"text": text, "label": label})
    return sorted(words)


def write_ratings(reviews: Path, out: Path, seed: int = 0) -> None:
    """The review texts with a synthetic rating from -4 to 4 (regression): the sentiment of the review, plus
    one point per 'very' in its direction, plus Gaussian noise (standard deviation 0.5), rounded to 0.01."""
    rng = random.Random(seed)
    base = {"negative": -2.0, "neutral": 0.0, "positive": 2.0}
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "validation", "test"):
        with open(reviews / f"{split}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["text", "rating"])
            writer.writeheader()
            for row in rows:
                sign = (base[row["label"]] > 0) - (base[row["label"]] < 0)
                rating = base[row["label"]] + sign * row["text"].lower().count("very") + rng.gauss(0, 0.5)
                writer.writerow({"text": row["text"], "rating": f"{max(-4.0, min(4.0, rating)):.2f}"})


def write_ner() -> None:
    """Tagged sentences as CoNLL files (IOB2: PER, LOC, ORG), and a tiny BERT over their words."""
    from hf_finetune.data.conll import write_conll
    from hf_finetune.testing import NER_WORDS, tagged_sentences, write_tiny_bert

    for split, n, seed in (("train", 600, 0), ("validation", 100, 1), ("test", 150, 2)):
        write_conll(ROOT / "data" / "ner" / f"{split}.conll", tagged_sentences(n, seed))
    shutil.rmtree(ROOT / "models" / "tiny-bert-ner", ignore_errors=True)
    write_tiny_bert(ROOT / "models" / "tiny-bert-ner", NER_WORDS, hidden_size=64, num_layers=2, num_heads=4,
                    intermediate_size=128, max_length=64)


ASPECTS = ["acting", "story", "soundtrack", "ending", "cast", "script", "plot", "pacing"]


def write_aspects(out: Path, sizes: dict[str, int]) -> None:
    """Reviews that judge 0 to 3 aspects ("the acting was dull and the plot was superb"); the label is the
    set of aspects judged, joined by '|' (empty: a review that judges none, e.g. "it was okay")."""
    for seed, (split, n) in enumerate(sizes.items()):
        rng = random.Random(100 + seed)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{split}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "aspects"])
            for _ in range(n):
                chosen = rng.sample(ASPECTS, rng.choice([0, 1, 1, 2, 2, 3]))
                clauses = [f"the {a} was {rng.choice(POSITIVE + NEGATIVE)}" for a in chosen]
                text = f" {rng.choice(['and', 'but'])} ".join(clauses) if clauses else rng.choice(NEUTRAL)
                writer.writerow([f"{text}.".capitalize(), "|".join(sorted(chosen))])


def main() -> None:
    from hf_finetune.testing import write_pattern_folder, write_shape_masks, write_tiny_bert, write_tiny_timm

    words = write_reviews(ROOT / "data" / "reviews", {"train": 1500, "validation": 200, "test": 300})
    write_ratings(ROOT / "data" / "reviews", ROOT / "data" / "ratings")
    write_pattern_folder(ROOT / "data" / "patterns", {"train": 80, "validation": 20, "test": 20},
                         odd_modes=True)
    for name in ("tiny-bert", "tiny-resnet"):
        shutil.rmtree(ROOT / "models" / name, ignore_errors=True)
    write_tiny_bert(ROOT / "models" / "tiny-bert", words + ["!", "?", "'"], hidden_size=64, num_layers=2,
                    num_heads=4, intermediate_size=128, max_length=64)
    # The checkpoint declares its own input size: the pipeline must follow it (64 px keeps the demo fast).
    write_tiny_timm(ROOT / "models" / "tiny-resnet", "test_resnet", num_classes=10,
                    pretrained_cfg={"input_size": [3, 64, 64], "crop_pct": 1.0})
    write_ner()
    shutil.rmtree(ROOT / "data" / "shapes", ignore_errors=True)
    write_shape_masks(ROOT / "data" / "shapes", {"train": 64, "validation": 16, "test": 16})  # quickstart_segmentation
    write_aspects(ROOT / "data" / "aspects", {"train": 600, "validation": 150, "test": 150})


if __name__ == "__main__":
    main()
