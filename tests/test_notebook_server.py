"""examples/quickstart.ipynb whole, its NDIF cell included, against a local NDIF stack.

Its own module: xdist joins a module's group with a test's own (``notebook`` + ``ndif_stack`` became a third group
that ran beside the other stack tests, two Ray stacks at once); here the only group is ``ndif_stack``.
"""

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient
from test_notebook import (
    LOGIT_ROUNDING,
    SERVER_TAG,
    cell_errors,
    code_cells,
    printed_sizes,
    read_notebook,
    tags,
    text_of,
)
from tolerances import probability_bound

# one local NDIF stack at a time: with the other stack tests, on one worker
pytestmark = [pytest.mark.server, pytest.mark.xdist_group("ndif_stack")]


def test_the_remote_cell_runs_on_a_local_ndif_server(tmp_path):
    """The whole notebook, server cells included, against a local NDIF stack found as `mapflow ndif up` leaves it
    (MAPFLOW_NDIF_HOME): the remote run gives the local numbers."""
    from ndif_stacks import new_home, require_server_env, stand_up

    from mapflow.ndif_local import stack

    require_server_env()
    reuse = os.environ.get("MAPFLOW_TEST_NDIF_HOME")  # a stack already up, kept up afterwards
    home = reuse if reuse and stack.running_stack_host(reuse) else new_home()
    if home != reuse:
        stand_up(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAPFLOW_NDIF_")}  # nothing else chooses the host
    notebook = read_notebook()
    try:
        client = NotebookClient(
            notebook, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}}
        )
        client.execute(env={**env, "MAPFLOW_NDIF_HOME": str(home), "TMPDIR": str(tmp_path)})
    finally:
        if home != reuse:
            stack.down(home)
        nbformat.write(notebook, tmp_path / "executed.ipynb")  # kept for reading when the test fails
    errors = cell_errors(notebook)
    assert not errors, errors[0]
    server = next(cell for cell in notebook.cells if SERVER_TAG in tags(cell))
    printed = text_of(server)
    local = [cell for cell in code_cells(notebook) if SERVER_TAG not in tags(cell)]
    assert printed_sizes([server], "condition") == printed_sizes(local, "condition"), printed
    difference = float(re.search(r"local run \(percentage points\): (\S+)", printed).group(1))
    # the server's actor runs the same float32 forward: the lens probabilities agree to float32 rounding (percent)
    assert difference <= 100 * probability_bound(1.0, LOGIT_ROUNDING), printed
