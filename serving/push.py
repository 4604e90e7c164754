"""`ftassist push RUN_DIR --repo OWNER/NAME`: upload a run's merged model (or adapter) to the Hugging Face Hub.

The folder goes up as it is (safetensors, tokenizer, the training chat template and the model card
`ftassist merge` wrote with huggingface_hub), with huggingface_hub's own `HfApi`: the token comes
from where huggingface_hub looks (HF_TOKEN, `hf auth login`), the endpoint from HF_ENDPOINT.
Every failure is one line: no folder yet, no token, the Hub unreachable, the token refused.
"""

from __future__ import annotations

from pathlib import Path

from ftassist.config import PushConfig
from ftassist.errors import UserError


def push_run(cfg: PushConfig) -> str:
    """Create (or reuse) `cfg.repo` and upload the chosen folder; returns the repository URL."""
    cfg.validate()
    run = Path(cfg.run_dir)
    folder = run / cfg.what
    if not (folder / ("config.json" if cfg.what == "merged" else "adapter_config.json")).is_file():
        fix = f"ftassist merge {run} --out {run}/merged" if cfg.what == "merged" else "train it first (`ftassist train`)"
        if cfg.what == "adapter" and (run / "model" / "config.json").is_file():
            fix = (f"it is a full fine-tuning run (model/, no adapter): `ftassist merge {run} --out {run}/merged`, "
                   "then push --what merged")
        raise UserError(f"{folder}: no {cfg.what} model there; {fix}")
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    token = get_token()
    if not token:
        raise UserError("no Hugging Face token: run `hf auth login` or set HF_TOKEN (a token with write access)")
    api = HfApi(token=token)
    try:
        url = api.create_repo(cfg.repo, private=cfg.private, exist_ok=True)
        api.upload_folder(repo_id=cfg.repo, folder_path=str(folder), commit_message=f"ftassist push of {run.name}/{cfg.what}")
    except LocalTokenNotFoundError as exc:
        raise UserError("no Hugging Face token: run `hf auth login` or set HF_TOKEN") from exc
    except HfHubHTTPError as exc:
        status = getattr(exc.response, "status_code", None)
        why = "the token was refused (it needs write access to the owner)" if status in (401, 403) else str(exc).splitlines()[0]
        raise UserError(f"--repo {cfg.repo}: the Hub said no ({why})") from exc
    except transport_errors() as exc:  # no route, refused, DNS, timeouts
        raise UserError(f"cannot reach the Hugging Face Hub at {constants.ENDPOINT} ({type(exc).__name__}); "
                        "check the network (or HF_ENDPOINT) and push again") from exc
    return str(url)


def transport_errors() -> tuple[type[BaseException], ...]:
    """The connection errors of the HTTP client huggingface_hub uses (httpx, or its vendored fork), plus OSError."""
    import sys

    from huggingface_hub.utils import get_session

    client = sys.modules.get(type(get_session()).__module__.split(".")[0])
    base = getattr(client, "TransportError", None)
    return (OSError, base) if isinstance(base, type) else (OSError,)
