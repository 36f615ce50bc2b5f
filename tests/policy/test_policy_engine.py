"""The Cedar engine: shipped policies, the demo decision table, bad files, errors deny."""

from __future__ import annotations

from pathlib import Path

import pytest

from sovra.policy import WORKSPACE, PolicyEngine, PolicyError, PolicySet, Request, user_entity
from sovra.policy.engine import (
    DEFAULT_DENY,
    POLICY_ERROR,
    _split_statements,
    default_policy_files,
    default_schema_text,
)
from sovra.policy.table import load_table, run_table
from tests.support.policy import user

DEMO_TABLE = Path(__file__).resolve().parents[2] / "src/sovra/policy/defaults/demo-decisions.yaml"

ASK_ALL = '@id("ask-all")\npermit (principal, action == Action::"ask", resource);\n'


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_demo_table_all_decisions_as_expected() -> None:
    table = load_table(DEMO_TABLE)
    results = run_table(PolicyEngine.default(), table)
    assert len(results) >= 100
    assert [r.problem for r in results if not r.passed] == []
    # the table covers both outcomes for every demo user
    for name in table.users:
        outcomes = {r.verdict.decision for r in results if r.case.as_ == name}
        assert outcomes == {"allow", "deny"}
    # ... and every action for every user: both outcomes where the shipped policy can give
    # both; the admin-only actions can only be denied to non-admins (and root is an admin).
    admin_only = {"administer", "approve", "erase", "export"}
    for name, groups in table.users.items():
        for action in {c.action for c in table.cases}:
            seen = {
                r.verdict.decision for r in results if (r.case.as_, r.case.action) == (name, action)
            }
            if action not in admin_only:
                assert seen == {"allow", "deny"}, (name, action, seen)
            else:
                assert seen == ({"allow"} if "admins" in groups else {"deny"}), (name, action)


def test_table_catches_a_wrong_expectation(tmp_path: Path) -> None:
    text = DEMO_TABLE.read_text().replace(
        "{as: carol, action: export, resource: workspace, expect: deny",
        "{as: carol, action: export, resource: workspace, expect: allow",
    )
    table = write(tmp_path, "t.yaml", text)
    failed = [r for r in run_table(PolicyEngine.default(), load_table(table)) if not r.passed]
    assert [(r.case.as_, r.case.action, r.problem) for r in failed] == [
        ("carol", "export", "expected allow, got deny")
    ]


def test_unlisted_action_is_denied_by_default() -> None:
    verdict = PolicyEngine.default().decide(
        Request(user_entity(user("carol")), "administer", WORKSPACE)
    )
    assert not verdict.allowed
    assert verdict.policy_ids == (DEFAULT_DENY,)


def test_unknown_action_is_an_error() -> None:
    with pytest.raises(PolicyError, match="unknown action 'delete'"):
        PolicyEngine.default().decide(Request(user_entity(user("root")), "delete", WORKSPACE))


def test_version_is_a_content_hash(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    write(folder, "a.cedar", ASK_ALL)
    first = PolicyEngine.from_folder(folder).version
    assert PolicyEngine.from_folder(folder).version == first
    write(folder, "a.cedar", ASK_ALL + "// a comment changes the version too\n")
    assert PolicyEngine.from_folder(folder).version != first
    assert PolicyEngine.default().version != first


def test_folder_replaces_the_defaults(tmp_path: Path) -> None:
    engine = PolicyEngine.from_folder(write(tmp_path / "p", "a.cedar", ASK_ALL).parent)
    verdict = engine.decide(Request(user_entity(user("carol")), "ask", WORKSPACE))
    assert verdict.allowed and verdict.policy_ids == ("ask-all",)
    search = engine.decide(Request(user_entity(user("carol")), "search", WORKSPACE))
    assert not search.allowed  # the shipped ask-workspace policy is no longer active


def test_missing_folder_uses_the_shipped_defaults(tmp_path: Path) -> None:
    engine = PolicyEngine.from_folder(tmp_path / "nowhere")
    assert engine.policy_set.files == tuple(n for n, _ in default_policy_files())


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    bad = ASK_ALL + '\n// second policy\n@id("broken")\npermit (principal,, action, resource);\n'
    folder = write(tmp_path / "p", "bad.cedar", bad).parent
    with pytest.raises(PolicyError, match=r"^bad\.cedar:5: .*unexpected token"):
        PolicyEngine.from_folder(folder)


def test_schema_error_names_the_policy(tmp_path: Path) -> None:
    text = (
        '@id("typo")\nforbid (principal, action == Action::"send_to_endpoint",'
        ' resource is Endpoint)\nwhen { resource.hostng == "foreign_cloud" };\n'
    )
    folder = write(tmp_path / "p", "x.cedar", ASK_ALL + text).parent
    with pytest.raises(PolicyError, match=r"x\.cedar:3 @id\('typo'\).*hostng"):
        PolicyEngine.from_folder(folder)


def test_policy_without_id_is_refused(tmp_path: Path) -> None:
    folder = write(tmp_path / "p", "x.cedar", "permit (principal, action, resource);").parent
    with pytest.raises(PolicyError, match=r"x\.cedar:1: the policy has no @id"):
        PolicyEngine.from_folder(folder)


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write(folder, "a.cedar", ASK_ALL)
    write(folder, "b.cedar", ASK_ALL)
    with pytest.raises(
        PolicyError, match=r"b\.cedar:1: @id\('ask-all'\) is already used in a\.cedar:1"
    ):
        PolicyEngine.from_folder(folder)


def test_bad_reload_keeps_the_active_set(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    write(folder, "a.cedar", ASK_ALL)
    engine = PolicyEngine.from_folder(folder)
    before = engine.version
    write(folder, "a.cedar", "permit (")
    with pytest.raises(PolicyError):
        engine.reload()
    assert engine.version == before
    assert engine.decide(Request(user_entity(user("carol")), "ask", WORKSPACE)).allowed


def test_evaluation_error_denies_even_if_a_permit_matched() -> None:
    # Cedar skips a policy that errors; for a forbid that would allow, so the engine denies.
    boom = (
        '@id("boom")\nforbid (principal, action == Action::"ask", resource)\n'
        "when { 9223372036854775807 + 1 > 0 };\n"
    )
    engine = PolicyEngine(PolicySet([("x.cedar", ASK_ALL + boom)], default_schema_text()))
    verdict = engine.decide(Request(user_entity(user("carol")), "ask", WORKSPACE))
    assert not verdict.allowed
    assert POLICY_ERROR in verdict.policy_ids
    assert "boom" in verdict.errors[0] and "overflow" in verdict.errors[0]


def test_statement_splitter_ignores_semicolons_in_strings_and_comments() -> None:
    text = '// a; b\n@id("x;y")\npermit (principal, action, resource);\n\n@id("z") forbid (principal, action, resource);'
    assert [line for line, _ in _split_statements(text)] == [2, 5]


def test_reload_if_changed(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    path = write(folder, "a.cedar", ASK_ALL)
    engine = PolicyEngine.from_folder(folder)
    first = engine.version
    assert engine.reload_if_changed() is None and engine.version == first
    write(
        folder,
        "b.cedar",
        '@id("search-all")\npermit (principal, action == Action::"search", resource);\n',
    )
    assert engine.reload_if_changed() is None and engine.version != first
    assert engine.decide(Request(user_entity(user("carol")), "search", WORKSPACE)).allowed
    good = engine.version
    path.write_text("permit (")  # broken: reported, and the good set stays active
    error = engine.reload_if_changed()
    assert isinstance(error, PolicyError) and "a.cedar:1" in str(error)
    assert engine.version == good
    assert engine.reload_if_changed() is None  # reported once, not on every request
