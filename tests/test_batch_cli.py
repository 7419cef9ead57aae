"""tools/batch.py (make batch) against moto_server: a folder uploaded with a progress bar, every result or
failure waited for and downloaded, a summary. ``--invoke-locally`` stands in for the bucket's notification:
after each upload the batch handler runs in this process with the S3 event the notification would send.
"""
from __future__ import annotations

import json

import pytest

from tests.helpers import decode_png, png_bytes
from tests.test_batch import BUCKET, batch  # noqa: F401  (the fixture: buckets, weights, environment)
from tools import batch as cli


def folder_of_photos(root):
    album = root / "Été album"
    (album / "day 1").mkdir(parents=True)
    (album / "day 1" / "a.png").write_bytes(png_bytes(12, 8, seed=1))
    (album / "b.png").write_bytes(png_bytes(8, 8, seed=2))
    (album / "notes.jpg").write_text("not a photo")
    (album / ".DS_Store").write_bytes(b"\0")
    return album


def test_upscale_a_folder_end_to_end(batch, tmp_path, capsys):  # noqa: F811
    album = folder_of_photos(tmp_path)
    out = tmp_path / "results"

    status = cli.main([str(album), "--op", "upscale", "--model", "srresnet", "--scale", "2", "--bucket", BUCKET,
                       "-o", str(out), "--invoke-locally", "--poll", "0.05", "--timeout", "60"])

    assert status == 1  # one file is not an image
    assert decode_png((out / "day 1" / "a.png").read_bytes()).size == (24, 16)
    assert decode_png((out / "b.png").read_bytes()).size == (16, 16)
    failure = json.loads((out / "failed" / "notes.jpg.json").read_text())
    assert failure["error"]["code"] == "unsupported_image"
    captured = capsys.readouterr()
    assert "3 files" in captured.out and "2 done, 1 failed" in captured.out
    assert "notes.jpg: unsupported_image" in captured.out
    assert "upload   [" in captured.err and "100.0%" in captured.err  # the progress bars
    s3 = batch[1]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "in/upscale/srresnet/x2/Été album/day 1/a.png" in keys  # the folder's name, then its paths
    assert not any(".DS_Store" in k for k in keys)


def test_stylize_options_reach_the_key(batch, tmp_path, capsys):  # noqa: F811
    album = tmp_path / "p"
    album.mkdir()
    (album / "x.png").write_bytes(png_bytes(8, 8))
    status = cli.main([str(album), "--op", "stylize", "--style", "mosaic", "--strength", "0.5", "--preserve-color",
                       "--bucket", BUCKET, "--invoke-locally", "--poll", "0.05"])
    assert status == 0
    assert (tmp_path / "p_stylize" / "x.png").is_file()
    keys = {o["Key"] for o in batch[1].list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert "out/stylize/mosaic/strength=0.5/preserve_color=true/p/x.png" in keys


def test_waits_only_for_the_objects_it_uploaded_and_reports_a_timeout(batch, tmp_path, capsys):  # noqa: F811
    album = tmp_path / "p"
    album.mkdir()
    (album / "x.png").write_bytes(png_bytes(8, 8))
    # A result of an earlier upload of another version is there: it must not be taken for this one's.
    s3 = batch[1]
    s3.put_object(Bucket=BUCKET, Key="out/upscale/srgan/x4/p/x.png", Body=b"old", Metadata={"input-etag": "0" * 32})
    status = cli.main([str(album), "--op", "upscale", "--bucket", BUCKET, "--poll", "0.05", "--timeout", "0.3"])
    assert status == 1
    assert "1 without an answer" in capsys.readouterr().out
    assert not (tmp_path / "p_upscale" / "x.png").exists()


def test_refuses_files_whose_results_would_collide(batch, tmp_path):  # noqa: F811
    album = tmp_path / "p"
    album.mkdir()
    (album / "x.png").write_bytes(png_bytes(8, 8))
    (album / "x.jpg").write_bytes(png_bytes(8, 8))
    with pytest.raises(SystemExit, match="same result"):
        cli.main([str(album), "--op", "upscale", "--bucket", BUCKET])
    assert "Contents" not in batch[1].list_objects_v2(Bucket=BUCKET)  # nothing uploaded


def test_the_stack_names_the_bucket_and_its_prefixes(batch, tmp_path, capsys):  # noqa: F811
    """--stack reads BatchBucketName and the prefixes from the stack's outputs (moto's CloudFormation)."""
    import boto3
    template = {"Resources": {"Queue": {"Type": "AWS::SQS::Queue"}}, "Outputs": {
        "BatchBucketName": {"Value": BUCKET}, "BatchInputPrefix": {"Value": "in/"},
        "BatchOutputPrefix": {"Value": "out/"}, "BatchFailedPrefix": {"Value": "failed/"}}}
    boto3.client("cloudformation").create_stack(StackName="imgapi-ci", TemplateBody=json.dumps(template))
    album = tmp_path / "p"
    album.mkdir()
    (album / "x.png").write_bytes(png_bytes(8, 8))
    assert cli.main([str(album), "--op", "upscale", "--stack", "imgapi-ci", "--invoke-locally", "--poll", "0.05"]) == 0
    assert decode_png((tmp_path / "p_upscale" / "x.png").read_bytes()).size == (32, 32)
    assert cli.main([str(album), "--op", "upscale", "--stack", "no-such-stack"]) == 1
    assert "batch: stack 'no-such-stack'" in capsys.readouterr().err
