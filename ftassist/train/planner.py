"""Training plan: estimate memory, pick micro-batch / grad-accum / checkpointing, explain why.

Everything here is a pure function of numbers (model shape, sequence length, hardware budget)
so it can be tested without a GPU:

    >>> shape = ModelShape(vocab=49152, hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3)
    >>> est = estimate_memory(shape, seq_len=256, micro_batch=8, lora_r=16, weight_bytes=4, compute_bytes=4)
    >>> round(est.total / 2**30, 1) > 0
    True

`plan_training` tries micro-batches from large to small (first without gradient checkpointing,
which costs about a third more compute, then with it) and keeps the effective batch by raising
gradient accumulation. It raises `UserError` when even one example with checkpointing does not
fit. `shrink_after_oom` is the decision taken when CUDA runs out of memory mid-run.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict, dataclass

from ftassist.device import BF16_CAPABILITY, PROFILES, Device, detect_device, train_dtype
from ftassist.errors import UserError
from ftassist.train.precision import MatmulRates, cpu_rates, fast_bf16, probe_enabled
from ftassist.train.schedule import describe_schedule

GiB = 2**30
TARGET_EFFECTIVE_BATCH = 16
# On a CPU every optimizer step is dear: an effective batch of 8 gives twice the updates per example seen.
TARGET_EFFECTIVE_BATCH_CPU = 8
# LoRA learning rates: small models took 1e-3 well and learned the values far faster than at 2e-4 on a CPU budget
# (SmolLM2-135M on the support-ticket task, bench/RESULTS.md); 2e-4 is the usual rate for bigger ones.
SMALL_MODEL_PARAMS, SMALL_MODEL_LR, LARGE_MODEL_LR = 1_000_000_000, 1e-3, 2e-4
# Full fine-tuning moves every weight: rates an order below LoRA's (the usual 1e-5 for big models, 1e-4 for small
# ones on a short CPU budget). Not measured on the example tasks as LoRA's were; `--search` tries it beside them.
SMALL_FULL_LR, LARGE_FULL_LR = 1e-4, 1e-5
MAX_OOM_RETRIES = 3


class PlanDoesNotFit(UserError):
    """No micro-batch fits the memory budget (`plan_training`)."""


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder-only transformer that decide its memory."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of every linear layer of one block (Llama-style attention + gated MLP)."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def params(self) -> int:
        block = sum(a * b for a, b in self.linear_shapes()) + 2 * self.hidden
        embed = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * block + embed + self.hidden

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes())

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """Read the shape from a transformers config (text config for multimodal ones)."""
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = getattr(c, "num_attention_heads", 8)
        return cls(
            vocab=c.vocab_size, hidden=c.hidden_size, layers=c.num_hidden_layers,
            intermediate=getattr(c, "intermediate_size", 4 * c.hidden_size), heads=heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            tied_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
        )


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes needed by each part of one training step."""

    weights: int
    lora: int
    optimizer: int
    activations: int
    lm_head: int
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.lora + self.optimizer + self.activations + self.lm_head + self.overhead


# Floats per token and layer that autograd keeps for backward in a Llama block with LoRA on all seven
# linear layers: ~16 hidden-sized + ~6 intermediate-sized (norm/linear inputs, q/k/v, attention output,
# gate/up/act, LoRA dropout copies). Counted with torch.autograd.graph.saved_tensors_hooks on
# SmolLM2-shaped blocks (h 576, i 1536): 18.6k floats a token, against 16h + 6i = 18.4k. sdpa on CPU and
# CUDA keeps no heads x seq x seq attention matrix (only the mask and a logsumexp).
SAVED_HIDDEN, SAVED_INTERMEDIATE = 16, 6
# On CPU, peak RSS grows ~1.65x faster per layer than what autograd saves: the forward's freed temporaries
# and the backward's gradients sit in glibc's heap, which hands little back mid-step. Measured with
# trl 1.16 on SmolLM2-shaped models, fp32, 8 x 212 tokens: +0.19 GiB RSS a layer (1 -> 5 layers) against
# 0.12 GiB saved. CUDA's caching allocator reuses blocks, so its count stays at the saved tensors.
CPU_HEAP_FACTOR = 1.65
# The LM head and loss. On CPU ftassist computes the model's own cross-entropy over full float32 logits
# (`ftassist.train.loss`): the logits, the log-softmax saved for backward, its gradient and the logits'
# gradient, ~4 (tokens x vocab) float32 copies at the peak (measured: 3.0 in isolation, 3.7 in train() with
# glibc's heap: +1.36 GiB RSS for 1 layer, 8 x 212 tokens, vocab 49152). It grows with the tokens of a
# micro-batch, but stays below a quarter of the activations for Llama-shaped models up to 150k vocabularies.
# On CUDA trl 1.16's fused head never builds the logits: its Triton kernel scores tiles of at most 4096 tokens
# x 32768 vocabulary entries in place, holding ~2 tile-sized temporaries.
LOGITS_COPIES_CPU = 4
HEAD_TILE_TOKENS, HEAD_TILE_VOCAB, HEAD_TILES_CUDA = 4096, 32768, 2


def estimate_memory(shape: ModelShape, *, seq_len: int, micro_batch: int, lora_r: int, weight_bytes: float,
                    compute_bytes: int, checkpointing: bool = False, optimizer_bytes: int = 8,
                    overhead: int = GiB // 2, device: str = "cpu", full: bool = False) -> MemoryEstimate:
    """Return the memory one step needs on `device` ("cpu": peak RSS; "cuda": peak allocated).

    weight_bytes: bytes per frozen base weight (4 fp32, 2 bf16, ~0.53 NF4 double-quant; embeddings
    and the LM head are never quantized). optimizer_bytes: AdamW state per trainable parameter
    (8 for fp32 moments, 2 for 8-bit). LoRA weights and their gradients are fp32 (4 + 4 bytes).
    Activations: what autograd saves per token and layer (SAVED_*), times CPU_HEAP_FACTOR on CPU;
    with checkpointing only each layer's input is kept, plus one layer recomputed at a time.
    lm_head: on CPU the full float32 logits and the loss's copies of them (LOGITS_COPIES_CPU); on CUDA
    trl's tiled log-prob head (HEAD_*), which does not grow past 4096 tokens a micro-batch.
    overhead: the Python/torch/transformers runtime (~0.5 GiB RSS measured before the first step).
    full: every weight trains (`--method full`): the weights are held in float32 whatever the compute precision (plus
    autocast's half-precision copies), the `lora` part is their gradients (4 bytes each) and the optimizer's state
    covers all of them: ~16 bytes a parameter on a CPU, ~10 with CUDA's 8-bit AdamW.
    """
    h, i = shape.hidden, shape.intermediate
    embed = shape.vocab * h * (1 if shape.tied_embeddings else 2)
    body = shape.params - embed
    weights = int(body * weight_bytes + embed * max(weight_bytes, compute_bytes))
    lora_n = shape.lora_params(lora_r)
    tokens = seq_len * micro_batch
    heap = CPU_HEAP_FACTOR if device == "cpu" else 1.0
    per_layer = int((SAVED_HIDDEN * h + SAVED_INTERMEDIATE * i) * compute_bytes * tokens * heap)
    activations = (shape.layers * h * compute_bytes * tokens + per_layer) if checkpointing else shape.layers * per_layer
    if device == "cuda":
        lm_head = HEAD_TILES_CUDA * min(tokens, HEAD_TILE_TOKENS) * min(shape.vocab, HEAD_TILE_VOCAB) * 4
    else:
        lm_head = LOGITS_COPIES_CPU * tokens * shape.vocab * 4
    if full:  # float32 weights and their gradients; under autocast, the half-precision copies it casts and caches
        weights = shape.params * (4 + (compute_bytes if compute_bytes < 4 else 0))
        lora_bytes, trainable = shape.params * 4, shape.params
    else:
        lora_bytes, trainable = lora_n * 8, lora_n
    return MemoryEstimate(weights=weights, lora=lora_bytes, optimizer=trainable * optimizer_bytes,
                          activations=activations, lm_head=lm_head, overhead=overhead)


@dataclass
class Hardware:
    """Where training runs and how much memory it may use."""

    device: str  # "cuda" or "cpu"
    name: str
    budget: int  # bytes available to training
    total: int
    bf16: bool = False  # a GPU with native bfloat16, or a CPU the probe measured fast at it
    rates: MatmulRates | None = None  # CPU only: the bf16 probe's figures (None when it did not run)
    capability: tuple[int, int] | None = None  # CUDA only: the compute capability

    @property
    def accelerator(self) -> Device:
        """This hardware as `ftassist.device` decides on it."""
        return Device(self.device, self.name, self.total if self.device == "cuda" else 0, self.capability)

    @classmethod
    def from_device(cls, device: Device, *, share: float = 0.9) -> "Hardware":
        """The GPU `device` with `share` of its memory usable: how tests inject a T4 or an H100."""
        return cls(device.kind, device.name, int(device.total_bytes * share), device.total_bytes, device.bf16,
                   capability=device.capability)


def detect_hardware(device: str = "auto", *, probe: Callable[[], MatmulRates] | None = None) -> Hardware:
    """The GPU (free memory, 90 %) when CUDA is usable and allowed, else the RAM (available + this process's own, 80 %).

    On a CPU, `probe` (default: `precision.cpu_rates`, measured once per host) says whether bf16 is fast here.
    Raises UserError when `device` is "cuda" and none is visible.
    """
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        # Native bfloat16 from the compute capability: torch.cuda.is_bf16_supported() also says True for a T4,
        # which only emulates it.
        gpu = detect_device()
        return Hardware("cuda", gpu.name, int(free * 0.9), total, gpu.bf16, capability=gpu.capability)
    if device == "cuda":
        raise UserError("--device cuda: no CUDA GPU is visible; use --device cpu or auto")
    try:
        import psutil

        vm = psutil.virtual_memory()
        # Memory this process already holds (an earlier model, the allocator's cache) is reusable.
        available, total = vm.available + psutil.Process().memory_info().rss, vm.total
    except ImportError:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    rates = (probe or cpu_rates)() if probe_enabled() else None
    return Hardware("cpu", f"CPU ({os.cpu_count()} cores)", int(available * 0.8), total,
                    rates is not None and fast_bf16(rates), rates)


@dataclass
class Plan:
    """What the planner chose, with the estimate behind it and a one-paragraph explanation."""

    method: str
    device: str
    dtype: str
    micro_batch: int
    grad_accum: int
    checkpointing: bool
    seq_len: int
    estimate_gib: float
    budget_gib: float
    explanation: str

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_method(method: str, device: str) -> str:
    """auto -> qlora on CUDA, lora elsewhere.

    >>> resolve_method("auto", "cpu"), resolve_method("auto", "cuda"), resolve_method("qlora", "cpu")
    ('lora', 'qlora', 'qlora')
    """
    return ("qlora" if device == "cuda" else "lora") if method == "auto" else method


def resolve_dtype(dtype: str, hw: Hardware, method: str = "lora") -> str:
    """auto -> bfloat16 on GPUs that have it and on CPUs the probe measured fast at it (LoRA only: QLoRA on a CPU
    stays float32), float32 on other CPUs (there bf16 is 10-300x slower), float16 on older GPUs.

    >>> resolve_dtype("auto", Hardware("cpu", "x", 1, 1))
    'float32'
    >>> resolve_dtype("auto", Hardware("cpu", "x", 1, 1, bf16=True)), resolve_dtype("auto", Hardware("cpu", "x", 1, 1, bf16=True), "qlora")
    ('bfloat16', 'float32')
    """
    if dtype != "auto":
        return dtype
    if hw.device == "cuda":
        return train_dtype(hw.accelerator if hw.capability else Device("cuda", hw.name, hw.total,
                                                                        BF16_CAPABILITY if hw.bf16 else None))
    return train_dtype(PROFILES["cpu"], cpu_bf16=hw.bf16, method=method)


def plan_training(shape: ModelShape, hw: Hardware, *, seq_len: int, method: str, dtype: str, lora_r: int,
                  batch_size: int = 0, grad_accum: int = 0, checkpointing: str = "auto",
                  n_examples: int | None = None) -> Plan:
    """Choose micro-batch, grad-accum and checkpointing that fit `hw.budget`; explain the choice.

    User-fixed values (batch_size/grad_accum > 0, checkpointing on/off) are kept. Raises UserError
    when nothing fits, naming the estimate and what to change.
    """
    compute_bytes = 4 if dtype == "float32" else 2
    weight_bytes = 0.53 if method == "qlora" else compute_bytes
    opt_bytes = 2 if hw.device == "cuda" else 8  # paged 8-bit AdamW on CUDA
    target = batch_size * grad_accum if batch_size and grad_accum else (
        TARGET_EFFECTIVE_BATCH_CPU if hw.device == "cpu" else TARGET_EFFECTIVE_BATCH)
    if n_examples:
        target = min(target, max(1, n_examples))
    cap = 8 if hw.device == "cpu" else 64  # on CPU a bigger micro-batch gains little and pads more
    micro = [batch_size] if batch_size else [m for m in (64, 32, 16, 8, 4, 2, 1) if m <= min(target, cap)]
    ck_opts = {"on": [True], "off": [False], "auto": [False, True]}[checkpointing]
    floor = min(4, micro[0])
    order = [(m, False) for m in micro if m >= floor and False in ck_opts]
    order += [(m, True) for m in micro if True in ck_opts]
    order += [(m, False) for m in micro if m < floor and False in ck_opts]

    def est(m: int, ck: bool) -> MemoryEstimate:
        return estimate_memory(shape, seq_len=seq_len, micro_batch=m, lora_r=lora_r, weight_bytes=weight_bytes,
                               compute_bytes=compute_bytes, checkpointing=ck, optimizer_bytes=opt_bytes,
                               device=hw.device, full=method == "full")

    for m, ck in order:
        e = est(m, ck)
        if e.total <= hw.budget:
            accum = grad_accum or max(1, -(-target // m))
            text = explain(shape, hw, e, method=method, dtype=dtype, micro=m, accum=accum, ck=ck, seq_len=seq_len)
            return Plan(method, hw.device, dtype, m, accum, ck, seq_len, round(e.total / GiB, 2),
                        round(hw.budget / GiB, 2), text)
    smallest = est(order[-1][0], order[-1][1] if len(order) else True) if order else est(1, True)
    raise PlanDoesNotFit(
        f"training does not fit: even micro-batch {order[-1][0] if order else 1} needs about {smallest.total / GiB:.1f} GiB "
        f"but {hw.name} has {hw.budget / GiB:.1f} GiB usable; lower --max-length (longest example: {seq_len} tokens), "
        f"use --method qlora or --gradient-checkpointing on, or pick a smaller --model"
    )


def cpu_precision_reason(hw: Hardware, dtype: str, method: str = "lora") -> str:
    """Why this precision on this CPU, with the probe's figures.

    >>> cpu_precision_reason(Hardware("cpu", "x", 1, 1, True, MatmulRates(199.0, 877.0)), "bfloat16")
    ' (bfloat16 autocast, LoRA weights in float32: this CPU multiplies bf16 4.4x as fast as fp32: fp32 199 GFLOP/s, bf16 877.0 GFLOP/s)'
    """
    if hw.rates is None:
        return f" ({dtype}; the bfloat16 probe was off: FTASSIST_BF16_PROBE=0)"
    ratio = hw.rates.bf16_gflops / max(hw.rates.fp32_gflops, 1e-9)
    if dtype == "bfloat16":
        held = "weights" if method == "full" else "LoRA weights"
        return (f" (bfloat16 autocast, {held} in float32: this CPU multiplies bf16 {ratio:.1f}x as fast as fp32: "
                f"{hw.rates.describe()})")
    if hw.bf16:
        return f" ({dtype} as asked, though this CPU multiplies bf16 {ratio:.1f}x as fast: {hw.rates.describe()})"
    return f" ({dtype}: this CPU has no fast bfloat16: {hw.rates.describe()})"


def explain(shape: ModelShape, hw: Hardware, e: MemoryEstimate, *, method: str, dtype: str, micro: int, accum: int,
            ck: bool, seq_len: int) -> str:
    """One paragraph saying what was chosen and why."""
    g = lambda b: f"{b / GiB:.2f} GiB"  # noqa: E731
    prec = {"qlora": "NF4 4-bit (double quant) base", "full": f"every weight trained, float32 weights, {dtype} compute"}.get(
        method, f"{dtype} base")
    why_dtype = cpu_precision_reason(hw, dtype, method) if hw.device == "cpu" else ""
    return (
        f"{method.upper()} on {hw.name}: {shape.params / 1e6:.0f}M-parameter model, {prec}{why_dtype}. "
        f"Estimated memory {g(e.total)} of {g(hw.budget)} usable (weights {g(e.weights)}, "
        f"{'gradients' if method == 'full' else 'LoRA + grads'} "
        f"{g(e.lora)}, optimizer {g(e.optimizer)}, activations {g(e.activations)}, LM head + loss {g(e.lm_head)}, "
        f"runtime {g(e.overhead)}) for micro-batch {micro} x {seq_len} tokens (longest example). "
        f"Gradient accumulation {accum} keeps the effective batch at {micro * accum}. "
        + ("Gradient checkpointing is on: without it the activations would not fit." if ck else
           "Gradient checkpointing is off: the activations fit, and recomputing them would cost about a third more time.")
        + " Batches are padded only to their longest example and grouped by length."
    )


# The epoch budget when the user sets none: enough passes that a few hundred rows are seen ~2,400 times in
# all (small sets need many passes to learn values, not just the format), between 3 and 12 epochs. It is an
# upper bound: with the task metric on, a plateau on the validation split or the time budget ends training first.
EXAMPLES_SEEN, MIN_EPOCHS, MAX_EPOCHS = 2400, 3, 12


def plan_learning_rate(params: int, method: str = "lora") -> float:
    """The planner's peak learning rate for a model of `params` parameters trained with `method`.

    >>> plan_learning_rate(135_000_000), plan_learning_rate(8_000_000_000), plan_learning_rate(135_000_000, "full")
    (0.001, 0.0002, 0.0001)
    """
    if method == "full":
        return SMALL_FULL_LR if params <= SMALL_MODEL_PARAMS else LARGE_FULL_LR
    return SMALL_MODEL_LR if params <= SMALL_MODEL_PARAMS else LARGE_MODEL_LR


@dataclass
class Budget:
    """How long a run may train, at which learning rate, and how often it is judged."""

    learning_rate: float
    epochs: float
    steps_per_epoch: int
    total_steps: int
    eval_every: int
    time_budget_s: float
    explanation: str

    def to_dict(self) -> dict:
        return asdict(self)


def plan_epochs(n_examples: int) -> int:
    """The planner's epoch budget for `n_examples` training rows.

    >>> plan_epochs(100), plan_epochs(360), plan_epochs(2000), plan_epochs(50_000)
    (12, 7, 3, 3)
    """
    return max(MIN_EPOCHS, min(MAX_EPOCHS, -(-EXAMPLES_SEEN // max(1, n_examples))))


def plan_budget(n_examples: int, effective_batch: int, *, epochs: float = 0.0, max_steps: int = -1,
                eval_steps: int = 0, time_budget_min: float = 0.0, validating: bool = True,
                learning_rate: float = 0.0, params: int = 0, warmup: float = 0.05, method: str = "lora") -> Budget:
    """The epoch budget (the user's, else `plan_epochs`), the validation interval and the wall-clock budget.

    The validation split is scored about twice an epoch unless `eval_steps` says otherwise.

    >>> b = plan_budget(360, 16, time_budget_min=30, params=135_000_000)
    >>> (b.learning_rate, b.epochs, b.steps_per_epoch, b.total_steps, b.eval_every, b.time_budget_s)
    (0.001, 7, 23, 161, 12, 1800.0)
    """
    per_epoch = max(1, -(-n_examples // max(1, effective_batch)))
    chosen = epochs if epochs > 0 else plan_epochs(n_examples)
    total = max_steps if max_steps > 0 else int(-(-chosen * per_epoch // 1))
    every = eval_steps or max(1, -(-per_epoch // 2))
    seconds = 60.0 * time_budget_min
    source = f"{max_steps} steps (--max-steps)" if max_steps > 0 else (
        f"{chosen:g} epochs (--epochs)" if epochs > 0 else f"up to {chosen} epochs (the planner's budget for {n_examples} rows)")
    lr = learning_rate or plan_learning_rate(params, method)
    lr_source = "--learning-rate" if learning_rate else (
        f"the planner's for {'full fine-tuning of ' if method == 'full' else ''}{params / 1e6:.0f}M parameters")
    text = f"Budget: {source}, {total} steps of {effective_batch} examples at learning rate {lr:g} ({lr_source})"
    text += f", at most {time_budget_min:g} min of wall-clock time." if seconds else ", no time limit."
    text += " " + describe_schedule(total, warmup, seconds)
    if validating:
        text += f" The validation split is scored every {every} steps and at the end."
    return Budget(lr, chosen, per_epoch, total, every, seconds, text)


def shrink_after_oom(micro_batch: int, grad_accum: int, retries_done: int,
                     max_retries: int = MAX_OOM_RETRIES) -> tuple[int, int] | None:
    """After a CUDA out-of-memory error: halve the micro-batch and double grad-accum, or None to give up.

    >>> shrink_after_oom(8, 2, 0)
    (4, 4)
    >>> shrink_after_oom(1, 16, 0) is None, shrink_after_oom(8, 2, 3) is None
    (True, True)
    """
    if micro_batch <= 1 or retries_done >= max_retries:
        return None
    return micro_batch // 2, grad_accum * 2
