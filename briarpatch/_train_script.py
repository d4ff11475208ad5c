"""Script form of ``briarpatch train``.

Launchers that start extra processes by re-running ``sys.argv`` (Lightning's DDP launcher) need
``sys.argv[0]`` to be a real file; ``briarpatch train`` points it here.
"""

from briarpatch.train import main

if __name__ == "__main__":
    main()
