"""`sovra eval pii`: a seeded, labelled multilingual PII set and precision/recall/F2 scoring.

The set is generated with faker (names, cities, companies, phones, e-mails, IPs) in seven
locales; identifiers with check digits are built here from faker's seeded random source so
each one is *valid* (faker's own VAT numbers, and some of its national ids, are not). Every
text also carries look-alike distractors that must not be flagged: ticket and order numbers,
dates, amounts, and digit strings of an identifier's shape whose check digits are wrong.
Half the texts are prose, half look like help-desk tickets.

Scoring matches a predicted span to a gold span of the same entity when they overlap.
Predictions of entity types outside the evaluated set are ignored (neither right nor wrong).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sovra.errors import Unavailable
from sovra.policy import checksums
from sovra.policy.pii import CHECKSUM_ENTITIES

LOCALES: tuple[str, ...] = ("de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "en_GB")

NATIONAL: dict[str, tuple[str, ...]] = {
    "de_DE": ("DE_STEUER_ID",),
    "fr_FR": ("FR_NIR",),
    "es_ES": ("ES_DNI", "ES_NIE"),
    "it_IT": ("IT_FISCAL_CODE",),
    "nl_NL": ("NL_BSN",),
    "pl_PL": ("PL_PESEL",),
    "en_GB": ("UK_NINO",),
}
COMMON: tuple[str, ...] = ("IBAN_CODE", "EU_VAT", "PHONE_NUMBER", "EMAIL_ADDRESS", "IP_ADDRESS")

LABELS: dict[str, dict[str, str]] = {
    "de_DE": {"IBAN_CODE": "IBAN", "EU_VAT": "USt-IdNr.", "DE_STEUER_ID": "Steuer-ID",
              "PHONE_NUMBER": "Telefon", "EMAIL_ADDRESS": "E-Mail", "IP_ADDRESS": "IP-Adresse"},
    "fr_FR": {"IBAN_CODE": "IBAN", "EU_VAT": "n° TVA", "FR_NIR": "n° de sécurité sociale",
              "PHONE_NUMBER": "tél.", "EMAIL_ADDRESS": "courriel", "IP_ADDRESS": "adresse IP"},
    "es_ES": {"IBAN_CODE": "IBAN", "EU_VAT": "NIF-IVA", "ES_DNI": "DNI", "ES_NIE": "NIE",
              "PHONE_NUMBER": "teléfono", "EMAIL_ADDRESS": "correo", "IP_ADDRESS": "IP"},
    "it_IT": {"IBAN_CODE": "IBAN", "EU_VAT": "P.IVA", "IT_FISCAL_CODE": "codice fiscale",
              "PHONE_NUMBER": "tel.", "EMAIL_ADDRESS": "email", "IP_ADDRESS": "indirizzo IP"},
    "nl_NL": {"IBAN_CODE": "IBAN", "EU_VAT": "btw-nummer", "NL_BSN": "BSN",
              "PHONE_NUMBER": "telefoon", "EMAIL_ADDRESS": "e-mail", "IP_ADDRESS": "IP-adres"},
    "pl_PL": {"IBAN_CODE": "IBAN", "EU_VAT": "NIP", "PL_PESEL": "PESEL",
              "PHONE_NUMBER": "tel.", "EMAIL_ADDRESS": "e-mail", "IP_ADDRESS": "adres IP"},
    "en_GB": {"IBAN_CODE": "IBAN", "EU_VAT": "VAT no.", "UK_NINO": "NI number",
              "PHONE_NUMBER": "phone", "EMAIL_ADDRESS": "email", "IP_ADDRESS": "IP address"},
}  # fmt: skip

PROSE: dict[str, tuple[str, ...]] = {
    "de_DE": (
        "{name} aus {city} hat uns heute {l0} {v0} mitgeteilt; die Rechnung {d0} ist offen.",
        "Bitte prüfen Sie für {company} die Angaben {l0} {v0} und {l1} {v1} bis zum {date}.",
        "Laut Vertrag {d0} gilt für {name} {l0}: {v0}. Betrag: {amount}.",
    ),
    "fr_FR": (
        "{name}, domicilié à {city}, nous a transmis son {l0} {v0} ; dossier {d0}.",
        "Pour {company}, merci de vérifier {l0} {v0} et {l1} {v1} avant le {date}.",
        "Selon le contrat {d0}, le {l0} de {name} est {v0}. Montant : {amount}.",
    ),
    "es_ES": (
        "{name}, de {city}, nos ha enviado su {l0} {v0}; expediente {d0}.",
        "Para {company}, compruebe el {l0} {v0} y el {l1} {v1} antes del {date}.",
        "Según el contrato {d0}, el {l0} de {name} es {v0}. Importe: {amount}.",
    ),
    "it_IT": (
        "{name} di {city} ci ha comunicato il {l0} {v0}; pratica {d0}.",
        "Per {company} verificare {l0} {v0} e {l1} {v1} entro il {date}.",
        "Secondo il contratto {d0}, il {l0} di {name} è {v0}. Importo: {amount}.",
    ),
    "nl_NL": (
        "{name} uit {city} heeft ons het {l0} {v0} doorgegeven; dossier {d0}.",
        "Controleer voor {company} het {l0} {v0} en {l1} {v1} vóór {date}.",
        "Volgens contract {d0} is het {l0} van {name} {v0}. Bedrag: {amount}.",
    ),
    "pl_PL": (
        "{name} z miejscowości {city} przekazał nam {l0} {v0}; sprawa {d0}.",
        "Dla {company} proszę sprawdzić {l0} {v0} oraz {l1} {v1} do {date}.",
        "Zgodnie z umową {d0} {l0} osoby {name} to {v0}. Kwota: {amount}.",
    ),
    "en_GB": (
        "{name} from {city} sent us their {l0} {v0} today; case {d0} is still open.",
        "For {company}, please check {l0} {v0} and {l1} {v1} by {date}.",
        "Under contract {d0}, the {l0} of {name} is {v0}. Amount: {amount}.",
    ),
}
TICKET = (
    "[{d0}] {subject}\nReporter: {name}\n{l0}: {v0}\n{l1}: {v1}\nPriority: P{prio}  Asset: {d1}",
    "Ticket {d0} ({date}) - {subject}. Caller {name} gave {l0} {v0}; ref {d1}, see KB{prio}0042.",
)
SUBJECTS = ("VPN drops every hour", "Payroll export failed", "Laptop replacement",
            "Mailbox full", "Access to finance share", "Invoice mismatch")  # fmt: skip


@dataclass(frozen=True)
class Span:
    entity: str
    start: int
    end: int


@dataclass
class Sample:
    text: str
    locale: str
    kind: str
    spans: list[Span] = field(default_factory=list)


# ---- valid identifiers ---------------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def _group(value: str, size: int, sep: str = " ") -> str:
    return sep.join(value[i : i + size] for i in range(0, len(value), size))


def make_steuer_id(rng: random.Random) -> str:
    while True:
        pool = rng.sample(string.digits, 9)
        body = [*pool, rng.choice(pool)]
        rng.shuffle(body)
        if body[0] == "0":
            continue
        ten = "".join(body)
        value = ten + str(checksums._mod_11_10(ten))
        if checksums.de_steuer_id(value):
            return value if rng.random() < 0.7 else f"{value[:2]} {_group(value[2:], 3)}"


def make_nir(rng: random.Random) -> str:
    sex = rng.choice("12")
    body = f"{sex}{rng.randint(50, 99):02d}{rng.randint(1, 12):02d}{rng.randint(1, 95):02d}"
    body += _digits(rng, 6)
    key = 97 - int(body) % 97
    value = f"{body}{key:02d}"
    if rng.random() < 0.5:
        return value
    return f"{value[0]} {value[1:3]} {value[3:5]} {value[5:7]} {value[7:10]} {value[10:13]} {value[13:]}"


def make_dni(rng: random.Random) -> str:
    n = _digits(rng, 8)
    return n + checksums._DNI_LETTERS[int(n) % 23]


def make_nie(rng: random.Random) -> str:
    first = rng.choice("XYZ")
    n = _digits(rng, 7)
    return first + n + checksums._DNI_LETTERS[int(str("XYZ".index(first)) + n) % 23]


def make_codice_fiscale(rng: random.Random) -> str:
    letters = "".join(rng.choice(string.ascii_uppercase) for _ in range(6))
    day = rng.randint(1, 28) + rng.choice((0, 40))
    body = (
        f"{letters}{rng.randint(40, 99):02d}{rng.choice('ABCDEHLMPRST')}{day:02d}"
        f"{rng.choice('ABCDEFGHILM')}{_digits(rng, 3)}"
    )
    total = sum(
        checksums._CF_ODD[ch] if i % 2 == 0 else (int(ch) if ch.isdigit() else ord(ch) - 65)
        for i, ch in enumerate(body)
    )
    return body + chr(65 + total % 26)


def make_bsn(rng: random.Random) -> str:
    while True:
        head = _digits(rng, 8)
        total = sum(int(d) * w for d, w in zip(head, range(9, 1, -1), strict=True))
        last = total % 11
        if last < 10 and checksums.nl_bsn(head + str(last)):
            value = head + str(last)
            return value if rng.random() < 0.7 else f"{value[:4]}.{value[4:6]}.{value[6:]}"


def make_pesel(rng: random.Random) -> str:
    while True:
        year, month, day = rng.randint(0, 99), rng.randint(1, 12), rng.randint(1, 28)
        if year < 10 and rng.random() < 0.5:
            month += 20
        head = f"{year:02d}{month:02d}{day:02d}{_digits(rng, 4)}"
        weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
        check = (10 - sum(int(d) * w for d, w in zip(head, weights, strict=True)) % 10) % 10
        if checksums.pl_pesel(head + str(check)):
            return head + str(check)


def make_nino(rng: random.Random) -> str:
    while True:
        value = (
            rng.choice("ABCEGHJKLMNOPRSTWXYZ")
            + rng.choice("ABCEGHJKLMNPRSTWXYZ")
            + _digits(rng, 6)
            + rng.choice("ABCD")
        )
        if checksums.uk_nino(value):
            return (
                value if rng.random() < 0.5 else f"{value[:2]} {_group(value[2:8], 2)} {value[8]}"
            )


def make_vat(rng: random.Random, country: str) -> str:
    while True:
        if country == "DE":
            head = str(rng.randint(1, 9)) + _digits(rng, 7)
            value = "DE" + head + str(checksums._mod_11_10(head))
        elif country == "FR":
            siren = _digits(rng, 9)
            value = f"FR{(12 + 3 * (int(siren) % 97)) % 97:02d}{siren}"
        elif country == "IT":
            head = _digits(rng, 10)
            value = next(f"IT{head}{d}" for d in string.digits if checksums._luhn(head + d))
        elif country == "NL":
            value = "NL" + make_bsn(rng).replace(".", "") + "B" + rng.choice(("01", "02"))
        elif country == "PL":
            head = _digits(rng, 9)
            check = sum(int(d) * w for d, w in zip(head, (6, 5, 7, 2, 3, 4, 5, 6, 7), strict=True))
            value = f"PL{head}{check % 11}"
        elif country == "GB":
            head = _digits(rng, 7)
            total = sum(int(d) * w for d, w in zip(head, range(8, 1, -1), strict=True))
            value = f"GB{head}{(-total) % 97:02d}"
        else:  # ES: a company (CIF) or a person (DNI)
            value = "ES" + (make_dni(rng) if rng.random() < 0.5 else _cif(rng))
        if checksums.eu_vat(value):
            return value


def _cif(rng: random.Random) -> str:
    first = rng.choice("ABCDEFGHJNPQRSUVW")
    digits = _digits(rng, 7)
    total = 0
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d // 10 + d % 10
        total += d
    check = (10 - total % 10) % 10
    return first + digits + (str(check) if first in "ABEH" else "JABCDEFGHI"[check])


_VAT_COUNTRY = {"de_DE": "DE", "fr_FR": "FR", "es_ES": "ES", "it_IT": "IT", "nl_NL": "NL",
                "pl_PL": "PL", "en_GB": "GB"}  # fmt: skip


def _distractor(rng: random.Random) -> str:
    """A number people write near PII that is not PII; never passes a validator."""
    validators: list[Callable[[str], bool]] = [
        checksums.nl_bsn, checksums.pl_pesel, checksums.de_steuer_id, checksums.es_dni,
        checksums.fr_nir, checksums.iban, checksums.eu_vat,
    ]  # fmt: skip
    while True:
        kind = rng.randrange(7)
        if kind == 0:
            value = f"INC-{rng.randint(2019, 2026)}-{rng.randint(1, 99999):05d}"
        elif kind == 1:
            value = _digits(rng, 9)  # BSN-shaped
        elif kind == 2:
            value = str(rng.randint(1, 9)) + _digits(rng, 10)  # PESEL/Steuer-ID-shaped
        elif kind == 3:
            value = f"#{rng.randint(1000, 999999)}"
        elif kind == 4:
            value = _digits(rng, 8) + rng.choice(string.ascii_uppercase)  # DNI-shaped
        elif kind == 5:
            value = f"PO{_digits(rng, 10)}"
        else:
            value = f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}"
        if not any(v(value) for v in validators):
            return value


class _Builder:
    """Fills a template left to right, recording where each identifier lands."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.spans: list[Span] = []
        self.length = 0

    def text(self, value: str) -> None:
        self.parts.append(value)
        self.length += len(value)

    def entity(self, entity: str, value: str) -> None:
        self.spans.append(Span(entity, self.length, self.length + len(value)))
        self.text(value)


def generate(per_locale: int = 300, seed: int = 20261125) -> list[Sample]:
    """`per_locale` texts in each of the seven locales; same seed → same set."""
    import re

    try:
        from faker import Faker
    except ImportError:
        raise Unavailable(
            "the PII evaluation generates its labelled set with faker, which is not installed;"
            " install the evaluation extra: pip install 'sovra[eval]'"
        ) from None

    samples: list[Sample] = []
    for li, locale in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + li)
        rng = random.Random(seed * 31 + li)
        entities = (*NATIONAL[locale], *COMMON)
        for i in range(per_locale):
            kind = "ticket" if i % 2 else "prose"
            template = rng.choice(TICKET if kind == "ticket" else PROSE[locale])
            # national identifiers appear in every other text: they are what the eval is about
            first = rng.choice(NATIONAL[locale]) if i % 4 < 2 else rng.choice(entities)
            second = rng.choice([e for e in entities if e != first])
            values = {
                "name": fake.name(),
                "city": fake.city(),
                "company": fake.company(),
                "date": fake.date(pattern="%d.%m.%Y"),
                "amount": f"{rng.randint(10, 99999):,}.{rng.randint(0, 99):02d} EUR",
                "subject": rng.choice(SUBJECTS),
                "prio": str(rng.randint(1, 4)),
                "d0": _distractor(rng),
                "d1": _distractor(rng),
                "l0": LABELS[locale][first],
                "l1": LABELS[locale][second],
            }
            gold = {
                "v0": (first, make_value(first, fake, rng, locale)),
                "v1": (second, make_value(second, fake, rng, locale)),
            }
            b = _Builder()
            for piece in re.split(r"(\{[a-z0-9]+\})", template):
                key = piece[1:-1] if piece.startswith("{") else None
                if key in gold:
                    b.entity(*gold[key])
                elif key is not None:
                    b.text(values[key])
                else:
                    b.text(piece)
            samples.append(Sample("".join(b.parts), locale, kind, b.spans))
    return samples


def make_value(entity: str, fake: Any, rng: random.Random, locale: str) -> str:
    """One valid value of `entity` (faker for what it gets right, our builders otherwise)."""
    builders: dict[str, Callable[[random.Random], str]] = {
        "DE_STEUER_ID": make_steuer_id,
        "FR_NIR": make_nir,
        "ES_DNI": make_dni,
        "ES_NIE": make_nie,
        "IT_FISCAL_CODE": make_codice_fiscale,
        "NL_BSN": make_bsn,
        "PL_PESEL": make_pesel,
        "UK_NINO": make_nino,
    }
    if entity in builders:
        return builders[entity](rng)
    if entity == "IBAN_CODE":
        return _iban(fake, rng)
    if entity == "EU_VAT":
        return make_vat(rng, _VAT_COUNTRY[locale])
    if entity == "PHONE_NUMBER":
        return str(fake.phone_number())
    if entity == "EMAIL_ADDRESS":
        return str(fake.email())
    if entity == "IP_ADDRESS":
        return str(fake.ipv4() if rng.random() < 0.8 else fake.ipv6())
    raise ValueError(f"no generator for {entity}")


def _iban(fake: Any, rng: random.Random) -> str:
    while True:
        value = str(fake.iban())
        if checksums.iban(value):
            return value if rng.random() < 0.5 else _group(value, 4)


# ---- scoring -------------------------------------------------------------------------------

Predict = Callable[[str], Iterable[tuple[str, int, int]]]
"""A detector under test: text → (entity, start, end) in sovra's entity names."""


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f2(self) -> float:
        p, r = self.precision, self.recall
        return 5 * p * r / (4 * p + r) if p + r else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f2": round(self.f2, 4),
        }


@dataclass
class Report:
    by_entity: dict[str, Counts] = field(default_factory=dict)
    by_locale: dict[str, Counts] = field(default_factory=dict)
    by_entity_locale: dict[str, Counts] = field(default_factory=dict)
    overall: Counts = field(default_factory=Counts)
    checksum: Counts = field(default_factory=Counts)

    def add(self, entity: str, locale: str, kind: str) -> None:
        for counts in (
            self.by_entity.setdefault(entity, Counts()),
            self.by_locale.setdefault(locale, Counts()),
            self.by_entity_locale.setdefault(f"{entity}/{locale}", Counts()),
            self.overall,
            *((self.checksum,) if entity in CHECKSUM_ENTITIES else ()),
        ):
            setattr(counts, kind, getattr(counts, kind) + 1)

    def to_json(self) -> dict[str, object]:
        return {
            "overall": self.overall.to_json(),
            "checksum_identifiers": self.checksum.to_json(),
            "by_entity": {k: v.to_json() for k, v in sorted(self.by_entity.items())},
            "by_locale": {k: v.to_json() for k, v in sorted(self.by_locale.items())},
            "by_entity_locale": {k: v.to_json() for k, v in sorted(self.by_entity_locale.items())},
        }


def evaluate(predict: Predict, samples: Sequence[Sample], entities: Iterable[str]) -> Report:
    evaluated = set(entities)
    report = Report()
    for sample in samples:
        predicted = [p for p in predict(sample.text) if p[0] in evaluated]
        matched: set[int] = set()
        for span in sample.spans:
            hit = next(
                (
                    i
                    for i, (e, s, t) in enumerate(predicted)
                    if i not in matched and e == span.entity and s < span.end and t > span.start
                ),
                None,
            )
            if hit is None:
                report.add(span.entity, sample.locale, "fn")
            else:
                matched.add(hit)
                report.add(span.entity, sample.locale, "tp")
        for i, (entity, _, _) in enumerate(predicted):
            if i not in matched:
                report.add(entity, sample.locale, "fp")
    return report


# ---- the two detectors compared ------------------------------------------------------------

PRESIDIO_NAMES: dict[str, str] = {
    "IBAN_CODE": "IBAN_CODE",
    "EMAIL_ADDRESS": "EMAIL_ADDRESS",
    "IP_ADDRESS": "IP_ADDRESS",
    "PHONE_NUMBER": "PHONE_NUMBER",
    "UK_NINO": "UK_NINO",
    "IT_FISCAL_CODE": "IT_FISCAL_CODE",
    "IT_VAT_CODE": "EU_VAT",
    "DE_VAT_ID": "EU_VAT",
    "DE_TAX_ID": "DE_STEUER_ID",
    "ES_NIF": "ES_DNI",
    "ES_NIE": "ES_NIE",
    "PL_PESEL": "PL_PESEL",
    "NL_BSN": "NL_BSN",
    "FR_NIR": "FR_NIR",
}
"""Presidio's entity names → sovra's, for the entities both know."""


def sovra_predict() -> Predict:
    from sovra.policy.pii import PiiDetector

    detector = PiiDetector()

    def predict(text: str) -> list[tuple[str, int, int]]:
        return [(f.entity, f.start, f.end) for f in detector.find(text)]

    return predict


def presidio_default_predict() -> Predict:
    """Presidio's default configuration (its predefined recognizers for English, score
    threshold 0), except the spaCy model: `en_core_web_lg` is not installed and must not be
    downloaded, so a blank English pipeline tokenises. Only PERSON/LOCATION/NRP/DATE from
    NER are lost by that, and none of those is evaluated here."""
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    # Presidio validates e-mail and URL domains with tldextract, whose default fetches the
    # public-suffix list over the network; the bundled snapshot gives the same answers offline.
    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)  # type: ignore[assignment]

    class BlankSpacy(SpacyNlpEngine):
        def load(self) -> None:
            self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]

    engine = BlankSpacy(models=[{"lang_code": "en", "model_name": "blank"}])
    engine.load()
    registry = RecognizerRegistry()
    registry.load_predefined_recognizers(languages=["en"], nlp_engine=engine)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])

    def predict(text: str) -> list[tuple[str, int, int]]:
        return [
            (PRESIDIO_NAMES[r.entity_type], r.start, r.end)
            for r in analyzer.analyze(text=text, language="en")
            if r.entity_type in PRESIDIO_NAMES
        ]

    return predict


def compare(per_locale: int = 300, seed: int = 20261125) -> dict[str, object]:
    """sovra vs Presidio default on one generated set: the `sovra eval pii` result."""
    from sovra.policy.pii import ENTITIES

    samples = generate(per_locale, seed)
    result: dict[str, object] = {
        "samples": len(samples),
        "per_locale": per_locale,
        "seed": seed,
        "gold_entities": sum(len(s.spans) for s in samples),
        "locales": list(LOCALES),
    }
    for name, make in (("sovra", sovra_predict), ("presidio_default", presidio_default_predict)):
        result[name] = evaluate(make(), samples, ENTITIES).to_json()
    return result
