"""`ftassist data augment` against a planted teacher (a small local OpenAI-compatible server with fixed replies):
the teacher is measured first, disagreeing samples, duplicates and test look-alikes are dropped with their reason,
provenance is written per row, and a teacher below the accuracy floor is refused with exit 2."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import ThreadingHTTPServer
from pathlib import Path

from ftassist_cli import main
from tests.fake_http import JsonHandler

SCHEMA = {"type": "object", "properties": {"city": {"type": ["string", "null"]}, "urgent": {"type": "boolean"}},
          "required": ["city", "urgent"], "additionalProperties": False}
SYSTEM = "Reply with the city named in the message (or null) and whether it asks for urgent help, as JSON."
CITIES = ["Leeds", "York", "Hull", "Bath", "Derby", "Ely", "Wells", None, "Ripon"]
SEED = {f"Message number {i} from the people of {c or 'nowhere in particular'} today": {"city": c, "urgent": i % 2 == 0}
        for i, c in enumerate(CITIES)}
KEPT = "Water rising fast in Leeds city centre please send help"
SPLIT = "Lovely sunny afternoon walking the dog in York park"
INVALID = "Someone said hello to me in the queue today at noon"
NO_JSON = "Gibberish input that gets no JSON back from the teacher at all"
UNLABELLED = [KEPT, SPLIT, "Water rising fast in Leeds city centre, please send help!",  # a near-duplicate of KEPT
              "bridge closed in Bristol after the storm damaged it badly!!",  # a test row's look-alike
              INVALID, NO_JSON, next(iter(SEED))]  # the last: a labelled row's own input


class Teacher(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, wrong_on_seed: bool = False):
        self.wrong_on_seed = wrong_on_seed
        self.asked: dict[str, int] = defaultdict(int)
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), Handler)

    def label(self, text: str) -> str:
        with self.lock:
            n = self.asked[text]
            self.asked[text] += 1
        if text in SEED:
            right = SEED[text]
            return json.dumps({**right, "urgent": not right["urgent"]} if self.wrong_on_seed else right)
        if text == KEPT:
            return json.dumps({"city": "Leeds", "urgent": True})
        if text == SPLIT:  # 3 of every 5 samples say York, 2 say Hull: 60% agreement
            return json.dumps({"city": "York" if n % 5 < 3 else "Hull", "urgent": False})
        if text == INVALID:
            return json.dumps({"city": 5, "urgent": False})
        return "I do not know."


class Handler(JsonHandler):
    server: Teacher

    def do_GET(self):
        self.send_json(200, {"object": "list", "data": [{"id": "big", "object": "model", "created": 0, "owned_by": "t"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["response_format"]["json_schema"]["schema"] == SCHEMA
        text = self.server.label(body["messages"][-1]["content"])
        self.send_json(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "big",
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                             "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}})


def start(**kw) -> Teacher:
    server = Teacher(**kw)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_data(root: Path) -> Path:
    root.mkdir()
    rows = [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": t},
                          {"role": "assistant", "content": json.dumps(label)}]} for t, label in SEED.items()]
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": "Bridge closed in Bristol after the storm damaged it badly"},
                         {"role": "assistant", "content": json.dumps({"city": "Bristol", "urgent": False})}]}
    (root / "test.jsonl").write_text(json.dumps(test) + "\n")
    (root / "schema.json").write_text(json.dumps(SCHEMA))
    (root / "inputs.txt").write_text("\n".join(UNLABELLED) + "\n")
    return root


def argv(data: Path, server: Teacher, out: Path, *extra: str) -> list[str]:
    return ["data", "augment", str(data / "train.jsonl"), "--unlabelled", str(data / "inputs.txt"), "--teacher-url",
            f"http://127.0.0.1:{server.server_address[1]}/v1", "--teacher-model", "big", "--out", str(out), *extra]


def test_only_rows_the_checks_vouch_for_are_kept_with_their_reason_and_provenance(tmp_path, capsys):
    data, server = write_data(tmp_path / "data"), start()
    try:
        assert main(argv(data, server, tmp_path / "out")) == 0
    finally:
        server.shutdown()
    out = capsys.readouterr().out
    assert "teacher big: 100.0% of fields right on 3 held-out labelled rows" in out
    report = json.loads((tmp_path / "out" / "augment.json").read_text())
    assert report["rejected"] == {"no_json": 1, "disagreement": 1, "schema_invalid": 1, "duplicate": 2, "test_leak": 1,
                                  "request_error": 0}
    assert report["kept"] == 1 and report["inputs"] == len(UNLABELLED)
    rows = [json.loads(line) for line in (tmp_path / "out" / "augmented.jsonl").read_text().splitlines()]
    assert rows == [{"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": KEPT},
                                  {"role": "assistant", "content": json.dumps({"city": "Leeds", "urgent": True})}]}]
    prov = [json.loads(line) for line in (tmp_path / "out" / "provenance.jsonl").read_text().splitlines()]
    assert len(prov) == 1 and prov[0]["agreement"] == 1.0 and prov[0]["input_line"] == 1
    assert prov[0]["teacher"].startswith("big@http://127.0.0.1:") and len(prov[0]["prompt_id"]) == 12
    # duplicates and test look-alikes never reached the teacher; the others were sampled 5 times each
    assert {t: n for t, n in server.asked.items() if t not in SEED} == {KEPT: 5, SPLIT: 5, INVALID: 5, NO_JSON: 5}
    md = (tmp_path / "out" / "augment.md").read_text()
    assert md.index("The teacher first") < md.index("kept 1")


def test_a_teacher_below_the_floor_is_refused_with_exit_2_and_the_report_says_why(tmp_path, capsys):
    data, server = write_data(tmp_path / "data"), start(wrong_on_seed=True)
    try:
        assert main(argv(data, server, tmp_path / "out")) == 2
        err = capsys.readouterr().err
        assert "the teacher got 50% of fields right on 3 held-out labelled rows, below --accuracy-floor 80%" in err
        assert not (tmp_path / "out" / "augmented.jsonl").exists()
        assert "**Refused**" in (tmp_path / "out" / "augment.md").read_text()
        assert not [t for t in server.asked if t not in SEED]  # nothing was labelled
        assert main(argv(data, server, tmp_path / "forced", "--force")) == 0  # told to, it labels anyway
    finally:
        server.shutdown()
    assert json.loads((tmp_path / "forced" / "augment.json").read_text())["kept"] == 1


def test_bad_input_is_named(tmp_path, capsys):
    data = write_data(tmp_path / "data")
    (data / "few.jsonl").write_text("".join(line + "\n" for line in (data / "train.jsonl").read_text().splitlines()[:4]))
    assert main(["data", "augment", str(data / "few.jsonl"), "--teacher-url", "http://127.0.0.1:9/v1",
                 "--teacher-model", "big", "--out", str(tmp_path / "o")]) == 2
    assert "4 labelled rows; augmenting needs at least 5" in capsys.readouterr().err
    assert main(["data", "augment", str(data / "train.jsonl"), "--teacher-url", "localhost", "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "--teacher-url 'localhost' must start with http://" in err and "--teacher-model is missing" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written
