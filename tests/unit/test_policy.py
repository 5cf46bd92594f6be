"""The operations policy file: the shipped file is the defaults, every mistake
is refused with the key, the problem and the fix, a partial file keeps the
defaults, and what policy_to_toml writes parse_policy reads back unchanged."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contract import MAX_TYPE_LENGTH, TYPE_PATTERN
from streams.errors import ConfigError
from streams.policy import DEFAULT_POLICY, HealthPolicy, Policy, RfmPolicy, StagePolicy, TierPolicy
from streams.policy_file import parse_policy
from streams.policy_keys import FIELD_ALLOWED, FIELD_DOCS, policy_to_toml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY_FILE = ROOT / "deploy" / "policy.toml"
DOCS = ROOT / "docs" / "policy.md"
SOURCE = ROOT / "streams" / "policy.py"
REGENERATE = (
    ".venv/bin/python -c 'from streams.policy import DEFAULT_POLICY; "
    "from streams.policy_keys import policy_to_toml; "
    'print(policy_to_toml(DEFAULT_POLICY), end="")\' > deploy/policy.toml'
)
SECTIONS = {f.name: type(getattr(DEFAULT_POLICY, f.name)).__name__ for f in fields(Policy)}
PATHS = [
    f"{section.name}.{key.name}"
    for section in fields(Policy)
    for key in fields(getattr(DEFAULT_POLICY, section.name))
]


def rejection(text: str, source: str = "team/policy.toml") -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_policy(text, source=source)
    return caught.value


# ---- the shipped file ---------------------------------------------------------
def test_the_deploy_file_is_the_defaults() -> None:
    text = DEPLOY_FILE.read_text()
    assert parse_policy(text, source=str(DEPLOY_FILE)) == DEFAULT_POLICY
    assert text == policy_to_toml(DEFAULT_POLICY), f"regenerate it: {REGENERATE}"


def test_every_key_is_in_the_deploy_file_with_its_meaning_range_and_default() -> None:
    lines = DEPLOY_FILE.read_text().splitlines()
    section = ""
    seen: list[str] = []
    for number, line in enumerate(lines):
        if header := re.fullmatch(r"\[(\w+)\]", line):
            section = header[1]
        elif assignment := re.match(r"(\w+) = ", line):
            path = f"{section}.{assignment[1]}"
            seen.append(path)
            comments: list[str] = []
            for above in reversed(lines[:number]):
                if not above.startswith("#"):
                    break
                comments.insert(0, above.removeprefix("# "))
            assert comments, f"{path} has no comment line above it"
            block = " ".join(comments)
            assert FIELD_DOCS[path] in block
            assert f"Allowed: {FIELD_ALLOWED[path]}" in block
            assert comments[-1].startswith("Default: ")
    assert seen == PATHS


def test_field_docs_are_the_comments_above_the_dataclass_fields() -> None:
    """FIELD_DOCS repeats each field's ``#:`` comment; they must not drift apart."""
    source = SOURCE.read_text().splitlines()
    classes = {
        node.name: node
        for node in ast.parse("\n".join(source)).body
        if isinstance(node, ast.ClassDef)
    }
    comments = {}
    for section, cls in SECTIONS.items():
        for node in classes[cls].body:
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                above = source[node.lineno - 2].strip()
                assert above.startswith("#: "), f"{section}.{node.target.id} has no #: comment"
                comments[f"{section}.{node.target.id}"] = above.removeprefix("#: ")
    assert comments == dict(FIELD_DOCS)
    assert list(FIELD_DOCS) == PATHS
    assert list(FIELD_ALLOWED) == PATHS


def test_defaults_obey_every_rule() -> None:
    assert parse_policy("") == DEFAULT_POLICY
    assert parse_policy(policy_to_toml(DEFAULT_POLICY)) == DEFAULT_POLICY


# ---- partial files and types ----------------------------------------------------
def test_a_partial_file_keeps_the_defaults_for_the_rest() -> None:
    policy = parse_policy("[rfm]\nhigh_score = 4\n\n[health]\ndormant_days = 60\n")
    assert policy == replace(
        DEFAULT_POLICY,
        rfm=replace(DEFAULT_POLICY.rfm, high_score=4),
        health=replace(DEFAULT_POLICY.health, dormant_days=60),
    )
    assert parse_policy("[tiers]\n") == DEFAULT_POLICY
    assert parse_policy("# nothing but a comment\n") == DEFAULT_POLICY


def test_lists_become_tuples_and_whole_numbers_are_accepted_as_amounts() -> None:
    policy = parse_policy(
        '[stages]\nactivation_events = ["order_completed"]\n'
        "[rfm]\nmonetary = [10, 20.5, 30, 40]\n"
        "[tiers]\nhigh_ltv = 500\nmid_ltv = 0\n"
    )
    assert policy.stages.activation_events == ("order_completed",)
    assert policy.rfm.monetary == (10.0, 20.5, 30.0, 40.0)
    assert all(type(v) is float for v in policy.rfm.monetary)
    assert type(policy.tiers.high_ltv) is float and policy.tiers.high_ltv == 500.0
    assert type(policy.tiers.mid_ltv) is float and policy.tiers.mid_ltv == 0.0
    assert type(policy.rfm.recency_days) is tuple


def test_inline_tables_and_dotted_keys_are_plain_toml() -> None:
    assert parse_policy("rfm = { high_score = 5 }").rfm.high_score == 5
    assert parse_policy("health.new_days = 3").health.new_days == 3


def test_a_byte_order_mark_is_ignored() -> None:
    assert parse_policy("\ufeff[rfm]\nhigh_score = 2\n").rfm.high_score == 2


# ---- every rule, refused with key, problem and fix -------------------------------
REJECTED = [
    # (file, key, a phrase of the problem)
    # unknown sections and keys
    ("[rfmm]\nhigh_score = 3", "rfmm", "is not a policy section"),
    ("[segments]\n", "segments", "is not a policy section"),
    ("high_score = 3", "high_score", "is outside any section"),
    ("[rfm]\nrecency = [7, 30, 90, 180]", "rfm.recency", "is not a policy key"),
    ("[health]\nhigh_score = 3", "health.high_score", "is not a policy key"),
    # wrong TOML types
    ("rfm = 3", "rfm", "must be a table, got the whole number 3"),
    ("[[rfm]]\nhigh_score = 3", "rfm", "must be a table, got the list"),
    (
        '[stages]\nactivation_window_days = "7"',
        "stages.activation_window_days",
        'got the string "7"',
    ),
    (
        "[stages]\nactivation_window_days = 7.0",
        "stages.activation_window_days",
        "got the decimal number 7.0",
    ),
    (
        "[stages]\nactivation_window_days = true",
        "stages.activation_window_days",
        "got the boolean true",
    ),
    ("[health]\nnew_days = [7]", "health.new_days", "must be a whole number, got the list [7]"),
    ("[rfm]\nhigh_score = 2024-01-01", "rfm.high_score", "got the date 2024-01-01"),
    ("[rfm]\nhigh_score = 4.0", "rfm.high_score", "must be a whole number"),
    ("[tiers]\nhigh_ltv = true", "tiers.high_ltv", "must be a number, got the boolean true"),
    ('[tiers]\nmid_ltv = "200"', "tiers.mid_ltv", 'must be a number, got the string "200"'),
    ("[tiers]\nmid_ltv = nan", "tiers.mid_ltv", "must be a finite number, got nan"),
    (
        "[rfm]\nrecency_days = 30",
        "rfm.recency_days",
        "must be a list of 4 thresholds, got the whole number 30",
    ),
    (
        '[rfm]\nmonetary = ["50", 200, 500, 1000]',
        "rfm.monetary",
        'item 1: must be a number, got the string "50"',
    ),
    (
        "[rfm]\nfrequency_orders = [2, 3, 5.5, 10]",
        "rfm.frequency_orders",
        "item 3: must be a whole number",
    ),
    (
        "[rfm]\nfrequency_orders = [2, true, 5, 10]",
        "rfm.frequency_orders",
        "item 2: must be a whole number, got the boolean true",
    ),
    # day counts: 1 to 3650
    (
        "[stages]\nactivation_window_days = 0",
        "stages.activation_window_days",
        "0 is below the minimum 1",
    ),
    (
        "[stages]\nretention_period_days = -7",
        "stages.retention_period_days",
        "-7 is below the minimum 1",
    ),
    (
        "[stages]\nretention_period_days = 3651",
        "stages.retention_period_days",
        "3651 is above the maximum 3650",
    ),
    ("[health]\nnew_days = 0", "health.new_days", "0 is below the minimum 1"),
    ("[health]\ndormant_days = 4000", "health.dormant_days", "4000 is above the maximum 3650"),
    ("[health]\nresurrected_days = 0", "health.resurrected_days", "0 is below the minimum 1"),
    ("[stages]\nrepeat_buyer_orders = 1", "stages.repeat_buyer_orders", "1 is below the minimum 2"),
    # activation events
    ("[stages]\nactivation_events = []", "stages.activation_events", "is empty"),
    (
        '[stages]\nactivation_events = "order_completed"',
        "stages.activation_events",
        "must be a list of event types",
    ),
    (
        "[stages]\nactivation_events = [7]",
        "stages.activation_events",
        "item 1 must be a string, got the whole number 7",
    ),
    (
        '[stages]\nactivation_events = ["OrderCompleted"]',
        "stages.activation_events",
        'is not a snake_case event type; did you mean "order_completed"?',
    ),
    (
        '[stages]\nactivation_events = ["order completed!"]',
        "stages.activation_events",
        "is not a snake_case event type",
    ),
    (
        '[stages]\nactivation_events = ["_x"]',
        "stages.activation_events",
        'item 1, "_x", is not a snake_case',
    ),
    (
        f'[stages]\nactivation_events = ["{"a" * (MAX_TYPE_LENGTH + 1)}"]',
        "stages.activation_events",
        "is not a snake_case event type",
    ),
    (
        '[stages]\nactivation_events = ["order_completed", "order_completed"]',
        "stages.activation_events",
        'item 2, "order_completed", is listed twice',
    ),
    # thresholds: exactly 4, strictly ascending, positive
    ("[rfm]\nrecency_days = [7, 30, 90]", "rfm.recency_days", "has 3 thresholds"),
    ("[rfm]\nrecency_days = [7, 30, 90, 180, 365]", "rfm.recency_days", "has 5 thresholds"),
    ("[rfm]\nrecency_days = []", "rfm.recency_days", "has 0 thresholds"),
    (
        "[rfm]\nrecency_days = [7, 30, 30, 180]",
        "rfm.recency_days",
        "is not strictly ascending: item 3, 30, does not exceed item 2, 30",
    ),
    ("[rfm]\nrecency_days = [180, 90, 30, 7]", "rfm.recency_days", "is not strictly ascending"),
    (
        "[rfm]\nrecency_days = [0, 30, 90, 180]",
        "rfm.recency_days",
        "item 1: 0 is below the minimum 1",
    ),
    (
        "[rfm]\nrecency_days = [7, 30, 90, 5000]",
        "rfm.recency_days",
        "item 4: 5000 is above the maximum 3650",
    ),
    (
        "[rfm]\nfrequency_orders = [0, 3, 5, 10]",
        "rfm.frequency_orders",
        "item 1: 0 is below the minimum 1",
    ),
    (
        "[rfm]\nfrequency_orders = [2, 3, 10, 5]",
        "rfm.frequency_orders",
        "is not strictly ascending: item 4, 5",
    ),
    ("[rfm]\nmonetary = [0, 200, 500, 1000]", "rfm.monetary", "item 1: 0 is not more than 0"),
    (
        "[rfm]\nmonetary = [-50.0, 200, 500, 1000]",
        "rfm.monetary",
        "item 1: -50.0 is not more than 0",
    ),
    (
        "[rfm]\nmonetary = [50, 200, 500, inf]",
        "rfm.monetary",
        "item 4: must be a finite number, got inf",
    ),
    ("[rfm]\nmonetary = [50, 200.5, 200.5, 1000]", "rfm.monetary", "is not strictly ascending"),
    # high score 1..5
    ("[rfm]\nhigh_score = 0", "rfm.high_score", "0 is below the minimum 1"),
    ("[rfm]\nhigh_score = 6", "rfm.high_score", "6 is above the maximum 5"),
    # tiers: high_ltv > mid_ltv >= 0
    ("[tiers]\nmid_ltv = -1", "tiers.mid_ltv", "-1 is below the minimum 0"),
    (
        "[tiers]\nhigh_ltv = 200\nmid_ltv = 200",
        "tiers.high_ltv",
        "high_ltv = 200.0 must be more than mid_ltv = 200.0",
    ),
    (
        "[tiers]\nhigh_ltv = 100",
        "tiers.high_ltv",
        "high_ltv = 100.0 must be more than the default mid_ltv = 200.0",
    ),
    (
        "[tiers]\nmid_ltv = 5000",
        "tiers.mid_ltv",
        "mid_ltv = 5000.0 must be less than the default high_ltv = 1000.0",
    ),
    ("[tiers]\nhigh_ltv = -5", "tiers.high_ltv", "must be more than the default mid_ltv"),
    # health: new_days <= active_days < dormant_days
    (
        "[health]\nnew_days = 15",
        "health.new_days",
        "new_days = 15 must be at most the default active_days = 14",
    ),
    (
        "[health]\nactive_days = 5",
        "health.active_days",
        "active_days = 5 must be at least the default new_days = 7",
    ),
    (
        "[health]\nactive_days = 30",
        "health.active_days",
        "active_days = 30 must be less than the default dormant_days = 30",
    ),
    (
        "[health]\ndormant_days = 10",
        "health.dormant_days",
        "dormant_days = 10 must be more than the default active_days = 14",
    ),
    (
        "[health]\nnew_days = 9\nactive_days = 8",
        "health.new_days",
        "new_days = 9 must be at most active_days = 8",
    ),
    (
        "[health]\nactive_days = 40\ndormant_days = 40",
        "health.active_days",
        "active_days = 40 must be less than dormant_days = 40",
    ),
]


@pytest.mark.parametrize(
    ("text", "key", "problem"), REJECTED, ids=[f"{k}:{p[:30]}" for _, k, p in REJECTED]
)
def test_every_rule_refuses_a_wrong_file_naming_the_key(text: str, key: str, problem: str) -> None:
    error = rejection(text)
    assert error.key == key
    assert problem in error.problem
    assert "team/policy.toml" in error.problem
    assert error.fix
    assert str(error) == f"{key}: {error.problem}. Fix: {error.fix}"


def test_a_value_error_names_the_allowed_values_and_an_example() -> None:
    error = rejection("[rfm]\nrecency_days = [7, 30, 30, 180]")
    assert error.fix == (
        "set 4 strictly ascending whole numbers of days, 1 to 3650, "
        "e.g. recency_days = [7, 30, 90, 180]"
    )
    error = rejection("[stages]\nactivation_window_days = 0")
    assert error.fix == "set a whole number of days from 1 to 3650, e.g. activation_window_days = 7"


@pytest.mark.parametrize(
    ("text", "key", "fix"),
    [
        ("[rfmm]\n", "rfmm", "did you mean [rfm]?"),
        ("[helth]\nnew_days = 3", "helth", "did you mean [health]?"),
        ("[stage]\n", "stage", "did you mean [stages]?"),
        (
            "[segments]\n",
            "segments",
            "remove it; the sections are [stages], [health], [rfm], [tiers]",
        ),
        ("[rfm]\nrecency = [7, 30, 90, 180]", "rfm.recency", "did you mean rfm.recency_days?"),
        ("[health]\ndormant = 30", "health.dormant", "did you mean health.dormant_days?"),
        (
            "[stages]\nactivation_event = []",
            "stages.activation_event",
            "did you mean stages.activation_events?",
        ),
        ("[tiers]\nhigh = 1000", "tiers.high", "did you mean tiers.high_ltv?"),
        (
            "[health]\nhigh_score = 3",
            "health.high_score",
            "move it to [rfm], where high_score belongs",
        ),
        (
            "[rfm]\nwhatever = 1",
            "rfm.whatever",
            "remove it; [rfm] takes recency_days, frequency_orders, monetary, high_score",
        ),
        ("new_days = 3", "new_days", "new_days belongs in [health]"),
    ],
)
def test_unknown_names_get_a_suggestion(text: str, key: str, fix: str) -> None:
    error = rejection(text)
    assert error.key == key
    assert fix in error.fix


def test_a_contradiction_blames_the_key_the_file_set() -> None:
    """Only mid_ltv was written, so mid_ltv is the key to fix, not the default high_ltv."""
    error = rejection("[tiers]\nmid_ltv = 1500")
    assert error.key == "tiers.mid_ltv"
    assert error.fix == "set mid_ltv below high_ltv (1000.0), or change high_ltv too"
    error = rejection("[health]\ndormant_days = 14")
    assert error.key == "health.dormant_days"
    assert error.fix == "set dormant_days above active_days (14), or change active_days too"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("[rfm]\nhigh_score = three\n", "at line 2, column 14"),
        ("[rfm\nhigh_score = 3\n", "at line 1, column 5"),
        ('[stages]\nactivation_events = ["order_completed"\n', ""),
        ("[rfm]\nhigh_score = 3\nhigh_score = 4\n", ""),
        ("[rfm]\n[rfm]\n", ""),
        ("high score = 3\n", "at line 1, column 6"),
    ],
)
def test_invalid_toml_names_the_file_and_the_place(text: str, where: str) -> None:
    error = rejection(text, source="/etc/userpulse/policy.toml")
    assert error.key == "(file)"
    assert error.problem.startswith("/etc/userpulse/policy.toml is not valid TOML: ")
    assert where in error.problem and where in error.fix
    assert error.fix.startswith("correct the TOML")


def test_a_repeated_key_says_so() -> None:
    error = rejection("[rfm]\nhigh_score = 3\nhigh_score = 4\n")
    assert "written twice" in error.fix


def test_the_default_source_name() -> None:
    assert "(in policy file)" in rejection("[x]\n", source="policy file").problem
    with pytest.raises(ConfigError, match=r"\(in policy file\)"):
        parse_policy("[x]\n")


# ---- round trips -----------------------------------------------------------------
def test_a_custom_policy_round_trips_and_documents_its_defaults() -> None:
    custom = Policy(
        stages=StagePolicy(("order_completed",), 14, 30, 3),
        health=HealthPolicy(new_days=3, active_days=3, dormant_days=90, resurrected_days=1),
        rfm=RfmPolicy((1, 2, 3, 3650), (1, 2, 3, 4), (0.01, 1e6, 1.5e9, 1e300), 5),
        tiers=TierPolicy(high_ltv=0.5, mid_ltv=0.0),
    )
    text = policy_to_toml(custom)
    assert parse_policy(text) == custom
    assert "new_days = 3\n" in text and "# Default: 7\n" in text


event_types = st.from_regex(TYPE_PATTERN, fullmatch=True).filter(
    lambda s: len(s) <= MAX_TYPE_LENGTH
)
days = st.integers(1, 3650)


def ascending(elements: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.sets(elements, min_size=4, max_size=4).map(lambda s: tuple(sorted(s)))


@st.composite
def health_policies(draw: st.DrawFn) -> HealthPolicy:
    new = draw(st.integers(1, 3649))
    active = draw(st.integers(new, 3649))
    dormant = draw(st.integers(active + 1, 3650))
    return HealthPolicy(new, active, dormant, draw(days))


@st.composite
def tier_policies(draw: st.DrawFn) -> TierPolicy:
    mid = draw(st.floats(0, 1e15))
    high = draw(st.floats(mid, 1e16, exclude_min=True))
    return TierPolicy(high_ltv=high, mid_ltv=mid)


policies = st.builds(
    Policy,
    stages=st.builds(
        StagePolicy,
        activation_events=st.lists(event_types, min_size=1, max_size=5, unique=True).map(tuple),
        activation_window_days=days,
        retention_period_days=days,
        repeat_buyer_orders=st.integers(2, 10**9),
    ),
    health=health_policies(),
    rfm=st.builds(
        RfmPolicy,
        recency_days=ascending(days),
        frequency_orders=ascending(st.integers(1, 10**9)),
        monetary=ascending(st.floats(0, 1e18, exclude_min=True)),
        high_score=st.integers(1, 5),
    ),
    tiers=tier_policies(),
)


@settings(max_examples=200)
@given(policies)
def test_any_valid_policy_round_trips_through_toml(policy: Policy) -> None:
    assert parse_policy(policy_to_toml(policy)) == policy


# Any TOML document of policy-like shape: some known and some unknown names,
# values of every TOML type. The parser returns a Policy or raises ConfigError
# naming a key the document has — never anything else.
known = st.sampled_from(PATHS)
scalars = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(),
    st.booleans(),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
)
values = st.one_of(scalars, st.lists(scalars, max_size=6))


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # TOML spells inf, -inf and nan as Python does
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.one_of(known, st.sampled_from(["rfm.score", "tier.high_ltv", "health.x"])),
        values,
        max_size=6,
    )
)
def test_any_document_gives_a_policy_or_a_config_error(document: dict[str, Any]) -> None:
    sections: dict[str, list[str]] = {}
    for path, value in document.items():
        section, _, key = path.partition(".")
        sections.setdefault(section, []).append(f"{key} = {toml_value(value)}")
    text = "\n".join(f"[{s}]\n" + "\n".join(lines) for s, lines in sections.items())
    try:
        policy = parse_policy(text)
    except ConfigError as error:
        assert error.key in document or error.key in sections
    else:
        assert isinstance(policy, Policy)


@settings(max_examples=300)
@given(st.text())
def test_any_text_gives_a_policy_or_a_config_error(text: str) -> None:
    try:
        policy = parse_policy(text)
    except ConfigError as error:
        assert error.key and error.problem and error.fix
    else:
        assert isinstance(policy, Policy)


def test_a_list_of_tables_is_shown_in_toml_syntax() -> None:
    error = rejection('[[rfm]]\n"high score" = 3')
    assert 'got the list [{"high score" = 3}]' in error.problem


# ---- the docs --------------------------------------------------------------------
def test_the_docs_embed_the_generated_file() -> None:
    assert f"```toml\n{policy_to_toml(DEFAULT_POLICY)}```" in DOCS.read_text()


def test_the_docs_list_every_key_with_its_default() -> None:
    docs = DOCS.read_text()
    for path in PATHS:
        key = path.partition(".")[2]
        default = policy_to_toml(DEFAULT_POLICY).split(f"\n{key} = ", 1)[1].split("\n", 1)[0]
        assert f"| `{path}` | `{default}` |" in docs, path


def test_the_docs_show_real_error_messages() -> None:
    """Each example in "Error messages" is a file and the line the worker prints for it."""
    docs = DOCS.read_text()
    section = docs.split("## Error messages", 1)[1].split("\n## ", 1)[0]
    examples = re.findall(r"```toml\n(.*?)```\n+```text\n(.*?)\n```", section, flags=re.S)
    assert len(examples) >= 5
    for text, printed in examples:
        error = rejection(text, source="/etc/userpulse/policy.toml")
        assert printed == f"userpulse: error: {error}"
