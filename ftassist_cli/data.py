"""`ftassist data build INPUT... --out DIR` and `ftassist data inspect FILE`.

    ftassist data build examples/support_tickets/train.jsonl --test-inputs examples/support_tickets/test.jsonl \
        --schema examples/support_tickets/schema.json --out data/
    ftassist data build manual.pdf --teacher-url http://127.0.0.1:8000/v1 --teacher-model base --out data/
    ftassist data inspect tickets.csv
    ftassist data measure data/             # the base model prompted on 8 test rows, then the advice
    ftassist data augment data/train.jsonl --unlabelled tweets.txt --teacher-url URL --teacher-model big --out more/

Exit codes: 0 usable, 1 errors found (report written), 2 input unusable (one line on stderr).
"""

from __future__ import annotations

import argparse

from ftassist_cli.args import add_command, config_from_args
from ftassist.config import AugmentConfig, DataConfig, EvidenceConfig, InspectConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="Turn your files into validated train/test chat sets.")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    add_command(sub, "build", DataConfig, run_build, help="Load, validate, fix, split and export the data with a report.")
    add_command(sub, "inspect", InspectConfig, run_inspect,
                help="Detect the format of one file and list its findings; writes nothing.")
    add_command(sub, "measure", EvidenceConfig, run_measure,
                help="Before training: what the base model gets on your test rows with a good prompt and examples, "
                     "and under structured outputs; then the advice, from those figures.")
    add_command(sub, "augment", AugmentConfig, run_augment,
                help="From a handful of labelled rows: a teacher model labels your unlabelled inputs (and, with --write N, "
                     "new ones it writes in their style), measured first on labelled rows it did not see; only labels it agrees on, that pass the schema and resemble no "
                     "labelled or test row are kept, with provenance.")


def run_augment(args: argparse.Namespace) -> int:
    from ftassist.data.augment import augment

    result = augment(config_from_args(AugmentConfig, args), progress=lambda m: print(m, flush=True))
    t = result.report["teacher"]
    print(f"teacher {t['model']}: {t['field_accuracy']:.1%} of fields right on {t['rows']} held-out labelled rows")
    print(f"kept {result.kept} of {result.report['inputs']} inputs; rejected "
          + ", ".join(f"{r} {n}" for r, n in result.rejected.items() if n))
    tr = result.report["train"]
    print(f"wrote {result.out}/augmented.jsonl (provenance.jsonl beside it; report augment.md)")
    print(f"to train on {tr['seed_rows']} labelled + {tr['augmented_rows']} augmented rows, judged on "
          f"{tr['validation_rows']} of your labelled rows: ftassist train --data {result.out} --out runs/augmented")
    return 0


def run_build(args: argparse.Namespace) -> int:
    from ftassist.data.build import build_dataset

    cfg = config_from_args(DataConfig, args)
    result = build_dataset(cfg)
    print(result.summary)
    return result.exit_code


def run_measure(args: argparse.Namespace) -> int:
    from ftassist.advisor import Answers, advise_from_evidence
    from ftassist.evidence import gather

    cfg = config_from_args(EvidenceConfig, args)
    evidence = gather(cfg)
    for arm in evidence.arms:
        print(f"{arm.sentence()} ({arm.rows} rows, {arm.seconds:.0f} s)")
    print()
    print(advise_from_evidence(evidence, Answers(fixed_format=True)).to_markdown())
    print(f"\nwrote {cfg.data}/evidence.json")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from ftassist.data.checks import load_tokenizer, validate_records
    from ftassist.data.findings import count_by_severity
    from ftassist.data.records import load_records

    cfg = config_from_args(InspectConfig, args)
    loaded = load_records([cfg.file], cfg.column_map)
    findings, _ = validate_records(loaded.examples, tokenizer=load_tokenizer(cfg.model), max_length=cfg.max_length)
    findings = loaded.findings + findings
    for info in loaded.files:
        print(f"{info.path}: {info.format}, {info.rows} rows ({info.kind}, {info.encoding}): {info.reason}")
    for f in findings:
        where = f"row {f.row}" if f.row is not None else "file"
        print(f"{f.severity:7} {f.check:22} {where} {f.source or ''} {f.field or ''}: {f.message}")
    sev = count_by_severity(findings)
    print(f"{sev['error']} errors, {sev['warning']} warnings, {sev['info']} info")
    return 1 if sev["error"] else 0
