"""Check-digit validation of European identifiers (pure functions, no I/O).

Each validator takes the identifier as written (spaces, dots and dashes allowed where people
write them) and returns True only when its structure *and* its check digits are right, so a
random digit string (an order number, a ticket id) is rejected. Sources: ISO 13616 (IBAN),
ISO 7064 MOD 11,10 (German Steuer-ID and VAT), INSEE (NIR), Spanish Real Decreto 1553/2005
(DNI/NIE letter), Italian DM 23/12/1976 (codice fiscale), Dutch BSN "11-proef", Polish PESEL,
HMRC (NINO format, VAT mod 97), and the national VAT rules summarised in the EU VIES FAQ.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date

IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AT": 20, "BE": 16, "BG": 22, "CH": 21, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "EE": 20, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GI": 23, "GL": 18, "GR": 27,
    "HR": 21, "HU": 28, "IE": 22, "IS": 26, "IT": 27, "LI": 21, "LT": 20, "LU": 20, "LV": 21,
    "MC": 27, "MT": 31, "NL": 18, "NO": 15, "PL": 28, "PT": 25, "RO": 24, "SE": 24, "SI": 19,
    "SK": 24, "SM": 27, "VA": 22,
}  # fmt: skip


def compact(value: str) -> str:
    return re.sub(r"[\s.\-/]", "", value).upper()


def iban(value: str) -> bool:
    v = compact(value)
    if len(v) < 5 or IBAN_LENGTHS.get(v[:2]) != len(v) or not v[2:4].isdigit():
        return False
    if not v[4:].isalnum():
        return False
    digits = "".join(str(int(c, 36)) for c in v[4:] + v[:4])
    return int(digits) % 97 == 1


def _mod_11_10(digits: str) -> int:
    """ISO 7064 MOD 11,10 check digit."""
    product = 10
    for ch in digits:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return 0 if check == 10 else check


def de_steuer_id(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"[1-9]\d{10}", v):
        return False
    counts = [v[:10].count(d) for d in set(v[:10])]
    # exactly one digit repeats (twice, or three times since 2016); the others appear once
    if sorted(c for c in counts if c > 1) not in ([2], [3]):
        return False
    return _mod_11_10(v[:10]) == int(v[10])


def fr_nir(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"[1-478]\d{2}(0[1-9]|1[0-2]|[2-9]\d)(\d{2}|2A|2B)\d{6}\d{2}", v):
        return False
    body = v[:13].replace("2A", "19").replace("2B", "18")
    return 97 - int(body) % 97 == int(v[13:])


_DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


def es_dni(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"\d{8}[A-Z]", v):
        return False
    return _DNI_LETTERS[int(v[:8]) % 23] == v[8]


def es_nie(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"[XYZ]\d{7}[A-Z]", v):
        return False
    return _DNI_LETTERS[int(str("XYZ".index(v[0])) + v[1:8]) % 23] == v[8]


_CF_ODD = dict(
    zip(
        "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20,
         11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23],
        strict=True,
    )
)  # fmt: skip
_CF_OMOCODE = "LMNPQRSTUV"  # digits replaced by letters when two people share a code


def it_codice_fiscale(value: str) -> bool:
    v = compact(value)
    digit = f"[0-9{_CF_OMOCODE}]"
    pattern = rf"[A-Z]{{6}}{digit}{{2}}[ABCDEHLMPRST]{digit}{{2}}[A-Z]{digit}{{3}}[A-Z]"
    if not re.fullmatch(pattern, v):
        return False
    total = 0
    for i, ch in enumerate(v[:15]):
        if i % 2 == 0:  # 1st, 3rd, … character (odd positions counted from 1)
            total += _CF_ODD[ch]
        else:
            total += int(ch) if ch.isdigit() else ord(ch) - ord("A")
    return chr(ord("A") + total % 26) == v[15]


def nl_bsn(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"\d{9}", v) or v == "000000000":
        return False
    total = sum(int(d) * w for d, w in zip(v[:8], range(9, 1, -1), strict=True)) - int(v[8])
    return total % 11 == 0


def pl_pesel(value: str) -> bool:
    v = compact(value)
    if not re.fullmatch(r"\d{11}", v):
        return False
    weights = (1, 3, 7, 9, 1, 3, 7, 9, 1, 3)
    check = (10 - sum(int(d) * w for d, w in zip(v, weights, strict=False)) % 10) % 10
    if check != int(v[10]):
        return False
    year, month, day = int(v[:2]), int(v[2:4]), int(v[4:6])
    century = {0: 1900, 20: 2000, 40: 2100, 60: 2200, 80: 1800}.get(month - (month - 1) % 20 - 1)
    if century is None:
        return False
    try:
        date(century + year, (month - 1) % 20 + 1, day)
    except ValueError:
        return False
    return True


_NINO = re.compile(r"(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")


def uk_nino(value: str) -> bool:
    """Format and prefix rules only: a NINO has no check digit."""
    return bool(_NINO.fullmatch(compact(value)))


# ---- VAT numbers ---------------------------------------------------------------------------


def _vat_de(n: str) -> bool:
    return bool(re.fullmatch(r"\d{9}", n)) and n[0] != "0" and _mod_11_10(n[:8]) == int(n[8])


def _vat_fr(n: str) -> bool:
    if not re.fullmatch(r"\d{2}\d{9}", n):
        return False  # the alphanumeric keys of new companies carry no checkable key
    return int(n[:2]) == (12 + 3 * (int(n[2:]) % 97)) % 97


def _luhn(n: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(n)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _vat_it(n: str) -> bool:
    return bool(re.fullmatch(r"\d{11}", n)) and _luhn(n)


def _vat_nl(n: str) -> bool:
    if not re.fullmatch(r"\d{9}B\d{2}", n):
        return False
    # sole traders since 2020 get numbers that pass mod 97 on "NL…" instead of the 11-test
    as_number = "".join(str(int(c, 36)) for c in "NL" + n)
    return nl_bsn(n[:9]) or int(as_number) % 97 == 1


def _vat_pl(n: str) -> bool:
    if not re.fullmatch(r"\d{10}", n):
        return False
    weights = (6, 5, 7, 2, 3, 4, 5, 6, 7)
    return sum(int(d) * w for d, w in zip(n, weights, strict=False)) % 11 == int(n[9])


def _vat_gb(n: str) -> bool:
    if not re.fullmatch(r"\d{9}", n):
        return False
    total = sum(int(d) * w for d, w in zip(n[:7], range(8, 1, -1), strict=True)) + int(n[7:])
    return total % 97 == 0 or (total + 55) % 97 == 0


def _vat_es(n: str) -> bool:
    if not re.fullmatch(r"[A-Z0-9]\d{7}[A-Z0-9]", n):
        return False
    if n[0].isdigit():
        return es_dni(n)
    if n[0] in "XYZ":
        return es_nie(n)
    if n[0] not in "ABCDEFGHJNPQRSUVW":
        return False
    total = 0
    for i, ch in enumerate(n[1:8]):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            d = d // 10 + d % 10
        total += d
    check = (10 - total % 10) % 10
    return n[8] in (str(check), "JABCDEFGHI"[check])


def _vat_be(n: str) -> bool:
    if len(n) == 9:
        n = "0" + n
    return bool(re.fullmatch(r"[01]\d{9}", n)) and 97 - int(n[:8]) % 97 == int(n[8:])


def _vat_at(n: str) -> bool:
    if not re.fullmatch(r"U\d{8}", n):
        return False
    digits = n[1:]
    total = 0
    for i, ch in enumerate(digits[:7]):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 // 10 + d * 2 % 10
        total += d
    return (10 - (total + 4) % 10) % 10 == int(digits[7])


VAT_RULES: dict[str, Callable[[str], bool]] = {
    "AT": _vat_at,
    "BE": _vat_be,
    "DE": _vat_de,
    "ES": _vat_es,
    "FR": _vat_fr,
    "GB": _vat_gb,
    "IT": _vat_it,
    "NL": _vat_nl,
    "PL": _vat_pl,
}


def eu_vat(value: str) -> bool:
    """A VAT number with its country prefix; countries without a rule here are rejected."""
    v = compact(value)
    rule = VAT_RULES.get(v[:2])
    return rule is not None and rule(v[2:])
