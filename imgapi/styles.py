"""Named styles and uploaded paintings -> the statistics that the universal stylizer works with.

A named style of kind ``preset`` is a small ``.npz`` of statistics in the weights (``weights/presets/``),
checked against its sha256 like every weights file. A painting a user uploads (``style_image``) is decoded
with the same limits and errors as the photo, and reduced once: its statistics are kept by the sha256 of its
bytes (:class:`imgapi.universal.StatsCache`), so a second photo in the same painting skips that work.
"""
from functools import lru_cache

from imgapi import images
from imgapi.errors import ApiError, unavailable
from imgapi.stylize import alpha_for
from imgapi.universal import (StatsCache, bf16_units, load_stats, served_settings, style_statistics,
                              stylize_universal)

ENCODER, DECODER = "universal/encoder", "universal/decoder"


@lru_cache(maxsize=1)
def precision():
    """'bf16' where the CPU has bf16 units (the universal model's photo in 0.64x float32's time at 512 px,
    docs/models.md), else 'fp32'."""
    return "bf16" if bf16_units() else "fp32"


class UniversalStyles:
    """The universal stylizer over a model store: presets, paintings and the statistics cache."""

    def __init__(self, store, cache_size=16):
        self.store = store
        self.cache = StatsCache(cache_size)

    def _modules(self):
        try:
            return self.store.get(ENCODER), self.store.get(DECODER)
        except KeyError:
            raise unavailable("model_missing", "the universal style model is not in this deployment's "
                                               "weights manifest (its weights were not deployed).") from None

    def load(self):
        """Load the encoder and decoder now (503 ``model_missing`` when they are not deployed): for callers
        that want a missing model reported once, before any image (the CLI)."""
        self._modules()

    @property
    def sha256(self):
        """The decoder's sha256 (the file that makes a universal result what it is)."""
        entry = self.store.entry(DECODER) or {}
        return entry.get("sha256", "")

    def preset(self, name):
        """``(statistics, about)`` of the named style ``name`` (a manifest entry of kind ``preset``)."""
        entry = self.store.entry(f"style/{name}")

        def compute():  # on a cache miss only: the file is fetched and its sha256 checked once, not per request
            try:
                return load_stats(self.store.file(entry["file"], entry["sha256"]))
            except (OSError, ValueError) as exc:
                raise unavailable("model_load_failed", f"style {name} could not be loaded ({exc}).") from None
        return (lambda: self.cache.get("preset/" + entry["sha256"], compute)), {"style": name}

    def painting(self, data, config):
        """``(statistics, about)`` of an uploaded painting's bytes; decoded now (its 4xx errors name the
        field), reduced to statistics only when the returned function is called (in an inference slot)."""
        try:
            rgb, _ = images.decode(data, config.max_stylize_pixels, arrays=True)
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"style_image: {exc.message}", exc.headers) from None
        key = StatsCache.key(data)
        encoder = None

        def compute():
            return style_statistics(encoder.module, rgb)

        def stats():
            nonlocal encoder
            encoder = self._modules()[0]
            return self.cache.get("painting/" + key, compute)
        return stats, {"style_image": key[:12]}

    def stylize(self, rgb, alpha, stats, *, strength, preserve_color, max_side):
        """``(out, alpha)``: ``rgb`` ((H, W, 3) uint8) restyled with ``stats()``; alpha resized to match."""
        encoder, decoder = self._modules()
        # The deepest level the shipped decoder is used from and the photo's share of the finest one: chosen
        # by the side-by-side sheet and its figures (docs/models.md).
        out = stylize_universal(encoder.module, decoder.module, rgb, stats(), strength=strength,
                                preserve_color=preserve_color, max_side=max_side, precision=precision(),
                                **served_settings(decoder.entry))
        return out, alpha_for(out, alpha)
