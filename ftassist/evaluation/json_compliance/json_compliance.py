"""JSON compliance as a local Hugging Face `evaluate` metric module (no hub needed).

    import evaluate
    from ftassist.evaluation.json_compliance import MODULE_PATH
    metric = evaluate.load(MODULE_PATH)
    metric.compute(predictions=['{"a": 1}', 'Sure: {"a": 2}'], references=['{"a": 1}', '{"a": 1}'])
    # {'strict': 0.5, 'extractable': 1.0, 'schema_valid': 1.0, 'field_accuracy': 0.5, 'n': 2, 'failures': {...}}

The scores are the ones `ftassist eval` reports (`ftassist.evaluation.metrics`); pass
`schema=` (a JSON Schema dict) or let it be inferred from the references.
"""

import json

import datasets
import evaluate

from ftassist.evaluation.metrics import make_validator, score_reply
from ftassist.evaluation.taxonomy import count_kinds
from ftassist.schema import infer_schema

_DESCRIPTION = "Strict / extractable / schema-valid JSON rates, exact field accuracy and a failure taxonomy."
_KWARGS_DESCRIPTION = """
Args:
    predictions: model replies (strings).
    references: reference replies, each a JSON text (object or array).
    schema: optional JSON Schema dict; inferred from the references when omitted.
Returns:
    strict, extractable, schema_valid: shares of replies (0-1).
    field_accuracy: mean share of the reference's top-level fields matched exactly.
    failures: {kind: number of replies showing it}; n: number of replies.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class JsonCompliance(evaluate.Metric):
    """The ftassist JSON-compliance metric."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
        )

    def _compute(self, predictions, references, schema=None):
        refs = [json.loads(r) for r in references]
        validator = make_validator(schema if schema is not None else infer_schema(refs))
        scores = [score_reply(p, r, validator) for p, r in zip(predictions, refs)]
        n = len(scores)
        rate = lambda key: sum(bool(s[key]) for s in scores) / n if n else 0.0  # noqa: E731
        return {
            "strict": rate("strict"),
            "extractable": rate("extractable"),
            "schema_valid": rate("schema_valid"),
            "field_accuracy": sum(s["field_accuracy"] for s in scores) / n if n else 0.0,
            "n": n,
            "failures": count_kinds([s["failures"] for s in scores]),
        }
