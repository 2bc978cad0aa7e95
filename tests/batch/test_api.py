"""The job-author API: definitions are checked when built, parameters list every problem, ids are unique."""

import pytest

from batch.api import InvalidJobDefinition, InvalidParameters, JobDefinitionBuilder, register
from batch.exceptions import DuplicateJobDefinition, UnknownJobDefinition
from batch.registry import JobDefinitionRegistry, registry
from tests.batch.helpers import count_records, emit


def two_steps(builder: JobDefinitionBuilder) -> JobDefinitionBuilder:
    return builder.first_step("plan", emit(1)).last_step("work", count_records())


@pytest.mark.parametrize(
    "shape, problem",
    [
        (lambda b: b.first_step("plan", emit(1)), "a job needs at least two steps"),
        (lambda b: b.last_step("work", count_records()).first_step("plan", emit(1)), "steps must be: one first step"),
        (
            lambda b: b.first_step("plan", emit(1)).reduction_step("sum", lambda c, i: {}),
            "a reduction step is only allowed on a gated job",
        ),
        (lambda b: b.first_step("same", emit(1)).last_step("same", count_records()), "step ids must be unique"),
        (lambda b: two_steps(b).max_concurrent_chunks(0), "max_concurrent_chunks must be at least 1"),
        (lambda b: two_steps(b).parameter("a", int).parameter("a", str), "parameter names must be unique"),
    ],
)
def test_a_malformed_definition_is_refused_when_built(shape, problem):
    with pytest.raises(InvalidJobDefinition, match=problem):
        shape(JobDefinitionBuilder("JOB", 1)).build()


def test_id_and_version_are_checked():
    with pytest.raises(InvalidJobDefinition) as refused:
        two_steps(JobDefinitionBuilder("X" * 101, 0)).build()
    assert "id must be 1 to 100 characters" in str(refused.value)
    assert "version must be a positive integer" in str(refused.value)


def test_a_parameter_type_outside_json_is_refused():
    with pytest.raises(InvalidJobDefinition, match="type must be one of"):
        JobDefinitionBuilder("JOB", 1).parameter("when", set)


@pytest.fixture
def export_like():
    def since_before_until(values):
        if values["since"] and values["until"] and values["since"] > values["until"]:
            yield "'since' must not be after 'until'"

    return two_steps(
        JobDefinitionBuilder("EXPORT_LIKE", 1)
        .parameter("types", list, required=True, items=str)
        .parameter("batch_size", int, default=1000, minimum=1, maximum=10_000)
        .parameter("format", str, default="ndjson", choices=["ndjson", "csv"])
        .parameter("since", str)
        .parameter("until", str)
        .parameter("ratio", float, default=0.5)
        .validate_with(since_before_until)
    ).build()


def test_valid_parameters_come_back_with_defaults_filled(export_like):
    assert export_like.validate_parameters({"types": ["Patient"], "ratio": 1}) == {
        "types": ["Patient"],
        "batch_size": 1000,
        "format": "ndjson",
        "since": None,
        "until": None,
        "ratio": 1,
    }


def test_invalid_parameters_list_every_problem(export_like):
    with pytest.raises(InvalidParameters) as refused:
        export_like.validate_parameters(
            {"batch_size": 0, "format": "xml", "colour": "red", "ratio": True, "types": ["Patient", 3]}
        )

    assert sorted(refused.value.problems) == sorted(
        [
            "unknown parameter 'colour'",
            "'batch_size' must be at least 1, got 0",
            "'format' must be one of 'ndjson', 'csv', got 'xml'",
            "'ratio' must be a number, got True",
            "'types' items must be a string, got 3",
        ]
    )


def test_a_missing_required_parameter_and_a_wrong_type_are_both_listed(export_like):
    with pytest.raises(InvalidParameters) as refused:
        export_like.validate_parameters({"batch_size": "ten"})
    assert refused.value.problems == ["'types' is required", "'batch_size' must be an integer, got 'ten'"]


def test_the_cross_parameter_check_runs_once_each_parameter_passed_its_own(export_like):
    with pytest.raises(InvalidParameters) as refused:
        export_like.validate_parameters({"types": ["Patient"], "since": "2024", "until": "2023"})
    assert refused.value.problems == ["'since' must not be after 'until'"]


def test_parameters_must_be_an_object(export_like):
    with pytest.raises(InvalidParameters, match="parameters must be a JSON object"):
        export_like.validate_parameters(["types"])


def test_a_duplicate_id_and_version_fails_loudly():
    definitions = JobDefinitionRegistry()
    definitions.register(two_steps(JobDefinitionBuilder("JOB", 1)).build())

    with pytest.raises(DuplicateJobDefinition, match="'JOB' version 1 is registered twice"):
        definitions.register(two_steps(JobDefinitionBuilder("JOB", 1)).build())


def test_a_new_job_uses_the_highest_version_and_old_versions_stay_reachable():
    definitions = JobDefinitionRegistry()
    for version in (1, 3, 2):
        definitions.register(two_steps(JobDefinitionBuilder("JOB", version)).build())

    assert definitions.latest("JOB").version == 3
    assert definitions.get("JOB", 1).version == 1
    with pytest.raises(UnknownJobDefinition):
        definitions.latest("OTHER")
    with pytest.raises(UnknownJobDefinition):
        definitions.get("JOB", 4)


def test_the_diagnostic_jobs_are_registered_at_start_up_and_again_is_an_error():
    from batch.diagnostics import DIAGNOSTIC_NOOP

    assert {"DIAGNOSTIC_NOOP", "DIAGNOSTIC_NOOP_GATED"} <= set(registry.ids())
    assert registry.latest("DIAGNOSTIC_NOOP_GATED").gated
    with pytest.raises(DuplicateJobDefinition):
        register(DIAGNOSTIC_NOOP)
