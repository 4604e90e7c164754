"""The vLLM command line and the checks made before launching: pure, no server started."""

from __future__ import annotations

import json
import shutil
import socket
import sys

import pytest

from ftassist.config import ServeConfig
from ftassist.errors import ConfigError, UserError
from serving.launch import build_vllm_argv, compact_ids, kv_cache_gib, serve_dtype, start_server, vllm_env
from ftassist.process import free_port
from serving.preflight import check_launch, require_engine, vllm_lora_rank


def test_argv_base_only():
    cfg = ServeConfig(model="/m", port=8123, max_model_len=1024)
    assert build_vllm_argv(cfg, python="py", cuda=False) == [
        "py", "-m", "vllm.entrypoints.openai.api_server", "--model", "/m", "--served-model-name", "base",
        "--host", "127.0.0.1", "--port", "8123", "--dtype", "float32", "--max-model-len", "1024",
        "--generation-config", "auto", "--middleware", "serving.vote.VoteReplies", "--block-size", "32",
    ]


def test_argv_adapters_key_eager_extra():
    cfg = ServeConfig(model="/m", adapters={"tuned": "/a", "other": "/b"}, served_name="merged", api_key="k",
                      max_lora_rank=12, enforce_eager=True, extra_args=["--max-num-seqs", "32"])
    argv = build_vllm_argv(cfg, python="py", cuda=True)
    assert argv[argv.index("--dtype") + 1] == "bfloat16"
    assert argv[argv.index("--served-model-name") + 1] == "merged"
    tail = argv[argv.index("--generation-config") + 2:]
    assert tail == ["--enable-lora", "--max-lora-rank", "16", "--max-loras", "2", "--lora-modules", "tuned=/a", "other=/b",
                    "--middleware", "serving.vote.VoteReplies", "--middleware", "serving.guard.RequireKeyEverywhere", "--enforce-eager", "--max-num-seqs", "32"]
    assert "k" not in argv  # the key goes in the environment, never on the command line


def test_a_cpu_server_with_adapters_refuses_prompt_logprobs_behind_the_key_check():
    cfg = ServeConfig(model="/m", adapters={"tuned": "/a"}, api_key="k")
    argv = build_vllm_argv(cfg, python="py", cuda=False)
    middleware = [argv[i + 1] for i, a in enumerate(argv) if a == "--middleware"]
    # Starlette runs the last one added first: the key is checked before any body is read.
    assert middleware == ["serving.vote.VoteReplies", "serving.guard.RefusePromptLogprobs",
                          "serving.guard.RequireKeyEverywhere"]
    assert "serving.guard.RefusePromptLogprobs" not in build_vllm_argv(ServeConfig(model="/m"), cuda=False)
    assert "serving.guard.RefusePromptLogprobs" not in build_vllm_argv(cfg, cuda=True)


def test_argv_is_a_list_of_strings_run_by_module():
    argv = build_vllm_argv(ServeConfig(model="/m"))
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    assert all(isinstance(a, str) for a in argv)


def test_block_size_defaults_to_32_on_cpu_only():
    assert build_vllm_argv(ServeConfig(model="/m"), cuda=True).count("--block-size") == 0  # vLLM's own choice on CUDA
    argv = build_vllm_argv(ServeConfig(model="/m", block_size=64), cuda=True)
    assert argv[argv.index("--block-size") + 1] == "64"
    argv = build_vllm_argv(ServeConfig(model="/m", block_size=96), cuda=False)
    assert argv[argv.index("--block-size") + 1] == "96"
    # A --block-size among the pass-through flags wins and is not doubled.
    argv = build_vllm_argv(ServeConfig(model="/m", extra_args=["--block-size", "128"]), cuda=False)
    assert argv.count("--block-size") == 1 and argv[argv.index("--block-size") + 1] == "128"


def test_bad_block_size_is_named_before_launch(tiny_model):
    bad = ServeConfig(model=str(tiny_model), port=free_port(), block_size=48)
    with pytest.raises(ConfigError) as err:
        check_launch(bad, cuda=False)
    assert err.value.problems == ["--block-size 48: vLLM's CPU attention needs a multiple of 32; use 32 (the default) or 64"]
    check_launch(bad, cuda=True)  # CUDA kernels take other sizes
    with pytest.raises(ConfigError, match="--block-size 0 must be a positive number of tokens"):
        ServeConfig(model=str(tiny_model), block_size=0).validate()


def test_dtype_auto():
    assert serve_dtype("auto", cuda=False) == "float32"
    assert serve_dtype("auto", cuda=True) == "bfloat16"
    assert serve_dtype("bfloat16", cuda=False) == "bfloat16"
    assert serve_dtype("float16", cuda=False) == "float16"


def test_lora_rank_rounds_up_to_what_vllm_accepts():
    assert [vllm_lora_rank(r) for r in (1, 4, 8, 12, 64, 100)] == [1, 8, 8, 16, 64, 128]


def test_cpu_env_uses_every_core_and_keeps_user_settings(monkeypatch):
    import serving.launch as launch

    monkeypatch.setattr(launch, "mem_available_gib", lambda: 7.5)  # the KV cache follows the memory free now
    env = vllm_env({"PATH": "/bin"}, cuda=False)
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == compact_ids(sorted(__import__("os").sched_getaffinity(0)))
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    monkeypatch.setattr(launch, "mem_available_gib", lambda: 40.0)
    assert vllm_env({}, cuda=False)["VLLM_CPU_KVCACHE_SPACE"] == "4"
    assert vllm_env({"VLLM_CPU_KVCACHE_SPACE": "8"}, cuda=False)["VLLM_CPU_KVCACHE_SPACE"] == "8"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in vllm_env({}, cuda=True)
    assert vllm_env({}, cuda=True, api_key="sk-1")["VLLM_API_KEY"] == "sk-1"


def test_compact_ids_and_kv_cache():
    assert compact_ids([0, 1]) == "0-1"
    assert compact_ids([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"
    assert (kv_cache_gib(24), kv_cache_gib(8), kv_cache_gib(2)) == (4, 2, 1)


def problems_of(cfg: ServeConfig) -> list[str]:
    with pytest.raises(ConfigError) as err:
        check_launch(cfg)
    return err.value.problems


def test_taken_port(tiny_model):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert problems_of(ServeConfig(model=str(tiny_model), port=port)) == [
            f"--port {port} is already in use on 127.0.0.1: stop what listens there or pick another port (e.g. --port {port + 1})"
        ]


def test_missing_model_folder(tmp_path):
    missing = tmp_path / "nope"
    assert problems_of(ServeConfig(model=str(missing), port=free_port())) == [
        f"--model {missing}: no such folder; pass an existing model folder or a hub id"
    ]


def test_adapter_without_config(tiny_model, tmp_path):
    (tmp_path / "adapter").mkdir()
    assert problems_of(ServeConfig(model=str(tiny_model), adapters={"tuned": str(tmp_path / "adapter")}, port=free_port())) == [
        f"--adapter tuned={tmp_path / 'adapter'}: the folder has no adapter_config.json; "
        "pass a folder saved by peft's save_pretrained (RUN_DIR/adapter)"
    ]


def test_adapter_with_modules_to_save_and_too_high_rank(tiny_model, tiny_adapter, tmp_path):
    bad = tmp_path / "adapter"
    shutil.copytree(tiny_adapter, bad)
    config = json.loads((bad / "adapter_config.json").read_text())
    config.update(modules_to_save=["lm_head", "embed_tokens"], r=128)
    (bad / "adapter_config.json").write_text(json.dumps(config))
    assert problems_of(ServeConfig(model=str(tiny_model), adapters={"tuned": str(bad)}, port=free_port())) == [
        f"--adapter tuned={bad}: the adapter fully trains modules_to_save (embed_tokens, lm_head), which vLLM cannot "
        "load as a LoRA; merge it with `ftassist merge RUN_DIR --out DIR` and serve the merged folder",
        f"--adapter tuned={bad}: LoRA rank 128 is above --max-lora-rank 64; pass --max-lora-rank 128",
    ]


def test_all_problems_reported_together(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        problems = problems_of(ServeConfig(model=str(tmp_path / "m"), adapters={"t": str(tmp_path / "a")}, port=port))
    # the model, the adapter and the port, each named, in the order of the flags
    assert [p.split(":")[0] for p in problems] == [f"--model {tmp_path / 'm'}", f"--adapter t={tmp_path / 'a'}",
                                                   f"--port {port} is already in use on 127.0.0.1"]


def test_non_loopback_needs_a_key(tiny_model):
    with pytest.raises(ConfigError) as err:
        check_launch(ServeConfig(model=str(tiny_model), host="0.0.0.0", port=free_port()))
    assert err.value.problems == ["--host 0.0.0.0 exposes the server beyond this machine: add --api-key KEY"]


def test_cli_reports_problems_with_exit_2(tmp_path, capsys):
    from ftassist_cli import main

    code = main(["serve", "--model", str(tmp_path / "nope"), "--port", str(free_port())])
    assert code == 2
    assert f"ftassist serve: error: --model {tmp_path / 'nope'}: no such folder" in capsys.readouterr().err


def test_serving_without_vllm_says_what_to_install(monkeypatch, tmp_path):
    # None in sys.modules makes `import vllm` fail exactly as it does where vLLM is not installed
    # (a CPU Space built from requirements-cpu.txt).
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError) as err:
        require_engine()
    message = str(err.value)
    for needle in ("serving needs vLLM", "no `vllm` module", "pip install 'ftassist[cuda]'", "ftassist[cpu]",
                   "pick GPU hardware", "requirements-cpu.txt, leaves vLLM out"):
        assert needle in message, (needle, message)
    # start_server, which every caller (CLI, app, demo, bench) goes through, fails with it first,
    # before the config's own problems (here a missing model folder) are even looked at.
    with pytest.raises(UserError, match="serving needs vLLM") as err:
        start_server(ServeConfig(model=str(tmp_path / "no-such-model")))
    assert not isinstance(err.value, ConfigError)


def test_engine_that_is_installed_but_broken_is_not_called_missing(monkeypatch, tmp_path):
    (tmp_path / "broken_engine.py").write_text("import ftassist_no_such_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UserError, match=r"`import broken_engine` fails here .*ftassist_no_such_dependency"):
        require_engine("broken_engine")
    with pytest.raises(UserError, match="no `ftassist_no_such_engine` module"):
        require_engine("ftassist_no_such_engine")
    assert require_engine("json") is None
