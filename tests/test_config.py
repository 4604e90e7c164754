"""The typed configs: YAML and flags build the same object, and bad values are all reported."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ftassist import config as C
from ftassist_cli import build_parser
from ftassist_cli.args import config_from_args
from ftassist.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
KINDS = {"train": C.TrainConfig, "data": C.DataConfig, "serve": C.ServeConfig, "eval": C.EvalConfig}


@pytest.mark.parametrize("path", sorted((ROOT / "examples" / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_parses(path):
    kind = path.stem.split("_")[0]
    cfg = C.load_config(KINDS[kind], path)
    raw = yaml.safe_load(path.read_text())
    for key, value in raw.items():
        assert getattr(cfg, key) == value


def test_flags_override_yaml(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("data: d\nout: o\nlora_r: 8\nlearning_rate: 0.0001\n")
    args = build_parser().parse_args(["train", "--config", str(path), "--lora-r", "4"])
    cfg = config_from_args(C.TrainConfig, args)
    assert (cfg.lora_r, cfg.lora_alpha, cfg.learning_rate, cfg.data) == (4, 8, 1e-4, "d")


def test_all_problems_reported_together():
    with pytest.raises(ConfigError) as info:
        C.build_config(C.TrainConfig, {"lora_r": 0, "learning_rate": 1.0})
    text = " | ".join(info.value.problems)
    assert len(info.value.problems) == 4, text
    for flag in ("--data", "--out", "--lora-r", "--learning-rate"):
        assert flag in text


def test_unknown_yaml_key_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data: d\nout: o\nlora_rank: 8\n")
    with pytest.raises(ConfigError, match="unknown field.*lora_rank"):
        C.load_config(C.TrainConfig, path)


def test_serve_off_loopback_needs_key():
    with pytest.raises(ConfigError, match="--api-key"):
        C.build_config(C.ServeConfig, {"host": "0.0.0.0"})
    assert C.build_config(C.ServeConfig, {"host": "0.0.0.0", "api_key": "k"}).api_key == "k"


def test_every_field_has_help():
    for cls in (C.DataConfig, C.TrainConfig, C.MergeConfig, C.ServeConfig, C.EvalConfig, C.DemoConfig, C.VerifyConfig,
                C.InspectConfig, C.ExportConfig, C.PushConfig, C.EvidenceConfig):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def test_cli_bad_flag_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ftassist_cli", "demo", "--port", "70000"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["ftassist demo: error: --port 70000 is not a valid port"]


@pytest.mark.parametrize("argv, line", [
    (["verify", "runs/x", "--api-key", "k"], "ftassist verify: error: --api-key, --adapter-name and --merged-name "
                                              "describe a server: add --base-url"),
    (["verify", "runs/x", "--limit", "0"], "ftassist verify: error: --max-new-tokens and --limit must be >= 1 "
                                            "(32 and 8 are the defaults)"),
    (["data", "inspect", "nowhere.csv"], "ftassist data: error: nowhere.csv: no such file"),
])
def test_verify_and_inspect_flags_are_checked_by_their_configs(argv, line):
    proc = subprocess.run([sys.executable, "-m", "ftassist_cli", *argv], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line], proc.stderr


def test_cli_unreadable_yaml(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: [unclosed\n")
    proc = subprocess.run([sys.executable, "-m", "ftassist_cli", "demo", "--config", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "cannot read it as YAML" in proc.stderr and "Traceback" not in proc.stderr


def test_yaml_strings_are_coerced_and_bad_values_fail_in_one_line(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("data: d\nout: o\nlearning_rate: 2e-4\nlora_r: '8'\ngroup_by_length: 'false'\n")
    cfg = C.load_config(C.TrainConfig, good)
    assert (cfg.learning_rate, cfg.lora_r, cfg.group_by_length) == (2e-4, 8, False)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: d\nout: o\nmethod: qlor\ndtype: bf16\nepochs: lots\n")
    proc = subprocess.run([sys.executable, "-m", "ftassist_cli", "train", "--config", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("ftassist train: error: ") for line in lines)  # one line per problem
    for part in ("method 'qlor' is not one of auto, lora, qlora, full", "dtype 'bf16' is not one of", "epochs 'lots' is not a number"):
        assert part in proc.stderr
    # The same checks hold for Python callers and the app, not only argparse.
    with pytest.raises(ConfigError, match="method 'qlor'"):
        C.TrainConfig(data="d", out="o", method="qlor")


def test_a_saved_config_holds_no_testing_hook_and_reads_back(tmp_path):
    cfg = C.TrainConfig(data="d", out="o", learning_rate=5e-4)
    C.save_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    assert "debug_nan_at_step" not in text and "learning_rate: 0.0005" in text
    assert C.load_config(C.TrainConfig, tmp_path / "config.yaml") == cfg


def test_every_command_prints_its_help(capsys):
    """`--help` of every subcommand prints (argparse %-formats help text: a field's "10%" used to crash `train --help`)."""
    import argparse

    parser = build_parser()
    commands = []
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        for name, sub in action.choices.items():
            nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
            commands += [[name, inner] for a in nested for inner in a.choices] or [[name]]
    assert ["train"] in commands and ["data", "build"] in commands and len(commands) >= 12
    for argv in commands:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([*argv, "--help"])
        assert done.value.code == 0, argv
        assert "usage: ftassist " + " ".join(argv) in capsys.readouterr().out
