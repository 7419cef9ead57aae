"""Image API: 4x super-resolution (SRGAN/SRResNet) and fast neural style transfer, served by one
WSGI app locally (``python -m imgapi serve``) and on AWS Lambda (``handler.py``)."""
import os

# torch's CPU thread pool is GNU OpenMP's, whose idle threads spin for up to 300,000 iterations after each
# parallel region before they sleep: after a forward, one of them holds a core that the PNG encoder running
# right after it needs. 10,000 iterations still span the gaps between the ops of a forward (forward times
# unchanged) and free the core for the encoder, which then runs faster (measured in docs/performance.md).
# libgomp reads it when torch loads it, so this runs before any ``import torch`` of the app; a value
# already in the environment wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")
