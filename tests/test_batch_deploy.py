"""The batch function in the packaged stack (`sls package --stage ci` of the real serverless.yml, as in
tests/test_deploy.py, whose cfn-lint test covers the same template): the function, the bucket's
notification and the permission behind it, the on-failure queue, the least-privilege role, and that
nothing the function can write can ever trigger it again.
"""
from __future__ import annotations

import json
import re

import pytest

from tests.test_deploy import CI_IMAGE_URI, _as_list, _function, _of_type, _package, _statements

PSEUDO = {"AWS::StackName": "imgapi-ci", "AWS::AccountId": "123456789012", "AWS::Region": "us-east-1",
          "AWS::Partition": "aws"}


def resolve(value, names=PSEUDO):
    """A template value with Ref, Fn::GetAtt (as ``<Logical>.Arn``), Fn::Join and Fn::Sub worked out for a
    made-up account, so that ARNs can be compared as the strings CloudFormation would make."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return [resolve(v, names) for v in value]
    (fn, arg), = value.items()
    if fn == "Ref":
        return names.get(arg, f"<{arg}>")
    if fn == "Fn::GetAtt":
        return f"<{arg[0]}.{arg[1]}>"
    if fn == "Fn::Join":
        return arg[0].join(resolve(v, names) for v in arg[1])
    if fn == "Fn::Sub":
        text, local = (arg, {}) if isinstance(arg, str) else arg
        scope = dict(names, **{k: resolve(v, names) for k, v in local.items()})
        return re.sub(r"\$\{([^}]+)\}", lambda m: scope[m.group(1)], text)
    raise AssertionError(f"unexpected intrinsic {fn}")


BUCKET = "imgapi-ci-batch-123456789012-us-east-1"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return _package(tmp_path_factory.mktemp("sls-package-batch"))


def _env(template):
    return _function(template, "BatchLambdaFunction")["Environment"]["Variables"]


def test_batch_function_runs_the_same_image_with_its_own_handler_and_role(template):
    batch, api = _function(template, "BatchLambdaFunction"), _function(template)
    assert batch["PackageType"] == "Image" and batch["Code"] == api["Code"] == {"ImageUri": CI_IMAGE_URI}
    assert batch["ImageConfig"]["Command"] == ["batch_handler.handler"]
    assert batch["Timeout"] == 900  # Lambda's most; the upscale limit is sized to it (imgapi/batch.py)
    assert batch["MemorySize"] <= 3008  # allowed on every account, like the API's
    assert batch["Role"] == {"Fn::GetAtt": ["BatchRole", "Arn"]}
    env = _env(template)
    assert env["MODEL_BUCKET"] == {"Ref": "ModelsBucket"} and env["MAX_RESPONSE_BYTES"] == "0"
    assert env["RESULT_BUCKET"] == ""
    assert "batch" not in json.dumps(api).lower()  # the API function is not touched


def test_notification_fires_on_the_input_prefix_only(template):
    bucket = template["Resources"]["BatchBucket"]
    assert resolve(bucket["Properties"]["BucketName"]) == BUCKET
    (config,) = bucket["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    assert config["Event"] == "s3:ObjectCreated:*"
    assert config["Function"] == {"Fn::GetAtt": ["BatchLambdaFunction", "Arn"]}
    assert config["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": _env(template)["BATCH_INPUT_PREFIX"]}]}}
    assert set(bucket["Properties"]["NotificationConfiguration"]) == {"LambdaConfigurations"}


def test_no_key_the_function_writes_can_match_the_input_filter(template):
    """A key matches the notification iff it starts with the filter prefix. The function writes
    OUTPUT_PREFIX + path and FAILED_PREFIX + path for any path: none of them can start with the input prefix
    exactly when neither prefix starts with the input prefix nor the input prefix with either of them. The
    role agrees: it may put objects under those two prefixes only."""
    env = _env(template)
    (config,) = template["Resources"]["BatchBucket"]["Properties"]["NotificationConfiguration"]["LambdaConfigurations"]
    (rule,) = config["Filter"]["S3Key"]["Rules"]
    watched = rule["Value"]
    assert watched == env["BATCH_INPUT_PREFIX"] == "in/"
    for written in (env["BATCH_OUTPUT_PREFIX"], env["BATCH_FAILED_PREFIX"]):
        assert written and not written.startswith(watched) and not watched.startswith(written)
    puts = [resolve(r) for s in _statements(template, "BatchRole") if "s3:PutObject" in _as_list(s["Action"])
            for r in _as_list(s["Resource"])]
    assert sorted(puts) == [f"arn:aws:s3:::{BUCKET}/{env['BATCH_FAILED_PREFIX']}*",
                            f"arn:aws:s3:::{BUCKET}/{env['BATCH_OUTPUT_PREFIX']}*"]
    for arn in puts:
        assert not arn.startswith(f"arn:aws:s3:::{BUCKET}/{watched}")


def test_s3_may_invoke_the_batch_function_for_its_own_bucket_only(template):
    resources = template["Resources"]
    permissions = {n: r["Properties"] for n, r in _of_type(template, "AWS::Lambda::Permission").items()
                   if r["Properties"]["Principal"] == "s3.amazonaws.com"}
    assert list(permissions) == ["BatchLambdaPermissionS3"]
    permission = permissions["BatchLambdaPermissionS3"]
    assert permission["Action"] == "lambda:InvokeFunction"
    assert permission["FunctionName"] == {"Fn::GetAtt": ["BatchLambdaFunction", "Arn"]}
    assert resolve(permission["SourceArn"]) == f"arn:aws:s3:::{BUCKET}"
    assert permission["SourceAccount"] == {"Ref": "AWS::AccountId"}
    # S3 checks the permission when the notification is created: the bucket waits for it.
    assert "BatchLambdaPermissionS3" in resources["BatchBucket"]["DependsOn"]


def test_errors_that_escape_go_to_a_queue_after_lambdas_retries(template):
    (config,) = _of_type(template, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["FunctionName"] == {"Ref": "BatchLambdaFunction"}
    assert props["DestinationConfig"] == {"OnFailure": {"Destination": {"Fn::GetAtt": ["BatchFailuresQueue", "Arn"]}}}
    assert 0 <= props["MaximumRetryAttempts"] <= 2
    (name,) = _of_type(template, "AWS::SQS::Queue")
    assert name == "BatchFailuresQueue"
    queue = template["Resources"][name]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 24 * 3600 and queue["SqsManagedSseEnabled"] is True
    assert template["Outputs"]["BatchFailuresQueueUrl"]["Value"] == {"Ref": "BatchFailuresQueue"}


def test_batch_role_is_least_privilege(template):
    grants = {}
    for statement in _statements(template, "BatchRole"):
        assert statement["Effect"] == "Allow"
        for resource in _as_list(statement["Resource"]):
            grants.setdefault(resolve(resource), set()).update(_as_list(statement["Action"]))
    assert grants == {
        "<BatchLogGroup.Arn>": {"logs:CreateLogStream", "logs:PutLogEvents"},
        "<ModelsBucket.Arn>/weights/*": {"s3:GetObject"},
        f"arn:aws:s3:::{BUCKET}/in/*": {"s3:GetObject"},
        f"arn:aws:s3:::{BUCKET}/out/*": {"s3:GetObject", "s3:PutObject"},
        f"arn:aws:s3:::{BUCKET}/failed/*": {"s3:GetObject", "s3:PutObject"},
        "<BatchFailuresQueue.Arn>": {"sqs:SendMessage"},
    }
    assert template["Resources"]["BatchLogGroup"]["Properties"]["LogGroupName"] == "/aws/lambda/imgapi-ci-batch"
    # The API's role has nothing of the batch bucket or queue.
    assert "batch" not in json.dumps(_statements(template, "ApiRole")).lower()


def test_batch_bucket_is_private_tls_only_and_forgets_batches(template):
    props = template["Resources"]["BatchBucket"]["Properties"]
    block = props["PublicAccessBlockConfiguration"]
    assert all(block[key] is True for key in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"]
    (rule,) = props["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled" and 1 <= rule["ExpirationInDays"] <= 30
    (statement,) = template["Resources"]["BatchBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Deny" and statement["Condition"] == {"Bool": {"aws:SecureTransport": False}}
    outputs = template["Outputs"]
    assert outputs["BatchBucketName"]["Value"] == {"Ref": "BatchBucket"}
    assert [outputs[f"Batch{k}Prefix"]["Value"] for k in ("Input", "Output", "Failed")] == ["in/", "out/", "failed/"]


def test_batch_memory_is_a_parameter(tmp_path):
    template = _package(tmp_path, "batchMemory=10240")
    assert _function(template, "BatchLambdaFunction")["MemorySize"] == 10240
    assert _function(template)["MemorySize"] == 3008


def test_paintings_live_where_the_function_may_read_them(template):
    """``in/stylize/style_image=<painting>/...`` keys name a painting under ``in/paintings/``
    (imgapi/batch.py): inside the input prefix, because the role may read nothing else of the bucket (and
    cannot list it, so a missing painting reads as 403: reported as not found)."""
    from fnmatch import fnmatchcase

    from imgapi.batch import BatchSettings
    env = _env(template)
    settings = BatchSettings(env["BATCH_INPUT_PREFIX"], env["BATCH_OUTPUT_PREFIX"], env["BATCH_FAILED_PREFIX"])
    arn = f"arn:aws:s3:::{BUCKET}/{settings.painting_key('0f34.jpg')}"
    reads = [resolve(r) for s in _statements(template, "BatchRole") if "s3:GetObject" in _as_list(s["Action"])
             for r in _as_list(s["Resource"])]
    assert [r for r in reads if fnmatchcase(arn, r)] == [f"arn:aws:s3:::{BUCKET}/in/*"]
    assert not any("s3:ListBucket" in _as_list(s["Action"]) for s in _statements(template, "BatchRole"))
