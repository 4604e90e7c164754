"""Documents -> question/answer pairs by a teacher model: the reply parser, config checks, the
endpoint checks, a scripted stub endpoint (exact pairs, fallback from json_schema), and the real
vLLM CPU server with the tiny random model (its replies are noise: the tests assert the plumbing)."""

from __future__ import annotations

import json
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

from ftassist.process import free_port

from ftassist_cli import main as cli_main
from ftassist.config import DataConfig
from ftassist.data.build import build_dataset
from ftassist.data.documents import document_passages
from ftassist.data.teacher import Teacher, pairs_schema, parse_qa_pairs, teacher_messages
from ftassist.errors import ConfigError, UserError
from ftassist.files import read_jsonl
from tests.fake_http import JsonHandler

D = Path(__file__).parent / "fixtures" / "data"
GUIDE = D / "guide.md"
GUIDE_SOURCES = {f"{GUIDE}:passage {i}" for i in (1, 2, 3)}


# --- the reply parser, on fixed strings -------------------------------------------------------

QA = [{"question": "How often is the pressure checked?", "answer": "Every week."},
      {"question": "What is oiled?", "answer": "Each roller."}]


@pytest.mark.parametrize("text", [
    json.dumps(QA),
    "Sure! Here are the pairs:\n```json\n" + json.dumps(QA, indent=2) + "\n```\nHope this helps.",
    json.dumps({"pairs": QA}),
    "<think>The passage says [weekly] checks {maybe}.</think>\n" + json.dumps(QA),
    "Pairs: " + json.dumps([{"Question": " How often is the pressure checked? ", "Answer": "Every week."},
                            {"q": "What is oiled?", "a": "Each roller."}]),
    json.dumps({"result": QA}),
    "[1, 2] then " + json.dumps(QA),
])
def test_parser_finds_pairs_in_replies(text):
    assert parse_qa_pairs(text, 2) == (QA, None)


def test_parser_limits_dedupes_and_skips_bad_items():
    three = QA + [{"question": "Q3?", "answer": "A3."}]
    assert parse_qa_pairs(json.dumps(three), 2) == (QA, None)
    assert parse_qa_pairs(json.dumps(three)) == (three, None)
    dup = [QA[0], {"question": QA[0]["question"].upper(), "answer": "x"}, {"question": "", "answer": "y"}, QA[1]]
    assert parse_qa_pairs(json.dumps(dup), 5) == (QA, None)
    assert parse_qa_pairs(json.dumps({"question": "Q?", "answer": "A."})) == ([{"question": "Q?", "answer": "A."}], None)


@pytest.mark.parametrize("text, why", [
    ("", "the reply is empty"),
    ("   \n", "the reply is empty"),
    ("sovereign glimmer ]] {{ teapot", "no JSON array of question/answer objects in the reply"),
    ('[{"question": "cut off', "no JSON array of question/answer objects in the reply"),
    ('{"pairs": []}', "no JSON array of question/answer objects in the reply"),
    ('[{"question": "Q?", "answer": ""}, {"answer": "A."}, "text"]', "3 item(s) in the reply lack a non-empty question and answer"),
])
def test_parser_explains_unusable_replies(text, why):
    assert parse_qa_pairs(text, 2) == ([], why)


def test_prompt_and_schema_ask_for_n_pairs():
    msgs = teacher_messages("Oil the chain.", "Bike care", "Chains", 3)
    assert [m["role"] for m in msgs] == ["user"]
    assert 'Write 3 question/answer pairs about this passage from the document "Bike care", section "Chains".' in msgs[0]["content"]
    assert "a JSON array of 3 objects" in msgs[0]["content"]
    assert msgs[0]["content"].endswith('Passage:\n"""\nOil the chain.\n"""')
    assert 'a JSON object {"pairs": [...]} holding 3 objects' in teacher_messages("x", "t", None, 3, structured=True)[0]["content"]
    schema = pairs_schema(3, max_tokens=1200)
    assert schema["properties"]["pairs"]["maxItems"] == 3 and schema["required"] == ["pairs"]
    pair = schema["properties"]["pairs"]["items"]["properties"]
    assert (pair["question"]["maxLength"], pair["answer"]["maxLength"]) == (100, 300)


# --- config and endpoint checks, before any work -----------------------------------------------

def test_teacher_config_problems_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as exc:
        DataConfig(inputs=[str(GUIDE)], out=str(tmp_path / "o"), teacher_url="127.0.0.1:8000", pairs_per_passage=0,
                   teacher_concurrency=0).validate()
    text = " ".join(exc.value.problems)
    assert len(exc.value.problems) == 4
    assert "must start with http://" in text and "--teacher-url needs --teacher-model" in text
    assert "--pairs-per-passage 0" in text and "--teacher-concurrency must be >= 1" in text
    with pytest.raises(ConfigError, match="--teacher-model, --pairs-per-passage only apply with --teacher-url"):
        DataConfig(inputs=[str(GUIDE)], out="o", teacher_model="m", pairs_per_passage=3).validate()

def test_unreachable_teacher_fails_before_any_work(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    out = tmp_path / "o"
    with pytest.raises(UserError, match=rf"cannot reach the teacher endpoint {url} .*--teacher-url"):
        build_dataset(DataConfig(inputs=[str(GUIDE)], out=str(out), teacher_url=url, teacher_model="m"))
    assert not out.exists()
    assert cli_main(["data", "build", str(GUIDE), "--out", str(out), "--teacher-url", url, "--teacher-model", "m"]) == 2
    assert cli_main(["data", "build", str(GUIDE), "--out", str(out), "--teacher-url", url]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"ftassist data: error: cannot reach the teacher endpoint {url}")
    assert err[1] == "ftassist data: error: --teacher-url needs --teacher-model: name the model the endpoint serves"
    with pytest.raises(UserError, match="none of the inputs is one"):
        build_dataset(DataConfig(inputs=[str(D / "clean.jsonl")], out=str(out), teacher_url=url, teacher_model="m"))


def test_template_documents_get_a_provenance_sidecar(tiny_model, tmp_path):
    result = build_dataset(DataConfig(inputs=[str(GUIDE)], out=str(tmp_path / "o"), model=str(tiny_model), test_size=1))
    assert result.exit_code == 0 and result.report["documents"] == {"method": "template"}
    rows = read_jsonl(result.out / "train.jsonl") + read_jsonl(result.out / "test.jsonl")
    prov = read_jsonl(result.out / "provenance.jsonl")
    assert len(prov) == len(rows) == 3 and all(list(r) == ["messages"] for r in rows)
    assert sorted((p["passage"], p["method"]) for p in prov) == [(1, "template"), (2, "template"), (3, "template")]
    assert "by templates; provenance.jsonl gives the source passage" in (result.out / "report.md").read_text()


# --- a scripted endpoint: exact pairs, findings, fallback from json_schema ----------------------

class Stub:
    """An OpenAI-compatible endpoint serving model "stub" that refuses response_format (HTTP 400) and
    answers the "Chains" passage with chatty fenced JSON, everything else with noise."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        stub = self

        class Handler(JsonHandler):
            send = JsonHandler.send_json

            def do_GET(self) -> None:
                self.send(200, {"object": "list", "data": [{"id": "stub", "object": "model", "created": 0, "owned_by": "t"}]})

            def do_POST(self) -> None:
                req = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                stub.requests.append(req)
                if "response_format" in req:
                    self.send(400, {"error": {"message": "response_format is not supported", "type": "BadRequestError",
                                              "param": "response_format", "code": 400}})
                    return
                prompt = req["messages"][-1]["content"]
                text = ("Here you go:\n```json\n" + json.dumps(QA + [{"question": "Extra?", "answer": "Extra."}]) + "\n```"
                        if "master link" in prompt else "purple monkey dishwasher")
                self.send(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "stub",
                                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture()
def stub():
    s = Stub()
    yield s
    s.server.shutdown()
    s.server.server_close()


def test_stub_teacher_pairs_provenance_and_fallback(stub, tiny_model, tmp_path):
    cfg = DataConfig(inputs=[str(GUIDE)], out=str(tmp_path / "o"), model=str(tiny_model), teacher_url=stub.url,
                     teacher_model="stub", teacher_api_key="sk-secret", teacher_concurrency=1, test_size=1)
    result = build_dataset(cfg)
    assert result.exit_code == 0 and result.train_rows + result.test_rows == 2
    # The first request asked for json_schema, was refused, and was retried plain; the rest went plain.
    assert ["response_format" in r for r in stub.requests] == [True, False, False, False]
    assert all(r["temperature"] == 0.3 and r["model"] == "stub" for r in stub.requests)
    invalid = [f for f in result.findings if f.check == "teacher_reply_invalid"]
    assert {f.source for f in invalid} == {f"{GUIDE}:passage 1", f"{GUIDE}:passage 3"}
    assert all(f.severity == "warning" and "purple monkey" in f.example for f in invalid)
    rows = read_jsonl(result.out / "train.jsonl") + read_jsonl(result.out / "test.jsonl")
    assert sorted(r["messages"][0]["content"] for r in rows) == sorted(p["question"] for p in QA)
    assert all(list(r) == ["messages"] for r in rows)
    prov = read_jsonl(result.out / "provenance.jsonl")
    passage = document_passages(GUIDE, "markdown")[1]
    assert [(p["file"], p["passage"], p["heading"], p["text"], p["method"], p["model"]) for p in prov] == \
        [(str(GUIDE), 2, "Chains", passage[1], "teacher", "stub")] * 2
    assert {(p["split"], p["line"]) for p in prov} == {("train", 1), ("test", 1)}
    report = json.loads((result.out / "report.json").read_text())
    assert report["documents"] == {"method": "teacher", "url": stub.url, "model": "stub", "pairs_per_passage": 2,
                                   "temperature": 0.3, "response_format": "none", "asked": 3, "answered": 1, "pairs": 2,
                                   "invalid": 2, "failed": 0}
    assert report["config"]["teacher_api_key"] == "***" and "sk-secret" not in (result.out / "report.json").read_text()
    assert report["inputs"][0]["format"] == "document_teacher"
    assert "teacher model `stub`" in (result.out / "dataset_card.md").read_text()
    assert "teacher stub: 3 passages asked, 2 pairs from 1" in result.summary


def test_stub_teacher_json_schema_only_and_unknown_model(stub, tiny_model, tmp_path):
    cfg = dict(inputs=[str(GUIDE)], model=str(tiny_model), teacher_url=stub.url, teacher_model="stub")
    with pytest.raises(UserError, match=rf"teacher endpoint {stub.url} does not serve model ghost; it serves: stub"):
        build_dataset(DataConfig(out=str(tmp_path / "a"), **{**cfg, "teacher_model": "ghost"}))
    assert stub.requests == []
    result = build_dataset(DataConfig(out=str(tmp_path / "b"), teacher_response_format="json_schema", **cfg))
    assert result.exit_code == 1 and len(stub.requests) == 3
    failed = [f for f in result.findings if f.check == "teacher_request_failed"]
    assert {f.source for f in failed} == GUIDE_SOURCES and "response_format is not supported" in failed[0].message
    assert [f.check for f in result.findings if f.severity == "error"] == ["teacher_no_pairs", "no_examples"]
    assert {p.name for p in result.out.iterdir()} == {"report.json", "report.md", "dataset_card.md"}


# --- the real vLLM server with the tiny random model -------------------------------------------

def vllm_args(server, out: Path, *extra: str) -> list[str]:
    return ["data", "build", str(GUIDE), "--out", str(out), "--teacher-url", server.base_url, "--teacher-model",
            server.base_name, "--teacher-api-key", server.api_key, "--pairs-per-passage", "1", "--teacher-max-tokens", "180",
            *extra]


@pytest.mark.vllm
def test_vllm_teacher_noise_becomes_findings(vllm_server, tiny_model, tmp_path, capsys):
    out = tmp_path / "o"
    code = cli_main(vllm_args(vllm_server, out, "--teacher-response-format", "none", "--model", str(tiny_model)))
    assert code == 1, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    docs = report["documents"]
    assert (docs["asked"], docs["pairs"], docs["response_format"]) == (3, 0, "none")
    problems = [f for f in report["findings"] if f["check"] in ("teacher_reply_invalid", "teacher_request_failed")]
    assert {f["source"] for f in problems} == GUIDE_SOURCES and all(f["severity"] == "warning" for f in problems)
    assert "teacher_no_pairs" in report["findings_by_check"] and not (out / "train.jsonl").exists()
    assert "teacher base: 3 passages asked, 0 pairs" in capsys.readouterr().out


@pytest.mark.vllm
def test_vllm_teacher_structured_outputs_make_pairs(vllm_server, tiny_model, tmp_path):
    cfg = DataConfig(inputs=[str(GUIDE)], out=str(tmp_path / "o"), model=str(tiny_model), teacher_url=vllm_server.base_url,
                     teacher_model=vllm_server.base_name, teacher_api_key=vllm_server.api_key, pairs_per_passage=1,
                     teacher_max_tokens=180, teacher_response_format="json_schema")
    # The grammar forces {"pairs": [...]} with strings capped to fit 180 tokens: even noise ends as a complete pair.
    teacher = Teacher.connect(cfg, progress=False)
    examples, findings, fmt, _ = teacher.document_examples(GUIDE, "markdown")
    assert (findings, fmt, teacher.stats.asked, teacher.stats.pairs) == ([], "document_teacher", 3, 3)
    assert all([m["role"] for m in ex.messages] == ["user", "assistant"] for ex in examples)
    assert all(0 < len(ex.messages[0]["content"]) <= 45 and 0 < len(ex.messages[1]["content"]) <= 135 for ex in examples)
    passages = document_passages(GUIDE, "markdown")
    assert [ex.source for ex in examples] == [f"{GUIDE}:passage {i} pair 1" for i in (1, 2, 3)]
    assert [ex.meta["provenance"] for ex in examples] == [
        {"file": str(GUIDE), "passage": i + 1, "heading": h, "text": t, "method": "teacher", "model": vllm_server.base_name}
        for i, (h, t) in enumerate(passages)]

    # Through the build, the noisy pairs are validated like any data: problems name the pair they came from.
    result = build_dataset(cfg)
    docs = result.report["documents"]
    assert (docs["asked"], docs["answered"], docs["pairs"], docs["response_format"]) == (3, 3, 3, "json_schema")
    errors = [f for f in result.findings if f.severity == "error"]
    assert all(f.source in {ex.source for ex in examples} for f in errors), errors
    assert result.exit_code == (1 if errors else 0)
