"""The chat-first flow: decide -> data -> train -> serve/compare, driven by quick replies or text.

`respond(session, ws, text, files)` is a generator of updated sessions (it yields a
"working…" message before slow steps); it imports no gradio, so tests call it directly.
Everything it reads or writes lies in the visitor's workspace `ws`. User mistakes raise
`UserError`; the UI turns them into `gr.Error`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterator

from ftassist.advisor import Answers, advise_from_evidence, apply_answer, next_question, recommend
from ftassist.errors import UserError
from ftassist.intake import read_task
from ftassist_app import augment_step, compare_step, data_step, limits, serve_step, train_step
from ftassist_app.phrasing import phrased
from ftassist_app.session import Session
from ftassist_app.workspace import Workspace
from serving import registry

EXAMPLE_DIR = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"

RESTART = "Start over"
UPLOAD = "Upload my data"
USE_EXAMPLE = "Use the example data"
CONTINUE_TRAIN = "Continue to training"
USE_MAPPING = "Use this mapping"
AUGMENT = "Make more rows"
START_TRAIN = "Start training"
QUICK_TRAIN = "Quick test run (10 steps)"
START_SERVER = "Start the server"
MERGE = "Merge and check parity"
EXPORT = "Export GGUF for llama.cpp / Ollama"
COMPARE = "Compare on a test example"
EVAL = "Run the JSON eval"
STOP_SERVER = "Stop the server"
NEXT = "Find what helps next"
QUICK_STEPS = 10

WELCOME = ("Hi! Tell me in your own words what the model should do — for example *\"turn customer reviews into "
           "JSON with sentiment, rating and issues; I have about 240 labelled examples\"* — or drop your data files "
           "here. I help you decide whether fine-tuning is the right tool (measured on your own rows), check your "
           "data, train a LoRA adapter, compare it with the base model and serve it.")
EXAMPLE_PHRASE = 'e.g. "extract the order id, amount and priority from support emails as JSON; we have 400 examples"'


def new_session() -> Session:
    """A fresh conversation: the welcome and the first advisor question."""
    s = Session()
    s.say(WELCOME)
    _ask_next(s)
    return s


def _ask_next(s: Session) -> None:
    q = next_question(s.answers)
    if q is not None:
        s.say(q.text)
        s.quick = list(q.choices)
        return
    rec = recommend(s.answers)
    text = rec.to_markdown()
    if not rec.fine_tuning_fits:
        text += ("\n\nFine-tuning is not the best tool for this, honestly. You can still go on — for example to "
                 "try it on your data and measure the difference.")
    else:
        text += "\n\nReady when you are: drop your files into the message box, or use the example data."
    s.say(text)
    s.stage = "data"
    s.quick = [UPLOAD, USE_EXAMPLE, RESTART]


def respond(s: Session, ws: Workspace, text: str = "", files: list[str] | None = None) -> Iterator[Session]:
    """Handle one user turn (quick-reply label, free text and/or uploaded files)."""
    text = (text or "").strip()
    files = list(files or [])
    if text or files:
        s.user(text or ", ".join(Path(f).name for f in files))
    if text == RESTART:
        fresh = new_session()
        fresh.id = s.id
        yield fresh
        return
    if text == AUGMENT:
        yield from augment_in_chat(s, ws, files)
        return
    if s.augmented and text == s.augmented["choice"]:
        s.data_dir = s.augmented["dir"]
        s.augment_offered = False  # the teacher's rows are not a seed for more teacher rows
        yield from _propose_training(s, ws)
        return
    if files:
        if text:
            _take_in(s, text, ws)
        yield from _data(s, ws, data_step.stash_uploads(files, ws.uploads_dir))
        return
    if text == NEXT:
        yield from next_in_chat(s, ws)
        return
    if text in (USE_EXAMPLE, USE_MAPPING, CONTINUE_TRAIN) or text in s.fix_options:
        yield from _data_reply(s, ws, text)  # data can come at any point; the questions still open stay open
    elif s.stage == "decide" or (s.stage == "data" and next_question(s.answers) is not None):
        yield from _decide(s, ws, text)
    elif s.stage == "data":
        yield from _data_reply(s, ws, text)
    elif s.stage == "train":
        yield from _train_reply(s, ws, text)
    else:
        yield from _serve_reply(s, ws, text)


def _decide(s: Session, ws: Workspace, text: str) -> Iterator[Session]:
    q = next_question(s.answers)
    if q is None:
        _ask_next(s)
        yield s
        return
    if text in q.choices:  # a quick reply
        s.answers = apply_answer(s.answers, q, text)
    elif not _take_in(s, text, ws):
        try:
            s.answers = apply_answer(s.answers, q, text)
        except ValueError as exc:
            s.say(f"{exc}. Or describe the task in your own words, {EXAMPLE_PHRASE}.")
            s.quick = list(q.choices)
            yield s
            return
    _ask_next(s)
    yield s


def _take_in(s: Session, text: str, ws: Workspace) -> bool:
    """Read a free-text message into the answers and say what was understood; True when anything was
    (the questions still open are asked next)."""
    reading = read_task(text, s.answers)
    if not reading.understood:
        return False
    s.answers = reading.answers
    if reading.fields:
        s.task_fields = list(reading.fields)
    s.say(phrased(ws.settings, "**What I understood**\n" + "\n".join(f"- {u}" for u in reading.understood)))
    return True


def set_mapping(s: Session, ws: Workspace, mapping: dict[str, str] | None = None) -> Iterator[Session]:
    """Build with the table mapping the user chose (the one on show when `mapping` is None)."""
    chosen = {k: v for k, v in (mapping or (s.mapping_request or {}).get("mapping") or {}).items() if v}
    if not s.data_inputs or not s.mapping_request:
        raise UserError("no table is waiting for a mapping: upload a CSV, TSV, Excel or JSON table first")
    if not chosen.get("instruction") or not chosen.get("output"):
        raise UserError("choose a column for the prompt (instruction) and one for the reply (output)")
    if len(set(chosen.values())) < len(chosen):
        raise UserError("each column can play one role only: pick different columns for "
                        + ", ".join(k for k in chosen if list(chosen.values()).count(chosen[k]) > 1))
    s.column_map = chosen
    s.user("Use this mapping: " + ", ".join(f"{k}={v}" for k, v in chosen.items()))
    yield from _data(s, ws, s.data_inputs)


def _data_reply(s: Session, ws: Workspace, text: str) -> Iterator[Session]:
    if text == USE_MAPPING:
        s.messages.pop()  # set_mapping echoes the mapping itself
        yield from set_mapping(s, ws)
    elif text == USE_EXAMPLE:
        files = [str(EXAMPLE_DIR / n) for n in ("train.jsonl", "test.jsonl", "schema.json")]
        yield from _data(s, ws, files)
    elif text in s.fix_options:
        s.data_fixes[s.fix_options[text]] = True
        yield from _data(s, ws, s.data_inputs)
    elif text == CONTINUE_TRAIN:
        yield from _propose_training(s, ws)
    else:
        s.say("Drop one or more files (JSONL, CSV, JSON, Parquet, XLSX) into the message box below — "
              "or use the example data.")
        s.quick = [USE_EXAMPLE]
        yield s


def _data(s: Session, ws: Workspace, inputs: list[str]) -> Iterator[Session]:
    if s.data_inputs != inputs:
        s.data_fixes, s.column_map, s.mapping_request = {}, None, None
    s.augment_offered, s.augmented = False, None
    s.data_inputs = inputs
    s.stage = "data"
    s.say(f"Checking {len(inputs)} file(s)…")
    s.quick = []
    yield s
    if s.column_map is None:
        found = data_step.mapping_needed(inputs)
        if found is not None:
            s.mapping_request = {"path": found.path, "columns": list(found.columns), "mapping": dict(found.mapping),
                                 "reason": found.reason}
            s.say(data_step.mapping_markdown(found))
            if found.guess:  # the panel below the chat confirms or changes it (or the text "Use this mapping")
                yield s
                return
            s.column_map = dict(found.mapping)
    cfg = data_step.data_config(inputs, ws.data_dir, ws.model, s.data_fixes, ws.settings.max_rows, s.column_map)
    result = data_step.build_data(cfg)
    s.data_dir = str(result.out)
    s.data_ready = result.exit_code == 0 and result.train_rows > 0
    s.evidence = None
    s.say(data_step.describe_data(result, cfg))
    chart = data_step.lengths_chart(result)
    if chart:
        s.show_image(chart)
    report = data_step.report_file(result)
    if report:
        s.show_file(report)
    fixes = data_step.offered_fixes(result.findings, s.data_fixes)
    s.fix_options = {f.label: f.switch for f in fixes}
    if not s.data_ready:
        s.say("The data has errors that block training: apply a fix below, or upload corrected files.")
        s.quick = [f.label for f in fixes]
        yield s
        return
    s.say(data_step.preview(result.out) + "\n\n" + _count_sentence(s, result.train_rows + result.test_rows))
    s.answers = dataclasses.replace(s.answers, examples=result.train_rows + result.test_rows, examples_said="")
    yield s
    if ws.settings.evidence_rows and data_step.is_json_data(result.out):
        s.say(f"Before any training: measuring what the base model gets on {ws.settings.evidence_rows} of your test "
              "rows with a good prompt and examples, with and without structured outputs…")
        yield s
        evidence = data_step.measure_evidence(result.out, ws.model, ws.settings.evidence_rows)
        s.evidence = evidence.to_dict()
        rec = advise_from_evidence(evidence, s.answers)
        s.say(phrased(ws.settings, rec.to_markdown()))
    s.say("The data is usable." + (" You can apply a fix first, or go on." if fixes else ""))
    offer = augment_step.offer(ws.settings, result.train_rows) if data_step.is_json_data(result.out) else None
    s.augment_offered = offer is not None
    if offer:
        s.say(offer)
    s.quick = [f.label for f in fixes] + ([AUGMENT] if offer else []) + [CONTINUE_TRAIN]
    yield s


def augment_in_chat(s: Session, ws: Workspace, files: list[str]) -> Iterator[Session]:
    """Make more rows with the operator's teacher; offer training on them when any were kept."""
    if not s.augment_offered or not s.data_dir:
        raise UserError("Make more rows needs a small JSON data set and a teacher model set by whoever runs the app "
                        "(--teacher-url): build your data first")
    unlabelled = data_step.stash_uploads(files, ws.uploads_dir / "unlabelled") if files else []
    out = train_step.new_run_dir(ws.root / "augmented")  # a new folder each time: a queued job keeps its rows
    cfg = augment_step.augment_config(ws.settings, Path(s.data_dir), out, unlabelled)
    intro = (f"Asking the teacher ({ws.settings.teacher_model}): first on your own labelled rows, then on "
             + (f"the inputs of {Path(unlabelled[0]).name}…" if unlabelled else f"{cfg.write} inputs it writes in your rows' style…"))
    s.say(intro)
    shown = len(s.messages) - 1  # the message the progress updates, whatever is said after it meanwhile
    s.quick = []
    yield s
    steps = augment_step.stream(cfg)
    while True:
        try:
            doing = next(steps)
        except StopIteration as done:
            result, report = done.value
            break
        s.messages[shown] = {"role": "assistant", "content": f"{intro}\n\nNow: {doing}"}
        yield s
    s.say(report)
    s.augmented = None
    if result is not None and result.kept:
        s.augmented = {"dir": str(result.out), "choice": augment_step.train_choice(result)}
        s.quick = [s.augmented["choice"], CONTINUE_TRAIN]
    else:
        s.quick = [CONTINUE_TRAIN]
    yield s


def _count_sentence(s: Session, rows: int) -> str:
    """How many examples the files hold, against what the user said."""
    said = s.answers.examples
    if said is None:
        return f"Your files hold {rows} examples."
    if abs(said - rows) <= max(5, 0.05 * rows):
        return f"Your files hold {rows} examples, as you said."
    return f"Your files hold **{rows}** examples (you said {s.answers.examples_said or said}); I go by the files."


def _propose_training(s: Session, ws: Workspace) -> Iterator[Session]:
    if not s.data_ready or not s.data_dir:
        raise UserError("build a usable data set first: upload files or use the example data")
    cfg, explanation = train_step.propose_training(s.data_dir, ws.model, str(train_step.new_run_dir(ws.jobs_dir)),
                                                s.train_overrides)
    s.stage = "train"
    s.say(f"**Proposed training**\n\n{explanation}\n\n```bash\n{train_step.train_command(cfg)}\n```\n\n"
          "Start it, or change settings in the **Train** tab.")
    s.quick = [START_TRAIN, QUICK_TRAIN]
    yield s


def _train_reply(s: Session, ws: Workspace, text: str) -> Iterator[Session]:
    if text in (START_TRAIN, QUICK_TRAIN):
        overrides = dict(s.train_overrides)
        if text == QUICK_TRAIN:
            overrides["max_steps"] = QUICK_STEPS
        run_dir = train_step.new_run_dir(ws.jobs_dir)
        cfg, _ = train_step.propose_training(s.data_dir or "", ws.model, str(run_dir), overrides)
        yield from start_job_in_chat(s, ws, cfg)
    elif text == START_SERVER:
        yield from start_server_in_chat(s, ws)
    elif text == MERGE:
        yield from merge_in_chat(s, ws)
    elif text == EXPORT:
        yield from export_in_chat(s, ws)
    else:
        s.say("Training runs as a background job; its progress shows below the chat. "
              "You can close this tab — the job keeps running and I find it again.")
        yield s


def start_job_in_chat(s: Session, ws: Workspace, cfg, search: bool = False) -> Iterator[Session]:
    run_dir = train_step.start_training(ws, cfg, search=search)
    s.run_dir, s.reported_state, s.stage = str(run_dir), None, "train"
    what = "A settings search" if search else "Training"
    waiting = limits.waiting_sentence(ws.settings, run_dir)
    s.say(f"{what} started as job `{run_dir.name}`" + (f", {waiting}" if waiting else "") +
          ". Progress and the charts update below; closing or reloading the tab loses nothing.")
    s.quick = []
    yield s


def poll(s: Session, ws: Workspace) -> tuple[Session, object | None, list[dict]]:
    """Read the session's job (only ever one of this workspace); when it finishes, say so once and offer the next step."""
    if not s.followed or not ws.owns(s.followed):
        return s, None, []
    status, metrics = train_step.job_snapshot(s.followed)
    if s.levers_job:
        if status.state not in limits.PENDING:
            _levers_ended(s, status)
        return s, status, metrics
    if status.state not in limits.PENDING and s.reported_state != status.state:
        s.reported_state = status.state
        if status.state == "completed":
            last = next((m for m in reversed(metrics) if m.get("loss") is not None), None)
            loss = f" Final loss {last['loss']:.4f}." if last else ""
            s.say(f"Training finished: {status.step} steps.{loss} {train_step.selection_sentence(s.run_dir or '')} "
                  "Next: merge the adapter into a full model and check it answers like the adapter, or serve base "
                  "and tuned side by side to compare them (vLLM takes about a minute to start).")
            s.stage = "train"
            s.quick = [MERGE, START_SERVER] + ([NEXT] if train_step.can_try_next(s.run_dir) else [])
        else:
            why = f" ({status.reason})" if status.reason else ""
            s.say(f"The job is **{status.state}**{why}. Resume it from the progress panel, or start again.")
            s.quick = [START_TRAIN, QUICK_TRAIN]
    return s, status, metrics


def next_in_chat(s: Session, ws: Workspace) -> Iterator[Session]:
    """Try the levers that could improve the session's finished run (`ftassist next`) as a background job."""
    from ftassist.train.levers import CHAT_BUDGET_RUNS, CHAT_LEVERS

    source = s.run_dir
    job = train_step.start_next(ws, source)
    s.levers_job, s.stage = str(job), "train"  # run_dir stays the run tried (a server may serve it meanwhile)
    waiting = limits.waiting_sentence(ws.settings, job)
    s.say(f"Trying what could improve run `{Path(source or '-').name}`, each measured on its own validation split: "
          f"{', '.join(CHAT_LEVERS)} (a reward stage each, the LoRA rank doubled, more minutes), within "
          f"{CHAT_BUDGET_RUNS:g} times the minutes the run took, as job `{job.name}`" + (f", {waiting}" if waiting else "")
          + ". I recommend the one that moved the task metric, with the figures, or say that none did.")
    s.quick = []
    yield s


def _levers_ended(s: Session, status) -> None:
    """Say how the levers' try ended; the run to go on with becomes the session's run."""
    job, s.levers_job = s.levers_job or "", None
    source = train_step.next_source(job) or s.run_dir or ""
    if status.state == "completed":
        text, go_on = train_step.next_result(job) or ("", source)
        s.say(text + ("" if go_on == source else f"\n\nThe recommended run `{Path(go_on).name}` is now this "
                                                  "conversation's run: merge it, or serve it to compare."))
        s.run_dir, s.quick = go_on, [MERGE, START_SERVER]
    else:
        why = f" ({status.reason})" if status.reason else ""
        s.say(f"The levers' try is **{status.state}**{why}. The levers that finished are kept: trying again goes on "
              "from them.")
        s.run_dir, s.quick = source, [NEXT, MERGE, START_SERVER]
    s.reported_state, s.stage = "completed", "train"


SERVE_QUICK = [COMPARE, EVAL, MERGE, STOP_SERVER]
STREAM_EVERY_S = 0.5  # how often a streamed comparison refreshes the page (the last state always shows)


def merge_in_chat(s: Session, ws: Workspace) -> Iterator[Session]:
    """Merge the session's run and run the parity gate (with the served adapter when a server is up)."""
    if not s.run_dir or not ws.owns(s.run_dir) or train_step.job_snapshot(s.run_dir)[0].state != "completed":
        raise UserError("no finished training run in this conversation: train first")
    info = current_server(s, ws)
    s.say("Merging the adapter into a full copy of the base model and checking it answers like the adapter"
          + (" (and the served adapter too)…" if info is not None else "…"))
    quick = list(s.quick)
    s.quick = []
    yield s
    merged, report = serve_step.merge_and_verify(s.run_dir, info)
    s.say(f"Merged model: `{merged}` (safetensors, the training chat template; vLLM serves it as is)."
          f"\n\n{serve_step.verify_markdown(report)}")
    rest = [q for q in quick if q != MERGE]
    s.quick = rest + [EXPORT] if report.passed else rest or [START_SERVER]  # export only what passed the gate
    yield s


def export_in_chat(s: Session, ws: Workspace) -> Iterator[Session]:
    """GGUF files + Modelfile for the session's run, verified with llama.cpp; the figures go to the chat."""
    if not s.run_dir or not ws.owns(s.run_dir) or train_step.job_snapshot(s.run_dir)[0].state != "completed":
        raise UserError("no finished training run in this conversation: train first")
    s.say(f"Writing GGUF files ({', '.join(serve_step.APP_QUANTS)}) with llama.cpp's converter, then serving each with "
          "llama.cpp to check it answers like the adapter and running the JSON eval on it (a few minutes on a CPU)…")
    quick = [q for q in s.quick if q != EXPORT]
    s.quick = []
    yield s
    report = serve_step.export_gguf_files(s.run_dir, ws.settings.evidence_rows)
    s.say(serve_step.export_markdown(report))
    s.quick = quick or [START_SERVER]
    yield s


def start_server_in_chat(s: Session, ws: Workspace) -> Iterator[Session]:
    """Serve base + the session's adapter. The workspace has one server: one live for this run is
    reused, one for another run is replaced; a machine whose server slots are all taken says so."""
    info = registry.read_server_record(ws.server_file)
    if info is not None and info.run_dir != s.run_dir:
        registry.stop_recorded_server(ws.server_file)
        s.say(f"Stopped your server for run `{Path(info.run_dir or '-').name}` (one server per workspace).")
        info = None
    if info is None:
        try:
            limits.admit_server(ws)
        except UserError as exc:
            s.say(f"The server did not start: {exc}")
            s.quick = [START_SERVER]
            yield s
            return
        s.say(f"Starting vLLM with {serve_step.served_models(s.run_dir)} (about 40-60 s)…")
        s.quick = []
        yield s
        try:
            cfg = serve_step.serve_config(ws.model, s.run_dir, ws.root)
            cfg = limits.place_server(ws.settings, cfg)  # its GPU and memory share on a GPU machine
            info = serve_step.start_serving(cfg, ws.server_file, s.run_dir)
        except UserError as exc:
            s.say(f"The server did not start: {exc}")
            s.quick = [START_SERVER]
            yield s
            return
    registry.touch_server_record(ws.server_file)
    s.stage = "serve"
    s.say(serve_step.describe_server(info))
    s.quick = list(SERVE_QUICK)
    yield s


def current_server(s: Session, ws: Workspace):
    """The workspace's live server (marked as used now), or None."""
    info = registry.read_server_record(ws.server_file)
    if info is not None:
        registry.touch_server_record(ws.server_file)
    return info


def _serve_reply(s: Session, ws: Workspace, text: str) -> Iterator[Session]:
    info = current_server(s, ws)
    if text == MERGE:
        yield from merge_in_chat(s, ws)
        return
    if text == EXPORT:
        yield from export_in_chat(s, ws)
        return
    if text == STOP_SERVER:
        registry.stop_recorded_server(ws.server_file)
        s.say("Server stopped." if info is not None else "No server was running.")
        s.quick = [START_SERVER]
        s.stage = "train"
        yield s
        return
    if info is None:
        s.say(compare_step.NO_SERVER)
        s.quick = [START_SERVER]
        s.stage = "train"
        yield s
        return
    s.quick = []  # no second click while a slow step runs
    try:
        if text == COMPARE:
            messages = compare_step.first_test_prompt(s.data_dir)
            s.say(f"Prompt: {messages[-1]['content']}")
            s.say("…")
            yield s
            shown = 0.0
            for replies in compare_step.stream_compare(info, messages, info.models):
                s.messages[-1] = {"role": "assistant", "content": compare_step.compare_markdown(replies)}
                if time.monotonic() - shown >= STREAM_EVERY_S:  # each update re-sends the transcript: not per token
                    shown = time.monotonic()
                    yield s
        elif text == EVAL:
            s.say("Running the JSON-compliance eval on the test split…")
            yield s
            result = compare_step.run_evaluation(info, s.data_dir, eval_dir(s, ws))
            s.say(compare_step.eval_markdown(result))
            chart = compare_step.eval_chart(result)
            if chart:
                s.show_image(chart)
            if train_step.can_try_next(s.run_dir):
                s.say(f"To find what would improve it, measured: **{NEXT}** (it trains; the server can stay up).")
        else:
            s.say(serve_step.describe_server(info))
    except UserError as exc:
        s.say(f"That did not work: {exc}")
    s.quick = list(SERVE_QUICK) + ([NEXT] if text == EVAL and train_step.can_try_next(s.run_dir) else [])
    yield s


def eval_dir(s: Session, ws: Workspace) -> Path:
    """Where an eval report goes: beside the run it judges, else in the workspace."""
    return Path(s.run_dir if s.run_dir and ws.owns(s.run_dir) else ws.root) / "eval"


def reattach(s: Session, ws: Workspace) -> Session:
    """On page load: the workspace's own conversation, and its newest pending job (from disk)."""
    if s.run_dir and not ws.owns(s.run_dir):
        s.run_dir = None
    if s.data_dir and not ws.owns(s.data_dir):
        s.data_dir, s.data_ready = None, False
    run_dir = train_step.newest_active_job(ws.jobs_dir)
    source = train_step.next_source(run_dir)
    if source is not None and ws.owns(source):  # a levers' try: followed beside the run it tries
        if s.levers_job != run_dir:
            s.levers_job, s.run_dir, s.stage = run_dir, source, "train"
            s.say(f"Welcome back: the levers' try `{Path(run_dir or '-').name}` is still running — progress below.")
            s.quick = []
    elif run_dir and run_dir != s.run_dir:
        s.run_dir, s.stage, s.reported_state = run_dir, "train", None
        s.say(f"Welcome back: job `{Path(run_dir).name}` is still running — progress below.")
        s.quick = []
    elif not s.run_dir:
        # the newest finished run stays at hand (Serve/Compare tabs) without interrupting the chat
        done = train_step.newest_completed_job(ws.jobs_dir)
        if done:
            s.run_dir, s.reported_state = done, "completed"
    if s.run_dir and not s.data_dir:
        s.data_dir = train_step.run_data_dir(s.run_dir)
        s.data_ready = s.data_dir is not None
    return s


def with_overrides(s: Session, overrides: dict) -> Session:
    return dataclasses.replace(s, train_overrides=dict(overrides))


__all__ = ["new_session", "respond", "poll", "reattach", "current_server", "Answers"]
