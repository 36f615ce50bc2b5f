"""Evaluation runs tracked in MLflow: a local SQLite store under the data dir, air-gap safe.

Every `sovra eval run` becomes one MLflow run in the experiment `sovra-evals`, tagged with its
suite (`sovra.suite`): parameters (models with sha256, endpoints, index settings, policy set
hash, sovra version), metrics (`<part>.<collection>.<method>.<metric>`), and artefacts (the
per-query results as JSON). The default store is `sqlite:///<data dir>/mlflow.db` with artefacts
under `<data dir>/mlflow-artifacts`, both owner-only; `[govern] mlflow_uri` points at an existing
tracking server instead. `mlflow ui --backend-store-uri sqlite:///…/mlflow.db` (the full `mlflow`
package, installed on its own, e.g. with pipx) shows the runs.

MLflow's usage telemetry is switched off before the library is imported
(`MLFLOW_DISABLE_TELEMETRY`, `DO_NOT_TRACK`): with a local store nothing here opens a network
connection (tests/evals/test_tracking.py runs it with networking disabled).
"""

from __future__ import annotations

import logging
import math
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sovra.config import Config
from sovra.errors import Invalid, NotFound, Unavailable

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

EXPERIMENT = "sovra-evals"
SUITE_TAG = "sovra.suite"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlflow-artifacts"

# Environment that keeps MLflow from phoning home (its telemetry client, the "do not track"
# convention); set before the first `import mlflow`, and again at each use in case a caller
# changed it.
QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}

# Metric names (last dotted part) that are measurements, not quality: shown by `compare`,
# never a regression. And the quality metrics where lower is better.
UNGATED = frozenset(
    {
        "ms_per_query",
        "ms_per_question",
        "fit_seconds",
        "seconds",
        "queries",
        "questions",
        "docs",
        "answerable",
        "unanswerable",
        "answered",
        "samples",
        "gold_entities",
        "macro_f1_std",
        "rows",
        "test_size",
        "passages",
        "tp",
        "fp",
        "fn",
        "support",
    }
)
LOWER_IS_BETTER = frozenset({"ece"})


class TrackingError(Unavailable):
    """The MLflow store cannot be opened or written (path, permissions, server down)."""


class UnknownRun(NotFound):
    """No tracked run has this id."""


@dataclass(frozen=True)
class TrackedRun:
    """One evaluation run as the tracking store holds it."""

    run_id: str
    suite: str
    started_at: datetime
    metrics: dict[str, float]
    params: dict[str, str]


def tracking_uri(config: Config) -> str:
    """`[govern] mlflow_uri`, or the SQLite store under the data directory."""
    if config.govern.mlflow_uri:
        return config.govern.mlflow_uri
    return f"sqlite:///{config.home / STORE_FILE}"


def _local_store(uri: str) -> Path | None:
    """The SQLite file of a local store URI, or None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///"))
    return None


def _quiet() -> None:
    os.environ.update(QUIET_ENV)
    # The store's schema migrations log at INFO on first use; a CLI shows its own progress.
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(uri: str, *, create: bool) -> MlflowClient | None:
    """A client on `uri`; None when a local store does not exist and `create` is False."""
    _quiet()
    db = _local_store(uri)
    if db is not None:
        if not db.exists() and not create:
            return None
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            # Owner-only from the first byte: run names, params and metrics are internal data.
            db.touch(mode=0o600)
        os.chmod(db, stat.S_IRUSR | stat.S_IWUSR)
    try:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=uri)
    except ImportError as exc:
        raise TrackingError(
            f"MLflow tracking needs mlflow-skinny (pip install 'sovra[eval]'): {exc}"
        ) from None


def _experiment_id(client: MlflowClient, uri: str, *, create: bool) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        exp = client.get_experiment_by_name(EXPERIMENT)
        if exp is not None:
            return str(exp.experiment_id)
        if not create:
            return None
        location = None
        db = _local_store(uri)
        if db is not None:
            artifacts = db.parent / ARTIFACTS_DIR
            artifacts.mkdir(mode=0o700, parents=True, exist_ok=True)
            location = artifacts.resolve().as_uri()
        return str(client.create_experiment(EXPERIMENT, artifact_location=location))
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri}: {exc.message}") from None


def _run(raw: Any) -> TrackedRun:
    info, data = raw.info, raw.data
    return TrackedRun(
        run_id=str(info.run_id),
        suite=str(data.tags.get(SUITE_TAG, "")),
        started_at=datetime.fromtimestamp(info.start_time / 1000, UTC),
        metrics={k: float(v) for k, v in data.metrics.items()},
        params={k: str(v) for k, v in data.params.items()},
    )


def list_runs(uri: str, suite: str | None = None, limit: int = 50) -> list[TrackedRun]:
    """Tracked evaluation runs, newest first (an empty list when nothing was ever tracked)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri, create=False)
    if client is None:
        return []
    exp = _experiment_id(client, uri, create=False)
    if exp is None:
        return []
    flt = f"tags.`{SUITE_TAG}` = '{_quote(suite)}'" if suite else ""
    try:
        runs = client.search_runs(
            [exp], filter_string=flt, max_results=limit, order_by=["attributes.start_time DESC"]
        )
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri}: {exc.message}") from None
    return [_run(r) for r in runs]


def get_run(uri: str, run_id: str) -> TrackedRun:
    """One tracked run by id (a unique prefix of at least 6 characters also works)."""
    from mlflow.exceptions import MlflowException

    client = _client(uri, create=False)
    if client is None:
        raise UnknownRun(f"no evaluation runs tracked in {uri}; run `sovra eval run` first")
    try:
        return _run(client.get_run(run_id))
    except MlflowException:
        pass
    if len(run_id) >= 6:
        matches = [r for r in list_runs(uri, limit=1000) if r.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
    raise UnknownRun(f"no tracked run {run_id!r} in {uri}; `sovra eval runs` lists them")


def _quote(value: str) -> str:
    if "'" in value or "\\" in value:
        raise Invalid(f"suite name {value!r} may not contain quotes or backslashes")
    return value


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def record_run(
    uri: str,
    suite: str,
    *,
    params: Mapping[str, str],
    metrics: Mapping[str, float],
    artifacts: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
) -> TrackedRun:
    """Write one finished run: params, metrics and JSON artefacts (name → JSON-able value,
    stored as `<name>.json`). Non-finite metrics are left out (MLflow cannot order them)."""
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    client = _client(uri, create=True)
    assert client is not None
    exp = _experiment_id(client, uri, create=True)
    assert exp is not None
    started = datetime.now(UTC)
    name = f"{suite}-{started:%Y%m%dT%H%M%S}"
    all_tags = {SUITE_TAG: suite, **(tags or {})}
    try:
        run = client.create_run(exp, run_name=name, tags=all_tags)
        run_id = str(run.info.run_id)
        stamp = int(started.timestamp() * 1000)
        plist = [Param(k, str(v)[:6000]) for k, v in sorted(params.items())]
        mlist = [
            Metric(k, float(v), stamp, 0)
            for k, v in sorted(metrics.items())
            if math.isfinite(float(v))
        ]
        for part in _chunks(plist, 100):
            client.log_batch(run_id, params=part)
        for part in _chunks(mlist, 1000):
            client.log_batch(run_id, metrics=part)
        for artefact, value in (artifacts or {}).items():
            client.log_dict(run_id, value, f"{artefact}.json")
        client.set_terminated(run_id, "FINISHED")
        client.set_tag(run_id, "mlflow.note.content", f"sovra eval run ({suite})")
    except MlflowException as exc:
        raise TrackingError(f"MLflow store {uri}: {exc.message}") from None
    return get_run(uri, run_id)


@dataclass(frozen=True)
class MetricDiff:
    """One metric of two runs: `delta` = b − a; `regression` when b is worse beyond the gate."""

    metric: str
    a: float | None
    b: float | None
    delta: float | None
    direction: Literal["higher", "lower", "ungated"]
    regression: bool


def metric_direction(name: str) -> Literal["higher", "lower", "ungated"]:
    last = name.rsplit(".", 1)[-1]
    if last in UNGATED:
        return "ungated"
    return "lower" if last in LOWER_IS_BETTER else "higher"


def compare_runs(a: TrackedRun, b: TrackedRun, threshold: float) -> list[MetricDiff]:
    """Every metric of either run; a quality metric present in both that got worse by more
    than `threshold` (absolute) is a regression. A metric missing from `b` is not one (a
    `--quick` run measures fewer things) but shows as missing."""
    diffs: list[MetricDiff] = []
    for name in sorted(set(a.metrics) | set(b.metrics)):
        va, vb = a.metrics.get(name), b.metrics.get(name)
        direction = metric_direction(name)
        delta = vb - va if va is not None and vb is not None else None
        worse = False
        if delta is not None and direction != "ungated":
            drop = -delta if direction == "higher" else delta
            worse = drop > threshold + 1e-12
        diffs.append(MetricDiff(name, va, vb, delta, direction, worse))
    return diffs


def load_artifact(uri: str, run_id: str, name: str) -> Any:
    """A JSON artefact of a run (as `record_run` stored it), or NotFound."""
    import json
    import tempfile

    from mlflow.exceptions import MlflowException

    client = _client(uri, create=False)
    if client is None:
        raise UnknownRun(f"no evaluation runs tracked in {uri}")
    with tempfile.TemporaryDirectory(prefix="sovra-mlflow-") as tmp:
        try:
            path = client.download_artifacts(run_id, f"{name}.json", tmp)
        except (MlflowException, OSError):
            raise NotFound(f"run {run_id} has no artefact {name}.json") from None
        return json.loads(Path(path).read_text(encoding="utf-8"))
