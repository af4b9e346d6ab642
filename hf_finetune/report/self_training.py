"""The model card's self-training section, rendered from metrics.json's `self_training` record."""

from __future__ import annotations

from typing import Any


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def self_training_section(results: dict[str, Any]) -> str:
    """'## Self-training': how the pool was used, one row per round, which round's model this is."""
    st = results.get("self_training")
    if not st:
        return ""
    pool, metric = st.get("pool") or {}, st.get("metric", "")
    per_class = {k: v for k, v in (st.get("class_thresholds") or {}).items() if v != st.get("threshold")}
    threshold = f"{st.get('threshold')}" + (
        " (" + ", ".join(f"{k} {v:g}" for k, v in per_class.items()) + ")" if per_class else "")
    rule = f"a probability of at least {threshold}"
    if st.get("top_share"):
        rule += f" or among the most confident {st['top_share']:.0%} of their predicted class"
    caps = []
    if st.get("max_per_labelled"):
        caps.append(f"at most {st['max_per_labelled']:g} per labelled row of the class")
    if st.get("max_class_share"):
        caps.append(f"no class taking more than {st['max_class_share']:.0%} of them")
    cap = f", {' and '.join(caps)} (the most confident kept)" if caps else ""
    start = "from the pretrained backbone with a new head" if st.get("init") == "backbone" else \
        "on from the previous best round's weights"
    text = (f"This model is the one of round {st.get('best_round')} of self-training on {pool.get('rows')} unlabelled "
            f"rows ({pool.get('source')}). Round 0 trained on the {st.get('labelled_rows')} labelled rows alone; in "
            f"each later round the best model so far labelled the pool, its predictions with {rule} were "
            f"kept{cap}, and a model trained {start} on the labelled and pseudo-labelled "
            f"rows. Rounds are compared on validation `{metric}`; self-training stopped: {st.get('stopped')}.")
    if pool.get("labelled_rows"):
        text += (f" {pool['labelled_rows']} pool rows have true labels: they were never trained on, only used to "
                 "score the pseudo-labels.")
    rounds = st.get("rounds") or []
    has_test = any("test" in r for r in rounds)
    has_truth = any("pseudo_label_accuracy" in r for r in rounds)
    header = ["round", "training rows", "pseudo-labels kept", "kept per class"]
    header += ["pseudo-label accuracy"] if has_truth else []
    header += [f"validation {metric}"] + ([f"test {metric}"] if has_test else []) + ["kept"]
    rows = []
    for r in rounds:
        kept_per_class = ", ".join(f"{k} {v}" for k, v in (r.get("kept_per_class") or {}).items()) if r.get("kept") \
            else "-"
        row = [str(r.get("round")), _num(r.get("train_rows")) if r.get("trained") else "not trained",
               f"{r.get('kept', 0)} of {r.get('pool_rows')}" if r.get("round") else "-", kept_per_class]
        row += [_num(r.get("pseudo_label_accuracy"))] if has_truth else []
        row += [_num((r.get("validation") or {}).get(metric))]
        row += [_num((r.get("test") or {}).get(metric))] if has_test else []
        row += ["**this model**" if r.get("selected") else ""]
        rows.append(row)
    table = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    return "## Self-training\n\n" + text + "\n\n" + "\n".join(table)
