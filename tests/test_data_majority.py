"""Schema inference from the majority: the rows that disagree with the rest are found, with file and line."""

from __future__ import annotations

import json

from ftassist.config import DataConfig
from ftassist.data.build import build_dataset
from ftassist.schema import MAJORITY_TOLERANCE, infer_schema
from ftassist_app import data_step


def test_minority_type_key_and_enum_value_are_left_out():
    values = [{"sentiment": "positive" if i % 2 else "negative", "rating": i % 5 + 1} for i in range(20)]
    values[3]["rating"] = "4"          # a string among integers
    values[7]["sentiment"] = "Positiv"  # a typo among two labels
    values[11]["sentimnet"] = "x"       # a misspelt key
    schema = infer_schema(values, MAJORITY_TOLERANCE)
    assert schema["properties"]["rating"] == {"type": "number"}
    assert schema["properties"]["sentiment"] == {"type": "string", "enum": ["negative", "positive"]}
    assert "sentimnet" not in schema["properties"] and schema["required"] == ["sentiment", "rating"]
    # every value satisfies the schema inferred without tolerance
    loose = infer_schema(values)
    assert loose["properties"]["rating"]["type"] == ["string", "number"] and "enum" not in loose["properties"]["sentiment"]


def test_build_reports_disagreeing_rows_with_file_and_line(tiny_model, tmp_path):
    path = tmp_path / "reviews.jsonl"
    rows = []
    for i in range(30):
        reply = {"sentiment": ["positive", "negative", "neutral"][i % 3], "rating": i % 5 + 1}
        if i == 9:
            reply["rating"] = "five"
        rows.append({"messages": [{"role": "user", "content": f"review number {i}: it was fine {i}"},
                                  {"role": "assistant", "content": json.dumps(reply)}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = DataConfig(inputs=[str(path)], out=str(tmp_path / "out"), model=str(tiny_model))
    result = build_dataset(cfg)
    minority = [f for f in result.findings if f.check == "schema_minority"]
    assert len(minority) == 1 and minority[0].severity == "warning"
    assert data_step.where(minority[0]) == ("reviews.jsonl", "10")  # the 10th line of the file
    assert result.exit_code == 0  # a warning: the build goes on, the row is named
    text = data_step.describe_data(result, cfg)
    assert "| reviews.jsonl | 10 | `schema_minority` | warning |" in text
    assert "1 row(s) disagree with it" in text and "| `rating` | number | yes | - |" in text
    assert result.report["schema"]["schema"]["properties"]["rating"] == {"type": "number"}


def test_length_chart_is_scaled_to_the_data():
    from ftassist.data.report import chart_range

    low, high = chart_range([40, 60, 80], 1024)
    assert low >= 30 and high < 100  # not a sliver of a 0-1024 axis
    assert chart_range([400, 1000], 1024)[1] > 1024  # max_length shown when it is near the data
