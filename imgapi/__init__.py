"""Image API: 4x super-resolution (SRGAN/SRResNet) and fast neural style transfer, served by one
WSGI app locally (``python -m imgapi serve``) and on AWS Lambda (``handler.py``)."""
