"""MLflow tracking of evaluation runs: air-gapped writes, listing, and the `eval compare` gate."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sovra.cli import app
from sovra.config import parse_config
from sovra.evals.tracking import compare_runs, list_runs, record_run, tracking_uri

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()

# Run in a fresh interpreter with every outbound connection and DNS lookup refused and
# recorded. PYTEST_CURRENT_TEST and CI variables are removed from its environment: MLflow
# turns its telemetry off by itself when it sees them, which would hide what sovra must do.
DRIVER = r"""
import json, socket, sys, time
attempts = []
_connect = socket.socket.connect
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
        attempts.append(repr(address))
        raise OSError("networking disabled by the test")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    attempts.append("dns:" + str(host))
    raise OSError("name resolution disabled by the test")
socket.socket.connect = connect
socket.getaddrinfo = getaddrinfo
home = sys.argv[1]
if sys.argv[2] == "sovra":
    from sovra.evals.tracking import list_runs, load_artifact, record_run
    uri = "sqlite:///" + home + "/mlflow.db"
    run = record_run(uri, "quick", params={"model": "m"}, metrics={"retrieval.x.hybrid.ndcg10": 0.5},
                     artifacts={"per_query": [{"id": "q1", "rank": 1}]})
    got = [r.run_id for r in list_runs(uri)]
    art = load_artifact(uri, run.run_id, "per_query")
else:  # the control: MLflow used directly, without sovra's settings
    from mlflow.tracking import MlflowClient
    client = MlflowClient(tracking_uri="sqlite:///" + home + "/raw.db")
    exp = client.create_experiment("raw")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "m", 1.0)
    got, art = [run.info.run_id], None
time.sleep(2)  # background telemetry threads would have tried by now
print(json.dumps({"attempts": attempts, "runs": got, "artefact": art}))
"""

CI_VARS = ("PYTEST_CURRENT_TEST", "CI", "GITHUB_ACTIONS", "GITLAB_CI", "BUILDKITE", "TF_BUILD")


def _drive(tmp_path: Path, mode: str, prefix: list[str] | None = None) -> dict[str, object]:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in CI_VARS and not k.startswith("MLFLOW")}
    env.pop("DO_NOT_TRACK", None)
    env["PYTHONPATH"] = f"{ROOT / 'src'}{os.pathsep}{ROOT}"
    home = tmp_path / mode
    home.mkdir()
    proc = subprocess.run(
        [*(prefix or []), sys.executable, str(script), str(home), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_runs_are_written_with_networking_disabled(tmp_path: Path) -> None:
    result = _drive(tmp_path, "sovra")
    assert result["attempts"] == []
    assert len(result["runs"]) == 1  # type: ignore[arg-type]
    assert result["artefact"] == [{"id": "q1", "rank": 1}]
    db = tmp_path / "sovra" / "mlflow.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "sovra" / "mlflow-artifacts").stat().st_mode) == 0o700


def test_the_guard_sees_mlflow_phone_home_without_sovra_settings(tmp_path: Path) -> None:
    """The control: the same driver catches MLflow's telemetry lookup when nothing turns it off,
    so an empty list above means sovra's settings did it, not a blind guard."""
    result = _drive(tmp_path, "raw")
    assert any("mlflow" in str(a) for a in result["attempts"]), result  # type: ignore[union-attr]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs util-linux unshare")
def test_runs_are_written_in_a_namespace_without_network(tmp_path: Path) -> None:
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unprivileged user namespaces are disabled here")
    result = _drive(tmp_path, "sovra", ["unshare", "-rn"])
    assert result["attempts"] == [] and len(result["runs"]) == 1  # type: ignore[arg-type]


def _site(tmp_path: Path, threshold: float = 0.01) -> Path:
    cfg = tmp_path / "sovra.toml"
    cfg.write_text(
        f'[workspace]\nhome = "data"\n\n[govern]\nregression_threshold = {threshold}\n',
        encoding="utf-8",
    )
    return cfg


def _uri(tmp_path: Path) -> str:
    return tracking_uri(parse_config({"workspace": {"home": "data"}}, tmp_path))


def _compare(cfg: Path, a: str, b: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--config", str(cfg), "eval", "compare", a, b])
    return result.exit_code, result.output


BASE = {
    "retrieval.cranfield.hybrid.ndcg10": 0.40,
    "answers.en.extractive.f1": 0.60,
    "retrieval.cranfield.hybrid.ms_per_query": 12.0,
    "triage.category.sovra.ece": 0.10,
}


def test_compare_passes_on_equal_runs_and_fails_on_an_injected_regression(
    tmp_path: Path,
) -> None:
    cfg = _site(tmp_path)
    uri = _uri(tmp_path)
    assert list_runs(uri) == []
    a = record_run(uri, "quick", params={"p": "1"}, metrics=BASE)
    same = record_run(uri, "quick", params={"p": "1"}, metrics=BASE)
    code, output = _compare(cfg, a.run_id, same.run_id)
    assert code == 0, output
    assert "no regression" in output

    worse = record_run(
        uri,
        "quick",
        params={"p": "2"},
        metrics={**BASE, "retrieval.cranfield.hybrid.ndcg10": 0.37},
    )
    code, output = _compare(cfg, a.run_id, worse.run_id)
    assert code == 1, output
    assert "REGRESSION" in output and "ndcg10" in output

    # Within the threshold, slower (not gated), and a better calibration error: passes.
    noise = record_run(
        uri,
        "quick",
        params={"p": "3"},
        metrics={
            **BASE,
            "retrieval.cranfield.hybrid.ndcg10": 0.395,
            "retrieval.cranfield.hybrid.ms_per_query": 40.0,
            "triage.category.sovra.ece": 0.05,
        },
    )
    code, output = _compare(cfg, a.run_id, noise.run_id[:8])  # a unique prefix works too
    assert code == 0, output

    # Lower is better for the calibration error: a rise beyond the threshold fails.
    ece = record_run(uri, "quick", params={}, metrics={**BASE, "triage.category.sovra.ece": 0.2})
    assert [d.metric for d in compare_runs(a, ece, 0.01) if d.regression] == [
        "triage.category.sovra.ece"
    ]
    runs = list_runs(uri, "quick")
    assert [r.run_id for r in runs][:2] == [ece.run_id, noise.run_id]  # newest first
    assert runs[-1].params == {"p": "1"}


def test_compare_of_an_unknown_run_names_it(tmp_path: Path) -> None:
    cfg = _site(tmp_path)
    record_run(_uri(tmp_path), "quick", params={}, metrics=BASE)
    code, output = _compare(cfg, "nosuchrun", "nosuchrun")
    assert code == 2 and "nosuchrun" in output
