"""Records connector: a CSV, JSON-array or JSONL file where one record is one document.

External id: the `id_field` value when configured. Without one, the id is a hash of the
record's content (`r-<16 hex>`), not its row number: inserting or deleting a row above must
not re-index or, worse, re-label every row below it. The cost is that editing a record
without an id field shows up as delete + add, and identical records share a hash, so the
second and later copies get `~2`, `~3`, ... suffixes in file order.

Rules (`AccessRule.match`) are matched against the external id. A non-empty `access_field`
value (entries separated by comma, semicolon or space) replaces the rule/source access.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from sovra.config import RecordsSource
from sovra.domain import ClassificationScale, Document, DocumentRef, content_hash
from sovra.sources.base import (
    DocumentNotFound,
    EmptyDocument,
    MalformedDocument,
    SourceUnavailable,
)
from sovra.sources.labels import Labels, label_metadata, resolve_labels
from sovra.sources.parse import PARSER_VERSION

_TITLE_WORDS = 12
_CSV_ERRORS_IN_A_ROW = 1000


@dataclass(frozen=True)
class _Record:
    external_id: str
    fields: Mapping[str, Any] | None  # None: the record could not be parsed
    error: str = ""
    line: int = 0


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, date | time):  # database columns (sql connector)
        return value.isoformat()
    if isinstance(value, Decimal | bytes | memoryview):
        return value.hex() if isinstance(value, bytes | memoryview) else str(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def record_text(
    fields: Mapping[str, Any], text_fields: Sequence[str], skip: Collection[str | None]
) -> str:
    """The text of one record: the named fields as paragraphs, or else every field not in
    `skip` as `name: value` lines (shared by the records and sql connectors)."""
    if text_fields:
        parts = [_scalar(fields.get(f)).strip() for f in text_fields]
        return "\n\n".join(p for p in parts if p)
    lines = [f"{k}: {_scalar(v).strip()}" for k, v in fields.items() if k not in skip]
    return "\n".join(ln for ln in lines if not ln.endswith(": "))


def record_title(fields: Mapping[str, Any], title_field: str | None, text: str) -> str:
    """The title field on one line, or the first words of the text when it is empty."""
    title = ""
    if title_field:
        title = re.sub(r"\s+", " ", _scalar(fields.get(title_field))).strip()
    if not title:
        words = text.split()
        title = " ".join(words[:_TITLE_WORDS]) + (" …" if len(words) > _TITLE_WORDS else "")
    return title


class RecordsConnector:
    """Parses the whole file on `list()` and serves `fetch()` from that parse."""

    def __init__(
        self, source: RecordsSource, path: Path, scale: ClassificationScale | None = None
    ) -> None:
        self.source = source
        self.path = path
        self.scale = scale or ClassificationScale()
        self._records: dict[str, _Record] | None = None
        self._versions: dict[str, str] = {}
        self._mtime: datetime | None = None

    @property
    def name(self) -> str:
        return self.source.name

    def _format(self) -> str:
        if self.source.format != "auto":
            return self.source.format
        suffix = self.path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            return "csv"
        if suffix in (".jsonl", ".ndjson"):
            return "jsonl"
        if suffix == ".json":
            return "json"
        raise SourceUnavailable(
            f"source {self.name!r}: cannot tell the format of {self.path.name}; "
            'set format = "csv", "json" or "jsonl"'
        )

    def _load_text(self) -> str:
        if not self.path.is_file():
            raise SourceUnavailable(
                f"source {self.name!r}: records file {self.path} not found; fix `path` in sovra.toml"
            )
        try:
            data = self.path.read_bytes()
            self._mtime = datetime.fromtimestamp(self.path.stat().st_mtime, tz=UTC)
        except OSError as exc:
            raise SourceUnavailable(
                f"source {self.name!r}: cannot read {self.path}: {exc}"
            ) from None
        try:
            return data.decode(self.source.encoding).lstrip("\ufeff")
        except (UnicodeDecodeError, LookupError) as exc:
            raise SourceUnavailable(
                f"source {self.name!r}: {self.path} is not {self.source.encoding} text ({exc}); "
                "set `encoding` in sovra.toml"
            ) from None

    def _raw_records(self) -> Iterator[tuple[int, Mapping[str, Any] | None, str]]:
        """(line or position, fields or None, error) for every record in file order."""
        fmt = self._format()
        text = self._load_text()
        if fmt == "csv":
            reader = csv.DictReader(io.StringIO(text, newline=""))
            if not reader.fieldnames:
                return
            errors = 0
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    break
                except csv.Error as exc:
                    # One hostile row (a field above csv's limit) fails alone; each error
                    # consumes input, but a file of nothing else is not a records file.
                    errors += 1
                    if errors > _CSV_ERRORS_IN_A_ROW:
                        raise SourceUnavailable(
                            f"source {self.name!r}: {self.path} line {reader.line_num}: {exc}"
                        ) from None
                    # line_num does not count the rows that failed since the last good one
                    yield reader.line_num + errors, None, f"CSV error: {exc}"
                    continue
                errors = 0
                if None in row:
                    yield reader.line_num, None, "more values than header columns"
                else:
                    yield reader.line_num, row, ""
        elif fmt == "json":
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SourceUnavailable(f"source {self.name!r}: {self.path}: {exc}") from None
            except RecursionError:
                raise SourceUnavailable(
                    f"source {self.name!r}: {self.path}: JSON nested too deep to read"
                ) from None
            if not isinstance(data, list):
                raise SourceUnavailable(
                    f"source {self.name!r}: {self.path} must hold a JSON array of objects"
                )
            for i, item in enumerate(data, start=1):
                if isinstance(item, dict):
                    yield i, item, ""
                else:
                    yield i, None, "record is not a JSON object"
        else:
            for i, line in enumerate(text.split("\n"), start=1):
                if not line.strip():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    yield i, None, f"invalid JSON: {exc.msg}"
                    continue
                except RecursionError:
                    yield i, None, "invalid JSON: nested too deep to read"
                    continue
                if isinstance(item, dict):
                    yield i, item, ""
                else:
                    yield i, None, "record is not a JSON object"

    def _load(self) -> dict[str, _Record]:
        records: dict[str, _Record] = {}
        seen: dict[str, int] = {}
        id_field = self.source.id_field
        for line, fields, error in self._raw_records():
            if fields is None:
                rid = f"line-{line}"  # an unparseable record has no content to hash
            elif id_field is not None:
                value = _scalar(fields.get(id_field)).strip()
                if not value:
                    rid, fields, error = f"line-{line}", None, f"no value in id field {id_field!r}"
                else:
                    rid = value
            else:
                canon = json.dumps(fields, sort_keys=True, ensure_ascii=False, default=str)
                rid = "r-" + content_hash(canon)[7:23]
            count = seen.get(rid, 0) + 1
            seen[rid] = count
            if count > 1:
                if id_field is not None and fields is not None:
                    # A repeated explicit id is a data error; the first occurrence wins.
                    rid, fields, error = f"line-{line}", None, f"duplicate id {rid!r}"
                else:
                    rid = f"{rid}~{count}"
            records[rid] = _Record(rid, fields, error, line)
        return records

    def _labels(self, rec: _Record) -> Labels:
        overrides: dict[str, object] = {}
        if rec.fields is not None and self.source.access_field:
            raw = _scalar(rec.fields.get(self.source.access_field)).strip()
            if raw:
                overrides["access"] = raw
        return resolve_labels(
            path=rec.external_id,
            access=self.source.access,
            classification=self.source.classification,
            residency=self.source.residency,
            rules=self.source.rules,
            scale=self.scale,
            overrides=overrides,
            # The administrator named this column: its values are the intended access.
            trusted=True,
        )

    def _version(self, rec: _Record) -> str:
        cached = self._versions.get(rec.external_id)
        if cached is not None:
            return cached
        canon = json.dumps(rec.fields, sort_keys=True, ensure_ascii=False, default=str)
        version = content_hash(
            f"{PARSER_VERSION}\x1f{canon}\x1f{rec.error}\x1f{self._labels(rec).fingerprint()}"
        )
        self._versions[rec.external_id] = version
        return version

    def list(self) -> Iterator[DocumentRef]:
        self._records = self._load()
        self._versions = {}  # versions are memoised per parse of the file, not across edits
        for rec in self._records.values():
            yield DocumentRef(rec.external_id, self._version(rec))

    def _get(self, external_id: str) -> _Record:
        if self._records is None:
            self._records = self._load()
            self._versions = {}
        rec = self._records.get(external_id)
        if rec is None:
            raise DocumentNotFound(external_id, "record no longer in the file")
        return rec

    def _text(self, fields: Mapping[str, Any]) -> str:
        src = self.source
        skip = {src.id_field, src.title_field, src.access_field, *src.metadata_fields}
        return record_text(fields, src.text_fields, skip)

    def fetch(self, external_id: str) -> Document:
        rec = self._get(external_id)
        if rec.fields is None:
            raise MalformedDocument(external_id, f"line {rec.line}: {rec.error}")
        fields = rec.fields
        text = self._text(fields)
        if not text.strip():
            raise EmptyDocument(external_id, f"line {rec.line}: no text in the text fields")
        title = record_title(fields, self.source.title_field, text)
        labels = self._labels(rec)
        metadata = {f: _scalar(fields.get(f)) for f in self.source.metadata_fields if f in fields}
        metadata["line"] = str(rec.line)
        metadata.update(label_metadata(labels))
        return Document(
            source=self.name,
            external_id=external_id,
            version=self._version(rec),
            title=title,
            uri=f"{self.path}#{external_id}",
            text=text,
            access=labels.access,
            classification=labels.classification,
            residency=labels.residency,
            mime_type="text/plain",
            metadata=metadata,
            modified_at=self._mtime,
        )

    def permissions(self, external_id: str) -> tuple[str, ...]:
        return self._labels(self._get(external_id)).access
