"""The input limits and the SR tile follow the Lambda function's memory (issue 14, item 1): whatever memory
is deployed, the largest upscale fits API Gateway's 29 s, and the tiles fit the memory."""
import pytest

from imgapi.config import SR_COMPUTE_BUDGET_S, Config, limits_for_memory, sr_seconds

LAMBDA = {"AWS_LAMBDA_FUNCTION_NAME": "imgapi-dev-api"}


@pytest.mark.parametrize("memory_mb", [1024, 1769, 2048, 3008, 4096, 5308, 10240])
def test_largest_upscale_fits_the_timeout_at_any_memory(memory_mb):
    config = Config.from_env({**LAMBDA, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb)})
    assert sr_seconds(config.max_upscale_pixels, memory_mb) <= SR_COMPUTE_BUDGET_S
    assert 64 * 64 <= config.max_upscale_pixels <= 512 * 512
    assert config.tile == (256 if memory_mb >= 2048 else 128)


def test_default_memory_gets_smaller_limits_than_six_vcpus():
    at_3008 = Config.from_env({**LAMBDA, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "3008"})
    at_10240 = Config.from_env({**LAMBDA, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "10240"})
    assert at_3008.max_upscale_pixels == 448 * 448
    assert at_10240.max_upscale_pixels == 512 * 512
    # On 1.7 vCPUs the fixed 6-vCPU limit would take ~15 s of compute alone.
    assert sr_seconds(512 * 512, 3008) > SR_COMPUTE_BUDGET_S


def test_explicit_settings_win_and_local_defaults_are_unchanged():
    env = {**LAMBDA, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "MAX_UPSCALE_PIXELS": "1000", "TILE": "64"}
    config = Config.from_env(env)
    assert (config.max_upscale_pixels, config.tile) == (1000, 64)
    local = Config.from_env({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"})  # not on Lambda: ignored
    assert (local.max_upscale_pixels, local.tile) == (512 * 512, 256)


def test_limits_are_monotonic_in_memory():
    sides = [limits_for_memory(mb)["max_upscale_pixels"] for mb in range(1024, 10241, 256)]
    assert sides == sorted(sides)


def test_health_reports_the_memory_sized_limit(tiny_weights, monkeypatch):
    from imgapi.app import create_app
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "imgapi-dev-api")
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")
    monkeypatch.setenv("WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("TORCH_THREADS", "1")
    limits = create_app().test_client().get("/health").get_json()["limits"]
    assert limits["max_upscale_pixels"] == 448 * 448
