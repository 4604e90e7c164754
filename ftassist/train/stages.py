"""The reward stages after SFT: DPO on the model's own mistakes, GRPO with the eval's scorer as the reward.

    ftassist train --stage dpo  --from runs/sft --data data/ --out runs/dpo
    ftassist train --stage grpo --from runs/sft --data data/ --out runs/grpo --reward-weights fields=3

Supervised training imitates the references; it never learns which of its *own* answers were
wrong. Both stages start from a finished SFT run's adapter (the LoRA weights train on; its base
model is loaded as that run loaded it) and run through the same machinery as SFT (`trainer.train`):
the planner, atomic checkpoints and kill -9 resume, cancel, the NaN guard, metrics.jsonl, the task
metric on the SFT run's own validation split (its rows are never trained on here either) and
the best-step selection.

- **dpo**: the SFT adapter answers every training row greedily (and `--dpo-samples` times more,
  sampled); every reply the eval's scorer finds wrong (not the whole reference object) becomes a
  pair, the reference chosen and the reply rejected, written with why it was kept to
  RUN/pairs.jsonl. trl's `DPOTrainer` trains on them with the SFT adapter as the reference model
  (its log-probabilities computed once, before training).
- **grpo**: trl's `GRPOTrainer` samples `--grpo-generations` replies per training prompt and rewards
  each with `ftassist.train.reward` (the parse gate, schema, fields, exact, length; each part is
  logged), with a KL penalty to the SFT adapter (`--grpo-beta`). Replies are generated with the
  model being trained, in transformers (no server). By default it trains only on the prompts the
  SFT adapter answers wrong greedily (found as DPO finds its pairs, written to RUN/pairs.jsonl): on
  a prompt it answers right, every reply of the group scores alike and the step has no reward signal.
  A micro-batch whose groups all agree anyway is skipped (no forward or backward) and logged as
  `skipped_groups`.

Both train on the rows the SFT run held out for them (`--reward-size`, RUN/reward_rows.jsonl) when
it held any: on the rows it trained on, the SFT adapter is nearly always right.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftassist.config import TrainConfig
from ftassist.errors import UserError
from ftassist.files import read_jsonl, write_jsonl_atomic
from ftassist.train.head import use_plain_head

log = logging.getLogger("ftassist.train")

PAIRS_FILE = "pairs.jsonl"
REWARD_ROWS_FILE = "reward_rows.jsonl"  # the rows an SFT run held out for the stage after it (--reward-size)
# Upper epoch budgets and peak learning rates when the user sets none: the task metric and the time budget stop
# earlier. Both train on the SFT adapter's mistakes only (a few dozen pairs or prompts), so an epoch is a few steps:
# DPO's 2 epochs over 45 pairs on purchase_orders were still gaining at their last step (bench/RESULTS.md).
STAGE_EPOCHS = {"dpo": 4.0, "grpo": 3.0}
# A tenth of SFT's rate for these small models: DPO's gradient sums over the reply's tokens (x beta), and the
# stages run a few dozen steps on a CPU budget; step 0 (the SFT adapter) guards against a rate that overshoots.
STAGE_LR = {"dpo": 1e-4, "grpo": 1e-4}
STAGE_EVALS = 8  # validation scores over a stage's step budget when --eval-steps is 0 (it runs few steps)
SAMPLE_TEMPERATURE = 1.0


@dataclass
class Source:
    """The SFT run a stage starts from."""

    run: Path
    adapter: Path
    base_model: str  # the folder or hub id that run loaded
    val_file: Path | None  # its carved validation split, when it had one
    val_source: str | None = None  # how that run named the split it was judged on (run.json's validation.source)
    reward_file: Path | None = None  # the rows it held out of SFT for this stage (--reward-size), when it held any


def read_source(cfg: TrainConfig) -> Source:
    """The finished SFT run `--from` names. Raises UserError when it is not one (not finished, or a stage itself)."""
    from ftassist.train.record import read_run_record

    run = Path(cfg.from_run or "")
    record = read_run_record(run)
    if record is None or not record.mergeable:
        raise UserError(f"--from {run}: not a finished run (run.json missing or the run did not complete); "
                        "finish it first (`ftassist train ... --resume`) or pass another run folder")
    if record.stage != "sft":
        raise UserError(f"--from {run} is itself a {record.stage} stage; start --stage {cfg.stage} from the SFT run "
                        f"it came from ({record.from_run})")
    from ftassist.model import resolve_model

    try:
        base = resolve_model(record.base_model)
    except UserError as exc:
        raise UserError(f"--from {run}: its base model {record.base_model} cannot be loaded ({exc}); put it back "
                        "where that run found it, or train SFT again from a model that is here") from None
    val, held = run / "val.jsonl", run / REWARD_ROWS_FILE
    return Source(run, run / "adapter", base, val if val.is_file() else None,
                  (record.validation or {}).get("source"), held if held.is_file() else None)


def split_reward_rows(cfg: TrainConfig, rows: list[dict], run: Path | None, source: Source | None) -> tuple[list[dict], str]:
    """(the rows this run trains on, a sentence saying which, or "" for a plain SFT run).

    SFT with --reward-size holds that many rows out (a seeded shuffle, so a resumed run holds out the same) and
    writes them to RUN/reward_rows.jsonl. A stage trains on the rows its --from run held out when it held any:
    on its own training rows the SFT adapter is nearly always right (it has memorised them), and a right reply
    teaches a reward stage nothing; otherwise on the training rows, and the sentence says what that costs.
    """
    from ftassist.train.dataset import to_prompt_completion
    from ftassist.train.validation import hold_out

    if source is None:
        if not cfg.reward_size:
            return rows, ""
        size = cfg.reward_size
        count = round(size * len(rows)) if size < 1 else int(size)
        rows, held = hold_out(rows, count, cfg.seed + 1, f"--reward-size {size:g}", "use a smaller --reward-size")
        write_jsonl_atomic((run or Path(cfg.out)) / REWARD_ROWS_FILE, [{"messages": r["prompt"] + r["completion"]} for r in held])
        return rows, (f"{len(held)} rows are held out of SFT for a reward stage ({REWARD_ROWS_FILE}); it trains on "
                      f"{len(rows)}.")
    if source.reward_file is not None:
        held = [to_prompt_completion(r) for r in read_jsonl(source.reward_file)]
        return held, (f"The stage trains on the {len(held)} rows {source.run} held out of SFT ({REWARD_ROWS_FILE}): "
                      "prompts its adapter has not seen, where its mistakes show.")
    return rows, (f"The stage trains on the {len(rows)} rows the SFT adapter trained on ({source.run} held none out): it "
                  "is right on most of them, and a right reply teaches the stage nothing; train SFT with --reward-size "
                  "0.25 to hold rows out for the stage.")


def same_split(source: Source, val_source: str) -> bool:
    """Whether the stage is judged on the rows the SFT run was judged on (then its figures are a fair step 0)."""
    return val_source == carved_split_name(source) if source.val_file is not None else val_source == source.val_source


def carved_split_name(source: Source) -> str:
    return f"the validation split of {source.run}"


def defaults(cfg: TrainConfig) -> tuple[float, float]:
    """(upper epoch budget, peak learning rate) of the stage: the user's, else the stage's own."""
    return cfg.epochs or STAGE_EPOCHS[cfg.stage], cfg.learning_rate or STAGE_LR[cfg.stage]


def seed_from_sft(run: Path, source: Source) -> dict | None:
    """Start the stage's selection from the SFT adapter itself: its validation row (the same rows, the same scorer)
    becomes step 0 of RUN/metrics.jsonl and its adapter the best so far, so a stage whose steps never beat it
    leaves the SFT adapter, never a worse one. Idempotent: a resumed stage keeps its step-0 row, and gets the SFT
    adapter back as best/ when a later best was dropped with the steps it came from. Returns the row, or None when
    the SFT run kept no scored step."""
    import shutil

    from ftassist.files import atomic_dir, write_json_atomic
    from ftassist.train.record import read_run_record
    from ftassist.train.selection import BEST_DIR

    path = run / "metrics.jsonl"
    row = next((r for r in (read_jsonl(path) if path.exists() else []) if r.get("step") == 0 and "val_loss" in r), None)
    if row is None:  # a resumed stage has it already
        record = read_run_record(source.run)
        selection = (record.selection if record is not None else None) or {}
        metrics = selection.get("metrics")
        if not metrics or "val_loss" not in metrics:
            return None
        row = {"step": 0, "epoch": 0.0, **metrics, "elapsed_s": 0.0, "time": round(time.time(), 3),
               "note": f"the SFT adapter this stage starts from ({source.run}, its step {selection.get('step')})"}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
    if (run / BEST_DIR).exists():
        return row  # a later step's adapter is the best so far
    with atomic_dir(run / BEST_DIR) as tmp:
        for item in source.adapter.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        write_json_atomic(tmp / "best.json", row)
    return row


def exclude_rows(rows: list[dict], held: list[dict]) -> list[dict]:
    """`rows` without those whose prompt and completion equal a held-out row's (the SFT run's validation split).

    >>> a = {"prompt": [{"role": "user", "content": "a"}], "completion": [{"role": "assistant", "content": "1"}]}
    >>> b = {"prompt": [{"role": "user", "content": "b"}], "completion": [{"role": "assistant", "content": "2"}]}
    >>> exclude_rows([a, b], [b]) == [a]
    True
    """
    def key(r):
        return json.dumps([r["prompt"], r["completion"]], sort_keys=True, ensure_ascii=False)

    gone = {key(r) for r in held}
    return [r for r in rows if key(r) not in gone]


def references(rows: list[dict]) -> list[Any]:
    """The parsed JSON reference of each row. Raises UserError when the task is not JSON (the reward is the JSON scorer)."""
    out, bad = [], []
    for i, r in enumerate(rows, 1):
        try:
            value = json.loads(r["completion"][-1]["content"])
        except ValueError:
            bad.append(i)
            continue
        if not isinstance(value, (dict, list)):
            bad.append(i)
        out.append(value)
    if bad:
        raise UserError(f"--stage dpo/grpo score replies with the JSON scorer, but {len(bad)} training rows (e.g. row "
                        f"{bad[0]}) have a reply that is not a JSON object or array; use --stage sft for free-text tasks")
    return out


def load_policy(cfg: TrainConfig, plan, model_path: str, adapter: Path):
    """The base model as `plan` holds it with the SFT adapter on top, trainable."""
    from peft import PeftModel

    from ftassist.train.assembly import load_base

    return PeftModel.from_pretrained(load_base(cfg, plan, model_path), str(adapter), is_trainable=True)


def build_pairs(model, tokenizer, rows: list[dict], validator, *, samples: int, seed: int) -> tuple[list[dict], dict]:
    """(pairs, summary): the model's wrong replies to `rows`, each against its reference.

    The model answers every row greedily, then `samples` times sampled; a reply the scorer does not
    find exactly right is kept once per row (identical JSON counts once), with why: the source
    (greedy or sample N), the failure kinds, the wrong fields and whether the schema held.
    """
    import torch

    from ftassist.evaluation.metrics import canonical, score_reply
    from ftassist.train.validation import generate_replies, max_reply_tokens, measuring_copy
    from ftassist.evaluation.testset import Example

    refs = references(rows)
    started = time.time()
    prompts = [r["prompt"] for r in rows]
    budget = max_reply_tokens(tokenizer, [Example(i, r["prompt"], r["completion"][-1]["content"]) for i, r in enumerate(rows)])
    pairs: list[dict] = []
    seen: list[set[str]] = [set() for _ in rows]
    replies_total, wrong_total = 0, 0
    wrong_fields: Counter[str] = Counter()
    model.eval()
    with torch.no_grad():
        measured = measuring_copy(model)
        for round_ in range(samples + 1):
            torch.manual_seed(seed + round_)
            replies = generate_replies(measured, tokenizer, prompts, budget, do_sample=round_ > 0,
                                       temperature=SAMPLE_TEMPERATURE)
            for i, (reply, ref) in enumerate(zip(replies, refs)):
                replies_total += 1
                score = score_reply(reply, ref, validator)
                if score["exact"]:
                    continue
                wrong_total += 1
                key = canonical(reply, ref)
                if key in seen[i]:
                    continue
                seen[i].add(key)
                fields = [k for k, ok in score["fields"].items() if not ok]
                wrong_fields.update(fields)
                pairs.append({"prompt": rows[i]["prompt"], "chosen": rows[i]["completion"],
                              "rejected": [{"role": "assistant", "content": reply}],
                              "why": {"row": i + 1, "source": "greedy" if round_ == 0 else f"sample {round_}",
                                      "failures": score["failures"], "wrong_fields": fields,
                                      "schema_valid": score["schema_valid"]}})
        del measured
    summary = {"pairs": len(pairs), "rows": len(rows), "rows_with_mistakes": sum(1 for s in seen if s),
               "replies": replies_total, "wrong_replies": wrong_total, "samples_per_row": samples,
               "wrong_fields": dict(wrong_fields.most_common()), "generated_s": round(time.time() - started, 1)}
    return pairs, summary


def ensure_pairs(cfg: TrainConfig, plan, model_path: str, tokenizer, rows: list[dict], validator, source: Source,
                 run: Path, resume: bool) -> tuple[list[dict], dict]:
    """The SFT adapter's mistakes on `rows` (DPO: its pairs; GRPO: which prompts it trains on): read back from
    RUN/pairs.jsonl when resuming, else found (DPO: greedy and --dpo-samples sampled replies; GRPO: greedy) and
    written there."""
    path = run / PAIRS_FILE
    summary_path = run / "pairs.json"
    if resume and path.is_file() and summary_path.is_file():
        return read_jsonl(path), json.loads(summary_path.read_text(encoding="utf-8"))
    references(rows)  # a JSON task, or a clear error before the model loads
    model = load_policy(cfg, plan, model_path, source.adapter)
    samples = cfg.dpo_samples if cfg.stage == "dpo" else 0
    pairs, summary = build_pairs(model, tokenizer, rows, validator, samples=samples, seed=cfg.seed)
    del model
    if not pairs:
        harder = "raise --dpo-samples to look harder" if cfg.stage == "dpo" else "pass --no-grpo-mistakes-only to train anyway"
        raise UserError(f"the SFT adapter in {source.adapter} answered all {summary['replies']} replies to the "
                        f"{len(rows)} rows exactly right: {cfg.stage.upper()} has no mistakes to learn from; evaluate it "
                        f"(`ftassist eval`), or {harder}")
    write_jsonl_atomic(path, pairs)
    from ftassist.files import write_json_atomic

    write_json_atomic(summary_path, summary)
    log.info("%s: %d mistakes in %d of %d rows (%d of %d replies wrong; wrong fields %s) in %.0f s",
             "DPO pairs" if cfg.stage == "dpo" else "GRPO prompts", summary["pairs"], summary["rows_with_mistakes"],
             len(rows), summary["wrong_replies"], summary["replies"], summary["wrong_fields"], summary["generated_s"])
    return pairs, summary


def build_dpo_trainer(cfg: TrainConfig, plan, model_path: str, tokenizer, pairs: list[dict], source: Source, run: Path,
                      status, progress: bool, *, epochs: float, learning_rate: float, extra_callbacks=(), clock=None):
    """(DPOTrainer, GuardCallback): the SFT adapter trained on `pairs`, against itself as it starts."""
    from datasets import Dataset
    from trl import DPOConfig

    from ftassist.train.assembly import common_args, finish_trainer, run_callbacks

    model = load_policy(cfg, plan, model_path, source.adapter)
    args = DPOConfig(**common_args(cfg, plan, run, epochs=epochs, learning_rate=learning_rate), beta=cfg.dpo_beta,
                     max_length=cfg.max_length, precompute_ref_log_probs=True)
    dataset = Dataset.from_list([{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in pairs])
    guard, callbacks, clock = run_callbacks(cfg, run, status, progress, extra_callbacks, clock)
    trainer = _stage_class("dpo")(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                  callbacks=callbacks)
    # The reference log-probabilities are computed (from trl's frozen copy of the SFT adapter, "ref"): the copy
    # is no longer needed, and saving it beside the trained adapter would only confuse the folder.
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    if "ref" in getattr(unwrapped, "peft_config", {}):
        unwrapped.delete_adapter("ref")
    # CPU: the replies' logits only, the shared prompt prefix run once (`ftassist.train.head`)
    use_plain_head(unwrapped.get_base_model(), share_prefix=shares_prefix(cfg, trainer))
    finish_trainer(trainer, cfg, plan, clock)
    return trainer, guard


def build_grpo_trainer(cfg: TrainConfig, plan, model_path: str, tokenizer, rows: list[dict], validator, source: Source,
                       run: Path, status, progress: bool, *, epochs: float, learning_rate: float, extra_callbacks=(),
                       clock=None):
    """(GRPOTrainer, GuardCallback): the SFT adapter trained on `rows`' prompts with the scorer's reward."""
    from datasets import Dataset
    from trl import GRPOConfig

    from ftassist.evaluation.testset import Example
    from ftassist.train.reward import resolve_weights, reward_funcs
    from ftassist.train.assembly import common_args, finish_trainer, run_callbacks
    from ftassist.train.validation import max_reply_tokens

    references(rows)  # a JSON task, or a clear error before the model loads
    model = load_policy(cfg, plan, model_path, source.adapter)
    funcs, weights = reward_funcs(validator, resolve_weights(cfg.reward_weights))
    shared = common_args(cfg, plan, run, epochs=epochs, learning_rate=learning_rate)
    # One prompt's group per micro-batch: the planner's batch is sized for training rows, a group is G replies.
    shared["per_device_train_batch_size"] = cfg.grpo_generations
    args = GRPOConfig(**shared, num_generations=cfg.grpo_generations, beta=cfg.grpo_beta, temperature=SAMPLE_TEMPERATURE,
                      max_completion_length=max_reply_tokens(
                          tokenizer, [Example(i, r["prompt"], r["completion"][-1]["content"]) for i, r in enumerate(rows)]),
                      reward_weights=weights, generation_kwargs={"use_cache": True}, use_vllm=False)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "reference": r["completion"][-1]["content"]} for r in rows])
    guard, callbacks, clock = run_callbacks(cfg, run, status, progress, extra_callbacks, clock)
    trainer = _stage_class("grpo")(model=model, reward_funcs=funcs, args=args, train_dataset=dataset,
                                   processing_class=tokenizer, callbacks=callbacks)
    use_plain_head(trainer.accelerator.unwrap_model(trainer.model).get_base_model(), temperature=SAMPLE_TEMPERATURE,
                   share_prefix=shares_prefix(cfg, trainer))
    finish_trainer(trainer, cfg, plan, clock)
    return trainer, guard


def shares_prefix(cfg: TrainConfig, trainer) -> bool:
    """Whether the stage runs its batches' shared prompt prefix once: `--share-prefix` (the default), one process
    (DDP expects one forward a step) and no gradient checkpointing (it turns the cache off)."""
    return bool(cfg.share_prefix and not trainer.args.gradient_checkpointing and trainer.accelerator.num_processes == 1)


class AgreeingGroupSkipMixin:
    """GRPO: a micro-batch whose every advantage is 0 (each group's replies all scored alike) has no reward signal,
    only the KL pull towards the SFT adapter; its forward and backward are skipped. Each micro-batch logs
    `skipped_groups` (1 skipped, 0 trained; the logged value is the share skipped since the last log) and a skip is
    said in the log, so a run whose groups never disagree shows it instead of looking like training."""

    def _compute_loss(self, model, inputs):
        import torch

        advantages = inputs.get("advantages")
        metrics = self._metrics["train"]
        if advantages is not None and bool((advantages == 0).all()):
            metrics["skipped_groups"].append(1.0)
            log.info("GRPO step %d: every reply of the group scored alike (no reward signal): skipped",
                     self.state.global_step + 1)
            return torch.zeros((), device=advantages.device, requires_grad=True)
        metrics["skipped_groups"].append(0.0)
        return super()._compute_loss(model, inputs)


def _stage_class(stage: str):
    """The stage's trl trainer with ftassist's atomic checkpoints and budget schedule mixed in (GRPO: and the skip of
    groups that agree)."""
    from trl import DPOTrainer, GRPOTrainer

    from ftassist.train.checkpoints import AtomicCheckpointMixin
    from ftassist.train.schedule import BudgetScheduleMixin

    base = {"dpo": DPOTrainer, "grpo": GRPOTrainer}[stage]
    extra = (AgreeingGroupSkipMixin,) if stage == "grpo" else ()
    return type(f"Atomic{base.__name__}", (AtomicCheckpointMixin, BudgetScheduleMixin, *extra, base),
                {"__doc__": f"{base.__name__} whose checkpoints appear only when complete, on the budget's schedule."})
