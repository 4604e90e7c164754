"""The DATA stage: the user's files in, validated train/test chat sets and a report out.

    from ftassist.config import DataConfig
    from ftassist.data.build import build_dataset
    result = build_dataset(DataConfig(inputs=["tickets.csv"], out="data/"))

Modules, each small and pure where it can be: `loaders` (files -> records), `formats`
(records -> chat messages), `mapping` (column mapping), `documents` (TXT/MD/PDF/DOCX ->
instruction pairs), `checks` (every finding: format, content, lengths), `pii`, `fixes`, `split`, `report`, `build`.
Nothing here imports gradio; the UI calls these functions.
"""
