"""Write datasets/cache.jsonl: 48 cases whose requests share long prefixes, to measure prompt caching.

Its one job: a workload where caching pays, so `make bench-cache` can show what it saves each model:
one long report (~6,000 tokens) asked 24 questions (the document is the first content block, the
question the second: the document is the prefix a breakpoint caches), and a long system prompt
(~2,500 tokens of house rules) reused by 24 users' short requests. It must not call any API. Run:
`python datasets/make_cache.py` (the output is committed; a test checks re-running gives the same bytes).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("cache.jsonl")
SEED = 2026_12_05

SECTIONS = [
    "Ridership on the northern tram line grew by {n}% over the year, with the largest gains on weekday mornings.",
    "The depot at {place} now charges {m} battery buses overnight; energy costs fell by {n}% against diesel.",
    "Punctuality, measured as departures within two minutes of the timetable, stood at {n}% in the fourth quarter.",
    "Fare revenue covered {n}% of operating costs; the remainder came from the regional transport fund.",
    "Accessibility works finished at {m} stations, each now with level boarding and audio announcements.",
    "A pilot of on-demand minibuses in {place} carried {m} passengers a week by the end of the trial.",
]
PLACES = ["Riverside", "Old Harbour", "Northgate", "Millbrook", "Eastfield"]
QUESTIONS = [
    "Which line grew the most, and by how much?",
    "How many battery buses does the depot charge overnight?",
    "What was the punctuality in the fourth quarter?",
    "What share of operating costs did fares cover?",
    "At how many stations did accessibility works finish?",
    "How many passengers did the on-demand pilot carry per week?",
]
RULES = [
    "Always answer in plain English and keep answers under 120 words unless asked for more.",
    "Never promise delivery dates; say the order tracker is the source of truth.",
    "Refunds over 200 euros need a supervisor; say so and offer to open a ticket.",
    "Quote the order number back to the customer before discussing its details.",
    "If the customer is upset, acknowledge it once, then move to the solution.",
    "Do not ask for card numbers or passwords under any circumstances.",
]
REQUESTS = [
    "My parcel {order} says delivered but I never got it.",
    "Can I change the address on order {order}?",
    "I was charged twice for {order}, please help.",
    "How do I return the shoes from order {order}?",
]


def _document(rng: random.Random) -> str:
    paragraphs = []
    for chapter in range(1, 25):
        lines = [
            s.format(n=rng.randint(3, 97), m=rng.randint(4, 400), place=rng.choice(PLACES))
            for s in rng.sample(SECTIONS, len(SECTIONS))
        ]
        paragraphs.append(f"## Chapter {chapter}\n" + " ".join(lines))
    return "# Annual review of the city transport network\n\n" + "\n\n".join(paragraphs)


def _system(rng: random.Random) -> str:
    rules = [f"{i + 1}. {rng.choice(RULES)} (policy {rng.randint(100, 999)})" for i in range(120)]
    return "You are the support assistant of an online shop. House rules:\n" + "\n".join(rules)


def cases() -> list[dict[str, Any]]:
    rng = random.Random(SEED)
    document, system = _document(rng), _system(rng)
    out: list[dict[str, Any]] = []
    for i in range(24):
        question = QUESTIONS[i % len(QUESTIONS)] + ("" if i < len(QUESTIONS) else f" (reader {i})")
        out.append(
            {
                "id": f"doc-q{i:02d}",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": f"<document>\n{document}\n</document>"},
                            {"type": "text", "text": question},
                        ],
                    }
                ],
                "max_tokens": 200,
                "user_id": f"reader-{i % 6}",
                "tags": ["shared-document"],
            }
        )
    for i in range(24):
        order = f"A-{rng.randint(10000, 99999)}"
        out.append(
            {
                "id": f"support-{i:02d}",
                "system": system,
                "prompt": rng.choice(REQUESTS).format(order=order),
                "max_tokens": 150,
                "user_id": f"customer-{i}",
                "tags": ["shared-system"],
            }
        )
    return out


def write(path: Path) -> int:
    rows = cases()
    path.write_text("".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows))
    return len(rows)


def main() -> int:
    print(f"wrote {write(OUT)} cases to {OUT.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
