"""Generate the second example task: order e-mails -> a nested JSON purchase order.

Deterministic (fixed seeds): `python examples/purchase_orders/generate.py` rewrites
`train.jsonl` (360 rows) and `test.jsonl` (90 rows, none of whose e-mails is in train) and
`schema.json` beside this file, in OpenAI chat `messages` format.

Harder than `support_tickets` on purpose: the reply nests an object (`customer`), holds a list
of objects (`items`, one to three lines, each with a quantity written as digits or as a word
and a unit price in several notations), a date written four ways that must come back as ISO
8601, and two enums. Every label follows from the e-mail: nothing is guessed.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

HERE = Path(__file__).parent

SYSTEM = (
    "You read purchase-order e-mails. Reply with only a JSON object with the keys customer (an object with name, "
    "company and account: the account code or null), items (a list of objects with product, quantity: an integer, "
    "and unit_price: a number or null), delivery_date (YYYY-MM-DD or null), currency (USD, EUR or GBP) and "
    "shipping (standard or express)."
)

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "customer": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "company": {"type": "string"}, "account": {"type": ["string", "null"]}},
            "required": ["name", "company", "account"],
            "additionalProperties": False,
        },
        "items": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "properties": {"product": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1},
                               "unit_price": {"type": ["number", "null"]}},
                "required": ["product", "quantity", "unit_price"],
                "additionalProperties": False,
            },
        },
        "delivery_date": {"type": ["string", "null"], "pattern": "^\\d{4}-\\d{2}-\\d{2}$"},
        "currency": {"enum": ["USD", "EUR", "GBP"]},
        "shipping": {"enum": ["standard", "express"]},
    },
    "required": ["customer", "items", "delivery_date", "currency", "shipping"],
    "additionalProperties": False,
}

FIRST = ["Dana", "Luis", "Mei", "Tom", "Aisha", "Jonas", "Priya", "Olga", "Sam", "Noor", "Kenji", "Eva", "Marco", "Ines"]
LAST = ["Kim", "Garcia", "Chen", "Baker", "Khan", "Berg", "Patel", "Ivanova", "Reed", "Haddad", "Sato", "Novak", "Rossi", "Silva"]
COMPANIES = ["Northwind Cafe", "Blue Harbor Hotel", "Pine & Co", "Atlas Gym", "Little Lamb Bakery", "Cobalt Labs",
             "Green Fork Bistro", "Summit School", "Harbor Dental", "Maple Office Supplies", "Riverside Clinic", "Orbit Studio"]
PRODUCTS = ["Espresso Beans 1kg", "Paper Cups (50)", "Oat Milk 6-pack", "A4 Paper Box", "Hand Soap 5L", "Yoga Mat",
            "LED Bulb E27", "Printer Toner K2", "Napkins (500)", "Green Tea Tin", "Dumbbell 10kg", "Glass Cleaner",
            "Whiteboard Markers", "Coffee Filters #4", "Latex Gloves M", "Sugar Sticks (1000)"]
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine",
                10: "ten", 12: "twelve", 20: "twenty"}
CURRENCIES = {"USD": ["${p}", "{p} USD", "US${p}"], "EUR": ["€{p}", "{p} EUR", "{p} euros"], "GBP": ["£{p}", "{p} GBP"]}
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
GREETINGS = ["Hi,", "Hello team,", "Good morning,", "Dear sales,", "Hey,", ""]
SIGNOFFS = ["Thanks!", "Best regards.", "Cheers.", "Kind regards.", ""]


def say_date(day: dt.date, rng: random.Random) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"{day.day} {MONTHS[day.month - 1]} {day.year}"
    if style == 1:
        return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"
    if style == 2:
        return day.isoformat()
    return f"{MONTHS[day.month - 1][:3]} {day.day} {day.year}"


def say_item(product: str, qty: int, price: float | None, currency: str, rng: random.Random) -> str:
    amount = rng.choice([f"{qty}", f"{qty}", NUMBER_WORDS.get(qty, f"{qty}")])
    head = rng.choice(["{q} x {p}", "{q} units of {p}", "{q} {p}", "{p}, qty {q}"]).format(q=amount, p=product)
    if price is None:
        return head
    shown = rng.choice([f"{price:.2f}", f"{price:g}"])
    money = rng.choice(CURRENCIES[currency]).format(p=shown)
    return head + rng.choice([f" at {money} each", f" ({money} per unit)", f" @ {money}"])


def make_example(rng: random.Random) -> dict:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    company = rng.choice(COMPANIES)
    account = rng.choice([None, f"{company[:2].upper()}-{rng.randint(1000, 9999)}"])
    currency = rng.choice(list(CURRENCIES))
    items = []
    for product in rng.sample(PRODUCTS, k=rng.choice([1, 1, 2, 2, 3])):
        qty = rng.choice([1, 2, 3, 4, 5, 6, 8, 10, 12, 20, 24, 50])
        price = rng.choice([None, round(rng.uniform(1, 90), rng.choice([0, 2]))])
        items.append({"product": product, "quantity": qty, "unit_price": float(price) if price is not None else None})
    day = rng.choice([None, dt.date(2026, 1, 1) + dt.timedelta(days=rng.randrange(400))])
    express = rng.random() < 0.35
    who = rng.choice([f"This is {name} from {company}", f"{name} here, ordering for {company}",
                      f"I'm {name} ({company})"])
    if account:
        who += rng.choice([f", account {account}", f" (account no. {account})", f"; our account is {account}"])
    lines = [say_item(i["product"], i["quantity"], i["unit_price"], currency, rng) for i in items]
    order = rng.choice(["Please send ", "We'd like to order ", "Could you ship "]) + (
        lines[0] if len(lines) == 1 else ", ".join(lines[:-1]) + " and " + lines[-1]) + "."
    if all(i["unit_price"] is None for i in items):
        order += f" Invoice us in {currency}."
    parts = [rng.choice(GREETINGS), who + ".", order]
    if day:
        parts.append(rng.choice(["We need it by {d}.", "Delivery on {d} please.", "It must arrive on {d}."]).format(
            d=say_date(day, rng)))
    parts.append(rng.choice(["This is urgent, please use express shipping.", "Express delivery please!",
                             "Please rush this one."]) if express else rng.choice(["", "Standard shipping is fine.",
                                                                                   "No hurry."]))
    parts.append(rng.choice(SIGNOFFS))
    reply = {"customer": {"name": name, "company": company, "account": account}, "items": items,
             "delivery_date": day.isoformat() if day else None, "currency": currency,
             "shipping": "express" if express else "standard"}
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": " ".join(p for p in parts if p)},
                         {"role": "assistant", "content": json.dumps(reply)}]}


def generate(n: int, seed: int, exclude: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    rng = random.Random(seed)
    rows, seen = [], set(exclude)
    while len(rows) < n:
        ex = make_example(rng)
        key = ex["messages"][1]["content"]
        if key not in seen:
            seen.add(key)
            rows.append(ex)
    return rows


def main() -> None:
    train = generate(360, seed=11)
    test = generate(90, seed=12, exclude={r["messages"][1]["content"] for r in train})
    for name, rows in (("train.jsonl", train), ("test.jsonl", test)):
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (HERE / "schema.json").write_text(json.dumps(SCHEMA, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {len(train)} train and {len(test)} test rows to {HERE}")


if __name__ == "__main__":
    main()
