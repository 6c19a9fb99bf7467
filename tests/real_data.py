"""Where the real-data tests find a full copy of Fashion-MNIST: ``$THREEFACTOR_DATA/fmnist`` first,
then Debian's ``dataset-fashion-mnist`` folder (the places ``threefactor train`` searches too)."""
import os
from pathlib import Path

from threefactor.data import download

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


def full_fmnist_dir():
    """The first folder holding all four Fashion-MNIST files, or None (the tests then skip)."""
    env = os.environ.get("THREEFACTOR_DATA")
    for folder in ([Path(env) / "fmnist"] if env else []) + [DEBIAN_FMNIST]:
        if folder.is_dir() and not download._missing_files("fmnist", folder):
            return folder
    return None


FULL_FMNIST = full_fmnist_dir()
SKIP_REASON = ("no full Fashion-MNIST: apt-get install dataset-fashion-mnist, or set $THREEFACTOR_DATA to a "
               "folder holding fmnist/")
