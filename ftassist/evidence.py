"""Evidence before advice: what the base model already gets right on the user's own rows, untrained.

Before recommending fine-tuning, `measure_prompting` runs the base model on a sample of the
built test split two ways, in this process (no server):

- **prompting**: a good instruction (the JSON Schema, "reply with the JSON object only") and a few
  examples from the training split as earlier turns, then the row's own prompt;
- **prompting + structured outputs**: the same, with generation constrained to the schema
  (xgrammar, the grammar engine vLLM's structured outputs use; it comes with vLLM, and where it
  is not installed this arm is left out and the evidence says so).

Each reply is scored with the eval's own scorer, so the figures mean what `ftassist eval`'s do.
`advisor.advise_from_evidence` turns them into the recommendation.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftassist.config import EvidenceConfig
from ftassist.errors import UserError

PROMPTING = "prompting"
STRUCTURED = "prompting + structured outputs"
SAMPLE_ROWS, SHOTS = 8, 3


@dataclass(frozen=True)
class ArmFigures:
    """One arm's rates on the sample (0-1) and its wall seconds."""

    name: str
    rows: int
    strict: float
    schema_valid: float
    field_accuracy: float
    exact: float
    per_field: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    sample: str = ""  # the arm's reply to the first sampled row, to show

    def sentence(self) -> str:
        return (f"{self.name}: {100 * self.schema_valid:.0f}% schema-valid, {100 * self.field_accuracy:.0f}% of fields "
                f"right, {100 * self.exact:.0f}% whole objects right")


@dataclass(frozen=True)
class Evidence:
    """The measured arms on `rows` test rows with `shots` examples in the prompt, from `model`."""

    arms: tuple[ArmFigures, ...]
    rows: int
    shots: int
    model: str
    task: str = "json"

    def arm(self, name: str) -> ArmFigures | None:
        return next((a for a in self.arms if a.name == name), None)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Evidence:
        return cls(tuple(ArmFigures(**a) for a in d["arms"]), d["rows"], d["shots"], d["model"], d.get("task", "json"))


def instruction(schema: dict | None) -> str:
    """The system prompt of the prompting arms: the schema and "the JSON object only"."""
    text = "You turn the user's message into a JSON object. Reply with the JSON object only: no prose, no code fences."
    if schema:
        text += " The object must match this JSON Schema:\n" + json.dumps(schema, ensure_ascii=False)
    return text


def few_shot_prompt(prompt: list[dict], shots: list[dict], schema: dict | None) -> list[dict]:
    """The row's `prompt` with the instruction first and `shots` (train rows) as earlier user/assistant turns."""
    own_system = [m["content"] for m in prompt if m.get("role") == "system"]
    system = instruction(schema) + ("\n\n" + own_system[0] if own_system else "")
    turns: list[dict] = [{"role": "system", "content": system}]
    for row in shots:
        msgs = [m for m in row["messages"] if m.get("role") != "system"]
        turns += msgs[-2:]
    return turns + [m for m in prompt if m.get("role") != "system"]


def gather(cfg: EvidenceConfig) -> Evidence:
    """`measure_prompting` for an EvidenceConfig (the CLI's and the app's way in); writes DATA/evidence.json."""
    from ftassist.files import write_json_atomic

    cfg.validate()
    evidence = measure_prompting(cfg.data, cfg.model, rows=cfg.rows, shots=cfg.shots, seed=cfg.seed)
    write_json_atomic(Path(cfg.data) / "evidence.json", evidence.to_dict())
    return evidence


def measure_prompting(data_dir: str | Path, model: str | None = None, rows: int = SAMPLE_ROWS, shots: int = SHOTS,
                      seed: int = 0) -> Evidence:
    """Score the base `model` on up to `rows` test rows of the built `data_dir`, prompted and constrained.

    Raises UserError when the folder is not a built data set or its replies are not JSON (the
    structured-outputs arm needs a schema; free-text tasks get the prompting arm only).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftassist.evaluation.metrics import make_validator, score_reply
    from ftassist.evaluation.testset import load_examples
    from ftassist.files import read_jsonl
    from ftassist.model import resolve_model
    from ftassist.schema import load_schema
    from ftassist.train.validation import generate_replies, max_reply_tokens, summarize_scores

    data = Path(data_dir)
    if not (data / "test.jsonl").is_file() or not (data / "train.jsonl").is_file():
        raise UserError(f"{data}: no train.jsonl/test.jsonl; build the data set first (`ftassist data build`)")
    examples, task = load_examples(data / "test.jsonl")
    if task != "json":
        raise UserError(f"{data}: the replies are free text; measuring prompting against a schema needs JSON replies")
    schema = load_schema(data / "schema.json") if (data / "schema.json").is_file() else None
    validator = make_validator(schema or {})
    rng = random.Random(seed)
    sample = rng.sample(examples, min(rows, len(examples)))
    train = read_jsonl(data / "train.jsonl")
    shot_rows = rng.sample(train, min(shots, len(train)))
    path = resolve_model(model)
    tok = AutoTokenizer.from_pretrained(path)
    net = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    prompts = [few_shot_prompt(e.prompt, shot_rows, schema) for e in sample]
    budget = max_reply_tokens(tok, sample)
    arms = []
    for name in (PROMPTING, STRUCTURED) if schema and structured_outputs_available() else (PROMPTING,):
        started = time.time()
        constrain = schema_constraint(tok, net, schema) if name == STRUCTURED else None
        with torch.no_grad():
            replies = generate_replies(net, tok, prompts, budget, logits_processors=constrain)
        scores = [score_reply(r, e.reference, validator) for r, e in zip(replies, sample)]
        m = summarize_scores(scores, "json")
        arms.append(ArmFigures(name, len(sample), m["strict"], m["schema_valid"], m["field_accuracy"], m["exact"],
                               m["per_field"], round(time.time() - started, 1), replies[0][:400]))
    return Evidence(tuple(arms), len(sample), len(shot_rows), str(model or path))


def structured_outputs_available() -> bool:
    """True when xgrammar (vLLM's structured-outputs engine, installed with vLLM) can be imported."""
    import importlib.util

    return importlib.util.find_spec("xgrammar") is not None


def schema_constraint(tokenizer: Any, model: Any, schema: dict | None):
    """A factory of fresh logits processors (one per generate call) that keep replies inside `schema`."""
    import xgrammar as xgr
    from xgrammar.contrib.hf import LogitsProcessor

    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=model.config.vocab_size)
    compiler = xgr.GrammarCompiler(info)
    sent = {k: v for k, v in (schema or {}).items() if k != "$schema"}
    # compact, as the references are written: free whitespace lets a weak model pad a reply with tabs
    grammar = (compiler.compile_json_schema(json.dumps(sent), any_whitespace=False, separators=(", ", ": ")) if sent
               else compiler.compile_builtin_json_grammar())
    return lambda: [LogitsProcessor(grammar)]
