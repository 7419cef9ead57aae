"""The deployment, checked offline: `sls package` of the real serverless.yml (the `ci` stage swaps the
Docker build for a prebuilt image URI, so neither Docker nor AWS is needed), assertions on the
CloudFormation template it generates, cfn-lint on that template, and the Dockerfile's promises.

Needs Node and `npm ci` (.ci/install-node.sh); without them the template tests are skipped locally and
fail under CI.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SLS = REPO / "node_modules" / ".bin" / "sls"
CI_IMAGE_URI = (
    "000000000000.dkr.ecr.us-east-1.amazonaws.com/imgapi@sha256:" + "0" * 64
)


def _package(out_dir: Path, *params: str) -> dict:
    """Run `sls package --stage ci` into out_dir and return the update-stack template."""
    if not SLS.exists() or shutil.which("node") is None:
        message = "osls is not installed: run .ci/install-node.sh (npm ci)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    env = {
        **os.environ,
        # Fake credentials, no profile: packaging must not need (or touch) a real account.
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_CONFIG_FILE": "/nonexistent/aws-config",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
        "NPM_CONFIG_UPDATE_NOTIFIER": "false",
    }
    env.pop("AWS_PROFILE", None)
    command = [str(SLS), "package", "--stage", "ci", "--package", str(out_dir)]
    command += [f"--param={param}" for param in params]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, f"sls package failed:\n{result.stdout}\n{result.stderr}"
    return json.loads((out_dir / "cloudformation-template-update-stack.json").read_text())


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("sls-package")
    return out_dir, _package(out_dir)


@pytest.fixture(scope="module")
def template(packaged):
    return packaged[1]


def _of_type(template: dict, kind: str) -> dict:
    return {name: res for name, res in template["Resources"].items() if res["Type"] == kind}


def _function(template: dict, name: str = "ApiLambdaFunction") -> dict:
    """The API function's properties (or the batch function's, tests/test_batch_deploy.py): no others."""
    functions = _of_type(template, "AWS::Lambda::Function")
    assert sorted(functions) == ["ApiLambdaFunction", "BatchLambdaFunction"]
    return functions[name]["Properties"]


def _statements(template: dict, role: str | None = None) -> list[dict]:
    """Every statement of every identity policy in the template (of ``role`` only, when given), conditional
    ones included."""
    documents = []
    for name, resource in _of_type(template, "AWS::IAM::Role").items():
        if role is not None and name != role:
            continue
        documents += [policy["PolicyDocument"] for policy in resource["Properties"].get("Policies", [])]
    for resource in _of_type(template, "AWS::IAM::Policy").values():
        documents.append(resource["Properties"]["PolicyDocument"])
    statements = []
    for document in documents:
        for statement in document["Statement"]:
            if "Fn::If" in statement:
                _, when_true, when_false = statement["Fn::If"]
                statements += [s for s in (when_true, when_false) if s != {"Ref": "AWS::NoValue"}]
            else:
                statements.append(statement)
    return statements


def _as_list(value):
    return value if isinstance(value, list) else [value]


def test_function_runs_the_image_with_the_wsgi_handler(template):
    function = _function(template)
    assert function["PackageType"] == "Image"
    assert function["Code"] == {"ImageUri": CI_IMAGE_URI}
    assert function["ImageConfig"]["Command"] == ["handler.handler"]
    assert function["Architectures"] == ["x86_64"]


def test_default_memory_is_allowed_on_every_account_and_timeout_fits_api_gateway(template):
    # New and low-use accounts cap Lambda memory at 3008 MB: a first deploy above it fails and rolls back.
    function = _function(template)
    assert function["MemorySize"] <= 3008
    assert function["Timeout"] <= 29
    integration = next(iter(_of_type(template, "AWS::ApiGatewayV2::Integration").values()))["Properties"]
    assert integration["TimeoutInMillis"] >= function["Timeout"] * 1000


def test_environment_matches_the_api_contract(template):
    env = _function(template)["Environment"]["Variables"]
    assert env["MODEL_BUCKET"] == {"Ref": "ModelsBucket"}
    assert env["MODEL_PREFIX"] == "weights/"
    assert env["MODEL_CACHE_DIR"].startswith("/tmp/")  # the only writable path on Lambda
    assert env["RESULT_BUCKET"] == {
        "Fn::If": ["HasResultBucket", {"Ref": "ResultsBucket"}, {"Ref": "AWS::NoValue"}]
    }
    assert env["RESULT_PREFIX"] == "results/"
    assert 0 < int(env["RESULT_URL_EXPIRES"]) <= 900  # a presigned URL dies with the role's credentials
    assert env["CORS_ORIGINS"] == "*"


def test_http_api_sends_every_route_to_the_function_with_cors(template):
    (api,) = _of_type(template, "AWS::ApiGatewayV2::Api").values()
    assert api["Properties"]["ProtocolType"] == "HTTP"  # binary bodies arrive base64-encoded, no list needed
    cors = api["Properties"]["CorsConfiguration"]
    assert cors["AllowOrigins"] == ["*"]
    assert {"GET", "POST"} <= set(cors["AllowMethods"])
    assert "Content-Type" in cors["AllowHeaders"]
    (route,) = _of_type(template, "AWS::ApiGatewayV2::Route").values()
    assert route["Properties"]["RouteKey"] == "$default"  # /, /upscale, /stylize, /styles, /health...
    (integration,) = _of_type(template, "AWS::ApiGatewayV2::Integration").values()
    assert integration["Properties"]["IntegrationType"] == "AWS_PROXY"
    assert integration["Properties"]["PayloadFormatVersion"] == "2.0"
    assert integration["Properties"]["IntegrationUri"] == {"Fn::GetAtt": ["ApiLambdaFunction", "Arn"]}


def test_public_api_is_throttled(template):
    (stage,) = _of_type(template, "AWS::ApiGatewayV2::Stage").values()
    settings = stage["Properties"]["DefaultRouteSettings"]
    assert 0 < settings["ThrottlingRateLimit"] <= settings["ThrottlingBurstLimit"] <= 100


def test_iam_has_no_wildcard_resource_or_action(template):
    statements = _statements(template)
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        for resource in _as_list(statement["Resource"]):
            assert resource != "*"
            assert "*" not in json.dumps(resource).replace("/*", "")  # only "every key under PREFIX"
        for action in _as_list(statement["Action"]):
            assert "*" not in action


def test_iam_reads_models_prefix_and_writes_results_prefix_only(template):
    function = _function(template)
    assert function["Role"] == {"Fn::GetAtt": ["ApiRole", "Arn"]}
    assert "IamRoleLambdaExecution" not in template["Resources"]  # the framework's broader default role
    s3 = {}
    for statement in _statements(template, "ApiRole"):
        actions = _as_list(statement["Action"])
        if any(action.startswith("s3:") for action in actions):
            (resource,) = _as_list(statement["Resource"])
            s3[json.dumps(resource, sort_keys=True)] = sorted(actions)
    models = {"Fn::Join": ["", [{"Fn::GetAtt": ["ModelsBucket", "Arn"]}, "/weights/*"]]}
    results = {"Fn::Join": ["", [{"Fn::GetAtt": ["ResultsBucket", "Arn"]}, "/results/*"]]}
    assert s3 == {
        json.dumps(models, sort_keys=True): ["s3:GetObject"],
        json.dumps(results, sort_keys=True): ["s3:GetObject", "s3:PutObject"],
    }


def test_logs_only_to_the_functions_own_log_group(template):
    logs = [s for s in _statements(template, "ApiRole") if any(a.startswith("logs:") for a in _as_list(s["Action"]))]
    assert logs == [
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": [{"Fn::GetAtt": ["ApiLogGroup", "Arn"]}],
        }
    ]
    assert template["Resources"]["ApiLogGroup"]["Properties"]["LogGroupName"] == "/aws/lambda/imgapi-ci-api"


def test_buckets_are_private_and_results_expire_after_a_day(template):
    buckets = _of_type(template, "AWS::S3::Bucket")
    for name in ("ModelsBucket", "ResultsBucket"):
        block = buckets[name]["Properties"]["PublicAccessBlockConfiguration"]
        assert all(block[key] is True for key in (
            "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    results = buckets["ResultsBucket"]
    assert results["Condition"] == "HasResultBucket"
    (rule,) = results["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rule["Status"] == "Enabled"
    assert rule["Prefix"] == "results/"
    assert rule["ExpirationInDays"] == 1
    assert "LifecycleConfiguration" not in buckets["ModelsBucket"]["Properties"]
    assert template["Parameters"]["ResultBucket"]["Default"] == "true"


def test_buckets_refuse_plain_http(template):
    policies = {res["Properties"]["Bucket"]["Ref"]: res for res in _of_type(template, "AWS::S3::BucketPolicy").values()
                if isinstance(res["Properties"]["Bucket"], dict)}
    for bucket in ("ModelsBucket", "ResultsBucket"):
        (statement,) = policies[bucket]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny" and statement["Action"] == "s3:*"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": False}}
        assert {"Fn::GetAtt": [bucket, "Arn"]} in statement["Resource"]
    assert policies["ResultsBucket"]["Condition"] == "HasResultBucket"


def test_outputs_name_what_upload_weights_needs(template):
    outputs = template["Outputs"]
    assert outputs["ModelBucketName"]["Value"] == {"Ref": "ModelsBucket"}
    assert outputs["ModelPrefix"]["Value"] == "weights/"
    assert outputs["ResultBucketName"]["Value"] == {"Ref": "ResultsBucket"}


def test_parameters_switch_memory_and_the_results_bucket(tmp_path):
    template = _package(tmp_path, "memory=10240", "resultBucket=false")
    assert _function(template)["MemorySize"] == 10240
    assert template["Parameters"]["ResultBucket"]["Default"] == "false"


def test_template_passes_cfn_lint(packaged):
    out_dir, _ = packaged
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    # W3005: the framework writes DependsOn for resources that a GetAtt/Ref already orders; harmless.
    result = subprocess.run(
        [str(cfn_lint), "--ignore-checks", "W3005", "--",
         str(out_dir / "cloudformation-template-update-stack.json")],
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_osls_is_pinned_exactly():
    package = json.loads((REPO / "package.json").read_text())
    version = package["devDependencies"]["osls"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), version
    lock = json.loads((REPO / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/osls"]["version"] == version


# The Dockerfile cannot be built here (no Docker engine); these check what a build would do.

def _dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_image_starts_from_the_lambda_python_base_and_runs_the_handler():
    dockerfile = _dockerfile()
    assert re.search(r"^FROM public\.ecr\.aws/lambda/python:3\.1[2-9]\s*$", dockerfile, re.M)
    assert re.search(r'^CMD \["handler\.handler"\]\s*$', dockerfile, re.M)
    user = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0")


def test_image_installs_cpu_torch_and_serving_requirements_only():
    dockerfile = _dockerfile()
    assert re.search(r"ARG TORCH_INDEX_URL=\S+/whl/cpu$", dockerfile, re.M)
    assert '--index-url "${TORCH_INDEX_URL}" "${torch_req}"' in dockerfile
    assert "torch.version.cuda is None" in dockerfile  # the build fails on a CUDA wheel
    assert "pip install --no-cache-dir -r requirements.txt" in dockerfile
    assert "requirements-train" not in dockerfile and "requirements-test" not in dockerfile
    copied = re.findall(r"^COPY\s+(\S+)", dockerfile, re.M)
    assert set(copied) == {"requirements.txt", "handler.py", "imgapi/"}
    assert re.search(r"^COPY handler\.py batch_handler\.py \$\{LAMBDA_TASK_ROOT\}/$", dockerfile, re.M)


def _local_imports(path: Path) -> set[Path]:
    """Repo files that a module imports, directly or not (absolute imports of top-level packages)."""
    seen, todo = set(), [path]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for node in ast.walk(ast.parse(current.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for name in names:
                base = REPO.joinpath(*name.split("."))
                for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                    if candidate.is_file():
                        todo.append(candidate)
    return seen


@pytest.mark.parametrize("entry", ["handler.py", "batch_handler.py"])
def test_image_holds_every_module_the_handler_imports(entry):
    copied = {p for line in re.findall(r"^COPY\s+(.+)$", _dockerfile(), re.M) for p in line.split()[:-1]}
    copied = {p.rstrip("/") for p in copied}
    needed = {f.relative_to(REPO).parts[0] for f in _local_imports(REPO / entry)}
    assert "imgapi" in needed and entry in needed
    assert needed <= copied, f"serving imports {needed - copied}, which the Dockerfile does not copy"


def _docker_context_includes(path: str) -> bool:
    """Whether a path is sent to the Docker build (.dockerignore: last matching pattern wins)."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if pattern.startswith("**/"):
            hit = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            hit = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
        if hit:
            included = negate
    return included


@pytest.mark.parametrize("path", [
    "data/div2k/0001.png", "checkpoints/srgan.pth", ".venv/bin/python", ".venv-deploy/bin/python",
    "tests/test_deploy.py",
    "node_modules/osls/package.json", "artifacts/run.log", "training/train_sr.py", ".git/HEAD",
    "imgapi/__pycache__/app.cpython-311.pyc", ".serverless/serverless-state.json",
    "weights/srgan.pt", "model/srresnet.py",
])
def test_docker_context_leaves_out(path):
    assert not _docker_context_includes(path)


@pytest.mark.parametrize("path", [
    "handler.py", "batch_handler.py", "requirements.txt", "imgapi/app.py", "imgapi/static/index.html",
])
def test_docker_context_keeps(path):
    assert _docker_context_includes(path)


def test_header_never_suggests_a_deploy_without_the_weights():
    """A bare `sls deploy` leaves the models bucket empty: the header's first command must upload them too."""
    header = [line for line in (REPO / "serverless.yml").read_text().splitlines() if line.startswith("#")]
    commands = [line for line in header if re.match(r"#\s+(npx |make )", line)]
    assert commands[0].split("#")[1].strip().startswith("make deploy")
    assert not any(re.match(r"#\s+npx sls deploy", line) for line in commands)
    assert any("make upload-weights" in line for line in header)


def test_throttling_answers_are_documented_beside_the_setting():
    """Lambda's throttle reaches clients as API Gateway's bare 500: serverless.yml says so where the throttle
    is set, and the page reads both answers as "busy, retry" (tests/test_page.py)."""
    text = (REPO / "serverless.yml").read_text()
    header = text[: text.index("service:")]
    block = header[header.index("throttleRate, throttleBurst"):]
    assert "429" in block and "500" in block and "concurrency" in block
    app_js = (REPO / "imgapi" / "static" / "app.js").read_text()
    assert "function gatewayBusyMessage" in app_js
