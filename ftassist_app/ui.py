"""The Gradio Blocks: the assistant chat first, then tabs for direct control of each stage.

The only module that imports gradio. Every handler is a few lines over `conversation` or a
step module; `_guard` turns the library's UserError/ConfigError into `gr.Error` messages.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ftassist.config import TrainConfig
from ftassist.train.search import CANDIDATES as SEARCH_CANDIDATES
from ftassist.errors import UserError
from ftassist_app import compare_step, conversation, data_step, serve_step, train_step
from ftassist_app.session import Session
from ftassist_app.settings import AppSettings

N_QUICK = 6
UPLOAD_TYPES = [".jsonl", ".json", ".csv", ".tsv", ".parquet", ".xlsx", ".txt", ".md", ".pdf", ".docx"]
CSS = ".quick-row button {flex: 0 0 auto !important; min-width: 0 !important}"


def _guard(fn: Callable) -> Callable:
    """Run `fn`, turning a user's mistake into a gr.Error (a message, not a traceback)."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as exc:
                raise gr.Error(str(exc), print_exception=False) from exc
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            raise gr.Error(str(exc), print_exception=False) from exc
    return call


def chat_messages(s: Session) -> list[dict[str, Any]]:
    return [dict(m) for m in s.messages]


def quick_updates(s: Session) -> list[Any]:
    labels = s.quick[:N_QUICK]
    return [gr.update(value=labels[i], visible=True) if i < len(labels) else gr.update(visible=False)
            for i in range(N_QUICK)]


def build_app(settings: AppSettings) -> gr.Blocks:
    """The whole app for `settings` (no launch)."""
    with gr.Blocks(title="ftassist") as demo:
        session = gr.State(None)
        gr.Markdown("## ftassist — decide, prepare, fine-tune, compare, serve")
        with gr.Tabs():
            with gr.Tab("Assistant", id="assistant"):
                chatbot = gr.Chatbot(label="Assistant", height=520, elem_id="chat", feedback_options=None,
                                     buttons=["copy"], group_consecutive_messages=False)
                with gr.Row(elem_classes="quick-row"):
                    quick = [gr.Button(visible=False, size="sm", elem_classes="quick") for _ in range(N_QUICK)]
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
                d_files = gr.File(label="Data files", file_count="multiple", file_types=UPLOAD_TYPES)
                with gr.Row():
                    d_dups = gr.Checkbox(label="Drop duplicates")
                    d_pii = gr.Checkbox(label="Mask personal data")
                    d_long = gr.Checkbox(label="Drop over-long examples")
                    d_invalid = gr.Checkbox(label="Drop invalid rows")
                d_build = gr.Button("Check and build", variant="primary")
                d_report = gr.Markdown()
                d_chart = gr.Image(label="Token lengths", visible=False)
            with gr.Tab("Train", id="train"):
                with gr.Row():
                    t_lora_r = gr.Number(label="LoRA rank (lora_r)", value=TrainConfig.lora_r, precision=0, minimum=1)
                    t_lr = gr.Number(label="Learning rate (0: the planner's)", value=TrainConfig.learning_rate, minimum=0)
                    t_epochs = gr.Number(label="Epochs budget (0: the planner's; the task metric decides when to stop)",
                                         value=TrainConfig.epochs, minimum=0)
                    t_steps = gr.Number(label="Max steps (-1: use epochs)", value=TrainConfig.max_steps, precision=0)
                    t_maxlen = gr.Number(label="max_length", value=TrainConfig.max_length, precision=0, minimum=16)
                with gr.Row():
                    t_plan = gr.Button("Plan")
                    t_start = gr.Button("Start training", variant="primary")
                    t_search = gr.Button("Search settings within the time budget")
                t_explain = gr.Markdown()
                t_jobs = gr.Dataframe(headers=["run", "state", "step", "total"], label="Jobs", interactive=False, elem_id="jobs")
                with gr.Row():
                    t_run = gr.Dropdown(label="Run", choices=[], allow_custom_value=True)
                    t_refresh = gr.Button("Refresh", size="sm")
                    t_cancel = gr.Button("Cancel", size="sm", variant="stop")
                    t_resume = gr.Button("Resume", size="sm")
                t_status = gr.Markdown()
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

        chat_outputs = [session, chatbot, *quick]

        def render(s: Session) -> list[Any]:
            return [s, chat_messages(s), *quick_updates(s)]

        # --- the assistant -----------------------------------------------------------------
        def on_load(s: Session | None):
            s = s or conversation.new_session()
            return render(conversation.reattach(s, settings))

        @_guard
        def on_submit(message: dict | None, s: Session | None):
            message, s = message or {}, s or conversation.new_session()
            for s in conversation.respond(s, settings, message.get("text", ""), message.get("files") or []):
                yield [*render(s), gr.update(value=None)]

        @_guard
        def on_quick(label: str, s: Session | None):
            s = s or conversation.new_session()
            for s in conversation.respond(s, settings, label):
                yield render(s)

        def on_tick(s: Session | None):
            if s is None or not s.run_dir:
                return [gr.skip(), gr.skip(), *[gr.skip()] * N_QUICK, gr.update(visible=False), gr.skip(), gr.skip(), gr.skip()]
            n = len(s.messages)
            try:
                s, status, metrics = conversation.poll(s)
            except UserError as exc:
                return [gr.skip(), gr.skip(), *[gr.skip()] * N_QUICK, gr.update(visible=True), str(exc), gr.skip(), gr.skip()]
            chat = render(s) if len(s.messages) != n else [gr.skip(), gr.skip(), *[gr.skip()] * N_QUICK]
            return [*chat, gr.update(visible=True), train_step.progress_markdown(status, metrics),
                    train_step.loss_frame(metrics), train_step.metric_frame(metrics)]

        @_guard
        def on_cancel(s: Session):
            if not s or not s.run_dir:
                raise UserError("no training job in this conversation")
            train_step.cancel_training(s.run_dir)
            gr.Info("Cancel requested; the job stops after the current step.")

        @_guard
        def on_resume(s: Session):
            if not s or not s.run_dir:
                raise UserError("no training job in this conversation")
            train_step.resume_training(s.run_dir)
            s.reported_state = None
            gr.Info("Resuming from the newest checkpoint.")
            return s

        demo.load(on_load, [session], chat_outputs, api_visibility="private")
        box.submit(on_submit, [box, session], [*chat_outputs, box], concurrency_id="chat", concurrency_limit=4,
                   api_name="submit")
        for b in quick:
            b.click(on_quick, [b, session], chat_outputs, concurrency_id="chat", api_name="quick" if b is quick[0] else None,
                    api_visibility="public" if b is quick[0] else "private")
        timer.tick(on_tick, [session], [*chat_outputs, panel, progress, loss_plot, metric_plot], concurrency_id="poll",
                   concurrency_limit=None, show_progress="hidden", api_visibility="private")
        cancel_btn.click(on_cancel, [session], None, concurrency_id="train", concurrency_limit=2)
        resume_btn.click(on_resume, [session], [session], concurrency_id="train")

        # --- Data tab ----------------------------------------------------------------------
        @_guard
        def on_build(files, dups, pii, long_, invalid, s: Session | None):
            s = s or conversation.new_session()
            paths = [f if isinstance(f, str) else f.name for f in (files or [])]
            inputs = data_step.stash_uploads(paths, settings.session_dir(s.id) / "uploads")
            fixes = {"drop_duplicates": dups, "mask_pii": pii, "drop_overlength": long_, "drop_invalid": invalid}
            cfg = data_step.build_config(inputs, settings.session_dir(s.id) / "data", settings.model, fixes)
            result = data_step.build_data(cfg)
            s.data_inputs, s.data_fixes, s.data_dir = inputs, fixes, str(result.out)
            s.data_ready = result.exit_code == 0 and result.train_rows > 0
            chart = data_step.lengths_chart(result)
            return s, data_step.describe_data(result, cfg), gr.update(value=chart, visible=chart is not None)

        d_build.click(on_build, [d_files, d_dups, d_pii, d_long, d_invalid, session], [session, d_report, d_chart],
                      concurrency_id="chat", api_name="build_data")

        # --- Train tab ---------------------------------------------------------------------
        def overrides(lora_r, lr, epochs, steps, maxlen) -> dict[str, Any]:
            return {"lora_r": int(lora_r), "lora_alpha": 2 * int(lora_r), "learning_rate": float(lr),
                    "epochs": float(epochs), "max_steps": int(steps), "max_length": int(maxlen)}

        def need_data(s: Session) -> str:
            if not s.data_ready or not s.data_dir:
                raise UserError("no usable data yet: build it in the Data tab or the assistant first")
            return s.data_dir

        @_guard
        def on_plan(s: Session | None, *form):
            s = s or conversation.new_session()
            cfg, text = train_step.plan_training(need_data(s), settings.model, str(settings.jobs_dir / "NEW"),
                                                 overrides(*form))
            s.train_overrides = overrides(*form)
            return s, f"{text}\n\n```bash\n{train_step.train_command(cfg)}\n```"

        @_guard
        def on_start(s: Session | None, *form):
            s = s or conversation.new_session()
            cfg, _ = train_step.plan_training(need_data(s), settings.model,
                                              str(train_step.new_run_dir(settings.jobs_dir)), overrides(*form))
            for s in conversation.start_job_in_chat(s, cfg):
                pass
            return [*render(s), gr.update(choices=[Path(s.run_dir).name], value=Path(s.run_dir).name)]

        @_guard
        def on_search(s: Session | None, *form):
            s = s or conversation.new_session()
            cfg, _ = train_step.plan_training(need_data(s), settings.model,
                                              str(train_step.new_run_dir(settings.jobs_dir)), overrides(*form))
            run = train_step.start_search(cfg)
            gr.Info(f"Search started: {len(SEARCH_CANDIDATES)} settings by successive halving within "
                    f"{cfg.time_budget:g} min; the table lands in search.md of the run.")
            return gr.update(choices=[run.name], value=run.name)

        def on_refresh():
            table = train_step.jobs_table(settings.jobs_dir) if settings.jobs_dir.is_dir() else None
            runs = list(table["run"]) if table is not None else []
            return table, gr.update(choices=runs)

        def on_run_tick(run_id: str | None):
            if not run_id:
                return gr.skip(), gr.skip(), gr.skip()
            try:
                status, metrics = train_step.job_snapshot(train_step.run_path(settings.jobs_dir, run_id))
            except UserError as exc:
                return str(exc), gr.skip(), gr.skip()
            return train_step.progress_markdown(status, metrics), train_step.loss_frame(metrics), train_step.metric_frame(metrics)

        form = [t_lora_r, t_lr, t_epochs, t_steps, t_maxlen]
        t_plan.click(on_plan, [session, *form], [session, t_explain], concurrency_id="chat", api_name="plan")
        t_start.click(on_start, [session, *form], [*chat_outputs, t_run], concurrency_id="train")
        t_search.click(on_search, [session, *form], [t_run], concurrency_id="train")
        t_refresh.click(on_refresh, None, [t_jobs, t_run], concurrency_id="poll", api_name="jobs")
        demo.load(on_refresh, None, [t_jobs, t_run], api_visibility="private")
        timer.tick(on_run_tick, [t_run], [t_status, t_plot, t_metric_plot], concurrency_id="poll", show_progress="hidden",
                   api_visibility="private")
        t_cancel.click(_guard(lambda r: train_step.cancel_training(train_step.run_path(settings.jobs_dir, r))),
                       [t_run], None, concurrency_id="train")
        t_resume.click(_guard(lambda r: train_step.resume_training(train_step.run_path(settings.jobs_dir, r))),
                       [t_run], None, concurrency_id="train")

        # --- Compare / Evaluate / Serve tabs -------------------------------------------------
        @_guard
        def on_compare(prompt: str, s: Session | None):
            s = s or conversation.new_session()
            info = conversation.current_server(s, settings)
            if info is None:
                raise UserError(compare_step.NO_SERVER)
            messages = [{"role": "user", "content": prompt}] if prompt.strip() else compare_step.first_test_prompt(s.data_dir)
            shown = messages[-1]["content"]
            for replies in compare_step.stream_compare(info, messages, info.models[:2]):
                panes = [[{"role": "user", "content": shown}, {"role": "assistant", "content": r.text or "…"}]
                         for r in replies.values()]
                if len(panes) < 2:
                    panes.append([{"role": "assistant", "content": "(no tuned adapter is served)"}])
                latency = " · ".join(f"**{m}**: {r.caption()}" for m, r in replies.items())
                yield panes[0], panes[1], latency

        @_guard
        def on_eval(limit, s: Session | None):
            s = s or conversation.new_session()
            info = conversation.current_server(s, settings)
            out = Path(s.run_dir or settings.session_dir(s.id)) / "eval"
            result = compare_step.run_evaluation(info, s.data_dir, out, limit=int(limit or 0))
            chart = compare_step.eval_chart(result)
            return compare_step.eval_markdown(result), gr.update(value=chart, visible=chart is not None)

        @_guard
        def on_serve(s: Session | None):
            s = s or conversation.new_session()
            for s in conversation.start_server_in_chat(s, settings):
                pass
            info = conversation.current_server(s, settings)
            return [*render(s), serve_step.describe_server(info) if info else "The server did not start."]

        @_guard
        def on_stop(s: Session | None):
            s = s or conversation.new_session()
            info = conversation.current_server(s, settings)
            if info is None:
                return "No server is running."
            serve_step.stop_serving(s.server_file)
            s.server_file = None
            return "Server stopped."

        c_go.click(on_compare, [c_prompt, session], [c_base, c_tuned, c_latency], concurrency_id="chat", api_name="compare")
        e_go.click(on_eval, [e_limit, session], [e_table, e_chart], concurrency_id="serve", concurrency_limit=1,
                   api_name="evaluate")
        s_start.click(on_serve, [session], [*chat_outputs, s_info], concurrency_id="serve", api_name="serve")
        s_stop.click(on_stop, [session], [s_info], concurrency_id="serve", api_name="stop_server")
    return demo


def launch_app(demo: gr.Blocks, settings: AppSettings, **kwargs: Any) -> Any:
    """Queue with bounds and launch: share off, optional login, upload size capped."""
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    demo.queue(default_concurrency_limit=2, max_size=64)
    return demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth, share=False,
                       max_file_size=settings.max_file_size, allowed_paths=[str(settings.runs_dir.resolve())],
                       css=CSS, **kwargs)
