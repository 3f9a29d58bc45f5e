"""Helpers shared by the tests, one module per kind:

- ``clips``: the small preprocessing settings of the session's store and checks of what
  preprocessing wrote;
- ``cluster``: ``cluster/local.sh`` clusters (a head and worker nodes on this machine);
- ``env``: the caller's Ray, S3 and finegym-ray settings hidden from the tests;
- ``hostile``: what a hostile file holds (a pickle that runs code, a YAML alias bomb);
- ``media``: small real videos whose frames show their own number;
- ``output``: checks of what commands print;
- ``processes``: the processes this test session started, found by pid;
- ``rays``: Rays started beside the session's cluster (a notebook's, a driver's own);
- ``s3``: a real S3 server (SeaweedFS) for tests.
"""
