"""Strict parsing of one chat answer against the cell ids that were sent.

A chat model's answer is trusted only as far as it follows the requested form
exactly; anything looser would turn a confused answer into silent, wrong calls.

- The answer is one JSON object (a single Markdown code fence around it is
  tolerated, since models add one even when told not to; no other text is).
- It has a list "answers" of objects, each with a string "id" and a string
  "response" that is "sensitive" or "resistant" (any case, surrounding spaces
  allowed, nothing else: not "likely sensitive", not "unknown").
- Structural faults reject the whole answer, for every cell: text that is not
  JSON, a wrong shape, or an id that was not sent (the model has lost track of
  the ids, so its other answers cannot be matched to cells either).
- Faults of one cell reject only that cell: its id missing, given twice, or a
  response that is not one of the two words.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

RESPONSES = {"sensitive": 1, "resistant": 0}

_FENCE = re.compile(r"^```[A-Za-z]*\s*\n(.*)\n\s*```$", re.DOTALL)


@dataclass
class ParsedAnswer:
    """Calls (id -> 1 sensitive / 0 resistant) and, for every other id sent, why not."""

    calls: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _reject_all(ids: Sequence[str], reason: str) -> ParsedAnswer:
    return ParsedAnswer({}, {cell_id: reason for cell_id in ids})


def _short(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_answer(text: str, ids: Sequence[str]) -> ParsedAnswer:
    """Check `text` against the ids sent; every id ends in exactly one of calls / failures."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        document = json.loads(body)
    except json.JSONDecodeError:
        return _reject_all(ids, f"answer is not JSON: {_short(text)!r}")
    if not isinstance(document, dict) or not isinstance(document.get("answers"), list):
        return _reject_all(ids, 'answer is not an object with a list "answers"')
    sent = set(ids)
    seen: dict[str, list[object]] = {}
    for item in document["answers"]:
        if not (isinstance(item, dict) and isinstance(item.get("id"), str)):
            return _reject_all(ids, 'an item of "answers" is not an object with a string "id"')
        if item["id"] not in sent:
            return _reject_all(
                ids, f"answer names id {_short(item['id'], 20)!r}, which was not sent"
            )
        seen.setdefault(item["id"], []).append(item.get("response"))
    parsed = ParsedAnswer()
    for cell_id in ids:
        responses = seen.get(cell_id, [])
        if not responses:
            parsed.failures[cell_id] = "no answer for this cell"
        elif len(responses) > 1:
            parsed.failures[cell_id] = f"{len(responses)} answers for this cell"
        else:
            value = responses[0]
            word = value.strip().lower() if isinstance(value, str) else None
            if word in RESPONSES:
                parsed.calls[cell_id] = RESPONSES[word]
            else:
                parsed.failures[cell_id] = (
                    f"response {_short(json.dumps(value), 40)} is not sensitive or resistant"
                )
    return parsed
