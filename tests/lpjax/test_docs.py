"""The docs: an example on every public name, and a site that renders offline."""

import html
import inspect
import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

import lpjax

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", lpjax.__all__)
def test_every_public_name_has_a_doctested_example(name):
    obj = getattr(lpjax, name)
    own = (getattr(obj, "__module__", None) or "").startswith("lpjax")
    if not (own and callable(obj)):
        pytest.skip(f"{name} is data, not a function or class of lpjax")
    assert ">>>" in (inspect.getdoc(obj) or ""), f"lpjax.{name} has no doctest example"


_KATEX_CHECK = """
const katex = require(process.argv[1]);
const maths = JSON.parse(require("fs").readFileSync(0, "utf8"));
const bad = [];
for (const [tex, display] of maths) {
  try { katex.renderToString(tex, {displayMode: display, output: "mathml", throwOnError: true}); }
  catch (e) { bad.push(tex.slice(0, 80) + ": " + e.message.slice(0, 120)); }
}
console.log(JSON.stringify(bad));
"""


@pytest.mark.slow
def test_the_site_loads_nothing_from_the_network_and_katex_parses_every_formula(tmp_path):
    pytest.importorskip("sphinxcontrib.katex")
    out = tmp_path / "html"
    subprocess.run(
        [sys.executable, "-m", "sphinx", "-E", "-q", "-b", "html", str(REPO / "docs"), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    pages = list(out.rglob("*.html"))
    remote = [
        (page.name, src)
        for page in pages
        for src in re.findall(
            r'<(?:script|link)[^>]*(?:src|href)="(https?://[^"]+)"', page.read_text()
        )
    ]
    assert not remote, remote
    assert (out / "_static" / "katex.min.js").is_file()
    maths = []
    for page in pages:
        for body in re.findall(
            r'<(?:span|div) class="math[^"]*"[^>]*>(.*?)</(?:span|div)>', page.read_text(), re.S
        ):
            tex = html.unescape(re.sub(r"<[^>]+>", "", body)).strip()
            display = not tex.startswith("\\(")
            maths.append((tex[2:-2] if tex[:2] in ("\\(", "\\[") else tex, display))
    assert len(maths) > 100
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node: KaTeX's parse of the formulas is not checked")
    check = subprocess.run(
        [node, "-e", _KATEX_CHECK, str(out / "_static" / "katex.min.js")],
        input=json.dumps(maths),
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(check.stdout) == []
