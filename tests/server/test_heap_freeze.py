"""The serving process freezes its warmed start-up heap out of the collector's full passes."""

from __future__ import annotations

import gc

from fastapi.testclient import TestClient

from sovra.server import create_app
from sovra.workspace import Workspace
from tests.server.conftest import settings_for
from tests.support.server import Issuer


def test_a_serving_app_freezes_its_warmed_heap_and_a_test_app_does_not(
    workspace: Workspace, issuer: Issuer
) -> None:
    gc.unfreeze()
    try:
        with TestClient(create_app(workspace.config, settings_for(issuer), workspace)) as c:
            assert c.get("/healthz").status_code == 200
            assert gc.get_freeze_count() == 0
        app = create_app(workspace.config, settings_for(issuer), workspace, freeze_heap=True)
        with TestClient(app) as c:
            frozen = gc.get_freeze_count()
            left = len(gc.get_objects())  # what a full collection still walks
            assert c.get("/healthz").status_code == 200
            # The model, tokenizer and index loaded by the warm-up are in the frozen part.
            assert frozen > 50_000
            assert left < frozen / 5
    finally:
        gc.unfreeze()
