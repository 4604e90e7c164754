"""Format checks: OpenAI's seven chat-format errors, role order, empty fields, oversized records.

Check ids (severity): not_a_dict, missing_messages, message_missing_key, unknown_key,
unknown_role, missing_content, no_assistant_message (the seven, all errors); role_order (error,
or warning for two turns of one role in a row); empty_content (error); record_too_large (error).
"""

from __future__ import annotations

from typing import Any

from ftassist.data.findings import DataRow, Finding, clip
from ftassist.data.loaders import MAX_RECORD_CHARS

ROLES = ("system", "user", "assistant", "tool", "function")
MESSAGE_KEYS = {"role", "content", "name", "weight", "function_call", "tool_calls", "tool_call_id"}
FIX_DROP = "or pass --drop-invalid to leave the example out"


def _field(ex: DataRow, j: int) -> str:
    cols = ex.meta.get("column_map")
    if cols and isinstance(ex.messages, list) and j < len(ex.messages):
        role = ex.messages[j].get("role") if isinstance(ex.messages[j], dict) else None
        col = {"system": cols.get("system"), "user": cols.get("instruction"), "assistant": cols.get("output")}.get(role or "")
        if col:
            return f"column {col!r}"
    return f"messages[{j}]"


def check_format(examples: list[DataRow]) -> list[Finding]:
    """Findings for every structural problem of every example (all of them, not the first)."""
    out: list[Finding] = []
    for i, ex in enumerate(examples):
        out.extend(check_example(i, ex))
    return out


def check_example(i: int, ex: DataRow) -> list[Finding]:
    """Structural findings for one example (row index `i`)."""
    def add(check: str, field: str | None, message: str, example: Any = "", severity: str = "error") -> None:
        out.append(Finding(check, severity, i, field, message, clip(example), ex.source))

    out: list[Finding] = []
    if ex.fmt != "document" and not isinstance(ex.raw, dict):
        add("not_a_dict", None, f"the record is a JSON {type(ex.raw).__name__}, not an object; "
            f'write it as {{"messages": [...]}} {FIX_DROP}', ex.raw)
        return out
    msgs = ex.messages
    if not isinstance(msgs, list) or not msgs:
        what = "missing" if msgs is None else ("empty" if msgs == [] else f"a {type(msgs).__name__}")
        key = "conversations" if ex.fmt == "sharegpt" else "messages"
        add("missing_messages", key, f"`{key}` is {what}; it must be a non-empty list of {{role, content}} messages {FIX_DROP}", ex.raw)
        return out
    roles: list[str] = []
    broken = False  # a message without role or content: its place in the order is unknown
    for j, m in enumerate(msgs):
        field = _field(ex, j)
        if not isinstance(m, dict) or "role" not in m or ("content" not in m and "function_call" not in m and "tool_calls" not in m):
            missing = "is not an object" if not isinstance(m, dict) else "has no " + " or ".join(k for k in ("role", "content") if k not in m)
            add("message_missing_key", field, f"the message {missing}; give every message a role and content {FIX_DROP}", m)
            broken = True
            if not isinstance(m, dict):
                continue
        extra = sorted(set(map(str, m)) - MESSAGE_KEYS)
        if extra:
            add("unknown_key", field, f"unknown key(s) {', '.join(extra)}; keep only role and content {FIX_DROP}", m)
        role = m.get("role")
        if "role" in m and role not in ROLES:
            add("unknown_role", f"{field}.role", f"unknown role {role!r}; use system, user or assistant {FIX_DROP}", role)
        if role in ROLES:
            roles.append(role)
        content = m.get("content")
        if "content" in m and not isinstance(content, str):
            if content is None and (m.get("function_call") or m.get("tool_calls")):
                pass
            else:
                what = "missing" if content is None else f"a {type(content).__name__}, not text"
                add("missing_content", f"{field}.content", f"the {role or 'message'} content is {what}; fill it in {FIX_DROP}", m)
        elif isinstance(content, str):
            if not content.strip():
                add("empty_content", f"{field}.content", f"the {role or 'message'} content is empty or only whitespace; "
                    f"fill it in {FIX_DROP}", content)
            elif len(content) > MAX_RECORD_CHARS:
                add("record_too_large", f"{field}.content", f"{len(content):,} characters, over the {MAX_RECORD_CHARS:,} limit; "
                    f"split or shorten it {FIX_DROP}", content[:200])
    if "assistant" not in roles:
        add("no_assistant_message", None, f"no assistant message: nothing to learn from; add the reply {FIX_DROP}",
            [m.get("role") if isinstance(m, dict) else m for m in msgs])
        return out
    if not broken:
        out.extend(check_role_order(i, ex, roles))
    return out


def check_role_order(i: int, ex: DataRow, roles: list[str]) -> list[Finding]:
    """role_order findings: system only first, user before the first reply, last message the reply."""
    out = []
    order = " -> ".join(roles)
    if "system" in roles[1:]:
        out.append(Finding("role_order", "error", i, "messages", "a system message after the first position; "
                           f"move it to the start {FIX_DROP}", order, ex.source))
    convo = [r for r in roles if r != "system"]
    if convo and convo[0] == "assistant":
        out.append(Finding("role_order", "error", i, "messages", "the conversation starts with the assistant; "
                           f"put the user's message first {FIX_DROP}", order, ex.source))
    if roles[-1] != "assistant":
        out.append(Finding("role_order", "error", i, "messages", f"the last message is the {roles[-1]}'s; the example "
                           f"must end with the assistant's reply, drop the trailing turn {FIX_DROP}", order, ex.source))
    if any(a == b and a in ("user", "assistant") for a, b in zip(convo, convo[1:])):
        out.append(Finding("role_order", "warning", i, "messages", "two messages of one role in a row; merge them "
                           "so user and assistant alternate", order, ex.source))
    return out


def valid_messages(ex: DataRow) -> list[dict] | None:
    """The example's messages as [{role, content}] when they are structurally usable, else None."""
    msgs = ex.messages
    if not isinstance(msgs, list) or not msgs:
        return None
    out = []
    for m in msgs:
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return None
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        return None
    return out
