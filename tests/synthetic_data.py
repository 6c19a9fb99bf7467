"""Small datasets that tests write themselves, in the formats threefactor reads."""
import gzip

import numpy as np


def write_idx(path, arr):
    """Write ``arr`` (uint8 images (n, 28, 28) or labels (n,)) as a gzipped IDX file at ``path``
    (its folder made if missing)."""
    arr = np.asarray(arr)
    magic = 0x803 if arr.ndim == 3 else 0x801
    head = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(head + arr.astype(np.uint8).tobytes()))


def write_split(folder, split, images, labels):
    """One MNIST-family split (``"train"`` or ``"t10k"``) as the two IDX files of its standard names."""
    write_idx(folder / f"{split}-images-idx3-ubyte.gz", images)
    write_idx(folder / f"{split}-labels-idx1-ubyte.gz", labels)
