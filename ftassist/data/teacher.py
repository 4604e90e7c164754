"""Documents -> question/answer pairs written by a teacher model on any OpenAI-compatible endpoint.

    from ftassist.data.teacher import Teacher
    teacher = Teacher.connect(cfg)            # UserError now if the URL is down or the model unknown
    examples, findings, fmt, reason = teacher.document_examples(Path("guide.pdf"), "pdf")

Each passage (split as in `ftassist.data.documents`) is sent once, at temperature 0.3, with a
prompt asking for N pairs answerable only from the passage, as JSON. Under `response_format`
json_schema (structured outputs) the reply is an object {"pairs": [...]}; without it the prompt
asks for a bare array and `parse_qa_pairs` digs the JSON out of whatever came back (code fences,
chatter, <think> blocks). A reply without usable pairs, or a request the server refuses, becomes
a warning finding naming the passage; the build never stops for one passage. Every example keeps
its passage (file, index, heading, text, teacher model) in `meta["provenance"]`, which the build
writes to provenance.jsonl beside train.jsonl.

Check ids (severity): teacher_reply_invalid (warning), teacher_request_failed (warning),
teacher_no_pairs (error: no passage of any document gave a pair).
"""

from __future__ import annotations

import re
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftassist.config import DataConfig
from ftassist.data.documents import document_passages, document_title, provenance
from ftassist.data.findings import DataRow, Finding, clip
from ftassist.errors import UserError
from ftassist.endpoint import Endpoint, Reply
from ftassist.evaluation.extraction import json_values

TEMPERATURE = 0.3
CHARS_PER_TOKEN = 1  # a floor for ordinary text, so capped strings fit the token budget
THINK = re.compile(r"<think>.*?</think>", re.S | re.I)
FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S | re.I)


def pairs_schema(n: int, max_tokens: int = 1024) -> dict:
    """The JSON Schema sent as response_format: {"pairs": [{"question", "answer"}] x 1..n}.

    The root is an object because OpenAI's structured outputs require one. Strings are capped at
    about CHARS_PER_TOKEN characters per reply token (a quarter for the question), so a model that
    will not end a string is still cut to a complete reply within `max_tokens`.
    """
    chars = max(64, max_tokens * CHARS_PER_TOKEN // n)
    pair = {"type": "object", "properties": {"question": {"type": "string", "minLength": 1, "maxLength": chars // 4},
                                             "answer": {"type": "string", "minLength": 1, "maxLength": chars - chars // 4}},
            "required": ["question", "answer"], "additionalProperties": False}
    return {"type": "object", "properties": {"pairs": {"type": "array", "items": pair, "minItems": 1, "maxItems": n}},
            "required": ["pairs"], "additionalProperties": False}


def response_format(n: int, max_tokens: int = 1024) -> dict:
    """The `response_format` argument for structured outputs of `pairs_schema(n, max_tokens)`."""
    return {"type": "json_schema", "json_schema": {"name": "qa_pairs", "schema": pairs_schema(n, max_tokens)}}


def teacher_messages(passage: str, title: str, heading: str | None, n: int, structured: bool = False) -> list[dict]:
    """The chat request for one passage: N pairs answerable only from it, as JSON. One user message,
    short, because some chat templates refuse a system role and small teachers have small contexts.

    >>> teacher_messages("Oil the chain.", "Bike care", "Chains", 2)[0]["content"].splitlines()[0][:80]
    'Write 2 question/answer pairs about this passage from the document "Bike care", '
    """
    where = f'the document "{title}"' + (f', section "{heading}"' if heading else "")
    shape = 'a JSON object {"pairs": [...]} holding' if structured else "a JSON array of"
    prompt = (f"Write {n} question/answer pairs about this passage from {where}. Each question must be answerable from "
              "the passage alone and name its subject; each answer is a complete sentence supported by the passage, "
              f'with no outside knowledge. Reply with only {shape} {n} objects {{"question": "...", "answer": "..."}}.\n\n'
              f'Passage:\n"""\n{passage}\n"""')
    return [{"role": "user", "content": prompt}]


def parse_qa_pairs(text: str, n: int | None = None) -> tuple[list[dict], str | None]:
    """([{"question", "answer"}, ...], None) from a teacher reply, or ([], why not).

    Takes a bare array, {"pairs": [...]} (or any object holding one list), or one pair object,
    found anywhere in the text: inside code fences, after chatter, after a <think> block. Items
    without a non-empty question and answer are skipped; repeats are dropped; at most `n` are kept.

    >>> parse_qa_pairs('Sure! ```json\\n[{"question": "Q?", "answer": "A."}]\\n```')
    ([{'question': 'Q?', 'answer': 'A.'}], None)
    >>> parse_qa_pairs("I cannot help with that.")
    ([], 'no JSON array of question/answer objects in the reply')
    """
    if not text or not text.strip():
        return [], "the reply is empty"
    text = THINK.sub("", text)
    candidates = [m.group(1) for m in FENCE.finditer(text)] + [text]
    skipped = 0
    for candidate in candidates:
        for value in json_values(candidate, lenient=True):
            items = _pair_list(value)
            if items is None:
                continue
            pairs, seen = [], set()
            for item in items:
                pair = _pair(item)
                if pair is None:
                    skipped += 1
                elif pair["question"].casefold() not in seen:
                    seen.add(pair["question"].casefold())
                    pairs.append(pair)
            if pairs:
                return pairs[:n] if n else pairs, None
    if skipped:
        return [], f"{skipped} item(s) in the reply lack a non-empty question and answer"
    return [], "no JSON array of question/answer objects in the reply"


def _pair_list(value: Any) -> list | None:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        if _pair(value) is not None:
            return [value]
        if isinstance(value.get("pairs"), list):
            return value["pairs"]
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return lists[0]
    return None


def _pair(item: Any) -> dict | None:
    if not isinstance(item, dict):
        return None
    low = {str(k).strip().lower(): v for k, v in item.items()}
    q, a = low.get("question", low.get("q")), low.get("answer", low.get("a"))
    if isinstance(q, str) and isinstance(a, str) and q.strip() and a.strip():
        return {"question": q.strip(), "answer": a.strip()}
    return None


class TeacherEndpoint(Endpoint):
    """The project's `Endpoint`, with errors that name the --teacher-* flags."""

    def _unreachable(self, exc: Exception) -> UserError:
        return UserError(f"cannot reach the teacher endpoint {self.base_url} ({exc}): start a server with "
                         "`ftassist serve --model MODEL`, fix --teacher-url, or drop it to use templates")

    def _refused(self, exc: Exception) -> UserError:
        return UserError(f"the teacher endpoint {self.base_url} refused the API key ({exc}): pass its key with --teacher-api-key")

    def _unknown(self, missing: list[str], served: list[str]) -> UserError:
        listed = ", ".join(served) if served else "(none listed)"
        return UserError(f"the teacher endpoint {self.base_url} does not serve model {', '.join(missing)}; "
                         f"it serves: {listed}. Pass one of those with --teacher-model")


@dataclass
class TeacherStats:
    """What the teacher did over a build: passages asked, replies with pairs, pairs made, problems."""

    asked: int = 0
    answered: int = 0
    pairs: int = 0
    invalid: int = 0
    failed: int = 0
    structured: bool = False

    def to_dict(self) -> dict:
        return dict(vars(self))


@dataclass
class Teacher:
    """A teacher model at `url` serving `model`; `document_examples` turns a document into pairs."""

    endpoint: Endpoint
    url: str
    model: str
    pairs_per_passage: int = 2
    concurrency: int = 4
    max_tokens: int = 1024
    mode: str = "auto"
    progress: bool = True
    stats: TeacherStats = field(default_factory=TeacherStats)

    def __post_init__(self) -> None:
        self.stats.structured = self.mode != "none"

    @classmethod
    def connect(cls, cfg: DataConfig, progress: bool = True) -> "Teacher":
        """The teacher of `cfg`, after checking the endpoint answers and serves cfg.teacher_model.

        Raises UserError naming the URL (unreachable, key refused) or the model (not served).
        """
        endpoint = TeacherEndpoint(cfg.teacher_url or "", cfg.teacher_api_key, cfg.teacher_timeout)
        endpoint.check_models([cfg.teacher_model or ""])
        return cls(endpoint, endpoint.base_url, cfg.teacher_model or "", cfg.pairs_per_passage, cfg.teacher_concurrency,
                   cfg.teacher_max_tokens, cfg.teacher_response_format, progress)

    def ask(self, passage: str, title: str, heading: str | None) -> Reply:
        """One request for `passage`; under mode auto, a refused json_schema request is retried without it,
        and if that works structured outputs stay off for the rest of the build."""
        structured = self.stats.structured
        reply = self._request(passage, title, heading, structured)
        if structured and self.mode == "auto" and reply.error and reply.error.startswith(("HTTP 400", "HTTP 422")):
            plain = self._request(passage, title, heading, False)
            if plain.error is None:
                self.stats.structured = False
            return plain
        return reply

    def _request(self, passage: str, title: str, heading: str | None, structured: bool) -> Reply:
        n = self.pairs_per_passage
        return self.endpoint.chat(self.model, teacher_messages(passage, title, heading, n, structured), temperature=TEMPERATURE,
                                  max_tokens=self.max_tokens, response_format=response_format(n, self.max_tokens) if structured else None)

    def document_examples(self, path: Path, kind: str, split: str = "train") -> tuple[list[DataRow], list[Finding], str, str]:
        """(examples, findings, format id, reason) for one document file.

        Raises UserError if the file is unusable or the endpoint goes away (not for one bad reply).
        """
        passages = document_passages(path, kind)
        title = document_title(path)
        replies: dict[int, Reply] = {}
        bar = _progress_bar(len(passages), f"teacher {path.name}", self.progress)
        pool = ThreadPoolExecutor(max_workers=self.concurrency)
        try:
            futures = {pool.submit(self.ask, text, title, heading): i for i, (heading, text) in enumerate(passages)}
            for fut in as_completed(futures):
                replies[futures[fut]] = fut.result()
                bar.update(1)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()

        examples: list[DataRow] = []
        findings: list[Finding] = []
        empty = 0
        for i, (heading, text) in enumerate(passages):
            source = f"{path}:passage {i + 1}"
            reply = replies[i]
            self.stats.asked += 1
            if reply.error:
                self.stats.failed += 1
                empty += 1
                findings.append(Finding("teacher_request_failed", "warning", None, None,
                                        f"the teacher request for this passage failed ({reply.error}); it gets no pairs. "
                                        "Raise --teacher-timeout or --teacher-max-tokens, or check the server log", clip(text), source))
                continue
            pairs, why = parse_qa_pairs(reply.text, self.pairs_per_passage)
            if not pairs:
                self.stats.invalid += 1
                empty += 1
                cut = " (cut off at --teacher-max-tokens)" if reply.finish_reason == "length" else ""
                findings.append(Finding("teacher_reply_invalid", "warning", None, None,
                                        f"the teacher's reply has no usable pairs: {why}{cut}; this passage gets none. "
                                        "Use an instruction-tuned teacher, --teacher-response-format json_schema, or templates",
                                        clip(reply.text), source))
                continue
            self.stats.answered += 1
            self.stats.pairs += len(pairs)
            prov = {**provenance(path, i, heading, text, "teacher"), "model": self.model}
            examples += [DataRow(messages=[{"role": "user", "content": p["question"]}, {"role": "assistant", "content": p["answer"]}],
                                 source=f"{source} pair {j + 1}", split=split, fmt="document", meta={"provenance": prov})
                         for j, p in enumerate(pairs)]
        reason = (f"{kind.upper()} document: {len(passages)} passages, each sent to the teacher {self.model} at {self.url} "
                  f"for {self.pairs_per_passage} question/answer pairs: {len(examples)} pairs"
                  + (f"; {empty} passages gave none (see findings)" if empty else ""))
        return examples, findings, "document_teacher", reason

    def final_findings(self) -> list[Finding]:
        """An error when no passage of any document gave a pair (so the build cannot succeed on teacher data)."""
        if self.stats.asked and not self.stats.pairs:
            return [Finding("teacher_no_pairs", "error", None, None,
                            f"the teacher {self.model} at {self.url} gave no usable pairs for any of {self.stats.asked} passages; "
                            "use an instruction-tuned teacher or drop --teacher-url to make pairs with templates")]
        return []

    def describe(self) -> dict:
        """For report.json: where the teacher is, what it was asked and what it gave (no API key)."""
        return {"url": self.url, "model": self.model, "pairs_per_passage": self.pairs_per_passage,
                "temperature": TEMPERATURE, "response_format": "json_schema" if self.stats.structured else "none",
                **{k: v for k, v in self.stats.to_dict().items() if k != "structured"}}


def _progress_bar(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="passage", file=sys.stderr, disable=not enabled, leave=False)
