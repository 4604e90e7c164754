"""A tiny random Llama with a real byte-level BPE tokenizer and a ChatML chat template.

Built from scratch in a second or two, no downloads: unit and integration tests of every stage
(data lengths, training, merge, vLLM serving) use it instead of a real model.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    rows = []
    for path in sorted((Path(__file__).parent.parent / "examples" / "support_tickets").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines()[:200]:
            rows.extend(m["content"] for m in json.loads(line)["messages"])
    rows.append("The quick brown fox jumps over the lazy dog. 0123456789 {}[]\":,")
    return rows


def build_tiny_llama(out: Path, *, vocab_size: int = 512, hidden: int = 64, layers: int = 2, seed: int = 0,
                     init_std: float = 0.02) -> Path:
    """Write a tiny LlamaForCausalLM + tokenizer folder to `out` and return it.

    `init_std` above the default 0.02 gives logits clear winners, so that comparisons between
    number formats (f16, 8-bit) test the path, not coin tosses between near-equal logits.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, head_dim=hidden // 2, max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False, initializer_range=init_std,
    )
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_adapter(model_dir: Path, out: Path, *, seed: int = 1) -> Path:
    """A LoRA adapter (r=8, all linear layers) for a tiny model, with random (not zero) B matrices, so it
    really changes the model's outputs; the model's tokenizer is saved beside it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                        init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(out)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(out)
    return out
