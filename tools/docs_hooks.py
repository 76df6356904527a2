"""MkDocs hooks: the documentation's generated parts, filled in at build time (``mkdocs.yml``).

A page asks for a part with an HTML comment on a line of its own:

- ``<!-- cli -->``: the command-line reference, every subcommand's flags with their help, from
  ``altmodal.cli.build_parser()`` (so it says what ``--help`` says);
- ``<!-- options NAME -->``: the options table of strategy NAME, from its options dataclass;
- ``<!-- docstring MODULE -->``: a module's docstring as Markdown;
- ``<!-- readme HEADING -->`` / ``<!-- readme HEADING | FROM -->``: a section of README.md (from
  the paragraph starting with FROM), so a page shows a README section as it is.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"^<!-- (cli|options|docstring|readme)(?: (.*?))? -->$", re.M)
README_LINKS = {"(docs/": "("}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Replace each marker of the page by the part it names."""
    return MARKER.sub(lambda match: render(match.group(1), (match.group(2) or "").strip()), markdown)


def render(kind: str, argument: str) -> str:
    if kind == "cli":
        return cli_reference()
    if kind == "options":
        return options_table(argument)
    if kind == "docstring":
        return docstring(argument)
    heading, _, start = (part.strip() for part in argument.partition("|"))
    return readme_section(heading, start)


# ----- the command line ------------------------------------------------------------------------
def cli_reference() -> str:
    from altmodal.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in commands._choices_actions}
    out = ["## altmodal", "", "```text", parser.format_usage().strip(), "```", "", flag_table(parser), ""]
    for name, sub in commands.choices.items():
        out += [f"## altmodal {name}", "", escape(helps.get(name) or ""), "", "```text"]
        out += [sub.format_usage().strip(), "```", ""]
        for group in sub._action_groups:
            table = flag_table(sub, group._group_actions)
            if table:
                title = {"positional arguments": "arguments", "options": "options"}.get(group.title or "", group.title)
                out += [f"**{title}**", "", table, ""]
    return "\n".join(out)


def flag_table(parser: argparse.ArgumentParser, actions: Any = None) -> str:
    rows = []
    for action in actions if actions is not None else parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        names = ", ".join(action.option_strings) or action.dest
        value = ""
        if action.choices and not isinstance(action.choices, dict):
            value = " {" + ",".join(map(str, action.choices)) + "}"
        elif action.nargs != 0 and action.option_strings:
            value = f" {action.metavar or action.dest.upper()}"
        text = (action.help or "") % {"default": action.default, "prog": parser.prog}
        rows.append(f"| `{names}{value}` | {escape(text)} |")
    return "\n".join(["| flag | what it sets |", "|---|---|", *rows]) if rows else ""


def escape(text: str) -> str:
    """Text for a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


# ----- strategies ------------------------------------------------------------------------------
def options_table(name: str) -> str:
    from altmodal.config import fields_of
    from altmodal.strategies import strategy_class

    cls = strategy_class(name).options_class
    if cls is None:
        return f"`{name}` has no options of its own; the training settings (`altmodal train --help`) apply."
    rows = ["| flag | default | what it sets |", "|---|---|---|"]
    for field_name, (f, _) in fields_of(cls).items():
        if f.metadata.get("cli") is False:
            continue
        flag = f.metadata.get("flag", "--" + field_name.replace("_", "-"))
        default = ",".join(map(str, f.default)) if isinstance(f.default, tuple) else f.default
        rows.append(f"| `{flag}` | `{default}` | {escape(f.metadata.get('help', ''))} |")
    presets = getattr(cls, "PRESETS", {})
    if presets:
        rows += ["", "Presets (`--preset NAME`) set these options (explicit flags win):", ""]
        for preset, settings in presets.items():
            shown = ", ".join(f"`{k}={v}`" for k, v in settings.items()) or "the defaults above"
            rows.append(f"- `{preset}`: {shown}")
    return "\n".join(rows)


def docstring(module: str) -> str:
    """A module's docstring with its reST roles and double backticks as Markdown code."""
    text = importlib.import_module(module).__doc__ or ""
    text = re.sub(r":(?:mod|class|func|meth|attr|data):`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    lines = text.strip().splitlines()
    body: list[str] = []
    for line in lines[1:]:
        if line.startswith("- ") and body and body[-1].strip() and not body[-1].startswith(("- ", "  ")):
            body.append("")  # Markdown starts a list only after a blank line
        body.append(line)
    return f"**{lines[0].strip()}**\n" + "\n".join(body)


# ----- the README's sections -------------------------------------------------------------------
def readme_section(heading: str, start: str = "") -> str:
    """The README's section under ``## heading`` (to the next ``## ``), from the paragraph that
    starts with ``start``, its links rewritten for the docs folder."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    if match is None:
        raise ValueError(f"README.md has no section '## {heading}'")
    section = match.group(1)
    if start:
        at = section.find("\n" + start)
        if at < 0:
            raise ValueError(f"README.md, section {heading!r}: no paragraph starts with {start!r}")
        section = section[at + 1 :]
    for old, new in README_LINKS.items():
        section = section.replace(old, new)
    return section.strip()
