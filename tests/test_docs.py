"""Every public name of ``lamina.functional`` and ``lamina.nn`` carries a
PyTorch-style docstring: Args (naming only real parameters, and all of
them), Shape and an Example whose doctest runs on the CPU."""

from __future__ import annotations

import ast
import doctest
import inspect
import re

import pytest
import torch

import lamina
import lamina.functional
import lamina.nn

PUBLIC = [("functional", name) for name in lamina.functional.__all__] + [("nn", name) for name in lamina.nn.__all__]
IDS = [f"{where}.{name}" for where, name in PUBLIC]

# An Args entry: "name (type): text" or "name: text" at the section's first indent.
ARG_ENTRY = re.compile(r"^(\w+)\s*(\([^)]*\))?\s*:")
DEFAULT = re.compile(r"Default: ``([^`]*)``")


def _obj(where: str, name: str):
    return getattr(getattr(lamina, where), name)


def _own_doc(obj) -> str:
    """The object's own docstring: a class's ``__doc__`` is not inherited from
    its torch.nn base, so a missing one must fail here, not borrow torch's."""
    doc = obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc or "")


def _params(obj) -> list[str]:
    """Named parameters of the function, or of the class's constructor."""
    sig = inspect.signature(obj)
    return [p.name for p in sig.parameters.values()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name != "self"]


def _args_entries(doc: str) -> dict[str, str]:
    """Each entry under "Args:" as name -> its text (continuation lines joined)."""
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    base = len(lines[start]) - len(lines[start].lstrip())
    entry_indent = None
    entries: dict[str, str] = {}
    current = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            break  # the next section
        if entry_indent is None:
            entry_indent = indent
        if indent > entry_indent:
            if current is not None:
                entries[current] += " " + line.strip()
            continue
        current = None
        if line.strip().startswith("None:"):
            continue  # "None: ..." says the callable takes no arguments
        match = ARG_ENTRY.match(line.strip())
        assert match, f"Args line is not 'name (type): ...' or 'name: ...': {line.strip()!r}"
        current = match.group(1)
        assert current not in entries, f"argument {current!r} listed twice"
        entries[current] = line.strip()
    return entries


@pytest.mark.parametrize("where,name", PUBLIC, ids=IDS)
def test_docstring_has_sections(where, name):
    doc = _own_doc(_obj(where, name))
    for section in ("Args:", "Shape:", "Example"):
        assert section in doc, f"lamina.{where}.{name}: no {section!r} section"
    assert ":math:" in doc, f"lamina.{where}.{name}: no formula"


@pytest.mark.parametrize("where,name", PUBLIC, ids=IDS)
def test_args_match_signature(where, name):
    obj = _obj(where, name)
    documented = _args_entries(_own_doc(obj))
    params = _params(obj)
    unknown = [n for n in documented if n not in params]
    assert not unknown, f"lamina.{where}.{name}: Args names {unknown}, not in the signature {params}"
    undocumented = [n for n in params if n not in documented]
    assert not undocumented, f"lamina.{where}.{name}: parameters {undocumented} missing from Args"


@pytest.mark.parametrize("where,name", PUBLIC, ids=IDS)
def test_args_defaults_match_signature(where, name):
    """An argument with a default says "Default: ``value``", the value the
    signature has; a required one claims no default."""
    obj = _obj(where, name)
    documented = _args_entries(_own_doc(obj))
    for param in inspect.signature(obj).parameters.values():
        if param.name not in documented:
            continue
        match = DEFAULT.search(documented[param.name])
        if param.default is inspect.Parameter.empty:
            assert match is None, f"lamina.{where}.{name}: required {param.name!r} documents a default"
            continue
        assert match, f"lamina.{where}.{name}: {param.name!r} has no 'Default: ``...``' (signature: {param.default!r})"
        stated = ast.literal_eval(match.group(1))
        assert stated == param.default and type(stated) is type(param.default), (
            f"lamina.{where}.{name}: {param.name!r} documents Default {match.group(1)}, signature has {param.default!r}")


@pytest.mark.parametrize("where,name", PUBLIC, ids=IDS)
def test_examples_run(where, name, backend):
    backend("auto")  # CPU tensors: the NumPy reference
    obj = _obj(where, name)
    finder = doctest.DocTestFinder(recurse=False)
    tests = [t for t in finder.find(obj, f"lamina.{where}.{name}", globs={"torch": torch, "lamina": lamina})
             if t.examples]
    assert tests, f"lamina.{where}.{name}: no >>> example"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    torch.manual_seed(0)
    for t in tests:
        runner.run(t)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"lamina.{where}.{name}: {result.failed} of {result.attempted} examples failed (see stdout)"
