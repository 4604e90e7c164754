"""The app's handlers called directly (no browser, no server): conversation, data, training jobs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ftassist.advisor import QUESTIONS
from ftassist.config import DataConfig, TrainConfig
from ftassist.errors import UserError
from ftassist.snippets import cli_command, curl_snippet, python_snippet
from ftassist_app import compare_step, conversation, train_step
from ftassist_app.serve_step import describe_server
from serving.registry import ServerRecord, write_server_record
from tests.processes import find_server
from ftassist_app.settings import AppSettings, parse_auth
from ftassist_app.workspace import Workspace, workspace_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "support_tickets"


@pytest.fixture()
def app_settings(tmp_path, tiny_model) -> AppSettings:
    return AppSettings(runs_dir=tmp_path / "runs", model=str(tiny_model))


@pytest.fixture()
def settings(app_settings) -> Workspace:
    """The workspace of one logged-in visitor (what every conversation handler works in)."""
    return workspace_for(app_settings, username="ada")


def run(gen):
    """The last session a handler yields."""
    out = None
    for out in gen:
        pass
    return out


def answer_all(s, settings, picks=(1, 0, 1, 2, 3)):
    for q, pick in zip(QUESTIONS, picks):
        s = run(conversation.respond(s, settings, q.choices[pick]))
    return s


def test_advisor_conversation_recommends_fine_tuning_and_offers_data(settings):
    s = conversation.new_session()
    assert s.quick == list(QUESTIONS[0].choices)
    s = answer_all(s, settings)
    assert s.stage == "data"
    assert "fine-tuning (LoRA)" in s.messages[-1]["content"]
    assert conversation.USE_EXAMPLE in s.quick
    # every question was asked, and every answer echoed as the user's message
    assert sum(m["role"] == "user" for m in s.messages) == len(QUESTIONS)


def test_advisor_is_honest_when_rag_fits_but_lets_user_go_on(settings):
    s = answer_all(conversation.new_session(), settings, picks=(0, 1, 1, 3, 3))
    text = s.messages[-1]["content"]
    assert "RAG, not fine-tuning" in text and "You can still go on" in text
    assert conversation.UPLOAD in s.quick


def test_unreadable_free_text_gets_a_hint_not_a_crash(settings):
    s = run(conversation.respond(conversation.new_session(), settings, "perhaps"))
    assert "yes or no" in s.messages[-1]["content"]
    assert s.answers.new_facts is None


def test_start_over_keeps_session_id(settings):
    s = answer_all(conversation.new_session(), settings)
    s2 = run(conversation.respond(s, settings, conversation.RESTART))
    assert s2.id == s.id and s2.stage == "decide" and s2.answers.new_facts is None


def test_upload_nothing_is_a_user_error(settings, tmp_path):
    from ftassist_app.data_step import stash_uploads

    with pytest.raises(UserError, match="no files were attached"):
        stash_uploads([], tmp_path)


def test_compare_without_server_says_so(settings):
    with pytest.raises(UserError, match="No server is running"):
        next(compare_step.stream_compare(None, [{"role": "user", "content": "hi"}], ["base", "tuned"]))
    s = conversation.new_session()
    s.stage = "serve"
    s = run(conversation.respond(s, settings, conversation.COMPARE))
    assert compare_step.NO_SERVER in s.messages[-1]["content"]
    assert s.quick == [conversation.START_SERVER]
    assert find_server(settings.settings.runs_dir) is None


@pytest.fixture()
def fake_server(settings):
    """A run folder whose server.json records a live process (a `sleep`, its own group) like vLLM's."""
    import subprocess
    import sys

    from ftassist.process import process_started

    run_dir = settings.jobs_dir / "run-fake"
    (run_dir / "adapter").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    info = ServerRecord(base_url="http://127.0.0.1:8123/v1", api_key="ft-key", models=["base", "tuned"], pid=proc.pid,
                      pid_started=process_started(proc.pid), command="ftassist serve --port 8123", run_dir=str(run_dir))
    write_server_record(settings.server_file, info)
    yield run_dir, proc
    proc.kill()
    proc.wait()


def test_chat_reuses_a_live_server_and_stops_it(settings, fake_server, monkeypatch):
    from ftassist_app import serve_step

    run_dir, proc = fake_server

    def no_second_server(*_a, **_k):
        raise AssertionError("a second server was started for the same run")

    monkeypatch.setattr(serve_step, "start_serving", no_second_server)
    s = conversation.new_session()
    s.run_dir, s.stage = str(run_dir), "train"
    s = run(conversation.respond(s, settings, conversation.START_SERVER))
    assert s.stage == "serve" and s.quick == conversation.SERVE_QUICK
    assert "Server ready" in s.messages[-1]["content"] and "ft-key" in s.messages[-1]["content"]
    assert not any("Starting vLLM" in str(m["content"]) for m in s.messages)
    s = run(conversation.respond(s, settings, conversation.STOP_SERVER))
    assert s.messages[-1]["content"] == "Server stopped." and s.quick == [conversation.START_SERVER]
    assert proc.wait(timeout=30) is not None
    assert not settings.server_file.exists() and find_server(settings.settings.runs_dir) is None


def test_chat_compare_shows_both_models_and_offers_next_steps(settings, fake_server, small_data):
    run_dir, _ = fake_server
    s = conversation.new_session()
    s.run_dir, s.data_dir, s.stage = str(run_dir), str(small_data), "serve"
    seen_quick = []
    for s in conversation.respond(s, settings, conversation.COMPARE):
        seen_quick.append(list(s.quick))
    assert seen_quick[0] == [] and seen_quick[-1] == conversation.SERVE_QUICK
    assert s.messages[-2]["content"].startswith("Prompt: ")
    text = s.messages[-1]["content"]
    # nothing listens on the recorded port: each pane says so instead of the chat crashing
    assert "**base** — error:" in text and "**tuned** — error:" in text


def test_chat_says_why_the_server_did_not_start(settings):
    run_dir = settings.jobs_dir / "run-unfinished"
    run_dir.mkdir(parents=True)
    s = conversation.new_session()
    s.run_dir, s.stage = str(run_dir), "train"
    s = run(conversation.respond(s, settings, conversation.START_SERVER))
    assert "The server did not start" in s.messages[-1]["content"] and "no adapter yet" in s.messages[-1]["content"]
    assert s.quick == [conversation.START_SERVER] and s.stage == "train"


def test_server_description_has_everything_a_client_needs():
    info = ServerRecord(base_url="http://127.0.0.1:8123/v1", api_key="ft-key", models=["base", "tuned"], pid=1,
                      command="ftassist serve --port 8123")
    text = describe_server(info)
    for needle in ("http://127.0.0.1:8123/v1", "`base`", "`tuned`", "ft-key", "Authorization: Bearer ft-key",
                   "OpenAI(base_url='http://127.0.0.1:8123/v1'", "ftassist serve --port 8123"):
        assert needle in text


def test_snippets_and_cli_commands():
    assert "-H \"Authorization: Bearer k\"" in curl_snippet("http://h:1/v1", "tuned", "k")
    assert "Authorization" not in curl_snippet("http://h:1/v1", "tuned", None)
    code = python_snippet("http://h:1/v1", "tuned", None)
    compile(code, "<snippet>", "exec")
    assert "api_key='EMPTY'" in code and "stream=True" in code
    cmd = cli_command("data build", DataConfig(inputs=["a.jsonl"], out="d/", drop_duplicates=True, column_map={"output": "y"}))
    assert cmd == "ftassist data build a.jsonl --out d/ --map output=y --drop-duplicates"
    assert cli_command(None, TrainConfig(data="d", out="r", lora_r=8)) == "ftassist train --data d --out r --lora-r 8"


def test_auth_flag():
    assert parse_auth("u:p") == ("u", "p")
    assert parse_auth(None) is None
    with pytest.raises(UserError, match="USER:PASSWORD"):
        parse_auth("nopassword")


def test_progress_helpers():
    class St:
        run_dir, state, step, total_steps, reason = "/x/run-1", "running", 3, 12, None
    metrics = [{"step": 1, "loss": 2.5}, {"step": 2, "loss": None}, {"step": 3, "loss": 2.0, "tokens_per_s": 99.0, "eta_s": 75}]
    text = train_step.progress_markdown(St, metrics)
    assert "run-1" in text and "step 3/12 (25%)" in text and "loss 2.0000" in text and "ETA 1 min 15 s" in text
    frame = train_step.loss_frame(metrics)
    assert list(frame["step"]) == [1, 3] and list(frame["loss"]) == [2.5, 2.0]
    empty = train_step.loss_frame([])
    assert str(empty["step"].dtype) == "int64" and str(empty["loss"].dtype) == "float64"  # the plot's axes stay numeric


def test_guard_turns_user_errors_into_gradio_errors():
    import gradio as gr

    from ftassist_app.ui import _guard

    @_guard
    def bad():
        raise UserError("upload a file first")

    with pytest.raises(gr.Error, match="upload a file first"):
        bad()


# --- with the library's data build and training jobs ------------------------------------------

def _dirty_file(tmp_path: Path) -> Path:
    lines = (EXAMPLE / "train.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    row = json.loads(lines[0])
    row["messages"][1]["content"] += " Reach me at jane.doe@example.com."
    path = tmp_path / "tickets.jsonl"
    path.write_text("\n".join(lines + lines[:3] + [json.dumps(row)]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow
def test_upload_shows_findings_and_offers_fixes(settings, tmp_path):
    s = answer_all(conversation.new_session(), settings)
    s = run(conversation.respond(s, settings, "", [str(_dirty_file(tmp_path))]))
    report = next(m["content"] for m in reversed(s.messages) if isinstance(m["content"], str) and "Data checked" in m["content"])
    assert "ftassist data build" in report
    dup = [q for q in s.quick if q.startswith("Drop") and "duplicate" in q]
    assert dup, s.quick
    s = run(conversation.respond(s, settings, dup[0]))
    assert s.data_fixes.get("drop_duplicates") is True
    assert "--drop-duplicates" in next(m["content"] for m in reversed(s.messages)
                                       if isinstance(m["content"], str) and "Data checked" in m["content"])


@pytest.mark.slow
def test_example_data_then_training_job_to_completion(settings):
    s = answer_all(conversation.new_session(), settings)
    s = run(conversation.respond(s, settings, conversation.USE_EXAMPLE))
    assert s.data_ready and conversation.CONTINUE_TRAIN in s.quick
    assert any(isinstance(m["content"], dict) and m["content"]["path"].endswith("lengths.png") for m in s.messages)
    s = run(conversation.respond(s, settings, conversation.CONTINUE_TRAIN))
    assert s.stage == "train" and "ftassist train" in s.messages[-1]["content"]
    s.train_overrides = {"max_steps": 3, "max_length": 256}
    s = run(conversation.respond(s, settings, conversation.START_TRAIN))
    assert s.run_dir and Path(s.run_dir).parent == settings.jobs_dir

    # a reloaded page (a fresh session) finds the job again (running: reattached; already done: kept at hand)
    fresh = conversation.reattach(conversation.new_session(), settings)
    assert fresh.run_dir == s.run_dir

    deadline = time.time() + 420
    status = None
    while time.time() < deadline:
        s, status, metrics = conversation.poll(s, settings)
        if status.state not in train_step.ACTIVE:
            break
        time.sleep(2)
    assert status is not None and status.state == "completed", (status, (Path(s.run_dir) / "train.log").read_text()[-2000:])
    assert "Training finished" in s.messages[-1]["content"]
    # the run kept a step scored on its validation split, so the levers can be measured against it
    assert s.quick == [conversation.MERGE, conversation.START_SERVER, conversation.NEXT]
    assert list(train_step.loss_frame(metrics)["step"]) == [1, 2, 3]  # a loss point for each of the 3 steps asked for
    from ftassist.data.fingerprint import read_fingerprint

    recorded = json.loads((Path(s.run_dir) / "run.json").read_text())["data_fingerprint"]
    assert recorded == read_fingerprint(s.data_dir)["id"]  # the run names the data version it trained on
    # merge and the parity gate, from the chat
    s = run(conversation.respond(s, settings, conversation.MERGE))
    assert "**Parity check passed**" in s.messages[-1]["content"] and "| merged_hf | 100.0% |" in s.messages[-1]["content"]
    assert (Path(s.run_dir) / "merged" / "config.json").is_file() and (Path(s.run_dir) / "verify.md").is_file()
    assert s.quick == [conversation.START_SERVER, conversation.NEXT, conversation.EXPORT]
    # GGUF for llama.cpp / Ollama, from the chat: the files, the Modelfile, and the figures of each file
    s = run(conversation.respond(s, settings, conversation.EXPORT))
    said = s.messages[-1]["content"]
    assert "| model-f16.gguf |" in said and "| model-q4_k_m.gguf |" in said and "ollama create" in said
    exported = Path(s.run_dir) / "gguf"
    assert (exported / "Modelfile").is_file() and json.loads((exported / "export.json").read_text())["verified"] is True
    assert s.quick == [conversation.START_SERVER, conversation.NEXT]
    # after a reload the finished run is at hand again, without interrupting the new conversation
    again = conversation.reattach(conversation.new_session(), settings)
    assert again.run_dir == s.run_dir and again.stage == "decide" and again.data_dir == s.data_dir
    table = train_step.jobs_table(settings.jobs_dir)
    assert list(table["state"]) == ["completed"]


def test_free_text_start_says_what_it_understood_and_asks_only_the_rest(settings):
    text = ("I want my model to turn customer reviews into a JSON object with sentiment, rating and issues; "
            "I have about 240 labelled examples in a CSV.")
    s = run(conversation.respond(conversation.new_session(), settings, text))
    said = "\n".join(m["content"] for m in s.messages if isinstance(m["content"], str))
    assert "What I understood" in said and "`sentiment`, `rating` and `issues`" in said and "about 240" in said
    assert "yes or no" not in said
    assert s.answers.examples == 240 and s.answers.fixed_format is True and s.answers.new_facts is False
    assert s.quick == list(QUESTIONS[2].choices)  # style: the first thing still unknown
    s = run(conversation.respond(s, settings, "no particular style, and it must stay private"))
    assert s.stage == "data" and "240 examples is enough" in s.messages[-1]["content"]


def test_data_then_evidence_before_advice(settings):
    s = conversation.new_session()
    s = run(conversation.respond(s, settings, "extract fields from support tickets as JSON, about 100 examples"))
    s = run(conversation.respond(s, settings, conversation.USE_EXAMPLE))
    said = [m["content"] for m in s.messages if isinstance(m["content"], str)]
    text = "\n".join(said)
    assert "Preview: the first 2 training examples" in text and "> **user**:" in text
    assert "Your files hold **460** examples (you said 100)" in text
    assert "Measured on 8 of your test rows" in text and "prompting + structured outputs:" in text
    assert s.evidence is not None and (Path(s.data_dir) / "evidence.json").is_file()
    assert any(isinstance(m["content"], dict) and m["content"]["path"].endswith("report.md") for m in s.messages)
    assert s.quick[-1] == conversation.CONTINUE_TRAIN


def test_a_table_mapped_by_a_guess_waits_for_the_users_choice(settings, tmp_path):
    """`notes` stands left of the review: by contents alone it would be taken for the prompt; the chat shows the
    guess and builds only with the mapping the user picks."""
    path = tmp_path / "reviews.csv"
    lines = ["notes,review,label"] + [f'ok {i},"The blender number {i} broke after a week, sadly",negative'
                                         for i in range(12)]
    path.write_text("\n".join(lines) + "\n")
    (tmp_path / "plain.csv").write_text("notes,col_a,col_b\n" + "".join(f"n{i},words {i} here,reply {i} there\n"
                                                                      for i in range(12)))
    s = run(conversation.respond(conversation.new_session(), settings, files=[str(tmp_path / "plain.csv")]))
    said = s.messages[-1]["content"]
    assert "**guess**" in said and "| the prompt (user message) | `notes` |" in said
    assert s.quick == [] and s.mapping_request["mapping"]["instruction"] == "notes" and s.data_dir is None  # nothing built on a guess
    with pytest.raises(UserError, match="one role only"):
        run(conversation.set_mapping(s, settings, {"instruction": "col_a", "output": "col_a"}))
    s = run(conversation.set_mapping(s, settings, {"instruction": "col_a", "output": "col_b"}))
    assert s.column_map == {"instruction": "col_a", "output": "col_b"} and s.data_ready
    first = json.loads((Path(s.data_dir) / "train.jsonl").read_text().splitlines()[0])["messages"]
    assert first[0]["content"].startswith("words") and first[1]["content"].startswith("reply")
    # named columns are not a guess: built at once, the mapping still shown
    s = run(conversation.respond(conversation.new_session(), settings, files=[str(path)]))
    text = "\n".join(m["content"] for m in s.messages if isinstance(m["content"], str))
    assert "| the prompt (user message) | `review` | its name |" in text and s.data_ready


def test_eval_reading_in_plain_words():
    arms = [{"name": "tuned", "constrained": False, "content": {"fields": [
                {"field": "priority", "kind": "enum", "accuracy": 0.75, "wrong": 15,
                 "top_mistake": {"reference": "high", "replied": "medium", "count": 9, "of": 20}},
                {"field": "amount", "kind": "number", "accuracy": 0.9, "wrong": 6, "mean_abs_error": 2.5},
                {"field": "category", "kind": "enum", "accuracy": 1.0, "wrong": 0}]}},
            {"name": "tuned+json_schema", "constrained": True, "content": {"fields": []}}]
    lines = compare_step.field_sentences(arms)
    assert lines[1:] == ["- `priority` (enum): right 75% of the time; most often `high` answered as `medium` (9 of 20)",
                         "- `amount` (number): right 90% of the time; off by 2.5 on average",
                         "- `category` (enum): always right"]
    probe = {"probes": [{"id": "a"}, {"id": "b"}], "totals": {"base": 2, "tuned": 1}}
    assert compare_step.probe_sentences(probe)[1:] == ["- base: 2/2 passed", "- tuned: 1/2 passed"]


@pytest.mark.vllm
def test_a_phrasing_model_words_the_opening_and_never_decides(app_settings, vllm_server):
    import dataclasses

    text = "turn customer reviews into a JSON object with sentiment and rating; about 240 examples"
    plain = workspace_for(app_settings, username="ada")
    rules = run(conversation.respond(conversation.new_session(), plain, text))
    worded = workspace_for(dataclasses.replace(app_settings, assistant_url=vllm_server.base_url,
                                               assistant_key=vllm_server.api_key, assistant_model="base"), username="bo")
    s = run(conversation.respond(conversation.new_session(), worded, text))
    said = next(m["content"] for m in s.messages if isinstance(m["content"], str) and "What I understood" in m["content"])
    ruled = next(m["content"] for m in rules.messages if isinstance(m["content"], str) and "What I understood" in m["content"])
    assert ruled in said and said != ruled  # the rules' text, unchanged, under the model's line
    assert f"worded by the model at {vllm_server.base_url}; the rules decided the rest" in said
    assert (s.answers, s.quick) == (rules.answers, rules.quick)  # the model decided nothing
    down = workspace_for(dataclasses.replace(app_settings, assistant_url="http://127.0.0.1:9/v1"), username="cy")
    s = run(conversation.respond(conversation.new_session(), down, text))
    said = next(m["content"] for m in s.messages if isinstance(m["content"], str) and "What I understood" in m["content"])
    assert said.startswith(ruled) and "the phrasing model did not answer (cannot reach the endpoint" in said
    assert (s.answers, s.quick) == (rules.answers, rules.quick)


def test_an_edited_schema_is_checked_and_used_on_the_next_build(settings, tmp_path):
    from ftassist_app import data_step

    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"review {i}"},
                                                     {"role": "assistant", "content": json.dumps({"rating": i % 5})}]}) + "\n"
                            for i in range(20)))
    with pytest.raises(UserError, match=r"the edited schema: not valid JSON"):
        data_step.save_schema('{"type": "object",', settings.uploads_dir)
    with pytest.raises(UserError, match=r"the edited schema: not a valid JSON Schema"):
        data_step.save_schema('{"type": "objekt"}', settings.uploads_dir)
    assert not (settings.uploads_dir / "schema.json").exists()  # nothing half-written
    strict = '{"type": "object", "properties": {"rating": {"type": "integer", "maximum": 3}}, "required": ["rating"]}'
    schema = data_step.save_schema(strict, settings.uploads_dir)
    cfg = data_step.data_config([str(path)], settings.data_dir, settings.model, {}, 0, None, schema)
    result = data_step.build_data(cfg)
    assert {f.check for f in result.findings} == {"schema_mismatch"} and result.exit_code == 1  # ratings of 4 break it
    assert data_step.findings_rows(result.findings)[0][:4] == ["r.jsonl", "5", "schema_mismatch", "error"]
