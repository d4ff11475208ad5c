"""Same as `briarpatch train`: python scripts/train.py [hydra overrides]."""

from briarpatch.train import main

if __name__ == "__main__":
    main()
