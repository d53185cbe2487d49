"""How the images are read, split and fed; ``datasets`` is the face the rest of the code imports.

sources.py    where a dataset's bytes come from: IDX files (local, Debian's, downloaded), torchvision's sets
folders.py    --dataset_type folder: scan, class labels, decoding in threads, the decoded-image cache, the hold-out
decode.py     one image file made 8-bit grey / RGB: transparency, bit depth, EXIF orientation, colour spaces, draft mode
reshape.py    centre-crop, resize and grey / colour conversion of any dataset's images
split.py      Split (one set of images), load_split (a training or test set), the 2018 train / validation split
placement.py  where a split lives while training (host or device, uint8 or float32), as_float, pixel statistics
augment.py    the 2018 flips and rotations, on whole batches
dsprites.py   the dSprites factor grid rendered offline (dsprites, dsprites_colour), each image's factors kept
"""
