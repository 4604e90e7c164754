"""The JSON-compliance metric packaged for `evaluate.load(MODULE_PATH)`."""

from pathlib import Path

MODULE_PATH = str(Path(__file__).with_name("json_compliance.py"))
