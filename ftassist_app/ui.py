"""The Gradio Blocks: the assistant chat first, then tabs for direct control of each stage.

The only module that imports gradio. Every handler is a few lines over `conversation` or a
step module, inside the caller's workspace; `_guard` turns the library's UserError/ConfigError
into `gr.Error` messages. Nothing is served by path: files reach the page only as outputs.
"""

from __future__ import annotations

import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ftassist.config import TrainConfig
from ftassist.train.search import CANDIDATES as SEARCH_CANDIDATES
from ftassist.errors import UserError
from ftassist_app import compare_step, conversation, data_step, limits, serve_step, train_step
from serving import registry
from ftassist_app.session import Session
from ftassist_app.settings import AppSettings
from ftassist_app.workspace import (Workspace, app_secret, issue_token, public_text, run_archive, viewable_copy,
                                    workspace_for)

N_QUICK = 6
MAP_ROLES = ("instruction", "input", "output", "system")
NO_COLUMN = "(none)"
UPLOAD_TYPES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".xlsx", ".txt", ".md", ".pdf", ".docx"]
CSS = ".quick-row button {flex: 0 0 auto !important; min-width: 0 !important}"


def _guard(fn: Callable, settings: AppSettings | None = None) -> Callable:
    """Run `fn`, turning a user's mistake into a gr.Error (a message, not a traceback; no server paths for a remote visitor)."""
    def error(exc: UserError) -> gr.Error:
        text = public_text(settings, str(exc)) if settings is not None else str(exc)
        return gr.Error(text, print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as exc:
                raise error(exc) from exc
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise error(exc) from exc
    return call


def chat_messages(s: Session, ws: Workspace) -> list[dict[str, Any]]:
    """The transcript for the Chatbot: text as the visitor may see it, the workspace's images as copies gradio may send."""
    out = []
    for m in s.messages:
        content = m["content"]
        if isinstance(content, dict):
            path = content.get("path")
            if not (path and ws.owns(path) and Path(path).is_file()):
                continue
            content = {"path": viewable_copy(path)}
        else:
            content = ws.public(content)
        out.append({"role": m["role"], "content": content})
    return out


def quick_updates(s: Session) -> list[Any]:
    labels = s.quick[:N_QUICK]
    return [gr.update(value=labels[i], visible=True) if i < len(labels) else gr.update(visible=False)
            for i in range(N_QUICK)]


def mapping_updates(s: Session) -> list[Any]:
    """The mapping panel (shown while a table's mapping is on show) and one dropdown per role."""
    req = s.mapping_request if s.stage == "data" else None
    if not req:
        return [gr.update(visible=False), *[gr.skip()] * len(MAP_ROLES)]
    chosen = s.column_map or req["mapping"]
    choices = [NO_COLUMN, *req["columns"]]
    return [gr.update(visible=True), *[gr.update(choices=choices, value=chosen.get(r) or NO_COLUMN) for r in MAP_ROLES]]


def image_update(path: str | None) -> Any:
    return gr.update(value=viewable_copy(path) if path else None, visible=path is not None)


def build_app(settings: AppSettings) -> gr.Blocks:
    """The whole app for `settings` (no launch).

    Every handler resolves the caller's workspace first (`who`): the login's user name, else the
    browser's signed token (kept in localStorage by `gr.BrowserState`); a caller with neither is
    refused. Only `submit`, `build_data`, `jobs` and `download` are public API endpoints.
    """
    guard = functools.partial(_guard, settings=settings)
    oauth = bool(settings.on_space and os.environ.get("OAUTH_CLIENT_ID"))
    with gr.Blocks(title="ftassist", delete_cache=(900, 3600)) as demo:
        token = gr.BrowserState("", storage_key="ftassist-workspace", secret=browser_secret(settings))
        session = gr.State(None)
        with gr.Row():
            gr.Markdown("## ftassist — decide, prepare, fine-tune, compare, serve")
            if oauth:
                gr.LoginButton(size="sm")
        with gr.Tabs():
            with gr.Tab("Assistant", id="assistant"):
                chatbot = gr.Chatbot(label="Assistant", height=520, elem_id="chat", feedback_options=None,
                                     buttons=["copy"], group_consecutive_messages=False)
                with gr.Row(elem_classes="quick-row"):
                    quick = [gr.Button(visible=False, size="sm", elem_classes="quick") for _ in range(N_QUICK)]
                with gr.Group(visible=False, elem_id="mapping-panel") as map_panel:
                    with gr.Row():
                        map_drops = [gr.Dropdown(label=data_step.ROLE_WORDS[role], choices=[], elem_id=f"map-{role}",
                                                 interactive=True) for role in MAP_ROLES]
                    map_use = gr.Button("Use this mapping", size="sm", variant="primary", elem_id="map-use")
                box = gr.MultimodalTextbox(placeholder="Type an answer, or drop your data files here",
                                           file_count="multiple", file_types=UPLOAD_TYPES, show_label=False,
                                           elem_id="chat-input")
                with gr.Group(visible=False, elem_id="progress-panel") as panel:
                    progress = gr.Markdown(elem_id="progress")
                    loss_plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=240)
                    metric_plot = gr.LinePlot(x="step", y="value", color="metric", y_lim=[0, 1], height=240,
                                              title="Task metric on the validation split (what the kept step is chosen by)")
                    with gr.Row():
                        cancel_btn = gr.Button("Cancel training", size="sm", variant="stop")
                        resume_btn = gr.Button("Resume training", size="sm")
            with gr.Tab("Data", id="data"):
                d_files = gr.File(label="Data files", file_count="multiple", file_types=UPLOAD_TYPES, elem_id="data-files")
                with gr.Row():
                    d_dups = gr.Checkbox(label="Drop duplicates")
                    d_pii = gr.Checkbox(label="Mask personal data")
                    d_long = gr.Checkbox(label="Drop over-long examples")
                    d_invalid = gr.Checkbox(label="Drop invalid rows")
                d_build = gr.Button("Check and build", variant="primary")
                d_report = gr.Markdown()
                d_chart = gr.Image(label="Token lengths", visible=False)
                d_findings = gr.Dataframe(headers=data_step.FINDING_COLUMNS, label="Findings (every one, errors first)",
                                          interactive=False, wrap=True, elem_id="findings", visible=False)
                d_report_file = gr.File(label="The data report", visible=False, interactive=False)
                d_schema = gr.Code(language="json", label="Schema (inferred or given): edit it, tick the box, build again",
                                   interactive=True, elem_id="schema-editor")
                d_use_schema = gr.Checkbox(label="Build with the schema as edited above", elem_id="use-schema")
            with gr.Tab("Train", id="train"):
                with gr.Row():
                    t_lora_r = gr.Number(label="LoRA rank (lora_r)", value=TrainConfig.lora_r, precision=0, minimum=1)
                    t_lr = gr.Number(label="Learning rate (0: the planner's)", value=TrainConfig.learning_rate, minimum=0)
                    t_epochs = gr.Number(label="Epochs budget (0: the planner's; the task metric decides when to stop)",
                                         value=TrainConfig.epochs, minimum=0)
                    t_steps = gr.Number(label="Max steps (-1: use epochs)", value=TrainConfig.max_steps, precision=0)
                    t_maxlen = gr.Number(label="max_length", value=TrainConfig.max_length, precision=0, minimum=16)
                    t_reward = gr.Number(label="Rows held out for a reward stage after SFT (a fraction or a count; 0: none)",
                                         value=TrainConfig.reward_size, minimum=0, elem_id="reward-size")
                with gr.Row():
                    t_plan = gr.Button("Plan")
                    t_start = gr.Button("Start training", variant="primary")
                    t_search = gr.Button("Search settings within the time budget")
                t_explain = gr.Markdown()
                t_jobs = gr.Dataframe(headers=["run", "state", "step", "total"], label="Your jobs", interactive=False,
                                      elem_id="jobs")
                with gr.Row():
                    t_run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True, elem_id="run-pick")
                    t_refresh = gr.Button("Refresh", size="sm")
                    t_cancel = gr.Button("Cancel", size="sm", variant="stop")
                    t_resume = gr.Button("Resume", size="sm")
                    t_download = gr.Button("Download adapter + reports", size="sm")
                with gr.Row():
                    t_stage = gr.Radio([(f"{k}: {v}", k) for k, v in train_step.STAGES.items()], value="dpo",
                                       label="After SFT: a reward stage that learns from the model's own mistakes")
                    t_stage_go = gr.Button("Improve the picked run with this stage", size="sm", elem_id="stage-go")
                t_status = gr.Markdown(elem_id="run-status")
                t_file = gr.File(label="Download", visible=False, interactive=False)
                t_plot = gr.LinePlot(x="step", y="loss", title="Training loss", height=240)
                t_metric_plot = gr.LinePlot(x="step", y="value", color="metric", y_lim=[0, 1], height=240,
                                            title="Task metric on the validation split")
            with gr.Tab("Compare", id="compare"):
                c_prompt = gr.Textbox(label="Prompt (empty: the first test example)", lines=3)
                c_go = gr.Button("Ask both", variant="primary")
                with gr.Row():
                    c_base = gr.Chatbot(label="base", height=360, feedback_options=None)
                    c_tuned = gr.Chatbot(label="tuned", height=360, feedback_options=None)
                c_latency = gr.Markdown()
            with gr.Tab("Evaluate", id="evaluate"):
                e_limit = gr.Number(label="Examples (0: all of the test split)", value=0, precision=0, minimum=0)
                e_go = gr.Button("Run JSON-compliance eval", variant="primary")
                e_table = gr.Markdown()
                e_chart = gr.Image(label="Rates", visible=False)
            with gr.Tab("Serve", id="serve"):
                with gr.Row():
                    s_start = gr.Button("Start server", variant="primary")
                    s_stop = gr.Button("Stop server", variant="stop")
                s_info = gr.Markdown()
        timer = gr.Timer(2.0)

        chat_outputs = [session, chatbot, *quick, map_panel, *map_drops]
        private: dict[str, Any] = {"api_visibility": "private"}

        def who(tok: str | None, request: gr.Request | None, profile: Any = None) -> Workspace:
            """The caller's workspace (UserError when there is none)."""
            user = getattr(request, "username", None) or getattr(profile, "username", None)
            return workspace_for(settings, tok, user)

        def state(s: Session | None, ws: Workspace) -> Session:
            """The workspace's conversation: this tab's copy when it is theirs, else the saved one, else a new one."""
            if s is not None and s.workspace == ws.name:
                return s
            return ws.load_session() or conversation.new_session()

        def render(s: Session, ws: Workspace) -> list[Any]:
            ws.save_session(s)
            return [s, chat_messages(s, ws), *quick_updates(s), *mapping_updates(s)]

        # --- the assistant -----------------------------------------------------------------
        def on_load(tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            try:
                ws = who(tok, request, profile)
            except UserError:  # a first visit (or a token this app did not sign): a new workspace
                tok = issue_token(settings)
                ws = who(tok, request, profile)
            return [tok, *render(conversation.reattach(state(s, ws), ws), ws)]

        @guard
        def on_submit(message: dict | None, tok: str | None, s: Session | None, request: gr.Request,
                      profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            message, s = message or {}, state(s, ws)
            for s in conversation.respond(s, ws, message.get("text", ""), message.get("files") or []):
                yield [*render(s, ws), gr.update(value=None)]

        @guard
        def on_quick(label: str, tok: str | None, s: Session | None, request: gr.Request,
                     profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            for s in conversation.respond(state(s, ws), ws, label):
                yield render(s, ws)

        def on_tick(tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            skip = [gr.skip()] * len(chat_outputs)
            try:
                ws = who(tok, request, profile)
            except UserError:
                return [*skip, gr.update(visible=False), gr.skip(), gr.skip(), gr.skip()]
            s = state(s, ws)
            if not s.followed or not ws.owns(s.followed):
                return [*skip, gr.update(visible=False), gr.skip(), gr.skip(), gr.skip()]
            n = len(s.messages)
            try:
                s, status, metrics = conversation.poll(s, ws)
            except UserError as exc:
                return [*skip, gr.update(visible=True), ws.public(str(exc)), gr.skip(), gr.skip()]
            chat = render(s, ws) if len(s.messages) != n else skip
            waiting = limits.waiting_sentence(settings, s.followed)
            return [*chat, gr.update(visible=True), ws.public(train_step.progress_markdown(status, metrics, waiting)),
                    train_step.loss_frame(metrics), train_step.metric_frame(metrics)]

        def own_run(s: Session | None, ws: Workspace) -> Path:
            s = state(s, ws)
            if not s.followed or not ws.owns(s.followed):
                raise UserError("no training job in this conversation")
            return ws.run(s.followed)

        @guard
        def on_mapping(instruction: str | None, extra: str | None, output: str | None, system: str | None,
                       tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            picks = (instruction, extra, output, system)
            chosen = {r: v for r, v in zip(MAP_ROLES, picks) if v and v != NO_COLUMN}
            for s in conversation.set_mapping(state(s, ws), ws, chosen):
                yield render(s, ws)

        @guard
        def on_cancel(tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            train_step.cancel_training(own_run(s, who(tok, request, profile)))
            gr.Info("Cancel requested; the job stops after the current step.")

        @guard
        def on_resume(tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            train_step.resume_training(ws, own_run(s, ws))
            s.reported_state = None
            gr.Info("Resuming from the newest checkpoint.")
            ws.save_session(s)
            return s

        box.submit(on_submit, [box, token, session], [*chat_outputs, box], concurrency_id="chat", concurrency_limit=4,
                   api_name="submit")
        for b in quick:
            b.click(on_quick, [b, token, session], chat_outputs, concurrency_id="chat", **private)
        timer.tick(on_tick, [token, session], [*chat_outputs, panel, progress, loss_plot, metric_plot],
                   concurrency_id="poll", concurrency_limit=None, show_progress="hidden", **private)
        map_use.click(on_mapping, [*map_drops, token, session], chat_outputs, concurrency_id="chat", **private)
        cancel_btn.click(on_cancel, [token, session], None, concurrency_id="train", concurrency_limit=2, **private)
        resume_btn.click(on_resume, [token, session], [session], concurrency_id="train", **private)

        # --- Data tab ----------------------------------------------------------------------
        @guard
        def on_build(files, dups, pii, long_, invalid, schema_text, use_schema, tok: str | None, s: Session | None,
                     request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            paths = [f if isinstance(f, str) else f.name for f in (files or [])]
            inputs = data_step.stash_uploads(paths, ws.uploads_dir)
            fixes = {"drop_duplicates": dups, "mask_pii": pii, "drop_overlength": long_, "drop_invalid": invalid}
            schema = data_step.save_schema(schema_text, ws.uploads_dir) if use_schema and (schema_text or "").strip() else None
            mapping = s.column_map if s.data_inputs == inputs else None
            cfg = data_step.data_config(inputs, ws.data_dir, ws.model, fixes, settings.max_rows, mapping, schema)
            result = data_step.build_data(cfg)
            s.data_inputs, s.data_fixes, s.data_dir = inputs, fixes, str(result.out)
            s.data_ready = result.exit_code == 0 and result.train_rows > 0
            ws.save_session(s)
            rows = data_step.findings_rows(result.findings)
            report = data_step.report_file(result)
            return (s, ws.public(data_step.describe_data(result, cfg)), image_update(data_step.lengths_chart(result)),
                    gr.update(value=rows, visible=bool(rows)),
                    gr.update(value=viewable_copy(report) if report else None, visible=report is not None),
                    data_step.schema_text(result.out) or gr.skip())

        d_build.click(on_build, [d_files, d_dups, d_pii, d_long, d_invalid, d_schema, d_use_schema, token, session],
                      [session, d_report, d_chart, d_findings, d_report_file, d_schema], concurrency_id="chat",
                      api_name="build_data")

        # --- Train tab ---------------------------------------------------------------------
        def overrides(lora_r, lr, epochs, steps, maxlen, reward) -> dict[str, Any]:
            return {"lora_r": int(lora_r), "lora_alpha": 2 * int(lora_r), "learning_rate": float(lr),
                    "epochs": float(epochs), "max_steps": int(steps), "max_length": int(maxlen),
                    "reward_size": float(reward or 0)}

        def need_data(s: Session, ws: Workspace) -> str:
            if not s.data_ready or not s.data_dir or not ws.owns(s.data_dir):
                raise UserError("no usable data yet: build it in the Data tab or the assistant first")
            return s.data_dir

        @guard
        def on_plan(tok: str | None, s: Session | None, lora_r, lr, epochs, steps, maxlen, reward, request: gr.Request,
                    profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            form = overrides(lora_r, lr, epochs, steps, maxlen, reward)
            cfg, text = train_step.propose_training(need_data(s, ws), ws.model, str(ws.jobs_dir / "NEW"), form)
            s.train_overrides = form
            ws.save_session(s)
            return s, ws.public(f"{text}\n\n```bash\n{train_step.train_command(cfg)}\n```")

        def start(tok, s, form, request, profile, search: bool):
            ws = who(tok, request, profile)
            s = state(s, ws)
            cfg, _ = train_step.propose_training(need_data(s, ws), ws.model, str(train_step.new_run_dir(ws.jobs_dir)),
                                              overrides(*form))
            for s in conversation.start_job_in_chat(s, ws, cfg, search=search):
                pass
            if search:
                gr.Info(f"Search accepted: {len(SEARCH_CANDIDATES)} settings by successive halving within "
                        f"{cfg.time_budget:g} min; the table lands in search.md of the run.")
            return [*render(s, ws), gr.update(choices=[Path(s.run_dir).name], value=Path(s.run_dir).name)]

        @guard
        def on_start(tok: str | None, s: Session | None, lora_r, lr, epochs, steps, maxlen, reward, request: gr.Request,
                     profile: gr.OAuthProfile | None = None):
            return start(tok, s, (lora_r, lr, epochs, steps, maxlen, reward), request, profile, search=False)

        @guard
        def on_search(tok: str | None, s: Session | None, lora_r, lr, epochs, steps, maxlen, reward, request: gr.Request,
                      profile: gr.OAuthProfile | None = None):
            return start(tok, s, (lora_r, lr, epochs, steps, maxlen, reward), request, profile, search=True)

        @guard
        def on_refresh(tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            table = train_step.jobs_table(ws.jobs_dir)
            return table, gr.update(choices=list(table["run"]))

        @guard
        def on_run_tick(run_id: str | None, tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            if not run_id:
                return gr.skip(), gr.skip(), gr.skip()
            try:
                ws = who(tok, request, profile)
                run = ws.run(run_id)
            except UserError as exc:
                return public_text(settings, str(exc)), gr.skip(), gr.skip()
            status, metrics = train_step.job_snapshot(run)
            waiting = limits.waiting_sentence(settings, run)
            return (ws.public(train_step.progress_markdown(status, metrics, waiting)), train_step.loss_frame(metrics),
                    train_step.metric_frame(metrics))

        @guard
        def on_run_cancel(run_id: str | None, tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            train_step.cancel_training(who(tok, request, profile).run(run_id))

        @guard
        def on_run_resume(run_id: str | None, tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            train_step.resume_training(ws, ws.run(run_id))
            gr.Info("Resuming from the newest checkpoint.")

        @guard
        def on_download(run_id: str | None, tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            return gr.update(value=run_archive(who(tok, request, profile), run_id or ""), visible=True)

        @guard
        def on_stage(run_id: str | None, stage: str, tok: str | None, s: Session | None, request: gr.Request,
                     profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            cfg = train_step.propose_stage(ws, run_id or "", stage)
            for s in conversation.start_job_in_chat(s, ws, cfg):
                pass
            return [*render(s, ws), gr.update(choices=[Path(cfg.out).name], value=Path(cfg.out).name)]

        train_form = [t_lora_r, t_lr, t_epochs, t_steps, t_maxlen, t_reward]
        t_plan.click(on_plan, [token, session, *train_form], [session, t_explain], concurrency_id="chat", **private)
        t_start.click(on_start, [token, session, *train_form], [*chat_outputs, t_run], concurrency_id="train", **private)
        t_search.click(on_search, [token, session, *train_form], [*chat_outputs, t_run], concurrency_id="train", **private)
        t_refresh.click(on_refresh, [token], [t_jobs, t_run], concurrency_id="poll", api_name="jobs")
        t_stage_go.click(on_stage, [t_run, t_stage, token, session], [*chat_outputs, t_run], concurrency_id="train",
                         **private)
        timer.tick(on_run_tick, [t_run, token], [t_status, t_plot, t_metric_plot], concurrency_id="poll",
                   show_progress="hidden", **private)
        t_cancel.click(on_run_cancel, [t_run, token], None, concurrency_id="train", **private)
        t_resume.click(on_run_resume, [t_run, token], None, concurrency_id="train", **private)
        t_download.click(on_download, [t_run, token], [t_file], concurrency_id="train", api_name="download")

        # --- Compare / Evaluate / Serve tabs -------------------------------------------------
        @guard
        def on_compare(prompt: str, tok: str | None, s: Session | None, request: gr.Request,
                       profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            info = conversation.current_server(s, ws)
            if info is None:
                raise UserError(compare_step.NO_SERVER)
            messages = [{"role": "user", "content": prompt}] if prompt.strip() else compare_step.first_test_prompt(s.data_dir)
            shown = messages[-1]["content"]
            tuned = info.tuned or "tuned"
            # Pane by name: a fully fine-tuned model is served alone as "tuned" and belongs in the right pane.
            order = ["base", tuned] if {"base", tuned} & set(info.models) else list(info.models[:2])
            missing = {"base": "(the base model is not served beside a fully fine-tuned one: one model per server)",
                       tuned: "(no tuned adapter is served)"}
            for replies in compare_step.stream_compare(info, messages, [m for m in order if m in info.models]):
                panes = [[{"role": "user", "content": shown}, {"role": "assistant", "content": replies[m].text or "…"}]
                         if m in replies else [{"role": "assistant", "content": missing.get(m, "(not served)")}]
                         for m in order]
                panes += [[{"role": "assistant", "content": "(not served)"}]] * (2 - len(panes))
                latency = " · ".join(f"**{m}**: {r.caption()}" for m, r in replies.items())
                yield panes[0], panes[1], latency

        @guard
        def on_eval(limit, tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            info = conversation.current_server(s, ws)
            result = compare_step.run_evaluation(info, s.data_dir, conversation.eval_dir(s, ws), limit=int(limit or 0))
            return ws.public(compare_step.eval_markdown(result)), image_update(compare_step.eval_chart(result))

        @guard
        def on_serve(tok: str | None, s: Session | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            s = state(s, ws)
            for s in conversation.start_server_in_chat(s, ws):
                pass
            info = conversation.current_server(s, ws)
            said = s.messages[-1]["content"] if s.messages and isinstance(s.messages[-1]["content"], str) else ""
            shown = serve_step.describe_server(info) if info else (said or "The server did not start.")
            return [*render(s, ws), ws.public(shown)]

        @guard
        def on_stop(tok: str | None, request: gr.Request, profile: gr.OAuthProfile | None = None):
            ws = who(tok, request, profile)
            if registry.read_server_record(ws.server_file) is None:
                return "No server is running."
            registry.stop_recorded_server(ws.server_file)
            return "Server stopped."

        c_go.click(on_compare, [c_prompt, token, session], [c_base, c_tuned, c_latency], concurrency_id="chat", **private)
        e_go.click(on_eval, [e_limit, token, session], [e_table, e_chart], concurrency_id="serve", concurrency_limit=1,
                   **private)
        s_start.click(on_serve, [token, session], [*chat_outputs, s_info], concurrency_id="serve", **private)
        s_stop.click(on_stop, [token], [s_info], concurrency_id="serve", **private)
        demo.load(on_load, [token, session], [token, *chat_outputs], **private).then(
            on_refresh, [token], [t_jobs, t_run], **private)
    return demo


def browser_secret(settings: AppSettings) -> str:
    """The key gr.BrowserState encrypts the token with: derived from the app's secret, so it survives restarts."""
    import hashlib

    return hashlib.sha256(app_secret(settings) + b"browser-state").hexdigest()[:32]


def launch_app(demo: gr.Blocks, settings: AppSettings, **kwargs: Any) -> Any:
    """Queue with bounds, start the housekeeping (queued jobs, idle servers) and launch: share off,
    optional login, upload size capped, and no folder of the server allowed by path."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    limits.run_housekeeping(settings)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth, share=False,
                       max_file_size=settings.max_file_size, css=CSS, **kwargs)
