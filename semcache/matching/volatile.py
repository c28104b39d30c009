"""Volatile prompts: English questions whose answer depends on when they are asked.

"What's the weather today", "current BTC price", "latest version of Python", "who won last
night", "is the site down right now": a cached answer to these goes stale within minutes or
days, however similar the next question is. :func:`volatility` recognises them with compiled
regular expressions (no model, tens of microseconds per prompt), so the cache can bypass them or
cap their TTL (:class:`semcache.policy.VolatilePolicy`).

How it decides, in order:

1. **Vetoes** (the words are there, the meaning is timeless): a question about words ("what
   does 'latest' mean", "a synonym for recent", quoted terms); code that reads the clock ("the
   current date in Python", "SQL rows created today"); the speaker's own situation ("I'm
   currently learning...", "now that I have graduated..."); a home-cooking "tonight"; "today"
   meaning nowadays ("today's society", "compared to today"); a hypothetical ("if he resigned
   today..."); a question to the reader rather than a request ("what phone do you use now").
2. **Anchors**: an expression that points at the present ("today", "tonight", "right now",
   "this week", "last night", "so far", "at the moment"), or "current / latest / newest /
   most recent" followed by something that changes ("price", "version", "CEO", "standings",
   "events"...). "The current in a circuit" has no such noun after it, so it is not an anchor.
3. **Topics** that change on their own, asked about their state: asset prices and quotes,
   exchange rates and conversions, the weather at a place, scores and "who won", news and
   polls, outages and opening ("is Gmail down", "is Costco open"), traffic and delays, the
   date and time now, countdowns ("how many days until Christmas"). A topic does not count in
   an explanation ("how is a stock's price determined", "why is London so rainy"), with a
   year ("who won the 2014 World Cup") or with a habitual word ("usually", "in July").

English only; other languages are never recognised (no false positives, no protection).
Measured on ``tests/data/volatile_prompts.jsonl`` by ``bench/bench_volatile.py``
(docs/BENCHMARKS.md).
"""

from __future__ import annotations

import re

__all__ = ["is_volatile", "volatility"]


def _words(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"'})

# -- vetoes ------------------------------------------------------------------------------------

_META = re.compile(
    r"\b(?:mean|means|meaning|definition|define|synonyms?|antonyms?|spell(?:ed|ing)?|"
    r"pronounce|pronunciation|etymology|grammar|grammatical|adverb|adjective|tense|"
    r"formal word|word for)\b"
    # a quoted term: the quote opens after a space (not "what's") and closes before a non-letter
    r"|(?:^|\s)['\"][a-z' ]{0,20}\b(?:latest|current(?:ly)?|now|nowadays|today|recent|"
    r"up to date|breaking news|as of now)\b[a-z' ]{0,20}['\"](?![a-z])"
)
_CODE = re.compile(
    r"\b(?:python|javascript|typescript|java|js|sql|bash|shell|powershell|excel|formula|"
    r"php|ruby|golang|rust|kotlin|swift|c#|c\+\+|pandas|numpy|datetime|timestamp|utcnow|"
    r"docker|linux|cron|regex|git|npm|pip|function|script|code|query)\b"
)
_CLOCK_WORDS = re.compile(
    r"\b(?:date|time|today|today's|now|yesterday|tomorrow|week|month|year|timezone|hour|"
    r"url|commit|rows?|directory|messages)\b"
)
_SELF = re.compile(
    r"\b(?:i'm|i am|we're|we are|i)\s+(?:currently|now)\b|^now that\b"
    r"|\b(?:cook|make|eat|bake)\b[^?]{0,60}\b(?:tonight|today)\b"
    # a procedure that mentions the latest version: "how do I update npm to the latest version"
    r"|\bhow (?:do|can|to|should)\b[^?]{0,60}\b(?:update|upgrade|install|download|"
    r"check out)\b[^?]{0,60}\b(?:latest|newest|current)\b"
)
# "today" meaning "nowadays", a contrast with the past, or a hypothetical: not about today
_GENERIC = re.compile(
    r"\btoday'?s (?:world|society|generation|youth|times|age|era|kids|children|people|life|"
    r"culture|education|technology|standards)\b"
    r"|\b(?:compared (?:to|with)|than|unlike) (?:today|now)\b"
    r"|\bif\b[^?]{0,60}\b(?:today|tomorrow|right now|now)\b"
)
# a question to the reader ("what phone do you use right now"), not a request to the assistant
_REQUEST = re.compile(r"\b(?:can|could|would|will) you\b|\bdo you know\b")
_READER = re.compile(r"\b(?:you|your|you're|you've)\b")

# -- anchors -----------------------------------------------------------------------------------

_PRESENT = re.compile(
    r"\b(?:today|today's|tonight|tonight's|tomorrow|tomorrow's|yesterday|yesterday's|"
    r"right now|just now|as of now|at the moment|at present|currently|so far|"
    r"this (?:morning|afternoon|evening|week|weekend|month|year|season|quarter)|"
    r"last night|next (?:friday|monday|tuesday|wednesday|thursday|saturday|sunday|week|"
    r"weekend)|on (?:saturday|sunday|monday|tuesday|wednesday|thursday|friday)|"
    r"(?:is|are|it|open|playing|trending|happening|erupting|running)\s+now)\b"
    r"|\bnow\s*[?.!]*\s*$"
)
_CHANGING_NOUN = _words(
    r"price",
    r"prices",
    r"rates?",
    r"value",
    r"quote",
    r"weather",
    r"temperature",
    r"forecast",
    r"version",
    r"release",
    r"update",
    r"updates",
    r"model",
    r"iphone",
    r"phone",
    r"pixel",
    r"episode",
    r"news",
    r"headlines",
    r"events",
    r"situation",
    r"status",
    r"score",
    r"scores",
    r"standings",
    r"rankings?",
    r"results?",
    r"polls?",
    r"ceo",
    r"president",
    r"prime minister",
    r"leader",
    r"champion",
    r"record",
    r"restrictions",
    r"population",
    r"inflation",
    r"unemployment",
    r"mortgage",
    r"fed funds",
    r"interest",
    r"exchange",
    r"market",
    r"research",
    r"developments",
    r"advances",
    r"findings",
    r"trends",
    r"season",
    r"album",
    r"movie",
    r"film",
    r"book",
    r"patch",
    r"firmware",
    r"drivers?",
)
_ATTRIBUTIVE = re.compile(
    r"\b(?:current|latest|newest|most recent|recent|upcoming|live|reigning)\s+"
    r"(?:[a-z0-9.&'-]+\s+){0,3}?" + _CHANGING_NOUN + r"\b"
    r"|\bthe latest (?:on|about|from|in)\b|\bnew update\b|\bwhen is the next\b|\bthe next \w+ "
    r"(?:game|match|update|release|episode)\b"
)

# -- topics ------------------------------------------------------------------------------------

_ASSET = _words(
    r"bitcoin",
    r"btc",
    r"ethereum",
    r"eth",
    r"dogecoin",
    r"doge",
    r"solana",
    r"crypto",
    r"gold",
    r"silver",
    r"oil",
    r"gas",
    r"shares?",
    r"stocks?",
    r"dow(?: jones)?",
    r"nasdaq",
    r"s&p(?: 500)?",
    r"ftse",
    r"dax",
    r"nikkei",
)
_CURRENCY = _words(
    r"usd",
    r"eur",
    r"gbp",
    r"jpy",
    r"cad",
    r"aud",
    r"inr",
    r"cny",
    r"chf",
    r"mxn",
    r"dollars?",
    r"euros?",
    r"pounds?",
    r"yen",
    r"rupees?",
    r"pesos?",
    r"yuan",
    r"francs?",
)
_TOPICS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "price",
        re.compile(
            r"\b"
            + _ASSET
            + r"\b[^?]{0,20}\b(?:price|prices|worth|trading at|quote|market cap|at)\b"
            r"|\b(?:price|value|worth|quote|market cap) of (?:an? |one |the )?"
            r"(?:[a-z0-9.&']+\s+){0,2}?" + _ASSET + r"\b"
            r"|\bhow much is (?:an? |one |1 )?[a-z ]{0,20}" + _ASSET + r"\b"
            r"|\b(?:what|where) (?:is|did) [a-z0-9&.' ]{1,30} (?:trading at|close)\b"
            r"|\bwhat'?s the (?:nasdaq|dow|s&p(?: 500)?) at\b"
            r"|\b[a-z]{2,5} stock price\b|'s stock price\b|\bgas prices\b"
            r"|\b" + _ASSET + r"\s+(?:to|in)\s+" + _CURRENCY + r"\b"
        ),
    ),
    (
        "exchange_rate",
        re.compile(
            r"\bexchange rate\b"
            r"|\b"
            + _CURRENCY
            + r"\s+(?:to|in|into|vs|against)\s+"
            + r"(?:\w+\s+)?"
            + _CURRENCY
            + r"\b"
            r"|\b(?:convert|how many|how much is)\s+(?:\d[\d,.]*\s+|an?\s+|one\s+)?"
            + _CURRENCY
            + r"\b[^?]{0,25}\b"
            + _CURRENCY
            + r"\b"
        ),
    ),
    (
        "weather",
        re.compile(
            r"\b(?:what'?s|what is|how'?s|how is)\s+the\s+(?:weather|temperature|forecast)\b"
            r"|\b(?:weather|forecast|temperature|air quality|uv index|pollen)\b[^?]{0,15}"
            r"\b(?:in|for|at|near)\s+[a-z]"
            r"|\bwill it (?:rain|snow)\b|\bis it (?:raining|snowing|going to (?:rain|snow))\b"
        ),
    ),
    (
        "sports",
        re.compile(
            r"\bwho (?:won|is winning|is leading|is ahead)\b"
            r"|\b(?:what'?s|what is) the (?:current |live |final )?score\b(?! of an? )"
            r"|\blive scores?\b|\bstandings\b"
            r"|\bdid (?:the )?[a-z]+ win\b|\b(?:top of|leading) the (?:league|table)\b"
        ),
    ),
    (
        "news",
        re.compile(
            r"\b(?:any|latest|top|breaking) (?:news|headlines)\b|\bin the news\b"
            r"|\bheadlines\b|\btrending\b|\bpolls?\b|\belection results\b"
            r"|\bwhat'?s (?:going on|happening) (?:with|in)\b"
        ),
    ),
    (
        "status",
        re.compile(
            r"^(?:is|are)\b(?! it possible| there a way)[^?]{0,40}"
            r"\b(?:down|not working|offline|having (?:an? )?"
            r"(?:outage|issues|problems)|delayed|closed|on time)\b"
            r"|\b(?:why is|why are)\b[^?]{0,30}\bnot working\b"
            r"|\b(?:traffic|wait time)\b[^?]{0,10}\b(?:on|at|in)\b"
            r"|\bopen (?:now|today)\b|^is (?:the )?[a-z0-9' ]{1,30} open\s*\??$"
        ),
    ),
    (
        "clock",
        re.compile(
            r"\bwhat time is it\b|\bwhat day is it\b|\bwhat week\b[^?]{0,30}\bis it\b"
            r"|\b(?:what'?s|what is) (?:the )?(?:date|time)(?: (?:today|now|right now|in [a-z ]+))?"
            r"\s*[?.!]*$"
            r"|\bhow (?:many days|many weeks|long) (?:until|till|to go until)\b"
            r"|\bdaylight sa(?:ving|vings) time (?:right )?now\b"
        ),
    ),
    (
        "upcoming",
        re.compile(
            r"\bwhen (?:does|do|will|is)\b[^?]{1,50}\b(?:come out|coming out|be released|"
            r"released|launch|start|air|premiere)\b"
        ),
    ),
    (
        "live_state",
        re.compile(
            r"\bhow many (?:people|subscribers|followers|cases)\b[^?]{0,40}\b(?:now|have)\b"
            r"|\b(?:currently holds|who'?s playing|what'?s on tv)\b"
        ),
    ),
)
_EXPLAIN = re.compile(
    r"(?:^|[,.;:!?]\s*)(?:why|how (?:do|does|did|can|could|should|would|to|are|"
    r"is \w+ (?:determined|calculated|measured))|explain|"
    r"what (?:causes|caused|determines|affects|drives)|"
    r"what (?:is|are) (?:an?|the difference))\b"
    r"|\b(?:history of|in history|historically|work\b|works\b|determined|calculated|"
    r"considered|usually|typically|on average|climate|in (?:january|february|march|april|"
    r"may|june|july|august|september|october|november|december))\b"
)
#: A longer prompt is judged on its first and last ``_END`` characters, where a question
#: usually is: the patterns' cost stays bounded on a long pasted text.
_END = 500
_YEAR = re.compile(r"\b(?:1[5-9]\d\d|20\d\d)s?\b|\b(?:first|1st)\b|\b1[89]00s\b")


def volatility(text: str) -> str | None:
    """Why ``text`` is a volatile question (``"anchor"``, ``"attributive"`` or a topic such as
    ``"price"``, ``"weather"``, ``"status"``), or ``None`` if it is not.

    Pure and thread-safe; runs a fixed set of precompiled patterns over the lower-cased text
    (its first and last 500 characters if longer).
    """
    if len(text) > 2 * _END:
        text = f"{text[:_END]}\n{text[-_END:]}"
    t = text.translate(_APOSTROPHES).lower().strip()
    if _META.search(t) or _SELF.search(t) or _GENERIC.search(t):
        return None
    if _READER.search(_REQUEST.sub("", t)):
        return None
    code = _CODE.search(t) is not None and _CLOCK_WORDS.search(t) is not None
    if code:
        return None
    if _PRESENT.search(t):
        return "anchor"
    if _ATTRIBUTIVE.search(t):
        return "attributive"
    if _EXPLAIN.search(t) or _YEAR.search(t):
        return None
    return next((name for name, pattern in _TOPICS if pattern.search(t)), None)


def is_volatile(text: str) -> bool:
    """Whether ``text`` is a volatile question (:func:`volatility` gives the reason)."""
    return volatility(text) is not None
