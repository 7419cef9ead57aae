"""Training pipeline (GPU or CPU). Serving never imports this package."""
