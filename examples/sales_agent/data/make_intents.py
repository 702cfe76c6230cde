"""Regenerate intents.csv deterministically: `python make_intents.py` (writes next to this file).

The committed intents.csv is the source of truth for training; this script only documents how
it was made. Every intent gets exactly PER_INTENT utterances; every fifth one goes to `val`.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

PER_INTENT = 30
SEED = 13

NAMES = ["Dana", "Sam", "Lee", "Priya", "Marco", "Aisha", "Tom", "Yuki"]
PLANS = ["Starter", "Pro", "Enterprise"]
PRODUCTS = ["Starter plan", "Pro plan", "Enterprise plan", "Sensor Kit", "Gateway"]
QTYS = ["5", "10", "25", "50", "100", "a dozen"]
ORDERS = ["#10482", "#20917", "#33105", "A-5521", "#48820", "#51234"]
EMAILS = ["dana@example.com", "sam.k@acme-labs.io", "lee@startup.dev", "ops@bigco.example"]

# fmt: off
# Each intent: (templates, fillers). Templates use {name} {plan} {product} {qty} {order} {email}.
TEMPLATES: dict[str, list[str]] = {
    "greet": [
        "hi", "hello", "hey there", "good morning", "good afternoon", "hi, I'm {name}",
        "hello, my name is {name}", "hey, this is {name}", "hiya", "hello there!",
        "hi team", "morning!", "hey, {name} here", "hi there, anyone around?", "yo",
        "greetings", "hello, I'm {name} from the ops team", "hi! quick question",
        "good evening", "hey hey", "hi, it's {name} again", "hello, nice to meet you",
    ],
    "pricing": [
        "how much does it cost?", "what's the price of the {plan} plan?", "pricing please",
        "how much is {product}?", "what do you charge per seat?", "is there a monthly price?",
        "how much for {qty} seats?", "what does the {plan} tier cost per month?",
        "can you send me your price list?", "what are your plans and prices?",
        "how expensive is the {plan} plan", "is {product} billed monthly or yearly?",
        "what would {qty} licenses cost?", "price for {product}?", "what's the cost per user",
        "do you have annual pricing?", "how much is it per month", "cost of the {plan} plan",
    ],
    "demo_request": [
        "can I get a demo?", "I'd like to book a demo", "could someone walk me through the product?",
        "schedule a demo for my team", "can you show me how {product} works?",
        "is there a live demo available?", "I want to see it in action",
        "book a call to see the {plan} plan", "do you offer product walkthroughs?",
        "can we set up a demo next week?", "demo please", "I'd love a quick tour of the tool",
        "can {name} and I join a demo session?", "send me a demo invite at {email}",
        "request a demo", "show me a demo of {product}", "can I try a guided demo",
    ],
    "discount": [
        "do you have any discounts?", "is there a promo code?", "can I get a discount for {qty} seats?",
        "any deals for startups?", "do you offer student discounts?", "is there a coupon?",
        "can you do better on the price?", "any discount if we pay yearly?",
        "do nonprofits get a discount?", "got any promo codes for {product}?",
        "I need a better deal on the {plan} plan", "is there a volume discount for {qty} licenses?",
        "any special offers right now?", "can you give me a discount code",
        "is there a cheaper option with a discount?", "black friday deal?",
    ],
    "cancel": [
        "I want to cancel my subscription", "how do I cancel?", "please cancel my account",
        "cancel the {plan} plan", "I'd like to stop my subscription", "end my contract please",
        "how can I unsubscribe from the {plan} plan?", "cancel order {order}",
        "we no longer need {product}, cancel it", "terminate my account",
        "stop billing me", "I want to close my account", "cancel my renewal",
        "please don't renew my plan", "can I cancel anytime?", "cancel everything for {email}",
    ],
    "shipping": [
        "when will my order ship?", "where is my order {order}?", "how long does shipping take?",
        "do you ship to Canada?", "track my package", "what's the delivery time for {product}?",
        "has order {order} shipped yet?", "shipping cost for {qty} units?",
        "can I get express delivery?", "do you ship internationally?", "where's my {product}?",
        "tracking number for {order} please", "my delivery is late", "which courier do you use?",
        "when will the {product} arrive?", "is shipping free?",
    ],
    "refund": [
        "I want a refund", "can I get my money back?", "refund order {order} please",
        "how do refunds work?", "I was charged twice, refund me", "request a refund for {product}",
        "what's your refund policy?", "I'd like to return {product} for a refund",
        "money back for order {order}", "refund my last payment", "can you reverse the charge?",
        "the {product} is broken, I want a refund", "how long does a refund take?",
        "please refund {order}", "I need a refund for the {plan} plan", "return and refund",
    ],
    "talk_to_human": [
        "can I talk to a human?", "let me speak to a person", "I want a real agent",
        "connect me with sales", "is there a human I can chat with?", "speak to a representative",
        "get me a manager", "transfer me to support", "can someone call me?",
        "I'd rather talk to a person", "human please", "operator", "talk to sales rep",
        "put me through to an agent", "can a real person email me at {email}?",
        "I need to speak with someone from your team",
    ],
    "product_info": [
        "what does {product} do?", "tell me about the {plan} plan", "what features are included?",
        "does it integrate with Slack?", "what's the difference between {plan} and Enterprise?",
        "does {product} support SSO?", "what is included in the {plan} tier?",
        "can it export to CSV?", "how many users does the {plan} plan support?",
        "is there an API?", "does {product} work offline?", "what are the specs of {product}?",
        "tell me more about your product", "which plan has audit logs?",
        "is {product} compatible with AWS?", "what integrations do you have?",
    ],
    "goodbye": [
        "bye", "thanks, bye!", "goodbye", "that's all, thank you", "see you", "talk later",
        "thanks for the help", "cheers, bye", "have a nice day", "ok thanks, that's everything",
        "bye for now", "thank you, goodbye", "catch you later", "that's it for today",
        "great, thanks!", "all good, bye", "later!", "thanks {name} says bye",
    ],
}

# fmt: on

FILLERS: dict[str, list[str]] = {
    "name": NAMES,
    "plan": PLANS,
    "product": PRODUCTS,
    "qty": QTYS,
    "order": ORDERS,
    "email": EMAILS,
}


def _expand(template: str, rng: random.Random) -> list[str]:
    keys = [k for k in FILLERS if "{" + k + "}" in template]
    if not keys:
        return [template]
    combos = list(itertools.product(*(FILLERS[k] for k in keys)))
    rng.shuffle(combos)
    return [template.format(**dict(zip(keys, combo, strict=True))) for combo in combos[:4]]


def build_rows() -> list[tuple[str, str, str]]:
    rng = random.Random(SEED)
    rows: list[tuple[str, str, str]] = []
    for intent, templates in TEMPLATES.items():
        # Round-robin over templates so every template is represented before any repeats.
        expanded = [_expand(t, rng) for t in templates]
        picked: list[str] = []
        for layer in itertools.zip_longest(*expanded):
            picked.extend(u for u in layer if u is not None and u not in picked)
        picked = picked[:PER_INTENT]
        rng.shuffle(picked)
        rows.extend((text, intent, "val" if i % 5 == 4 else "train") for i, text in enumerate(picked))
    return rows


def main() -> None:
    out = Path(__file__).with_name("intents.csv")
    with out.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["text", "intent", "split"])
        writer.writerows(build_rows())
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
