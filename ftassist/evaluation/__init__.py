"""JSON-compliance evaluation: score replies from any OpenAI-compatible endpoint against a test set.

    from ftassist.config import EvalConfig
    from ftassist.evaluation.harness import run_eval
    result = run_eval(EvalConfig(base_url="http://127.0.0.1:8000/v1",
                                 models=["base", "tuned", "merged=merged@http://127.0.0.1:8001/v1"],
                                 data="data/test.jsonl", out="runs/a/eval", constrained=True))
    print(result.table)

Each model is an arm on `base_url` or on its own endpoint (`LABEL=NAME@URL`, parsed by `arms`).
The metrics are pure functions (`metrics`, `taxonomy`, `stats`; the schema comes from `ftassist.schema`);
`harness` queries the endpoints (`ftassist.endpoint`), `report`, `charts` and `history` write what it found.
"""
