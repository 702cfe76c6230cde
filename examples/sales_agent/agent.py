"""Acme sales assistant: intent classifier + templated, slot-filling replies, as an MLflow pyfunc.

Input / output contract (``model.predict(model_input)`` on the loaded pyfunc)
---------------------------------------------------------------------------
* ONE conversation: a list of messages ``[{"role": "user" | "assistant", "content": str}, ...]``
  -> returns ONE dict ``{"reply": str, "intent": str, "slots": dict}``.
* SEVERAL conversations: a list of such lists -> returns a list of such dicts (same order).
* A pandas DataFrame with ``role``/``content`` columns is accepted as one conversation (in case a
  caller goes through a DataFrame); any other shape raises ``TypeError``.

The reply answers the LAST user message of the conversation. ``intent`` is the classifier's label
for that message (one of: greet, pricing, demo_request, discount, cancel, shipping, refund,
talk_to_human, product_info, goodbye; ``"none"`` if the conversation has no user message).
``slots`` are extracted by regex from ALL user messages (later mentions win), keys only present
when found: ``name`` (str, from "I'm Dana" / "my name is Dana" / "this is Dana"), ``email`` (str),
``order_id`` (str, "#10482" or "A-5521"), ``quantity`` (int, "10 seats"), ``product`` (str, one of
PRODUCTS below).

The model has no MLflow signature on purpose, so pyfunc passes lists of dicts through untouched.

Reply-template versions (``model_config["reply_version"]``, set from the MLproject parameter
``reply_version`` at training time):
* 1 (production in the demo): pricing "starts at $39"; no name in greetings; generic discount and
  refund answers.
* 2 (candidate in the demo): greets/says goodbye by name when known, offers discount code
  WELCOME10, opens a refund directly when an order number is known -- but its pricing template
  says "starts at $49" (the deliberate regression).
"""

from __future__ import annotations

import pickle
import re
from typing import Any

import mlflow.pyfunc

PRODUCTS = ("Starter plan", "Pro plan", "Enterprise plan", "Sensor Kit", "Gateway")
SEAT_PRICE = {1: 39, 2: 49}
DISCOUNT_CODE = "WELCOME10"
HANDOFF = "Let me connect you with a human agent"

_NAME_RE = re.compile(r"\b(?i:i'm|i am|my name is|this is|it's|call me)\s+([A-Z][a-z]+)\b")
_NAME_HERE_RE = re.compile(r"^(?i:hi|hello|hey)?[,!\s]*([A-Z][a-z]+) here\b")
_NOT_NAMES = frozenset({"Interested", "Looking", "Not", "Just", "Here", "Trying", "The", "Sorry"})
_EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_ORDER_RE = re.compile(r"(?:#\s?(\d{4,})|\b([A-Z]-\d{3,})\b|\border\s+(?:number\s+|no\.?\s+)?(\d{4,}))")
_QTY_RE = re.compile(r"\b(\d{1,5})\s+(?:seats?|licen[cs]es?|users?|units?|people)\b", re.IGNORECASE)
_PRODUCT_RES = (
    (re.compile(r"\bstarter\b", re.I), "Starter plan"),
    (re.compile(r"\bpro\b", re.I), "Pro plan"),
    (re.compile(r"\benterprise\b", re.I), "Enterprise plan"),
    (re.compile(r"\bsensor kits?\b", re.I), "Sensor Kit"),
    (re.compile(r"\bgateways?\b", re.I), "Gateway"),
)

Message = dict[str, str]
Reply = dict[str, Any]


def extract_slots(text: str) -> dict[str, Any]:
    slots: dict[str, Any] = {}
    for pattern in (_NAME_RE, _NAME_HERE_RE):
        match = pattern.search(text)
        if match and match.group(1) not in _NOT_NAMES:
            slots["name"] = match.group(1)
            break
    if email := _EMAIL_RE.search(text):
        slots["email"] = email.group(0)
    if order := _ORDER_RE.search(text):
        digits, lettered, spelled = order.groups()
        slots["order_id"] = lettered or f"#{digits or spelled}"
    if qty := _QTY_RE.search(text):
        slots["quantity"] = int(qty.group(1))
    for pattern, product in _PRODUCT_RES:
        if pattern.search(text):
            slots["product"] = product
            break
    return slots


def conversation_slots(messages: list[Message]) -> dict[str, Any]:
    slots: dict[str, Any] = {}
    for message in messages:
        if message.get("role") == "user":
            slots.update(extract_slots(str(message.get("content", ""))))
    return slots


def _greet(slots: dict[str, Any], version: int) -> str:
    hello = f"Hi {slots['name']}!" if version >= 2 and "name" in slots else "Hi there!"
    return f"{hello} I'm the Acme sales assistant. How can I help you today?"


def _pricing(slots: dict[str, Any], version: int) -> str:
    price = SEAT_PRICE[min(version, 2)]
    reply = f"Pricing starts at ${price} per seat per month on the Starter plan; Pro is $79 and "
    reply += "Enterprise is quoted individually."
    if qty := slots.get("quantity"):
        reply += f" For {qty} seats on Starter that comes to ${qty * price} per month."
    return reply


def _demo_request(slots: dict[str, Any], version: int) -> str:
    if email := slots.get("email"):
        return f"Great, I'll send a demo invite to {email}. Our team will propose a time slot."
    return "I'd be happy to set up a demo! What email address should I send the invite to?"


def _discount(slots: dict[str, Any], version: int) -> str:
    if version >= 2:
        return f"Good news: use code {DISCOUNT_CODE} for 10% off your first year."
    return "We offer volume discounts from 25 seats; I can ask our team to prepare a quote."


def _cancel(slots: dict[str, Any], version: int) -> str:
    return (
        "I'm sorry to see you go. You can cancel anytime under Settings > Billing; "
        "your plan stays active until the end of the billing period."
    )


def _shipping(slots: dict[str, Any], version: int) -> str:
    if order := slots.get("order_id"):
        return f"Order {order} ships within 2 business days; you'll get a tracking link by email."
    return "Orders ship within 2 business days. What's your order number so I can check?"


def _refund(slots: dict[str, Any], version: int) -> str:
    order = slots.get("order_id")
    if version >= 2:
        if order:
            return f"I've opened a refund request for order {order}; expect the money back in 5-7 days."
        return "I can help with that refund. What's your order number?"
    return "To request a refund, please email billing@acme.example with your order number."


def _talk_to_human(slots: dict[str, Any], version: int) -> str:
    return f"{HANDOFF} -- someone from our sales team will reply shortly."


def _product_info(slots: dict[str, Any], version: int) -> str:
    product = slots.get("product", "Acme Analytics")
    return (
        f"{product} comes with dashboards, a REST API, Slack integration and SSO on Pro and above. "
        "Want me to book a demo?"
    )


def _goodbye(slots: dict[str, Any], version: int) -> str:
    if version >= 2 and "name" in slots:
        return f"Thanks for chatting, {slots['name']}. Have a great day!"
    return "Thanks for chatting with Acme. Have a great day!"


TEMPLATES = {
    "greet": _greet,
    "pricing": _pricing,
    "demo_request": _demo_request,
    "discount": _discount,
    "cancel": _cancel,
    "shipping": _shipping,
    "refund": _refund,
    "talk_to_human": _talk_to_human,
    "product_info": _product_info,
    "goodbye": _goodbye,
}


def render_reply(intent: str, slots: dict[str, Any], version: int) -> str:
    template = TEMPLATES.get(intent)
    if template is None:
        return "Sorry, I didn't catch that. Could you rephrase?"
    return template(slots, version)


def _is_message(item: object) -> bool:
    return isinstance(item, dict) and "content" in item


def _as_conversations(model_input: object) -> tuple[list[list[Message]], bool]:
    """Normalise the input; the bool says whether it was a single conversation."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        return [model_input.to_dict(orient="records")], True
    if isinstance(model_input, list):
        if not model_input or all(_is_message(m) for m in model_input):
            return [model_input], True
        if all(isinstance(c, list) and all(_is_message(m) for m in c) for c in model_input):
            return model_input, False
    raise TypeError(
        "expected a conversation (list of {'role', 'content'} dicts) or a list of conversations, "
        f"got {type(model_input).__name__}"
    )


class SalesAgent(mlflow.pyfunc.PythonModel):
    """Artifacts: ``pipeline`` (pickled sklearn Pipeline). Config: ``reply_version`` (int)."""

    def __init__(self, pipeline: Any = None, reply_version: int = 1) -> None:
        self.pipeline = pipeline
        self.reply_version = reply_version

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        with open(context.artifacts["pipeline"], "rb") as fh:
            self.pipeline = pickle.load(fh)  # our own training artifact
        self.reply_version = int((context.model_config or {}).get("reply_version", 1))

    def respond(self, messages: list[Message]) -> Reply:
        slots = conversation_slots(messages)
        user_turns = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        if not user_turns:
            return {"reply": "Hi! How can I help you today?", "intent": "none", "slots": slots}
        intent = str(self.pipeline.predict([user_turns[-1]])[0])
        return {"reply": render_reply(intent, slots, self.reply_version), "intent": intent, "slots": slots}

    def predict(self, context, model_input, params=None):  # noqa: ANN001, ANN201
        # Deliberately unannotated: MLflow derives a signature (and input validation/conversion)
        # from type hints on predict, which would get in the way of nested lists of dicts.
        conversations, single = _as_conversations(model_input)
        replies = [self.respond(conversation) for conversation in conversations]
        return replies[0] if single else replies
