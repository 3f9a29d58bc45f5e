"""Ray's side of the house, the one folder a Ray upgrade touches: joining or starting a
cluster (``connect.py``), what a command prints while Ray runs (``output.py``), and
every use of Ray's private APIs (``internals.py``). Nothing here imports Ray until a
function runs."""
