"""The serving stage: merge a run's adapter, serve models through vLLM, and prove parity.

    merge.py     merge_adapter(MergeConfig) -> a full-precision safetensors folder with the training template
    launch.py    build_vllm_argv / vllm_env / start_server(ServeConfig) -> ServerProcess
    preflight.py checks made before launching (port, model, adapters)
    server.py    ServerProcess: base_url, api_key, stop() of the whole process group
    guard.py     the API key on every route (vLLM guards only /v1)
    verify.py    verify_run(run_dir, ...) -> VerifyReport (the parity gate)

Nothing here imports gradio; heavy libraries (torch, transformers, peft, vllm) load inside functions.
"""
