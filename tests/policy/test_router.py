"""The router: every classification × hosting × PII mode, preferences, refusals, audit events."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from sovra.audit import AuditLog
from sovra.domain import ClassificationScale
from sovra.policy import PolicyEngine, Router, decision_event
from tests.support.policy import chunk, endpoint, user

SCALE = ClassificationScale()
ENGINE = PolicyEngine.default()


def router(*endpoints: object, pii_found: bool = False, **kw: object) -> Router:
    return Router(
        ENGINE,
        endpoints,  # type: ignore[arg-type]
        SCALE,
        home_region="eu-de",
        pii_scan=lambda texts: pii_found,
        **kw,  # type: ignore[arg-type]
    )


def expected(label: str, hosting: str, pii_mode: str, pii_found: bool) -> bool:
    """The shipped policy, written out independently of Cedar."""
    rank = SCALE.rank(label)
    if rank >= SCALE.rank("confidential") and hosting == "foreign_cloud":
        return False
    if label == "restricted" and hosting != "on_prem":
        return False
    return not (pii_found and pii_mode == "deny")


@pytest.mark.parametrize(
    ("label", "hosting", "pii_mode", "pii_found"),
    list(
        itertools.product(
            SCALE.labels,
            ("on_prem", "regional_cloud", "foreign_cloud"),
            ("allow", "redact", "deny"),
            (False, True),
        )
    ),
)
def test_matrix(label: str, hosting: str, pii_mode: str, pii_found: bool) -> None:
    jurisdiction = "local" if hosting == "on_prem" else "eu-fr"
    ep = endpoint(
        "e",
        hosting=hosting,
        jurisdiction=jurisdiction,
        max_classification="restricted",
        pii=pii_mode,
    )
    decision = router(ep, pii_found=pii_found).decide(user("alice"), [chunk(label, "*")])
    want = expected(label, hosting, pii_mode, pii_found)
    assert decision.allowed is want
    assert decision.redact is (want and pii_mode == "redact" and pii_found)
    if want:
        assert decision.chosen is ep and decision.refusal is None and not decision.rejected
    else:
        assert decision.refusal and decision.rejected[0].endpoint == "e"
        assert decision.policy_ids == decision.rejected[0].policy_ids


def test_ceiling_and_unknown_label() -> None:
    ep = endpoint("local", max_classification="internal", pii="allow")
    r = router(ep)
    assert r.decide(user("alice"), [chunk("internal")]).chosen is ep
    over = r.decide(user("alice"), [chunk("internal"), chunk("confidential", n=1)])
    assert over.chosen is None and over.classification == "confidential"
    assert over.policy_ids == ("endpoint-ceiling",)
    unknown = router(endpoint("x", max_classification="restricted", pii="allow")).decide(
        user("alice"), [chunk("secret")]
    )
    assert unknown.chosen is None and unknown.classification == "unknown"


def test_residency_must_contain_the_endpoint_region() -> None:
    fr = endpoint("fr", hosting="regional_cloud", jurisdiction="eu-fr", pii="allow")
    r = router(fr)
    assert r.decide(user("alice"), [chunk("internal", "eu")]).chosen is fr
    d = r.decide(user("alice"), [chunk("internal", "eu"), chunk("internal", "eu-de", n=1)])
    assert d.chosen is None and d.policy_ids == ("residency",)
    # on-prem `local` processes in the workspace region (eu-de)
    local = endpoint("local", pii="allow")
    assert router(local).decide(user("alice"), [chunk("internal", "eu-de")]).chosen is local
    assert router(local).decide(user("alice"), [chunk("internal", "sg")]).chosen is None


def test_hr_category_needs_redacting_endpoint() -> None:
    local = endpoint("local", pii="allow", max_classification="confidential")
    eu = endpoint(
        "eu",
        hosting="regional_cloud",
        jurisdiction="eu",
        pii="redact",
        max_classification="confidential",
    )
    r = router(
        local, eu, pii_found=True, categories={"handbook:content/departments/people-talent/*": "hr"}
    )
    hr = chunk(
        "confidential", source="handbook", doc="handbook:content/departments/people-talent/pay.md"
    )
    d = r.decide(user("dana"), [hr])
    assert d.chosen is eu and d.redact and d.categories == ("hr",)
    assert [(x.endpoint, x.policy_ids) for x in d.rejected] == [("local", ("hr-data-protected",))]


def test_preferences() -> None:
    local = endpoint("local", pii="allow", cost_per_1k_tokens=0.5)
    cheap = endpoint(
        "cheap", hosting="regional_cloud", jurisdiction="eu", pii="allow", cost_per_1k_tokens=0.1
    )
    fast = endpoint(
        "fast", hosting="regional_cloud", jurisdiction="eu", pii="allow", cost_per_1k_tokens=0.3
    )
    chunks = [chunk("internal")]
    assert router(cheap, fast, local).decide(user("alice"), chunks).chosen is local
    assert (
        router(local, fast, cheap, preference="cheapest").decide(user("alice"), chunks).chosen
        is cheap
    )
    r = router(local, cheap, fast, preference="fastest", latency_ms={"fast": 80, "cheap": 400})
    d = r.decide(user("alice"), chunks)
    assert d.chosen is fast and d.considered == ("fast", "cheap", "local")
    assert router(fast, local, preference="configured").decide(user("alice"), chunks).chosen is fast
    with pytest.raises(ValueError, match="unknown routing preference"):
        router(local, preference="random")


def test_requested_endpoint_is_the_only_candidate() -> None:
    local = endpoint("local", pii="allow")
    us = endpoint(
        "us",
        hosting="foreign_cloud",
        jurisdiction="us",
        pii="allow",
        max_classification="restricted",
    )
    d = router(local, us).decide(user("bob"), [chunk("confidential", "*")], requested="us")
    assert d.chosen is None and "confidential-not-foreign" in d.policy_ids
    assert [x.endpoint for x in d.rejected] == ["us"]
    missing = router(local).decide(user("bob"), [chunk("internal")], requested="gpt")
    assert missing.chosen is None and "'gpt' is not registered (known: local)" in str(
        missing.refusal
    )


def test_refusal_names_the_rule_and_what_would_allow_it() -> None:
    eu = endpoint(
        "eu",
        hosting="regional_cloud",
        jurisdiction="eu",
        pii="redact",
        max_classification="restricted",
    )
    d = router(eu).decide(user("alice"), [chunk("restricted")])
    assert d.refusal is not None
    assert "eu: denied by restricted-on-prem-only" in d.refusal
    assert "an on-prem endpoint is needed for restricted data; none is registered" in d.refusal
    none = router().decide(user("alice"), [chunk("internal")])
    assert none.chosen is None and "no model endpoint is registered" in str(none.refusal)


def test_question_text_is_scanned_too() -> None:
    seen: list[list[str]] = []

    def scan(texts: object) -> bool:
        seen.append(list(texts))  # type: ignore[call-overload]
        return False

    r = Router(ENGINE, [endpoint("l", pii="deny")], SCALE, home_region="eu", pii_scan=scan)
    r.decide(user("alice"), [chunk("internal", text="body")], question="q?")
    assert seen == [["q?", "body"]]


def test_demo_done_criteria(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runbooks → on-prem; confidential tickets with only a regional cloud
    endpoint → redacted, or refused with the rule named; each decision in the audit log."""
    for var in ("SOVRA_AUDIT_URL", "SOVRA_AUDIT_KEY", "SOVRA_AUDIT_SCHEMA"):
        monkeypatch.delenv(var, raising=False)
    runbook = chunk("internal", "eu")
    ticket = chunk(
        "confidential",
        "eu",
        source="tickets",
        doc="tickets:42",
        text="Laptop of Jan Novak, IBAN DE89370400440532013000",
    )
    local = endpoint("local", pii="allow", max_classification="internal")
    eu_redact = endpoint(
        "eu",
        hosting="regional_cloud",
        jurisdiction="eu",
        pii="redact",
        max_classification="confidential",
    )
    eu_deny = eu_redact.model_copy(update={"pii": "deny"})
    first = router(local, pii_found=True).decide(user("alice"), [runbook])
    second = router(eu_redact, pii_found=True).decide(user("bob"), [ticket])
    third = router(eu_deny, pii_found=True).decide(user("bob"), [ticket])
    assert first.chosen is local and first.chosen.hosting == "on_prem"
    assert second.chosen is eu_redact and second.redact
    assert third.chosen is None and "pii-deny" in str(third.refusal)

    log = AuditLog.open(tmp_path)
    try:
        for who, d, chunks in (
            ("alice", first, [runbook]),
            ("bob", second, [ticket]),
            ("bob", third, [ticket]),
        ):
            log.append(decision_event(user(who), d, chunks, request_id=f"r-{who}"))
        views = [e.view for e in log.events(action="send_to_endpoint")]
    finally:
        log.close()
    assert [(v["decision"], v["endpoint"], v["policy_ids"]) for v in views] == [
        ("allow", "local", ["send-within-policy"]),
        ("allow", "eu", ["send-within-policy"]),
        ("deny", None, ["pii-deny"]),
    ]
    assert views[2]["details"]["refusal"].startswith("no endpoint may receive confidential data")
    # the log holds chunk ids and hashes, never the text
    assert all("IBAN" not in str(v) for v in views)


def test_plain_policy_decisions_are_audit_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sovra.policy import WORKSPACE, Request, policy_event, user_entity

    for var in ("SOVRA_AUDIT_URL", "SOVRA_AUDIT_KEY", "SOVRA_AUDIT_SCHEMA"):
        monkeypatch.delenv(var, raising=False)
    allow = ENGINE.decide(Request(user_entity(user("root")), "export", WORKSPACE))
    deny = ENGINE.decide(Request(user_entity(user("carol")), "export", WORKSPACE))
    log = AuditLog.open(tmp_path)
    try:
        log.append(policy_event(user("root"), "export", "workspace", allow))
        log.append(policy_event(user("carol"), "export", "workspace", deny))
        views = [e.view for e in log.events(action="export")]
    finally:
        log.close()
    assert [(v["actor"], v["decision"], v["policy_ids"]) for v in views] == [
        ("user:root", "allow", ["admins-administer"]),
        ("user:carol", "deny", ["default-deny"]),
    ]
    assert views[0]["details"]["policy_version"] == ENGINE.version


def test_router_for_config_and_protect(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sovra.config import parse_config
    from sovra.policy.redact import Redactor
    from sovra.policy.wiring import DEMO_CATEGORIES, detector_for, protect, router_for

    monkeypatch.delenv("SOVRA_HOME", raising=False)
    config = parse_config(
        {
            "workspace": {"home": "home", "region": "eu-de"},
            "endpoints": [
                {
                    "name": "local",
                    "kind": "embedded",
                    "model": "qwen",
                    "pii": "allow",
                    "max_classification": "internal",
                },
                {
                    "name": "eu",
                    "kind": "openai",
                    "model": "m",
                    "base_url": "https://eu.example/v1",
                    "hosting": "regional_cloud",
                    "jurisdiction": "eu",
                    "pii": "redact",
                    "max_classification": "confidential",
                },
            ],
        },
        tmp_path,
    )
    detector = detector_for(config)
    redactor = Redactor(detector)
    router = router_for(config, categories=DEMO_CATEGORIES, detector=detector)
    runbook = router.decide(user("alice"), [chunk("internal")])
    assert runbook.chosen is not None and runbook.chosen.name == "local"
    assert protect(runbook, ["q", "text"], redactor) == (["q", "text"], None)
    ticket = chunk(
        "confidential",
        source="tickets",
        doc="tickets:7",
        text="Caller BSN 111222333 cannot log in.",
    )
    decision = router.decide(user("bob"), [ticket], question="Who called?")
    assert decision.chosen is not None and decision.chosen.name == "eu" and decision.redact
    sent, mapping = protect(decision, ["Who called?", ticket.text], redactor)
    assert sent == ["Who called?", "Caller BSN <NL_BSN_1> cannot log in."]
    assert mapping is not None and mapping.originals == {"<NL_BSN_1>": "111222333"}
    refused = router.decide(user("bob"), [chunk("restricted")])
    with pytest.raises(ValueError, match="nothing may be sent"):
        protect(refused, ["x"], redactor)


def test_airgap_mode_rejects_what_the_egress_guard_would_refuse() -> None:
    """`[egress] airgap = true`: only in-process or on-prem endpoints on local addresses."""
    embedded = endpoint("gguf", pii="allow", cost_per_1k_tokens=1.0)
    lan = endpoint(
        "lan",
        kind="openai",
        base_url="http://10.0.0.5:8000/v1",
        pii="allow",
        cost_per_1k_tokens=0.5,
    )
    public = endpoint(
        "public",
        kind="openai",
        base_url="http://llm.example.eu/v1",
        pii="allow",
        cost_per_1k_tokens=0.0,
    )
    cloud = endpoint(
        "cloud",
        hosting="regional_cloud",
        jurisdiction="eu",
        base_url="http://127.0.0.1:9/v1",
        pii="allow",
        cost_per_1k_tokens=0.0,
    )
    resolved = {"10.0.0.5": ["10.0.0.5"], "llm.example.eu": ["203.0.114.9"]}
    air = router(
        embedded,
        lan,
        public,
        cloud,
        preference="cheapest",
        airgap=True,
        resolver=lambda host, port: resolved.get(host, [host]),
    )
    d = air.decide(user("alice"), [chunk("internal")])
    assert d.chosen is lan  # the cheaper public and cloud endpoints are out
    rejected = {r.endpoint: r for r in d.rejected}
    assert set(rejected) == {"public", "cloud"}
    assert rejected["cloud"].policy_ids == ("airgap",)
    assert "allows only on_prem endpoints, 'cloud' is regional_cloud" in rejected["cloud"].reason
    assert "non-local address 203.0.114.9" in rejected["public"].reason
    only_cloud = router(cloud, airgap=True).decide(user("alice"), [chunk("public")])
    assert only_cloud.chosen is None and only_cloud.policy_ids == ("airgap",)
    assert "to allow it: in air-gap mode only on_prem endpoints" in str(only_cloud.refusal)
    # The same endpoints outside air-gap mode: the cheapest allowed one wins.
    assert router(embedded, lan, public, cloud, preference="cheapest").decide(
        user("alice"), [chunk("internal")]
    ).chosen in (public, cloud)
