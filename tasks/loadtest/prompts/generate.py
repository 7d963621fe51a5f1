"""Writes ``prompts.jsonl``: the shipped, varied prompt set, generated deterministically from templates.

Reasoning models behave differently on arithmetic, logic, code and open questions (how long they
think, how long they answer), so a load test should mix them. Regenerate with
``.venv/bin/python -m tasks.loadtest.prompts.generate``; a test checks the committed file matches.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("prompts.jsonl")
SEED = 20261127
PER_CATEGORY = 40

NAMES = ["Ada", "Bela", "Chen", "Dara", "Emeka", "Freya", "Goran", "Hana", "Ines", "Jonas", "Kiri", "Lena"]
THINGS = ["apples", "books", "marbles", "stamps", "tickets", "coins", "pencils", "shells"]
TOPICS = [
    "photosynthesis", "compound interest", "TCP congestion control", "the water cycle", "public-key cryptography",
    "blue/green deployments", "garbage collection", "plate tectonics", "vaccines", "inflation", "hash tables",
    "the Doppler effect", "load balancing", "eventual consistency", "neural network training", "tides",
]
LANGS = ["Python", "Rust", "Go", "TypeScript", "SQL", "Bash"]
CODE_TASKS = [
    "reverses the words in a sentence", "checks whether a string is a palindrome", "merges two sorted lists",
    "counts word frequencies in a text", "finds the second largest number in a list",
    "parses an ISO-8601 date and returns the weekday", "removes duplicate rows keeping the first",
    "computes a moving average over a window", "validates an email address loosely",
    "retries a function with exponential backoff",
]
AUDIENCES = ["a ten-year-old", "a new engineer", "a busy manager", "a physics student", "a retired teacher"]
PAIRS = [
    ("trains", "planes for a 600 km trip"), ("SQL", "NoSQL databases for a shop"), ("renting", "buying a home"),
    ("tabs", "spaces for indentation"), ("monoliths", "microservices for a startup"), ("tea", "coffee in the morning"),
    ("electric", "petrol cars for a city driver"), ("paper books", "e-readers"),
]
UNITS = [("miles", "kilometres", 1.609), ("pounds", "kilograms", 0.4536), ("feet", "metres", 0.3048),
         ("gallons", "litres", 3.785), ("knots", "km/h", 1.852)]


def arithmetic(r: random.Random) -> str:
    a, b, c = r.randint(3, 60), r.randint(2, 12), r.randint(1, 30)
    name, other, thing = r.choice(NAMES), r.choice(NAMES), r.choice(THINGS)
    return r.choice([
        f"{name} has {a} {thing}. {other} gives {name} {b} times as many, then {name} loses {c}. How many {thing} "
        f"does {name} have now? Show your reasoning.",
        f"A shop sells {thing} at {b} euros each, with {c} % off when you buy more than {a}. "
        f"What do {a + 5} {thing} cost?",
        f"What is {a} * {b} + {c} - {a % 7}? Explain each step.",
        f"A train leaves at 09:{c:02d} and travels {a * 10} km at {b * 10} km/h. When does it arrive?",
    ])


def logic(r: random.Random) -> str:
    x, y, z = r.sample(NAMES, 3)
    n = r.randint(3, 9)
    return r.choice([
        f"{x} is taller than {y}, and {y} is taller than {z}. Who is the shortest, and how do you know?",
        f"If every {r.choice(THINGS)[:-1]} in a box of {n} is red or blue and at least {n - 2} are red, "
        "what is the largest number that can be blue? Reason it out.",
        f"{x} always lies and {y} always tells the truth. {x} says '{z} is a knight'. What can you conclude about {z}?",
        f"You have {n} identical-looking coins and one is heavier. With a balance scale, what is the fewest weighings "
        "that always finds it?",
        f"Is the sum of {n} consecutive integers always divisible by {n}? Prove or give a counterexample.",
    ])


def code(r: random.Random) -> str:
    lang, task = r.choice(LANGS), r.choice(CODE_TASKS)
    return r.choice([
        f"Write a {lang} function that {task}. Include a short test.",
        f"Review this idea: a {lang} function that {task} using a single loop. What edge cases could break it?",
        f"Explain the time complexity of a {lang} function that {task}.",
    ])


def explain(r: random.Random) -> str:
    topic, audience = r.choice(TOPICS), r.choice(AUDIENCES)
    words = r.choice([50, 100, 150])
    return r.choice([
        f"Explain {topic} to {audience} in about {words} words.",
        f"What are the three most common misconceptions about {topic}?",
        f"Give one real-world example of {topic} and walk through why it works.",
    ])


def compare(r: random.Random) -> str:
    a, b = r.choice(PAIRS)
    audience = r.choice(AUDIENCES)
    return r.choice([
        f"Compare {a} and {b}. Give two advantages of each and a recommendation for {audience}.",
        f"Which is better, {a} or {b}? Think about cost, time and risk before answering.",
        f"Argue for {a} over {b} in three sentences, then argue the opposite.",
    ])


def convert(r: random.Random) -> str:
    src, dst, factor = r.choice(UNITS)
    v = r.randint(2, 500)
    return r.choice([
        f"Convert {v} {src} to {dst}, rounding to one decimal place.",
        f"Is {v} {src} more or less than {round(v * factor * r.choice([0.8, 1.2]))} {dst}? Show the conversion.",
    ])


def plan(r: random.Random) -> str:
    days, name = r.randint(2, 7), r.choice(NAMES)
    return r.choice([
        f"Plan a {days}-day study schedule for {name} to learn the basics of {r.choice(TOPICS)}.",
        f"{name} must roll out a new service version with zero downtime in {days} steps. Outline the steps and "
        "what to check between them.",
        f"List what could go wrong when moving {r.choice(LANGS)} services to a new region, and how to test each risk.",
    ])


def short(r: random.Random) -> str:
    return r.choice([
        f"What is {r.randint(2, 20)} squared?",
        f"Name a colour that rhymes with '{r.choice(['bed', 'bean', 'blue', 'night'])}'.",
        f"Say hello to {r.choice(NAMES)} in three languages.",
        f"Is {r.randint(50, 500)} a prime number?",
        f"Spell '{r.choice(TOPICS).split()[-1]}' backwards.",
    ])


CATEGORIES = {
    "arithmetic": arithmetic, "logic": logic, "code": code, "explain": explain,
    "compare": compare, "convert": convert, "plan": plan, "short": short,
}


def generate() -> list[dict[str, str]]:
    r = random.Random(SEED)
    rows = []
    for category, make in CATEGORIES.items():
        seen: set[str] = set()
        for _ in range(PER_CATEGORY * 50):  # bounded: a template set too small fails loudly below
            if len(seen) == PER_CATEGORY:
                break
            prompt = make(r)
            if prompt not in seen:
                seen.add(prompt)
                rows.append({"id": f"{category}-{len(seen):03d}", "category": category, "prompt": prompt})
        if len(seen) < PER_CATEGORY:
            raise RuntimeError(f"templates for {category!r} give only {len(seen)} distinct prompts")
    return rows


def render(rows: list[dict[str, str]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


if __name__ == "__main__":
    rows = generate()
    OUT.write_text(render(rows))
    print(f"wrote {OUT} ({len(rows)} prompts)")
