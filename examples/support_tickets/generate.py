"""Generate the example task: customer-support messages -> one fixed JSON triage object.

Deterministic (fixed seed): `python examples/support_tickets/generate.py` rewrites
`train.jsonl` and `test.jsonl` beside this file in OpenAI chat `messages` format, and
`schema.json` describes the reply. Train and test are drawn from the same phrase pools with
different seeds, and any test message that also appears in train is dropped.

The reply has an enum (category, priority, sentiment), a string or null (order_id), a number or
null (amount) and a list (products): the model has to read the message, not copy a template.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).parent

SYSTEM = (
    "You triage customer-support messages. Reply with only a JSON object with the keys "
    "category (billing, technical, shipping, account, refund or other), priority (low, medium, "
    "high or urgent), sentiment (negative, neutral or positive), order_id (string or null), "
    "amount (number or null) and products (list of product names)."
)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "category": {"enum": ["billing", "technical", "shipping", "account", "refund", "other"]},
        "priority": {"enum": ["low", "medium", "high", "urgent"]},
        "sentiment": {"enum": ["negative", "neutral", "positive"]},
        "order_id": {"type": ["string", "null"]},
        "amount": {"type": ["number", "null"]},
        "products": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["category", "priority", "sentiment", "order_id", "amount", "products"],
    "additionalProperties": False,
}

PRODUCTS = [
    "SmartKettle 2", "AeroDesk Pro", "Lumen Lamp", "PixelBuds", "TrailPack 40L", "CloudSync Plan",
    "ZenMat", "BrewMaster Grinder", "VoltBike Battery", "EchoCam", "FrostCooler", "InkJet 300",
    "Nimbus Router", "HomeHub Mini", "SoundBar X", "FitBand 5", "ChefKnife Set", "SolarCharger",
]

OPENERS = ["Hi,", "Hello team,", "Hey there.", "Good morning,", "To whom it may concern,", "", "Hi support,", "Dear ftassist shop,"]
CLOSERS = ["Thanks.", "Regards, Sam", "Cheers!", "", "Thank you in advance.", "Best, J.", "Please advise.", "-- Maria"]

SCENARIOS = {
    "billing": [
        "I was charged {amount_s} twice for order {order} ({products}).",
        "My invoice for {order} shows {amount_s} but the {products} was on sale.",
        "Why did my card get billed {amount_s}? I only ordered {products}.",
        "There's an unexpected charge of {amount_s} on my statement for {products}.",
    ],
    "technical": [
        "My {products} stopped working after the last update.",
        "The {products} won't turn on anymore, I tried resetting it.",
        "I can't pair the {products} with my phone, it keeps failing.",
        "The app crashes every time I open the settings for my {products}.",
    ],
    "shipping": [
        "Order {order} with {products} still hasn't arrived.",
        "Tracking for {order} has said 'in transit' for 10 days. It contains {products}.",
        "The courier left my {products} at the wrong address, order {order}.",
        "When will order {order} ship? I need the {products} by Friday.",
    ],
    "account": [
        "I can't log in to my account, the password reset email never comes.",
        "Please change the email on my account, I no longer use the old one.",
        "My account got locked after I tried to update my address.",
        "How do I delete my account and all my data?",
    ],
    "refund": [
        "I returned the {products} from order {order} and want my {amount_s} back.",
        "Please refund {amount_s} for the broken {products}, order {order}.",
        "I'd like a refund for {products}; it arrived damaged. Order {order}.",
        "Still waiting on the {amount_s} refund for order {order}.",
    ],
    "other": [
        "Do you have a store in Lisbon?",
        "Just wanted to say the {products} is great, well done!",
        "Are you hiring for the summer?",
        "Can I suggest a feature for the {products}?",
    ],
}

PRIORITY_CUES = {
    "urgent": ["This is URGENT.", "I need this fixed today!", "Please help immediately, this is critical."],
    "high": ["Please sort this out soon.", "This is really frustrating.", "I need an answer quickly."],
    "medium": ["Could you look into it?", "Let me know what to do.", ""],
    "low": ["No rush.", "Whenever you have time.", "Just curious."],
}

SENTIMENT_CUES = {
    "negative": ["I'm very disappointed.", "Honestly this is unacceptable.", "Not happy at all."],
    "neutral": ["", "", "Order placed last month."],
    "positive": ["Love your products otherwise!", "You've always been great to me.", "Thanks for the great service so far."],
}


def make_example(rng: random.Random) -> dict:
    category = rng.choice(list(SCENARIOS))
    template = rng.choice(SCENARIOS[category])
    products = rng.sample(PRODUCTS, k=rng.choice([1, 1, 1, 2]))
    order = f"{rng.choice('ABCDEFGHKMNPRSTX')}{rng.randint(10000, 99999)}"
    amount = round(rng.choice([rng.randint(5, 400), rng.randint(5, 400) + rng.choice([0.5, 0.99, 0.25])]), 2)
    amount_s = rng.choice([f"${amount:.2f}", f"{amount:.2f} USD", f"${amount:g}"])
    has_products, has_order, has_amount = "{products}" in template, "{order}" in template, "{amount_s}" in template
    body = template.format(products=" and ".join(products), order=order, amount_s=amount_s)
    if category == "other":
        priority = rng.choice(["low", "low", "medium"])
        sentiment = "positive" if "great" in body else rng.choice(["neutral", "positive"])
    else:
        priority = rng.choice(["urgent", "high", "high", "medium", "medium", "low"])
        sentiment = rng.choice(["negative", "negative", "neutral", "positive"])
    parts = [rng.choice(OPENERS), body, rng.choice(SENTIMENT_CUES[sentiment]), rng.choice(PRIORITY_CUES[priority]), rng.choice(CLOSERS)]
    message = " ".join(p for p in parts if p)
    if rng.random() < 0.15:
        message = message.lower()
    reply = {
        "category": category,
        "priority": priority,
        "sentiment": sentiment,
        "order_id": order if has_order else None,
        "amount": amount if has_amount else None,
        "products": products if has_products else [],
    }
    return {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": message},
            {"role": "assistant", "content": json.dumps(reply)},
        ]
    }


def generate(n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    while len(rows) < n:
        ex = make_example(rng)
        key = ex["messages"][1]["content"]
        if key in seen:
            continue
        seen.add(key)
        rows.append(ex)
    return rows


def main() -> None:
    train = generate(400, seed=1)
    test = generate(60, seed=2, exclude={r["messages"][1]["content"] for r in train})
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (HERE / "schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(train)} train and {len(test)} test rows to {HERE}")


if __name__ == "__main__":
    main()
