"""CoNLL-style files: a token per line with its tag in the last column, sentences separated by blank lines.

    EU      B-ORG
    rejects O
    German  B-MISC
    ...
                        <- a blank line (or one holding only whitespace, such as a single tab) ends the sentence
    -DOCSTART- -X- O O  <- document separators are skipped

Columns are split on tabs when the line has one (a token may then hold spaces), else on runs of
whitespace; the first column is the token, the last its tag, anything between (part-of-speech,
chunk) is ignored. Each sentence becomes one row with a list of tokens and a list of tags, and the
line it starts on, so that a message can name `file:line`.
"""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset, Features, List, Value

from hf_finetune.errors import DataError

DOCSTART = "-DOCSTART-"
LINE_COLUMN = "__source_line__"  # the line each sentence starts on, for messages


def read_conll(path: str | Path, tokens: str = "tokens", tags: str = "tags", key: str = "data.files") -> Dataset:
    """The sentences of one CoNLL file as rows of (`tokens`, `tags`, `__source_line__`).

    Raises:
        DataError: naming `key`, the file and the line of a line without a tag, or a file without sentences.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{key}: cannot read {path}: {exc}; save it as UTF-8 text") from None
    words: list[list[str]] = []
    labels: list[list[str]] = []
    starts: list[int] = []
    sentence: list[str] = []
    tagged: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            if sentence:
                words.append(sentence)
                labels.append(tagged)
            sentence, tagged = [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [f.strip() for f in fields]
        if fields[0] == DOCSTART:
            continue
        if len(fields) < 2 or not fields[-1]:
            raise DataError(f"{key}: {path}:{number}: '{line.strip()}' has no tag; each line holds a token and, in "
                            "its last column, the token's tag")
        if not sentence:
            starts.append(number)
        sentence.append(fields[0])
        tagged.append(fields[-1])
    if sentence:
        words.append(sentence)
        labels.append(tagged)
    if not words:
        raise DataError(f"{key}: {path} holds no sentences (a token and its tag per line, sentences separated by "
                        "blank lines)")
    features = Features({tokens: List(Value("string")), tags: List(Value("string")), LINE_COLUMN: Value("int64")})
    return Dataset.from_dict({tokens: words, tags: labels, LINE_COLUMN: starts}, features=features)


def write_conll(path: str | Path, sentences: list[tuple[list[str], list[str]]]) -> Path:
    """Writes (tokens, tags) sentences as a CoNLL file: `token<TAB>tag` lines, a blank line after each sentence."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join("\n".join(f"{w}\t{t}" for w, t in zip(tokens, tags, strict=True)) + "\n"
                     for tokens, tags in sentences)
    path.write_text(text, encoding="utf-8")
    return path
