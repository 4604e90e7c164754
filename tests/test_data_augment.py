"""`ftassist data augment` against a planted teacher (a small local OpenAI-compatible server with fixed replies):
the teacher is measured first, disagreeing samples, duplicates and test look-alikes are dropped with their reason,
provenance is written per row, and a teacher below the accuracy floor is refused with exit 2."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest

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
# --write: what the planted teacher writes for each kind of request, and how it labels what it wrote
TYPICAL, NO_CITY = "Snow blocking the only road out of Ripon this morning", "Power cut on our whole street since last night"
WRITES = {"": TYPICAL, "shorter": "not JSON at all", "longer": "Water rising fast in Leeds city centre please send help now",
          "nothing to put in `city`": NO_CITY}
WRITTEN = {TYPICAL: {"city": "Ripon", "urgent": False}, NO_CITY: {"city": None, "urgent": True}}


class Teacher(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, wrong_on_seed: bool = False):
        self.wrong_on_seed = wrong_on_seed
        self.asked: dict[str, int] = defaultdict(int)
        self.writing: list[str] = []  # the writing requests' prompts
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
        if text in WRITTEN:
            return json.dumps(WRITTEN[text])
        if text == INVALID:
            return json.dumps({"city": 5, "urgent": False})
        return "I do not know."


class Handler(JsonHandler):
    server: Teacher

    def do_GET(self):
        self.send_json(200, {"object": "list", "data": [{"id": "big", "object": "model", "created": 0, "owned_by": "t"}]})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][-1]["content"]
        if body["response_format"]["json_schema"]["name"] == "new_input":
            with self.server.lock:
                self.server.writing.append(prompt)
            twist = next((k for k in WRITES if k and k in prompt), "")
            text = json.dumps({"input": WRITES[twist]}) if twist != "shorter" else WRITES[twist]
        else:
            assert body["response_format"]["json_schema"]["schema"] == SCHEMA
            text = self.server.label(prompt)
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
    assert report["rejected"] == {"no_input": 0, "no_json": 1, "disagreement": 1, "schema_invalid": 1, "duplicate": 2, "test_leak": 1,
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


def test_written_inputs_go_through_the_same_checks_and_out_is_a_data_folder_judged_by_the_users_labels(
        tmp_path, capsys, tiny_model):
    from ftassist.config import TrainConfig
    from ftassist.train.trainer import train

    data, server = write_data(tmp_path / "data"), start()
    out = tmp_path / "out"
    try:
        assert main(argv(data, server, out, "--write", "5")) == 0
    finally:
        server.shutdown()
    assert f"ftassist train --data {out}" in capsys.readouterr().out
    report = json.loads((out / "augment.json").read_text())
    # 5 requests take turns: typical, shorter, longer, a row without a city, typical again (the same text: a duplicate)
    asked = sorted(next((k for k in WRITES if k and k in p), "") for p in server.writing)  # sent 4 at a time
    assert asked == sorted(["", "shorter", "longer", "nothing to put in `city`", ""])
    assert all(p.count("\n") >= 6 and "urgent" not in p for p in server.writing)  # 6 inputs shown, never a label
    assert report["written"] == {"asked": 5, "usable": 4, "kept": 2}
    assert report["rejected"]["no_input"] == 1 and report["rejected"]["duplicate"] == 2 + 2
    prov = [json.loads(line) for line in (out / "provenance.jsonl").read_text().splitlines()]
    assert [p["source"] for p in prov] == ["unlabelled", "written", "written"]
    assert prov[1]["written"]["twist"] == "" and len(prov[1]["written"]["shown_rows"]) == 6
    # OUT trains as it is: the labelled rows not held out, then the kept ones; judged on the held-out labelled rows
    train_rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    val_rows = [json.loads(line) for line in (out / "val.jsonl").read_text().splitlines()]
    assert len(train_rows) == 6 + 3 and len(val_rows) == 3 and report["train"]["augmented_lines"] == [7, 9]
    assert [r["messages"][1]["content"] for r in train_rows[6:]] == [KEPT, TYPICAL, NO_CITY]
    assert {r["messages"][1]["content"] for r in train_rows[:6] + val_rows} == set(SEED)
    assert (out / "schema.json").read_text() == (data / "schema.json").read_text() and (out / "test.jsonl").is_file()
    train(TrainConfig(data=str(out), out=str(tmp_path / "run"), model=str(tiny_model), max_steps=2, batch_size=2,
                      eval_steps=2, time_budget=0, report_to="none"), progress=False)
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["augmented"]["augmented_lines"] == [7, 9] and record["augmented"]["seed_rows"] == 6
    assert record["augmented"]["teacher"] == "big" and record["validation"]["rows"] == 3
    assert record["validation"]["source"] == str(out / "val.jsonl")


def test_out_never_overwrites_the_labelled_rows_and_something_must_be_labelled(tmp_path, capsys):
    data = write_data(tmp_path / "data")
    before = (data / "train.jsonl").read_bytes()
    url = ["--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "big"]
    assert main(["data", "augment", str(data / "train.jsonl"), "--write", "3", *url, "--out", str(data)]) == 2
    assert "holds training rows augment did not write" in capsys.readouterr().err
    assert (data / "train.jsonl").read_bytes() == before
    assert main(["data", "augment", str(data / "train.jsonl"), *url, "--out", str(tmp_path / "o")]) == 2
    assert "nothing to label: pass --unlabelled FILE" in capsys.readouterr().err


def test_a_schema_and_test_file_given_by_flag_land_under_the_names_train_reads_and_a_refusal_leaves_no_rows(
        tmp_path, capsys):
    data, server = write_data(tmp_path / "data"), start()
    (data / "schema.json").rename(data / "tickets_schema.json")
    (data / "test.jsonl").rename(data / "holdout.jsonl")
    out = tmp_path / "out"
    flags = ("--schema", str(data / "tickets_schema.json"), "--test", str(data / "holdout.jsonl"))
    try:
        assert main(argv(data, server, out, *flags)) == 0
    finally:
        server.shutdown()
    assert (out / "schema.json").read_text() == (data / "tickets_schema.json").read_text()
    assert (out / "test.jsonl").read_text() == (data / "holdout.jsonl").read_text()
    assert not (out / "tickets_schema.json").exists()
    # the same folder again, with a teacher below the floor: the earlier rows go, and no run can train on them
    wrong = start(wrong_on_seed=True)
    try:
        assert main(argv(data, wrong, out, *flags)) == 2
    finally:
        wrong.shutdown()
    assert not [n for n in ("train.jsonl", "val.jsonl", "augmented.jsonl", "provenance.jsonl", "test.jsonl")
                if (out / n).exists()]
    from ftassist.data.augment import augmented_rows
    from ftassist.errors import UserError

    with pytest.raises(UserError, match="the teacher was refused there"):
        augmented_rows(out)
