"""Pure pieces of the parity gate: the probe set, token agreement, and the first divergence.

    >>> agreement([[1, 2, 3]], [[1, 2, 4]])
    (0.6666666666666666, [2])
    >>> trim_at_eos([5, 2, 9], {2})
    [5, 2]
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftassist.files import read_jsonl

# A few general prompts beside the run's own test rows: they catch a template or weight problem
# that the task's narrow prompts would not show.
GENERAL_PROMPTS = (
    "Hello! Who are you?",
    "Write one sentence about the sea.",
    "List three colours, comma-separated.",
    'Reply with a JSON object {"ok": true}.',
)


def probe_set(test_path: Path | None, limit: int = 8) -> list[list[dict]]:
    """Prompts (message lists ending before the reply): up to `limit` test rows, then GENERAL_PROMPTS."""
    probes: list[list[dict]] = []
    if test_path is not None:
        for row in read_jsonl(test_path)[:limit]:
            messages = list(row.get("messages") or [])
            if messages and messages[-1].get("role") == "assistant":
                messages = messages[:-1]
            if messages:
                probes.append(messages)
    probes += [[{"role": "user", "content": text}] for text in GENERAL_PROMPTS]
    return probes


def trim_at_eos(tokens: list[int], eos_ids: set[int]) -> list[int]:
    """Tokens up to and including the first end-of-sequence id."""
    for i, tok in enumerate(tokens):
        if tok in eos_ids:
            return list(tokens[: i + 1])
    return list(tokens)


def first_divergence(ref: list[int], got: list[int]) -> int | None:
    """Index of the first differing token (a length difference counts), None when equal."""
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return i
    return None if len(ref) == len(got) else min(len(ref), len(got))


def agreement(refs: list[list[int]], gots: list[list[int]]) -> tuple[float, list[int | None]]:
    """Token-level agreement of two runs over all probes, and each probe's first divergence.

    Agreement = tokens before each first divergence / tokens of the longer reply, summed over
    probes: a reply that drifts at token 3 of 30 scores 3/30, however the rest compares.
    """
    agree = total = 0
    divergences: list[int | None] = []
    for ref, got in zip(refs, gots):
        pos = first_divergence(ref, got)
        divergences.append(pos)
        length = max(len(ref), len(got))
        agree += length if pos is None else pos
        total += length
    return (agree / total if total else 1.0), divergences


@dataclass
class Mismatch:
    """Where one path first left the reference on one probe."""

    path: str
    probe: int
    position: int
    expected: str  # reference token at that position ('' past its end)
    got: str
    context: str  # the reference reply before the divergence
    margin: float | None = None  # reference logit(expected) - logit(got); small = near-tie

    def line(self) -> str:
        margin = "" if self.margin is None else f", logit margin {self.margin:.4f}"
        return (f"{self.path} probe {self.probe}: token {self.position} expected {self.expected!r} got {self.got!r} "
                f"after {self.context[-60:]!r}{margin}")


NEAR_TIE = 0.05  # logits closer than this are a coin toss between kernels


def likely_causes(paths: dict[str, float], mismatches: list[Mismatch], template_ok: bool | None,
                  threshold: float, merged_dtype: str = "float32") -> list[str]:
    """Plain-language causes for a failed gate, most likely first (empty when it passed)."""
    causes = []
    if template_ok is False:
        causes.append("the served chat template differs from the one used in training: serve the merged folder "
                      "(it carries the training template) or pass vLLM --chat-template with the run's adapter/chat_template.jinja")
    low = {name for name, value in paths.items() if value < threshold}
    ties = [m for m in mismatches if m.path in low]
    if low and ties and all(m.margin is not None and abs(m.margin) < NEAR_TIE for m in ties):
        causes.append("every divergence is a numerical near-tie (the top two logits were almost equal), "
                      "not a model difference: compare in float32, or accept the gap")
    if "merged_hf" in low:
        causes.append(f"the merged weights do not reproduce base + adapter: merge in float32 (was {merged_dtype}), "
                      "and check the base the run was trained on (run.json base_model)")
    if low & {"merged_vllm", "adapter_vllm"} and "merged_hf" not in low:
        if low >= {"merged_vllm", "adapter_vllm"}:
            causes.append("the server computes differently from transformers: check its --dtype (bfloat16 vs the "
                          "float32 reference), its --max-model-len, and that it serves this run's model")
        elif "adapter_vllm" in low:
            causes.append("the server's adapter replies differ from base + adapter: check its --dtype first (a "
                          "bfloat16 server drifts from a float32-trained adapter at near-ties; serve with --dtype "
                          "float32), then the adapter it loaded (--lora-modules path, --max-lora-rank), or serve "
                          "the merged folder instead")
        else:
            causes.append("the served merged model differs from the merged folder: check that the server serves "
                          "this folder and its --dtype")
    return causes
