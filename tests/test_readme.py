"""The README's library example runs as written and trains."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_train_step_example_runs_and_lowers_the_loss():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has a python example"
    output = io.StringIO()
    namespace = {}
    with contextlib.redirect_stdout(output):
        exec(compile(blocks[0], "README.md", "exec"), namespace)
    final_loss = float(output.getvalue().split()[-1])
    # Zero weights give the initial (perturbed) loss; three SGD steps lower it.
    first_loss = namespace["loss_fn"](
        namespace["apply_fn"](
            {"w": namespace["params"]["w"] * 0, "b": namespace["params"]["b"] * 0},
            namespace["images"],
        ),
        namespace["labels"],
        namespace["transform"].init(),
    )[0].mean()
    assert final_loss < float(first_loss)
