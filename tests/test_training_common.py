"""The trainers' shared choices: which precision and layout a run uses, and what it does without bf16 units."""
import pytest
import torch

from training import common

CPU = torch.device("cpu")


class FakeClock:
    """Stands in for ``time`` in ``training.common``: steps advance it by their given cost, so the choice
    depends on the costs alone, not on how busy the machine running the test is."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def costed_steps(seconds, monkeypatch):
    """``make_step`` whose steps cost the given seconds per (precision, channels_last), recording each call."""
    calls, clock = [], FakeClock()
    monkeypatch.setattr(common, "time", clock)

    def make_step(precision, channels_last):
        def step():
            calls.append((precision, channels_last))
            clock.now += seconds[(precision, channels_last)]
        return step
    return make_step, calls


def test_a_cpu_without_bf16_units_never_tries_bf16(monkeypatch):
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma"})
    make_step, calls = costed_steps({("fp32", False): 0.03, ("fp32", True): 0.01}, monkeypatch)
    setup = common.choose_precision(make_step, CPU)
    assert {p for p, _ in calls} == {"fp32"}
    assert setup["precision"] == "fp32" and setup["channels_last"] is True
    assert "no bf16 units" in setup["note"]
    assert set(setup["seconds"]) == {"fp32", "fp32 channels_last"}


@pytest.mark.parametrize("flag", ["avx512_bf16", "amx_bf16"])
def test_with_bf16_units_the_fastest_of_four_is_kept(monkeypatch, flag):
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", flag})
    make_step, calls = costed_steps({("fp32", False): 0.04, ("fp32", True): 0.03,
                                ("bf16", False): 0.02, ("bf16", True): 0.005}, monkeypatch)
    setup = common.choose_precision(make_step, CPU, trials=2)
    assert (setup["precision"], setup["channels_last"]) == ("bf16", True)
    # One untimed step and two timed ones for each candidate.
    assert len(calls) == 4 * 3
    assert setup["note"] is None


def test_slower_bf16_loses_to_fp32(monkeypatch):
    monkeypatch.setattr(common, "cpu_flags", lambda: {"amx_bf16"})
    make_step, _ = costed_steps({("fp32", False): 0.01, ("fp32", True): 0.02,
                            ("bf16", False): 0.05, ("bf16", True): 0.04}, monkeypatch)
    setup = common.choose_precision(make_step, CPU)
    assert (setup["precision"], setup["channels_last"]) == ("fp32", False)


def test_what_is_asked_for_explicitly_is_not_timed(monkeypatch):
    monkeypatch.setattr(common, "cpu_flags", lambda: {"amx_bf16"})
    make_step, calls = costed_steps({}, monkeypatch)
    setup = common.choose_precision(make_step, CPU, precision="fp32", channels_last="off")
    assert calls == [] and setup["seconds"] == {}
    assert (setup["precision"], setup["channels_last"]) == ("fp32", False)


def test_bf16_autocast_keeps_the_loss_in_fp32():
    net = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with common.autocast(CPU, "bf16"):
        y = net(x)
    assert y.dtype == torch.bfloat16
    with common.autocast(CPU, "fp32"):
        assert net(x).dtype == torch.float32


def test_cosine_schedule_runs_from_base_to_its_floor():
    assert common.cosine_lr(1e-3, 0.0) == pytest.approx(1e-3)
    assert common.cosine_lr(1e-3, 1.0, floor=0.02) == pytest.approx(2e-5)
    assert common.cosine_lr(1e-3, 0.5, floor=0.0) == pytest.approx(5e-4)
    assert common.cosine_lr(1e-3, 7.0) == common.cosine_lr(1e-3, 1.0)


def test_list_images_refuses_a_folder_without_images(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        common.list_images(tmp_path)
    with pytest.raises(ValueError, match="not a folder"):
        common.list_images(tmp_path / "missing")


def test_a_timing_budget_stops_the_timing_and_keeps_the_fastest_timed(monkeypatch):
    """A short run's budget counts the timing in, so the timing stops at its share: the likeliest fastest
    pairs are timed first, and the fastest of those timed wins."""
    monkeypatch.setattr(common, "cpu_flags", lambda: {"amx_bf16"})
    make_step, calls = costed_steps({("fp32", False): 0.5, ("fp32", True): 0.4,
                                     ("bf16", False): 2.0, ("bf16", True): 3.0}, monkeypatch)
    setup = common.choose_precision(make_step, CPU, budget_s=10.0)
    assert calls[0] == ("bf16", True) and len(set(calls)) == 2  # 9 s for the first pair, 6 for the second
    assert (setup["precision"], setup["channels_last"]) == ("bf16", False)
    assert "timing stopped after 2 of 4" in setup["note"]
