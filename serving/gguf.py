"""GGUF files for llama.cpp and Ollama, made by llama.cpp's own converter and quantiser.

    convert(merged_dir, out_dir / "model-f16.gguf", "f16")
    quantize(out_dir / "model-f16.gguf", out_dir / "model-q4_k_m.gguf", "q4_k_m")
    problems = check_metadata(out_dir / "model-f16.gguf", tokenizer)   # chat template, eos, vocabulary
    write_text_atomic(out_dir / "Modelfile", modelfile("model-q4_k_m.gguf", tokenizer))

The converter is `convert_hf_to_gguf.py` with its `conversion/` and `gguf-py/` folders, from the
llama.cpp sources that `llama-cpp-python`'s source package vendors; `make setup` unpacks them into
`<venv>/share/llama.cpp` (or set FTASSIST_LLAMA_CPP to a llama.cpp checkout). f32, f16 and q8_0 come
straight from the converter; q4_k_m is quantised from the f16 file by llama.cpp's quantiser
(`llama_model_quantize`, through llama-cpp-python).

A tokenizer llama.cpp does not know (its pre-tokenizer is identified by a hash of how it splits a
test string) is refused by the converter; `pre_tokenizer="gpt-2"` (or another llama.cpp name) names
it, and the export's verification then checks that llama.cpp splits every probe exactly as the
training tokenizer does.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ftassist.errors import UserError

QUANTS = ("f32", "f16", "q8_0", "q4_k_m")
CONVERTER_TYPES = {"f32": "f32", "f16": "f16", "q8_0": "q8_0"}  # written by the converter itself
QUANTISER_TYPES = {"q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}  # quantised from the f16 file
ENV = "FTASSIST_LLAMA_CPP"

# Runs the converter with one change: a tokenizer whose pre-tokenizer hash llama.cpp does not know
# gets the name the user gave (argv[1]) instead of an error. Everything else is llama.cpp's code.
_BOOTSTRAP = """
import runpy, sys
root, pre = sys.argv[1], sys.argv[2]
sys.path[0:0] = [root, root + "/gguf-py"]
import conversion.base as base
known = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        if not pre:
            raise
        return pre
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = [root + "/convert_hf_to_gguf.py"] + sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def converter_root() -> Path:
    """The folder holding llama.cpp's convert_hf_to_gguf.py; UserError saying how to get it."""
    root = Path(os.environ.get(ENV) or Path(sys.prefix) / "share" / "llama.cpp")
    if not (root / "convert_hf_to_gguf.py").exists():
        raise UserError(f"llama.cpp's converter is not at {root}: run `make setup` (it unpacks it from the "
                        f"llama-cpp-python sources), or set {ENV} to a llama.cpp checkout")
    return root


def convert(merged: Path, out: Path, outtype: str, *, pre_tokenizer: str | None = None, log: Path | None = None) -> Path:
    """Convert a merged safetensors folder into one GGUF file of `outtype` (f32, f16 or q8_0)."""
    if outtype not in CONVERTER_TYPES:
        raise UserError(f"the converter writes {sorted(CONVERTER_TYPES)}, not {outtype!r}")
    root = converter_root()
    tmp = out.with_name(out.name + ".part")
    argv = [sys.executable, "-c", _BOOTSTRAP, str(root), pre_tokenizer or "", str(merged), "--outfile", str(tmp),
            "--outtype", CONVERTER_TYPES[outtype]]
    done = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "NO_LOCAL_GGUF": "1"})
    if log is not None:
        log.write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        text = done.stderr + done.stdout
        if "pre-tokenizer was not recognized" in text:
            found = re.search(r"chkhsh:\s+([0-9a-f]{64})", text)
            raise UserError("llama.cpp's converter does not know this tokenizer's pre-tokenizer"
                            + (f" (hash {found.group(1)[:12]}...)" if found else "")
                            + ": if it splits text like GPT-2 (byte-level BPE), pass --pre-tokenizer gpt-2; the "
                            "verification then checks every probe's tokens against the training tokenizer")
        tail = "\n".join(text.strip().splitlines()[-8:])
        raise UserError(f"llama.cpp's converter failed on {merged} (exit {done.returncode}):\n{tail}")
    tmp.replace(out)
    return out


def quantize(src: Path, out: Path, quant: str) -> Path:
    """Quantise an f16 GGUF into `quant` with llama.cpp's quantiser, in a child process (a crash stays there)."""
    if quant not in QUANTISER_TYPES:
        raise UserError(f"the quantiser writes {sorted(QUANTISER_TYPES)}, not {quant!r}")
    tmp = out.with_name(out.name + ".part")
    code = ("import ctypes, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            f"p.ftype = llama_cpp.{QUANTISER_TYPES[quant]}\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n")
    done = subprocess.run([sys.executable, "-c", code, str(src), str(tmp)], capture_output=True, text=True)
    if done.returncode != 0 or not tmp.exists():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-6:])
        raise UserError(f"llama.cpp's quantiser could not write {quant} (exit {done.returncode}):\n{tail}")
    tmp.replace(out)
    return out


def read_metadata(path: Path) -> dict:
    """The GGUF's key/value metadata that matters here (strings, numbers), read with the `gguf` package."""
    from gguf import GGUFReader, GGUFValueType

    reader = GGUFReader(str(path))
    meta: dict = {}
    for key, fld in reader.fields.items():
        if key.startswith("tokenizer.ggml.") and key.endswith(("tokens", "scores", "token_type", "merges")):
            meta[key] = len(fld.data)  # the vocabulary itself: its size is enough
            continue
        if not fld.types or fld.types[0] == GGUFValueType.ARRAY:
            continue
        value = fld.parts[fld.data[0]]
        meta[key] = bytes(value).decode("utf-8") if fld.types[0] == GGUFValueType.STRING else value.tolist()[0]
    return meta


def check_metadata(path: Path, tokenizer) -> list[str]:
    """What the GGUF says differently from the training tokenizer: chat template, eos id, vocabulary size."""
    meta = read_metadata(path)
    problems = []
    if (meta.get("tokenizer.chat_template") or "") != (tokenizer.chat_template or ""):
        problems.append("the embedded chat template is not the training one")
    if meta.get("tokenizer.ggml.eos_token_id") != tokenizer.eos_token_id:
        problems.append(f"eos token id {meta.get('tokenizer.ggml.eos_token_id')} in the file, "
                        f"{tokenizer.eos_token_id} ({tokenizer.eos_token!r}) in training")
    if meta.get("tokenizer.ggml.tokens") != len(tokenizer):
        problems.append(f"vocabulary of {meta.get('tokenizer.ggml.tokens')} tokens in the file, {len(tokenizer)} in training")
    return problems


CHATML_TEMPLATE = ('{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}'
                   '{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
                   '<|im_start|>assistant\n')


def default_system(tokenizer) -> str | None:
    """The system message the training template inserts when a conversation has none (SmolLM2's does)."""
    marker = "\x00probe\x00"
    text = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True)
    found = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n<\|im_start\|>user\n" + re.escape(marker), text, re.S)
    return found.group(1) if found else None


def modelfile(gguf_name: str, tokenizer, *, num_ctx: int = 2048) -> str:
    """An Ollama Modelfile for `gguf_name` (beside it): the training chat format, its stops, greedy decoding.

    A ChatML template (`<|im_start|>`) is written out in Ollama's template language, with the
    default system message the training template adds; any other template is left to the one
    embedded in the GGUF, which Ollama reads.
    """
    template = tokenizer.chat_template or ""
    lines = ["# Ollama: ollama create NAME -f Modelfile && ollama run NAME", f"FROM ./{gguf_name}"]
    stops = [tokenizer.eos_token] if tokenizer.eos_token else []
    if "<|im_start|>" in template:
        lines.append(f'TEMPLATE """{CHATML_TEMPLATE}"""')
        system = default_system(tokenizer)
        if system:
            lines.append(f'SYSTEM """{system}"""')
        stops += ["<|im_start|>"]
    for stop in dict.fromkeys(stops):
        lines.append(f'PARAMETER stop "{stop}"')
    # Ollama's default repeat_penalty (1.1) changes greedy replies; the verified decoding has none.
    lines += ["PARAMETER temperature 0", "PARAMETER repeat_penalty 1.0", f"PARAMETER num_ctx {num_ctx}"]
    return "\n".join(lines) + "\n"


MODELFILE_COMMANDS = {"FROM", "TEMPLATE", "SYSTEM", "PARAMETER", "ADAPTER", "LICENSE", "MESSAGE", "REQUIRES"}


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(COMMAND, argument) pairs of a Modelfile, with Ollama's rules: one command per line, \"\"\"...\"\"\" spans lines.

    Raises `ValueError` for an unknown command, an unclosed triple quote or a missing FROM.
    """
    pairs: list[tuple[str, str]] = []
    lines = iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command, _, arg = line.strip().partition(" ")
        if command.upper() not in MODELFILE_COMMANDS:
            raise ValueError(f"unknown Modelfile command {command!r}")
        arg = arg.strip()
        if arg.startswith('"""'):
            body = arg[3:]
            while not body.endswith('"""'):
                try:
                    body += "\n" + next(lines)
                except StopIteration:
                    raise ValueError(f"{command}: unclosed triple quote") from None
            arg = body[:-3]
        pairs.append((command.upper(), arg))
    if not any(c == "FROM" for c, _ in pairs):
        raise ValueError("a Modelfile needs FROM")
    return pairs
