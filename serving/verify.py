"""The parity gate: the same probes, greedily, through every way the tuned model can run.

    ftassist verify runs/first --base-url http://127.0.0.1:8000/v1 --api-key KEY

Paths, each compared token by token with (1):
    adapter_hf    base + adapter in transformers (the reference: what training evaluated)
    merged_hf     the merged folder in transformers
    merged_vllm   the merged model through a running vLLM server (when one serves it)
    adapter_vllm  the adapter through the server (when one serves it)
The gate fails when any path agrees on fewer than 99% of tokens, or when the server's chat
template turns a probe into different tokens than training did. verify.json and verify.md
are written into the run folder, with the first divergence of each mismatch and likely causes.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftassist.endpoint import Endpoint
from ftassist.errors import UserError
from ftassist.files import write_json_atomic, write_text_atomic
from ftassist.markdown import table
from serving.parity import Mismatch, agreement, likely_causes, probe_set, trim_at_eos
from serving.run_folder import RunInfo, read_run

THRESHOLD = 0.99


@dataclass
class VerifyReport:
    """The gate's result; `passed` is what the CLI turns into exit code 0 or 1."""

    run_dir: str
    probes: int
    max_new_tokens: int
    agreement: dict[str, float]
    mismatches: list[Mismatch] = field(default_factory=list)
    template_ok: bool | None = None  # None: no server was checked
    template_detail: str = ""
    causes: list[str] = field(default_factory=list)
    threshold: float = THRESHOLD
    served: dict[str, str] = field(default_factory=dict)  # path -> served model name

    @property
    def passed(self) -> bool:
        return self.template_ok is not False and all(v >= self.threshold for v in self.agreement.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}

    def markdown(self) -> str:
        lines = [f"# Parity check: {'PASSED' if self.passed else 'FAILED'}", "",
                 f"{self.probes} probes, greedy, up to {self.max_new_tokens} new tokens; pass at >= {self.threshold:.0%} "
                 "token agreement with base + adapter in transformers.", "",
                 *table(["path", "agreement"], [[name, f"{value:.2%}"] for name, value in self.agreement.items()])]
        if self.template_ok is not None:
            lines += ["", f"Served chat template: {'same tokens as training' if self.template_ok else 'DIFFERENT'}"
                      + (f" ({self.template_detail})" if self.template_detail else "")]
        if self.mismatches:
            lines += ["", "## First divergences", ""] + [f"- {m.line()}" for m in self.mismatches]
        if self.causes:
            lines += ["", "## Likely causes", ""] + [f"- {c}" for c in self.causes]
        return "\n".join(lines) + "\n"


def hf_generate(model, tokenizer, prompts: list[list[int]], max_new_tokens: int, eos_ids: set[int]) -> list[list[int]]:
    """Greedy replies of a transformers model, one prompt at a time (no padding to blur the comparison)."""
    import torch

    outs = []
    with torch.inference_mode():
        for ids in prompts:
            input_ids = torch.tensor([ids], device=model.device)
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=sorted(eos_ids), pad_token_id=tokenizer.pad_token_id)
            outs.append(trim_at_eos(out[0, len(ids):].tolist(), eos_ids))
    return outs


def logit_margin(model, prompt: list[int], ref: list[int], pos: int, got: int | None) -> float | None:
    """Reference logit of the expected token minus that of the token the other path chose."""
    import torch

    if got is None or pos >= len(ref):
        return None
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + ref[:pos]], device=model.device)).logits[0, -1].float()
    return float(logits[ref[pos]] - logits[got])


def eos_token_ids(tokenizer, model) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@dataclass
class Reference:
    """What every other path is compared with: base + adapter in transformers, float32, greedy."""

    tokenizer: Any
    model: Any
    probes: list[list[dict]]  # message lists
    prompts: list[list[int]]  # their token ids under the training template
    eos: set[int]
    replies: list[list[int]]  # greedy reply tokens, up to and including eos


def load_reference(run: RunInfo, *, limit: int = 8, max_new_tokens: int = 32) -> Reference:
    """Load base + adapter of `run` and generate its greedy replies to the probe set."""
    import torch
    from transformers import AutoTokenizer

    from ftassist.model import resolve_model
    from serving.merge import merge_place

    tokenizer = AutoTokenizer.from_pretrained(run.weights_dir)
    probes = probe_set(run.test_path, limit=limit)
    encoded: list[Any] = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=True, return_dict=False)
                          for p in probes]
    prompts: list[list[int]] = [list(p["input_ids"] if isinstance(p, dict) else p) for p in encoded]
    # base + adapter unmerged (or the full run's model) in the precision and place the merge uses (`merge_place`):
    # float32 on a CPU; on a GPU the training precision the server runs too, not a float32 copy it could never match.
    placement = merge_place(run, str(run.weights_dir) if run.full else resolve_model(run.base_ref))
    model = run.load_model(getattr(torch, placement.dtype), merged=False,
                           device_map=placement.device_map if placement.device_map != "cpu" else None)
    eos = eos_token_ids(tokenizer, model)
    return Reference(tokenizer, model, probes, prompts, eos, hf_generate(model, tokenizer, prompts, max_new_tokens, eos))


def verify_run(run_dir: str | Path, merged_dir: str | Path | None = None, *, server=None, base_url: str | None = None,
               api_key: str | None = None, adapter_name: str | None = None, merged_name: str | None = None,
               max_new_tokens: int = 32, limit: int = 8, write: bool = True) -> VerifyReport:
    """Run the parity gate for a run folder; returns the report (and writes verify.json/.md there).

    `merged_dir` defaults to RUN_DIR/merged, else the adapter is merged into a temporary folder.
    `server` (a ServerProcess) or `base_url` adds the served paths; served models are found by the
    folder they serve (/v1/models `root`) unless `adapter_name`/`merged_name` are given.
    Raises `UserError` for an unusable run folder or an unreachable server.
    """
    from transformers import AutoModelForCausalLM

    from ftassist.config import MergeConfig
    from serving.merge import merge_adapter

    run = read_run(run_dir, for_merge=True)
    ref = load_reference(run, limit=limit, max_new_tokens=max_new_tokens)
    tokenizer, probes, prompts, reference, eos = ref.tokenizer, ref.probes, ref.prompts, ref.model, ref.eos

    with tempfile.TemporaryDirectory(prefix="ftassist-verify-") as tmp:
        merged = Path(merged_dir) if merged_dir else run.run_dir / "merged"
        if not (merged / "config.json").exists():
            merged = merge_adapter(MergeConfig(run_dir=str(run.run_dir), out=str(Path(tmp) / "merged")))
        outputs = {"adapter_hf": ref.replies}
        # The reference's precision and place (float32 on a CPU; the training precision on a GPU).
        ref_dtype, ref_device = reference.dtype, reference.device
        merged_model = AutoModelForCausalLM.from_pretrained(merged, dtype=ref_dtype, use_safetensors=True,
                                                            device_map=None if ref_device.type == "cpu" else "auto").eval()
        outputs["merged_hf"] = hf_generate(merged_model, tokenizer, prompts, max_new_tokens, eos)
        del merged_model

        served: dict[str, str] = {}
        template_ok, template_detail = None, ""
        if server is not None or base_url:
            target = endpoint(server, base_url, api_key)
            served = find_served(target, run, merged, adapter_name=adapter_name, merged_name=merged_name)
            for path, name in served.items():
                outputs[path], ok, detail = generate_served(target, name, probes, prompts, max_new_tokens, eos, tokenizer)
                template_ok = ok if template_ok is None else (template_ok and ok)
                template_detail = template_detail or detail

    report = compare(run, probes, prompts, outputs, reference, tokenizer, max_new_tokens)
    report.template_ok, report.template_detail, report.served = template_ok, template_detail, served
    report.causes = likely_causes(report.agreement, report.mismatches, template_ok, THRESHOLD)
    if write:
        data = report.to_dict()
        data["mismatches"] = [asdict(m) for m in report.mismatches]
        write_json_atomic(run.run_dir / "verify.json", data)
        write_text_atomic(run.run_dir / "verify.md", report.markdown())
    return report


def compare(run: RunInfo, probes: list, prompts: list[list[int]], outputs: dict[str, list[list[int]]], reference,
            tokenizer, max_new_tokens: int) -> VerifyReport:
    """Agreement of every path with adapter_hf, and the first divergence of each mismatched probe."""
    refs = outputs["adapter_hf"]
    scores: dict[str, float] = {}
    mismatches: list[Mismatch] = []
    for path, gots in outputs.items():
        if path == "adapter_hf":
            continue
        scores[path], divergences = agreement(refs, gots)
        for i, pos in enumerate(divergences):
            if pos is None:
                continue
            ref, got = refs[i], gots[i]
            got_tok = got[pos] if pos < len(got) else None
            mismatches.append(Mismatch(
                path=path, probe=i, position=pos,
                expected=tokenizer.decode(ref[pos:pos + 1]) if pos < len(ref) else "",
                got=tokenizer.decode([got_tok]) if got_tok is not None else "",
                context=tokenizer.decode(ref[:pos]),
                margin=logit_margin(reference, prompts[i], ref, pos, got_tok),
            ))
    return VerifyReport(run_dir=str(run.run_dir), probes=len(probes), max_new_tokens=max_new_tokens,
                        agreement=scores, mismatches=mismatches)


# --- the served side: which model is which on a running OpenAI-compatible server, and its greedy replies ---
# vLLM extensions used: `/v1/models` reports each model's `root` (the folder it serves), and `return_token_ids`
# makes a chat completion return the prompt's and the reply's token ids, so the served chat template is checked
# token for token against the training tokenizer.

def endpoint(server, base_url: str | None = None, api_key: str | None = None) -> Endpoint:
    """The `Endpoint` of a server this process started, else of `base_url`; no retries (the gate counts every reply)."""
    names = "--merged-name / --adapter-name"
    if server is not None:
        return Endpoint(server.base_url, server.api_key, max_retries=0, fix_model=names)
    return Endpoint(base_url or "", api_key, max_retries=0, fix_model=names)


def _same(a: str | None, b: Path) -> bool:
    if not a:
        return False
    return Path(a).expanduser().resolve() == b.expanduser().resolve()


def find_served(target: Endpoint, run: RunInfo, merged: Path, *, adapter_name: str | None = None,
                merged_name: str | None = None) -> dict[str, str]:
    """{'merged_vllm': name, 'adapter_vllm': name} for the run's models the server serves.

    Explicit names win; otherwise a model counts when its `root` is the merged folder or the
    run's adapter folder. Raises `UserError` for a name the server does not list, or when it
    serves none of the run's models.
    """
    models = target.models() or []
    names = {m["id"] for m in models}
    found: dict[str, str] = {}
    for path, name, folder in (("merged_vllm", merged_name, merged), ("adapter_vllm", adapter_name, run.weights_dir)):
        if name:
            if name not in names:
                raise UserError(f"{target.base_url} does not serve {name!r}; it serves {sorted(names)}")
            found[path] = name
            continue
        match = [m["id"] for m in models if _same(m.get("root"), folder)]
        if match:
            found[path] = match[0]
    if not found:
        raise UserError(f"{target.base_url} serves {sorted(names)}, none of them this run's merged folder or adapter: "
                        "name them with --merged-name / --adapter-name")
    return found


def generate_served(target: Endpoint, name: str, probes: list[list[dict]], prompts: list[list[int]],
                    max_new_tokens: int, eos: set[int], tokenizer) -> tuple[list[list[int]], bool, str]:
    """Greedy replies from served model `name`; returns (token ids per probe, template_ok, detail)."""
    outs, template_ok, detail = [], True, ""
    for i, (messages, local) in enumerate(zip(probes, prompts)):
        resp = target.complete(name, messages, max_tokens=max_new_tokens, temperature=0.0, seed=0,
                               extra_body={"return_token_ids": True, "skip_special_tokens": False})
        served_prompt = resp.get("prompt_token_ids") or []
        if served_prompt != local and template_ok:
            template_ok = False
            pos = next((k for k, (a, b) in enumerate(zip(served_prompt, local)) if a != b), min(len(served_prompt), len(local)))
            detail = (f"{name} probe {i}: prompt token {pos} differs; trained {tokenizer.decode(local[pos:pos + 8])!r}, "
                      f"served {tokenizer.decode(served_prompt[pos:pos + 8])!r}")
        outs.append(trim_at_eos(resp["choices"][0].get("token_ids") or [], eos))
    return outs, template_ok, detail



def served_replies(target: Endpoint, name: str, probes: list[list[dict]], max_tokens: int,
                   sampling: dict | None = None) -> list[tuple[str, int | None]]:
    """(reply text, prompt tokens the server counted) per probe, at temperature 0 with `sampling` sent as is."""
    out = []
    for messages in probes:
        resp = target.complete(name, messages, max_tokens=max_tokens, temperature=0.0, seed=0, extra_body=dict(sampling or {}))
        out.append((resp["choices"][0]["message"]["content"] or "", (resp.get("usage") or {}).get("prompt_tokens")))
    return out
