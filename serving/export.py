"""`ftassist export RUN_DIR --format gguf`: GGUF files and an Ollama Modelfile, proven to answer like the adapter.

    ftassist export runs/first --quant f16 --quant q4_k_m

Steps: merge (float32, unless RUN_DIR/merged exists) -> llama.cpp's converter to f16 (and q8_0)
-> llama.cpp's quantiser for q4_k_m -> the file's metadata checked against the training tokenizer
(chat template, eos id, vocabulary) -> a Modelfile beside the files -> each file served by
llama.cpp's OpenAI-compatible server and checked: the probes' prompts tokenised by llama.cpp as by
the training tokenizer, the served template as long as the training one, llama.cpp's greedy reply
tokens agreeing with base + adapter's (f16 must reach 99%; q8_0 and q4_k_m are reported), the
server answering exactly as llama.cpp in process (and how often it still does under its default
repeat_penalty of 1.1, which a client sending only temperature 0 gets), and the
JSON eval run on every file side by side (the first file is the eval's reference arm, so its
delta and McNemar test are the quantisation's cost). export.json and export.md record it all.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import requests

from ftassist.config import EvalConfig, ExportConfig, MergeConfig
from ftassist.errors import UserError
from ftassist.files import write_json_atomic, write_text_atomic
from ftassist.markdown import table
from serving import gguf
from serving.parity import Mismatch
from serving.run_folder import read_run
from serving.verify import THRESHOLD, Reference, compare, load_reference

RATES = ("field_accuracy", "exact", "schema_valid", "strict")  # the eval's figures shown per file, content first


@dataclass
class FileCheck:
    """One GGUF file: what it is and how it answered."""

    quant: str
    file: str
    bytes: int
    agreement: float | None = None  # greedy token agreement with base + adapter (llama.cpp in this process)
    tokens_ok: bool | None = None  # llama.cpp tokenises every probe prompt as training did
    template_ok: bool | None = None  # the server's prompt is as long as the training template's
    served_same: float | None = None  # probes the server answers exactly as llama.cpp in process (repeat_penalty 1.0)
    served_default: float | None = None  # probes answered like that with the server's default sampling (penalty 1.1)
    detail: str = ""
    mismatches: list[Mismatch] = field(default_factory=list)
    eval: dict[str, float] = field(default_factory=dict)  # the eval's rates for this file
    seconds: float = 0.0


@dataclass
class ExportReport:
    run_dir: str
    out: str
    files: list[FileCheck]
    modelfile: str
    metadata_problems: list[str]
    verified: bool
    eval_report: str | None = None
    threshold: float = THRESHOLD

    @property
    def gate(self) -> str:
        """The file that must agree with the adapter: f32 when written, else f16."""
        return "f32" if any(f.quant == "f32" for f in self.files) else "f16"

    @property
    def passed(self) -> bool:
        """The gate file agrees with the adapter in llama.cpp and through its server; every file tokenises and
        templates as training did; the metadata is right. (Smaller files' agreement is reported, not required.)"""
        ref = next((f for f in self.files if f.quant == self.gate), None)
        return (not self.metadata_problems and self.verified and ref is not None and (ref.agreement or 0) >= self.threshold
                and (ref.served_same or 0) >= self.threshold and all(f.tokens_ok and f.template_ok for f in self.files))

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed, "gate": self.gate}

    def markdown(self) -> str:
        head = "PASSED" if self.passed else ("NOT VERIFIED" if not self.verified else "FAILED")
        lines = [f"# GGUF export: {head}", "",
                 f"Files in {self.out}; the Modelfile uses {self.modelfile}. Greedy agreement with base + adapter "
                 f"(transformers, float32); {self.gate} must reach {self.threshold:.0%}.", "",
                 *table(["file", "size", "agreement", "tokenizer", "template", "server = llama.cpp", "with penalty 1.1", *RATES],
                        [[f.file, f"{f.bytes / 1e6:.1f} MB", percent(f.agreement), _yes(f.tokens_ok), _yes(f.template_ok),
                          percent(f.served_same), percent(f.served_default), *[percent(f.eval.get(r)) for r in RATES]]
                         for f in self.files])]
        if self.metadata_problems:
            lines += ["", "## Metadata", ""] + [f"- {p}" for p in self.metadata_problems]
        details = [f.detail for f in self.files if f.detail] + [m.line() for f in self.files for m in f.mismatches[:3]]
        if details:
            lines += ["", "## First divergences", ""] + [f"- {d}" for d in details]
        if self.eval_report:
            lines += ["", f"The JSON eval of every file, side by side with confidence intervals: {self.eval_report}"]
        lines += ["", "\"server = llama.cpp\": probes the OpenAI-compatible server answers exactly as llama.cpp in this "
                  "process, sent repeat_penalty 1.0; \"with penalty 1.1\": the same with the server's default sampling, "
                  "which is what a client that sends only temperature 0 gets (the eval sends 1.0; the Modelfile sets it).",
                  "", "Ollama: `ollama create NAME -f Modelfile` in this folder, then `ollama run NAME`."]
        return "\n".join(lines) + "\n"


def percent(value: float | None) -> str:
    """A share as '12.3%', '-' when unknown."""
    return "-" if value is None else f"{value:.1%}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("same" if value else "DIFFERENT")


def export_gguf(cfg: ExportConfig, progress=None) -> ExportReport:
    """Write the GGUF files, the Modelfile and (with cfg.verify) the checks; returns the report.

    Raises `UserError` for an unusable run, a missing converter or a conversion that fails.
    """
    say = progress or (lambda msg: None)
    cfg.validate()
    run = read_run(cfg.run_dir, for_merge=True)
    out = Path(cfg.out) if cfg.out else run.run_dir / "gguf"
    out.mkdir(parents=True, exist_ok=True)
    quants = list(dict.fromkeys(["f16", *cfg.quants]))  # f16: the quantiser's source, and the gate unless f32 is asked for
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run.weights_dir)
    files: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="ftassist-export-") as tmp:
        merged = run.run_dir / "merged"
        if not (merged / "config.json").exists():
            from serving.merge import merge_adapter

            say("export: merging the adapter (float32)")
            merged = merge_adapter(MergeConfig(run_dir=str(run.run_dir), out=str(Path(tmp) / "merged")))
        for quant in quants:
            target = out / f"model-{quant}.gguf"
            say(f"export: writing {target.name}")
            if quant in gguf.CONVERTER_TYPES:
                gguf.convert(merged, target, quant, pre_tokenizer=cfg.pre_tokenizer, log=out / f"convert-{quant}.log")
            else:
                gguf.quantize(files["f16"], target, quant)
            files[quant] = target
    problems = gguf.check_metadata(files["f16"], tokenizer)
    chosen = min((files[q] for q in cfg.quants), key=lambda f: f.stat().st_size).name  # the smallest asked for
    write_text_atomic(out / "Modelfile", gguf.modelfile(chosen, tokenizer, num_ctx=cfg.n_ctx))
    checks = [FileCheck(quant=q, file=p.name, bytes=p.stat().st_size) for q, p in files.items()]
    report = ExportReport(run_dir=str(run.run_dir), out=str(out), files=checks, modelfile=chosen,
                          metadata_problems=problems, verified=False)
    if cfg.verify:
        report.eval_report = verify_files(cfg, run, files, checks, out, say)
        report.verified = True
    write_json_atomic(out / "export.json", _serialisable(report))
    write_text_atomic(out / "export.md", report.markdown())
    return report


def _serialisable(report: ExportReport) -> dict:
    data = report.to_dict()
    for f, check in zip(data["files"], report.files):
        f["mismatches"] = [asdict(m) for m in check.mismatches]
    return data


def verify_files(cfg: ExportConfig, run, files: dict[str, Path], checks: list[FileCheck], out: Path, say) -> str | None:
    """Serve every file with llama.cpp, fill each check, run the JSON eval on all; returns the eval's folder."""
    from serving.llamacpp import SERVER_GREEDY, llama_generate, start_llama_server
    from serving.verify import endpoint, served_replies

    say("export: the reference replies (base + adapter, transformers)")
    ref = load_reference(run, limit=cfg.limit, max_new_tokens=cfg.max_new_tokens)
    with contextlib.ExitStack() as stack:
        servers = {}
        for check in checks:
            started = time.monotonic()
            say(f"export: serving {check.file} with llama.cpp")
            server = stack.enter_context(start_llama_server(files[check.quant], name=f"gguf-{check.quant}",
                                                            log_path=out / f"server-{check.quant}.log", n_ctx=cfg.n_ctx))
            servers[check.quant] = server
            check.tokens_ok, tok_detail = tokens_match(server, ref)
            tokens, texts = llama_generate(files[check.quant], ref.prompts, cfg.max_new_tokens, ref.eos, n_ctx=cfg.n_ctx)
            verdict = compare(run, ref.probes, ref.prompts, {"adapter_hf": ref.replies, check.quant: tokens},
                              ref.model, ref.tokenizer, cfg.max_new_tokens)
            check.agreement, check.mismatches = verdict.agreement[check.quant], verdict.mismatches
            target = endpoint(server)
            greedy = served_replies(target, server.base_name, ref.probes, cfg.max_new_tokens, SERVER_GREEDY)
            default = served_replies(target, server.base_name, ref.probes, cfg.max_new_tokens)
            check.served_same = sum(text == want for (text, _), want in zip(greedy, texts)) / len(texts)
            check.served_default = sum(text == want for (text, _), want in zip(default, texts)) / len(texts)
            lengths = [(i, n, len(ids)) for i, ((_, n), ids) in enumerate(zip(greedy, ref.prompts)) if n != len(ids)]
            check.template_ok = not lengths
            check.detail = tok_detail or (f"{server.base_name} probe {lengths[0][0]}: the served prompt is {lengths[0][1]} "
                                          f"tokens, the training template makes {lengths[0][2]}" if lengths else "")
            check.seconds = round(time.monotonic() - started, 1)
        return run_file_eval(cfg, run, servers, checks, out, say)


def tokens_match(server, ref: Reference) -> tuple[bool, str]:
    """Does llama.cpp tokenise each probe's prompt text exactly as the training tokenizer did?"""
    for i, (messages, ids) in enumerate(zip(ref.probes, ref.prompts)):
        text = ref.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        resp = requests.post(f"{server.root_url}/extras/tokenize", json={"input": text}, headers=server.headers(), timeout=30)
        resp.raise_for_status()
        got = resp.json()["tokens"]
        if got != ids:
            pos = next((k for k, (a, b) in enumerate(zip(got, ids)) if a != b), min(len(got), len(ids)))
            return False, (f"{server.base_name} probe {i}: llama.cpp splits the prompt differently from token {pos} "
                           f"(training {ref.tokenizer.decode(ids[pos:pos + 6])!r}, llama.cpp "
                           f"{ref.tokenizer.decode(got[pos:pos + 6])!r}): the pre-tokenizer is wrong")
    return True, ""


def run_file_eval(cfg: ExportConfig, run, servers: dict, checks: list[FileCheck], out: Path, say) -> str | None:
    """The JSON eval on every served file, side by side; fills each check's rates."""
    from ftassist.evaluation.harness import run_eval
    from serving.llamacpp import SERVER_GREEDY

    if run.test_path is None:
        return None
    eval_out = out / "eval"
    models = [f"{check.quant}={servers[check.quant].base_name}@{servers[check.quant].base_url}" for check in checks]
    keys = {check.quant: servers[check.quant].api_key for check in checks}
    shutil.rmtree(eval_out, ignore_errors=True)
    try:
        result = run_eval(EvalConfig(models=models, api_keys=keys, data=str(run.test_path), out=str(eval_out),
                                     limit=cfg.eval_limit, concurrency=1, forgetting_probe=False,
                                     sampling={k: str(v) for k, v in SERVER_GREEDY.items()},
                                     history=str(out / "history.jsonl")), progress=say)
    except UserError as exc:
        raise UserError(f"the JSON eval of the GGUF files failed: {exc}") from exc
    by_name = {a["name"]: a for a in result.arms}
    for check in checks:
        arm = by_name.get(check.quant, {})
        figures = {**arm.get("rates", {}), **arm.get("means", {})}
        check.eval = {r: figures[r]["value"] for r in RATES if r in figures}
    return str(eval_out)
