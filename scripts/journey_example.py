"""An example of your own photo journey for the evaluation's robustness channels.

``briarpatch evaluate patch=default 'eval.robustness=[identity,call:scripts/journey_example.py:deploy]'``
sends every photo, clean and patched, through ``deploy`` before the encoder. A channel is any
function of the 8-bit RGB photo (a PIL image, the patch already pasted) that returns what the
model gets: a PIL image, a uint8 array or a [0, 1] tensor, every photo at one size. Random
draws (Python's ``random``, NumPy's and torch's global generators, so torchvision's random
transforms too) are seeded per photo: its clean and patched copies get the same draw.
"""

import io
import random

from PIL import Image
from torchvision import transforms

# torchvision's evaluation preprocessing at the benchmark's 128 px (resize the shorter side to
# 146, crop the centre 128: the 0.875 ratio of Resize(256) + CenterCrop(224)).
_resize_and_crop = transforms.Compose([transforms.Resize(146), transforms.CenterCrop(128)])


def deploy(photo: Image.Image) -> Image.Image:
    """A photo uploaded somewhere that saves it as JPEG at a quality of its own (60-95), then fed
    to a model through the standard resize and centre crop."""
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=random.randint(60, 95))
    return _resize_and_crop(Image.open(buf).convert("RGB"))


#: A model owner's training augmentation, as a journey: a random crop of 70-100 % of the area,
#: resized back, and a coin-flip mirror.
augment = transforms.Compose([transforms.RandomResizedCrop(128, scale=(0.7, 1.0)), transforms.RandomHorizontalFlip()])


if __name__ == "__main__":
    # `python scripts/journey_example.py [overrides]`: the shipped patch (or patch=PATH) through both
    # journeys, the evaluation docs/robustness.md ("Your own journey") reports.
    import argparse
    import sys
    from pathlib import Path

    from briarpatch.cli import main

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + " Run, it evaluates a patch through "
                                     "both journeys below; overrides (patch=PATH, eval.*) go to briarpatch evaluate.")
    _, overrides = parser.parse_known_args()
    here = Path(__file__).resolve()
    journeys = f"eval.robustness=[identity,call:{here}:deploy,call:{here}:augment]"
    sys.exit(main(["evaluate", "patch=default", journeys, "eval.baselines=false", *overrides]))
