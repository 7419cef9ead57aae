"""tools/batch.py (make batch) against moto_server: a folder uploaded with a progress bar, every result or
failure waited for and downloaded, a summary. ``--invoke-locally`` stands in for the bucket's notification:
after each upload the batch handler runs in this process with the S3 event the notification would send.
"""
from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image

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


def album_of(root, *sizes):
    album = root / "p"
    album.mkdir()
    for n, (w, h) in enumerate(sizes):
        (album / f"x{n}.png").write_bytes(png_bytes(w, h, seed=n))
    return album


def test_stylize_a_folder_with_any_painting(batch, tmp_path, capsys):  # noqa: F811
    from tools.fixtures import tiny_painting
    album = album_of(tmp_path, (20, 12), (16, 16))
    painting = tmp_path / "Wave.PNG"
    Image.fromarray(tiny_painting()).save(painting, "PNG")
    name = hashlib.sha256(painting.read_bytes()).hexdigest() + ".png"

    status = cli.main([str(album), "--op", "stylize", "--style-image", str(painting), "--strength", "0.5",
                       "--bucket", BUCKET, "--invoke-locally", "--poll", "0.05"])

    assert status == 0
    assert decode_png((tmp_path / "p_stylize" / "x0.png").read_bytes()).size == (20, 12)
    assert decode_png((tmp_path / "p_stylize" / "x1.png").read_bytes()).size == (16, 16)
    s3 = batch[1]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"in/paintings/{name}" in keys  # once, by its sha256
    assert f"out/stylize/style_image={name}/strength=0.5/p/x0.png" in keys
    meta = s3.head_object(Bucket=BUCKET, Key=f"out/stylize/style_image={name}/strength=0.5/p/x1.png")["Metadata"]
    assert meta["model"] == "universal" and meta["style-image"] == name[:12]
    captured = capsys.readouterr()
    assert f"painting Wave.PNG -> in/paintings/{name}" in captured.err and "2 done, 0 failed" in captured.out


def test_a_preset_by_name(batch, tmp_path):  # noqa: F811
    album = album_of(tmp_path, (16, 12))
    assert cli.main([str(album), "--op", "stylize", "--style", "stripes", "--bucket", BUCKET, "--invoke-locally",
                     "--poll", "0.05"]) == 0
    assert decode_png((tmp_path / "p_stylize" / "x0.png").read_bytes()).size == (16, 12)
    meta = batch[1].head_object(Bucket=BUCKET, Key="out/stylize/stripes/p/x0.png")["Metadata"]
    assert meta["model"] == "universal"


def test_a_bad_painting_fails_every_photo_with_the_apis_error(batch, tmp_path, capsys):  # noqa: F811
    album = album_of(tmp_path, (16, 12), (12, 12))
    painting = tmp_path / "painting.jpg"
    painting.write_text("not a painting")
    status = cli.main([str(album), "--op", "stylize", "--style-image", str(painting), "--bucket", BUCKET,
                       "--invoke-locally", "--poll", "0.05"])
    assert status == 1
    failure = json.loads((tmp_path / "p_stylize" / "failed" / "x0.png.json").read_text())["error"]
    assert failure["code"] == "unsupported_image" and failure["message"].startswith("style_image: ")
    out = capsys.readouterr().out
    assert "0 done, 2 failed" in out and "x1.png: unsupported_image: style_image: " in out


@pytest.mark.parametrize("style_args, message", [
    ([], "neither was given"),
    (["--style", "stripes", "--style-image", "painting.jpg"], "both were given"),
])
def test_exactly_one_of_style_and_style_image(batch, tmp_path, capsys, style_args, message):  # noqa: F811
    album = album_of(tmp_path, (8, 8))
    with pytest.raises(SystemExit) as info:
        cli.main([str(album), "--op", "stylize", *style_args, "--bucket", BUCKET])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "exactly one of --style NAME" in err and "--style-image PAINTING" in err and message in err
    assert "Contents" not in batch[1].list_objects_v2(Bucket=BUCKET)  # nothing uploaded


def test_a_painting_that_cannot_be_read_uploads_nothing(batch, tmp_path, capsys):  # noqa: F811
    album = album_of(tmp_path, (8, 8))
    assert cli.main([str(album), "--op", "stylize", "--style-image", str(tmp_path / "gone.jpg"),
                     "--bucket", BUCKET]) == 1
    assert f"batch: the painting {tmp_path / 'gone.jpg'} could not be read" in capsys.readouterr().err
    assert "Contents" not in batch[1].list_objects_v2(Bucket=BUCKET)
