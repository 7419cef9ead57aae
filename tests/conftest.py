"""Shared fixtures: tiny traced networks in a temporary weights folder, the app on top of them,
a Lambda context, and the moto_server fixtures of ``tests/moto_fixture.py``."""
import json
import shutil
from dataclasses import dataclass

import pytest

from imgapi.app import create_app
from imgapi.config import Config
from tools.fixtures import write_weights

pytest_plugins = ["tests.moto_fixture"]


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    write_weights(folder)
    return folder


@pytest.fixture(scope="session")
def real_weights(tiny_weights):
    """``tiny_weights``, which holds a tiny ``real`` model (``tools.fixtures.add_real``): the SR model
    conditioned on the damage level, the API's default."""
    return tiny_weights


@pytest.fixture(scope="session")
def weights_without_real(tiny_weights, tmp_path_factory):
    """``tiny_weights`` with ``real`` left out of the manifest, as a deployment may have it."""
    folder = tmp_path_factory.mktemp("weights-no-real")
    shutil.copytree(tiny_weights, folder, dirs_exist_ok=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["models"]["real"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def config(tiny_weights):
    return Config(weights_dir=tiny_weights, torch_threads=1, tile=64, max_upscale_pixels=64 * 64,
                  max_upload_bytes=200_000)


@pytest.fixture
def app(config):
    return create_app(config)


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class LambdaContext:
    """The attributes of a Lambda context object that code may read."""

    function_name: str = "imgapi-test-api"
    memory_limit_in_mb: int = 10240
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:imgapi-test-api"
    aws_request_id: str = "52fdfc07-2182-454f-963f-5f0f9a621d72"

    @staticmethod
    def get_remaining_time_in_millis():
        return 29_000


@pytest.fixture
def lambda_context():
    return LambdaContext()
