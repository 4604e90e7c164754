"""Compare step: stream base and tuned replies side by side from the server, and run the JSON eval.

`stream_compare` runs one streaming request per model in threads and yields snapshots, so the
UI shows both replies growing together, each with its time to first token and total time.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ftassist.config import EvalConfig
from ftassist.errors import UserError
from ftassist.files import read_jsonl

NO_SERVER = "No server is running: start one first (Serve tab, or the **Start the server** button in the chat)."


@dataclass
class StreamedReply:
    text: str = ""
    first_token_s: float | None = None
    total_s: float | None = None
    error: str | None = None

    def caption(self) -> str:
        if self.error:
            return f"error: {self.error}"
        if self.total_s is None:
            return "streaming…" if self.first_token_s is not None else "waiting…"
        return f"first token {self.first_token_s or 0:.2f} s · total {self.total_s:.2f} s"


def first_test_prompt(data_dir: str | None) -> list[dict]:
    """The messages of the first test example without its reference reply."""
    if not data_dir or not (Path(data_dir) / "test.jsonl").exists():
        raise UserError("no test split yet: build the data first (Data step)")
    row = read_jsonl(Path(data_dir) / "test.jsonl")[0]
    msgs = row["messages"]
    return msgs[:-1] if msgs and msgs[-1]["role"] == "assistant" else msgs


def stream_compare(info: Any, messages: list[Any], models: list[str], max_tokens: int = 128) -> Iterator[dict[str, StreamedReply]]:
    """Yield {model: StreamedReply} snapshots while every model streams; the last one has every total."""
    if info is None:
        raise UserError(NO_SERVER)
    from ftassist.endpoint import Endpoint

    client = Endpoint(info.base_url, info.api_key).client  # streamed: the client itself, errors shown per pane
    replies = {m: StreamedReply() for m in models}
    events: queue.Queue = queue.Queue()

    def worker(model: str) -> None:
        t0 = time.perf_counter()
        try:
            stream = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens,
                                                    temperature=0.0, stream=True)
            for chunk in stream:
                delta = chunk.choices[0].delta.content if chunk.choices else None
                if delta:
                    events.put((model, "delta", delta, time.perf_counter() - t0))
            events.put((model, "done", None, time.perf_counter() - t0))
        except Exception as exc:  # noqa: BLE001 - any client error is shown in that model's pane
            events.put((model, "error", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))

    threads = [threading.Thread(target=worker, args=(m,), daemon=True) for m in models]
    for t in threads:
        t.start()
    pending = set(models)
    while pending:
        model, kind, payload, elapsed = events.get()
        reply = replies[model]
        if kind == "delta":
            reply.text += payload
            if reply.first_token_s is None:
                reply.first_token_s = elapsed
        elif kind == "done":
            reply.total_s = elapsed
            pending.discard(model)
        else:
            reply.error, reply.total_s = payload, elapsed
            pending.discard(model)
        yield replies


def compare_markdown(replies: dict[str, StreamedReply]) -> str:
    """Both replies in one chat message."""
    parts = []
    for model, r in replies.items():
        parts += [f"**{model}** — {r.caption()}", "```text", r.text or " ", "```"]
    return "\n".join(parts)


def run_evaluation(info: Any, data_dir: str | None, out: Path, limit: int = 0) -> Any:
    """The eval of every served model on the test split, each also under structured outputs when the data
    has a schema, with the forgetting probe; returns the EvalResult."""
    if info is None:
        raise UserError(NO_SERVER)
    if not data_dir or not (Path(data_dir) / "test.jsonl").exists():
        raise UserError("no test split yet: build the data first (Data step)")
    from ftassist.evaluation.harness import run_eval

    schema = Path(data_dir) / "schema.json"
    cfg = EvalConfig(base_url=info.base_url, models=list(info.models), data=str(Path(data_dir) / "test.jsonl"),
                     schema=str(schema) if schema.exists() else None, out=str(out), api_key=info.api_key,
                     limit=limit, constrained=schema.exists(), forgetting_probe=True)
    cfg.validate()
    return run_eval(cfg)


def eval_chart(result: Any) -> str | None:
    path = Path(result.out) / "rates.png"
    return str(path) if path.exists() else None


def eval_markdown(result: Any) -> str:
    """The eval for the page: the verdict on the content and the next step first, the tuned model's
    fields in plain words, whether it forgot general skills, then the table of rates."""
    from ftassist.evaluation.report import content_verdicts

    head = "\n".join(content_verdicts(result.arms)).replace("## Verdict: is the content right?", "**Is the content right?**")
    parts = [head, *field_sentences(result.arms), *probe_sentences(result.report.get("probe"))]
    return "\n".join(p for p in parts if p) + f"\n\n**All rates** (95% intervals)\n\n{result.table}"


def field_sentences(arms: list[dict]) -> list[str]:
    """The last unconstrained arm's fields in plain words, weakest first."""
    arm = next((a for a in reversed(arms) if a.get("content") and not a.get("constrained")), None)
    if arm is None:
        return []
    fields = sorted(arm["content"]["fields"], key=lambda f: f["accuracy"] if f["accuracy"] is not None else 1.0)
    out = [f"\n**Field by field ({arm['name']})**"]
    for f in fields:
        acc = f["accuracy"]
        words = "always right" if acc == 1 else ("never right" if not acc else f"right {100 * acc:.0f}% of the time")
        extra = ""
        if "top_mistake" in f:
            m = f["top_mistake"]
            extra = f"; most often `{m['reference']}` answered as `{m['replied']}` ({m['count']} of {m['of']})"
        elif f.get("mean_abs_error") is not None and acc != 1:
            extra = f"; off by {f['mean_abs_error']:.3g} on average"
        out.append(f"- `{f['field']}` ({f['kind']}): {words}{extra}")
    mistakes = arm["content"].get("mistakes") or {}
    if mistakes.get("kinds"):
        out.append("\n**What kind of wrong**: " + ", ".join(f"{k.replace('_', ' ')} {n}" for k, n in mistakes["kinds"][:4])
                   + f". The commonest: {mistakes['advice']} (the report shows the {len(mistakes['worst_rows'])} worst "
                   "rows side by side).")
    return out


def probe_sentences(probe: dict | None) -> list[str]:
    """Did training make it forget general instructions? One line per arm probed."""
    if not probe:
        return []
    n = len(probe["probes"])
    out = ["\n**Did it forget?** General-instruction probe (arithmetic, a summary, a refusal, ...):"]
    out += [f"- {name}: {total}/{n} passed" for name, total in probe["totals"].items()]
    return out
