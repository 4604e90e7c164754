"""`ftassist train --search`: try a few configurations by successive halving within the time budget.

    from ftassist.train.search import search
    result = search(TrainConfig(data="data/", out="runs/search", time_budget=60))
    print(result.table)

Every candidate (`CANDIDATES`: learning rate, LoRA rank and targets) is a run of its own under
`OUT/candidates/NAME`, trained by the same `train()` as any run, so each is judged by the task
metric on the same validation split and keeps its best step. Rung 0 gives every candidate an
equal share of the first part of the budget (what a call costs beyond its share, loading the
model and tokenizing, is measured and kept out of the later shares; each setting's spent time is what its run's
clock counted, evaluations included, so a share one evaluation overshoots is paid for); the better half (by `selection_key` of its best
validation row) resumes from its checkpoint with the next share, and so on until one is left
or the budget is spent. A call costs more than its share (on 2 CPU cores ~145 s for a purchase-order
validation pass and loading): once the first call has measured that, the field is cut to what the budget
affords (`field_size`; the planner's own setting is tried first), and time no full rung can use goes to
the leader alone, so the search never stops with budget unspent. The winner's run folder is copied to OUT (adapter, config, metrics),
so `ftassist merge OUT` works as after a plain run, and `OUT/search.json` / `search.md`
record every candidate, rung and figure. Each rung's learning rate decays to zero with the time
it was given (`schedule.budget_lambda`): candidates are compared settled, as a plain run ends, and a
candidate that goes on to the next rung resumes at the rate its larger budget gives at that point
(a restart of the decay, not of the warm-up).

Full fine-tuning (`full-lr1e-4`: every weight trained, the run leaves model/ instead of adapter/) is the second
candidate for models up to `FULL_MAX_PARAMS` parameters; for bigger ones it is left out and search.md says so.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from ftassist.config import TrainConfig
from ftassist.errors import UserError
from ftassist.files import read_jsonl, write_json_atomic, write_text_atomic
from ftassist.markdown import table
from ftassist.train.planner import PlanDoesNotFit
from ftassist.train.selection import best_row, counted_seconds
from ftassist.train.validation import TASK_METRICS, selection_key
from ftassist.train.weights import ADAPTER_DIR, FULL_DIR

log = logging.getLogger("ftassist.train")


# What one candidate's call costs beyond its training share before any has been measured (loading the model and
# tokenizer, tokenizing the rows, the evaluation at the end of its share); replaced by the measured cost.
FIRST_OVERHEAD_S = 10.0
# Measured on purchase_orders at 30 min: six candidates, ~215 s a call of which ~70 s trained, and no room left for
# rung 1 (bench/RESULTS.md). After the first call has measured that cost, the field is cut to as many candidates
# as can each train for at least this share of it in rung 0.
MIN_SHARE_OF_OVERHEAD = 0.5
# Full fine-tuning is tried on models this small (a full copy of the weights, their gradients and AdamW's state per
# candidate: ~16 bytes a parameter, 2.2 GB for SmolLM2-135M); above, LoRA alone.
FULL_MAX_PARAMS = 1_000_000_000


@dataclass(frozen=True)
class Candidate:
    """One configuration to try: a name and the TrainConfig fields it changes."""

    name: str
    overrides: dict = field(default_factory=dict)


# The planner's own setting first: a field the budget cuts short keeps it (see `field_size`); full fine-tuning
# second, so a budget that affords two or three settings compares it with LoRA.
CANDIDATES = (
    Candidate("lr1e-3-r16", {"learning_rate": 1e-3, "lora_r": 16, "lora_alpha": 32}),
    Candidate("full-lr1e-4", {"method": "full", "learning_rate": 1e-4}),
    Candidate("lr5e-4-r16", {"learning_rate": 5e-4, "lora_r": 16, "lora_alpha": 32}),
    Candidate("lr2e-4-r16", {"learning_rate": 2e-4, "lora_r": 16, "lora_alpha": 32}),
    Candidate("lr5e-4-r64", {"learning_rate": 5e-4, "lora_r": 64, "lora_alpha": 64}),
    Candidate("lr1e-3-r16-attn", {"learning_rate": 1e-3, "lora_r": 16, "lora_alpha": 32,
                                  "target_modules": "q_proj,k_proj,v_proj,o_proj"}),
    Candidate("lr1e-3-r8", {"learning_rate": 1e-3, "lora_r": 8, "lora_alpha": 16}),
)


@dataclass
class SearchResult:
    """The search's outcome: the winner, every row tried, and the markdown table."""

    out: Path
    winner: str
    rows: list[dict]
    table: str


def rung_shares(n: int, budget_s: float) -> list[tuple[int, float]]:
    """(candidates, seconds each) per rung of successive halving over `n` candidates within `budget_s`.

    Every rung gets an equal part of the budget, split among the candidates still in it.

    >>> rung_shares(4, 1200)
    [(4, 100.0), (2, 200.0), (1, 400.0)]
    """
    sizes = [n]
    while sizes[-1] > 1:
        sizes.append(math.ceil(sizes[-1] / 2))
    part = budget_s / len(sizes)
    return [(k, part / k) for k in sizes]


def field_size(n: int, budget_s: float, overhead_s: float) -> int:
    """How many of `n` candidates successive halving within `budget_s` affords when every call costs `overhead_s`
    beyond its share (loading, tokenizing, the validation pass that ends it): the most whose rung-0 share is at
    least `MIN_SHARE_OF_OVERHEAD` of that cost; 1 when none is (the first candidate alone gets the budget).

    >>> field_size(6, 1800, 145)  # purchase_orders on 2 CPU cores: a call cost ~145 s beyond its share
    3
    >>> field_size(6, 1800, 10), field_size(6, 300, 145)
    (6, 1)
    """
    for k in range(n, 1, -1):
        sizes = [size for size, _ in rung_shares(k, 1.0)]
        training = budget_s - overhead_s * sum(sizes)
        if training / len(sizes) / k >= MIN_SHARE_OF_OVERHEAD * overhead_s:
            return k
    return 1


def render_table(rows: list[dict], task: str, winner: str) -> str:
    """One line per candidate and rung: the figures of its best validation step so far."""
    metrics = TASK_METRICS[task]
    head = ["candidate", "rung", "settings", "train s", "steps", "best step", *metrics, "val loss", "kept"]
    cells = []
    for r in rows:
        best = r.get("best") or {}
        cells.append([r["name"], r["rung"], ", ".join(f"{k}={v}" for k, v in r["overrides"].items()), f"{r['seconds']:.0f}",
                      r["steps"], best.get("step", "-"),
                      *[f"{100 * float(best.get(f'val_{m}', 0)):.1f}%" if best else "-" for m in metrics],
                      best.get("val_loss", "-"), "winner" if r["name"] == winner and r["last"] else ("yes" if r["kept"] else "no")])
    return "\n".join(table(head, cells))


def search(cfg: TrainConfig, candidates: tuple[Candidate, ...] = CANDIDATES, *, progress: bool = False) -> SearchResult:
    """Successive halving of `candidates` within `cfg.time_budget` minutes; returns a SearchResult.

    Raises UserError when there is no time budget or no validation split to judge by.
    """
    from ftassist.train.trainer import train

    cfg.validate()
    if cfg.time_budget <= 0:
        raise UserError("--search needs --time-budget MINUTES: the candidates share it")
    if not cfg.task_metric:
        raise UserError("--search ranks candidates by the task metric: drop --no-task-metric")
    out = Path(cfg.out)
    root = out / "candidates"
    tried, dropped = fitting(cfg, candidates)  # dropped: settings the budget or the model leave out
    started = time.time()
    shares = rung_shares(len(tried), cfg.time_budget * 60)
    alive = list(tried)
    spent: dict[str, float] = {c.name: 0.0 for c in tried}
    rows: list[dict] = []
    task = "json"
    extra: list[float] = []  # what each call cost beyond its share (loading, tokenizing, evaluations past the share)
    fixed: list[float] = []  # what each call cost outside the run's own clock (loading, tokenizing, saving)
    rung = -1
    while rung + 1 < len(shares):
        rung += 1
        overhead = max(fixed) if fixed else FIRST_OVERHEAD_S
        calls_left = sum(k for k, _ in shares[rung:])
        remaining = cfg.time_budget * 60 - (time.time() - started) - overhead * calls_left
        if remaining <= 0 and rung == 0:
            need = overhead * calls_left + 10 * len(alive)
            raise UserError(f"--time-budget {cfg.time_budget:g} min is too short to search {len(alive)} settings: each "
                            f"call costs about {overhead:.0f} s before it trains; give at least {need / 60:.1f} min")
        if remaining <= 0 and rung > 0:
            # No room for this rung's calls: what is left goes to the leader alone, as the last rung would.
            alive, shares = alive[:1], shares[:rung] + [(1, 0.0)]
            remaining = cfg.time_budget * 60 - (time.time() - started) - overhead
            if remaining < MIN_SHARE_OF_OVERHEAD * overhead:
                break
        seconds = remaining / (len(shares) - rung) / len(alive)
        results = {}
        i = 0
        while i < len(alive):
            cand = alive[i]
            i += 1
            spent[cand.name] += seconds
            run_cfg = dataclasses.replace(cfg, out=str(root / cand.name), time_budget=spent[cand.name] / 60,
                                          early_stopping_patience=0, **cand.overrides)
            t0 = time.time()
            before = _counted(root / cand.name)
            resumed = rung > 0 and (root / cand.name / "checkpoints").is_dir()
            try:
                result = train(run_cfg, resume=resumed, progress=progress, log_file=True)
            except PlanDoesNotFit as exc:  # decided before the model loads: the rest of the field goes on
                spent[cand.name] -= seconds
                dropped.append({"name": cand.name, "why": f"it does not fit this machine: {exc}"})
                alive.remove(cand)
                i -= 1
                continue
            extra.append(time.time() - t0 - seconds)
            # The run's clock counts its training and evaluations, and a resumed call counts on from it: what the
            # clock counted is what this setting has spent (a share shorter than one evaluation overshoots it).
            after = _counted(root / cand.name)
            spent[cand.name] = max(spent[cand.name], after)
            fixed.append(max(0.0, time.time() - t0 - (after - before)))
            task = _task(root / cand.name)
            best = best_row(read_jsonl(root / cand.name / "metrics.jsonl"), task)
            results[cand.name] = best
            rows.append({"name": cand.name, "rung": rung, "overrides": cand.overrides, "seconds": time.time() - t0,
                         "share_s": seconds, "steps": result.steps, "best": best, "kept": False, "last": False})
            if rung == 0 and i == 1 and len(alive) > 1:
                k = field_size(len(alive), cfg.time_budget * 60, extra[0])
                if k < len(alive):  # the rest of rung 0 trains as long as the first did, for a fair comparison
                    log.info("search: a call costs %.0f s beyond its share; %d of %d settings fit %g min", extra[0],
                             k, len(alive), cfg.time_budget)
                    dropped.extend({"name": c.name, "why": f"each call costs {extra[0]:.0f} s beyond its share; give a "
                                                           "longer --time-budget to try it"} for c in alive[k:])
                    alive = alive[:k]
                    # one setting left: it goes on alone with the rest of the budget (rung 1)
                    shares = rung_shares(k, cfg.time_budget * 60) if k > 1 else [(1, 0.0), (1, 0.0)]
        if not alive:
            raise UserError("--search: no setting fits this machine; " + "; ".join(d["why"] for d in dropped))
        ranked = sorted(alive, key=lambda c: selection_key(results[c.name] or {}, task), reverse=True)
        keep = shares[rung + 1][0] if rung + 1 < len(shares) else 1
        alive = ranked[:keep]
        for out_of_it in ranked[keep:]:  # never resumed again: its checkpoints (a full run's: whole models) go
            for name in ("checkpoints", "best"):
                shutil.rmtree(root / out_of_it.name / name, ignore_errors=True)
        for r in rows:
            if r["rung"] == rung:
                r["kept"] = any(c.name == r["name"] for c in alive)
    winner = alive[0].name
    for r in rows:
        r["last"] = r["name"] == winner and r["rung"] == max(x["rung"] for x in rows if x["name"] == winner)
    _adopt(root / winner, out)
    table = render_table(rows, task, winner)
    record = {"winner": winner, "time_budget_min": cfg.time_budget, "wall_s": round(time.time() - started, 1),
              "rungs": [{"candidates": k, "seconds_each": round(s, 1)} for k, s in shares], "rows": rows,
              "not_tried": dropped,
              "metric": list(TASK_METRICS[task])}
    write_json_atomic(out / "search.json", record)
    skipped = "".join(f"Not tried: {d['name']} ({d['why']}).\n\n" for d in dropped)
    write_text_atomic(out / "search.md", f"# Search\n\nWinner: `{winner}` after {record['wall_s']:.0f} s "
                                         f"(budget {cfg.time_budget:g} min).\n\n{skipped}{table}\n")
    return SearchResult(out, winner, rows, table)


def run_search_job(cfg: TrainConfig) -> str:
    """`search` as a background job: OUT/status.json says running / completed / failed; returns the summary line."""
    import os

    from ftassist.train.status import StatusWriter

    status = StatusWriter(Path(cfg.out), state="running", pid=os.getpid(), started_at=time.time(), mergeable=False,
                          reason="searching", step=0, total_steps=0)
    status.update()
    status.start_heartbeat()
    try:
        found = search(cfg)
    except BaseException as exc:
        status.update(state="cancelled" if isinstance(exc, KeyboardInterrupt) or type(exc).__name__ == "JobCancelled"
                      else "failed", reason=str(exc) or type(exc).__name__, ended_at=time.time())
        raise
    finally:
        status.stop_heartbeat()
    status.update(state="completed", reason=f"search winner: {found.winner}", mergeable=True, ended_at=time.time())
    return f"search winner: {found.winner}; table: {found.out / 'search.md'}"


def fitting(cfg: TrainConfig, candidates: tuple[Candidate, ...]) -> tuple[list[Candidate], list[dict]]:
    """(the candidates to try, {name, why} of each left out): full fine-tuning only for models up to FULL_MAX_PARAMS."""
    if not any(c.overrides.get("method") == "full" for c in candidates):
        return list(candidates), []
    from transformers import AutoConfig

    from ftassist.model import resolve_model
    from ftassist.train.planner import ModelShape

    params = ModelShape.from_config(AutoConfig.from_pretrained(resolve_model(cfg.model),
                                                               trust_remote_code=cfg.trust_remote_code)).params
    if params <= FULL_MAX_PARAMS:
        return list(candidates), []
    left = [c for c in candidates if c.overrides.get("method") != "full"]
    return left, [{"name": c.name, "why": f"full fine-tuning is tried on models up to {FULL_MAX_PARAMS / 1e9:g}B parameters; "
                                          f"this one has {params / 1e9:.1f}B"} for c in candidates if c not in left]


def _task(run: Path) -> str:
    from ftassist.train.record import read_run_record

    record = read_run_record(run)
    return ((record.validation if record else None) or {}).get("task", "json")


def _adopt(winner: Path, out: Path) -> None:
    """Copy the winner's run files to OUT so OUT reads like a plain run folder."""
    for name in (ADAPTER_DIR, FULL_DIR):  # the winner's weights; a stale one of the other kind would shadow them
        shutil.rmtree(out / name, ignore_errors=True)
        if (winner / name).is_dir():
            shutil.copytree(winner / name, out / name)
    for name in ("config.yaml", "run.json", "metrics.jsonl", "val.jsonl", "reward_rows.jsonl"):
        if (winner / name).exists():
            shutil.copy2(winner / name, out / name)


def _counted(run: Path) -> float:
    """What RUN's clock has counted so far (`counted_seconds` of its metrics.jsonl; 0 before it has any)."""
    path = run / "metrics.jsonl"
    return counted_seconds(read_jsonl(path)) if path.is_file() else 0.0
