"""Write datasets/mixed.jsonl: about 300 varied cases, deterministic for a fixed seed.

Its one job: compose the benchmark's mixed workload from text written here (short
questions, long documents to summarise, code generation, classification with
expected answers, multi-turn chats, JSON extraction) spread over ~40 users with a few heavy ones.
Most cases carry an expectation (numbers within a tolerance, classes, regexes for code, JSON
against a schema, a few summaries graded by the judge), tagged `easy` or `hard`, so that a run
shows a quality/cost trade-off and not only speed and price.
It must not call any API. Run: `python datasets/make_mixed.py` (the output is
committed; a test checks that re-running gives the same bytes).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

SEED = 20_250_611
OUT = Path(__file__).with_name("mixed.jsonl")
COUNTS = {"short": 90, "summarise": 45, "code": 50, "classify": 65, "chat": 50, "extract": 20}
# Function definitions per language: what a code answer must contain at least.
DEFINITIONS = {"Python": r"\bdef \w+\(", "TypeScript": r"\bfunction\b|=>", "Go": r"\bfunc\b", "Rust": r"\bfn \w+"}

USERS = [f"user-{i:03d}" for i in range(1, 41)]
# Three heavy users hold roughly a third of the cases; the rest share the remainder.
WEIGHTS = [40.0, 28.0, 20.0] + [6.0] * 37

SHORT_QUESTIONS = [
    "What is the difference between weather and climate?",
    "Why is the sky blue during the day and red at sunset?",
    "How does a refrigerator keep food cold?",
    "What does a CPU cache do, in one paragraph?",
    "Who wrote 'Pride and Prejudice', and when was it published?",
    "How many bones are in the adult human body?",
    "What is the Pythagorean theorem? Give one practical use.",
    "Why do cats purr?",
    "What causes the seasons on Earth?",
    "What is the difference between a virus and a bacterium?",
    "How does compound interest work? Use a short example.",
    "What is a prime number? Name the first five.",
    "Explain what DNS does when I type a web address.",
    "What is the boiling point of water at the top of Mount Everest, roughly?",
    "Why does bread go stale?",
    "What is the tallest mountain in Africa?",
    "How do vaccines train the immune system?",
    "What is the difference between latency and throughput?",
    "Why do we have leap years?",
    "How do noise-cancelling headphones work?",
    "What is photosynthesis, in two sentences?",
    "What is the largest ocean on Earth?",
    "Why does a spoon in a glass of water look bent?",
    "What does 'idempotent' mean for an HTTP request?",
    "How long does light from the Sun take to reach Earth?",
    "What is the main ingredient of guacamole?",
    "Why do onions make people cry?",
    "What is the difference between RAM and disk storage?",
    "What is a haiku? Write one about autumn.",
    "How do bees communicate where flowers are?",
    "What was the purpose of the Rosetta Stone?",
    "How does a bicycle stay upright while moving?",
    "What is inflation, and who measures it?",
    "Why is the ocean salty?",
    "What is the difference between a median and a mean?",
    "How do tides work?",
    "What does a load balancer do?",
    "What is the speed of sound in air at room temperature?",
    "Why do leaves change colour in autumn?",
    "What is the capital of New Zealand?",
    "How does a heat pump heat a house in winter?",
    "What is a checksum used for?",
    "Why can't we see stars during the day?",
    "What is the difference between a crocodile and an alligator?",
    "How is a rainbow formed?",
    "What is the greenhouse effect?",
    "What does 'p95 latency' mean?",
    "How do you say 'thank you' in Japanese?",
    "What is the longest river in South America?",
    "What is a mortgage offset account?",
]
TERMS = [
    "opportunity cost",
    "backpressure",
    "photosynthetic efficiency",
    "confirmation bias",
    "eventual consistency",
    "marginal tax rate",
    "tail latency",
    "plate tectonics",
    "supply chain",
    "herd immunity",
    "a hash function",
    "a sourdough starter",
    "a bear market",
    "entropy",
    "a token bucket",
    "the placebo effect",
    "a Gantt chart",
    "a write-ahead log",
    "Coriolis force",
    "a sinking fund",
]
CONVERSIONS = [
    ("kilometres", "miles", 0.621371),
    ("kilograms", "pounds", 2.20462),
    ("litres", "US gallons", 0.264172),
    ("square metres", "square feet", 10.7639),
    ("centimetres", "inches", 0.393701),
]

THEMES: dict[str, dict[str, Any]] = {
    "transport": {
        "title": "Annual review of the {city} public transport network",
        "sentences": [
            "Ridership on the {city} tram lines grew by {pct}% over the year, with the largest gains on weekday mornings.",
            "The bus fleet now counts {n} vehicles, of which {pct2}% run on batteries charged overnight at the {place} depot.",
            "Average punctuality, measured as departures within two minutes of the timetable, stood at {pct3}%.",
            "Roadworks on {street} forced a six-week diversion that added about {mins} minutes to journeys on route {route}.",
            "A survey of {n2} passengers found that reliability mattered more to them than journey speed or comfort.",
            "The council approved a new fare cap of {money} per day, which takes effect in the spring.",
            "Staff shortages cancelled {n3} scheduled trips in the winter months, mostly on late-evening services.",
            "Cycling lanes along {street} were widened, and counts at the river crossing rose by {pct}% since last year.",
            "Night buses to the northern districts carried twice the forecast number of passengers during the pilot.",
            "Maintenance spending reached {money2}, most of it for track renewal and the replacement of ageing signals.",
            "Complaints about overcrowding fell after two extra trains were added to the peak timetable on line {route}.",
            "The network's carbon emissions per passenger-kilometre dropped by {pct2}% compared with five years ago.",
            "Accessibility work finished at {n4} stations, adding lifts, tactile paving and step-free boarding.",
            "The operator warned that fuel and energy prices remain the largest risk to next year's budget.",
        ],
    },
    "incident": {
        "title": "Post-incident review: elevated error rates in the {service} service",
        "sentences": [
            "At {time} UTC the {service} service began returning errors to about {pct}% of requests.",
            "The on-call engineer was paged {mins} minutes later, after the error-rate alert crossed its threshold.",
            "Investigation showed that a configuration change had lowered the connection pool size from {n} to {n5}.",
            "Under normal traffic the smaller pool was enough, but the daily batch job at {time} saturated it within seconds.",
            "Requests queued behind the exhausted pool and timed out, which clients retried, amplifying the load.",
            "The team rolled the configuration back at {time2} UTC, and error rates returned to baseline within {mins2} minutes.",
            "No data was lost, but about {n2} user requests failed and had to be repeated by hand.",
            "The change had passed review because the pool size was not covered by any automated test.",
            "Dashboards showed the saturation clearly, yet the alert fired late because it averaged over ten minutes.",
            "Action items include a load test for configuration changes and a shorter alert window for pool saturation.",
            "The team will also add jitter to client retries so that a slow dependency does not trigger a retry storm.",
            "Customers on the enterprise plan received a status update within {mins} minutes of the first report.",
            "A similar incident in {year} had been caused by a database failover rather than by configuration.",
            "This review is blameless: the aim is to improve the system, not to find a person at fault.",
        ],
    },
    "business": {
        "title": "{company} quarterly business review, Q{q} {year}",
        "sentences": [
            "Revenue for the quarter reached {money2}, up {pct}% on the same quarter last year.",
            "Growth came mainly from the {product} line, which now accounts for {pct2}% of sales.",
            "Gross margin narrowed slightly to {pct3}% because shipping costs rose during the period.",
            "The company hired {n3} people, most of them in customer support and engineering.",
            "Churn among small-business customers fell to {pct4}% after the onboarding flow was redesigned.",
            "Marketing spend was held flat, while the cost of acquiring a customer dropped by {pct4}%.",
            "The board approved an expansion into {country}, with a small sales office opening next quarter.",
            "Inventory levels are healthy, with about {n4} days of stock in the main warehouse near {place}.",
            "Two large contracts slipped into the next quarter, which explains the weaker pipeline conversion.",
            "Cash on hand stood at {money}, and the company remains free of long-term debt.",
            "Customer satisfaction scores improved to {score} out of 10, the highest in three years.",
            "Management expects next quarter's revenue to grow between {pct4}% and {pct}% year on year.",
            "The main risks are currency swings, a slowdown in enterprise budgets and a competitor's price cuts.",
            "A new pricing tier for larger teams will launch in the second month of next quarter.",
        ],
    },
    "river": {
        "title": "Environmental survey of the {river} river, {year}",
        "sentences": [
            "Water samples were taken at {n4} points along the {river}, from the upland springs to the estuary.",
            "Dissolved oxygen was healthy upstream but fell below {score} mg/L near the outfall of the {place} treatment works.",
            "Nitrate levels rose by {pct}% after heavy rain, which suggests run-off from surrounding farmland.",
            "Surveyors counted {n2} breeding pairs of kingfishers, a modest increase on the previous survey.",
            "Invasive signal crayfish were recorded in the lower reaches for the first time.",
            "Volunteers removed {n3} kilograms of litter from the banks during two weekend clean-ups.",
            "Trout numbers in the upper tributaries were stable, though juvenile fish were fewer than expected.",
            "The new fish pass at the old mill weir was used by salmon within weeks of opening.",
            "Summer water temperatures peaked at {score} degrees above the long-term average for July.",
            "Bank erosion has accelerated where cattle have free access to the water's edge.",
            "The survey recommends fencing {n} metres of bank and planting willow to stabilise the soil.",
            "Microplastic counts were highest downstream of the industrial estate near {place}.",
            "Local anglers reported more algal blooms, which matched the period of lowest flow in August.",
            "Overall the river's ecological status is rated moderate, unchanged from the last assessment.",
        ],
    },
    "history": {
        "title": "A short history of {town}",
        "sentences": [
            "{town} began as a ford on the {river}, where drovers crossed with cattle bound for the coast.",
            "A market charter granted in {year0} brought weekly fairs and a steady stream of traders.",
            "The town's wool merchants built the church tower, which still dominates the skyline.",
            "In the {century} century a fire destroyed most of the timber houses along the high street.",
            "Rebuilding in brick gave the centre the uniform red facades that visitors notice today.",
            "The arrival of the railway in {year1} turned {town} into a busy junction for goods trains.",
            "A mill on the river employed {n} people at its peak, many of them children before reforms.",
            "During the war the grammar school housed evacuated pupils from the city.",
            "The mill closed in {year2}, and the town lost a third of its jobs within a decade.",
            "Tourism and small workshops slowly replaced manufacturing in the later twentieth century.",
            "The old station is now a museum with a restored steam engine and a café.",
            "Population has grown to about {n2} as commuters moved in after the bypass opened.",
            "Local historians argue about whether the town's name comes from a Saxon farmstead or a river spirit.",
            "Every summer a festival re-enacts the granting of the charter, with stalls and a parade.",
        ],
    },
    "product": {
        "title": "Design proposal: offline mode for the {product} mobile app",
        "sentences": [
            "Users in areas with poor coverage report that the {product} app becomes unusable when the signal drops.",
            "Support tickets mentioning connectivity rose by {pct}% last quarter, mostly from field workers.",
            "We propose caching the last {n4} days of records on the device and queueing edits made offline.",
            "Conflicts are resolved field by field, with the most recent edit winning and the other kept in history.",
            "The sync engine will retry with exponential back-off and a cap of {mins} minutes between attempts.",
            "Attachments larger than {n5} megabytes will upload only on Wi-Fi unless the user overrides it.",
            "Storage use is bounded: the cache evicts the oldest records when it exceeds {n} megabytes.",
            "Encryption at rest uses the platform keystore, so cached data is unreadable if the device is lost.",
            "A banner tells users when they are offline and how many changes are waiting to sync.",
            "We estimate {n3} engineer-weeks of work, split between the client, the sync API and testing.",
            "The main risk is data loss during conflicting edits, which we will test with a fuzzing harness.",
            "Success means fewer connectivity tickets and a rise in weekly active users among field teams.",
            "An alternative, a progressive web app, was rejected because background sync is unreliable on some phones.",
            "Rollout will start with {pct2}% of users behind a feature flag, with a kill switch on the server.",
        ],
    },
}
CITIES = ["Aldermoor", "Port Halden", "Kestrel Bay", "Norbridge", "Velmont", "Ashcombe", "Lindholm"]
PLACES = ["Eastgate", "Millbrook", "Harrow Lane", "Quayside", "Foxley", "Westmarsh"]
STREETS = ["Station Road", "King's Parade", "the Embankment", "Castle Street", "Orchard Way"]
SERVICES = ["checkout", "search", "notifications", "billing", "identity"]
COMPANIES = ["Brightline Tools", "Corvid Analytics", "Harbour & Finch", "Tessellate Labs"]
PRODUCTS = ["FieldNote", "Ledgerly", "RouteKit", "Pantry Pro", "ClinicDesk"]
COUNTRIES = ["Portugal", "Poland", "Chile", "Vietnam", "Kenya", "Canada"]
RIVERS = ["Wendle", "Ashbourne", "Marrow", "Tilsey", "Corran"]
TOWNS = ["Hollowford", "Stainby", "Market Wexley", "Bramcote", "Ellerby"]

CODE_TASKS = [
    "a function that parses an ISO 8601 duration such as 'P3DT4H5M' into total seconds, rejecting malformed input",
    "an LRU cache class with get, put and a configurable capacity, with O(1) operations",
    "a token-bucket rate limiter that supports bursts and is safe to use from concurrent tasks",
    "a function that merges overlapping intervals and returns them sorted",
    "a command-line tool that counts word frequencies in a text file and prints the top 20",
    "a retry helper with exponential back-off, jitter and a maximum number of attempts",
    "a function that validates an IBAN using the mod-97 check",
    "a streaming CSV reader that yields rows as dictionaries and reports the line of any malformed row",
    "a trie with insert, search and prefix-completion methods",
    "a function that computes the p50, p95 and p99 of a list of latencies without external libraries",
    "a minimal HTTP health-check server that answers GET /healthz with JSON",
    "a function that converts a Roman numeral to an integer and back",
    "a topological sort of a dependency graph that reports a cycle if there is one",
    "a debounce utility that delays a function call until input stops for a given time",
    "a function that splits text into chunks of at most N tokens on sentence boundaries",
    "a binary search that returns the insertion point for a value in a sorted list",
    "a Markdown table renderer for a list of records with aligned columns",
    "a function that detects whether two strings are anagrams, ignoring case and spaces",
    "a circular buffer with a fixed capacity that overwrites the oldest item",
    "a parser for simple arithmetic expressions with +, -, *, / and parentheses",
    "a function that deduplicates records by a key while keeping the first occurrence",
    "a bank account class with deposit, withdraw and a transaction history, refusing overdrafts",
    "a function that finds the shortest path in a grid maze using breadth-first search",
    "a unit-test suite for a slugify function that turns titles into URL slugs",
    "a function that formats a byte count as a human-readable string such as '1.5 MiB'",
]
LANGUAGES = ["Python", "TypeScript", "Go", "Rust"]

PRODUCTS_REVIEWED = [
    "wireless earbuds",
    "coffee grinder",
    "hiking boots",
    "desk lamp",
    "robot vacuum",
    "e-reader",
]
POSITIVE = [
    "works exactly as described and the battery lasts all week",
    "is sturdy, quiet and easy to clean",
    "exceeded my expectations; I bought a second one for my parents",
    "arrived early and setup took two minutes",
]
NEGATIVE = [
    "stopped working after ten days and the refund took a month",
    "is flimsy and the buttons stick",
    "arrived scratched and customer service never replied",
    "is far louder than advertised and overheats",
]
NEUTRAL = [
    "does the job; nothing special, nothing wrong",
    "is fine for the price, though the colour is darker than the photos",
    "arrived on time and works as expected",
]
TICKETS = {
    "billing": [
        "I was charged twice this month for the same subscription.",
        "Can I get an invoice with our company's VAT number on it?",
        "My card expired; how do I update the payment method before renewal?",
        "Why did my bill go up by 20% without notice?",
    ],
    "shipping": [
        "My parcel has said 'out for delivery' for four days.",
        "The box arrived crushed and one item is missing.",
        "Can you ship to a PO box in another state?",
        "I need to change the delivery address on an order placed an hour ago.",
    ],
    "technical": [
        "The app crashes whenever I open the settings page on Android 14.",
        "Exports to CSV are empty even though the dashboard shows data.",
        "I get a 502 error when uploading files larger than 50 MB.",
        "Two-factor codes from the authenticator app are always rejected.",
    ],
}
LANGUAGE_SAMPLES = {
    "French": ["Le train pour Lyon part à huit heures.", "Nous avons mangé une tarte aux pommes délicieuse."],
    "German": ["Das Wetter ist heute sehr schön.", "Ich habe meinen Schlüssel im Büro vergessen."],
    "Spanish": ["¿Dónde está la estación de autobuses?", "Mañana vamos a la playa con mis primos."],
    "Italian": ["La biblioteca chiude alle sette di sera.", "Vorrei un caffè e un cornetto, per favore."],
    "Portuguese": ["O mercado abre cedo aos sábados.", "Eles estão a aprender a tocar guitarra."],
}
HEADLINES = {
    "sports": [
        "Underdogs clinch the cup with a stoppage-time header",
        "Marathon record falls on a cold morning in the capital",
    ],
    "science": [
        "Telescope spots water vapour on a distant exoplanet",
        "New enzyme breaks down plastic bottles in days",
    ],
    "business": [
        "Chipmaker's shares jump after record quarterly orders",
        "Supermarket chain agrees merger with regional rival",
    ],
    "politics": [
        "Parliament passes housing bill after late-night vote",
        "Coalition talks stall over the budget deficit",
    ],
}

CHATS: list[list[str]] = [
    [
        "I want to start running but I get bored quickly. Any ideas?",
        "Try intervals instead of steady runs, vary your routes, and join a weekly group run: social accountability helps a lot.",
        "I only have 30 minutes, three times a week. Can you make me a four-week plan?",
    ],
    [
        "My sourdough comes out dense and flat. What am I doing wrong?",
        "Dense loaves usually mean under-proofing or a weak starter. Does your starter double within 6-8 hours after feeding?",
        "It takes about 12 hours to double. How do I make it stronger?",
    ],
    [
        "We're arguing at work about monorepo versus many repos. What are the trade-offs?",
        "A monorepo makes atomic cross-project changes and shared tooling easy; many repos give clearer ownership and independent release cycles.",
        "We have 12 services and 9 engineers. What would you pick?",
    ],
    [
        "Can you help me write a polite email declining a job offer?",
        "Of course. Do you want to leave the door open for future roles, and should the email mention a reason?",
        "Yes, keep the door open, and say I accepted another offer closer to home.",
    ],
    [
        "What should I check before buying a used electric car?",
        "Ask for a battery health report, check the charging history, confirm the warranty on the battery, and test the car on a fast charger.",
        "The seller says the battery is at 87% health after 60,000 km. Is that good?",
    ],
    [
        "I'm learning SQL. What's the difference between WHERE and HAVING?",
        "WHERE filters rows before grouping; HAVING filters groups after aggregation.",
        "So to find customers with more than five orders in 2024, which do I use?",
    ],
    [
        "Our team's standups run 40 minutes. How do we shorten them?",
        "Time-box to 15 minutes, walk the board instead of going person by person, and move discussions to a follow-up with only the people involved.",
        "People say the board walk skips updates that aren't tickets. How do we handle that?",
    ],
    [
        "I have tomatoes, chickpeas, spinach and rice. What can I cook tonight?",
        "A chickpea and spinach stew with tomatoes over rice works well: about 30 minutes, one pot for the stew.",
        "I don't have cumin. What can I use instead?",
        "Smoked paprika with a pinch of coriander or a little curry powder will give a similar warmth.",
        "Great. How do I keep the spinach from going slimy?",
    ],
    [
        "Explain what a p-value is without jargon.",
        "It's how surprising your data would be if nothing interesting were going on; a small p-value means 'this would be unusual by chance alone'.",
        "So does p = 0.03 mean there's a 97% chance my hypothesis is true?",
    ],
    [
        "I'm visiting Kyoto for three days in November. What should I prioritise?",
        "November is autumn-leaf season: prioritise Eikando and Tofukuji early in the morning, Arashiyama on a weekday, and Fushimi Inari at dawn to avoid crowds.",
        "I also want one day trip. Nara or Osaka?",
    ],
    [
        "How do I ask my manager for a raise?",
        "Prepare evidence of your impact over the last year, know the market rate for your role, and ask for a meeting dedicated to the topic.",
        "What if they say there's no budget this year?",
    ],
    [
        "Can you explain how HTTPS keeps my password safe?",
        "HTTPS encrypts the connection with TLS, so anyone between you and the server sees only scrambled data, and the certificate proves you're talking to the real site.",
        "Then why do sites still get passwords stolen?",
    ],
]
CHAT_FOLLOW_UPS = [
    "Please keep the answer under 150 words.",
    "Answer as a short bulleted list.",
    "Explain your reasoning briefly.",
    "",
]

SHORT_SYSTEMS = [
    None,
    None,
    "Answer concisely, in at most three sentences.",
    "You are a friendly science communicator.",
]


def _fill(template: str, rng: random.Random, fixed: dict[str, str]) -> str:
    """Fill a sentence's slots: fixed names per document, fresh numbers per sentence."""
    values = {
        "pct": str(rng.randint(3, 38)),
        "pct2": str(rng.randint(5, 60)),
        "pct3": str(rng.randint(70, 97)),
        "pct4": str(rng.randint(2, 12)),
        "n": str(rng.randint(120, 900)),
        "n2": str(rng.randint(1_000, 25_000)),
        "n3": str(rng.randint(12, 480)),
        "n4": str(rng.randint(6, 40)),
        "n5": str(rng.randint(4, 30)),
        "mins": str(rng.randint(4, 25)),
        "mins2": str(rng.randint(3, 15)),
        "money": f"{rng.randint(2, 19)}.{rng.randint(0, 9)}0",
        "money2": f"{rng.randint(3, 95)}.{rng.randint(1, 9)} million",
        "score": f"{rng.randint(5, 9)}.{rng.randint(0, 9)}",
        "time": f"{rng.randint(0, 23):02d}:{rng.choice(['00', '15', '30', '45'])}",
        "time2": f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}",
        "route": str(rng.randint(2, 88)),
        "q": str(rng.randint(1, 4)),
        "year": str(rng.randint(2015, 2024)),
        "year0": str(rng.randint(1180, 1390)),
        "year1": str(rng.randint(1840, 1875)),
        "year2": str(rng.randint(1958, 1987)),
        "century": rng.choice(["sixteenth", "seventeenth", "eighteenth"]),
    }
    values.update(fixed)
    return template.format(**values)


def _document(rng: random.Random, target_chars: int) -> tuple[str, str]:
    """A report of about `target_chars`: sections of paragraphs drawn from one theme's sentences."""
    theme_name = rng.choice(sorted(THEMES))
    theme = THEMES[theme_name]
    fixed = {
        "city": rng.choice(CITIES),
        "place": rng.choice(PLACES),
        "street": rng.choice(STREETS),
        "service": rng.choice(SERVICES),
        "company": rng.choice(COMPANIES),
        "product": rng.choice(PRODUCTS),
        "country": rng.choice(COUNTRIES),
        "river": rng.choice(RIVERS),
        "town": rng.choice(TOWNS),
    }
    title = _fill(theme["title"], rng, fixed)
    parts = [title, ""]
    size = len(title)
    section = 0
    while size < target_chars:
        if section == 0 or rng.random() < 0.2:
            section += 1
            heading = f"Section {section}"
            parts += [heading, ""]
            size += len(heading)
        sentences = rng.sample(theme["sentences"], rng.randint(4, 7))
        paragraph = " ".join(_fill(s, rng, fixed) for s in sentences)
        parts += [paragraph, ""]
        size += len(paragraph) + 2
    return theme_name, "\n".join(parts).strip()


def _short(rng: random.Random, i: int) -> dict[str, Any]:
    pick = rng.random()
    if pick < 0.55:
        prompt = SHORT_QUESTIONS[i % len(SHORT_QUESTIONS)]
    elif pick < 0.8:
        prompt = f"Explain {rng.choice(TERMS)} in two sentences for a newcomer."
    else:
        a, b, factor = rng.choice(CONVERSIONS)
        amount = rng.randint(2, 500)
        prompt = f"Convert {amount} {a} to {b}. Give the number rounded to one decimal place."
        return {
            "prompt": prompt,
            "max_tokens": rng.choice([64, 96, 128]),
            "expected": {"number": {"value": round(amount * factor, 1), "tolerance": 0.01}},
            "tags": ["short", "qa", "conversion", "easy"],
        }
    row: dict[str, Any] = {"prompt": prompt, "max_tokens": rng.choice([64, 128, 200, 256])}
    system = rng.choice(SHORT_SYSTEMS)
    if system:
        row["system"] = system
    row["tags"] = ["short", "qa"]
    if prompt.startswith("Explain "):
        row["expected"] = {"contains": prompt.removeprefix("Explain ").split(" in two sentences")[0]}
    return row


def _summarise(rng: random.Random, i: int) -> dict[str, Any]:
    target = [2_500, 8_000, 21_000][i % 3] + rng.randint(0, 9_000 if i % 3 == 2 else 3_000)
    theme, doc = _document(rng, target)
    ask = rng.choice(
        [
            "Summarise the document above in five bullet points.",
            "Write a one-paragraph executive summary of the document above.",
            "List the three most important facts in the document above, then the main risk it mentions.",
        ]
    )
    size = "long" if len(doc) > 20_000 else "medium" if len(doc) > 6_000 else "short_doc"
    row: dict[str, Any] = {
        "prompt": f"<document>\n{doc}\n</document>\n\n{ask}",
        "system": "You summarise documents accurately. Never add facts that are not in the document.",
        "max_tokens": rng.choice([200, 300, 400]),
        "tags": ["summarise", size, *(["hard"] if size == "long" else [])],
        "metadata": {"theme": theme, "doc_chars": len(doc)},
    }
    title = doc.split("\n", 1)[0].strip("# ").strip()
    if i % 4 == 0:  # a few graded by the judge against the document's own title
        row["expected"] = {
            "judge": {
                "rubric": "A faithful summary of the document: its main subject and facts, nothing invented.",
                "reference": title,
                "pass_score": 0.6,
            }
        }
    else:
        row["expected"] = {"contains": theme}
    return row


def _code(rng: random.Random, i: int, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    task, language = pairs[i]
    row: dict[str, Any] = {
        "prompt": f"Write {task} in {language}. Include brief comments and a few example usages or tests.",
        "system": f"You are a senior {language} engineer. Write idiomatic, production-quality code.",
        "max_tokens": rng.randint(1_000, 2_000),
        "temperature": rng.choice([0.0, 0.2, 0.3]),
        "tags": ["code", language.lower(), "hard"],
        "expected": {"regex": DEFINITIONS[language]},
    }
    return row


def _classify(rng: random.Random, i: int) -> dict[str, Any]:
    kind = ["sentiment", "ticket", "language", "headline"][i % 4]
    row: dict[str, Any] = {"max_tokens": rng.choice([16, 32, 64]), "temperature": 0.0}
    if kind == "sentiment":
        label = rng.choice(["positive", "negative", "neutral"])
        pool = {"positive": POSITIVE, "negative": NEGATIVE, "neutral": NEUTRAL}[label]
        row["system"] = (
            "Classify the sentiment of the review. Reply with one word: positive, negative or neutral."
        )
        row["prompt"] = f"Review: The {rng.choice(PRODUCTS_REVIEWED)} {rng.choice(pool)}."
        row["expected"] = {"regex": rf"(?i)^\W*{label}\b"}
    elif kind == "ticket":
        team = rng.choice(sorted(TICKETS))
        row["system"] = (
            "Route the support ticket to one team: billing, shipping or technical. Reply with the team name only."
        )
        row["prompt"] = f"Ticket #{rng.randint(1000, 9999)}: {rng.choice(TICKETS[team])}"
        row["expected"] = {"equals": team}
    elif kind == "language":
        language = rng.choice(sorted(LANGUAGE_SAMPLES))
        row["prompt"] = (
            f"Which language is this sentence written in? Answer with the language's English name only.\n\n"
            f"{rng.choice(LANGUAGE_SAMPLES[language])}"
        )
        row["expected"] = {"contains": language}
    else:
        topic = rng.choice(sorted(HEADLINES))
        row["prompt"] = (
            "Classify this headline as sports, science, business or politics. Reply with the label only.\n\n"
            f"Headline: {rng.choice(HEADLINES[topic])}"
        )
        row["expected"] = {"contains": [topic]}
    row["tags"] = ["classify", kind, "easy"]
    return row


EXTRACT_PEOPLE = [
    ("Amara Okafor", 34, "Lagos", "structural engineer"),
    ("Tomás Reyes", 51, "Valparaíso", "harbour pilot"),
    ("Ingrid Solberg", 28, "Tromsø", "marine biologist"),
    ("Kenji Watanabe", 45, "Sapporo", "pastry chef"),
    ("Priya Raman", 39, "Chennai", "data journalist"),
    ("Lukas Brandt", 62, "Leipzig", "organ builder"),
    ("Fatima Zahra El Idrissi", 30, "Fès", "architect"),
    ("Owen Gallagher", 47, "Galway", "ferry captain"),
]
EXTRACT_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "city": {"type": "string"},
        "occupation": {"type": "string"},
    },
    "required": ["name", "age", "city", "occupation"],
    "additionalProperties": False,
}


def _extract(rng: random.Random, i: int) -> dict[str, Any]:
    name, age, city, job = EXTRACT_PEOPLE[i % len(EXTRACT_PEOPLE)]
    text = rng.choice(
        [
            f"{name}, {age}, has worked as a {job} in {city} for most of their career.",
            f"In {city}, the {job} {name} (aged {age}) spoke to us about the season ahead.",
            f"Meet {name}: {job}, {age} years old, born and raised in {city}.",
        ]
    )
    return {
        "prompt": f"Extract the person's name, age, city and occupation from the text as one JSON object.\n\n{text}",
        "system": "Reply with JSON only, no prose and no code fence.",
        "max_tokens": 200,
        "tags": ["extract", "json", "hard"],
        "expected": {"json": {"schema": EXTRACT_SCHEMA}},
    }


def _chat(rng: random.Random, i: int) -> dict[str, Any]:
    script = CHATS[i % len(CHATS)]
    messages: list[dict[str, Any]] = [
        {"role": "user" if n % 2 == 0 else "assistant", "content": text} for n, text in enumerate(script)
    ]
    follow = rng.choice(CHAT_FOLLOW_UPS)
    if follow:
        last = messages[-1]["content"]
        if rng.random() < 0.4:
            messages[-1]["content"] = [{"type": "text", "text": last}, {"type": "text", "text": follow}]
        else:
            messages[-1]["content"] = f"{last} {follow}"
    tags = ["chat", "multi_turn"]
    if rng.random() < 0.12:
        messages.append({"role": "assistant", "content": "Here is my answer:"})
        tags.append("prefill")
    return {"messages": messages, "max_tokens": rng.choice([150, 250, 400, 600]), "tags": tags}


def build(seed: int = SEED) -> list[dict[str, Any]]:
    """All cases, in a shuffled but seed-determined order, with ids and user ids assigned."""
    rng = random.Random(seed)
    pairs = rng.sample([(t, lang) for t in CODE_TASKS for lang in LANGUAGES], COUNTS["code"])
    rows: list[dict[str, Any]] = []
    for kind, count in COUNTS.items():
        for i in range(count):
            if kind == "short":
                body = _short(rng, i)
            elif kind == "summarise":
                body = _summarise(rng, i)
            elif kind == "code":
                body = _code(rng, i, pairs)
            elif kind == "classify":
                body = _classify(rng, i)
            elif kind == "extract":
                body = _extract(rng, i)
            else:
                body = _chat(rng, i)
            row = {"id": f"{kind}-{i + 1:03d}", **body}
            row["user_id"] = rng.choices(USERS, weights=WEIGHTS)[0]
            row.setdefault("metadata", {})["kind"] = kind
            rows.append(row)
    rng.shuffle(rows)
    return rows


def write(path: Path = OUT, seed: int = SEED) -> int:
    """Write the dataset as JSONL; returns the number of bytes written."""
    data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in build(seed)).encode()
    path.write_bytes(data)
    return len(data)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    print(f"wrote {write(target)} bytes to {target}")
