"""Serve step: start vLLM with the base model and the tuned adapter, and remember it on disk.

The server is its own process group; its record (`serving.registry`, `server.json` in the visitor's
workspace) lets their page, after a reload or an app restart, find it again and stop it. The runs
folder is never served by path, so the key stays on the server.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from ftassist.config import ServeConfig
from ftassist.errors import UserError
from ftassist.markdown import table
from ftassist.snippets import cli_command, curl_snippet, python_snippet
from serving.registry import TUNED_NAME, ServerRecord, write_server_record


def serve_config(model: str, run_dir: str | None, log_dir: Path, port: int | None = None) -> ServeConfig:
    """Base model plus the run's adapter (as "tuned"), loopback, a fresh API key, quick start. A full fine-tuning
    run's model is served alone as "tuned" (one vLLM server serves one model; its adapters share that base)."""
    from ftassist.process import free_port
    from ftassist.train.weights import FULL_DIR, trained_weights

    adapters, served = {}, "base"
    if run_dir:
        weights = trained_weights(Path(run_dir))
        if weights is None:
            raise UserError(f"run {Path(run_dir).name} has no adapter yet: wait until training completes")
        if weights.name == FULL_DIR:
            model, served = str(weights), TUNED_NAME
        else:
            adapters[TUNED_NAME] = str(weights)
    return ServeConfig(model=model, adapters=adapters, served_name=served, port=port or free_port(),
                       api_key="ft-" + secrets.token_urlsafe(12), enforce_eager=True, dtype="auto",
                       log_file=str(log_dir / "server.log"))


def served_models(run_dir: str | None) -> str:
    """What `serve_config` serves for `run_dir`, in words."""
    from ftassist.train.weights import FULL_DIR, trained_weights

    weights = trained_weights(Path(run_dir)) if run_dir else None
    if weights is not None and weights.name == FULL_DIR:
        return "the fully fine-tuned model as `tuned` (one model per server: `base` is not served beside it)"
    return "`base` and `tuned`"


def start_serving(cfg: ServeConfig, record: Path, run_dir: str | None = None) -> ServerRecord:
    """Start the server (blocks ~40-60 s until it answers) and write its record to `record` (a server.json)."""
    from serving.launch import start_server

    cfg.validate()
    server = start_server(cfg)
    info = ServerRecord.of(server, command=cli_command("serve", cfg), run_dir=run_dir, gpu=cfg.gpu)
    write_server_record(record, info)
    return info


def describe_server(info: ServerRecord) -> str:
    """Markdown: URL, model names, key, and copy-ready curl and Python snippets."""
    model = info.tuned or info.models[0]
    return "\n".join([
        f"**Server ready** at `{info.base_url}`",
        f"- models: {', '.join(f'`{m}`' for m in info.models)}",
        f"- API key: `{info.api_key}`",
        "",
        "curl:",
        "```bash", curl_snippet(info.base_url, model, info.api_key), "```",
        "Python (openai):",
        "```python", python_snippet(info.base_url, model, info.api_key).rstrip(), "```",
        "Same server from the command line:",
        "```bash", info.command, "```",
    ])


def merge_and_verify(run_dir: str | Path, info: Any = None) -> tuple[Path, Any]:
    """Merge the run's adapter into RUN_DIR/merged (kept when already there) and run the parity gate:
    the merged model (and, with a live `info` server, the served adapter) against base + adapter.
    Returns (merged folder, the VerifyReport); verify.md/json land in the run folder."""
    from ftassist.config import MergeConfig
    from serving.merge import merge_adapter
    from serving.verify import verify_run

    run = Path(run_dir)
    merged = run / "merged"
    if not (merged / "config.json").is_file():
        merge_adapter(MergeConfig(run_dir=str(run), out=str(merged)))
    report = verify_run(run, merged, base_url=info.base_url if info is not None else None,
                        api_key=info.api_key if info is not None else None,
                        adapter_name="tuned" if info is not None and "tuned" in info.models else None)
    return merged, report


def verify_markdown(report: Any) -> str:
    """The parity gate for the chat: passed or not, agreement per path, and the likely causes when not."""
    head = ("**Parity check passed**: the merged model answers like the adapter that was trained." if report.passed
            else "**Parity check FAILED**: the exported model does not answer like the adapter.")
    rows = table(["path", "token agreement with base + adapter"], [[p, f"{v:.1%}"] for p, v in report.agreement.items()])
    text = "\n".join([head, "", *rows])
    if getattr(report, "causes", None):
        text += "\n\nLikely causes:\n" + "\n".join(f"- {c}" for c in report.causes)
    return text


APP_QUANTS = ("f16", "q4_k_m")  # the parity reference and the file most Ollama users run


def export_gguf_files(run_dir: str | Path, eval_rows: int) -> Any:
    """`ftassist export` for the app: f16 + q4_k_m, the eval on `eval_rows` test rows; returns the ExportReport.

    A tokenizer llama.cpp's converter does not know is taken as byte-level BPE (gpt-2 splitting); the
    export's tokenizer check then says whether llama.cpp really splits the probes as training did.
    """
    from ftassist.config import ExportConfig
    from serving.export import export_gguf

    return export_gguf(ExportConfig(run_dir=str(run_dir), quants=list(APP_QUANTS), eval_limit=eval_rows,
                                    pre_tokenizer="gpt-2"))


def export_markdown(report: Any) -> str:
    """The export for the chat: verdict, then agreement and the eval's content figures per file, then how to run it."""
    from serving.export import percent
    head = (f"**GGUF export verified**: {report.gate} answers like the adapter in llama.cpp." if report.passed
            else "**GGUF export NOT verified**: see the figures and export.md before using these files.")
    rows = table(["file", "size", "token agreement with the adapter", "fields right", "whole object right", "schema-valid"],
                 [[f.file, f"{f.bytes / 1e6:.0f} MB", percent(f.agreement), percent(f.eval.get("field_accuracy")),
                   percent(f.eval.get("exact")), percent(f.eval.get("schema_valid"))] for f in report.files])
    text = "\n".join([head, "", *rows])
    if report.metadata_problems:
        text += "\n\nIn the file: " + "; ".join(report.metadata_problems)
    return (text + f"\n\nFiles, `Modelfile` and the full report (export.md) are in `{report.out}`. Ollama: "
            f"`ollama create mymodel -f Modelfile` there; llama.cpp: `llama-server -m {report.modelfile}` "
            "(send repeat_penalty 1.0: its default of 1.1 changes greedy replies).")
