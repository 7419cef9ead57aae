"""Read and update ``weights/manifest.json`` (format in docs/api.md) from training runs."""
import json
import os
import tempfile
from pathlib import Path

from imgapi.store import sha256_file


def update_manifest(weights_dir, name, entry):
    """Set ``models[name] = entry`` (adding ``sha256`` of ``entry["file"]``), atomically.

    Other entries are kept, so SR and style runs can write into the same manifest.
    """
    weights_dir = Path(weights_dir)
    path = weights_dir / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"models": {}}
    entry = dict(entry, sha256=sha256_file(weights_dir / entry["file"]))
    manifest["models"][name] = entry
    manifest["models"] = dict(sorted(manifest["models"].items()))
    fd, tmp = tempfile.mkstemp(dir=weights_dir, suffix=".json.tmp")
    os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the manifest is served and copied
    with os.fdopen(fd, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return entry
