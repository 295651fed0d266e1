"""DSTA on stattn: the example as a package (`pip install -e examples/dsta`, then `import dsta`).

The modules are the example's scripts (`dsta.model`, `dsta.train`, `dsta.evaluate`, `dsta.infer_video`,
...); importing the package itself is cheap and imports none of them.
"""
