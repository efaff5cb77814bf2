"""deploy/cloudformation.yaml: valid for CloudFormation, and in agreement with the platform."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]
from django.conf import settings

from tests.deploy.environment import DEPLOY, documented_environment, run_manage

TEMPLATE_PATH = DEPLOY / "cloudformation.yaml"
CFN_LINT = Path(sys.executable).parent / "cfn-lint"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return dict(cfn_yaml.load(str(TEMPLATE_PATH)))


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


def queue_named(template: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """The logical id and properties of the queue whose name is `${QueuePrefix}<name>`."""
    for logical_id, queue in resources_of_type(template, "AWS::SQS::Queue").items():
        if queue["Properties"]["QueueName"] == {"Fn::Sub": "${QueuePrefix}" + name}:
            return logical_id, queue["Properties"]
    raise AssertionError(f"no queue named {name} in the template")


def alarms_on(template: dict[str, Any], logical_id: str) -> dict[str, str]:
    """Alarm metric name -> alarm logical id, for the alarms watching one queue."""
    found = {}
    for alarm_id, alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").items():
        dimensions = alarm["Properties"]["Dimensions"]
        if dimensions == [
            {"Name": "QueueName", "Value": {"Fn::GetAtt": [logical_id, "QueueName"]}}
        ]:
            found[alarm["Properties"]["MetricName"]] = alarm_id
    return found


def test_cfn_lint_finds_nothing_in_the_template() -> None:
    result = subprocess.run(
        [str(CFN_LINT), str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_cfn_lint_rejects_a_broken_template(tmp_path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        TEMPLATE_PATH.read_text().replace(
            "deadLetterTargetArn: !GetAtt IncomingDeadLetterQueue.Arn",
            "deadLetterTargetArn: !GetAtt MissingDeadLetterQueue.Arn",
        )
    )

    result = subprocess.run(
        [str(CFN_LINT), str(broken)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert result.returncode != 0
    assert "MissingDeadLetterQueue" in result.stdout


@pytest.mark.parametrize("queue", settings.WORK_QUEUES)
def test_every_work_queue_has_its_dead_letter_queue_and_alarms(template, queue) -> None:
    queue_id, properties = queue_named(template, queue)
    dlq_id, dlq_properties = queue_named(template, queue + settings.DEAD_LETTER_SUFFIX)

    assert properties["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert properties["VisibilityTimeout"] == {"Ref": "VisibilityTimeoutSeconds"}
    assert properties["MessageRetentionPeriod"] == {"Ref": "MessageRetentionSeconds"}
    assert dlq_properties["MessageRetentionPeriod"] == {"Ref": "DeadLetterRetentionSeconds"}
    assert set(alarms_on(template, queue_id)) == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateAgeOfOldestMessage",
    }
    dlq_alarm = template["Resources"][
        alarms_on(template, dlq_id)["ApproximateNumberOfMessagesVisible"]
    ]["Properties"]
    # One dead letter is already worth a look.
    assert (dlq_alarm["Threshold"], dlq_alarm["ComparisonOperator"]) == (0, "GreaterThanThreshold")


def test_the_template_holds_no_queue_the_platform_does_not_use(template) -> None:
    names = {
        q["Properties"]["QueueName"]["Fn::Sub"].removeprefix("${QueuePrefix}")
        for q in resources_of_type(template, "AWS::SQS::Queue").values()
    }

    expected = set(settings.WORK_QUEUES) | {
        q + settings.DEAD_LETTER_SUFFIX for q in settings.WORK_QUEUES
    }
    assert names == expected


def test_parameter_defaults_are_the_production_settings(template) -> None:
    # The settings as a production process sees them, not as the tests override them.
    result = run_manage(
        "shell",
        "-c",
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'prefix': s.SQS_QUEUE_PREFIX, 'visibility': s.SQS_VISIBILITY_TIMEOUT, "
        "'receives': s.SQS_MAX_RECEIVE_COUNT, 'dlq': s.SQS_DEAD_LETTER_RETENTION_SECONDS}))",
        env=documented_environment(),
    )
    assert result.returncode == 0, result.stderr
    production = json.loads(result.stdout.strip().splitlines()[-1])
    parameters = template["Parameters"]

    assert parameters["QueuePrefix"]["Default"] == production["prefix"]
    assert parameters["VisibilityTimeoutSeconds"]["Default"] == production["visibility"]
    assert parameters["MaxReceiveCount"]["Default"] == production["receives"]
    assert parameters["DeadLetterRetentionSeconds"]["Default"] == production["dlq"]
    # setup_queues leaves a work queue's retention at SQS's default of four days.
    assert parameters["MessageRetentionSeconds"]["Default"] == 4 * 24 * 3600


def test_archive_bucket_is_private_encrypted_versioned_and_ages_out(template) -> None:
    bucket = template["Resources"]["ArchiveBucket"]
    properties = bucket["Properties"]
    (rule,) = properties["LifecycleConfiguration"]["Rules"]
    retention_years = template["Parameters"]["ArchiveRetentionYears"]["Default"]
    days = template["Mappings"]["RetentionYears"][retention_years]["Days"]

    assert properties["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert properties["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["DeletionPolicy"] == "Retain"
    assert [(t["StorageClass"], t["TransitionInDays"]) for t in rule["Transitions"]] == [
        ("STANDARD_IA", 30),
        ("GLACIER", 90),
        ("DEEP_ARCHIVE", 270),
    ]
    assert rule["ExpirationInDays"] == {
        "Fn::FindInMap": ["RetentionYears", {"Ref": "ArchiveRetentionYears"}, "Days"]
    }
    assert retention_years == "7"
    assert 7 * 365 <= days <= 7 * 366


def test_retention_mapping_covers_every_allowed_year(template) -> None:
    allowed = template["Parameters"]["ArchiveRetentionYears"]["AllowedValues"]
    mapping = template["Mappings"]["RetentionYears"]

    assert sorted(allowed, key=int) == sorted(mapping, key=int)
    for years in allowed:
        assert int(years) * 365 <= mapping[years]["Days"] < (int(years) + 1) * 365


def policy_statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    statements = []
    for policy in role["Properties"]["Policies"]:
        if "Fn::If" in policy:  # an optional policy: its "when set" branch
            policy = policy["Fn::If"][1]
        statements.extend(policy["PolicyDocument"]["Statement"])
    return statements


def actions_on(statements: list[dict[str, Any]]) -> dict[str, list[Any]]:
    granted: dict[str, list[Any]] = {}
    for statement in statements:
        assert statement["Effect"] == "Allow"
        actions = statement["Action"]
        resources = statement["Resource"]
        for action in actions if isinstance(actions, list) else [actions]:
            granted.setdefault(action, []).extend(
                resources if isinstance(resources, list) else [resources]
            )
    return granted


def test_roles_grant_named_actions_on_named_resources_only(template) -> None:
    for role_id in ("WebRole", "WorkerRole"):
        granted = actions_on(policy_statements(template["Resources"][role_id]))
        for action, resources in granted.items():
            assert "*" not in action, f"{role_id} has a wildcard action {action}"
            # ListQueues has no resource to name; everything else names its resources.
            if action != "sqs:ListQueues":
                assert "*" not in resources, f"{role_id}: {action} on every resource"


def test_web_only_publishes_tasks_and_reads_no_archive(template) -> None:
    granted = actions_on(policy_statements(template["Resources"]["WebRole"]))

    assert "sqs:SendMessage" in granted
    assert not {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:CreateQueue"} & set(granted)
    assert not any(action.startswith("s3:") for action in granted)
    assert "secretsmanager:GetSecretValue" in granted


def test_workers_consume_dead_letter_and_use_the_archive(template) -> None:
    granted = actions_on(policy_statements(template["Resources"]["WorkerRole"]))
    work_queues = [
        {"Fn::GetAtt": [queue_named(template, q)[0], "Arn"]} for q in settings.WORK_QUEUES
    ]
    dead_letter_queues = [
        {"Fn::GetAtt": [queue_named(template, q + settings.DEAD_LETTER_SUFFIX)[0], "Arn"]}
        for q in settings.WORK_QUEUES
    ]

    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"):
        assert granted[action] == work_queues
    assert sorted(map(str, granted["sqs:SendMessage"])) == sorted(
        map(str, work_queues + dead_letter_queues)
    )
    assert {"s3:PutObject", "s3:GetObject", "s3:ListBucket"} <= set(granted)
    assert not {"sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes"} & set(granted)


def test_database_url_and_secrets_come_from_secret_stores_both_roles_may_read(template) -> None:
    parameters = template["Parameters"]
    secrets = [{"Ref": "DatabaseUrlSecretArn"}, {"Ref": "AppSecretsArn"}]

    for name in ("DatabaseUrlSecretArn", "AppSecretsArn"):
        assert "Default" not in parameters[name]
        assert "secretsmanager" in parameters[name]["AllowedPattern"]
    for role_id in ("WebRole", "WorkerRole"):
        granted = actions_on(policy_statements(template["Resources"][role_id]))
        assert granted["secretsmanager:GetSecretValue"] == secrets
        assert granted["ssm:GetParameter"] == secrets
