#!/usr/bin/env python3
"""Writes man pages for sluiced (section 8) and sluicectl (section 1) from the executables' own
argument parsers (`--experimental-dump-help`, swift-argument-parser's description of every
command, option and flag), so the pages say what `--help` says and never drift from it.

    scripts/man-pages.py --sluiced .build/debug/sluiced --sluicectl .build/debug/sluicectl --out DIR [--version V]

writes DIR/man8/sluiced.8 and DIR/man1/sluicectl.1."""
import argparse
import datetime
import json
import os
import subprocess


def escape(text):
    """roff: backslashes doubled, a leading dot or quote guarded, hyphens in options kept."""
    text = (text or "").replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def option_names(argument):
    names = []
    for name in argument.get("names", []):
        names.append(("-" if name["kind"] in ("short", "longWithSingleDash") else "--") + name["name"])
    return names


def describe_arguments(arguments):
    lines = []
    for argument in arguments:
        if not argument.get("shouldDisplay", True):
            continue
        names = option_names(argument)
        value = argument.get("valueName", "")
        if argument["kind"] == "positional":
            head = f"\\fI{escape(value)}\\fR"
        elif argument["kind"] == "option":
            head = ", ".join(f"\\fB{escape(n)}\\fR" for n in names) + f" \\fI{escape(value)}\\fR"
        else:
            head = ", ".join(f"\\fB{escape(n)}\\fR" for n in names)
        lines += [".TP", head, escape(argument.get("abstract", "")) or "."]
        if argument.get("defaultValue"):
            lines.append(f"(default: {escape(argument['defaultValue'])})")
    return lines


def page(command, section, version, date):
    name = command["commandName"]
    lines = [f'.TH {name.upper()} {section} "{date}" "Sluice {version}" "Sluice"',
             ".SH NAME", f"{escape(name)} \\- {escape(command.get('abstract', ''))}",
             ".SH SYNOPSIS", f"\\fB{escape(name)}\\fR" + (" \\fISUBCOMMAND\\fR" if command.get("subcommands") else "") + " [\\fIOPTIONS\\fR]"]
    if command.get("discussion"):
        lines += [".SH DESCRIPTION"] + [escape(p) + "\n.PP" for p in command["discussion"].split("\n\n")]
    if command.get("arguments"):
        lines += [".SH OPTIONS"] + describe_arguments(command["arguments"])
    subcommands = [s for s in command.get("subcommands", []) if s.get("shouldDisplay", True) and s["commandName"] != "help"]
    if subcommands:
        lines.append(".SH COMMANDS")

        def walk(sub, path):
            full = f"{path} {sub['commandName']}".strip()
            lines.extend([".SS " + escape(full), escape(sub.get("abstract", ""))])
            if sub.get("discussion"):
                lines.extend([".PP", escape(sub["discussion"])])
            lines.extend(describe_arguments(sub.get("arguments", [])))
            for child in sub.get("subcommands", []):
                if child.get("shouldDisplay", True) and child["commandName"] != "help":
                    walk(child, full)

        for sub in subcommands:
            walk(sub, "")
    lines += [".SH SEE ALSO"]
    lines.append("\\fBsluicectl\\fR(1)" if section == "8" else "\\fBsluiced\\fR(8)")
    lines.append(".PP\n/usr/share/doc/sluice/OPERATIONS.md, CONFIGURATION.md and PROTOCOL.md.")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sluiced", required=True)
    parser.add_argument("--sluicectl", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--version", default="")
    options = parser.parse_args()
    date = datetime.date.today().isoformat()
    for executable, section in ((options.sluiced, "8"), (options.sluicectl, "1")):
        info = json.loads(subprocess.run([executable, "--experimental-dump-help"], check=True, capture_output=True, text=True).stdout)
        command = info["command"]
        folder = os.path.join(options.out, f"man{section}")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{command['commandName']}.{section}"), "w") as f:
            f.write(page(command, section, options.version, date))


if __name__ == "__main__":
    main()
