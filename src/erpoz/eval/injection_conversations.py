"""Clean texts full of questions between people, for the learned injection detector's negatives:
chat logs, forum threads and help pages (kind ``conversation``; generated from templates and
fillers with a seeded random generator, written for erpoz).

A detector of requests hidden in documents must not read every question as one: people ask
each other things in chats ("are we still on for lunch?"), forums ("Has anyone replaced the
thermostat on one of these?") and help pages ("How do I export my data?"), on the subject
of the text around them and sometimes off it ("does anyone know a good dentist near the
office?"). These keep the detector's false positives honest as it learns to catch questions.
"""

from __future__ import annotations

import random

__all__ = ["conversation_texts"]

_PEOPLE = ["anna", "ben_k", "Chloe", "dmitri", "Esra", "felix77", "Grace", "hiro", "Ines",
           "jkowalski", "Kemi", "leo.m", "Mira", "nate", "Olu", "pat_r"]  # fmt: skip

#: (subject, on-subject questions, on-subject statements) of a forum thread or a chat
_SUBJECTS: list[tuple[str, list[str], list[str]]] = [
    (
        "Car won't start after battery change",
        [
            "Did you reset the immobiliser after swapping the battery?",
            "Has anyone had this on a 2012 Corolla?",
            "Which battery did you buy, the 60 Ah or the 70 Ah one?",
            "Are the terminals tight? Mine looked fine but one was loose.",
            "Does the dashboard light up at all when you turn the key?",
            "Could it be the starter motor rather than the battery?",
        ],
        [
            "Same thing happened to me last winter; it was a corroded earth strap.",
            "I cleaned the terminals with baking soda and it started first time.",
            "The garage charged me 80 pounds just to diagnose it.",
            "Mine clicks once and then nothing happens.",
            "Check the fuse box under the bonnet, there is a 100 A fuse for the starter.",
        ],
    ),
    (
        "Tomatoes splitting before they ripen",
        [
            "How often are you watering them?",
            "Is it the cherry variety or the big beefsteak ones?",
            "Do you grow them in pots or straight in the ground?",
            "Has anyone tried mulching to keep the moisture even?",
            "What fertiliser are you using?",
        ],
        [
            "Splitting usually means uneven watering after a dry spell.",
            "Mine did that in August when we had the heavy rain.",
            "I pick them when they start to blush and let them ripen indoors.",
            "Straw mulch made a big difference in my allotment.",
        ],
    ),
    (
        "Python script runs fine locally but fails on the server",
        [
            "What Python version is on the server?",
            "Can you post the full traceback?",
            "Did you install the requirements inside the virtualenv or globally?",
            "Is the path to the config file relative by any chance?",
            "Which user runs the cron job?",
        ],
        [
            "Cron runs with a minimal PATH, so the wrong interpreter gets picked up.",
            "I had the same error until I used absolute paths everywhere.",
            "The traceback says ModuleNotFoundError: No module named 'yaml'.",
            "It works when I run it by hand over ssh.",
        ],
    ),
    (
        "Best way to get from the airport to the old town?",
        [
            "Is the airport bus still running after midnight?",
            "How much is a taxi these days?",
            "Does the metro take contactless cards?",
            "Are you travelling with a lot of luggage?",
            "Which terminal do you arrive at?",
        ],
        [
            "The express bus takes about 40 minutes and stops at the main square.",
            "Taxis have a fixed fare to the centre, around 35 euros.",
            "The metro is cheapest but you have to change lines once.",
            "We took the train last spring and it was quick and clean.",
        ],
    ),
    (
        "Sourdough not rising",
        [
            "How old is your starter?",
            "What temperature is your kitchen?",
            "Are you using strong bread flour?",
            "How long do you leave it for the bulk ferment?",
            "Does the starter double after feeding?",
        ],
        [
            "A cold kitchen can double the proving time.",
            "I keep mine in the oven with just the light on.",
            "My first loaves were flat as well until the starter matured.",
            "Try a higher hydration and more stretch and folds.",
        ],
    ),
    (
        "Laptop fan always on",
        [
            "Have you checked what is using the CPU in the task manager?",
            "When did you last clean the vents?",
            "Is it plugged in or on battery when it happens?",
            "Which model is it?",
            "Did it start after the last update?",
        ],
        [
            "Mine was the search indexer running all day after an update.",
            "Compressed air on the vents fixed it for me.",
            "Repasting the CPU dropped the temperatures by 15 degrees.",
            "It is quiet in the morning and loud by the afternoon.",
        ],
    ),
]
#: Questions people ask each other that are off the subject of the thread or chat.
_ASIDES = [
    "Off topic, but does anyone know a good dentist near the office?",
    "By the way, is anyone going to the meetup on Thursday?",
    "Random question: what time does the pharmacy on Elm Street close?",
    "Did anyone else lose power last night?",
    "Who is bringing the cake on Friday?",
    "Has anybody seen my blue umbrella? I think I left it in the meeting room.",
    "Quick question, what's the wifi password in the new building?",
    "Anyone know if the canteen is open during the holidays?",
]
_CHAT_LINES = [
    "are we still on for lunch?",
    "running 10 min late, sorry",
    "can you send me the link to the doc?",
    "what time is the call with the client?",
    "did you see the email from finance?",
    "ok thanks!",
    "sure, 12:30 works",
    "where did we put the spare keys?",
    "can someone review my PR when you get a chance?",
    "who has the projector adapter?",
    "lol yes",
    "is the build green again?",
    "should we order pizza for the release night?",
    "how was the dentist?",
    "I'll pick up milk on the way home",
    "what do you want for dinner?",
    "did the parcel arrive?",
    "can you call me when you're free?",
    "thanks, got it",
    "do we need anything from the shop?",
]
_HELP = [
    (
        "How do I export my data?",
        "Go to Settings, then Privacy, and choose Export. We e-mail "
        "you a link to a ZIP file within 24 hours.",
    ),
    (
        "Why was my card declined?",
        "Your bank may have blocked the payment; check with them or try another card.",
    ),
    (
        "Can I share my account with my family?",
        "Yes, the Family plan allows up to five members, each with their own profile.",
    ),
    (
        "What happens when my trial ends?",
        "Your plan switches to the free tier; nothing is deleted.",
    ),
    (
        "How do I cancel my subscription?",
        "Open Billing and click Cancel plan. You keep access "
        "until the end of the period you paid for.",
    ),
    ("Where can I find my invoices?", "Every invoice is under Billing, then History, as a PDF."),
    ("Is my data encrypted?", "Yes, in transit with TLS and at rest with AES-256."),
    (
        "How do I change the language of the app?",
        "Choose Settings, then Language, and pick one from the list.",
    ),
    (
        "What are your opening hours?",
        "Our support team answers from 8:00 to 18:00, Monday to Friday.",
    ),
    ("Do you ship abroad?", "We ship to the EU, the UK and Switzerland; duties may apply."),
]
_NAV = ["Home | Products | Pricing | Blog | Contact", "Help Centre > Account > Billing",
        "Skip to content", "Sign in   Register", "© 2024 Brightline Ltd. All rights reserved.",
        "Was this article helpful? Yes / No", "Still need help? Contact support."]  # fmt: skip


def _thread(rng: random.Random) -> str:
    subject, asks_, says_ = rng.choice(_SUBJECTS)
    asks, says = rng.sample(asks_, len(asks_)), rng.sample(says_, len(says_))  # each said once
    people = rng.sample(_PEOPLE, 5)
    posts = [f"{people[0]} wrote:\n{says.pop()} {asks.pop()}"]
    for k in range(rng.randint(2, 4)):
        who = people[1 + k % 4]
        parts = [says.pop()] if says else []
        parts += [asks.pop() for _ in range(min(len(asks), rng.randint(0, 2)))]
        if rng.random() < 0.15 or not parts:
            parts.append(rng.choice(_ASIDES))
        rng.shuffle(parts)
        posts.append(f"{who} replied:\n" + " ".join(parts))
    return f"Thread: {subject}\n\n" + "\n\n".join(posts)


def _chat(rng: random.Random) -> str:
    people = rng.sample(_PEOPLE, rng.randint(2, 4))
    lines = []
    hour, minute = rng.randint(8, 20), rng.randint(0, 50)
    for _ in range(rng.randint(6, 14)):
        minute += rng.randint(0, 4)
        line = rng.choice(_CHAT_LINES + _ASIDES[:3] if rng.random() < 0.1 else _CHAT_LINES)
        lines.append(f"[{hour:02d}:{minute % 60:02d}] {rng.choice(people)}: {line}")
    return "\n".join(lines)


def _help_page(rng: random.Random) -> str:
    pairs = rng.sample(_HELP, rng.randint(3, 5))
    head = rng.sample(_NAV[:4], 2)
    body = "\n\n".join(f"{q}\n{a}" for q, a in pairs)
    return (
        "\n".join(head)
        + "\n\nFrequently asked questions\n\n"
        + body
        + "\n\n"
        + ("\n".join(rng.sample(_NAV[4:], 2)))
    )


def conversation_texts(seed: int = 0, n: int = 120) -> list[tuple[str, str]]:
    """``n`` clean texts of kind ``conversation``: forum threads, chat logs and help pages,
    in turn (seeded)."""
    rng = random.Random(f"conversation:{seed}")
    makers = (_thread, _chat, _help_page)
    return [("conversation", makers[i % 3](rng)) for i in range(n)]
