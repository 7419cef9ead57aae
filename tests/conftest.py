"""Shared fixtures: tiny traced networks in a temporary weights folder, the app on top of them,
a Lambda context, and the moto_server fixtures of ``tests/moto_fixture.py``."""
import hashlib
import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from imgapi.app import create_app
from imgapi.config import Config
from model.srresnet import SRResNet
from tests.helpers import photo

pytest_plugins = ["tests.moto_fixture"]


class TinyStyle(nn.Module):
    """A stand-in style network: one 3x3 conv and a sigmoid, same size out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, padding_mode="replicate")

    def forward(self, x):
        return torch.sigmoid(self.conv(x) * 3 - 1)


def tiny_sr(seed=0):
    torch.manual_seed(seed)
    net = SRResNet(channels=8, blocks=2)
    nn.init.normal_(net.tail.weight, std=0.02)  # not the identity-over-bicubic start
    return net.eval()


def write_weights(folder):
    """Trace tiny SR and style nets into ``folder`` with a manifest; return the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    models = {}

    def add(name, net, file, **extra):
        with torch.inference_mode():
            traced = torch.jit.trace(net.eval(), torch.rand(1, 3, 16, 16), check_trace=False)
        torch.jit.save(traced, str(folder / file))
        sha = hashlib.sha256((folder / file).read_bytes()).hexdigest()
        models[name] = dict(file=file, sha256=sha, **extra)

    add("srgan", tiny_sr(0), "srgan.pt", kind="sr", scale=4)
    add("srresnet", tiny_sr(1), "srresnet.pt", kind="sr", scale=4)
    torch.manual_seed(2)
    add("style/mosaic", TinyStyle(), "style_mosaic.pt", kind="style", title="Mosaic",
        artist="Test", source="tests", licence="CC0-1.0", thumbnail="thumbs/mosaic.jpg")
    (folder / "thumbs").mkdir(exist_ok=True)
    photo(32, 32).save(folder / "thumbs" / "mosaic.jpg")
    manifest = {"models": models}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    write_weights(folder)
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
