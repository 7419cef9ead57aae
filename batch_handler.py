"""AWS Lambda entry point of the batch function: S3 ObjectCreated events of the batch bucket's input prefix
-> results (or failure files) in the same bucket (imgapi/batch.py has the layout).

Like handler.py, the settings are read once per container, at import; the app, torch and the models load on
the first image.
"""
import logging
import os

from imgapi.batch import Batch, BatchSettings, batch_config

logging.getLogger().setLevel(logging.INFO)
batch = Batch(BatchSettings.from_env(os.environ), batch_config(os.environ))


def handler(event, context):
    return batch.handle(event)
